//! A mock Azure OpenAI resource (moved out of `tests/azure.rs` so the conformance battery can
//! use it too): Azure's `api-key` header, deployment paths with their `api-version` or the v1
//! API, prompt filter results in answers and as a stream's first chunk, its error bodies (`401`,
//! `404 DeploymentNotFound`, the `400 content_filter` of a prompt containing "forbidden", `429`
//! with `Retry-After` for the deployment `throttled`).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

pub const KEY: &str = "azure-key-0123456789";
pub const VERSION: &str = "2024-10-21";

/// Azure's filter verdict on clean text.
pub fn clean() -> Value {
    json!({"hate": {"filtered": false, "severity": "safe"}, "self_harm": {"filtered": false, "severity": "safe"},
           "sexual": {"filtered": false, "severity": "safe"}, "violence": {"filtered": false, "severity": "safe"}})
}

pub fn prompt_filter_results() -> Value {
    json!([{"prompt_index": 0, "content_filter_results": clean()}])
}

pub fn azure_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

/// A chat completion as Azure writes it.
pub fn completion(deployment: &str, message: Value, finish: &str, filter: Value) -> Value {
    json!({
        "id": "chatcmpl-az1", "object": "chat.completion", "created": 1727346142,
        "model": format!("{deployment}-2024-08-06"), "system_fingerprint": "fp_az",
        "prompt_filter_results": prompt_filter_results(),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish,
                     "content_filter_results": filter}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    })
}

/// Azure's stream: a first chunk with only the prompt filter results (empty id and model), then
/// OpenAI's chunks with their content filter results, the usage chunk when asked, `[DONE]`.
pub fn stream(deployment: &str, pieces: &[&str], usage: bool) -> Vec<String> {
    stream_ending(deployment, pieces, usage, "stop")
}

pub fn stream_ending(deployment: &str, pieces: &[&str], usage: bool, finish: &str) -> Vec<String> {
    let model = format!("{deployment}-2024-08-06");
    let mut ev = vec![
        json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                             "prompt_filter_results": prompt_filter_results()}),
    ];
    let chunk = |delta: Value, finish: Option<&str>, filter: Value| {
        json!({"id": "chatcmpl-az1", "object": "chat.completion.chunk", "created": 1727346142,
               "model": model, "system_fingerprint": "fp_az",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null,
                            "content_filter_results": filter}]})
    };
    ev.push(chunk(
        json!({"role": "assistant", "content": ""}),
        None,
        json!({}),
    ));
    for p in pieces {
        ev.push(chunk(json!({"content": p}), None, clean()));
    }
    let verdict = if finish == "content_filter" {
        json!({"violence": {"filtered": true, "severity": "medium"}})
    } else {
        json!({})
    };
    ev.push(chunk(json!({}), Some(finish), verdict));
    if usage {
        ev.push(json!({"id": "chatcmpl-az1", "object": "chat.completion.chunk", "created": 1727346142,
                       "model": model, "choices": [],
                       "usage": {"prompt_tokens": 9, "completion_tokens": pieces.len(), "total_tokens": 9 + pieces.len()}}));
    }
    let mut out: Vec<String> = ev.iter().map(|v| format!("data: {v}\n\n")).collect();
    out.push("data: [DONE]\n\n".into());
    out
}

/// The text of the last user message.
pub fn prompt(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].to_string())
        .unwrap_or_default()
}

/// A mock Azure OpenAI resource. `version`: the `api-version` its deployment URLs require
/// (`None`: the v1 API). Known deployments: `gpt-4o`, `text-embedding-3-small`; `throttled`
/// answers 429.
pub fn azure(version: Option<&'static str>) -> Handler {
    Arc::new(move |r: &Recorded| {
        if r.header("api-key") != Some(KEY) || r.header("authorization").is_some() {
            return azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.");
        }
        let query = r.query.clone().unwrap_or_default();
        let body = r.json();
        // (deployment, operation)
        let (deployment, op) = match version {
            Some(v) => {
                if query != format!("api-version={v}") {
                    return azure_error(404, "404", "Resource not found");
                }
                if let Some(rest) = r.path.strip_prefix("/openai/deployments/") {
                    match rest.split_once('/') {
                        Some((d, op)) => (d.to_string(), op.to_string()),
                        None => return azure_error(404, "404", "Resource not found"),
                    }
                } else if let Some(op) = r.path.strip_prefix("/openai/") {
                    (
                        body["model"].as_str().unwrap_or("").to_string(),
                        op.to_string(),
                    )
                } else {
                    return azure_error(404, "404", "Resource not found");
                }
            }
            None => match r.path.strip_prefix("/openai/v1/") {
                Some(op) if query.is_empty() => (
                    body["model"].as_str().unwrap_or("").to_string(),
                    op.to_string(),
                ),
                _ => return azure_error(404, "404", "Resource not found"),
            },
        };
        if r.method == "GET" && op == "models" {
            return json_response(
                200,
                json!({"object": "list", "data": [
                {"id": "gpt-4o", "object": "model", "created": 1, "status": "succeeded"},
                {"id": "text-embedding-3-small", "object": "model", "created": 1, "status": "succeeded"}]}),
            );
        }
        match deployment.as_str() {
            "gpt-4o" | "text-embedding-3-small" => {}
            "throttled" => {
                let mut resp = azure_error(429, "429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds.");
                resp.headers_mut().insert("retry-after", "6".parse().unwrap());
                return resp;
            }
            _ => return azure_error(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."),
        }
        match op.as_str() {
            "embeddings" => json_response(
                200,
                json!({"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
            ),
            "responses" => json_response(
                200,
                json!({"id": "resp_az1", "object": "response", "created_at": 1727346142,
                "status": "completed", "model": "gpt-4o", "output": [{"type": "message", "id": "msg_az1", "status": "completed",
                "role": "assistant", "content": [{"type": "output_text", "text": "hello from azure responses", "annotations": []}]}],
                "usage": {"input_tokens": 5, "output_tokens": 4, "total_tokens": 9}}),
            ),
            "chat/completions" => chat(&deployment, &body),
            "completions" => json_response(
                200,
                json!({"id": "cmpl-az1", "object": "text_completion",
                "created": 1727346142, "model": "gpt-35-turbo-instruct",
                "choices": [{"text": " done", "index": 0, "logprobs": null, "finish_reason": "stop",
                             "content_filter_results": clean()}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}),
            ),
            _ => azure_error(404, "404", "Resource not found"),
        }
    })
}

pub fn chat(deployment: &str, body: &Value) -> axum::response::Response {
    let text = prompt(body);
    if text.contains("forbidden") {
        return json_response(
            400,
            json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": false, "severity": "safe"}, "jailbreak": {"filtered": false, "detected": false},
                "self_harm": {"filtered": false, "severity": "safe"}, "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": true, "severity": "medium"}}}}}),
        );
    }
    if text.contains("filtered-answer") && body["stream"] == true {
        let events = stream_ending(deployment, &["I ", "can"], true, "content_filter");
        return sse_response(events, Duration::ZERO, None);
    }
    if text.contains("filtered-answer") {
        let mut filter = clean();
        filter["violence"] = json!({"filtered": true, "severity": "medium"});
        return json_response(
            200,
            completion(
                deployment,
                json!({"role": "assistant", "content": "I can"}),
                "content_filter",
                filter,
            ),
        );
    }
    if body["tools"].is_array() && body["stream"] == true {
        let model = format!("{deployment}-2024-08-06");
        let chunk = |delta: Value, finish: Value| {
            let v = json!({"id": "chatcmpl-az1", "object": "chat.completion.chunk", "created": 1727346142,
                "model": model, "system_fingerprint": "fp_az",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null,
                             "content_filter_results": {}}]});
            format!("data: {v}\n\n")
        };
        let first = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                           "prompt_filter_results": prompt_filter_results()});
        let events = vec![
            format!("data: {first}\n\n"),
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_az1",
                       "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            "data: [DONE]\n\n".to_string(),
        ];
        return sse_response(events, Duration::ZERO, None);
    }
    if body["tools"].is_array() {
        let call = json!({"id": "call_az1", "type": "function",
                          "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
        return json_response(
            200,
            completion(
                deployment,
                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                "tool_calls",
                json!({}),
            ),
        );
    }
    if body["stream"] == true {
        let usage = body["stream_options"]["include_usage"] == true;
        return sse_response(
            stream(deployment, &["Hello ", "from ", "Azure"], usage),
            Duration::ZERO,
            None,
        );
    }
    json_response(
        200,
        completion(
            deployment,
            json!({"role": "assistant", "content": "Hello from Azure"}),
            "stop",
            clean(),
        ),
    )
}
