//! OpenAI Chat Completions (`POST /v1/chat/completions`): the canonical request is this
//! dialect's own, so parsing is `ChatRequest`'s and the writers are `api`'s
//! (`chat.completion` bodies, `chat.completion.chunk` SSE events, the OpenAI error object).
//!
//! ```sh
//! curl localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \
//!   -d '{"model":"echo/test","messages":[{"role":"user","content":"hi"}]}'
//! ```

use bytes::Bytes;

use crate::api::{ChatCompletionsWriter, ChatRequest, ChunkWriter};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::error::GatewayError;

use super::Dialect;

pub struct OpenAiChat;

impl Dialect for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai.chat"
    }

    fn native_format(&self) -> &'static str {
        "openai"
    }

    fn parse(&self, body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse_with(body, spans)
    }

    fn answers(&self) -> &dyn AnswerWriter {
        &ChatCompletionsWriter
    }

    fn events(&self, model: &str) -> Box<dyn EventWriter> {
        Box::new(ChunkWriter::new(model))
    }

    fn error_body(&self, e: &GatewayError) -> Bytes {
        e.body()
    }

    fn error_event(&self, e: &GatewayError) -> Bytes {
        e.sse_event()
    }
}
