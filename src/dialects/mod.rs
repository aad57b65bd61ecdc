//! Inbound client APIs ("dialects"): each parses a client's request into the gateway's
//! canonical request and writes canonical answers, stream events and errors in its own format.
//! One file per dialect, registered in [`DIALECTS`] by the path it serves; the proxy's
//! lifecycle (`proxy/chat.rs`) runs every one the same way: admit, parse, route, cache,
//! exchange, respond, log.
//!
//! The canonical request is OpenAI Chat Completions' ([`ChatRequest`]), the canonical answer
//! and events are [`crate::canonical`]'s. Providers decode their upstream's answers into the
//! dialect's writers; a provider whose wire format is the dialect's own
//! ([`Dialect::native_format`]) passes the upstream's bytes through untouched instead (the
//! OpenAI-compatible family for OpenAI chat), so translation happens only for the pairs that
//! differ: N dialects plus M provider codecs, never N x M translators.
//!
//! To add a dialect: write `dialects/<name>.rs` implementing [`Dialect`], and add its path to
//! [`DIALECTS`].

use bytes::{Bytes, BytesMut};

use crate::api::ChatRequest;
use crate::canonical::{Answer, AnswerWriter, EventWriter};
use crate::error::GatewayError;

pub mod anthropic_messages;
pub mod openai_chat;
pub mod openai_responses;
pub mod responses_head;

/// One inbound client API.
pub trait Dialect: Send + Sync {
    /// For logs (`openai.chat`).
    fn name(&self) -> &'static str;

    /// The provider wire format that is this dialect on the wire: between the two, requests
    /// and answers pass through as bytes.
    fn native_format(&self) -> &'static str;

    /// Parses a client's request body into the canonical request. `spans`: note where plain
    /// messages sit, for the cache key (only when the cache is on).
    fn parse(&self, body: &Bytes, spans: bool) -> Result<ChatRequest, GatewayError>;

    /// Writes whole answers as this dialect's response body.
    fn answers(&self) -> &dyn AnswerWriter;

    /// Writes stream events as this dialect's stream, for one answer of `model`.
    fn events(&self, model: &str) -> Box<dyn EventWriter>;

    /// [`Dialect::answers`] for one request: a dialect whose answers depend on the request
    /// (the Responses object echoes its settings) reads what its parse noted
    /// ([`ChatRequest::notes`]).
    fn answers_for<'a>(&'a self, _req: &'a ChatRequest) -> Box<dyn AnswerWriter + 'a> {
        Box::new(self.answers())
    }

    /// [`Dialect::events`] for one request (see [`Dialect::answers_for`]).
    fn events_for(&self, _req: &ChatRequest, model: &str) -> Box<dyn EventWriter> {
        self.events(model)
    }

    /// The HTTP status an error is answered with (the error's own, unless the dialect's API
    /// uses another for it).
    fn status(&self, e: &GatewayError) -> u16 {
        e.status
    }

    /// The body answering a token-count request (`<path>/count_tokens`) with an estimate,
    /// when the dialect's API has such an endpoint.
    fn count_tokens_body(&self, _input_tokens: u64) -> Option<Bytes> {
        None
    }

    /// The gateway's model list (`GET /v1/models`, OpenAI's list object) in this dialect's
    /// shape.
    fn model_list(&self, openai_list: &Bytes) -> Bytes {
        openai_list.clone()
    }

    /// An event that keeps a translated stream alive while the upstream is silent (sent at
    /// least every [`KEEPALIVE_EVERY`] once the stream has started), if the dialect has one.
    fn keepalive(&self) -> Option<Bytes> {
        None
    }

    /// Whether an upstream's error body is already this dialect's error object (then a
    /// pass-through answers the client with it untouched).
    fn is_error_body(&self, _body: &[u8]) -> bool {
        false
    }

    /// An error as this dialect's error body.
    fn error_body(&self, e: &GatewayError) -> Bytes;

    /// An error once the stream has started, as this dialect's stream event.
    fn error_event(&self, e: &GatewayError) -> Bytes;
}

/// How long a translated stream may stay silent before the dialect's keep-alive goes out.
pub const KEEPALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Every dialect, by the path it serves (after the optional `/v1` prefix).
pub static DIALECTS: &[(&str, &dyn Dialect)] = &[
    ("/chat/completions", &openai_chat::OpenAiChat),
    ("/messages", &anthropic_messages::AnthropicMessages),
    ("/responses", &openai_responses::OpenAiResponses),
];

/// The dialect of a request to a path every dialect shares (`GET /v1/models`), by its
/// headers: `anthropic-version` marks an Anthropic client; else OpenAI chat's.
pub fn for_headers(headers: &http::HeaderMap) -> &'static dyn Dialect {
    if headers.contains_key("anthropic-version") {
        &anthropic_messages::AnthropicMessages
    } else {
        &openai_chat::OpenAiChat
    }
}

/// The dialect serving a path (without `/v1` and trailing slashes).
pub fn for_path(path: &str) -> Option<&'static dyn Dialect> {
    DIALECTS.iter().find(|(p, _)| *p == path).map(|(_, d)| *d)
}

/// A whole answer as a stream of events (a cache hit or the echo provider answering a stream
/// request): the role, the reasoning, the text, each tool call, the finish, the usage when
/// asked, the end.
/// The least a replayed delta carries: a few words, as upstreams send them (one delta per
/// token or so) without one event per word.
const REPLAY_PIECE: usize = 24;

/// `text` in pieces of at least [`REPLAY_PIECE`] bytes, each ending where a word does (the
/// last one holds what is left); joined, they are `text`.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        if rest.len() > REPLAY_PIECE {
            // The first whitespace at or after REPLAY_PIECE bytes (a char boundary: ASCII).
            if let Some(at) = rest.as_bytes()[REPLAY_PIECE..]
                .iter()
                .position(u8::is_ascii_whitespace)
            {
                end = REPLAY_PIECE + at + 1;
            }
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

pub fn replay(w: &mut dyn EventWriter, out: &mut BytesMut, answer: &Answer, include_usage: bool) {
    w.role(out, 0);
    if let Some(r) = answer.reasoning.as_deref().filter(|r| !r.is_empty()) {
        for piece in pieces(r) {
            w.reasoning(out, 0, piece);
        }
    }
    if let Some(c) = answer.content.as_deref().filter(|c| !c.is_empty()) {
        for piece in pieces(c) {
            w.text(out, 0, piece);
        }
    }
    for (i, t) in answer.tool_calls.iter().enumerate() {
        w.tool_start(out, 0, i as u32, &t.id, &t.name);
        if !t.arguments.is_empty() {
            w.tool_args(out, 0, i as u32, &t.arguments);
        }
    }
    if let Some(s) = &answer.stop_sequence {
        w.stop_sequence(0, s);
    }
    w.finish(out, 0, &answer.finish_reason);
    if include_usage {
        if let Some(u) = &answer.usage {
            w.usage(out, u);
        }
    }
    w.done(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChunkWriter;
    use crate::canonical::{ToolCall, Usage};

    #[test]
    fn replayed_text_comes_in_pieces_that_join_back() {
        let text = "The capital of France is Paris. Its population is about two million; \
                    the café on the corner serves croissants.\n\nNext paragraph.";
        let got: Vec<&str> = pieces(text).collect();
        assert_eq!(got.concat(), text);
        assert!(got.len() >= 4, "{got:?}");
        for p in &got[..got.len() - 1] {
            assert!(p.len() > REPLAY_PIECE, "{p:?}");
            assert!(p.ends_with(|c: char| c.is_ascii_whitespace()), "{p:?}");
        }
        assert_eq!(pieces("short").collect::<Vec<_>>(), ["short"]);
        assert_eq!(pieces("").count(), 0);
        let long_word = "x".repeat(100);
        assert_eq!(pieces(&long_word).collect::<Vec<_>>(), [long_word.as_str()]);
    }

    #[test]
    fn paths_find_their_dialect() {
        assert_eq!(
            for_path("/chat/completions").map(|d| d.name()),
            Some("openai.chat")
        );
        assert_eq!(
            for_path("/messages").map(|d| d.name()),
            Some("anthropic.messages")
        );
        assert!(for_path("/completions").is_none());
        assert_eq!(
            for_path("/responses").map(|d| d.name()),
            Some("openai.responses")
        );
        for (path, d) in DIALECTS {
            assert!(path.starts_with('/'), "{path}");
            // Responses is spoken by OpenAI-compatible hosts beside their own format.
            if d.native_format() == openai_responses::NATIVE_FORMAT {
                continue;
            }
            assert!(
                crate::providers::REGISTRY
                    .iter()
                    .any(|(f, _)| *f == d.native_format()),
                "{}: native format {} is not a registered provider format",
                d.name(),
                d.native_format()
            );
        }
    }

    #[test]
    fn replay_writes_usage_only_when_asked() {
        let answer = Answer {
            reasoning: None,
            stop_sequence: None,
            content: Some("Paris.".into()),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "lookup".into(),
                arguments: "{\"q\":1}".into(),
            }],
            finish_reason: "tool_calls".into(),
            usage: Some(Usage::new(3, 4)),
        };
        let mut w: Box<dyn EventWriter> = Box::new(ChunkWriter::new("m"));
        let (mut with, mut without) = (BytesMut::new(), BytesMut::new());
        replay(w.as_mut(), &mut with, &answer, true);
        replay(w.as_mut(), &mut without, &answer, false);
        let count = |b: &BytesMut| b.windows(6).filter(|x| x == b"data: ").count();
        assert_eq!((count(&with), count(&without)), (7, 6));
        assert!(String::from_utf8_lossy(&with).contains("\"total_tokens\":7"));
        assert!(!String::from_utf8_lossy(&without).contains("total_tokens"));
    }
}
