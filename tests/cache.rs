//! Issue 5: the response cache with the memory backend, against counting mock upstreams:
//! hits and misses, every answer-affecting field, TTL, size bound, client control, streams
//! stored and replayed in both forms, unbuffered misses, coalescing, the semantic layer, and
//! the OpenAI Python SDK reading cached answers.

mod cache_support;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use cache_support::*;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn memory(mock: &Mock, extra: &[(&str, &str)]) -> Gateway {
    let url = mock.url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("OPENAI_BASE_URL", &url),
        ("OPENAI_API_KEY", "sk-provider"),
        ("GATEWAY_CACHE_BACKEND", "memory"),
    ];
    vars.extend_from_slice(extra);
    Gateway::start(&vars)
}

/// Latencies (ms) of the log lines that contain `needle`.
fn logged_latencies(gw: &Gateway, needle: &str) -> Vec<f64> {
    gw.logs()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let v = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("latency="))?;
            v.trim_end_matches("ms").parse().ok()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_request_is_a_hit_with_zero_upstream_calls() {
    let mock = Mock::start(openai_handler("Hello from the mock")).await;
    let gw = memory(&mock, &[("GATEWAY_CACHE_TTL", "300")]);

    let first = post(&gw, &chat("hi"), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.cache(), "MISS");
    assert_eq!(mock.calls(), 1);

    let second = post(&gw, &chat("hi"), &[("x-request-id", "trace-hit-1")]).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.cache(), "HIT");
    assert_eq!(mock.calls(), 1, "a hit makes no upstream call");
    let ttl: u64 = second.h("x-cache-ttl").unwrap().parse().unwrap();
    assert!((290..=300).contains(&ttl), "ttl {ttl}");
    assert_eq!(second.h("x-provider"), Some("openai"));
    assert_eq!(second.h("x-request-id"), Some("trace-hit-1"));
    let v = second.json();
    assert_eq!(v["object"], "chat.completion");
    // The model as the miss named it (the upstream's own answer, passed through).
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["model"], first.json()["model"]);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // The original counts, as the upstream reported them.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert_ne!(
        v["id"],
        first.json()["id"],
        "a hit is a new completion object"
    );

    // Fields that cannot change the answer do not change the key; neither does naming the
    // same upstream model without its provider prefix.
    let mut same = chat("hi");
    same["model"] = json!("gpt-4o");
    same["user"] = json!("alice");
    same["metadata"] = json!({"trace": "abc"});
    same["stream_options"] = json!({"include_usage": false});
    let r = post(&gw, &same, &[]).await;
    assert_eq!(r.cache(), "HIT", "{}", r.body);
    assert_eq!(mock.calls(), 1);

    // The log line says it was a hit and counts zero upstream tokens.
    assert!(
        gw.wait_log("req=trace-hit-1", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("req=trace-hit-1"))
        .unwrap()
        .to_string();
    assert!(line.contains("cache=hit"), "{line}");
    assert!(line.contains("tokens=0"), "{line}");
    assert!(line.contains("provider=openai"), "{line}");
    assert!(line.contains("attempts=0"), "{line}");
    let miss_line = gw
        .logs()
        .lines()
        .find(|l| l.contains("cache=miss"))
        .unwrap()
        .to_string();
    assert!(miss_line.contains("tokens=18"), "{miss_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_affecting_field_is_a_miss() {
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let gw = memory(&mock, &[("GATEWAY_PROVIDER_OTHER_BASE_URL", &mock.url())]);
    let base = json!({
        "model": "openai/gpt-4o",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.2
    });
    assert_eq!(post(&gw, &base, &[]).await.cache(), "MISS");
    assert_eq!(post(&gw, &base, &[]).await.cache(), "HIT");
    let variants: Vec<(&str, Value)> = vec![
        (
            "messages",
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi!"}]),
        ),
        (
            "messages",
            json!([{"role": "system", "content": "be long"}, {"role": "user", "content": "hi"}]),
        ),
        ("model", json!("openai/gpt-4o-mini")),
        ("model", json!("other/gpt-4o")),
        ("temperature", json!(0.3)),
        ("top_p", json!(0.5)),
        ("max_tokens", json!(5)),
        ("max_completion_tokens", json!(5)),
        ("stop", json!(["END"])),
        ("seed", json!(42)),
        ("response_format", json!({"type": "json_object"})),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]),
        ),
        ("tool_choice", json!("none")),
        ("presence_penalty", json!(0.1)),
        ("frequency_penalty", json!(0.1)),
        ("logit_bias", json!({"50256": -100})),
        ("reasoning_effort", json!("low")),
        ("x_vendor_field", json!(true)),
    ];
    for (field, value) in variants {
        let mut v = base.clone();
        v[field] = value.clone();
        let before = mock.calls();
        let r = post(&gw, &v, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.cache(), "MISS", "{field} = {value}");
        assert_eq!(mock.calls(), before + 1, "{field} = {value}");
        // ...and that variant is now cached under its own key.
        assert_eq!(post(&gw, &v, &[]).await.cache(), "HIT", "{field} = {value}");
        assert_eq!(mock.calls(), before + 1);
    }
    // The base entry was never overwritten by a variant.
    let r = post(&gw, &base, &[]).await;
    assert_eq!((r.cache(), r.content().as_str()), ("HIT", "answer 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_expire_after_their_ttl() {
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let gw = memory(&mock, &[("GATEWAY_CACHE_TTL", "4")]);
    assert_eq!(post(&gw, &chat("ttl"), &[]).await.cache(), "MISS");
    let hit = post(&gw, &chat("ttl"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    let left: u64 = hit.h("x-cache-ttl").unwrap().parse().unwrap();
    assert!((1..=4).contains(&left), "{left}");
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let after = post(&gw, &chat("ttl"), &[]).await;
    assert_eq!(after.cache(), "MISS");
    assert_eq!(after.content(), "answer 2");
    assert_eq!(mock.calls(), 2);

    // X-Cache-TTL on the request shortens an entry's life, and never lengthens it.
    let gw = memory(&mock, &[("GATEWAY_CACHE_TTL", "300")]);
    let r = post(&gw, &chat("short"), &[("x-cache-ttl", "3")]).await;
    assert_eq!(r.cache(), "MISS");
    let r = post(&gw, &chat("short"), &[]).await;
    assert_eq!(r.cache(), "HIT");
    let left: u64 = r.h("x-cache-ttl").unwrap().parse().unwrap();
    assert!((1..=3).contains(&left), "{left}");
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(post(&gw, &chat("short"), &[]).await.cache(), "MISS");
    post(&gw, &chat("long"), &[("x-cache-ttl", "999999")]).await;
    let r = post(&gw, &chat("long"), &[]).await;
    let left: u64 = r.h("x-cache-ttl").unwrap().parse().unwrap();
    assert!((290..=300).contains(&left), "{left}");
    // X-Cache-TTL: 0 means "do not keep this one".
    post(&gw, &chat("zero"), &[("x-cache-ttl", "0")]).await;
    assert_eq!(post(&gw, &chat("zero"), &[]).await.cache(), "MISS");
    // A malformed X-Cache-TTL is a clear 400, not a silent default.
    let r = post(&gw, &chat("bad"), &[("x-cache-ttl", "soon")]).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["code"], "invalid_cache_ttl");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-Cache-TTL"));
}

/// Eight answers stored, then asked again: how many are hits.
async fn hits_after_refill(mock: &Mock, var: &str, max: &str) -> usize {
    let gw = memory(mock, &[(var, max)]);
    for i in 0..8 {
        assert_eq!(
            post(&gw, &chat(&format!("q{i}")), &[]).await.cache(),
            "MISS"
        );
    }
    let mut hits = 0;
    for i in 0..8 {
        if post(&gw, &chat(&format!("q{i}")), &[]).await.cache() == "HIT" {
            hits += 1;
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn max_bytes_is_honoured() {
    // Answers of 40 KB: 100 KB holds two of them at most.
    let big: &'static str = Box::leak("x".repeat(40_000).into_boxed_str());
    let mock = Mock::start(openai_handler(big)).await;
    let small = hits_after_refill(&mock, "GATEWAY_CACHE_MAX_BYTES", "100000").await;
    assert!(small <= 2, "{small} hits with room for 100 KB");
    assert_eq!(
        hits_after_refill(&mock, "GATEWAY_CACHE_MAX_BYTES", "10m").await,
        8
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_size_is_honoured() {
    let mock = Mock::start(openai_handler("x")).await;
    let small = hits_after_refill(&mock, "GATEWAY_CACHE_MAX_SIZE", "3").await;
    assert!(small <= 3, "{small} hits with room for 3 entries");
    // The same sequence with room for all of them hits every time: the bound is what
    // limited the first run.
    assert_eq!(
        hits_after_refill(&mock, "GATEWAY_CACHE_MAX_SIZE", "100").await,
        8
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_control_and_off() {
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let gw = memory(&mock, &[]);
    assert_eq!(post(&gw, &chat("cc"), &[]).await.content(), "answer 1");

    // no-cache: skips the lookup, goes upstream, and stores the fresh answer.
    let r = post(&gw, &chat("cc"), &[("cache-control", "no-cache")]).await;
    assert_eq!((r.cache(), r.content().as_str()), ("BYPASS", "answer 2"));
    let r = post(&gw, &chat("cc"), &[]).await;
    assert_eq!((r.cache(), r.content().as_str()), ("HIT", "answer 2"));

    // no-store: neither serves nor stores.
    let r = post(&gw, &chat("cc"), &[("cache-control", "no-store")]).await;
    assert_eq!((r.cache(), r.content().as_str()), ("BYPASS", "answer 3"));
    let r = post(
        &gw,
        &chat("fresh"),
        &[("cache-control", "private, no-store")],
    )
    .await;
    assert_eq!(r.cache(), "BYPASS");
    assert_eq!(post(&gw, &chat("fresh"), &[]).await.cache(), "MISS");
    assert_eq!(mock.calls(), 5);

    // Several choices cannot be replayed from one stored answer.
    let mut n2 = chat("cc");
    n2["n"] = json!(2);
    assert_eq!(post(&gw, &n2, &[]).await.cache(), "BYPASS");
    assert_eq!(post(&gw, &n2, &[]).await.cache(), "BYPASS");
    assert_eq!(mock.calls(), 7);

    // GATEWAY_CACHE_BACKEND=off: no cache at all, no X-Cache header.
    let off = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_CACHE_BACKEND", "off"),
    ]);
    let a = post(&off, &chat("cc"), &[]).await;
    let b = post(&off, &chat("cc"), &[]).await;
    assert_eq!(a.h("x-cache"), None);
    assert_eq!(b.h("x-cache"), None);
    assert_eq!(mock.calls(), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_answers_are_stored_and_serve_both_forms() {
    let mock = Mock::start(openai_handler("Streams are cached too")).await;
    let gw = memory(&mock, &[]);

    // A stream miss: the client gets exactly what it would get with the cache off.
    let miss = post(&gw, &chat_body("openai/gpt-4o", "s", true), &[]).await;
    assert_eq!(miss.cache(), "MISS");
    let upstream =
        openai_stream_events("gpt-4o", &["Streams ", "are ", "cached ", "too"], false).concat();
    assert_eq!(miss.body, upstream);
    assert_eq!(mock.calls(), 1);

    // Replayed to a stream request, with the usage chunk when asked.
    let mut with_usage = chat_body("openai/gpt-4o", "s", true);
    with_usage["stream_options"] = json!({"include_usage": true});
    let hit = post(&gw, &with_usage, &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert!(hit
        .h("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let (text, chunks) = parse_stream(&hit.body);
    assert_eq!(text, "Streams are cached too");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    // The usage the upstream reported for the stored stream (which the client of the miss
    // did not ask to see).
    assert_eq!(usage["usage"]["total_tokens"], 15);
    let hit = post(&gw, &chat_body("openai/gpt-4o", "s", true), &[]).await;
    let (_, chunks) = parse_stream(&hit.body);
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() || c["usage"].is_null()));

    // Replayed to a plain request as a chat.completion.
    let plain = post(&gw, &chat("s"), &[]).await;
    assert_eq!(plain.cache(), "HIT");
    assert_eq!(plain.content(), "Streams are cached too");
    assert_eq!(plain.json()["usage"]["total_tokens"], 15);
    assert_eq!(mock.calls(), 1);

    // And a plain answer serves a later stream request.
    assert_eq!(post(&gw, &chat("p"), &[]).await.cache(), "MISS");
    let hit = post(&gw, &chat_body("openai/gpt-4o", "p", true), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(parse_stream(&hit.body).0, "Streams are cached too");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_tool_calls_are_replayed() {
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        )
    };
    let events = vec![
        chunk(json!({"role": "assistant", "content": null}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        "data: [DONE]\n\n".to_string(),
    ];
    let mock = Mock::start(Arc::new(move |_r: &Recorded| {
        sse_response(events.clone(), Duration::ZERO, None)
    }))
    .await;
    let gw = memory(&mock, &[]);
    let mut body = chat_body("openai/gpt-4o", "weather?", true);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather"}}]);
    assert_eq!(post(&gw, &body, &[]).await.cache(), "MISS");
    body["stream"] = json!(false);
    let r = post(&gw, &body, &[]).await;
    assert_eq!(r.cache(), "HIT", "{}", r.body);
    let m = &r.json()["choices"][0];
    assert_eq!(m["finish_reason"], "tool_calls");
    assert_eq!(m["message"]["content"], Value::Null);
    assert_eq!(m["message"]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        m["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        m["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_complete_successful_answers_are_stored() {
    // Calls alternate: a broken answer first, then a good one; the broken one is never served.
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let mock = Mock::start(Arc::new(move |r: &Recorded| {
        let i = c2.fetch_add(1, Ordering::SeqCst);
        let body = r.json();
        let text = body["messages"][0]["content"].as_str().unwrap_or("").to_string();
        let good = i % 2 == 1;
        match text.as_str() {
            "cut" if !good => sse_response(openai_stream_events("m", &["half", "way"], false), Duration::ZERO, Some(2)),
            "error-event" if !good => sse_response(
                vec![
                    openai_stream_events("m", &["x"], false)[0].clone(),
                    "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n".into(),
                ],
                Duration::ZERO,
                None,
            ),
            "status-500" if !good => json_response(500, json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}})),
            "filtered" if !good => {
                let mut v = openai_completion("m", "");
                v["choices"][0]["finish_reason"] = json!("content_filter");
                json_response(200, v)
            }
            _ if body["stream"] == json!(true) => sse_response(openai_stream_events("m", &["good"], false), Duration::ZERO, None),
            _ => json_response(200, openai_completion("m", "good")),
        }
    }))
    .await;
    let gw = memory(&mock, &[]);
    for (text, stream) in [
        ("cut", true),
        ("error-event", true),
        ("status-500", false),
        ("filtered", false),
    ] {
        calls.store(0, Ordering::SeqCst);
        let first = post(&gw, &chat_body("openai/gpt-4o", text, stream), &[]).await;
        assert_eq!(first.cache(), "MISS", "{text}");
        let second = post(&gw, &chat_body("openai/gpt-4o", text, stream), &[]).await;
        assert_eq!(second.cache(), "MISS", "{text}: a broken answer was stored");
        assert_eq!(second.status, 200, "{text}");
        assert!(second.body.contains("good"), "{text}: {}", second.body);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{text}");
        // The good one is stored.
        assert_eq!(
            post(&gw, &chat_body("openai/gpt-4o", text, stream), &[])
                .await
                .cache(),
            "HIT",
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_miss_is_not_delayed_by_the_cache() {
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let s2 = sent_at.clone();
    let mock = Mock::start(Arc::new(move |_r: &Recorded| {
        let events = openai_stream_events("m", &["one", "two", "three"], false);
        let s3 = s2.clone();
        let stream = futures::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| {
            let s4 = s3.clone();
            async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                s4.lock().unwrap().push(Instant::now());
                Ok::<_, std::io::Error>(Bytes::from(e))
            }
        });
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        r
    }))
    .await;
    let gw = memory(&mock, &[]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/m", "slow", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    let mut stream = r.bytes_stream();
    let mut received = Vec::new();
    let mut first_seen = None;
    while let Some(c) = stream.next().await {
        received.extend_from_slice(&c.unwrap());
        first_seen.get_or_insert_with(Instant::now);
    }
    let sent = sent_at.lock().unwrap().clone();
    let first_seen = first_seen.unwrap();
    // The first event reached the client long before the upstream sent its last one.
    assert!(
        first_seen < *sent.last().unwrap(),
        "first byte arrived only after the stream ended"
    );
    let whole = sent.last().unwrap().duration_since(sent[0]);
    let lag = first_seen.saturating_duration_since(sent[0]);
    assert!(
        lag * 3 < whole,
        "first event lagged {lag:?} of a {whole:?} stream"
    );
    assert_eq!(
        received,
        openai_stream_events("m", &["one", "two", "three"], false)
            .concat()
            .into_bytes()
    );
    // ...and the stream was still stored.
    let hit = post(&gw, &chat_body("openai/m", "slow", false), &[]).await;
    assert_eq!(
        (hit.cache(), hit.content().as_str()),
        ("HIT", "onetwothree")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_requests_make_one_upstream_call() {
    let (h, _) = numbered(Duration::from_millis(1500));
    let mock = Mock::start(h).await;
    let gw = Arc::new(memory(&mock, &[]));
    let body = chat("together");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let gw = gw.clone();
            let body = body.clone();
            tokio::spawn(async move { post(&gw, &body, &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(
        mock.calls(),
        1,
        "20 identical requests in flight make one upstream call"
    );
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.content() == "answer 1"));
    let misses = replies.iter().filter(|r| r.cache() == "MISS").count();
    let coalesced = replies
        .iter()
        .filter(|r| r.h("x-cache-coalesced") == Some("true"))
        .count();
    assert_eq!(misses, 1);
    assert!(replies
        .iter()
        .filter(|r| r.cache() != "MISS")
        .all(|r| r.cache() == "HIT"));
    assert!(coalesced >= 1, "no request waited for the leader");
    assert!(replies
        .iter()
        .filter(|r| r.h("x-cache-coalesced").is_some())
        .all(|r| r.cache() == "HIT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_leader_lets_followers_go_on_their_own() {
    // The first call fails slowly; the others answer.
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let mock = Mock::start(Arc::new(move |_r: &Recorded| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        if i == 0 {
            let stream = futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, std::io::Error>(Bytes::from(r#"{"error":{"message":"leader failed","type":"invalid_request_error","param":null,"code":null}}"#))
            });
            let mut r = Response::new(Body::from_stream(stream));
            *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
            r
        } else {
            json_response(200, openai_completion("m", "fine"))
        }
    }))
    .await;
    let gw = Arc::new(memory(&mock, &[]));
    let leader = {
        let gw = gw.clone();
        tokio::spawn(async move { post(&gw, &chat("fragile"), &[]).await })
    };
    // Let the leader reach the upstream first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.calls() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let followers: Vec<_> = (0..4)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { post(&gw, &chat("fragile"), &[]).await })
        })
        .collect();
    let leader = leader.await.unwrap();
    assert_eq!(leader.status, 400);
    assert!(leader.body.contains("leader failed"));
    for f in followers {
        let f = f.await.unwrap();
        assert_eq!(
            f.status, 200,
            "a follower got the leader's failure: {}",
            f.body
        );
        assert_eq!(f.content(), "fine");
    }
    assert!(mock.calls() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hit_costs_far_less_gateway_time_than_a_miss() {
    let (h, _) = numbered(Duration::from_millis(50));
    let mock = Mock::start(h).await;
    let gw = memory(&mock, &[]);
    for i in 0..20 {
        post(&gw, &chat(&format!("t{i}")), &[]).await;
    }
    for _ in 0..5 {
        for i in 0..20 {
            assert_eq!(post(&gw, &chat(&format!("t{i}")), &[]).await.cache(), "HIT");
        }
    }
    // Log lines are written after the response; wait until all are there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged_latencies(&gw, "cache=hit").len() < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = logged_latencies(&gw, "cache=hit");
    let misses = logged_latencies(&gw, "cache=miss");
    assert_eq!(hits.len(), 100);
    assert_eq!(misses.len(), 20);
    let (h, m) = (median(hits), median(misses));
    println!("gateway latency from the log line: hit median {h:.3} ms, miss median {m:.3} ms (upstream 50 ms)");
    assert!(h * 5.0 < m, "hit {h} ms vs miss {m} ms");
}

// --- semantic cache ---

#[tokio::test(flavor = "multi_thread")]
async fn semantic_hits_need_the_same_context_and_a_close_final_message() {
    let (h, _) = numbered(Duration::ZERO);
    let chat_mock = Mock::start(h).await;
    let emb_mock = Mock::start(embeddings()).await;
    let emb_url = emb_mock.url();
    let gw = memory(
        &chat_mock,
        &[
            ("GATEWAY_PROVIDER_EMB_BASE_URL", &emb_url),
            ("GATEWAY_SEMANTIC_CACHE", "on"),
            ("GATEWAY_SEMANTIC_CACHE_MODEL", "emb/text-embedding-3-small"),
        ],
    );
    semantic_checks(&gw, &gw, &chat_mock, &emb_mock).await;
    assert!(
        gw.wait_log("semantic lookup skipped", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );

    // A stricter threshold turns the paraphrase into a miss.
    let (h, _) = numbered(Duration::ZERO);
    let chat_mock = Mock::start(h).await;
    let strict = memory(
        &chat_mock,
        &[
            ("GATEWAY_PROVIDER_EMB_BASE_URL", &emb_url),
            ("GATEWAY_SEMANTIC_CACHE", "on"),
            ("GATEWAY_SEMANTIC_CACHE_MODEL", "emb/text-embedding-3-small"),
            ("GATEWAY_SEMANTIC_CACHE_THRESHOLD", "0.99"),
        ],
    );
    post(&strict, &ask("t", "What is the capital of France?"), &[]).await;
    let r = post(
        &strict,
        &ask("t", "Tell me the capital city of France"),
        &[],
    )
    .await;
    assert_eq!(r.cache(), "MISS");
}

// --- the OpenAI Python SDK ---

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_reads_cached_answers_in_both_forms() {
    // As in tests/python_sdk.rs, so the base checks of test_sdk.py pass too: `status-NNN`
    // models answer with that status.
    let ok = openai_handler("Hello from the mock");
    let mock = Mock::start(Arc::new(move |r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        if let Some(code) = model.strip_prefix("status-").and_then(|c| c.parse::<u16>().ok()) {
            return json_response(code, json!({"error": {"message": format!("mock says {code}"), "type": "mock_error", "param": null, "code": null}}));
        }
        ok(r)
    }))
    .await;
    let gw = memory(&mock, &[]);
    let stdout = run_python(&gw, &["test_sdk.py"], &[("GATEWAY_SDK_EXTRA", "cache_sdk")]).await;
    for check in [
        "ok cache_plain_then_both_forms",
        "ok cache_stream_then_both_forms",
    ] {
        assert!(stdout.contains(check), "{check} did not run:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_hit_names_the_model_the_miss_named_and_comes_in_pieces() {
    let mock = Mock::start(openai_handler(
        "Paris is the capital of France, and it has been for a very long time indeed.",
    ))
    .await;
    let gw = memory(&mock, &[]);
    let mut body = chat("capital?");
    body["stream"] = json!(true);
    let models = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["model"].as_str().map(str::to_string))
            .collect()
    };
    let deltas = |text: &str| -> usize {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["choices"][0]["delta"]["content"].is_string())
            .count()
    };
    let miss = post(&gw, &body, &[]).await;
    assert_eq!(miss.cache(), "MISS");
    let hit = post(&gw, &body, &[]).await;
    assert_eq!(hit.cache(), "HIT", "{}", hit.body);
    let (m, h) = (models(&miss.body), models(&hit.body));
    assert!(!m.is_empty() && !h.is_empty());
    assert!(h.iter().all(|x| *x == m[0]), "miss {m:?}, hit {h:?}");
    // A few words a delta, not the whole answer in one.
    assert!(deltas(&hit.body) >= 3, "{}", hit.body);
}
