//! What the gateway's keys and limits cost per request, in memory: the key check (SHA-256 of
//! the presented key, lookup, constant-time compare), the bucket check, the `x-ratelimit-*`
//! headers and the token charge after the answer; with 3 and with 10,000 keys configured, and
//! with 2 threads hitting the same key at once.
//!
//!     cargo bench --bench ratelimit

use std::sync::Arc;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use ai_gateway::auth::{self, Auth, AuthConfig};
use ai_gateway::ratelimit::{self, Charge, Limiter, Limits, MemoryLimiter, RateLimitConfig};

/// The allocator the gateway binary runs with (src/main.rs), so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn limits() -> Limits {
    // Generous enough that the bench measures the allowed path, which is the common one.
    Limits {
        rpm: Some(u64::MAX / 4),
        burst: None,
        tpm: Some(u64::MAX / 4),
    }
}

fn auth_with(n: usize) -> Auth {
    let text: String = (0..n)
        .map(|i| format!("team-{i}=sk-gw-bench-key-{i:08}\n"))
        .collect();
    let cfg = AuthConfig {
        env_keys: auth::parse_file(&text).expect("keys"),
        ..AuthConfig::default()
    };
    let rl = RateLimitConfig {
        defaults: limits(),
        ..RateLimitConfig::default()
    };
    Auth::new(cfg, rl)
}

fn bench(c: &mut Criterion) {
    let mem = MemoryLimiter::default();
    let name: Arc<str> = Arc::from("team-a");
    let l = limits();
    c.bench_function("memory bucket check (one key)", |b| {
        b.iter(|| black_box(mem.acquire_at(black_box(&name), &l, Instant::now())))
    });

    let limiter = Limiter::new(RateLimitConfig {
        defaults: l,
        ..RateLimitConfig::default()
    });
    for n in [3usize, 10_000] {
        let a = auth_with(n);
        let header = format!("Bearer sk-gw-bench-key-{:08}", n / 2);
        c.bench_function(
            &format!("per request: key check + limits + headers + charge ({n} keys)"),
            |b| {
                b.iter(|| {
                    let e = a
                        .authenticate(Some(black_box(header.as_bytes())))
                        .expect("ok")
                        .expect("on");
                    let d = futures::executor::block_on(limiter.acquire(&e.name, &e.limits));
                    black_box(ratelimit::headers(&d));
                    let ch = Charge::new(e.name.clone(), e.limits);
                    futures::executor::block_on(limiter.charge(&ch, 42));
                })
            },
        );
    }

    // Threads on one key: the per-key mutex is the only shared point. The figure is the time
    // one check takes as each thread sees it (wall time x threads / checks).
    const THREADS: u32 = 2;
    let shared = Arc::new(MemoryLimiter::default());
    c.bench_function("memory bucket check, 2 threads on one key", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(THREADS as u64);
            let start = Instant::now();
            let hs: Vec<_> = (0..THREADS)
                .map(|_| {
                    let m = shared.clone();
                    let n = name.clone();
                    std::thread::spawn(move || {
                        for _ in 0..per {
                            black_box(m.acquire_at(&n, &l, Instant::now()));
                        }
                    })
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
            start.elapsed() * THREADS
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
