//! Anthropic Messages API wire types: the request body, the answer, the stream events. Plain
//! serde structs; what they mean for the OpenAI side is in `translate.rs`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::translate::{Args, Raw, RawObject, Str};

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
pub struct MessagesBody<'a> {
    pub model: &'a str,
    pub max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<BlockOut<'a>>,
    pub messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Raw<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    pub stream: bool,
}

pub fn is_false(b: &bool) -> bool {
    !*b
}

pub fn no_text(s: &&Str) -> bool {
    s.is_empty()
}

/// `thinking`: a fixed budget, or adaptive (Claude 4.6 and later; the depth is
/// `output_config.effort`).
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingOut {
    Enabled { budget_tokens: u64 },
    Adaptive,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct OutputConfig {
    pub effort: &'static str,
}

#[derive(Serialize)]
pub struct Metadata<'a> {
    pub user_id: Cow<'a, str>,
}

#[derive(Serialize)]
pub struct Turn<'a> {
    pub role: &'static str,
    pub content: Vec<BlockOut<'a>>,
}

/// A content block.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockOut<'a> {
    Text {
        text: Str<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Raw<'a>>,
    },
    Image {
        source: BlockSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Raw<'a>>,
    },
    Document {
        source: BlockSource<'a>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: &'a Args<'a>,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "no_text")]
        content: &'a Str<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
pub struct ToolOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    pub input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
pub struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    pub disable_parallel_tool_use: bool,
}

/// A tool's `input_schema`: Anthropic requires an object schema, so one without a `type` gets
/// `"type": "object"` (last, as a JSON tree would insert it), and a tool without parameters
/// gets an empty one.
pub enum InputSchema<'a> {
    /// The client's schema, its top-level fields raw.
    Fields(RawObject<'a>),
    Tree(Value),
    Empty,
}

impl<'a> InputSchema<'a> {
    pub fn of(parameters: Option<Raw<'a>>) -> Self {
        match parameters.and_then(|p| RawObject::parse(p.0)) {
            Some(o) => InputSchema::Fields(o),
            None => InputSchema::Empty,
        }
    }
}

impl Serialize for InputSchema<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            InputSchema::Fields(o) => {
                let mut m = s.serialize_map(None)?;
                for (k, v) in &o.0 {
                    m.serialize_entry(k, v)?;
                }
                if o.get("type").is_none() {
                    m.serialize_entry("type", "object")?;
                }
                m.end()
            }
            InputSchema::Tree(v) => v.serialize(s),
            InputSchema::Empty => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", "object")?;
                m.serialize_entry("properties", &Map::new())?;
                m.end()
            }
        }
    }
}

/// A schema tree with `"type": "object"` when it names no type.

// ---------------------------------------------------------------------------------------------
// Response

#[derive(Deserialize)]
pub struct MessageResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

/// Token counts as they arrive (`message_delta` counts are cumulative and replace earlier ones).

// ---------------------------------------------------------------------------------------------
// Stream events

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: Delta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Error {
        error: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
pub struct StartMessage {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: String },
    #[serde(rename = "signature_delta")]
    Signature { signature: String },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}
