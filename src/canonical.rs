//! The gateway's canonical answer and stream events, and the two traits an inbound dialect
//! implements to write them in its own format.
//!
//! The canonical model is OpenAI Chat Completions' (the request is `api::ChatRequest`): a
//! provider that translates decodes its upstream's answers into [`Answer`]s and its streams
//! into calls on an [`EventWriter`]; the client's dialect decides the bytes. When the client's
//! dialect is the upstream's, the provider passes bytes through and never calls a writer.
//!
//! This module imports nothing from the rest of the gateway: dialects and providers both
//! depend on it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`, when the upstream reports it.
    #[serde(skip)]
    pub cached_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`, when the upstream reports it (part of
    /// `completion_tokens`).
    #[serde(skip)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// Reads an OpenAI `usage` object.
    pub fn from_value(v: &Value) -> Option<Usage> {
        let o = v.as_object()?;
        let p = o.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
        let c = o
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let t = o
            .get("total_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(p + c);
        let cached = o
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let reasoning = o
            .get("completion_tokens_details")
            .and_then(|d| d.get("reasoning_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: t,
            cached_tokens: cached,
            reasoning_tokens: reasoning,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut v = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        });
        if self.cached_tokens > 0 {
            v["prompt_tokens_details"] = serde_json::json!({"cached_tokens": self.cached_tokens});
        }
        if self.reasoning_tokens > 0 {
            v["completion_tokens_details"] =
                serde_json::json!({"reasoning_tokens": self.reasoning_tokens});
        }
        v
    }
}

/// One tool call in a finished message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// A finished assistant answer (one choice): what a translator or the cache assembles, and what
/// an [`AnswerWriter`] renders (for OpenAI chat, `api::completion_body`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub content: Option<String>,
    /// The model's reasoning text, when the upstream returns it apart from the content
    /// (OpenAI-compatible hosts' `reasoning_content`, Anthropic's thinking blocks, Gemini's
    /// thought parts). Dialects without a place for it leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    /// The request's stop sequence the answer stopped on (its `finish_reason` is `stop`), when
    /// the upstream says which (vLLM's `stop_reason`, SGLang's `matched_stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    pub usage: Option<Usage>,
}

/// Writes canonical stream events as one client dialect's stream (for OpenAI chat:
/// `chat.completion.chunk` SSE events, `api::ChunkWriter`). Every event appends bytes to `out`;
/// `choice` is the answer's index when the upstream gives several (`n > 1`), else 0.
pub trait EventWriter: Send {
    /// The upstream's id for this answer, given before the first event when the upstream names
    /// one; the dialect derives its own ids from it.
    fn id(&mut self, upstream_id: &str);
    /// The assistant turn starts (once per choice, before its first delta).
    fn role(&mut self, out: &mut BytesMut, choice: u32);
    /// A fragment of the answer's text.
    fn text(&mut self, out: &mut BytesMut, choice: u32, text: &str);
    /// A fragment of the model's reasoning, when the upstream streams it apart from the text
    /// (vLLM's and DeepSeek's `reasoning_content`). Dialects without a place for it drop it.
    fn reasoning(&mut self, _out: &mut BytesMut, _choice: u32, _text: &str) {}
    /// A tool call starts: its position among the choice's calls, its id and function name.
    fn tool_start(&mut self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str);
    /// A fragment of a tool call's JSON arguments.
    fn tool_args(&mut self, out: &mut BytesMut, choice: u32, index: u32, fragment: &str);
    /// The choice stopped on this one of the request's stop sequences (called just before its
    /// `finish` with `stop`, when the upstream says which). Dialects without a place for it
    /// drop it.
    fn stop_sequence(&mut self, _choice: u32, _sequence: &str) {}
    /// The choice ended, with an OpenAI `finish_reason` (`stop`, `length`, `tool_calls`,
    /// `content_filter`).
    fn finish(&mut self, out: &mut BytesMut, choice: u32, reason: &str);
    /// Token counts for the whole answer (after every finish).
    fn usage(&mut self, out: &mut BytesMut, usage: &Usage);
    /// The stream ended successfully.
    fn done(&mut self, out: &mut BytesMut);
    /// What ends this writer's stream when it fails after its first event, for a dialect whose
    /// failure event refers to what the writer wrote (its response id, the next sequence
    /// number). Taken before the writer goes to the stream translator; `None`: the dialect's
    /// own error event.
    fn on_failure(&self) -> Option<Arc<dyn StreamFailure>> {
        None
    }
}

/// The event ending a stream that failed after its first event (see
/// [`EventWriter::on_failure`]).
pub trait StreamFailure: Send + Sync {
    /// `code`: the error's code (or type), `message`: what went wrong.
    fn event(&self, code: &str, message: &str) -> Bytes;
}

/// Writes whole (non-streamed) answers as one client dialect's response body.
pub trait AnswerWriter: Send + Sync {
    /// The response body for `answers` (one per choice, in order). `id` is the upstream's id for
    /// the answer (empty when it gave none): the dialect derives its own from it. `usage`
    /// covers every choice; the answers' own `usage` fields are not read.
    fn answer_body(
        &self,
        id: &str,
        created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> Bytes;
}

impl<T: AnswerWriter + ?Sized> AnswerWriter for &T {
    fn answer_body(
        &self,
        id: &str,
        created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> Bytes {
        (**self).answer_body(id, created, model, answers, usage)
    }
}
