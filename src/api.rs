//! The public OpenAI types: the parsed chat request, usage, and writers for
//! `chat.completion` objects and `chat.completion.chunk` SSE events.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use crate::canonical::{Answer, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::error::GatewayError;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Top-level fields of a JSON object in their order, each value as its raw JSON text.
pub type RawFields = Vec<(String, Box<RawValue>)>;

/// A client's chat request: the whole body as sent (unknown fields kept, order kept), plus the
/// few fields the gateway itself needs.
///
/// The body is kept as raw top-level fields: a pass-through request is validated and
/// re-encoded without building the JSON tree of its messages. The tree ([`ChatRequest::body`])
/// is built on first use, by the translators and the cache. `messages` is kept apart as its
/// JSON text: it is validated in the same pass that finds where it ends (see
/// [`parse_one_pass`]), and a `RawValue` of it would cost a second pass over the whole prompt.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Every top-level field but `messages`, in order.
    fields: RawFields,
    /// `messages` as sent (JSON text), and its place among the fields.
    messages: String,
    messages_at: usize,
    /// When every message is plain ([`MessageFields::plain`]): where each one's fields are in
    /// `messages`.
    plain_messages: Option<Box<[PlainMessage]>>,
    tree: OnceLock<Map<String, Value>>,
    pub model: String,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    parallel_tool_calls: bool,
    /// The client's body as sent, when its dialect is not OpenAI chat (this request is then
    /// the dialect's translation): what a pass-through to the dialect's own format sends.
    native: Option<Bytes>,
    /// Where `model`'s value (JSON text) is in `native`, when the dialect's first pass noted
    /// it: a pass-through splices the upstream's model there without reading the body again.
    native_model: Option<(usize, usize)>,
    /// Why this request cannot be sent to any format but the dialect's own (a part the
    /// translation had to leave out, which would change the answer).
    untranslatable: Option<GatewayError>,
    /// Set when the canonical request is built on first use ([`ChatRequest::deferred`]).
    deferred: Option<Deferred>,
    /// What the client's dialect noted while translating (see [`ChatRequest::notes`]).
    notes: Option<Notes>,
}

/// What a dialect's translation noted about a request for later: the tools it left out
/// (the proxy reports them), and the dialect's own notes for its writers (opaque here).
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// Tools removed from the offered tools because no translated provider can run them (the
    /// client's names for them, comma-separated): `X-Gateway-Dropped-Tools` and the log line.
    pub dropped_tools: Option<String>,
    /// The dialect's own (read back by its writers through a downcast).
    pub dialect: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

/// The translation of a client's body into the canonical request, run at most once.
#[derive(Debug, Clone)]
struct Deferred {
    translate: Translate,
    done: OnceLock<Box<ChatRequest>>,
}

/// Translates a client's body (of another dialect) into the canonical request.
pub type Translate = fn(&Bytes) -> Result<ChatRequest, GatewayError>;

impl ChatRequest {
    /// Parses and validates; every error is a 400 naming the field.
    pub fn parse(bytes: &[u8]) -> Result<ChatRequest, GatewayError> {
        Self::parse_with(bytes, true)
    }

    /// [`ChatRequest::parse`]; `plain_messages` says whether to note where the fields of plain
    /// messages are (only the cache key reads them: see [`ChatRequest::plain_messages`]).
    pub fn parse_with(bytes: &[u8], plain_messages: bool) -> Result<ChatRequest, GatewayError> {
        let one_pass = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| parse_one_pass(text, plain_messages));
        let Some(OnePass {
            fields,
            messages,
            messages_at,
            list,
            plain,
        }) = one_pass
        else {
            // Anything unusual (invalid JSON, `messages` not an array, a key sent twice, ...)
            // takes the general path, which also words every error.
            let mut fields = parse_raw_object(bytes)?;
            let at = fields.iter().position(|(k, _)| k == "messages");
            let raw = at.map(|i| fields.remove(i).1);
            let checked = check_messages(raw.as_deref().map(RawValue::get));
            let text = raw.map(|r| r.get().to_string()).unwrap_or_default();
            let at = at.unwrap_or(usize::MAX);
            return Self::finish(fields, (text, at, None), checked);
        };
        let checked = validate_list(&list);
        drop(list);
        Self::finish(fields, (messages, messages_at, plain), checked)
    }

    /// Validates the fields other than `messages`; `messages_checked` is the outcome of the
    /// messages' validation, reported after the model's.
    fn finish(
        fields: RawFields,
        (messages, messages_at, plain_messages): (String, usize, Option<Box<[PlainMessage]>>),
        messages_checked: Result<(), GatewayError>,
    ) -> Result<ChatRequest, GatewayError> {
        // The fields validation reads, as values; every other field stays raw and unparsed.
        let mut checked: Vec<(&str, Value)> = Vec::with_capacity(8);
        let mut tools = None;
        for (k, v) in &fields {
            match k.as_str() {
                "tools" => tools = Some(&**v),
                k if CHECKED_FIELDS.contains(&k) => {
                    // The raw value is valid JSON: what fails here is a number out of range
                    // (`1e999999`), never to be read as null.
                    let value = serde_json::from_str(v.get()).map_err(|_| {
                        GatewayError::bad_request(
                            k,
                            format!("'{k}' is out of range (a finite number is expected)"),
                        )
                    })?;
                    checked.push((k, value));
                }
                _ => {}
            }
        }
        let get = |key: &str| checked.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        let model = model_value(get("model"))?;
        messages_checked?;
        let stream = optional_bool(get("stream"), "stream")?;
        check_number(get("temperature"), "temperature")?;
        check_number(get("top_p"), "top_p")?;
        check_number(get("presence_penalty"), "presence_penalty")?;
        check_number(get("frequency_penalty"), "frequency_penalty")?;
        check_integer(get("max_tokens"), "max_tokens")?;
        check_integer(get("max_completion_tokens"), "max_completion_tokens")?;
        check_integer(get("n"), "n")?;
        check_integer(get("seed"), "seed")?;
        if let Some(s) = get("stop") {
            let ok = match s {
                Value::Null | Value::String(_) => true,
                Value::Array(a) => a.iter().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(GatewayError::bad_request(
                    "stop",
                    "'stop' must be a string or an array of strings",
                ));
            }
        }
        if let Some(t) = tools {
            if !(t.get().starts_with('[') || t.get() == "null") {
                return Err(GatewayError::bad_request(
                    "tools",
                    "'tools' must be an array",
                ));
            }
        }
        let include_usage = match get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(GatewayError::bad_request(
                        "stream_options.include_usage",
                        "'stream_options.include_usage' must be a boolean",
                    ))
                }
            },
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "stream_options",
                    "'stream_options' must be an object",
                ))
            }
        };
        let parallel_tool_calls = !matches!(get("parallel_tool_calls"), Some(Value::Bool(false)));
        Ok(ChatRequest {
            fields,
            messages,
            messages_at,
            plain_messages,
            tree: OnceLock::new(),
            model,
            stream,
            include_usage,
            parallel_tool_calls,
            native: None,
            native_model: None,
            untranslatable: None,
            deferred: None,
            notes: None,
        })
    }

    /// A canonical request another dialect's translation wrote itself, taken without a
    /// second parse: `fields` (every top-level field but `messages`, in order, each of the
    /// type [`ChatRequest::parse`] checks), `messages` (the JSON text of a non-empty array of
    /// messages [`ChatRequest::parse`] would accept) placed after `fields[..messages_at]`, and
    /// what they say of the model, streaming, usage and parallel tool calls. The translation
    /// vouches for all of it; plain-message spans are not noted (the cache parses instead).
    pub fn translated(
        fields: RawFields,
        (messages, messages_at): (String, usize),
        model: String,
        stream: bool,
        include_usage: bool,
        parallel_tool_calls: bool,
    ) -> ChatRequest {
        ChatRequest {
            fields,
            messages,
            messages_at,
            plain_messages: None,
            tree: OnceLock::new(),
            model,
            stream,
            include_usage,
            parallel_tool_calls,
            native: None,
            untranslatable: None,
            deferred: None,
            notes: None,
            native_model: None,
        }
    }

    /// A request in another dialect whose canonical form is built only when something reads
    /// it (a translated attempt, through [`ChatRequest::untranslatable`], or the cache): a
    /// pass-through needs only what is given here and the client's body. `translate` must
    /// agree with these fields; if it fails, the error is the request's
    /// [`ChatRequest::untranslatable`] and its canonical parts are empty.
    pub fn deferred(
        model: String,
        stream: bool,
        include_usage: bool,
        parallel_tool_calls: bool,
        native: Bytes,
        translate: Translate,
    ) -> ChatRequest {
        ChatRequest {
            fields: Vec::new(),
            messages: String::new(),
            messages_at: usize::MAX,
            plain_messages: None,
            tree: OnceLock::new(),
            model,
            stream,
            include_usage,
            parallel_tool_calls,
            native: Some(native),
            native_model: None,
            untranslatable: None,
            deferred: Some(Deferred {
                translate,
                done: OnceLock::new(),
            }),
            notes: None,
        }
    }

    /// The canonical request: this one, or its deferred translation (run on first use).
    fn canonical(&self) -> &ChatRequest {
        let Some(d) = &self.deferred else {
            return self;
        };
        d.done.get_or_init(|| {
            let native = self.native.clone().unwrap_or_default();
            Box::new(match (d.translate)(&native) {
                Ok(req) => req,
                Err(e) => {
                    let mut failed = ChatRequest::deferred(
                        self.model.clone(),
                        self.stream,
                        self.include_usage,
                        self.parallel_tool_calls,
                        native,
                        d.translate,
                    );
                    failed.deferred = None;
                    failed.untranslatable = Some(e);
                    failed
                }
            })
        })
    }

    /// Keeps the client's body as sent in another dialect (see [`ChatRequest::native_body`]),
    /// and what of it this translation could not carry (see [`ChatRequest::untranslatable`]).
    pub fn with_native_body(mut self, body: Bytes, untranslatable: Option<GatewayError>) -> Self {
        self.native = Some(body);
        self.untranslatable = untranslatable;
        self
    }

    /// Keeps what the dialect's translation noted (see [`Notes`]).
    pub fn with_notes(mut self, notes: Notes) -> Self {
        self.notes = Some(notes);
        self
    }

    /// What the client's dialect noted while translating this request (its translation is run
    /// if it was deferred).
    pub fn notes(&self) -> Option<&Notes> {
        self.canonical().notes.as_ref()
    }

    /// The error (a 400 naming the field) for sending this request to any wire format but
    /// the client's own: set when the translation from the client's dialect left out a part
    /// that would change the answer (a server tool, say).
    pub fn untranslatable(&self) -> Option<&GatewayError> {
        self.canonical().untranslatable.as_ref()
    }

    /// The client's body as sent, when it came in a dialect other than OpenAI chat.
    pub fn native_body(&self) -> Option<&Bytes> {
        self.native.as_ref()
    }

    /// Notes where `model`'s value is in the native body (`start..end`, its JSON text).
    pub fn with_native_model_span(mut self, span: (usize, usize)) -> Self {
        self.native_model = Some(span);
        self
    }

    /// Where `model`'s value is in [`ChatRequest::native_body`], if a first pass noted it.
    pub fn native_model_span(&self) -> Option<(usize, usize)> {
        self.native_model
    }

    /// The top-level fields as sent, in order, values as raw JSON: every one but `messages`
    /// ([`ChatRequest::messages_raw`]).
    pub fn fields(&self) -> &[(String, Box<RawValue>)] {
        &self.canonical().fields
    }

    /// `messages` as sent (JSON text, an array).
    pub fn messages_raw(&self) -> &str {
        &self.canonical().messages
    }

    /// Where the fields of each message are in [`ChatRequest::messages_raw`], when every
    /// message is plain (an object with only `role`, `content`, `tool_call_id` and
    /// `tool_calls`, each once, none null).
    pub fn plain_messages(&self) -> Option<&[PlainMessage]> {
        self.canonical().plain_messages.as_deref()
    }

    /// Every top-level field in order, `messages` included, as key and raw JSON text.
    pub fn field_texts(&self) -> impl Iterator<Item = (&str, &str)> {
        let c = self.canonical();
        let (before, after) = c.fields.split_at(c.messages_at.min(c.fields.len()));
        fn text((k, v): &(String, Box<RawValue>)) -> (&str, &str) {
            (k.as_str(), v.get())
        }
        before
            .iter()
            .map(text)
            .chain(std::iter::once(("messages", c.messages.as_str())))
            .chain(after.iter().map(text))
    }

    /// The whole body as a JSON tree (built on first use).
    pub fn body(&self) -> &Map<String, Value> {
        let c = self.canonical();
        c.tree.get_or_init(|| {
            c.field_texts()
                .map(|(k, v)| {
                    let value = serde_json::from_str(v).unwrap_or(Value::Null);
                    (k.to_string(), value)
                })
                .collect()
        })
    }

    pub fn messages(&self) -> &[Value] {
        self.body()
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// False only when the client sent `"parallel_tool_calls": false`.
    pub fn parallel_tool_calls(&self) -> bool {
        self.parallel_tool_calls
    }
}

/// The checks of `messages` given as JSON text (`None`: absent).
fn check_messages(messages: Option<&str>) -> Result<(), GatewayError> {
    let messages = match messages {
        None | Some("null") => {
            return Err(GatewayError::bad_request(
                "messages",
                "missing required parameter: 'messages'",
            ))
        }
        Some(m) if m.starts_with('[') => m,
        Some(_) => {
            return Err(GatewayError::bad_request(
                "messages",
                "'messages' must be an array of message objects",
            ))
        }
    };
    let list: Vec<MessageFields> = serde_json::from_str(messages).map_err(|e| {
        GatewayError::bad_request("messages", format!("'messages' is not valid: {e}"))
    })?;
    validate_list(&list)
}

fn validate_list(list: &[MessageFields]) -> Result<(), GatewayError> {
    if list.is_empty() {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' must contain at least one message",
        ));
    }
    for (i, m) in list.iter().enumerate() {
        validate_message(i, m)?;
    }
    Ok(())
}

/// A request body's fields and its `messages` in one pass over the JSON, for the common case:
/// a JSON object whose keys are unique and whose `messages` is an array. The messages are read
/// for validation ([`MessageFields`]) while their text is found, instead of being skipped once
/// to capture them as a `RawValue` and read again to validate them.
///
/// serde_json parses every key and value; only the object's own punctuation (`{`, `:`, `,`,
/// `}`) is read here, to know where each value starts and (from the deserializer's byte
/// offset) ends. `None` for anything else, which [`ChatRequest::parse`] hands to the general
/// path.
fn parse_one_pass(text: &str, plain_messages: bool) -> Option<OnePass<'_>> {
    /// One JSON value at `text[at..]` (after optional whitespace): the value and where it ends.
    fn one<'a, T: Deserialize<'a>>(text: &'a str, at: usize) -> Option<(T, usize)> {
        let mut values = serde_json::Deserializer::from_str(text.get(at..)?).into_iter::<T>();
        let value = values.next()?.ok()?;
        Some((value, at + values.byte_offset()))
    }
    fn skip_ws(text: &str, mut at: usize) -> usize {
        let b = text.as_bytes();
        while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    }
    let b = text.as_bytes();
    let mut at = skip_ws(text, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(text, at + 1);
    let mut fields: RawFields = Vec::with_capacity(8);
    let mut messages = None;
    if b.get(at) == Some(&b'}') {
        return None;
    }
    loop {
        if b.get(at) != Some(&b'"') {
            return None;
        }
        let (CowStr(key), end) = one::<CowStr>(text, at)?;
        at = skip_ws(text, end);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(text, at + 1);
        if key == "messages" {
            if messages.is_some() || b.get(at) != Some(&b'[') {
                return None;
            }
            let (list, end) = one::<Vec<MessageFields>>(text, at)?;
            let raw = text.get(at..end)?;
            let plain = plain_messages.then(|| plain_spans(raw, &list)).flatten();
            messages = Some((raw.to_string(), fields.len(), plain, list));
            at = end;
        } else {
            // Bounded, so the duplicate check stays cheap; the slow path refuses the body.
            if fields.len() >= MAX_TOP_LEVEL_FIELDS || fields.iter().any(|(k, _)| *k == key) {
                return None;
            }
            let (value, end) = one::<&RawValue>(text, at)?;
            fields.push((key.into_owned(), value.to_owned()));
            at = end;
        }
        at = skip_ws(text, at);
        match b.get(at) {
            Some(b',') => at = skip_ws(text, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    if skip_ws(text, at + 1) != text.len() {
        return None;
    }
    let (messages, messages_at, plain, list) = messages?;
    Some(OnePass {
        fields,
        messages,
        messages_at,
        list,
        plain,
    })
}

/// What [`parse_one_pass`] found.
struct OnePass<'a> {
    fields: RawFields,
    messages: String,
    messages_at: usize,
    list: Vec<MessageFields<'a>>,
    plain: Option<Box<[PlainMessage]>>,
}

/// A plain message's fields as (start, length) in the messages text, in the order of their
/// keys: `content`, `role`, `tool_call_id`, `tool_calls`.
pub type PlainMessage = [Option<(u32, u32)>; 4];

/// [`PlainMessage`]s of `list`, read from `raw` (the messages text its fields point into);
/// `None` unless every message is plain.
fn plain_spans(raw: &str, list: &[MessageFields]) -> Option<Box<[PlainMessage]>> {
    let base = raw.as_ptr() as usize;
    let span = |v: Option<&RawValue>| -> Option<Option<(u32, u32)>> {
        let Some(v) = v else { return Some(None) };
        let start = (v.get().as_ptr() as usize).checked_sub(base)?;
        let len = v.get().len();
        (start + len <= raw.len()).then_some(())?;
        Some(Some((u32::try_from(start).ok()?, u32::try_from(len).ok()?)))
    };
    list.iter()
        .map(|m| {
            m.plain.then_some(())?;
            Some([
                span(m.content)?,
                span(m.role)?,
                span(m.tool_call_id)?,
                span(m.tool_calls)?,
            ])
        })
        .collect()
}

/// The most top-level fields a request body may have. Real clients send a few dozen; the bound
/// keeps the per-key duplicate check (and so a request's parse) linear in the body's size, and
/// a body with 100,000 keys from taking seconds of a worker thread.
pub const MAX_TOP_LEVEL_FIELDS: usize = 1024;

const TOO_MANY_FIELDS: &str = "too many top-level fields";

/// The 400 for a body over [`MAX_TOP_LEVEL_FIELDS`].
pub fn too_many_fields() -> GatewayError {
    GatewayError::bad_request(
        "",
        format!("the request body has more than {MAX_TOP_LEVEL_FIELDS} top-level fields"),
    )
}

/// Parses a JSON object into its raw top-level fields (400 on anything else). A key sent twice
/// keeps its last value, as with a JSON tree.
pub fn parse_raw_object(bytes: &[u8]) -> Result<RawFields, GatewayError> {
    struct Fields(RawFields);
    struct FieldsVisitor;
    impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
        type Value = Fields;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Fields, A::Error> {
            let mut out: RawFields = Vec::with_capacity(a.size_hint().unwrap_or(8));
            while let Some(k) = a.next_key::<String>()? {
                if out.len() >= MAX_TOP_LEVEL_FIELDS {
                    return Err(serde::de::Error::custom(TOO_MANY_FIELDS));
                }
                let v: Box<RawValue> = a.next_value()?;
                match out.iter_mut().find(|(x, _)| *x == k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k, v)),
                }
            }
            Ok(Fields(out))
        }
    }
    impl<'de> Deserialize<'de> for Fields {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
            d.deserialize_map(FieldsVisitor)
        }
    }
    match serde_json::from_slice::<Fields>(bytes) {
        Ok(f) => Ok(f.0),
        Err(e) if e.to_string().starts_with(TOO_MANY_FIELDS) => Err(too_many_fields()),
        Err(e) if e.classify() == serde_json::error::Category::Data => Err(
            GatewayError::bad_request("", "the request body must be a JSON object"),
        ),
        Err(e) => Err(GatewayError::bad_request(
            "",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// Parses a JSON object body (400 on anything else).
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) if m.len() > MAX_TOP_LEVEL_FIELDS => Err(too_many_fields()),
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::bad_request(
            "",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(GatewayError::bad_request(
            "",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// The `model` field: present, a non-empty string.
pub fn required_model(body: &Map<String, Value>) -> Result<String, GatewayError> {
    model_value(body.get("model"))
}

/// The fields `ChatRequest::parse` validates (the others are forwarded as sent).
const CHECKED_FIELDS: &[&str] = &[
    "model",
    "stream",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "stop",
    "stream_options",
    "parallel_tool_calls",
];

fn model_value(v: Option<&Value>) -> Result<String, GatewayError> {
    match v {
        None | Some(Value::Null) => Err(GatewayError::bad_request(
            "model",
            "missing required parameter: 'model'",
        )),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(GatewayError::bad_request(
            "model",
            "'model' must not be empty",
        )),
        Some(_) => Err(GatewayError::bad_request(
            "model",
            "'model' must be a string",
        )),
    }
}

/// What validation (and the Anthropic and Gemini translators) read of one message, in the same
/// pass that walks the list: the fields below still raw, others skipped unparsed. A key sent
/// twice keeps its last value, as with a JSON tree; anything but an object reads as the default
/// (`object` false, no fields).
#[derive(Default)]
pub(crate) struct MessageFields<'a> {
    pub object: bool,
    /// An object whose keys are all among the four below, each sent once and not null: its
    /// fields are then the whole message (the cache key writes it from them).
    pub plain: bool,
    pub role: Option<&'a RawValue>,
    pub content: Option<&'a RawValue>,
    pub tool_calls: Option<&'a RawValue>,
    pub tool_call_id: Option<&'a RawValue>,
    /// An assistant message's reasoning as a gateway showed it: `reasoning_content`, else
    /// `reasoning` (not one of the plain keys).
    pub reasoning: Option<&'a RawValue>,
}

enum MessageKey {
    Role,
    Content,
    ToolCalls,
    ToolCallId,
    ReasoningContent,
    Reasoning,
    Other,
}

impl<'de> Deserialize<'de> for MessageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MessageKey, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = MessageKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MessageKey, E> {
                Ok(match v {
                    "role" => MessageKey::Role,
                    "content" => MessageKey::Content,
                    "tool_calls" => MessageKey::ToolCalls,
                    "tool_call_id" => MessageKey::ToolCallId,
                    "reasoning_content" => MessageKey::ReasoningContent,
                    "reasoning" => MessageKey::Reasoning,
                    _ => MessageKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for MessageFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MessageFields<'de>, D::Error> {
        struct FieldsVisitor;
        const NOT_OBJECT: MessageFields<'static> = MessageFields {
            object: false,
            plain: false,
            role: None,
            content: None,
            tool_calls: None,
            tool_call_id: None,
            reasoning: None,
        };
        impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
            type Value = MessageFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<MessageFields<'de>, A::Error> {
                let mut f = MessageFields {
                    object: true,
                    plain: true,
                    ..MessageFields::default()
                };
                let mut reasoning_content = false;
                while let Some(k) = a.next_key::<MessageKey>()? {
                    let slot = match k {
                        MessageKey::Role => &mut f.role,
                        MessageKey::Content => &mut f.content,
                        MessageKey::ToolCalls => &mut f.tool_calls,
                        MessageKey::ToolCallId => &mut f.tool_call_id,
                        MessageKey::ReasoningContent | MessageKey::Reasoning => {
                            f.plain = false;
                            let v: Option<&'de RawValue> = a.next_value()?;
                            // `reasoning_content` wins over `reasoning`, whatever the order.
                            let primary = matches!(k, MessageKey::ReasoningContent);
                            if v.is_some() && (primary || !reasoning_content) {
                                f.reasoning = v;
                                reasoning_content |= primary;
                            }
                            continue;
                        }
                        MessageKey::Other => {
                            f.plain = false;
                            a.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    // Sent twice, or null (which reads as absent): not plain.
                    let twice = slot.is_some();
                    *slot = a.next_value()?;
                    if twice || slot.is_none() {
                        f.plain = false;
                    }
                }
                Ok(f)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<MessageFields<'de>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(NOT_OBJECT)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<MessageFields<'de>, E> {
                Ok(NOT_OBJECT)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<MessageFields<'de>, E> {
                Ok(NOT_OBJECT)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<MessageFields<'de>, E> {
                Ok(NOT_OBJECT)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<MessageFields<'de>, E> {
                Ok(NOT_OBJECT)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<MessageFields<'de>, E> {
                Ok(NOT_OBJECT)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<MessageFields<'de>, E> {
                Ok(NOT_OBJECT)
            }
        }
        d.deserialize_any(FieldsVisitor)
    }
}

fn validate_message(i: usize, f: &MessageFields) -> Result<(), GatewayError> {
    let param = || format!("messages[{i}]");
    if !f.object {
        return Err(GatewayError::bad_request(
            &param(),
            format!("messages[{i}] must be an object"),
        ));
    }
    // Borrowed unless it has escapes (serde's own `Cow<str>` always allocates).
    let role = f.role.map(|r| serde_json::from_str::<CowStr>(r.get()));
    match role {
        Some(Ok(r)) if ROLES.contains(&&*r.0) => {}
        Some(Ok(r)) => {
            let r = r.0;
            return Err(GatewayError::bad_request(
                &format!("messages[{i}].role"),
                format!(
                "messages[{i}].role {r:?} is not one of system, developer, user, assistant, tool"
            ),
            ));
        }
        _ => {
            return Err(GatewayError::bad_request(
                &format!("messages[{i}].role"),
                format!("messages[{i}].role is required and must be a string"),
            ))
        }
    }
    match f.content.and_then(|c| c.get().as_bytes().first().copied()) {
        None | Some(b'n') | Some(b'"') | Some(b'[') => Ok(()),
        Some(_) => Err(GatewayError::bad_request(
            &format!("messages[{i}].content"),
            format!("messages[{i}].content must be a string, an array of parts, or null"),
        )),
    }
}

fn optional_bool(v: Option<&Value>, key: &str) -> Result<bool, GatewayError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(GatewayError::bad_request(
            key,
            format!("'{key}' must be a boolean"),
        )),
    }
}

fn check_number(v: Option<&Value>, key: &str) -> Result<(), GatewayError> {
    match v {
        None | Some(Value::Null) | Some(Value::Number(_)) => Ok(()),
        Some(_) => Err(GatewayError::bad_request(
            key,
            format!("'{key}' must be a number"),
        )),
    }
}

fn check_integer(v: Option<&Value>, key: &str) -> Result<(), GatewayError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(()),
        Some(_) => Err(GatewayError::bad_request(
            key,
            format!("'{key}' must be an integer"),
        )),
    }
}

/// A JSON string, borrowed from the input unless it had escapes (serde's `Cow<str>` always
/// copies).
pub(crate) struct CowStr<'a>(pub std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<CowStr<'a>, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Text of a message's `content` (string, or the text parts joined).
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// A fresh `chatcmpl-...` id.
pub fn completion_id() -> String {
    format!("chatcmpl-{}", random_token(24))
}

/// Random alphanumeric text.
pub fn random_token(n: usize) -> String {
    use rand::RngCore;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    let mut out = String::with_capacity(n);
    // Six random bits per character, ten per draw; the two values past the alphabet are
    // skipped, so every character stays equally likely. (It runs for every request id.)
    let (mut bits, mut left) = (0u64, 0);
    while out.len() < n {
        if left == 0 {
            (bits, left) = (rng.next_u64(), 10);
        }
        if let Some(&c) = CHARS.get((bits & 63) as usize) {
            out.push(char::from(c));
        }
        bits >>= 6;
        left -= 1;
    }
    out
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

/// A `chat.completion` object, serialized in OpenAI's field order without a JSON tree.
#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<CompletionChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut<'a>>,
}

#[derive(Serialize)]
struct CompletionChoiceOut<'a> {
    index: usize,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    /// The model's reasoning, where vLLM, DeepSeek and most OpenAI-compatible hosts put it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

/// `usage` as [`Usage::to_value`] writes it.
struct UsageOut<'a>(&'a Usage);

impl Serialize for UsageOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let u = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("prompt_tokens", &u.prompt_tokens)?;
        m.serialize_entry("completion_tokens", &u.completion_tokens)?;
        m.serialize_entry("total_tokens", &u.total_tokens)?;
        if u.cached_tokens > 0 {
            m.serialize_entry(
                "prompt_tokens_details",
                &serde_json::json!({"cached_tokens": u.cached_tokens}),
            )?;
        }
        if u.reasoning_tokens > 0 {
            m.serialize_entry(
                "completion_tokens_details",
                &serde_json::json!({"reasoning_tokens": u.reasoning_tokens}),
            )?;
        }
        m.end()
    }
}

fn choice_out(index: usize, a: &Answer) -> CompletionChoiceOut<'_> {
    CompletionChoiceOut {
        index,
        message: MessageOut {
            role: "assistant",
            content: a.content.as_deref(),
            refusal: None,
            reasoning_content: a.reasoning.as_deref().filter(|r| !r.is_empty()),
            tool_calls: a
                .tool_calls
                .iter()
                .map(|t| ToolCallOut {
                    id: &t.id,
                    kind: "function",
                    function: FunctionOut {
                        name: &t.name,
                        arguments: &t.arguments,
                    },
                })
                .collect(),
        },
        logprobs: None,
        finish_reason: &a.finish_reason,
    }
}

fn render_completion(out: &CompletionOut) -> Bytes {
    // Serializing plain structs of strings and integers cannot fail.
    Bytes::from(serde_json::to_vec(out).unwrap_or_default())
}

/// Renders a `chat.completion` object.
pub fn completion_body(id: &str, created: u64, model: &str, answer: &Answer) -> Bytes {
    render_completion(&CompletionOut {
        id,
        object: "chat.completion",
        created,
        model,
        choices: vec![choice_out(0, answer)],
        usage: answer.usage.as_ref().map(UsageOut),
    })
}

/// Renders a `chat.completion` object with one choice per answer (`n > 1`); `usage` covers all.
pub fn completion_body_choices(
    id: &str,
    created: u64,
    model: &str,
    answers: &[Answer],
    usage: Option<&Usage>,
) -> Bytes {
    render_completion(&CompletionOut {
        id,
        object: "chat.completion",
        created,
        model,
        choices: answers
            .iter()
            .enumerate()
            .map(|(i, a)| choice_out(i, a))
            .collect(),
        usage: usage.map(UsageOut),
    })
}

#[derive(Serialize)]
struct ChunkOut<'a, D: Serialize> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<D>; 1],
}

#[derive(Serialize)]
struct ChoiceOut<D: Serialize> {
    index: u32,
    delta: D,
    logprobs: Option<()>,
    finish_reason: Option<String>,
}

#[derive(Serialize)]
struct RoleDelta {
    role: &'static str,
    content: &'static str,
}

#[derive(Serialize)]
struct ContentDelta<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct ReasoningDelta<'a> {
    reasoning_content: &'a str,
}

#[derive(Serialize)]
struct EmptyDelta {}

#[derive(Serialize)]
struct ToolDelta<'a> {
    tool_calls: [ToolDeltaItem<'a>; 1],
}

#[derive(Serialize)]
struct ToolDeltaItem<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: ToolDeltaFn<'a>,
}

#[derive(Serialize)]
struct ToolDeltaFn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [(); 0],
    usage: Value,
}

/// Writes `chat.completion.chunk` SSE events in OpenAI's order, with one id and created time.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChunkWriter {
    pub fn new(model: &str) -> Self {
        ChunkWriter {
            id: completion_id(),
            created: unix_now(),
            model: model.to_string(),
        }
    }

    fn event<T: Serialize>(out: &mut BytesMut, v: &T) {
        out.put_slice(b"data: ");
        let mut w = out.writer();
        // Serializing these plain structs cannot fail.
        let _ = serde_json::to_writer(&mut w, v);
        let out = w.into_inner();
        out.put_slice(b"\n\n");
    }

    fn choice<D: Serialize>(&self, out: &mut BytesMut, delta: D, finish: Option<&str>) {
        self.choice_at(out, 0, delta, finish)
    }

    fn choice_at<D: Serialize>(
        &self,
        out: &mut BytesMut,
        index: u32,
        delta: D,
        finish: Option<&str>,
    ) {
        Self::event(
            out,
            &ChunkOut {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: [ChoiceOut {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: finish.map(str::to_string),
                }],
            },
        );
    }

    /// First chunk: `{"role":"assistant","content":""}`.
    pub fn role(&self, out: &mut BytesMut) {
        self.choice(
            out,
            RoleDelta {
                role: "assistant",
                content: "",
            },
            None,
        );
    }

    pub fn content(&self, out: &mut BytesMut, text: &str) {
        self.choice(out, ContentDelta { content: text }, None);
    }

    /// First delta of a tool call: index, id, type, name and empty arguments.
    pub fn tool_start(&self, out: &mut BytesMut, index: u32, id: &str, name: &str) {
        self.choice(
            out,
            ToolDelta {
                tool_calls: [ToolDeltaItem {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: ToolDeltaFn {
                        name: Some(name),
                        arguments: "",
                    },
                }],
            },
            None,
        );
    }

    pub fn tool_args(&self, out: &mut BytesMut, index: u32, fragment: &str) {
        self.choice(
            out,
            ToolDelta {
                tool_calls: [ToolDeltaItem {
                    index,
                    id: None,
                    kind: None,
                    function: ToolDeltaFn {
                        name: None,
                        arguments: fragment,
                    },
                }],
            },
            None,
        );
    }

    pub fn finish(&self, out: &mut BytesMut, reason: &str) {
        self.choice(out, EmptyDelta {}, Some(reason));
    }

    pub fn usage(&self, out: &mut BytesMut, usage: &Usage) {
        Self::event(
            out,
            &UsageChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: [],
                usage: usage.to_value(),
            },
        );
    }

    /// The writers below address one choice of several (`n > 1`); the ones above write choice 0.
    pub fn role_at(&self, out: &mut BytesMut, choice: u32) {
        let delta = RoleDelta {
            role: "assistant",
            content: "",
        };
        self.choice_at(out, choice, delta, None);
    }

    pub fn content_at(&self, out: &mut BytesMut, choice: u32, text: &str) {
        self.choice_at(out, choice, ContentDelta { content: text }, None);
    }

    /// A fragment of the model's reasoning: `delta.reasoning_content`.
    pub fn reasoning_at(&self, out: &mut BytesMut, choice: u32, text: &str) {
        let delta = ReasoningDelta {
            reasoning_content: text,
        };
        self.choice_at(out, choice, delta, None);
    }

    pub fn tool_start_at(&self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str) {
        let function = ToolDeltaFn {
            name: Some(name),
            arguments: "",
        };
        let item = ToolDeltaItem {
            index,
            id: Some(id),
            kind: Some("function"),
            function,
        };
        self.choice_at(out, choice, ToolDelta { tool_calls: [item] }, None);
    }

    pub fn tool_args_at(&self, out: &mut BytesMut, choice: u32, index: u32, fragment: &str) {
        let function = ToolDeltaFn {
            name: None,
            arguments: fragment,
        };
        let item = ToolDeltaItem {
            index,
            id: None,
            kind: None,
            function,
        };
        self.choice_at(out, choice, ToolDelta { tool_calls: [item] }, None);
    }

    pub fn finish_at(&self, out: &mut BytesMut, choice: u32, reason: &str) {
        self.choice_at(out, choice, EmptyDelta {}, Some(reason));
    }

    pub fn done(out: &mut BytesMut) {
        out.put_slice(b"data: [DONE]\n\n");
    }
}

/// The OpenAI chat dialect's stream: canonical events as `chat.completion.chunk` SSE events.
impl EventWriter for ChunkWriter {
    fn id(&mut self, upstream_id: &str) {
        self.id = format!("chatcmpl-{upstream_id}");
    }

    fn role(&mut self, out: &mut BytesMut, choice: u32) {
        self.role_at(out, choice);
    }

    fn text(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        self.content_at(out, choice, text);
    }

    fn reasoning(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        self.reasoning_at(out, choice, text);
    }

    fn tool_start(&mut self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str) {
        self.tool_start_at(out, choice, index, id, name);
    }

    fn tool_args(&mut self, out: &mut BytesMut, choice: u32, index: u32, fragment: &str) {
        self.tool_args_at(out, choice, index, fragment);
    }

    fn finish(&mut self, out: &mut BytesMut, choice: u32, reason: &str) {
        self.finish_at(out, choice, reason);
    }

    fn usage(&mut self, out: &mut BytesMut, usage: &Usage) {
        ChunkWriter::usage(self, out, usage);
    }

    fn done(&mut self, out: &mut BytesMut) {
        ChunkWriter::done(out);
    }
}

/// The OpenAI chat dialect's whole answers: `chat.completion` objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatCompletionsWriter;

impl AnswerWriter for ChatCompletionsWriter {
    fn answer_body(
        &self,
        id: &str,
        created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> Bytes {
        let id = if id.is_empty() {
            completion_id()
        } else {
            format!("chatcmpl-{id}")
        };
        completion_body_choices(&id, created, model, answers, usage)
    }
}

#[cfg(test)]
mod tests {

    /// What `completion_body` wrote when it built a JSON tree: the typed writer must match it
    /// byte for byte.
    fn tree_completion(
        id: &str,
        created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> String {
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut message = serde_json::json!({"role": "assistant", "content": a.content, "refusal": null});
                if !a.tool_calls.is_empty() {
                    let calls: Vec<Value> = a.tool_calls.iter().map(|t| serde_json::json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}})).collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                serde_json::json!({"index": i, "message": message, "logprobs": null, "finish_reason": a.finish_reason})
            })
            .collect();
        let mut v = serde_json::json!({"id": id, "object": "chat.completion", "created": created, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u.to_value();
        }
        v.to_string()
    }

    #[test]
    fn typed_completion_bodies_match_the_tree_they_replace() {
        let mut cached = Usage::new(10, 5);
        cached.cached_tokens = 4;
        let plain = Answer {
            reasoning: None,
            stop_sequence: None,
            content: Some("Paris \"quoted\" \u{e9}\n".into()),
            tool_calls: vec![],
            finish_reason: "stop".into(),
            usage: Some(Usage::new(3, 2)),
        };
        let tools = Answer {
            reasoning: None,
            stop_sequence: None,
            content: None,
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            }],
            finish_reason: "tool_calls".into(),
            usage: Some(cached),
        };
        let bare = Answer {
            finish_reason: "length".into(),
            ..Answer::default()
        };
        for a in [&plain, &tools, &bare] {
            let typed = completion_body("chatcmpl-1", 7, "m", a);
            let tree = tree_completion(
                "chatcmpl-1",
                7,
                "m",
                std::slice::from_ref(a),
                a.usage.as_ref(),
            );
            assert_eq!(std::str::from_utf8(&typed).unwrap(), tree);
        }
        let all = [plain.clone(), tools.clone(), bare.clone()];
        let typed = completion_body_choices("c", 1, "m", &all, Some(&cached));
        assert_eq!(
            std::str::from_utf8(&typed).unwrap(),
            tree_completion("c", 1, "m", &all, Some(&cached))
        );
        let typed = completion_body_choices("c", 1, "m", &all, None);
        assert_eq!(
            std::str::from_utf8(&typed).unwrap(),
            tree_completion("c", 1, "m", &all, None)
        );
    }
    use super::*;

    #[test]
    fn random_tokens_use_the_whole_alphabet_evenly() {
        let mut counts = std::collections::HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for n in [0, 1, 9, 10, 11, 24, 100] {
            assert_eq!(random_token(n).len(), n);
        }
        for _ in 0..2000 {
            let t = random_token(24);
            assert!(seen.insert(t.clone()), "repeated token {t}");
            for c in t.chars() {
                assert!(c.is_ascii_alphanumeric(), "{t}");
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        // 48,000 characters over 62: about 774 each.
        assert_eq!(counts.len(), 62);
        assert!(
            counts.values().all(|&n| (550..1000).contains(&n)),
            "{counts:?}"
        );
    }

    /// The one-pass parse finds the same fields and the same `messages` text as the general
    /// path, and declines (for the general path to answer) whatever it does not handle.
    #[test]
    fn one_pass_parse_agrees_with_the_general_path() {
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"m","z":[1,{"a":"}"}]}"#,
            " \n{ \"model\" :\t\"m\" ,\r\n \"messages\" : [ { \"role\" : \"user\", \"content\" : \"a, b: {c}\" } ] , \"n\" : 1 } \n",
            r#"{"temperature":0.5,"messages":[{"role":"user","content":"caf\u00e9 \"]\" é"}],"model":"m"}"#,
            r#"{"mess\u0061ges":[{"role":"user","content":"escaped key"}],"model":"m","tools":[]}"#,
            r#"{"model":"m","messages":[],"stream":true}"#,
            r#"{"model":"m","messages":[{"role":"user"}],"x":null,"y":true,"w":-1.5e3}"#,
        ];
        for body in bodies {
            let OnePass {
                fields,
                messages,
                messages_at: at,
                list,
                ..
            } = parse_one_pass(body, true).expect(body);
            let mut general = parse_raw_object(body.as_bytes()).unwrap();
            let i = general.iter().position(|(k, _)| k == "messages").unwrap();
            let (_, raw) = general.remove(i);
            assert_eq!(messages, raw.get(), "{body}");
            assert_eq!(at, i, "{body}");
            let texts = |f: &RawFields| {
                f.iter()
                    .map(|(k, v)| (k.clone(), v.get().to_string()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(texts(&fields), texts(&general), "{body}");
            let full: Vec<MessageFields> = serde_json::from_str(raw.get()).unwrap();
            assert_eq!(list.len(), full.len());
        }
        for declined in [
            r#"{"model":"m","model":"n","messages":[]}"#,
            r#"{"model":"m","messages":[],"messages":[]}"#,
            r#"{"model":"m","messages":"hi"}"#,
            r#"{"model":"m","messages":null}"#,
            r#"{"model":"m"}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"model":"m","messages":[]} x"#,
            r#"{"model":"m","messages":[],}"#,
            r#"{"model":"m" "messages":[]}"#,
            r#"{"model":"m","messages":[1,]}"#,
            r#"{"model":"m","messages":[]"#,
        ] {
            assert!(parse_one_pass(declined, true).is_none(), "{declined}");
        }
    }

    #[test]
    fn parse_validates_fields() {
        let ok = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}],"model":"m","x_unknown":1,"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(ok.model, "m");
        assert!(ok.stream && ok.include_usage);
        assert!(ok.body().contains_key("x_unknown"));
        // A key sent twice keeps its last value, at the top level and inside a message.
        let dup = ChatRequest::parse(br#"{"model":"a","messages":[{"role":5,"role":"user","content":"x","content":null}],"model":"b"}"#).unwrap();
        assert_eq!(dup.model, "b");
        assert_eq!(dup.messages()[0]["role"], "user");
        let e = ChatRequest::parse(br#"{"model":"m","messages":[["user","hi"]]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0]"));
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", ""),
            (b"[1]", ""),
            (br#"{"messages":[{"role":"user","content":"hi"}]}"#, "model"),
            (br#"{"model":7,"messages":[]}"#, "model"),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":"hi"}"#, "messages"),
            (
                br#"{"model":"m","messages":[{"role":"boss","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
                "max_tokens",
            ),
        ];
        for (body, param) in cases {
            let e = ChatRequest::parse(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(
                e.param.as_deref().unwrap_or(""),
                *param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn chunk_writer_replays_in_openai_order() {
        let mut w = ChunkWriter::new("m");
        let mut out = BytesMut::new();
        let a = Answer {
            reasoning: None,
            stop_sequence: None,
            content: Some("hi".into()),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish_reason: "tool_calls".into(),
            usage: Some(Usage::new(3, 4)),
        };
        crate::dialects::replay(&mut w, &mut out, &a, true);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 7);
        assert!(events[0].contains(r#""delta":{"role":"assistant","content":""}"#));
        assert!(events[1].contains(r#""content":"hi""#));
        assert!(events[2].contains(r#""id":"c1""#) && events[2].contains(r#""name":"f""#));
        assert!(events[4].contains(r#""finish_reason":"tool_calls""#));
        assert!(events[5].contains(r#""choices":[]"#) && events[5].contains(r#""total_tokens":7"#));
        assert_eq!(events[6], "data: [DONE]");
    }

    #[test]
    fn event_writer_writes_what_the_chunk_writer_writes() {
        let w = ChunkWriter::new("m");
        let (mut want, mut got) = (BytesMut::new(), BytesMut::new());
        w.role(&mut want);
        w.content(&mut want, "hi");
        w.tool_start(&mut want, 1, "c1", "f");
        w.tool_args(&mut want, 1, "{}");
        w.finish(&mut want, "tool_calls");
        w.content_at(&mut want, 2, "x");
        w.usage(&mut want, &Usage::new(3, 4));
        ChunkWriter::done(&mut want);
        let mut e: Box<dyn EventWriter> = Box::new(w.clone());
        e.role(&mut got, 0);
        e.text(&mut got, 0, "hi");
        e.tool_start(&mut got, 0, 1, "c1", "f");
        e.tool_args(&mut got, 0, 1, "{}");
        e.finish(&mut got, 0, "tool_calls");
        e.text(&mut got, 2, "x");
        e.usage(&mut got, &Usage::new(3, 4));
        e.done(&mut got);
        assert_eq!(got, want);

        let mut w = w;
        EventWriter::id(&mut w, "msg_1");
        assert_eq!(w.id, "chatcmpl-msg_1");
    }

    #[test]
    fn answer_writer_writes_completion_bodies() {
        let a = Answer {
            reasoning: None,
            stop_sequence: None,
            content: Some("hi".into()),
            tool_calls: Vec::new(),
            finish_reason: "stop".into(),
            usage: Some(Usage::new(3, 4)),
        };
        let w: &dyn AnswerWriter = &ChatCompletionsWriter;
        assert_eq!(
            w.answer_body("up1", 7, "m", std::slice::from_ref(&a), a.usage.as_ref()),
            completion_body("chatcmpl-up1", 7, "m", &a)
        );
        let v: Value =
            serde_json::from_slice(&w.answer_body("", 7, "m", &[a.clone(), a], None)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["choices"][1]["index"], 1);
        assert!(v.get("usage").is_none());
    }
}
