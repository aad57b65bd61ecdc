//! Rebuilds the finished [`Answer`] from the OpenAI SSE bytes a client was sent.
//!
//! It reads the translated output, so it works the same behind every provider. It is fed a
//! copy of each chunk after that chunk has been written to the client, so it never holds the
//! stream back; all it costs the stream is the parse of each event.

use serde_json::Value;

use crate::api::{Answer, ToolCall, Usage};
use crate::sse::SseFramer;

use super::entry::MAX_ENTRY_BYTES;

/// More parallel tool calls than this in one answer is treated as garbage, not stored.
const MAX_TOOL_CALLS: usize = 128;

#[derive(Debug, Default)]
pub struct Assembler {
    framer: SseFramer,
    content: String,
    tools: Vec<ToolCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    size: usize,
    done: bool,
    /// Something a replay could not reproduce (an error event, a second choice, logprobs, a
    /// refusal, too much data): the answer will not be stored.
    broken: bool,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes exactly as the client received them.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.broken || self.done {
            return;
        }
        self.framer.push(bytes);
        while let Some(ev) = self.framer.next_event() {
            if ev.is_empty() {
                continue;
            }
            if ev.data == "[DONE]" {
                self.done = true;
                return;
            }
            self.event(&ev.data);
            if self.broken {
                self.content = String::new();
                self.tools = Vec::new();
                return;
            }
        }
    }

    /// The answer, if the stream ended with `[DONE]` after a finish reason and held nothing
    /// a replay would lose.
    pub fn answer(self) -> Option<Answer> {
        if !self.done || self.broken {
            return None;
        }
        let finish_reason = self.finish?;
        let content = if self.content.is_empty() && !self.tools.is_empty() {
            None
        } else {
            Some(self.content)
        };
        Some(Answer {
            reasoning: None,
            content,
            tool_calls: self.tools,
            finish_reason,
            usage: self.usage,
        })
    }

    fn event(&mut self, data: &str) {
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) => return self.set_broken(),
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return self.set_broken();
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Usage::from_value(u);
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return;
        };
        for c in choices {
            if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0
                || !absent(c.get("logprobs"))
            {
                return self.set_broken();
            }
            if let Some(d) = c.get("delta") {
                self.delta(d);
            }
            if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(f.to_string());
            }
        }
        if self.size > MAX_ENTRY_BYTES {
            self.set_broken();
        }
    }

    fn delta(&mut self, d: &Value) {
        for k in ["refusal", "audio", "function_call"] {
            if !absent(d.get(k)) {
                return self.set_broken();
            }
        }
        if let Some(s) = d.get("content").and_then(Value::as_str) {
            self.content.push_str(s);
            self.size += s.len();
        }
        let Some(calls) = d.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (pos, t) in calls.iter().enumerate() {
            let i = t.get("index").and_then(Value::as_u64).unwrap_or(pos as u64) as usize;
            if i >= MAX_TOOL_CALLS {
                return self.set_broken();
            }
            while self.tools.len() <= i {
                self.tools.push(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
            }
            let call = &mut self.tools[i];
            if let Some(id) = t.get("id").and_then(Value::as_str) {
                call.id = id.to_string();
            }
            if let Some(f) = t.get("function") {
                if let Some(n) = f.get("name").and_then(Value::as_str) {
                    call.name = n.to_string();
                }
                if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                    call.arguments.push_str(a);
                    self.size += a.len();
                }
            }
        }
    }

    fn set_broken(&mut self) {
        self.broken = true;
    }
}

fn absent(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChunkWriter;
    use bytes::BytesMut;

    fn sample() -> Answer {
        Answer {
            reasoning: None,
            content: Some("Hello, wörld".into()),
            tool_calls: vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "get_time".into(),
                    arguments: "{}".into(),
                },
            ],
            finish_reason: "tool_calls".into(),
            usage: Some(Usage::new(12, 9)),
        }
    }

    /// A recorded OpenAI stream: content and two tool calls in fragments, usage, [DONE].
    fn recorded() -> Vec<u8> {
        let w = ChunkWriter::new("gpt-4o");
        let mut out = BytesMut::new();
        w.role(&mut out);
        w.content(&mut out, "Hello, ");
        w.content(&mut out, "wörld");
        w.tool_start(&mut out, 0, "call_a", "get_weather");
        w.tool_args(&mut out, 0, "{\"city\":");
        w.tool_start(&mut out, 1, "call_b", "get_time");
        w.tool_args(&mut out, 0, "\"Paris\"}");
        w.tool_args(&mut out, 1, "{}");
        w.finish(&mut out, "tool_calls");
        w.usage(&mut out, &Usage::new(12, 9));
        out.extend_from_slice(b": keep-alive\n\n");
        ChunkWriter::done(&mut out);
        out.to_vec()
    }

    #[test]
    fn every_split_assembles_the_same_answer() {
        let input = recorded();
        for cut in 0..=input.len() {
            let mut a = Assembler::new();
            a.feed(&input[..cut]);
            a.feed(&input[cut..]);
            assert_eq!(a.answer(), Some(sample()), "split at {cut}");
        }
    }

    #[test]
    fn replay_round_trips() {
        let mut out = BytesMut::new();
        crate::dialects::replay(&mut ChunkWriter::new("m"), &mut out, &sample(), true);
        let mut a = Assembler::new();
        a.feed(&out);
        assert_eq!(a.answer(), Some(sample()));
    }

    #[test]
    fn incomplete_or_errored_streams_give_nothing() {
        let input = recorded();
        let done_at = input.len() - b"data: [DONE]\n\n".len();
        let mut a = Assembler::new();
        a.feed(&input[..done_at]);
        assert_eq!(a.answer(), None, "no [DONE]");

        let mut a = Assembler::new();
        a.feed(&input[..done_at]);
        a.feed(b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n");
        a.feed(b"data: [DONE]\n\n");
        assert_eq!(a.answer(), None, "error event");

        let mut a = Assembler::new();
        a.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n");
        assert_eq!(a.answer(), None, "no finish reason");

        let mut a = Assembler::new();
        a.feed(b"data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        assert_eq!(a.answer(), None, "second choice");
    }

    #[test]
    fn plain_text_stream() {
        let mut out = BytesMut::new();
        let w = ChunkWriter::new("m");
        w.role(&mut out);
        w.finish(&mut out, "stop");
        ChunkWriter::done(&mut out);
        let mut a = Assembler::new();
        a.feed(&out);
        let ans = a.answer().unwrap();
        assert_eq!(ans.content.as_deref(), Some(""));
        assert_eq!(ans.usage, None);
    }
}
