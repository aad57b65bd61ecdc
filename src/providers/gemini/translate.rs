//! OpenAI Chat Completions and Embeddings <-> Gemini: the canonical request encoded as a
//! `generateContent` body, answers and stream events decoded into canonical answers and events.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::wire::*;
use super::{map_error, MAX_CANDIDATES, MAX_SCHEMA_DEPTH, NAME, PROVIDER};
use crate::api::{random_token, unix_now, Answer, ChatRequest, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::error::GatewayError;
use crate::providers::stream::EventDecoder;
use crate::providers::translate::{
    self, encode_id, unsupported, Conversation, Effort, Fields, Msg, Part, Raw, ResponseFormat,
    Source, Thought, ToolChoice,
};
use crate::providers::{CallInfo, StreamStatus, Translated};
use crate::sse::SseEvent;

// ---------------------------------------------------------------------------------------------
// Request encoding

/// The `generateContent` body for an OpenAI chat request, serialized, for no model in
/// particular (reasoning settings as for an unknown model family).
pub fn encode_request(req: &ChatRequest) -> Result<Bytes, GatewayError> {
    encode_request_for(req, PROVIDER, "")
}

/// The `generateContent` body for an OpenAI chat request to `model` of provider `provider`:
/// reasoning settings by the model's family, thought signatures restored when they are this
/// provider's and model's.
pub fn encode_request_for(
    req: &ChatRequest,
    provider: &str,
    model: &str,
) -> Result<Bytes, GatewayError> {
    let b = Fields::of(req);
    /// Fields with an equivalent upstream, and `user`, which identifies the end user for abuse
    /// reports only.
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
    translate::check_fields(&b, TRANSLATED, &[], NAME, "the Gemini API")?;

    let conv = Conversation::of(&b)?;
    let contents = encode_contents(&conv, provider, model);
    if contents.is_empty() {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' needs at least one user or assistant message with content",
        ));
    }
    let system_instruction = (!conv.system.is_empty()).then(|| SystemInstruction {
        parts: conv
            .system
            .iter()
            .map(|t| GeminiPartOut::Text(&t.text))
            .collect(),
    });

    let tools = translate::tools(&b)?;
    let choice = translate::tool_choice(&b, &tools)?;
    let mut tools_out = None;
    let mut tool_config = None;
    if !tools.is_empty() {
        let function_declarations = tools
            .iter()
            .map(|t| {
                // Gemini rejects an object schema without properties: a function without
                // parameters simply has none.
                let parameters = t
                    .parameters
                    .map(|p| schema(&translate::value(p.0)))
                    .filter(|p| {
                        let empty_object = p.get("type").is_some_and(|t| t == "object")
                            && p.get("properties")
                                .and_then(Value::as_object)
                                .is_none_or(Map::is_empty);
                        !empty_object
                    });
                FunctionDeclaration {
                    name: &t.name,
                    description: t.description.as_deref(),
                    parameters,
                }
            })
            .collect();
        tools_out = Some([ToolsOut {
            function_declarations,
        }]);
        tool_config = choice.as_ref().map(|c| {
            let (mode, named) = match c {
                ToolChoice::Auto => ("AUTO", None),
                ToolChoice::None => ("NONE", None),
                ToolChoice::Required => ("ANY", None),
                ToolChoice::Named(n) => ("ANY", Some([n.as_str()])),
            };
            ToolConfig {
                function_calling_config: FunctionCallingConfig {
                    mode,
                    allowed_function_names: named,
                },
            }
        });
    }

    let raw = |key: &str| b.raw(key).filter(|v| !translate::is_null(v)).map(Raw);
    let mut gen = GenerationConfig {
        temperature: translate::temperature(&b)?,
        top_p: raw("top_p"),
        top_k: raw("top_k"),
        seed: raw("seed"),
        presence_penalty: raw("presence_penalty"),
        frequency_penalty: raw("frequency_penalty"),
        ..GenerationConfig::default()
    };
    let n = translate::choices(&b)?;
    if n > 1 {
        gen.candidate_count = Some(n);
    }
    gen.max_output_tokens = translate::max_tokens(&b)?;
    gen.stop_sequences = translate::stop_sequences(&b);
    match translate::response_format(&b)? {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => gen.response_mime_type = Some("application/json"),
        ResponseFormat::JsonSchema { schema: s, .. } => {
            gen.response_mime_type = Some("application/json");
            gen.response_schema = Some(schema(&s));
        }
    }
    if let Some(effort) = translate::effort(&b)? {
        gen.thinking_config = Some(thinking_config(model, effort));
    }
    let body = GenerateBody {
        contents,
        system_instruction,
        tools: tools_out,
        tool_config,
        generation_config: gen,
    };
    let size = b.messages().len() + 512;
    translate::to_bytes(&body, size)
}

/// A Gemini model's family, as far as reasoning settings go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Gemini 3: `thinkingLevel`; Pro has only `low` and `high`.
    Three { pro: bool },
    /// Gemini 2.5: `thinkingBudget`; Pro cannot turn thinking off (128 at least).
    TwoFive { pro: bool },
    /// Anything else: `thinkingBudget` as for 2.5 Flash (Gemini 3 accepts budgets too).
    Other,
}

pub fn family(model: &str) -> Family {
    let lower = model.to_ascii_lowercase();
    let Some(at) = lower.find("gemini-") else {
        return Family::Other;
    };
    let rest = &lower[at + "gemini-".len()..];
    let pro = rest.contains("pro");
    if rest.starts_with("3-") || rest.starts_with("3.") {
        Family::Three { pro }
    } else if rest.starts_with("2.5-") {
        Family::TwoFive { pro }
    } else {
        Family::Other
    }
}

/// `reasoning_effort` as Gemini's `thinkingConfig` (README, "Reasoning"). Thought summaries
/// are asked for whenever the model is to reason, so they can be shown.
pub fn thinking_config(model: &str, effort: Effort) -> ThinkingConfig {
    use Effort as E;
    let include_thoughts = effort != E::None;
    let (thinking_budget, thinking_level) = match family(model) {
        Family::Three { pro: true } => (
            None,
            Some(match effort {
                E::None | E::Minimal | E::Low => "low",
                E::Medium | E::High | E::Xhigh => "high",
            }),
        ),
        // Gemini 3 cannot stop thinking: its lowest level stands for `none`.
        Family::Three { pro: false } => (
            None,
            Some(match effort {
                E::None | E::Minimal => "minimal",
                E::Low => "low",
                E::Medium => "medium",
                E::High | E::Xhigh => "high",
            }),
        ),
        Family::TwoFive { pro } => (
            Some(match effort {
                E::None if pro => 128,
                E::None => 0,
                E::Minimal | E::Low => 1024,
                E::Medium => 8192,
                E::High => 24576,
                E::Xhigh if pro => 32768,
                E::Xhigh => 24576,
            }),
            None,
        ),
        // The budgets Google's own OpenAI-compatible endpoint uses.
        Family::Other => (
            Some(match effort {
                E::None => 0,
                E::Minimal | E::Low => 1024,
                E::Medium => 8192,
                E::High | E::Xhigh => 24576,
            }),
            None,
        ),
    };
    ThinkingConfig {
        thinking_budget,
        thinking_level,
        include_thoughts,
    }
}

/// Gemini 3's documented signature for a function call it did not sign (another provider's,
/// or one whose signature was lost): validation is skipped for that call.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

fn part<'a>(p: &'a Part<'a>) -> GeminiPartOut<'a> {
    match p {
        Part::Text(t) => GeminiPartOut::Text(&t.text),
        Part::Image(Source::Inline { mime, data }, _) | Part::File { mime, data } => {
            GeminiPartOut::InlineData {
                mime_type: Cow::Borrowed(mime),
                data,
            }
        }
        Part::Image(Source::Url { url, mime }, _) => GeminiPartOut::FileData {
            mime_type: mime,
            file_uri: url,
        },
        Part::Audio { data, format } => GeminiPartOut::InlineData {
            mime_type: Cow::Owned(format!("audio/{format}")),
            data,
        },
    }
}

/// OpenAI messages -> Gemini `contents`: roles `user`/`model`, tool results as
/// `functionResponse` parts in a user turn, consecutive same-role turns merged (Gemini wants
/// them alternating), empty ones dropped.
///
/// A call's `thoughtSignature` comes back from its id when this provider and model made it;
/// for Gemini 3, the first call of a step without one (another provider's, after a failover)
/// gets [`SKIP_SIGNATURE`], as Google documents.
fn encode_contents<'a>(
    conv: &'a Conversation<'a>,
    provider: &str,
    model: &str,
) -> Vec<ContentOut<'a>> {
    let three = matches!(family(model), Family::Three { .. });
    let mut turns: Vec<ContentOut<'a>> = Vec::with_capacity(conv.turns.len());
    for t in &conv.turns {
        let (role, parts) = match t {
            Msg::User(parts) => ("user", parts.iter().map(part).collect::<Vec<_>>()),
            Msg::Assistant { parts, calls, .. } => {
                let mut out = Vec::with_capacity(parts.len() + calls.len());
                out.extend(parts.iter().map(part));
                for (i, c) in calls.iter().enumerate() {
                    let signature = c
                        .thought
                        .as_ref()
                        .filter(|t| t.is_for(provider, model))
                        .and_then(|t| t.signature.as_deref())
                        .or((three && i == 0).then_some(SKIP_SIGNATURE));
                    out.push(match signature {
                        Some(thought_signature) => GeminiPartOut::SignedCall(SignedCall {
                            function_call: CallOut {
                                name: &c.name,
                                args: &c.args,
                            },
                            thought_signature,
                        }),
                        None => GeminiPartOut::FunctionCall {
                            name: &c.name,
                            args: &c.args,
                        },
                    });
                }
                ("model", out)
            }
            Msg::Tool { name, content, .. } => {
                let object = |v: &RawValue| v.get().starts_with('{');
                let response = match content.decode() {
                    Cow::Borrowed(s) => match serde_json::from_str::<&RawValue>(s) {
                        Ok(v) if object(v) => FunctionResult::Object(v),
                        _ => FunctionResult::Output { output: content },
                    },
                    Cow::Owned(s) => match RawValue::from_string(s) {
                        Ok(v) if object(&v) => FunctionResult::Decoded(v),
                        _ => FunctionResult::Output { output: content },
                    },
                };
                (
                    "user",
                    vec![GeminiPartOut::FunctionResponse { name, response }],
                )
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => turns.push(ContentOut { role, parts }),
        }
    }
    turns
}

/// A JSON Schema reduced to the OpenAPI subset Gemini accepts: `$ref`s inlined, `["T","null"]`
/// as `nullable`, unsupported keywords (`additionalProperties`, `strict`, `$schema`, ...)
/// removed.
pub fn schema(v: &Value) -> Value {
    let empty = Map::new();
    let defs = v
        .get("$defs")
        .or_else(|| v.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    reduce(v, defs, 0)
}

fn reduce(v: &Value, defs: &Map<String, Value>, depth: u32) -> Value {
    let Some(o) = v.as_object() else {
        return json!({});
    };
    if depth > MAX_SCHEMA_DEPTH {
        return json!({"type": "object"});
    }
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or("");
        let mut resolved = defs
            .get(name)
            .map(|d| reduce(d, defs, depth + 1))
            .unwrap_or_else(|| json!({"type": "object"}));
        if let Some(d) = o.get("description") {
            resolved["description"] = d.clone();
        }
        return resolved;
    }
    let mut out = Map::new();
    for (k, val) in o {
        match k.as_str() {
            "type" => match val {
                Value::String(_) => {
                    out.insert("type".into(), val.clone());
                }
                Value::Array(types) => {
                    let real: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    if real.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    if let Some(t) = real.first() {
                        out.insert("type".into(), (*t).clone());
                    }
                }
                _ => {}
            },
            "properties" => {
                if let Some(props) = val.as_object() {
                    let p: Map<String, Value> = props
                        .iter()
                        .map(|(name, s)| (name.clone(), reduce(s, defs, depth + 1)))
                        .collect();
                    out.insert("properties".into(), Value::Object(p));
                }
            }
            "items" => {
                out.insert("items".into(), reduce(val, defs, depth + 1));
            }
            "anyOf" | "oneOf" => {
                if let Some(list) = val.as_array() {
                    let mut variants: Vec<Value> = Vec::new();
                    for s in list {
                        if s.get("type").is_some_and(|t| t == "null") {
                            out.insert("nullable".into(), json!(true));
                        } else {
                            variants.push(reduce(s, defs, depth + 1));
                        }
                    }
                    if variants.len() == 1 {
                        if let Some(Value::Object(single)) = variants.pop() {
                            for (sk, sv) in single {
                                out.entry(sk).or_insert(sv);
                            }
                        }
                    } else if !variants.is_empty() {
                        out.insert("anyOf".into(), Value::Array(variants));
                    }
                }
            }
            "enum" => {
                if let Some(list) = val.as_array().filter(|l| l.iter().all(Value::is_string)) {
                    out.insert("enum".into(), Value::Array(list.clone()));
                }
            }
            "const" if val.is_string() => {
                out.insert("enum".into(), json!([val]));
            }
            "format" => {
                if matches!(
                    val.as_str(),
                    Some("enum" | "date-time" | "int32" | "int64" | "float" | "double")
                ) {
                    out.insert("format".into(), val.clone());
                }
            }
            "description" | "title" | "nullable" | "required" | "minItems" | "maxItems"
            | "minimum" | "maximum" | "minLength" | "maxLength" | "pattern" | "minProperties"
            | "maxProperties" | "propertyOrdering" => {
                out.insert(k.clone(), val.clone());
            }
            _ => {}
        }
    }
    if out.contains_key("enum") && !out.contains_key("type") {
        out.insert("type".into(), json!("string"));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Response decoding

impl GeminiUsage {
    /// Thinking tokens count as completion tokens, as OpenAI counts reasoning tokens.
    fn usage(&self) -> Usage {
        let prompt = self.prompt_token_count + self.tool_use_prompt_token_count;
        let completion = self.candidates_token_count + self.thoughts_token_count;
        let mut u = Usage::new(prompt, completion);
        if self.total_token_count > 0 {
            u.total_tokens = self.total_token_count;
        }
        u.cached_tokens = self.cached_content_token_count;
        u.reasoning_tokens = self.thoughts_token_count;
        u
    }
}

/// Gemini has no tool-use finish reason: calls arrive with `STOP`.
pub fn finish_reason(reason: Option<&str>, has_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

fn call_id() -> String {
    format!("call_{}", random_token(24))
}

/// A new call's id, with its `thoughtSignature` when it has one (tagged with the provider and
/// model that must get it back).
fn signed_call_id(signature: Option<String>, provider: &str, model: &str) -> String {
    match signature.filter(|s| !s.is_empty()) {
        None => call_id(),
        Some(s) => {
            let t = Thought {
                provider: provider.to_string(),
                model: model.to_string(),
                signature: Some(s),
                blocks: Vec::new(),
            };
            encode_id(&call_id(), &t)
        }
    }
}

fn in_band_error(err: &Value) -> GatewayError {
    let status = err
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(500);
    let body = json!({ "error": err }).to_string();
    map_error(status, body.as_bytes())
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
    let r: GenerateResponse =
        serde_json::from_slice(body).map_err(|e| translate::bad_upstream_body(NAME, e))?;
    if let Some(err) = &r.error {
        return Err(in_band_error(err));
    }
    let mut candidates = r.candidates;
    candidates.sort_by_key(|c| c.index.unwrap_or(0));
    let mut answers: Vec<Answer> = candidates
        .into_iter()
        .map(|c| {
            let mut text = String::new();
            let mut reasoning = String::new();
            let mut calls = Vec::new();
            for p in c.content.map(|c| c.parts).unwrap_or_default() {
                if p.thought == Some(true) {
                    if let Some(t) = p.text {
                        reasoning.push_str(&t);
                    }
                    continue;
                }
                if let Some(t) = p.text {
                    text.push_str(&t);
                }
                if let Some(f) = p.function_call {
                    if call.parallel_tool_calls || calls.is_empty() {
                        calls.push(ToolCall {
                            id: signed_call_id(p.thought_signature, provider, &call.upstream_model),
                            name: f.name,
                            arguments: f.args.unwrap_or_else(|| json!({})).to_string(),
                        });
                    }
                }
            }
            Answer {
                reasoning: (!reasoning.is_empty()).then_some(reasoning),
                stop_sequence: None,
                finish_reason: finish_reason(c.finish_reason.as_deref(), !calls.is_empty())
                    .to_string(),
                content: if text.is_empty() && !calls.is_empty() {
                    None
                } else {
                    Some(text)
                },
                tool_calls: calls,
                usage: None,
            }
        })
        .collect();
    if answers.is_empty() {
        // A blocked prompt: no candidates, only `promptFeedback.blockReason`.
        let blocked = r.prompt_feedback.and_then(|f| f.block_reason).is_some();
        answers.push(Answer {
            reasoning: None,
            stop_sequence: None,
            content: Some(String::new()),
            tool_calls: Vec::new(),
            finish_reason: if blocked { "content_filter" } else { "stop" }.to_string(),
            usage: None,
        });
    }
    let usage = r.usage_metadata.map(|u| u.usage());
    let body = w.answer_body(
        r.response_id.as_deref().unwrap_or(""),
        unix_now(),
        &call.client_model,
        &answers,
        usage.as_ref(),
    );
    Ok(Translated { body, usage })
}

// ---------------------------------------------------------------------------------------------
// Stream decoding

#[derive(Debug, Default, Clone)]
struct CandidateState {
    seen: bool,
    role_sent: bool,
    tools: u32,
    finish: Option<String>,
    /// The prompt was blocked (`promptFeedback.blockReason`): nothing will come.
    blocked: bool,
}

/// Gemini `alt=sse` -> OpenAI chunks. Each event is a whole `GenerateContentResponse` with the
/// next fragment; the stream simply ends. Some models stamp `finishReason` on every event, so
/// finish chunks are written once, at the end, and a stream that ends without any
/// `finishReason` is an error.
pub struct GeminiStream {
    w: Box<dyn EventWriter>,
    provider: String,
    model: String,
    include_usage: bool,
    parallel_tool_calls: bool,
    id_set: bool,
    candidates: Vec<CandidateState>,
    usage: Option<Usage>,
}

impl GeminiStream {
    pub fn new(call: &CallInfo, w: Box<dyn EventWriter>) -> Self {
        GeminiStream {
            w,
            provider: PROVIDER.to_string(),
            model: call.upstream_model.clone(),
            include_usage: call.include_usage,
            parallel_tool_calls: call.parallel_tool_calls,
            id_set: false,
            candidates: Vec::new(),
            usage: None,
        }
    }

    /// The provider whose thought signatures tool call ids carry (the built-in's by default).
    pub fn provider(mut self, name: &str) -> Self {
        self.provider = name.to_string();
        self
    }

    fn decode(&mut self, data: &str, out: &mut BytesMut) -> StreamStatus {
        if data.trim() == "[DONE]" {
            return StreamStatus::Continue;
        }
        let r: GenerateResponse = match serde_json::from_str(data) {
            Ok(r) => r,
            Err(e) => {
                return StreamStatus::Failed(
                    translate::bad_upstream_body(NAME, format!("stream event: {e}"))
                        .with_label("upstream_stream_error"),
                )
            }
        };
        if let Some(err) = &r.error {
            let mut e = in_band_error(err);
            e.label = "upstream_stream_error";
            return StreamStatus::Failed(e);
        }
        if !self.id_set {
            self.id_set = true;
            if let Some(id) = r.response_id.as_deref().filter(|s| !s.is_empty()) {
                self.w.id(id);
            }
        }
        if let Some(u) = &r.usage_metadata {
            self.usage = Some(u.usage());
        }
        if r.candidates.is_empty() {
            if let Some(reason) = r.prompt_feedback.and_then(|f| f.block_reason) {
                if let Some(s) = state(&mut self.candidates, 0) {
                    s.finish = Some(reason);
                    s.blocked = true;
                }
            }
        }
        let parallel = self.parallel_tool_calls;
        for c in r.candidates {
            let idx = c.index.unwrap_or(0);
            let w = &mut *self.w;
            let Some(s) = state(&mut self.candidates, idx) else {
                continue;
            };
            if c.finish_reason.is_some() {
                s.finish = c.finish_reason;
            }
            for p in c.content.map(|c| c.parts).unwrap_or_default() {
                if p.thought == Some(true) {
                    if let Some(t) = p.text.filter(|t| !t.is_empty()) {
                        role(w, s, idx, out);
                        w.reasoning(out, idx as u32, &t);
                    }
                    continue;
                }
                if let Some(t) = p.text.filter(|t| !t.is_empty()) {
                    role(w, s, idx, out);
                    w.text(out, idx as u32, &t);
                }
                if let Some(f) = p.function_call {
                    if !parallel && s.tools > 0 {
                        continue;
                    }
                    role(w, s, idx, out);
                    let args = f.args.unwrap_or_else(|| json!({})).to_string();
                    let id = signed_call_id(p.thought_signature, &self.provider, &self.model);
                    w.tool_start(out, idx as u32, s.tools, &id, &f.name);
                    w.tool_args(out, idx as u32, s.tools, &args);
                    s.tools += 1;
                }
            }
        }
        StreamStatus::Continue
    }
}

/// The state of candidate `index`, created on first sight; `None` past [`MAX_CANDIDATES`].
fn state(cands: &mut Vec<CandidateState>, index: usize) -> Option<&mut CandidateState> {
    if index >= MAX_CANDIDATES {
        return None;
    }
    if cands.len() <= index {
        cands.resize(index + 1, CandidateState::default());
    }
    let s = &mut cands[index];
    s.seen = true;
    Some(s)
}

fn role(w: &mut dyn EventWriter, s: &mut CandidateState, idx: usize, out: &mut BytesMut) {
    if !s.role_sent {
        s.role_sent = true;
        w.role(out, idx as u32);
    }
}

impl EventDecoder for GeminiStream {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        self.decode(&ev.data, out)
    }

    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus {
        if let Some(ev) = tail.filter(|ev| !ev.data.is_empty()) {
            // A final event without its blank line counts; a cut one is a truncation.
            if let StreamStatus::Failed(e) = self.decode(&ev.data, out) {
                if translate::is_unreadable(&e) {
                    return StreamStatus::Failed(translate::truncated(
                        NAME,
                        "its last event was complete",
                    ));
                }
                return StreamStatus::Failed(e);
            }
        }
        if !self.candidates.iter().any(|c| c.finish.is_some()) {
            return StreamStatus::Failed(translate::truncated(NAME, "any finishReason"));
        }
        for (idx, s) in self.candidates.iter_mut().enumerate() {
            if !s.seen {
                continue;
            }
            let reason = if s.blocked {
                "content_filter"
            } else {
                finish_reason(s.finish.as_deref(), s.tools > 0)
            };
            role(&mut *self.w, s, idx, out);
            self.w.finish(out, idx as u32, reason);
        }
        if self.include_usage {
            if let Some(u) = &self.usage {
                self.w.usage(out, u);
            }
        }
        self.w.done(out);
        StreamStatus::Done
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings

pub(super) fn encode_embeddings(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Value, GatewayError> {
    for (k, v) in body {
        match k.as_str() {
            "model" | "input" | "dimensions" | "encoding_format" | "user" => {}
            _ if v.is_null() => {}
            other => {
                return Err(unsupported(
                    NAME,
                    other,
                    "the Gemini embeddings API has no equivalent; remove it",
                ))
            }
        }
    }
    match body.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(v) if v == "float" || v == "base64" => {}
        Some(_) => {
            return Err(GatewayError::bad_request(
                "encoding_format",
                "'encoding_format' must be \"float\" or \"base64\"",
            ))
        }
    }
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|d| *d > 0).ok_or_else(|| {
            GatewayError::bad_request("dimensions", "'dimensions' must be a positive integer")
        })?),
    };
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(GatewayError::bad_request("input", "'input' must not be empty"))
        }
        _ => {
            return Err(unsupported(
                NAME,
                "input",
                "Gemini embeds text: 'input' must be a string or an array of strings (token arrays cannot be sent)",
            ))
        }
    };
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
            if let Some(d) = dims {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({ "requests": requests }))
}

/// `batchEmbedContents` -> OpenAI's list. Gemini usually reports no token count for embeddings;
/// when it does not, `usage` is left out here and the caller estimates it
/// ([`translate::finish_embeddings`]).
pub(super) fn decode_embeddings(
    body: &[u8],
    client_model: &str,
) -> Result<(Bytes, Option<Usage>), GatewayError> {
    let r: BatchEmbedResponse =
        serde_json::from_slice(body).map_err(|e| translate::bad_upstream_body(NAME, e))?;
    let data: Vec<Value> = r
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.values}))
        .collect();
    let usage = r
        .usage_metadata
        .map(|u| Usage::new(u.prompt_token_count, 0))
        .filter(|u| u.prompt_tokens > 0);
    let mut v = json!({"object": "list", "data": data, "model": client_model});
    if let Some(u) = &usage {
        v["usage"] = json!({"prompt_tokens": u.prompt_tokens, "total_tokens": u.total_tokens});
    }
    Ok((Bytes::from(v.to_string()), usage))
}
