//! What a pool pick costs on the request path (issue 23): the prompt's block hashes (made once
//! per request), and one pick among 16 replicas by each strategy: `inference` (affinity table
//! look-up, load comparison, recording the prompt's blocks), `least_requests` (two choices) and
//! the whole `Pool::pick_for` with its breakers. Target: under 2 µs of CPU per pick.
//!
//!     cargo bench --bench pool_pick

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use ai_gateway::balance::{Balancer, PromptKey};
use ai_gateway::config::{BaseUrl, Config, PoolStrategy};
use ai_gateway::health::Pool;
use ai_gateway::upstream::{Timeouts, Upstreams};

/// The allocator the gateway binary runs with (src/main.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REPLICAS: u16 = 16;

fn urls() -> Vec<BaseUrl> {
    (0..REPLICAS)
        .map(|i| BaseUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: 9000 + i,
            path: "/v1".into(),
        })
        .collect()
}

/// A conversation's `messages` as sent: a shared system prompt and `turns` turns (~`turns` KB).
fn messages(system: usize, turns: usize) -> String {
    let mut s = format!(
        "[{{\"role\":\"system\",\"content\":\"system prompt {system}: {}\"}}",
        "Follow the house rules carefully. ".repeat(30)
    );
    for t in 0..turns {
        s.push_str(&format!(
            ",{{\"role\":\"user\",\"content\":\"turn {t}: {}\"}},{{\"role\":\"assistant\",\"content\":\"{}\"}}",
            "question words ".repeat(20),
            "answer words ".repeat(50)
        ));
    }
    s.push(']');
    s
}

fn bench(c: &mut Criterion) {
    let short = messages(1, 8);
    let long = messages(1, 40);
    c.bench_function(&format!("prompt_key_{}kb", short.len() / 1024), |b| {
        b.iter(|| PromptKey::new(&[black_box(short.as_bytes())]))
    });
    c.bench_function(&format!("prompt_key_{}kb", long.len() / 1024), |b| {
        b.iter(|| PromptKey::new(&[black_box(long.as_bytes())]))
    });

    let inference = Balancer::new("vllm", &urls(), PoolStrategy::Inference, 4, None);
    // A table that knows many conversations, as a busy pool's would.
    let keys: Vec<PromptKey> = (0..512)
        .map(|i| PromptKey::new(&[messages(i % 16, 2 + i % 8).as_bytes()]))
        .collect();
    for k in &keys {
        inference.pick(Some(k), |_| true);
    }
    let known = PromptKey::new(&[messages(3, 9).as_bytes()]);
    let mut i = 0;
    c.bench_function("inference_pick_16_replicas_8kb_prompt", |b| {
        b.iter(|| {
            i += 1;
            let k = if i % 2 == 0 {
                &known
            } else {
                &keys[i % keys.len()]
            };
            black_box(inference.pick(Some(black_box(k)), |_| true))
        })
    });
    let least = Balancer::new("vllm", &urls(), PoolStrategy::LeastRequests, 4, None);
    c.bench_function("least_requests_pick_16_replicas", |b| {
        b.iter(|| black_box(least.pick(None, |_| true)))
    });

    let env: HashMap<String, String> = [(
        "VLLM_BASE_URL".to_string(),
        urls()
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )]
    .into_iter()
    .collect();
    let config = Config::from_map(&env).expect("config");
    let provider = ai_gateway::providers::build(&config.providers["vllm"], &config).expect("vllm");
    let t = Duration::from_secs(1);
    let upstreams = Arc::new(Upstreams::new(Timeouts {
        connect: t,
        first_byte: t,
        idle: t,
    }));
    let pool = Pool::new(&provider, upstreams, 1, Duration::from_secs(30), None).with_strategy(
        PoolStrategy::Inference,
        4,
        None,
    );
    for k in &keys {
        pool.pick_for(&[], Some(k));
    }
    let mut i = 0;
    c.bench_function("pool_pick_for_16_replicas_with_breakers", |b| {
        b.iter(|| {
            i += 1;
            let k = if i % 2 == 0 {
                &known
            } else {
                &keys[i % keys.len()]
            };
            black_box(pool.pick_for(&[], Some(black_box(k))))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
