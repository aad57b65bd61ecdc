//! Cost of deriving a cache key (canonical form + SHA-256) for typical chat requests.
//!
//! ```sh
//! cargo bench --bench cache_key
//! ```

use std::hint::black_box;

use ai_gateway::api::{parse_raw_object, ChatRequest};
use ai_gateway::cache::key::{context, exact, exact_fields, exact_request, Identity};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Map, Value};

/// The allocator the gateway binary runs with (src/main.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ID: Identity = Identity {
    provider: "openai",
    upstream_model: "gpt-4o",
    scope: None,
};

fn small() -> Map<String, Value> {
    obj(json!({
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0.2
    }))
}

/// A system prompt, ten turns of conversation, three tools with schemas.
fn typical() -> Map<String, Value> {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant for a travel company. ".repeat(10)}),
    ];
    for i in 0..10 {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what should I see in Paris if I have a free afternoon and like museums? ")}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: the Musée d'Orsay, then a walk along the Seine to the Louvre and the Tuileries. ")}));
    }
    let tool = |name: &str| {
        json!({"type": "function", "function": {"name": name, "description": "Look something up for the traveller.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "date": {"type": "string", "format": "date"}},
                           "required": ["city"], "additionalProperties": false}}})
    };
    obj(json!({
        "model": "openai/gpt-4o",
        "messages": messages,
        "tools": [tool("get_weather"), tool("get_events"), tool("book_table")],
        "tool_choice": "auto",
        "temperature": 0.7,
        "max_tokens": 512,
        "stream": true,
        "user": "u-123"
    }))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_key");
    for (name, body) in [("small", small()), ("typical", typical())] {
        let bytes = serde_json::to_vec(&body).map(|b| b.len()).unwrap_or(0);
        g.throughput(Throughput::Bytes(bytes as u64));
        let text = serde_json::to_vec(&body).unwrap_or_default();
        // What a cache lookup runs: the key of the parsed request, its plain messages written
        // from where the parser found their fields (no second walk of the prompt).
        let req = ChatRequest::parse(&text).ok();
        g.bench_function(format!("exact/{name}_{bytes}B"), |b| {
            b.iter(|| req.as_ref().map(|r| exact_request(ID, black_box(r))))
        });
        // The key from raw top-level fields, every value walked (what a request whose messages
        // are not plain costs).
        let raw = parse_raw_object(&text).unwrap_or_default();
        g.bench_function(format!("exact_walk/{name}_{bytes}B"), |b| {
            b.iter(|| {
                let fields = black_box(&raw).iter().map(|(k, v)| (k.as_str(), v.get()));
                exact_fields(ID, fields)
            })
        });
        g.bench_function(format!("exact_build_tree/{name}_{bytes}B"), |b| {
            b.iter(|| {
                let tree: Map<String, Value> = black_box(&raw)
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::from_str(v.get()).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                exact(ID, &tree)
            })
        });
        // The same key from a JSON tree built beforehand (the semantic cache's context key
        // below still works this way).
        g.bench_function(format!("exact_from_tree/{name}_{bytes}B"), |b| {
            b.iter(|| exact(ID, black_box(&body)))
        });
        g.bench_function(format!("context/{name}_{bytes}B"), |b| {
            b.iter(|| context(ID, black_box(&body)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
