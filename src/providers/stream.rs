//! The one stream driver: SSE framing over arbitrary body chunks, shared by every format whose
//! streams are SSE. A format only says what one event means ([`EventDecoder::event`]) and what
//! the end of the body means ([`EventDecoder::end`]): whether a final event without its blank
//! line counts, and which missing event makes a stream truncated, differ per format.

use bytes::BytesMut;

use crate::api::Usage;
use crate::providers::{StreamStatus, StreamTranslator};
use crate::sse::{SseEvent, SseFramer};

/// One format's reading of its stream, event by event.
pub trait EventDecoder: Send {
    /// One complete event that has data. `Done` ends the stream (nothing after it is read).
    fn event(&mut self, ev: &SseEvent, out: &mut BytesMut) -> StreamStatus;

    /// An event without data (a comment, a keep-alive): dropped unless the format passes it on.
    fn empty(&mut self, _ev: &SseEvent, _out: &mut BytesMut) {}

    /// The upstream body ended before `Done`. `tail` is what was left after the last complete
    /// event (a final event without its blank line, or a cut one), if anything.
    fn end(&mut self, tail: Option<SseEvent>, out: &mut BytesMut) -> StreamStatus;

    /// Usage seen so far.
    fn usage(&self) -> Option<Usage>;

    /// See [`StreamTranslator::failure_event`].
    fn failure_event(&self, _err: &crate::error::GatewayError) -> Option<bytes::Bytes> {
        None
    }
}

/// A [`StreamTranslator`] made of an SSE framer and a format's [`EventDecoder`].
pub struct SseDriver<D> {
    framer: SseFramer,
    decoder: D,
    done: bool,
    /// Every event's data must be JSON (`[DONE]` aside): set for pass-through decoders, which
    /// copy most events unread (translating ones read each event anyway).
    check_json: bool,
}

impl<D: EventDecoder> SseDriver<D> {
    pub fn new(decoder: D) -> Self {
        SseDriver {
            framer: SseFramer::new(),
            decoder,
            done: false,
            check_json: false,
        }
    }

    /// A driver for a decoder that passes events through: an event whose data is not JSON ends
    /// the stream with an error (`invalid_upstream_response`) instead of reaching the client.
    pub fn passthrough(decoder: D) -> Self {
        SseDriver {
            check_json: true,
            ..Self::new(decoder)
        }
    }

    pub fn decoder(&self) -> &D {
        &self.decoder
    }
}

impl<D: EventDecoder> StreamTranslator for SseDriver<D> {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> StreamStatus {
        if self.done {
            return StreamStatus::Done;
        }
        self.framer.push(input);
        while let Some(ev) = self.framer.next_event() {
            if ev.data.is_empty() {
                self.decoder.empty(&ev, out);
                continue;
            }
            if self.check_json
                && ev.data != "[DONE]"
                && serde_json::from_str::<serde::de::IgnoredAny>(&ev.data).is_err()
            {
                return StreamStatus::Failed(crate::providers::translate::bad_upstream_body(
                    "the upstream",
                    "a stream event's data is not JSON",
                ));
            }
            match self.decoder.event(&ev, out) {
                StreamStatus::Continue => {}
                StreamStatus::Done => {
                    self.done = true;
                    return StreamStatus::Done;
                }
                failed => return failed,
            }
        }
        // One event without its end can only grow: past the cap, the stream is ended (with
        // the client's error event) and the held bytes dropped.
        if self.framer.pending() > crate::sse::MAX_EVENT_BYTES {
            self.done = true;
            self.framer = SseFramer::new();
            return StreamStatus::Failed(crate::providers::translate::event_too_large());
        }
        StreamStatus::Continue
    }

    fn finish(&mut self, out: &mut BytesMut) -> StreamStatus {
        if self.done {
            return StreamStatus::Done;
        }
        let status = self.decoder.end(self.framer.finish(), out);
        if status == StreamStatus::Done {
            self.done = true;
        }
        status
    }

    fn usage(&self) -> Option<Usage> {
        self.decoder.usage()
    }

    fn failure_event(&self, err: &crate::error::GatewayError) -> Option<bytes::Bytes> {
        self.decoder.failure_event(err)
    }
}

/// The end of the body for a format whose stream closes with a terminal event (Anthropic's
/// `message_stop`, Cohere's `message-end`): a final event without its blank line counts (it may
/// be that terminal event); a cut one, or none, means the stream was truncated.
pub fn end_at_terminal_event(
    tail: Option<SseEvent>,
    out: &mut BytesMut,
    mut decode: impl FnMut(&str, &mut BytesMut) -> StreamStatus,
    provider: &str,
    terminal: &str,
) -> StreamStatus {
    if let Some(ev) = tail.filter(|ev| !ev.data.is_empty()) {
        match decode(&ev.data, out) {
            StreamStatus::Failed(e) if !crate::providers::translate::is_unreadable(&e) => {
                return StreamStatus::Failed(e)
            }
            StreamStatus::Done => return StreamStatus::Done,
            _ => {}
        }
    }
    StreamStatus::Failed(crate::providers::translate::truncated(provider, terminal))
}

/// Feeds `input` to a translator in two pieces cut at `split`, then ends it (unless it ended
/// already): what the every-split stream tests run.
#[cfg(test)]
pub(crate) fn feed_split(
    t: &mut dyn StreamTranslator,
    input: &[u8],
    split: usize,
    out: &mut BytesMut,
) -> StreamStatus {
    let mut status = StreamStatus::Continue;
    for part in [&input[..split], &input[split..]] {
        if status == StreamStatus::Continue {
            status = t.feed(part, out);
        }
    }
    if status == StreamStatus::Continue {
        status = t.finish(out);
    }
    status
}

/// The `data:` payloads of an OpenAI chat SSE stream, as JSON (`[DONE]` as a string); the
/// stream must end on an event boundary.
#[cfg(test)]
pub(crate) fn data_events(out: &[u8]) -> Vec<serde_json::Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let d = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e}"));
            if d == "[DONE]" {
                serde_json::json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

/// Feeds `input` one byte at a time, then ends the stream (unless it ended already).
#[cfg(test)]
pub(crate) fn feed_bytewise(
    t: &mut dyn StreamTranslator,
    input: &[u8],
    out: &mut BytesMut,
) -> StreamStatus {
    let mut status = StreamStatus::Continue;
    for b in input {
        if status == StreamStatus::Continue {
            status = t.feed(std::slice::from_ref(b), out);
        }
    }
    if status == StreamStatus::Continue {
        status = t.finish(out);
    }
    status
}
