//! `echo`: the built-in offline provider. It answers with the last user message (streamed word
//! by word), so the gateway works with no configuration at all, and tests and load tests need
//! no upstream. Token counts are whitespace-separated words.

use bytes::Bytes;

use crate::api::{content_text, Answer, ChatRequest, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::GatewayError;
use crate::providers::{CallInfo, Provider, StreamTranslator, Translated, UpstreamRequest};

pub struct Echo {
    cfg: ProviderConfig,
}

impl Echo {
    pub fn new(cfg: ProviderConfig) -> Self {
        Echo { cfg }
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The answer to a chat request: the last user message's text.
pub fn answer(req: &ChatRequest) -> Answer {
    let messages = req.messages();
    let mut prompt = 0;
    for m in messages {
        prompt += words(&content_text(m.get("content")));
    }
    let text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let completion = words(&text);
    Answer {
        reasoning: None,
        stop_sequence: None,
        content: Some(text),
        tool_calls: Vec::new(),
        finish_reason: "stop".into(),
        usage: Some(Usage::new(prompt, completion)),
    }
}

/// Splits text into word-sized pieces that concatenate back to the original
/// (`"hello big world"` -> `"hello"`, `" big"`, `" world"`).
pub fn word_pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                out.push(&text[start..i]);
                start = i;
                in_word = false;
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

impl Provider for Echo {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        _req: &ChatRequest,
        _call: &CallInfo,
        _backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::internal("echo is served in-process"))
    }

    fn chat_response(
        &self,
        _body: Bytes,
        _call: &CallInfo,
        _w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        Err(GatewayError::internal("echo is served in-process"))
    }

    fn stream_translator(
        &self,
        _call: &CallInfo,
        _w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        Box::new(NoStream)
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        crate::providers::openai::openai_error(status, body)
    }
}

struct NoStream;

impl StreamTranslator for NoStream {
    fn feed(
        &mut self,
        _input: &[u8],
        _out: &mut bytes::BytesMut,
    ) -> crate::providers::StreamStatus {
        crate::providers::StreamStatus::Done
    }
    fn finish(&mut self, _out: &mut bytes::BytesMut) -> crate::providers::StreamStatus {
        crate::providers::StreamStatus::Done
    }
    fn usage(&self) -> Option<Usage> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rebuild_the_text() {
        for t in ["hello big world", "  lead", "trail  ", "", "one", "a\n\nb"] {
            assert_eq!(word_pieces(t).concat(), t);
        }
        assert_eq!(
            word_pieces("hello big world"),
            vec!["hello", " big", " world"]
        );
    }

    #[test]
    fn answers_the_last_user_message() {
        let req = ChatRequest::parse(br#"{"model":"echo","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"say hi"}]}]}"#).unwrap();
        let a = answer(&req);
        assert_eq!(a.content.as_deref(), Some("say hi"));
        assert_eq!(a.usage, Some(Usage::new(6, 2)));
    }
}
