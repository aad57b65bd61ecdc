//! Issue 7, at run time: metrics after a known sequence of requests (parsed by the official
//! Prometheus Python parser), the JSON log line, no secret in any output, `--check-config`,
//! graceful shutdown with a stream in flight, and Pingora's graceful upgrade.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-ops-test-SECRET-0123456789abcdef";
const GROQ_KEY: &str = "gsk-ops-test-SECRET-fedcba9876543210";

/// One sample of a parsed exposition.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses an exposition with `prometheus_client`'s parser (`tests/python/parse_metrics.py`);
/// panics if it does not parse.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/tests/python/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(".venv/bin/python with prometheus_client (scripts/test.sh creates it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Sample {
                family: v["family"].as_str().unwrap().to_string(),
                kind: v["type"].as_str().unwrap().to_string(),
                name: v["name"].as_str().unwrap().to_string(),
                labels: v["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: v["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include all of `labels` (0 if there is none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    matching.iter().map(|s| s.value).sum()
}

fn family_type(samples: &[Sample], family: &str) -> String {
    samples
        .iter()
        .find(|s| s.family == family)
        .map(|s| s.kind.clone())
        .unwrap_or_else(|| panic!("no family {family}"))
}

async fn scrape(url: &str) -> String {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// A mock OpenAI: model `broken` answers 503, everything else a normal completion or stream.
fn openai_mock_handler() -> Handler {
    let normal = openai_handler("one two three four");
    Arc::new(move |r: &Recorded| {
        if r.json()["model"] == "broken" {
            return json_response(
                503,
                json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}),
            );
        }
        normal(r)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_sequence_and_parse() {
    let mock = Mock::start(openai_mock_handler()).await;
    let closed = free_port();
    let dead = format!("http://127.0.0.1:{closed}");
    let gw = Gateway::start(&[
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_GROQ_BASE_URL", &dead),
        ("GATEWAY_PROVIDER_GROQ_API_KEY", GROQ_KEY),
        ("GATEWAY_LOG_FORMAT", "json"),
    ]);
    let c = client();
    let chat = |model: &str, stream: bool| {
        let mut body = chat_body(model, "hello there", stream);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        c.post(gw.url("/v1/chat/completions")).json(&body).send()
    };
    // 2 plain + 1 streamed answers from openai.
    for _ in 0..2 {
        assert_eq!(chat("openai/gpt-4o", false).await.unwrap().status(), 200);
    }
    let r = chat("gpt-4o-2024-08-06", true).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    // An upstream 503, a connect failure, a stream from echo, a bad request.
    assert_eq!(chat("openai/broken", false).await.unwrap().status(), 503);
    assert_eq!(chat("groq/llama", false).await.unwrap().status(), 502);
    let r = chat("echo/test", true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The last request's line is written after its response: wait for it.
    assert!(
        gw.wait_log("\"status\":400", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    let text = scrape(&gw.url("/metrics")).await;
    let m = parse_exposition(&text);

    let req = "gateway_requests_total";
    let ok_openai = [
        ("provider", "openai"),
        ("status_class", "2xx"),
        ("cache", "none"),
    ];
    assert_eq!(
        value(
            &m,
            req,
            &[
                ("model", "gpt-4o"),
                ok_openai[0],
                ok_openai[1],
                ok_openai[2]
            ]
        ),
        2.0,
        "{text}"
    );
    // Dated variants are their own (capped) model label.
    assert_eq!(
        value(
            &m,
            req,
            &[("model", "gpt-4o-2024-08-06"), ok_openai[0], ok_openai[1]]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            req,
            &[
                ("provider", "openai"),
                ("model", "broken"),
                ("status_class", "5xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(&m, req, &[("provider", "groq"), ("status_class", "5xx")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            req,
            &[
                ("provider", "echo"),
                ("model", "test"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            req,
            &[
                ("provider", "none"),
                ("model", "none"),
                ("status_class", "4xx")
            ]
        ),
        1.0
    );
    // Every request so far had no cache outcome (the cache feature adds hit/miss).
    assert_eq!(value(&m, req, &[]), 7.0, "{text}");
    assert_eq!(value(&m, req, &[("cache", "none")]), 7.0);

    // Tokens: the mock reports 11 prompt tokens; 7 completion tokens plain, 4 (one per piece)
    // when streamed.
    let pt = "gateway_prompt_tokens_total";
    let ct = "gateway_completion_tokens_total";
    assert_eq!(
        value(&m, pt, &[("provider", "openai"), ("model", "gpt-4o")]),
        22.0
    );
    assert_eq!(
        value(&m, ct, &[("provider", "openai"), ("model", "gpt-4o")]),
        14.0
    );
    assert_eq!(
        value(
            &m,
            ct,
            &[("provider", "openai"), ("model", "gpt-4o-2024-08-06")]
        ),
        4.0
    );
    assert_eq!(
        value(&m, ct, &[("provider", "echo"), ("model", "test")]),
        2.0
    );

    // Cost: gpt-4o is 2.5 / 10 USD per 1M tokens.
    let cost = value(&m, "gateway_cost_usd_total", &[("provider", "openai")]);
    let expected = (33.0 * 2.5 + 18.0 * 10.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    assert_eq!(
        value(&m, "gateway_cost_usd_total", &[("provider", "echo")]),
        0.0
    );

    // Upstream errors by provider and reason.
    let ue = "gateway_upstream_errors_total";
    assert_eq!(
        value(
            &m,
            ue,
            &[("provider", "openai"), ("reason", "server_error")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            ue,
            &[("provider", "groq"), ("reason", "upstream_connect")]
        ),
        1.0
    );
    assert_eq!(value(&m, ue, &[]), 2.0);

    // Histograms: one observation per request, TTFB only where a body byte went out.
    let lat = "gateway_request_duration_seconds_count";
    assert_eq!(value(&m, lat, &[("provider", "openai")]), 4.0);
    assert_eq!(
        value(&m, lat, &[("provider", "openai"), ("stream", "true")]),
        1.0
    );
    assert_eq!(value(&m, lat, &[]), 7.0);
    assert_eq!(
        value(
            &m,
            "gateway_time_to_first_byte_seconds_count",
            &[("provider", "echo")]
        ),
        1.0
    );
    assert!(
        value(
            &m,
            "gateway_request_duration_seconds_sum",
            &[("provider", "openai")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &m,
            "gateway_request_duration_seconds_bucket",
            &[("provider", "echo"), ("le", "+Inf")]
        ),
        1.0
    );

    // Gauges.
    assert_eq!(value(&m, "gateway_active_streams", &[]), 0.0);
    // The 503 and the connect failure opened both providers' breakers (threshold 1).
    assert_eq!(
        value(&m, "gateway_provider_up", &[("provider", "openai")]),
        0.0
    );
    assert_eq!(
        value(&m, "gateway_provider_up", &[("provider", "groq")]),
        0.0
    );
    assert_eq!(value(&m, "gateway_build_info", &[]), 1.0);

    assert_eq!(family_type(&m, "gateway_requests"), "counter");
    assert_eq!(
        family_type(&m, "gateway_request_duration_seconds"),
        "histogram"
    );
    assert_eq!(
        family_type(&m, "gateway_time_to_first_byte_seconds"),
        "histogram"
    );
    assert_eq!(family_type(&m, "gateway_active_streams"), "gauge");
    assert_eq!(family_type(&m, "gateway_provider_up"), "gauge");

    // Scrapes and health probes are not traffic.
    let _ = c.get(gw.url("/health")).send().await.unwrap();
    let again = parse_exposition(&scrape(&gw.url("/metrics")).await);
    assert_eq!(value(&again, req, &[]), 7.0);

    // No key in the exposition or the logs.
    for secret in [OPENAI_KEY, GROQ_KEY] {
        assert!(!text.contains(secret));
        assert!(!gw.logs().contains(secret));
    }
    assert_eq!(mock.calls(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn active_streams_gauge_counts_a_stream_in_flight() {
    let gw = Gateway::start(&[("GATEWAY_ECHO_CHUNK_DELAY_MS", "100")]);
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("echo/test", &"word ".repeat(40), true))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let m = parse_exposition(&scrape(&gw.url("/metrics")).await);
    assert_eq!(value(&m, "gateway_active_streams", &[]), 1.0);
    drop(body);
    // The gateway notices the client left at its next write.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = parse_exposition(&scrape(&gw.url("/metrics")).await);
        if value(&m, "gateway_active_streams", &[]) == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream gauge never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_listener_serves_metrics_and_hides_them_from_the_main_port() {
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let gw = Gateway::start(&[("GATEWAY_METRICS_LISTEN", &maddr)]);
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("echo/test", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert!(gw.wait_log("path=/v1/chat/completions", Duration::from_secs(10)));
    let m = parse_exposition(&scrape(&format!("http://{maddr}/metrics")).await);
    assert_eq!(
        value(&m, "gateway_requests_total", &[("provider", "echo")]),
        1.0
    );
    let r = c
        .get(format!("http://{maddr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("http://{maddr}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("/metrics"));
    let r = c
        .post(format!("http://{maddr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_parse_and_carry_the_fields() {
    let mock = Mock::start(openai_mock_handler()).await;
    let gw = Gateway::start(&[
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_LOG_FORMAT", "json"),
        ("GATEWAY_PRICES", "openai/gpt-4o=3/12"),
    ]);
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "req-json-1")
        .json(&chat_body("openai/gpt-4o", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "req-json-2")
        .json(&chat_body("openai/broken", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        gw.wait_log("req-json-2", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    let mut lines = Vec::new();
    for l in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["ts"].is_string(), "{l}");
        lines.push(v);
    }
    // Start-up messages are JSON objects too (events such as health changes use the same path).
    assert!(lines
        .iter()
        .any(|v| v["msg"].as_str().is_some_and(|m| m.contains("listening"))));

    let ok = lines
        .iter()
        .find(|v| v["req"] == "req-json-1")
        .expect("the line of request 1");
    assert_eq!(ok["model"], "openai/gpt-4o");
    assert_eq!(ok["provider"], "openai");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/v1/chat/completions");
    assert_eq!(ok["stream"], false);
    assert_eq!(ok["prompt_tokens"], 11);
    assert_eq!(ok["completion_tokens"], 7);
    assert_eq!(ok["tokens"], 18);
    assert_eq!(ok["attempts"], 1);
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["ttfb_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["bytes"].as_u64().unwrap() > 0);
    // GATEWAY_PRICES overrides the built-in 2.5/10.
    let cost = ok["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (11.0 * 3.0 + 7.0 * 12.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert!(ok.get("error").is_none());

    let bad = lines
        .iter()
        .find(|v| v["req"] == "req-json-2")
        .expect("the line of request 2");
    assert_eq!(bad["status"], 503);
    assert_eq!(bad["outcome"], "server_error");
    assert_eq!(bad["error"], "overloaded");
    assert!(bad.get("cost_usd").is_none());

    assert!(!logs.contains(OPENAI_KEY));
    // The key did reach the upstream: it was there to leak.
    assert_eq!(
        mock.last().header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
}

fn check_config(vars: &[(&str, &str)]) -> (bool, String, String) {
    let out = Gateway::command(vars)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_resolved_configuration_without_secrets() {
    let (ok, out, err) = check_config(&[
        ("OPENAI_API_KEY", OPENAI_KEY),
        (
            "VLLM_BASE_URL",
            "http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1",
        ),
        (
            "GATEWAY_PROVIDER_GROQ_BASE_URL",
            "https://api.groq.com/openai/v1",
        ),
        ("GATEWAY_PROVIDER_GROQ_API_KEY", GROQ_KEY),
        ("GATEWAY_METRICS_LISTEN", "127.0.0.1:9090"),
        ("GATEWAY_PRICES", "groq/llama-3.3-70b=0.59/0.79"),
        ("GATEWAY_SHUTDOWN_GRACE", "45s"),
        ("GATEWAY_LOG_FORMAT", "json"),
    ]);
    assert!(ok, "{out}{err}");
    for needle in [
        "configuration OK",
        "openai",
        "vllm",
        "http://127.0.0.1:8000/v1, http://127.0.0.1:8001/v1",
        "groq",
        "https://api.groq.com/openai/v1",
        "key=***",
        "shutdown_grace=45s",
        "format=json",
        "backend=memory",
        "scope=global",
        "request=off",
        "http://127.0.0.1:9090/metrics (separate listener)",
        "groq/llama-3.3-70b=0.59/0.79",
        "upgrade",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // The variables' own values, never Rust's names for them.
    for debug_name in ["Json", "Memory", "Global"] {
        assert!(!out.contains(debug_name), "{debug_name} in:\n{out}");
    }
    assert!(
        !out.contains(OPENAI_KEY) && !out.contains(GROQ_KEY),
        "{out}"
    );
    assert!(
        !err.contains(OPENAI_KEY) && !err.contains(GROQ_KEY),
        "{err}"
    );
}

#[test]
fn check_config_fails_on_a_bad_environment_naming_every_variable() {
    let (ok, out, err) = check_config(&[
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("GATEWAY_LISTEN", "not-an-address"),
        ("GATEWAY_METRICS_LISTEN", "9090"),
        ("GATEWAY_PRICES", "gpt-4o=cheap"),
        ("GATEWAY_SHUTDOWN_GRACE", "forever"),
        ("GATEWAY_PROVIDER_GROQ_BASE_URL", "ftp://nope"),
        ("GATEWAY_PROVIDER_GROQ_API_KEY", GROQ_KEY),
    ]);
    assert!(!ok, "{out}");
    assert!(!out.contains("configuration OK"));
    for v in [
        "GATEWAY_LISTEN",
        "GATEWAY_METRICS_LISTEN",
        "GATEWAY_PRICES",
        "GATEWAY_SHUTDOWN_GRACE",
        "GATEWAY_PROVIDER_GROQ_BASE_URL",
    ] {
        assert!(err.contains(v), "{v} not named in:\n{err}");
    }
    let all = format!("{out}{err}");
    assert!(
        !all.contains(OPENAI_KEY) && !all.contains(GROQ_KEY),
        "{all}"
    );
}

/// Streams `words` words from the echo provider; returns the response body stream after its
/// first chunk arrived.
async fn start_stream(
    url: &str,
    words: usize,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> {
    let text: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    let r = client()
        .post(url)
        .json(&chat_body("echo/test", &text.join(" "), true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    futures::stream::iter(vec![Ok(first)]).chain(body)
}

async fn collect(body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>) -> String {
    let chunks: Vec<_> = body.collect().await;
    let mut s = String::new();
    for c in chunks {
        s.push_str(&String::from_utf8_lossy(&c.expect("the stream broke")));
    }
    s
}

/// The words of a finished echo stream (panics if it did not end with `[DONE]`).
fn echoed_words(sse: &str) -> String {
    let data = sse_data(sse);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{sse}");
    data.iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_stream_in_flight_finish() {
    let mut gw = Gateway::start(&[
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "100"),
        ("GATEWAY_SHUTDOWN_GRACE", "60s"),
    ]);
    let words = 20;
    let body = start_stream(&gw.url("/v1/chat/completions"), words).await;
    let reader = tokio::spawn(collect(body));
    gw.signal("TERM");
    // New connections are refused once the listener is closed (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sse = reader.await.unwrap();
    let expected: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    assert_eq!(
        echoed_words(&sse).split_whitespace().collect::<Vec<_>>(),
        expected
    );
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.wait_exit(Duration::from_secs(30));
        (s, gw)
    })
    .await
    .unwrap();
    let (s, gw) = status;
    let s = s.unwrap_or_else(|| panic!("the gateway did not exit after draining: {}", gw.logs()));
    assert!(s.success(), "{s}: {}", gw.logs());
    assert!(
        gw.logs().contains("shutdown: no request in flight"),
        "{}",
        gw.logs()
    );
}

#[test]
fn idle_gateway_exits_at_once_on_sigterm() {
    // A grace period of 10 minutes: the exit must not wait for it (nor for Pingora's 300 s).
    let mut gw = Gateway::start(&[("GATEWAY_SHUTDOWN_GRACE", "600s")]);
    let t = Instant::now();
    gw.signal("TERM");
    let s = gw
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("idle gateway did not exit: {}", gw.logs()));
    let took = t.elapsed();
    assert!(s.success(), "{s}");
    // Measured ~0.1-0.2 s; 10 s leaves room for a loaded machine and is still 60x under grace.
    assert!(took < Duration::from_secs(10), "idle exit took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_grace_bounds_a_stream_that_would_run_too_long() {
    let mut gw = Gateway::start(&[
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "500"),
        ("GATEWAY_SHUTDOWN_GRACE", "1s"),
    ]);
    // 100 words at 0.5 s: 50 s if allowed to finish.
    let body = start_stream(&gw.url("/v1/chat/completions"), 100).await;
    let reader = tokio::spawn(async move {
        let chunks: Vec<_> = body.collect().await;
        chunks
    });
    let t = Instant::now();
    gw.signal("TERM");
    let (s, gw) = tokio::task::spawn_blocking(move || (gw.wait_exit(Duration::from_secs(40)), gw))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        s.is_some(),
        "the gateway outlived its grace period: {}",
        gw.logs()
    );
    assert!(
        took < Duration::from_secs(25),
        "exit took {took:?} with a 1 s grace"
    );
    assert!(gw.logs().contains("grace period over"), "{}", gw.logs());
    // The client saw the stream end without [DONE].
    let chunks = reader.await.unwrap();
    let text: String = chunks
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(!text.contains("[DONE]"));
}

/// A second gateway process started by hand (the harness gives every gateway its own upgrade
/// socket; an upgrade needs the old one's). Killed by its PID when dropped.
struct Successor {
    child: Child,
    log: std::path::PathBuf,
}

impl Successor {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which process answers on `port`: B has a provider named `bee` that A lacks.
async fn answered_by_successor(port: u16) -> Result<bool, String> {
    // A fresh connection each time: keep-alive would stick to one process.
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = c
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&chat_body("bee/x", "hi", false))
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    // A: 404 model_not_found (no provider bee). B: 502, bee points at a closed port.
    match r.status().as_u16() {
        404 => Ok(false),
        502 => Ok(true),
        s => Err(format!("unexpected status {s}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_hands_the_socket_over_while_the_old_stream_finishes() {
    let vars = [
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "150"),
        ("GATEWAY_SHUTDOWN_GRACE", "60s"),
    ];
    let mut a = Gateway::start(&vars);
    let port = a.port;
    assert_eq!(answered_by_successor(port).await, Ok(false));

    // A stream on A that outlasts the handover (40 words at 0.15 s: ~6 s, more than Pingora's
    // 5 s close timeout).
    let words = 40;
    let body = start_stream(&a.url("/v1/chat/completions"), words).await;
    let reader = tokio::spawn(collect(body));

    // B: same listen address and upgrade socket, --upgrade.
    let bee = format!("http://127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{port}");
    let sock = a.dir.path().join("upgrade.sock");
    let log = a.dir.path().join("successor.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut b_vars: Vec<(&str, &str)> = vars.to_vec();
    b_vars.push(("GATEWAY_LISTEN", &listen));
    b_vars.push(("GATEWAY_PROVIDER_BEE_BASE_URL", &bee));
    let child = Gateway::command(&b_vars)
        .arg("--upgrade")
        .env("GATEWAY_UPGRADE_SOCK", &sock)
        .env("GATEWAY_PID_FILE", a.dir.path().join("successor.pid"))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let b = Successor { child, log };

    a.signal("QUIT");

    // From now on every new connection must be served, by A or by B, until B alone answers.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut served_by_b = 0;
    let mut total = 0;
    while served_by_b < 3 {
        assert!(
            Instant::now() < deadline,
            "B never took over: A: {}\nB: {}",
            a.logs(),
            b.logs()
        );
        match answered_by_successor(port).await {
            Ok(true) => served_by_b += 1,
            Ok(false) => {}
            Err(e) => panic!(
                "a request failed during the upgrade ({e}): A: {}\nB: {}",
                a.logs(),
                b.logs()
            ),
        }
        total += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(total >= 3);

    // A's stream completes, intact, after the handover.
    let sse = reader.await.unwrap();
    let expected: Vec<String> = (0..words).map(|i| format!("w{i}")).collect();
    assert_eq!(
        echoed_words(&sse).split_whitespace().collect::<Vec<_>>(),
        expected
    );

    // A exits once drained; B keeps serving on the same port.
    let (s, a) = tokio::task::spawn_blocking(move || (a.wait_exit(Duration::from_secs(40)), a))
        .await
        .unwrap();
    let s = s.unwrap_or_else(|| panic!("A did not exit: {}", a.logs()));
    assert!(s.success(), "{s}");
    assert!(
        a.logs().contains("graceful upgrade: no request in flight"),
        "{}",
        a.logs()
    );
    for _ in 0..3 {
        assert_eq!(
            answered_by_successor(port).await,
            Ok(true),
            "B: {}",
            b.logs()
        );
    }
    let r = client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&chat_body("echo/test", "after the upgrade", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "after the upgrade");
}

/// Daemons started by a test: not our children, so they are stopped by the PIDs they wrote.
struct Daemons(Vec<u32>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn read_pid(path: &std::path::Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// What `systemctl start` and `systemctl reload` do with conf/ai-gateway.service: `--daemon`
/// returns once the server is ready and leaves its PID in GATEWAY_PID_FILE; `--daemon
/// --upgrade` returns once the new process waits for the socket; then SIGQUIT to the old PID.
#[tokio::test(flavor = "multi_thread")]
async fn systemd_style_start_and_reload_with_daemon_mode() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pid_file = dir.path().join("ai-gateway.pid");
    let sock = dir.path().join("upgrade.sock");
    let log = dir.path().join("journal.log");
    let bee = format!("http://127.0.0.1:{}", free_port());
    let mut daemons = Daemons(Vec::new());
    let run = |extra: &[(&str, &str)], args: &[&str]| {
        let mut vars = vec![
            ("GATEWAY_LISTEN", listen.as_str()),
            ("GATEWAY_ECHO_CHUNK_DELAY_MS", "150"),
        ];
        vars.extend_from_slice(extra);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Gateway::command(&vars)
            .args(args)
            .env("GATEWAY_PID_FILE", &pid_file)
            .env("GATEWAY_UPGRADE_SOCK", &sock)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // The parent of the fork exits once the daemon is ready (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{args:?} did not return: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let journal = || std::fs::read_to_string(&log).unwrap_or_default();

    // ExecStart=ai-gateway --daemon
    let s = run(&[], &["--daemon"]);
    assert!(s.success(), "{s}: {}", journal());
    let old = read_pid(&pid_file);
    daemons.0.push(old);
    assert!(pid_alive(old));
    // Pingora reports "ready" once it could take sockets over, a moment before it listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon never listened: {}",
            journal()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        answered_by_successor(port).await,
        Ok(false),
        "{}",
        journal()
    );

    let body = start_stream(&format!("http://{listen}/v1/chat/completions"), 40).await;
    let reader = tokio::spawn(collect(body));

    // ExecReload=ai-gateway --daemon --upgrade ; ExecReload=kill -QUIT $MAINPID
    let s = run(
        &[("GATEWAY_PROVIDER_BEE_BASE_URL", &bee)],
        &["--daemon", "--upgrade"],
    );
    assert!(s.success(), "{s}: {}", journal());
    let new = read_pid(&pid_file);
    daemons.0.push(new);
    assert_ne!(new, old, "the new daemon writes its PID");
    let _ = Command::new("kill")
        .args(["-QUIT", &old.to_string()])
        .status();

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut served_by_new = 0;
    while served_by_new < 3 {
        assert!(
            Instant::now() < deadline,
            "the new daemon never took over: {}",
            journal()
        );
        match answered_by_successor(port).await {
            Ok(true) => served_by_new += 1,
            Ok(false) => {}
            Err(e) => panic!("a request failed during the reload ({e}): {}", journal()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sse = reader.await.unwrap();
    assert_eq!(echoed_words(&sse).split_whitespace().count(), 40);
    let deadline = Instant::now() + Duration::from_secs(40);
    while pid_alive(old) {
        assert!(
            Instant::now() < deadline,
            "the old daemon did not exit: {}",
            journal()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        journal().contains("graceful upgrade: no request in flight"),
        "{}",
        journal()
    );

    // systemctl stop: SIGTERM to the PID in the pid file.
    let _ = Command::new("kill")
        .args(["-TERM", &new.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pid_alive(new) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop: {}",
            journal()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the gateway to its exit (killed after 20 s, so a start that wrongly succeeds fails the
/// test instead of hanging it): (exited successfully, stdout, stderr, how long it ran).
fn run_to_exit(vars: &[(&str, &str)]) -> (bool, String, String, Duration) {
    let t = Instant::now();
    let mut child = Gateway::command(vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the gateway");
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let took = t.elapsed();
    let out = child.wait_with_output().expect("collect the output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

#[test]
fn a_port_in_use_stops_the_start_with_one_clear_line() {
    // Something else holds the port (here, a plain listener; in the report, a first gateway).
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let (ok, stdout, stderr, took) = run_to_exit(&[("GATEWAY_LISTEN", addr.as_str())]);
    assert!(!ok, "exited 0: {stderr}");
    assert!(
        stderr.contains(&format!("address {addr} is in use")),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("listening on") && !stdout.contains("listening on"),
        "claimed to listen: {stderr}{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Pingora alone retried for 30 s before panicking; the kill comes at 20 s.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The same for the metrics listener.
    let free = format!("127.0.0.1:{}", free_port());
    let (ok, _, stderr, _) = run_to_exit(&[
        ("GATEWAY_LISTEN", free.as_str()),
        ("GATEWAY_METRICS_LISTEN", addr.as_str()),
    ]);
    assert!(!ok, "exited 0: {stderr}");
    assert!(
        stderr.contains(&format!("address {addr} is in use")),
        "{stderr}"
    );
    drop(holder);
}
