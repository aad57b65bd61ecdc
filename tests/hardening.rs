//! Issue 19, hostile clients: bodies built to make parsing slow are refused quickly with a 400
//! in the client's API shape, and never starve other requests; a port in use stops the start
//! (tests/ops.rs).

mod common;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use redis_support::RedisServer;
use serde_json::{json, Value};

/// A body with `n` distinct top-level keys besides the ones a request needs.
fn many_keys(head: &str, n: usize) -> String {
    let mut s = String::with_capacity(n * 16 + head.len());
    s.push('{');
    s.push_str(head);
    for i in 0..n {
        s.push_str(&format!(",\"k{i}\":0"));
    }
    s.push('}');
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_with_a_hundred_thousand_keys_is_refused_quickly_on_every_endpoint() {
    let gw = Gateway::start(&[("GATEWAY_MAX_BODY_BYTES", "16000000")]);
    let cases = [
        (
            "/v1/chat/completions",
            r#""model":"echo/x","messages":[{"role":"user","content":"hi"}]"#,
            "error",
        ),
        (
            "/v1/messages",
            r#""model":"echo/x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]"#,
            "type",
        ),
        ("/v1/responses", r#""model":"echo/x","input":"hi""#, "error"),
        (
            "/v1/embeddings",
            r#""model":"echo/x","input":"hi""#,
            "error",
        ),
    ];
    for (path, head, shape) in cases {
        let body = many_keys(head, 100_000);
        // While the big body is parsed, /health must still answer at once.
        let url = gw.url(path);
        let big = tokio::spawn(async move {
            let t = Instant::now();
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, text, t.elapsed())
        });
        let t = Instant::now();
        let health = client()
            .get(gw.url("/health"))
            .send()
            .await
            .expect("health");
        assert_eq!(health.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path}: /health took {:?}",
            t.elapsed()
        );
        let (status, text, took) = big.await.expect("join");
        // Chat and embeddings read every top-level field (unknown ones are refused by name), so
        // they bound their number; Messages and Responses read known fields into typed structs
        // and skip the rest, which is linear without a bound.
        if path.ends_with("completions") || path.ends_with("embeddings") {
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.contains("top-level fields"), "{path}: {text}");
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
            assert!(v.get(shape).is_some(), "{path}: {text}");
        } else {
            assert!(status < 500, "{path}: {status} {text}");
        }
        // Measured before the bound: 9-17 s for 100,000 keys.
        assert!(took < Duration::from_secs(3), "{path}: took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_keys_are_still_accepted() {
    let gw = Gateway::start(&[]);
    // Unknown top-level fields are refused by name (400) or dropped, never a parse failure: a
    // body just under the bound gets past the parser to the field check.
    let body = many_keys(
        r#""model":"echo/x","messages":[{"role":"user","content":"hi"}]"#,
        1000,
    );
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    assert!(!text.contains("top-level fields"), "{status}: {text}");
}

/// Times one chat request through `gw` (status, how long).
async fn timed_chat(gw: &Gateway, key: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("echo/x", "hi", false))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (status, t.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_redis_costs_requests_milliseconds_not_seconds() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&[
        ("GATEWAY_API_KEYS", "team=sk-gw-hung-0123456789"),
        ("GATEWAY_RATE_LIMIT_RPM", "100000"),
        ("GATEWAY_RATE_LIMIT_BACKEND", "redis"),
        ("GATEWAY_CACHE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", &redis.url()),
    ]);
    let key = "sk-gw-hung-0123456789";
    // Healthy: answered, and the connections to Redis are made.
    for _ in 0..3 {
        let (status, _) = timed_chat(&gw, key).await;
        assert_eq!(status, 200);
    }
    redis.pause();
    // The first requests find Redis hung: within about a second each (cache, then limits).
    let (status, took) = timed_chat(&gw, key).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(2500),
        "first request: {took:?}"
    );
    // From then on no request waits more than the probe timeout (200 ms) on Redis; measured
    // over 40 requests, sequential and concurrent, over more than one probe period.
    let mut worst = Duration::ZERO;
    for round in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = gw.url("/v1/chat/completions");
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client()
                    .post(url)
                    .bearer_auth("sk-gw-hung-0123456789")
                    .json(&chat_body("echo/x", "hi", false))
                    .send()
                    .await
                    .expect("send");
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                (status, t.elapsed())
            }));
        }
        for t in tasks {
            let (status, took) = t.await.expect("join");
            assert_eq!(status, 200, "round {round}");
            worst = worst.max(took);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 200 ms for a probe, plus the machine's own latency for the request itself.
    assert!(
        worst < Duration::from_millis(600),
        "worst request: {worst:?}\n{}",
        gw.logs()
    );
    let logs = gw.logs();
    assert!(logs.contains("serving without the cache"), "{logs}");
    assert!(logs.contains("limiting locally"), "{logs}");
    // Redis answers again: the breakers close and say so.
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = timed_chat(&gw, key).await;
        let logs = gw.logs();
        if logs.contains("Redis answers again") && logs.contains("limits are shared again") {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery logged:\n{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chat request for `openai/gpt-4o` through `gw`.
async fn ask(gw: &Gateway, prompt: &str, stream: bool) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/gpt-4o", prompt, stream))
        .send()
        .await
        .expect("send")
}

/// A streamed chat request: the whole text of its answer.
async fn streamed(gw: &Gateway, prompt: &str) -> String {
    ask(gw, prompt, true).await.text().await.unwrap_or_default()
}

/// A chat request whose answer is JSON: its status and body.
async fn answered(gw: &Gateway, prompt: &str, stream: bool) -> (u16, Value) {
    let r = ask(gw, prompt, stream).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("an error in OpenAI's shape"))
}

/// The last `data:` event of an SSE text, parsed (each must be an event of its own).
fn last_event(text: &str) -> Value {
    let last = text
        .split("\n\n")
        .map(str::trim)
        .filter(|e| e.starts_with("data:"))
        .last()
        .unwrap_or_else(|| panic!("no events in {text}"));
    serde_json::from_str(last.trim_start_matches("data:").trim())
        .unwrap_or_else(|e| panic!("{e}: {last}"))
}

/// Reads from `s` until the peer closes or `limit` passes: (what was read, whether it closed).
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> (String, bool) {
    use std::io::Read;
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

fn connect(gw: &Gateway) -> std::net::TcpStream {
    std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect")
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    use std::io::Write;
    let gw = Gateway::start(&[]);
    let mut s = connect(&gw);
    // Three requests in one write; the last asks to close, so the server ends the exchange.
    let req = |id: &str, close: bool| {
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: {id}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    let all = format!(
        "{}{}{}",
        req("p-1", false),
        req("p-2", false),
        req("p-3", true)
    );
    s.write_all(all.as_bytes()).expect("write");
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(closed, "not closed after the last request: {got}");
    assert_eq!(got.matches("HTTP/1.1 200").count(), 3, "{got}");
    let at = |id: &str| {
        got.find(id)
            .unwrap_or_else(|| panic!("{id} missing: {got}"))
    };
    assert!(at("p-1") < at("p-2") && at("p-2") < at("p-3"), "{got}");
}

#[test]
fn a_trickled_request_head_is_cut_off_at_the_header_timeout() {
    use std::io::Write;
    let gw = Gateway::start(&[("GATEWAY_HEADER_TIMEOUT", "2s")]);
    let mut s = connect(&gw);
    let t = Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    // One header byte a second, for ever (bounded here at 15 s): slowloris.
    let mut closed = false;
    for i in 0..15 {
        std::thread::sleep(Duration::from_secs(1));
        if s.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
            closed = true;
            break;
        }
        let (_, c) = read_until_closed(&mut s, Duration::from_millis(10));
        if c {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling head was never cut off");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "cut after {:?}",
        t.elapsed()
    );
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_the_keepalive_timeout() {
    use std::io::Write;
    let gw = Gateway::start(&[("GATEWAY_KEEPALIVE_TIMEOUT", "2s")]);
    let mut s = connect(&gw);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let t = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(closed, "idle connection still open after 10 s");
    let took = t.elapsed();
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
}

const OPENAI_KEY: &str = "sk-proj-LEAKYopenai0123456789abcdWXYZ";
const ANTHROPIC_KEY: &str = "sk-ant-api03-LEAKYanthropic0123456789QRST";
const GEMINI_KEY: &str = "AIzaSyLEAKYgemini0123456789abcdefMNOP";

/// What a vendor's 401 says, with the key whole and masked as vendors print it.
fn echoing(key: &str) -> String {
    let masked = format!("{}****{}", &key[..8], &key[key.len() - 4..]);
    format!(
        "Incorrect API key provided: {key} (also known as {masked}, or {}...{})",
        &key[..3],
        &key[key.len() - 4..]
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for key in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
        let tail = &key[key.len() - 4..];
        assert!(!text.contains(key), "{what} leaks a key: {text}");
        assert!(
            !text.contains(&format!("****{tail}")),
            "{what} leaks a masked key: {text}"
        );
        assert!(
            !text.contains(&format!("...{tail}")),
            "{what} leaks a masked key: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_keys_echoed_by_an_upstream_never_reach_the_client_or_the_log() {
    // Each mock answers by the request's path: errors before the answer for each format, a
    // stream that fails mid-way with the key in its error event, and an answer quoting it.
    let handler: Handler = Arc::new(|r: &Recorded| {
        let body = r.json();
        let prompt = body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if r.path.contains("generateContent") || r.path.contains("streamGenerateContent") {
            return json_response(
                400,
                json!({"error": {"code": 400, "message": echoing(GEMINI_KEY), "status": "INVALID_ARGUMENT"}}),
            );
        }
        if r.path.ends_with("/messages") {
            return json_response(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": echoing(ANTHROPIC_KEY)}}),
            );
        }
        match prompt.as_str() {
            "midstream" => sse_response(
                vec![
                    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n".to_string(),
                    format!("data: {}\n\n", json!({"error": {"message": echoing(OPENAI_KEY), "type": "invalid_request_error"}})),
                ],
                Duration::ZERO,
                None,
            ),
            "quote" => json_response(200, openai_completion("m", &format!("your key is {OPENAI_KEY}"))),
            _ => json_response(
                401,
                json!({"error": {"message": echoing(OPENAI_KEY), "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
        }
    });
    let mock = Mock::start(handler).await;
    let url = mock.url();
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &url),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("ANTHROPIC_BASE_URL", &url),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GEMINI_BASE_URL", &url),
        ("GEMINI_API_KEY", GEMINI_KEY),
    ]);
    let cases = [
        ("openai/gpt-4o", "plain", false),
        ("openai/gpt-4o", "plain", true),
        ("openai/gpt-4o", "midstream", true),
        ("openai/gpt-4o", "quote", false),
        ("anthropic/claude-sonnet-4-20250514", "plain", false),
        ("anthropic/claude-sonnet-4-20250514", "plain", true),
        ("gemini/gemini-2.5-flash", "plain", false),
        ("gemini/gemini-2.5-flash", "plain", true),
    ];
    for (model, prompt, stream) in cases {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body(model, prompt, stream))
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let what = format!("{model} {prompt} stream={stream} ({status})");
        assert_no_secret(&what, &text);
        // The rest of the upstream's message is kept.
        if prompt != "quote" {
            assert!(
                text.contains("Incorrect API key provided: [REDACTED]"),
                "{what}: {text}"
            );
        } else {
            assert!(text.contains("your key is [REDACTED]"), "{what}: {text}");
        }
    }
    // The Messages API to Anthropic (native pass-through) too.
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(
            &json!({"model": "anthropic/claude-sonnet-4-20250514", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "plain"}]}),
        )
        .send()
        .await
        .expect("send");
    let text = r.text().await.unwrap_or_default();
    assert_no_secret("messages", &text);
    assert!(text.contains("[REDACTED]"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    assert_no_secret("the log", &gw.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_event_after_an_unterminated_event_starts_on_its_own_line() {
    // The upstream's last event lacks its blank line, then the connection is cut.
    let handler: Handler = Arc::new(|_: &Recorded| {
        sse_response(
            vec![
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n".to_string(),
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]}".to_string(),
            ],
            Duration::from_millis(20),
            Some(2),
        )
    });
    let mock = Mock::start(handler).await;
    let url = mock.url();
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", OPENAI_KEY)]);
    let text = streamed(&gw, "hi").await;
    assert!(!text.contains("}data:"), "error event glued on: {text}");
    // Every `data:` line is an event of its own that parses, the error one included.
    let v = last_event(&text);
    assert!(v["error"]["message"].is_string(), "{v}");
    // In plain words, with a code of its own (no HTTP library's internals).
    assert_eq!(v["error"]["code"], "upstream_body_interrupted", "{v}");
    assert_eq!(
        v["error"]["message"],
        "provider openai closed the connection before the stream was complete",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_stream_event_is_cut_at_its_cap() {
    // After one good event, `data:` and 9 MiB without a line end, sent in 64 KiB pieces.
    let handler: Handler = Arc::new(|r: &Recorded| {
        let first = r.json()["messages"][0]["content"] != "straight away";
        let mut events = Vec::new();
        if first {
            events.push("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n".to_string());
        }
        events.push("data: \"".to_string());
        events.extend(std::iter::repeat_n("x".repeat(64 << 10), 9 * 16));
        sse_response(events, Duration::ZERO, None)
    });
    let mock = Mock::start(handler).await;
    let url = mock.url();
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", OPENAI_KEY)]);
    let started = Instant::now();
    let text = streamed(&gw, "hi").await;
    assert!(
        text.len() < 1 << 20,
        "{} bytes reached the client",
        text.len()
    );
    assert!(text.contains("\"Hi\""), "{text}");
    let v = last_event(&text);
    assert_eq!(v["error"]["code"], "stream_event_too_large", "{v}");
    // Before any byte went out: an error answer in the client's shape.
    let (status, v) = answered(&gw, "straight away", true).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "stream_event_too_large", "{v}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_upstream_is_cut_at_the_request_timeout() {
    // An event every 200 ms for 20 s: each read is quick, the whole never ends in time.
    let handler: Handler = Arc::new(|_: &Recorded| {
        let event = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n";
        sse_response(
            vec![event.to_string(); 100],
            Duration::from_millis(200),
            None,
        )
    });
    let mock = Mock::start(handler).await;
    let url = mock.url();
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &url),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("ANTHROPIC_BASE_URL", &url),
        ("GATEWAY_REQUEST_TIMEOUT", "1s"),
    ]);
    // A stream under way ends with an error event of its own code.
    let started = Instant::now();
    let text = streamed(&gw, "hi").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(text.contains("\"a\""), "{text}");
    let v = last_event(&text);
    assert_eq!(v["error"]["code"], "request_timeout", "{v}");
    // Before any byte: a 504 in the client's shape (the upstream's body never completes).
    let started = Instant::now();
    let (status, v) = answered(&gw, "hi", false).await;
    assert_eq!(status, 504, "{v}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(v["error"]["code"], "request_timeout", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("GATEWAY_REQUEST_TIMEOUT"),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(gw.logs().contains("timeout"), "{}", gw.logs());
}

#[test]
fn a_trickled_request_body_is_cut_off_at_the_body_timeout() {
    use std::io::Write;
    let gw = Gateway::start(&[("GATEWAY_BODY_TIMEOUT", "1s")]);
    let mut s = connect(&gw);
    let t = Instant::now();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .expect("write");
    // One byte every 200 ms: each read is quick, the body never completes (bounded at 8 s).
    let mut got = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(b" ").is_err() {
            break;
        }
        let (g, closed) = read_until_closed(&mut s, Duration::from_millis(10));
        got.push_str(&g);
        if closed || got.contains("\r\n\r\n{") {
            break;
        }
    }
    let (rest, _) = read_until_closed(&mut s, Duration::from_secs(1));
    got.push_str(&rest);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_body_timeout"), "{got}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_from_an_upstream_is_never_passed_on_as_an_answer_nor_quoted_whole() {
    // `binary`: a 200 application/json whose body is not JSON; `page`: a 503 with 14 KB of text.
    let handler: Handler = Arc::new(|r: &Recorded| {
        let what = r.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let (status, body): (u16, Vec<u8>) = match what.as_str() {
            "binary" => (200, (0..4096u32).map(|i| (i * 7 % 256) as u8).collect()),
            _ => (503, "<html>oops ".repeat(1300).into_bytes()),
        };
        let mut resp = axum::response::Response::new(axum::body::Body::from(body));
        *resp.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        resp
    });
    let mock = Mock::start(handler).await;
    let url = mock.url();
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", OPENAI_KEY)]);
    let (status, v) = answered(&gw, "binary", false).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "invalid_upstream_response", "{v}");
    let (status, v) = answered(&gw, "page", false).await;
    assert_eq!(status, 503, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.len() < 1200, "{} bytes quoted", message.len());
    assert!(message.contains("more bytes not shown"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn numbers_out_of_range_are_refused_in_every_api() {
    let gw = Gateway::start(&[]);
    let cases = [
        (
            "/v1/chat/completions",
            json!(null),
            r#"{"model":"echo/x","messages":[{"role":"user","content":"hi"}],"max_tokens":1e999999}"#,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!(null),
            r#"{"model":"echo/x","messages":[{"role":"user","content":"hi"}],"temperature":-1e999}"#,
            "temperature",
        ),
        (
            "/v1/responses",
            json!(null),
            r#"{"model":"echo/x","input":"hi","temperature":1e999}"#,
            "temperature",
        ),
        (
            "/v1/messages",
            json!(null),
            r#"{"model":"echo/x","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"temperature":1e999}"#,
            "",
        ),
        (
            "/v1/messages",
            json!(null),
            r#"{"model":"echo/x","max_tokens":1e999999,"messages":[{"role":"user","content":"hi"}]}"#,
            "",
        ),
    ];
    for (path, _, body, field) in cases {
        let r = client()
            .post(gw.url(path))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "{path} {body}");
        let v: Value = r.json().await.expect("json");
        let message = if path == "/v1/messages" {
            assert_eq!(v["type"], "error", "{v}");
            v["error"]["message"].as_str().unwrap_or("").to_string()
        } else {
            assert_eq!(v["error"]["param"], field, "{v}");
            v["error"]["message"].as_str().unwrap_or("").to_string()
        };
        assert!(message.contains(field), "{path}: {message}");
        assert!(message.contains("out of range"), "{path} {body}: {message}");
    }
}

/// The gateway's peak resident memory (VmHWM), in MB.
fn peak_rss_mb(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_a_huge_prompt_within_bounds() {
    let gw = Gateway::start(&[]);
    let before = peak_rss_mb(&gw);
    // 2 MB of short words: a stream of one event per word would be hundreds of MB.
    let prompt = "ab ".repeat(700_000);
    for stream in [true, false] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("echo/x", &prompt, stream))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let text = r.text().await.expect("body");
        assert!(text.len() < 16 << 20, "{} bytes", text.len());
        if stream {
            let mut content = String::new();
            let mut finish = String::new();
            for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                    content.push_str(c);
                }
                if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                    finish = f.to_string();
                }
            }
            assert_eq!(content.len(), 64 * 1024);
            assert_eq!(finish, "length");
        } else {
            let v: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(v["choices"][0]["finish_reason"], "length");
            assert_eq!(
                v["choices"][0]["message"]["content"].as_str().map(str::len),
                Some(64 * 1024)
            );
        }
    }
    let grown = peak_rss_mb(&gw).saturating_sub(before);
    assert!(grown < 100, "peak RSS grew by {grown} MB");
}

#[test]
fn connections_over_the_limit_get_a_503_and_are_closed() {
    use std::io::Write;
    let gw = Gateway::start(&[("GATEWAY_MAX_CONNECTIONS", "3")]);
    // Three idle connections hold every place (none has sent a request).
    let mut held: Vec<std::net::TcpStream> = (0..3).map(|_| connect(&gw)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut s = connect(&gw);
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("too_many_connections"), "{got}");
    assert!(closed, "not closed: {got}");
    // One of them ends: a new connection is served.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut s = connect(&gw);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        gw.wait_log("connection limit reached", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let mut m = connect(&gw);
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let (metrics, _) = read_until_closed(&mut m, Duration::from_secs(5));
    assert!(
        metrics.contains("gateway_connections_refused_total 1"),
        "{metrics}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passed_through_event_that_is_not_json_ends_the_stream_with_an_error() {
    let handler: Handler = Arc::new(|_: &Recorded| {
        sse_response(
            vec![
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n".to_string(),
                "data: {\"id\":\"c1\",\"choices\":[{\"delta\":\x01\x02 garbage\n\n".to_string(),
                "data: [DONE]\n\n".to_string(),
            ],
            Duration::ZERO,
            None,
        )
    });
    let mock = Mock::start(handler).await;
    let url = mock.url();
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", OPENAI_KEY)]);
    let text = streamed(&gw, "hi").await;
    assert!(text.contains("\"Hi\""), "{text}");
    assert!(!text.contains("garbage"), "{text}");
    let v = last_event(&text);
    assert_eq!(v["error"]["code"], "invalid_upstream_response", "{v}");
}
