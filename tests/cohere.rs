//! Cohere's native chat API v2 as a wire format a custom host selects
//! (`GATEWAY_PROVIDER_COHERE_FORMAT=cohere`): the gateway in front of a mock Cohere API (real
//! HTTP on loopback, its exact wire format, strict request validation) answers a plain request,
//! a stream, a tool call round trip and upstream errors in OpenAI's shape.

mod common;
mod mocks;

use common::*;
use mocks::*;
use serde_json::{json, Value};

const MODEL: &str = "cohere/command-a-03-2025";

async fn setup() -> (Mock, Gateway) {
    let mock = Mock::start(cohere()).await;
    let gw = Gateway::start(&[
        ("GATEWAY_PROVIDER_COHERE_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
        ("GATEWAY_PROVIDER_COHERE_API_KEY", COHERE_KEY),
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

#[tokio::test(flavor = "multi_thread")]
async fn plain_answer_is_openai_shaped() {
    let (mock, gw) = setup().await;
    let (status, v) = post(
        &gw,
        &json!({"model": MODEL, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "temperature": 0.3, "top_p": 0.8, "stop": "END"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-c14c80c3-18eb-4519-9460-6c92edd8cfb4");
    assert_eq!(v["model"], MODEL);
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello from Command", "refusal": null})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16})
    );

    assert_eq!(mock.calls(), 1);
    let sent = mock.last();
    assert_eq!(sent.path, "/v2/chat");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {COHERE_KEY}").as_str()),
        "the provider's key, never the client's"
    );
    let b = sent.json();
    assert_eq!(b["model"], "command-a-03-2025");
    assert_eq!(b["p"], 0.8);
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["stream"], false);
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": [{"type": "text", "text": "be brief"}]})
    );
    assert!(
        !gw.logs().contains(COHERE_KEY),
        "the key never reaches the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_answer_in_openai_order() {
    let (mock, gw) = setup().await;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true,
                      "stream_options": {"include_usage": true}});
    let (status, events) = chat_stream(&gw, &body).await;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(delta_text(&events), "Hello from Command");
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    assert_eq!(
        events[n - 2]["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16})
    );
    assert_eq!(events[n - 3]["choices"][0]["finish_reason"], "stop");
    assert!(events[..n - 1]
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk" && e["model"] == MODEL));
    assert_eq!(mock.last().json()["stream"], true);
    assert!(mock.last().json().get("stream_options").is_none());

    // Usage is known to the gateway even when the client did not ask for it.
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "again"}], "stream": true});
    let (_, events) = chat_stream(&gw, &body).await;
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    assert!(
        gw.wait_log("prompt_tokens=12", std::time::Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_round_trip_plain_and_streamed() {
    let (mock, gw) = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]);
    let first = json!({"model": MODEL, "messages": [{"role": "user", "content": TWO_CITIES}], "tools": tools, "tool_choice": "required"});
    let (status, v) = post(&gw, &first).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let msg = &v["choices"][0]["message"];
    assert!(msg["content"].is_null(), "{msg}");
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "get_weather_1byjy32y4hvq");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Rome", "unit": "celsius"}));
    let sent = mock.last().json();
    assert_eq!(sent["tool_choice"], "REQUIRED");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["required"],
        json!(["location"])
    );

    // Second turn: the calls and their results go back; the mock checks the pairing.
    let second = json!({"model": MODEL, "tools": tools, "messages": [
        {"role": "user", "content": TWO_CITIES},
        msg.clone(),
        {"role": "tool", "tool_call_id": "get_weather_1byjy32y4hvq", "content": "18C"},
        {"role": "tool", "tool_call_id": "get_weather_2kzrp8q7d1mn", "content": "24C"}
    ]});
    let (status, v) = post(&gw, &second).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Tool said: 18C, 24C");
    let sent = mock.last().json();
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "tool_calls": [
            {"id": "get_weather_1byjy32y4hvq", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\",\"unit\":\"celsius\"}"}},
            {"id": "get_weather_2kzrp8q7d1mn", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\",\"unit\":\"celsius\"}"}}
        ]})
    );
    assert_eq!(
        sent["messages"][3],
        json!({"role": "tool", "tool_call_id": "get_weather_2kzrp8q7d1mn", "content": "24C"})
    );

    // Streamed: OpenAI tool-call deltas, indexes from 0, arguments reassembled.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let (status, events) = chat_stream(&gw, &streamed).await;
    assert_eq!(status, 200);
    let mut assembled: Vec<(String, String)> = Vec::new();
    for e in &events[..events.len() - 1] {
        if let Some(tc) = e["choices"][0]["delta"]["tool_calls"].as_array() {
            let d = &tc[0];
            let i = d["index"].as_u64().unwrap() as usize;
            if d.get("id").is_some() {
                assert_eq!(i, assembled.len(), "indexes count from 0");
                assembled.push((d["id"].as_str().unwrap().into(), String::new()));
            }
            assembled[i]
                .1
                .push_str(d["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(assembled.len(), 2);
    assert_eq!(assembled[1].0, "get_weather_2kzrp8q7d1mn");
    assert_eq!(
        serde_json::from_str::<Value>(&assembled[0].1).unwrap(),
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert_eq!(
        events[events.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_are_openai_shaped() {
    let (mock, gw) = setup().await;
    let ask = |model: &str| json!({"model": format!("cohere/{model}"), "messages": [{"role": "user", "content": "hi"}]});

    let (status, v) = post(&gw, &ask("command-ratelimited")).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("You are using a Trial key"));

    // A field Cohere has no equivalent for is refused before anything goes upstream.
    let before = mock.calls();
    let mut bias = ask("command-a-03-2025");
    bias["logit_bias"] = json!({"1": 5});
    let (status, v) = post(&gw, &bias).await;
    assert_eq!(
        (status, v["error"]["param"].clone()),
        (400, json!("logit_bias"))
    );
    assert_eq!(mock.calls(), before);

    // An error at the end of a stream, after text went out: an error event, never a finish.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": FAIL_MID_STREAM}], "stream": true});
    let (status, events) = chat_stream(&gw, &body).await;
    assert_eq!(status, 200);
    let err_at = events
        .iter()
        .position(|e| e.get("error").is_some())
        .unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert!(events[..err_at]
        .iter()
        .all(|e| e["choices"][0]["finish_reason"].is_null()));
    assert_eq!(
        events[err_at]["error"]["message"],
        "internal error during generation"
    );

    // A wrong key: Cohere's 401 comes back as an OpenAI authentication error.
    let gw_bad = Gateway::start(&[
        ("GATEWAY_PROVIDER_COHERE_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
        ("GATEWAY_PROVIDER_COHERE_API_KEY", "co-wrong"),
    ]);
    let (status, v) = post(&gw_bad, &ask("command-a-03-2025")).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["message"], "invalid api token");
    assert!(!gw_bad.logs().contains("co-wrong"));
}
