//! Anthropic Messages (`POST /v1/messages`): what Claude Code and the Anthropic SDKs speak.
//!
//! The request is translated into the canonical (OpenAI chat) request, and the client's body
//! is kept beside it for a pass-through to an upstream that speaks Messages itself (format
//! `anthropic`). The common request is translated in one pass ([`direct`]: borrowed serde
//! types read the body, typed serializers write the chat fields, no second parse); anything
//! unusual goes through JSON trees ([`to_chat`]), which word every error. Without the cache,
//! the translation is deferred: a light pass over the body ([`head`]) reads what the proxy
//! needs before an attempt and makes sure the translation would succeed, and the translation
//! runs only when a translated attempt needs it. Answers are written as an Anthropic
//! `message`, stream events as Anthropic's SSE events, errors in Anthropic's shape.
//!
//! Mapped for a translated upstream: `system` (string or text blocks), text, image (base64 or
//! URL), text documents, `tool_use`, `tool_result` (text or blocks; `is_error` prefixes the
//! text with `Error: `), `tools` (`input_schema` as `parameters`), `tool_choice`
//! (`auto`/`any`/`tool`/`none`, `disable_parallel_tool_use`), `max_tokens`, `temperature`,
//! `top_p`, `stop_sequences`, `stream`, `metadata.user_id` (as `user`), `system` turns inside
//! `messages` (Claude Code sends them for other models), the `thinking` setting (as
//! `reasoning_effort`, by budget: see [`THINKING_LOW_BELOW`]). Dropped: `thinking` blocks in
//! history, `cache_control`, `context_management`, `top_k`, `service_tier`,
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
                )
                .with_native_model_span(h.model_span));
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

    /// `{"type":"error","error":{"type":"...","message":"..."}, ...}` (Anthropic adds a
    /// `request_id`).
    fn is_error_body(&self, body: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(rename = "type", borrow)]
            kind: crate::api::CowStr<'a>,
            #[serde(rename = "error", borrow)]
            _error: Inner<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Inner<'a> {
            #[serde(rename = "type", borrow)]
            _kind: crate::api::CowStr<'a>,
            #[serde(rename = "message", borrow)]
            _message: crate::api::CowStr<'a>,
        }
        serde_json::from_slice::<light::Obj<Body>>(body).is_ok_and(|b| b.0.kind.0 == "error")
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

/// The canonical request of a Messages body, the body kept for a pass-through: in one pass
/// ([`direct`]) for the common request (with `spans`, for the cache, its chat body is parsed
/// once more to note where plain messages sit), else through JSON trees ([`to_chat`]).
fn translate_with(body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError> {
    if let Some(req) = direct::translate(body) {
        if !spans {
            return Ok(req.with_native_body(body.clone(), None));
        }
        // The cache key reads where plain messages sit: the chat body is parsed once more
        // for it (still no tree).
        let mut chat = Vec::with_capacity(body.len() + 256);
        chat.push(b'{');
        for (i, (k, v)) in req.field_texts().enumerate() {
            if i > 0 {
                chat.push(b',');
            }
            // Keys are the translation's own (plain ASCII names).
            chat.push(b'"');
            chat.extend_from_slice(k.as_bytes());
            chat.extend_from_slice(b"\":");
            chat.extend_from_slice(v.as_bytes());
        }
        chat.push(b'}');
        let req = ChatRequest::parse_with(&chat, true)?;
        return Ok(req.with_native_body(body.clone(), None));
    }
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
    /// Where `model`'s value (JSON text, quotes included) is in the body.
    model_span: (usize, usize),
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
    let raw = h.model?.get();
    if !raw.starts_with('"') {
        return None;
    }
    let model: String = serde_json::from_str(raw).ok()?;
    if model.trim().is_empty() {
        return None;
    }
    // `raw` borrows from `body`: its place in it is a difference of addresses.
    let start = (raw.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let model_span = (start, start + raw.len());
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
        model,
        model_span,
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
        /// As sent: where it is in the body is what a pass-through replaces.
        #[serde(borrow)]
        pub model: Option<&'a RawValue>,
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

/// The translation of the common request in one pass: the body read into borrowed types
/// (strings without escapes are not copied, tool schemas stay raw JSON), the OpenAI chat
/// messages written from them directly (strings from the body copied as they are, others
/// escaped), the other fields by typed serializers, and the canonical request made from
/// those without parsing them again. `None` for anything this pass is unsure of
/// (a part the translation leaves out, a value of an unexpected type, a key sent twice, ...):
/// the tree translation ([`to_chat`]) then runs and words the error or the left-out part, so
/// both give the same request wherever this one gives one.
mod direct {
    use std::borrow::Cow;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use serde::{Deserialize, Serialize};
    use serde_json::value::{to_raw_value, RawValue};

    use super::light::{Obj, Present};
    use super::upstream_tool_id;
    use crate::api::{ChatRequest, CowStr, RawFields};

    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        model: Option<CowStr<'a>>,
        #[serde(borrow)]
        system: Option<Text<'a>>,
        #[serde(borrow)]
        messages: Option<Vec<Obj<Turn<'a>>>>,
        #[serde(default, borrow)]
        max_tokens: Present<'a>,
        #[serde(borrow)]
        temperature: Option<&'a RawValue>,
        #[serde(borrow)]
        top_p: Option<&'a RawValue>,
        #[serde(borrow)]
        stop_sequences: Option<Vec<CowStr<'a>>>,
        stream: Option<bool>,
        #[serde(borrow)]
        metadata: Option<&'a RawValue>,
        #[serde(borrow)]
        tools: Option<Vec<Obj<Tool<'a>>>>,
        #[serde(borrow)]
        tool_choice: Option<Obj<ToolChoice<'a>>>,
        #[serde(borrow)]
        thinking: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    struct Thinking<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        budget_tokens: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    struct Turn<'a> {
        #[serde(borrow)]
        role: Option<CowStr<'a>>,
        #[serde(borrow)]
        content: Option<Text<'a>>,
    }

    /// A string, or content blocks.
    enum Text<'a> {
        Str(CowStr<'a>),
        Blocks(Vec<Obj<Block<'a>>>),
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Text<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string or an array of blocks")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                    Ok(Text::Str(CowStr(Cow::Borrowed(v))))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                    Ok(Text::Str(CowStr(Cow::Owned(v.to_string()))))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                    Ok(Text::Str(CowStr(Cow::Owned(v))))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
                    let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                    while let Some(b) = seq.next_element()? {
                        blocks.push(b);
                    }
                    Ok(Text::Blocks(blocks))
                }
            }
            d.deserialize_any(V(PhantomData))
        }
    }

    /// Every block's fields this pass reads (a block has only those of its type).
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        text: Option<CowStr<'a>>,
        #[serde(borrow)]
        source: Option<Obj<Source<'a>>>,
        #[serde(borrow)]
        id: Option<CowStr<'a>>,
        #[serde(borrow)]
        name: Option<CowStr<'a>>,
        #[serde(default, borrow)]
        input: Present<'a>,
        #[serde(borrow)]
        tool_use_id: Option<CowStr<'a>>,
        #[serde(borrow)]
        content: Option<Text<'a>>,
        is_error: Option<bool>,
    }

    impl Block<'_> {
        fn kind(&self) -> &str {
            self.kind.as_ref().map_or("", |k| &k.0)
        }
        fn text(&self) -> &str {
            self.text.as_ref().map_or("", |t| &t.0)
        }
    }

    #[derive(Deserialize)]
    struct Source<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        media_type: Option<CowStr<'a>>,
        #[serde(borrow)]
        data: Option<CowStr<'a>>,
        #[serde(borrow)]
        url: Option<CowStr<'a>>,
    }

    #[derive(Deserialize)]
    struct Tool<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        name: Option<CowStr<'a>>,
        #[serde(borrow)]
        description: Option<&'a RawValue>,
        #[serde(default, borrow)]
        input_schema: Present<'a>,
    }

    #[derive(Deserialize)]
    struct ToolChoice<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<CowStr<'a>>,
        #[serde(borrow)]
        name: Option<CowStr<'a>>,
        disable_parallel_tool_use: Option<bool>,
    }

    #[derive(Deserialize)]
    struct Metadata<'a> {
        #[serde(borrow)]
        user_id: Option<&'a RawValue>,
    }

    // What is written: OpenAI chat messages and tools.

    struct Message<'a> {
        role: &'static str,
        content: Content<'a>,
        tool_call_id: Option<&'a str>,
        tool_calls: Vec<Call<'a>>,
    }

    enum Content<'a> {
        Null,
        Text(Cow<'a, str>),
        Parts(Vec<Part<'a>>),
    }

    enum Part<'a> {
        Text(Cow<'a, str>),
        Image(Cow<'a, str>),
    }

    struct Call<'a> {
        id: &'a str,
        name: &'a str,
        arguments: String,
    }

    /// Writes `s` as a JSON string: as it is when it lies in the client's body (serde_json
    /// borrows a string only when it has no escapes, and a JSON string holds no control
    /// characters), else escaped.
    fn put_str(out: &mut Vec<u8>, s: &str, body: &std::ops::Range<*const u8>) {
        if s.is_empty() || body.contains(&s.as_ptr()) {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
    }

    /// The messages as OpenAI chat JSON (an array).
    fn write_messages(messages: &[Message], body: &std::ops::Range<*const u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + (body.end as usize - body.start as usize));
        out.push(b'[');
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"role\":\"");
            out.extend_from_slice(m.role.as_bytes());
            out.push(b'"');
            if let Some(id) = m.tool_call_id {
                out.extend_from_slice(b",\"tool_call_id\":");
                put_str(&mut out, id, body);
            }
            out.extend_from_slice(b",\"content\":");
            match &m.content {
                Content::Null => out.extend_from_slice(b"null"),
                Content::Text(t) => put_str(&mut out, t, body),
                Content::Parts(parts) => {
                    out.push(b'[');
                    for (j, p) in parts.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        match p {
                            Part::Text(t) => {
                                out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                                put_str(&mut out, t, body);
                                out.push(b'}');
                            }
                            Part::Image(url) => {
                                out.extend_from_slice(
                                    b"{\"type\":\"image_url\",\"image_url\":{\"url\":",
                                );
                                put_str(&mut out, url, body);
                                out.extend_from_slice(b"}}");
                            }
                        }
                    }
                    out.push(b']');
                }
            }
            if !m.tool_calls.is_empty() {
                out.extend_from_slice(b",\"tool_calls\":[");
                for (j, c) in m.tool_calls.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"id\":");
                    put_str(&mut out, c.id, body);
                    out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    put_str(&mut out, c.name, body);
                    out.extend_from_slice(b",\"arguments\":");
                    put_str(&mut out, &c.arguments, body);
                    out.extend_from_slice(b"}}");
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        out.push(b']');
        out
    }

    struct ToolOut<'a> {
        name: &'a str,
        description: Option<&'a RawValue>,
        parameters: Option<&'a RawValue>,
    }

    impl Serialize for ToolOut<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("type", "function")?;
            m.serialize_entry("function", &FunctionDecl(self))?;
            m.end()
        }
    }

    struct FunctionDecl<'a, 'b>(&'b ToolOut<'a>);

    impl Serialize for FunctionDecl<'_, '_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let t = self.0;
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("name", t.name)?;
            if let Some(d) = t.description {
                m.serialize_entry("description", d)?;
            }
            match t.parameters {
                Some(p) => m.serialize_entry("parameters", p)?,
                None => m.serialize_entry("parameters", &EmptySchema)?,
            }
            m.end()
        }
    }

    /// `{"type":"object","properties":{}}`: a tool without an `input_schema`.
    struct EmptySchema;

    impl Serialize for EmptySchema {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("type", "object")?;
            m.serialize_entry("properties", &Empty)?;
            m.end()
        }
    }

    struct Empty;

    impl Serialize for Empty {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_map(Some(0))?.end()
        }
    }

    /// Whether raw JSON is a number.
    /// A finite number (`1e999` is not: the tree translation words its 400).
    fn is_number(v: &RawValue) -> bool {
        matches!(v.get().as_bytes().first(), Some(b'-' | b'0'..=b'9'))
            && v.get().parse::<f64>().is_ok_and(f64::is_finite)
    }

    /// Text blocks' text joined by blank lines; `None` if any block is not text.
    fn joined<'a>(blocks: &'a [Obj<Block<'a>>]) -> Option<Cow<'a, str>> {
        if let [Obj(b)] = blocks {
            return (b.kind() == "text").then(|| Cow::Borrowed(b.text()));
        }
        let mut text = String::new();
        for Obj(b) in blocks {
            if b.kind() != "text" {
                return None;
            }
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(b.text());
        }
        Some(Cow::Owned(text))
    }

    /// One turn as OpenAI messages; `None` when this pass is unsure.
    fn turn<'a>(t: &'a Turn<'a>, out: &mut Vec<Message<'a>>) -> Option<()> {
        let role: &'static str = match t.role.as_ref().map(|r| &*r.0) {
            Some("user") => "user",
            Some("assistant") => "assistant",
            Some("system") => "system",
            _ => return None,
        };
        let message = |content| Message {
            role,
            content,
            tool_call_id: None,
            tool_calls: Vec::new(),
        };
        let blocks = match &t.content {
            Some(Text::Str(s)) => {
                out.push(message(Content::Text(Cow::Borrowed(&s.0))));
                return Some(());
            }
            Some(Text::Blocks(b)) => b,
            None if role == "system" => {
                out.push(message(Content::Text(Cow::Borrowed(""))));
                return Some(());
            }
            None => return None,
        };
        if role == "system" {
            out.push(message(Content::Text(joined(blocks)?)));
            return Some(());
        }
        let mut parts: Vec<Part<'a>> = Vec::with_capacity(blocks.len());
        let mut calls: Vec<Call<'a>> = Vec::new();
        for Obj(b) in blocks {
            match (b.kind(), role) {
                ("text", _) => parts.push(Part::Text(Cow::Borrowed(b.text()))),
                ("image", "user") => {
                    let Obj(src) = b.source.as_ref()?;
                    let field = |f: &'a Option<CowStr<'a>>| f.as_ref().map_or("", |x| &x.0);
                    let url = match src.kind.as_ref().map(|k| &*k.0) {
                        Some("base64") => Cow::Owned(format!(
                            "data:{};base64,{}",
                            field(&src.media_type),
                            field(&src.data)
                        )),
                        Some("url") => Cow::Borrowed(field(&src.url)),
                        _ => return None,
                    };
                    parts.push(Part::Image(url));
                }
                ("document", "user") => {
                    let Obj(src) = b.source.as_ref()?;
                    if src.kind.as_ref().map(|k| &*k.0) != Some("text") {
                        return None;
                    }
                    let data = src.data.as_ref().map_or("", |d| &d.0);
                    parts.push(Part::Text(Cow::Borrowed(data)));
                }
                ("tool_use", "assistant") => {
                    let arguments = match b.input.0 {
                        // Written as the tree translation writes it (compact).
                        Some(raw) => serde_json::from_str::<serde_json::Value>(raw.get())
                            .ok()?
                            .to_string(),
                        None => "{}".to_string(),
                    };
                    calls.push(Call {
                        id: upstream_tool_id(b.id.as_ref().map_or("", |i| &i.0)),
                        name: b.name.as_ref().map_or("", |n| &n.0),
                        arguments,
                    });
                }
                ("tool_result", "user") => {
                    let text = match &b.content {
                        None => Cow::Borrowed(""),
                        Some(Text::Str(s)) => Cow::Borrowed(&*s.0),
                        Some(Text::Blocks(blocks)) => joined(blocks)?,
                    };
                    let text = if b.is_error == Some(true) {
                        Cow::Owned(format!("Error: {text}"))
                    } else {
                        text
                    };
                    out.push(Message {
                        role: "tool",
                        content: Content::Text(text),
                        tool_call_id: Some(upstream_tool_id(
                            b.tool_use_id.as_ref().map_or("", |i| &i.0),
                        )),
                        tool_calls: Vec::new(),
                    });
                }
                ("thinking" | "redacted_thinking", _) => {}
                _ => return None,
            }
        }
        if role == "assistant" {
            let text: Cow<str> = match parts.as_slice() {
                [] => Cow::Borrowed(""),
                [Part::Text(t)] => t.clone(),
                _ => Cow::Owned(
                    parts
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text(t) => Some(&**t),
                            Part::Image(_) => None,
                        })
                        .collect(),
                ),
            };
            let content = if text.is_empty() && !calls.is_empty() {
                Content::Null
            } else {
                Content::Text(text)
            };
            out.push(Message {
                role,
                content,
                tool_call_id: None,
                tool_calls: calls,
            });
        } else if !parts.is_empty() {
            let content = match parts.as_slice() {
                [Part::Text(t)] => Content::Text(t.clone()),
                _ => Content::Parts(parts),
            };
            out.push(message(content));
        }
        Some(())
    }

    fn raw<T: Serialize + ?Sized>(v: &T) -> Option<Box<RawValue>> {
        to_raw_value(v).ok()
    }

    /// The canonical request of a Messages body, in one pass; `None` when unsure (see the
    /// module).
    pub fn translate(body: &[u8]) -> Option<ChatRequest> {
        // A derived struct would also take an array: only an object is a request.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let Obj(r): Obj<Request> = serde_json::from_slice(body).ok()?;
        let model = r.model.as_ref()?;
        if model.0.trim().is_empty() {
            return None;
        }
        let mut messages = Vec::with_capacity(1 + r.messages.as_ref().map_or(0, Vec::len));
        match &r.system {
            None => {}
            Some(Text::Str(s)) => messages.push(Message {
                role: "system",
                content: Content::Text(Cow::Borrowed(&s.0)),
                tool_call_id: None,
                tool_calls: Vec::new(),
            }),
            Some(Text::Blocks(b)) => messages.push(Message {
                role: "system",
                content: Content::Text(joined(b)?),
                tool_call_id: None,
                tool_calls: Vec::new(),
            }),
        }
        for Obj(t) in r.messages.as_ref()? {
            turn(t, &mut messages)?;
        }
        if messages.is_empty() {
            return None;
        }
        let mut fields: RawFields = Vec::with_capacity(12);
        fields.push(("model".into(), raw(&*model.0)?));
        let messages_at = fields.len();
        let range = body.as_ptr_range();
        let messages = String::from_utf8(write_messages(&messages, &range)).ok()?;
        if let Some(n) = r.max_tokens.0 {
            n.get().parse::<u64>().ok()?;
            fields.push(("max_tokens".into(), raw(n)?));
        }
        for (k, v) in [("temperature", r.temperature), ("top_p", r.top_p)] {
            if let Some(v) = v {
                if !is_number(v) {
                    return None;
                }
                fields.push((k.into(), raw(v)?));
            }
        }
        if let Some(stop) = &r.stop_sequences {
            let stop: Vec<&str> = stop.iter().map(|s| &*s.0).collect();
            fields.push(("stop".into(), raw(&stop)?));
        }
        let stream = r.stream.unwrap_or(false);
        if let Some(s) = r.stream {
            fields.push(("stream".into(), raw(&s)?));
            if s {
                fields.push((
                    "stream_options".into(),
                    RawValue::from_string("{\"include_usage\":true}".into()).ok()?,
                ));
            }
        }
        if let Some(m) = r.metadata.filter(|m| m.get().starts_with('{')) {
            let m: Metadata = serde_json::from_str(m.get()).ok()?;
            if let Some(u) = m.user_id.filter(|u| u.get().starts_with('"')) {
                fields.push(("user".into(), raw(u)?));
            }
        }
        if let Some(t) = r.thinking.filter(|t| t.get().starts_with('{')) {
            let t: Thinking = serde_json::from_str(t.get()).ok()?;
            let budget = t.budget_tokens.and_then(|b| b.get().parse::<u64>().ok());
            if let Some(e) = super::effort(t.kind.as_ref().map(|k| &*k.0), budget) {
                fields.push(("reasoning_effort".into(), raw(e)?));
            }
        }
        let mut tools = Vec::new();
        for Obj(t) in r.tools.iter().flatten() {
            if !matches!(t.kind.as_ref().map(|k| &*k.0), None | Some("custom")) {
                return None;
            }
            tools.push(ToolOut {
                name: &t.name.as_ref()?.0,
                description: t.description.filter(|d| d.get().starts_with('"')),
                parameters: t.input_schema.0,
            });
        }
        let mut parallel_tool_calls = true;
        if !tools.is_empty() {
            fields.push(("tools".into(), raw(&tools)?));
        }
        if let Some(Obj(tc)) = &r.tool_choice {
            let choice = match tc.kind.as_ref().map(|k| &*k.0) {
                Some("auto") => raw("auto")?,
                Some("any") => raw("required")?,
                Some("none") => raw("none")?,
                Some("tool") => raw(&serde_json::json!({
                    "type": "function", "function": {"name": &*tc.name.as_ref()?.0}
                }))?,
                _ => return None,
            };
            if !tools.is_empty() {
                fields.push(("tool_choice".into(), choice));
                if tc.disable_parallel_tool_use == Some(true) {
                    parallel_tool_calls = false;
                    fields.push(("parallel_tool_calls".into(), raw(&false)?));
                }
            }
        }
        Some(ChatRequest::translated(
            fields,
            (messages, messages_at),
            model.0.to_string(),
            stream,
            stream,
            parallel_tool_calls,
        ))
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
    if let Some(effort) = o.get("thinking").and_then(|t| {
        let kind = t.get("type").and_then(Value::as_str);
        effort(kind, t.get("budget_tokens").and_then(Value::as_u64))
    }) {
        out.insert("reasoning_effort".into(), json!(effort));
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

/// The thinking budgets below which a translated request asks for `low`, then `medium`
/// `reasoning_effort`; larger budgets ask for `high`. (Claude Code asks for 4,000 tokens for
/// "think", 10,000 for "think hard" and 31,999 for "ultrathink".)
pub const THINKING_LOW_BELOW: u64 = 2_048;
pub const THINKING_MEDIUM_BELOW: u64 = 8_192;

/// The canonical `reasoning_effort` for a request's `thinking` setting (`type`,
/// `budget_tokens`): none unless thinking is `enabled`; `medium` without a budget.
fn effort(kind: Option<&str>, budget: Option<u64>) -> Option<&'static str> {
    if kind != Some("enabled") {
        return None;
    }
    Some(match budget {
        Some(b) if b < THINKING_LOW_BELOW => "low",
        Some(b) if b < THINKING_MEDIUM_BELOW => "medium",
        Some(_) => "high",
        None => "medium",
    })
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

/// Anthropic's `stop_reason` and `stop_sequence` for an answer's finish: `stop_sequence` with
/// the sequence when the upstream said which one it stopped on.
fn stop_of<'a>(finish: &str, sequence: Option<&'a str>) -> (&'static str, Option<&'a str>) {
    match (stop_reason(finish), sequence) {
        ("end_turn", Some(s)) => ("stop_sequence", Some(s)),
        (reason, _) => (reason, None),
    }
}

/// A message body, written by typed serializers (no JSON tree).
#[derive(serde::Serialize)]
struct MessageBody<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockBody<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: UsageBody,
}

#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockBody<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'static str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: Input<'a>,
    },
}

#[derive(serde::Serialize)]
struct UsageBody {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
}

impl UsageBody {
    fn of(u: Option<&Usage>) -> Self {
        let u = u.copied().unwrap_or_default();
        let cached = u.cached_tokens.min(u.prompt_tokens);
        UsageBody {
            input_tokens: u.prompt_tokens - cached,
            output_tokens: u.completion_tokens,
            cache_read_input_tokens: cached,
        }
    }
}

/// A tool call's JSON arguments as the block's `input`: raw when they are a JSON object, else
/// (none sent, or something else) an empty object.
enum Input<'a> {
    Raw(&'a serde_json::value::RawValue),
    Empty,
}

impl<'a> Input<'a> {
    fn of(arguments: &'a str) -> Self {
        match serde_json::from_str::<&serde_json::value::RawValue>(arguments.trim()) {
            Ok(raw) if raw.get().starts_with('{') => Input::Raw(raw),
            _ => Input::Empty,
        }
    }
}

impl serde::Serialize for Input<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Input::Raw(raw) => raw.serialize(s),
            Input::Empty => s.serialize_map(Some(0))?.end(),
        }
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
            content.push(BlockBody::Thinking {
                thinking: r,
                signature: "",
            });
        }
        if let Some(t) = a.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(BlockBody::Text { text: t });
        }
        for c in &a.tool_calls {
            content.push(BlockBody::ToolUse {
                id: format!("{TOOL_ID_PREFIX}{}", c.id),
                name: &c.name,
                input: Input::of(&c.arguments),
            });
        }
        let (stop_reason, stop_sequence) = stop_of(&a.finish_reason, a.stop_sequence.as_deref());
        let body = MessageBody {
            id: message_id(id),
            kind: "message",
            role: "assistant",
            model,
            content,
            stop_reason,
            stop_sequence,
            usage: UsageBody::of(usage),
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
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
    stop_sequence: Option<String>,
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
            stop_sequence: None,
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

    fn stop_sequence(&mut self, choice: u32, sequence: &str) {
        if choice == 0 {
            self.stop_sequence = Some(sequence.to_string());
        }
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
        let (stop, sequence) = match (self.stop.unwrap_or("end_turn"), &self.stop_sequence) {
            ("end_turn", Some(s)) => ("stop_sequence", Some(s.as_str())),
            (stop, _) => (stop, None),
        };
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": sequence}, "usage": usage_json(self.usage.as_ref())}),
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
                "reasoning_effort": "low",
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
            r#"{"model":"m\u0031","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
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
                    // A head read notes where the model is, for a pass-through's splice.
                    if let Some((a, b)) = l.native_model_span() {
                        let model: String = serde_json::from_slice(&body[a..b]).unwrap();
                        assert_eq!(model, l.model, "{b}");
                    }
                }
                (Err(e), Err(l)) => {
                    assert_eq!((e.status, &e.param), (l.status, &l.param), "{b}")
                }
                (e, l) => panic!("{b}: {:?} / {:?}", e.is_ok(), l.is_ok()),
            }
        }
    }

    /// The one-pass translation gives the tree translation's request wherever it gives one,
    /// and gives one for the common requests.
    #[test]
    fn the_one_pass_translation_agrees_with_the_tree_translation() {
        let full = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 512,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Really \"brief\"."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "text", "text": " More."},
                    {"type": "tool_use", "id": "toolu_call_1", "name": "get", "input": {"q": 1, "z": [1, 2], "a": "\u{e9}"}},
                    {"type": "tool_use", "id": "other", "name": "get", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_call_1", "content": [{"type": "text", "text": "42"}, {"type": "text", "text": "43"}], "is_error": true},
                    {"type": "tool_result", "tool_use_id": "other", "content": "fine"},
                    {"type": "tool_result", "tool_use_id": "toolu_3"},
                    {"type": "text", "text": "and?"}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_4", "name": "f", "input": {"x": null}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_4", "content": [{"type": "text", "text": "only"}]}]},
                {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
                {"role": "system"},
                {"role": "assistant", "content": "plain \n text"}
            ],
            "tools": [
                {"name": "get", "description": "d", "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}, "cache_control": {"type": "ephemeral"}},
                {"type": "custom", "name": "f"},
                {"name": "g", "description": 5, "input_schema": null}
            ],
            "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": true},
            "stop_sequences": ["END", "\n\nHuman:"], "temperature": 0.5, "top_p": 1.0, "top_k": 3,
            "stream": true, "metadata": {"user_id": "u1", "other": 1},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "context_management": {"edits": []}, "service_tier": "auto"
        });
        let mut bodies: Vec<String> = vec![full.to_string()];
        let variants = [
            json!({"tool_choice": {"type": "auto"}}),
            json!({"tool_choice": {"type": "any"}, "stream": false}),
            json!({"tool_choice": {"type": "none"}, "tools": []}),
            json!({"tools": null, "system": null, "metadata": {"user_id": 5}}),
            json!({"system": "just text", "metadata": "x", "temperature": null}),
            json!({"thinking": {"type": "enabled", "budget_tokens": 4000}}),
            json!({"thinking": {"type": "enabled", "budget_tokens": 31999}}),
            json!({"thinking": {"type": "enabled"}}),
            json!({"thinking": {"type": "disabled"}}),
            json!({"thinking": null}),
        ];
        for v in variants {
            let mut b = full.clone();
            for (k, x) in v.as_object().unwrap() {
                b[k] = x.clone();
            }
            bodies.push(b.to_string());
        }
        let common = bodies.len();
        // Bodies the one pass leaves to the trees (each differs from the full one in one way).
        for odd in [
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{}}]}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","data":"x"}}]}]}"#,
            r#"{"model":"m","messages":[{"role":"assistant","content":[{"type":"image","source":{"type":"url","url":"u"}}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop_sequences":"END"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"thinking","thinking":"x"}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"auto"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"a","user_id":"b"}}"#,
        ] {
            bodies.push(odd.to_string());
        }
        // And every body of the light-pass test.
        for b in [
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","stream":true,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"x"}]}]},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"auto"}}"#,
            r#"{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"s"}]}],"stop_sequences":["x"],"temperature":1,"top_p":0.5}"#,
            r#"{"model":" ","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"tool","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":null}]}"#,
            r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","temperature":"hot","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","tool_choice":{"type":"any","disable_parallel_tool_use":true},"tools":[{"name":"f"}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","model":"n","messages":[{"role":"user","content":"hi"}]}"#,
            r#"[{"model":"m","messages":[]}]"#,
        ] {
            bodies.push(b.to_string());
        }
        for (i, b) in bodies.iter().enumerate() {
            let fast = direct::translate(b.as_bytes());
            if i < common {
                assert!(fast.is_some(), "{b}");
            } else if i < common + 11 {
                assert!(fast.is_none(), "{b}");
            }
            let Some(fast) = fast else { continue };
            let (chat, left_out) = to_chat(b.as_bytes()).unwrap();
            assert!(left_out.is_none(), "{b}");
            let tree = ChatRequest::parse_with(&chat, false).unwrap();
            assert_eq!(fast.body(), tree.body(), "{b}");
            assert_eq!(
                (
                    &fast.model,
                    fast.stream,
                    fast.include_usage,
                    fast.parallel_tool_calls()
                ),
                (
                    &tree.model,
                    tree.stream,
                    tree.include_usage,
                    tree.parallel_tool_calls()
                ),
                "{b}"
            );
            // With the cache's spans too.
            let spanned = translate_with(&Bytes::from(b.clone()), true).unwrap();
            assert_eq!(spanned.body(), tree.body(), "{b}");
            let tree_spans = ChatRequest::parse_with(&chat, true).unwrap();
            assert_eq!(
                spanned.plain_messages().is_some(),
                tree_spans.plain_messages().is_some(),
                "{b}"
            );
            // The text the upstream gets parses as what the trees give.
            let text: Value = serde_json::from_str(fast.messages_raw()).unwrap();
            assert_eq!(&text, &tree.body()["messages"], "{b}");
        }
    }

    #[test]
    fn thinking_budgets_map_to_reasoning_effort() {
        for (thinking, want) in [
            (
                json!({"type": "enabled", "budget_tokens": 1024}),
                Some("low"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 2048}),
                Some("medium"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 4000}),
                Some("medium"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 8192}),
                Some("high"),
            ),
            (
                json!({"type": "enabled", "budget_tokens": 31999}),
                Some("high"),
            ),
            (json!({"type": "enabled"}), Some("medium")),
            (json!({"type": "disabled"}), None),
            (json!("yes"), None),
        ] {
            let body = json!({"model": "m", "max_tokens": 5, "thinking": thinking,
                "messages": [{"role": "user", "content": "hi"}]});
            let req = AnthropicMessages
                .parse(&Bytes::from(body.to_string()), true)
                .unwrap();
            assert_eq!(
                req.body().get("reasoning_effort").and_then(Value::as_str),
                want,
                "{thinking}"
            );
            let fast = direct::translate(body.to_string().as_bytes());
            if let Some(fast) = fast {
                assert_eq!(fast.body(), req.body(), "{thinking}");
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
            stop_sequence: None,
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
