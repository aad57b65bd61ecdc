//! Gemini API wire types: the `generateContent` request body, the `GenerateContentResponse`
//! (whole answers and each stream event), `batchEmbedContents`. Plain serde structs; what they
//! mean for the gateway is in `translate.rs`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::providers::translate::{Args, Raw, Str};

// ---------------------------------------------------------------------------------------------
// Request

/// The `generateContent` request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateBody<'a> {
    pub contents: Vec<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<[ToolsOut<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
pub struct SystemInstruction<'a> {
    pub parts: Vec<GeminiPartOut<'a>>,
}

#[derive(Serialize)]
pub struct ContentOut<'a> {
    pub role: &'static str,
    pub parts: Vec<GeminiPartOut<'a>>,
}

/// One part: `{"text": ...}`, `{"inlineData": {...}}`, ...
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum GeminiPartOut<'a> {
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
    /// A function call with its `thoughtSignature` beside it in the part.
    #[serde(untagged)]
    SignedCall(SignedCall<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedCall<'a> {
    pub function_call: CallOut<'a>,
    pub thought_signature: &'a str,
}

#[derive(Serialize)]
pub struct CallOut<'a> {
    pub name: &'a str,
    pub args: &'a Args<'a>,
}

/// A `functionResponse`'s `response`, which must be an object: a JSON object result is passed
/// as is, anything else as Gemini's documented `output` key.
#[derive(Serialize)]
#[serde(untagged)]
pub enum FunctionResult<'a> {
    Object(&'a RawValue),
    Decoded(Box<RawValue>),
    Output { output: &'a Str<'a> },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolsOut<'a> {
    pub function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
pub struct FunctionDeclaration<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig<'a> {
    pub function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig<'a> {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    pub fn is_empty(&self) -> bool {
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

/// `thinkingConfig`: a budget (Gemini 2.5) or a level (Gemini 3), and whether thought
/// summaries come back.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_thoughts: bool,
}

// ---------------------------------------------------------------------------------------------
// Response (and each stream event)

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub usage_metadata: Option<GeminiUsage>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub response_id: Option<String>,
    /// Streams report errors in band.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub index: Option<usize>,
}

#[derive(Deserialize)]
pub struct Content {
    #[serde(default)]
    pub parts: Vec<GeminiPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeminiPart {
    #[serde(default)]
    pub text: Option<String>,
    /// A thought summary: reasoning, not part of the answer.
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
    /// Gemini 3 signs the first function call of each step: it must come back with the call.
    #[serde(default)]
    pub thought_signature: Option<String>,
}

#[derive(Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub args: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct GeminiUsage {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub total_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedResponse {
    #[serde(default)]
    pub embeddings: Vec<Embedding>,
    #[serde(default)]
    pub usage_metadata: Option<GeminiUsage>,
}

#[derive(Deserialize)]
pub struct Embedding {
    #[serde(default)]
    pub values: Vec<Value>,
}
