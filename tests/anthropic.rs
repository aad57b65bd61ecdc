//! Issue 3, Anthropic: the gateway in front of a mock Anthropic Messages API (real HTTP on
//! loopback, exact wire format, strict request validation): plain, stream, tools round trip,
//! images, JSON mode, errors before and during streams, models, embeddings.

mod common;
mod mocks;

use common::*;
use mocks::*;
use serde_json::{json, Value};

const MODEL: &str = "anthropic/claude-sonnet-4-20250514";

async fn setup() -> (Mock, Gateway) {
    let mock = Mock::start(anthropic()).await;
    let gw = Gateway::start(&[
        ("ANTHROPIC_BASE_URL", &mock.url()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GATEWAY_ANTHROPIC_MAX_TOKENS", "1234"),
    ]);
    (mock, gw)
}

async fn post(gw: &Gateway, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key-must-not-travel")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v, headers)
}

/// A streamed answer as its `data:` payloads (`[DONE]` as the string).
async fn stream(gw: &Gateway, body: &Value) -> (u16, Vec<Value>) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
    }
    let text = r.text().await.unwrap();
    let data = sse_data(&text)
        .into_iter()
        .map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d)))
        .collect();
    (status, data)
}

/// Checks the OpenAI order: role first, deltas, exactly one finish chunk, optional usage, DONE.
fn assert_openai_order(events: &[Value], include_usage: bool) -> String {
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    let chunks = &events[..events.len() - 1];
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let finishes: Vec<usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c["choices"][0]["finish_reason"].is_string())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(finishes.len(), 1, "exactly one finish chunk: {events:?}");
    let usage_chunks = chunks.iter().filter(|c| c["usage"].is_object()).count();
    if include_usage {
        assert_eq!(usage_chunks, 1);
        assert_eq!(
            finishes[0],
            chunks.len() - 2,
            "usage chunk right after the finish chunk"
        );
        assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    } else {
        assert_eq!(usage_chunks, 0);
        assert_eq!(finishes[0], chunks.len() - 1);
    }
    for c in chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["created"], chunks[0]["created"]);
        assert_eq!(c["model"], MODEL);
    }
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_completion_is_openai_shaped() {
    let (mock, gw) = setup().await;
    let (status, v, headers) = post(&gw, &json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 1.6, "stop": ["END", " "], "user": "user-7"
    }))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-provider"], "anthropic");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-msg_mock01");
    assert_eq!(v["model"], MODEL);
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello from Claude", "refusal": null})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34, "prompt_tokens_details": {"cached_tokens": 4}})
    );

    assert_eq!(mock.calls(), 1);
    let sent = mock.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    let b = sent.json();
    assert_eq!(b["model"], "claude-sonnet-4-20250514");
    assert_eq!(
        b["max_tokens"], 1234,
        "GATEWAY_ANTHROPIC_MAX_TOKENS is the default"
    );
    assert_eq!(b["temperature"], 1.0, "clamped to Anthropic's maximum");
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["system"], json!([{"type": "text", "text": "be brief"}]));
    assert_eq!(b["metadata"], json!({"user_id": "user-7"}));

    // Bare names resolve to Anthropic too; the answer names the model as asked.
    let (status, v, _) = post(&gw, &json!({"model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 50})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "claude-3-5-haiku-latest");
    assert_eq!(mock.last().json()["model"], "claude-3-5-haiku-latest");
    assert_eq!(mock.last().json()["max_tokens"], 50);
    assert!(
        !gw.logs().contains(ANTHROPIC_KEY),
        "the key never reaches the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_is_translated_in_openai_order() {
    let (mock, gw) = setup().await;
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let (status, events) = stream(&gw, &body).await;
    assert_eq!(status, 200);
    assert_eq!(assert_openai_order(&events, false), "Hello from Claude");
    assert_eq!(
        events[events.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(mock.last().json()["stream"], true);

    let mut body = body;
    body["stream_options"] = json!({"include_usage": true});
    let (_, events) = stream(&gw, &body).await;
    assert_eq!(assert_openai_order(&events, true), "Hello from Claude");
    assert_eq!(
        events[events.len() - 2]["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34, "prompt_tokens_details": {"cached_tokens": 4}})
    );
    assert!(
        mock.last().json().get("stream_options").is_none(),
        "no OpenAI-only field goes upstream"
    );
    // Usage is known to the gateway even when the client did not ask for it.
    assert!(
        gw.wait_log("prompt_tokens=25", std::time::Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_round_trip_plain_and_streamed() {
    let (mock, gw) = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}}, "required": ["location"]}}}]);
    let first = json!({"model": MODEL, "messages": [{"role": "user", "content": TWO_CITIES}], "tools": tools, "tool_choice": "auto", "parallel_tool_calls": true});
    let (status, v, _) = post(&gw, &first).await;
    assert_eq!(status, 200, "{v}");
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["content"], "Let me check.");
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_01A");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Rome", "unit": "celsius"}));
    let sent = mock.last().json();
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["location"])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));

    // Second turn: the assistant's calls and both results go back; the mock checks the pairing.
    let second = json!({"model": MODEL, "tools": tools, "messages": [
        {"role": "user", "content": TWO_CITIES},
        msg.clone(),
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "24C"}
    ]});
    let (status, v, _) = post(&gw, &second).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Tool said: 18C, 24C");
    let sent = mock.last().json();
    assert_eq!(
        sent["messages"][1]["content"],
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris", "unit": "celsius"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"location": "Rome", "unit": "celsius"}}
        ])
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "24C"}
        ]})
    );

    // Streamed: the calls arrive as OpenAI tool-call deltas with indexes 0 and 1.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    streamed["parallel_tool_calls"] = json!(false);
    let (status, events) = stream(&gw, &streamed).await;
    assert_eq!(status, 200);
    assert_openai_order(&events, false);
    assert_eq!(
        mock.last().json()["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let mut assembled: Vec<(String, String, String)> = Vec::new();
    for e in &events[..events.len() - 1] {
        if let Some(tc) = e["choices"][0]["delta"]["tool_calls"].as_array() {
            let d = &tc[0];
            let i = d["index"].as_u64().unwrap() as usize;
            if d.get("id").is_some() {
                assert_eq!(i, assembled.len(), "indexes count from 0");
                assembled.push((
                    d["id"].as_str().unwrap().into(),
                    d["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            assembled[i]
                .2
                .push_str(d["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(assembled.len(), 2);
    assert_eq!(assembled[0].0, "toolu_01A");
    assert_eq!(assembled[1].1, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&assembled[0].2).unwrap(),
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert_eq!(
        events[events.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_as_data_urls_and_https_urls() {
    let (mock, gw) = setup().await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (status, v, _) = post(&gw, &json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what are these?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}"), "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]}]}))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "I see 2 images");
    assert_eq!(
        mock.last().json()["messages"][0]["content"],
        json!([
            {"type": "text", "text": "what are these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_response_format_is_emulated_with_a_forced_tool() {
    let (mock, gw) = setup().await;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "who?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object", "properties": {"name": {"type": "string"}, "born": {"type": "integer"}}}}}});
    let (status, v, _) = post(&gw, &body).await;
    assert_eq!(status, 200, "{v}");
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"name": "Ada", "born": 1815}));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(
        mock.last().json()["tool_choice"]["name"],
        "gateway_json_response"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (_, events) = stream(&gw, &streamed).await;
    let text = assert_openai_order(&events, false);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"name": "Ada", "born": 1815})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_openai_shaped_with_meaningful_statuses() {
    let (mock, gw) = setup().await;
    let ask = |model: &str| json!({"model": format!("anthropic/{model}"), "messages": [{"role": "user", "content": "hi"}]});

    let (status, v, _) = post(&gw, &ask("claude-overloaded")).await;
    assert_eq!(status, 503, "529 becomes 503: {v}");
    assert_eq!(v["error"]["message"], "Overloaded");
    assert_eq!(v["error"]["code"], "overloaded_error");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"].as_object().unwrap().contains_key("param"));

    let (status, v, headers) = post(&gw, &ask("claude-ratelimited")).await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rate limit"));
    assert_eq!(headers["retry-after"], "7");

    // n > 1 has no Anthropic equivalent: refused before anything goes upstream.
    let before = mock.calls();
    let mut two = ask("claude-sonnet-4-20250514");
    two["n"] = json!(2);
    let (status, v, _) = post(&gw, &two).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "n");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let mut bias = ask("claude-sonnet-4-20250514");
    bias["logit_bias"] = json!({"1": 5});
    let (status, v, _) = post(&gw, &bias).await;
    assert_eq!(
        (status, v["error"]["param"].clone()),
        (400, json!("logit_bias"))
    );
    assert_eq!(
        mock.calls(),
        before,
        "refused requests never reach the upstream"
    );

    // A wrong key: Anthropic's 401 comes back as an OpenAI authentication error.
    let gw_bad = Gateway::start(&[
        ("ANTHROPIC_BASE_URL", &mock.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-wrong"),
    ]);
    let (status, v, _) = post(&gw_bad, &ask("claude-sonnet-4-20250514")).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["message"], "invalid x-api-key");
    assert!(!gw_bad.logs().contains("sk-ant-wrong"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mid_stream_error_and_cut_stream_end_with_an_error_event() {
    let (_mock, gw) = setup().await;
    for (text, expect_msg) in [(FAIL_MID_STREAM, "Overloaded"), (CUT_STREAM, "")] {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": true, "stream_options": {"include_usage": true}});
        let (status, events) = stream(&gw, &body).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            events[0]["choices"][0]["delta"]["role"], "assistant",
            "{text}: {events:?}"
        );
        let err_at = events
            .iter()
            .position(|e| e.get("error").is_some())
            .unwrap_or_else(|| panic!("{text}: no error event: {events:?}"));
        assert!(
            events[err_at + 1..].iter().all(|e| e == "[DONE]"),
            "{text}: nothing but [DONE] after the error"
        );
        assert!(
            events[..err_at]
                .iter()
                .all(|e| e["choices"][0]["finish_reason"].is_null() && e.get("usage").is_none()),
            "{text}: no finish_reason or usage chunk before the error: {events:?}"
        );
        let e = &events[err_at]["error"];
        assert!(
            e["message"].as_str().unwrap().contains(expect_msg),
            "{text}: {e}"
        );
        assert!(e.get("type").is_some() && e.get("code").is_some(), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_and_embeddings() {
    let (mock, gw) = setup().await;
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"anthropic/claude-sonnet-4-20250514"),
        "{ids:?}"
    );
    assert!(mock.requests().iter().any(|r| r.method == "GET"
        && r.path == "/v1/models"
        && r.header("x-api-key") == Some(ANTHROPIC_KEY)));

    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "anthropic/claude-sonnet-4-20250514", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Anthropic has no embeddings"),
        "{v}"
    );
    assert_eq!(v["error"]["param"], "model");
    assert_eq!(mock.calls(), 0);
}
