//! Issue 4: failover, weighted load balancing, strategies, breakers and active health checks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// How a controllable mock answers chat requests.
#[derive(Clone, Debug)]
enum Mode {
    Ok,
    Status(u16),
    /// Head sent at once, body never comes (stalls past the idle timeout).
    Stall,
    /// Stream: send `n` events, then cut the connection.
    CutAfter(usize),
    /// Wait before answering.
    Slow(Duration),
}

struct Upstream {
    mock: Mock,
    mode: Arc<Mutex<Mode>>,
    /// Health probes (GET) answer 200 unless this is set.
    probe_fails: Arc<Mutex<bool>>,
}

impl Upstream {
    async fn start(name: &'static str, mode: Mode) -> Upstream {
        let mode = Arc::new(Mutex::new(mode));
        let probe_fails = Arc::new(Mutex::new(false));
        let (m2, p2) = (mode.clone(), probe_fails.clone());
        let ok = openai_handler(name);
        let mock = Mock::start(Arc::new(move |r: &Recorded| {
            if r.method == "GET" {
                if *p2.lock().unwrap() {
                    return json_response(500, json!({"error": {"message": "probe down"}}));
                }
                return json_response(200, json!({"object": "list", "data": [{"id": "m", "object": "model"}]}));
            }
            let stream = r.json()["stream"] == json!(true);
            match m2.lock().unwrap().clone() {
                Mode::Ok => ok(r),
                Mode::Status(code) => {
                    let mut resp = json_response(code, json!({"error": {"message": format!("{name} says {code}"), "type": "server_error", "param": null, "code": null}}));
                    resp.headers_mut().insert("retry-after", "9".parse().unwrap());
                    resp
                }
                Mode::Stall => {
                    let s = futures::stream::once(async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
                    });
                    Response::new(Body::from_stream(s))
                }
                Mode::CutAfter(n) => {
                    let events = openai_stream_events("m", &["a ", "b ", "c ", "d"], false);
                    sse_response(events, Duration::from_millis(20), Some(n))
                }
                Mode::Slow(d) => {
                    std::thread::sleep(d);
                    if stream {
                        let events = openai_stream_events("m", &[name], false);
                        sse_response(events, Duration::ZERO, None)
                    } else {
                        json_response(200, openai_completion("m", name))
                    }
                }
            }
        }))
        .await;
        Upstream {
            mock,
            mode,
            probe_fails,
        }
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
}

/// Variables for custom providers `a`, `b`, `c` (default model `m`) in that failover order.
fn three(ups: &[&Upstream], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    let names = ["A", "B", "C"];
    for (i, u) in ups.iter().enumerate() {
        v.push((
            format!("GATEWAY_PROVIDER_{}_BASE_URL", names[i]),
            u.mock.url(),
        ));
        v.push((
            format!("GATEWAY_PROVIDER_{}_DEFAULT_MODEL", names[i]),
            "m".into(),
        ));
    }
    let list: Vec<String> = names[..ups.len()]
        .iter()
        .map(|n| n.to_lowercase())
        .collect();
    v.push(("GATEWAY_PROVIDERS".into(), list.join(",")));
    v.push(("GATEWAY_HEALTH_CHECK_INTERVAL".into(), "off".into()));
    for (k, val) in extra {
        v.retain(|(k2, _)| k2 != k);
        v.push((k.to_string(), val.to_string()));
    }
    v
}

fn start(vars: &[(String, String)]) -> Gateway {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start(&refs)
}

async fn chat(
    c: &reqwest::Client,
    gw: &Gateway,
    model: &str,
    stream: bool,
) -> (u16, String, String) {
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body(model, "hi", stream))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let provider = r
        .headers()
        .get("x-provider")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, provider, r.text().await.unwrap())
}

fn assert_clean_stream(body: &str) {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    assert!(!body.contains("\"error\""), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failing_provider_never_fails_a_request_and_sits_out_its_cooldown() {
    let a = Upstream::start("alpha", Mode::Ok).await;
    let b = Upstream::start("bravo", Mode::Status(500)).await;
    let c3 = Upstream::start("charlie", Mode::Ok).await;
    let gw = start(&three(
        &[&a, &b, &c3],
        &[("GATEWAY_UNHEALTHY_COOLDOWN", "8s")],
    ));
    let c = client();

    // 200 sequential, alternating plain and stream.
    for i in 0..200 {
        let (status, provider, body) = chat(&c, &gw, "auto", i % 2 == 1).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_ne!(provider, "b");
        if i % 2 == 1 {
            assert_clean_stream(&body);
        }
    }
    // 200 concurrent.
    let results = futures::future::join_all((0..200).map(|i| {
        let c = c.clone();
        let url = gw.url("/v1/chat/completions");
        async move {
            let r = c
                .post(url)
                .json(&chat_body("auto", "hi", i % 2 == 0))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let t = r.text().await.unwrap();
            (s, t, i % 2 == 0)
        }
    }))
    .await;
    for (s, t, stream) in &results {
        assert_eq!(*s, 200, "{t}");
        if *stream {
            assert_clean_stream(t);
        }
    }
    // b failed once and was taken out: it saw at most a handful (in-flight when it opened).
    let during = b.mock.calls();
    assert!(
        (1..=3).contains(&during),
        "b got {during} calls during its cooldown"
    );
    assert!(
        gw.wait_log(
            "provider=b status=unhealthy reason=\"500 from upstream\"",
            Duration::from_secs(2)
        ),
        "{}",
        gw.logs()
    );
    assert!(
        gw.wait_log("failover from=b to=", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );

    // After the cooldown it gets traffic again (a half-open trial).
    tokio::time::sleep(Duration::from_secs(9)).await;
    b.set(Mode::Ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.mock.calls() == during && Instant::now() < deadline {
        let (status, _, _) = chat(&c, &gw, "auto", false).await;
        assert_eq!(status, 200);
    }
    assert!(
        b.mock.calls() > during,
        "b never got traffic after its cooldown"
    );
    assert!(
        gw.wait_log("provider=b status=recovered", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_spread_requests() {
    let a = Upstream::start("alpha", Mode::Ok).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let c3 = Upstream::start("charlie", Mode::Ok).await;
    let gw = start(&three(&[&a, &b, &c3], &[("GATEWAY_WEIGHTS", "50,30,20")]));
    let c = client();
    let mut counts = std::collections::HashMap::new();
    let total = 1000;
    let mut done = 0;
    while done < total {
        let batch: Vec<_> = (0..25)
            .map(|_| {
                let c = c.clone();
                let url = gw.url("/v1/chat/completions");
                async move {
                    let r = c
                        .post(url)
                        .json(&chat_body("auto", "hi", false))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.headers()["x-provider"].to_str().unwrap().to_string()
                }
            })
            .collect();
        for p in futures::future::join_all(batch).await {
            *counts.entry(p).or_insert(0usize) += 1;
        }
        done += 25;
    }
    for (name, want) in [("a", 50.0), ("b", 30.0), ("c", 20.0)] {
        let share = *counts.get(name).unwrap_or(&0) as f64 * 100.0 / total as f64;
        assert!(
            (share - want).abs() <= 5.0,
            "{name}: {share}% (want {want}±5) {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_pass_through_without_retry() {
    let a = Upstream::start("alpha", Mode::Status(400)).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(&[&a, &b], &[]));
    let c = client();
    let (status, _, body) = chat(&c, &gw, "a/m", false).await;
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["message"], "alpha says 400");
    assert_eq!(a.mock.calls(), 1);
    assert_eq!(b.mock.calls(), 0);
    // The provider answered: it stays healthy.
    let (status, _, _) = chat(&c, &gw, "a/m", false).await;
    assert_eq!(status, 400);
    assert_eq!(a.mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn specific_model_fails_over_to_the_next_provider() {
    let a = Upstream::start("alpha", Mode::Status(503)).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(&[&a, &b], &[]));
    let c = client();
    let (status, provider, body) = chat(&c, &gw, "a/special", false).await;
    assert_eq!((status, provider.as_str()), (200, "b"), "{body}");
    assert_eq!(a.mock.last().json()["model"], "special");
    assert_eq!(
        b.mock.last().json()["model"],
        "m",
        "the fallback gets its default model"
    );

    // Opt-out: the client sees a's error.
    a.set(Mode::Status(503));
    let gw2 = start(&three(&[&a, &b], &[]));
    let before = b.mock.calls();
    let r = c
        .post(gw2.url("/v1/chat/completions"))
        .header("x-gateway-failover", "off")
        .json(&chat_body("a/special", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(b.mock.calls(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_models_map_each_provider_to_its_model() {
    let a = Upstream::start("alpha", Mode::Status(529)).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(
        &[&a, &b],
        &[("GATEWAY_FALLBACK_MODELS", "a/big=b/large")],
    ));
    let (status, provider, _) = chat(&client(), &gw, "a/big", false).await;
    assert_eq!((status, provider.as_str()), (200, "b"));
    assert_eq!(b.mock.last().json()["model"], "large");
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_are_pools() {
    let a = Upstream::start("alpha", Mode::Ok).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(
        &[&a, &b],
        &[
            ("GATEWAY_MODEL_ALIASES", "smart=a/m-large|b/m-xl"),
            ("GATEWAY_STRATEGY", "priority"),
        ],
    ));
    let (status, provider, _) = chat(&client(), &gw, "smart", false).await;
    assert_eq!((status, provider.as_str()), (200, "a"));
    assert_eq!(a.mock.last().json()["model"], "m-large");
    a.set(Mode::Status(500));
    let (status, provider, _) = chat(&client(), &gw, "smart", false).await;
    assert_eq!((status, provider.as_str()), (200, "b"));
    assert_eq!(b.mock.last().json()["model"], "m-xl");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_candidate_erroring_returns_the_last_error() {
    let a = Upstream::start("alpha", Mode::Status(429)).await;
    let b = Upstream::start("bravo", Mode::Status(429)).await;
    let gw = start(&three(&[&a, &b], &[("GATEWAY_STRATEGY", "priority")]));
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("auto", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "9");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "bravo says 429");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_down_is_503_with_retry_after_within_the_timeouts() {
    let dead1 = free_port();
    let stall = Upstream::start("stall", Mode::Stall).await;
    let gw = start(&[
        (
            "GATEWAY_PROVIDER_A_BASE_URL".into(),
            format!("http://127.0.0.1:{dead1}"),
        ),
        ("GATEWAY_PROVIDER_A_DEFAULT_MODEL".into(), "m".into()),
        ("GATEWAY_PROVIDER_B_BASE_URL".into(), stall.mock.url()),
        ("GATEWAY_PROVIDER_B_DEFAULT_MODEL".into(), "m".into()),
        ("GATEWAY_PROVIDERS".into(), "a,b".into()),
        ("GATEWAY_HEALTH_CHECK_INTERVAL".into(), "off".into()),
        ("GATEWAY_FIRST_BYTE_TIMEOUT".into(), "500ms".into()),
        ("GATEWAY_IDLE_TIMEOUT".into(), "500ms".into()),
        ("GATEWAY_CONNECT_TIMEOUT".into(), "500ms".into()),
    ]);
    let c = client();
    for stream in [false, true] {
        let t = Instant::now();
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("auto", "hi", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let ra: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&ra));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "providers_unavailable");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
    }
    let r = c.get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = c
        .get(gw.url("/health/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<&str> = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["backends"][0]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["unhealthy", "unhealthy"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_fails_before_its_first_byte_is_retried_elsewhere() {
    let a = Upstream::start("alpha", Mode::CutAfter(0)).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(&[&a, &b], &[("GATEWAY_STRATEGY", "priority")]));
    let (status, provider, body) = chat(&client(), &gw, "auto", true).await;
    assert_eq!((status, provider.as_str()), (200, "b"), "{body}");
    assert_clean_stream(&body);
    assert_eq!(a.mock.calls(), 1);
    let text: String = sse_data(&body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "bravo");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_after_its_first_byte_ends_with_an_error_event() {
    let a = Upstream::start("alpha", Mode::CutAfter(2)).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(&[&a, &b], &[("GATEWAY_STRATEGY", "priority")]));
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("auto", "hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(body).unwrap();
    let data = sse_data(&body);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{body}");
    assert!(!body.contains("\"finish_reason\":\"stop\""), "{body}");
    assert_eq!(
        b.mock.calls(),
        0,
        "no failover once bytes reached the client"
    );
    assert!(
        gw.wait_log("outcome=stream_error", Duration::from_secs(2)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_active_check_brings_a_provider_back_before_its_cooldown() {
    let a = Upstream::start("alpha", Mode::Status(502)).await;
    let b = Upstream::start("bravo", Mode::Ok).await;
    let gw = start(&three(
        &[&a, &b],
        &[
            ("GATEWAY_STRATEGY", "priority"),
            ("GATEWAY_UNHEALTHY_COOLDOWN", "10m"),
            ("GATEWAY_HEALTH_CHECK_INTERVAL", "300ms"),
        ],
    ));
    let c = client();
    let (_, provider, _) = chat(&c, &gw, "auto", false).await;
    assert_eq!(provider, "b");
    assert!(gw.wait_log("provider=a status=unhealthy", Duration::from_secs(2)));
    a.set(Mode::Ok);
    // The probe (GET /v1/models) passes on its next run: a is back long before 10 minutes.
    assert!(
        gw.wait_log("provider=a status=recovered", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    let (_, provider, _) = chat(&c, &gw, "auto", false).await;
    assert_eq!(provider, "a");

    // A failing probe takes a provider out without any request failing.
    *a.probe_fails.lock().unwrap() = true;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = c
            .get(gw.url("/health/providers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["providers"][0]["healthy"] == json!(false) {
            break;
        }
        assert!(Instant::now() < deadline, "probe failure not noticed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, provider, _) = chat(&c, &gw, "auto", false).await;
    assert_eq!(provider, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_of_identical_backends_is_balanced_and_survives_one_down() {
    let x = Upstream::start("x", Mode::Ok).await;
    let y = Upstream::start("y", Mode::Ok).await;
    let gw = Gateway::start(&[
        (
            "VLLM_BASE_URL",
            &format!("{},{}", x.mock.url(), y.mock.url()),
        ),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
        // vLLM pools default to `inference` (tests/pool_routing.rs); this one is about turns.
        ("VLLM_POOL_STRATEGY", "round_robin"),
    ]);
    let c = client();
    for _ in 0..20 {
        let (s, p, _) = chat(&c, &gw, "vllm/llama", false).await;
        assert_eq!((s, p.as_str()), (200, "vllm"));
    }
    assert_eq!(x.mock.calls(), 10, "round robin");
    assert_eq!(y.mock.calls(), 10, "round robin");
    x.set(Mode::Status(500));
    for i in 0..20 {
        let (s, _, body) = chat(&c, &gw, "vllm/llama", i % 2 == 0).await;
        assert_eq!(s, 200, "{body}");
    }
    assert!(
        x.mock.calls() <= 11,
        "the failed backend sits out its cooldown"
    );
    let v: Value = c
        .get(gw.url("/health/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["providers"][0]["healthy"], true,
        "the provider is up while one backend is: {v}"
    );
    assert_eq!(v["providers"][0]["backends"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_strategy_prefers_the_fast_provider() {
    let slow = Upstream::start("slow", Mode::Slow(Duration::from_millis(150))).await;
    let fast = Upstream::start("fast", Mode::Ok).await;
    let gw = start(&three(&[&slow, &fast], &[("GATEWAY_STRATEGY", "latency")]));
    let c = client();
    let mut fast_count = 0;
    for _ in 0..40 {
        let (_, p, _) = chat(&c, &gw, "auto", false).await;
        if p == "b" {
            fast_count += 1;
        }
    }
    assert!(fast_count >= 28, "fast served {fast_count}/40");
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_strategy_prefers_the_cheap_model() {
    let pricey = Upstream::start("pricey", Mode::Ok).await;
    let cheap = Upstream::start("cheap", Mode::Ok).await;
    let gw = Gateway::start(&[
        ("GATEWAY_PROVIDER_A_BASE_URL", &pricey.mock.url()),
        ("GATEWAY_PROVIDER_A_DEFAULT_MODEL", "gpt-4o"),
        ("GATEWAY_PROVIDER_B_BASE_URL", &cheap.mock.url()),
        ("GATEWAY_PROVIDER_B_DEFAULT_MODEL", "gemini-2.0-flash"),
        ("GATEWAY_PROVIDERS", "a,b"),
        ("GATEWAY_STRATEGY", "cost"),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
    ]);
    for _ in 0..5 {
        let (_, p, _) = chat(&client(), &gw, "auto", false).await;
        assert_eq!(p, "b");
    }
    assert_eq!(pricey.mock.calls(), 0);
}

/// An upstream that ignores `stream` and answers one JSON completion (some OpenAI-compatible
/// servers do): the client still gets its dialect's stream (chat chunks with usage and
/// `[DONE]`, Messages events), the usage is counted and the provider stays healthy; a JSON
/// answer of two choices is refused with a 502 that says why, before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_answer_to_a_streamed_request_reaches_the_client_as_a_stream() {
    let mock = Mock::start(Arc::new(|r: &Recorded| {
        let choice = |i: u32| {
            json!({"index": i, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"})
        };
        let choices = if r.json()["n"] == 2 {
            vec![choice(0), choice(1)]
        } else {
            vec![choice(0)]
        };
        json_response(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                   "choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        )
    }))
    .await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("OPENAI_API_KEY", "sk-test"),
        ("GATEWAY_CACHE_BACKEND", "off"),
    ]);
    let (status, events) = chat_stream(
        &gw,
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(mock.last().json()["stream"], true, "asked as a stream");
    assert_eq!(delta_text(&events), "Hi there", "{events:?}");
    assert!(
        events.iter().all(|e| e.get("error").is_none()),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .find_map(|e| e["choices"][0]["finish_reason"].as_str()),
        Some("stop")
    );
    assert!(
        events.iter().any(|e| e["usage"]["total_tokens"] == 5),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&Value::String("[DONE]".into())));

    let r = client()
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "openai/gpt-4o-mini", "stream": true, "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#""delta":{"type":"text_delta","text":"Hi there"}"#),
        "{text}"
    );
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert!(
        gw.wait_log("path=/v1/messages", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    assert_eq!(
        logs.matches("prompt_tokens=3 completion_tokens=2").count(),
        2,
        "{logs}"
    );
    assert!(!logs.contains("unhealthy"), "{logs}");

    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "openai/gpt-4o-mini", "stream": true, "n": 2,
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "upstream_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 choices"),
        "{v}"
    );
}
