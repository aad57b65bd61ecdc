//! Cohere's native Chat API v2 (`POST /v2/chat`) behind OpenAI Chat Completions: requests,
//! answers, streams and errors translated both ways. The key travels as `Authorization: Bearer`.
//!
//! Not a built-in provider: any host can be given this format, Cohere's own included.
//!
//! ```text
//! GATEWAY_PROVIDER_COHERE_BASE_URL=https://api.cohere.com
//! GATEWAY_PROVIDER_COHERE_FORMAT=cohere
//! GATEWAY_PROVIDER_COHERE_API_KEY=...
//!
//! curl localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model": "cohere/command-a-03-2025", "messages": [{"role": "user", "content": "Hi"}]}'
//! ```
//!
//! The base URL is the host root, as in Cohere's SDKs (a `/v1` or `/v2` at its end is dropped).
//! Choices, as for the other translated formats: `top_p` and `top_k` become `p` and `k`;
//! `response_format` JSON becomes Cohere's JSON mode (with its schema); `n > 1` and a named
//! `tool_choice` (Cohere can only require some tool or none) are 400s; Cohere cannot be told
//! `parallel_tool_calls: false`, so only the first call of an answer is kept; `user` cannot
//! change the answer and is dropped; any other field without an equivalent is a 400 naming it.
//! Token counts are Cohere's billed units (its raw counts when it bills none).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::api::{random_token, unix_now, Answer, ChatRequest, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::stream::{EventDecoder, SseDriver};
use crate::providers::translate::{
    self, unsupported, Args, Conversation, Fields, Msg, Part, Raw, ResponseFormat, Source, Str,
    ToolChoice,
};
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamStatus, StreamTranslator, Translated,
    UpstreamRequest,
};
use crate::sse::SseEvent;

// ---------------------------------------------------------------------------------------------
// Constants

const NAME: &str = "Cohere";

/// Request fields with an equivalent upstream, and `user`, which identifies the end user only.
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "user",
];

// ---------------------------------------------------------------------------------------------
// Provider

pub struct Cohere {
    cfg: ProviderConfig,
}

impl Cohere {
    pub fn new(cfg: ProviderConfig) -> Self {
        Cohere { cfg }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.api_key {
            Some(k) => vec![("authorization", format!("Bearer {}", k.expose()))],
            None => Vec::new(),
        }
    }
}

/// The host root: base URLs read OpenAI-style get a `/v1` that Cohere's paths do not want.
fn root(backend: &BaseUrl) -> &str {
    let p = backend.path.as_str();
    p.strip_suffix("/v1")
        .or_else(|| p.strip_suffix("/v2"))
        .unwrap_or(p)
}

impl Provider for Cohere {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = encode_request(req, call)?;
        Ok(UpstreamRequest::post(
            format!("{}/v2/chat", root(backend)),
            self.headers(),
            body,
        ))
    }

    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        decode_response(&body, call, w)
    }

    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        Box::new(SseDriver::new(CohereStream::new(call, w)))
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        map_error(status, body)
    }

    /// Rerank is Cohere's own API (`/v2/rerank`, the shape vLLM serves too): passed through.
    /// Cohere has none of the OpenAI API's other endpoints.
    fn api_request(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
        backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        if !matches!(path, "/rerank" | "/v2/rerank") {
            return None;
        }
        let mut headers = self.headers();
        headers.push(("content-type", content_type.to_string()));
        Some(UpstreamRequest::post(
            format!("{}/v2/rerank", root(backend)),
            headers,
            body,
        ))
    }

    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1/models?endpoint=chat&page_size=1000", root(backend)),
            self.headers(),
        ))
    }

    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        crate::providers::openai::parse_model_list(body)
    }

    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1/models?page_size=1", root(backend)),
            self.headers(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Request encoding

/// The `/v2/chat` body for an OpenAI chat request, serialized.
pub fn encode_request(req: &ChatRequest, call: &CallInfo) -> Result<Bytes, GatewayError> {
    let b = Fields::of(req);
    translate::check_fields(&b, TRANSLATED, &[], NAME, "Cohere's chat API")?;
    if translate::choices(&b)? > 1 {
        return Err(GatewayError::bad_request(
            "n",
            "Cohere returns one choice per request: 'n' must be 1 (send several requests instead)",
        ));
    }
    let conv = Conversation::of(&b)?;
    let messages = encode_messages(&conv)?;
    if !messages
        .iter()
        .any(|m| !matches!(m, MessageOut::System { .. }))
    {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' needs at least one user or assistant message with content",
        ));
    }
    let tools = translate::tools(&b)?;
    let tool_choice = match translate::tool_choice(&b, &tools)? {
        None | Some(ToolChoice::Auto) => None,
        Some(ToolChoice::None) if tools.is_empty() => None,
        Some(ToolChoice::None) => Some("NONE"),
        Some(ToolChoice::Required) => Some("REQUIRED"),
        Some(ToolChoice::Named(_)) => {
            return Err(unsupported(
                NAME,
                "tool_choice",
                "Cohere can require some tool (\"required\") or none, not a named one",
            ))
        }
    };
    let response_format = match translate::response_format(&b)? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(JsonFormat {
            kind: "json_object",
            json_schema: None,
        }),
        ResponseFormat::JsonSchema { schema, .. } => Some(JsonFormat {
            kind: "json_object",
            json_schema: Some(schema),
        }),
    };
    let raw = |k: &str| b.raw(k).filter(|v| !translate::is_null(v)).map(Raw);
    let thinking = match translate::effort(&b)? {
        None => None,
        // Cohere's reasoning models are hybrid: reasoning on by default, off when asked.
        Some(effort) if reasons(&call.upstream_model) => Some(match translate::budget(effort) {
            None => ThinkingOut {
                kind: "disabled",
                token_budget: None,
            },
            Some(n) => ThinkingOut {
                kind: "enabled",
                token_budget: Some(n),
            },
        }),
        // A model that does not reason already does what `none` asks.
        Some(translate::Effort::None) => None,
        // An effort another client API mapped from its own setting (Codex's `reasoning.effort`,
        // Claude Code's thinking budget) is a hint those clients send by default: a model that
        // cannot reason answers without it rather than refuse the request.
        Some(_) if call.client_format != "openai" => None,
        Some(_) => {
            return Err(unsupported(
                NAME,
                "reasoning_effort",
                "only Cohere's reasoning models (command-a-reasoning-...) can reason; use one, or omit it",
            ))
        }
    };
    let body = ChatBody {
        model: &call.upstream_model,
        messages,
        tools: tools
            .iter()
            .map(|t| ToolOut {
                kind: "function",
                function: FunctionOut {
                    name: &t.name,
                    description: t.description.as_deref(),
                    parameters: t.parameters.map(|p| p.0),
                },
            })
            .collect(),
        tool_choice,
        response_format,
        max_tokens: translate::max_tokens(&b)?,
        stop_sequences: translate::stop_sequences(&b),
        temperature: translate::temperature(&b)?,
        seed: raw("seed"),
        frequency_penalty: raw("frequency_penalty"),
        presence_penalty: raw("presence_penalty"),
        k: raw("top_k"),
        p: raw("top_p"),
        thinking,
        stream: req.stream,
    };
    translate::to_bytes(&body, b.messages().len() + 512)
}

/// Whether a Cohere model reasons (and takes `thinking`): the `command-a-reasoning` family.
fn reasons(model: &str) -> bool {
    model.to_ascii_lowercase().contains("reasoning")
}

fn text_part<'a>(p: &'a Part<'a>) -> Result<&'a Str<'a>, GatewayError> {
    match p {
        Part::Text(t) => Ok(&t.text),
        _ => Err(unsupported(
            NAME,
            "messages",
            "assistant messages can carry only text and tool calls",
        )),
    }
}

fn user_part<'a>(p: &'a Part<'a>) -> Result<ContentOut<'a>, GatewayError> {
    Ok(match p {
        Part::Text(t) => ContentOut::Text { text: &t.text },
        Part::Image(Source::Url { url, .. }, _) => ContentOut::ImageUrl {
            image_url: ImageUrl {
                url: Cow::Borrowed(url),
            },
        },
        Part::Image(Source::Inline { mime, data }, _) => ContentOut::ImageUrl {
            image_url: ImageUrl {
                url: Cow::Owned(format!("data:{mime};base64,{data}")),
            },
        },
        Part::Audio { .. } | Part::File { .. } => {
            return Err(unsupported(
                NAME,
                "messages",
                "only text and image parts can be sent to Cohere models",
            ))
        }
    })
}

/// OpenAI messages -> Cohere's: system text first as one system message, the rest in order;
/// tool call arguments as JSON text, as Cohere wants them; empty messages dropped.
fn encode_messages<'a>(conv: &'a Conversation<'a>) -> Result<Vec<MessageOut<'a>>, GatewayError> {
    let mut out = Vec::with_capacity(conv.turns.len() + 1);
    if !conv.system.is_empty() {
        out.push(MessageOut::System {
            content: conv
                .system
                .iter()
                .map(|t| ContentOut::Text { text: &t.text })
                .collect(),
        });
    }
    for t in &conv.turns {
        match t {
            Msg::User(parts) => {
                let content = parts.iter().map(user_part).collect::<Result<Vec<_>, _>>()?;
                if !content.is_empty() {
                    out.push(MessageOut::User { content });
                }
            }
            Msg::Assistant { parts, calls, .. } => {
                let mut content = Vec::with_capacity(parts.len());
                for p in parts {
                    let text = text_part(p)?;
                    if !text.is_empty() {
                        content.push(ContentOut::Text { text });
                    }
                }
                let tool_calls = calls
                    .iter()
                    .map(|c| ToolCallOut {
                        id: &c.id,
                        kind: "function",
                        function: CallFunctionOut {
                            name: &c.name,
                            arguments: arguments_text(&c.args),
                        },
                    })
                    .collect::<Vec<_>>();
                if !content.is_empty() || !tool_calls.is_empty() {
                    out.push(MessageOut::Assistant {
                        content,
                        tool_calls,
                    });
                }
            }
            Msg::Tool { id, content, .. } => out.push(MessageOut::Tool {
                tool_call_id: id,
                content,
            }),
        }
    }
    Ok(out)
}

/// A tool call's arguments as JSON text (`{}` when there were none).
fn arguments_text(args: &Args) -> String {
    match args {
        Args::Empty => "{}".to_string(),
        Args::Raw(r) => r.get().to_string(),
        Args::Owned(r) => r.get().to_string(),
    }
}

/// The `/v2/chat` request body.
#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<JsonFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<ThinkingOut>,
    stream: bool,
}

/// `thinking`, for Cohere's reasoning models.
#[derive(Serialize)]
struct ThinkingOut {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_budget: Option<u64>,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum MessageOut<'a> {
    System {
        content: Vec<ContentOut<'a>>,
    },
    User {
        content: Vec<ContentOut<'a>>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<ContentOut<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a Str<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentOut<'a> {
    Text { text: &'a Str<'a> },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: Cow<'a, str>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CallFunctionOut<'a>,
}

#[derive(Serialize)]
struct CallFunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct JsonFormat {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Response decoding

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    message: Option<MessageIn>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(default)]
    content: Vec<ContentIn>,
    #[serde(default)]
    tool_calls: Vec<ToolCallIn>,
}

/// Text is the answer, thinking its reasoning; anything new is not shown.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentIn {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct ToolCallIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionIn>,
}

#[derive(Deserialize, Default)]
struct FunctionIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageIn {
    #[serde(default)]
    billed_units: Option<Units>,
    #[serde(default)]
    tokens: Option<Units>,
}

/// Cohere counts in floats.
#[derive(Deserialize, Default, Clone, Copy)]
struct Units {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

impl UsageIn {
    /// Billed units, else the raw token counts.
    fn usage(&self) -> Usage {
        let count = |f: fn(&Units) -> Option<f64>| {
            let v = self
                .billed_units
                .as_ref()
                .and_then(f)
                .or_else(|| self.tokens.as_ref().and_then(f))
                .unwrap_or(0.0);
            v.max(0.0).round() as u64
        };
        Usage::new(count(|u| u.input_tokens), count(|u| u.output_tokens))
    }
}

/// Cohere's finish reason -> OpenAI's; `ERROR` and `TIMEOUT` are not answers but errors.
pub fn finish_reason(reason: Option<&str>, has_calls: bool) -> Result<&'static str, GatewayError> {
    match reason {
        Some("MAX_TOKENS") => Ok("length"),
        Some("TOOL_CALL") => Ok("tool_calls"),
        Some("ERROR") => Err(generation_error(500, None)),
        Some("TIMEOUT") => Err(generation_error(504, None)),
        // COMPLETE, STOP_SEQUENCE, and anything new.
        _ if has_calls => Ok("tool_calls"),
        _ => Ok("stop"),
    }
}

fn generation_error(status: u16, message: Option<&str>) -> GatewayError {
    let message = match message.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None if status == 504 => "Cohere timed out generating the answer".to_string(),
        None => "Cohere reported an error generating the answer".to_string(),
    };
    GatewayError::from_upstream(status, ErrorKind::for_status(status), None, message)
}

fn call_id(id: Option<String>) -> String {
    id.filter(|i| !i.is_empty())
        .unwrap_or_else(|| format!("call_{}", random_token(24)))
}

fn decode_response(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
) -> Result<Translated, GatewayError> {
    let r: ChatResponse =
        serde_json::from_slice(body).map_err(|e| translate::bad_upstream_body(NAME, e))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    if let Some(m) = r.message {
        for c in m.content {
            match c {
                ContentIn::Text { text: t } => text.push_str(&t),
                ContentIn::Thinking { thinking } => reasoning.push_str(&thinking),
                ContentIn::Other => {}
            }
        }
        for c in m.tool_calls {
            if !call.parallel_tool_calls && !calls.is_empty() {
                break;
            }
            let f = c.function.unwrap_or_default();
            calls.push(ToolCall {
                id: call_id(c.id),
                name: f.name.unwrap_or_default(),
                arguments: f
                    .arguments
                    .filter(|a| !a.trim().is_empty())
                    .unwrap_or_else(|| "{}".to_string()),
            });
        }
    }
    let finish = finish_reason(r.finish_reason.as_deref(), !calls.is_empty())?;
    let usage = r.usage.map(|u| u.usage());
    let answer = Answer {
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        stop_sequence: None,
        content: if text.is_empty() && !calls.is_empty() {
            None
        } else {
            Some(text)
        },
        tool_calls: calls,
        finish_reason: finish.to_string(),
        usage,
    };
    let body = w.answer_body(
        &r.id,
        unix_now(),
        &call.client_model,
        std::slice::from_ref(&answer),
        usage.as_ref(),
    );
    Ok(Translated { body, usage })
}

// ---------------------------------------------------------------------------------------------
// Stream decoding

/// One stream event, by its `type`. Content and tool call starts and ends, tool plans,
/// citations and debug events carry nothing the client sees.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Event {
    MessageStart {
        #[serde(default)]
        id: Option<String>,
    },
    ContentDelta {
        #[serde(default)]
        delta: Option<Delta<ContentDeltaMessage>>,
    },
    ToolCallStart {
        #[serde(default)]
        delta: Option<Delta<ToolCallMessage>>,
    },
    ToolCallDelta {
        #[serde(default)]
        delta: Option<Delta<ToolCallMessage>>,
    },
    ToolCallEnd,
    MessageEnd {
        #[serde(default)]
        delta: Option<EndDelta>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Delta<M> {
    #[serde(default)]
    message: Option<M>,
}

#[derive(Deserialize, Default)]
struct ContentDeltaMessage {
    #[serde(default)]
    content: Option<ContentDeltaContent>,
}

#[derive(Deserialize)]
struct ContentDeltaContent {
    /// Absent on a reasoning model's thinking fragments.
    #[serde(default)]
    text: Option<String>,
    /// A reasoning model's thinking fragment.
    #[serde(default)]
    thinking: Option<String>,
}

#[derive(Deserialize, Default)]
struct ToolCallMessage {
    #[serde(default)]
    tool_calls: Option<ToolCallIn>,
}

#[derive(Deserialize)]
struct EndDelta {
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

/// Cohere SSE -> canonical events. The role event goes out with the first thing there is to
/// show (so an error before any content leaves nothing written and the request can fail over);
/// the finish waits for `message-end`, and a stream that ends without it is truncated.
pub struct CohereStream {
    w: Box<dyn EventWriter>,
    include_usage: bool,
    parallel_tool_calls: bool,
    role_sent: bool,
    id_set: bool,
    /// Tool calls started so far.
    tools: u32,
    /// The call being streamed (its index), with whether an arguments fragment went out;
    /// `None` between calls and for calls dropped by `parallel_tool_calls: false`.
    current: Option<(u32, bool)>,
    usage: Option<Usage>,
}

impl CohereStream {
    pub fn new(call: &CallInfo, w: Box<dyn EventWriter>) -> Self {
        CohereStream {
            w,
            include_usage: call.include_usage,
            parallel_tool_calls: call.parallel_tool_calls,
            role_sent: false,
            id_set: false,
            tools: 0,
            current: None,
            usage: None,
        }
    }

    fn role(&mut self, out: &mut BytesMut) {
        if !self.role_sent {
            self.role_sent = true;
            self.w.role(out, 0);
        }
    }

    fn decode(&mut self, data: &str, out: &mut BytesMut) -> StreamStatus {
        if data.trim() == "[DONE]" {
            return StreamStatus::Continue;
        }
        let ev: Event = match serde_json::from_str(data) {
            Ok(ev) => ev,
            Err(e) => {
                return StreamStatus::Failed(
                    translate::bad_upstream_body(NAME, format!("stream event: {e}"))
                        .with_label("upstream_stream_error"),
                )
            }
        };
        match ev {
            Event::MessageStart { id } => {
                if let Some(id) = id.filter(|i| !i.is_empty()) {
                    if !self.id_set && !self.role_sent {
                        self.id_set = true;
                        self.w.id(&id);
                    }
                }
            }
            Event::ContentDelta { delta } => {
                let content = delta.and_then(|d| d.message).and_then(|m| m.content);
                if let Some(c) = content {
                    if let Some(t) = c.thinking.filter(|t| !t.is_empty()) {
                        self.role(out);
                        self.w.reasoning(out, 0, &t);
                    }
                    if let Some(t) = c.text.filter(|t| !t.is_empty()) {
                        self.role(out);
                        self.w.text(out, 0, &t);
                    }
                }
            }
            Event::ToolCallStart { delta } => {
                self.current = None;
                if !self.parallel_tool_calls && self.tools > 0 {
                    return StreamStatus::Continue;
                }
                let c = delta
                    .and_then(|d| d.message)
                    .and_then(|m| m.tool_calls)
                    .unwrap_or_default();
                let f = c.function.unwrap_or_default();
                let index = self.tools;
                self.tools += 1;
                self.role(out);
                let name = f.name.unwrap_or_default();
                self.w.tool_start(out, 0, index, &call_id(c.id), &name);
                let args = f.arguments.filter(|a| !a.is_empty());
                if let Some(a) = &args {
                    self.w.tool_args(out, 0, index, a);
                }
                self.current = Some((index, args.is_some()));
            }
            Event::ToolCallDelta { delta } => {
                let fragment = delta
                    .and_then(|d| d.message)
                    .and_then(|m| m.tool_calls)
                    .and_then(|c| c.function)
                    .and_then(|f| f.arguments)
                    .filter(|a| !a.is_empty());
                if let (Some(a), Some((index, _))) = (fragment, self.current) {
                    self.w.tool_args(out, 0, index, &a);
                    self.current = Some((index, true));
                }
            }
            Event::ToolCallEnd => {
                // A call without arguments still gets a parseable `{}`.
                if let Some((index, false)) = self.current {
                    self.w.tool_args(out, 0, index, "{}");
                }
                self.current = None;
            }
            Event::MessageEnd { delta } => {
                let delta = delta.unwrap_or(EndDelta {
                    finish_reason: None,
                    error: None,
                    usage: None,
                });
                if let Some(u) = &delta.usage {
                    self.usage = Some(u.usage());
                }
                let reason = match (
                    &delta.error,
                    finish_reason(delta.finish_reason.as_deref(), self.tools > 0),
                ) {
                    (Some(m), _) if !m.is_empty() => Err(generation_error(500, Some(m))),
                    (_, r) => r,
                };
                let reason = match reason {
                    Ok(r) => r,
                    Err(mut e) => {
                        e.label = "upstream_stream_error";
                        return StreamStatus::Failed(e);
                    }
                };
                self.role(out);
                self.w.finish(out, 0, reason);
                if self.include_usage {
                    let u = self.usage.unwrap_or_default();
                    self.w.usage(out, &u);
                }
                self.w.done(out);
                return StreamStatus::Done;
            }
            Event::Other => {}
        }
        StreamStatus::Continue
    }
}

impl EventDecoder for CohereStream {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        self.decode(&ev.data, out)
    }

    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus {
        crate::providers::stream::end_at_terminal_event(
            tail,
            out,
            |data, out| self.decode(data, out),
            NAME,
            "message-end",
        )
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Error mapping

/// A Cohere error body (`{"id": ..., "message": ...}`) -> the OpenAI error object. 498 (Cohere's
/// invalid token) is 401, so clients react as they would to OpenAI.
pub fn map_error(status: u16, body: &[u8]) -> GatewayError {
    let (message, _, _) = upstream_error_message(body);
    let status = if status == 498 { 401 } else { status };
    GatewayError::from_upstream(status, ErrorKind::for_status(status), None, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChatCompletionsWriter, ChunkWriter};
    use crate::providers::StreamTranslator;
    use serde_json::json;

    fn call(include_usage: bool, parallel: bool) -> CallInfo {
        CallInfo {
            client_model: "cohere/command-a-03-2025".into(),
            upstream_model: "command-a-03-2025".into(),
            stream: true,
            include_usage,
            parallel_tool_calls: parallel,
            passthrough: false,
            client_format: "openai",
            client_headers: Vec::new(),
        }
    }

    fn encode(body: Value) -> Result<Value, GatewayError> {
        let req = ChatRequest::parse(body.to_string().as_bytes())?;
        let bytes = encode_request(&req, &call(false, true))?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn paths_and_auth() {
        let p = Cohere::new(ProviderConfig {
            api_key: Some(crate::config::Secret::new("co-key")),
            ..crate::config::Config::from_map(&Default::default())
                .unwrap()
                .providers["echo"]
                .clone()
        });
        let req =
            ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        for (path, want) in [
            ("/v1", "/v2/chat"),
            ("", "/v2/chat"),
            ("/v2", "/v2/chat"),
            ("/proxy/cohere/v1", "/proxy/cohere/v2/chat"),
        ] {
            let backend = BaseUrl {
                tls: true,
                host: "api.cohere.com".into(),
                port: 443,
                path: path.into(),
            };
            let u = p.chat_request(&req, &call(false, true), &backend).unwrap();
            assert_eq!(u.path, want, "{path}");
            assert_eq!(
                u.headers,
                vec![("authorization", "Bearer co-key".to_string())]
            );
        }
    }

    #[test]
    fn request_translation() {
        let v = encode(json!({
            "model": "cohere/command-a-03-2025",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "use metric"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "21C"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 100, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 7,
            "frequency_penalty": 0.5, "presence_penalty": 0.2, "stop": "END", "user": "u-42",
            "n": 1, "store": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required", "stream": true
        }))
        .unwrap();
        assert_eq!(v["model"], "command-a-03-2025");
        assert_eq!(
            (
                v["max_tokens"].clone(),
                v["temperature"].clone(),
                v["p"].clone(),
                v["k"].clone()
            ),
            (json!(100), json!(0.7), json!(0.9), json!(40))
        );
        assert_eq!(
            (
                v["seed"].clone(),
                v["frequency_penalty"].clone(),
                v["presence_penalty"].clone()
            ),
            (json!(7), json!(0.5), json!(0.2))
        );
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["stream"], true);
        assert_eq!(v["tool_choice"], "REQUIRED");
        for gone in [
            "user",
            "store",
            "n",
            "top_p",
            "top_k",
            "stop",
            "max_completion_tokens",
        ] {
            assert!(v.get(gone).is_none(), "{gone}");
        }
        assert_eq!(
            v["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
        );
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 6, "the empty assistant message is dropped: {m:?}");
        assert_eq!(
            m[0],
            json!({"role": "system", "content": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "use metric"}]})
        );
        assert_eq!(
            m[1],
            json!({"role": "user", "content": [
                {"type": "text", "text": "weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
            ]})
        );
        assert_eq!(
            m[2],
            json!({"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ]})
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"})
        );
        assert_eq!(
            m[5],
            json!({"role": "user", "content": [{"type": "text", "text": "thanks"}]})
        );

        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}}))
        .unwrap();
        assert_eq!(
            v["response_format"],
            json!({"type": "json_object", "json_schema": {"type": "object", "properties": {"name": {"type": "string"}}}})
        );
        assert_eq!(v["stream"], false);
        assert!(v.get("tools").is_none() && v.get("tool_choice").is_none());
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}))
        .unwrap();
        assert_eq!(v["response_format"], json!({"type": "json_object"}));
        assert_eq!(v["tool_choice"], "NONE");
        assert_eq!(
            v["tools"][0],
            json!({"type": "function", "function": {"name": "f"}})
        );
    }

    #[test]
    fn untranslatable_fields_are_400s_naming_them() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        for (extra, param) in [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"reasoning_effort": "high"}), "reasoning_effort"),
            (json!({"x_unknown": 1}), "x_unknown"),
            (json!({"temperature": 3}), "temperature"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
                "tool_choice",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "system", "content": "only a system prompt"}]}),
                "messages",
            ),
        ] {
            let e = encode(base(extra.clone())).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
        encode(base(json!({"logprobs": false, "metadata": {"a": "b"}, "store": true, "modalities": ["text"]}))).unwrap();
    }

    /// A recorded-shape `/v2/chat` answer.
    const ANSWER: &[u8] = br#"{"id":"5a6b2c1e-0d1f-4c55-9a0b-2f5c1e6a7b8c","message":{"role":"assistant","tool_plan":"I will look up the weather.",
        "content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Checking."}],
        "tool_calls":[{"id":"get_weather_1byjy32y4hvq","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}},
                      {"id":"get_weather_2","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Rome\"}"}}]},
        "finish_reason":"TOOL_CALL",
        "usage":{"billed_units":{"input_tokens":37.0,"output_tokens":21},"tokens":{"input_tokens":1200,"output_tokens":60},"cached_tokens":0}}"#;

    fn decode(body: &[u8], c: &CallInfo) -> Result<(Value, Option<Usage>), GatewayError> {
        let t = decode_response(body, c, &ChatCompletionsWriter)?;
        Ok((serde_json::from_slice(&t.body).unwrap(), t.usage))
    }

    #[test]
    fn response_translation() {
        let (v, usage) = decode(ANSWER, &call(false, true)).unwrap();
        assert_eq!(v["id"], "chatcmpl-5a6b2c1e-0d1f-4c55-9a0b-2f5c1e6a7b8c");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "cohere/command-a-03-2025");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "Checking.");
        assert_eq!(c["message"]["reasoning_content"], "hmm");
        assert_eq!(
            c["message"]["tool_calls"],
            json!([
                {"id": "get_weather_1byjy32y4hvq", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "get_weather_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}
            ])
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 37, "completion_tokens": 21, "total_tokens": 58})
        );
        assert_eq!(usage, Some(Usage::new(37, 21)));

        let (v, _) = decode(ANSWER, &call(false, false)).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "parallel_tool_calls=false keeps one call"
        );

        for (reason, want) in [
            ("COMPLETE", "stop"),
            ("STOP_SEQUENCE", "stop"),
            ("MAX_TOKENS", "length"),
            ("SOMETHING_NEW", "stop"),
        ] {
            let body = json!({"id": "x", "finish_reason": reason, "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                              "usage": {"tokens": {"input_tokens": 3, "output_tokens": 1}}});
            let (v, usage) = decode(body.to_string().as_bytes(), &call(false, true)).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
            assert_eq!(v["choices"][0]["message"]["content"], "hi");
            assert_eq!(
                usage,
                Some(Usage::new(3, 1)),
                "raw tokens when nothing is billed"
            );
        }
        for (reason, status) in [("ERROR", 500), ("TIMEOUT", 504)] {
            let body = json!({"id": "x", "finish_reason": reason, "message": {"role": "assistant", "content": []}});
            let e = decode(body.to_string().as_bytes(), &call(false, true)).unwrap_err();
            assert_eq!(e.status, status, "{reason}");
        }
        let no_id = br#"{"finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"x"}]}}"#;
        let (v, usage) = decode(no_id, &call(false, true)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(v.get("usage").is_none() && usage.is_none());
        assert_eq!(
            decode(b"<html>", &call(false, true)).unwrap_err().status,
            502
        );
    }

    #[test]
    fn errors_map_to_openai_shape() {
        let e = map_error(401, br#"{"id":"e1","message":"invalid api token"}"#);
        assert_eq!(
            (e.status, e.kind.as_str(), e.message.as_str()),
            (401, "authentication_error", "invalid api token")
        );
        let e = map_error(498, br#"{"message":"expired token"}"#);
        assert_eq!((e.status, e.kind.as_str()), (401, "authentication_error"));
        let e = map_error(429, br#"{"id":"e2","message":"You are using a Trial key, which is limited to 10 API calls / minute."}"#);
        assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
        assert!(e.message.starts_with("You are using a Trial key"));
        let e = map_error(
            400,
            br#"{"id":"e3","message":"invalid request: messages must not be empty"}"#,
        );
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v["error"]["message"],
            "invalid request: messages must not be empty"
        );
        assert_eq!(map_error(503, b"upstream unavailable").status, 503);
    }

    // ---- streams: recorded-shape fixtures, fed split at every byte offset ----

    fn ev(data: Value) -> String {
        let name = data["type"].as_str().unwrap().to_string();
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn start() -> String {
        ev(
            json!({"id": "29f14a5a-11de-4cae-9800-25e4747408ea", "type": "message-start", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
        )
    }

    fn end(reason: &str, input: u64, output: u64) -> String {
        ev(
            json!({"type": "message-end", "delta": {"finish_reason": reason, "usage": {"billed_units": {"input_tokens": input, "output_tokens": output}, "tokens": {"input_tokens": input + 60, "output_tokens": output}}}}),
        )
    }

    fn text_stream() -> String {
        [
            start(),
            ev(json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})),
            ev(json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hello"}}}, "logprobs": null})),
            ev(json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": " wörld"}}}, "logprobs": null})),
            ev(json!({"type": "content-end", "index": 0})),
            end("COMPLETE", 5, 2),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat()
    }

    fn tools_stream() -> String {
        [
            start(),
            ev(json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will look up"}}})),
            ev(json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": " the weather."}}})),
            ev(json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {"id": "get_weather_a1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}}}})),
            ev(json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": "{\n    \"loca"}}}}})),
            ev(json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": "tion\": \"Paris\"\n}"}}}}})),
            ev(json!({"type": "tool-call-end", "index": 0})),
            ev(json!({"type": "tool-call-start", "index": 1, "delta": {"message": {"tool_calls": {"id": "get_time_b2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":"}}}}})),
            ev(json!({"type": "tool-call-delta", "index": 1, "delta": {"message": {"tool_calls": {"function": {"arguments": "\"CET\"}"}}}}})),
            ev(json!({"type": "tool-call-end", "index": 1})),
            ev(json!({"type": "tool-call-start", "index": 2, "delta": {"message": {"tool_calls": {"id": "ping_c3", "type": "function", "function": {"name": "ping_all"}}}}})),
            ev(json!({"type": "tool-call-end", "index": 2})),
            end("TOOL_CALL", 40, 30),
        ]
        .concat()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-29f14a5a-11de-4cae-9800-25e4747408ea", "object": "chat.completion.chunk", "created": 7, "model": "cohere/command-a-03-2025",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    fn usage_chunk(p: u64, c: u64) -> Value {
        json!({"id": "chatcmpl-29f14a5a-11de-4cae-9800-25e4747408ea", "object": "chat.completion.chunk", "created": 7, "model": "cohere/command-a-03-2025",
               "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
    }

    fn translator(c: &CallInfo) -> SseDriver<CohereStream> {
        let w = ChunkWriter {
            id: "chatcmpl-x".into(),
            created: 7,
            model: c.client_model.clone(),
        };
        SseDriver::new(CohereStream::new(c, Box::new(w)))
    }

    /// Runs `input` split in two at `split`, returns the output, the final status and usage.
    fn run(input: &[u8], split: usize, c: &CallInfo) -> (Vec<u8>, StreamStatus, Option<Usage>) {
        let mut t = translator(c);
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(&mut t, input, split, &mut out);
        (out.to_vec(), status, t.usage())
    }

    use crate::providers::stream::data_events as events;

    /// Every split gives the same bytes as the whole, and those bytes are `want`.
    fn check(input: &str, c: &CallInfo, want: &[Value], want_status: &StreamStatus) {
        let input = input.as_bytes();
        let (whole, status, _) = run(input, 0, c);
        assert_eq!(&status, want_status);
        assert_eq!(events(&whole), want);
        for split in 0..=input.len() {
            let (out, status, _) = run(input, split, c);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(&status, want_status, "split at {split}");
        }
        // And one byte at a time.
        let mut t = translator(c);
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_bytewise(&mut t, input, &mut out);
        assert_eq!(out.to_vec(), whole);
        assert_eq!(&status, want_status);
    }

    #[test]
    fn text_stream_at_every_split() {
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hello"}), None),
            chunk(json!({"content": " wörld"}), None),
            chunk(json!({}), Some("stop")),
            json!("[DONE]"),
        ];
        check(
            &text_stream(),
            &call(false, true),
            &want,
            &StreamStatus::Done,
        );
        let mut with_usage = want.to_vec();
        with_usage.insert(4, usage_chunk(5, 2));
        check(
            &text_stream(),
            &call(true, true),
            &with_usage,
            &StreamStatus::Done,
        );
        let (_, _, usage) = run(text_stream().as_bytes(), 3, &call(false, true));
        assert_eq!(
            usage,
            Some(Usage::new(5, 2)),
            "usage known without the usage chunk"
        );
        // The final event without its blank line still counts.
        let full = text_stream();
        let cut = full.find("data: [DONE]").unwrap() - 2;
        check(&full[..cut], &call(false, true), &want, &StreamStatus::Done);
    }

    #[test]
    fn tool_stream_with_several_calls_at_every_split() {
        let tc = |v: Value| chunk(json!({"tool_calls": [v]}), None);
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            tc(
                json!({"index": 0, "id": "get_weather_a1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            ),
            tc(json!({"index": 0, "function": {"arguments": "{\n    \"loca"}})),
            tc(json!({"index": 0, "function": {"arguments": "tion\": \"Paris\"\n}"}})),
            tc(
                json!({"index": 1, "id": "get_time_b2", "type": "function", "function": {"name": "get_time", "arguments": ""}}),
            ),
            tc(json!({"index": 1, "function": {"arguments": "{\"tz\":"}})),
            tc(json!({"index": 1, "function": {"arguments": "\"CET\"}"}})),
            tc(
                json!({"index": 2, "id": "ping_c3", "type": "function", "function": {"name": "ping_all", "arguments": ""}}),
            ),
            tc(json!({"index": 2, "function": {"arguments": "{}"}})),
            chunk(json!({}), Some("tool_calls")),
            usage_chunk(40, 30),
            json!("[DONE]"),
        ];
        check(
            &tools_stream(),
            &call(true, true),
            &want,
            &StreamStatus::Done,
        );
        // parallel_tool_calls: false keeps the first call only.
        let mut single = want.to_vec();
        single.drain(4..9);
        check(
            &tools_stream(),
            &call(true, false),
            &single,
            &StreamStatus::Done,
        );
    }

    #[test]
    fn error_at_the_end_fails_without_a_finish_chunk() {
        let input = [
            start(),
            ev(json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}})),
            ev(json!({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal error: the model crashed"}})),
        ]
        .concat();
        let (_, status, _) = run(input.as_bytes(), 0, &call(true, true));
        let StreamStatus::Failed(e) = &status else {
            panic!("{status:?}")
        };
        assert_eq!(
            (e.status, e.message.as_str(), e.label),
            (
                500,
                "internal error: the model crashed",
                "upstream_stream_error"
            )
        );
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hel"}), None),
        ];
        check(&input, &call(true, true), &want, &status);
        // Before any content: nothing written, so the request can still fail over.
        let input = [
            start(),
            ev(json!({"type": "message-end", "delta": {"finish_reason": "TIMEOUT"}})),
        ]
        .concat();
        let (out, status, _) = run(input.as_bytes(), 0, &call(false, true));
        assert!(out.is_empty());
        assert!(matches!(status, StreamStatus::Failed(e) if e.status == 504));
    }

    #[test]
    fn truncated_streams_fail_and_never_finish() {
        let full = tools_stream();
        let cut = full.find("event: message-end").unwrap();
        let input = &full[..cut];
        let (out, status, _) = run(input.as_bytes(), 0, &call(true, true));
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
            "{status:?}"
        );
        let evs = events(&out);
        assert!(evs
            .iter()
            .all(|e| e["choices"][0]["finish_reason"].is_null() && e != "[DONE]"));
        check(input, &call(true, true), &evs, &status);
        // Cut in the middle of the last event.
        let input = &full[..full.len() - 10];
        let (out, status, _) = run(input.as_bytes(), 0, &call(false, true));
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated"))
        );
        check(input, &call(false, true), &events(&out), &status);
    }

    #[test]
    fn unknown_events_are_ignored_and_thinking_is_reasoning() {
        let input = [
            start(),
            ev(json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}})),
            ev(json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "hmm"}}}})),
            ev(json!({"type": "citation-start", "index": 0, "delta": {"message": {"citations": {"start": 0, "end": 2, "text": "Hi"}}}})),
            ev(json!({"type": "brand-new-event", "x": 1})),
            ev(json!({"type": "content-delta", "index": 1, "delta": {"message": {"content": {"text": "Hi"}}}})),
            ev(json!({"type": "debug", "prompt": "..."})),
            end("MAX_TOKENS", 3, 1),
        ]
        .concat();
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"reasoning_content": "hmm"}), None),
            chunk(json!({"content": "Hi"}), None),
            chunk(json!({}), Some("length")),
            json!("[DONE]"),
        ];
        check(&input, &call(false, true), &want, &StreamStatus::Done);
    }

    #[test]
    fn reasoning_effort_for_reasoning_models_only() {
        let ask = |model: &str, effort: &str| {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort});
            let req = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
            let mut c = call(false, true);
            c.upstream_model = model.into();
            encode_request(&req, &c).map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        };
        let r = "command-a-reasoning-08-2025";
        assert_eq!(
            ask(r, "none").unwrap()["thinking"],
            json!({"type": "disabled"})
        );
        for (effort, budget) in [
            ("minimal", 1024),
            ("low", 2048),
            ("medium", 8192),
            ("high", 16384),
            ("xhigh", 24576),
        ] {
            assert_eq!(
                ask(r, effort).unwrap()["thinking"],
                json!({"type": "enabled", "token_budget": budget}),
                "{effort}"
            );
        }
        // A model that does not reason: `none` is what it does; anything else is a 400.
        assert!(ask("command-a-03-2025", "none")
            .unwrap()
            .get("thinking")
            .is_none());
        let e = ask("command-a-03-2025", "low").unwrap_err();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("reasoning_effort"))
        );
        let e = ask(r, "extreme").unwrap_err();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("reasoning_effort"))
        );
        // Mapped from another client API (Codex's default `reasoning.effort`): answered
        // without reasoning instead.
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "medium"});
        let req = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
        let mut c = call(false, true);
        c.client_format = "openai-responses";
        let out: Value = serde_json::from_slice(&encode_request(&req, &c).unwrap()).unwrap();
        assert!(out.get("thinking").is_none(), "{out}");
    }
}
