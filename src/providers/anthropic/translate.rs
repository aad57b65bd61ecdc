//! OpenAI Chat Completions <-> Anthropic Messages: the canonical request encoded as a Messages
//! body, answers and stream events decoded into canonical answers and events.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::wire::*;
use super::{map_error, status_for_type, JSON_TOOL, NAME};
use crate::api::{unix_now, Answer, ChatRequest, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::error::GatewayError;
use crate::providers::stream::EventDecoder;
use crate::providers::translate::{
    self, unsupported, Conversation, Fields, Msg, Part, Raw, ResponseFormat, Source, Str, Text,
    ToolChoice,
};
use crate::providers::{CallInfo, StreamStatus, Translated};
use crate::sse::SseEvent;

// ---------------------------------------------------------------------------------------------
// Request encoding

/// The Anthropic Messages body for an OpenAI chat request, serialized.
pub fn encode_request(
    req: &ChatRequest,
    call: &CallInfo,
    default_max_tokens: u32,
) -> Result<Bytes, GatewayError> {
    let b = Fields::of(req);
    for (k, raw) in b.fields {
        check_field(k, raw)?;
    }
    if translate::choices(&b)? > 1 {
        return Err(GatewayError::bad_request(
            "n",
            "Anthropic returns one choice per request: 'n' must be 1 (send several requests instead)",
        ));
    }

    let conv = Conversation::of(&b)?;
    let messages = encode_messages(&conv)?;
    if messages.is_empty() {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' needs at least one user or assistant message with content",
        ));
    }
    let max_tokens = translate::max_tokens(&b)?.unwrap_or(u64::from(default_max_tokens));
    let system = conv.system.iter().map(text_block).collect();
    let mut stop_sequences = translate::stop_sequences(&b);
    // Anthropic rejects whitespace-only stop sequences.
    stop_sequences.retain(|s| !s.trim().is_empty());
    // Anthropic's range is 0-1; OpenAI's 0-2. Values above 1 get Anthropic's most random.
    let temperature = translate::temperature(&b)?.map(|t| t.min(1.0));

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
    let body = MessagesBody {
        model: &call.upstream_model,
        max_tokens,
        system,
        messages,
        stop_sequences,
        temperature,
        top_p: b.raw("top_p").filter(|v| !translate::is_null(v)).map(Raw),
        top_k: b.raw("top_k").filter(|v| !translate::is_null(v)).map(Raw),
        tools: tools_out,
        tool_choice,
        metadata: b.str("user").map(|user_id| Metadata { user_id }),
        stream: req.stream,
    };
    let size = b.messages().len() + 512;
    translate::to_bytes(&body, size)
}

/// A top-level request field is translated, harmless, or a 400 naming it.
fn check_field(k: &str, raw: &RawValue) -> Result<(), GatewayError> {
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
    ];
    if TRANSLATED.contains(&k) {
        return Ok(());
    }
    let v = translate::value(raw);
    match k {
        _ if v.is_null() => Ok(()),
        "presence_penalty" | "frequency_penalty" if v.as_f64() == Some(0.0) => Ok(()),
        "reasoning_effort" if v == "none" => Ok(()),
        k if translate::harmless(k, &v) => Ok(()),
        "reasoning_effort" => Err(unsupported(
            NAME,
            k,
            "extended thinking cannot be requested through the OpenAI API of this gateway; omit it",
        )),
        other => Err(unsupported(
            NAME,
            other,
            "the Messages API has no equivalent and dropping it could change the answer; remove it",
        )),
    }
}

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
/// blocks, consecutive same-role turns merge, empty ones disappear.
fn encode_messages<'a>(conv: &'a Conversation<'a>) -> Result<Vec<Turn<'a>>, GatewayError> {
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
            Msg::Assistant { parts, calls } => {
                let mut blocks = Vec::with_capacity(parts.len() + calls.len());
                for p in parts {
                    blocks.push(part_block(p)?);
                }
                for c in calls {
                    blocks.push(BlockOut::ToolUse {
                        id: &c.id,
                        name: &c.name,
                        input: &c.args,
                    });
                }
                ("assistant", blocks)
            }
            Msg::Tool { id, content, .. } => (
                "user",
                vec![BlockOut::ToolResult {
                    tool_use_id: id,
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

pub(super) fn decode_response(
    body: &[u8],
    call: &CallInfo,
    w: &dyn AnswerWriter,
) -> Result<Translated, GatewayError> {
    let m: MessageResponse =
        serde_json::from_slice(body).map_err(|e| translate::bad_upstream_body(NAME, e))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut json_answer = false;
    for b in m.content {
        match b {
            Block::Text { text: t } => text.push_str(&t),
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
                    id,
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
        reasoning: None,
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
    /// Thinking, server tools, anything new: not shown.
    Hidden,
}

/// Anthropic SSE -> OpenAI chunks. The role chunk is written with the first thing there is to
/// show, so an `error` event right after `message_start` leaves nothing written and the
/// request can still fail over. The finish chunk waits for `message_stop`: a stream that dies
/// after `message_delta` must end with an error, not with a finish_reason.
pub struct AnthropicStream {
    w: Box<dyn EventWriter>,
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
            include_usage: call.include_usage,
            role_sent: false,
            blocks: HashMap::new(),
            next_tool: 0,
            json_answer: false,
            stop_reason: None,
            counts: None,
        }
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
                        self.w.tool_start(out, 0, i, &id, &name);
                        BlockKind::Tool {
                            index: i,
                            args: false,
                        }
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
                    _ => {}
                }
            }
            Event::ContentBlockStop { index } => {
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
