//! Fuzz targets (issue 19), one per parser and translator: the request parse of every client
//! dialect (and with it the encoders of every wire format and the cache-key writer), the answer
//! decoders, the stream translators, the SSE framer, the Responses head scan and the upstream
//! error readers. Each asserts that nothing panics, and what else holds for any input.
//!
//! Under `cargo test` (stable) each target runs random inputs for `FUZZ_SECS` seconds (6 by
//! default), built from a seed corpus of real requests, answers and streams by random
//! insertions, deletions and replacements, and sometimes raw bytes: the same harness
//! (`bolero`) runs them under libFuzzer where a nightly toolchain is at hand, for hours:
//!
//! ```sh
//! cargo install cargo-bolero
//! cargo bolero test --toolchain nightly request_parse    # or any target below
//! ```
//!
//! A failure prints `BOLERO_RANDOM_SEED=...`: set it to replay the same inputs. The seed
//! corpus is in `tests/__fuzz__/<target>/corpus/` (bolero replays every file there first, and
//! libFuzzer grows it): each file selects one of the seeds below unchanged, and raw ones are
//! there too; put a crashing input in `crashes/` beside it to keep it as a regression test.

use std::sync::Arc;
use std::time::Duration;

use ai_gateway::api::ChatRequest;
use ai_gateway::cache::key::{exact_request, Identity};
use ai_gateway::config::{BaseUrl, Config, ProviderConfig};
use ai_gateway::dialects::{responses_head, Dialect, DIALECTS};
use ai_gateway::providers::{CallInfo, Provider, REGISTRY};
use ai_gateway::sse::SseFramer;
use bytes::{Bytes, BytesMut};

/// Seconds each target runs under `cargo test`.
fn test_time() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    Duration::from_secs(secs)
}

/// Requests as clients send them, in every dialect.
const REQUESTS: &[&str] = &[
    r#"{"model":"openai/gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi \u00e9 \"there\""}],"temperature":0.2,"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}"#,
    r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"q\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"42"}],"tools":[{"type":"function","function":{"name":"get","parameters":{"type":"object","properties":{"q":{"type":"integer"}}}}}],"tool_choice":"auto","reasoning_effort":"high","response_format":{"type":"json_object"}}"#,
    r#"{"model":"anthropic/claude-sonnet-4-20250514","max_tokens":1024,"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"a.txt"}]}]}],"tools":[{"name":"Bash","description":"run","input_schema":{"type":"object"}}],"thinking":{"type":"enabled","budget_tokens":4096},"stream":true,"stop_sequences":["END"]}"#,
    r#"{"model":"vllm/qwen3-8b","instructions":"Be brief.","input":[{"type":"message","role":"developer","content":"dev"},{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"https://example.invalid/a.png"}]},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"ok"},{"type":"reasoning","summary":[]}],"tools":[{"type":"function","name":"f","parameters":{"type":"object"}},{"type":"custom","name":"apply_patch","format":{"type":"grammar","syntax":"lark","definition":"start: x"}},{"type":"web_search"}],"reasoning":{"effort":"low"},"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"}}},"store":false,"stream":true,"include":["reasoning.encrypted_content"]}"#,
    r#"{"model":"gemini/gemini-2.5-flash","input":"Say hi","max_output_tokens":5,"previous_response_id":"resp_1"}"#,
];

/// Non-streamed answers in every wire format, and errors.
const ANSWERS: &[&str] = &[
    r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","reasoning_content":"think","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls","stop_reason":"END"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"completion_tokens_details":{"reasoning_tokens":1}}}"#,
    r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1,"cache_read_input_tokens":2}}"#,
    r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"think","thought":true},{"text":"Hi"},{"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4,"thoughtsTokenCount":1}}"#,
    r#"{"id":"c","message":{"role":"assistant","content":[{"type":"thinking","thinking":"t"},{"type":"text","text":"Hi"}],"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":3,"output_tokens":1},"tokens":{"input_tokens":3,"output_tokens":1}}}"#,
    r#"{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4o","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[]}]}],"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}"#,
    r#"{"error":{"message":"Incorrect API key provided: sk-...abcd","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
];

/// Streams in every wire format, with comments, keep-alives and errors.
const STREAMS: &[&str] = &[
    concat!(
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\u00e9\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    ),
    concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"c\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"t\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"s\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ),
    concat!(
        "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"think\",\"thought\":true}]}}]}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"},{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1}}\r\n\r\n",
    ),
    concat!(
        "event: message-start\ndata: {\"type\":\"message-start\",\"id\":\"c\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
        "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}\n\n",
        "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":1}}}}\n\n",
    ),
    concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1,\"total_tokens\":4}}}\n\n",
    ),
    "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
];

/// A seed changed by `input`: its first byte picks the seed (or, at 0xF0 and above, takes the
/// rest as raw bytes); up to 15 groups of three bytes after it insert, delete, replace or
/// duplicate at a place they name. Under libFuzzer the same input drives the mutation.
fn mutated(seeds: &[&str], input: &[u8]) -> Vec<u8> {
    let Some((&pick, ops)) = input.split_first() else {
        return seeds[0].as_bytes().to_vec();
    };
    if pick >= 0xF0 {
        return ops.to_vec();
    }
    let mut out = seeds[usize::from(pick) % seeds.len()].as_bytes().to_vec();
    // A few changes at a time (the pick's high bits say how many), so most inputs stay close
    // to valid and reach deep into the readers.
    for op in ops.chunks_exact(3).take(1 + usize::from(pick >> 4)) {
        let (kind, a, b) = (op[0], op[1], op[2]);
        let at = (usize::from(a) << 8 | usize::from(b)) % (out.len() + 1);
        match kind % 5 {
            0 => out.insert(at, b),
            1 if at < out.len() => {
                out.remove(at);
            }
            2 if at < out.len() => out[at] = a ^ b ^ kind,
            3 => {
                // A structural byte JSON readers branch on.
                const STRUCTURAL: &[u8] = b"{}[]\",:\\ \n0-etnu";
                let c = STRUCTURAL[usize::from(a) % STRUCTURAL.len()];
                out.insert(at, c);
            }
            _ => {
                // A piece duplicated (nesting, repeated keys).
                let end = (at + usize::from(a % 32)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
        }
        if out.len() > 64 * 1024 {
            break;
        }
    }
    out
}

fn config() -> Config {
    match Config::from_map(&Default::default()) {
        Ok(c) => c,
        Err(e) => panic!("default configuration: {e}"),
    }
}

/// One provider of every wire format.
fn providers() -> Vec<(&'static str, Arc<dyn Provider>)> {
    let config = config();
    REGISTRY
        .iter()
        .map(|(format, make)| {
            let cfg = ProviderConfig {
                format: (*format).into(),
                ..config.providers["echo"].clone()
            };
            (*format, make(&cfg, &config))
        })
        .collect()
}

fn backend() -> BaseUrl {
    BaseUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: 9,
        path: "/v1".into(),
    }
}

fn call(dialect: &dyn Dialect, stream: bool, passthrough: bool) -> CallInfo {
    CallInfo {
        client_model: "p/m".into(),
        upstream_model: "m".into(),
        stream,
        include_usage: true,
        parallel_tool_calls: true,
        passthrough,
        client_format: dialect.native_format(),
        client_headers: Vec::new(),
    }
}

/// Everything the proxy reads of a parsed request, and its encoding for every format.
fn exercise(req: &ChatRequest, dialect: &dyn Dialect, providers: &[(&str, Arc<dyn Provider>)]) {
    let _ = req.untranslatable();
    let _ = req.notes();
    let _ = req.body();
    let _ = exact_request(
        Identity {
            provider: "p",
            upstream_model: "m",
            scope: None,
        },
        req,
    );
    for (format, p) in providers {
        let passthrough = *format == dialect.native_format();
        for pass in [false, passthrough] {
            let _ = p.chat_request(req, &call(dialect, req.stream, pass), &backend());
        }
    }
}

#[test]
fn request_parse() {
    // Providers hold no state a panic could leave half-changed.
    let providers = std::panic::AssertUnwindSafe(providers());
    let providers = &providers;
    bolero::check!()
        .with_test_time(test_time())
        .for_each(move |input: &[u8]| {
            let body = Bytes::from(mutated(REQUESTS, input));
            for (_, dialect) in DIALECTS {
                for spans in [false, true] {
                    if let Ok(req) = dialect.parse(&body, spans) {
                        exercise(&req, *dialect, &providers.0);
                    }
                }
            }
            for spans in [false, true] {
                if let Ok(req) = ChatRequest::parse_with(&body, spans) {
                    exercise(&req, DIALECTS[0].1, &providers.0);
                }
            }
        });
}

#[test]
fn responses_head() {
    bolero::check!()
        .with_test_time(test_time())
        .for_each(|input: &[u8]| {
            let body = mutated(REQUESTS, input);
            if let Some(h) = responses_head::read(&body) {
                // What it reports is in the body, and what a splice replaces is the model.
                let (a, b) = h.model_span;
                assert!(a < b && b <= body.len(), "{:?}", h.model_span);
                let model: String = match serde_json::from_slice(&body[a..b]) {
                    Ok(m) => m,
                    Err(e) => panic!("model span is not a string: {e}"),
                };
                assert_eq!(model, h.model);
                let (a, b) = h.input_span;
                assert!(a < b && b <= body.len(), "{:?}", h.input_span);
            }
        });
}

#[test]
fn answer_decode() {
    // Providers hold no state a panic could leave half-changed.
    let providers = std::panic::AssertUnwindSafe(providers());
    let providers = &providers;
    bolero::check!()
        .with_test_time(test_time())
        .for_each(move |input: &[u8]| {
            let body = Bytes::from(mutated(ANSWERS, input));
            for (format, p) in providers.0.iter() {
                for (_, dialect) in DIALECTS {
                    let passthrough = *format == dialect.native_format();
                    for pass in [false, passthrough] {
                        let c = call(*dialect, false, pass);
                        let _ = p.chat_response(body.clone(), &c, dialect.answers());
                    }
                }
                let _ = p.error(400, &body);
                let _ = p.error(503, &body);
            }
        });
}

#[test]
fn stream_decode() {
    // Providers hold no state a panic could leave half-changed.
    let providers = std::panic::AssertUnwindSafe(providers());
    let providers = &providers;
    bolero::check!()
        .with_test_time(test_time())
        .for_each(move |input: &[u8]| {
            let Some((&cut, rest)) = input.split_first() else {
                return;
            };
            let body = mutated(STREAMS, rest);
            let split = usize::from(cut) * body.len() / 256;
            for (format, p) in providers.0.iter() {
                for (_, dialect) in DIALECTS {
                    let passthrough = *format == dialect.native_format();
                    for pass in [false, passthrough] {
                        let c = call(*dialect, true, pass);
                        let mut t = p.stream_translator(&c, dialect.events("p/m"));
                        let mut out = BytesMut::new();
                        let (a, b) = body.split_at(split);
                        let _ = t.feed(a, &mut out);
                        let _ = t.feed(b, &mut out);
                        let _ = t.finish(&mut out);
                        let _ = t.usage();
                    }
                }
            }
        });
}

#[test]
fn sse_framer() {
    bolero::check!()
        .with_test_time(test_time())
        .for_each(|input: &[u8]| {
            let Some((&cut, rest)) = input.split_first() else {
                return;
            };
            let body = mutated(STREAMS, rest);
            // Whole, and in two pieces: the same events (framing never depends on the split).
            let events = |pieces: &[&[u8]]| {
                let mut f = SseFramer::new();
                let mut got = Vec::new();
                for p in pieces {
                    f.push(p);
                    while let Some(ev) = f.next_event() {
                        got.push((ev.event.clone(), ev.data.clone()));
                    }
                }
                let tail = f.finish().map(|ev| (ev.event, ev.data));
                (got, tail)
            };
            let whole = events(&[&body]);
            let split = usize::from(cut) * body.len() / 256;
            let (a, b) = body.split_at(split);
            assert_eq!(whole, events(&[a, b]), "split at {split}");
        });
}
