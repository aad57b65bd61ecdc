//! SSE framing over arbitrary body chunks.
//!
//! Upstream bodies arrive in chunks that cut events anywhere (inside a line, between `\r` and
//! `\n`). [`SseFramer`] buffers only the unfinished tail and hands out each complete event as
//! soon as its terminating blank line arrives, with its raw bytes (for byte-exact
//! pass-through) and its parsed `event:` and `data:` fields.

use bytes::{Bytes, BytesMut};

/// One complete SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event exactly as received, terminating blank line included.
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (empty when there were none).
    pub data: String,
}

impl SseEvent {
    /// A comment-only or empty event (keep-alives): nothing to translate.
    pub fn is_empty(&self) -> bool {
        self.event.is_none() && self.data.is_empty()
    }
}

/// The largest stream event the gateway holds (an upstream's event still without its end):
/// 8 MiB, room for a large image in base64.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// Splits a byte stream into SSE events.
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: BytesMut,
    /// Where to resume scanning for the end of the current event.
    scan: usize,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes from the wire.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received that are not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let end = self.find_event_end()?;
        let raw = self.buf.split_to(end).freeze();
        self.scan = 0;
        let (event, data) = parse_fields(&raw);
        Some(SseEvent { raw, event, data })
    }

    /// Takes whatever is left at end of stream (an unterminated final event), if anything
    /// meaningful.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        let raw = self.buf.split().freeze();
        self.scan = 0;
        let (event, data) = parse_fields(&raw);
        Some(SseEvent { raw, event, data })
    }

    /// Finds the end (exclusive) of the first event: a line terminator followed by an empty
    /// line. Terminators are `\r\n`, `\n` or `\r`; a `\r` at the very end of the buffer is not
    /// decided until the next byte arrives.
    fn find_event_end(&mut self) -> Option<usize> {
        let b = &self.buf[..];
        let mut i = self.scan;
        // Is position i at the start of a line? True at 0, or after a terminator.
        let mut line_start = i == 0 || {
            let p = b[i - 1];
            p == b'\n' || (p == b'\r' && b.get(i) != Some(&b'\n'))
        };
        while i < b.len() {
            let c = b[i];
            if c == b'\n' || c == b'\r' {
                let term_len = if c == b'\r' {
                    match b.get(i + 1) {
                        Some(b'\n') => 2,
                        Some(_) => 1,
                        None => {
                            // Undecided: wait for more bytes.
                            self.scan = i;
                            return None;
                        }
                    }
                } else {
                    1
                };
                if line_start {
                    // An empty line: the event ends after its terminator.
                    return Some(i + term_len);
                }
                i += term_len;
                line_start = true;
            } else {
                line_start = false;
                i += 1;
            }
        }
        // Resume at a point where line_start can be recomputed from the previous byte.
        self.scan = i;
        None
    }
}

fn parse_fields(raw: &[u8]) -> (Option<String>, String) {
    let mut event = None;
    let mut data: Option<String> = None;
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, next) = split_line(rest);
        rest = next;
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                let v = v.strip_prefix(b" ").unwrap_or(v);
                (&line[..p], v)
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => data = Some(value.into_owned()),
            },
            b"event" => event = Some(value.into_owned()),
            _ => {}
        }
    }
    (event, data.unwrap_or_default())
}

fn split_line(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b'\n' || c == b'\r') {
        None => (b, &[]),
        Some(p) => {
            let skip = if b[p] == b'\r' && b.get(p + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            (&b[..p], &b[p + skip..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_all(input: &[u8], split_at: usize) -> Vec<SseEvent> {
        let mut f = SseFramer::new();
        let mut out = Vec::new();
        for part in [&input[..split_at], &input[split_at..]] {
            f.push(part);
            while let Some(e) = f.next_event() {
                out.push(e);
            }
        }
        if let Some(e) = f.finish() {
            out.push(e);
        }
        out
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]\r\r";
        let whole = collect_all(input, 0);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[0].data, "{\"a\":1}");
        assert!(whole[1].is_empty());
        assert_eq!(whole[2].data, "x\ny");
        assert_eq!(whole[3].data, "[DONE]");
        let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, input.to_vec());
        for i in 0..=input.len() {
            assert_eq!(collect_all(input, i), whole, "split at {i}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let input = b"data: a\n\ndata: b\r\n\r\n";
        let mut f = SseFramer::new();
        let mut got = Vec::new();
        for b in input {
            f.push(&[*b]);
            while let Some(e) = f.next_event() {
                got.push(e.data);
            }
        }
        assert_eq!(got, vec!["a", "b"]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn unterminated_tail_is_returned_by_finish() {
        let mut f = SseFramer::new();
        f.push(b"data: {\"x\":1}");
        assert!(f.next_event().is_none());
        assert_eq!(f.finish().unwrap().data, "{\"x\":1}");
    }
}
