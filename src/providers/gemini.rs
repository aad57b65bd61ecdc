//! Google Gemini API (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`)
//! behind OpenAI Chat Completions and Embeddings. The key travels in `x-goog-api-key`, never in
//! the URL.
//!
//! Choices (README, "Anthropic and Gemini"): tool call ids are synthesised (`call_<random>`);
//! `parallel_tool_calls: false` keeps only the first call of an answer (Gemini cannot be told);
//! `reasoning_effort` becomes a thinking budget; `user` cannot change the answer and is dropped;
//! any other field without an equivalent is a 400 naming it.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::api::{
    completion_body, completion_body_choices, random_token, unix_now, Answer, ChatRequest,
    ChunkWriter, ToolCall, Usage,
};
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::translate::{
    self, unsupported, Args, Conversation, Fields, Msg, Part, Raw, ResponseFormat, Source, Str,
    ToolChoice,
};
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamStatus, StreamTranslator, Translated,
    UpstreamRequest,
};
use crate::sse::SseFramer;

const NAME: &str = "Gemini";

/// Most candidates a stream is allowed to address (Gemini allows up to 8).
const MAX_CANDIDATES: usize = 8;

/// Deepest `$ref`/nesting a tool schema is expanded to.
const MAX_SCHEMA_DEPTH: u32 = 24;

pub struct Gemini {
    cfg: ProviderConfig,
}

impl Gemini {
    pub fn new(cfg: ProviderConfig) -> Self {
        Gemini { cfg }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.api_key {
            Some(k) => vec![("x-goog-api-key", k.expose().to_string())],
            None => Vec::new(),
        }
    }
}

impl Provider for Gemini {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = model_path(&call.upstream_model)?;
        let body = encode_request(req)?;
        let path = if req.stream {
            format!(
                "{}/v1beta/{model}:streamGenerateContent?alt=sse",
                backend.path
            )
        } else {
            format!("{}/v1beta/{model}:generateContent", backend.path)
        };
        Ok(UpstreamRequest::post(path, self.headers(), body))
    }

    fn chat_response(&self, body: Bytes, call: &CallInfo) -> Result<Translated, GatewayError> {
        decode_response(&body, call)
    }

    fn stream_translator(&self, call: &CallInfo) -> Box<dyn StreamTranslator> {
        Box::new(GeminiStream::new(call))
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        map_error(status, body)
    }

    fn embeddings_request(
        &self,
        body: &Map<String, Value>,
        upstream_model: &str,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = model_path(upstream_model)?;
        let out = encode_embeddings(body, &model)?;
        let bytes = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))?;
        Ok(UpstreamRequest::post(
            format!("{}/v1beta/{model}:batchEmbedContents", backend.path),
            self.headers(),
            Bytes::from(bytes),
        ))
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        client_model: &str,
    ) -> Result<(Bytes, Option<Usage>), GatewayError> {
        decode_embeddings(&body, client_model)
    }

    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1beta/models?pageSize=1000", backend.path),
            self.headers(),
        ))
    }

    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        crate::providers::openai::parse_model_list(body)
    }

    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1beta/models?pageSize=1", backend.path),
            self.headers(),
        ))
    }
}

/// `gemini-2.0-flash` -> `models/gemini-2.0-flash` (tuned models keep `tunedModels/`). The name
/// goes into the URL path, so only the characters model names use are allowed.
pub fn model_path(model: &str) -> Result<String, GatewayError> {
    let (prefix, name) = if let Some(n) = model.strip_prefix("tunedModels/") {
        ("tunedModels", n)
    } else {
        ("models", model.strip_prefix("models/").unwrap_or(model))
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(GatewayError::bad_request(
            "model",
            format!("{model:?} is not a valid Gemini model name"),
        ));
    }
    Ok(format!("{prefix}/{name}"))
}

// ---------------------------------------------------------------------------------------------
// Request encoding

/// The `generateContent` body for an OpenAI chat request, serialized.
pub fn encode_request(req: &ChatRequest) -> Result<Bytes, GatewayError> {
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
    for (k, raw) in b.fields {
        if TRANSLATED.contains(&k.as_str()) {
            continue;
        }
        let v = translate::value(raw);
        if !v.is_null() && !translate::harmless(k, &v) {
            return Err(unsupported(
                NAME,
                k,
                "the Gemini API has no equivalent and dropping it could change the answer; remove it",
            ));
        }
    }

    let conv = Conversation::of(&b)?;
    let contents = encode_contents(&conv);
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
    if let Some(effort) = b.get("reasoning_effort").filter(|v| !v.is_null()) {
        // The budgets Google's own OpenAI-compatible endpoint uses.
        let thinking_budget = match effort.as_str() {
            Some("none") => 0,
            Some("minimal") | Some("low") => 1024,
            Some("medium") => 8192,
            Some("high") => 24576,
            _ => {
                return Err(GatewayError::bad_request(
                    "reasoning_effort",
                    "'reasoning_effort' must be one of none, minimal, low, medium, high",
                ))
            }
        };
        gen.thinking_config = Some(ThinkingConfig { thinking_budget });
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

/// The `generateContent` request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateBody<'a> {
    contents: Vec<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[ToolsOut<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<GeminiPartOut<'a>>,
}

#[derive(Serialize)]
struct ContentOut<'a> {
    role: &'static str,
    parts: Vec<GeminiPartOut<'a>>,
}

/// One part: `{"text": ...}`, `{"inlineData": {...}}`, ...
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum GeminiPartOut<'a> {
    Text(&'a Str<'a>),
    #[serde(rename_all = "camelCase")]
    InlineData {
        mime_type: Cow<'a, str>,
        data: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    FileData {
        mime_type: &'a str,
        file_uri: &'a str,
    },
    FunctionCall {
        name: &'a str,
        args: &'a Args<'a>,
    },
    FunctionResponse {
        name: &'a str,
        response: FunctionResult<'a>,
    },
}

/// A `functionResponse`'s `response`, which must be an object: a JSON object result is passed
/// as is, anything else as Gemini's documented `output` key.
#[derive(Serialize)]
#[serde(untagged)]
enum FunctionResult<'a> {
    Object(&'a RawValue),
    Decoded(Box<RawValue>),
    Output { output: &'a Str<'a> },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolsOut<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.candidate_count.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.response_mime_type.is_none()
            && self.response_schema.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u32,
}

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
fn encode_contents<'a>(conv: &'a Conversation<'a>) -> Vec<ContentOut<'a>> {
    let mut turns: Vec<ContentOut<'a>> = Vec::with_capacity(conv.turns.len());
    for t in &conv.turns {
        let (role, parts) = match t {
            Msg::User(parts) => ("user", parts.iter().map(part).collect::<Vec<_>>()),
            Msg::Assistant { parts, calls } => {
                let mut out = Vec::with_capacity(parts.len() + calls.len());
                out.extend(parts.iter().map(part));
                for c in calls {
                    out.push(GeminiPartOut::FunctionCall {
                        name: &c.name,
                        args: &c.args,
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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<GeminiUsage>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    response_id: Option<String>,
    /// Streams report errors in band.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<usize>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<GeminiPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiPart {
    #[serde(default)]
    text: Option<String>,
    /// Thought summaries are not part of the answer.
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    total_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

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
        u
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
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

fn completion_id(response_id: Option<&str>) -> String {
    match response_id {
        Some(r) if !r.is_empty() => format!("chatcmpl-{r}"),
        _ => crate::api::completion_id(),
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

fn decode_response(body: &[u8], call: &CallInfo) -> Result<Translated, GatewayError> {
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
            let mut calls = Vec::new();
            for p in c.content.map(|c| c.parts).unwrap_or_default() {
                if p.thought == Some(true) {
                    continue;
                }
                if let Some(t) = p.text {
                    text.push_str(&t);
                }
                if let Some(f) = p.function_call {
                    if call.parallel_tool_calls || calls.is_empty() {
                        calls.push(ToolCall {
                            id: call_id(),
                            name: f.name,
                            arguments: f.args.unwrap_or_else(|| json!({})).to_string(),
                        });
                    }
                }
            }
            Answer {
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
            content: Some(String::new()),
            tool_calls: Vec::new(),
            finish_reason: if blocked { "content_filter" } else { "stop" }.to_string(),
            usage: None,
        });
    }
    let usage = r.usage_metadata.map(|u| u.usage());
    let id = completion_id(r.response_id.as_deref());
    let body = if answers.len() == 1 {
        answers[0].usage = usage;
        completion_body(&id, unix_now(), &call.client_model, &answers[0])
    } else {
        completion_body_choices(
            &id,
            unix_now(),
            &call.client_model,
            &answers,
            usage.as_ref(),
        )
    };
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
    framer: SseFramer,
    w: ChunkWriter,
    include_usage: bool,
    parallel_tool_calls: bool,
    id_set: bool,
    candidates: Vec<CandidateState>,
    usage: Option<Usage>,
    done: bool,
}

impl GeminiStream {
    pub fn new(call: &CallInfo) -> Self {
        GeminiStream {
            framer: SseFramer::new(),
            w: ChunkWriter::new(&call.client_model),
            include_usage: call.include_usage,
            parallel_tool_calls: call.parallel_tool_calls,
            id_set: false,
            candidates: Vec::new(),
            usage: None,
            done: false,
        }
    }

    /// Fixes the chunk id and time (tests compare exact output).
    pub fn with_writer(mut self, id: &str, created: u64) -> Self {
        self.w.id = id.to_string();
        self.w.created = created;
        self
    }

    fn event(&mut self, data: &str, out: &mut BytesMut) -> StreamStatus {
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
                self.w.id = completion_id(Some(id));
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
            let w = &self.w;
            let Some(s) = state(&mut self.candidates, idx) else {
                continue;
            };
            if c.finish_reason.is_some() {
                s.finish = c.finish_reason;
            }
            for p in c.content.map(|c| c.parts).unwrap_or_default() {
                if p.thought == Some(true) {
                    continue;
                }
                if let Some(t) = p.text.filter(|t| !t.is_empty()) {
                    role(w, s, idx, out);
                    w.content_at(out, idx as u32, &t);
                }
                if let Some(f) = p.function_call {
                    if !parallel && s.tools > 0 {
                        continue;
                    }
                    role(w, s, idx, out);
                    let args = f.args.unwrap_or_else(|| json!({})).to_string();
                    w.tool_start_at(out, idx as u32, s.tools, &call_id(), &f.name);
                    w.tool_args_at(out, idx as u32, s.tools, &args);
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

fn role(w: &ChunkWriter, s: &mut CandidateState, idx: usize, out: &mut BytesMut) {
    if !s.role_sent {
        s.role_sent = true;
        w.role_at(out, idx as u32);
    }
}

impl StreamTranslator for GeminiStream {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> StreamStatus {
        if self.done {
            return StreamStatus::Done;
        }
        self.framer.push(input);
        while let Some(ev) = self.framer.next_event() {
            if ev.data.is_empty() {
                continue;
            }
            match self.event(&ev.data, out) {
                StreamStatus::Continue => {}
                other => return other,
            }
        }
        StreamStatus::Continue
    }

    fn finish(&mut self, out: &mut BytesMut) -> StreamStatus {
        if self.done {
            return StreamStatus::Done;
        }
        if let Some(ev) = self.framer.finish() {
            if !ev.data.is_empty() {
                // A final event without its blank line counts; a cut one is a truncation.
                if let StreamStatus::Failed(e) = self.event(&ev.data, out) {
                    if translate::is_unreadable(&e) {
                        return StreamStatus::Failed(translate::truncated(
                            NAME,
                            "its last event was complete",
                        ));
                    }
                    return StreamStatus::Failed(e);
                }
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
            role(&self.w, s, idx, out);
            self.w.finish_at(out, idx as u32, reason);
        }
        if self.include_usage {
            if let Some(u) = &self.usage {
                self.w.usage(out, u);
            }
        }
        ChunkWriter::done(out);
        self.done = true;
        StreamStatus::Done
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings

fn encode_embeddings(body: &Map<String, Value>, model: &str) -> Result<Value, GatewayError> {
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchEmbedResponse {
    #[serde(default)]
    embeddings: Vec<Embedding>,
    #[serde(default)]
    usage_metadata: Option<GeminiUsage>,
}

#[derive(Deserialize)]
struct Embedding {
    #[serde(default)]
    values: Vec<Value>,
}

/// `batchEmbedContents` -> OpenAI's list. Gemini usually reports no token count for embeddings;
/// when it does not, `usage` is left out here and the caller estimates it
/// ([`translate::finish_embeddings`]).
fn decode_embeddings(
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

// ---------------------------------------------------------------------------------------------
// Error mapping

/// A Gemini error body -> the OpenAI error object. `RESOURCE_EXHAUSTED` is 429 and an invalid
/// key (`API_KEY_INVALID`, sent as 400) is 401, so clients react as they would to OpenAI; the
/// Gemini status (`INVALID_ARGUMENT`, ...) is kept as `code`.
pub fn map_error(status: u16, body: &[u8]) -> GatewayError {
    // Some Gemini endpoints wrap the error in a one-element array.
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().map(|v| match v {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    });
    let (message, _, _) = match &err {
        Some(v) => upstream_error_message(v.to_string().as_bytes()),
        None => upstream_error_message(body),
    };
    let inner = err.as_ref().and_then(|v| v.get("error"));
    let gstatus = inner
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let key_invalid = inner
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .is_some_and(|d| {
            d.iter()
                .any(|x| x.get("reason").is_some_and(|r| r == "API_KEY_INVALID"))
        });
    let status = match gstatus.as_deref() {
        _ if key_invalid => 401,
        Some("RESOURCE_EXHAUSTED") => 429,
        Some("UNAUTHENTICATED") => 401,
        Some("PERMISSION_DENIED") => 403,
        _ => status,
    };
    GatewayError::from_upstream(status, ErrorKind::for_status(status), gstatus, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(include_usage: bool, parallel: bool) -> CallInfo {
        CallInfo {
            client_model: "google/gemini-2.0-flash".into(),
            upstream_model: "gemini-2.0-flash".into(),
            stream: true,
            include_usage,
            parallel_tool_calls: parallel,
        }
    }

    fn encode(body: Value) -> Result<Value, GatewayError> {
        let bytes = encode_request(&ChatRequest::parse(body.to_string().as_bytes())?)?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn model_paths() {
        assert_eq!(
            model_path("gemini-2.0-flash").unwrap(),
            "models/gemini-2.0-flash"
        );
        assert_eq!(
            model_path("models/gemini-2.5-pro").unwrap(),
            "models/gemini-2.5-pro"
        );
        assert_eq!(
            model_path("tunedModels/my-model-1").unwrap(),
            "tunedModels/my-model-1"
        );
        for bad in ["", "a/b", "x?key=1", "../v1/x", "m:generateContent"] {
            assert_eq!(
                model_path(bad).unwrap_err().param.as_deref(),
                Some("model"),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_translation() {
        let v = encode(json!({
            "model": "google/gemini-2.0-flash",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "user", "content": [{"type": "text", "text": ""},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_b", "content": "{\"time\":\"12:00\"}"},
                {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 50, "temperature": 1.5, "top_p": 0.8, "stop": "END", "n": 2, "seed": 3,
            "presence_penalty": 0.1, "user": "u1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {
                "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
                "properties": {"t": {"type": ["number", "null"]}, "unit": {"$ref": "#/$defs/Unit"}},
                "required": ["t"], "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}}}}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "strict": true,
                        "parameters": {"type": "object", "properties": {"city": {"type": "string", "format": "uri"}}, "additionalProperties": false}}},
                      {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
        }))
        .unwrap();
        assert_eq!(
            v["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        let c = v["contents"].as_array().unwrap();
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(
            c[0],
            json!({"role": "user", "parts": [
                {"text": "weather?"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}}
            ]})
        );
        assert_eq!(
            c[1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]})
        );
        assert_eq!(
            c[2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                {"text": "thanks"}
            ]})
        );
        let g = &v["generationConfig"];
        assert_eq!(g["maxOutputTokens"], 50);
        assert_eq!(g["temperature"], 1.5);
        assert_eq!(g["topP"], 0.8);
        assert_eq!(g["stopSequences"], json!(["END"]));
        assert_eq!(g["candidateCount"], 2);
        assert_eq!(g["seed"], 3);
        assert_eq!(g["presencePenalty"], 0.1);
        assert_eq!(g["responseMimeType"], "application/json");
        assert_eq!(
            g["responseSchema"],
            json!({"type": "object", "required": ["t"], "properties": {
            "t": {"type": "number", "nullable": true}, "unit": {"type": "string", "enum": ["C", "F"]}}})
        );
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "get_time"}
            ]}])
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert!(v.get("user").is_none());
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}, "reasoning_effort": "low"})).unwrap();
        assert_eq!(
            v["generationConfig"],
            json!({"responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 1024}})
        );
        let v =
            encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert!(v.get("generationConfig").is_none() && v.get("tools").is_none());
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
            (json!({"logprobs": true}), "logprobs"),
            (json!({"logit_bias": {"1": 2}}), "logit_bias"),
            (json!({"audio": {"voice": "x"}}), "audio"),
            (json!({"x_unknown": 1}), "x_unknown"),
            (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}),
                "messages[0].tool_call_id",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
        ] {
            let e = encode(base(extra.clone())).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
    }

    #[test]
    fn response_translation() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"thinking...","thought":true},{"text":"Let me "},{"text":"check."},
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},{"functionCall":{"name":"get_time"}}],"role":"model"},
            "finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":12,"totalTokenCount":20,"thoughtsTokenCount":3,"cachedContentTokenCount":2},
            "modelVersion":"gemini-2.0-flash","responseId":"resp1"}"#;
        let t = decode_response(body, &call(false, true)).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["id"], "chatcmpl-resp1");
        assert_eq!(v["model"], "google/gemini-2.0-flash");
        let c = &v["choices"][0];
        assert_eq!(c["message"]["content"], "Let me check.");
        assert_eq!(c["finish_reason"], "tool_calls");
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert_eq!(
            calls[0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            calls[1]["function"],
            json!({"name": "get_time", "arguments": "{}"})
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 15, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 2}})
        );

        let t = decode_response(body, &call(false, false)).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "parallel_tool_calls=false keeps one call"
        );

        for (reason, want) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("OTHER", "stop"),
        ] {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            let v: Value = serde_json::from_slice(
                &decode_response(body.to_string().as_bytes(), &call(false, true))
                    .unwrap()
                    .body,
            )
            .unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
        }
        let two = br#"{"candidates":[{"content":{"parts":[{"text":"B"}]},"finishReason":"STOP","index":1},{"content":{"parts":[{"text":"A"}]},"finishReason":"MAX_TOKENS","index":0}],
            "usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}}"#;
        let v: Value =
            serde_json::from_slice(&decode_response(two, &call(false, true)).unwrap().body)
                .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "A");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(
            (
                v["choices"][1]["index"].clone(),
                v["choices"][1]["message"]["content"].clone()
            ),
            (json!(1), json!("B"))
        );
        assert_eq!(v["usage"]["total_tokens"], 3);
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}}"#;
        let v: Value =
            serde_json::from_slice(&decode_response(blocked, &call(false, true)).unwrap().body)
                .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn errors_map_to_openai_shape() {
        let e = map_error(429, br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#);
        assert_eq!(
            (e.status, e.kind.as_str(), e.code.as_deref()),
            (429, "rate_limit_error", Some("RESOURCE_EXHAUSTED"))
        );
        assert_eq!(e.message, "Resource has been exhausted (e.g. check quota).");
        let e = map_error(400, br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#);
        assert_eq!((e.status, e.kind.as_str()), (401, "authentication_error"));
        let e = map_error(
            400,
            br#"[{"error":{"code":400,"message":"bad schema","status":"INVALID_ARGUMENT"}}]"#,
        );
        assert_eq!(
            (e.status, e.message.as_str(), e.code.as_deref()),
            (400, "bad schema", Some("INVALID_ARGUMENT"))
        );
        let e = map_error(503, br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#);
        assert_eq!((e.status, e.kind.as_str()), (503, "server_error"));
    }

    #[test]
    fn embeddings_both_ways() {
        let req = json!({"model": "google/text-embedding-004", "input": ["a", "bb"], "dimensions": 3, "encoding_format": "float", "user": "u"});
        let v = encode_embeddings(req.as_object().unwrap(), "models/text-embedding-004").unwrap();
        assert_eq!(
            v,
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "bb"}]}, "outputDimensionality": 3}
            ]})
        );
        let one = json!({"model": "m", "input": "hello"});
        assert_eq!(
            encode_embeddings(one.as_object().unwrap(), "models/m").unwrap()["requests"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        for (bad, param) in [
            (json!({"input": [1, 2]}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": "x", "dimensions": 0}), "dimensions"),
            (
                json!({"input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!({"input": "x", "task": "y"}), "task"),
        ] {
            assert_eq!(
                encode_embeddings(bad.as_object().unwrap(), "models/m")
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some(param),
                "{bad}"
            );
        }
        let (body, usage) = decode_embeddings(
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#,
            "google/text-embedding-004",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "google/text-embedding-004");
        assert_eq!(
            v["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.3, 0.4]})
        );
        assert!(usage.is_none());
    }

    // ---- streams: recorded-shape fixtures, fed split at every byte offset ----

    fn ev(v: Value) -> String {
        format!("data: {v}\r\n\r\n")
    }

    fn text_stream(stamp_every_chunk: bool) -> String {
        let fr = |last: bool| {
            if last || stamp_every_chunk {
                json!("STOP")
            } else {
                Value::Null
            }
        };
        [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "finishReason": fr(false), "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": " wörld"}], "role": "model"}, "finishReason": fr(false), "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "!"}], "role": "model"}, "finishReason": fr(true), "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
        ]
        .concat()
    }

    fn tools_stream() -> String {
        [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Checking."}], "role": "model"}, "index": 0}], "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}], "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}, "responseId": "r1"})),
        ]
        .concat()
    }

    fn chunk(choice: u32, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash",
               "choices": [{"index": choice, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    fn usage_chunk(p: u64, c: u64, t: u64) -> Value {
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash",
               "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}})
    }

    fn run(input: &[u8], split: usize, c: &CallInfo) -> (Vec<u8>, StreamStatus, Option<Usage>) {
        let mut t = GeminiStream::new(c).with_writer("chatcmpl-x", 7);
        let mut out = BytesMut::new();
        let mut status = StreamStatus::Continue;
        for part in [&input[..split], &input[split..]] {
            if status == StreamStatus::Continue {
                status = t.feed(part, &mut out);
            }
        }
        if status == StreamStatus::Continue {
            status = t.finish(&mut out);
        }
        (out.to_vec(), status, t.usage())
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let d = e.strip_prefix("data: ").unwrap();
                if d == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    /// Tool call ids are random: replaced by their position before comparing.
    fn normalise(mut evs: Vec<Value>) -> Vec<Value> {
        for e in &mut evs {
            if let Some(tc) = e.pointer_mut("/choices/0/delta/tool_calls/0") {
                if let Some(id) = tc.get("id").and_then(Value::as_str) {
                    assert!(id.starts_with("call_") && id.len() == 29, "{id}");
                    let index = tc["index"].clone();
                    tc["id"] = json!(format!("call_{index}"));
                }
            }
        }
        evs
    }

    fn check(input: &str, c: &CallInfo, want: &[Value], want_status: &StreamStatus) {
        let input = input.as_bytes();
        let (whole, status, _) = run(input, 0, c);
        assert_eq!(&status, want_status);
        let whole = normalise(events(&whole));
        assert_eq!(whole, want);
        for split in 0..=input.len() {
            let (out, status, _) = run(input, split, c);
            assert_eq!(normalise(events(&out)), whole, "split at {split}");
            assert_eq!(&status, want_status, "split at {split}");
        }
    }

    #[test]
    fn text_stream_at_every_split() {
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "Hello"}), None),
            chunk(0, json!({"content": " wörld"}), None),
            chunk(0, json!({"content": "!"}), None),
            chunk(0, json!({}), Some("stop")),
            usage_chunk(5, 3, 8),
            json!("[DONE]"),
        ];
        check(
            &text_stream(false),
            &call(true, true),
            &want,
            &StreamStatus::Done,
        );
        // finishReason stamped on every chunk: still one finish chunk, at the end.
        check(
            &text_stream(true),
            &call(true, true),
            &want,
            &StreamStatus::Done,
        );
        let mut no_usage = want.to_vec();
        no_usage.remove(5);
        check(
            &text_stream(false),
            &call(false, true),
            &no_usage,
            &StreamStatus::Done,
        );
        let (_, _, usage) = run(text_stream(false).as_bytes(), 11, &call(false, true));
        assert_eq!(
            usage,
            Some(Usage::new(5, 3)),
            "usage known without the usage chunk"
        );
    }

    #[test]
    fn tool_stream_with_several_calls_at_every_split() {
        let tc = |v: Value| chunk(0, json!({"tool_calls": [v]}), None);
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "Checking."}), None),
            tc(
                json!({"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            ),
            tc(json!({"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}})),
            tc(
                json!({"index": 1, "id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}),
            ),
            tc(json!({"index": 1, "function": {"arguments": "{}"}})),
            chunk(0, json!({}), Some("tool_calls")),
            usage_chunk(9, 4, 13),
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
        single.drain(4..6);
        check(
            &tools_stream(),
            &call(true, false),
            &single,
            &StreamStatus::Done,
        );
    }

    #[test]
    fn several_candidates_keep_their_own_index() {
        let input = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "A"}]}, "index": 0}, {"content": {"parts": [{"text": "B"}]}, "index": 1}], "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0}, {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}], "responseId": "r1"})),
        ]
        .concat();
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "A"}), None),
            chunk(1, json!({"role": "assistant", "content": ""}), None),
            chunk(1, json!({"content": "B"}), None),
            chunk(0, json!({"content": "a"}), None),
            chunk(1, json!({"content": "b"}), None),
            chunk(0, json!({}), Some("stop")),
            chunk(1, json!({}), Some("length")),
            json!("[DONE]"),
        ];
        check(&input, &call(false, true), &want, &StreamStatus::Done);
    }

    #[test]
    fn blocked_prompt_stream_ends_with_content_filter() {
        let input = ev(
            json!({"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}, "responseId": "r1"}),
        );
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({}), Some("content_filter")),
            json!("[DONE]"),
        ];
        check(&input, &call(false, true), &want, &StreamStatus::Done);
    }

    #[test]
    fn error_event_fails_without_a_finish_chunk() {
        let input = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}], "responseId": "r1"})),
            ev(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})),
        ]
        .concat();
        let (_, status, _) = run(input.as_bytes(), 0, &call(true, true));
        let StreamStatus::Failed(e) = &status else {
            panic!("{status:?}")
        };
        assert_eq!(
            (e.status, e.message.as_str()),
            (503, "The model is overloaded.")
        );
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "Hel"}), None),
        ];
        check(&input, &call(true, true), &want, &status);
    }

    #[test]
    fn stream_without_finish_reason_fails() {
        let full = tools_stream();
        let input = &full[..full
            .find("data: ")
            .map(|_| full[6..].find("data: ").unwrap() + 6)
            .unwrap()];
        let (out, status, _) = run(input.as_bytes(), 0, &call(true, true));
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
            "{status:?}"
        );
        let evs = events(&out);
        assert_eq!(
            evs.len(),
            2,
            "role and content, no finish, no [DONE]: {evs:?}"
        );
        check(input, &call(true, true), &evs, &status);
        // Cut in the middle of the last event: the partial JSON is an error too.
        let input = &full[..full.len() - 10];
        let (_, status, _) = run(input.as_bytes(), 0, &call(false, true));
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
            "{status:?}"
        );
    }
}
