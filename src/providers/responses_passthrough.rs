//! The OpenAI Responses API passed through, for a client that speaks it (the
//! `openai.responses` dialect) and a host that speaks it too (OpenAI; hosts switched on with
//! `<PROVIDER>_NATIVE_RESPONSES`): the client's body goes byte for byte with only `model`
//! rewritten, answers and stream events come back as they are. Only usage, the response's id
//! and the end of the stream are read on the side: a stream that ends without
//! `response.completed` / `response.incomplete` is reported as failed, and the client gets a
//! `response.failed` event for the same response, numbered after the last event it had.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::api::Usage;
use crate::error::GatewayError;
use crate::providers::stream::EventDecoder;
use crate::providers::{translate, StreamStatus};
use crate::sse::SseEvent;

/// The Responses API's `usage` object.
#[derive(Deserialize, Default, Clone, Copy)]
struct UsageWire {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<Cached>,
    #[serde(default)]
    output_tokens_details: Option<Reasoning>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Cached {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Reasoning {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl UsageWire {
    fn usage(self) -> Usage {
        Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: self
                .total_tokens
                .unwrap_or(self.input_tokens + self.output_tokens),
            cached_tokens: self.input_tokens_details.unwrap_or_default().cached_tokens,
            reasoning_tokens: self
                .output_tokens_details
                .unwrap_or_default()
                .reasoning_tokens,
        }
    }
}

/// What is read of a `response` object: its id and usage.
#[derive(Deserialize)]
struct ResponseHead<'a> {
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

/// The id and usage of a `response` body (either may be missing).
pub fn read_response(body: &[u8]) -> (Option<String>, Option<Usage>) {
    match serde_json::from_slice::<ResponseHead>(body) {
        Ok(r) => (r.id.map(|c| c.into_owned()), r.usage.map(UsageWire::usage)),
        Err(_) => (None, None),
    }
}

/// The id of a `response` body: read from its start when `id` is its first field (as OpenAI
/// writes it, compact or indented), else by reading the body.
pub fn response_id(body: &[u8]) -> Option<String> {
    fn skip_ws(b: &[u8]) -> &[u8] {
        let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
        &b[n..]
    }
    let leading = (|| {
        let b = skip_ws(body).strip_prefix(b"{")?;
        let b = skip_ws(b).strip_prefix(b"\"id\"")?;
        let b = skip_ws(b).strip_prefix(b":")?;
        let b = skip_ws(b).strip_prefix(b"\"")?;
        let end = b.iter().position(|c| *c == b'"')?;
        let id = &b[..end];
        // Escapes and control characters: left to the parser.
        if id.iter().any(|c| *c == b'\\' || *c < 0x20) {
            return None;
        }
        std::str::from_utf8(id).ok().map(str::to_string)
    })();
    leading.or_else(|| read_response(body).0)
}

/// The events the pass-through reads, with what it reads of them.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum Seen<'a> {
    #[serde(rename = "response.created")]
    Created {
        #[serde(borrow)]
        response: ResponseHead<'a>,
    },
    #[serde(rename = "response.completed", alias = "response.incomplete")]
    Finished {
        #[serde(borrow)]
        response: ResponseHead<'a>,
    },
    #[serde(rename = "response.failed")]
    Failed {
        #[serde(default)]
        response: Option<serde_json::Value>,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(default)]
        code: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
    },
    #[serde(other)]
    Other,
}

/// Event names worth parsing (the others pass untouched, unparsed).
fn interesting(name: &str) -> bool {
    matches!(
        name,
        "" | "response.created"
            | "response.completed"
            | "response.incomplete"
            | "response.failed"
            | "error"
    )
}

/// A Responses stream passed through event by event.
#[derive(Default)]
pub struct PassthroughStream {
    /// Events with data forwarded so far: OpenAI numbers them from 0, so this is the next
    /// `sequence_number`.
    events: u64,
    id: Option<String>,
    model: Option<String>,
    usage: Option<Usage>,
    /// The upstream ended the stream with its own failure event (already forwarded).
    reported: bool,
}

impl PassthroughStream {
    /// The response id the upstream announced (`response.created`).
    pub fn response_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn read(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        self.events += 1;
        let name = ev.event.as_deref().unwrap_or("");
        if !interesting(name) {
            out.extend_from_slice(&ev.raw);
            return StreamStatus::Continue;
        }
        match serde_json::from_str::<Seen>(&ev.data) {
            Ok(Seen::Created { response }) => {
                self.id = response.id.map(|c| c.into_owned());
                if self.model.is_none() {
                    self.model = model_of(&ev.data);
                }
            }
            Ok(Seen::Finished { response }) => {
                self.usage = response.usage.map(UsageWire::usage).or(self.usage);
                out.extend_from_slice(&ev.raw);
                return StreamStatus::Done;
            }
            Ok(Seen::Failed { response }) => {
                out.extend_from_slice(&ev.raw);
                self.reported = true;
                let error = response.as_ref().and_then(|r| r.get("error"));
                let text = |k: &str| {
                    error
                        .and_then(|e| e.get(k))
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_string)
                };
                let mut e = GatewayError::new(
                    502,
                    "upstream_error",
                    text("code").as_deref(),
                    text("message").unwrap_or_else(|| "the upstream response failed".into()),
                );
                e.upstream = true;
                e.label = "upstream_stream_error";
                return StreamStatus::Failed(e);
            }
            Ok(Seen::Error { code, message }) => {
                out.extend_from_slice(&ev.raw);
                self.reported = true;
                let code = code.as_ref().and_then(|c| match c {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
                let mut e = GatewayError::new(
                    502,
                    "upstream_error",
                    code.as_deref(),
                    message.unwrap_or_else(|| "the upstream stream failed".into()),
                );
                e.upstream = true;
                e.label = "upstream_stream_error";
                return StreamStatus::Failed(e);
            }
            _ => {}
        }
        out.extend_from_slice(&ev.raw);
        StreamStatus::Continue
    }
}

/// `response.model` of an event, read only once per stream.
fn model_of(data: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct R {
        response: M,
    }
    #[derive(Deserialize)]
    struct M {
        #[serde(default)]
        model: Option<String>,
    }
    serde_json::from_str::<R>(data).ok()?.response.model
}

impl EventDecoder for PassthroughStream {
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        self.read(ev, out)
    }

    /// Comments and keep-alives pass through unchanged.
    fn empty(&mut self, ev: &SseEvent, out: &mut BytesMut) {
        out.extend_from_slice(&ev.raw);
    }

    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus {
        if let Some(ev) = tail.filter(|ev| !ev.data.is_empty()) {
            // A final terminal event without its blank line counts.
            let mut scratch = BytesMut::new();
            match self.read(&ev, &mut scratch) {
                StreamStatus::Continue => self.events -= 1,
                // A terminal event, or the upstream's own failure event: forwarded whole.
                ended => {
                    out.extend_from_slice(&scratch);
                    out.extend_from_slice(b"\n\n");
                    return ended;
                }
            }
        }
        StreamStatus::Failed(translate::truncated(
            "upstream",
            "response.completed or response.incomplete",
        ))
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// A `response.failed` for the upstream's response, numbered after the last event
    /// forwarded; nothing when the upstream sent its own failure event.
    fn failure_event(&self, err: &GatewayError) -> Option<Bytes> {
        if self.reported {
            return Some(Bytes::new());
        }
        let id = self.id.clone()?;
        let code = err.code.as_deref().unwrap_or(err.kind.as_str());
        let response = serde_json::json!({
            "id": id,
            "object": "response",
            "created_at": crate::api::unix_now(),
            "status": "failed",
            "error": {"code": code, "message": err.message},
            "incomplete_details": null,
            "model": self.model.as_deref().unwrap_or(""),
        });
        let data = serde_json::json!({
            "type": "response.failed",
            "sequence_number": self.events,
            "response": response,
        });
        Some(Bytes::from(format!(
            "event: response.failed\ndata: {data}\n\n"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::stream::{feed_split, SseDriver};
    use crate::providers::StreamTranslator;

    pub const STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up1\",\"object\":\"response\",\"created_at\":1,\"status\":\"in_progress\",\"model\":\"gpt-4o-mini\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_up1\",\"object\":\"response\",\"status\":\"in_progress\"}}\n\n",
        ": keep-alive\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi \\u00e9\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_up1\",\"object\":\"response\",\"status\":\"completed\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":2},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":17}}}\n\n",
    );

    fn run(input: &[u8], split: usize) -> (Vec<u8>, StreamStatus, SseDriver<PassthroughStream>) {
        let mut t = SseDriver::new(PassthroughStream::default());
        let mut out = BytesMut::new();
        let status = feed_split(&mut t, input, split, &mut out);
        (out.to_vec(), status, t)
    }

    #[test]
    fn passes_through_byte_for_byte_at_every_split() {
        let input = STREAM.as_bytes();
        for split in 0..=input.len() {
            let (out, status, t) = run(input, split);
            assert_eq!(out, input, "split {split}");
            assert_eq!(status, StreamStatus::Done, "split {split}");
            let u = t.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total_tokens),
                (12, 5, 17)
            );
            assert_eq!((u.cached_tokens, u.reasoning_tokens), (2, 1));
            assert_eq!(t.decoder().response_id(), Some("resp_up1"));
        }
        // The last event without its blank line still ends the stream.
        let trimmed = STREAM.trim_end().as_bytes();
        let (out, status, _) = run(trimmed, 10);
        assert_eq!(status, StreamStatus::Done);
        assert_eq!(out, input);
    }

    #[test]
    fn a_cut_stream_fails_with_a_numbered_response_failed() {
        let cut = &STREAM.as_bytes()[..STREAM.find("event: response.completed").unwrap() + 30];
        for split in 0..=cut.len() {
            let (out, status, t) = run(cut, split);
            assert!(STREAM.as_bytes().starts_with(&out), "split {split}");
            let StreamStatus::Failed(e) = status else {
                panic!("{status:?}")
            };
            assert_eq!(e.code.as_deref(), Some("stream_truncated"));
            let ev = t.decoder().failure_event(&e).unwrap();
            let text = std::str::from_utf8(&ev).unwrap();
            assert!(text.starts_with("event: response.failed\ndata: "), "{text}");
            let v: serde_json::Value =
                serde_json::from_str(text.trim_end().split_once("data: ").unwrap().1).unwrap();
            assert_eq!(v["sequence_number"], 3, "split {split}");
            assert_eq!(v["response"]["id"], "resp_up1");
            assert_eq!(v["response"]["status"], "failed");
            assert_eq!(v["response"]["error"]["code"], "stream_truncated");
        }
    }

    #[test]
    fn an_upstream_failure_event_is_forwarded_once() {
        let input = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up2\"}}\n\n",
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_up2\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n",
        );
        let (out, status, t) = run(input.as_bytes(), 7);
        assert_eq!(out, input.as_bytes());
        let StreamStatus::Failed(e) = status else {
            panic!("{status:?}")
        };
        assert_eq!(e.message, "boom");
        assert_eq!(t.decoder().failure_event(&e), Some(Bytes::new()));
    }

    #[test]
    fn reads_a_plain_response() {
        let (id, usage) = read_response(
            br#"{"id":"resp_9","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"x"}]}],"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}"#,
        );
        assert_eq!(id.as_deref(), Some("resp_9"));
        assert_eq!(usage.unwrap().total_tokens, 7);
        assert_eq!(read_response(b"nope"), (None, None));
        assert_eq!(
            response_id(b"{\n  \"id\": \"resp_67cc\",\n  \"object\": \"response\"}").as_deref(),
            Some("resp_67cc")
        );
        assert_eq!(
            response_id(br#"{"object":"response","id":"resp_2"}"#).as_deref(),
            Some("resp_2")
        );
        assert_eq!(
            response_id(br#"{"id":"a\"b","x":1}"#).as_deref(),
            Some("a\"b")
        );
        assert_eq!(response_id(b"[]"), None);
    }
}
