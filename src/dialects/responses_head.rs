//! What the proxy reads of an OpenAI Responses request before any attempt: its model, whether
//! it streams, `parallel_tool_calls`, `store` and `previous_response_id`. Read with borrowed
//! types, every other value skipped unparsed, so a pass-through to a host that speaks
//! Responses never pays for the translation (`openai_responses.rs`), which runs only when a
//! translated attempt or the cache needs it.

use std::borrow::Cow;

use bytes::Bytes;

use crate::api::{ChatRequest, Translate};

/// The head of a Responses request.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub model: String,
    /// Where `model`'s value (JSON text, quotes included) is in the body.
    pub model_span: (usize, usize),
    /// Where `input`'s value (JSON text: a string or an array of items) is in the body.
    pub input_span: (usize, usize),
    pub stream: bool,
    pub parallel_tool_calls: bool,
    /// `store` is not `false` (OpenAI's default is to store).
    pub store: bool,
    pub previous_response_id: Option<String>,
}

/// The head of `body`, when it is a JSON object with a non-empty string `model`, an `input`,
/// and `stream`, `parallel_tool_calls`, `store` booleans (or absent), none of them twice;
/// `None` otherwise (the full translation then words the error).
///
/// One structural scan ([`Scan`]): strings are skipped with a SIMD search for their closing
/// quote, so a long conversation costs a fraction of a parse. It checks the structure (string
/// escapes, balanced brackets, literals, the top level's grammar), not what is inside strings
/// (UTF-8, control characters) nor the grammar between values inside `input` and other
/// containers (`[1,,2]` passes): a request that goes on as sent is read in full by the
/// upstream, and a translated one by the translation, which answers such a body with a 400.
pub fn read(body: &[u8]) -> Option<Head> {
    let mut s = Scan { b: body, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut model = None;
    let mut input = None;
    let mut stream = None;
    let mut parallel = None;
    let mut store = None;
    let mut previous = None;
    s.ws();
    if s.peek()? != b'}' {
        loop {
            let key = s.string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let start = s.i;
            s.value()?;
            let span = (start, s.i);
            let name: Cow<[u8]> = if key.contains(&b'\\') {
                // A key written with escapes, decoded.
                Cow::Owned(serde_json::from_slice::<String>(key).ok()?.into_bytes())
            } else {
                Cow::Borrowed(&key[1..key.len() - 1])
            };
            let slot = match &*name {
                b"model" => Some(&mut model),
                b"input" => Some(&mut input),
                b"stream" => Some(&mut stream),
                b"parallel_tool_calls" => Some(&mut parallel),
                b"store" => Some(&mut store),
                b"previous_response_id" => Some(&mut previous),
                _ => None,
            };
            // Twice: which one an upstream reads is its own choice.
            if slot.is_some_and(|slot| slot.replace(span).is_some()) {
                return None;
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    } else {
        s.i += 1;
    }
    s.ws();
    if s.i != body.len() {
        return None;
    }
    let text = |(a, b): (usize, usize)| &body[a..b];
    let flag = |span: Option<(usize, usize)>, default: bool| match span.map(text) {
        None | Some(b"null") => Some(default),
        Some(b"true") => Some(true),
        Some(b"false") => Some(false),
        Some(_) => None,
    };
    let model_span = model?;
    let model: String = serde_json::from_slice(text(model_span)).ok()?;
    if model.trim().is_empty() {
        return None;
    }
    let input_span = input.filter(|s| text(*s) != b"null")?;
    let previous_response_id = match previous.map(text) {
        None | Some(b"null") => None,
        Some(raw) => Some(serde_json::from_slice::<String>(raw).ok()?).filter(|s| !s.is_empty()),
    };
    Some(Head {
        model,
        model_span,
        input_span,
        stream: flag(stream, false)?,
        parallel_tool_calls: flag(parallel, true)?,
        store: flag(store, true)?,
        previous_response_id,
    })
}

/// Where the first `"` or `\\` in `b` is. Keys and short values end within a few words: eight
/// bytes at a time in a register for the first 32; a SIMD search past those (its set-up costs
/// more than a short string).
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let near = b.len().min(32);
    for (w, chunk) in b[..near].chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let (q, s) = (v ^ (LO * u64::from(b'"')), v ^ (LO * u64::from(b'\\')));
        // A zero byte of `q` or `s`: the lowest flagged byte is always a true one.
        let hit = (q.wrapping_sub(LO) & !q | s.wrapping_sub(LO) & !s) & HI;
        if hit != 0 {
            return Some(w * 8 + (hit.trailing_zeros() / 8) as usize);
        }
    }
    let from = near - near % 8;
    memchr::memchr2(b'"', b'\\', &b[from..]).map(|at| from + at)
}

/// A JSON scanner over `b` from `i`: each step `None` where the text is not JSON.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string at `i`: its text, quotes included.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        self.eat(b'"')?;
        loop {
            let rest = &self.b[self.i..];
            let at = quote_or_backslash(rest)?;
            self.i += at + 1;
            if rest[at] == b'"' {
                return Some(&self.b[start..self.i]);
            }
            match self.next()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    let hex = self.b.get(self.i..self.i + 4)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.i += 4;
                }
                _ => return None,
            }
        }
    }

    /// A literal or number at `i` (its characters; the upstream or the translation reads it).
    fn scalar(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')) {
                break;
            }
            self.i += 1;
        }
        let word = &self.b[start..self.i];
        match word.first()? {
            b't' => (word == b"true").then_some(()),
            b'f' => (word == b"false").then_some(()),
            b'n' => (word == b"null").then_some(()),
            b'-' | b'0'..=b'9' => word
                .iter()
                .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                .then_some(()),
            _ => None,
        }
    }

    /// One value at `i`; containers by bracket depth, their strings skipped whole.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                // The open brackets, innermost lowest: a bit each, set for `{` (serde_json
                // refuses more than 128 levels too).
                let (mut open, mut depth) = (0u128, 0u32);
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                        }
                        c @ (b'{' | b'[') => {
                            if depth == 128 {
                                return None;
                            }
                            open = open << 1 | u128::from(c == b'{');
                            depth += 1;
                            self.i += 1;
                        }
                        c @ (b'}' | b']') => {
                            if depth == 0 || (open & 1 == 1) != (c == b'}') {
                                return None;
                            }
                            open >>= 1;
                            depth -= 1;
                            self.i += 1;
                        }
                        b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' => self.i += 1,
                        _ => self.scalar()?,
                    }
                    if depth == 0 {
                        return Some(());
                    }
                }
            }
            _ => self.scalar(),
        }
    }
}

impl Head {
    /// The request, its canonical form built by `translate` on first use.
    pub fn deferred(&self, body: &Bytes, translate: Translate) -> ChatRequest {
        ChatRequest::deferred(
            self.model.clone(),
            self.stream,
            self.stream,
            self.parallel_tool_calls,
            body.clone(),
            translate,
        )
        .with_native_model_span(self.model_span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_quote_or_backslash_at_every_place() {
        for len in 0..80 {
            for at in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    // Bytes that a borrow could flag: 0x21 and 0x5b below, 0xa2 above.
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = [b'a', 0x21, 0x5b, 0xa2][i % 4];
                    }
                    if at < len {
                        b[at] = c;
                        if at + 1 < len {
                            b[at + 1] = b'"';
                        }
                    }
                    let want = (at < len).then_some(at);
                    assert_eq!(quote_or_backslash(&b), want, "len {len} at {at}");
                }
            }
        }
    }

    #[test]
    fn reads_what_it_needs_and_refuses_the_rest() {
        let h = read(br#"{"model":"openai/gpt-4o","input":"hi","stream":true,"store":false,"previous_response_id":"resp_1","tools":[{"type":"web_search"}]}"#).unwrap();
        assert_eq!(h.model, "openai/gpt-4o");
        assert_eq!(h.model_span, (9, 24));
        assert_eq!(h.input_span, (33, 37));
        assert!(h.stream && !h.store && h.parallel_tool_calls);
        assert_eq!(h.previous_response_id.as_deref(), Some("resp_1"));
        let h = read(br#"{"input":[],"model":"m","parallel_tool_calls":false}"#).unwrap();
        assert!(!h.stream && h.store && !h.parallel_tool_calls);
        assert_eq!(h.previous_response_id, None);
        // Nesting as deep as serde_json reads, not deeper.
        let deep = |n: usize| {
            format!(
                r#"{{"model":"m","input":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(read(deep(128).as_bytes()).is_some());
        assert_eq!(read(deep(129).as_bytes()), None);
        // Whitespace, escapes (in keys too), nesting, brackets and quotes inside strings.
        let body = br#" { "mod\u0065l" : "a\"b" , "input" : [ {"content": "]}\\\"[{", "n": [1, -2.5e3, null, {}]} ] ,
            "metadata": {"x": [true, false]}, "stream": true } "#;
        let h = read(body).unwrap();
        assert_eq!(h.model, "a\"b");
        assert!(h.stream);
        let (a, b) = h.input_span;
        assert!(body[a..b].starts_with(b"[ {") && body[a..b].ends_with(b"} ]"));
        for bad in [
            &br#"{"input":"x"}"#[..],
            br#"{"model":"","input":"x"}"#,
            br#"{"model":"m"}"#,
            br#"{"model":"m","input":null}"#,
            br#"{"model":"m","input":"x","stream":"yes"}"#,
            br#"[{"model":"m","input":"x"}]"#,
            b"{nope",
            // Twice, broken, or something after it.
            br#"{"model":"a","model":"b","input":"x"}"#,
            br#"{"model":"m","input":"x","store":true,"store":false}"#,
            br#"{"model":"m","input":["x"}"#,
            br#"{"model":"m","input":[{"a":1]}"#,
            br#"{"model":"m","input":"x"} x"#,
            br#"{"model":"m","input":"a\qb"}"#,
            br#"{"model":"m","input":"x","stream":tru}"#,
            br#"{"model":"m","input":"x",}"#,
        ] {
            assert_eq!(read(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
