//! Issue 21, Google Vertex AI: the gateway in front of a mock token endpoint (RS256 signature
//! and claims checked against the test key pair) and a mock Vertex API (real HTTP on loopback,
//! exact paths, `Authorization: Bearer <the token it issued>`): Gemini and Claude models plain,
//! streamed, with tools, errors, throttling and failover; Messages clients passed through to
//! Claude; the token exchanged once for many requests and refreshed before it expires; bad
//! credentials and a dead token endpoint; models listing, health probes, cache, metrics; the
//! real `openai` Python SDK.

mod common;
mod mocks;
#[path = "mocks/vertex.rs"]
mod vertex_mock;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use vertex_mock::*;

const GEMINI: &str = "vertex/gemini-2.0-flash";
const CLAUDE: &str = "vertex/claude-sonnet-4@20250514";

fn gemini_path(verb: &str) -> String {
    format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/gemini-2.0-flash:{verb}")
}

fn claude_path(verb: &str) -> String {
    format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/anthropic/models/claude-sonnet-4@20250514:{verb}")
}

fn start(v: &VertexMock, extra: &[(&str, &str)]) -> Gateway {
    let env = v.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.extend_from_slice(extra);
    Gateway::start(&vars)
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client()
        .post(gw.url(path))
        .header("authorization", "Bearer client-key-must-not-travel")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn chat(gw: &Gateway, body: &Value) -> (u16, Value) {
    let (s, _, v) = post(gw, "/v1/chat/completions", body).await;
    (s, v)
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}, "required": ["location"]}}}])
}

/// The API's POSTs, with their bearer tokens.
fn posts(v: &VertexMock) -> Vec<Recorded> {
    v.api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

fn assert_no_secrets(gw: &Gateway) {
    let logs = gw.logs();
    assert!(
        !logs.contains(TOKEN_PREFIX),
        "a token reached the log:\n{logs}"
    );
    assert!(!logs.contains("PRIVATE KEY"), "the key reached the log");
    assert!(!logs.contains("eyJ"), "a JWT reached the log:\n{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_models_plain_streamed_and_with_tools() {
    let v = VertexMock::start(3600).await;
    let gw = start(&v, &[]);

    let (status, body) = chat(&gw, &json!({"model": GEMINI, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], GEMINI);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Gemini"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    let last = v.api.last();
    assert_eq!(last.path, gemini_path("generateContent"));
    assert_eq!(last.query, None);
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {TOKEN_PREFIX}1").as_str())
    );

    let (status, events) = chat_stream(
        &gw,
        &json!({"model": GEMINI, "messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "Hello from Gemini");
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
    let last = v.api.last();
    assert_eq!(last.path, gemini_path("streamGenerateContent"));
    assert_eq!(last.query.as_deref(), Some("alt=sse"));

    let (status, body) = chat(&gw, &json!({"model": GEMINI, "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": weather_tools()})).await;
    assert_eq!(status, 200, "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["location"], "Paris");
    // The tool's result goes back and is answered.
    let (status, body) = chat(
        &gw,
        &json!({"model": GEMINI, "tools": weather_tools(), "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Tool said: sunny");

    // A Responses client is translated through the same codec.
    let (status, _, body) = post(
        &gw,
        "/v1/responses",
        &json!({"model": GEMINI, "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["output"][0]["content"][0]["text"], "Hello from Gemini",
        "{body}"
    );
    assert_eq!(v.api.last().path, gemini_path("generateContent"));

    // One token served every request; the client's own key never travelled.
    assert_eq!(v.state.exchanges(), 1);
    assert!(posts(&v)
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN_PREFIX}1"))));
    assert_no_secrets(&gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_models_plain_streamed_and_with_tools() {
    let v = VertexMock::start(3600).await;
    let gw = start(&v, &[]);

    let (status, body) = chat(&gw, &json!({"model": CLAUDE, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], "max_tokens": 50})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], CLAUDE);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Claude"
    );
    // Anthropic usage: input + cache read + cache write, cache read as cached_tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 25);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    let last = v.api.last();
    assert_eq!(last.path, claude_path("rawPredict"));
    let sent = last.json();
    assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
    assert!(sent.get("model").is_none(), "{sent}");
    assert_eq!(sent["system"][0]["text"], "be brief");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {TOKEN_PREFIX}1").as_str())
    );
    assert!(last.header("anthropic-version").is_none());

    let (status, events) = chat_stream(&gw, &json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}})).await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "Hello from Claude");
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
    assert!(
        events.iter().any(|e| e["usage"]["completion_tokens"] == 9),
        "{events:?}"
    );
    assert_eq!(v.api.last().path, claude_path("streamRawPredict"));

    let (status, events) = chat_stream(&gw, &json!({"model": CLAUDE, "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": weather_tools(), "stream": true})).await;
    assert_eq!(status, 200);
    let args: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args["location"], "Paris");
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
    assert_eq!(v.state.exchanges(), 1);
    assert_no_secrets(&gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_clients_pass_through_to_claude_on_vertex() {
    let v = VertexMock::start(3600).await;
    let gw = start(&v, &[]);
    let c = client();
    let body = json!({"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "u1"}});
    let r = c
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-05-16")
        .header("x-api-key", "client-key-must-not-travel")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    // The upstream's answer, untouched (its own model name and id).
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["id"], "msg_mock01");
    assert_eq!(answer["model"], "claude-sonnet-4@20250514");
    let last = v.api.last();
    assert_eq!(last.path, claude_path("rawPredict"));
    assert_eq!(last.header("anthropic-beta"), Some("tools-2024-05-16"));
    assert!(last.header("x-api-key").is_none());
    // The client's body but for the envelope, in its order.
    let mut want = body.clone();
    want.as_object_mut().unwrap().remove("model");
    let mut sent = last.json();
    assert_eq!(
        sent.as_object_mut().unwrap().remove("anthropic_version"),
        Some(json!("vertex-2023-10-16"))
    );
    assert_eq!(sent, want);
    assert!(std::str::from_utf8(&last.body)
        .unwrap()
        .starts_with("{\"anthropic_version\":\"vertex-2023-10-16\",\"max_tokens\":64,"));

    // Streamed: Anthropic's events as they came.
    let r = c
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": CLAUDE, "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = r.text().await.unwrap();
    assert!(t.starts_with("event: message_start"), "{t}");
    assert!(
        t.contains("event: ping") && t.trim_end().ends_with("data: {\"type\":\"message_stop\"}"),
        "{t}"
    );
    assert_eq!(v.api.last().path, claude_path("streamRawPredict"));

    // Token counting, natively.
    let r = c
        .post(gw.url("/v1/messages/count_tokens"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"input_tokens": 33})
    );
    let last = v.api.last();
    assert_eq!(
        last.path,
        format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/anthropic/models/count-tokens:rawPredict")
    );
    assert_eq!(last.json()["model"], "claude-sonnet-4@20250514");

    // A Messages client asking for a Gemini model on Vertex is translated.
    let r = c
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": GEMINI, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "Hello from Gemini");
    assert_eq!(v.api.last().path, gemini_path("generateContent"));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_and_throttling_fail_over() {
    let v = VertexMock::start(3600).await;
    let fallback = Mock::start(mocks::anthropic()).await;
    let furl = fallback.url();
    let gw = start(
        &v,
        &[
            ("ANTHROPIC_BASE_URL", &furl),
            ("ANTHROPIC_API_KEY", mocks::ANTHROPIC_KEY),
            (
                "GATEWAY_FALLBACK_MODELS",
                "vertex/claude-quota-exhausted=anthropic/claude-sonnet-4-20250514",
            ),
        ],
    );
    // Throttled Claude on Vertex (Vertex's own RESOURCE_EXHAUSTED) -> Claude on Anthropic.
    let quota = format!("vertex/{CLAUDE_QUOTA}");
    let (status, headers, body) = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": quota, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-provider"], "anthropic");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Claude"
    );
    assert_eq!(fallback.calls(), 1);
    // Streamed too: the fallback's stream, nothing of the refused attempt.
    let (status, events) = chat_stream(
        &gw,
        &json!({"model": quota, "messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "Hello from Claude");
    assert_eq!(fallback.calls(), 2);
    assert!(posts(&v)
        .iter()
        .any(|r| r.path.ends_with(&format!("/{CLAUDE_QUOTA}:rawPredict"))));
    // Without a fallback, Vertex's 429 for Gemini is an OpenAI-shaped 429.
    let (status, body) = chat(&gw, &json!({"model": "vertex/gemini-exhausted", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");

    // Errors without a fallback keep their meaning, OpenAI-shaped.
    let (status, body) = chat(
        &gw,
        &json!({"model": CLAUDE, "messages": [{"role": "user", "content": ""}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = chat(&gw, &json!({"model": "vertex/claude-ratelimited", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let (status, body) = chat(&gw, &json!({"model": "vertex/claude-overloaded", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = chat(
        &gw,
        &json!({"model": "vertex/bad model", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "model");
    // A Gemini stream that fails mid-way ends with an error event, not a silent end.
    let (status, events) = chat_stream(&gw, &json!({"model": GEMINI, "messages": [{"role": "user", "content": mocks::FAIL_MID_STREAM}], "stream": true})).await;
    assert_eq!(status, 200);
    assert!(
        events.iter().any(|e| e.get("error").is_some()),
        "{events:?}"
    );
    assert_eq!(v.state.exchanges(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_exchange_for_many_requests_and_a_refresh_before_expiry() {
    // Tokens live 10s: used until 9s, refreshed from 7.5s on.
    let v = VertexMock::start(10).await;
    let gw = start(&v, &[]);
    let body = json!({"model": GEMINI, "messages": [{"role": "user", "content": "hi"}]});
    // 12 concurrent first requests: one exchange between them.
    let all = futures::future::join_all((0..12).map(|_| chat(&gw, &body))).await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
    assert_eq!(v.state.exchanges(), 1);
    for _ in 0..5 {
        assert_eq!(chat(&gw, &body).await.0, 200);
    }
    assert_eq!(v.state.exchanges(), 1);
    let first = v.state.issued()[0].clone();
    // Into the refresh window: the request goes with the old token, which is still good, and a
    // refresh starts behind it.
    let at = first.at + Duration::from_millis(7700);
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
    assert_eq!(chat(&gw, &body).await.0, 200);
    let in_window = v.state.seen_tokens.lock().unwrap().last().cloned().unwrap();
    assert_eq!(in_window, first.token, "a request waited for the refresh");
    let deadline = Instant::now() + Duration::from_secs(10);
    while v.state.exchanges() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let issued = v.state.issued();
    assert_eq!(issued.len(), 2, "no refresh");
    assert!(
        issued[1].at < first.expires,
        "refreshed only after the token expired"
    );
    assert_eq!(chat(&gw, &body).await.0, 200);
    let seen = v.state.seen_tokens.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap(), &issued[1].token);
    // The API never saw an unknown or expired token.
    assert_eq!(v.state.unauthorised.load(Ordering::SeqCst), 0);
    assert_eq!(v.state.exchanges(), 2);
    assert!(gw.logs().contains("vertex: access token obtained"));
    assert_no_secrets(&gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_and_a_dead_token_endpoint_are_clear_errors() {
    let v = VertexMock::start(3600).await;
    // A key the token endpoint does not trust: its signature fails, the client gets a 401.
    let wrong = v.key_file("wrong.json", wrong_keys());
    let wrong = wrong.to_string_lossy().into_owned();
    let api = v.api.url();
    let gw = Gateway::start(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", &wrong),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("GOOGLE_CLOUD_LOCATION", LOCATION),
        ("VERTEX_BASE_URL", &api),
    ]);
    let body = json!({"model": GEMINI, "messages": [{"role": "user", "content": "hi"}]});
    let (status, err) = chat(&gw, &body).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["type"], "authentication_error");
    assert_eq!(err["error"]["code"], "vertex_credentials_refused");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{err}"
    );
    assert!(v.state.refused.load(Ordering::SeqCst) >= 1);
    assert_eq!(v.api.calls(), 0);
    assert_no_secrets(&gw);
    drop(gw);

    // The token endpoint answers 503, then not at all: 502s, quickly, never a hang.
    let gw = start(&v, &[]);
    v.state.token_down.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let (status, err) = chat(&gw, &body).await;
    assert_eq!(status, 502, "{err}");
    assert_eq!(err["error"]["code"], "vertex_token_unavailable");
    v.token.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, err) = chat(&gw, &body).await;
    assert_eq!(status, 502, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token endpoint"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "took {:?}",
        t.elapsed()
    );
    // Streams too, in the client's shape.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": CLAUDE, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(v.api.calls(), 0);
    assert_no_secrets(&gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_files_stop_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    std::fs::write(&path, json!({"type": "service_account", "client_email": EMAIL, "private_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "project_id": "p"}).to_string()).unwrap();
    let p = path.to_string_lossy().into_owned();
    for vars in [
        vec![("GOOGLE_APPLICATION_CREDENTIALS", p.as_str())],
        vec![("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")],
    ] {
        let err = match Gateway::try_start(&vars) {
            Ok(_) => panic!("started with a bad key file"),
            Err(e) => e,
        };
        assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
        assert!(!err.contains("MIIB"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn project_from_the_key_file_and_the_global_location() {
    let v = VertexMock::start(3600).await;
    let key = v.key_file("key.json", keys());
    let key = key.to_string_lossy().into_owned();
    let api = v.api.url();
    let gw = Gateway::start(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", &key),
        ("GOOGLE_CLOUD_LOCATION", "global"),
        ("VERTEX_BASE_URL", &api),
        // Rate limits hold for Vertex like for any provider.
        ("GATEWAY_RATE_LIMIT_RPM", "6"),
        ("GATEWAY_RATE_LIMIT_BURST", "2"),
    ]);
    let body = json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]});
    let (status, answer) = chat(&gw, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        v.api.last().path,
        format!("/v1/projects/{KEY_PROJECT}/locations/global/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict")
    );
    assert_eq!(chat(&gw, &body).await.0, 200);
    let (status, err) = chat(&gw, &body).await;
    assert_eq!(status, 429, "{err}");
    assert_eq!(v.api.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_health_probes_pools_cache_and_metrics() {
    let v = VertexMock::start(3600).await;
    // A pool of two Vertex hosts, one of them down.
    let dead = free_port();
    let pool = format!("{},http://127.0.0.1:{dead}", v.api.url());
    let gw = start(
        &v,
        &[
            ("VERTEX_BASE_URL", &pool),
            ("GATEWAY_HEALTH_CHECK_INTERVAL", "1s"),
            ("GATEWAY_CACHE_BACKEND", "memory"),
        ],
    );
    // Health probes: GETs of one listed model (no tokens spent), with the token.
    let deadline = Instant::now() + Duration::from_secs(15);
    while v.api.all_calls() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = v.api.requests().into_iter().next().expect("a health probe");
    assert_eq!(
        (probe.method.as_str(), probe.path.as_str()),
        ("GET", "/v1beta1/publishers/google/models")
    );
    assert_eq!(probe.query.as_deref(), Some("pageSize=1"));
    assert!(probe
        .header("authorization")
        .unwrap()
        .starts_with(&format!("Bearer {TOKEN_PREFIX}")));
    assert_eq!(v.api.calls(), 0, "probes must not POST");

    // /v1/models lists the Gemini models of the listing and the default.
    let ids = model_ids(&gw).await;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for id in [
        "vertex/gemini-2.0-flash-001",
        "vertex/gemini-2.5-pro",
        "vertex/gemini-2.0-flash",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    assert!(!ids.iter().any(|i| i.contains("imagen")), "{ids:?}");

    // The pool serves past its dead host; the second identical request is a cache hit.
    let body = json!({"model": GEMINI, "messages": [{"role": "user", "content": "cache me"}]});
    for _ in 0..2 {
        let (status, _, b) = post(&gw, "/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{b}");
    }
    assert_eq!(v.api.calls(), 1);

    let health: Value = client()
        .get(gw.url("/health/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vx = health["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vertex")
        .cloned()
        .unwrap();
    assert_eq!(vx["backends"].as_array().unwrap().len(), 2, "{vx}");

    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_requests_total{") && l.contains("provider=\"vertex\"")),
        "{metrics}"
    );
    // Vertex prices are the model's prices.
    let cost: f64 = metrics
        .lines()
        .find(|l| l.starts_with("gateway_cost_usd_total{") && l.contains("provider=\"vertex\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no vertex cost in {metrics}"));
    assert!(cost > 0.0, "{cost}");
    assert_no_secrets(&gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_through_vertex() {
    let v = VertexMock::start(3600).await;
    let gw = start(&v, &[]);
    let out = run_python(&gw, &["test_vertex.py"], &[]).await;
    assert!(
        out.contains("vertex sdk: ") && out.contains(" 0 failed"),
        "{out}"
    );
    assert_eq!(v.state.exchanges(), 1);
}
