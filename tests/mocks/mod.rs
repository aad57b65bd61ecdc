//! Mock Anthropic and Gemini upstreams: real HTTP servers on loopback (through `common::Mock`)
//! that speak each provider's exact wire format, check its auth headers, and validate the
//! translated request body as strictly as the real APIs do (unknown fields, role alternation,
//! tool use/result pairing, empty text blocks, schema keywords). An invalid request is answered
//! with the provider's own 400, so a translation bug fails the test that caused it.
//!
//! What they answer is driven by the request: tools -> a tool call; tool results -> "Tool said:
//! ..."; images -> "I see N images"; a few magic model names and user texts select errors.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::common::*;

pub const ANTHROPIC_KEY: &str = "sk-ant-mock-secret-1";
pub const GEMINI_KEY: &str = "AIza-mock-secret-2";

/// User text that makes a stream fail with an error event after the first fragment.
pub const FAIL_MID_STREAM: &str = "please fail mid-stream";
/// User text that makes a stream stop early: Anthropic cuts the connection before
/// `message_stop`, Gemini ends cleanly but without any finishReason.
pub const CUT_STREAM: &str = "please cut the stream";
/// User text that makes Gemini stamp finishReason on every chunk.
pub const STAMP_EVERY_CHUNK: &str = "stamp every chunk";
/// User text that asks for two tool calls at once.
pub const TWO_CITIES: &str = "weather in two cities";
/// User text answered with the provider's own 400 (invalid request), wherever it appears.
pub const REFUSE_400: &str = "please refuse with a 400";

fn asks_refusal(r: &Recorded) -> bool {
    String::from_utf8_lossy(&r.body).contains(REFUSE_400)
}

fn text_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn words(s: &str) -> Vec<String> {
    s.split_inclusive(' ').map(str::to_string).collect()
}

// =============================================================================================
// Anthropic

fn a_error(status: u16, kind: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}),
    )
}

pub fn anthropic() -> Handler {
    Arc::new(anthropic_answer)
}

fn anthropic_answer(r: &Recorded) -> Response {
    if r.header("x-api-key") != Some(ANTHROPIC_KEY) {
        return a_error(401, "authentication_error", "invalid x-api-key");
    }
    if r.header("anthropic-version") != Some("2023-06-01") {
        return a_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    if r.header("authorization").is_some() {
        return a_error(
            400,
            "invalid_request_error",
            "mock: the client's Authorization header was forwarded",
        );
    }
    if r.method == "GET" {
        if r.path == "/v1/models" {
            return json_response(
                200,
                json!({
                    "data": [
                        {"type": "model", "id": "claude-sonnet-4-20250514", "display_name": "Claude Sonnet 4", "created_at": "2025-05-22T00:00:00Z"},
                        {"type": "model", "id": "claude-3-5-haiku-20241022", "display_name": "Claude Haiku 3.5", "created_at": "2024-10-22T00:00:00Z"}
                    ],
                    "has_more": false, "first_id": "claude-sonnet-4-20250514", "last_id": "claude-3-5-haiku-20241022"
                }),
            );
        }
        return a_error(404, "not_found_error", "Not found");
    }
    if r.path == "/v1/messages/count_tokens" && r.method == "POST" {
        return json_response(200, json!({"input_tokens": 42}));
    }
    if r.path != "/v1/messages" || r.method != "POST" {
        return a_error(404, "not_found_error", "Not found");
    }
    if !r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json")
    {
        return a_error(
            400,
            "invalid_request_error",
            "content-type must be application/json",
        );
    }
    if asks_refusal(r) {
        return a_error(
            400,
            "invalid_request_error",
            "messages: the mock refuses this",
        );
    }
    let body = r.json();
    if let Err(m) = validate_anthropic(&body) {
        return a_error(
            400,
            "invalid_request_error",
            &format!("mock validation: {m}"),
        );
    }
    let model = text_of(&body["model"]);
    match model.as_str() {
        "claude-overloaded" => return a_error(529, "overloaded_error", "Overloaded"),
        "claude-ratelimited" => {
            let mut resp = a_error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
            resp.headers_mut()
                .insert("retry-after", "7".parse().unwrap());
            return resp;
        }
        _ => {}
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let last_blocks = last["content"].as_array().cloned().unwrap_or_default();
    let user_text: String = last_blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .map(|b| text_of(&b["text"]))
        .collect();
    let results: Vec<String> = last_blocks
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.iter().map(|x| text_of(&x["text"])).collect(),
            _ => String::new(),
        })
        .collect();
    let images = last_blocks.iter().filter(|b| b["type"] == "image").count();
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    let forced_json = body["tool_choice"]["name"] == "gateway_json_response";

    let (content, stop): (Vec<Value>, &str) = if forced_json {
        (
            vec![
                json!({"type": "tool_use", "id": "toolu_json", "name": "gateway_json_response", "input": {"name": "Ada", "born": 1815}}),
            ],
            "tool_use",
        )
    } else if !results.is_empty() {
        (
            vec![json!({"type": "text", "text": format!("Tool said: {}", results.join(", "))})],
            "end_turn",
        )
    } else if !tools.is_empty() && body["tool_choice"]["type"] != "none" {
        let name = text_of(&tools[0]["name"]);
        let mut c = vec![json!({"type": "text", "text": "Let me check."})];
        c.push(json!({"type": "tool_use", "id": "toolu_01A", "name": name, "input": {"location": "Paris", "unit": "celsius"}}));
        if user_text.contains(TWO_CITIES) {
            c.push(json!({"type": "tool_use", "id": "toolu_01B", "name": name, "input": {"location": "Rome", "unit": "celsius"}}));
        }
        (c, "tool_use")
    } else if images > 0 {
        (
            vec![json!({"type": "text", "text": format!("I see {images} images")})],
            "end_turn",
        )
    } else {
        (
            vec![json!({"type": "text", "text": "Hello from Claude"})],
            "end_turn",
        )
    };
    let usage = json!({"input_tokens": 21, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4});
    if body["stream"] != true {
        return json_response(
            200,
            json!({
                "id": "msg_mock01", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage
            }),
        );
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {
        "id": "msg_mock01", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}}}),
    )];
    events.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string());
    for (i, block) in content.iter().enumerate() {
        if block["type"] == "text" {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})));
            for (k, w) in words(&text_of(&block["text"])).into_iter().enumerate() {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": w}})));
                if k == 0 && user_text.contains(FAIL_MID_STREAM) {
                    events.push(ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
                    return sse_response(events, Duration::ZERO, None);
                }
            }
        } else {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})));
            let args = block["input"].to_string();
            let (a, b) = args.split_at(args.len() / 2);
            for frag in ["", a, b] {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": frag}})));
            }
        }
        events.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 9}})));
    if user_text.contains(CUT_STREAM) {
        // Spaced out so the events leave before the connection drops.
        let n = events.len();
        return sse_response(events, Duration::from_millis(20), Some(n));
    }
    events.push(ev("message_stop", json!({"type": "message_stop"})));
    sse_response(events, Duration::ZERO, None)
}

fn only_keys(o: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), String> {
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("{at}.{k}: Extra inputs are not permitted"));
        }
    }
    Ok(())
}

/// The Messages API's rules, as strictly as the real one applies them.
pub fn validate_anthropic(body: &Value) -> Result<(), String> {
    let o = body.as_object().ok_or("body must be an object")?;
    only_keys(
        o,
        &[
            "model",
            "messages",
            "max_tokens",
            "system",
            "stop_sequences",
            "temperature",
            "top_p",
            "top_k",
            "tools",
            "tool_choice",
            "metadata",
            "stream",
        ],
        "body",
    )?;
    if !o.get("model").is_some_and(Value::is_string) {
        return Err("model: Field required".into());
    }
    if o.get("max_tokens").and_then(Value::as_u64).unwrap_or(0) == 0 {
        return Err("max_tokens: Field required".into());
    }
    if let Some(t) = o.get("temperature") {
        if !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)) {
            return Err("temperature: range: 0..1".into());
        }
    }
    if let Some(s) = o.get("stop_sequences") {
        for x in s.as_array().ok_or("stop_sequences must be a list")? {
            if x.as_str().is_none_or(|s| s.trim().is_empty()) {
                return Err(
                    "stop_sequences: each stop sequence must contain non-whitespace".into(),
                );
            }
        }
    }
    if let Some(sys) = o.get("system") {
        for b in sys
            .as_array()
            .ok_or("system must be a list of text blocks")?
        {
            if b["type"] != "text" || b["text"].as_str().is_none_or(str::is_empty) {
                return Err("system: text content blocks must be non-empty".into());
            }
        }
    }
    if let Some(m) = o.get("metadata") {
        only_keys(
            m.as_object().ok_or("metadata must be an object")?,
            &["user_id"],
            "metadata",
        )?;
    }
    let mut tool_names = Vec::new();
    if let Some(tools) = o.get("tools") {
        for (i, t) in tools
            .as_array()
            .ok_or("tools must be a list")?
            .iter()
            .enumerate()
        {
            let to = t.as_object().ok_or("tool must be an object")?;
            only_keys(
                to,
                &["name", "description", "input_schema", "cache_control"],
                &format!("tools.{i}"),
            )?;
            if to.get("input_schema").and_then(|s| s.get("type")) != Some(&json!("object")) {
                return Err(format!("tools.{i}.input_schema: type must be object"));
            }
            tool_names.push(text_of(&to["name"]));
        }
    }
    if let Some(tc) = o.get("tool_choice") {
        let tco = tc.as_object().ok_or("tool_choice must be an object")?;
        match tco.get("type").and_then(Value::as_str) {
            Some("auto" | "any" | "none") => {
                only_keys(tco, &["type", "disable_parallel_tool_use"], "tool_choice")?
            }
            Some("tool") => {
                only_keys(
                    tco,
                    &["type", "name", "disable_parallel_tool_use"],
                    "tool_choice",
                )?;
                if !tool_names.contains(&text_of(&tco["name"])) {
                    return Err("tool_choice: the named tool is not in tools".into());
                }
            }
            _ => return Err("tool_choice.type: invalid".into()),
        }
        if o.get("tools").is_none() {
            return Err("tool_choice may only be specified while providing tools".into());
        }
    }
    let msgs = o
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if msgs.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let mo = m.as_object().ok_or("message must be an object")?;
        only_keys(mo, &["role", "content"], &format!("messages.{i}"))?;
        let role = text_of(&m["role"]);
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if role != want {
            return Err(format!("messages.{i}: roles must alternate between \"user\" and \"assistant\", starting with user"));
        }
        let blocks = match &m["content"] {
            Value::String(s) if !s.is_empty() => continue,
            Value::Array(a) if !a.is_empty() => a,
            _ => return Err(format!("messages.{i}: content must be non-empty")),
        };
        let mut seen_non_result = false;
        let mut answered = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let bo = b
                .as_object()
                .ok_or(format!("{at}: block must be an object"))?;
            match (role.as_str(), b["type"].as_str().unwrap_or("")) {
                (_, "text") => {
                    only_keys(bo, &["type", "text", "cache_control"], &at)?;
                    if b["text"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("{at}: text content blocks must be non-empty"));
                    }
                    seen_non_result = true;
                }
                ("user", "image") => {
                    only_keys(bo, &["type", "source", "cache_control"], &at)?;
                    let src = &b["source"];
                    match src["type"].as_str() {
                        Some("base64") => {
                            if !["image/jpeg", "image/png", "image/gif", "image/webp"]
                                .contains(&src["media_type"].as_str().unwrap_or(""))
                                || !src["data"].is_string()
                            {
                                return Err(format!("{at}.source: invalid base64 image source"));
                            }
                        }
                        Some("url") => {
                            if !src["url"].as_str().unwrap_or("").starts_with("https://") {
                                return Err(format!("{at}.source.url: must be https"));
                            }
                        }
                        _ => return Err(format!("{at}.source.type: invalid")),
                    }
                    seen_non_result = true;
                }
                ("user", "document") => seen_non_result = true,
                ("user", "tool_result") => {
                    only_keys(
                        bo,
                        &[
                            "type",
                            "tool_use_id",
                            "content",
                            "is_error",
                            "cache_control",
                        ],
                        &at,
                    )?;
                    if seen_non_result {
                        return Err(format!(
                            "{at}: tool_result blocks must come first in the user message"
                        ));
                    }
                    answered.push(text_of(&b["tool_use_id"]));
                }
                ("assistant", "tool_use") => {
                    only_keys(bo, &["type", "id", "name", "input", "cache_control"], &at)?;
                    if !b["input"].is_object() || !b["id"].is_string() || !b["name"].is_string() {
                        return Err(format!("{at}: tool_use needs id, name and an input object"));
                    }
                }
                (r, t) => {
                    return Err(format!(
                        "{at}: block type {t:?} is not allowed in a {r} message"
                    ))
                }
            }
        }
        // Every tool_use of an assistant turn is answered in the very next (user) turn.
        for id in &pending_tool_uses {
            if !answered.contains(id) {
                return Err(format!("messages.{i}: tool_use ids were found without tool_result blocks immediately after: {id}"));
            }
        }
        for id in &answered {
            if !pending_tool_uses.contains(id) {
                return Err(format!(
                    "messages.{i}: unexpected tool_use_id found in tool_result blocks: {id}"
                ));
            }
        }
        pending_tool_uses = if role == "assistant" {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| text_of(&b["id"]))
                .collect()
        } else {
            Vec::new()
        };
    }
    Ok(())
}

// =============================================================================================
// Gemini

fn g_error(status: u16, gstatus: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"code": status, "message": message, "status": gstatus}}),
    )
}

pub fn gemini() -> Handler {
    Arc::new(gemini_answer)
}

fn gemini_answer(r: &Recorded) -> Response {
    if r.query.as_deref().unwrap_or("").contains("key=") {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock: the API key must not travel in the URL",
        );
    }
    if r.header("x-goog-api-key") != Some(GEMINI_KEY) {
        return json_response(
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
        );
    }
    if r.header("authorization").is_some() {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock: the client's Authorization header was forwarded",
        );
    }
    if r.method == "GET" {
        if r.path == "/v1beta/models" {
            return json_response(
                200,
                json!({"models": [
                    {"name": "models/gemini-2.0-flash", "displayName": "Gemini 2.0 Flash", "supportedGenerationMethods": ["generateContent", "countTokens"]},
                    {"name": "models/text-embedding-004", "displayName": "Text Embedding 004", "supportedGenerationMethods": ["embedContent"]}
                ]}),
            );
        }
        return g_error(404, "NOT_FOUND", "Not found");
    }
    let Some(rest) = r.path.strip_prefix("/v1beta/models/") else {
        return g_error(404, "NOT_FOUND", "Not found");
    };
    let Some((model, method)) = rest.split_once(':') else {
        return g_error(404, "NOT_FOUND", "Not found");
    };
    if asks_refusal(r) {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload: the mock refuses this",
        );
    }
    if model == "gemini-exhausted" {
        return g_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        );
    }
    let body = r.json();
    match method {
        "batchEmbedContents" => return gemini_embed(model, &body),
        "countTokens" => {
            let inner = &body["generateContentRequest"];
            if inner["model"] != format!("models/{model}") {
                return g_error(
                    400,
                    "INVALID_ARGUMENT",
                    "generateContentRequest.model must name the model",
                );
            }
            if let Err(m) = validate_gemini(&without_model(inner)) {
                return g_error(400, "INVALID_ARGUMENT", &format!("mock validation: {m}"));
            }
            return json_response(200, json!({"totalTokens": 17, "promptTokensDetails": []}));
        }
        "generateContent" => {}
        "streamGenerateContent" => {
            if r.query.as_deref() != Some("alt=sse") {
                return g_error(
                    400,
                    "INVALID_ARGUMENT",
                    "mock: streams must ask for alt=sse",
                );
            }
        }
        _ => return g_error(404, "NOT_FOUND", "Not found"),
    }
    if let Err(m) = validate_gemini(&body) {
        return g_error(400, "INVALID_ARGUMENT", &format!("mock validation: {m}"));
    }
    let stream = method == "streamGenerateContent";
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let last_parts = contents
        .last()
        .and_then(|c| c["parts"].as_array().cloned())
        .unwrap_or_default();
    let user_text: String = last_parts.iter().map(|p| text_of(&p["text"])).collect();
    let results: Vec<String> = last_parts
        .iter()
        .filter(|p| p.get("functionResponse").is_some())
        .map(|p| {
            let resp = &p["functionResponse"]["response"];
            resp.get("output")
                .map(text_of)
                .unwrap_or_else(|| resp.to_string())
        })
        .collect();
    let images = last_parts
        .iter()
        .filter(|p| p.get("inlineData").is_some() || p.get("fileData").is_some())
        .count();
    let decls = body["tools"][0]["functionDeclarations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mode = body["toolConfig"]["functionCallingConfig"]["mode"]
        .as_str()
        .unwrap_or("AUTO")
        .to_string();

    let parts: Vec<Value> = if !results.is_empty() {
        vec![json!({"text": format!("Tool said: {}", results.join(", "))})]
    } else if !decls.is_empty() && mode != "NONE" {
        let name = text_of(&decls[0]["name"]);
        let mut p = vec![
            json!({"functionCall": {"name": name, "args": {"location": "Paris", "unit": "celsius"}}}),
        ];
        if user_text.contains(TWO_CITIES) {
            p.push(json!({"functionCall": {"name": name, "args": {"location": "Rome", "unit": "celsius"}}}));
        }
        p
    } else if images > 0 {
        vec![json!({"text": format!("I see {images} images")})]
    } else if body["generationConfig"]["responseMimeType"] == "application/json" {
        vec![json!({"text": "{\"name\":\"Ada\",\"born\":1815}"})]
    } else {
        vec![json!({"text": "Hello from Gemini"})]
    };
    let n = body["generationConfig"]["candidateCount"]
        .as_u64()
        .unwrap_or(1);
    let usage = json!({"promptTokenCount": 12, "candidatesTokenCount": 6, "totalTokenCount": 18, "cachedContentTokenCount": 3});
    if !stream {
        let candidates: Vec<Value> = (0..n)
            .map(|i| json!({"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": i}))
            .collect();
        return json_response(
            200,
            json!({"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": "resp-mock-1"}),
        );
    }
    // Stream: text word by word, function calls whole, finishReason on the last event only
    // (or on every event when asked), usage growing as it goes.
    let mut pieces: Vec<Value> = Vec::new();
    for p in &parts {
        match p.get("text") {
            Some(t) => pieces.extend(words(&text_of(t)).into_iter().map(|w| json!({"text": w}))),
            None => pieces.push(p.clone()),
        }
    }
    let stamp = user_text.contains(STAMP_EVERY_CHUNK);
    let cut = user_text.contains(CUT_STREAM);
    let mut events = Vec::new();
    let count = pieces.len();
    for (k, piece) in pieces.into_iter().enumerate() {
        let last = k + 1 == count;
        let mut cand = json!({"content": {"parts": [piece], "role": "model"}, "index": 0});
        if (last && !cut) || stamp {
            cand["finishReason"] = json!("STOP");
        }
        let u = if last {
            usage.clone()
        } else {
            json!({"promptTokenCount": 12, "totalTokenCount": 12})
        };
        events.push(format!("data: {}\r\n\r\n", json!({"candidates": [cand], "usageMetadata": u, "modelVersion": model, "responseId": "resp-mock-1"})));
        if k == 0 && user_text.contains(FAIL_MID_STREAM) {
            events.push(format!("data: {}\r\n\r\n", json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})));
            break;
        }
    }
    sse_response(events, Duration::ZERO, None)
}

fn gemini_embed(model: &str, body: &Value) -> Response {
    let Some(reqs) = body["requests"].as_array() else {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock validation: requests is required",
        );
    };
    if body.as_object().is_some_and(|o| o.len() != 1) {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock validation: unknown field beside requests",
        );
    }
    let mut embeddings = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        if r["model"] != format!("models/{model}") {
            return g_error(
                400,
                "INVALID_ARGUMENT",
                &format!("mock validation: requests[{i}].model must be models/{model}"),
            );
        }
        let Some(o) = r.as_object() else {
            return g_error(
                400,
                "INVALID_ARGUMENT",
                "mock validation: request must be an object",
            );
        };
        if let Err(m) = only_keys(
            o,
            &[
                "model",
                "content",
                "outputDimensionality",
                "taskType",
                "title",
            ],
            &format!("requests[{i}]"),
        ) {
            return g_error(400, "INVALID_ARGUMENT", &m);
        }
        let text = text_of(&r["content"]["parts"][0]["text"]);
        if text.is_empty() {
            return g_error(
                400,
                "INVALID_ARGUMENT",
                "mock validation: content text is required",
            );
        }
        let dims = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
        let values: Vec<f64> = (0..dims).map(|d| (text.len() + d) as f64 / 8.0).collect();
        embeddings.push(json!({"values": values}));
    }
    json_response(200, json!({"embeddings": embeddings}))
}

const GEMINI_SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "anyOf",
    "propertyOrdering",
    "items",
    "minimum",
    "maximum",
];

fn validate_schema(s: &Value, at: &str) -> Result<(), String> {
    let o = s
        .as_object()
        .ok_or(format!("{at}: schema must be an object"))?;
    for k in o.keys() {
        if !GEMINI_SCHEMA_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at '{at}'"
            ));
        }
    }
    if s["type"] == "object"
        && o.contains_key("properties")
        && s["properties"].as_object().is_some_and(Map::is_empty)
    {
        return Err(format!(
            "{at}.properties: should be non-empty for OBJECT type"
        ));
    }
    if let Some(p) = s["properties"].as_object() {
        for (k, v) in p {
            validate_schema(v, &format!("{at}.properties.{k}"))?;
        }
    }
    if let Some(i) = s.get("items") {
        validate_schema(i, &format!("{at}.items"))?;
    }
    Ok(())
}

/// The generateContent rules the gateway's translation must respect.
/// A `generateContentRequest` (countTokens) without its `model`, for [`validate_gemini`].
fn without_model(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("model");
    }
    v
}

pub fn validate_gemini(body: &Value) -> Result<(), String> {
    let o = body.as_object().ok_or("body must be an object")?;
    only_keys(
        o,
        &[
            "contents",
            "systemInstruction",
            "tools",
            "toolConfig",
            "generationConfig",
            "safetySettings",
        ],
        "body",
    )?;
    if let Some(g) = o.get("generationConfig") {
        only_keys(
            g.as_object().ok_or("generationConfig must be an object")?,
            &[
                "temperature",
                "topP",
                "topK",
                "candidateCount",
                "maxOutputTokens",
                "stopSequences",
                "seed",
                "presencePenalty",
                "frequencyPenalty",
                "responseMimeType",
                "responseSchema",
                "thinkingConfig",
            ],
            "generationConfig",
        )?;
        if let Some(s) = g.get("responseSchema") {
            validate_schema(s, "generationConfig.responseSchema")?;
        }
    }
    if let Some(si) = o.get("systemInstruction") {
        let parts = si["parts"]
            .as_array()
            .ok_or("systemInstruction.parts is required")?;
        if parts
            .iter()
            .any(|p| p["text"].as_str().is_none_or(str::is_empty))
        {
            return Err("systemInstruction: text parts must be non-empty".into());
        }
    }
    if let Some(tools) = o.get("tools") {
        for (i, t) in tools
            .as_array()
            .ok_or("tools must be a list")?
            .iter()
            .enumerate()
        {
            only_keys(
                t.as_object().ok_or("tool must be an object")?,
                &["functionDeclarations"],
                &format!("tools[{i}]"),
            )?;
            for (j, d) in t["functionDeclarations"]
                .as_array()
                .ok_or("functionDeclarations must be a list")?
                .iter()
                .enumerate()
            {
                let at = format!("tools[{i}].functionDeclarations[{j}]");
                only_keys(
                    d.as_object().ok_or("declaration must be an object")?,
                    &["name", "description", "parameters"],
                    &at,
                )?;
                if let Some(p) = d.get("parameters") {
                    validate_schema(p, &format!("{at}.parameters"))?;
                }
            }
        }
    }
    if let Some(tc) = o.get("toolConfig") {
        let fc = &tc["functionCallingConfig"];
        if !["AUTO", "ANY", "NONE"].contains(&fc["mode"].as_str().unwrap_or("")) {
            return Err("toolConfig.functionCallingConfig.mode: invalid".into());
        }
    }
    let contents = o
        .get("contents")
        .and_then(Value::as_array)
        .ok_or("contents is required")?;
    if contents.is_empty() {
        return Err("contents must not be empty".into());
    }
    let mut previous_calls: Vec<String> = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        let at = format!("contents[{i}]");
        only_keys(
            c.as_object().ok_or("content must be an object")?,
            &["role", "parts"],
            &at,
        )?;
        let role = text_of(&c["role"]);
        let want = if i % 2 == 0 { "user" } else { "model" };
        if role != want {
            return Err(format!(
                "{at}: roles must alternate user/model starting with user (got {role:?})"
            ));
        }
        let parts = c["parts"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or(format!("{at}: parts must not be empty"))?;
        let mut responses = Vec::new();
        let mut calls = Vec::new();
        for (j, p) in parts.iter().enumerate() {
            let pat = format!("{at}.parts[{j}]");
            let po = p.as_object().ok_or(format!("{pat}: must be an object"))?;
            let kinds: Vec<&String> = po.keys().collect();
            if kinds.len() != 1 {
                return Err(format!("{pat}: a part holds exactly one of text, inlineData, fileData, functionCall, functionResponse"));
            }
            match (role.as_str(), kinds[0].as_str()) {
                (_, "text") => {
                    if p["text"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("{pat}.text: must be non-empty"));
                    }
                }
                ("user", "inlineData") => {
                    only_keys(
                        p["inlineData"]
                            .as_object()
                            .ok_or("inlineData must be an object")?,
                        &["mimeType", "data"],
                        &pat,
                    )?;
                    if !p["inlineData"]["mimeType"].is_string()
                        || !p["inlineData"]["data"].is_string()
                    {
                        return Err(format!("{pat}.inlineData needs mimeType and data"));
                    }
                }
                ("user", "fileData") => {
                    only_keys(
                        p["fileData"]
                            .as_object()
                            .ok_or("fileData must be an object")?,
                        &["mimeType", "fileUri"],
                        &pat,
                    )?;
                    if !p["fileData"]["mimeType"].is_string()
                        || !p["fileData"]["fileUri"].is_string()
                    {
                        return Err(format!("{pat}.fileData needs mimeType and fileUri"));
                    }
                }
                ("user", "functionResponse") => {
                    let f = &p["functionResponse"];
                    only_keys(
                        f.as_object().ok_or("functionResponse must be an object")?,
                        &["name", "response", "id"],
                        &pat,
                    )?;
                    if !f["response"].is_object() {
                        return Err(format!("{pat}.functionResponse.response must be an object"));
                    }
                    responses.push(text_of(&f["name"]));
                }
                ("model", "functionCall") => {
                    let f = &p["functionCall"];
                    only_keys(
                        f.as_object().ok_or("functionCall must be an object")?,
                        &["name", "args", "id"],
                        &pat,
                    )?;
                    if !f["args"].is_object() {
                        return Err(format!("{pat}.functionCall.args must be an object"));
                    }
                    calls.push(text_of(&f["name"]));
                }
                (r, k) => return Err(format!("{pat}: {k} is not allowed in a {r} turn")),
            }
        }
        // A function response turn answers exactly the calls of the turn before it.
        if !previous_calls.is_empty() || !responses.is_empty() {
            let mut a = previous_calls.clone();
            let mut b = responses.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(format!("{at}: please ensure that the number of function response parts is equal to the number of function call parts of the function call turn ({a:?} vs {b:?})"));
            }
        }
        previous_calls = calls;
    }
    Ok(())
}

// =============================================================================================
// Cohere (chat API v2)

pub const COHERE_KEY: &str = "co-mock-secret-3";

fn c_error(status: u16, message: &str) -> Response {
    json_response(status, json!({"id": "7f3a8e2c-mock", "message": message}))
}

pub fn cohere() -> Handler {
    Arc::new(cohere_answer)
}

fn cohere_answer(r: &Recorded) -> Response {
    if r.header("authorization") != Some(&format!("Bearer {COHERE_KEY}")) {
        return c_error(401, "invalid api token");
    }
    if r.method == "GET" {
        if r.path == "/v1/models" {
            return json_response(
                200,
                json!({"models": [
                    {"name": "command-a-03-2025", "endpoints": ["chat"], "finetuned": false, "context_length": 256000},
                    {"name": "command-r7b-12-2024", "endpoints": ["chat"], "finetuned": false, "context_length": 128000}
                ]}),
            );
        }
        return c_error(404, "not found");
    }
    if r.path != "/v2/chat" || r.method != "POST" {
        return c_error(404, "not found");
    }
    if !r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json")
    {
        return c_error(
            400,
            "invalid request: content-type must be application/json",
        );
    }
    if asks_refusal(r) {
        return c_error(400, "invalid request: the mock refuses this");
    }
    let body = r.json();
    if let Err(m) = validate_cohere(&body) {
        return c_error(400, &format!("invalid request: mock validation: {m}"));
    }
    let model = text_of(&body["model"]);
    match model.as_str() {
        "command-ratelimited" => {
            return c_error(
                429,
                "You are using a Trial key, which is limited to 20 API calls / minute.",
            )
        }
        "command-broken" => return c_error(500, "internal server error, this has been reported"),
        _ => {}
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let user_text: String = match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(|p| text_of(&p["text"])).collect(),
        _ => String::new(),
    };
    let results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| text_of(&m["content"]))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let tools = body["tools"].as_array().cloned().unwrap_or_default();

    let (text, calls, finish): (String, Vec<Value>, &str) = if !results.is_empty() {
        (
            format!("Tool said: {}", results.join(", ")),
            Vec::new(),
            "COMPLETE",
        )
    } else if !tools.is_empty() && body["tool_choice"] != "NONE" {
        let name = text_of(&tools[0]["function"]["name"]);
        let mut calls = vec![json!({"id": "get_weather_1byjy32y4hvq", "type": "function",
            "function": {"name": name, "arguments": "{\"location\":\"Paris\",\"unit\":\"celsius\"}"}})];
        if user_text.contains(TWO_CITIES) {
            calls.push(json!({"id": "get_weather_2kzrp8q7d1mn", "type": "function",
                "function": {"name": name, "arguments": "{\"location\":\"Rome\",\"unit\":\"celsius\"}"}}));
        }
        (String::new(), calls, "TOOL_CALL")
    } else {
        ("Hello from Command".to_string(), Vec::new(), "COMPLETE")
    };
    let usage = json!({"billed_units": {"input_tokens": 12, "output_tokens": 4}, "tokens": {"input_tokens": 210, "output_tokens": 4}});
    let id = "c14c80c3-18eb-4519-9460-6c92edd8cfb4";
    if body["stream"] != true {
        let mut message = json!({"role": "assistant"});
        if !text.is_empty() {
            message["content"] = json!([{"type": "text", "text": text}]);
        }
        if !calls.is_empty() {
            message["tool_plan"] = json!("I will look up the weather.");
            message["tool_calls"] = json!(calls);
        }
        return json_response(
            200,
            json!({"id": id, "message": message, "finish_reason": finish, "usage": usage}),
        );
    }
    let ev = |data: Value| format!("event: {}\ndata: {data}\n\n", text_of(&data["type"]));
    let mut events = vec![ev(
        json!({"id": id, "type": "message-start", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
    )];
    if !text.is_empty() {
        events.push(ev(json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
        for (k, w) in words(&text).into_iter().enumerate() {
            events.push(ev(json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": w}}}, "logprobs": null})));
            if k == 0 && user_text.contains(FAIL_MID_STREAM) {
                events.push(ev(json!({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal error during generation"}})));
                return sse_response(events, Duration::ZERO, None);
            }
        }
        events.push(ev(json!({"type": "content-end", "index": 0})));
    }
    if !calls.is_empty() {
        events.push(ev(json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will look up the weather."}}})));
    }
    for (i, c) in calls.iter().enumerate() {
        let args = text_of(&c["function"]["arguments"]);
        let (a, b) = args.split_at(args.len() / 2);
        events.push(ev(json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {
            "id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": ""}}}}})));
        for frag in [a, b] {
            events.push(ev(json!({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": frag}}}}})));
        }
        events.push(ev(json!({"type": "tool-call-end", "index": i})));
    }
    if user_text.contains(CUT_STREAM) {
        let n = events.len();
        return sse_response(events, Duration::from_millis(20), Some(n));
    }
    events.push(ev(
        json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}}),
    ));
    events.push("data: [DONE]\n\n".to_string());
    sse_response(events, Duration::ZERO, None)
}

/// The v2 chat request rules the gateway's translation must respect.
pub fn validate_cohere(body: &Value) -> Result<(), String> {
    let o = body.as_object().ok_or("body must be an object")?;
    only_keys(
        o,
        &[
            "model",
            "messages",
            "tools",
            "strict_tools",
            "documents",
            "citation_options",
            "response_format",
            "safety_mode",
            "max_tokens",
            "stop_sequences",
            "temperature",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "k",
            "p",
            "logprobs",
            "tool_choice",
            "thinking",
            "stream",
        ],
        "body",
    )?;
    if !body["model"].is_string() {
        return Err("model is required".into());
    }
    if let Some(tc) = o.get("tool_choice") {
        if tc != "REQUIRED" && tc != "NONE" {
            return Err(format!("tool_choice must be REQUIRED or NONE, got {tc}"));
        }
        if body["tools"].as_array().is_none_or(|t| t.is_empty()) {
            return Err("tool_choice needs tools".into());
        }
    }
    for (i, t) in body["tools"].as_array().into_iter().flatten().enumerate() {
        let t = t
            .as_object()
            .ok_or(format!("tools[{i}] must be an object"))?;
        only_keys(t, &["type", "function"], &format!("tools[{i}]"))?;
        if t.get("type").is_some_and(|k| k != "function") {
            return Err(format!("tools[{i}].type must be function"));
        }
        let f = t["function"]
            .as_object()
            .ok_or(format!("tools[{i}].function must be an object"))?;
        only_keys(
            f,
            &["name", "description", "parameters"],
            &format!("tools[{i}].function"),
        )?;
        if !f.get("name").is_some_and(Value::is_string) {
            return Err(format!("tools[{i}].function.name is required"));
        }
    }
    let messages = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("messages must be a non-empty array")?;
    let mut call_ids: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let mo = m.as_object().ok_or(format!("{at} must be an object"))?;
        let content_ok = |c: &Value, images: bool| match c {
            Value::String(_) => true,
            Value::Array(parts) => parts.iter().all(|p| match p["type"].as_str() {
                Some("text") => p["text"].is_string(),
                Some("image_url") => images && p["image_url"]["url"].is_string(),
                _ => false,
            }),
            _ => false,
        };
        match m["role"].as_str() {
            Some("system") => {
                only_keys(mo, &["role", "content"], &at)?;
                if !content_ok(&m["content"], false) {
                    return Err(format!("{at}.content must be text"));
                }
            }
            Some("user") => {
                only_keys(mo, &["role", "content"], &at)?;
                if !content_ok(&m["content"], true) {
                    return Err(format!("{at}.content must be text or image_url parts"));
                }
            }
            Some("assistant") => {
                only_keys(
                    mo,
                    &["role", "content", "tool_calls", "tool_plan", "citations"],
                    &at,
                )?;
                let calls = m["tool_calls"].as_array().cloned().unwrap_or_default();
                if mo.get("content").is_none() && calls.is_empty() {
                    return Err(format!("{at} needs content or tool_calls"));
                }
                if let Some(c) = mo.get("content") {
                    if !content_ok(c, false) {
                        return Err(format!("{at}.content must be text"));
                    }
                }
                for (k, c) in calls.iter().enumerate() {
                    if !c["function"]["arguments"].is_string() {
                        return Err(format!(
                            "{at}.tool_calls[{k}].function.arguments must be a JSON string"
                        ));
                    }
                    if serde_json::from_str::<Value>(
                        c["function"]["arguments"].as_str().unwrap_or(""),
                    )
                    .is_err()
                    {
                        return Err(format!(
                            "{at}.tool_calls[{k}].function.arguments is not JSON"
                        ));
                    }
                    call_ids.push(text_of(&c["id"]));
                }
            }
            Some("tool") => {
                only_keys(mo, &["role", "tool_call_id", "content"], &at)?;
                let id = text_of(&m["tool_call_id"]);
                if !call_ids.contains(&id) {
                    return Err(format!("{at}.tool_call_id {id:?} answers no tool call"));
                }
                if !m["content"].is_string() && !m["content"].is_array() {
                    return Err(format!("{at}.content is required"));
                }
            }
            other => return Err(format!("{at}.role {other:?} is not a valid role")),
        }
    }
    Ok(())
}
