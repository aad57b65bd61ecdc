//! A mock OpenAI Responses upstream (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`):
//! a real HTTP server on loopback (through `common::Mock`) speaking OpenAI's wire format, JSON
//! and SSE, with OpenAI's own state: responses made with `store` not false are kept, and
//! `previous_response_id` continues them (an unknown one is OpenAI's 400). Its fidelity is
//! checked by pointing the `openai` SDK at it directly (`tests/responses_native.rs`).
//!
//! What it answers is driven by the conversation (the stored turns included): tool results ->
//! "Tool said: ..."; tools offered -> a function call; "my name is X" earlier and "name" now ->
//! "Your name is X"; a user text containing "cut" -> a stream cut before `response.completed`;
//! else "Hello from OpenAI Responses". Every answer's exact bytes are kept (`Responses::last`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Value};

use crate::common::*;

pub const OPENAI_KEY: &str = "sk-openai-mock-secret-3";

/// The mock's state, shared with the test.
#[derive(Default)]
pub struct Responses {
    /// Stored responses by id: (the conversation's input items, earlier turns included; the
    /// response object).
    stored: Mutex<HashMap<String, (Vec<Value>, Value)>>,
    next: Mutex<u64>,
    /// The last answer's body, exactly as sent.
    last: Mutex<String>,
}

impl Responses {
    pub fn last(&self) -> String {
        self.last.lock().unwrap().clone()
    }

    pub fn stored(&self, id: &str) -> bool {
        self.stored.lock().unwrap().contains_key(id)
    }
}

fn error(status: u16, message: &str, param: Value, code: Value) -> Response {
    json_response(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
    )
}

/// The fields OpenAI's `POST /v1/responses` accepts (anything else is its 400).
const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "max_tool_calls",
    "temperature",
    "top_p",
    "text",
    "reasoning",
    "stream",
    "stream_options",
    "store",
    "previous_response_id",
    "conversation",
    "metadata",
    "user",
    "safety_identifier",
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "truncation",
    "service_tier",
    "background",
    "top_logprobs",
    "client_metadata",
];

pub fn openai_responses(state: Arc<Responses>) -> Handler {
    Arc::new(move |r: &Recorded| answer(&state, r))
}

fn text_of(item: &Value) -> String {
    match &item["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn answer(state: &Responses, r: &Recorded) -> Response {
    if r.header("authorization") != Some(&format!("Bearer {OPENAI_KEY}")) {
        return json_response(
            401,
            json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        );
    }
    if r.method == "GET" && r.path == "/v1/models" {
        return json_response(200, json!({"object": "list", "data": []}));
    }
    if let Some(id) = r.path.strip_prefix("/v1/responses/") {
        let not_found = || {
            error(
                404,
                &format!("Response with id '{id}' not found."),
                Value::Null,
                Value::Null,
            )
        };
        return match r.method.as_str() {
            "GET" => match state.stored.lock().unwrap().get(id) {
                Some((_, resp)) => json_response(200, resp.clone()),
                None => not_found(),
            },
            "DELETE" => match state.stored.lock().unwrap().remove(id) {
                Some(_) => json_response(
                    200,
                    json!({"id": id, "object": "response", "deleted": true}),
                ),
                None => not_found(),
            },
            _ => not_found(),
        };
    }
    if r.path != "/v1/responses" || r.method != "POST" {
        return error(404, "Invalid URL", Value::Null, Value::Null);
    }
    let body = r.json();
    let Some(o) = body.as_object() else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            Value::Null,
            Value::Null,
        );
    };
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str()) {
            return error(
                400,
                &format!("Unknown parameter: '{k}'."),
                json!(k),
                json!("unknown_parameter"),
            );
        }
    }
    let Some(model) = o.get("model").and_then(Value::as_str) else {
        return error(
            400,
            "Missing required parameter: 'model'.",
            json!("model"),
            json!("missing_required_parameter"),
        );
    };
    if model == "missing-model" {
        return error(
            404,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            Value::Null,
            json!("model_not_found"),
        );
    }
    let mut items: Vec<Value> = match o.get("input") {
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
        Some(Value::Array(a)) => a.clone(),
        _ => {
            return error(
                400,
                "Missing required parameter: 'input'.",
                json!("input"),
                json!("missing_required_parameter"),
            )
        }
    };
    let previous = o.get("previous_response_id").and_then(Value::as_str);
    if let Some(pid) = previous {
        let stored = state.stored.lock().unwrap();
        let Some((earlier, resp)) = stored.get(pid) else {
            return error(
                400,
                &format!("Previous response with id '{pid}' not found."),
                json!("previous_response_id"),
                json!("previous_response_not_found"),
            );
        };
        let mut all = earlier.clone();
        all.extend(resp["output"].as_array().cloned().unwrap_or_default());
        all.extend(items);
        items = all;
    }
    // What the model says, from the whole conversation.
    let results: Vec<String> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .map(|i| i["output"].as_str().unwrap_or("").to_string())
        .collect();
    let last_user = items
        .iter()
        .rev()
        .find(|i| i["role"] == "user")
        .map(text_of)
        .unwrap_or_default();
    let name = items.iter().filter(|i| i["role"] == "user").find_map(|i| {
        let t = text_of(i);
        let at = t.find("My name is ")?;
        Some(t[at + 11..].trim_end_matches('.').to_string())
    });
    let tools = o
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Codex's shell tool when it is offered, else the first function tool.
    let function = tools
        .iter()
        .find(|t| t["name"] == "exec_command")
        .or_else(|| tools.iter().find(|t| t["type"] == "function"))
        .and_then(|t| t["name"].as_str())
        .map(str::to_string);
    let id = {
        let mut n = state.next.lock().unwrap();
        *n += 1;
        format!("resp_mock{:04}", *n)
    };
    let (text, call): (String, Option<(String, String)>) = if !results.is_empty() {
        (format!("Tool said: {}", results.join(", ")), None)
    } else if let Some(f) = &function {
        let args = if f == "exec_command" {
            json!({"cmd": last_user.split('`').nth(1).unwrap_or("echo hi")}).to_string()
        } else {
            json!({"location": "Paris", "unit": "celsius"}).to_string()
        };
        (String::new(), Some((f.clone(), args)))
    } else if let (Some(n), true) = (&name, last_user.contains("name?")) {
        (format!("Your name is {n}."), None)
    } else {
        ("Hello from OpenAI Responses".to_string(), None)
    };
    let msg_id = format!("msg_{}", &id[5..]);
    let output: Vec<Value> = match &call {
        Some((name, args)) => vec![json!({
            "type": "function_call", "id": format!("fc_{}", &id[5..]), "call_id": format!("call_{}", &id[5..]),
            "name": name, "arguments": args, "status": "completed"
        })],
        None => vec![json!({
            "type": "message", "id": msg_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        })],
    };
    let store = o.get("store") != Some(&json!(false));
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        json!({
            "id": id, "object": "response", "created_at": 1733300000, "status": status,
            "background": false, "error": null, "incomplete_details": null,
            "instructions": o.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": o.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": format!("{model}-2024-07-18"), "output": output,
            "parallel_tool_calls": o.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
            "previous_response_id": previous, "reasoning": {"effort": null, "summary": null},
            "store": store, "temperature": o.get("temperature").cloned().unwrap_or(json!(1.0)),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": o.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "tools": tools, "top_p": 1.0, "truncation": "disabled", "usage": usage,
            "user": null, "metadata": {}
        })
    };
    let usage = json!({
        "input_tokens": 20, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 26
    });
    let done = response("completed", output.clone(), usage);
    if store {
        state
            .stored
            .lock()
            .unwrap()
            .insert(id.clone(), (items, done.clone()));
    }
    if o.get("stream") != Some(&json!(true)) {
        let text = done.to_string();
        *state.last.lock().unwrap() = text.clone();
        let mut resp = Response::new(axum::body::Body::from(text));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return resp;
    }
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut ev = |mut data: Value| {
        data["sequence_number"] = json!(seq);
        seq += 1;
        events.push(format!(
            "event: {}\ndata: {}\n\n",
            data["type"].as_str().unwrap_or(""),
            data
        ));
    };
    let start = response("in_progress", vec![], Value::Null);
    ev(json!({"type": "response.created", "response": start}));
    ev(json!({"type": "response.in_progress", "response": start}));
    match &call {
        Some((name, args)) => {
            let item = &output[0];
            let mut added = item.clone();
            added["arguments"] = json!("");
            added["status"] = json!("in_progress");
            ev(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
            let (a, b) = args.split_at(args.len() / 2);
            for d in [a, b] {
                ev(
                    json!({"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": 0, "delta": d}),
                );
            }
            ev(
                json!({"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": 0, "name": name, "arguments": args}),
            );
            ev(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
        }
        None => {
            ev(
                json!({"type": "response.output_item.added", "output_index": 0, "item": {
                "type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}}),
            );
            ev(
                json!({"type": "response.content_part.added", "item_id": msg_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            for w in text.split_inclusive(' ') {
                ev(
                    json!({"type": "response.output_text.delta", "item_id": msg_id, "output_index": 0, "content_index": 0, "delta": w, "logprobs": []}),
                );
            }
            ev(
                json!({"type": "response.output_text.done", "item_id": msg_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            );
            ev(
                json!({"type": "response.content_part.done", "item_id": msg_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
            );
            ev(json!({"type": "response.output_item.done", "output_index": 0, "item": output[0]}));
        }
    }
    let cut = last_user.contains("cut");
    if !cut {
        ev(json!({"type": "response.completed", "response": done}));
    }
    *state.last.lock().unwrap() = events.concat();
    if cut {
        let n = events.len();
        return sse_response(events, Duration::from_millis(10), Some(n));
    }
    sse_response(events, Duration::ZERO, None)
}
