//! What the cache stores: a finished [`Answer`] and the provider that produced it, in a
//! compact encoding for Redis; and how an answer is read out of a `chat.completion` body.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{Answer, ToolCall, Usage};

/// Finish reasons worth keeping. `content_filter` is left out: a filter decision may be
/// transient, and pinning it for a whole TTL would surprise.
pub const CACHEABLE_FINISH: &[&str] = &["stop", "length", "tool_calls", "function_call"];

/// Answers larger than this are served but not stored.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub answer: Answer,
    /// Who produced it (sent back as `X-Provider` on a hit).
    pub provider: String,
    /// The model the stored answer named, when it named another than the client's (an
    /// upstream's own answer passed through): a hit names the same.
    pub model: Option<String>,
}

impl Entry {
    /// Whether this answer may be stored.
    pub fn cacheable(&self) -> bool {
        CACHEABLE_FINISH.contains(&self.answer.finish_reason.as_str())
            && self.size() <= MAX_ENTRY_BYTES
    }

    /// The bytes of its answer (text, reasoning, tool calls).
    pub fn size(&self) -> usize {
        self.answer.content.as_ref().map_or(0, String::len)
            + self.answer.reasoning.as_ref().map_or(0, String::len)
            + self
                .answer
                .tool_calls
                .iter()
                .map(|t| t.id.len() + t.name.len() + t.arguments.len())
                .sum::<usize>()
    }

    /// Compact JSON: short field names, no whitespace.
    pub fn encode(&self) -> Vec<u8> {
        let a = &self.answer;
        let c = Compact {
            p: self.provider.clone(),
            m: self.model.clone(),
            c: a.content.clone(),
            r: a.reasoning.clone(),
            s: a.stop_sequence.clone(),
            t: a.tool_calls
                .iter()
                .map(|t| (t.id.clone(), t.name.clone(), t.arguments.clone()))
                .collect(),
            f: a.finish_reason.clone(),
            u: a.usage.map(|u| {
                [
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.total_tokens,
                    u.cached_tokens,
                ]
            }),
            ur: a.usage.map_or(0, |u| u.reasoning_tokens),
        };
        serde_json::to_vec(&c).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let c: Compact = serde_json::from_slice(bytes).ok()?;
        let ur = c.ur;
        Some(Entry {
            provider: c.p,
            model: c.m,
            answer: Answer {
                reasoning: c.r,
                stop_sequence: c.s,
                content: c.c,
                tool_calls: c
                    .t
                    .into_iter()
                    .map(|(id, name, arguments)| ToolCall {
                        id,
                        name,
                        arguments,
                    })
                    .collect(),
                finish_reason: c.f,
                usage: c.u.map(|[p, c, t, cached]| Usage {
                    reasoning_tokens: ur,
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: t,
                    cached_tokens: cached,
                }),
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Compact {
    p: String,
    /// The model the answer named (absent: as the client named it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Reasoning (absent in entries written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    /// The stop sequence matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    t: Vec<(String, String, String)>,
    f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<[u64; 4]>,
    /// Reasoning tokens (part of the completion tokens in `u`).
    #[serde(default, skip_serializing_if = "is_zero")]
    ur: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Reads the answer out of an OpenAI `chat.completion` body. `None` when the body holds
/// anything an [`Answer`] cannot carry (several choices, logprobs, audio, a refusal), so a
/// replay would never lose part of what the upstream said.
pub fn answer_from_completion(body: &[u8]) -> Option<(Answer, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let model = v.get("model").and_then(Value::as_str).map(str::to_string);
    answer_of(&v).map(|a| (a, model))
}

fn answer_of(v: &Value) -> Option<Answer> {
    let choices = v.get("choices")?.as_array()?;
    if choices.len() != 1 {
        return None;
    }
    let choice = &choices[0];
    if !is_absent(choice.get("logprobs")) {
        return None;
    }
    let msg = choice.get("message")?.as_object()?;
    for k in ["audio", "refusal", "function_call"] {
        if !is_absent(msg.get(k)) {
            return None;
        }
    }
    let content = match msg.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg.get("tool_calls").filter(|t| !t.is_null()) {
        for t in calls.as_array()? {
            let f = t.get("function")?;
            tool_calls.push(ToolCall {
                id: t.get("id")?.as_str()?.to_string(),
                name: f.get("name")?.as_str()?.to_string(),
                arguments: f
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
    }
    let finish_reason = choice.get("finish_reason")?.as_str()?.to_string();
    // vLLM and DeepSeek say `reasoning_content`, others `reasoning`.
    let reasoning = ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| msg.get(*k).and_then(Value::as_str))
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    Some(Answer {
        reasoning,
        stop_sequence: None,
        content,
        tool_calls,
        finish_reason,
        usage: v.get("usage").and_then(Usage::from_value),
    })
}

fn is_absent(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trip() {
        let e = Entry {
            provider: "openai".into(),
            model: Some("gpt-4o-2024-08-06".into()),
            answer: Answer {
                reasoning: None,
                stop_sequence: None,
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get".into(),
                    arguments: "{\"a\":1}".into(),
                }],
                finish_reason: "tool_calls".into(),
                usage: Some(Usage {
                    reasoning_tokens: 0,
                    prompt_tokens: 5,
                    completion_tokens: 6,
                    total_tokens: 11,
                    cached_tokens: 2,
                }),
            },
        };
        let bytes = e.encode();
        assert!(!bytes.contains(&b' '));
        assert_eq!(Entry::decode(&bytes), Some(e.clone()));
        assert_eq!(Entry::decode(b"{}"), None);
        // Reasoning and its tokens are kept; an entry written without them still reads.
        let mut r = e;
        r.answer.reasoning = Some("Because.".into());
        r.answer.stop_sequence = Some("END".into());
        if let Some(u) = r.answer.usage.as_mut() {
            u.reasoning_tokens = 3;
        }
        assert_eq!(Entry::decode(&r.encode()), Some(r));
        let old = Entry::decode(br#"{"p":"x","c":"hi","f":"stop","u":[1,2,3,0]}"#).unwrap();
        assert_eq!(old.answer.reasoning, None);
        assert_eq!(old.answer.usage, Some(Usage::new(1, 2)));
    }

    #[test]
    fn plain_bodies() {
        let (a, _) = answer_from_completion(br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#).unwrap();
        assert_eq!(a.content.as_deref(), Some("Hi"));
        assert_eq!(a.finish_reason, "stop");
        assert_eq!(a.usage, Some(Usage::new(3, 1)));

        let (t, _) = answer_from_completion(br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#).unwrap();
        assert_eq!(t.content, None);
        assert_eq!(t.tool_calls[0].name, "f");

        for bad in [
            &br#"{"choices":[{"message":{"content":"a"},"finish_reason":"stop"},{"message":{"content":"b"},"finish_reason":"stop"}]}"#[..],
            br#"{"choices":[{"message":{"content":"a"},"logprobs":{"content":[{"token":"a"}]},"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"message":{"content":null,"refusal":"no"},"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"message":{"content":"a"}}]}"#,
            b"not json",
        ] {
            assert_eq!(answer_from_completion(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_complete_answers_are_cacheable() {
        let mut e = Entry {
            provider: "p".into(),
            model: None,
            answer: Answer {
                content: Some("x".into()),
                finish_reason: "stop".into(),
                ..Default::default()
            },
        };
        assert!(e.cacheable());
        e.answer.finish_reason = "content_filter".into();
        assert!(!e.cacheable());
        e.answer.finish_reason = String::new();
        assert!(!e.cacheable());
        e.answer.finish_reason = "length".into();
        e.answer.content = Some("x".repeat(MAX_ENTRY_BYTES + 1));
        assert!(!e.cacheable());
    }
}
