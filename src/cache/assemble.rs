//! Rebuilds the finished [`Answer`] the client was sent, whatever its dialect:
//! - [`Assembler`] from the OpenAI SSE bytes of a chat stream passed through untouched (fed a
//!   copy of each chunk after it was written to the client, so it never holds the stream back;
//!   all it costs the stream is the parse of each event);
//! - [`TeeEvents`] from the canonical events a translating provider writes, on their way to
//!   the client's dialect ([`Recorder`]), and [`RecordAnswers`] from a translated plain answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::api::{Answer, ToolCall, Usage};
use crate::canonical::{AnswerWriter, EventWriter, StreamFailure};
use crate::sse::SseFramer;

use super::entry::MAX_ENTRY_BYTES;

/// More parallel tool calls than this in one answer is treated as garbage, not stored.
const MAX_TOOL_CALLS: usize = 128;

#[derive(Debug, Default)]
pub struct Assembler {
    framer: SseFramer,
    content: String,
    reasoning: String,
    tools: Vec<ToolCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    /// The model the chunks named.
    model: Option<String>,
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

    /// The model the stream's chunks named.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
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
            reasoning: (!self.reasoning.is_empty()).then_some(self.reasoning),
            stop_sequence: None,
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
        if self.model.is_none() {
            self.model = v.get("model").and_then(Value::as_str).map(str::to_string);
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
        // vLLM and DeepSeek say `reasoning_content`, others `reasoning`.
        if let Some(s) = d
            .get("reasoning_content")
            .or_else(|| d.get("reasoning"))
            .and_then(Value::as_str)
        {
            self.reasoning.push_str(s);
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

/// The answer a translated stream writes, rebuilt from its canonical events (choice 0; an
/// answer with several choices is not stored).
#[derive(Debug, Default)]
pub struct Recorder {
    answer: Answer,
    size: usize,
    finished: bool,
    done: bool,
    broken: bool,
}

impl Recorder {
    /// The answer, if the stream ended after a finish reason and held nothing a replay would
    /// lose.
    pub fn answer(self) -> Option<Answer> {
        (self.done && self.finished && !self.broken).then_some(self.answer)
    }

    fn grow(&mut self, n: usize) {
        self.size += n;
        if self.size > MAX_ENTRY_BYTES {
            self.broken = true;
        }
    }

    fn text(&mut self, choice: u32, text: &str) {
        if choice != 0 {
            return self.broken = true;
        }
        self.answer
            .content
            .get_or_insert_with(String::new)
            .push_str(text);
        self.grow(text.len());
    }

    fn reasoning(&mut self, choice: u32, text: &str) {
        if choice != 0 {
            return self.broken = true;
        }
        self.answer
            .reasoning
            .get_or_insert_with(String::new)
            .push_str(text);
        self.grow(text.len());
    }

    fn tool_start(&mut self, choice: u32, index: u32, id: &str, name: &str) {
        let i = index as usize;
        if choice != 0 || i >= MAX_TOOL_CALLS {
            return self.broken = true;
        }
        let tools = &mut self.answer.tool_calls;
        while tools.len() <= i {
            tools.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        tools[i].id = id.to_string();
        tools[i].name = name.to_string();
        self.grow(id.len() + name.len());
    }

    fn tool_args(&mut self, choice: u32, index: u32, fragment: &str) {
        match self.answer.tool_calls.get_mut(index as usize) {
            Some(t) if choice == 0 => t.arguments.push_str(fragment),
            _ => return self.broken = true,
        }
        self.grow(fragment.len());
    }

    fn finish(&mut self, choice: u32, reason: &str) {
        if choice != 0 {
            return self.broken = true;
        }
        self.finished = true;
        self.answer.finish_reason = reason.to_string();
    }
}

/// An [`EventWriter`] that hands every event to the client's dialect and to a [`Recorder`]
/// (shared with whoever stores the answer once the stream is done).
pub struct TeeEvents {
    inner: Box<dyn EventWriter>,
    recorder: Arc<Mutex<Recorder>>,
}

impl TeeEvents {
    pub fn new(inner: Box<dyn EventWriter>, recorder: Arc<Mutex<Recorder>>) -> Self {
        TeeEvents { inner, recorder }
    }

    fn record(&self, f: impl FnOnce(&mut Recorder)) {
        // A panic elsewhere cannot leave a recorder half-written in a way that matters: at
        // worst the answer is not stored.
        f(&mut self.recorder.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl EventWriter for TeeEvents {
    fn id(&mut self, upstream_id: &str) {
        self.inner.id(upstream_id);
    }

    fn role(&mut self, out: &mut BytesMut, choice: u32) {
        self.inner.role(out, choice);
    }

    fn text(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        self.inner.text(out, choice, text);
        self.record(|r| r.text(choice, text));
    }

    fn reasoning(&mut self, out: &mut BytesMut, choice: u32, text: &str) {
        self.inner.reasoning(out, choice, text);
        self.record(|r| r.reasoning(choice, text));
    }

    fn tool_start(&mut self, out: &mut BytesMut, choice: u32, index: u32, id: &str, name: &str) {
        self.inner.tool_start(out, choice, index, id, name);
        self.record(|r| r.tool_start(choice, index, id, name));
    }

    fn tool_args(&mut self, out: &mut BytesMut, choice: u32, index: u32, fragment: &str) {
        self.inner.tool_args(out, choice, index, fragment);
        self.record(|r| r.tool_args(choice, index, fragment));
    }

    fn stop_sequence(&mut self, choice: u32, sequence: &str) {
        self.inner.stop_sequence(choice, sequence);
        if choice == 0 {
            self.record(|r| r.answer.stop_sequence = Some(sequence.to_string()));
        }
    }

    fn finish(&mut self, out: &mut BytesMut, choice: u32, reason: &str) {
        self.inner.finish(out, choice, reason);
        self.record(|r| r.finish(choice, reason));
    }

    fn usage(&mut self, out: &mut BytesMut, usage: &Usage) {
        self.inner.usage(out, usage);
        self.record(|r| r.answer.usage = Some(*usage));
    }

    fn done(&mut self, out: &mut BytesMut) {
        self.inner.done(out);
        self.record(|r| r.done = true);
    }

    fn on_failure(&self) -> Option<Arc<dyn StreamFailure>> {
        self.inner.on_failure()
    }
}

/// An [`AnswerWriter`] that has the client's dialect write a translated plain answer and keeps
/// the answer (when there is exactly one) for the cache, and how many choices there were.
pub struct RecordAnswers<'a> {
    inner: &'a dyn AnswerWriter,
    answer: Mutex<Option<Answer>>,
    choices: AtomicUsize,
}

impl<'a> RecordAnswers<'a> {
    pub fn new(inner: &'a dyn AnswerWriter) -> Self {
        RecordAnswers {
            inner,
            answer: Mutex::new(None),
            choices: AtomicUsize::new(0),
        }
    }

    /// How many choices the answer written had (0: none was written).
    pub fn choices(&self) -> usize {
        self.choices.load(Ordering::Relaxed)
    }

    /// The answer written, its usage filled in.
    pub fn take(self) -> Option<Answer> {
        self.answer
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl AnswerWriter for RecordAnswers<'_> {
    fn answer_body(
        &self,
        id: &str,
        created: u64,
        model: &str,
        answers: &[Answer],
        usage: Option<&Usage>,
    ) -> Bytes {
        let body = self.inner.answer_body(id, created, model, answers, usage);
        self.choices.store(answers.len(), Ordering::Relaxed);
        if let [one] = answers {
            let mut a = one.clone();
            a.usage = usage.copied();
            *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(a);
        }
        body
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
            stop_sequence: None,
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
    fn tee_events_record_what_the_dialect_writes() {
        let mut want = sample();
        want.reasoning = Some("First, the weather.".into());
        want.stop_sequence = Some("END".into());
        for dialect in crate::dialects::DIALECTS.iter().map(|(_, d)| *d) {
            let recorder = Arc::new(Mutex::new(Recorder::default()));
            let mut tee = TeeEvents::new(dialect.events("m"), recorder.clone());
            let (mut teed, mut plain) = (BytesMut::new(), BytesMut::new());
            crate::dialects::replay(&mut tee, &mut teed, &want, true);
            crate::dialects::replay(dialect.events("m").as_mut(), &mut plain, &want, true);
            // The client's bytes are the dialect's own (ids aside, which are random).
            assert_eq!(teed.len(), plain.len(), "{}", dialect.name());
            let got = std::mem::take(&mut *recorder.lock().unwrap()).answer();
            assert_eq!(got.as_ref(), Some(&want), "{}", dialect.name());
        }
    }

    #[test]
    fn recorded_streams_keep_only_complete_single_answers() {
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let mut tee = TeeEvents::new(Box::new(ChunkWriter::new("m")), recorder.clone());
        let mut out = BytesMut::new();
        tee.text(&mut out, 0, "cut");
        tee.finish(&mut out, 0, "stop");
        let take = |r: &Arc<Mutex<Recorder>>| std::mem::take(&mut *r.lock().unwrap()).answer();
        assert_eq!(take(&recorder), None, "no end of stream");
        for second_choice in [false, true] {
            let recorder = Arc::new(Mutex::new(Recorder::default()));
            let mut tee = TeeEvents::new(Box::new(ChunkWriter::new("m")), recorder.clone());
            tee.text(&mut out, 0, "a");
            if second_choice {
                tee.text(&mut out, 1, "b");
            }
            tee.finish(&mut out, 0, "stop");
            tee.done(&mut out);
            assert_eq!(take(&recorder).is_some(), !second_choice);
        }
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let mut tee = TeeEvents::new(Box::new(ChunkWriter::new("m")), recorder.clone());
        tee.text(&mut out, 0, &"x".repeat(MAX_ENTRY_BYTES + 1));
        tee.finish(&mut out, 0, "stop");
        tee.done(&mut out);
        assert_eq!(take(&recorder), None, "too large");
    }

    #[test]
    fn recorded_plain_answers() {
        let inner = crate::api::ChatCompletionsWriter;
        let w = RecordAnswers::new(&inner);
        let mut a = sample();
        a.usage = None;
        let body = w.answer_body(
            "id",
            0,
            "m",
            std::slice::from_ref(&a),
            Some(&Usage::new(12, 9)),
        );
        assert_eq!(
            body,
            inner.answer_body(
                "id",
                0,
                "m",
                std::slice::from_ref(&a),
                Some(&Usage::new(12, 9))
            )
        );
        assert_eq!(w.take(), Some(sample()));
        let w = RecordAnswers::new(&inner);
        w.answer_body("id", 0, "m", &[a.clone(), a], None);
        assert_eq!(w.take(), None, "several choices");
    }

    #[test]
    fn reasoning_content_is_assembled() {
        let mut a = Assembler::new();
        a.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Hm\"}}]}\n\n");
        a.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"m.\"}}]}\n\n");
        a.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Yes\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        let got = a.answer().unwrap();
        assert_eq!(
            (got.reasoning.as_deref(), got.content.as_deref()),
            (Some("Hmm."), Some("Yes"))
        );
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
