//! Issue 2: zero-config echo, OpenAI-compatible pass-through (plain and stream), bodies of any
//! size, unbuffered streaming, headers, errors.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn echo_works_with_no_configuration() {
    let gw = Gateway::start(&[]);
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("echo/test", "hello big world", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "echo");
    assert!(r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "hello big world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("echo/test", "hello big world", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hello big world");
    assert_eq!(chunks.len(), 5, "role + 3 words + finish");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_pass_through_is_byte_exact_and_forwards_every_field() {
    let exact = Bytes::from_static(br#"{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \u00e9!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"x_vendor":{"a":[1,2]}}"#);
    let e2 = exact.clone();
    let mock = Mock::start(Arc::new(move |_r: &Recorded| {
        let mut resp = Response::new(Body::from(e2.clone()));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        resp
    }))
    .await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("OPENAI_API_KEY", "sk-provider-secret"),
    ]);
    let body = json!({
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "x_unknown_field": {"keep": ["me", 1]},
        "logit_bias": {"50256": -100},
    });
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key-must-not-leak")
        .header("x-request-id", "my-trace-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "my-trace-42");
    assert_eq!(r.headers()["x-provider"], "openai");
    assert_eq!(r.bytes().await.unwrap(), exact);

    let up = mock.last();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(
        up.header("authorization"),
        Some("Bearer sk-provider-secret")
    );
    let sent = up.json();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["x_unknown_field"], json!({"keep": ["me", 1]}));
    assert_eq!(sent["logit_bias"], json!({"50256": -100}));
    assert_eq!(sent["temperature"], 0.3);
    assert!(sent.get("stream_options").is_none());

    assert!(
        gw.wait_log("req=my-trace-42", Duration::from_secs(2)),
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    assert!(!logs.contains("sk-provider-secret") && !logs.contains("client-key-must-not-leak"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_pass_through_is_byte_exact_and_usage_is_asked_for() {
    let events = openai_stream_events("gpt-4o", &["Hel", "lo", " world"], true);
    let ev2 = events.clone();
    let mock = Mock::start(Arc::new(move |_r: &Recorded| {
        sse_response(ev2.clone(), Duration::from_millis(5), None)
    }))
    .await;
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &mock.url())]);
    let c = client();

    // The client asks for usage: every byte comes back as sent.
    let mut body = chat_body("openai/gpt-4o", "hi", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.text().await.unwrap(), events.concat());

    // The client does not ask: usage is still requested upstream, and dropped on the way back.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/gpt-4o", "hi", true))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let expected: String = events
        .iter()
        .filter(|e| !e.contains("\"usage\""))
        .cloned()
        .collect();
    assert_eq!(text, expected);
    assert_eq!(mock.last().json()["stream_options"]["include_usage"], true);
    // The log line still has the real counts.
    assert!(
        gw.wait_log("tokens=14", Duration::from_secs(2)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_reach_the_upstream_intact() {
    let mock = Mock::start(openai_handler("ok")).await;
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &mock.url())]);
    let c = client();
    for size in [1usize << 20, 10 << 20] {
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("openai/gpt-4o", &text, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "size {size}");
        let up = mock.last().json();
        assert_eq!(up["messages"][0]["content"].as_str().unwrap().len(), size);
        assert!(up["messages"][0]["content"].as_str().unwrap() == text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_is_unbuffered() {
    // The mock notes when it releases each event; the client notes when it sees the first.
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let s2 = sent_at.clone();
    let mock = Mock::start(Arc::new(move |r: &Recorded| {
        if r.method == "GET" {
            return json_response(200, json!({"object": "list", "data": []}));
        }
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
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &mock.url())]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/m", "hi", true))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_seen = Instant::now();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    let mut rest = Vec::new();
    while let Some(c) = stream.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    let sent = sent_at.lock().unwrap().clone();
    assert!(sent.len() >= 2);
    assert!(
        first_seen < sent[1],
        "the first event reached the client only after the second was sent"
    );
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_cancels_the_upstream_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d2 = dropped.clone();
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let mock = Mock::start(Arc::new(move |r: &Recorded| {
        if r.method == "GET" {
            return json_response(200, json!({"object": "list", "data": []}));
        }
        let flag = Flag(d2.clone());
        let stream = futures::stream::unfold((0u32, flag), |(i, flag)| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ev = format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{i} \"}},\"finish_reason\":null}}]}}\n\n");
            Some((Ok::<_, std::io::Error>(Bytes::from(ev)), (i + 1, flag)))
        });
        let mut r = Response::new(Body::from_stream(stream.take(600)));
        r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
        r
    }))
    .await;
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &mock.url())]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/m", "hi", true))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the upstream stream was not cancelled"
    );
    assert!(
        gw.wait_log("outcome=client_closed", Duration::from_secs(2)),
        "{}",
        gw.logs()
    );
}

async fn expect_error(r: reqwest::Response, status: u16, code_or_param: Option<&str>) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(
        e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"),
        "{v}"
    );
    if let Some(x) = code_or_param {
        assert!(e["code"] == x || e["param"] == x, "{v}");
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_openai_errors() {
    let gw = Gateway::start(&[("GATEWAY_MAX_BODY_BYTES", "4096")]);
    let c = client();
    let post = |body: Vec<u8>| {
        c.post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let v = expect_error(post(b"{nope".to_vec()).await.unwrap(), 400, None).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    expect_error(
        post(br#"{"messages":[{"role":"user","content":"x"}]}"#.to_vec())
            .await
            .unwrap(),
        400,
        Some("model"),
    )
    .await;
    expect_error(
        post(br#"{"model":"echo/x"}"#.to_vec()).await.unwrap(),
        400,
        Some("messages"),
    )
    .await;
    expect_error(
        post(br#"{"model":"echo/x","messages":"hi"}"#.to_vec())
            .await
            .unwrap(),
        400,
        Some("messages"),
    )
    .await;
    expect_error(
        post(br#"{"model":["echo"],"messages":[]}"#.to_vec())
            .await
            .unwrap(),
        400,
        Some("model"),
    )
    .await;
    expect_error(
        post(
            br#"{"model":"echo/x","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#
                .to_vec(),
        )
        .await
        .unwrap(),
        400,
        Some("temperature"),
    )
    .await;
    expect_error(
        post(vec![b' '; 5000]).await.unwrap(),
        413,
        Some("request_too_large"),
    )
    .await;
    let v = expect_error(
        post(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#.to_vec())
            .await
            .unwrap(),
        404,
        Some("model_not_found"),
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("OPENAI_API_KEY"));
    expect_error(
        post(br#"{"model":"nobody-knows","messages":[{"role":"user","content":"x"}]}"#.to_vec())
            .await
            .unwrap(),
        404,
        Some("model_not_found"),
    )
    .await;
    expect_error(
        c.get(gw.url("/v1/nothing")).send().await.unwrap(),
        404,
        None,
    )
    .await;
    let r = c.get(gw.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    expect_error(r, 405, None).await;
    let r = c.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_keep_status_message_and_retry_after() {
    let mock = Mock::start(Arc::new(|_r: &Recorded| {
        let mut r = json_response(429, json!({"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}));
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
        r
    }))
    .await;
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &mock.url())]);
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/gpt-4o", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "7");
    let v = expect_error(r, 429, Some("rate_limit_exceeded")).await;
    assert_eq!(v["error"]["message"], "Rate limit reached for gpt-4o");

    // vLLM-style error (integer code) and a 400 that is the client's fault.
    mock.set(Arc::new(|_r: &Recorded| json_response(400, json!({"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "param": null, "code": 400}))));
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/gpt-4o", "x", true))
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 400, None).await;
    assert_eq!(v["error"]["message"], "max_tokens is too large");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failure_is_502_and_timeout_is_504() {
    let dead = free_port();
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &format!("http://127.0.0.1:{dead}"))]);
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/gpt-4o", "x", false))
        .send()
        .await
        .unwrap();
    expect_error(r, 502, Some("upstream_connect_error")).await;
    drop(gw);

    let mock = Mock::start(Arc::new(|_r: &Recorded| {
        let stream = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
        });
        Response::new(Body::from_stream(stream))
    }))
    .await;
    // The mock sends its head at once but no body: that is the idle timeout's case. A mock that
    // never answers at all is the first-byte timeout's.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gw = Gateway::start(&[
        (
            "OPENAI_BASE_URL",
            &format!("http://127.0.0.1:{silent_port}"),
        ),
        ("GATEWAY_PROVIDER_SLOW_BASE_URL", &mock.url()),
        ("GATEWAY_FIRST_BYTE_TIMEOUT", "300ms"),
        ("GATEWAY_IDLE_TIMEOUT", "300ms"),
    ]);
    let t = Instant::now();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("openai/gpt-4o", "x", false))
        .send()
        .await
        .unwrap();
    expect_error(r, 504, Some("upstream_timeout")).await;
    assert!(t.elapsed() < Duration::from_secs(4));
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("slow/m", "x", false))
        .send()
        .await
        .unwrap();
    expect_error(r, 504, Some("upstream_timeout")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_configured_and_upstream_models() {
    let mock = Mock::start(openai_handler("x")).await;
    let gw = Gateway::start(&[
        ("GATEWAY_PROVIDER_GROQ_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_GROQ_API_KEY", "gsk-secret"),
    ]);
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"groq/mock-model"), "{ids:?}");
    assert!(ids.contains(&"echo/echo"), "{ids:?}");
    let listing = mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/models")
        .unwrap();
    assert_eq!(listing.header("authorization"), Some("Bearer gsk-secret"));
    // A custom provider is reached by its prefix.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("groq/llama-3.1-70b", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.last().json()["model"], "llama-3.1-70b");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_provider_gets_the_whole_name() {
    let mock = Mock::start(openai_handler("x")).await;
    let gw = Gateway::start(&[
        ("VLLM_BASE_URL", &format!("{}/v1/", mock.url())),
        ("GATEWAY_DEFAULT_PROVIDER", "vllm"),
    ]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("meta-llama/Llama-3.1-8B-Instruct", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "vllm");
    let up = mock.last();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.json()["model"], "meta-llama/Llama-3.1-8B-Instruct");
}

#[test]
fn invalid_configuration_stops_startup_naming_the_variable() {
    let out = Gateway::command(&[
        ("GATEWAY_LISTEN", "not-an-address"),
        ("OPENAI_BASE_URL", "ftp://x"),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GATEWAY_LISTEN") && err.contains("OPENAI_BASE_URL"),
        "{err}"
    );
}

/// Upstream connections are kept alive and reused: sequential requests, plain and streamed,
/// arrive on one connection (counted by a forwarder in front of the mock).
#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_pooled_and_reused() {
    let mock = Mock::start(openai_handler("pooled")).await;
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let mock_port = mock.port;
    let _fwd = tokio::spawn(async move {
        while let Ok((mut down, _)) = front.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", mock_port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &format!("http://127.0.0.1:{front_port}"))]);
    let c = reqwest::Client::new();
    for i in 0..6 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("openai/gpt-4o", "x", i % 2 == 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains("pooled"), "{text}");
    }
    assert_eq!(mock.calls(), 6);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one pooled upstream connection"
    );
}

/// Sends raw bytes on a new connection and returns everything the gateway sends back before
/// it closes the connection (bounded by a read timeout).
fn raw_exchange(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    // Ends at EOF: a timeout here (the connection kept open) fails the caller's checks.
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http_and_connect_get_openai_errors_and_a_closed_connection() {
    let gw = Gateway::start(&[]);
    let port = gw.port;
    let (bad, connect) = tokio::task::spawn_blocking(move || {
        (
            raw_exchange(
                port,
                b"GET /health HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
            ),
            raw_exchange(
                port,
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            ),
        )
    })
    .await
    .unwrap();
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let v = json_body(&bad);
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed"));

    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let v = json_body(&connect);
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("CONNECT"));

    // The gateway still answers on new connections.
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A one-request-per-connection OpenAI-compatible upstream: answers with keep-alive, then
/// closes the connection 50 ms later (an upstream whose idle timeout is shorter than ours).
/// Returns its port and the number of connections it accepted.
async fn closing_upstream() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as Content-Length says.
                loop {
                    let Ok(n) = c.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = openai_completion("m", "fresh").to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(body.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Dropped: closed while the gateway holds it idle.
            });
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_upstream_connection_closed_by_the_upstream_is_not_an_error() {
    let (port, accepted) = closing_upstream().await;
    let gw = Gateway::start(&[("OPENAI_BASE_URL", &format!("http://127.0.0.1:{port}"))]);
    let c = reqwest::Client::new();
    for i in 0..3 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("openai/gpt-4o", "x", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert!(r.text().await.unwrap().contains("fresh"));
        // Long enough for the upstream to close the connection the gateway keeps.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "a new connection each time"
    );
}
