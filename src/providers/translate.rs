//! What the translating wire formats (`anthropic`, `gemini`) share: the OpenAI request read once
//! into a neutral shape ([`Conversation`], [`ToolDef`], [`ToolChoice`], [`ResponseFormat`]),
//! with every malformed or untranslatable piece answered by a 400 that names the field.
//!
//! Policy for request fields (README, "Anthropic and Gemini"): a field is translated when the
//! upstream has an equivalent; dropped silently only when it cannot change the answer (`store`,
//! `metadata`, ...); otherwise, unknown fields included, the request is refused with a 400 naming
//! it, so a client never gets an answer to a different question than the one it asked.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::Usage;
use crate::error::GatewayError;

/// The 400 for a field the upstream format has no equivalent for.
pub fn unsupported(provider: &str, field: &str, why: &str) -> GatewayError {
    let mut e = GatewayError::bad_request(
        field,
        format!("'{field}' is not supported for {provider} models: {why}"),
    );
    e.code = Some("unsupported_parameter".into());
    e
}

/// Fields no upstream needs and that cannot change the answer: accepted and dropped.
pub fn harmless(field: &str, v: &Value) -> bool {
    match field {
        "store" | "metadata" | "service_tier" | "prompt_cache_key" | "safety_identifier"
        | "prediction" => true,
        "logprobs" => v == &Value::Bool(false),
        "top_logprobs" => v.as_u64() == Some(0),
        "logit_bias" => v.as_object().is_some_and(Map::is_empty),
        "modalities" => v.as_array().is_some_and(|a| a.iter().all(|m| m == "text")),
        _ => false,
    }
}

/// `max_completion_tokens`, else `max_tokens`.
pub fn max_tokens(body: &Map<String, Value>) -> Result<Option<u64>, GatewayError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        match body.get(key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return v.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                    GatewayError::bad_request(key, format!("'{key}' must be a positive integer"))
                })
            }
        }
    }
    Ok(None)
}

/// `temperature`, checked against OpenAI's range 0-2.
pub fn temperature(body: &Map<String, Value>) -> Result<Option<f64>, GatewayError> {
    match body.get("temperature").and_then(Value::as_f64) {
        None => Ok(None),
        Some(t) if (0.0..=2.0).contains(&t) => Ok(Some(t)),
        Some(_) => Err(GatewayError::bad_request(
            "temperature",
            "'temperature' must be between 0 and 2",
        )),
    }
}

/// `n`, at least 1.
pub fn choices(body: &Map<String, Value>) -> Result<u64, GatewayError> {
    match body.get("n") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=128).contains(n))
            .ok_or_else(|| GatewayError::bad_request("n", "'n' must be between 1 and 128")),
    }
}

/// `stop` as a list (a string is one stop sequence).
pub fn stop_sequences(body: &Map<String, Value>) -> Vec<String> {
    match body.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// One function tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments, if the client gave one.
    pub parameters: Option<Value>,
}

/// `tools`: only `function` tools have an equivalent upstream.
pub fn tools(body: &Map<String, Value>) -> Result<Vec<ToolDef>, GatewayError> {
    let Some(list) = body.get("tools").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let param = format!("tools[{i}]");
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
        if kind != "function" {
            return Err(GatewayError::bad_request(
                &format!("{param}.type"),
                format!("{param}.type {kind:?} is not supported: only \"function\" tools can be translated"),
            ));
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                GatewayError::bad_request(
                    &format!("{param}.function"),
                    format!("{param}.function must be an object"),
                )
            })?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                GatewayError::bad_request(
                    &format!("{param}.function.name"),
                    format!("{param}.function.name is required"),
                )
            })?;
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(_) => {
                return Err(GatewayError::bad_request(
                    &format!("{param}.function.parameters"),
                    format!("{param}.function.parameters must be a JSON Schema object"),
                ))
            }
        };
        out.push(ToolDef {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// `tool_choice`, checked against the declared tools.
pub fn tool_choice(
    body: &Map<String, Value>,
    tools: &[ToolDef],
) -> Result<Option<ToolChoice>, GatewayError> {
    let bad = |m: String| GatewayError::bad_request("tool_choice", m);
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "tool_choice {other:?} is not one of \"none\", \"auto\", \"required\" or a function"
                )))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice must name a function: {\"type\":\"function\",\"function\":{\"name\":...}}".into()))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(bad(format!("tool_choice names {name:?}, which is not in 'tools'")));
            }
            ToolChoice::Named(name.to_string())
        }
        Some(_) => return Err(bad("tool_choice must be a string or an object".into())),
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(bad("tool_choice requires 'tools'".into()));
    }
    Ok(Some(choice))
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: Value,
    },
}

pub fn response_format(body: &Map<String, Value>) -> Result<ResponseFormat, GatewayError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    let bad = |m: &str| GatewayError::bad_request("response_format", m);
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = rf
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("response_format.json_schema must be an object"))?;
            Ok(ResponseFormat::JsonSchema {
                name: js
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string(),
                description: js
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                schema: js
                    .get("schema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            })
        }
        _ => Err(bad(
            "response_format.type must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

/// A text block, with Anthropic's prompt-caching marker when the client set one on the part.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub text: String,
    pub cache_control: Option<Value>,
}

/// Where an image or file comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `data:<mime>;base64,<data>`.
    Inline { mime: String, data: String },
    /// An http(s) URL the upstream fetches itself.
    Url { url: String, mime: String },
}

/// One part of a user or assistant message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(Text),
    Image(Source, Option<Value>),
    /// `input_audio`: base64 data and its format (`wav`, `mp3`).
    Audio {
        data: String,
        format: String,
    },
    /// `file` with inline `file_data`.
    File {
        mime: String,
        data: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The parsed `arguments` object.
    pub args: Value,
}

/// One message, roles reduced to what the upstreams distinguish.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    User(Vec<Part>),
    Assistant {
        parts: Vec<Part>,
        calls: Vec<ToolCall>,
    },
    /// A tool result; `name` is the function's, recovered from the assistant message that
    /// called it (Gemini needs it).
    Tool {
        id: String,
        name: String,
        content: String,
    },
}

/// The request's messages: system/developer text apart, the rest in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    pub system: Vec<Text>,
    pub turns: Vec<Msg>,
}

impl Conversation {
    pub fn parse(messages: &[Value]) -> Result<Conversation, GatewayError> {
        let mut conv = Conversation::default();
        // Function names by tool_call_id, from the assistant messages seen so far.
        let mut names: Vec<(String, String)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            let content = m.get("content");
            let at = |k: &str| format!("messages[{i}].{k}");
            match role {
                "system" | "developer" => {
                    for p in parts(content, i)? {
                        match p {
                            Part::Text(t) => conv.system.push(t),
                            _ => {
                                return Err(GatewayError::bad_request(
                                    &at("content"),
                                    format!("messages[{i}]: {role} messages can only hold text"),
                                ))
                            }
                        }
                    }
                }
                "user" => conv.turns.push(Msg::User(parts(content, i)?)),
                "assistant" => {
                    let parts = parts(content, i)?;
                    let calls = tool_calls(m, i)?;
                    for c in &calls {
                        names.push((c.id.clone(), c.name.clone()));
                    }
                    conv.turns.push(Msg::Assistant { parts, calls });
                }
                "tool" => {
                    let id = m
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            GatewayError::bad_request(
                                &at("tool_call_id"),
                                format!("messages[{i}].tool_call_id is required for tool messages"),
                            )
                        })?;
                    let name = names
                        .iter()
                        .rev()
                        .find(|(k, _)| k == id)
                        .map(|(_, n)| n.clone())
                        .ok_or_else(|| {
                            GatewayError::bad_request(
                                &at("tool_call_id"),
                                format!("messages[{i}].tool_call_id {id:?} answers no tool call of an earlier assistant message"),
                            )
                        })?;
                    let content = match content {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(_)) => crate::api::content_text(content),
                        Some(_) => String::new(),
                    };
                    conv.turns.push(Msg::Tool {
                        id: id.to_string(),
                        name,
                        content,
                    });
                }
                _ => {
                    return Err(GatewayError::bad_request(
                        &at("role"),
                        format!("messages[{i}].role {role:?} cannot be translated: use \"tool\" messages instead of legacy \"function\" ones"),
                    ))
                }
            }
        }
        Ok(conv)
    }
}

fn tool_calls(m: &Value, i: usize) -> Result<Vec<ToolCall>, GatewayError> {
    let Some(list) = m.get("tool_calls").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or_else(|| {
        GatewayError::bad_request(
            &format!("messages[{i}].tool_calls"),
            format!("messages[{i}].tool_calls must be an array"),
        )
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (j, c) in list.iter().enumerate() {
        let at = |k: &str| format!("messages[{i}].tool_calls[{j}].{k}");
        let req = |k: &str, v: Option<&str>| {
            v.filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| GatewayError::bad_request(&at(k), format!("{} is required", at(k))))
        };
        let id = req("id", c.get("id").and_then(Value::as_str))?;
        let f = c.get("function");
        let name = req(
            "function.name",
            f.and_then(|f| f.get("name")).and_then(Value::as_str),
        )?;
        let args = match f.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(GatewayError::bad_request(
                        &at("function.arguments"),
                        format!(
                            "{} must be a JSON object encoded as a string",
                            at("function.arguments")
                        ),
                    ))
                }
            },
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(GatewayError::bad_request(
                    &at("function.arguments"),
                    format!(
                        "{} must be a JSON object encoded as a string",
                        at("function.arguments")
                    ),
                ))
            }
        };
        out.push(ToolCall { id, name, args });
    }
    Ok(out)
}

/// A message's content as parts (a string is one text part; empty text is dropped).
fn parts(content: Option<&Value>, i: usize) -> Result<Vec<Part>, GatewayError> {
    let text = |s: &str, cc: Option<&Value>| {
        Part::Text(Text {
            text: s.to_string(),
            cache_control: cc.filter(|v| !v.is_null()).cloned(),
        })
    };
    let list = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![text(s, None)]),
        Some(Value::Array(a)) => a,
        Some(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, p) in list.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        let bad = |m: String| GatewayError::bad_request(&param, m);
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        let cc = p.get("cache_control");
        match kind {
            "text" | "refusal" => {
                let s = p
                    .get(kind)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{param}.{kind} must be a string")))?;
                if !s.is_empty() {
                    out.push(text(s, cc));
                }
            }
            "image_url" => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{param}.image_url.url must be a string")))?;
                let src = source(url).map_err(|m| bad(format!("{param}.image_url.url: {m}")))?;
                out.push(Part::Image(src, cc.filter(|v| !v.is_null()).cloned()));
            }
            "input_audio" => {
                let a = p.get("input_audio");
                let data = a.and_then(|a| a.get("data")).and_then(Value::as_str);
                let format = a.and_then(|a| a.get("format")).and_then(Value::as_str);
                match (data, format) {
                    (Some(d), Some(f)) => out.push(Part::Audio {
                        data: d.to_string(),
                        format: f.to_string(),
                    }),
                    _ => return Err(bad(format!("{param}.input_audio needs data and format"))),
                }
            }
            "file" => {
                let f = p.get("file");
                match f.and_then(|f| f.get("file_data")).and_then(Value::as_str) {
                    Some(d) => match data_url(d) {
                        Some((mime, data)) => out.push(Part::File { mime, data }),
                        None => {
                            return Err(bad(format!(
                                "{param}.file.file_data must be a data URL (data:<mime>;base64,...)"
                            )))
                        }
                    },
                    None => {
                        return Err(bad(format!(
                            "{param}: files can only be sent inline (file.file_data); file_id refers to OpenAI's file store"
                        )))
                    }
                }
            }
            other => {
                return Err(bad(format!(
                    "{param}.type {other:?} is not supported (text, image_url, input_audio, file)"
                )))
            }
        }
    }
    Ok(out)
}

/// Splits `data:<mime>;base64,<data>`.
pub fn data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    Some((mime.to_string(), data.to_string()))
}

fn source(url: &str) -> Result<Source, &'static str> {
    if url.starts_with("data:") {
        let (mime, data) = data_url(url).ok_or("a data URL must be data:<mime>;base64,<data>")?;
        return Ok(Source::Inline { mime, data });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(Source::Url {
            url: url.to_string(),
            mime: mime_from_url(url).to_string(),
        });
    }
    Err("must be an http(s) URL or a base64 data URL")
}

/// The image type a URL's extension suggests (Gemini wants one); JPEG when it says nothing.
pub fn mime_from_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next().unwrap_or("") {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// The text parts joined.
pub fn joined_text(parts: &[Part]) -> String {
    let mut s = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            s.push_str(&t.text);
        }
    }
    s
}

/// An upstream answer that is not what its format promises.
pub fn bad_upstream_body(provider: &str, why: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        502,
        "upstream_error",
        Some("invalid_upstream_response"),
        format!("{provider} sent a response the gateway cannot read: {why}"),
    )
    .with_label("bad_upstream_response")
}

/// Whether an error is [`bad_upstream_body`]'s.
pub fn is_unreadable(e: &GatewayError) -> bool {
    e.code.as_deref() == Some("invalid_upstream_response")
}

/// A stream that ended before its format's terminal event.
pub fn truncated(provider: &str, what: &str) -> GatewayError {
    GatewayError::new(
        502,
        "upstream_error",
        Some("stream_truncated"),
        format!("the {provider} stream ended before {what}"),
    )
    .with_label("stream_truncated")
}

/// Completes a translated embeddings answer for the client: `usage` estimated from the input
/// when the upstream counted nothing (Gemini usually does not), and the vectors encoded as
/// OpenAI does when the client asked for `encoding_format: "base64"` (little-endian f32).
pub fn finish_embeddings(
    request: &Map<String, Value>,
    body: Bytes,
    usage: Option<Usage>,
) -> (Bytes, Option<Usage>) {
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    if usage.is_some() && !base64 {
        return (body, usage);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return (body, usage);
    };
    let usage = usage.unwrap_or_else(|| {
        let prompt = match request.get("input") {
            Some(Value::String(s)) => estimate_tokens(s),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(estimate_tokens)
                .sum(),
            _ => 0,
        };
        Usage::new(prompt, 0)
    });
    v["usage"] = serde_json::json!({"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens});
    if base64 {
        if let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) {
            for item in data {
                let Some(floats) = item.get("embedding").and_then(Value::as_array) else {
                    continue;
                };
                let mut raw = Vec::with_capacity(floats.len() * 4);
                for f in floats {
                    raw.extend_from_slice(&(f.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                item["embedding"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
            }
        }
    }
    (Bytes::from(v.to_string()), Some(usage))
}

/// Token estimate for text an upstream did not count (about four characters per token).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn conversation_reads_every_role_and_recovers_tool_names() {
        let c = Conversation::parse(&msgs(json!([
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "use metric"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "text", "text": ""},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "zoom", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_2", "content": "zoomed"},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "a cat"}]}
        ])))
        .unwrap();
        assert_eq!(c.system.len(), 2);
        assert_eq!(c.system[1].text, "use metric");
        match &c.turns[0] {
            Msg::User(p) => {
                assert_eq!(p.len(), 3, "the empty text part is dropped");
                assert_eq!(
                    p[1],
                    Part::Image(
                        Source::Inline {
                            mime: "image/png".into(),
                            data: "iVBORw0K".into()
                        },
                        None
                    )
                );
                assert_eq!(
                    p[2],
                    Part::Image(
                        Source::Url {
                            url: "https://example.com/cat.webp?x=1".into(),
                            mime: "image/webp".into()
                        },
                        None
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        match &c.turns[1] {
            Msg::Assistant { parts, calls } => {
                assert!(parts.is_empty());
                assert_eq!(calls[0].args, json!({"q": 1}));
                assert_eq!(calls[1].args, json!({}));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.turns[2],
            Msg::Tool {
                id: "call_2".into(),
                name: "zoom".into(),
                content: "zoomed".into()
            }
        );
        assert_eq!(
            c.turns[3],
            Msg::Tool {
                id: "call_1".into(),
                name: "look".into(),
                content: "a cat".into()
            }
        );
    }

    #[test]
    fn bad_messages_name_the_field() {
        let cases = [
            (
                json!([{"role": "tool", "tool_call_id": "nope", "content": "x"}]),
                "messages[0].tool_call_id",
            ),
            (
                json!([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "video", "video": {}}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "function", "name": "f", "content": "x"}]),
                "messages[0].role",
            ),
            (
                json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]),
                "messages[0].content",
            ),
        ];
        for (m, param) in cases {
            let e = Conversation::parse(&msgs(m.clone())).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{m}");
        }
    }

    #[test]
    fn fields_tools_and_choices() {
        let body = json!({
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "stop": "END", "max_tokens": 9, "max_completion_tokens": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        });
        let b = body.as_object().unwrap();
        let t = tools(b).unwrap();
        assert_eq!(t[0].name, "f");
        assert_eq!(
            tool_choice(b, &t).unwrap(),
            Some(ToolChoice::Named("f".into()))
        );
        assert_eq!(stop_sequences(b), vec!["END"]);
        assert_eq!(max_tokens(b).unwrap(), Some(7));
        assert!(matches!(
            response_format(b).unwrap(),
            ResponseFormat::JsonSchema { .. }
        ));
        let none = json!({"tool_choice": "required"});
        assert_eq!(
            tool_choice(none.as_object().unwrap(), &[])
                .unwrap_err()
                .param
                .as_deref(),
            Some("tool_choice")
        );
        let bad = json!({"tools": [{"type": "code_interpreter"}]});
        assert_eq!(
            tools(bad.as_object().unwrap())
                .unwrap_err()
                .param
                .as_deref(),
            Some("tools[0].type")
        );
        let hot = json!({"temperature": 2.5});
        assert_eq!(
            temperature(hot.as_object().unwrap())
                .unwrap_err()
                .param
                .as_deref(),
            Some("temperature")
        );
    }

    #[test]
    fn embeddings_get_estimated_usage_and_base64() {
        let req = json!({"input": ["abcdefgh", "abc"], "encoding_format": "base64"});
        let body = Bytes::from(
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1.0,-2.5]}],"model":"m"}"#,
        );
        let (out, usage) = finish_embeddings(req.as_object().unwrap(), body.clone(), None);
        assert_eq!(usage, Some(Usage::new(3, 0)));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            raw,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        // Counted by the upstream and floats asked for: unchanged.
        let float = json!({"input": "x", "encoding_format": "float"});
        let (out, _) = finish_embeddings(
            float.as_object().unwrap(),
            body.clone(),
            Some(Usage::new(9, 0)),
        );
        assert_eq!(out, body);
    }
}
