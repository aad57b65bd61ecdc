//! Issue 3, Gemini: the gateway in front of a mock Gemini API (real HTTP on loopback, exact
//! wire format, strict request validation): plain, stream, tools round trip with names recovered
//! by tool_call_id, images, n > 1, JSON mode, errors before and during streams, models.

mod common;
mod mocks;

use common::*;
use mocks::*;
use serde_json::{json, Value};

const MODEL: &str = "google/gemini-2.0-flash";

async fn setup() -> (Mock, Gateway) {
    let mock = Mock::start(gemini()).await;
    let gw = Gateway::start(&[
        ("GEMINI_BASE_URL", &mock.url()),
        ("GEMINI_API_KEY", GEMINI_KEY),
    ]);
    (mock, gw)
}

async fn post(gw: &Gateway, body: &Value) -> (u16, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key-must-not-travel")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn finish_chunks(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["choices"][0]["finish_reason"].is_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_completion_is_openai_shaped() {
    let (mock, gw) = setup().await;
    let (status, v) = post(&gw, &json!({
        "model": MODEL,
        "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "user", "content": "there"}],
        "max_tokens": 64, "temperature": 1.4, "top_p": 0.9, "stop": "END", "seed": 42, "user": "u-1"
    }))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-resp-mock-1");
    assert_eq!(v["model"], MODEL);
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello from Gemini", "refusal": null})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 3}})
    );

    let sent = mock.last();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(sent.query, None, "the key stays out of the URL");
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
    let b = sent.json();
    assert_eq!(
        b["systemInstruction"],
        json!({"parts": [{"text": "be brief"}]})
    );
    assert_eq!(
        b["contents"],
        json!([{"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]}]),
        "same-role turns merge"
    );
    assert_eq!(
        b["generationConfig"],
        json!({"temperature": 1.4, "topP": 0.9, "seed": 42, "maxOutputTokens": 64, "stopSequences": ["END"]})
    );

    // Bare gemini-* names resolve to Google.
    let (status, v) = post(
        &gw,
        &json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "gemini-2.5-pro");
    assert_eq!(
        mock.last().path,
        "/v1beta/models/gemini-2.5-pro:generateContent"
    );
    assert!(!gw.logs().contains(GEMINI_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_is_translated_in_openai_order() {
    let (mock, gw) = setup().await;
    for (user, include_usage) in [("hi", false), ("hi", true), (STAMP_EVERY_CHUNK, true)] {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": user}], "stream": true, "stream_options": {"include_usage": include_usage}});
        let (status, events) = chat_stream(&gw, &body).await;
        assert_eq!(status, 200);
        let sent = mock.last();
        assert_eq!(
            sent.path,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
        );
        assert_eq!(sent.query.as_deref(), Some("alt=sse"));
        assert_eq!(events.last().unwrap(), "[DONE]");
        assert_eq!(
            events[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(delta_text(&events), "Hello from Gemini");
        let fin = finish_chunks(&events);
        assert_eq!(
            fin.len(),
            1,
            "one finish chunk even when every upstream chunk says STOP: {events:?}"
        );
        assert_eq!(fin[0]["choices"][0]["finish_reason"], "stop");
        let usage: Vec<&Value> = events.iter().filter(|e| e["usage"].is_object()).collect();
        if include_usage {
            assert_eq!(usage.len(), 1);
            assert_eq!(usage[0]["usage"]["total_tokens"], 18);
            assert_eq!(
                events[events.len() - 2],
                *usage[0],
                "usage right before [DONE]"
            );
        } else {
            assert!(usage.is_empty());
        }
        let id = &events[0]["id"];
        assert!(events[..events.len() - 1].iter().all(|e| &e["id"] == id
            && e["model"] == MODEL
            && e["object"] == "chat.completion.chunk"));
    }
    assert!(
        gw.wait_log("prompt_tokens=12", std::time::Duration::from_secs(10)),
        "usage is known without the usage chunk: {}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_round_trip_recovers_function_names() {
    let (mock, gw) = setup().await;
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "strict": true,
            "parameters": {"type": "object", "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#",
                "properties": {"location": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}},
        {"type": "function", "function": {"name": "no_args"}}
    ]);
    let first = json!({"model": MODEL, "messages": [{"role": "user", "content": TWO_CITIES}], "tools": tools, "tool_choice": "required"});
    let (status, v) = post(&gw, &first).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let msg = v["choices"][0]["message"].clone();
    assert!(msg["content"].is_null());
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert!(c["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(c["function"]["name"], "get_weather");
    }
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Paris", "unit": "celsius"})
    );
    let sent = mock.last().json();
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["parameters"],
        json!({"type": "object", "required": ["location"],
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "nullable": true, "enum": ["celsius", "fahrenheit"]}}})
    );
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][1],
        json!({"name": "no_args"})
    );

    // The results come back by tool_call_id only; the gateway finds the function names.
    let id0 = calls[0]["id"].as_str().unwrap();
    let id1 = calls[1]["id"].as_str().unwrap();
    let second = json!({"model": MODEL, "tools": tools, "messages": [
        {"role": "user", "content": TWO_CITIES},
        msg,
        {"role": "tool", "tool_call_id": id1, "content": "24C"},
        {"role": "tool", "tool_call_id": id0, "content": "{\"temp\": 18}"}
    ]});
    let (status, v) = post(&gw, &second).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Tool said: 24C, {\"temp\":18}"
    );
    let sent = mock.last().json();
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris", "unit": "celsius"}}},
            {"functionCall": {"name": "get_weather", "args": {"location": "Rome", "unit": "celsius"}}}
        ]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": "24C"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}}
        ]})
    );

    // An unknown tool_call_id is the client's mistake: 400 naming it, nothing sent.
    let before = mock.calls();
    let bad = json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_nope", "content": "r"}]});
    let (status, v) = post(&gw, &bad).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "messages[1].tool_call_id");
    assert_eq!(mock.calls(), before);

    // Streamed, with parallel_tool_calls false: one call, index 0, then finish tool_calls.
    let streamed = json!({"model": MODEL, "messages": [{"role": "user", "content": TWO_CITIES}], "tools": tools, "stream": true, "parallel_tool_calls": false});
    let (status, events) = chat_stream(&gw, &streamed).await;
    assert_eq!(status, 200);
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas.len(), 2, "{events:?}");
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert_eq!(deltas[0]["function"]["arguments"], "");
    assert_eq!(
        serde_json::from_str::<Value>(deltas[1]["function"]["arguments"].as_str().unwrap())
            .unwrap(),
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert_eq!(
        finish_chunks(&events)[0]["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_several_choices_and_json_mode() {
    let (mock, gw) = setup().await;
    let (status, v) = post(
        &gw,
        &json!({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what are these?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/photos/cat.png"}}
        ]}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "I see 2 images");
    assert_eq!(
        mock.last().json()["contents"][0]["parts"],
        json!([
            {"text": "what are these?"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/photos/cat.png"}}
        ])
    );

    let (status, v) = post(
        &gw,
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(mock.last().json()["generationConfig"]["candidateCount"], 3);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(
        choices
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );

    let (status, v) = post(&gw, &json!({"model": MODEL, "messages": [{"role": "user", "content": "who?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "strict": true, "schema": {"type": "object", "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "born": {"type": "integer"}}, "required": ["name", "born"]}}}})).await;
    assert_eq!(status, 200, "{v}");
    let g = &mock.last().json()["generationConfig"];
    assert_eq!(g["responseMimeType"], "application/json");
    assert!(g["responseSchema"].get("additionalProperties").is_none());
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["name"], "Ada");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_openai_shaped_with_meaningful_statuses() {
    let (mock, gw) = setup().await;
    let (status, v) = post(&gw, &json!({"model": "google/gemini-exhausted", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 429, "RESOURCE_EXHAUSTED is 429: {v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        v["error"]["message"],
        "Resource has been exhausted (e.g. check quota)."
    );

    let (status, v) = post(
        &gw,
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "logprobs": true}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "logprobs");

    let (status, v) = post(
        &gw,
        &json!({"model": "google/bad/name", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "model");
    assert_eq!(mock.calls(), 1, "only the exhausted call went upstream");

    let gw_bad = Gateway::start(&[
        ("GEMINI_BASE_URL", &mock.url()),
        ("GOOGLE_API_KEY", "AIza-wrong"),
    ]);
    let (status, v) = post(
        &gw_bad,
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        status, 401,
        "an invalid key is an authentication error: {v}"
    );
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key not valid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mid_stream_error_and_missing_finish_reason_end_with_an_error_event() {
    let (_mock, gw) = setup().await;
    for (user, expect) in [
        (FAIL_MID_STREAM, "overloaded"),
        (CUT_STREAM, "finishReason"),
    ] {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": user}], "stream": true, "stream_options": {"include_usage": true}});
        let (status, events) = chat_stream(&gw, &body).await;
        assert_eq!(status, 200, "{user}");
        assert_eq!(
            events[0]["choices"][0]["delta"]["role"], "assistant",
            "{user}: {events:?}"
        );
        let err_at = events
            .iter()
            .position(|e| e.get("error").is_some())
            .unwrap_or_else(|| panic!("{user}: no error event: {events:?}"));
        assert!(events[err_at + 1..].iter().all(|e| e == "[DONE]"));
        assert!(
            events[..err_at]
                .iter()
                .all(|e| e["choices"][0]["finish_reason"].is_null() && e.get("usage").is_none()),
            "{user}: {events:?}"
        );
        assert!(err_at >= 2, "content came before the error: {events:?}");
        assert!(
            events[err_at]["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expect),
            "{user}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_are_listed_from_the_upstream() {
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
    assert!(ids.contains(&"google/text-embedding-004"), "{ids:?}");
    assert!(ids.contains(&"google/gemini-2.0-flash"), "{ids:?}");
    assert!(mock.requests().iter().any(|r| r.method == "GET"
        && r.path == "/v1beta/models"
        && r.header("x-goog-api-key") == Some(GEMINI_KEY)
        && !r.query.as_deref().unwrap_or("").contains("key=")));
}
