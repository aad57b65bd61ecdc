//! OpenAI Chat Completions <-> Bedrock Converse: the canonical request encoded as a Converse
//! body, answers decoded into canonical answers, and ConverseStream's event-stream frames
//! decoded into canonical stream events.
//!
//! Choices (README, "AWS Bedrock"): `temperature` above 1 is clamped to 1 (the most random
//! every Bedrock family accepts); `n > 1`, `top_k` and http(s) image URLs are 400s naming the
//! field (Converse takes images inline or from S3 only); `response_format` JSON is one forced
//! tool whose input is the answer, as for Anthropic;
//! `reasoning_effort` is Claude's `thinking` (3.7 and later) in `additionalModelRequestFields`,
//! and is dropped for other models and for a tool loop's continuation (the thinking block,
//! which Claude wants back there, is not carried between turns); `tool_choice: "none"` sends no tools (Converse has no such
//! choice), which a conversation holding tool calls cannot do (a 400); `parallel_tool_calls:
//! false` keeps only the first call of an answer; `seed`, `user` and the fields of
//! [`translate::harmless`] are dropped. An Anthropic-style `cache_control` on a text part
//! becomes a `cachePoint` after it.

use std::borrow::Cow;
use std::collections::HashMap;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{map_error, status_for_type, NAME};
use crate::api::{unix_now, Answer, ChatRequest, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::error::GatewayError;
use crate::providers::anthropic::{Thinking, JSON_TOOL};
use crate::providers::translate::{
    self, unsupported, Args, Conversation, Effort, Fields, Msg, Part, Raw, ResponseFormat, Source,
    Str, Text, ToolChoice,
};
use crate::providers::{CallInfo, StreamStatus, StreamTranslator, Translated};

// ---------------------------------------------------------------------------------------------
// Request encoding

#[derive(Serialize)]
struct ConverseBody<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    #[serde(
        rename = "inferenceConfig",
        skip_serializing_if = "InferenceConfig::is_empty"
    )]
    inference_config: InferenceConfig<'a>,
    #[serde(rename = "toolConfig", skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    /// The model family's own fields (Claude's `thinking`).
    #[serde(
        rename = "additionalModelRequestFields",
        skip_serializing_if = "Option::is_none"
    )]
    additional_model_request_fields: Option<Value>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// One Converse content block (a union: one key naming its kind).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(Str<'a>),
    Image {
        format: &'static str,
        source: BytesSource<'a>,
    },
    Document {
        format: &'static str,
        name: String,
        source: BytesSource<'a>,
    },
    ToolUse {
        #[serde(rename = "toolUseId")]
        tool_use_id: &'a str,
        name: &'a str,
        input: &'a Args<'a>,
    },
    ToolResult {
        #[serde(rename = "toolUseId")]
        tool_use_id: &'a str,
        content: [ResultText<'a>; 1],
    },
    CachePoint {
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

#[derive(Serialize)]
struct BytesSource<'a> {
    /// Base64, as the JSON protocol carries blobs.
    bytes: &'a str,
}

#[derive(Serialize)]
struct ResultText<'a> {
    text: &'a Str<'a>,
}

#[derive(Serialize, Default)]
struct InferenceConfig<'a> {
    #[serde(rename = "maxTokens", skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(rename = "topP", skip_serializing_if = "Option::is_none")]
    top_p: Option<Raw<'a>>,
    #[serde(rename = "stopSequences", skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
struct ToolConfig<'a> {
    tools: Vec<ToolOut<'a>>,
    #[serde(rename = "toolChoice", skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "toolSpec")]
    tool_spec: ToolSpec<'a>,
}

#[derive(Serialize)]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    #[serde(rename = "inputSchema")]
    input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
struct InputSchema<'a> {
    json: SchemaJson<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SchemaJson<'a> {
    Raw(Raw<'a>),
    Empty(Value),
}

/// The Converse body for an OpenAI chat request.
pub fn encode_request(req: &ChatRequest, call: &CallInfo) -> Result<Bytes, GatewayError> {
    let b = Fields::of(req);
    translate::check_fields(&b, TRANSLATED, PENALTIES, NAME, "the Converse API")?;
    if translate::choices(&b)? > 1 {
        return Err(GatewayError::bad_request(
            "n",
            "Bedrock's Converse API returns one choice per request: 'n' must be 1",
        ));
    }
    let format = translate::response_format(&b)?;
    let effort = translate::effort(&b)?;
    let conv = Conversation::of(&b)?;
    let messages = encode_messages(&conv)?;
    if messages.is_empty() {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' needs at least one user or assistant message with content",
        ));
    }
    let mut system = Vec::with_capacity(conv.system.len());
    for t in &conv.system {
        push_text(&mut system, t);
    }

    let tools = translate::tools(&b)?;
    let choice = translate::tool_choice(&b, &tools)?;
    let has_tool_blocks = conv.turns.iter().any(|t| {
        matches!(t, Msg::Tool { .. })
            || matches!(t, Msg::Assistant { calls, .. } if !calls.is_empty())
    });
    if tools.iter().any(|t| t.name == JSON_TOOL) {
        return Err(GatewayError::bad_request(
            "tools",
            format!("the tool name {JSON_TOOL:?} is reserved by the gateway"),
        ));
    }
    let json_mode = format != ResponseFormat::Text;
    let tool_config = if json_mode {
        Some(json_tool(format, !tools.is_empty())?)
    } else if tools.is_empty() {
        None
    } else if choice == Some(ToolChoice::None) {
        if has_tool_blocks {
            return Err(unsupported(
                NAME,
                "tool_choice",
                "Converse has no \"none\" tool choice, and a conversation holding tool calls must declare its tools; use \"auto\"",
            ));
        }
        None
    } else {
        let tool_choice = match &choice {
            None | Some(ToolChoice::Auto) | Some(ToolChoice::None) => None,
            Some(ToolChoice::Required) => Some(serde_json::json!({"any": {}})),
            Some(ToolChoice::Named(n)) => Some(serde_json::json!({"tool": {"name": n}})),
        };
        Some(ToolConfig {
            tools: tools
                .iter()
                .map(|t| ToolOut {
                    tool_spec: ToolSpec {
                        name: &t.name,
                        description: t
                            .description
                            .as_deref()
                            .filter(|d| !d.is_empty())
                            .map(Cow::Borrowed),
                        input_schema: InputSchema {
                            json: match t.parameters {
                                Some(p) => SchemaJson::Raw(p),
                                None => SchemaJson::Empty(
                                    serde_json::json!({"type": "object", "properties": {}}),
                                ),
                            },
                        },
                    },
                })
                .collect(),
            tool_choice,
        })
    };

    let mut stop_sequences = translate::stop_sequences(&b);
    stop_sequences.retain(|s| !s.is_empty());
    let mut inference_config = InferenceConfig {
        max_tokens: translate::max_tokens(&b)?,
        temperature: translate::temperature(&b)?.map(|t| t.min(1.0)),
        top_p: b.raw("top_p").filter(|v| !translate::is_null(v)).map(Raw),
        stop_sequences,
    };
    let forced = json_mode
        || matches!(
            choice,
            Some(ToolChoice::Required) | Some(ToolChoice::Named(_))
        ) && tool_config.is_some();
    let continues_loop = matches!(conv.turns.last(), Some(Msg::Tool { .. }));
    let additional_model_request_fields = match effort {
        Some(e) if claude_thinks(&call.upstream_model) && !forced && !continues_loop => {
            thinking(e, &call.upstream_model, &mut inference_config)
        }
        _ => None,
    };
    let body = ConverseBody {
        messages,
        system,
        inference_config,
        tool_config,
        additional_model_request_fields,
    };
    translate::to_bytes(&body, b.messages().len() + 512)
}

/// `response_format` JSON, emulated as for Anthropic: one forced tool whose input is the
/// answer (Converse has no JSON mode). It cannot be combined with the client's tools.
fn json_tool(format: ResponseFormat, has_tools: bool) -> Result<ToolConfig<'static>, GatewayError> {
    if has_tools {
        return Err(GatewayError::bad_request(
            "response_format",
            "the Converse API has no JSON mode; the gateway emulates 'response_format' with a forced tool call, which cannot be combined with 'tools'",
        ));
    }
    let (schema, description) = match format {
        ResponseFormat::JsonSchema {
            schema,
            description,
            name,
        } => (schema, description.unwrap_or(name)),
        _ => (
            serde_json::json!({"type": "object"}),
            "a JSON object".to_string(),
        ),
    };
    if schema.get("type").is_some_and(|t| t != "object") {
        return Err(GatewayError::bad_request(
            "response_format.json_schema.schema",
            "the schema's root must be an object for Bedrock models",
        ));
    }
    Ok(ToolConfig {
        tools: vec![ToolOut {
            tool_spec: ToolSpec {
                name: JSON_TOOL,
                description: Some(Cow::Owned(format!(
                    "Give the final answer by calling this tool with {description}."
                ))),
                input_schema: InputSchema {
                    json: SchemaJson::Empty(schema),
                },
            },
        }],
        tool_choice: Some(serde_json::json!({"tool": {"name": JSON_TOOL}})),
    })
}

/// Whether a Bedrock model id is a Claude that can think (3.7 and later).
fn claude_thinks(model: &str) -> bool {
    const OLDER: &[&str] = &[
        "claude-3-5-",
        "claude-3-haiku",
        "claude-3-sonnet",
        "claude-3-opus",
        "claude-instant",
        "claude-v2",
    ];
    model.contains("anthropic.claude-") && !OLDER.iter().any(|o| model.contains(o))
}

/// Claude's `thinking` for `reasoning_effort`, as the Anthropic provider sets it (a budget, or
/// adaptive for Claude 4.6+), in `additionalModelRequestFields`; what thinking refuses
/// (a temperature other than 1, `top_p` below 0.95) is dropped, and `maxTokens` is raised past
/// the budget when it would not leave the answer room.
fn thinking(effort: Effort, model: &str, cfg: &mut InferenceConfig) -> Option<Value> {
    let fields = match crate::providers::anthropic::thinking_for(model, effort)? {
        Thinking::Budget(budget) => {
            cfg.max_tokens = Some(match cfg.max_tokens {
                Some(m) if m > budget => m,
                Some(m) => m + budget,
                None => budget + DEFAULT_ANSWER_TOKENS,
            });
            serde_json::json!({"thinking": {"type": "enabled", "budget_tokens": budget}})
        }
        Thinking::Adaptive(level) => serde_json::json!({
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": level}
        }),
    };
    if cfg.temperature.is_some_and(|t| t != 1.0) {
        cfg.temperature = None;
    }
    if cfg
        .top_p
        .is_some_and(|p| translate::value(p.0).as_f64().is_none_or(|p| p < 0.95))
    {
        cfg.top_p = None;
    }
    Some(fields)
}

/// The room left for the answer past a thinking budget when the client set no limit.
const DEFAULT_ANSWER_TOKENS: u64 = 4096;

/// Fields with an equivalent in the Converse API, and `user` and `seed`, which cannot change
/// what is asked.
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "user",
    "seed",
];

/// Penalties the upstream has no field for: accepted when zero (no effect), else a 400.
const PENALTIES: &[&str] = &["presence_penalty", "frequency_penalty"];

/// A text block, and a cache point after it when the client marked the part for caching.
fn push_text<'a>(out: &mut Vec<Block<'a>>, t: &'a Text<'a>) {
    out.push(Block::Text(t.text.clone()));
    if t.cache_control.is_some() {
        out.push(Block::CachePoint { kind: "default" });
    }
}

/// The Converse image format of a MIME type.
fn image_format(mime: &str) -> Option<&'static str> {
    match mime.to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn push_part<'a>(
    out: &mut Vec<Block<'a>>,
    p: &'a Part<'a>,
    docs: &mut usize,
) -> Result<(), GatewayError> {
    match p {
        Part::Text(t) => push_text(out, t),
        Part::Image(Source::Inline { mime, data }, cache) => {
            let format = image_format(mime).ok_or_else(|| {
                unsupported(
                    NAME,
                    "messages",
                    &format!("images of type {mime:?} cannot be sent (png, jpeg, gif, webp)"),
                )
            })?;
            out.push(Block::Image {
                format,
                source: BytesSource { bytes: data },
            });
            if cache.is_some() {
                out.push(Block::CachePoint { kind: "default" });
            }
        }
        Part::Image(Source::Url { .. }, _) => {
            return Err(unsupported(
                NAME,
                "messages",
                "Converse takes images inline only: send the image as a base64 data URL (data:image/png;base64,...)",
            ))
        }
        Part::File { mime, data } if mime == "application/pdf" => {
            *docs += 1;
            out.push(Block::Document {
                format: "pdf",
                name: format!("document{docs}"),
                source: BytesSource { bytes: data },
            });
        }
        Part::File { mime, .. } => {
            return Err(unsupported(
                NAME,
                "messages",
                &format!("file parts of type {mime:?} cannot be sent (PDF only)"),
            ))
        }
        Part::Audio { .. } => {
            return Err(unsupported(
                NAME,
                "messages",
                "input_audio parts cannot be sent through the Converse API",
            ))
        }
    }
    Ok(())
}

/// OpenAI messages -> Converse turns: tool results become `user` turns of `toolResult`
/// blocks, consecutive same-role turns merge, empty ones disappear.
fn encode_messages<'a>(conv: &'a Conversation<'a>) -> Result<Vec<Turn<'a>>, GatewayError> {
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(conv.turns.len());
    let mut docs = 0;
    for t in &conv.turns {
        let mut blocks = Vec::new();
        let role = match t {
            Msg::User(parts) => {
                for p in parts {
                    push_part(&mut blocks, p, &mut docs)?;
                }
                "user"
            }
            Msg::Assistant { parts, calls, .. } => {
                for p in parts {
                    push_part(&mut blocks, p, &mut docs)?;
                }
                for c in calls {
                    blocks.push(Block::ToolUse {
                        tool_use_id: &c.id,
                        name: &c.name,
                        input: &c.args,
                    });
                }
                "assistant"
            }
            Msg::Tool { id, content, .. } => {
                blocks.push(Block::ToolResult {
                    tool_use_id: id,
                    content: [ResultText { text: content }],
                });
                "user"
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    // Tool results open their user turn, as the calls they answer closed the turn before.
    for t in &mut turns {
        if t.role == "user" {
            t.content
                .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
        }
    }
    // A final assistant turn is a prefill, which must not end with whitespace.
    if let Some(last) = turns.last_mut().filter(|t| t.role == "assistant") {
        if let Some(Block::Text(text)) = last.content.last_mut() {
            let full = text.decode();
            let n = full.trim_end().len();
            if n < full.len() {
                *text = Str::Text(match full {
                    Cow::Borrowed(s) => Cow::Borrowed(&s[..n]),
                    Cow::Owned(mut s) => {
                        s.truncate(n);
                        Cow::Owned(s)
                    }
                });
            }
        }
        last.content
            .retain(|b| !matches!(b, Block::Text(text) if text.is_empty()));
        if last.content.is_empty() {
            turns.pop();
        }
    }
    Ok(turns)
}

// ---------------------------------------------------------------------------------------------
// Response decoding

#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl TokenUsage {
    /// OpenAI counts every prompt token, cached or not, in `prompt_tokens` (as for Anthropic).
    fn usage(&self) -> Usage {
        let mut u = Usage::new(
            self.input_tokens + self.cache_read_input_tokens + self.cache_write_input_tokens,
            self.output_tokens,
        );
        u.cached_tokens = self.cache_read_input_tokens;
        u
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseOut>,
    #[serde(default)]
    reasoning_content: Option<ReasoningOut>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseOut {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReasoningOut {
    #[serde(default)]
    reasoning_text: Option<ReasoningText>,
}

#[derive(Deserialize)]
struct ReasoningText {
    #[serde(default)]
    text: String,
}

/// A Converse `stopReason` -> an OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("tool_use") => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("guardrail_intervened") | Some("content_filtered") => "content_filter",
        // end_turn, stop_sequence, and anything new.
        _ => "stop",
    }
}

pub(super) fn decode_response(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
) -> Result<Translated, GatewayError> {
    let r: ConverseResponse =
        serde_json::from_slice(body).map_err(|e| translate::bad_upstream_body(NAME, e))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let mut json_answer = false;
    let blocks = r
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .unwrap_or_default();
    for b in blocks {
        if let Some(t) = b.text {
            text.push_str(&t);
        }
        if let Some(t) = b.tool_use {
            if t.name == JSON_TOOL {
                json_answer = true;
                text.push_str(&t.input.to_string());
            } else if call.parallel_tool_calls || calls.is_empty() {
                calls.push(ToolCall {
                    id: t.tool_use_id,
                    name: t.name,
                    arguments: if t.input.is_null() {
                        "{}".to_string()
                    } else {
                        t.input.to_string()
                    },
                });
            }
        }
        if let Some(t) = b.reasoning_content.and_then(|r| r.reasoning_text) {
            reasoning.push_str(&t.text);
        }
    }
    let usage = r.usage.map(|u| u.usage());
    let answer = Answer {
        content: if text.is_empty() && !calls.is_empty() {
            None
        } else {
            Some(text)
        },
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls: calls,
        finish_reason: match finish_reason(r.stop_reason.as_deref()) {
            "tool_calls" if json_answer => "stop",
            other => other,
        }
        .to_string(),
        stop_sequence: None,
        usage,
    };
    let body = w.answer_body(
        "",
        unix_now(),
        &call.client_model,
        std::slice::from_ref(&answer),
        usage.as_ref(),
    );
    Ok(Translated { body, usage })
}

// ---------------------------------------------------------------------------------------------
// Stream decoding

/// The payloads of ConverseStream's events (each frame's `:event-type` names which).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StreamPayload {
    #[serde(default)]
    content_block_index: Option<u64>,
    #[serde(default)]
    start: Option<BlockStart>,
    #[serde(default)]
    delta: Option<BlockDelta>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<TokenUsage>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
    #[serde(default)]
    reasoning_content: Option<ReasoningDelta>,
}

#[derive(Deserialize)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct ReasoningDelta {
    #[serde(default)]
    text: Option<String>,
}

/// What a Converse content block became on the client's side.
#[derive(Debug, Clone, Copy)]
enum BlockKind {
    /// A tool call at this index; `args` once an arguments fragment went out.
    Tool { index: u32, args: bool },
    /// A call dropped (`parallel_tool_calls: false` and one went out already).
    Hidden,
    /// The forced JSON tool: its input is the answer's content.
    Json,
}

/// ConverseStream's event-stream frames -> the client's stream events. Frames are decoded by
/// `aws-smithy-eventstream` as the bytes arrive (any split); the role goes out with the first
/// thing to show, so an exception before any output leaves nothing written and the request can
/// still fail over. `messageStop` carries the stop reason and `metadata` (last) the usage: the
/// finish waits for `metadata`, or for the end of the body after `messageStop`.
pub struct ConverseStream {
    w: Box<dyn EventWriter>,
    frames: MessageFrameDecoder,
    buf: BytesMut,
    include_usage: bool,
    parallel: bool,
    role_sent: bool,
    blocks: HashMap<u64, BlockKind>,
    next_tool: u32,
    /// The answer comes as the forced JSON tool's input.
    json_answer: bool,
    stop_reason: Option<String>,
    stopped: bool,
    usage: Option<TokenUsage>,
    done: bool,
}

impl ConverseStream {
    pub fn new(call: &CallInfo, w: Box<dyn EventWriter>) -> Self {
        ConverseStream {
            w,
            frames: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            include_usage: call.include_usage,
            parallel: call.parallel_tool_calls,
            role_sent: false,
            blocks: HashMap::new(),
            next_tool: 0,
            json_answer: false,
            stop_reason: None,
            stopped: false,
            usage: None,
            done: false,
        }
    }

    fn role(&mut self, out: &mut BytesMut) {
        if !self.role_sent {
            self.role_sent = true;
            self.w.role(out, 0);
        }
    }

    fn finish(&mut self, out: &mut BytesMut) -> StreamStatus {
        self.role(out);
        let reason = match finish_reason(self.stop_reason.as_deref()) {
            "tool_calls" if self.json_answer => "stop",
            other => other,
        };
        self.w.finish(out, 0, reason);
        if self.include_usage {
            let u = self.usage.unwrap_or_default().usage();
            self.w.usage(out, &u);
        }
        self.w.done(out);
        self.done = true;
        StreamStatus::Done
    }

    /// One decoded frame.
    fn message(&mut self, m: &Message, out: &mut BytesMut) -> StreamStatus {
        let header = |name: &str| {
            m.headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_string())
        };
        let payload: StreamPayload = match serde_json::from_slice(m.payload()) {
            Ok(p) => p,
            Err(_) if m.payload().is_empty() => StreamPayload::default(),
            Err(e) => {
                return StreamStatus::Failed(
                    translate::bad_upstream_body(NAME, format!("stream event: {e}"))
                        .with_label("upstream_stream_error"),
                )
            }
        };
        match header(":message-type").as_deref() {
            Some("event") | None => {}
            Some("exception") => {
                let kind = header(":exception-type").unwrap_or_default();
                // Stream exceptions spell the type in camel case (`throttlingException`).
                let name = upper_first(&kind);
                let status = status_for_type(&name).unwrap_or(500);
                let body = serde_json::json!({"message": payload.message.unwrap_or_else(|| format!("{NAME} stream failed: {name}"))});
                let mut e = map_error(status, Some(&name), body.to_string().as_bytes());
                e.label = "upstream_stream_error";
                return StreamStatus::Failed(e);
            }
            Some(_) => {
                // A protocol-level error frame: `:error-code`, `:error-message`.
                let code =
                    header(":error-code").unwrap_or_else(|| "InternalServerException".into());
                let msg =
                    header(":error-message").unwrap_or_else(|| format!("{NAME} stream failed"));
                let body = serde_json::json!({"message": msg});
                let mut e = map_error(500, Some(&code), body.to_string().as_bytes());
                e.label = "upstream_stream_error";
                return StreamStatus::Failed(e);
            }
        }
        let index = payload.content_block_index.unwrap_or(0);
        match header(":event-type").as_deref() {
            Some("contentBlockStart") => {
                if let Some(t) = payload.start.and_then(|s| s.tool_use) {
                    let kind = if t.name == JSON_TOOL {
                        self.json_answer = true;
                        BlockKind::Json
                    } else if self.parallel || self.next_tool == 0 {
                        self.role(out);
                        let i = self.next_tool;
                        self.next_tool += 1;
                        self.w.tool_start(out, 0, i, &t.tool_use_id, &t.name);
                        BlockKind::Tool {
                            index: i,
                            args: false,
                        }
                    } else {
                        BlockKind::Hidden
                    };
                    self.blocks.insert(index, kind);
                }
            }
            Some("contentBlockDelta") => {
                let Some(d) = payload.delta else {
                    return StreamStatus::Continue;
                };
                if let Some(t) = d.text.filter(|t| !t.is_empty()) {
                    self.role(out);
                    self.w.text(out, 0, &t);
                }
                if let Some(frag) = d.tool_use.map(|t| t.input).filter(|s| !s.is_empty()) {
                    if let Some(BlockKind::Json) = self.blocks.get(&index) {
                        self.role(out);
                        self.w.text(out, 0, &frag);
                    } else if let Some(BlockKind::Tool { index: i, .. }) =
                        self.blocks.get(&index).copied()
                    {
                        self.w.tool_args(out, 0, i, &frag);
                        self.blocks.insert(
                            index,
                            BlockKind::Tool {
                                index: i,
                                args: true,
                            },
                        );
                    }
                }
                if let Some(t) = d
                    .reasoning_content
                    .and_then(|r| r.text)
                    .filter(|t| !t.is_empty())
                {
                    self.role(out);
                    self.w.reasoning(out, 0, &t);
                }
            }
            Some("contentBlockStop") => {
                // A call without arguments still gets a parseable `{}`.
                if let Some(BlockKind::Tool {
                    index: i,
                    args: false,
                }) = self.blocks.get(&index).copied()
                {
                    self.w.tool_args(out, 0, i, "{}");
                    self.blocks.insert(
                        index,
                        BlockKind::Tool {
                            index: i,
                            args: true,
                        },
                    );
                }
            }
            Some("messageStop") => {
                self.stopped = true;
                self.stop_reason = payload.stop_reason;
            }
            Some("metadata") => {
                if let Some(u) = payload.usage {
                    self.usage = Some(u);
                }
                if self.stopped {
                    return self.finish(out);
                }
            }
            // messageStart, and anything new.
            _ => {}
        }
        StreamStatus::Continue
    }
}

/// `throttlingException` -> `ThrottlingException`.
fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

impl StreamTranslator for ConverseStream {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> StreamStatus {
        if self.done {
            return StreamStatus::Done;
        }
        self.buf.extend_from_slice(input);
        loop {
            match self.frames.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(m)) => match self.message(&m, out) {
                    StreamStatus::Continue => {}
                    other => {
                        self.done = true;
                        return other;
                    }
                },
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => {
                    self.done = true;
                    return StreamStatus::Failed(
                        translate::bad_upstream_body(NAME, format!("event-stream frame: {e}"))
                            .with_label("upstream_stream_error"),
                    );
                }
            }
        }
        // One frame without its end can only grow: past the cap the stream is ended.
        if self.buf.len() > crate::sse::MAX_EVENT_BYTES {
            self.done = true;
            self.buf = BytesMut::new();
            return StreamStatus::Failed(translate::event_too_large());
        }
        StreamStatus::Continue
    }

    fn finish(&mut self, out: &mut BytesMut) -> StreamStatus {
        if self.done {
            return StreamStatus::Done;
        }
        // The answer is whole after `messageStop`; only the usage is missing.
        if self.stopped && self.buf.is_empty() {
            return self.finish(out);
        }
        self.done = true;
        StreamStatus::Failed(translate::truncated(NAME, "messageStop"))
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(|u| u.usage())
    }
}

/// Builds the event-stream frame of one ConverseStream event (tests and the tests' mock).
#[cfg(test)]
pub(crate) fn frame(event_type: &str, payload: &Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue};
    let m = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".to_string().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".to_string().into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChatCompletionsWriter, ChunkWriter};
    use crate::providers::stream::{data_events, feed_split};
    use serde_json::json;

    fn call(include_usage: bool) -> CallInfo {
        CallInfo {
            client_model: "bedrock/anthropic.claude-sonnet-4-20250514-v1:0".into(),
            upstream_model: "anthropic.claude-sonnet-4-20250514-v1:0".into(),
            stream: true,
            include_usage,
            parallel_tool_calls: true,
            passthrough: false,
            client_format: "openai",
            client_headers: Vec::new(),
        }
    }

    fn encode(body: Value) -> Result<Value, GatewayError> {
        let req = ChatRequest::parse(body.to_string().as_bytes())?;
        let bytes = encode_request(&req, &call(false))?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn request_translation() {
        let v = encode(json!({
            "model": "bedrock/x",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "tooluse_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "tooluse_1", "content": "18C"},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 100, "temperature": 1.5, "top_p": 0.9, "stop": "END", "seed": 1, "user": "u",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                      {"type": "function", "function": {"name": "noargs"}}],
            "tool_choice": "required", "stream": true
        }))
        .unwrap();
        assert_eq!(
            v["system"],
            json!([{"text": "be brief"}, {"cachePoint": {"type": "default"}}])
        );
        assert_eq!(
            v["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 1.0, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert_eq!(v["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            v["toolConfig"]["tools"][0],
            json!({"toolSpec": {"name": "get_weather", "description": "d", "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}})
        );
        assert_eq!(
            v["toolConfig"]["tools"][1]["toolSpec"]["inputSchema"],
            json!({"json": {"type": "object", "properties": {}}})
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": [{"text": "what is this?"}, {"image": {"format": "png", "source": {"bytes": "AAAA"}}}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C"}]}}, {"text": "thanks"}]}
            ])
        );
        assert!(v.get("seed").is_none() && v.get("user").is_none());
        // Named choice; none without tool history drops the tools.
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}})).unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"})).unwrap();
        assert!(v.get("toolConfig").is_none() && v.get("inferenceConfig").is_none());
    }

    #[test]
    fn reasoning_effort_is_claudes_thinking() {
        let v = encode(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "medium", "max_tokens": 100, "temperature": 0.3, "top_p": 0.5}),
        )
        .unwrap();
        assert_eq!(
            v["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 8192}})
        );
        assert_eq!(v["inferenceConfig"], json!({"maxTokens": 8292}));
        // Not for a tool loop's continuation (its thinking block cannot be sent back), nor
        // for models that do not think: served without.
        let v = encode(json!({"model": "m", "reasoning_effort": "high", "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "ok"}]}))
        .unwrap();
        assert!(v.get("additionalModelRequestFields").is_none(), "{v}");
        assert!(!claude_thinks("anthropic.claude-3-5-sonnet-20240620-v1:0"));
        assert!(!claude_thinks("amazon.nova-pro-v1:0"));
        assert!(claude_thinks(
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
        ));
    }

    #[test]
    fn json_mode_is_a_forced_tool_whose_input_is_the_answer() {
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "a person"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}}))
        .unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            json!({"tool": {"name": JSON_TOOL}})
        );
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["name"]
                ["type"],
            "string"
        );
        let body = json!({"output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "t", "name": JSON_TOOL, "input": {"name": "Ada"}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 1, "outputTokens": 2}});
        let t = decode_response(
            body.to_string().as_bytes(),
            &call(false),
            &ChatCompletionsWriter,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "{\"name\":\"Ada\"}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        // Streamed: the tool's input fragments are the content.
        let mut input = Vec::new();
        for (t, p) in [
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t", "name": JSON_TOOL}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"name\":"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "\"Ada\"}"}}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 1, "outputTokens": 2}}),
            ),
        ] {
            input.extend(frame(t, &p));
        }
        let mut s = ConverseStream::new(&call(false), writer());
        let mut out = BytesMut::new();
        assert_eq!(feed_split(&mut s, &input, 10, &mut out), StreamStatus::Done);
        let events = data_events(&out);
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "{\"name\":\"Ada\"}");
        assert!(events
            .iter()
            .all(|e| e["choices"][0]["delta"]["tool_calls"].is_null()));
        assert!(events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "stop"));
    }

    #[test]
    fn untranslatable_fields_are_400s_naming_them() {
        for (extra, param) in [
            (json!({"n": 2}), "n"),
            (json!({"top_k": 5}), "top_k"),
            (json!({"logprobs": true}), "logprobs"),
            (
                json!({"response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]}),
                "response_format",
            ),
            (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]}),
                "messages",
            ),
        ] {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            let e = encode(b).unwrap_err();
            assert_eq!(e.status, 400, "{param}");
            assert_eq!(e.param.as_deref(), Some(param), "{param}: {}", e.message);
        }
    }

    #[test]
    fn response_translation() {
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather", "input": {"city": "Paris"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 35, "cacheReadInputTokens": 12, "cacheWriteInputTokens": 8},
            "metrics": {"latencyMs": 100}
        });
        let t = decode_response(
            body.to_string().as_bytes(),
            &call(false),
            &ChatCompletionsWriter,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Let me check.");
        assert_eq!(m["tool_calls"][0]["id"], "tooluse_a");
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 30);
        assert_eq!(v["usage"]["completion_tokens"], 5);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 12);
        for (reason, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(reason)), finish);
        }
    }

    /// A recorded-shape ConverseStream: text, then a tool call, then the stop and metadata.
    fn recorded_stream() -> Vec<u8> {
        let mut s = Vec::new();
        for (t, p) in [
            ("messageStart", json!({"role": "assistant", "p": "abcd"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": "ab"}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_x", "name": "get_weather"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 1})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 9, "cacheReadInputTokens": 2}, "metrics": {"latencyMs": 5}}),
            ),
        ] {
            s.extend(frame(t, &p));
        }
        s
    }

    fn writer() -> Box<dyn EventWriter> {
        Box::new(ChunkWriter {
            id: "chatcmpl-x".into(),
            created: 7,
            model: "bedrock/m".into(),
        })
    }

    #[test]
    fn stream_split_at_every_byte_offset() {
        let input = recorded_stream();
        let mut expected: Option<BytesMut> = None;
        for split in 0..=input.len() {
            let mut t = ConverseStream::new(&call(true), writer());
            let mut out = BytesMut::new();
            assert_eq!(
                feed_split(&mut t, &input, split, &mut out),
                StreamStatus::Done,
                "split {split}"
            );
            match &expected {
                None => expected = Some(out),
                Some(e) => assert_eq!(&out, e, "split {split}"),
            }
        }
        let events = data_events(&expected.unwrap());
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello");
        let args: String = events
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
        let start = events
            .iter()
            .find(|e| e["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
            .unwrap();
        assert_eq!(
            start["choices"][0]["delta"]["tool_calls"][0]["id"],
            "tooluse_x"
        );
        assert_eq!(start["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        let finish = events
            .iter()
            .find(|e| e["choices"][0]["finish_reason"].is_string())
            .unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let usage = events.iter().find(|e| e["usage"].is_object()).unwrap();
        assert_eq!(usage["usage"]["prompt_tokens"], 5);
        assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
        assert_eq!(events.last().unwrap(), &json!("[DONE]"));
    }

    #[test]
    fn exception_frames_and_cut_streams_fail() {
        use aws_smithy_types::event_stream::{Header, HeaderValue};
        let mut input = frame(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        );
        let m = Message::new(Bytes::from(
            r#"{"message":"Too many tokens, please wait."}"#,
        ))
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String("throttlingException".to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".to_string().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".to_string().into()),
        ));
        aws_smithy_eventstream::frame::write_message_to(&m, &mut input).unwrap();
        for split in 0..=input.len() {
            let mut t = ConverseStream::new(&call(false), writer());
            let mut out = BytesMut::new();
            match feed_split(&mut t, &input, split, &mut out) {
                StreamStatus::Failed(e) => {
                    assert_eq!(e.status, 429, "split {split}");
                    assert_eq!(e.code.as_deref(), Some("ThrottlingException"));
                    assert_eq!(e.message, "Too many tokens, please wait.");
                }
                other => panic!("split {split}: {other:?}"),
            }
        }
        // Cut before messageStop: truncated; after it (no metadata): done.
        let whole = recorded_stream();
        let stop_at = whole.len() - frame("metadata", &json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 9, "cacheReadInputTokens": 2}, "metrics": {"latencyMs": 5}})).len();
        let mut t = ConverseStream::new(&call(false), writer());
        let mut out = BytesMut::new();
        assert_eq!(
            feed_split(&mut t, &whole[..stop_at], 0, &mut out),
            StreamStatus::Done
        );
        let mut t = ConverseStream::new(&call(false), writer());
        match feed_split(&mut t, &whole[..stop_at - 3], 0, &mut BytesMut::new()) {
            StreamStatus::Failed(e) => assert_eq!(e.code.as_deref(), Some("stream_truncated")),
            other => panic!("{other:?}"),
        }
        // Garbage is not a frame.
        let mut t = ConverseStream::new(&call(false), writer());
        match feed_split(
            &mut t,
            b"data: {\"not\":\"eventstream\"}\n\n",
            3,
            &mut BytesMut::new(),
        ) {
            StreamStatus::Failed(e) => assert_eq!(e.status, 502),
            other => panic!("{other:?}"),
        }
    }
}
