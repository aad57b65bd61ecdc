//! The OpenAI-compatible family: OpenAI, vLLM, Ollama's `/v1`, Hugging Face router/TGI, and any
//! host configured with `GATEWAY_PROVIDER_<NAME>_BASE_URL`. Requests pass through with every
//! field of the canonical request (only `model` rewritten, and usage asked for on streams).
//! For an OpenAI chat client (`CallInfo::passthrough`) responses pass through byte for byte;
//! for a client of another dialect they are decoded into its writers (`chat.completion` into
//! answers, `chat.completion.chunk` events into stream events). A host switched to native
//! Messages (`<PROVIDER>_NATIVE_MESSAGES=on`) gets Messages clients' bodies as they are, on
//! `<base URL>/messages`, and answers them itself; likewise Responses clients on
//! `<base URL>/responses` for OpenAI itself and hosts with `<PROVIDER>_NATIVE_RESPONSES=on`.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::api::{Answer, ChatRequest, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::providers::AZURE_FORMAT;
use crate::config::{BaseUrl, HostFlavor, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::stream::{EventDecoder, SseDriver};
use crate::providers::translate;
use crate::providers::{anthropic, responses_passthrough};
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamStatus, StreamTranslator, Translated,
    UpstreamRequest,
};
use crate::sse::SseEvent;

pub struct OpenAiCompatible {
    cfg: ProviderConfig,
}

impl OpenAiCompatible {
    pub fn new(cfg: ProviderConfig) -> Self {
        OpenAiCompatible { cfg }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.api_key {
            Some(k) => vec![("authorization", format!("Bearer {}", k.expose()))],
            None => Vec::new(),
        }
    }
}

/// A Messages client passed through to a host that speaks Messages too
/// (`<PROVIDER>_NATIVE_MESSAGES=on`): `<base URL>/messages`, Anthropic's bytes both ways.
fn messages_native(call: &CallInfo) -> bool {
    call.passthrough && call.client_format == "anthropic"
}

/// A Responses client passed through to a host that speaks Responses (OpenAI, or
/// `<PROVIDER>_NATIVE_RESPONSES=on`): `<base URL>/responses`, the Responses API's bytes both
/// ways.
fn responses_native(call: &CallInfo) -> bool {
    call.passthrough && call.client_format == crate::config::providers::RESPONSES_FORMAT
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<UsageWire>,
}

/// OpenAI's `usage` object, read without building a JSON tree.
#[derive(Deserialize)]
struct UsageWire {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    completion_tokens_details: Option<ReasoningDetails>,
}

#[derive(Deserialize)]
struct ReasoningDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Reads `usage` out of an OpenAI-shaped response body (typed; a body whose usage has other
/// types, e.g. floats, is read through a JSON tree instead).
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    let u = match serde_json::from_slice::<UsageOnly>(body) {
        Ok(u) => u.usage?,
        Err(_) => {
            let v: Value = serde_json::from_slice(body).ok()?;
            return v.get("usage").and_then(Usage::from_value);
        }
    };
    Some(u.into_usage())
}

impl UsageWire {
    fn into_usage(self) -> Usage {
        let u = self;
        let p = u.prompt_tokens.unwrap_or(0);
        let c = u.completion_tokens.unwrap_or(0);
        Usage {
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: u.total_tokens.unwrap_or(p + c),
            cached_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

impl Provider for OpenAiCompatible {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        if let (true, Some(native)) = (messages_native(call), req.native_body()) {
            let body = anthropic::passthrough::native_body_for(req, native, &call.upstream_model)?;
            let mut headers = call.client_headers.clone();
            headers.extend(self.headers());
            return Ok(UpstreamRequest::post(
                format!("{}/messages", backend.path),
                headers,
                body,
            ));
        }
        if let (true, Some(native)) = (responses_native(call), req.native_body()) {
            let body = anthropic::passthrough::native_body_for(req, native, &call.upstream_model)?;
            return Ok(UpstreamRequest::post(
                format!("{}/responses", backend.path),
                self.headers(),
                body,
            ));
        }
        let size = req.messages_raw().len();
        // An effort another dialect mapped from its own setting (Claude Code's thinking budget)
        // is a hint: OpenAI refuses `reasoning_effort` for models that do not reason, and a
        // client of another API cannot fix that. An effort the chat client sent itself is kept.
        // Azure's deployments are OpenAI's models (named after them, as a rule): the same holds.
        let drop_effort = call.client_format != "openai"
            && (self.cfg.name == "openai" || self.cfg.format == AZURE_FORMAT)
            && !openai_reasoning_model(&call.upstream_model);
        let fields = req
            .field_texts()
            .filter(|(k, _)| !(drop_effort && *k == "reasoning_effort"));
        let bytes = encode_with_overrides(fields, size, &call.upstream_model, req.stream)
            .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))?;
        Ok(UpstreamRequest::post(
            format!("{}/chat/completions", backend.path),
            self.headers(),
            Bytes::from(bytes),
        ))
    }

    /// The body passes through when the client's dialect is this upstream's; else it is
    /// decoded and written by the client's dialect.
    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        if messages_native(call) {
            let usage = anthropic::passthrough::usage_of(&body);
            return Ok(Translated { body, usage });
        }
        if responses_native(call) {
            let (_, usage) = responses_passthrough::read_response(&body);
            return Ok(Translated { body, usage });
        }
        if call.passthrough {
            let usage = usage_of(&body);
            // The usage read is a full parse: only a body that failed it is looked at again,
            // so an answer that is not JSON never reaches the client as if it were one.
            if usage.is_none() && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                return Err(translate::bad_upstream_body(
                    &self.cfg.name,
                    "its answer is not JSON",
                ));
            }
            return Ok(Translated { body, usage });
        }
        decode_completion(&body, call, w, &self.cfg.name)
    }

    /// Events pass through when the client's dialect is this upstream's; else they are
    /// decoded into calls on `w`.
    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        if messages_native(call) {
            return Box::new(SseDriver::passthrough(
                anthropic::passthrough::PassthroughStream::default(),
            ));
        }
        if responses_native(call) {
            return Box::new(SseDriver::passthrough(
                responses_passthrough::PassthroughStream::default(),
            ));
        }
        if call.passthrough {
            return Box::new(SseDriver::passthrough(OpenAiStream {
                include_usage: call.include_usage,
                usage: None,
            }));
        }
        Box::new(SseDriver::new(OpenAiDecode::new(call, w)))
    }

    /// vLLM counts through its `/tokenize` (chat form) for a translated client; the other
    /// hosts have no counting endpoint.
    fn count_tokens_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        if call.passthrough || self.cfg.flavor != HostFlavor::Vllm {
            return None;
        }
        let root = backend.path.strip_suffix("/v1").unwrap_or(&backend.path);
        let model = match serde_json::to_string(&call.upstream_model) {
            Ok(m) => m,
            Err(e) => {
                return Some(Err(GatewayError::internal(format!(
                    "encoding the model: {e}"
                ))))
            }
        };
        let body = format!("{{\"model\":{model},\"messages\":{}}}", req.messages_raw());
        Some(Ok(UpstreamRequest::post(
            format!("{root}/tokenize"),
            self.headers(),
            Bytes::from(body),
        )))
    }

    fn count_tokens_response(&self, body: &[u8]) -> Option<u64> {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get("count")?
            .as_u64()
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        openai_error(status, body)
    }

    fn embeddings_request(
        &self,
        body: &serde_json::Map<String, Value>,
        upstream_model: &str,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut body = body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_string()));
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))?;
        Ok(UpstreamRequest::post(
            format!("{}/embeddings", backend.path),
            self.headers(),
            Bytes::from(bytes),
        ))
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        _client_model: &str,
    ) -> Result<(Bytes, Option<Usage>), GatewayError> {
        let usage = usage_of(&body);
        Ok((body, usage))
    }

    fn api_request(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
        backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        let full = match path.strip_prefix("/v2/") {
            // vLLM serves `/v2/rerank` beside `/v1/rerank`, at the host's root.
            Some(_) => {
                let root = backend.path.strip_suffix("/v1").unwrap_or(&backend.path);
                format!("{root}{path}")
            }
            None => format!("{}{path}", backend.path),
        };
        let mut headers = self.headers();
        headers.push(("content-type", content_type.to_string()));
        Some(UpstreamRequest::post(full, headers, body))
    }

    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        if !self.cfg.lists_models {
            return None;
        }
        Some(UpstreamRequest::get(
            format!("{}/models", backend.path),
            self.headers(),
        ))
    }

    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        parse_model_list(body)
    }

    fn stored_response_request(
        &self,
        method: &'static str,
        id_and_query: &str,
        backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        Some(UpstreamRequest {
            method,
            path: format!("{}/responses/{id_and_query}", backend.path),
            headers: self.headers(),
            body: Bytes::new(),
            propagation: None,
        })
    }

    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        let root = backend
            .path
            .strip_suffix("/v1")
            .unwrap_or(&backend.path)
            .to_string();
        let path = match self.cfg.flavor {
            HostFlavor::Ollama => format!("{root}/api/version"),
            HostFlavor::Vllm => format!("{root}/health"),
            // A host with no listing has no request that costs no tokens: no active probe.
            _ if !self.cfg.lists_models => return None,
            _ => format!("{}/models", backend.path),
        };
        Some(UpstreamRequest::get(path, self.headers()))
    }
}

/// The client's body with `model` replaced and, on streams, `stream_options.include_usage`
/// set: every other field is written byte for byte as it came, in its order. The fields are
/// JSON the request parser read (keys and raw values), so the object is put together here
/// piece by piece: keys escaped by serde_json, values copied.
/// OpenAI's models that take `reasoning_effort` (the o-series, GPT-5 and the Codex models).
fn openai_reasoning_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    ["o1", "o3", "o4", "gpt-5", "codex"]
        .iter()
        .any(|p| m.starts_with(p))
        && !m.starts_with("gpt-5-chat")
}

fn encode_with_overrides<'a>(
    fields: impl Iterator<Item = (&'a str, &'a str)>,
    size: usize,
    model: &str,
    stream: bool,
) -> serde_json::Result<Vec<u8>> {
    use serde::ser::{SerializeMap, Serializer};

    struct WithUsage<'a>(Option<&'a serde_json::Map<String, Value>>);

    impl serde::Serialize for WithUsage<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            if let Some(o) = self.0 {
                for (k, v) in o {
                    if k != "include_usage" {
                        m.serialize_entry(k, v)?;
                    }
                }
            }
            m.serialize_entry("include_usage", &true)?;
            m.end()
        }
    }

    let mut out = Vec::with_capacity(size + 64);
    out.push(b'{');
    let mut has_options = false;
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        match k {
            "model" => serde_json::to_writer(&mut out, model)?,
            "stream_options" if stream => {
                has_options = true;
                let options: Option<serde_json::Map<String, Value>> =
                    serde_json::from_str(v).unwrap_or(None);
                serde_json::to_writer(&mut out, &WithUsage(options.as_ref()))?
            }
            "messages" if has_thought(v) => serde_json::to_writer(&mut out, &without_thoughts(v)?)?,
            _ => out.extend_from_slice(v.as_bytes()),
        }
    }
    if stream && !has_options {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"stream_options\":");
        serde_json::to_writer(&mut out, &WithUsage(None))?;
    }
    out.push(b'}');
    Ok(out)
}

/// Whether `messages` holds an id with reasoning state (a SIMD search: this runs for every
/// pass-through request).
fn has_thought(messages: &str) -> bool {
    static FINDER: once_cell::sync::Lazy<memchr::memmem::Finder<'static>> =
        once_cell::sync::Lazy::new(|| {
            memchr::memmem::Finder::new(translate::THOUGHT_SEPARATOR.as_bytes())
        });
    FINDER.find(messages.as_bytes()).is_some()
}

/// `messages` with the reasoning state another provider's answers put in tool call ids
/// (`translate::Thought`) taken out: a signature never goes to a provider that did not make it
/// (after a failover or a change of model), and the ids are the ones that provider first gave.
fn without_thoughts(messages: &str) -> serde_json::Result<Value> {
    let mut v: Value = serde_json::from_str(messages)?;
    let strip = |id: &mut Value| {
        if let Some(s) = id.as_str() {
            let base = translate::split_id(s).0.to_string();
            *id = Value::String(base);
        }
    };
    for m in v.as_array_mut().into_iter().flatten() {
        if let Some(id) = m.get_mut("tool_call_id") {
            strip(id);
        }
        let calls = m.get_mut("tool_calls").and_then(Value::as_array_mut);
        for c in calls.into_iter().flatten() {
            if let Some(id) = c.get_mut("id") {
                strip(id);
            }
        }
    }
    Ok(v)
}

/// `{"data":[{"id":..}]}` -> ids.
pub fn parse_model_list(body: &[u8]) -> Vec<String> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    let list = v
        .get("data")
        .or_else(|| v.get("models"))
        .and_then(Value::as_array);
    list.map(|a| {
        a.iter()
            .filter_map(|m| {
                m.get("id")
                    .or_else(|| m.get("name"))
                    .and_then(Value::as_str)
                    .map(|s| s.trim_start_matches("models/").to_string())
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Any upstream error body as an OpenAI error, status kept.
pub fn openai_error(status: u16, body: &[u8]) -> GatewayError {
    let (message, kind, code) = upstream_error_message(body);
    let kind = kind.map_or_else(|| ErrorKind::for_status(status), |k| k.as_str().into());
    GatewayError::from_upstream(status, kind, code, message)
}

/// A `chat.completion` body decoded into canonical answers, written by the client's dialect.
fn decode_completion(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
    provider: &str,
) -> Result<Translated, GatewayError> {
    // Typed and borrowed, without a JSON tree; an answer of other shapes than OpenAI's (a
    // host's extra types) is read through the tree.
    if let Ok(c) = serde_json::from_slice::<CompletionWire>(body) {
        if let Some(choices) = c.choices {
            let answers: Vec<Answer> = choices.into_iter().map(WireChoice::into_answer).collect();
            let usage = c.usage.map(UsageWire::into_usage);
            let id = c.id.as_deref().unwrap_or("");
            let created = c.created.unwrap_or_else(crate::api::unix_now);
            let body = w.answer_body(id, created, &call.client_model, &answers, usage.as_ref());
            return Ok(Translated { body, usage });
        }
    }
    decode_completion_tree(body, call, w, provider)
}

/// An OpenAI chat completion, the fields a translation reads.
#[derive(Deserialize)]
struct CompletionWire<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default, borrow)]
    choices: Option<Vec<WireChoice<'a>>>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    #[serde(default, borrow)]
    message: Option<WireMessage<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<&'a RawValue>,
    #[serde(default, borrow)]
    matched_stop: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

#[derive(Deserialize)]
struct WireToolCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<WireFunction<'a>>,
}

#[derive(Deserialize)]
struct WireFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// A JSON value (as sent) that is a string, decoded.
fn string_of(v: Option<&RawValue>) -> Option<String> {
    v.map(RawValue::get)
        .filter(|s| s.starts_with('"'))
        .and_then(|s| serde_json::from_str(s).ok())
}

impl WireChoice<'_> {
    fn into_answer(self) -> Answer {
        let finish_reason = self
            .finish_reason
            .map_or("stop".to_string(), Cow::into_owned);
        let stop_sequence = if finish_reason == "stop" {
            string_of(self.stop_reason).or_else(|| string_of(self.matched_stop))
        } else {
            None
        };
        let (content, tool_calls, reasoning) = match self.message {
            None => (None, Vec::new(), None),
            Some(m) => (
                m.content.map(Cow::into_owned),
                m.tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        let (name, arguments) =
                            t.function.map_or((None, None), |f| (f.name, f.arguments));
                        ToolCall {
                            id: t.id.map(Cow::into_owned).unwrap_or_default(),
                            name: name.map(Cow::into_owned).unwrap_or_default(),
                            arguments: arguments.map(Cow::into_owned).unwrap_or_default(),
                        }
                    })
                    .collect(),
                // The first of the two that is a string, when it is not empty.
                string_of(m.reasoning_content)
                    .or_else(|| string_of(m.reasoning))
                    .filter(|r| !r.is_empty()),
            ),
        };
        Answer {
            reasoning,
            stop_sequence,
            content,
            tool_calls,
            finish_reason,
            usage: None,
        }
    }
}

/// [`decode_completion`] through a JSON tree: any value of another type than OpenAI's is
/// read as absent.
fn decode_completion_tree(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
    provider: &str,
) -> Result<Translated, GatewayError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| crate::providers::translate::bad_upstream_body(provider, e))?;
    let choices = v.get("choices").and_then(Value::as_array).ok_or_else(|| {
        crate::providers::translate::bad_upstream_body(provider, "no choices in the answer")
    })?;
    let mut answers = Vec::with_capacity(choices.len());
    for c in choices {
        let msg = c.get("message").unwrap_or(&Value::Null);
        let content = msg
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_string);
        let tool_calls = msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .map(|t| {
                        let f = t.get("function").unwrap_or(&Value::Null);
                        fn text(v: Option<&Value>) -> &str {
                            v.and_then(Value::as_str).unwrap_or("")
                        }
                        ToolCall {
                            id: text(t.get("id")).to_string(),
                            name: text(f.get("name")).to_string(),
                            arguments: text(f.get("arguments")).to_string(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let finish_reason = c
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop")
            .to_string();
        let reasoning = ["reasoning_content", "reasoning"]
            .iter()
            .find_map(|k| msg.get(*k).and_then(Value::as_str))
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        let stop_sequence = matched_stop(c, &finish_reason).map(str::to_string);
        answers.push(Answer {
            reasoning,
            stop_sequence,
            content,
            tool_calls,
            finish_reason,
            usage: None,
        });
    }
    let usage = v.get("usage").and_then(Usage::from_value);
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    let created = v
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(crate::api::unix_now);
    let body = w.answer_body(id, created, &call.client_model, &answers, usage.as_ref());
    Ok(Translated { body, usage })
}

/// The stop sequence a choice that finished with `stop` stopped on, when the host says which:
/// vLLM's `stop_reason` (the matched string; a token id, or null, when it stopped otherwise),
/// SGLang's `matched_stop`. OpenAI, Ollama and most other hosts say only `stop`.
fn matched_stop<'a>(choice: &'a Value, finish_reason: &str) -> Option<&'a str> {
    if finish_reason != "stop" {
        return None;
    }
    ["stop_reason", "matched_stop"]
        .iter()
        .find_map(|k| choice.get(*k).and_then(Value::as_str))
}

/// An OpenAI SSE stream decoded into canonical events for a client of another dialect.
struct OpenAiDecode {
    w: Box<dyn EventWriter>,
    include_usage: bool,
    usage: Option<Usage>,
    id_seen: bool,
    /// Choices whose role was written.
    roles: Vec<u32>,
    /// Tool calls started, as (choice, index).
    tools: Vec<(u32, u32)>,
}

impl OpenAiDecode {
    fn new(call: &CallInfo, w: Box<dyn EventWriter>) -> Self {
        OpenAiDecode {
            w,
            include_usage: call.include_usage,
            usage: None,
            id_seen: false,
            roles: Vec::new(),
            tools: Vec::new(),
        }
    }

    fn role(&mut self, out: &mut BytesMut, choice: u32) {
        if !self.roles.contains(&choice) {
            self.roles.push(choice);
            self.w.role(out, choice);
        }
    }

    fn done(&mut self, out: &mut BytesMut) {
        if self.include_usage {
            if let Some(u) = &self.usage {
                self.w.usage(out, u);
            }
        }
        self.w.done(out);
    }

    fn chunk(&mut self, v: &Value, out: &mut BytesMut) {
        if !self.id_seen {
            // Azure's first chunk (its prompt filter results) has an empty id.
            if let Some(id) = v
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
            {
                self.id_seen = true;
                self.w.id(id);
            }
        }
        if let Some(u) = v.get("usage").and_then(Usage::from_value) {
            self.usage = Some(u);
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return;
        };
        for c in choices {
            let choice = c.get("index").and_then(Value::as_u64).unwrap_or(0) as u32;
            let delta = c.get("delta").unwrap_or(&Value::Null);
            if delta.get("role").is_some() {
                self.role(out, choice);
            }
            if let Some(t) = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.role(out, choice);
                self.w.reasoning(out, choice, t);
            }
            if let Some(t) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.role(out, choice);
                self.w.text(out, choice, t);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                self.role(out, choice);
                for (n, t) in calls.iter().enumerate() {
                    let index = t
                        .get("index")
                        .and_then(Value::as_u64)
                        .map_or(n as u32, |i| i as u32);
                    let f = t.get("function").unwrap_or(&Value::Null);
                    if !self.tools.contains(&(choice, index)) {
                        self.tools.push((choice, index));
                        let id = match t.get("id").and_then(Value::as_str) {
                            Some(id) if !id.is_empty() => id.to_string(),
                            _ => format!("call_{}", crate::api::random_token(24)),
                        };
                        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                        self.w.tool_start(out, choice, index, &id, name);
                    }
                    if let Some(a) = f
                        .get("arguments")
                        .and_then(Value::as_str)
                        .filter(|a| !a.is_empty())
                    {
                        self.w.tool_args(out, choice, index, a);
                    }
                }
            }
            if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                self.role(out, choice);
                if let Some(s) = matched_stop(c, r) {
                    self.w.stop_sequence(choice, s);
                }
                self.w.finish(out, choice, r);
            }
        }
    }
}

impl EventDecoder for OpenAiDecode {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        let data = ev.data.as_str();
        if data == "[DONE]" {
            self.done(out);
            return StreamStatus::Done;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                return StreamStatus::Failed(
                    crate::providers::translate::bad_upstream_body("upstream", e)
                        .with_label("upstream_stream_error"),
                )
            }
        };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let body = serde_json::json!({ "error": err }).to_string();
            let mut e = openai_error(500, body.as_bytes());
            e.label = "upstream_stream_error";
            return StreamStatus::Failed(e);
        }
        self.chunk(&v, out);
        StreamStatus::Continue
    }

    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus {
        if let Some(ev) = tail.filter(|ev| !ev.data.is_empty()) {
            let status = EventDecoder::event(self, &ev, out);
            if status != StreamStatus::Continue {
                return status;
            }
        }
        StreamStatus::Failed(
            GatewayError::new(
                502,
                "upstream_error",
                Some("stream_truncated"),
                "the upstream stream ended before data: [DONE]",
            )
            .with_label("stream_truncated"),
        )
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// Pass-through of an OpenAI SSE stream: events are forwarded byte for byte as each completes;
/// usage is read on the side; the usage-only chunk is dropped if the client did not ask for it.
struct OpenAiStream {
    include_usage: bool,
    usage: Option<Usage>,
}

impl OpenAiStream {
    fn event(&mut self, raw: &[u8], data: &str, out: &mut BytesMut) -> StreamStatus {
        if data == "[DONE]" {
            out.extend_from_slice(raw);
            return StreamStatus::Done;
        }
        // Only events that can carry usage or an error are parsed; the rest are copied.
        let has_usage = data.contains("\"usage\"");
        let has_error = data.contains("\"error\"");
        if has_usage || has_error {
            if let Ok(v) = serde_json::from_str::<Value>(data) {
                if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                    let body = serde_json::json!({ "error": err }).to_string();
                    let mut e = openai_error(500, body.as_bytes());
                    e.label = "upstream_stream_error";
                    return StreamStatus::Failed(e);
                }
                if let Some(u) = v.get("usage").and_then(Usage::from_value) {
                    self.usage = Some(u);
                    let usage_only = v
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.is_empty());
                    if usage_only && !self.include_usage {
                        return StreamStatus::Continue;
                    }
                }
            }
        }
        out.extend_from_slice(raw);
        StreamStatus::Continue
    }
}

impl EventDecoder for OpenAiStream {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        OpenAiStream::event(self, &ev.raw, &ev.data, out)
    }

    /// Comments and keep-alives pass through unchanged.
    fn empty(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        out.extend_from_slice(&ev.raw);
    }

    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus {
        if let Some(ev) = tail {
            // A final event without its blank line: accept it.
            let status = OpenAiStream::event(self, &ev.raw, &ev.data, out);
            if status != StreamStatus::Continue {
                if status == StreamStatus::Done {
                    out.extend_from_slice(b"\n\n");
                }
                return status;
            }
        }
        StreamStatus::Failed(
            GatewayError::new(
                502,
                "upstream_error",
                Some("stream_truncated"),
                "the upstream stream ended before data: [DONE]",
            )
            .with_label("stream_truncated"),
        )
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openai_reasoning_models_take_a_mapped_effort() {
        for m in [
            "o1",
            "o3-mini",
            "o4-mini",
            "gpt-5",
            "gpt-5.1-codex",
            "codex-mini-latest",
        ] {
            assert!(openai_reasoning_model(m), "{m}");
        }
        for m in [
            "gpt-4o",
            "gpt-4.1-mini",
            "gpt-5-chat-latest",
            "chatgpt-4o-latest",
        ] {
            assert!(!openai_reasoning_model(m), "{m}");
        }
    }

    fn translator(include_usage: bool) -> SseDriver<OpenAiStream> {
        SseDriver::new(OpenAiStream {
            include_usage,
            usage: None,
        })
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(t: &mut SseDriver<OpenAiStream>, input: &[u8], split: usize) -> (Vec<u8>, StreamStatus) {
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(t, input, split, &mut out);
        (out.to_vec(), status)
    }

    #[test]
    fn passes_through_and_drops_unasked_usage_at_every_split() {
        let input = STREAM.as_bytes();
        for split in 0..=input.len() {
            let mut t = translator(true);
            let (out, status) = run(&mut t, input, split);
            assert_eq!(out, input, "split {split}");
            assert_eq!(status, StreamStatus::Done);
            assert_eq!(t.usage(), Some(Usage::new(5, 2)));

            let mut t = translator(false);
            let (out, _) = run(&mut t, input, split);
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("\"usage\""), "split {split}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(t.usage(), Some(Usage::new(5, 2)));
        }
    }

    /// An OpenAI stream with text and a tool call, decoded for an Anthropic Messages client.
    const TOOL_STREAM: &str = concat!(
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Think.\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me é check.\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_7\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c2\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    fn decoded(input: &[u8], split: usize) -> (String, StreamStatus) {
        use crate::dialects::Dialect;
        let call = CallInfo {
            client_model: "vllm/m".into(),
            upstream_model: "m".into(),
            stream: true,
            include_usage: true,
            parallel_tool_calls: true,
            passthrough: false,
            client_format: "anthropic",
            client_headers: Vec::new(),
        };
        let w = crate::dialects::anthropic_messages::AnthropicMessages.events(&call.client_model);
        let mut t = SseDriver::new(OpenAiDecode::new(&call, w));
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(&mut t, input, split, &mut out);
        assert_eq!(t.usage(), Some(Usage::new(9, 4)));
        (String::from_utf8(out.to_vec()).unwrap(), status)
    }

    #[test]
    fn decodes_into_anthropic_events_at_every_split() {
        let input = TOOL_STREAM.as_bytes();
        let (want, status) = decoded(input, 0);
        assert_eq!(status, StreamStatus::Done);
        let events: Vec<Value> = want
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.split_once("\ndata: ").unwrap().1).unwrap())
            .collect();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0]["message"]["id"], "msg_c2");
        assert_eq!(events[1]["content_block"]["type"], "thinking");
        assert_eq!(events[2]["delta"]["thinking"], "Think.");
        assert_eq!(events[5]["delta"]["text"], "Let me é check.");
        assert_eq!(events[7]["content_block"]["id"], "toolu_call_7");
        assert_eq!(events[9]["delta"]["partial_json"], "1}");
        assert_eq!(events[11]["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[11]["usage"]["input_tokens"], 9);
        assert_eq!(events[11]["usage"]["output_tokens"], 4);
        for split in 0..=input.len() {
            let (out, status) = decoded(input, split);
            assert_eq!(out, want, "split {split}");
            assert_eq!(status, StreamStatus::Done, "split {split}");
        }
        // Cut before [DONE]: a failure, so the client gets an error event.
        let cut = &input[..input.len() - "data: [DONE]\n\n".len()];
        let (out, status) = decoded(cut, cut.len() / 2);
        assert!(!out.contains("message_stop"));
        assert!(
            matches!(status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated"))
        );
    }

    #[test]
    fn completions_decode_into_anthropic_messages() {
        let call = CallInfo {
            client_model: "vllm/m".into(),
            upstream_model: "m".into(),
            stream: false,
            include_usage: false,
            parallel_tool_calls: true,
            passthrough: false,
            client_format: "anthropic",
            client_headers: Vec::new(),
        };
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"q\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let w = crate::dialects::anthropic_messages::MessageWriter;
        let cfg = crate::config::Config::from_map(&Default::default())
            .unwrap()
            .providers["echo"]
            .clone();
        let t = OpenAiCompatible::new(cfg)
            .chat_response(Bytes::from_static(body), &call, &w)
            .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["id"], "msg_chatcmpl-1");
        assert_eq!(v["model"], "vllm/m");
        assert_eq!(
            v["content"],
            serde_json::json!([{"type": "tool_use", "id": "toolu_call_1", "name": "get", "input": {"q": 1}}])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["usage"]["input_tokens"], 5);
        assert_eq!(t.usage, Some(Usage::new(5, 2)));
    }

    #[test]
    fn truncated_stream_fails() {
        let input = &STREAM.as_bytes()[..STREAM.len() - 20];
        let mut t = translator(false);
        let (_, status) = run(&mut t, input, 10);
        assert!(
            matches!(status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated"))
        );
    }

    #[test]
    fn error_event_fails_with_upstream_message() {
        let input = b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
        let mut t = translator(false);
        let (_, status) = run(&mut t, input, 3);
        match status {
            StreamStatus::Failed(e) => assert_eq!(e.message, "boom"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encoding_rewrites_model_and_usage_only() {
        let body = crate::api::parse_raw_object(
            br#"{"model":"openai/x","messages":[{"role":"user","content":"hi"}],"z":1,"stream_options":{"other":2,"include_usage":false},"stream":true}"#,
        )
        .unwrap();
        fn encode(b: &crate::api::RawFields, model: &str, stream: bool) -> String {
            let texts = b.iter().map(|(k, v)| (k.as_str(), v.get()));
            String::from_utf8(encode_with_overrides(texts, 0, model, stream).unwrap()).unwrap()
        }
        let out = encode(&body, "x", true);
        assert_eq!(
            out,
            r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"z":1,"stream_options":{"other":2,"include_usage":true},"stream":true}"#
        );
        let body =
            crate::api::parse_raw_object(br#"{"model":"a","messages":[],"stream":true}"#).unwrap();
        let out = encode(&body, "b", true);
        assert_eq!(
            out,
            r#"{"model":"b","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let out = encode(&body, "b", false);
        assert_eq!(out, r#"{"model":"b","messages":[],"stream":true}"#);
    }

    #[test]
    fn reasoning_state_in_ids_is_taken_out_for_openai_hosts() {
        use serde_json::json;
        let thought = translate::Thought {
            provider: "google".into(),
            model: "gemini-3-pro-preview".into(),
            signature: Some("c2ln".into()),
            blocks: Vec::new(),
        };
        let id = translate::encode_id("call_1", &thought);
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "reasoning_content": "r", "tool_calls": [
                {"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": id, "content": "a"},
            {"role": "tool", "tool_call_id": "call_2", "content": "b"}
        ]});
        let raw = crate::api::parse_raw_object(body.to_string().as_bytes()).unwrap();
        let texts = raw.iter().map(|(k, v)| (k.as_str(), v.get()));
        let out: Value =
            serde_json::from_slice(&encode_with_overrides(texts, 0, "m", false).unwrap()).unwrap();
        let mut want = body.clone();
        want["messages"][1]["tool_calls"][0]["id"] = json!("call_1");
        want["messages"][2]["tool_call_id"] = json!("call_1");
        assert_eq!(out, want);
    }

    #[test]
    fn error_bodies_of_every_family() {
        let e = openai_error(429, br#"{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#);
        assert_eq!(
            (e.status, e.message.as_str(), e.code.as_deref()),
            (429, "slow down", Some("rate_limit_exceeded"))
        );
        let e = openai_error(
            400,
            br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(
            (e.message.as_str(), e.code.as_deref()),
            ("bad", Some("400"))
        );
        let e = openai_error(
            422,
            br#"{"error":"Input validation error","error_type":"validation"}"#,
        );
        assert_eq!(
            (e.message.as_str(), e.kind.as_str()),
            ("Input validation error", "validation")
        );
        let e = openai_error(502, b"<html>bad gateway</html>");
        assert_eq!(e.message, "<html>bad gateway</html>");
        assert_eq!(e.kind, "server_error");
    }
}
