//! Configured secrets (provider keys, gateway keys, credentials in URLs) are cut out of anything
//! an upstream sends that the gateway passes on or writes down: error messages, error bodies,
//! stream bytes. Upstreams do echo keys: OpenAI's 401 says `Incorrect API key provided: sk-...`,
//! whole or masked (`sk-abc1************wxyz`, `sk-...wxyz`).
//!
//! - A configured secret anywhere in the text becomes `[REDACTED]`.
//! - A masked echo, a key-shaped token with a run of `*` (two or more) or `.` (three or more)
//!   between a visible start and a visible end of at least four characters, becomes
//!   `[REDACTED]` when some configured secret starts with that start and ends with that end.
//!
//! Secrets shorter than [`MIN_SECRET_LEN`] are not looked for (they would match ordinary text).
//! The set is process-wide: sources register theirs by group ([`set_group`]) at start-up and
//! when they change (the keys file is reloaded). Texts without any secret cost one
//! Aho-Corasick pass and a byte scan for `*`/`.` runs, and are returned borrowed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use once_cell::sync::Lazy;
use parking_lot::RwLock;

/// What a redacted secret reads as.
pub const REDACTED: &str = "[REDACTED]";
/// Shorter secrets are not redacted (and a warning at start-up says so? no: they are test keys).
pub const MIN_SECRET_LEN: usize = 8;

struct Secrets {
    groups: BTreeMap<&'static str, Vec<String>>,
    all: Vec<String>,
    matcher: Option<AhoCorasick>,
    /// The bytes that occur in some secret: a stream chunk ending in another byte (an SSE
    /// chunk ends in a newline) holds nothing back.
    charset: [bool; 256],
}

static SECRETS: Lazy<RwLock<Arc<Secrets>>> = Lazy::new(|| {
    RwLock::new(Arc::new(Secrets {
        groups: BTreeMap::new(),
        all: Vec::new(),
        matcher: None,
        charset: [false; 256],
    }))
});

/// Replaces one source's secrets (e.g. `"providers"`, `"keys"`).
pub fn set_group(group: &'static str, secrets: impl IntoIterator<Item = String>) {
    let mut guard = SECRETS.write();
    let mut groups = guard.groups.clone();
    groups.insert(
        group,
        secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect(),
    );
    let mut all: Vec<String> = groups.values().flatten().cloned().collect();
    // Longest first, so a secret that contains another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.dedup();
    let matcher = if all.is_empty() {
        None
    } else {
        AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&all)
            .ok()
    };
    let mut charset = [false; 256];
    for b in all.iter().flat_map(|s| s.bytes()) {
        charset[b as usize] = true;
    }
    *guard = Arc::new(Secrets {
        groups,
        all,
        matcher,
        charset,
    });
}

/// The password of a `scheme://user:password@host` URL, if it has one.
pub fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = rest.split(['/', '?', '#']).next()?.rsplit_once('@')?.0;
    let pass = auth.split_once(':').map_or(auth, |(_, p)| p);
    (!pass.is_empty()).then(|| pass.to_string())
}

fn current() -> Arc<Secrets> {
    SECRETS.read().clone()
}

/// `text` with every configured secret, and every masked echo of one, replaced.
pub fn text(text: &str) -> Cow<'_, str> {
    match bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Replacements are ASCII and whole tokens or whole secrets were cut: still UTF-8.
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// [`bytes`] for a whole body: the same `Bytes` back when there is nothing to redact.
pub fn body(b: bytes::Bytes) -> bytes::Bytes {
    match self::bytes(&b) {
        Cow::Borrowed(_) => b,
        Cow::Owned(v) => bytes::Bytes::from(v),
    }
}

/// [`text`] for bytes (a body, a stream chunk).
pub fn bytes(input: &[u8]) -> Cow<'_, [u8]> {
    let s = current();
    if s.all.is_empty() {
        return Cow::Borrowed(input);
    }
    let mut out: Cow<[u8]> = Cow::Borrowed(input);
    if let Some(m) = &s.matcher {
        if m.find(input).is_some() {
            let mut v = Vec::with_capacity(input.len());
            m.replace_all_with_bytes(input, &mut v, |_, _, dst| {
                dst.extend_from_slice(REDACTED.as_bytes());
                true
            });
            out = Cow::Owned(v);
        }
    }
    match masked(&out, &s.all) {
        Some(v) => Cow::Owned(v),
        None => out,
    }
}

fn key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

fn mask_char(b: u8) -> bool {
    matches!(b, b'*' | b'.')
}

/// Replaces masked echoes of `secrets` in `input`; `None` when there is none.
fn masked(input: &[u8], secrets: &[String]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    // Mask characters are rare in a body: a SIMD search jumps to each.
    while let Some(at) = memchr::memchr2(b'*', b'.', &input[i..]) {
        i += at;
        // A run of mask characters at i..j.
        let mut j = i;
        while j < input.len() && mask_char(input[j]) {
            j += 1;
        }
        let run = &input[i..j];
        let stars = run.iter().filter(|&&b| b == b'*').count();
        let is_mask = stars >= 2 || (stars == 0 && run.len() >= 3);
        if is_mask {
            let mut start = i;
            while start > copied && key_char(input[start - 1]) {
                start -= 1;
            }
            let mut end = j;
            while end < input.len() && key_char(input[end]) {
                end += 1;
            }
            let (head, tail) = (&input[start..i], &input[j..end]);
            let matches = tail.len() >= 4
                && secrets
                    .iter()
                    .any(|s| s.as_bytes().starts_with(head) && s.as_bytes().ends_with(tail));
            if matches {
                let o = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
                o.extend_from_slice(&input[copied..start]);
                o.extend_from_slice(REDACTED.as_bytes());
                copied = end;
                i = end;
                continue;
            }
        }
        i = j;
    }
    let mut o = out?;
    o.extend_from_slice(&input[copied..]);
    Some(o)
}

/// Redacts a stream passed through chunk by chunk: a secret split between two chunks is still
/// found, because the bytes at a chunk's end that could begin a secret are held back until the
/// next chunk (or [`StreamRedactor::finish`]). SSE chunks end with a blank line, which begins no
/// secret, so in practice nothing is held back.
#[derive(Default)]
pub struct StreamRedactor {
    held: Vec<u8>,
}

impl StreamRedactor {
    pub fn new() -> Self {
        StreamRedactor::default()
    }

    /// Redacts `out` (the next bytes for the client) in place, holding back a tail that could
    /// begin a secret; with `last`, nothing is held back (the stream ends after `out`).
    /// Untouched when there is nothing to redact, which is the usual case: no copy is made.
    pub fn apply(&mut self, out: &mut bytes::BytesMut, last: bool) {
        let s = current();
        if s.all.is_empty() && self.held.is_empty() {
            return;
        }
        if self.held.is_empty() && (last || hold_back(out, &s) == 0) && clean(out, &s) {
            return;
        }
        let mut joined = std::mem::take(&mut self.held);
        joined.extend_from_slice(out);
        let keep = if last { 0 } else { hold_back(&joined, &s) };
        self.held = joined.split_off(joined.len() - keep);
        let red = bytes(&joined);
        out.clear();
        out.extend_from_slice(&red);
    }

    /// What may go out now for `chunk` (see [`StreamRedactor::apply`]).
    pub fn push(&mut self, chunk: &[u8]) -> bytes::Bytes {
        let mut out = bytes::BytesMut::from(chunk);
        self.apply(&mut out, false);
        out.freeze()
    }

    /// What was held back, at the end of the stream.
    pub fn finish(&mut self) -> bytes::Bytes {
        let mut out = bytes::BytesMut::new();
        self.apply(&mut out, true);
        out.freeze()
    }
}

/// Whether `b` holds no secret and no masked echo of one.
fn clean(b: &[u8], s: &Secrets) -> bool {
    if s.matcher.as_ref().is_some_and(|m| m.find(b).is_some()) {
        return false;
    }
    // Masked echoes need a `*` or `.`: most chunks have a `.` somewhere, so scan for runs.
    memchr::memchr2(b'*', b'.', b).is_none() || masked(b, &s.all).is_none()
}

/// How many bytes at the end of `b` could begin a secret, or a masked echo of one.
fn hold_back(b: &[u8], s: &Secrets) -> usize {
    // The tail made of bytes that occur in secrets bounds what could begin one.
    let mut tail = 0;
    while tail < b.len() && s.charset[b[b.len() - 1 - tail] as usize] {
        tail += 1;
    }
    let mut keep = 0;
    for secret in s.all.iter().filter(|_| tail > 0) {
        let sb = secret.as_bytes();
        let max = sb.len().saturating_sub(1).min(tail);
        for k in (keep + 1..=max).rev() {
            if b.ends_with(&sb[..k]) {
                keep = k;
                break;
            }
        }
    }
    let mut tok = 0;
    while tok < b.len() && tok < 256 && {
        let c = b[b.len() - 1 - tok];
        key_char(c) || mask_char(c)
    } {
        tok += 1;
    }
    if tok > 0 && b[b.len() - tok..].iter().any(|&c| mask_char(c)) {
        keep = keep.max(tok);
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, since the set is process-wide.
    #[test]
    fn secrets_whole_masked_and_split_are_redacted() {
        let key = "sk-proj-abcdefgh12345678wxyz";
        set_group("test", vec![key.to_string(), "short".to_string()]);
        assert_eq!(text("nothing here"), "nothing here");
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            text(&format!(
                "Incorrect API key provided: {key}. You can find..."
            )),
            "Incorrect API key provided: [REDACTED]. You can find..."
        );
        for masked in [
            "sk-proj-****wxyz",
            "sk-...wxyz",
            "sk-proj-abcd************wxyz",
        ] {
            assert_eq!(
                text(&format!("Incorrect API key provided: {masked}.")),
                "Incorrect API key provided: [REDACTED].",
                "{masked}"
            );
        }
        // Another key's mask, short secrets and ordinary ellipses stay.
        assert_eq!(text("sk-proj-****abcd"), "sk-proj-****abcd");
        assert_eq!(text("a short word..."), "a short word...");
        assert_eq!(text("wait... wxyz"), "wait... wxyz");
        // Split across chunks at every offset.
        let body = format!("data: {{\"error\":{{\"message\":\"bad key {key}\"}}}}\n\n");
        for cut in 0..body.len() {
            let mut r = StreamRedactor::new();
            let mut out = Vec::new();
            out.extend_from_slice(&r.push(&body.as_bytes()[..cut]));
            out.extend_from_slice(&r.push(&body.as_bytes()[cut..]));
            out.extend_from_slice(&r.finish());
            let out = String::from_utf8(out).expect("utf-8");
            assert!(!out.contains("abcdefgh"), "cut {cut}: {out}");
            assert!(out.contains("bad key [REDACTED]"), "cut {cut}: {out}");
        }
        // An SSE chunk ending in a blank line is passed on whole.
        let mut r = StreamRedactor::new();
        assert_eq!(r.push(b"data: {}\n\n").as_ref(), b"data: {}\n\n");
        assert!(r.finish().is_empty());
        assert_eq!(
            url_password("redis://:pw123456@h:6379/0").as_deref(),
            Some("pw123456")
        );
        assert_eq!(
            url_password("redis://u:p4ssw0rd@h").as_deref(),
            Some("p4ssw0rd")
        );
        assert_eq!(url_password("redis://h:6379"), None);
        set_group("test", Vec::new());
    }
}
