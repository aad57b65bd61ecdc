//! OpenAI Responses (`POST /v1/responses`): what `client.responses.create(...)`, Codex CLI and
//! the Agents SDK speak.
//!
//! A host that speaks Responses itself gets the body as sent (`responses_head.rs` reads what
//! the proxy needs; see `providers/responses_passthrough.rs`). For every other, the request is
//! translated into the canonical (OpenAI chat) request: the equivalent chat JSON is built and parsed, the client's body kept
//! beside it. Answers are written as a Responses `response` object, stream events as the
//! Responses SSE stream (`event:` lines, `type` and `sequence_number` in every payload), errors
//! in OpenAI's shape; a stream that fails after its first event ends with `response.failed`.
//!
//! Translated: `input` (a string, or items: messages with role `user`/`system`/`developer`/
//! `assistant` and content a string or `input_text`/`input_image`/`output_text`/`refusal`
//! parts; `function_call` and `function_call_output` items), `instructions`, function `tools`,
//! `namespace` tools (their function tools offered flat, under their own names: calls come back
//! without a `namespace`, and a `namespace` on a `function_call` in the history is dropped),
//! `tool_choice`, `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`,
//! `text.format` (as `response_format`), `stream`. `developer` messages and `instructions` go
//! as `system` messages (every chat upstream takes those). Dropped: `store`, `metadata`, `user`,
//! `safety_identifier`, `include`, `prompt_cache_key`, `truncation`, `service_tier`,
//! `client_metadata`, `stream_options`, `text.verbosity`, `reasoning`, `reasoning` input items.
//! Anything else that is set (`previous_response_id`, `conversation`, `background`,
//! `max_tool_calls`, tools other than functions, `input_file` parts, ...) is a 400 naming it.
//!
//! Tool call ids: a `function_call`'s `call_id` is the upstream's own tool call id, so a
//! `function_call_output` goes back upstream with the id the upstream gave.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::api::{random_token, unix_now, ChatRequest};
use crate::canonical::{Answer, AnswerWriter, EventWriter, StreamFailure, Usage};
use crate::error::GatewayError;

use super::Dialect;

pub struct OpenAiResponses;

/// The wire format that is this dialect on the wire: OpenAI's own `/v1/responses`, spoken by
/// OpenAI and by OpenAI-compatible hosts switched on with `<PROVIDER>_NATIVE_RESPONSES`
/// (`ProviderConfig::native_responses`); between them requests and answers pass through.
pub const NATIVE_FORMAT: &str = crate::config::providers::RESPONSES_FORMAT;

impl Dialect for OpenAiResponses {
    fn name(&self) -> &'static str {
        "openai.responses"
    }

    fn native_format(&self) -> &'static str {
        NATIVE_FORMAT
    }

    /// A request a pass-through could send is never refused here: when the translation
    /// fails (or is not needed yet), the request is deferred and only a translated attempt
    /// answers with the translation's 400.
    fn parse(&self, body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError> {
        parse_with_head(body, super::responses_head::read(body), spans)
    }

    fn answers(&self) -> &dyn AnswerWriter {
        &ResponseWriter
    }

    fn events(&self, model: &str) -> Box<dyn EventWriter> {
        Box::new(ResponseEvents::new(model))
    }

    fn error_body(&self, e: &GatewayError) -> Bytes {
        e.body()
    }

    /// A native stream cut short (a translated one's writer ends a failed stream itself,
    /// [`StreamFailure`], same response id, next sequence number): a `response.failed` for a
    /// response of its own.
    fn error_event(&self, e: &GatewayError) -> Bytes {
        let shared = Shared::default();
        shared.failed(error_code(e), &e.message)
    }
}

/// [`Dialect::parse`] with the request's head already read (`None`: not a request a
/// pass-through could send; the translation words the error).
pub fn parse_with_head(
    body: &Bytes,
    head: Option<super::responses_head::Head>,
    spans: bool,
) -> Result<ChatRequest, GatewayError> {
    if let (false, Some(h)) = (spans, &head) {
        return Ok(h.deferred(body, translate));
    }
    match translate_with(body, spans) {
        Ok(req) => Ok(req),
        Err(e) => match head {
            Some(h) => Ok(h.deferred(body, translate)),
            None => Err(e),
        },
    }
}

fn translate_with(body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError> {
    let chat = to_chat(body)?;
    let req = ChatRequest::parse_with(&chat, spans)?;
    Ok(req.with_native_body(body.clone(), None))
}

/// [`translate_with`] for a deferred request (no spans).
fn translate(body: &Bytes) -> Result<ChatRequest, GatewayError> {
    translate_with(body, false)
}

/// The `code` of a `response.failed` event's error: the upstream's own code, else the type.
fn error_code(e: &GatewayError) -> &str {
    e.code.as_deref().unwrap_or(e.kind.as_str())
}

// ---------------------------------------------------------------------------------------------
// Request: Responses -> OpenAI chat

fn bad(field: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(field, message)
}

/// Fields that cannot change the answer (or only hint at its style): accepted and dropped.
const DROPPED: &[&str] = &[
    "store",
    "metadata",
    "user",
    "safety_identifier",
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "truncation",
    "service_tier",
    "client_metadata",
    "stream_options",
    "reasoning",
];

/// Fields translated into the chat request.
const TRANSLATED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "text",
    "stream",
];

/// The OpenAI chat JSON equivalent to a Responses request; a 400 naming the field for what it
/// cannot carry. Built as text: strings (the conversation, tool schemas) are copied as the
/// client wrote them, escapes included, without a JSON tree of the request.
fn to_chat(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let top = parse_top(body)?;
    let get = |key: &str| {
        top.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| *v)
            .map(RawValue::get)
            .filter(|v| *v != "null")
    };
    for (k, v) in &top.fields {
        let k = k.as_ref();
        if v.is_some_and(|v| v.get() == "null") || DROPPED.contains(&k) || TRANSLATED.contains(&k) {
            continue;
        }
        return Err(bad(
            k,
            format!("'{k}' is not supported by the gateway's Responses translation"),
        ));
    }
    let mut out = String::with_capacity(body.len() + 256);
    out.push('{');
    if let Some(m) = get("model") {
        out.push_str("\"model\":");
        out.push_str(m);
        out.push(',');
    }
    let mut messages: Vec<Msg> = Vec::new();
    if let Some(s) = get("instructions") {
        if !s.starts_with('"') {
            return Err(bad("instructions", "'instructions' must be a string"));
        }
        messages.push(Msg::new("system", Content::Raw(s)));
    }
    match &top.input {
        Some(Input::Text(s)) => messages.push(Msg::new("user", Content::Raw(s))),
        Some(Input::Items(items)) => {
            for (i, item) in items.iter().enumerate() {
                convert_item(item, i, &mut messages)?;
            }
        }
        _ => {
            return Err(bad(
                "input",
                "'input' is required and must be a string or an array of items",
            ))
        }
    }
    out.push_str("\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        m.write(&mut out);
    }
    out.push(']');
    if let Some(n) = get("max_output_tokens") {
        if n.parse::<u64>().is_err() {
            return Err(bad(
                "max_output_tokens",
                "'max_output_tokens' must be an integer",
            ));
        }
        push_field(&mut out, "max_tokens", n);
    }
    for k in ["temperature", "top_p"] {
        if let Some(x) = get(k) {
            push_field(&mut out, k, x);
        }
    }
    if let Some(s) = get("stream") {
        push_field(&mut out, "stream", s);
        if s == "true" {
            push_field(&mut out, "stream_options", "{\"include_usage\":true}");
        }
    }
    if let Some(t) = get("text") {
        let Ok(Value::Object(t)) = serde_json::from_str::<Value>(t) else {
            return Err(bad("text", "'text' must be an object"));
        };
        for (k, x) in &t {
            match k.as_str() {
                "format" => {
                    if let Some(rf) = response_format(x)? {
                        push_field(&mut out, "response_format", &rf.to_string());
                    }
                }
                "verbosity" => {}
                _ if x.is_null() => {}
                other => {
                    return Err(bad(
                        &format!("text.{other}"),
                        format!(
                        "'text.{other}' is not supported by the gateway's Responses translation"
                    ),
                    ))
                }
            }
        }
    }
    let mut has_tools = false;
    if let Some(list) = get("tools") {
        let tools: Vec<Tool> = serde_json::from_str(list)
            .map_err(|e| bad("tools", format!("'tools' must be an array of tools: {e}")))?;
        let mut flat: Vec<(&Tool, String)> = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            if t.kind.as_deref() == Some("namespace") {
                // A group of function tools: offered flat, under their own names.
                let Some(inner) = &t.tools else {
                    return Err(bad(
                        &format!("tools[{i}].tools"),
                        "a namespace tool needs 'tools'",
                    ));
                };
                for (j, f) in inner.iter().enumerate() {
                    flat.push((f, format!("tools[{i}].tools[{j}]")));
                }
            } else {
                flat.push((t, format!("tools[{i}]")));
            }
        }
        let mut names: Vec<Cow<str>> = Vec::with_capacity(flat.len());
        for (t, at) in &flat {
            names.push(check_tool(t, at)?);
        }
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(
                "tools",
                format!(
                    "two tools are named {:?} once namespaces are flattened for this provider",
                    w[0]
                ),
            ));
        }
        if !flat.is_empty() {
            has_tools = true;
            out.push_str(",\"tools\":[");
            for (i, (t, _)) in flat.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"type\":\"function\",\"function\":{\"name\":");
                out.push_str(t.name.map(RawValue::get).unwrap_or("\"\""));
                for (k, x) in [
                    ("description", t.description),
                    ("parameters", t.parameters),
                    ("strict", t.strict),
                ] {
                    if let Some(x) = x.map(RawValue::get).filter(|x| *x != "null") {
                        push_field(&mut out, k, x);
                    }
                }
                out.push_str("}}");
            }
            out.push(']');
        }
    }
    if let Some(tc) = get("tool_choice") {
        let tc: Value = serde_json::from_str(tc).unwrap_or(Value::Null);
        let choice = match &tc {
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => tc.clone(),
            Value::Object(c) if c.get("type").and_then(Value::as_str) == Some("function") => {
                let name = c.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad(
                        "tool_choice.name",
                        "a tool_choice of type 'function' needs a 'name'",
                    )
                })?;
                json!({"type": "function", "function": {"name": name}})
            }
            Value::Object(c) => {
                let kind = c.get("type").and_then(Value::as_str).unwrap_or("");
                return Err(bad(
                    "tool_choice.type",
                    format!("tool_choice of type {kind:?} cannot be translated: only 'function'"),
                ));
            }
            _ => {
                return Err(bad(
                    "tool_choice",
                    "'tool_choice' must be \"auto\", \"none\", \"required\" or a function",
                ))
            }
        };
        // Without tools a chat upstream refuses any tool_choice; none is what it means then.
        if has_tools {
            push_field(&mut out, "tool_choice", &choice.to_string());
        }
    }
    if has_tools {
        if let Some(p) = get("parallel_tool_calls") {
            push_field(&mut out, "parallel_tool_calls", p);
        }
    }
    out.push('}');
    Ok(out.into_bytes())
}

/// A request's top-level fields (values as sent, JSON text), `input` read as it is parsed: the
/// conversation is read once.
struct Top<'a> {
    /// Every field in order; `input`'s value is `None` (it is in `input`).
    fields: Vec<(Cow<'a, str>, Option<&'a RawValue>)>,
    input: Option<Input<'a>>,
}

/// `input`: a string (as JSON text), items, or anything else (`Other`, a 400).
enum Input<'a> {
    Text(String),
    Items(Vec<InputItem<'a>>),
    Other,
}

impl<'de> Deserialize<'de> for Input<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Input<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of items")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Input<'de>, E> {
                serde_json::to_string(s).map(Input::Text).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Input<'de>, A::Error> {
                let mut items = Vec::with_capacity(a.size_hint().unwrap_or(8));
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Input::Items(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Input<'de>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Input::Other)
            }
            fn visit_unit<E>(self) -> Result<Input<'de>, E> {
                Ok(Input::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Input<'de>, E> {
                Ok(Input::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Input<'de>, E> {
                Ok(Input::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Input<'de>, E> {
                Ok(Input::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Input<'de>, E> {
                Ok(Input::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Top<'de>, A::Error> {
                let mut top = Top {
                    fields: Vec::with_capacity(16),
                    input: None,
                };
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    if k == "input" {
                        top.input = Some(a.next_value()?);
                        top.fields.push((k, None));
                    } else {
                        let v: &'de RawValue = a.next_value()?;
                        top.fields.push((k, Some(v)));
                    }
                }
                Ok(top)
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses the request's top level (400s for what is not a JSON object).
fn parse_top(body: &[u8]) -> Result<Top<'_>, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| bad("", format!("the request body is not valid JSON: {e}")))?;
    serde_json::from_str::<Top>(text).map_err(|e| {
        if e.classify() != serde_json::error::Category::Data {
            bad("", format!("the request body is not valid JSON: {e}"))
        } else if text.trim_start().starts_with('{') {
            bad("input", format!("'input' is not a list of items: {e}"))
        } else {
            bad("", "the request body must be a JSON object")
        }
    })
}

/// `,"key":value` (`value` is JSON text).
fn push_field(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(value);
}

/// A JSON string's text as JSON (`"..."`), or `None` when it is not a string.
fn raw_str(v: Option<&RawValue>) -> Option<&str> {
    v.map(RawValue::get).filter(|s| s.starts_with('"'))
}

/// An input item; the fields a translation reads, values as sent (JSON text).
#[derive(Deserialize)]
struct InputItem<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    call_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
}

/// A content part of a message, or of a function call's output.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
    #[serde(default, borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(default, borrow)]
    image_url: Option<&'a RawValue>,
    #[serde(default, borrow)]
    detail: Option<&'a RawValue>,
}

/// A tool of the request.
#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    description: Option<&'a RawValue>,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(default, borrow)]
    strict: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tools: Option<Vec<Tool<'a>>>,
}

/// Checks a tool offered to the upstream (`at`: where it is in the request); its name.
fn check_tool<'a>(t: &Tool<'a>, at: &str) -> Result<Cow<'a, str>, GatewayError> {
    let kind = t.kind.as_deref().unwrap_or("");
    if kind != "function" {
        return Err(bad(
            &format!("{at}.type"),
            format!("tools of type {kind:?} cannot be translated yet: only 'function' and 'namespace' tools"),
        ));
    }
    raw_str(t.name)
        .and_then(|n| serde_json::from_str::<Cow<str>>(n).ok())
        .ok_or_else(|| bad(&format!("{at}.name"), "a function tool needs a 'name'"))
}

/// A chat message's content, as JSON text.
enum Content<'a> {
    /// Copied from the request.
    Raw(&'a str),
    Owned(String),
    Null,
}

/// A chat message being built.
struct Msg<'a> {
    role: &'static str,
    content: Content<'a>,
    /// Each call's id, name and arguments (JSON strings as sent).
    tool_calls: Vec<(&'a str, &'a str, &'a str)>,
    tool_call_id: Option<&'a str>,
}

impl<'a> Msg<'a> {
    fn new(role: &'static str, content: Content<'a>) -> Self {
        Msg {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str("{\"role\":\"");
        out.push_str(self.role);
        out.push_str("\",\"content\":");
        match &self.content {
            Content::Raw(s) => out.push_str(s),
            Content::Owned(s) => out.push_str(s),
            Content::Null => out.push_str("null"),
        }
        if let Some(id) = self.tool_call_id {
            push_field(out, "tool_call_id", id);
        }
        if !self.tool_calls.is_empty() {
            out.push_str(",\"tool_calls\":[");
            for (i, (id, name, args)) in self.tool_calls.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"id\":");
                out.push_str(id);
                out.push_str(",\"type\":\"function\",\"function\":{\"name\":");
                out.push_str(name);
                out.push_str(",\"arguments\":");
                out.push_str(args);
                out.push_str("}}");
            }
            out.push(']');
        }
        out.push('}');
    }
}

/// Texts (JSON strings as sent) as one JSON string: the one itself, or their concatenation.
fn joined<'a>(texts: &[&'a str]) -> Content<'a> {
    match texts {
        [] => Content::Raw("\"\""),
        [one] => Content::Raw(one),
        many => {
            let mut s = String::new();
            for t in many {
                if let Ok(t) = serde_json::from_str::<Cow<str>>(t) {
                    s.push_str(&t);
                }
            }
            Content::Owned(serde_json::to_string(&s).unwrap_or_else(|_| "\"\"".into()))
        }
    }
}

/// One input item as chat messages.
fn convert_item<'a>(
    item: &InputItem<'a>,
    i: usize,
    out: &mut Vec<Msg<'a>>,
) -> Result<(), GatewayError> {
    let at = |f: &str| format!("input[{i}].{f}");
    match item.kind.as_deref() {
        // An item without a type is a message (EasyInputMessage).
        None | Some("message") => convert_message(item, i, out),
        Some("function_call") => {
            let call_id = raw_str(item.call_id)
                .ok_or_else(|| bad(&at("call_id"), "a function_call needs a 'call_id'"))?;
            let name = raw_str(item.name)
                .ok_or_else(|| bad(&at("name"), "a function_call needs a 'name'"))?;
            let arguments = match item.arguments.map(RawValue::get) {
                Some(s) if s.starts_with('"') => s,
                None | Some("null") => "\"{}\"",
                Some(_) => return Err(bad(&at("arguments"), "'arguments' must be a string")),
            };
            // Calls after an assistant turn (its text, or calls before them) belong to it.
            match out.last_mut().filter(|m| m.role == "assistant") {
                Some(last) => last.tool_calls.push((call_id, name, arguments)),
                None => {
                    let mut m = Msg::new("assistant", Content::Null);
                    m.tool_calls.push((call_id, name, arguments));
                    out.push(m);
                }
            }
            Ok(())
        }
        Some("function_call_output") => {
            let call_id = raw_str(item.call_id)
                .ok_or_else(|| bad(&at("call_id"), "a function_call_output needs a 'call_id'"))?;
            let output = match item.output.map(RawValue::get) {
                Some(s) if s.starts_with('"') => Content::Raw(s),
                Some(list) if list.starts_with('[') => {
                    let parts: Vec<Part> = serde_json::from_str(list).map_err(|e| {
                        bad(
                            &at("output"),
                            format!("'output' is not a list of parts: {e}"),
                        )
                    })?;
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.iter().enumerate() {
                        match p.kind.as_deref() {
                            Some("input_text" | "output_text") => {
                                texts.push(raw_str(p.text).unwrap_or("\"\""))
                            }
                            other => {
                                return Err(bad(
                                    &at(&format!("output[{j}].type")),
                                    format!("a {other:?} part of a function_call_output cannot be translated: only text"),
                                ))
                            }
                        }
                    }
                    joined(&texts)
                }
                _ => {
                    return Err(bad(
                        &at("output"),
                        "a function_call_output needs an 'output' string",
                    ))
                }
            };
            let mut m = Msg::new("tool", output);
            m.tool_call_id = Some(call_id);
            out.push(m);
            Ok(())
        }
        // Reasoning of earlier turns: no translated provider takes it back.
        Some("reasoning") => Ok(()),
        Some(other) => Err(bad(
            &at("type"),
            format!("an input item of type {other:?} cannot be translated"),
        )),
    }
}

fn convert_message<'a>(
    item: &InputItem<'a>,
    i: usize,
    out: &mut Vec<Msg<'a>>,
) -> Result<(), GatewayError> {
    let role = match item.role.as_deref() {
        Some("developer" | "system") => "system",
        Some("user") => "user",
        Some("assistant") => "assistant",
        _ => {
            return Err(bad(
                &format!("input[{i}].role"),
                "a message's role must be 'user', 'system', 'developer' or 'assistant'",
            ))
        }
    };
    let list = match item.content.map(RawValue::get) {
        Some(s) if s.starts_with('"') => {
            out.push(Msg::new(role, Content::Raw(s)));
            return Ok(());
        }
        Some(list) if list.starts_with('[') => list,
        _ => {
            return Err(bad(
                &format!("input[{i}].content"),
                "a message's content must be a string or an array of parts",
            ))
        }
    };
    let parts: Vec<Part<'a>> = serde_json::from_str(list).map_err(|e| {
        bad(
            &format!("input[{i}].content"),
            format!("a message's content is not a list of parts: {e}"),
        )
    })?;
    let mut texts: Vec<&'a str> = Vec::with_capacity(parts.len());
    // Parts as chat parts (JSON text), when there is an image.
    let mut chat_parts = String::new();
    let mut images = false;
    for (j, p) in parts.iter().enumerate() {
        let at = |f: &str| format!("input[{i}].content[{j}].{f}");
        let text = match p.kind.as_deref() {
            Some("input_text" | "output_text" | "text") => Some(raw_str(p.text).unwrap_or("\"\"")),
            Some("refusal") => Some(raw_str(p.refusal).unwrap_or("\"\"")),
            Some("input_image") if role == "user" => {
                let url = raw_str(p.image_url).ok_or_else(|| {
                    bad(
                        &at("image_url"),
                        "only images given by 'image_url' (a URL or data URL) can be translated",
                    )
                })?;
                images = true;
                if !chat_parts.is_empty() {
                    chat_parts.push(',');
                }
                chat_parts.push_str("{\"type\":\"image_url\",\"image_url\":{\"url\":");
                chat_parts.push_str(url);
                if let Some(d) = raw_str(p.detail) {
                    push_field(&mut chat_parts, "detail", d);
                }
                chat_parts.push_str("}}");
                None
            }
            other => {
                return Err(bad(
                    &at("type"),
                    format!("a {other:?} part in a {role} message cannot be translated"),
                ))
            }
        };
        if let Some(t) = text {
            texts.push(t);
            if !chat_parts.is_empty() {
                chat_parts.push(',');
            }
            chat_parts.push_str("{\"type\":\"text\",\"text\":");
            chat_parts.push_str(t);
            chat_parts.push('}');
        }
    }
    let content = if images {
        Content::Owned(format!("[{chat_parts}]"))
    } else {
        joined(&texts)
    };
    out.push(Msg::new(role, content));
    Ok(())
}

/// `text.format` as a chat `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, GatewayError> {
    let kind = format.get("type").and_then(Value::as_str);
    match kind {
        None if format.is_null() => Ok(None),
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(x) = format.get(k).filter(|x| !x.is_null()) {
                    schema.insert(k.into(), x.clone());
                }
            }
            if !schema.contains_key("schema") {
                return Err(bad(
                    "text.format.schema",
                    "a json_schema format needs a 'schema'",
                ));
            }
            if !schema.contains_key("name") {
                schema.insert("name".into(), json!("response"));
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": Value::Object(schema)}),
            ))
        }
        _ => Err(bad(
            "text.format.type",
            "text.format.type must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

/// `resp_...` for an upstream's answer id (a fresh one when it gave none).
fn response_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("resp_") {
        upstream_id.to_string()
    } else if upstream_id.is_empty() {
        format!("resp_{}", random_token(24))
    } else {
        format!("resp_{upstream_id}")
    }
}

/// The id of the message item of response `resp_X`: `msg_X`.
fn message_item_id(response_id: &str) -> String {
    format!(
        "msg_{}",
        response_id.strip_prefix("resp_").unwrap_or(response_id)
    )
}

/// The id of the function call item for tool call `call_id`.
fn call_item_id(call_id: &str) -> String {
    format!("fc_{call_id}")
}

/// `status` and `incomplete_details` for an OpenAI `finish_reason`.
fn status(finish: &str) -> (&'static str, Value) {
    match finish {
        "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
        "content_filter" => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn usage_json(u: Option<&Usage>) -> Value {
    let Some(u) = u else {
        return Value::Null;
    };
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    })
}

fn text_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": call_item_id(call_id), "call_id": call_id,
        "name": name, "arguments": arguments, "status": status,
    })
}

/// A `response` object. `status` `in_progress` leaves `usage` out.
fn response_json(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "usage": usage_json(usage),
    })
}

/// Writes canonical answers as a Responses `response` (the first answer: Responses has no
/// `n`).
pub struct ResponseWriter;

impl AnswerWriter for ResponseWriter {
    fn answer_body(
        &self,
        id: &str,
        created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> Bytes {
        let empty = Answer::default();
        let a = answers.first().unwrap_or(&empty);
        let id = response_id(id);
        let message_id = message_item_id(&id);
        let call_ids: Vec<String> = a.tool_calls.iter().map(|c| call_item_id(&c.id)).collect();
        let mut output = Vec::with_capacity(1 + a.tool_calls.len());
        if let Some(t) = a.content.as_deref().filter(|t| !t.is_empty()) {
            output.push(OutItem::Message {
                id: &message_id,
                status: "completed",
                role: "assistant",
                content: [OutText {
                    kind: "output_text",
                    text: t,
                    annotations: [],
                    logprobs: [],
                }],
            });
        }
        for (c, item_id) in a.tool_calls.iter().zip(&call_ids) {
            output.push(OutItem::FunctionCall {
                id: item_id,
                call_id: &c.id,
                name: &c.name,
                arguments: &c.arguments,
                status: "completed",
            });
        }
        let (status, incomplete) = match a.finish_reason.as_str() {
            "length" => ("incomplete", Some("max_output_tokens")),
            "content_filter" => ("incomplete", Some("content_filter")),
            _ => ("completed", None),
        };
        let body = ResponseBody {
            id: &id,
            object: "response",
            created_at: created,
            status,
            error: None,
            incomplete_details: incomplete.map(|reason| Incomplete { reason }),
            model,
            output,
            usage: usage.map(OutUsage::new),
        };
        // Serializing plain structs into a buffer cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// A `response` object, as [`ResponseWriter`] writes it.
#[derive(Serialize)]
struct ResponseBody<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<()>,
    incomplete_details: Option<Incomplete>,
    model: &'a str,
    output: Vec<OutItem<'a>>,
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutItem<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: [OutText<'a>; 1],
    },
    FunctionCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

#[derive(Serialize)]
struct OutText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct OutUsage {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl OutUsage {
    fn new(u: &Usage) -> Self {
        OutUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: CachedTokens {
                cached_tokens: u.cached_tokens,
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: 0,
            },
            total_tokens: u.total_tokens,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream events

/// What the failure event of a stream needs from its writer, shared with the proxy (which
/// writes that event after the writer has gone into the provider's stream translator).
#[derive(Default)]
struct Shared {
    /// The next event's `sequence_number`.
    seq: AtomicU64,
    /// The response's id, once the stream has started.
    id: OnceLock<String>,
    model: OnceLock<String>,
    created: AtomicU64,
}

impl Shared {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A `response.failed` event for this stream's response.
    fn failed(&self, code: &str, message: &str) -> Bytes {
        let id = match self.id.get() {
            Some(id) => id.clone(),
            None => response_id(""),
        };
        let model = self.model.get().map(String::as_str).unwrap_or("");
        let created = match self.created.load(Ordering::Relaxed) {
            0 => unix_now(),
            c => c,
        };
        let mut response =
            response_json(&id, created, model, "failed", Value::Null, Vec::new(), None);
        // The items already streamed stay the client's (the SDK keeps its own snapshot).
        if let Some(o) = response.as_object_mut() {
            o.remove("output");
        }
        response["error"] = json!({"code": code, "message": message});
        let mut out = BytesMut::with_capacity(256 + message.len());
        event(
            &mut out,
            &json!({"type": "response.failed", "sequence_number": self.next_seq(), "response": response}),
        );
        out.freeze()
    }
}

impl StreamFailure for Shared {
    fn event(&self, code: &str, message: &str) -> Bytes {
        self.failed(code, message)
    }
}

/// One event: `event: <type>` and the payload (which carries its `type`).
fn event(out: &mut BytesMut, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(data["type"].as_str().unwrap_or("").as_bytes());
    out.put_slice(b"\ndata: ");
    let mut w = out.writer();
    // Writing a `Value` into a buffer cannot fail.
    let _ = serde_json::to_writer(&mut w, data);
    w.into_inner().put_slice(b"\n\n");
}

/// An output item being streamed.
enum Item {
    Text {
        id: String,
        text: String,
        open: bool,
    },
    Call {
        /// The call's position among the answer's calls.
        index: u32,
        call_id: String,
        name: String,
        arguments: String,
        open: bool,
    },
}

/// Writes canonical stream events as the Responses stream: `response.created` and
/// `response.in_progress`, one output item per text run (`output_item.added`,
/// `content_part.added`, `output_text.delta`..., `output_text.done`, `content_part.done`,
/// `output_item.done`) and per tool call (`output_item.added`,
/// `function_call_arguments.delta`..., `.done`, `output_item.done`), then
/// `response.completed` or `response.incomplete` with the whole response and its usage. A text
/// run closes when anything else starts; tool calls stay open until the answer finishes (their
/// arguments may arrive interleaved). Only the first choice is written.
pub struct ResponseEvents {
    model: String,
    upstream_id: String,
    id: String,
    created: u64,
    started: bool,
    items: Vec<Item>,
    finish: Option<String>,
    usage: Option<Usage>,
    shared: Arc<Shared>,
}

impl ResponseEvents {
    pub fn new(model: &str) -> Self {
        ResponseEvents {
            model: model.to_string(),
            upstream_id: String::new(),
            id: String::new(),
            created: 0,
            started: false,
            items: Vec::new(),
            finish: None,
            usage: None,
            shared: Arc::new(Shared::default()),
        }
    }

    fn emit(&self, out: &mut BytesMut, mut data: Value) {
        data["sequence_number"] = json!(self.shared.next_seq());
        event(out, &data);
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(&self.upstream_id);
        self.created = unix_now();
        let _ = self.shared.id.set(self.id.clone());
        let _ = self.shared.model.set(self.model.clone());
        self.shared.created.store(self.created, Ordering::Relaxed);
        let r = response_json(
            &self.id,
            self.created,
            &self.model,
            "in_progress",
            Value::Null,
            Vec::new(),
            None,
        );
        self.emit(
            out,
            json!({"type": "response.created", "response": r.clone()}),
        );
        self.emit(out, json!({"type": "response.in_progress", "response": r}));
    }

    /// Closes the open text item, if any.
    fn close_text(&mut self, out: &mut BytesMut) {
        let Some(index) = self
            .items
            .iter()
            .position(|it| matches!(it, Item::Text { open: true, .. }))
        else {
            return;
        };
        if let Some(Item::Text { open, .. }) = self.items.get_mut(index) {
            *open = false;
        }
        let Some(Item::Text { id, text, .. }) = self.items.get(index) else {
            return;
        };
        let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
        let done = [
            json!({"type": "response.output_text.done", "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            json!({"type": "response.content_part.done", "item_id": id, "output_index": index, "content_index": 0, "part": part}),
            json!({"type": "response.output_item.done", "output_index": index, "item": text_item(id, text, "completed")}),
        ];
        for d in done {
            self.emit(out, d);
        }
    }

    /// Closes every open item (text, then calls in order).
    fn close_all(&mut self, out: &mut BytesMut) {
        self.close_text(out);
        for index in 0..self.items.len() {
            let Some(Item::Call {
                call_id,
                name,
                arguments,
                open: open @ true,
                ..
            }) = self.items.get_mut(index)
            else {
                continue;
            };
            *open = false;
            let item = call_item(call_id, name, arguments, "completed");
            let args = json!({"type": "response.function_call_arguments.done", "item_id": call_item_id(call_id), "output_index": index, "arguments": arguments});
            self.emit(out, args);
            self.emit(
                out,
                json!({"type": "response.output_item.done", "output_index": index, "item": item}),
            );
        }
    }

    fn output(&self) -> Vec<Value> {
        self.items
            .iter()
            .map(|it| match it {
                Item::Text { id, text, .. } => text_item(id, text, "completed"),
                Item::Call {
                    call_id,
                    name,
                    arguments,
                    ..
                } => call_item(call_id, name, arguments, "completed"),
            })
            .collect()
    }
}

impl EventWriter for ResponseEvents {
    fn id(&mut self, upstream_id: &str) {
        if self.upstream_id.is_empty() {
            self.upstream_id = upstream_id.to_string();
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
        let open = matches!(self.items.last(), Some(Item::Text { open: true, .. }));
        if !open {
            self.close_text(out);
            let index = self.items.len();
            let id = if index == 0 {
                message_item_id(&self.id)
            } else {
                format!("{}_{index}", message_item_id(&self.id))
            };
            self.emit(
                out,
                json!({"type": "response.output_item.added", "output_index": index, "item": {
                    "type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}),
            );
            self.emit(
                out,
                json!({"type": "response.content_part.added", "item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.items.push(Item::Text {
                id,
                text: String::new(),
                open: true,
            });
        }
        let index = self.items.len() - 1;
        let Some(Item::Text { id, text: acc, .. }) = self.items.last_mut() else {
            return;
        };
        acc.push_str(text);
        let data = json!({"type": "response.output_text.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []});
        self.emit(out, data);
    }

    fn tool_start(&mut self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str) {
        if choice != 0 {
            return;
        }
        self.start(out);
        self.close_text(out);
        let output_index = self.items.len();
        let call_id = if id.is_empty() {
            format!("call_{}", random_token(24))
        } else {
            id.to_string()
        };
        self.emit(
            out,
            json!({"type": "response.output_item.added", "output_index": output_index,
                "item": call_item(&call_id, name, "", "in_progress")}),
        );
        self.items.push(Item::Call {
            index,
            call_id,
            name: name.to_string(),
            arguments: String::new(),
            open: true,
        });
    }

    fn tool_args(&mut self, out: &mut BytesMut, choice: u32, index: u32, fragment: &str) {
        if choice != 0 || fragment.is_empty() {
            return;
        }
        let Some(output_index) = self
            .items
            .iter()
            .rposition(|it| matches!(it, Item::Call { index: i, open: true, .. } if *i == index))
        else {
            return;
        };
        let Some(Item::Call {
            call_id, arguments, ..
        }) = self.items.get_mut(output_index)
        else {
            return;
        };
        arguments.push_str(fragment);
        let data = json!({"type": "response.function_call_arguments.delta", "item_id": call_item_id(call_id), "output_index": output_index, "delta": fragment});
        self.emit(out, data);
    }

    fn finish(&mut self, out: &mut BytesMut, choice: u32, reason: &str) {
        if choice != 0 {
            return;
        }
        self.start(out);
        self.close_all(out);
        self.finish = Some(reason.to_string());
    }

    fn usage(&mut self, _out: &mut BytesMut, usage: &Usage) {
        self.usage = Some(*usage);
    }

    fn done(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close_all(out);
        let (status, incomplete) = status(self.finish.as_deref().unwrap_or("stop"));
        let r = response_json(
            &self.id,
            self.created,
            &self.model,
            status,
            incomplete,
            self.output(),
            self.usage.as_ref(),
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, json!({"type": kind, "response": r}));
    }

    fn on_failure(&self) -> Option<Arc<dyn StreamFailure>> {
        Some(self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::ToolCall;
    use crate::config::{Config, ProviderConfig};
    use crate::providers::{CallInfo, Provider, StreamStatus};

    fn chat(v: Value) -> Result<Value, GatewayError> {
        let bytes = to_chat(v.to_string().as_bytes())?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    /// A request the way Codex CLI sends one (a developer message, its tools, reasoning,
    /// include, prompt_cache_key, client_metadata, store: false), with the history of a tool
    /// round trip.
    #[test]
    fn request_translation() {
        let v = chat(json!({
            "model": "vllm/qwen3-8b",
            "instructions": "Be brief.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                {"type": "message", "id": "msg_1", "role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "exec_command", "arguments": "{}"},
                {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "a.txt"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]},
                {"role": "user", "content": "and?"}
            ],
            "tools": [{"type": "function", "name": "exec_command", "description": "run", "parameters": {"type": "object"}, "strict": false},
                {"type": "namespace", "name": "agents", "description": "sub-agents", "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]}],
            "tool_choice": "auto",
            "parallel_tool_calls": true,
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
            "stream": true,
            "store": false,
            "include": ["reasoning.encrypted_content"],
            "reasoning": {"effort": "medium", "summary": "auto"},
            "prompt_cache_key": "k",
            "client_metadata": {"x": 1},
            "metadata": {"a": "b"},
            "user": "u",
            "truncation": "disabled",
            "service_tier": "auto",
            "previous_response_id": null
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "model": "vllm/qwen3-8b",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "system", "content": "You are Codex."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "exec_command", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
                    {"role": "user", "content": "and?"}
                ],
                "max_tokens": 100,
                "temperature": 0.5,
                "top_p": 0.9,
                "parallel_tool_calls": true,
                "stream": true,
                "stream_options": {"include_usage": true},
                "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
                "tools": [{"type": "function", "function": {"name": "exec_command", "description": "run", "parameters": {"type": "object"}, "strict": false}},
                    {"type": "function", "function": {"name": "spawn_agent", "parameters": {"type": "object"}}}],
                "tool_choice": "auto"
            })
        );
        // A string input, json_object, a forced function; the proxy gets a canonical request.
        let v = chat(json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}},
            "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "f"}}))
        .unwrap();
        assert_eq!(v["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(v["response_format"], json!({"type": "json_object"}));
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        // Escapes survive: strings copied as sent, joined parts re-encoded.
        let v = chat(json!({"model": "m", "input": "say \"hi\"\n\u{e9}"})).unwrap();
        assert_eq!(v["messages"][0]["content"], "say \"hi\"\n\u{e9}");
        let v = chat(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "a\"b"}, {"type": "input_text", "text": "\\c\t"}]}]}))
        .unwrap();
        assert_eq!(v["messages"][0]["content"], "a\"b\\c\t");
        let body = Bytes::from_static(br#"{"model":"m","input":"hi","stream":true}"#);
        let req = OpenAiResponses.parse(&body, true).unwrap();
        assert_eq!(req.model, "m");
        assert!(req.stream && req.include_usage);
        assert_eq!(req.native_body(), Some(&body));
    }

    #[test]
    fn untranslatable_requests_are_400s_naming_the_field() {
        let err = |v: Value| chat(v).unwrap_err();
        let cases = [
            (
                json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "hi", "background": true}),
                "background",
            ),
            (
                json!({"model": "m", "input": "hi", "max_tool_calls": 2}),
                "max_tool_calls",
            ),
            (
                json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "hi", "tool_choice": {"type": "web_search_preview"}, "tools": []}),
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
                "input[0].content[0].image_url",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "m", "input": "hi", "text": {"format": {"type": "grammar"}}}),
                "text.format.type",
            ),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": {"role": "user"}}), "input"),
            (json!({"model": "m", "input": [{"type": 3}]}), "input"),
            (
                json!({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": "namespace", "name": "n", "tools": [{"type": "function", "name": "f"}]}]}),
                "tools",
            ),
            (
                json!({"model": "m", "input": "hi", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "custom", "name": "g"}]}]}),
                "tools[0].tools[0].type",
            ),
        ];
        for (body, field) in cases {
            let e = err(body.clone());
            assert_eq!((e.status, e.param.as_deref()), (400, Some(field)), "{body}");
        }
        // No model: the canonical request's own 400.
        let e = OpenAiResponses
            .parse(&Bytes::from_static(br#"{"input":"hi"}"#), false)
            .unwrap_err();
        assert_eq!(e.status, 400);
    }

    fn answer(finish: &str) -> Answer {
        Answer {
            reasoning: None,
            content: Some("Hi.".into()),
            tool_calls: vec![ToolCall {
                id: "call_9".into(),
                name: "get".into(),
                arguments: "{\"q\":1}".into(),
            }],
            finish_reason: finish.into(),
            usage: None,
        }
    }

    #[test]
    fn answers_are_responses() {
        let mut u = Usage::new(10, 3);
        u.cached_tokens = 4;
        let body =
            ResponseWriter.answer_body("chatcmpl-1", 7, "m", &[answer("tool_calls")], Some(&u));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "resp_chatcmpl-1", "object": "response", "created_at": 7, "status": "completed",
                "error": null, "incomplete_details": null, "model": "m",
                "output": [
                    {"type": "message", "id": "msg_chatcmpl-1", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": "Hi.", "annotations": [], "logprobs": []}]},
                    {"type": "function_call", "id": "fc_call_9", "call_id": "call_9", "name": "get", "arguments": "{\"q\":1}", "status": "completed"}
                ],
                "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 3,
                          "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13}
            })
        );
        let body = ResponseWriter.answer_body("", 7, "m", &[answer("length")], None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    /// The events of a stream, each checked: `event:` is the payload's type, sequence numbers
    /// count from 0.
    fn events(out: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let evs: Vec<Value> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.split_once('\n').unwrap();
                let name = head.strip_prefix("event: ").unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["type"], name);
                v
            })
            .collect();
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64, "{e}");
        }
        evs
    }

    fn types(evs: &[Value]) -> Vec<&str> {
        evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn events_make_a_responses_stream() {
        let mut w = ResponseEvents::new("m");
        w.id("c1");
        let mut out = BytesMut::new();
        let mut a = answer("tool_calls");
        a.usage = Some(Usage::new(5, 2));
        super::super::replay(&mut w, &mut out, &a, true);
        let evs = events(&out);
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(evs[0]["response"]["id"], "resp_c1");
        assert_eq!(evs[0]["response"]["status"], "in_progress");
        assert_eq!(evs[2]["item"]["id"], "msg_c1");
        assert_eq!(evs[4]["delta"], "Hi.");
        assert_eq!(evs[8]["output_index"], 1);
        assert_eq!(evs[8]["item"]["call_id"], "call_9");
        assert_eq!(evs[10]["arguments"], "{\"q\":1}");
        let r = &evs[12]["response"];
        assert_eq!(r["id"], "resp_c1");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"].as_array().unwrap().len(), 2);
        assert_eq!(r["output"][1]["arguments"], "{\"q\":1}");
        assert_eq!(r["usage"]["total_tokens"], 7);
        // A cut answer ends incomplete.
        let mut w = ResponseEvents::new("m");
        let mut out = BytesMut::new();
        super::super::replay(&mut w, &mut out, &answer("length"), false);
        let evs = events(&out);
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }

    fn openai_provider() -> Arc<dyn Provider> {
        let config = Config::from_map(&Default::default()).unwrap();
        let cfg = ProviderConfig {
            format: "openai".into(),
            ..config.providers["echo"].clone()
        };
        let make = crate::providers::REGISTRY
            .iter()
            .find(|(f, _)| *f == "openai")
            .unwrap()
            .1;
        make(&cfg, &config)
    }

    fn call() -> CallInfo {
        CallInfo {
            client_model: "vllm/m".into(),
            upstream_model: "m".into(),
            stream: true,
            include_usage: true,
            parallel_tool_calls: true,
            passthrough: false,
            client_format: NATIVE_FORMAT,
            client_headers: Vec::new(),
        }
    }

    /// An OpenAI chat stream with text and two tool calls, the second's arguments interleaved.
    const TOOL_STREAM: &str = concat!(
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me \\u00e9 check.\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_7\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_8\",\"type\":\"function\",\"function\":{\"name\":\"put\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":1}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    fn decoded(
        input: &[u8],
        split: usize,
    ) -> (BytesMut, StreamStatus, Option<Arc<dyn StreamFailure>>) {
        let w = OpenAiResponses.events("vllm/m");
        let failure = w.on_failure();
        let mut t = openai_provider().stream_translator(&call(), w);
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(t.as_mut(), input, split, &mut out);
        (out, status, failure)
    }

    #[test]
    fn openai_streams_decode_into_responses_events_at_every_split() {
        let input = TOOL_STREAM.as_bytes();
        let (want, status, _) = decoded(input, 0);
        assert_eq!(status, StreamStatus::Done);
        let evs = events(&want);
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(evs[4]["delta"], "Let me é check.");
        assert_eq!(
            (&evs[10]["output_index"], &evs[10]["delta"]),
            (&json!(2), &json!("{}"))
        );
        assert_eq!(evs[11]["item_id"], "fc_call_7");
        let r = &evs[16]["response"];
        assert_eq!(r["id"], "resp_c2");
        assert_eq!(r["output"][1]["arguments"], "{\"q\":1}");
        assert_eq!(r["output"][2]["call_id"], "call_8");
        assert_eq!(r["usage"]["input_tokens"], 9);
        for split in 1..input.len() {
            let (got, status, _) = decoded(input, split);
            assert_eq!(status, StreamStatus::Done, "split {split}");
            // Ids and timestamps aside, the same bytes.
            assert_eq!(got.len(), want.len(), "split {split}");
            assert_eq!(types(&events(&got)), types(&evs), "split {split}");
        }
    }

    #[test]
    fn a_cut_stream_fails_as_response_failed() {
        let input = TOOL_STREAM.as_bytes();
        let cut = TOOL_STREAM
            .find("data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},")
            .unwrap();
        for split in 0..=cut {
            let (mut out, status, failure) = decoded(&input[..cut], split);
            let StreamStatus::Failed(e) = status else {
                panic!("split {split}: {status:?}");
            };
            out.extend_from_slice(&failure.unwrap().event(error_code(&e), &e.message));
            let evs = events(&out);
            let last = evs.last().unwrap();
            assert_eq!(last["type"], "response.failed");
            assert_eq!(last["response"]["id"], "resp_c2");
            assert_eq!(last["response"]["status"], "failed");
            assert!(last["response"]["error"]["message"].is_string());
        }
        // Errors before any event: OpenAI's shape.
        let e = GatewayError::not_found("no such model");
        let v: Value = serde_json::from_slice(&OpenAiResponses.error_body(&e)).unwrap();
        assert_eq!(v["error"]["message"], "no such model");
        let ev = String::from_utf8(OpenAiResponses.error_event(&e).to_vec()).unwrap();
        assert!(ev.starts_with("event: response.failed\ndata: {"), "{ev}");
    }

    #[test]
    fn completions_decode_into_responses() {
        let body = Bytes::from(
            json!({"id": "chatcmpl-5", "object": "chat.completion", "created": 3, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})
            .to_string(),
        );
        let mut c = call();
        c.stream = false;
        let t = openai_provider()
            .chat_response(body, &c, OpenAiResponses.answers())
            .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["id"], "resp_chatcmpl-5");
        assert_eq!(v["model"], "vllm/m");
        assert_eq!(v["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(v["usage"]["total_tokens"], 3);
    }
}
