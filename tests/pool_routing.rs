//! Issue 23: pool strategies (`round_robin`, `least_requests`, `inference`) against mock vLLM
//! replicas with controlled `/metrics` and requests in flight; prefix affinity (a conversation
//! stays on one replica, a hot prefix spills over beyond the bound, an unhealthy replica loses
//! its prefixes); `/metrics` scrapes that fail, hang or answer garbage never fail a request.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::Response;
use common::*;
use serde_json::{json, Value};

/// What a replica's `/metrics` answers.
#[derive(Clone, Debug)]
enum Metrics {
    /// vLLM's gauges with these waiting, running and KV-cache figures.
    Vllm {
        waiting: u32,
        running: u32,
        kv: f64,
    },
    /// The older vLLM name for KV-cache use.
    OldVllm {
        kv: f64,
    },
    Status(u16),
    /// Head at once, the body after much longer than any scrape waits.
    Slow,
    Garbage,
}

/// A mock vLLM replica: chat completions (a stream whose last user message says `slow`
/// takes `SLOW_STREAM` to its last byte; answering 500 while `failing`), and `/metrics`.
struct Replica {
    mock: Mock,
    metrics: Arc<Mutex<Metrics>>,
    failing: Arc<Mutex<bool>>,
}

const SLOW_STREAM: Duration = Duration::from_millis(4000);

impl Replica {
    async fn start(metrics: Metrics) -> Replica {
        let metrics = Arc::new(Mutex::new(metrics));
        let failing = Arc::new(Mutex::new(false));
        let (m2, f2) = (metrics.clone(), failing.clone());
        let ok = openai_handler("hello from the replica");
        let handler: Handler = Arc::new(move |r: &Recorded| -> Response {
            if r.path == "/metrics" {
                return metrics_response(&m2.lock().unwrap());
            }
            if *f2.lock().unwrap() {
                return json_response(500, json!({"error": {"message": "boom"}}));
            }
            let body = r.json();
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .map(|m| m["content"].to_string())
                .unwrap_or_default();
            if last.contains("slow") {
                let events = openai_stream_events("m", &["a ", "b ", "c ", "d ", "e"], false);
                let gap = SLOW_STREAM / events.len() as u32;
                return sse_response(events, gap, None);
            }
            ok(r)
        });
        Replica {
            mock: Mock::start(handler).await,
            metrics,
            failing,
        }
    }

    fn chats(&self) -> usize {
        self.mock.calls()
    }
}

fn metrics_response(m: &Metrics) -> Response {
    let text = |s: String| {
        let mut r = Response::new(axum::body::Body::from(s));
        r.headers_mut()
            .insert("content-type", "text/plain; version=0.0.4".parse().unwrap());
        r
    };
    match m {
        Metrics::Vllm {
            waiting,
            running,
            kv,
        } => text(format!(
            "# HELP vllm:num_requests_waiting Number of requests waiting.\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{engine=\"0\",model_name=\"m\"}} {waiting}.0\n\
             vllm:num_requests_running{{engine=\"0\",model_name=\"m\"}} {running}.0\n\
             vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} {kv}\n\
             vllm:prompt_tokens_total{{engine=\"0\",model_name=\"m\"}} 12345.0\n"
        )),
        Metrics::OldVllm { kv } => text(format!(
            "vllm:gpu_cache_usage_perc{{model_name=\"m\"}} {kv}\n"
        )),
        Metrics::Status(s) => json_response(*s, json!({"error": "no metrics here"})),
        Metrics::Slow => sse_response(
            vec!["vllm:num_requests_waiting 0\n".into(), "x\n".into()],
            Duration::from_secs(5),
            None,
        ),
        Metrics::Garbage => {
            text("<html>\u{1}\u{2} not prometheus {{{ vllm:num_requests_waiting NaN\n".into())
        }
    }
}

fn pool_vars<'a>(urls: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("VLLM_BASE_URL", urls)];
    v.extend_from_slice(extra);
    v
}

fn urls(replicas: &[&Replica]) -> String {
    replicas
        .iter()
        .map(|r| r.mock.url())
        .collect::<Vec<_>>()
        .join(",")
}

async fn chat(gw: &Gateway, messages: &Value, stream: bool) -> (u16, String) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "vllm/m", "messages": messages, "stream": stream}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn providers(gw: &Gateway) -> Value {
    client()
        .get(gw.url("/health/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `vllm` pool's entry in `/health/providers`.
async fn vllm_pool(gw: &Gateway) -> Value {
    let v = providers(gw).await;
    v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vllm")
        .cloned()
        .unwrap_or_else(|| panic!("no vllm pool in {v}"))
}

/// Polls `/health/providers` until `done` holds for the vllm pool (at most 15 s).
async fn wait_pool(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = vllm_pool(gw).await;
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "{what}: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the replicas together have received `n` chat requests.
async fn wait_chats(replicas: &[&Replica], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while replicas.iter().map(|r| r.chats()).sum::<usize>() < n {
        assert!(
            Instant::now() < deadline,
            "the replicas never got {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A conversation's messages after `turns` user turns: a long shared system prompt, then the
/// history (each turn resends it).
fn conversation(system: &str, turns: usize) -> Value {
    let mut m = vec![json!({"role": "system", "content": system})];
    for t in 0..turns {
        m.push(json!({"role": "user", "content": format!("turn {t}: tell me more about topic {t}, in detail please")}));
        if t + 1 < turns {
            m.push(json!({"role": "assistant", "content": format!("answer {t}: {}", "words ".repeat(40))}));
        }
    }
    Value::Array(m)
}

fn system(name: &str) -> String {
    format!(
        "You are {name}, a careful assistant. {}",
        "Follow the house rules. ".repeat(30)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_takes_turns_whatever_the_metrics_say() {
    let a = Replica::start(Metrics::Vllm {
        waiting: 50,
        running: 8,
        kv: 0.99,
    })
    .await;
    let b = Replica::start(Metrics::Vllm {
        waiting: 0,
        running: 0,
        kv: 0.0,
    })
    .await;
    let u = urls(&[&a, &b]);
    let gw = Gateway::start(&pool_vars(&u, &[("VLLM_POOL_STRATEGY", "round_robin")]));
    let p = vllm_pool(&gw).await;
    assert_eq!(p["strategy"], "round_robin", "{p}");
    for _ in 0..10 {
        let (s, body) = chat(&gw, &conversation(&system("rr"), 1), false).await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!((a.chats(), b.chats()), (5, 5));
    assert_eq!(a.mock.all_calls(), 5, "round_robin scrapes nothing");
    assert!(
        gw.wait_log("pick=round_robin", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn least_requests_avoids_the_replica_with_a_stream_in_flight() {
    let a = Replica::start(Metrics::Status(404)).await;
    let b = Replica::start(Metrics::Status(404)).await;
    let u = urls(&[&a, &b]);
    let gw = Gateway::start(&pool_vars(
        &u,
        &[("GATEWAY_POOL_STRATEGY", "least_requests")],
    ));
    // A stream in flight until its last byte, seconds later.
    let slow = json!([{"role": "user", "content": "slow please"}]);
    let gw_url = gw.url("/v1/chat/completions");
    let stream = tokio::spawn(async move {
        let r = client()
            .post(gw_url)
            .json(&json!({"model": "vllm/m", "messages": slow, "stream": true}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    wait_chats(&[&a, &b], 1).await;
    let busy_is_a = a.chats() == 1;
    for i in 0..6 {
        let (s, body) = chat(
            &gw,
            &json!([{"role": "user", "content": format!("q{i}")}]),
            false,
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    let (busy, idle) = if busy_is_a { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        (busy.chats(), idle.chats()),
        (1, 6),
        "every quick request avoided the busy one"
    );
    let (s, body) = stream.await.unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("[DONE]"), "{body}");
    let p = vllm_pool(&gw).await;
    assert_eq!(p["strategy"], "least_requests", "{p}");
    for b in p["backends"].as_array().unwrap() {
        assert_eq!(b["load"]["in_flight"], 0, "the stream ended: {p}");
    }
    assert!(gw.wait_log("pick=least_requests", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn inference_is_the_vllm_default_and_reads_queue_and_kv_cache_from_metrics() {
    let a = Replica::start(Metrics::Vllm {
        waiting: 6,
        running: 4,
        kv: 0.9,
    })
    .await;
    let b = Replica::start(Metrics::OldVllm { kv: 0.1 }).await;
    let c = Replica::start(Metrics::Vllm {
        waiting: 0,
        running: 1,
        kv: 0.5,
    })
    .await;
    let u = urls(&[&a, &b, &c]);
    let gw = Gateway::start(&pool_vars(&u, &[("GATEWAY_POOL_METRICS_INTERVAL", "1s")]));
    let p = wait_pool(&gw, "scraped figures", |p| {
        let b = &p["backends"];
        b[0]["load"]["waiting"] == 6
            && b[1]["load"]["kv_cache_usage"] == 0.1
            && b[2]["load"]["running"] == 1
    })
    .await;
    assert_eq!(p["strategy"], "inference", "{p}");
    assert_eq!(
        p["backends"][1]["load"]["waiting"],
        Value::Null,
        "not exposed: unknown"
    );
    assert!(p["affinity"]["bound"].is_number(), "{p}");
    assert!(
        a.mock.requests().iter().any(|r| r.path == "/metrics"),
        "scraped at the host root"
    );
    // Short prompts (no full block): least load, which is b (KV 10%, nothing queued).
    for i in 0..6 {
        let (s, body) = chat(
            &gw,
            &json!([{"role": "user", "content": format!("q{i}")}]),
            false,
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!((a.chats(), b.chats(), c.chats()), (0, 6, 0));
    assert!(
        gw.wait_log("pick=least_load", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    assert!(
        gw.logs().contains(&format!("backend={}/v1", b.mock.url())),
        "{}",
        gw.logs()
    );
    // b's queue grows: c is now the least loaded.
    *b.metrics.lock().unwrap() = Metrics::Vllm {
        waiting: 9,
        running: 4,
        kv: 0.95,
    };
    wait_pool(&gw, "b's new figures", |p| {
        p["backends"][1]["load"]["waiting"] == 9
    })
    .await;
    let (s, _) = chat(&gw, &json!([{"role": "user", "content": "next"}]), false).await;
    assert_eq!(s, 200);
    assert_eq!(c.chats(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_of_one_conversation_land_on_one_replica() {
    let rs = [
        Replica::start(Metrics::Status(404)).await,
        Replica::start(Metrics::Status(404)).await,
        Replica::start(Metrics::Status(404)).await,
        Replica::start(Metrics::Status(404)).await,
    ];
    let all: Vec<&Replica> = rs.iter().collect();
    let u = urls(&all);
    let gw = Gateway::start(&pool_vars(&u, &[]));
    for conv in ["alice", "bob", "carol"] {
        let before: Vec<usize> = rs.iter().map(Replica::chats).collect();
        for turn in 1..=5 {
            let (s, body) = chat(&gw, &conversation(&system(conv), turn), turn % 2 == 0).await;
            assert_eq!(s, 200, "{body}");
        }
        let got: Vec<usize> = rs.iter().zip(&before).map(|(r, b)| r.chats() - b).collect();
        assert!(
            got.contains(&5),
            "conversation {conv}: every turn on one replica: {got:?}"
        );
    }
    let p = vllm_pool(&gw).await;
    let hits: u64 = p["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["load"]["affinity_hits"].as_u64().unwrap())
        .sum();
    assert_eq!(hits, 12, "four later turns of three conversations: {p}");
    assert!(gw.wait_log("pick=affinity", Duration::from_secs(5)));
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_pool_affinity_hits_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("pick=\"affinity\""), "{metrics}");
    assert!(metrics.contains("gateway_pool_picks_total{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_prefix_spills_over_beyond_the_bound() {
    let a = Replica::start(Metrics::Status(404)).await;
    let b = Replica::start(Metrics::Status(404)).await;
    let u = urls(&[&a, &b]);
    let gw = Gateway::start(&pool_vars(&u, &[("GATEWAY_POOL_AFFINITY_BOUND", "1")]));
    let sys = system("hot");
    let (s, _) = chat(&gw, &conversation(&sys, 1), false).await;
    assert_eq!(s, 200);
    let home_is_a = a.chats() == 1;
    // Two slow streams with the hot prefix: in flight 0 then 1, both within the bound of 1.
    let mut streams = Vec::new();
    for i in 0..2 {
        let mut m = conversation(&sys, 2);
        m.as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "content": format!("slow {i}")}));
        let gw_url = gw.url("/v1/chat/completions");
        streams.push(tokio::spawn(async move {
            let r = client()
                .post(gw_url)
                .json(&json!({"model": "vllm/m", "messages": m, "stream": true}))
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }));
        wait_chats(&[&a, &b], 2 + i).await;
    }
    let (home, other) = if home_is_a { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        (home.chats(), other.chats()),
        (3, 0),
        "the hot prefix stays home within the bound"
    );
    // Two in flight at home, none elsewhere: beyond the bound, the next one spills over.
    let (s, _) = chat(&gw, &conversation(&sys, 3), false).await;
    assert_eq!(s, 200);
    assert_eq!(other.chats(), 1, "spilled over");
    assert!(
        gw.wait_log("pick=spillover", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    for s in streams {
        assert!(s.await.unwrap().contains("[DONE]"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_goes_unhealthy_loses_its_affinity() {
    let a = Replica::start(Metrics::Status(404)).await;
    let b = Replica::start(Metrics::Status(404)).await;
    let u = urls(&[&a, &b]);
    let gw = Gateway::start(&pool_vars(&u, &[("GATEWAY_UNHEALTHY_COOLDOWN", "300ms")]));
    let sys = system("fickle");
    for turn in 1..=2 {
        let (s, _) = chat(&gw, &conversation(&sys, turn), false).await;
        assert_eq!(s, 200);
    }
    let (home, other) = if a.chats() == 2 { (&a, &b) } else { (&b, &a) };
    assert_eq!(home.chats(), 2);
    *home.failing.lock().unwrap() = true;
    // The next turn meets the failure and fails over to the next best: the other replica.
    let (s, body) = chat(&gw, &conversation(&sys, 3), false).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((home.chats(), other.chats()), (3, 1));
    *home.failing.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Home is healthy again, but the conversation now lives on the other replica.
    for turn in 4..=6 {
        let (s, _) = chat(&gw, &conversation(&sys, turn), turn == 5).await;
        assert_eq!(s, 200);
    }
    assert_eq!((home.chats(), other.chats()), (3, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_slow_and_garbage_scrapes_never_fail_a_request() {
    let down = Replica::start(Metrics::Status(500)).await;
    let slow = Replica::start(Metrics::Slow).await;
    let garbage = Replica::start(Metrics::Garbage).await;
    let u = urls(&[&down, &slow, &garbage]);
    let gw = Gateway::start(&pool_vars(
        &u,
        &[("GATEWAY_POOL_METRICS_INTERVAL", "100ms")],
    ));
    let p = wait_pool(&gw, "every scrape failed", |p| {
        p["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["load"]["scrape_error"].is_string())
    })
    .await;
    for b in p["backends"].as_array().unwrap() {
        assert_eq!(
            b["state"], "healthy",
            "a failed scrape is not a failed replica: {p}"
        );
        assert_eq!(b["load"]["waiting"], Value::Null, "{p}");
        assert_eq!(b["load"]["kv_cache_usage"], Value::Null, "{p}");
    }
    let mut tasks = Vec::new();
    for i in 0..12 {
        let gw_url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let m = conversation(&system(&format!("user{}", i % 3)), 1 + i % 4);
            let r = client()
                .post(gw_url)
                .json(&json!({"model": "vllm/m", "messages": m, "stream": i % 2 == 0}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (s, body) = t.await.unwrap();
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!(down.chats() + slow.chats() + garbage.chats(), 12);
    let p = vllm_pool(&gw).await;
    assert_eq!(p["healthy"], true, "{p}");
}

#[test]
fn an_invalid_pool_strategy_stops_start_up_naming_the_variable() {
    for (var, value) in [
        ("GATEWAY_POOL_STRATEGY", "fastest"),
        ("VLLM_POOL_STRATEGY", "random"),
        ("GATEWAY_POOL_AFFINITY_BOUND", "lots"),
        ("GATEWAY_POOL_METRICS_INTERVAL", "soon"),
    ] {
        let mut child = Gateway::command(&[
            (
                "VLLM_BASE_URL",
                "http://127.0.0.1:9/v1,http://127.0.0.1:10/v1",
            ),
            (var, value),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{var}={value}: the gateway started");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{var}={value}");
        assert!(err.contains(var), "{var}={value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ollama_pool_is_inference_by_default_and_never_scraped() {
    let a = Replica::start(Metrics::Status(404)).await;
    let b = Replica::start(Metrics::Status(404)).await;
    let u = urls(&[&a, &b]);
    let gw = Gateway::start(&[
        ("OLLAMA_BASE_URL", u.as_str()),
        ("GATEWAY_POOL_METRICS_INTERVAL", "100ms"),
    ]);
    let v = providers(&gw).await;
    let p = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ollama")
        .cloned()
        .unwrap();
    assert_eq!(p["strategy"], "inference", "{p}");
    assert_eq!(p["metrics_interval_ms"], Value::Null, "{p}");
    for turn in 1..=3 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "ollama/llama3", "messages": conversation(&system("llama"), turn)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        a.chats() == 3 || b.chats() == 3,
        "one conversation, one replica"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in [&a, &b] {
        assert!(r.mock.requests().iter().all(|q| q.path != "/metrics"));
    }
}
