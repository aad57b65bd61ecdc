//! Issue 20: reasoning models behind the OpenAI chat API. Mock Anthropic and Gemini upstreams
//! (real HTTP servers on loopback, in each provider's wire format) that enforce the rules the
//! real APIs apply to reasoning:
//!
//! - Anthropic, with thinking on: a request ending with tool results must repeat, at the start
//!   of that tool loop's first assistant message, the thinking blocks the model wrote there,
//!   unmodified (text and signature; redacted blocks' data); a thinking block with a signature
//!   it did not issue is refused anywhere; `temperature` other than 1, `top_k`, `top_p` below
//!   0.95 and a forced `tool_choice` are refused; `budget_tokens` must be at least 1024 and below
//!   `max_tokens`; tool ids must match `^[a-zA-Z0-9_-]+$`.
//! - Gemini 3: in the current turn (since the last user text), the first function call of each
//!   model step must carry the `thoughtSignature` it was given (or Google's documented
//!   `skip_thought_signature_validator`); `thinkingLevel` must be one the model has, and not
//!   beside `thinkingBudget`.
//!
//! Through them: a three-turn tool conversation with the real `openai` Python SDK, plain and
//! streamed, on both (tests/python/test_reasoning.py); what a client that drops the reasoning
//! gets; history moved between providers by the client and by failover.

mod common;
mod mocks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use common::*;
use mocks::{ANTHROPIC_KEY, GEMINI_KEY};

/// The model a request is for, for the mocks' answers and rules.
const CLAUDE: &str = "claude-sonnet-4-5";
const GEMINI3: &str = "gemini-3-pro-preview";
/// Data of the redacted thinking block the Anthropic mock writes in a loop's first answer.
const REDACTED: &str = "RU5DUllQVEVEIHJlZGFjdGVkIHRoaW5raW5n+/=";
const SKIP: &str = "skip_thought_signature_validator";

fn sign(kind: &str, text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}:{text}"))
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

// =============================================================================================
// Anthropic

#[derive(Default)]
struct AnthropicState {
    /// The blocks written before each tool_use id, as written.
    issued: Mutex<HashMap<String, Vec<Value>>>,
    next: AtomicUsize,
    /// Loops whose first assistant message came back with its thinking, verified.
    verified: AtomicUsize,
    /// Requests served with thinking on.
    thinking: AtomicUsize,
    down: AtomicBool,
}

fn a_error(status: u16, message: &str) -> Response {
    let kind = if status == 529 {
        "overloaded_error"
    } else {
        "invalid_request_error"
    };
    json_response(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}),
    )
}

fn anthropic_reasoning(state: Arc<AnthropicState>) -> Handler {
    Arc::new(move |r: &Recorded| {
        if r.header("x-api-key") != Some(ANTHROPIC_KEY) {
            return a_error(401, "invalid x-api-key");
        }
        if r.method != "POST" || r.path != "/v1/messages" {
            return a_error(404, "not found");
        }
        if state.down.load(Ordering::SeqCst) {
            return a_error(529, "Overloaded");
        }
        match anthropic_check(&state, &r.json()) {
            Ok(answer) => answer,
            Err(m) => a_error(400, &m),
        }
    })
}

fn id_fits(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn anthropic_check(state: &AnthropicState, body: &Value) -> Result<Response, String> {
    let max_tokens = body["max_tokens"]
        .as_u64()
        .ok_or("max_tokens: Field required")?;
    let thinking = match body.get("thinking") {
        None => false,
        Some(t) => match t["type"].as_str() {
            Some("enabled") => {
                let budget = t["budget_tokens"].as_u64().unwrap_or(0);
                if budget < 1024 {
                    return Err("thinking.budget_tokens: must be at least 1024".into());
                }
                if budget >= max_tokens {
                    return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
                }
                true
            }
            Some("adaptive") => {
                let effort = body["output_config"]["effort"].as_str().unwrap_or("");
                if !["low", "medium", "high", "max"].contains(&effort) {
                    return Err(format!("output_config.effort: invalid value {effort:?}"));
                }
                true
            }
            Some("disabled") => false,
            other => return Err(format!("thinking.type: invalid {other:?}")),
        },
    };
    if thinking {
        if body
            .get("temperature")
            .is_some_and(|t| t.as_f64() != Some(1.0))
        {
            return Err("`temperature` may only be set to 1 when thinking is enabled".into());
        }
        if body.get("top_k").is_some() {
            return Err("`top_k` cannot be set when thinking is enabled".into());
        }
        if body
            .get("top_p")
            .is_some_and(|p| p.as_f64().unwrap_or(0.0) < 0.95)
        {
            return Err("`top_p` must be between 0.95 and 1 when thinking is enabled".into());
        }
        if matches!(body["tool_choice"]["type"].as_str(), Some("any" | "tool")) {
            return Err("Thinking may not be enabled when tool_choice forces tool use.".into());
        }
        state.thinking.fetch_add(1, Ordering::SeqCst);
    }
    let messages = body["messages"].as_array().ok_or("messages required")?;
    let is_result = |b: &Value| b["type"] == "tool_result";
    let mut prev_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let blocks = m["content"].as_array().ok_or("content must be a list")?;
        let mut uses = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            match b["type"].as_str() {
                Some("thinking") => {
                    if m["role"] != "assistant" {
                        return Err(format!("messages.{i}.content.{j}: thinking in a user turn"));
                    }
                    let text = b["thinking"].as_str().unwrap_or("");
                    if b["signature"].as_str() != Some(&sign("claude", text)) {
                        return Err(format!(
                            "messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                        ));
                    }
                }
                Some("redacted_thinking") => {
                    if b["data"] != REDACTED {
                        return Err(format!(
                            "messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
                        ));
                    }
                }
                Some("tool_use") => {
                    let id = b["id"].as_str().unwrap_or("");
                    if !id_fits(id) {
                        return Err(format!(
                            "messages.{i}.content.{j}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                        ));
                    }
                    uses.push(id.to_string());
                }
                Some("tool_result") => {
                    let id = b["tool_use_id"].as_str().unwrap_or("");
                    if !id_fits(id) || !prev_tool_uses.iter().any(|u| u == id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}"
                        ));
                    }
                }
                Some("text") => {}
                other => return Err(format!("messages.{i}.content.{j}: unknown type {other:?}")),
            }
        }
        prev_tool_uses = uses;
    }
    // The tool loop the request continues: after the last user turn with more than results.
    let loop_start = messages
        .iter()
        .rposition(|m| {
            m["role"] == "user"
                && !m["content"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(is_result))
        })
        .map_or(0, |i| i + 1);
    let in_loop = &messages[loop_start..];
    let results = in_loop.iter().filter(|m| m["role"] == "user").count();
    if thinking && results > 0 {
        let first = in_loop
            .iter()
            .find(|m| m["role"] == "assistant")
            .ok_or("a tool result without a tool use")?;
        let blocks = first["content"].as_array().cloned().unwrap_or_default();
        if !matches!(
            blocks.first().and_then(|b| b["type"].as_str()),
            Some("thinking" | "redacted_thinking")
        ) {
            let found = blocks
                .first()
                .and_then(|b| b["type"].as_str())
                .unwrap_or("nothing");
            return Err(format!(
                "messages.{loop_start}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). To avoid this requirement, disable `thinking`."
            ));
        }
        // Exactly the blocks this mock wrote before the first tool use.
        let first_use = blocks
            .iter()
            .position(|b| b["type"] == "tool_use")
            .ok_or("no tool_use")?;
        let id = blocks[first_use]["id"].as_str().unwrap_or("");
        let sent: Vec<Value> = blocks[..first_use]
            .iter()
            .filter(|b| b["type"] != "text")
            .cloned()
            .collect();
        let issued = state.issued.lock().unwrap().get(id).cloned();
        if issued.as_ref() != Some(&sent) {
            return Err(format!(
                "the thinking blocks of the loop's first assistant message were modified: sent {sent:?}, written {issued:?}"
            ));
        }
        state.verified.fetch_add(1, Ordering::SeqCst);
    }
    let stream = body["stream"] == true;
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    let mut blocks = Vec::new();
    if thinking {
        let text = match results {
            0 => format!("The user wants Paris weather; call get_weather first ({n})."),
            1 => format!("Now the local time in Paris ({n})."),
            _ => format!("Both results are in; answer ({n})."),
        };
        blocks.push(
            json!({"type": "thinking", "thinking": text, "signature": sign("claude", &text)}),
        );
        if results == 0 {
            blocks.push(json!({"type": "redacted_thinking", "data": REDACTED}));
        }
    }
    let thought: Vec<Value> = blocks.clone();
    let stop = match results {
        0 | 1 => {
            let id = format!("toolu_{n:02}");
            let (name, input) = if results == 0 {
                ("get_weather", json!({"location": "Paris"}))
            } else {
                ("get_time", json!({"city": "Paris"}))
            };
            blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            state.issued.lock().unwrap().insert(id, thought);
            "tool_use"
        }
        _ => {
            let said: Vec<String> = in_loop
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .filter(|b| b["type"] == "tool_result")
                .map(|b| b["content"].as_str().unwrap_or("").to_string())
                .collect();
            blocks.push(json!({"type": "text", "text": format!("Paris: {}", said.join(", "))}));
            "end_turn"
        }
    };
    if !stream {
        return Ok(json_response(
            200,
            json!({"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": body["model"],
                   "content": blocks, "stop_reason": stop, "stop_sequence": null,
                   "usage": {"input_tokens": 50, "output_tokens": 30}}),
        ));
    }
    let mut ev = vec![sse(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": body["model"], "content": [], "stop_reason": null, "usage": {"input_tokens": 50, "output_tokens": 1}}}),
    )];
    for (i, b) in blocks.iter().enumerate() {
        let start = |cb: Value| {
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": cb}),
            )
        };
        let delta = |d: Value| {
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": d}),
            )
        };
        match b["type"].as_str() {
            Some("thinking") => {
                ev.push(start(json!({"type": "thinking", "thinking": ""})));
                let text = b["thinking"].as_str().unwrap_or("");
                for w in text.split_inclusive(' ') {
                    ev.push(delta(json!({"type": "thinking_delta", "thinking": w})));
                }
                ev.push(delta(
                    json!({"type": "signature_delta", "signature": b["signature"]}),
                ));
            }
            Some("redacted_thinking") => ev.push(start(b.clone())),
            Some("tool_use") => {
                ev.push(start(
                    json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                ));
                let args = b["input"].to_string();
                let (a, z) = args.split_at(args.len() / 2);
                for part in [a, z] {
                    ev.push(delta(
                        json!({"type": "input_json_delta", "partial_json": part}),
                    ));
                }
            }
            _ => {
                ev.push(start(json!({"type": "text", "text": ""})));
                for w in b["text"].as_str().unwrap_or("").split_inclusive(' ') {
                    ev.push(delta(json!({"type": "text_delta", "text": w})));
                }
            }
        }
        ev.push(sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    ev.push(sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 30}}),
    ));
    ev.push(sse("message_stop", json!({"type": "message_stop"})));
    Ok(sse_response(ev, Duration::ZERO, None))
}

// =============================================================================================
// Gemini

#[derive(Default)]
struct GeminiState {
    /// Requests whose current turn had signed calls, every signature verified.
    verified: AtomicUsize,
    /// Calls that came back with the documented placeholder.
    placeholders: AtomicUsize,
    next: AtomicUsize,
    down: AtomicBool,
}

fn g_error(status: u16, message: &str) -> Response {
    let s = if status == 400 {
        "INVALID_ARGUMENT"
    } else {
        "UNAVAILABLE"
    };
    json_response(
        status,
        json!({"error": {"code": status, "message": message, "status": s}}),
    )
}

fn gemini_reasoning(state: Arc<GeminiState>) -> Handler {
    Arc::new(move |r: &Recorded| {
        if r.header("x-goog-api-key") != Some(GEMINI_KEY) {
            return g_error(403, "API key not valid");
        }
        let Some(rest) = r.path.strip_prefix("/v1beta/models/") else {
            return g_error(404, "not found");
        };
        let (model, stream) = match rest.split_once(':') {
            Some((m, "generateContent")) => (m.to_string(), false),
            Some((m, "streamGenerateContent")) if r.query.as_deref() == Some("alt=sse") => {
                (m.to_string(), true)
            }
            _ => return g_error(404, "not found"),
        };
        if state.down.load(Ordering::SeqCst) {
            return g_error(503, "The model is overloaded.");
        }
        match gemini_check(&state, &model, stream, &r.json()) {
            Ok(answer) => answer,
            Err(m) => g_error(400, &m),
        }
    })
}

fn gemini_check(
    state: &GeminiState,
    model: &str,
    stream: bool,
    body: &Value,
) -> Result<Response, String> {
    let three = model.starts_with("gemini-3");
    let tc = &body["generationConfig"]["thinkingConfig"];
    if tc.get("thinkingLevel").is_some() && tc.get("thinkingBudget").is_some() {
        return Err("thinking_budget and thinking_level are not supported together".into());
    }
    if let Some(level) = tc.get("thinkingLevel") {
        let levels: &[&str] = if !three {
            &[]
        } else if model.contains("pro") {
            &["low", "high"]
        } else {
            &["minimal", "low", "medium", "high"]
        };
        if !levels.iter().any(|l| level == l) {
            return Err(format!(
                "thinking_level {level} is not supported by {model}"
            ));
        }
    }
    let include_thoughts = tc["includeThoughts"] == true;
    let contents = body["contents"].as_array().ok_or("contents required")?;
    for (i, c) in contents.iter().enumerate() {
        for (j, p) in c["parts"].as_array().into_iter().flatten().enumerate() {
            for k in p.as_object().into_iter().flatten().map(|(k, _)| k) {
                if ![
                    "text",
                    "thought",
                    "thoughtSignature",
                    "functionCall",
                    "functionResponse",
                ]
                .contains(&k.as_str())
                {
                    return Err(format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'contents[{i}].parts[{j}]'"
                    ));
                }
            }
        }
    }
    // The current turn: after the last user content with text.
    let turn_start = contents
        .iter()
        .rposition(|c| {
            c["role"] == "user"
                && c["parts"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p.get("text").is_some()))
        })
        .map_or(0, |i| i + 1);
    let turn = &contents[turn_start..];
    let mut signed = 0;
    if three {
        for (k, c) in turn.iter().enumerate() {
            if c["role"] != "model" {
                continue;
            }
            let parts = c["parts"].as_array().cloned().unwrap_or_default();
            let Some(call) = parts.iter().find(|p| p.get("functionCall").is_some()) else {
                continue;
            };
            let name = call["functionCall"]["name"].as_str().unwrap_or("");
            match call["thoughtSignature"].as_str() {
                None => {
                    return Err(format!(
                        "Function call `{name}` in the {}. content block is missing a `thought_signature`. Learn more: https://ai.google.dev/gemini-api/docs/thought-signatures",
                        turn_start + k + 1
                    ))
                }
                Some(SKIP) => {
                    state.placeholders.fetch_add(1, Ordering::SeqCst);
                }
                Some(s) if s == sign("gemini", name) => signed += 1,
                Some(_) => return Err("Corrupted thought signature.".into()),
            }
        }
    }
    if signed > 0 {
        state.verified.fetch_add(1, Ordering::SeqCst);
    }
    let results = turn
        .iter()
        .filter(|c| {
            c["parts"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()))
        })
        .count();
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    let thought =
        json!({"text": format!("Considering step {} ({n}).", results + 1), "thought": true});
    let answer = match results {
        0 | 1 => {
            let (name, args) = if results == 0 {
                ("get_weather", json!({"location": "Paris"}))
            } else {
                ("get_time", json!({"city": "Paris"}))
            };
            let mut part = json!({"functionCall": {"name": name, "args": args}});
            if three {
                part["thoughtSignature"] = json!(sign("gemini", name));
            }
            part
        }
        _ => {
            let said: Vec<String> = turn
                .iter()
                .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| {
                    p["functionResponse"]["response"]["output"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            json!({"text": format!("Paris: {}", said.join(", "))})
        }
    };
    let usage = json!({"promptTokenCount": 40, "candidatesTokenCount": 20, "thoughtsTokenCount": 64, "totalTokenCount": 124});
    let mut parts = Vec::new();
    if include_thoughts {
        parts.push(thought);
    }
    parts.push(answer);
    if !stream {
        return Ok(json_response(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": usage, "modelVersion": model, "responseId": format!("resp{n}")}),
        ));
    }
    let last = parts.len() - 1;
    let events = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut ev = json!({"candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}],
                                "modelVersion": model, "responseId": format!("resp{n}")});
            if i == last {
                ev["candidates"][0]["finishReason"] = json!("STOP");
                ev["usageMetadata"] = usage.clone();
            }
            format!("data: {ev}\r\n\r\n")
        })
        .collect();
    Ok(sse_response(events, Duration::ZERO, None))
}

// =============================================================================================
// Tests

struct Setup {
    claude: Mock,
    google: Mock,
    a: Arc<AnthropicState>,
    g: Arc<GeminiState>,
    gw: Gateway,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let a = Arc::new(AnthropicState::default());
    let g = Arc::new(GeminiState::default());
    let claude = Mock::start(anthropic_reasoning(a.clone())).await;
    let google = Mock::start(gemini_reasoning(g.clone())).await;
    let (curl, gurl) = (claude.url(), google.url());
    let mut vars = vec![
        ("ANTHROPIC_BASE_URL", curl.as_str()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GEMINI_BASE_URL", gurl.as_str()),
        ("GEMINI_API_KEY", GEMINI_KEY),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
    ];
    vars.extend_from_slice(extra);
    let gw = Gateway::start(&vars);
    Setup {
        claude,
        google,
        a,
        g,
        gw,
    }
}

const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}},
 {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;

async fn chat(gw: &Gateway, body: &Value) -> (u16, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn request(model: &str, messages: &Value) -> Value {
    json!({"model": model, "messages": messages, "tools": serde_json::from_str::<Value>(TOOLS).unwrap(), "reasoning_effort": "high"})
}

/// One turn of the tool loop: the assistant message as answered, and the tool result for it.
fn continue_with(messages: &mut Value, answer: &Value, result: &str) {
    let m = &answer["choices"][0]["message"];
    let id = m["tool_calls"][0]["id"].clone();
    let list = messages.as_array_mut().unwrap();
    list.push(m.clone());
    list.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_sdk_runs_a_three_turn_tool_conversation_with_reasoning() {
    let s = setup(&[]).await;
    let stdout = run_python(&s.gw, &["test_reasoning.py"], &[]).await;
    assert!(stdout.contains("reasoning: 4 passed, 0 failed"), "{stdout}");
    // Three calls per conversation, plain and streamed, each answered (an upstream 400 would
    // have failed the SDK's call).
    assert_eq!((s.claude.calls(), s.google.calls()), (6, 6));
    // Turns 2 and 3 of each conversation continued the tool loop with the thinking blocks
    // (Anthropic) and signed calls (Gemini 3) the model wrote, restored by the gateway.
    assert_eq!(s.a.verified.load(Ordering::SeqCst), 4);
    assert_eq!(s.a.thinking.load(Ordering::SeqCst), 6);
    assert_eq!(s.g.verified.load(Ordering::SeqCst), 4);
    assert_eq!(s.g.placeholders.load(Ordering::SeqCst), 0);
    // What reached Anthropic: thinking blocks first in the loop's assistant turn, ids without
    // the gateway's suffix.
    let last = s.claude.last().json();
    let first_assistant = &last["messages"][1]["content"];
    assert_eq!(first_assistant[0]["type"], "thinking");
    assert_eq!(first_assistant[1]["type"], "redacted_thinking");
    assert_eq!(first_assistant[2]["type"], "tool_use");
    assert!(!last.to_string().contains("__thought__"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mocks_enforce_the_rules() {
    let s = setup(&[]).await;
    // Straight to the Anthropic mock: a tool loop with thinking on whose assistant turn has no
    // thinking block is refused.
    let body = json!({"model": CLAUDE, "max_tokens": 20000, "thinking": {"type": "enabled", "budget_tokens": 16384},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "18C"}]}
    ]});
    let r = client()
        .post(format!("{}/v1/messages", s.claude.url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("must start with a thinking block"));
    // Straight to the Gemini mock: a Gemini 3 function call without its signature is refused.
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}}]}
    ]});
    let r = client()
        .post(format!(
            "{}/v1beta/models/{GEMINI3}:generateContent",
            s.google.url()
        ))
        .header("x-goog-api-key", GEMINI_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("missing a `thought_signature`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_drops_the_reasoning_still_gets_answers() {
    let s = setup(&[]).await;
    let ask = json!([{"role": "user", "content": "weather in Paris?"}]);

    // Anthropic: without `reasoning_content` the thinking block cannot be rebuilt, so the loop
    // goes on without thinking (instead of an upstream 400).
    let claude = format!("anthropic/{CLAUDE}");
    let (status, first) = chat(&s.gw, &request(&claude, &ask)).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .is_some_and(|r| r.contains("get_weather")));
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    messages[1]
        .as_object_mut()
        .unwrap()
        .remove("reasoning_content");
    let (status, second) = chat(&s.gw, &request(&claude, &messages)).await;
    assert_eq!(status, 200, "{second}");
    let sent = s.claude.last().json();
    assert!(sent.get("thinking").is_none(), "{sent}");
    assert!(!sent.to_string().contains("\"thinking\""));
    assert_eq!(s.a.verified.load(Ordering::SeqCst), 0);

    // With it (and the id as answered), the same turn keeps thinking on.
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    let (status, _) = chat(&s.gw, &request(&claude, &messages)).await;
    assert_eq!(status, 200);
    assert!(s.claude.last().json().get("thinking").is_some());
    assert_eq!(s.a.verified.load(Ordering::SeqCst), 1);

    // Gemini 3: the signature is in the id, which every client sends back.
    let gemini = format!("google/{GEMINI3}");
    let (status, first) = chat(&s.gw, &request(&gemini, &ask)).await;
    assert_eq!(status, 200, "{first}");
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    messages[1]
        .as_object_mut()
        .unwrap()
        .remove("reasoning_content");
    let (status, second) = chat(&s.gw, &request(&gemini, &messages)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(s.g.verified.load(Ordering::SeqCst), 1);
    let sent = s.google.last().json();
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        sign("gemini", "get_weather")
    );
    assert_eq!(
        sent["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "high", "includeThoughts": true})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_moved_to_another_provider_is_made_valid_for_it() {
    let s = setup(&[]).await;
    let ask = json!([{"role": "user", "content": "weather in Paris?"}]);
    let claude = format!("anthropic/{CLAUDE}");
    let gemini = format!("google/{GEMINI3}");

    // Gemini 3 started the loop; Anthropic continues it: Gemini's signature is not sent, ids
    // fit Anthropic's pattern, thinking is off for the turn.
    let (_, first) = chat(&s.gw, &request(&gemini, &ask)).await;
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    assert!(messages[1]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .contains("__thought__"));
    let (status, second) = chat(&s.gw, &request(&claude, &messages)).await;
    assert_eq!(status, 200, "{second}");
    let sent = s.claude.last().json();
    assert!(sent.get("thinking").is_none(), "{sent}");
    let id = sent["messages"][1]["content"][0]["id"].as_str().unwrap();
    assert!(
        id_fits(id) && id.starts_with("call_") && !id.contains("thought"),
        "{id}"
    );
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], id);
    assert!(!sent.to_string().contains(&sign("gemini", "get_weather")));

    // Anthropic started it; Gemini 3 continues: its call gets Google's placeholder signature.
    let (_, first) = chat(&s.gw, &request(&claude, &ask)).await;
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    let (status, second) = chat(&s.gw, &request(&gemini, &messages)).await;
    assert_eq!(status, 200, "{second}");
    let sent = s.google.last().json();
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], SKIP);
    assert!(!sent.to_string().contains("signature\":\"Y2xh")); // no Anthropic signature
    assert_eq!(s.g.placeholders.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_failover_signatures_are_dropped_and_history_made_valid() {
    let s = setup(&[
        (
            "GATEWAY_FALLBACK_MODELS",
            "google/gemini-3-pro-preview=anthropic/claude-sonnet-4-5;anthropic/claude-sonnet-4-5=google/gemini-3-pro-preview",
        ),
        // Each provider fails once; its breaker must not keep it out of the next test step.
        ("GATEWAY_UNHEALTHY_COOLDOWN", "1ms"),
    ])
    .await;
    let ask = json!([{"role": "user", "content": "weather in Paris?"}]);
    let gemini = format!("google/{GEMINI3}");
    let claude = format!("anthropic/{CLAUDE}");

    // Turn 1 on Gemini; Gemini goes down; turn 2 fails over to Anthropic.
    let (_, first) = chat(&s.gw, &request(&gemini, &ask)).await;
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    s.g.down.store(true, Ordering::SeqCst);
    let (status, second) = chat(&s.gw, &request(&gemini, &messages)).await;
    assert_eq!(status, 200, "{second}");
    let sent = s.claude.last().json();
    assert!(sent.get("thinking").is_none(), "{sent}");
    assert!(!sent.to_string().contains("__thought__"));
    s.g.down.store(false, Ordering::SeqCst);

    // Turn 1 on Anthropic; Anthropic goes down; turn 2 fails over to Gemini 3.
    let (_, first) = chat(&s.gw, &request(&claude, &ask)).await;
    let mut messages = ask.clone();
    continue_with(&mut messages, &first, "18C");
    s.a.down.store(true, Ordering::SeqCst);
    let (status, second) = chat(&s.gw, &request(&claude, &messages)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        s.google.last().json()["contents"][1]["parts"][0]["thoughtSignature"],
        SKIP
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_anthropic_refuses_with_thinking_are_dropped() {
    let s = setup(&[]).await;
    let claude = format!("anthropic/{CLAUDE}");
    let mut body = request(&claude, &json!([{"role": "user", "content": "weather?"}]));
    body["temperature"] = json!(0.2);
    body["top_p"] = json!(0.5);
    body["top_k"] = json!(5);
    body["max_tokens"] = json!(1000);
    let (status, answer) = chat(&s.gw, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = s.claude.last().json();
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 16384})
    );
    assert_eq!(sent["max_tokens"], 17384);
    assert!(
        sent.get("temperature").is_none()
            && sent.get("top_p").is_none()
            && sent.get("top_k").is_none()
    );

    // A forced tool: served without thinking (Anthropic refuses the pair).
    let mut body = request(&claude, &json!([{"role": "user", "content": "weather?"}]));
    body["tool_choice"] = json!("required");
    let (status, answer) = chat(&s.gw, &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = s.claude.last().json();
    assert!(sent.get("thinking").is_none());
    assert_eq!(sent["tool_choice"]["type"], "any");
}
