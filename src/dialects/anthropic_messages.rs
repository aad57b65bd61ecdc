//! Anthropic Messages (`POST /v1/messages`): what Claude Code and the Anthropic SDKs speak.
//!
//! The request is translated into the canonical (OpenAI chat) request: the equivalent OpenAI
//! chat JSON is built and parsed, and the client's body is kept beside it for a pass-through
//! to an upstream that speaks Messages itself (format `anthropic`). Without the cache, the
//! translation is deferred: a light pass over the body (borrowed serde types) reads what the
//! proxy needs before an attempt and makes sure the translation would succeed, and the
//! translation runs only when a translated attempt needs it. Answers are written as an
//! Anthropic `message`, stream events as Anthropic's SSE events, errors in Anthropic's shape.
//!
//! Mapped for a translated upstream: `system` (string or text blocks), text, image (base64 or
//! URL), text documents, `tool_use`, `tool_result` (text or blocks; `is_error` prefixes the
//! text with `Error: `), `tools` (`input_schema` as `parameters`), `tool_choice`
//! (`auto`/`any`/`tool`/`none`, `disable_parallel_tool_use`), `max_tokens`, `temperature`,
//! `top_p`, `stop_sequences`, `stream`, `metadata.user_id` (as `user`), `system` turns inside
//! `messages` (Claude Code sends them for other models). Dropped: `thinking` blocks in history
//! and the `thinking` setting, `cache_control`, `context_management`, `top_k`, `service_tier`,
//! the rest of `metadata`, an empty `tools` list. Left out and noted as the request's
//! [`ChatRequest::untranslatable`] error (a 400 naming the field for any provider but a native
//! one): server tools (a tool with a `type` other than `custom`), non-text documents, non-text
//! blocks in a `tool_result`, unknown blocks.
//!
//! Tool call ids: an upstream's id `X` reaches the client as `toolu_X`, and `toolu_X` in the
//! client's history goes back upstream as `X`, so the upstream sees its own ids.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Map, Value};

use crate::api::{random_token, ChatRequest};
use crate::canonical::{Answer, AnswerWriter, EventWriter, Usage};
use crate::error::GatewayError;

use super::Dialect;

pub struct AnthropicMessages;

/// The prefix of every tool call id a client of this dialect sees.
const TOOL_ID_PREFIX: &str = "toolu_";

impl Dialect for AnthropicMessages {
    fn name(&self) -> &'static str {
        "anthropic.messages"
    }

    fn native_format(&self) -> &'static str {
        "anthropic"
    }

    /// Without the cache, a request that will translate cleanly is checked and read in one
    /// light pass ([`head`]) and translated only if an attempt needs it (a pass-through to
    /// a Messages upstream never does); anything else is translated now, for its error.
    fn parse(&self, body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError> {
        if !spans {
            if let Some(h) = head(body) {
                return Ok(ChatRequest::deferred(
                    h.model,
                    h.stream,
                    h.stream,
                    true,
                    body.clone(),
                    translate,
                ));
            }
        }
        translate_with(body, spans)
    }

    fn answers(&self) -> &dyn AnswerWriter {
        &MessageWriter
    }

    fn events(&self, model: &str) -> Box<dyn EventWriter> {
        Box::new(MessageEvents::new(model))
    }

    fn status(&self, e: &GatewayError) -> u16 {
        if error_type(e) == "overloaded_error" && e.upstream {
            529
        } else {
            e.status
        }
    }

    fn keepalive(&self) -> Option<Bytes> {
        Some(Bytes::from_static(
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n",
        ))
    }

    fn count_tokens_body(&self, input_tokens: u64) -> Option<Bytes> {
        Some(Bytes::from(format!("{{\"input_tokens\":{input_tokens}}}")))
    }

    /// Anthropic's list: `{"data":[{"type":"model","id","display_name","created_at"}],
    /// "has_more","first_id","last_id"}`.
    fn model_list(&self, openai_list: &Bytes) -> Bytes {
        let v: Value = serde_json::from_slice(openai_list).unwrap_or(Value::Null);
        let data: Vec<Value> = v
            .get("data")
            .and_then(Value::as_array)
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| {
                        let id = m.get("id")?.as_str()?;
                        let created = m.get("created").and_then(Value::as_u64).unwrap_or(0);
                        Some(json!({
                            "type": "model",
                            "id": id,
                            "display_name": id,
                            "created_at": rfc3339(created),
                        }))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        Bytes::from(
            json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
                .to_string(),
        )
    }

    fn error_body(&self, e: &GatewayError) -> Bytes {
        Bytes::from(error_json(e).to_string())
    }

    fn error_event(&self, e: &GatewayError) -> Bytes {
        let mut out = BytesMut::with_capacity(128 + e.message.len());
        event(&mut out, "error", &error_json(e));
        out.freeze()
    }
}

/// A Unix time as RFC 3339 (`2025-05-22T00:00:00Z`).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Anthropic's error `type` for an error: an Anthropic upstream's own, else by status.
fn error_type(e: &GatewayError) -> &'static str {
    const TYPES: &[&str] = &[
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    ];
    // An Anthropic upstream's type is kept as the error's `code`.
    if let Some(t) = e
        .code
        .as_deref()
        .and_then(|c| TYPES.iter().find(|t| **t == c))
    {
        return t;
    }
    match e.status {
        400 | 405 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error body; the field at fault (Anthropic's errors have no `param`) leads the
/// message, as in Anthropic's own (`tools.0.type: ...`).
fn error_json(e: &GatewayError) -> Value {
    let message = match e.param.as_deref().filter(|p| !p.is_empty()) {
        Some(p) if !e.message.starts_with(p) => format!("{p}: {}", e.message),
        _ => e.message.clone(),
    };
    json!({"type": "error", "error": {"type": error_type(e), "message": message}})
}

// ---------------------------------------------------------------------------------------------
// Request: Anthropic Messages -> OpenAI chat

/// The canonical request of a Messages body, the body kept for a pass-through.
fn translate_with(body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError> {
    let (chat, untranslatable) = to_chat(body)?;
    let req = ChatRequest::parse_with(&chat, spans)?;
    Ok(req.with_native_body(body.clone(), untranslatable))
}

/// [`translate_with`] for a deferred request (no cache, so no spans).
fn translate(body: &Bytes) -> Result<ChatRequest, GatewayError> {
    translate_with(body, false)
}

/// What the proxy reads of a Messages request before any attempt: its model, and whether
/// it streams (a stream also asks for usage, and parallel tool calls stay allowed).
#[derive(Debug)]
struct Head {
    model: String,
    stream: bool,
}

/// The [`Head`] of a body [`to_chat`] and the canonical parse would both accept: read with
/// borrowed types, message text and tool schemas skipped, no tree built. `None` when the
/// body is anything else or this pass is unsure (then the full translation runs and words
/// the error), so a deferred request fails nowhere a translated one would not.
fn head(body: &[u8]) -> Option<Head> {
    use light::*;
    // A derived struct would also take an array: only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let h: Obj<Request> = serde_json::from_slice(body).ok()?;
    let h = h.0;
    let model = h.model?.0;
    if model.trim().is_empty() {
        return None;
    }
    let first = |r: Option<&RawValue>| r.and_then(|r| r.get().bytes().next());
    if !matches!(first(h.system), None | Some(b'"' | b'[')) {
        return None;
    }
    if !matches!(first(h.tools), None | Some(b'[')) {
        return None;
    }
    if let Some(n) = h.max_tokens.0 {
        n.get().parse::<u64>().ok()?;
    }
    if let Some(Obj(tc)) = &h.tool_choice {
        let ok = match tc.kind.as_ref().map(|k| &*k.0) {
            Some("auto" | "any" | "none") => true,
            Some("tool") => tc.name.is_some(),
            _ => false,
        };
        // `disable_parallel_tool_use` counts only with tools that translate: left to the
        // full translation.
        if !ok || tc.disable_parallel_tool_use == Some(true) {
            return None;
        }
    }
    // The canonical request needs at least one message.
    let mut some_message = false;
    for Obj(turn) in h.messages? {
        let role = turn.role?.0;
        match (&*role, turn.content) {
            ("system", Some(Content::Blocks(blocks))) => {
                if blocks.iter().any(|b| !b.0.is_type("text")) {
                    return None;
                }
                some_message = true;
            }
            ("system", _) => some_message = true,
            ("user" | "assistant", Some(Content::Text)) => some_message = true,
            ("assistant", Some(Content::Blocks(_))) => some_message = true,
            ("user", Some(Content::Blocks(blocks))) => {
                for Obj(b) in &blocks {
                    if b.is_type("tool_result")
                        && !matches!(first(b.content), None | Some(b'"' | b'['))
                    {
                        return None;
                    }
                    if b.is_type("text") || b.is_type("tool_result") {
                        some_message = true;
                    }
                }
            }
            _ => return None,
        }
    }
    if !some_message {
        return None;
    }
    Some(Head {
        model: model.into_owned(),
        stream: h.stream.unwrap_or(false),
    })
}

/// Borrowed serde types for [`head`]: each reads only the fields it names (others are
/// skipped unparsed); a key sent twice or a value of another type is a deserialization
/// error, which [`head`] answers with `None`.
mod light {
    use std::marker::PhantomData;

    use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    pub use serde_json::value::RawValue;

    pub(crate) use crate::api::CowStr;

    #[derive(Deserialize)]
    pub struct Request<'a> {
        #[serde(borrow)]
        pub model: Option<CowStr<'a>>,
        pub stream: Option<bool>,
        #[serde(borrow)]
        pub system: Option<&'a RawValue>,
        #[serde(borrow)]
        pub messages: Option<Vec<Obj<Turn<'a>>>>,
        #[serde(default, borrow)]
        pub max_tokens: Present<'a>,
        // Read for their type only (the canonical parse checks them).
        #[allow(dead_code)]
        pub temperature: Option<f64>,
        #[allow(dead_code)]
        pub top_p: Option<f64>,
        #[allow(dead_code)]
        #[serde(borrow)]
        pub stop_sequences: Option<Vec<CowStr<'a>>>,
        #[serde(borrow)]
        pub tools: Option<&'a RawValue>,
        #[serde(borrow)]
        pub tool_choice: Option<Obj<ToolChoice<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct ToolChoice<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        pub name: Option<CowStr<'a>>,
        pub disable_parallel_tool_use: Option<bool>,
    }

    #[derive(Deserialize)]
    pub struct Turn<'a> {
        #[serde(borrow)]
        pub role: Option<CowStr<'a>>,
        #[serde(borrow)]
        pub content: Option<Content<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Block<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        pub content: Option<&'a RawValue>,
    }

    impl Block<'_> {
        pub fn is_type(&self, t: &str) -> bool {
            self.kind.as_ref().is_some_and(|k| k.0 == t)
        }
    }

    /// A value that was sent, `null` included (`None`: absent).
    #[derive(Default)]
    pub struct Present<'a>(pub Option<&'a RawValue>);

    impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            <&'a RawValue>::deserialize(d).map(|r| Present(Some(r)))
        }
    }

    /// A turn's content: a string, blocks, or anything else (null, a number, an object).
    pub enum Content<'a> {
        Text,
        Blocks(Vec<Obj<Block<'a>>>),
        Other,
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Content<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("message content")
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                    Ok(Content::Text)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                    Ok(Content::Other)
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                    Ok(Content::Other)
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                    Ok(Content::Other)
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                    Ok(Content::Other)
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                    Ok(Content::Other)
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Content::Other)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    let mut blocks = Vec::new();
                    while let Some(b) = seq.next_element()? {
                        blocks.push(b);
                    }
                    Ok(Content::Blocks(blocks))
                }
            }
            d.deserialize_any(V(PhantomData))
        }
    }

    /// `T` read from a JSON object only (a derived struct would also take an array).
    pub struct Obj<T>(pub T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Obj<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                    T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
                }
            }
            d.deserialize_map(V(PhantomData))
        }
    }
}

fn bad(field: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(field, message)
}

/// The OpenAI chat JSON equivalent to a Messages request, and the first part it had to leave
/// out (a 400 for any upstream but a native one). Errors are requests no upstream would take.
fn to_chat(body: &[u8]) -> Result<(Vec<u8>, Option<GatewayError>), GatewayError> {
    let mut left_out = None;
    let chat = convert(body, &mut left_out)?;
    Ok((chat, left_out))
}

/// Notes the first part a translation leaves out.
fn leave_out(left_out: &mut Option<GatewayError>, e: GatewayError) {
    if left_out.is_none() {
        *left_out = Some(e);
    }
}

fn convert(body: &[u8], left_out: &mut Option<GatewayError>) -> Result<Vec<u8>, GatewayError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad("", format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(bad("", "the request body must be a JSON object"));
    };
    let mut out = Map::new();
    if let Some(m) = o.get("model") {
        out.insert("model".into(), m.clone());
    }
    let mut messages = Vec::new();
    match o.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => match blocks_text(blocks, "system") {
            Ok(text) => messages.push(json!({"role": "system", "content": text})),
            Err(e) => leave_out(left_out, e),
        },
        Some(_) => return Err(bad("system", "'system' must be a string or an array")),
    }
    let Some(Value::Array(turns)) = o.get("messages") else {
        return Err(bad(
            "messages",
            "'messages' is required and must be an array",
        ));
    };
    for (i, turn) in turns.iter().enumerate() {
        convert_turn(turn, i, &mut messages, left_out)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    match o.get("max_tokens") {
        Some(n) if n.is_u64() => {
            out.insert("max_tokens".into(), n.clone());
        }
        Some(_) => return Err(bad("max_tokens", "'max_tokens' must be an integer")),
        // Required by Anthropic's /v1/messages (which says so itself on a pass-through), not
        // by count_tokens; a translated provider applies its own default.
        None => {}
    }
    for k in ["temperature", "top_p"] {
        if let Some(x) = o.get(k).filter(|x| !x.is_null()) {
            out.insert(k.into(), x.clone());
        }
    }
    if let Some(s) = o.get("stop_sequences").filter(|x| !x.is_null()) {
        out.insert("stop".into(), s.clone());
    }
    if let Some(s) = o.get("stream").filter(|x| !x.is_null()) {
        out.insert("stream".into(), s.clone());
        if s == &Value::Bool(true) {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(u) = o
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|u| u.is_string())
    {
        out.insert("user".into(), u.clone());
    }
    let mut has_tools = false;
    match o.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            let mut list = Vec::with_capacity(tools.len());
            for (i, t) in tools.iter().enumerate() {
                match convert_tool(t, i) {
                    Ok(t) => list.push(t),
                    Err(e) => leave_out(left_out, e),
                }
            }
            if !list.is_empty() {
                has_tools = true;
                out.insert("tools".into(), Value::Array(list));
            }
        }
        Some(_) => return Err(bad("tools", "'tools' must be an array")),
    }
    if let Some(tc) = o.get("tool_choice").filter(|x| !x.is_null()) {
        let kind = tc.get("type").and_then(Value::as_str).unwrap_or("");
        let choice = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                let name = tc.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad(
                        "tool_choice.name",
                        "tool_choice of type 'tool' needs a 'name'",
                    )
                })?;
                json!({"type": "function", "function": {"name": name}})
            }
            other => {
                return Err(bad(
                    "tool_choice.type",
                    format!("unknown tool_choice type {other:?}"),
                ))
            }
        };
        if has_tools {
            out.insert("tool_choice".into(), choice);
            if tc.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))
}

/// The text of text blocks (`system`, tool results), joined by blank lines.
fn blocks_text(blocks: &[Value], field: &str) -> Result<String, GatewayError> {
    let mut text = String::new();
    for (i, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            other => {
                return Err(bad(
                    &format!("{field}[{i}].type"),
                    format!("a {other:?} block cannot be translated here: only text blocks"),
                ))
            }
        }
    }
    Ok(text)
}

/// An id the client saw (`toolu_X`) as its upstream issued it (`X`).
fn upstream_tool_id(id: &str) -> &str {
    id.strip_prefix(TOOL_ID_PREFIX).unwrap_or(id)
}

/// One Messages turn as OpenAI messages (a user turn's tool results become `tool` messages).
fn convert_turn(
    turn: &Value,
    i: usize,
    out: &mut Vec<Value>,
    left_out: &mut Option<GatewayError>,
) -> Result<(), GatewayError> {
    let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
    if role == "system" {
        // Claude Code puts `system` turns in `messages` for models that are not Claude's.
        let content = match turn.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(b)) => blocks_text(b, &format!("messages[{i}].content"))?,
            _ => String::new(),
        };
        out.push(json!({"role": "system", "content": content}));
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(bad(
            &format!("messages[{i}].role"),
            format!(
                "messages[{i}].role must be 'user' or 'assistant', not {}",
                turn.get("role").unwrap_or(&Value::Null)
            ),
        ));
    }
    let blocks = match turn.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(bad(
                &format!("messages[{i}].content"),
                "content must be a string or an array of blocks",
            ))
        }
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                parts.push(json!({"type": "text", "text": t}));
            }
            "image" if role == "user" => match image_part(b, &at()) {
                Ok(p) => parts.push(p),
                Err(e) => leave_out(left_out, e),
            },
            "document" if role == "user" => {
                let src = b.get("source").unwrap_or(&Value::Null);
                match src.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = src.get("data").and_then(Value::as_str).unwrap_or("");
                        parts.push(json!({"type": "text", "text": t}));
                    }
                    _ => leave_out(
                        left_out,
                        bad(
                            &format!("{}.source", at()),
                            "only text documents can be sent to this provider",
                        ),
                    ),
                }
            }
            "tool_use" if role == "assistant" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": upstream_tool_id(id),
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            "tool_result" if role == "user" => {
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                let mut text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(c)) => {
                        let texts: Vec<&Value> = c
                            .iter()
                            .filter(|x| x.get("type").and_then(Value::as_str) == Some("text"))
                            .collect();
                        if texts.len() != c.len() {
                            leave_out(
                                left_out,
                                bad(
                                    &format!("{}.content", at()),
                                    "only text blocks in a tool_result can be sent to this provider",
                                ),
                            );
                        }
                        let texts: Vec<Value> = texts.into_iter().cloned().collect();
                        blocks_text(&texts, &format!("{}.content", at()))?
                    }
                    Some(_) => {
                        return Err(bad(
                            &format!("{}.content", at()),
                            "tool_result content must be a string or an array",
                        ))
                    }
                };
                if b.get("is_error") == Some(&Value::Bool(true)) {
                    text.insert_str(0, "Error: ");
                }
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": upstream_tool_id(id),
                    "content": text,
                }));
            }
            // Reasoning of earlier turns: no translated provider takes it back.
            "thinking" | "redacted_thinking" => {}
            other => leave_out(
                left_out,
                bad(
                    &format!("{}.type", at()),
                    format!("a {other:?} block in a {role} turn cannot be sent to this provider"),
                ),
            ),
        }
    }
    if role == "assistant" {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(calls);
        }
        out.push(m);
    } else if !parts.is_empty() {
        let all_text = parts.iter().all(|p| p["type"] == "text");
        if all_text && parts.len() == 1 {
            let text = parts[0]["text"].clone();
            out.push(json!({"role": "user", "content": text}));
        } else {
            out.push(json!({"role": "user", "content": parts}));
        }
    }
    Ok(())
}

fn image_part(b: &Value, at: &str) -> Result<Value, GatewayError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = src.get("media_type").and_then(Value::as_str).unwrap_or("");
            let data = src.get("data").and_then(Value::as_str).unwrap_or("");
            format!("data:{media};base64,{data}")
        }
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => {
            return Err(bad(
                &format!("{at}.source"),
                "an image source must be base64 or url",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn convert_tool(t: &Value, i: usize) -> Result<Value, GatewayError> {
    let kind = t.get("type").and_then(Value::as_str);
    if !matches!(kind, None | Some("custom")) {
        return Err(bad(
            &format!("tools[{i}].type"),
            format!(
                "server tool {:?} is only available on Anthropic: this provider cannot run it",
                kind.unwrap_or("")
            ),
        ));
    }
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&format!("tools[{i}].name"), "a tool needs a name"))?;
    let mut f = json!({"name": name});
    if let Some(d) = t.get("description").filter(|d| d.is_string()) {
        f["description"] = d.clone();
    }
    f["parameters"] = t
        .get("input_schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(json!({"type": "function", "function": f}))
}

// ---------------------------------------------------------------------------------------------
// Answers

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn message_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("msg_") {
        upstream_id.to_string()
    } else if upstream_id.is_empty() {
        format!("msg_{}", random_token(24))
    } else {
        format!("msg_{upstream_id}")
    }
}

fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    let cached = u.cached_tokens.min(u.prompt_tokens);
    json!({
        "input_tokens": u.prompt_tokens - cached,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": cached,
    })
}

/// A tool call's JSON arguments as the block's `input` (an object even when the upstream sent
/// none or sent something that does not parse).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// Writes canonical answers as an Anthropic `message` (the first answer: Messages has no `n`).
pub struct MessageWriter;

impl AnswerWriter for MessageWriter {
    fn answer_body(
        &self,
        id: &str,
        _created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> Bytes {
        let empty = Answer::default();
        let a = answers.first().unwrap_or(&empty);
        let mut content = Vec::with_capacity(2 + a.tool_calls.len());
        // Reasoning leads, as a `thinking` block (without a signature: only Anthropic signs).
        if let Some(r) = a.reasoning.as_deref().filter(|r| !r.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
        }
        if let Some(t) = a.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
        for c in &a.tool_calls {
            content.push(json!({
                "type": "tool_use",
                "id": format!("{TOOL_ID_PREFIX}{}", c.id),
                "name": c.name,
                "input": tool_input(&c.arguments),
            }));
        }
        let body = json!({
            "id": message_id(id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(&a.finish_reason),
            "stop_sequence": null,
            "usage": usage_json(usage),
        });
        Bytes::from(body.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Stream events

fn event(out: &mut BytesMut, name: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    let mut w = out.writer();
    // Writing a `Value` into a buffer cannot fail.
    let _ = serde_json::to_writer(&mut w, data);
    w.into_inner().put_slice(b"\n\n");
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    None,
    Thinking,
    Text,
    Tool(u32),
}

/// Writes canonical stream events as Anthropic's: `message_start`, one content block per text
/// run or tool call (`content_block_start`/`_delta`/`_stop`), then `message_delta` (stop
/// reason, usage) and `message_stop` at the end. Only the first choice is written.
pub struct MessageEvents {
    model: String,
    id: String,
    started: bool,
    /// Content blocks started so far (the next block's index).
    blocks: u32,
    open: Open,
    /// Block index of each tool call, by its position among the answer's calls.
    tools: Vec<(u32, u32)>,
    stop: Option<&'static str>,
    usage: Option<Usage>,
}

impl MessageEvents {
    pub fn new(model: &str) -> Self {
        MessageEvents {
            model: model.to_string(),
            id: String::new(),
            started: false,
            blocks: 0,
            open: Open::None,
            tools: Vec::new(),
            stop: None,
            usage: None,
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let id = message_id(&self.id);
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open != Open::None {
            let index = self.blocks - 1;
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
            self.open = Open::None;
        }
    }

    fn block_start(&mut self, out: &mut BytesMut, block: Value) -> u32 {
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }
}

impl EventWriter for MessageEvents {
    fn id(&mut self, upstream_id: &str) {
        if self.id.is_empty() {
            self.id = upstream_id.to_string();
        }
    }

    fn role(&mut self, out: &mut BytesMut, choice: u32) {
        if choice == 0 {
            self.start(out);
        }
    }

    fn text(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        if choice != 0 || text.is_empty() {
            return;
        }
        self.start(out);
        if self.open != Open::Text {
            self.block_start(out, json!({"type": "text", "text": ""}));
            self.open = Open::Text;
        }
        let index = self.blocks - 1;
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        );
    }

    /// Reasoning becomes a `thinking` block (without a signature: only Anthropic signs).
    fn reasoning(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        if choice != 0 || text.is_empty() {
            return;
        }
        self.start(out);
        if self.open != Open::Thinking {
            self.block_start(
                out,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            );
            self.open = Open::Thinking;
        }
        let index = self.blocks - 1;
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": text}}),
        );
    }

    fn tool_start(&mut self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str) {
        if choice != 0 {
            return;
        }
        self.start(out);
        let block = self.block_start(
            out,
            json!({"type": "tool_use", "id": format!("{TOOL_ID_PREFIX}{id}"), "name": name, "input": {}}),
        );
        self.open = Open::Tool(index);
        self.tools.push((index, block));
    }

    fn tool_args(&mut self, out: &mut BytesMut, choice: u32, index: u32, fragment: &str) {
        if choice != 0 || fragment.is_empty() {
            return;
        }
        let Some(&(_, block)) = self.tools.iter().rev().find(|(i, _)| *i == index) else {
            return;
        };
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
        );
    }

    fn finish(&mut self, out: &mut BytesMut, choice: u32, reason: &str) {
        if choice != 0 {
            return;
        }
        self.start(out);
        self.close(out);
        self.stop = Some(stop_reason(reason));
    }

    fn usage(&mut self, _out: &mut BytesMut, usage: &Usage) {
        self.usage = Some(*usage);
    }

    fn done(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close(out);
        let stop = self.stop.unwrap_or("end_turn");
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage_json(self.usage.as_ref())}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::ToolCall;

    fn chat(v: Value) -> Result<Value, GatewayError> {
        let (bytes, left_out) = to_chat(v.to_string().as_bytes())?;
        match left_out {
            Some(e) => Err(e),
            None => Ok(serde_json::from_slice(&bytes).unwrap()),
        }
    }

    #[test]
    fn request_translation() {
        let v = chat(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 512,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_call_1", "name": "get", "input": {"q": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_call_1", "content": [{"type": "text", "text": "42"}], "is_error": true},
                    {"type": "text", "text": "and?"}
                ]},
                {"role": "system", "content": [{"type": "text", "text": "reminder"}]}
            ],
            "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_k": 3,
            "stream": true,
            "metadata": {"user_id": "u1"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "context_management": {"edits": []}
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "Error: 42"},
                    {"role": "user", "content": "and?"},
                    {"role": "system", "content": "reminder"}
                ],
                "max_tokens": 512,
                "temperature": 0.5,
                "stop": ["END"],
                "stream": true,
                "stream_options": {"include_usage": true},
                "user": "u1",
                "tools": [{"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": "required",
                "parallel_tool_calls": false
            })
        );
        // What the proxy gets: a canonical request, the client's body kept.
        let body = Bytes::from_static(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
        );
        let req = AnthropicMessages.parse(&body, true).unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.native_body(), Some(&body));
        assert!(req.body().get("tools").is_none());
        assert!(req.untranslatable().is_none());
        // A server tool: fine for Anthropic itself, a 400 for any other upstream.
        let body = Bytes::from_static(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        );
        let req = AnthropicMessages.parse(&body, false).unwrap();
        let e = req.untranslatable().unwrap();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("tools[0].type")));
    }

    #[test]
    fn the_light_pass_defers_only_what_translates() {
        let bodies = [
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","stream":true,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x"}]}]},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"auto"}}"#,
            r#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"s"}]}],"stop_sequences":["x"],"temperature":1,"top_p":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
            // Each of these the light pass leaves to the full translation.
            r#"[{"model":"m","messages":[]}]"#,
            r#"{"model":" ","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[]}]}"#,
            r#"{"model":"m","messages":[["user","hi"]]}"#,
            r#"{"model":"m","messages":[{"role":"tool","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":null}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":[{"type":"image"}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","content":5}]}]}"#,
            r#"{"model":"m","max_tokens":null,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","temperature":"hot","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","stop_sequences":[1],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","system":5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","tools":{},"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","tool_choice":{"type":"tool"},"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","tool_choice":{"type":"any","disable_parallel_tool_use":true},"tools":[{"name":"f"}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","model":"n","messages":[{"role":"user","content":"hi"}]}"#,
        ];
        for (i, b) in bodies.iter().enumerate() {
            let body = Bytes::from_static(b.as_bytes());
            let eager = translate_with(&body, false);
            let lazy = AnthropicMessages.parse(&body, false);
            assert_eq!(head(b.as_bytes()).is_some(), i < 4, "{b}");
            match (eager, lazy) {
                (Ok(e), Ok(l)) => {
                    assert_eq!(
                        (&e.model, e.stream, e.include_usage, e.parallel_tool_calls()),
                        (&l.model, l.stream, l.include_usage, l.parallel_tool_calls()),
                        "{b}"
                    );
                    assert_eq!(e.messages_raw(), l.messages_raw(), "{b}");
                    assert_eq!(e.body(), l.body(), "{b}");
                    assert_eq!(
                        e.untranslatable().map(|e| e.param.clone()),
                        l.untranslatable().map(|e| e.param.clone()),
                        "{b}"
                    );
                    assert_eq!(l.native_body(), Some(&body));
                }
                (Err(e), Err(l)) => {
                    assert_eq!((e.status, &e.param), (l.status, &l.param), "{b}")
                }
                (e, l) => panic!("{b}: {:?} / {:?}", e.is_ok(), l.is_ok()),
            }
        }
    }

    #[test]
    fn untranslatable_requests_are_400s_naming_the_field() {
        let base = |extra: Value| {
            let mut v = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            chat(v).unwrap_err()
        };
        let e = base(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}));
        assert_eq!((e.status, e.param.as_deref()), (400, Some("tools[0].type")));
        let e = base(json!({"max_tokens": null}));
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = base(
            json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}}]}]}),
        );
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].source"));
        let e = chat(json!({"model": "m", "max_tokens": 1})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn errors_in_anthropic_shape() {
        let d = AnthropicMessages;
        let e = GatewayError::not_found("no such model");
        let v: Value = serde_json::from_slice(&d.error_body(&e)).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "no such model"}})
        );
        let mut e = crate::providers::anthropic::map_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        e.upstream = true;
        assert_eq!(d.status(&e), 529);
        let ev = String::from_utf8(d.error_event(&e).to_vec()).unwrap();
        assert!(ev.starts_with("event: error\ndata: {"), "{ev}");
        assert!(
            ev.contains("overloaded_error") && ev.ends_with("\n\n"),
            "{ev}"
        );
        let e = GatewayError::new(429, "rate_limit_error", None, "slow");
        assert_eq!(error_type(&e), "rate_limit_error");
        let e = GatewayError::internal("x");
        assert_eq!(error_type(&e), "api_error");
    }

    fn answer() -> Answer {
        Answer {
            reasoning: None,
            content: Some("Hi.".into()),
            tool_calls: vec![ToolCall {
                id: "call_9".into(),
                name: "get".into(),
                arguments: "{\"q\":1}".into(),
            }],
            finish_reason: "tool_calls".into(),
            usage: None,
        }
    }

    #[test]
    fn model_lists_in_anthropic_shape() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_747_872_000), "2025-05-22T00:00:00Z");
        assert_eq!(rfc3339(951_825_599), "2000-02-29T11:59:59Z");
        let list = Bytes::from_static(
            br#"{"object":"list","data":[{"id":"anthropic/claude-x","object":"model","created":1747872000,"owned_by":"anthropic"},{"id":"echo/test","object":"model","created":0,"owned_by":"echo"}]}"#,
        );
        let v: Value = serde_json::from_slice(&AnthropicMessages.model_list(&list)).unwrap();
        assert_eq!(
            v,
            json!({"data": [
                {"type": "model", "id": "anthropic/claude-x", "display_name": "anthropic/claude-x", "created_at": "2025-05-22T00:00:00Z"},
                {"type": "model", "id": "echo/test", "display_name": "echo/test", "created_at": "1970-01-01T00:00:00Z"}
            ], "has_more": false, "first_id": "anthropic/claude-x", "last_id": "echo/test"})
        );
    }

    #[test]
    fn answers_are_messages() {
        let mut u = Usage::new(10, 3);
        u.cached_tokens = 4;
        let body = MessageWriter.answer_body("chatcmpl-1", 0, "m", &[answer()], Some(&u));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "m",
                "content": [
                    {"type": "text", "text": "Hi."},
                    {"type": "tool_use", "id": "toolu_call_9", "name": "get", "input": {"q": 1}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 6, "output_tokens": 3, "cache_read_input_tokens": 4}
            })
        );
    }

    fn names(out: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.split_once('\n').unwrap();
                let name = head.strip_prefix("event: ").unwrap().to_string();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["type"], name.as_str());
                (name, v)
            })
            .collect()
    }

    #[test]
    fn events_make_an_anthropic_stream() {
        let mut w = MessageEvents::new("m");
        let mut out = BytesMut::new();
        super::super::replay(&mut w, &mut out, &answer(), false);
        let evs = names(&out);
        let kinds: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[4].1["content_block"]["id"], "toolu_call_9");
        assert_eq!(evs[4].1["index"], 1);
        assert_eq!(evs[5].1["delta"]["partial_json"], "{\"q\":1}");
        assert_eq!(evs[7].1["delta"]["stop_reason"], "tool_use");
    }
}
