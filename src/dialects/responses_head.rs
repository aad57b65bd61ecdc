//! What the proxy reads of an OpenAI Responses request before any attempt: its model, whether
//! it streams, `parallel_tool_calls`, `store` and `previous_response_id`. Read with borrowed
//! types, every other value skipped unparsed, so a pass-through to a host that speaks
//! Responses never pays for the translation (`openai_responses.rs`), which runs only when a
//! translated attempt or the cache needs it.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

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

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default, borrow)]
    previous_response_id: Option<Cow<'a, str>>,
    /// Present (any value but null) is all that is checked here.
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
}

/// The head of `body`, when it is a JSON object with a non-empty string `model`, an `input`,
/// and `stream`, `parallel_tool_calls`, `store` booleans (or absent); `None` otherwise (the
/// full translation then words the error).
pub fn read(body: &[u8]) -> Option<Head> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let w: Wire = serde_json::from_slice(body).ok()?;
    let raw = w.model?.get();
    let model: Cow<str> = serde_json::from_str(raw).ok()?;
    if model.trim().is_empty() {
        return None;
    }
    let input = w.input.map(RawValue::get).filter(|v| *v != "null")?;
    // Values borrow from `body`: their place in it is a difference of addresses.
    let span = |v: &str| {
        let start = (v.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        (start, start + v.len())
    };
    Some(Head {
        model_span: span(raw),
        input_span: span(input),
        model: model.into_owned(),
        stream: w.stream.unwrap_or(false),
        parallel_tool_calls: w.parallel_tool_calls != Some(false),
        store: w.store != Some(false),
        previous_response_id: w
            .previous_response_id
            .map(Cow::into_owned)
            .filter(|s| !s.is_empty()),
    })
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
        for bad in [
            &br#"{"input":"x"}"#[..],
            br#"{"model":"","input":"x"}"#,
            br#"{"model":"m"}"#,
            br#"{"model":"m","input":null}"#,
            br#"{"model":"m","input":"x","stream":"yes"}"#,
            br#"[{"model":"m","input":"x"}]"#,
            b"{nope",
        ] {
            assert_eq!(read(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
