//! Cache keys: SHA-256 over a canonical form of everything that can change an answer.
//!
//! The canonical form is JSON with object keys sorted at every depth, no whitespace, and
//! integral floats written as integers (`1.0` and `1` are the same temperature). It is written
//! straight into the hasher, so no second copy of a large prompt is made.
//!
//! What goes in: a format version, the resolved provider and upstream model (so `gpt-4o` and
//! `openai/gpt-4o` share entries, and two providers serving the same model name do not), the
//! scope (the gateway key name when `GATEWAY_CACHE_SCOPE=key`), and every body field except
//! [`EXCLUDED`] and `model`.

use std::borrow::Cow;
use std::io::Write;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::providers::translate::CowStr;

/// Body fields that cannot change the answer: how it is delivered, and who asked.
pub const EXCLUDED: &[&str] = &["stream", "stream_options", "user", "metadata"];

/// Bumped whenever the key or the stored value changes shape, so old entries are never read.
const VERSION: &str = "aigw-cache-v1";

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Key> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(s, &mut k).ok()?;
        Some(Key(k))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex()[..16])
    }
}

/// What a key is computed over besides the body.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub provider: &'a str,
    pub upstream_model: &'a str,
    /// `Some(key name)` when entries are scoped per gateway key.
    pub scope: Option<&'a str>,
}

/// The exact-match key of a chat request body.
pub fn exact(id: Identity, body: &Map<String, Value>) -> Key {
    let mut h = header(id, "exact");
    write_body(&mut h, body, None);
    Key(h.finalize().into())
}

/// The semantic "context key": everything except the content of the final message. Two
/// requests with the same context key differ at most in what the user asked last.
pub fn context(id: Identity, body: &Map<String, Value>) -> Key {
    let mut h = header(id, "context");
    write_body(&mut h, body, Some(()));
    Key(h.finalize().into())
}

/// The text of the final message when it is a user message made only of text: what the
/// semantic cache embeds. `None` when the request is not eligible.
pub fn final_user_text(body: &Map<String, Value>) -> Option<String> {
    let last = body.get("messages")?.as_array()?.last()?.as_object()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let text = match last.get("content")? {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    // Images, audio, files: text similarity says nothing about them.
                    return None;
                }
                out.push_str(p.get("text").and_then(Value::as_str)?);
            }
            out
        }
        _ => return None,
    };
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

fn header(id: Identity, kind: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(VERSION.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    h.update([0]);
    // JSON strings: no separator inside them can be mistaken for the next field.
    write_str(&mut h, id.provider);
    write_str(&mut h, id.upstream_model);
    match id.scope {
        Some(s) => write_str(&mut h, s),
        None => h.update(b"null"),
    }
    h
}

/// The body as a sorted object without `model` and the excluded fields; with `without_final`
/// the final message's `content` is left out too (its other fields, e.g. `name`, stay).
fn write_body(h: &mut Sha256, body: &Map<String, Value>, without_final: Option<()>) {
    let mut fields: Vec<(&String, &Value)> = body
        .iter()
        .filter(|(k, _)| k.as_str() != "model" && !EXCLUDED.contains(&k.as_str()))
        .collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    h.update(b"{");
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        write_str(h, k);
        h.update(b":");
        match (k.as_str(), v, without_final) {
            ("messages", Value::Array(msgs), Some(())) if !msgs.is_empty() => {
                h.update(b"[");
                let (last, earlier) = msgs.split_last().unwrap_or((&Value::Null, &[]));
                for m in earlier {
                    write_value(h, m);
                    h.update(b",");
                }
                match last {
                    Value::Object(o) => {
                        let mut o = o.clone();
                        o.remove("content");
                        write_object(h, &o);
                    }
                    other => write_value(h, other),
                }
                h.update(b"]");
            }
            _ => write_value(h, v),
        }
    }
    h.update(b"}");
}

fn write_str(h: &mut Sha256, s: &str) {
    // Writing into a hasher cannot fail.
    let _ = serde_json::to_writer(HashWriter(h), s);
}

fn write_object(h: &mut Sha256, o: &Map<String, Value>) {
    let mut fields: Vec<(&String, &Value)> = o.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    h.update(b"{");
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        write_str(h, k);
        h.update(b":");
        write_value(h, v);
    }
    h.update(b"}");
}

fn write_value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"null"),
        Value::Bool(true) => h.update(b"true"),
        Value::Bool(false) => h.update(b"false"),
        Value::Number(n) => write_number(&mut HashWriter(h), n),
        Value::String(s) => write_str(h, s),
        Value::Array(a) => {
            h.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_value(h, x);
            }
            h.update(b"]");
        }
        Value::Object(o) => write_object(h, o),
    }
}

/// [`exact`] computed from the raw top-level fields of a request (keys unique, values raw
/// JSON), without building a JSON tree: the same canonical bytes, so the same key. The
/// canonical form is written in one pass over the JSON into a buffer (an object's members are
/// put in order when it ends), then hashed in one call.
pub fn exact_fields<'a>(id: Identity, fields: impl Iterator<Item = (&'a str, &'a str)>) -> Key {
    exact_with(id, fields, None)
}

/// [`exact_fields`] of a parsed request. When its messages are plain, their canonical form is
/// written from where the parser found their fields, without reading the prompt again.
pub fn exact_request(id: Identity, req: &crate::api::ChatRequest) -> Key {
    exact_with(id, req.field_texts(), req.plain_messages())
}

fn exact_with<'a>(
    id: Identity,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
    plain_messages: Option<&[crate::api::PlainMessage]>,
) -> Key {
    let mut h = header(id, "exact");
    let mut sorted: Vec<(&str, &str)> = fields
        .filter(|(k, _)| *k != "model" && !EXCLUDED.contains(k))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let size: usize = sorted.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(size + 2);
    let mut scratch = Scratch::default();
    out.push(b'{');
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(&mut out, k);
        out.push(b':');
        match plain_messages {
            Some(plain) if k == "messages" => push_plain_messages(&mut out, &mut scratch, v, plain),
            _ => push_raw(&mut out, &mut scratch, v),
        }
    }
    out.push(b'}');
    h.update(&out);
    Key(h.finalize().into())
}

/// The canonical form of plain messages (see `api::MessageFields::plain`): each is an object
/// of at most four keys, already known in sorted order, so only their values are read.
fn push_plain_messages<'a>(
    out: &mut Vec<u8>,
    scratch: &mut Scratch<'a>,
    text: &'a str,
    plain: &[crate::api::PlainMessage],
) {
    const KEYS: [&[u8]; 4] = [
        b"\"content\":",
        b"\"role\":",
        b"\"tool_call_id\":",
        b"\"tool_calls\":",
    ];
    out.push(b'[');
    for (i, message) in plain.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut first = true;
        for (key, span) in KEYS.iter().zip(message) {
            let Some((start, len)) = *span else { continue };
            let (start, len) = (start as usize, len as usize);
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            push_raw(out, scratch, text.get(start..start + len).unwrap_or("null"));
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// Appends raw JSON in canonical form. The input was parsed as JSON before, so it is valid; should
/// it fail anyway, what was written so far still makes a deterministic (if odd) key.
fn push_raw<'a>(out: &mut Vec<u8>, scratch: &mut Scratch<'a>, text: &'a str) {
    // A string without escapes is already canonical (see `visit_borrowed_str`).
    if text.starts_with('"') && !text.contains('\\') {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = Canon { out, scratch }.deserialize(&mut de);
}

/// A JSON string as `serde_json` escapes it.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A deserializer visitor that appends what it visits in canonical form (object keys sorted,
/// a key sent twice keeps its last value, integral floats as integers).
struct Canon<'o, 'de> {
    out: &'o mut Vec<u8>,
    scratch: &'o mut Scratch<'de>,
}

/// Buffers shared by every object of one key's canonical form, so that putting an object's
/// members in order allocates nothing once they have grown.
#[derive(Default)]
struct Scratch<'de> {
    /// Members of the objects being written, innermost last: key, start and end in `out`.
    members: Vec<(Cow<'de, str>, usize, usize)>,
    /// An object's members as written, while they are copied back in order.
    written: Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Canon<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if b { &b"true"[..] } else { &b"false"[..] });
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        Ok(())
    }
    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(f) {
            Some(n) => write_number(self.out, &n),
            None => self.out.extend_from_slice(b"null"),
        }
        Ok(())
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        push_plain_str(self.out, s);
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        push_str(self.out, s);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Canon { out, scratch } = self;
        out.push(b'[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            let element = Canon {
                out: &mut *out,
                scratch: &mut *scratch,
            };
            if seq.next_element_seed(element)?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Canon { out, scratch } = self;
        out.push(b'{');
        // Members are written as they come; when their keys were not in order (or one came
        // twice), they are put in order afterwards.
        let base = out.len();
        let first = scratch.members.len();
        while let Some(k) = map.next_key::<CowStr<'de>>()? {
            if scratch.members.len() > first {
                out.push(b',');
            }
            let start = out.len();
            match &k.0 {
                Cow::Borrowed(plain) => push_plain_str(out, plain),
                Cow::Owned(unescaped) => push_str(out, unescaped),
            }
            out.push(b':');
            let value = Canon {
                out: &mut *out,
                scratch: &mut *scratch,
            };
            map.next_value_seed(value)?;
            scratch.members.push((k.0, start, out.len()));
        }
        let members = &mut scratch.members[first..];
        if !members.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable, so of a key sent twice the last one is kept (as a JSON tree keeps it).
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let written = &mut scratch.written;
            written.clear();
            written.extend_from_slice(out.get(base..).unwrap_or_default());
            out.truncate(base);
            let mut first_out = true;
            for (i, (k, start, end)) in members.iter().enumerate() {
                if members.get(i + 1).is_some_and(|next| next.0 == *k) {
                    continue;
                }
                if !first_out {
                    out.push(b',');
                }
                first_out = false;
                out.extend_from_slice(written.get(start - base..end - base).unwrap_or_default());
            }
        }
        scratch.members.truncate(first);
        out.push(b'}');
        Ok(())
    }
}

/// A string serde_json borrowed from the input: it had no escapes, and JSON forbids raw
/// quotes, backslashes and control characters in a string, so it needs no escaping either.
fn push_plain_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Integral floats as integers (`1.0` and `1` are the same temperature).
fn write_number(h: &mut impl Write, n: &serde_json::Number) {
    let integral = n
        .as_f64()
        .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15)
        .map(|f| f as i64);
    match integral {
        Some(i) => {
            let _ = write!(h, "{i}");
        }
        None => {
            let _ = write!(h, "{n}");
        }
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: Identity = Identity {
        provider: "openai",
        upstream_model: "gpt-4o",
        scope: None,
    };

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn base() -> Value {
        json!({
            "model": "openai/gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}
            ],
            "temperature": 0.2
        })
    }

    #[test]
    fn key_order_whitespace_and_number_spelling_do_not_matter() {
        let a: Map<String, Value> = serde_json::from_str(
            r#"{"model":"gpt-4o","temperature":1,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"a":1,"b":2}}}]}"#,
        )
        .unwrap();
        let b: Map<String, Value> = serde_json::from_str(
            r#"{ "tools" : [ {"function": {"parameters": {"b":2, "a":1}, "name":"f"}, "type":"function"} ],
                "messages": [ {"content":"hi", "role":"user"} ], "temperature": 1.0, "model": "openai/gpt-4o" }"#,
        )
        .unwrap();
        assert_eq!(exact(ID, &a), exact(ID, &b));
    }

    /// `exact_fields` (raw fields, the hot path) writes the same canonical bytes as `exact`
    /// (JSON tree): escapes, unicode, duplicate keys, number spellings, nesting.
    #[test]
    fn raw_fields_key_equals_tree_key() {
        let bodies = [
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"gpt-4o","temperature":1.0,"top_p":0.5,"max_tokens":64,"seed":-7,"n":1}"#,
            r#"{"messages":[{"role":"user","content":"caf\u00e9 \"q\" \\ \n\t\u0001 \ud83d\ude00 é"}],"model":"m"}"#,
            r#"{"a":-0,"b":-0.0,"c":1e2,"d":1.5e-7,"e":12345678901234567890,"f":1e300,"g":-3,"h":9.0e15,"i":0.1}"#,
            r#"{"x":{"b":1,"a":{"d":[1,2,{"z":null,"y":true}],"c":false}},"y":[],"z":{},"w":[[],[{}]]}"#,
            r#"{"dup":{"k":1,"k":2,"j":0},"m":[{"role":"user","role":"system","content":"c"}]}"#,
            r#"{"esc\u0061ped key":1,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q\n":{"type":"string"}}}}}]}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true},"user":"u","metadata":{"a":"b"},"stop":["\n\n","END"]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}}}"#,
            r#"{}"#,
        ];
        let ids = [
            ID,
            Identity {
                provider: "anthropic",
                upstream_model: "claude",
                scope: Some("team \"a\""),
            },
        ];
        for body in bodies {
            let tree: Map<String, Value> = serde_json::from_str(body).unwrap();
            let raw = crate::api::parse_raw_object(body.as_bytes()).unwrap();
            for id in ids {
                assert_eq!(exact(id, &tree), exact_fields(id, texts(&raw)), "{body}");
            }
        }
        // And the raw path still tells different answers apart.
        let a = crate::api::parse_raw_object(br#"{"messages":[{"role":"user","content":"a"}]}"#)
            .unwrap();
        let b = crate::api::parse_raw_object(br#"{"messages":[{"role":"user","content":"b"}]}"#)
            .unwrap();
        assert_ne!(exact_fields(ID, texts(&a)), exact_fields(ID, texts(&b)));
    }

    fn texts(raw: &crate::api::RawFields) -> impl Iterator<Item = (&str, &str)> {
        raw.iter().map(|(k, v)| (k.as_str(), v.get()))
    }

    /// The key of a parsed request (its messages kept apart from the other fields, in either
    /// parsing path) is the key of its JSON tree, and it changes with the messages.
    #[test]
    fn parsed_request_key_covers_every_field_and_the_messages() {
        use crate::api::ChatRequest;
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#" { "temperature" : 1.0 , "messages" : [ {"content":"caf\u00e9","role":"user"} ] , "model":"m" } "#,
            // A key sent twice: the general parsing path.
            r#"{"model":"m","seed":1,"seed":2,"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"mess\u0061ges":[{"role":"user","content":"escaped key"}],"model":"m"}"#,
            // Plain messages of every shape, written from their fields.
            r#"{"model":"m","messages":[{"content":"s","role":"system"},{ "role" : "user" , "content" : [ {"type":"text","text":"a\u00e9"}, {"text":"b","type":"text"} ] },{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\": 1.0}"}}]},{"tool_call_id":"c1","role":"tool","content":"r\n"}]}"#,
            // Not plain (another key, a null, a key twice): the whole list is walked.
            r#"{"model":"m","messages":[{"role":"user","content":"x","name":"n"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","content":"y"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":null}]}"#,
        ];
        for body in bodies {
            let tree: Map<String, Value> = serde_json::from_str(body).unwrap();
            let req = ChatRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(
                exact(ID, &tree),
                exact_fields(ID, req.field_texts()),
                "{body}"
            );
            assert_eq!(exact(ID, &tree), exact_request(ID, &req), "{body}");
            // Both ways of writing the messages are covered.
            let not_plain = ["\"name\"", "\"content\":\"y\"", "null}", "\"seed\":2"];
            let plain = !not_plain.iter().any(|n| body.contains(n));
            assert_eq!(req.plain_messages().is_some(), plain, "{body}");
        }
        let key = |content: &str| {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#);
            exact_request(ID, &ChatRequest::parse(body.as_bytes()).unwrap())
        };
        assert_ne!(key("a"), key("b"));
        assert_ne!(key("a"), key("a "));
    }

    #[test]
    fn excluded_fields_do_not_change_the_key() {
        let k = exact(ID, &obj(base()));
        let mut v = base();
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
        v["user"] = json!("alice");
        v["metadata"] = json!({"trace": "x"});
        v["model"] = json!("gpt-4o");
        assert_eq!(exact(ID, &obj(v)), k);
    }

    #[test]
    fn every_answer_affecting_field_changes_the_key() {
        let k = exact(ID, &obj(base()));
        let changes: Vec<(&str, Value)> = vec![
            (
                "messages",
                json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi!"}]),
            ),
            (
                "messages",
                json!([{"role": "system", "content": "be long"}, {"role": "user", "content": "hi"}]),
            ),
            ("messages", json!([{"role": "user", "content": "hi"}])),
            ("temperature", json!(0.3)),
            ("top_p", json!(0.9)),
            ("max_tokens", json!(10)),
            ("max_completion_tokens", json!(10)),
            ("stop", json!(["\n"])),
            ("seed", json!(7)),
            ("response_format", json!({"type": "json_object"})),
            ("n", json!(2)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("parallel_tool_calls", json!(false)),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(0.5)),
            ("logit_bias", json!({"50256": -100})),
            ("logprobs", json!(true)),
            ("reasoning_effort", json!("high")),
            ("x_vendor_option", json!({"a": 1})),
        ];
        for (field, value) in changes {
            let mut v = base();
            v[field] = value.clone();
            assert_ne!(exact(ID, &obj(v)), k, "{field} = {value}");
        }
        let other_model = Identity {
            upstream_model: "gpt-4o-mini",
            ..ID
        };
        assert_ne!(exact(other_model, &obj(base())), k);
        let other_provider = Identity {
            provider: "azure",
            ..ID
        };
        assert_ne!(exact(other_provider, &obj(base())), k);
        let scoped = Identity {
            scope: Some("team-a"),
            ..ID
        };
        assert_ne!(exact(scoped, &obj(base())), k);
        let scoped_b = Identity {
            scope: Some("team-b"),
            ..ID
        };
        assert_ne!(exact(scoped, &obj(base())), exact(scoped_b, &obj(base())));
    }

    #[test]
    fn context_key_ignores_only_the_final_message_content() {
        let c = context(ID, &obj(base()));
        let mut v = base();
        v["messages"][1]["content"] = json!("hello there");
        assert_eq!(context(ID, &obj(v.clone())), c);
        assert_ne!(exact(ID, &obj(v)), exact(ID, &obj(base())));
        let mut v = base();
        v["messages"][0]["content"] = json!("be verbose");
        assert_ne!(context(ID, &obj(v)), c);
        let mut v = base();
        v["temperature"] = json!(0.9);
        assert_ne!(context(ID, &obj(v)), c);
        let mut v = base();
        v["messages"][1]["name"] = json!("bob");
        assert_ne!(context(ID, &obj(v)), c);
        // The context key is never an exact key.
        assert_ne!(c, exact(ID, &obj(base())));
    }

    #[test]
    fn final_user_text_only_for_text_user_messages() {
        assert_eq!(final_user_text(&obj(base())).as_deref(), Some("hi"));
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        assert_eq!(final_user_text(&obj(parts)).as_deref(), Some("ab"));
        let image = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:"}}]}]});
        assert_eq!(final_user_text(&obj(image)), None);
        let tool = json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "42"}]});
        assert_eq!(final_user_text(&obj(tool)), None);
        let blank = json!({"messages": [{"role": "user", "content": "  "}]});
        assert_eq!(final_user_text(&obj(blank)), None);
    }

    #[test]
    fn hex_round_trip() {
        let k = exact(ID, &obj(base()));
        assert_eq!(Key::from_hex(&k.hex()), Some(k));
        assert_eq!(k.hex().len(), 64);
        assert_eq!(Key::from_hex("zz"), None);
    }
}
