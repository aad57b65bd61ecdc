//! OpenAI Chat Completions <-> Anthropic Messages: the canonical request encoded as a Messages
//! body, answers and stream events decoded into canonical answers and events.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::wire::*;
use super::{map_error, status_for_type, JSON_TOOL, NAME, PROVIDER};
use crate::api::{unix_now, Answer, ChatRequest, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::error::GatewayError;
use crate::providers::stream::EventDecoder;
use crate::providers::translate::{
    self, encode_id, unsupported, Conversation, Effort, Fields, Msg, Part, Raw, ResponseFormat,
    Source, Str, Text, ThinkingRef, Thought, ToolCall as CallIn, ToolChoice,
};
use crate::providers::{CallInfo, StreamStatus, Translated};
use crate::sse::SseEvent;

// ---------------------------------------------------------------------------------------------
// Request encoding

/// The Anthropic Messages body for an OpenAI chat request, serialized (for the built-in
/// provider's name; [`encode_request_for`] names the provider).
pub fn encode_request(
    req: &ChatRequest,
    call: &CallInfo,
    default_max_tokens: u32,
) -> Result<Bytes, GatewayError> {
    encode_request_for(req, call, default_max_tokens, PROVIDER)
}

/// The Anthropic Messages body for an OpenAI chat request to provider `provider` (whose
/// reasoning state, carried in tool call ids, is the only one restored).
pub fn encode_request_for(
    req: &ChatRequest,
    call: &CallInfo,
    default_max_tokens: u32,
    provider: &str,
) -> Result<Bytes, GatewayError> {
    let b = Fields::of(req);
    translate::check_fields(&b, TRANSLATED, PENALTIES, NAME, "the Messages API")?;
    if translate::choices(&b)? > 1 {
        return Err(GatewayError::bad_request(
            "n",
            "Anthropic returns one choice per request: 'n' must be 1 (send several requests instead)",
        ));
    }

    let conv = Conversation::of(&b)?;
    let origin = Origin {
        provider,
        model: &call.upstream_model,
    };
    let mut messages = encode_messages(&conv, origin)?;
    if messages.is_empty() {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' needs at least one user or assistant message with content",
        ));
    }
    let mut max_tokens = translate::max_tokens(&b)?.unwrap_or(u64::from(default_max_tokens));
    let system = conv.system.iter().map(text_block).collect();
    let mut stop_sequences = translate::stop_sequences(&b);
    // Anthropic rejects whitespace-only stop sequences.
    stop_sequences.retain(|s| !s.trim().is_empty());
    // Anthropic's range is 0-1; OpenAI's 0-2. Values above 1 get Anthropic's most random.
    let mut temperature = translate::temperature(&b)?.map(|t| t.min(1.0));
    let effort = translate::effort(&b)?;

    let tools = translate::tools(&b)?;
    let choice = translate::tool_choice(&b, &tools)?;
    let single = !req.parallel_tool_calls();
    let format = translate::response_format(&b)?;
    if tools.iter().any(|t| t.name == JSON_TOOL) {
        return Err(GatewayError::bad_request(
            "tools",
            format!("the tool name {JSON_TOOL:?} is reserved by the gateway"),
        ));
    }
    let mut tools_out = Vec::new();
    let mut tool_choice = None;
    match format {
        ResponseFormat::Text => {
            if !tools.is_empty() {
                tools_out = tools
                    .iter()
                    .map(|t| ToolOut {
                        name: &t.name,
                        description: t.description.as_deref().map(Cow::Borrowed),
                        input_schema: InputSchema::of(t.parameters),
                    })
                    .collect();
                let (kind, name) = match &choice {
                    None | Some(ToolChoice::Auto) => ("auto", None),
                    Some(ToolChoice::None) => ("none", None),
                    Some(ToolChoice::Required) => ("any", None),
                    Some(ToolChoice::Named(n)) => ("tool", Some(n.as_str())),
                };
                if choice.is_some() || single {
                    tool_choice = Some(ToolChoiceOut {
                        kind,
                        name,
                        disable_parallel_tool_use: single && kind != "none",
                    });
                }
            }
        }
        ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. } => {
            if !tools.is_empty() {
                return Err(GatewayError::bad_request(
                    "response_format",
                    "Anthropic has no JSON mode; the gateway emulates 'response_format' with a forced tool call, which cannot be combined with 'tools'",
                ));
            }
            let (schema, description) = match format {
                ResponseFormat::JsonSchema {
                    schema,
                    description,
                    name,
                } => (schema, description.unwrap_or(name)),
                _ => (json!({"type": "object"}), "a JSON object".to_string()),
            };
            if schema.get("type").is_some_and(|t| t != "object") {
                return Err(GatewayError::bad_request(
                    "response_format.json_schema.schema",
                    "the schema's root must be an object for Anthropic models",
                ));
            }
            tools_out.push(ToolOut {
                name: JSON_TOOL,
                description: Some(Cow::Owned(format!(
                    "Give the final answer by calling this tool with {description}."
                ))),
                input_schema: InputSchema::Tree(object_schema(schema)),
            });
            tool_choice = Some(ToolChoiceOut {
                kind: "tool",
                name: Some(JSON_TOOL),
                disable_parallel_tool_use: true,
            });
        }
    }
    let mut top_p = b.raw("top_p").filter(|v| !translate::is_null(v)).map(Raw);
    let mut top_k = b.raw("top_k").filter(|v| !translate::is_null(v)).map(Raw);
    // Thinking cannot be combined with a forced tool (Anthropic refuses it), and a tool loop
    // whose first assistant turn has no thinking block of this model's cannot continue with
    // thinking on: such requests are served without thinking (README, "Reasoning").
    let forced = tool_choice
        .as_ref()
        .is_some_and(|c| c.kind == "any" || c.kind == "tool");
    let mut thinking = None;
    let mut output_config = None;
    if let Some(setting) = effort.and_then(|e| thinking_for(&call.upstream_model, e)) {
        if !forced && loop_has_thinking(&messages) {
            match setting {
                Thinking::Budget(budget) => {
                    // The client's limit is for the answer when the budget would not leave
                    // it room: the budget is kept and the limit raised.
                    if max_tokens <= budget {
                        max_tokens += budget;
                    }
                    thinking = Some(ThinkingOut::Enabled {
                        budget_tokens: budget,
                    });
                }
                Thinking::Adaptive(effort) => {
                    thinking = Some(ThinkingOut::Adaptive);
                    output_config = Some(OutputConfig { effort });
                }
            }
            // What Anthropic refuses with thinking on is dropped; the thinking is kept.
            if temperature.is_some_and(|t| t != 1.0) {
                temperature = None;
            }
            top_k = None;
            if top_p.is_some_and(|p| translate::value(p.0).as_f64().is_none_or(|p| p < 0.95)) {
                top_p = None;
            }
        }
    }
    if thinking.is_none() {
        for t in &mut messages {
            t.content.retain(|b| {
                !matches!(
                    b,
                    BlockOut::Thinking { .. } | BlockOut::RedactedThinking { .. }
                )
            });
        }
    }
    let body = MessagesBody {
        model: &call.upstream_model,
        max_tokens,
        system,
        messages,
        stop_sequences,
        temperature,
        top_p,
        top_k,
        tools: tools_out,
        tool_choice,
        thinking,
        output_config,
        metadata: b.str("user").map(|user_id| Metadata { user_id }),
        stream: req.stream,
    };
    let size = b.messages().len() + 512;
    translate::to_bytes(&body, size)
}

/// Fields with an equivalent upstream, and `seed`, which is sampling determinism only:
/// it cannot change what is asked.
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
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "seed",
    "reasoning_effort",
];

/// Penalties the upstream has no field for: accepted when zero (no effect), else a 400.
const PENALTIES: &[&str] = &["presence_penalty", "frequency_penalty"];

/// The Messages API request body; fields in the order Anthropic documents them.
fn object_schema(mut schema: Value) -> Value {
    if let Value::Object(o) = &mut schema {
        o.entry("type").or_insert_with(|| json!("object"));
        schema
    } else {
        json!({"type": "object", "properties": {}})
    }
}

fn text_block<'a>(t: &'a Text<'a>) -> BlockOut<'a> {
    BlockOut::Text {
        text: t.text.clone(),
        cache_control: t.cache_control,
    }
}

fn part_block<'a>(p: &'a Part<'a>) -> Result<BlockOut<'a>, GatewayError> {
    Ok(match p {
        Part::Text(t) => text_block(t),
        Part::Image(src, cache_control) => BlockOut::Image {
            source: match src {
                Source::Inline { mime, data } => BlockSource::Base64 {
                    media_type: mime,
                    data,
                },
                Source::Url { url, .. } => BlockSource::Url { url },
            },
            cache_control: *cache_control,
        },
        Part::File { mime, data } if mime == "application/pdf" => BlockOut::Document {
            source: BlockSource::Base64 {
                media_type: mime,
                data,
            },
        },
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
                "input_audio parts cannot be sent to Anthropic models",
            ))
        }
    })
}

/// OpenAI messages -> Anthropic turns: tool results become `user` turns of `tool_result`
/// blocks, consecutive same-role turns merge, empty ones disappear. An assistant message's
/// thinking blocks come back from its tool call ids when `origin` made them (dropped later if
/// thinking is off).
fn encode_messages<'a>(
    conv: &'a Conversation<'a>,
    origin: Origin,
) -> Result<Vec<Turn<'a>>, GatewayError> {
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(conv.turns.len());
    for t in &conv.turns {
        let (role, blocks) = match t {
            Msg::User(parts) => (
                "user",
                parts
                    .iter()
                    .map(part_block)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Msg::Assistant {
                parts,
                calls,
                reasoning,
            } => {
                let thinking = restore_thinking(calls, reasoning.as_deref(), origin);
                let mut blocks = Vec::with_capacity(parts.len() + calls.len() + 1);
                // The first call's thinking opens the turn, as Anthropic wrote it.
                let mut thinking = thinking.into_iter();
                blocks.extend(thinking.next().unwrap_or_default());
                for p in parts {
                    blocks.push(part_block(p)?);
                }
                for (i, c) in calls.iter().enumerate() {
                    if i > 0 {
                        blocks.extend(thinking.next().unwrap_or_default());
                    }
                    blocks.push(BlockOut::ToolUse {
                        id: tool_id(&c.id),
                        name: &c.name,
                        input: &c.args,
                    });
                }
                ("assistant", blocks)
            }
            Msg::Tool { id, content, .. } => (
                "user",
                vec![BlockOut::ToolResult {
                    tool_use_id: tool_id(id),
                    content,
                }],
            ),
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
    // Anthropic wants a user turn's tool results before anything else in it.
    for t in &mut turns {
        if t.role == "user" {
            t.content
                .sort_by_key(|b| !matches!(b, BlockOut::ToolResult { .. }));
        }
    }
    // A final assistant turn is a prefill, which must not end with whitespace.
    if let Some(last) = turns.last_mut().filter(|t| t.role == "assistant") {
        if let Some(BlockOut::Text { text, .. }) = last.content.last_mut() {
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
            .retain(|b| !matches!(b, BlockOut::Text { text, .. } if text.is_empty()));
        if last.content.is_empty() {
            turns.pop();
        }
    }
    Ok(turns)
}

/// Who a request goes to: the provider's name and the upstream model.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin<'a> {
    pub provider: &'a str,
    pub model: &'a str,
}

/// The thinking setting for a model and effort (`None`: no thinking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// `{"type":"enabled","budget_tokens":N}`.
    Budget(u64),
    /// `{"type":"adaptive"}` with `output_config.effort`.
    Adaptive(&'static str),
}

/// A Claude model's family version (`claude-opus-4-6` -> (4, 6); `claude-3-7-sonnet` ->
/// (3, 7)), and whether it is a Mythos model; `None` for a name that is not Claude's.
fn claude_version(model: &str) -> Option<((u32, u32), bool)> {
    let lower = model.to_ascii_lowercase();
    let rest = &lower[lower.find("claude-")? + "claude-".len()..];
    let mut tokens = rest.split(['-', '@', '.', ':']);
    let number = |t: Option<&str>| {
        t.filter(|t| !t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok())
    };
    let first = tokens.next()?;
    if let Some(major) = number(Some(first)) {
        // The older naming: claude-3-7-sonnet-...
        return Some(((major, number(tokens.next()).unwrap_or(0)), false));
    }
    let mythos = first == "mythos";
    let major = number(tokens.next());
    let minor = major.and_then(|_| number(tokens.next())).unwrap_or(0);
    Some(((major.unwrap_or(0), minor), mythos))
}

/// `reasoning_effort` for an Anthropic model: Claude 4.6 and later (and Mythos) think
/// adaptively at an effort level (`xhigh` from 4.7, `max` standing for it before); older and
/// unknown models get a budget from [`BUDGETS`]. `none` is no thinking.
pub fn thinking_for(model: &str, effort: Effort) -> Option<Thinking> {
    if effort == Effort::None {
        return None;
    }
    let (version, mythos) = claude_version(model).unwrap_or(((0, 0), false));
    if mythos || version >= (4, 6) {
        let level = match effort {
            Effort::None | Effort::Minimal | Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::Xhigh if version >= (4, 7) => "xhigh",
            Effort::Xhigh => "max",
        };
        return Some(Thinking::Adaptive(level));
    }
    translate::budget(effort).map(Thinking::Budget)
}

/// Whether thinking can be on for these turns: Anthropic requires the assistant turn of an
/// unfinished tool loop (the request ends with tool results) to open with the thinking block it
/// wrote; a loop begun without one (thinking off then, or another provider's answer) must go
/// on without thinking.
fn loop_has_thinking(turns: &[Turn]) -> bool {
    let is_result = |b: &BlockOut| matches!(b, BlockOut::ToolResult { .. });
    let ends_with_results = turns
        .last()
        .is_some_and(|t| t.role == "user" && t.content.iter().any(is_result));
    if !ends_with_results {
        return true;
    }
    // The loop starts after the last user turn that is not only tool results.
    let start = turns
        .iter()
        .rposition(|t| t.role == "user" && !t.content.iter().all(is_result))
        .map_or(0, |i| i + 1);
    match turns[start..].iter().find(|t| t.role == "assistant") {
        Some(first) => matches!(
            first.content.first(),
            Some(BlockOut::Thinking { .. } | BlockOut::RedactedThinking { .. })
        ),
        None => true,
    }
}

/// The thinking blocks before each of an assistant message's calls, from the state in their
/// ids: empty when the state is another provider's or model's, or when a block's text is not
/// in the message's reasoning as the gateway showed it (a partial turn would be refused).
fn restore_thinking<'a>(
    calls: &'a [CallIn<'a>],
    reasoning: Option<&'a str>,
    origin: Origin,
) -> Vec<Vec<BlockOut<'a>>> {
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        let Some(t) = c.thought.as_ref().filter(|t| !t.blocks.is_empty()) else {
            out.push(Vec::new());
            continue;
        };
        if !t.is_for(origin.provider, origin.model) {
            return Vec::new();
        }
        let mut blocks = Vec::with_capacity(t.blocks.len());
        for r in &t.blocks {
            let block = match (&r.redacted, &r.signature, r.offset, r.len) {
                (Some(data), ..) => BlockOut::RedactedThinking { data },
                (None, Some(signature), Some(o), Some(n)) => {
                    match reasoning.and_then(|text| text.get(o..o.saturating_add(n))) {
                        Some(thinking) => BlockOut::Thinking {
                            thinking,
                            signature,
                        },
                        None => return Vec::new(),
                    }
                }
                _ => return Vec::new(),
            };
            blocks.push(block);
        }
        out.push(blocks);
    }
    out
}

/// A tool call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`): as sent when it fits, else its
/// other characters replaced and a hash of the original appended, so two ids never merge and
/// a call and its result still match.
fn tool_id(id: &str) -> Cow<'_, str> {
    let fits = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !id.is_empty() && id.bytes().all(fits) {
        return Cow::Borrowed(id);
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(id.as_bytes());
    let mut out: String = id
        .chars()
        .map(|c| {
            if c.is_ascii() && fits(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.push('_');
    out.push_str(&hex::encode(&hash[..6]));
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------------------------
// Response decoding

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl Counts {
    pub(super) fn update(&mut self, u: &AnthropicUsage) {
        if let Some(v) = u.input_tokens {
            self.input = v;
        }
        if let Some(v) = u.output_tokens {
            self.output = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.cache_creation = v;
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.cache_read = v;
        }
    }

    /// OpenAI counts every prompt token, cached or not, in `prompt_tokens`.
    pub(super) fn usage(&self) -> Usage {
        let mut u = Usage::new(
            self.input + self.cache_read + self.cache_creation,
            self.output,
        );
        u.cached_tokens = self.cache_read;
        u
    }
}

pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("tool_use") => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

/// The reasoning of an answer as it is decoded: its text as shown, and the thinking blocks
/// since the last tool call, which the next call's id carries back.
#[derive(Debug, Default)]
struct Reasoning {
    text: String,
    pending: Vec<ThinkingRef>,
    /// A thinking block is open: where its text started.
    open: Option<usize>,
    signature: Option<String>,
    /// Thinking blocks seen (a second one's text is separated from the first's).
    blocks: usize,
}

/// What separates two thinking blocks' texts in the reasoning shown.
const BLOCK_SEPARATOR: &str = "\n\n";

impl Reasoning {
    /// A thinking block starts: the separator it needs before its text, if any.
    fn start(&mut self) -> &'static str {
        let sep = if self.blocks > 0 { BLOCK_SEPARATOR } else { "" };
        self.text.push_str(sep);
        self.blocks += 1;
        self.open = Some(self.text.len());
        self.signature = None;
        sep
    }

    fn push(&mut self, t: &str) {
        self.text.push_str(t);
    }

    /// The open thinking block ends.
    fn stop(&mut self) {
        if let Some(o) = self.open.take() {
            self.pending.push(ThinkingRef {
                offset: Some(o),
                len: Some(self.text.len() - o),
                signature: self.signature.take(),
                redacted: None,
            });
        }
    }

    fn redacted(&mut self, data: String) {
        self.pending.push(ThinkingRef {
            redacted: Some(data),
            ..ThinkingRef::default()
        });
    }

    /// The id a tool call goes to the client with: the upstream's, with the thinking blocks
    /// before it when there are any.
    fn call_id(&mut self, id: &str, origin: Origin) -> String {
        if self.pending.is_empty() {
            return id.to_string();
        }
        let t = Thought {
            provider: origin.provider.to_string(),
            model: origin.model.to_string(),
            signature: None,
            blocks: std::mem::take(&mut self.pending),
        };
        encode_id(id, &t)
    }
}

#[cfg(test)]
pub(super) fn decode_response(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
) -> Result<Translated, GatewayError> {
    decode_response_for(body, call, w, PROVIDER)
}

pub(super) fn decode_response_for(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
    provider: &str,
) -> Result<Translated, GatewayError> {
    let m: MessageResponse =
        serde_json::from_slice(body).map_err(|e| translate::bad_upstream_body(NAME, e))?;
    let origin = Origin {
        provider,
        model: &call.upstream_model,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut json_answer = false;
    let mut reasoning = Reasoning::default();
    for b in m.content {
        match b {
            Block::Text { text: t } => text.push_str(&t),
            Block::Thinking {
                thinking,
                signature,
            } => {
                reasoning.start();
                reasoning.push(&thinking);
                reasoning.signature = Some(signature);
                reasoning.stop();
            }
            Block::RedactedThinking { data } => reasoning.redacted(data),
            Block::ToolUse { name, input, .. } if name == JSON_TOOL => {
                json_answer = true;
                text.push_str(&input.to_string());
            }
            Block::ToolUse { id, name, input } => {
                let arguments = if input.is_null() {
                    "{}".to_string()
                } else {
                    input.to_string()
                };
                calls.push(ToolCall {
                    id: reasoning.call_id(&id, origin),
                    name,
                    arguments,
                });
            }
            Block::Other => {}
        }
    }
    let mut finish = finish_reason(m.stop_reason.as_deref());
    if json_answer && finish == "tool_calls" {
        finish = "stop";
    }
    let mut counts = Counts::default();
    counts.update(&m.usage);
    let usage = Some(counts.usage());
    let answer = Answer {
        reasoning: (!reasoning.text.is_empty()).then_some(reasoning.text),
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
        &m.id,
        unix_now(),
        &call.client_model,
        std::slice::from_ref(&answer),
        usage.as_ref(),
    );
    Ok(Translated { body, usage })
}

// ---------------------------------------------------------------------------------------------
// Stream decoding

/// What an Anthropic content block becomes on the OpenAI side.
#[derive(Debug, Clone, Copy)]
enum BlockKind {
    Text,
    /// A tool call at this OpenAI `index`; `args` once an arguments fragment went out.
    Tool {
        index: u32,
        args: bool,
    },
    /// The forced JSON tool: its input is the answer's content.
    Json,
    /// A thinking block: its text is reasoning.
    Thinking,
    /// Thinking, server tools, anything new: not shown.
    Hidden,
}

/// Anthropic SSE -> OpenAI chunks. The role chunk is written with the first thing there is to
/// show, so an `error` event right after `message_start` leaves nothing written and the
/// request can still fail over. The finish chunk waits for `message_stop`: a stream that dies
/// after `message_delta` must end with an error, not with a finish_reason.
pub struct AnthropicStream {
    w: Box<dyn EventWriter>,
    provider: String,
    model: String,
    reasoning: Reasoning,
    include_usage: bool,
    role_sent: bool,
    blocks: HashMap<u64, BlockKind>,
    next_tool: u32,
    json_answer: bool,
    stop_reason: Option<String>,
    counts: Option<Counts>,
}

impl AnthropicStream {
    pub fn new(call: &CallInfo, w: Box<dyn EventWriter>) -> Self {
        AnthropicStream {
            w,
            provider: PROVIDER.to_string(),
            model: call.upstream_model.clone(),
            reasoning: Reasoning::default(),
            include_usage: call.include_usage,
            role_sent: false,
            blocks: HashMap::new(),
            next_tool: 0,
            json_answer: false,
            stop_reason: None,
            counts: None,
        }
    }

    /// The provider whose reasoning state tool call ids carry (the built-in's by default).
    pub fn provider(mut self, name: &str) -> Self {
        self.provider = name.to_string();
        self
    }

    fn role(&mut self, out: &mut BytesMut) {
        if !self.role_sent {
            self.role_sent = true;
            self.w.role(out, 0);
        }
    }

    fn decode(&mut self, data: &str, out: &mut BytesMut) -> StreamStatus {
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
            Event::MessageStart { message } => {
                if !message.id.is_empty() && !self.role_sent {
                    self.w.id(&message.id);
                }
                self.counts
                    .get_or_insert_with(Counts::default)
                    .update(&message.usage);
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => {
                let kind = match content_block {
                    StartBlock::Text { text } => {
                        if !text.is_empty() {
                            self.role(out);
                            self.w.text(out, 0, &text);
                        }
                        BlockKind::Text
                    }
                    StartBlock::ToolUse { name, .. } if name == JSON_TOOL => {
                        self.json_answer = true;
                        BlockKind::Json
                    }
                    StartBlock::ToolUse { id, name } => {
                        self.role(out);
                        let i = self.next_tool;
                        self.next_tool += 1;
                        let origin = Origin {
                            provider: &self.provider,
                            model: &self.model,
                        };
                        let id = self.reasoning.call_id(&id, origin);
                        self.w.tool_start(out, 0, i, &id, &name);
                        BlockKind::Tool {
                            index: i,
                            args: false,
                        }
                    }
                    StartBlock::Thinking {
                        thinking,
                        signature,
                    } => {
                        let sep = self.reasoning.start();
                        if !sep.is_empty() || !thinking.is_empty() {
                            self.role(out);
                            self.w.reasoning(out, 0, &format!("{sep}{thinking}"));
                        }
                        self.reasoning.push(&thinking);
                        if !signature.is_empty() {
                            self.reasoning.signature = Some(signature);
                        }
                        BlockKind::Thinking
                    }
                    StartBlock::RedactedThinking { data } => {
                        self.reasoning.redacted(data);
                        BlockKind::Hidden
                    }
                    StartBlock::Other => BlockKind::Hidden,
                };
                self.blocks.insert(index, kind);
            }
            Event::ContentBlockDelta { index, delta } => {
                let kind = self.blocks.get(&index).copied();
                match (delta, kind) {
                    (Delta::Text { text }, None | Some(BlockKind::Text)) if !text.is_empty() => {
                        self.role(out);
                        self.w.text(out, 0, &text);
                    }
                    (Delta::InputJson { partial_json }, Some(BlockKind::Tool { index: i, .. }))
                        if !partial_json.is_empty() =>
                    {
                        self.role(out);
                        self.w.tool_args(out, 0, i, &partial_json);
                        self.blocks.insert(
                            index,
                            BlockKind::Tool {
                                index: i,
                                args: true,
                            },
                        );
                    }
                    (Delta::InputJson { partial_json }, Some(BlockKind::Json))
                        if !partial_json.is_empty() =>
                    {
                        self.role(out);
                        self.w.text(out, 0, &partial_json);
                    }
                    (Delta::Thinking { thinking }, Some(BlockKind::Thinking))
                        if !thinking.is_empty() =>
                    {
                        self.role(out);
                        self.w.reasoning(out, 0, &thinking);
                        self.reasoning.push(&thinking);
                    }
                    (Delta::Signature { signature }, Some(BlockKind::Thinking)) => {
                        let s = self.reasoning.signature.get_or_insert_with(String::new);
                        s.push_str(&signature);
                    }
                    _ => {}
                }
            }
            Event::ContentBlockStop { index } => {
                if let Some(BlockKind::Thinking) = self.blocks.get(&index) {
                    self.reasoning.stop();
                }
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
            Event::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(u) = usage {
                    self.counts.get_or_insert_with(Counts::default).update(&u);
                }
            }
            Event::MessageStop => {
                self.role(out);
                let mut reason = finish_reason(self.stop_reason.as_deref());
                if self.json_answer && reason == "tool_calls" {
                    reason = "stop";
                }
                self.w.finish(out, 0, reason);
                if self.include_usage {
                    let u = self.counts.unwrap_or_default().usage();
                    self.w.usage(out, &u);
                }
                self.w.done(out);
                return StreamStatus::Done;
            }
            Event::Error { error } => {
                let body = json!({ "error": error }).to_string();
                let status = error
                    .get("type")
                    .and_then(Value::as_str)
                    .map(status_for_type)
                    .unwrap_or(500);
                let mut e = map_error(status, body.as_bytes());
                e.label = "upstream_stream_error";
                return StreamStatus::Failed(e);
            }
            Event::Other => {}
        }
        StreamStatus::Continue
    }
}

impl EventDecoder for AnthropicStream {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        self.decode(&ev.data, out)
    }

    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus {
        crate::providers::stream::end_at_terminal_event(
            tail,
            out,
            |data, out| self.decode(data, out),
            NAME,
            "message_stop",
        )
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }
}
