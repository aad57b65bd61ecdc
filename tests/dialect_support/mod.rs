//! What the dialect tests (`tests/messages.rs`, `tests/responses.rs`) share: an
//! OpenAI-compatible upstream that calls a tool and answers, and a gateway in front of it and
//! of the Anthropic mock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::mocks::*;

pub const VLLM_KEY: &str = "vllm-secret";
/// The id the OpenAI-compatible mock gives its tool call.
pub const CALL_ID: &str = "call_abc123";
/// The patch the OpenAI-compatible mock sends when an `apply_patch` tool is offered.
pub const PATCH: &str =
    "*** Begin Patch\n*** Add File: hello.txt\n+hi \"there\" \u{e9}\n*** End Patch\n";

/// An OpenAI-compatible upstream (the dialect tests' vLLM): a tool call when tools are offered
/// (`apply_patch` with [`PATCH`] when offered, else `get_weather`), `Tool said: ...` once
/// tool results are in, `I see N images` for images, else a greeting; JSON or SSE. Asked to
/// "think" (the last message), it reasons first (`reasoning_content`, 5 reasoning tokens).
pub fn vllm() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.method == "GET" {
            return json_response(200, json!({"object": "list", "data": []}));
        }
        if r.header("authorization") != Some(&format!("Bearer {VLLM_KEY}")) {
            return json_response(401, json!({"error": {"message": "bad key"}}));
        }
        let body = r.json();
        if r.path == "/tokenize" {
            assert!(
                body["messages"].is_array() && body["model"].is_string(),
                "{body}"
            );
            return json_response(
                200,
                json!({"count": 33, "max_model_len": 32768, "tokens": []}),
            );
        }
        let model = body["model"].as_str().unwrap_or("").to_string();
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let results: Vec<String> = messages
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect();
        let images = messages
            .last()
            .and_then(|m| m["content"].as_array())
            .map_or(0, |parts| {
                parts.iter().filter(|p| p["type"] == "image_url").count()
            });
        let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
        let patch = body["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "apply_patch"));
        let asked_to_think = messages
            .last()
            .and_then(|m| m["content"].as_str())
            .is_some_and(|t| t.contains("think"));
        let (text, call): (String, bool) = if !results.is_empty() {
            (format!("Tool said: {}", results.join(", ")), false)
        } else if tools {
            (String::new(), true)
        } else if images > 0 {
            (format!("I see {images} images"), false)
        } else {
            ("Hello from vLLM".to_string(), false)
        };
        let (tool, args) = if patch {
            ("apply_patch", json!({"input": PATCH}).to_string())
        } else {
            (
                "get_weather",
                "{\"location\":\"Paris\",\"unit\":\"celsius\"}".to_string(),
            )
        };
        let mut usage = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18});
        if asked_to_think {
            usage["completion_tokens_details"] = json!({"reasoning_tokens": 5});
        }
        if body["stream"] != true {
            let mut message = json!({"role": "assistant", "content": if call { Value::Null } else { json!(text) }});
            if call {
                message["tool_calls"] = json!([{"id": CALL_ID, "type": "function", "function": {"name": tool, "arguments": args}}]);
            }
            if asked_to_think {
                message["reasoning_content"] = json!("Thinking hard.");
            }
            return json_response(
                200,
                json!({
                    "id": "chatcmpl-v1", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": if call { "tool_calls" } else { "stop" }}],
                    "usage": usage,
                }),
            );
        }
        let chunk = |delta: Value, finish: Value| {
            let v = json!({"id": "chatcmpl-v1", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        if asked_to_think {
            for part in ["Thinking ", "hard."] {
                events.push(chunk(json!({"reasoning_content": part}), Value::Null));
            }
        }
        if call {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": CALL_ID, "type": "function", "function": {"name": tool, "arguments": ""}}]}),
                Value::Null,
            ));
            // The patch in three pieces, one ending inside an escape (`\n` split).
            let mut parts = vec![&args[..9], &args[9..]];
            if patch {
                let at = args.find("\\n").map_or(9, |i| i + 1);
                parts = vec![&args[..9], &args[9..at], &args[at..]];
            }
            for part in parts {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        } else {
            for w in text.split_inclusive(' ') {
                events.push(chunk(json!({"content": w}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
        if body["stream_options"]["include_usage"] == true {
            let v = json!({"id": "chatcmpl-v1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
            events.push(format!("data: {v}\n\n"));
        }
        if text.contains("cut") {
            let n = events.len();
            return sse_response(events, Duration::from_millis(20), Some(n));
        }
        events.push("data: [DONE]\n\n".to_string());
        sse_response(events, Duration::ZERO, None)
    })
}

/// A gateway with keys (`gateway_key`) in front of the Anthropic mock and [`vllm`].
pub fn start(claude: &Mock, vllm: &Mock, gateway_key: &str) -> Gateway {
    start_with(claude, vllm, gateway_key, &[])
}

pub fn start_with(claude: &Mock, vllm: &Mock, gateway_key: &str, more: &[(&str, &str)]) -> Gateway {
    let (claude_url, vllm_url) = (claude.url(), format!("{}/v1", vllm.url()));
    let mut vars: Vec<(&str, &str)> = vec![
        ("ANTHROPIC_BASE_URL", &claude_url),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("VLLM_BASE_URL", &vllm_url),
        ("VLLM_API_KEY", VLLM_KEY),
        ("GATEWAY_API_KEYS", gateway_key),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
    ];
    vars.extend_from_slice(more);
    Gateway::start(&vars)
}
