//! The response cache for every dialect: a Messages or Responses answer from a translated
//! upstream is stored (plain and streamed, reasoning included) and served again as a hit,
//! in the dialect that asks, whichever stored it; a native Messages pass-through is not
//! stored. Real HTTP mocks on loopback, the gateway with its in-memory cache.

mod common;
mod dialect_support;
mod mocks;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;
use dialect_support::*;
use mocks::*;

const GATEWAY_KEY: &str = "sk-gw-dialect-cache-1";

/// An OpenAI-compatible upstream that reasons before it answers (`reasoning_content`, as vLLM
/// gives it), plain or streamed, with usage.
fn reasoning_upstream() -> Handler {
    Arc::new(|r: &Recorded| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        let usage = json!({"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
            "completion_tokens_details": {"reasoning_tokens": 4}});
        if body["stream"] != true {
            return json_response(
                200,
                json!({"id": "chatcmpl-r1", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Rome.",
                        "reasoning_content": "Italy's capital is Rome."}, "finish_reason": "stop"}],
                    "usage": usage}),
            );
        }
        let chunk = |delta: Value, finish: Value| {
            let v = json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        let mut events = vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(
                json!({"reasoning_content": "Italy's capital "}),
                Value::Null,
            ),
            chunk(json!({"reasoning_content": "is Rome."}), Value::Null),
            chunk(json!({"content": "Ro"}), Value::Null),
            chunk(json!({"content": "me."}), Value::Null),
            chunk(json!({}), json!("stop")),
        ];
        if body["stream_options"]["include_usage"] == true {
            let v = json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [], "usage": usage});
            events.push(format!("data: {v}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_string());
        sse_response(events, Duration::ZERO, None)
    })
}

fn gateway(claude: &Mock, up: &Mock) -> Gateway {
    start_with(
        claude,
        up,
        GATEWAY_KEY,
        &[
            ("GATEWAY_CACHE_BACKEND", "memory"),
            ("GATEWAY_CACHE_TTL", "300"),
        ],
    )
}

struct Answer {
    status: u16,
    cache: String,
    provider: String,
    body: String,
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> Answer {
    let resp = client()
        .post(gw.url(path))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let h = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (cache, provider) = (h("x-cache"), h("x-provider"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    Answer {
        status,
        cache,
        provider,
        body,
    }
}

fn messages(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": text}]})
}

/// The events of an SSE body as (event name or "", data as JSON).
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| e.contains("data: "))
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or(Value::String(d.to_string()));
                }
            }
            (name, data)
        })
        .collect()
}

/// A Messages stream's thinking and text, and its stop reason.
fn messages_stream(body: &str) -> (String, String, String) {
    let (mut thinking, mut text, mut stop) = (String::new(), String::new(), String::new());
    for (name, v) in events(body) {
        match name.as_str() {
            "content_block_delta" => match v["delta"]["type"].as_str() {
                Some("thinking_delta") => thinking += v["delta"]["thinking"].as_str().unwrap(),
                Some("text_delta") => text += v["delta"]["text"].as_str().unwrap(),
                _ => {}
            },
            "message_delta" => stop = v["delta"]["stop_reason"].as_str().unwrap().to_string(),
            _ => {}
        }
    }
    (thinking, text, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_answers_from_a_translated_upstream_are_stored_and_served() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = gateway(&claude, &up);

    // Plain.
    let req = messages("vllm/qwen3-8b", "say hello", false);
    let first = post(&gw, "/v1/messages", &req).await;
    assert_eq!(
        (first.status, first.cache.as_str()),
        (200, "MISS"),
        "{}",
        first.body
    );
    let second = post(&gw, "/v1/messages", &req).await;
    assert_eq!(
        (second.status, second.cache.as_str()),
        (200, "HIT"),
        "{}",
        second.body
    );
    assert_eq!(second.provider, "vllm");
    assert_eq!(up.calls(), 1, "the hit never reached the upstream");
    let (a, b): (Value, Value) = (
        serde_json::from_str(&first.body).unwrap(),
        serde_json::from_str(&second.body).unwrap(),
    );
    assert_eq!(b["type"], "message");
    for k in ["content", "stop_reason", "usage", "model"] {
        assert_eq!(a[k], b[k], "{k}: {a} / {b}");
    }
    assert_eq!(b["content"][0]["text"], "Hello from vLLM");

    // Streamed: stored from the translated events, replayed as Anthropic events.
    let req = messages("vllm/qwen3-8b", "say hello again", true);
    let first = post(&gw, "/v1/messages", &req).await;
    assert_eq!(first.cache, "MISS");
    let second = post(&gw, "/v1/messages", &req).await;
    assert_eq!(second.cache, "HIT", "{}", second.body);
    assert_eq!(up.calls(), 2);
    assert_eq!(messages_stream(&first.body), messages_stream(&second.body));
    let (_, text, stop) = messages_stream(&second.body);
    assert_eq!(
        (text.as_str(), stop.as_str()),
        ("Hello from vLLM", "end_turn")
    );
    assert!(second
        .body
        .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    // A tool call, streamed: the hit gives the same `toolu_` id and input.
    let mut req = messages("vllm/qwen3-8b", "weather in Paris?", true);
    req["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let first = post(&gw, "/v1/messages", &req).await;
    let second = post(&gw, "/v1/messages", &req).await;
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("MISS", "HIT")
    );
    assert_eq!(up.calls(), 3);
    let tool = |body: &str| -> (Value, String) {
        let evs = events(body);
        let start = evs
            .iter()
            .find(|(n, v)| n == "content_block_start" && v["content_block"]["type"] == "tool_use")
            .unwrap()
            .1["content_block"]
            .clone();
        let args: String = evs
            .iter()
            .filter(|(_, v)| v["delta"]["type"] == "input_json_delta")
            .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect();
        (start, args)
    };
    assert_eq!(tool(&first.body), tool(&second.body));
    assert_eq!(tool(&second.body).0["id"], format!("toolu_{CALL_ID}"));
    assert_eq!(messages_stream(&second.body).2, "tool_use");

    // A stored Messages answer serves an OpenAI chat client asking the same thing.
    let chat = json!({"model": "vllm/qwen3-8b", "max_tokens": 64,
        "messages": [{"role": "user", "content": "say hello"}]});
    let hit = post(&gw, "/v1/chat/completions", &chat).await;
    assert_eq!(hit.cache, "HIT", "{}", hit.body);
    let v: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from vLLM");
    assert_eq!(up.calls(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_is_stored_and_replayed_as_thinking() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(reasoning_upstream()).await;
    let gw = gateway(&claude, &up);
    for stream in [false, true] {
        let req = messages(
            "vllm/qwen3-8b",
            &format!("capital of Italy? {stream}"),
            stream,
        );
        let first = post(&gw, "/v1/messages", &req).await;
        let second = post(&gw, "/v1/messages", &req).await;
        assert_eq!(
            (first.cache.as_str(), second.cache.as_str()),
            ("MISS", "HIT")
        );
        for a in [&first, &second] {
            if stream {
                let (thinking, text, _) = messages_stream(&a.body);
                assert_eq!(thinking, "Italy's capital is Rome.", "{}", a.body);
                assert_eq!(text, "Rome.");
            } else {
                let v: Value = serde_json::from_str(&a.body).unwrap();
                assert_eq!(
                    v["content"],
                    json!([{"type": "thinking", "thinking": "Italy's capital is Rome.", "signature": ""},
                           {"type": "text", "text": "Rome."}]),
                    "{v}"
                );
            }
        }
        // What the streamed request stored serves the plain one's form too, and back.
        let mut other = req.clone();
        other["stream"] = json!(!stream);
        let cross = post(&gw, "/v1/messages", &other).await;
        assert_eq!(cross.cache, "HIT", "{}", cross.body);
        assert!(cross.body.contains("Italy's capital"), "{}", cross.body);
    }
    assert_eq!(up.calls(), 2);
}

/// Issue 20, point 4: a chat answer's reasoning is stored with it and replayed, before the
/// content, as `reasoning_content` (plain) and `delta.reasoning_content` (streamed).
#[tokio::test(flavor = "multi_thread")]
async fn chat_reasoning_is_stored_and_replayed_before_the_content() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(reasoning_upstream()).await;
    let gw = gateway(&claude, &up);
    for stream in [false, true] {
        let req = json!({"model": "vllm/qwen3-8b", "stream": stream,
            "messages": [{"role": "user", "content": format!("capital of Italy? chat {stream}")}]});
        let first = post(&gw, "/v1/chat/completions", &req).await;
        let second = post(&gw, "/v1/chat/completions", &req).await;
        assert_eq!(
            (first.cache.as_str(), second.cache.as_str()),
            ("MISS", "HIT"),
            "{}",
            second.body
        );
        if stream {
            let (mut reasoning, mut content) = (String::new(), String::new());
            for line in second.body.lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                let delta = &v["choices"][0]["delta"];
                if let Some(r) = delta["reasoning_content"].as_str() {
                    assert!(
                        content.is_empty(),
                        "reasoning after content: {}",
                        second.body
                    );
                    reasoning.push_str(r);
                }
                if let Some(c) = delta["content"].as_str() {
                    content.push_str(c);
                }
            }
            assert_eq!(reasoning, "Italy's capital is Rome.", "{}", second.body);
            assert_eq!(content, "Rome.", "{}", second.body);
        } else {
            let v: Value = serde_json::from_str(&second.body).unwrap();
            let m = &v["choices"][0]["message"];
            assert_eq!(m["reasoning_content"], "Italy's capital is Rome.", "{v}");
            assert_eq!(m["content"], "Rome.", "{v}");
        }
    }
    assert_eq!(up.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_answers_are_stored_and_served() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = gateway(&claude, &up);
    let text_of = |body: &str| -> String {
        let v: Value = serde_json::from_str(body).unwrap();
        v["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == "message")
            .flat_map(|o| o["content"].as_array().unwrap().clone())
            .map(|c| c["text"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // Stored responses (`store` not false) bypass the cache (README); Codex sends false.
    let req = json!({"model": "vllm/qwen3-8b", "input": "say hello", "store": false});
    let first = post(&gw, "/v1/responses", &req).await;
    let second = post(&gw, "/v1/responses", &req).await;
    assert_eq!((first.status, second.status), (200, 200), "{}", second.body);
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("MISS", "HIT")
    );
    assert_eq!(text_of(&second.body), "Hello from vLLM");
    assert_eq!(up.calls(), 1);

    let req = json!({"model": "vllm/qwen3-8b", "input": "say hello, streamed", "stream": true, "store": false});
    let first = post(&gw, "/v1/responses", &req).await;
    let second = post(&gw, "/v1/responses", &req).await;
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("MISS", "HIT")
    );
    assert_eq!(up.calls(), 2);
    let deltas = |body: &str| -> String {
        events(body)
            .iter()
            .filter(|(_, v)| v["type"] == "response.output_text.delta")
            .map(|(_, v)| v["delta"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(deltas(&first.body), deltas(&second.body));
    assert_eq!(deltas(&second.body), "Hello from vLLM");
    assert!(
        events(&second.body)
            .iter()
            .any(|(_, v)| v["type"] == "response.completed"),
        "{}",
        second.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn native_messages_pass_through_is_not_stored() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = gateway(&claude, &up);
    for stream in [false, true] {
        let req = messages("anthropic/claude-sonnet-4-20250514", "say hello", stream);
        let first = post(&gw, "/v1/messages", &req).await;
        let second = post(&gw, "/v1/messages", &req).await;
        assert_eq!((first.status, second.status), (200, 200), "{}", second.body);
        assert_eq!(
            (first.cache.as_str(), second.cache.as_str()),
            ("MISS", "MISS")
        );
    }
    assert_eq!(claude.calls(), 4);
}
