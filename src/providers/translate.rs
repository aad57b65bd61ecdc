//! What the translating wire formats (`anthropic`, `gemini`) share: the OpenAI request read once
//! into a neutral shape ([`Conversation`], [`ToolDef`], [`ToolChoice`], [`ResponseFormat`]),
//! with every malformed or untranslatable piece answered by a 400 that names the field.
//!
//! Policy for request fields (README, "Anthropic and Gemini"): a field is translated when the
//! upstream has an equivalent; dropped silently only when it cannot change the answer (`store`,
//! `metadata`, ...); otherwise, unknown fields included, the request is refused with a 400 naming
//! it, so a client never gets an answer to a different question than the one it asked.

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::api::{MessageFields, Usage};
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

/// Every top-level field of the request is translated (named in `translated`), null, harmless,
/// a zero penalty where the upstream has no penalties (`zero_ok`), or a 400 naming it; `api`
/// names the upstream API in that message.
pub fn check_fields(
    b: &Fields,
    translated: &[&str],
    zero_ok: &[&str],
    provider: &str,
    api: &str,
) -> Result<(), GatewayError> {
    for (k, raw) in b.fields {
        if translated.contains(&k.as_str()) {
            continue;
        }
        let v = value(raw);
        if v.is_null()
            || harmless(k, &v)
            || (zero_ok.contains(&k.as_str()) && v.as_f64() == Some(0.0))
        {
            continue;
        }
        return Err(unsupported(
            provider,
            k,
            &format!("{api} has no equivalent and dropping it could change the answer; remove it"),
        ));
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// Reading the request without building its JSON tree
//
// The request is kept as raw top-level fields (`ChatRequest::fields`). The translators read
// the few small fields they need as values, one at a time, and the messages and tools into
// borrowed structures, in one pass: message text stays JSON text ([`Str`]) and is written to
// the upstream as sent; other strings point into the request unless they had escapes; JSON
// the upstream takes as is (tool schemas, tool call arguments, `cache_control`) stays raw.
// Every object is read as its raw fields, a key sent twice keeping its last value, and a field
// of the wrong type reads as absent: what a JSON tree and `Value::as_str` gave before.

/// The request's top-level fields, read one at a time from their raw JSON.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The fields; with `messages` among them when `messages` is `None`.
    pub fields: &'a [(String, Box<RawValue>)],
    /// `messages` as JSON text, when kept apart (as `ChatRequest` keeps it).
    pub messages: Option<&'a str>,
}

impl<'a> Fields<'a> {
    pub fn of(req: &'a crate::api::ChatRequest) -> Fields<'a> {
        Fields {
            fields: req.fields(),
            messages: Some(req.messages_raw()),
        }
    }

    /// Fields as parsed by `api::parse_raw_object` (`messages` among them).
    pub fn raw_object(fields: &'a [(String, Box<RawValue>)]) -> Fields<'a> {
        Fields {
            fields,
            messages: None,
        }
    }

    /// `messages` as JSON text (`[]` when absent).
    pub fn messages(&self) -> &'a str {
        self.messages
            .or_else(|| self.raw("messages").map(RawValue::get))
            .unwrap_or("[]")
    }

    /// A field as sent.
    pub fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }

    /// A field as a JSON value, as `ChatRequest::body` has it.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.raw(key).map(value)
    }

    /// A string field (`None` when absent or not a string).
    pub fn str(&self, key: &str) -> Option<Cow<'a, str>> {
        str_of(self.raw(key))
    }
}

/// Raw JSON as a value (null if it cannot be one, as `ChatRequest::body` does).
pub fn value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// Raw JSON compared by its text: what the tests of the structures below need.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a>(pub &'a RawValue);

impl PartialEq for Raw<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

pub(crate) use crate::api::CowStr;

/// `Value::as_str` on raw JSON.
pub fn str_of(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    serde_json::from_str::<CowStr>(raw?.get()).ok().map(|s| s.0)
}

/// A string of the request as sent: its JSON text, escapes included, decoded only when the
/// value is needed. Written back as sent, so a long prompt is copied, not decoded and escaped
/// again. Also a plain string, for text the gateway makes (joined parts, a trimmed prefill).
#[derive(Clone)]
pub enum Str<'a> {
    /// A JSON string literal (quotes included).
    Json(&'a RawValue),
    Text(Cow<'a, str>),
}

impl<'a> Str<'a> {
    /// `Some` when `raw` is a JSON string.
    pub fn json(raw: Option<&'a RawValue>) -> Option<Str<'a>> {
        raw.filter(|r| r.get().starts_with('"')).map(Str::Json)
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Str::Json(r) => r.get().len() == 2,
            Str::Text(t) => t.is_empty(),
        }
    }

    /// The value: borrowed from the request when it had no escapes.
    pub fn decode(&self) -> Cow<'a, str> {
        match self {
            Str::Json(r) => {
                let s = r.get();
                match s.get(1..s.len().saturating_sub(1)) {
                    Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
                    _ => str_of(Some(r)).unwrap_or_default(),
                }
            }
            Str::Text(t) => t.clone(),
        }
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Str::Json(r) => r.serialize(s),
            Str::Text(t) => s.serialize_str(t),
        }
    }
}

impl std::fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.decode().fmt(f)
    }
}

impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.decode() == other.decode()
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.decode() == *other
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str::Text(Cow::Borrowed(s))
    }
}

/// A JSON object as its raw fields, in order; a key sent twice keeps its last value in its
/// first place, as in a JSON tree.
#[derive(Debug, Default)]
pub struct RawObject<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// `None` when `raw` is not an object.
    pub fn parse(raw: &'a RawValue) -> Option<RawObject<'a>> {
        if !raw.get().starts_with('{') {
            return None;
        }
        serde_json::from_str(raw.get()).ok()
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// [`RawObject::get`] for a field that may be null.
    pub fn non_null(&self, key: &str) -> Option<&'a RawValue> {
        self.get(key).filter(|v| !is_null(v))
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<RawObject<'de>, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> =
                    Vec::with_capacity(a.size_hint().unwrap_or(4));
                while let Some(CowStr(k)) = a.next_key()? {
                    let v: &'de RawValue = a.next_value()?;
                    match out.iter_mut().find(|(x, _)| *x == k) {
                        Some(slot) => slot.1 = v,
                        None => out.push((k, v)),
                    }
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The items of a JSON array, raw (`None` when `raw` is not an array).
pub fn items(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// `max_completion_tokens`, else `max_tokens`.
pub fn max_tokens(body: &Fields) -> Result<Option<u64>, GatewayError> {
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
pub fn temperature(body: &Fields) -> Result<Option<f64>, GatewayError> {
    match body.get("temperature").and_then(|v| v.as_f64()) {
        None => Ok(None),
        Some(t) if (0.0..=2.0).contains(&t) => Ok(Some(t)),
        Some(_) => Err(GatewayError::bad_request(
            "temperature",
            "'temperature' must be between 0 and 2",
        )),
    }
}

/// `n`, at least 1.
pub fn choices(body: &Fields) -> Result<u64, GatewayError> {
    match body.get("n") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=128).contains(n))
            .ok_or_else(|| GatewayError::bad_request("n", "'n' must be between 1 and 128")),
    }
}

/// `stop` as a list (a string is one stop sequence).
pub fn stop_sequences(body: &Fields) -> Vec<String> {
    match body.get("stop") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One function tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef<'a> {
    pub name: Cow<'a, str>,
    pub description: Option<Cow<'a, str>>,
    /// The JSON Schema of the arguments (an object), if the client gave one.
    pub parameters: Option<Raw<'a>>,
}

/// `tools`: only `function` tools have an equivalent upstream.
pub fn tools<'a>(body: &Fields<'a>) -> Result<Vec<ToolDef<'a>>, GatewayError> {
    let Some(list) = body.raw("tools").and_then(items) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        let param = format!("tools[{i}]");
        let t = RawObject::parse(t).unwrap_or_default();
        let kind = str_of(t.get("type"));
        let kind = kind.as_deref().unwrap_or("function");
        if kind != "function" {
            return Err(GatewayError::bad_request(
                &format!("{param}.type"),
                format!("{param}.type {kind:?} is not supported: only \"function\" tools can be translated"),
            ));
        }
        let f = t
            .get("function")
            .and_then(RawObject::parse)
            .ok_or_else(|| {
                GatewayError::bad_request(
                    &format!("{param}.function"),
                    format!("{param}.function must be an object"),
                )
            })?;
        let name = str_of(f.get("name"))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                GatewayError::bad_request(
                    &format!("{param}.function.name"),
                    format!("{param}.function.name is required"),
                )
            })?;
        let parameters = match f.non_null("parameters") {
            None => None,
            Some(p) if p.get().starts_with('{') => Some(Raw(p)),
            Some(_) => {
                return Err(GatewayError::bad_request(
                    &format!("{param}.function.parameters"),
                    format!("{param}.function.parameters must be a JSON Schema object"),
                ))
            }
        };
        out.push(ToolDef {
            name,
            description: str_of(f.get("description")),
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
pub fn tool_choice(body: &Fields, tools: &[ToolDef]) -> Result<Option<ToolChoice>, GatewayError> {
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

pub fn response_format(body: &Fields) -> Result<ResponseFormat, GatewayError> {
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
pub struct Text<'a> {
    pub text: Str<'a>,
    pub cache_control: Option<Raw<'a>>,
}

/// Where an image or file comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source<'a> {
    /// `data:<mime>;base64,<data>`.
    Inline {
        mime: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    /// An http(s) URL the upstream fetches itself.
    Url {
        url: Cow<'a, str>,
        mime: &'static str,
    },
}

/// One part of a user or assistant message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part<'a> {
    Text(Text<'a>),
    Image(Source<'a>, Option<Raw<'a>>),
    /// `input_audio`: base64 data and its format (`wav`, `mp3`).
    Audio {
        data: Cow<'a, str>,
        format: Cow<'a, str>,
    },
    /// `file` with inline `file_data`.
    File {
        mime: Cow<'a, str>,
        data: Cow<'a, str>,
    },
}

/// A tool call's `arguments`: a JSON object, as the client sent it.
#[derive(Debug, Clone)]
pub enum Args<'a> {
    /// Absent or blank: no arguments.
    Empty,
    /// Sent as an object, or as a string without escapes.
    Raw(&'a RawValue),
    /// Sent as a string with escapes (the usual case: `"{\"city\":\"Paris\"}"`).
    Owned(Box<RawValue>),
}

impl Serialize for Args<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Args::Empty => s.serialize_map(Some(0))?.end(),
            Args::Raw(r) => r.serialize(s),
            Args::Owned(r) => r.serialize(s),
        }
    }
}

impl PartialEq<Value> for Args<'_> {
    fn eq(&self, other: &Value) -> bool {
        match self {
            Args::Empty => other.as_object().is_some_and(Map::is_empty),
            Args::Raw(r) => value(r) == *other,
            Args::Owned(r) => value(r) == *other,
        }
    }
}

impl PartialEq for Args<'_> {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall<'a> {
    /// The id as the upstream knows it: the client's, without the gateway's [`Thought`] suffix.
    pub id: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub args: Args<'a>,
    /// The reasoning state the gateway put in the id when the call was answered.
    pub thought: Option<Thought>,
}

/// One message, roles reduced to what the upstreams distinguish.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg<'a> {
    User(Vec<Part<'a>>),
    Assistant {
        parts: Vec<Part<'a>>,
        calls: Vec<ToolCall<'a>>,
        /// The message's reasoning as the gateway showed it (`reasoning_content`, else
        /// `reasoning`): Anthropic's thinking text, needed with its signature.
        reasoning: Option<Cow<'a, str>>,
    },
    /// A tool result; `name` is the function's, recovered from the assistant message that
    /// called it (Gemini needs it).
    Tool {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        content: Str<'a>,
    },
}

/// The request's messages: system/developer text apart, the rest in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation<'a> {
    pub system: Vec<Text<'a>>,
    pub turns: Vec<Msg<'a>>,
}

impl<'a> Conversation<'a> {
    /// Reads the request's `messages` (validated by `ChatRequest::parse`).
    pub fn of(body: &Fields<'a>) -> Result<Conversation<'a>, GatewayError> {
        Conversation::parse(body.messages())
    }

    /// Reads a `messages` array given as JSON text.
    pub fn parse(messages: &'a str) -> Result<Conversation<'a>, GatewayError> {
        let list: Vec<MessageFields<'a>> = serde_json::from_str(messages).unwrap_or_default();
        let mut conv = Conversation {
            system: Vec::new(),
            turns: Vec::with_capacity(list.len()),
        };
        // The calls of the assistant messages seen so far: the id as sent (with the gateway's
        // suffix, which tool messages repeat), the id for the upstream, the function name.
        let mut names: Vec<(Cow<'a, str>, Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        for (i, m) in list.into_iter().enumerate() {
            let role = str_of(m.role);
            let role = role.as_deref().unwrap_or("");
            let content = m.content;
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
                    let (calls, sent) = tool_calls(m.tool_calls, i)?;
                    for (c, sent) in calls.iter().zip(sent) {
                        names.push((sent, c.id.clone(), c.name.clone()));
                    }
                    let reasoning = str_of(m.reasoning);
                    conv.turns.push(Msg::Assistant {
                        parts,
                        calls,
                        reasoning,
                    });
                }
                "tool" => {
                    let id = str_of(m.tool_call_id).ok_or_else(|| {
                        GatewayError::bad_request(
                            &at("tool_call_id"),
                            format!("messages[{i}].tool_call_id is required for tool messages"),
                        )
                    })?;
                    let (id, name) = names
                        .iter()
                        .rev()
                        .find(|(k, ..)| *k == id)
                        .map(|(_, base, n)| (base.clone(), n.clone()))
                        .ok_or_else(|| {
                            GatewayError::bad_request(
                                &at("tool_call_id"),
                                format!("messages[{i}].tool_call_id {id:?} answers no tool call of an earlier assistant message"),
                            )
                        })?;
                    let content = match content {
                        Some(c) if c.get().starts_with('"') => Str::Json(c),
                        Some(c) if c.get().starts_with('[') => Str::Text(Cow::Owned(content_text(c))),
                        _ => Str::Text(Cow::Borrowed("")),
                    };
                    conv.turns.push(Msg::Tool { id, name, content });
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

/// The text parts of a content array joined (`api::content_text`).
fn content_text(parts: &RawValue) -> String {
    let mut out = String::new();
    for p in items(parts).unwrap_or_default() {
        if let Some(t) = RawObject::parse(p).and_then(|p| str_of(p.get("text"))) {
            out.push_str(&t);
        }
    }
    out
}

/// An assistant message's tool calls, and each call's id as sent.
#[allow(clippy::type_complexity)]
fn tool_calls<'a>(
    list: Option<&'a RawValue>,
    i: usize,
) -> Result<(Vec<ToolCall<'a>>, Vec<Cow<'a, str>>), GatewayError> {
    let Some(list) = list.filter(|l| !is_null(l)) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let list = items(list).ok_or_else(|| {
        GatewayError::bad_request(
            &format!("messages[{i}].tool_calls"),
            format!("messages[{i}].tool_calls must be an array"),
        )
    })?;
    let mut out = Vec::with_capacity(list.len());
    let mut sent = Vec::with_capacity(list.len());
    for (j, c) in list.into_iter().enumerate() {
        let at = |k: &str| format!("messages[{i}].tool_calls[{j}].{k}");
        let req = |k: &str, v: Option<Cow<'a, str>>| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| GatewayError::bad_request(&at(k), format!("{} is required", at(k))))
        };
        let c = RawObject::parse(c).unwrap_or_default();
        let id = req("id", str_of(c.get("id")))?;
        let f = c.get("function").and_then(RawObject::parse);
        let name = req(
            "function.name",
            f.as_ref().and_then(|f| str_of(f.get("name"))),
        )?;
        let bad_args = || {
            GatewayError::bad_request(
                &at("function.arguments"),
                format!(
                    "{} must be a JSON object encoded as a string",
                    at("function.arguments")
                ),
            )
        };
        let args = match f.as_ref().and_then(|f| f.non_null("arguments")) {
            None => Args::Empty,
            Some(a) if a.get().starts_with('{') => Args::Raw(a),
            Some(a) if a.get().starts_with('"') => match str_of(Some(a)) {
                Some(s) if s.trim().is_empty() => Args::Empty,
                Some(Cow::Borrowed(s)) => match serde_json::from_str::<&RawValue>(s) {
                    Ok(r) if r.get().starts_with('{') => Args::Raw(r),
                    _ => return Err(bad_args()),
                },
                Some(Cow::Owned(s)) => match RawValue::from_string(s) {
                    Ok(r) if r.get().starts_with('{') => Args::Owned(r),
                    _ => return Err(bad_args()),
                },
                None => return Err(bad_args()),
            },
            Some(_) => return Err(bad_args()),
        };
        let (n, thought) = {
            let (base, thought) = split_id(&id);
            (base.len(), thought)
        };
        let base = match &id {
            Cow::Borrowed(s) => Cow::Borrowed(s.get(..n).unwrap_or(s)),
            Cow::Owned(s) => Cow::Owned(s.get(..n).unwrap_or(s).to_string()),
        };
        out.push(ToolCall {
            id: base,
            name,
            args,
            thought,
        });
        sent.push(id);
    }
    Ok((out, sent))
}

// ---------------------------------------------------------------------------------------------
// Reasoning: the effort asked for, and the state a reasoning model needs back next turn

/// `reasoning_effort`, OpenAI's levels (`xhigh` as the newest models have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

/// `reasoning_effort`, checked (`None` when absent or null).
pub fn effort(body: &Fields) -> Result<Option<Effort>, GatewayError> {
    let Some(raw) = body.raw("reasoning_effort").filter(|v| !is_null(v)) else {
        return Ok(None);
    };
    let e = match str_of(Some(raw)).as_deref() {
        Some("none") => Effort::None,
        Some("minimal") => Effort::Minimal,
        Some("low") => Effort::Low,
        Some("medium") => Effort::Medium,
        Some("high") => Effort::High,
        Some("xhigh") => Effort::Xhigh,
        _ => {
            return Err(GatewayError::bad_request(
                "reasoning_effort",
                "'reasoning_effort' must be one of none, minimal, low, medium, high, xhigh",
            ))
        }
    };
    Ok(Some(e))
}

/// The thinking budget per effort level, for models that take a number of tokens (Anthropic's
/// before Claude 4.6, Cohere's reasoning models; README, "Reasoning").
pub const BUDGETS: [(Effort, u64); 5] = [
    (Effort::Minimal, 1024),
    (Effort::Low, 2048),
    (Effort::Medium, 8192),
    (Effort::High, 16384),
    (Effort::Xhigh, 24576),
];

/// [`BUDGETS`]' budget for `effort` (`None` for `none`).
pub fn budget(effort: Effort) -> Option<u64> {
    BUDGETS.iter().find(|(e, _)| *e == effort).map(|(_, b)| *b)
}

/// What separates a tool call's id from the reasoning state the gateway appends to it.
pub const THOUGHT_SEPARATOR: &str = "__thought__";

/// The reasoning state a translated answer's tool call carries to the client and back, inside
/// its id (`<id>__thought__<base64url JSON>`; every character in `[A-Za-z0-9_-]`): clients
/// return a tool call's id unchanged in the next turn, whatever else they drop. Tagged with the
/// provider and model that made it: it is restored only to them, never sent elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thought {
    /// The provider's name (`GATEWAY_PROVIDER_<NAME>`, `anthropic`, `gemini`).
    #[serde(rename = "p")]
    pub provider: String,
    /// The upstream model.
    #[serde(rename = "m")]
    pub model: String,
    /// Gemini: the call's `thoughtSignature`.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Anthropic: the thinking blocks before this call, in order.
    #[serde(rename = "b", default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<ThinkingRef>,
}

/// One Anthropic thinking block as the id carries it: its signature, and where its text is in
/// the message's `reasoning_content` (the text itself is not repeated); or a redacted block's
/// data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThinkingRef {
    /// Byte offset and length of the block's text in the reasoning text.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// `redacted_thinking`'s `data`.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

impl Thought {
    /// Whether this state was made by `provider` for `model` (and so may go back to it).
    pub fn is_for(&self, provider: &str, model: &str) -> bool {
        self.provider == provider && self.model == model
    }
}

/// A tool call id with `thought` appended.
pub fn encode_id(id: &str, thought: &Thought) -> String {
    let json = serde_json::to_vec(thought).unwrap_or_default();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let mut out = String::with_capacity(id.len() + THOUGHT_SEPARATOR.len() + b64.len());
    out.push_str(id);
    out.push_str(THOUGHT_SEPARATOR);
    out.push_str(&b64);
    out
}

/// A tool call id as sent -> the id the upstream knows and the state appended to it. A suffix
/// that does not decode is dropped all the same: it was never the upstream's.
pub fn split_id(id: &str) -> (&str, Option<Thought>) {
    let Some((base, suffix)) = id.split_once(THOUGHT_SEPARATOR) else {
        return (id, None);
    };
    let thought = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(suffix)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (base, thought)
}

/// A message's content as parts (a string is one text part; empty text is dropped).
fn parts<'a>(content: Option<&'a RawValue>, i: usize) -> Result<Vec<Part<'a>>, GatewayError> {
    let text = |s: Str<'a>, cc: Option<&'a RawValue>| {
        Part::Text(Text {
            text: s,
            cache_control: cc.filter(|v| !is_null(v)).map(Raw),
        })
    };
    let Some(content) = content else {
        return Ok(Vec::new());
    };
    if let Some(s) = Str::json(Some(content)) {
        return Ok(if s.is_empty() {
            Vec::new()
        } else {
            vec![text(s, None)]
        });
    }
    let Some(list) = items(content) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, p) in list.into_iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        let bad = |m: String| GatewayError::bad_request(&param, m);
        let p = RawObject::parse(p).unwrap_or_default();
        let kind = str_of(p.get("type"));
        let kind = kind.as_deref().unwrap_or("");
        let cc = p.get("cache_control");
        match kind {
            "text" | "refusal" => {
                let s = Str::json(p.get(kind))
                    .ok_or_else(|| bad(format!("{param}.{kind} must be a string")))?;
                if !s.is_empty() {
                    out.push(text(s, cc));
                }
            }
            "image_url" => {
                // An object with a `url`, or the URL itself.
                let url = p.get("image_url").and_then(|u| match RawObject::parse(u) {
                    Some(o) => o.get("url").and_then(|u| str_of(Some(u))),
                    None => str_of(Some(u)),
                });
                let url =
                    url.ok_or_else(|| bad(format!("{param}.image_url.url must be a string")))?;
                let src = source(url).map_err(|m| bad(format!("{param}.image_url.url: {m}")))?;
                out.push(Part::Image(src, cc.filter(|v| !is_null(v)).map(Raw)));
            }
            "input_audio" => {
                let a = p.get("input_audio").and_then(RawObject::parse);
                let data = a.as_ref().and_then(|a| str_of(a.get("data")));
                let format = a.as_ref().and_then(|a| str_of(a.get("format")));
                match (data, format) {
                    (Some(data), Some(format)) => out.push(Part::Audio { data, format }),
                    _ => return Err(bad(format!("{param}.input_audio needs data and format"))),
                }
            }
            "file" => {
                let f = p.get("file").and_then(RawObject::parse);
                match f.and_then(|f| str_of(f.get("file_data"))) {
                    Some(d) => match file(d) {
                        Some(part) => out.push(part),
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
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    Some((mime, data))
}

/// A `file_data` data URL as a part: borrowed from the request when the URL is.
fn file(url: Cow<'_, str>) -> Option<Part<'_>> {
    let (mime, data) = match url {
        Cow::Borrowed(u) => {
            let (m, d) = data_url(u)?;
            (Cow::Borrowed(m), Cow::Borrowed(d))
        }
        Cow::Owned(u) => {
            let (m, d) = data_url(&u)?;
            (Cow::Owned(m.to_string()), Cow::Owned(d.to_string()))
        }
    };
    Some(Part::File { mime, data })
}

/// An image URL as a source: borrowed from the request when the URL is.
fn source(url: Cow<'_, str>) -> Result<Source<'_>, &'static str> {
    match url {
        Cow::Borrowed(u) => source_of(u),
        Cow::Owned(u) => source_of(&u).map(Source::into_owned),
    }
}

fn source_of(url: &str) -> Result<Source<'_>, &'static str> {
    if url.starts_with("data:") {
        let (mime, data) = data_url(url).ok_or("a data URL must be data:<mime>;base64,<data>")?;
        return Ok(Source::Inline {
            mime: Cow::Borrowed(mime),
            data: Cow::Borrowed(data),
        });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(Source::Url {
            url: Cow::Borrowed(url),
            mime: mime_from_url(url),
        });
    }
    Err("must be an http(s) URL or a base64 data URL")
}

impl Source<'_> {
    fn into_owned(self) -> Source<'static> {
        match self {
            Source::Inline { mime, data } => Source::Inline {
                mime: Cow::Owned(mime.into_owned()),
                data: Cow::Owned(data.into_owned()),
            },
            Source::Url { url, mime } => Source::Url {
                url: Cow::Owned(url.into_owned()),
                mime,
            },
        }
    }
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

/// Serializes an upstream body straight to bytes, with room for about `size` of them.
pub fn to_bytes<T: Serialize>(body: &T, size: usize) -> Result<Bytes, GatewayError> {
    let mut out = Vec::with_capacity(size);
    serde_json::to_writer(&mut out, body)
        .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))?;
    Ok(Bytes::from(out))
}

/// An upstream answer that is not what its format promises.
pub fn bad_upstream_body(provider: &str, why: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        502,
        "upstream_error",
        Some("invalid_upstream_response"),
        crate::error::capped(format!(
            "{provider} sent a response the gateway cannot read: {why}"
        )),
    )
    .with_label("bad_upstream_response")
}

/// Whether an error is [`bad_upstream_body`]'s.
pub fn is_unreadable(e: &GatewayError) -> bool {
    e.code.as_deref() == Some("invalid_upstream_response")
}

/// A stream that ended before its format's terminal event.
/// An upstream stream event that grew past [`crate::sse::MAX_EVENT_BYTES`] without ending.
pub fn event_too_large() -> GatewayError {
    GatewayError::new(
        502,
        "upstream_error",
        Some("stream_event_too_large"),
        format!(
            "the upstream sent a stream event larger than {} MiB; the stream was ended",
            crate::sse::MAX_EVENT_BYTES >> 20
        ),
    )
    .with_label("stream_event_too_large")
}

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

/// Token estimate for a request's prompt, for an upstream without a counting endpoint: about
/// four characters per token of its messages and tools as JSON text.
pub fn estimate_prompt_tokens(req: &crate::api::ChatRequest) -> u64 {
    let tools = req
        .fields()
        .iter()
        .find(|(k, _)| k == "tools")
        .map_or(0, |(_, v)| estimate_tokens(v.get()));
    estimate_tokens(req.messages_raw()) + tools
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(v: Value) -> String {
        v.to_string()
    }

    fn fields(v: &Value) -> crate::api::RawFields {
        crate::api::parse_raw_object(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn conversation_reads_every_role_and_recovers_tool_names() {
        let m = msgs(json!([
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
        ]));
        let c = Conversation::parse(&m).unwrap();
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
                            mime: "image/webp"
                        },
                        None
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        match &c.turns[1] {
            Msg::Assistant { parts, calls, .. } => {
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
    fn reasoning_and_thought_ids_are_read_from_assistant_messages() {
        let thought = Thought {
            provider: "google".into(),
            model: "gemini-3-pro-preview".into(),
            signature: Some("c2ln+/=".into()),
            blocks: Vec::new(),
        };
        let id = encode_id("call_1", &thought);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        let m = msgs(json!([
            {"role": "user", "content": "q"},
            // `reasoning_content` wins over `reasoning`, in either order.
            {"role": "assistant", "reasoning": "second", "reasoning_content": "first", "tool_calls": [
                {"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "call_2__thought__not-base64!", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": id, "content": "a"},
            {"role": "tool", "tool_call_id": "call_2__thought__not-base64!", "content": "b"},
            {"role": "assistant", "reasoning_content": null, "reasoning": "only", "content": "x"}
        ]));
        let c = Conversation::parse(&m).unwrap();
        match &c.turns[1] {
            Msg::Assistant {
                calls, reasoning, ..
            } => {
                assert_eq!(reasoning.as_deref(), Some("first"));
                assert_eq!(calls[0].id, "call_1");
                assert_eq!(calls[0].thought.as_ref(), Some(&thought));
                // A suffix that does not decode is dropped all the same.
                assert_eq!(
                    (calls[1].id.as_ref(), calls[1].thought.as_ref()),
                    ("call_2", None)
                );
            }
            other => panic!("{other:?}"),
        }
        // Tool results answer the calls by the ids as sent, and carry the upstream's.
        assert!(matches!(&c.turns[2], Msg::Tool { id, name, .. } if id == "call_1" && name == "f"));
        assert!(matches!(&c.turns[3], Msg::Tool { id, name, .. } if id == "call_2" && name == "g"));
        match &c.turns[4] {
            Msg::Assistant { reasoning, .. } => assert_eq!(reasoning.as_deref(), Some("only")),
            other => panic!("{other:?}"),
        }
        assert_eq!(split_id("plain"), ("plain", None));
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
        let raw = fields(&body);
        let b = &Fields::raw_object(&raw);
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
            tool_choice(&Fields::raw_object(&fields(&none)), &[])
                .unwrap_err()
                .param
                .as_deref(),
            Some("tool_choice")
        );
        let bad = json!({"tools": [{"type": "code_interpreter"}]});
        assert_eq!(
            tools(&Fields::raw_object(&fields(&bad)))
                .unwrap_err()
                .param
                .as_deref(),
            Some("tools[0].type")
        );
        let hot = json!({"temperature": 2.5});
        assert_eq!(
            temperature(&Fields::raw_object(&fields(&hot)))
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
