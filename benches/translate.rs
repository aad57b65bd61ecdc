//! Micro-benchmarks of the per-request work: parsing and re-encoding a typical 2 KB chat
//! request for an OpenAI-compatible upstream, and translating one upstream stream event into
//! an OpenAI chunk.
//!
//!     cargo bench --bench translate

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

use ai_gateway::api::{ChatRequest, ChunkWriter};
use ai_gateway::config::{BaseUrl, Config};
use ai_gateway::providers::{self, CallInfo};

/// The allocator the gateway binary runs with (src/main.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A typical chat request of about 2 KB: a system prompt, a few turns, parameters.
pub fn request_2kb() -> Vec<u8> {
    let mut msgs = vec![
        serde_json::json!({"role": "system", "content": "You are a helpful assistant. ".repeat(12)}),
    ];
    for i in 0..5 {
        msgs.push(serde_json::json!({"role": "user", "content": format!("Question {i}: {}", "what is the capital of France? ".repeat(4))}));
        msgs.push(serde_json::json!({"role": "assistant", "content": "Paris is the capital of France. ".repeat(4)}));
    }
    msgs.push(serde_json::json!({"role": "user", "content": "Thanks, and of Italy?"}));
    let v = serde_json::json!({"model": "openai/gpt-4o-mini", "messages": msgs, "temperature": 0.2, "max_tokens": 64, "stream": true});
    serde_json::to_vec(&v).expect("json")
}

fn config() -> Config {
    let env: std::collections::HashMap<String, String> = [
        ("OPENAI_API_KEY", "sk-bench"),
        ("ANTHROPIC_API_KEY", "sk-ant-bench"),
        ("GEMINI_API_KEY", "g-bench"),
        ("AWS_ACCESS_KEY_ID", "AKIDBENCH"),
        ("AWS_SECRET_ACCESS_KEY", "bench-secret"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Config::from_map(&env).expect("config")
}

fn bench(c: &mut Criterion) {
    let body = request_2kb();
    assert!((1800..2600).contains(&body.len()), "{} bytes", body.len());
    let config = config();
    let backend = BaseUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: 9,
        path: "/v1".into(),
    };
    let call = CallInfo {
        client_model: "openai/gpt-4o-mini".into(),
        upstream_model: "gpt-4o-mini".into(),
        stream: true,
        include_usage: false,
        parallel_tool_calls: true,
        passthrough: false,
        client_format: "openai",
        client_headers: Vec::new(),
    };
    // Bedrock's includes its SigV4 signature (made per attempt).
    for name in ["openai", "anthropic", "google", "bedrock"] {
        let p = providers::build(&config.providers[name], &config).expect("provider");
        // An OpenAI chat client and an OpenAI upstream: the pass-through path.
        let call = CallInfo {
            passthrough: name == "openai",
            client_format: "openai",
            ..call.clone()
        };
        let backend = if name == "openai" {
            backend.clone()
        } else {
            BaseUrl {
                path: String::new(),
                ..backend.clone()
            }
        };
        c.bench_function(&format!("parse + encode 2KB request for {name}"), |b| {
            b.iter(|| {
                let req = ChatRequest::parse(black_box(&body)).expect("parse");
                black_box(p.chat_request(&req, &call, &backend))
            })
        });
    }

    let openai_event = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" Paris\"},\"finish_reason\":null}]}\n\n";
    let anthropic_event = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" Paris\"}}\n\n";
    let gemini_event = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" Paris\"}],\"role\":\"model\"},\"index\":0}],\"modelVersion\":\"gemini-2.0-flash\"}\n\n";
    // Anthropic's deltas follow a message_start and a content_block_start: fed once first so
    // the measured event is translated as in a real stream, not rejected.
    let anthropic_prelude = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-latest\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    for (name, prelude, event) in [
        ("openai", &b""[..], &openai_event[..]),
        ("anthropic", &anthropic_prelude[..], &anthropic_event[..]),
        ("google", &b""[..], &gemini_event[..]),
    ] {
        let p = providers::build(&config.providers[name], &config).expect("provider");
        let call = CallInfo {
            passthrough: name == "openai",
            client_format: "openai",
            ..call.clone()
        };
        let mut t = p.stream_translator(&call, Box::new(ChunkWriter::new(&call.client_model)));
        let mut out = BytesMut::with_capacity(4096);
        t.feed(prelude, &mut out);
        out.clear();
        t.feed(event, &mut out);
        let chunk = String::from_utf8_lossy(&out).into_owned();
        assert!(
            chunk.starts_with("data: {")
                && chunk.contains("Paris")
                && chunk.contains("chat.completion.chunk"),
            "{name}: the event must become an OpenAI chunk, got {chunk:?}"
        );
        c.bench_function(&format!("translate one {name} stream event"), |b| {
            b.iter(|| {
                out.clear();
                black_box(t.feed(black_box(event), &mut out));
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
