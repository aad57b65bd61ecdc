//! `echo`: the built-in offline provider. It answers with the last user message (streamed word
//! by word), so the gateway works with no configuration at all, and tests and load tests need
//! no upstream. Token counts are whitespace-separated words.
//!
//! What an offline trial of a client needs besides chat:
//! - tool calls: when the request offers tools and the last user message reads
//!   `call <tool> <JSON arguments>` naming one of them, the answer is that tool call; when the
//!   conversation ends with `tool` messages, the answer is text quoting their output
//!   (`Tool get_weather returned: ...`);
//! - embeddings ([`embeddings`]): deterministic unit vectors from the input's words;
//! - completions ([`prompts`]): each prompt echoed;
//! - moderations ([`moderation`]): nothing is ever flagged.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::api::{content_text, random_token, Answer, ChatRequest, ToolCall, Usage};
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

/// Token count: whitespace-separated words.
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The answer to a chat request: the last user message's text.
pub fn answer(req: &ChatRequest) -> Answer {
    let messages = req.messages();
    let mut prompt = 0;
    for m in messages {
        prompt += words(&content_text(m.get("content")));
    }
    // The conversation ends with tool results: quote them.
    let results: Vec<&Value> = messages
        .iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .collect();
    if !results.is_empty() {
        let text = results
            .iter()
            .rev()
            .map(|m| {
                let output = content_text(m.get("content"));
                match tool_name(messages, m.get("tool_call_id").and_then(Value::as_str)) {
                    Some(name) => format!("Tool {name} returned: {output}"),
                    None => format!("The tool returned: {output}"),
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (text, finish) = capped(text);
        let completion = words(&text);
        return Answer {
            stop_sequence: None,
            reasoning: None,
            content: Some(text),
            tool_calls: Vec::new(),
            finish_reason: finish.into(),
            usage: Some(Usage::new(prompt, completion)),
        };
    }
    let text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    if let Some(call) = tool_call(req, &text) {
        let completion = words(&call.name) + words(&call.arguments);
        return Answer {
            stop_sequence: None,
            reasoning: None,
            content: None,
            tool_calls: vec![call],
            finish_reason: "tool_calls".into(),
            usage: Some(Usage::new(prompt, completion)),
        };
    }
    // A long prompt is echoed up to a bound, as a model stops at its output limit.
    let (text, finish) = capped(text);
    let completion = words(&text);
    Answer {
        reasoning: None,
        stop_sequence: None,
        content: Some(text),
        tool_calls: Vec::new(),
        finish_reason: finish.into(),
        usage: Some(Usage::new(prompt, completion)),
    }
}

/// The most text an echo answer holds: a longer prompt is cut there (at a character boundary)
/// and the answer finishes with `length`.
pub const MAX_ECHO_BYTES: usize = 64 * 1024;

fn capped(mut text: String) -> (String, &'static str) {
    if text.len() <= MAX_ECHO_BYTES {
        return (text, "stop");
    }
    let mut end = MAX_ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, "length")
}

/// The name of the tool call `id` in the conversation's assistant messages.
fn tool_name(messages: &[Value], id: Option<&str>) -> Option<String> {
    let id = id?;
    messages
        .iter()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|c| c.get("function")?.get("name")?.as_str())
        .map(str::to_string)
}

/// `call <tool> <arguments>` in the last user message, naming a tool the request offers: that
/// call (arguments `{}` when none are given; text that is not a JSON object is passed as
/// `{"input": text}`).
fn tool_call(req: &ChatRequest, text: &str) -> Option<ToolCall> {
    let rest = text.trim().strip_prefix("call ")?.trim_start();
    let (name, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let offered = req
        .body()
        .get("tools")
        .and_then(Value::as_array)?
        .iter()
        .any(|t| {
            t.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                == Some(name)
        });
    if !offered {
        return None;
    }
    let arguments = if args.is_empty() {
        "{}".to_string()
    } else if serde_json::from_str::<Map<String, Value>>(args).is_ok() {
        args.to_string()
    } else {
        json!({ "input": args }).to_string()
    };
    Some(ToolCall {
        id: format!("call_{}", random_token(24)),
        name: name.to_string(),
        arguments,
    })
}

/// The prompts of a completions request, each echoed as one choice: a string, a list of
/// strings, or token ids (written back as numbers separated by spaces).
pub fn prompts(obj: &Map<String, Value>) -> Result<Vec<String>, GatewayError> {
    let tokens = |items: &[Value]| -> Option<String> {
        let ids: Option<Vec<String>> = items
            .iter()
            .map(|t| t.as_u64().map(|n| n.to_string()))
            .collect();
        ids.map(|ids| ids.join(" "))
    };
    let bad = || {
        GatewayError::bad_request(
            "prompt",
            "'prompt' must be a string, a list of strings, or token ids",
        )
    };
    match obj.get("prompt") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Ok(vec![String::new()]),
        Some(Value::Array(items)) if items[0].is_number() => {
            Ok(vec![tokens(items).ok_or_else(bad)?])
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Array(t) => tokens(t).ok_or_else(bad),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// Moderation categories, as OpenAI's `omni-moderation` models report them.
const CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// A moderation answer that flags nothing, one result per input.
pub fn moderation(obj: &Map<String, Value>, model: &str) -> Result<Bytes, GatewayError> {
    let inputs = match obj.get("input") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(items)) => items.len(),
        _ => {
            return Err(GatewayError::bad_request(
                "input",
                "'input' must be a string or an array",
            ))
        }
    };
    let categories: Map<String, Value> = CATEGORIES
        .iter()
        .map(|c| (c.to_string(), json!(false)))
        .collect();
    let scores: Map<String, Value> = CATEGORIES
        .iter()
        .map(|c| (c.to_string(), json!(0.0)))
        .collect();
    let types: Map<String, Value> = CATEGORIES
        .iter()
        .map(|c| (c.to_string(), json!(["text"])))
        .collect();
    let result = json!({
        "flagged": false,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": types,
    });
    let body = json!({
        "id": format!("modr-{}", random_token(24)),
        "model": model,
        "results": vec![result; inputs],
    });
    Ok(Bytes::from(body.to_string()))
}

/// Dimensions of an echo embedding when the request does not ask for a number.
pub const EMBEDDING_DIMENSIONS: usize = 16;

/// Embeddings of the inputs (a string, a list of strings, token ids or lists of them), in
/// OpenAI's shape: for each word, a hashed direction is added to the vector, which is then
/// scaled to unit length, so equal texts get equal vectors and texts sharing words point
/// alike. `dimensions` (1 to 4096) sets the length, `encoding_format: base64` packs
/// little-endian f32s.
pub fn embeddings(
    obj: &Map<String, Value>,
    model: &str,
) -> Result<(Bytes, Option<Usage>), GatewayError> {
    let texts: Vec<String> = match obj.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => {
            vec![items
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(" ")]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Array(t) => Ok(t.iter().map(Value::to_string).collect::<Vec<_>>().join(" ")),
                _ => Err(GatewayError::bad_request(
                    "input",
                    "'input' must be a string or an array of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(GatewayError::bad_request(
                "input",
                "'input' must be a string or an array",
            ))
        }
    };
    let dims = match obj.get("dimensions") {
        None | Some(Value::Null) => EMBEDDING_DIMENSIONS,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=4096) => n as usize,
            _ => {
                return Err(GatewayError::bad_request(
                    "dimensions",
                    "'dimensions' must be an integer from 1 to 4096",
                ))
            }
        },
    };
    let base64 = match obj.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(GatewayError::bad_request(
                "encoding_format",
                format!("'encoding_format' must be 'float' or 'base64', not '{other}'"),
            ))
        }
    };
    let mut tokens = 0;
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            tokens += words(t);
            let v = embed(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let usage = Usage::new(tokens, 0);
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok((Bytes::from(body.to_string()), Some(usage)))
}

/// A unit vector of `dims` from the words of `text` (lower-cased).
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    let lower = text.to_lowercase();
    let mut any = false;
    for word in lower.split_whitespace() {
        any = true;
        let digest = Sha256::digest(word.as_bytes());
        // Each word adds to a few coordinates, with a sign, from its hash.
        for k in 0..4 {
            let b = &digest[k * 8..k * 8 + 8];
            let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let i = (n % dims as u64) as usize;
            let sign = if (n >> 63) == 0 { 1.0 } else { -1.0 };
            v[i] += sign;
        }
    }
    if !any {
        // Empty text: a fixed direction rather than a zero vector.
        v[0] = 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    } else {
        v[0] = 1.0;
    }
    v
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
