//! Issue 21 (2), AWS Bedrock: the gateway in front of a mock Bedrock runtime (real HTTP on
//! loopback) that verifies every SigV4 signature by recomputing it with the test's secret, or
//! checks the Bedrock API key: Converse (plain, tools, images), ConverseStream (event-stream
//! frames cut anywhere; an exception frame mid-stream), AWS errors, throttling with failover,
//! embeddings through InvokeModel, the health probe, Responses and Messages clients, and the
//! real `openai` Python SDK.

mod common;
#[path = "mocks/bedrock.rs"]
mod mock;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mock::*;
use serde_json::{json, Value};

const MODEL: &str = "bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0";
const ENCODED: &str = "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0";

struct Setup {
    mock: Mock,
    counters: Arc<Counters>,
    gw: Gateway,
}

/// The mock, and a gateway signing with `secret` (the mock checks with the right one).
async fn setup(secret: &str, extra: &[(&str, &str)]) -> Setup {
    let counters = Arc::new(Counters::default());
    let mock = Mock::start(bedrock(SECRET_ACCESS_KEY, counters.clone())).await;
    let url = mock.url();
    let mut vars = vec![
        ("BEDROCK_BASE_URL", url.as_str()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN),
        ("AWS_REGION", REGION),
    ];
    vars.extend_from_slice(extra);
    let gw = Gateway::start(&vars);
    Setup { mock, counters, gw }
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(gw.url(path))
        .header("authorization", "Bearer client-key-must-not-travel")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_completion_is_signed_and_translated() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let (status, v) = post(&s.gw, "/v1/chat/completions", &json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 64, "temperature": 0.5, "stop": ["END"]
    }))
    .await;
    assert_eq!(status, 200, "{v}\n{}", s.gw.logs());
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from Bedrock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // input 11 + cache read 3 + cache write 2; cache read is cached_tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 16);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], 23);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    let r = s.mock.last();
    assert_eq!(r.path, format!("{ENCODED}/converse"));
    let auth = r.header("authorization").unwrap();
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")),
        "{auth}"
    );
    assert_eq!(r.header("x-amz-security-token"), Some(SESSION_TOKEN));
    assert_eq!(s.counters.refused.load(Ordering::SeqCst), 0);
    let body = r.json();
    assert_eq!(body["system"], json!([{"text": "be brief"}]));
    assert_eq!(
        body["inferenceConfig"],
        json!({"maxTokens": 64, "temperature": 0.5, "stopSequences": ["END"]})
    );
    assert!(!s.gw.logs().contains(SECRET_ACCESS_KEY));
    assert!(!s.gw.logs().contains(SESSION_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_an_authentication_error() {
    let s = setup("not-the-right-secret", &[]).await;
    let (status, v) = post(
        &s.gw,
        "/v1/chat/completions",
        &chat_body(MODEL, "hi", false),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "InvalidSignatureException");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("signature"));
    assert_eq!(s.counters.refused.load(Ordering::SeqCst), 1);
    assert!(!v.to_string().contains("not-the-right-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_decoded_from_event_stream_frames() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let mut body = chat_body(MODEL, "hi", true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, events) = chat_stream(&s.gw, &body).await;
    assert_eq!(status, 200);
    assert_eq!(s.mock.last().path, format!("{ENCODED}/converse-stream"));
    assert_eq!(
        s.mock.last().header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(delta_text(&events), "Hello from Bedrock");
    let finish: Vec<&Value> = events
        .iter()
        .filter(|e| e["choices"][0]["finish_reason"].is_string())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = events.iter().find(|e| e["usage"].is_object()).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 16);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    assert_eq!(events.last().unwrap(), &json!("[DONE]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exception_frame_mid_stream_is_the_clients_stream_error() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let (status, events) = chat_stream(&s.gw, &chat_body(MODEL, FAIL_MID_STREAM, true)).await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "Hello ");
    let err = events.last().unwrap();
    assert_eq!(err["error"]["code"], "ThrottlingException", "{events:?}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Too many tokens"));
    assert!(!events.contains(&json!("[DONE]")));
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_round_trip_plain_and_streamed() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let ask = json!({"model": MODEL, "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": tools(), "tool_choice": "auto"});
    let (status, v) = post(&s.gw, "/v1/chat/completions", &ask).await;
    assert_eq!(status, 200, "{v}");
    let m = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(m["tool_calls"][0]["id"], "tooluse_mock1");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        m["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    let spec = &s.mock.last().json()["toolConfig"]["tools"][0]["toolSpec"];
    assert_eq!(spec["name"], "get_weather");
    assert_eq!(spec["inputSchema"]["json"]["required"], json!(["city"]));

    // The answer goes back as a toolResult.
    let answer = json!({"model": MODEL, "tools": tools(), "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": m["tool_calls"].clone()},
        {"role": "tool", "tool_call_id": "tooluse_mock1", "content": "18C and sunny"}
    ]});
    let (status, v) = post(&s.gw, "/v1/chat/completions", &answer).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Tool said: 18C and sunny"
    );

    // Streamed: the call's id and name, then its arguments in fragments.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (status, events) = chat_stream(&s.gw, &streamed).await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "Let me check.");
    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "tooluse_mock1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(events
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test(flavor = "multi_thread")]
async fn images_go_inline_and_url_images_are_refused() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let img = |url: &str| {
        json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let (status, v) = post(
        &s.gw,
        "/v1/chat/completions",
        &img("data:image/png;base64,iVBORw0KGgo="),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "I see 1 images");
    assert_eq!(
        s.mock.last().json()["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
    );
    let calls = s.mock.calls();
    let (status, v) = post(
        &s.gw,
        "/v1/chat/completions",
        &img("https://example.com/cat.png"),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "messages");
    assert_eq!(s.mock.calls(), calls, "refused before any upstream call");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_errors_are_openai_errors() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    for (model, status, kind, code) in [
        (
            "mock.denied-v1:0",
            403,
            "permission_error",
            "AccessDeniedException",
        ),
        (
            "mock.missing-v1:0",
            404,
            "invalid_request_error",
            "ResourceNotFoundException",
        ),
        (
            "mock.throttled-v1:0",
            429,
            "rate_limit_error",
            "ThrottlingException",
        ),
        (
            "mock.unavailable-v1:0",
            503,
            "",
            "ServiceUnavailableException",
        ),
        ("mock.notready-v1:0", 503, "", "ModelNotReadyException"),
    ] {
        let (got, v) = post(
            &s.gw,
            "/v1/chat/completions",
            &chat_body(&format!("bedrock/{model}"), "hi", false),
        )
        .await;
        assert_eq!(got, status, "{model}: {v}");
        assert_eq!(v["error"]["code"], code, "{model}");
        if !kind.is_empty() {
            assert_eq!(v["error"]["type"], kind, "{model}");
        }
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
    }
    // A credential an upstream echoes never reaches the client.
    let (status, v) = post(
        &s.gw,
        "/v1/chat/completions",
        &chat_body(&format!("bedrock/{ECHO_TOKEN_MODEL}"), "hi", false),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(!v.to_string().contains(SESSION_TOKEN), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("is not valid"));
    // A ValidationException: the mock refuses a conversation that starts with the assistant.
    let (status, v) = post(
        &s.gw,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "ValidationException");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_fails_over_to_the_next_provider() {
    let openai = Mock::start(openai_handler("Hello from the fallback")).await;
    let ourl = openai.url();
    let s = setup(
        SECRET_ACCESS_KEY,
        &[
            ("OPENAI_BASE_URL", ourl.as_str()),
            ("OPENAI_API_KEY", "sk-fallback"),
            (
                "GATEWAY_FALLBACK_MODELS",
                "bedrock/mock.throttled-v1:0=openai/gpt-4o-mini",
            ),
        ],
    )
    .await;
    let r = client()
        .post(s.gw.url("/v1/chat/completions"))
        .json(&chat_body("bedrock/mock.throttled-v1:0", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "openai");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the fallback"
    );
    assert!(s.mock.calls() >= 1, "bedrock was tried first");
    assert_eq!(openai.last().json()["model"], "gpt-4o-mini");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bedrock_api_key_is_a_bearer_token_without_signing() {
    let counters = Arc::new(Counters::default());
    let mock = Mock::start(bedrock(SECRET_ACCESS_KEY, counters.clone())).await;
    let gw = Gateway::start(&[
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &mock.url()),
        ("AWS_BEARER_TOKEN_BEDROCK", API_KEY),
    ]);
    let (status, v) = post(&gw, "/v1/chat/completions", &chat_body(MODEL, "hi", false)).await;
    assert_eq!(status, 200, "{v}");
    let r = mock.last();
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert!(r.header("x-amz-date").is_none());
    assert!(!gw.logs().contains(API_KEY));

    // A wrong key: AWS's 403 UnrecognizedClientException is an authentication error.
    let mock2 = Mock::start(bedrock(SECRET_ACCESS_KEY, counters.clone())).await;
    let gw2 = Gateway::start(&[
        ("BEDROCK_BASE_URL", &mock2.url()),
        ("AWS_BEARER_TOKEN_BEDROCK", "ABSK-wrong"),
    ]);
    let (status, v) = post(&gw2, "/v1/chat/completions", &chat_body(MODEL, "hi", false)).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "UnrecognizedClientException");
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_through_invoke_model() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let (status, v) = post(&s.gw, "/v1/embeddings", &json!({
        "model": "bedrock/amazon.titan-embed-text-v2:0", "input": "hello embedding world", "dimensions": 3
    }))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        s.mock.last().path,
        "/model/amazon.titan-embed-text-v2%3A0/invoke"
    );
    assert_eq!(
        s.mock.last().json(),
        json!({"inputText": "hello embedding world", "dimensions": 3})
    );
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["model"], "bedrock/amazon.titan-embed-text-v2:0");

    let (status, v) = post(
        &s.gw,
        "/v1/embeddings",
        &json!({
            "model": "bedrock/cohere.embed-english-v3", "input": ["a", "b"]
        }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(s.mock.last().json()["input_type"], "search_document");
    assert_eq!(v["data"][1]["embedding"], json!([1.0, 0.5]));
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "estimated"
    );

    let (status, _) = post(
        &s.gw,
        "/v1/embeddings",
        &json!({
            "model": "bedrock/amazon.titan-embed-text-v2:0", "input": ["a", "b"]
        }),
    )
    .await;
    assert_eq!(status, 400, "Titan embeds one text per request");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_health_probe_is_a_signed_list_call() {
    let s = setup(
        SECRET_ACCESS_KEY,
        &[("GATEWAY_HEALTH_CHECK_INTERVAL", "200ms")],
    )
    .await;
    let start = Instant::now();
    while s.counters.probes.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s.counters.probes.load(Ordering::SeqCst) > 0,
        "{}",
        s.gw.logs()
    );
    assert_eq!(s.counters.refused.load(Ordering::SeqCst), 0);
    let probe = s
        .mock
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(
        (probe.path.as_str(), probe.query.as_deref()),
        ("/async-invoke", Some("maxResults=1"))
    );
    assert_eq!(
        s.mock.calls(),
        0,
        "a probe is a GET: no Converse call, no tokens"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_and_messages_clients_reach_bedrock() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let (status, v) = post(
        &s.gw,
        "/v1/responses",
        &json!({"model": MODEL, "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["output"][0]["content"][0]["text"], "Hello from Bedrock",
        "{v}"
    );
    let r = client()
        .post(s.gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from Bedrock", "{v}");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 3, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_through_the_gateway_to_bedrock() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let code = r#"
import os, openai
from openai import OpenAI
c = OpenAI(base_url=os.environ["GATEWAY_BASE_URL"], api_key="unused", max_retries=0)
M = os.environ["MODEL"]
r = c.chat.completions.create(model=M, messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content == "Hello from Bedrock", r
assert r.usage.prompt_tokens == 16 and r.usage.prompt_tokens_details.cached_tokens == 3, r.usage
parts = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
    model=M, messages=[{"role": "user", "content": "hi"}], stream=True) if ch.choices]
assert "".join(parts) == "Hello from Bedrock", parts
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
r = c.chat.completions.create(model=M, messages=[{"role": "user", "content": "weather?"}], tools=tools)
call = r.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather" and call.id == "tooluse_mock1", r
try:
    c.chat.completions.create(model="bedrock/mock.throttled-v1:0", messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("expected a RateLimitError")
except openai.RateLimitError as e:
    assert e.status_code == 429
try:
    stream = c.chat.completions.create(model=M, messages=[{"role": "user", "content": "please fail mid-stream"}], stream=True)
    for _ in stream:
        pass
    raise SystemExit("expected the stream to raise")
except openai.APIError as e:
    assert "Too many tokens" in str(e), e
e = c.embeddings.create(model="bedrock/amazon.titan-embed-text-v2:0", input="hello", dimensions=4)
assert len(e.data[0].embedding) == 4
print("bedrock sdk: ok")
"#;
    let out = run_python(&s.gw, &["-c", code], &[("MODEL", MODEL)]).await;
    assert!(out.contains("bedrock sdk: ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_cost_and_metrics_count_bedrock() {
    let s = setup(SECRET_ACCESS_KEY, &[("GATEWAY_CACHE_BACKEND", "memory")]).await;
    let body = chat_body(MODEL, "cache me", false);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = client()
            .post(s.gw.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        seen.push(
            r.headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string()),
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from Bedrock");
    }
    assert_eq!(
        s.mock.calls(),
        1,
        "the second answer is a cache hit: {seen:?}"
    );
    assert_eq!(seen[1].as_deref(), Some("HIT"));

    let metrics = client()
        .get(s.gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("provider=\"bedrock\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // One upstream answer counted (the hit is not billed): 16 prompt tokens, 7 completion, at
    // Claude Sonnet 4's Bedrock price (3 / 15 USD per 1M).
    assert_eq!(sum("gateway_prompt_tokens_total"), 16.0, "{metrics}");
    assert_eq!(sum("gateway_completion_tokens_total"), 7.0);
    let cost = sum("gateway_cost_usd_total");
    let expected = (16.0 * 3.0 + 7.0 * 15.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    assert!(sum("gateway_requests_total") >= 1.0);
}

/// A Claude Code-shaped Messages request (system with `cache_control`, tools, thinking) and
/// its tool-result continuation, streamed, through Bedrock.
#[tokio::test(flavor = "multi_thread")]
async fn a_claude_code_tool_loop_through_bedrock() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let tools = json!([{"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let messages = |extra: Vec<Value>| {
        let mut m = vec![
            json!({"role": "user", "content": [{"type": "text", "text": "weather in Paris?", "cache_control": {"type": "ephemeral"}}]}),
        ];
        m.extend(extra);
        json!({"model": MODEL, "max_tokens": 1024, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "tools": tools, "messages": m})
    };
    let send = |body: Value| {
        let url = s.gw.url("/v1/messages");
        async move {
            let r = client()
                .post(url)
                .header("anthropic-version", "2023-06-01")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let first = send(messages(vec![])).await;
    assert!(first.contains("event: message_stop"), "{first}");
    assert!(
        first.contains(r#""type":"tool_use""#) && first.contains("tooluse_mock1"),
        "{first}"
    );
    let sent = s.mock.last().json();
    // (The Messages dialect drops `cache_control` when it translates; chat clients' reach
    // Bedrock as `cachePoint` blocks: see the unit tests.)
    assert_eq!(sent["system"], json!([{"text": "You are Claude Code."}]));
    assert_eq!(
        sent["additionalModelRequestFields"]["thinking"]["type"], "enabled",
        "{sent}"
    );

    let second = send(messages(vec![
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "tooluse_mock1", "name": "get_weather", "input": {"city": "Paris"}}]}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tooluse_mock1", "content": "18C"}]}),
    ]))
    .await;
    assert!(
        second.contains("said: ") && second.contains("18C"),
        "{second}"
    );
    assert!(second.contains("event: message_stop"), "{second}");
    let sent = s.mock.last().json();
    assert!(
        sent.get("additionalModelRequestFields").is_none(),
        "a loop's continuation goes without thinking: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_throttled_before_any_output_fails_over() {
    let openai = Mock::start(openai_handler("Hello from the fallback")).await;
    let ourl = openai.url();
    let fallback = format!("bedrock/{STREAM_THROTTLED_MODEL}=openai/gpt-4o-mini");
    let s = setup(
        SECRET_ACCESS_KEY,
        &[
            ("OPENAI_BASE_URL", ourl.as_str()),
            ("OPENAI_API_KEY", "sk-fallback"),
            ("GATEWAY_FALLBACK_MODELS", fallback.as_str()),
        ],
    )
    .await;
    let (status, events) = chat_stream(
        &s.gw,
        &chat_body(&format!("bedrock/{STREAM_THROTTLED_MODEL}"), "hi", true),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "Hello from the fallback", "{events:?}");
    assert_eq!(events.last().unwrap(), &json!("[DONE]"));
    assert_eq!(s.mock.calls(), 1);
    assert_eq!(openai.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_host_speaks_bedrock_with_its_own_api_key_and_streams_responses() {
    let counters = Arc::new(Counters::default());
    let mock = Mock::start(bedrock(SECRET_ACCESS_KEY, counters.clone())).await;
    let gw = Gateway::start(&[
        ("GATEWAY_PROVIDER_BEDROCK_WEST_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_BEDROCK_WEST_FORMAT", "bedrock"),
        ("GATEWAY_PROVIDER_BEDROCK_WEST_API_KEY", API_KEY),
    ]);
    let r = client()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "bedrock-west/amazon.nova-pro-v1:0", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "bedrock-west");
    let body = r.text().await.unwrap();
    assert!(body.contains("response.completed"), "{body}");
    assert!(body.contains("Bedrock"), "{body}");
    let last = mock.last();
    assert_eq!(last.path, "/model/amazon.nova-pro-v1%3A0/converse-stream");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(counters.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_mode_is_emulated_with_a_forced_tool() {
    let s = setup(SECRET_ACCESS_KEY, &[]).await;
    let mut body = chat_body(MODEL, "answer in JSON", false);
    body["response_format"] = json!({"type": "json_object"});
    let (status, v) = post(&s.gw, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "{\"answer\":\"Hello from Bedrock\"}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null());
    body["stream"] = json!(true);
    let (status, events) = chat_stream(&s.gw, &body).await;
    assert_eq!(status, 200);
    assert_eq!(delta_text(&events), "{\"answer\":\"Hello from Bedrock\"}");
}
