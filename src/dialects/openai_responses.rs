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
//! `assistant` and content a string or `input_text`/`input_image`/`input_file`/`output_text`/
//! `refusal` parts; `function_call`, `function_call_output`, `custom_tool_call` and
//! `custom_tool_call_output` items), `instructions`, function `tools`, `custom` tools (offered
//! as a function taking one string, [`CUSTOM_INPUT`]; their calls come back as
//! `custom_tool_call` items), `namespace` tools (their tools offered flat, under their own
//! names; calls come back with their `namespace`), `tool_choice`, `parallel_tool_calls`,
//! `max_output_tokens`, `temperature`, `top_p`, `text.format` (as `response_format`),
//! `reasoning.effort` (as `reasoning_effort`), `stream`. `developer` messages and
//! `instructions` go as `system` messages (every chat upstream takes those). Hosted tools
//! (`web_search`, `file_search`, `tool_search`, ...: any other tool type) are left out of the
//! offered tools and noted ([`Notes::dropped_tools`]: the proxy reports them); a `tool_choice`
//! forcing one is a 400. Dropped: `store`, `metadata`, `user`, `safety_identifier`, `include`,
//! `prompt_cache_key`, `truncation`, `service_tier`, `client_metadata`, `stream_options`,
//! `text.verbosity`, `reasoning.summary`, `reasoning` input items (with their
//! `encrypted_content`: no translated provider can read them). Anything else that is set
//! (`previous_response_id`, `conversation`, `background: true`, `max_tool_calls`, files by id
//! or URL, ...) is a 400 naming it.
//!
//! Answers: a `reasoning` item (its text as one `summary_text` part) when the upstream returns
//! reasoning, the `message`, the calls; `usage` with `reasoning_tokens`; the request's settings
//! echoed ([`ECHOED`], OpenAI's defaults for what it left out).
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

use crate::api::{random_token, unix_now, ChatRequest, Notes};
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
        static PLAIN: ResponseWriter = ResponseWriter { reply: None };
        &PLAIN
    }

    fn events(&self, model: &str) -> Box<dyn EventWriter> {
        Box::new(ResponseEvents::new(model))
    }

    fn answers_for<'a>(&'a self, req: &'a ChatRequest) -> Box<dyn AnswerWriter + 'a> {
        Box::new(ResponseWriter {
            reply: reply_of(req),
        })
    }

    fn events_for(&self, req: &ChatRequest, model: &str) -> Box<dyn EventWriter> {
        Box::new(ResponseEvents::with_reply(model, reply_of(req)))
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
    let (chat, notes) = to_chat(body)?;
    let req = ChatRequest::parse_with(&chat, spans)?;
    Ok(req.with_native_body(body.clone(), None).with_notes(notes))
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
    "reasoning",
];

/// The request settings a `response` object echoes, with OpenAI's value for each when the
/// request leaves it out (JSON text), in OpenAI's order.
const ECHOED: &[(&str, &str)] = &[
    ("background", "false"),
    ("instructions", "null"),
    ("max_output_tokens", "null"),
    ("max_tool_calls", "null"),
    ("metadata", "{}"),
    ("parallel_tool_calls", "true"),
    ("previous_response_id", "null"),
    ("prompt_cache_key", "null"),
    ("reasoning", "{\"effort\":null,\"summary\":null}"),
    ("safety_identifier", "null"),
    ("service_tier", "\"default\""),
    ("store", "true"),
    ("temperature", "1.0"),
    (
        "text",
        "{\"format\":{\"type\":\"text\"},\"verbosity\":\"medium\"}",
    ),
    ("tool_choice", "\"auto\""),
    ("tools", "[]"),
    ("top_logprobs", "0"),
    ("top_p", "1.0"),
    ("truncation", "\"disabled\""),
    ("user", "null"),
];

/// The name of the one string parameter a `custom` tool is offered with, as a function.
pub const CUSTOM_INPUT: &str = "input";

/// What a response needs from its request, noted while translating it (the request's
/// [`Notes::dialect`]).
#[derive(Debug, Default)]
struct Reply {
    /// Custom tools (offered as functions): their calls come back as `custom_tool_call` items.
    custom: Vec<String>,
    /// Tools of `namespace` tools (offered flat), with their namespace: their calls name it.
    namespaced: Vec<(String, String)>,
    /// The echoed settings ([`ECHOED`]): JSON object members, without braces.
    echo: String,
}

impl Reply {
    fn is_custom(&self, name: &str) -> bool {
        self.custom.iter().any(|c| c == name)
    }

    fn namespace(&self, name: &str) -> Option<&str> {
        self.namespaced
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ns)| ns.as_str())
    }
}

/// The [`Reply`] a request's translation noted.
fn reply_of(req: &ChatRequest) -> Option<Arc<Reply>> {
    let any = req.notes()?.dialect.clone()?;
    any.downcast::<Reply>().ok()
}

/// The OpenAI chat JSON equivalent to a Responses request; a 400 naming the field for what it
/// cannot carry. Built as text: strings (the conversation, tool schemas) are copied as the
/// client wrote them, escapes included, without a JSON tree of the request.
fn to_chat(body: &[u8]) -> Result<(Vec<u8>, Notes), GatewayError> {
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
        // Not in the background: what every request does.
        if k == "background" && v.is_some_and(|v| v.get() == "false") {
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
    if let Some(r) = get("reasoning") {
        #[derive(Deserialize)]
        struct Reasoning<'a> {
            #[serde(default, borrow)]
            effort: Option<&'a RawValue>,
        }
        let r: Reasoning = serde_json::from_str(r)
            .map_err(|_| bad("reasoning", "'reasoning' must be an object"))?;
        match r.effort.map(RawValue::get) {
            None | Some("null") => {}
            Some(e) if e.starts_with('"') => push_field(&mut out, "reasoning_effort", e),
            Some(_) => {
                return Err(bad(
                    "reasoning.effort",
                    "'reasoning.effort' must be a string",
                ))
            }
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
    let mut reply = Reply::default();
    // Hosted tools (run by OpenAI itself), by type, in order: left out.
    let mut dropped: Vec<String> = Vec::new();
    if let Some(list) = get("tools") {
        let tools: Vec<Tool> = serde_json::from_str(list)
            .map_err(|e| bad("tools", format!("'tools' must be an array of tools: {e}")))?;
        // Each tool offered, where it is in the request, and its namespace.
        let mut flat: Vec<(&Tool, String, Option<String>)> = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            match t.kind.as_deref() {
                // A group of function and custom tools: offered flat, under their own names.
                Some("namespace") => {
                    let Some(inner) = &t.tools else {
                        return Err(bad(
                            &format!("tools[{i}].tools"),
                            "a namespace tool needs 'tools'",
                        ));
                    };
                    let ns = decoded(t.name).ok_or_else(|| {
                        bad(
                            &format!("tools[{i}].name"),
                            "a namespace tool needs a 'name'",
                        )
                    })?;
                    for (j, f) in inner.iter().enumerate() {
                        flat.push((f, format!("tools[{i}].tools[{j}]"), Some(ns.to_string())));
                    }
                }
                Some("function" | "custom") => flat.push((t, format!("tools[{i}]"), None)),
                Some(hosted) => {
                    if !dropped.iter().any(|d| d == hosted) {
                        dropped.push(hosted.to_string());
                    }
                }
                None => {
                    return Err(bad(
                        &format!("tools[{i}].type"),
                        "every tool needs a 'type'",
                    ))
                }
            }
        }
        let mut names: Vec<Cow<str>> = Vec::with_capacity(flat.len());
        for (t, at, ns) in &flat {
            let name = check_tool(t, at)?;
            if t.kind.as_deref() == Some("custom") {
                reply.custom.push(name.to_string());
            }
            if let Some(ns) = ns {
                reply.namespaced.push((name.to_string(), ns.clone()));
            }
            names.push(name);
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
            for (i, (t, _, _)) in flat.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_tool(&mut out, t);
            }
            out.push(']');
        }
    }
    if let Some(tc) = get("tool_choice") {
        let tc: Value = serde_json::from_str(tc).unwrap_or(Value::Null);
        let choice = match &tc {
            Value::String(s) if s == "required" && !has_tools && !dropped.is_empty() => {
                return Err(bad(
                    "tool_choice",
                    format!(
                        "tool_choice 'required' forces a tool call, but the only tools ({}) are hosted tools no translated provider can run",
                        dropped.join(", ")
                    ),
                ))
            }
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => tc.clone(),
            Value::Object(c)
                if matches!(
                    c.get("type").and_then(Value::as_str),
                    Some("function" | "custom")
                ) =>
            {
                let name = c.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad(
                        "tool_choice.name",
                        "a tool_choice of type 'function' or 'custom' needs a 'name'",
                    )
                })?;
                json!({"type": "function", "function": {"name": name}})
            }
            Value::Object(c) => {
                let kind = c.get("type").and_then(Value::as_str).unwrap_or("");
                let why = if kind == "allowed_tools" {
                    "a tool_choice of type 'allowed_tools' cannot be translated: only 'function' and 'custom'".to_string()
                } else {
                    format!("tool_choice forces the hosted tool {kind:?}, which no translated provider can run (hosted tools are left out of the offered tools)")
                };
                return Err(bad("tool_choice.type", why));
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
    reply.echo = echo(&get);
    let notes = Notes {
        dropped_tools: (!dropped.is_empty()).then(|| dropped.join(",")),
        dialect: Some(Arc::new(reply)),
    };
    Ok((out.into_bytes(), notes))
}

/// The echoed settings ([`ECHOED`]) as JSON object members: the request's value, else
/// OpenAI's.
fn echo<'a>(get: &dyn Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(480);
    for (k, default) in ECHOED {
        let v = match get(k) {
            // The tier a request runs on: `auto` is the project's, here the default.
            Some("\"auto\"") if *k == "service_tier" => default,
            Some(v) => v,
            None => default,
        };
        if !out.is_empty() {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":");
        out.push_str(v);
    }
    out
}

/// A tool offered upstream as a chat function tool: a function as it is, a custom tool (free
/// text in) as a function taking one string, [`CUSTOM_INPUT`], its `format` described there.
fn write_tool(out: &mut String, t: &Tool) {
    out.push_str("{\"type\":\"function\",\"function\":{\"name\":");
    out.push_str(t.name.map(RawValue::get).unwrap_or("\"\""));
    fn given(x: Option<&RawValue>) -> Option<&str> {
        x.map(RawValue::get).filter(|x| *x != "null")
    }
    if let Some(d) = given(t.description) {
        push_field(out, "description", d);
    }
    if t.kind.as_deref() == Some("custom") {
        let mut about = String::from(
            "The tool's input: free-form text, passed to the tool exactly as written (not JSON).",
        );
        if let Some(f) = given(t.format).and_then(|f| serde_json::from_str::<Value>(f).ok()) {
            if let (Some(syntax), Some(definition)) = (
                f.get("syntax").and_then(Value::as_str),
                f.get("definition").and_then(Value::as_str),
            ) {
                about.push_str(&format!(
                    " It must follow this {syntax} grammar:\n{definition}"
                ));
            }
        }
        let params = json!({
            "type": "object",
            "properties": {CUSTOM_INPUT: {"type": "string", "description": about}},
            "required": [CUSTOM_INPUT],
            "additionalProperties": false,
        });
        push_field(out, "parameters", &params.to_string());
    } else {
        for (k, x) in [("parameters", t.parameters), ("strict", t.strict)] {
            if let Some(x) = given(x) {
                push_field(out, k, x);
            }
        }
    }
    out.push_str("}}");
}

/// A JSON string (as sent) decoded; `None` when it is not a string.
fn decoded(v: Option<&RawValue>) -> Option<Cow<'_, str>> {
    raw_str(v).and_then(|s| serde_json::from_str::<Cow<str>>(s).ok())
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
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
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
    #[serde(default, borrow)]
    file_data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    file_url: Option<&'a RawValue>,
    #[serde(default, borrow)]
    file_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    filename: Option<&'a RawValue>,
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
    format: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tools: Option<Vec<Tool<'a>>>,
}

/// Checks a tool offered to the upstream (`at`: where it is in the request); its name.
fn check_tool<'a>(t: &Tool<'a>, at: &str) -> Result<Cow<'a, str>, GatewayError> {
    let kind = t.kind.as_deref().unwrap_or("");
    if !matches!(kind, "function" | "custom") {
        return Err(bad(
            &format!("{at}.type"),
            format!("a namespace can hold function and custom tools, not {kind:?}"),
        ));
    }
    decoded(t.name).ok_or_else(|| {
        bad(
            &format!("{at}.name"),
            format!("a {kind} tool needs a 'name'"),
        )
    })
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
    /// Each call's id, name and arguments (JSON strings as sent, or made for a custom tool).
    tool_calls: Vec<(&'a str, &'a str, Cow<'a, str>)>,
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
        Some(kind @ ("function_call" | "custom_tool_call")) => {
            let call_id = raw_str(item.call_id)
                .ok_or_else(|| bad(&at("call_id"), format!("a {kind} needs a 'call_id'")))?;
            let name = raw_str(item.name)
                .ok_or_else(|| bad(&at("name"), format!("a {kind} needs a 'name'")))?;
            let arguments: Cow<str> = if kind == "custom_tool_call" {
                // The custom tool's text, as the arguments of the function it was offered as.
                let input = decoded(item.input).ok_or_else(|| {
                    bad(&at("input"), "a custom_tool_call needs an 'input' string")
                })?;
                let args = json!({CUSTOM_INPUT: input}).to_string();
                Cow::Owned(serde_json::to_string(&args).unwrap_or_default())
            } else {
                match item.arguments.map(RawValue::get) {
                    Some(s) if s.starts_with('"') => Cow::Borrowed(s),
                    None | Some("null") => Cow::Borrowed("\"{}\""),
                    Some(_) => return Err(bad(&at("arguments"), "'arguments' must be a string")),
                }
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
        Some(kind @ ("function_call_output" | "custom_tool_call_output")) => {
            let call_id = raw_str(item.call_id)
                .ok_or_else(|| bad(&at("call_id"), format!("a {kind} needs a 'call_id'")))?;
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
                                    format!(
                                    "a {other:?} part of a {kind} cannot be translated: only text"
                                ),
                                ))
                            }
                        }
                    }
                    joined(&texts)
                }
                _ => {
                    return Err(bad(
                        &at("output"),
                        format!("a {kind} needs an 'output' string"),
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
    // Parts as chat parts (JSON text), when there is an image or a file.
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
            Some("input_file") if role == "user" => {
                let data = input_file(p, &at)?;
                images = true;
                if !chat_parts.is_empty() {
                    chat_parts.push(',');
                }
                chat_parts.push_str("{\"type\":\"file\",\"file\":{\"file_data\":");
                chat_parts.push_str(&data);
                if let Some(f) = raw_str(p.filename) {
                    push_field(&mut chat_parts, "filename", f);
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

/// An `input_file` part's `file_data` as a data URL (JSON text): as sent when it is one, else
/// base64 made into one with the type its `filename` suggests. A file by URL or by id is a
/// 400: the chat form carries files inline only, and the gateway cannot read OpenAI's file
/// store.
fn input_file(p: &Part, at: &dyn Fn(&str) -> String) -> Result<Cow<'static, str>, GatewayError> {
    let given = |x: Option<&RawValue>| x.is_some_and(|x| x.get() != "null");
    if given(p.file_id) {
        return Err(bad(
            &at("file_id"),
            "a file given by 'file_id' cannot be translated: the gateway cannot read OpenAI's file store; send its contents as 'file_data'",
        ));
    }
    let Some(data) = decoded(p.file_data) else {
        if given(p.file_url) {
            return Err(bad(
                &at("file_url"),
                "a file given by 'file_url' cannot be translated: the chat form carries files inline only; send its contents as 'file_data'",
            ));
        }
        return Err(bad(
            &at("file_data"),
            "an input_file needs 'file_data' (a data URL, or base64 with a 'filename')",
        ));
    };
    if data.starts_with("data:") {
        return Ok(Cow::Owned(
            serde_json::to_string(&*data).unwrap_or_default(),
        ));
    }
    let name = decoded(p.filename).unwrap_or_default();
    let url = format!("data:{};base64,{}", mime_of(&name), data.trim());
    Ok(Cow::Owned(serde_json::to_string(&url).unwrap_or_default()))
}

/// A file's media type from its name's extension.
fn mime_of(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "text" | "log" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "xml" => "text/xml",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
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
/// A translated response's id: the gateway's own, unique (`resp_` and 24 random characters).
/// Upstream answer ids are not unique everywhere (a mock or a small host may answer every
/// request with the same one), and a stored response is found by its id: two must never share
/// one. An upstream that already answers with a Responses id keeps it.
fn response_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("resp_") {
        upstream_id.to_string()
    } else {
        format!("resp_{}", random_token(24))
    }
}

/// The id of an item of response `resp_X`: `<prefix>_X` (`msg_X`, `rs_X`).
fn item_id(prefix: &str, response_id: &str) -> String {
    format!(
        "{prefix}_{}",
        response_id.strip_prefix("resp_").unwrap_or(response_id)
    )
}

/// The id of the function call item for tool call `call_id`.
fn call_item_id(call_id: &str) -> String {
    format!("fc_{call_id}")
}

/// The id of the custom tool call item for tool call `call_id`.
fn custom_item_id(call_id: &str) -> String {
    format!("ctc_{call_id}")
}

/// `status` and `incomplete_details.reason` for an OpenAI `finish_reason`.
fn status(finish: &str) -> (&'static str, Option<&'static str>) {
    match finish {
        "length" => ("incomplete", Some("max_output_tokens")),
        "content_filter" => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A custom tool's text from the arguments of the function it was offered as: the
/// [`CUSTOM_INPUT`] string; else an object's only string, a JSON string, or the arguments as
/// written (a model that wrote the text raw).
fn custom_input(arguments: &str) -> String {
    #[derive(Deserialize)]
    struct Args<'a> {
        #[serde(borrow)]
        input: Cow<'a, str>,
    }
    if let Ok(a) = serde_json::from_str::<Args>(arguments) {
        return a.input.into_owned();
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) if o.len() == 1 => match o.into_iter().next() {
            Some((_, Value::String(s))) => s,
            _ => arguments.to_string(),
        },
        Ok(Value::String(s)) => s,
        _ => arguments.to_string(),
    }
}

/// A `response` object (JSON text) with the request's echoed settings. `output` `None` leaves
/// the output out (a failed response: the items streamed stay the client's).
#[allow(clippy::too_many_arguments)]
fn response_text(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    incomplete: Option<&str>,
    output: Option<Vec<Value>>,
    usage: Option<&Usage>,
    echo: &str,
) -> String {
    let mut r = json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
        "model": model,
        "output": output,
        "usage": usage.map(OutUsage::new),
    });
    if let Some(o) = r.as_object_mut() {
        if o.get("output").is_some_and(Value::is_null) {
            o.remove("output");
        }
    }
    with_echo(r.to_string(), echo)
}

/// A JSON object's text with `echo` (object members) added.
fn with_echo(mut object: String, echo: &str) -> String {
    if !echo.is_empty() && object.ends_with('}') {
        object.pop();
        if !object.ends_with('{') {
            object.push(',');
        }
        object.push_str(echo);
        object.push('}');
    }
    object
}

/// Writes canonical answers as a Responses `response` (the first answer: Responses has no
/// `n`): a `reasoning` item when the answer carries reasoning, the `message`, then a
/// `function_call` (or, for a custom tool, a `custom_tool_call`) item per tool call; the
/// request's settings echoed.
pub struct ResponseWriter {
    reply: Option<Arc<Reply>>,
}

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
        let reply = self.reply.as_deref();
        let a = answers.first().unwrap_or(&empty);
        let id = response_id(id);
        let message_id = item_id("msg", &id);
        let reasoning_id = item_id("rs", &id);
        let custom = |name: &str| reply.is_some_and(|r| r.is_custom(name));
        let call_ids: Vec<String> = a
            .tool_calls
            .iter()
            .map(|c| {
                if custom(&c.name) {
                    custom_item_id(&c.id)
                } else {
                    call_item_id(&c.id)
                }
            })
            .collect();
        let inputs: Vec<Option<String>> = a
            .tool_calls
            .iter()
            .map(|c| custom(&c.name).then(|| custom_input(&c.arguments)))
            .collect();
        let mut output = Vec::with_capacity(2 + a.tool_calls.len());
        if let Some(r) = a.reasoning.as_deref().filter(|r| !r.is_empty()) {
            output.push(OutItem::Reasoning {
                id: &reasoning_id,
                summary: [Summary {
                    kind: "summary_text",
                    text: r,
                }],
            });
        }
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
        for ((c, item_id), input) in a.tool_calls.iter().zip(&call_ids).zip(&inputs) {
            let namespace = reply.and_then(|r| r.namespace(&c.name));
            output.push(match input {
                Some(input) => OutItem::CustomToolCall {
                    id: item_id,
                    call_id: &c.id,
                    name: &c.name,
                    namespace,
                    input,
                    status: "completed",
                },
                None => OutItem::FunctionCall {
                    id: item_id,
                    call_id: &c.id,
                    name: &c.name,
                    namespace,
                    arguments: &c.arguments,
                    status: "completed",
                },
            });
        }
        let (status, incomplete) = status(&a.finish_reason);
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
        let text = serde_json::to_string(&body).unwrap_or_default();
        Bytes::from(with_echo(text, reply.map_or("", |r| &r.echo)))
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
    Reasoning {
        id: &'a str,
        summary: [Summary<'a>; 1],
    },
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
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        arguments: &'a str,
        status: &'static str,
    },
    CustomToolCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        input: &'a str,
        status: &'static str,
    },
}

#[derive(Serialize)]
struct Summary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
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
                reasoning_tokens: u.reasoning_tokens,
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
    reply: Option<Arc<Reply>>,
}

impl Shared {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn echo(&self) -> &str {
        self.reply.as_deref().map_or("", |r| &r.echo)
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
        let mut response = json!({
            "id": id, "object": "response", "created_at": created, "status": "failed",
            "error": {"code": code, "message": message}, "incomplete_details": null,
            "model": model, "usage": null,
        })
        .to_string();
        // The items already streamed stay the client's (the SDK keeps its own snapshot).
        response = with_echo(response, self.echo());
        let mut out = BytesMut::with_capacity(256 + response.len());
        response_event(&mut out, "response.failed", self.next_seq(), &response);
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

/// An event carrying the whole response (`response` is its JSON text).
fn response_event(out: &mut BytesMut, kind: &str, seq: u64, response: &str) {
    for piece in [
        "event: ",
        kind,
        "\ndata: {\"type\":\"",
        kind,
        "\",\"sequence_number\":",
    ] {
        out.put_slice(piece.as_bytes());
    }
    out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.put_slice(b",\"response\":");
    out.put_slice(response.as_bytes());
    out.put_slice(b"}\n\n");
}

/// A text or reasoning run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// A `message` item with one `output_text` part.
    Text,
    /// A `reasoning` item with one `summary_text` part.
    Reasoning,
}

/// An output item being streamed.
enum Item {
    Run {
        kind: Run,
        id: String,
        text: String,
        open: bool,
    },
    Call {
        /// The call's position among the answer's calls.
        index: u32,
        call_id: String,
        name: String,
        namespace: Option<String>,
        arguments: String,
        /// For a custom tool: its text, decoded from the arguments as they arrive.
        custom: Option<InputDecoder>,
        open: bool,
    },
}

impl Item {
    fn id(&self) -> String {
        match self {
            Item::Run { id, .. } => id.clone(),
            Item::Call {
                call_id, custom, ..
            } => match custom {
                Some(_) => custom_item_id(call_id),
                None => call_item_id(call_id),
            },
        }
    }

    /// The item as JSON (`status` its status).
    fn json(&self, status: &str) -> Value {
        match self {
            Item::Run {
                kind: Run::Text,
                id,
                text,
                ..
            } => json!({
                "type": "message", "id": id, "status": status, "role": "assistant",
                "content": if status == "in_progress" { json!([]) } else {
                    json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
                },
            }),
            Item::Run {
                kind: Run::Reasoning,
                id,
                text,
                ..
            } => json!({
                "type": "reasoning", "id": id,
                "summary": if status == "in_progress" { json!([]) } else {
                    json!([{"type": "summary_text", "text": text}])
                },
            }),
            Item::Call {
                call_id,
                name,
                namespace,
                arguments,
                custom,
                ..
            } => {
                let mut v = match custom {
                    Some(d) => json!({
                        "type": "custom_tool_call", "id": self.id(), "call_id": call_id,
                        "name": name, "input": if status == "in_progress" { String::new() } else { d.input(arguments) },
                        "status": status,
                    }),
                    None => json!({
                        "type": "function_call", "id": self.id(), "call_id": call_id,
                        "name": name, "arguments": if status == "in_progress" { "" } else { arguments.as_str() },
                        "status": status,
                    }),
                };
                if let Some(ns) = namespace {
                    v["namespace"] = json!(ns);
                }
                v
            }
        }
    }
}

/// Decodes a custom tool's text (the [`CUSTOM_INPUT`] string of its function's arguments,
/// `{"input":"..."}`) as the arguments arrive, so its deltas stream as text. Arguments of any
/// other shape are decoded whole at the end ([`custom_input`]).
#[derive(Default)]
struct InputDecoder {
    state: Decode,
    key: String,
    /// The text decoded so far.
    text: String,
    /// The hex digits of a `\u` escape being read.
    hex: String,
    /// A high surrogate waiting for its low half.
    high: Option<u32>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Before the object's `{`.
    #[default]
    Start,
    /// Before the first key's opening quote.
    BeforeKey,
    Key,
    /// Before the `:`.
    AfterKey,
    /// Before the value's opening quote.
    BeforeValue,
    Value,
    Escape,
    Unicode,
    /// The string ended.
    Done,
    /// Not `{"input": "...`: decoded whole at the end.
    Off,
}

impl InputDecoder {
    /// Reads a fragment of the arguments; the text it adds.
    fn feed(&mut self, fragment: &str) -> String {
        let mut added = String::new();
        for c in fragment.chars() {
            self.state = match (self.state, c) {
                (Decode::Done | Decode::Off, _) => break,
                (Decode::Start, '{') => Decode::BeforeKey,
                (Decode::BeforeKey, '"') => Decode::Key,
                (Decode::Key, '"') if self.key == CUSTOM_INPUT => Decode::AfterKey,
                (Decode::Key, '"' | '\\') => Decode::Off,
                (Decode::Key, c) => {
                    self.key.push(c);
                    Decode::Key
                }
                (Decode::AfterKey, ':') => Decode::BeforeValue,
                (Decode::BeforeValue, '"') => Decode::Value,
                (Decode::Start | Decode::BeforeKey | Decode::AfterKey | Decode::BeforeValue, c)
                    if c.is_ascii_whitespace() =>
                {
                    self.state
                }
                (Decode::Value, '\\') => Decode::Escape,
                (Decode::Value, '"') => {
                    self.lone_high(&mut added);
                    Decode::Done
                }
                (Decode::Value, c) => {
                    self.lone_high(&mut added);
                    added.push(c);
                    Decode::Value
                }
                (Decode::Escape, 'u') => {
                    self.hex.clear();
                    Decode::Unicode
                }
                (Decode::Escape, c) => {
                    self.lone_high(&mut added);
                    added.push(match c {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        other => other,
                    });
                    Decode::Value
                }
                (Decode::Unicode, c) => {
                    self.hex.push(c);
                    if self.hex.len() < 4 {
                        Decode::Unicode
                    } else {
                        match u32::from_str_radix(&self.hex, 16) {
                            Ok(u) => {
                                self.code_unit(u, &mut added);
                                Decode::Value
                            }
                            Err(_) => Decode::Off,
                        }
                    }
                }
                _ => Decode::Off,
            };
        }
        self.text.push_str(&added);
        added
    }

    /// A `\uXXXX` escape: a character, or half of a surrogate pair.
    fn code_unit(&mut self, u: u32, added: &mut String) {
        match u {
            0xD800..=0xDBFF => {
                self.lone_high(added);
                self.high = Some(u);
            }
            0xDC00..=0xDFFF => match self.high.take() {
                Some(h) => added.push(
                    char::from_u32(0x10000 + ((h - 0xD800) << 10) + (u - 0xDC00))
                        .unwrap_or('\u{FFFD}'),
                ),
                None => added.push('\u{FFFD}'),
            },
            _ => {
                self.lone_high(added);
                added.push(char::from_u32(u).unwrap_or('\u{FFFD}'));
            }
        }
    }

    /// A high surrogate not followed by its low half.
    fn lone_high(&mut self, added: &mut String) {
        if self.high.take().is_some() {
            added.push('\u{FFFD}');
        }
    }

    /// Whether any text was decoded as it arrived.
    fn streamed(&self) -> bool {
        !self.text.is_empty() || matches!(self.state, Decode::Value | Decode::Done)
    }

    /// The whole text: as streamed, or (arguments of another shape) decoded whole.
    fn input(&self, arguments: &str) -> String {
        if self.streamed() {
            self.text.clone()
        } else {
            custom_input(arguments)
        }
    }
}

/// Writes canonical stream events as the Responses stream: `response.created` and
/// `response.in_progress`; one output item per reasoning run (`output_item.added`,
/// `reasoning_summary_part.added`, `reasoning_summary_text.delta`..., `.done`,
/// `reasoning_summary_part.done`, `output_item.done`), per text run (`output_item.added`,
/// `content_part.added`, `output_text.delta`..., `output_text.done`, `content_part.done`,
/// `output_item.done`) and per tool call (`output_item.added`,
/// `function_call_arguments.delta`..., `.done`, `output_item.done`; for a custom tool
/// `custom_tool_call_input.delta`..., `.done`), then `response.completed` or
/// `response.incomplete` with the whole response, its usage and the request's echoed settings.
/// A run closes when anything else starts; tool calls stay open until the answer finishes
/// (their arguments may arrive interleaved). Only the first choice is written.
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
        Self::with_reply(model, None)
    }

    fn with_reply(model: &str, reply: Option<Arc<Reply>>) -> Self {
        ResponseEvents {
            model: model.to_string(),
            upstream_id: String::new(),
            id: String::new(),
            created: 0,
            started: false,
            items: Vec::new(),
            finish: None,
            usage: None,
            shared: Arc::new(Shared {
                reply,
                ..Shared::default()
            }),
        }
    }

    fn reply(&self) -> Option<&Reply> {
        self.shared.reply.as_deref()
    }

    fn emit(&self, out: &mut BytesMut, mut data: Value) {
        data["sequence_number"] = json!(self.shared.next_seq());
        event(out, &data);
    }

    fn emit_response(&self, out: &mut BytesMut, kind: &str, response: &str) {
        response_event(out, kind, self.shared.next_seq(), response);
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
        let r = response_text(
            &self.id,
            self.created,
            &self.model,
            "in_progress",
            None,
            Some(Vec::new()),
            None,
            self.shared.echo(),
        );
        self.emit_response(out, "response.created", &r);
        self.emit_response(out, "response.in_progress", &r);
    }

    /// Closes the open text or reasoning run, if any.
    fn close_run(&mut self, out: &mut BytesMut) {
        let Some(index) = self
            .items
            .iter()
            .position(|it| matches!(it, Item::Run { open: true, .. }))
        else {
            return;
        };
        if let Some(Item::Run { open, .. }) = self.items.get_mut(index) {
            *open = false;
        }
        let Some(item @ Item::Run { kind, id, text, .. }) = self.items.get(index) else {
            return;
        };
        let done = match kind {
            Run::Text => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                [
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": index, "content_index": 0, "part": part}),
                ]
            }
            Run::Reasoning => {
                let part = json!({"type": "summary_text", "text": text});
                [
                    json!({"type": "response.reasoning_summary_text.done", "item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                    json!({"type": "response.reasoning_summary_part.done", "item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                ]
            }
        };
        let item = item.json("completed");
        for d in done {
            self.emit(out, d);
        }
        self.emit(
            out,
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        );
    }

    /// Closes every open item (the run, then calls in order).
    fn close_all(&mut self, out: &mut BytesMut) {
        self.close_run(out);
        for index in 0..self.items.len() {
            let Some(Item::Call {
                arguments,
                custom,
                open: open @ true,
                ..
            }) = self.items.get_mut(index)
            else {
                continue;
            };
            *open = false;
            // A custom tool's text that could not be decoded as it arrived goes as one delta.
            let late = match custom {
                Some(d) if !d.streamed() => Some(custom_input(arguments)),
                _ => None,
            };
            let Some(item) = self.items.get(index) else {
                continue;
            };
            let (item_id, done) = (item.id(), item.json("completed"));
            if let Some(text) = late.filter(|t| !t.is_empty()) {
                self.emit(
                    out,
                    json!({"type": "response.custom_tool_call_input.delta", "item_id": item_id, "output_index": index, "delta": text}),
                );
            }
            let finished = match done["type"].as_str() {
                Some("custom_tool_call") => {
                    json!({"type": "response.custom_tool_call_input.done", "item_id": item_id, "output_index": index, "input": done["input"]})
                }
                _ => {
                    json!({"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": index, "arguments": done["arguments"]})
                }
            };
            self.emit(out, finished);
            self.emit(
                out,
                json!({"type": "response.output_item.done", "output_index": index, "item": done}),
            );
        }
    }

    /// A fragment of a text or reasoning run: the run continues, or a new one starts.
    fn run(&mut self, out: &mut BytesMut, kind: Run, fragment: &str) {
        self.start(out);
        let open =
            matches!(self.items.last(), Some(Item::Run { kind: k, open: true, .. }) if *k == kind);
        if !open {
            self.close_run(out);
            let index = self.items.len();
            let (prefix, first) = match kind {
                Run::Text => (
                    "msg",
                    !self.items.iter().any(|it| {
                        matches!(
                            it,
                            Item::Run {
                                kind: Run::Text,
                                ..
                            }
                        )
                    }),
                ),
                Run::Reasoning => (
                    "rs",
                    !self.items.iter().any(|it| {
                        matches!(
                            it,
                            Item::Run {
                                kind: Run::Reasoning,
                                ..
                            }
                        )
                    }),
                ),
            };
            let id = if first {
                item_id(prefix, &self.id)
            } else {
                format!("{}_{index}", item_id(prefix, &self.id))
            };
            let item = Item::Run {
                kind,
                id: id.clone(),
                text: String::new(),
                open: true,
            };
            self.emit(
                out,
                json!({"type": "response.output_item.added", "output_index": index, "item": item.json("in_progress")}),
            );
            let part = match kind {
                Run::Text => {
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
                }
                Run::Reasoning => {
                    json!({"type": "response.reasoning_summary_part.added", "item_id": id, "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}})
                }
            };
            self.emit(out, part);
            self.items.push(item);
        }
        let index = self.items.len() - 1;
        let Some(Item::Run { id, text: acc, .. }) = self.items.last_mut() else {
            return;
        };
        acc.push_str(fragment);
        let data = match kind {
            Run::Text => {
                json!({"type": "response.output_text.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": fragment, "logprobs": []})
            }
            Run::Reasoning => {
                json!({"type": "response.reasoning_summary_text.delta", "item_id": id, "output_index": index, "summary_index": 0, "delta": fragment})
            }
        };
        self.emit(out, data);
    }

    fn output(&self) -> Vec<Value> {
        self.items.iter().map(|it| it.json("completed")).collect()
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
        self.run(out, Run::Text, text);
    }

    fn reasoning(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        if choice != 0 || text.is_empty() {
            return;
        }
        self.run(out, Run::Reasoning, text);
    }

    fn tool_start(&mut self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str) {
        if choice != 0 {
            return;
        }
        self.start(out);
        self.close_run(out);
        let output_index = self.items.len();
        let call_id = if id.is_empty() {
            format!("call_{}", random_token(24))
        } else {
            id.to_string()
        };
        let custom = self
            .reply()
            .is_some_and(|r| r.is_custom(name))
            .then(InputDecoder::default);
        let namespace = self
            .reply()
            .and_then(|r| r.namespace(name))
            .map(str::to_string);
        let item = Item::Call {
            index,
            call_id,
            name: name.to_string(),
            namespace,
            arguments: String::new(),
            custom,
            open: true,
        };
        self.emit(
            out,
            json!({"type": "response.output_item.added", "output_index": output_index, "item": item.json("in_progress")}),
        );
        self.items.push(item);
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
            arguments, custom, ..
        }) = self.items.get_mut(output_index)
        else {
            return;
        };
        arguments.push_str(fragment);
        let text = custom.as_mut().map(|d| d.feed(fragment));
        let item_id = self.items[output_index].id();
        let data = match text {
            Some(t) if t.is_empty() => return,
            Some(t) => {
                json!({"type": "response.custom_tool_call_input.delta", "item_id": item_id, "output_index": output_index, "delta": t})
            }
            None => {
                json!({"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": output_index, "delta": fragment})
            }
        };
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
        let r = response_text(
            &self.id,
            self.created,
            &self.model,
            status,
            incomplete,
            Some(self.output()),
            self.usage.as_ref(),
            self.shared.echo(),
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit_response(out, kind, &r);
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
        let (bytes, _) = to_chat(v.to_string().as_bytes())?;
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
                "reasoning_effort": "medium",
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
                json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required"}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "hi", "tools": [{"name": "f"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "hi", "tool_choice": {"type": "web_search_preview"}, "tools": []}),
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "input": "hi", "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}),
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "input": "hi", "reasoning": {"effort": 3}}),
                "reasoning.effort",
            ),
            (
                json!({"model": "m", "input": "hi", "reasoning": "high"}),
                "reasoning",
            ),
            (
                json!({"model": "m", "input": "hi", "background": true}),
                "background",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
                "input[0].content[0].file_id",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]}),
                "input[0].content[0].file_url",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.pdf"}]}]}),
                "input[0].content[0].file_data",
            ),
            (
                json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_file", "file_data": "AAAA"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "custom_tool_call", "call_id": "c", "name": "p"}]}),
                "input[0].input",
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
                json!({"model": "m", "input": "hi", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}]}),
                "tools[0].tools[0].type",
            ),
            (
                json!({"model": "m", "input": "hi", "tools": [{"type": "custom", "name": "f"}, {"type": "namespace", "name": "n", "tools": [{"type": "custom", "name": "f"}]}]}),
                "tools",
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
            stop_sequence: None,
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
        let body = ResponseWriter { reply: None }.answer_body(
            "chatcmpl-1",
            7,
            "m",
            &[answer("tool_calls")],
            Some(&u),
        );
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        // Ids are the gateway's own, the message's made from the response's.
        let id = v["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("resp_") && id.len() == 29, "{id}");
        assert_eq!(v["output"][0]["id"], format!("msg_{}", &id[5..]));
        v["id"] = json!("resp_1");
        v["output"][0]["id"] = json!("msg_1");
        assert_eq!(
            v,
            json!({
                "id": "resp_1", "object": "response", "created_at": 7, "status": "completed",
                "error": null, "incomplete_details": null, "model": "m",
                "output": [
                    {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": "Hi.", "annotations": [], "logprobs": []}]},
                    {"type": "function_call", "id": "fc_call_9", "call_id": "call_9", "name": "get", "arguments": "{\"q\":1}", "status": "completed"}
                ],
                "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 3,
                          "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13}
            })
        );
        let body =
            ResponseWriter { reply: None }.answer_body("", 7, "m", &[answer("length")], None);
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
        // The gateway's own id, the same in every event; item ids made from it.
        let rid = evs[0]["response"]["id"].as_str().unwrap().to_string();
        assert!(rid.starts_with("resp_") && rid != "resp_c1", "{rid}");
        assert_eq!(evs[0]["response"]["status"], "in_progress");
        assert_eq!(evs[2]["item"]["id"], format!("msg_{}", &rid[5..]));
        assert_eq!(evs[4]["delta"], "Hi.");
        assert_eq!(evs[8]["output_index"], 1);
        assert_eq!(evs[8]["item"]["call_id"], "call_9");
        assert_eq!(evs[10]["arguments"], "{\"q\":1}");
        let r = &evs[12]["response"];
        assert_eq!(r["id"], rid);
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
        assert_eq!(r["id"], evs[0]["response"]["id"]);
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
            assert_eq!(last["response"]["id"], evs[0]["response"]["id"]);
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
        assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
        assert_ne!(v["id"], "resp_chatcmpl-5", "unique, not the upstream's");
        assert_eq!(v["model"], "vllm/m");
        assert_eq!(v["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(v["usage"]["total_tokens"], 3);
    }

    /// Codex's custom `apply_patch` (a grammar), a custom tool in a namespace, hosted tools,
    /// a forced custom tool, and a custom tool's call and output in the history.
    #[test]
    fn custom_and_hosted_tools() {
        let body = json!({
            "model": "m",
            "input": [
                {"role": "user", "content": "patch it"},
                {"type": "custom_tool_call", "id": "ctc_1", "status": "completed", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch\n\"x\"\n*** End Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"}
            ],
            "tools": [
                {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}},
                {"type": "web_search", "external_web_access": true},
                {"type": "namespace", "name": "mcp", "description": "d", "tools": [{"type": "custom", "name": "note"}, {"type": "function", "name": "fetch", "parameters": {"type": "object"}}]},
                {"type": "tool_search"},
                {"type": "web_search"}
            ],
            "tool_choice": {"type": "custom", "name": "apply_patch"}
        });
        let (bytes, notes) = to_chat(body.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            notes.dropped_tools.as_deref(),
            Some("web_search,tool_search")
        );
        let tools = v["tools"].as_array().unwrap();
        let names: Vec<&str> = tools
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["apply_patch", "note", "fetch"]);
        let patch = &tools[0]["function"];
        assert_eq!(patch["description"], "Edit files.");
        assert_eq!(patch["parameters"]["required"], json!([CUSTOM_INPUT]));
        assert_eq!(
            patch["parameters"]["properties"][CUSTOM_INPUT]["type"],
            "string"
        );
        let about = patch["parameters"]["properties"][CUSTOM_INPUT]["description"]
            .as_str()
            .unwrap();
        assert!(about.contains("lark grammar:\nstart: patch"), "{about}");
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "function": {"name": "apply_patch"}})
        );
        let m = v["messages"].as_array().unwrap();
        let call = &m[1]["tool_calls"][0];
        assert_eq!(
            (&call["id"], &m[1]["role"]),
            (&json!("call_p"), &json!("assistant"))
        );
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            args,
            json!({CUSTOM_INPUT: "*** Begin Patch\n\"x\"\n*** End Patch"})
        );
        assert_eq!(
            m[2],
            json!({"role": "tool", "content": "Done!", "tool_call_id": "call_p"})
        );
        let reply = notes.dialect.unwrap().downcast::<Reply>().unwrap();
        assert!(reply.is_custom("apply_patch") && reply.is_custom("note"));
        assert!(!reply.is_custom("fetch"));
        assert_eq!(reply.namespace("fetch"), Some("mcp"));
        assert_eq!(reply.namespace("apply_patch"), None);
        // Only hosted tools: offered none, reported, and a tool_choice forcing one is a 400.
        let (bytes, notes) = to_chat(
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search_preview"}], "tool_choice": "auto"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            v.get("tools").is_none() && v.get("tool_choice").is_none(),
            "{v}"
        );
        assert_eq!(notes.dropped_tools.as_deref(), Some("web_search_preview"));
        let e = chat(json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search_preview"}}))
            .unwrap_err();
        assert!(e.message.contains("web_search_preview"), "{}", e.message);
        // No hosted tool, nothing reported.
        let (_, notes) = to_chat(br#"{"model":"m","input":"hi"}"#).unwrap();
        assert!(notes.dropped_tools.is_none());
    }

    #[test]
    fn reasoning_effort_and_input_files() {
        let v = chat(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "read"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
            {"type": "input_file", "file_data": "aGVsbG8=", "filename": "notes.TXT"},
            {"type": "input_file", "file_data": "AAAA"}
        ]}], "reasoning": {"effort": "high", "summary": "auto"}}))
        .unwrap();
        assert_eq!(v["reasoning_effort"], "high");
        assert_eq!(
            v["messages"][0]["content"],
            json!([
                {"type": "text", "text": "read"},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8=", "filename": "notes.TXT"}},
                {"type": "file", "file": {"file_data": "data:application/octet-stream;base64,AAAA"}}
            ])
        );
        // No effort (Codex's `{"summary": "auto"}`): nothing to set.
        let v =
            chat(json!({"model": "m", "input": "hi", "reasoning": {"summary": "auto"}})).unwrap();
        assert!(v.get("reasoning_effort").is_none(), "{v}");
        // The canonical request parses (the proxy's own validation).
        let body = Bytes::from(
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"}]}]})
                .to_string(),
        );
        OpenAiResponses.parse(&body, true).unwrap();
    }

    /// A request as the proxy gets it, with Codex's tools.
    fn codex_request(stream: bool) -> ChatRequest {
        let body = json!({
            "model": "vllm/m", "input": "fix it", "stream": stream, "store": false,
            "instructions": "Be brief.", "temperature": 0.3, "max_output_tokens": 500,
            "reasoning": {"effort": "low", "summary": "auto"}, "metadata": {"k": "v"},
            "service_tier": "auto",
            "tools": [
                {"type": "custom", "name": "apply_patch", "description": "Edit files."},
                {"type": "namespace", "name": "mcp", "description": "d", "tools": [{"type": "function", "name": "fetch", "parameters": {"type": "object"}}]},
                {"type": "web_search"}
            ]
        });
        OpenAiResponses
            .parse(&Bytes::from(body.to_string()), false)
            .unwrap()
    }

    #[test]
    fn answers_echo_settings_and_carry_reasoning_and_custom_calls() {
        let req = codex_request(false);
        assert_eq!(
            req.notes().and_then(|n| n.dropped_tools.as_deref()),
            Some("web_search")
        );
        let a = Answer {
            stop_sequence: None,
            reasoning: Some("Think first.".into()),
            content: Some("Patching.".into()),
            tool_calls: vec![
                ToolCall {
                    id: "call_1".into(),
                    name: "apply_patch".into(),
                    arguments: json!({CUSTOM_INPUT: "*** Begin Patch\n*** End Patch\n"})
                        .to_string(),
                },
                ToolCall {
                    id: "call_2".into(),
                    name: "fetch".into(),
                    arguments: "{}".into(),
                },
            ],
            finish_reason: "tool_calls".into(),
            usage: None,
        };
        let mut u = Usage::new(10, 30);
        u.reasoning_tokens = 12;
        let body = OpenAiResponses
            .answers_for(&req)
            .answer_body("c1", 7, "vllm/m", &[a], Some(&u));
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        let suffix = v["id"].as_str().unwrap()[5..].to_string();
        assert_eq!(v["output"][0]["id"], format!("rs_{suffix}"));
        assert_eq!(v["output"][1]["id"], format!("msg_{suffix}"));
        v["output"][0]["id"] = json!("rs_c1");
        v["output"][1]["id"] = json!("msg_c1");
        assert_eq!(
            v["output"],
            json!([
                {"type": "reasoning", "id": "rs_c1", "summary": [{"type": "summary_text", "text": "Think first."}]},
                {"type": "message", "id": "msg_c1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Patching.", "annotations": [], "logprobs": []}]},
                {"type": "custom_tool_call", "id": "ctc_call_1", "call_id": "call_1", "name": "apply_patch",
                 "input": "*** Begin Patch\n*** End Patch\n", "status": "completed"},
                {"type": "function_call", "id": "fc_call_2", "call_id": "call_2", "name": "fetch", "namespace": "mcp",
                 "arguments": "{}", "status": "completed"}
            ])
        );
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 12);
        // Settings as sent, OpenAI's defaults for the rest.
        for (k, want) in [
            ("instructions", json!("Be brief.")),
            ("temperature", json!(0.3)),
            ("max_output_tokens", json!(500)),
            ("reasoning", json!({"effort": "low", "summary": "auto"})),
            ("metadata", json!({"k": "v"})),
            ("store", json!(false)),
            ("service_tier", json!("default")),
            ("top_p", json!(1.0)),
            ("tool_choice", json!("auto")),
            ("parallel_tool_calls", json!(true)),
            ("truncation", json!("disabled")),
            ("previous_response_id", Value::Null),
            ("user", Value::Null),
            (
                "text",
                json!({"format": {"type": "text"}, "verbosity": "medium"}),
            ),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        assert_eq!(v["tools"].as_array().unwrap().len(), 3);
        assert_eq!(v["tools"][0]["type"], "custom");
        assert_eq!(v["status"], "completed");
    }

    #[test]
    fn custom_input_decodes_at_every_split() {
        let text = "*** Begin Patch\n+say \"hi\" \\ \u{e9} \u{1F600}\t\n*** End Patch";
        // serde's escapes, and the \u forms other encoders write.
        let args = [
            json!({CUSTOM_INPUT: text}).to_string(),
            "{ \"input\" : \"*** Begin Patch\\n+say \\\"hi\\\" \\\\ \\u00e9 \\ud83d\\ude00\\t\\n*** End Patch\", \"x\": 1}".to_string(),
        ];
        for a in &args {
            assert_eq!(custom_input(a), text, "{a}");
            let chars: Vec<(usize, char)> = a.char_indices().collect();
            for (split, _) in &chars {
                let mut d = InputDecoder::default();
                let mut got = d.feed(&a[..*split]);
                got.push_str(&d.feed(&a[*split..]));
                assert_eq!(got, text, "split {split} of {a}");
                assert_eq!(d.input(a), text);
            }
            // One character at a time.
            let mut d = InputDecoder::default();
            let got: String = chars.iter().map(|(_, c)| d.feed(&c.to_string())).collect();
            assert_eq!(got, text);
        }
        // Other shapes: decoded whole at the end.
        for (a, want) in [
            ("{\"patch\":\"p\"}", "p"),
            ("\"p\"", "p"),
            ("*** Begin Patch", "*** Begin Patch"),
            ("{\"a\":1,\"b\":2}", "{\"a\":1,\"b\":2}"),
        ] {
            let mut d = InputDecoder::default();
            assert_eq!(d.feed(a), "", "{a}");
            assert!(!d.streamed());
            assert_eq!(d.input(a), want, "{a}");
        }
    }

    /// A reasoning model's chat stream: reasoning, text, a call to a custom tool and one to a
    /// namespaced function.
    const REASONING_STREAM: &str = concat!(
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Let me \"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think \\u00e9.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Patching.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_p\",\"type\":\"function\",\"function\":{\"name\":\"apply_patch\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"input\\\":\\\"*** Begin\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\" Patch\\\\n\\\\\\\"x\\\\\\\"\\\\u00e9\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_f\",\"type\":\"function\",\"function\":{\"name\":\"fetch\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c3\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29,\"completion_tokens_details\":{\"reasoning_tokens\":6}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn reasoning_and_custom_calls_stream_at_every_split() {
        let req = codex_request(true);
        let input = REASONING_STREAM.as_bytes();
        let run = |split: usize| {
            let w = OpenAiResponses.events_for(&req, "vllm/m");
            let mut t = openai_provider().stream_translator(&call(), w);
            let mut out = BytesMut::new();
            let status = crate::providers::stream::feed_split(t.as_mut(), input, split, &mut out);
            assert_eq!(status, StreamStatus::Done, "split {split}");
            events(&out)
        };
        let evs = run(0);
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(evs[0]["response"]["tools"][0]["name"], "apply_patch");
        assert_eq!(evs[0]["response"]["temperature"], 0.3);
        let suffix = evs[0]["response"]["id"].as_str().unwrap()[5..].to_string();
        assert_eq!(
            evs[2]["item"],
            json!({"type": "reasoning", "id": format!("rs_{suffix}"), "summary": []})
        );
        assert_eq!(evs[6]["text"], "Let me think \u{e9}.");
        assert_eq!(evs[9]["output_index"], 1);
        assert_eq!(evs[15]["item"]["type"], "custom_tool_call");
        assert_eq!(evs[15]["item"]["id"], "ctc_call_p");
        let patch = "*** Begin Patch\n\"x\"\u{e9}";
        assert_eq!(
            format!(
                "{}{}",
                evs[16]["delta"].as_str().unwrap(),
                evs[17]["delta"].as_str().unwrap()
            ),
            patch
        );
        assert_eq!(evs[18]["item"]["namespace"], "mcp");
        assert_eq!(evs[20]["input"], patch);
        assert_eq!(evs[20]["item_id"], "ctc_call_p");
        let r = &evs[24]["response"];
        assert_eq!(r["output"][0]["summary"][0]["text"], "Let me think \u{e9}.");
        assert_eq!(r["output"][1]["content"][0]["text"], "Patching.");
        assert_eq!(r["output"][2]["input"], patch);
        assert_eq!(r["output"][3]["type"], "function_call");
        assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 6);
        assert_eq!(r["store"], false);
        for split in 1..input.len() {
            let got = run(split);
            let kinds = types(&got);
            // The custom tool's text may arrive in other pieces; the rest is the same.
            let same: Vec<&str> = types(&evs)
                .into_iter()
                .filter(|k| *k != "response.custom_tool_call_input.delta")
                .collect();
            let got_same: Vec<&str> = kinds
                .iter()
                .copied()
                .filter(|k| *k != "response.custom_tool_call_input.delta")
                .collect();
            assert_eq!(got_same, same, "split {split}");
            let deltas: String = got
                .iter()
                .filter(|e| e["type"] == "response.custom_tool_call_input.delta")
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            assert_eq!(deltas, patch, "split {split}");
            // The same output but for the ids made from each run's own response id.
            let ids = |v: &Value| {
                let mut v = v.clone();
                for item in v.as_array_mut().into_iter().flatten() {
                    if let Some(id) = item["id"].as_str() {
                        if let Some((prefix, _)) = id
                            .split_once('_')
                            .filter(|(p, _)| *p != "ctc" && *p != "fc")
                        {
                            item["id"] = json!(prefix);
                        }
                    }
                }
                v
            };
            assert_eq!(
                ids(&got.last().unwrap()["response"]["output"]),
                ids(&r["output"]),
                "split {split}"
            );
        }
        // A failure after the first event: response.failed, echo included.
        let w = OpenAiResponses.events_for(&req, "vllm/m");
        let failure = w.on_failure().unwrap();
        let ev = String::from_utf8(failure.event("boom", "cut").to_vec()).unwrap();
        let v: Value = serde_json::from_str(ev.split_once("data: ").unwrap().1.trim()).unwrap();
        assert_eq!(v["response"]["status"], "failed");
        assert_eq!(v["response"]["instructions"], "Be brief.");
    }
}
