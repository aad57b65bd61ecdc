//! The Messages API passed through, for a client that speaks it (the `anthropic.messages`
//! dialect): the client's body goes byte for byte with only `model` rewritten, answers and
//! stream events come back as they are. Only usage is read on the side, and a stream that ends
//! without `message_stop` (or with an `error` event) is reported as failed, so the client gets
//! an `error` event rather than a silent end.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::translate::Counts;
use super::wire::AnthropicUsage;
use super::{map_error, status_for_type, NAME};
use crate::api::Usage;
use crate::error::GatewayError;
use crate::providers::stream::EventDecoder;
use crate::providers::{translate, StreamStatus};
use crate::sse::SseEvent;

#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
}

/// A passed-through request's body with `model` as the upstream names it: spliced where the
/// dialect's first pass found it, else found by a scan of the body.
pub fn native_body_for(
    req: &crate::api::ChatRequest,
    native: &Bytes,
    model: &str,
) -> Result<Bytes, GatewayError> {
    match req.native_model_span() {
        Some(span) => splice_model(native, span, model),
        None => rewrite_model(native, model),
    }
}

/// The client's body with its `model` value replaced by `model`; every other byte as sent.
pub fn rewrite_model(body: &Bytes, model: &str) -> Result<Bytes, GatewayError> {
    let field: ModelField = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request("model", format!("reading 'model': {e}")))?;
    let raw = field.model.get();
    // `raw` borrows from `body`: its place in it is a difference of addresses.
    let start = (raw.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    splice_model(body, (start, start + raw.len()), model)
}

/// The client's body with the JSON text at `start..end` (its `model` value, found by an earlier
/// pass) replaced by `model`; every other byte as sent. The span must hold a JSON string.
pub fn splice_model(
    body: &Bytes,
    (start, end): (usize, usize),
    model: &str,
) -> Result<Bytes, GatewayError> {
    let located = body
        .get(start..end)
        .is_some_and(|v| v.len() >= 2 && v.first() == Some(&b'"') && v.last() == Some(&b'"'));
    if !located {
        return Err(GatewayError::internal(
            "could not locate 'model' in the body",
        ));
    }
    let value = serde_json::to_string(model)
        .map_err(|e| GatewayError::internal(format!("encoding the model: {e}")))?;
    let mut out = BytesMut::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&body[end..]);
    Ok(out.freeze())
}

#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// The usage of a `message` body.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    let u = serde_json::from_slice::<UsageOnly>(body).ok()?.usage?;
    let mut c = Counts::default();
    c.update(&u);
    Some(c.usage())
}

#[derive(Deserialize)]
struct StartUsage {
    #[serde(default)]
    usage: AnthropicUsage,
}

/// What the pass-through reads of an event: its type, and usage where it carries one.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Seen {
    MessageStart {
        message: StartUsage,
    },
    MessageDelta {
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: Option<serde_json::Value>,
    },
    #[serde(other)]
    Other,
}

/// A Messages stream passed through event by event.
#[derive(Default)]
pub struct PassthroughStream {
    counts: Option<Counts>,
}

impl PassthroughStream {
    fn read(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus {
        // Only the events that carry usage or end the stream are parsed.
        let name = ev.event.as_deref().unwrap_or("");
        let interesting = matches!(
            name,
            "message_start" | "message_delta" | "message_stop" | "error" | ""
        );
        if interesting {
            match serde_json::from_str::<Seen>(&ev.data) {
                Ok(Seen::MessageStart { message }) => {
                    self.counts
                        .get_or_insert_with(Counts::default)
                        .update(&message.usage);
                }
                Ok(Seen::MessageDelta { usage: Some(u) }) => {
                    self.counts.get_or_insert_with(Counts::default).update(&u);
                }
                Ok(Seen::MessageStop) => {
                    out.extend_from_slice(&ev.raw);
                    return StreamStatus::Done;
                }
                Ok(Seen::Error { error }) => {
                    let t = error
                        .as_ref()
                        .and_then(|e| e.get("type"))
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("api_error");
                    let status = status_for_type(t);
                    let body = serde_json::json!({"type": "error", "error": error}).to_string();
                    let mut e = map_error(status, body.as_bytes());
                    e.upstream = true;
                    e.label = "upstream_stream_error";
                    return StreamStatus::Failed(e);
                }
                _ => {}
            }
        }
        out.extend_from_slice(&ev.raw);
        StreamStatus::Continue
    }
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
            // A final `message_stop` without its blank line counts.
            if let Ok(Seen::MessageStop) = serde_json::from_str::<Seen>(&ev.data) {
                out.extend_from_slice(&ev.raw);
                out.extend_from_slice(b"\n\n");
                return StreamStatus::Done;
            }
        }
        StreamStatus::Failed(translate::truncated(NAME, "message_stop"))
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::stream::SseDriver;
    use crate::providers::StreamTranslator;

    #[test]
    fn only_the_model_changes() {
        let body = Bytes::from_static(
            b"{ \"max_tokens\" : 5,\n \"model\":  \"claude-x\" , \"z\":{\"model\":\"keep\"}}",
        );
        let out = rewrite_model(&body, "claude-\"y").unwrap();
        assert_eq!(
            &out[..],
            &b"{ \"max_tokens\" : 5,\n \"model\":  \"claude-\\\"y\" , \"z\":{\"model\":\"keep\"}}"
                [..]
        );
        assert!(rewrite_model(&Bytes::from_static(b"{}"), "m").is_err());
    }

    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1,\"cache_read_input_tokens\":2}}}\n\n",
        ": a comment\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"c2ln\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn run(input: &[u8], split: usize) -> (Vec<u8>, StreamStatus, Option<Usage>) {
        let mut t = SseDriver::new(PassthroughStream::default());
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(&mut t, input, split, &mut out);
        (out.to_vec(), status, t.usage())
    }

    #[test]
    fn passes_through_byte_for_byte_at_every_split() {
        let input = STREAM.as_bytes();
        for split in 0..=input.len() {
            let (out, status, usage) = run(input, split);
            assert_eq!(out, input, "split {split}");
            assert_eq!(status, StreamStatus::Done, "split {split}");
            let mut want = Usage::new(12, 7);
            want.cached_tokens = 2;
            assert_eq!(usage, Some(want));
        }
    }

    #[test]
    fn a_stream_without_message_stop_fails() {
        let cut = &STREAM.as_bytes()[..STREAM.find("event: message_stop").unwrap()];
        for split in 0..=cut.len() {
            let (out, status, _) = run(cut, split);
            assert_eq!(out, cut, "split {split}");
            assert!(
                matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
                "{status:?}"
            );
        }
    }

    #[test]
    fn an_error_event_fails_with_its_type() {
        let input = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (out, status, _) = run(input, 5);
        assert!(out.is_empty());
        match status {
            StreamStatus::Failed(e) => {
                assert_eq!(e.message, "Overloaded");
                assert_eq!(e.code.as_deref(), Some("overloaded_error"));
            }
            other => panic!("{other:?}"),
        }
    }
}
