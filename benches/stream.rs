//! Streaming benchmark: 1,000 concurrent streams of 100 chunks each from a mock that waits
//! 20 ms between chunks, first directly and then through the gateway. Reports the time to first
//! byte added by the gateway (p50/p99) and the gateway's idle and peak RSS.
//!
//!     benches/stream.sh          (raises the open-files limit, then `cargo bench --bench stream`)
//!
//! Everything runs on loopback; every loop is bounded (streams, chunks, a 120 s deadline).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

const STREAMS: usize = 1000;
const CHUNKS: usize = 100;
const GAP: Duration = Duration::from_millis(20);

fn chunk(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-b\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

async fn sse(_req: axum::extract::Request) -> Response {
    let s = futures::stream::iter(0..CHUNKS + 1).then(|i| async move {
        if i > 0 {
            tokio::time::sleep(GAP).await;
        }
        let b = if i == CHUNKS {
            Bytes::from_static(b"data: [DONE]\n\n")
        } else {
            chunk(i)
        };
        Ok::<_, std::io::Error>(b)
    });
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("header"));
    r
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs STREAMS concurrent streams against `url`; returns sorted TTFBs and full-stream errors.
async fn run(url: &str, body: &'static str) -> (Vec<Duration>, usize) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(STREAMS)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let tasks = (0..STREAMS).map(|_| {
        let c = client.clone();
        let url = url.to_string();
        async move {
            let t = Instant::now();
            let resp = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            let mut s = resp.bytes_stream();
            let first = s.next().await?.ok()?;
            let ttfb = t.elapsed();
            let mut total = first.len();
            let mut n = 0;
            while let Some(Ok(c)) = s.next().await {
                total += c.len();
                n += 1;
                if n > CHUNKS * 4 {
                    break;
                }
            }
            (total > 0).then_some(ttfb)
        }
    });
    let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .unwrap_or_default();
    let errors = STREAMS - results.iter().filter(|r| r.is_some()).count();
    let mut ttfbs: Vec<Duration> = results.into_iter().flatten().collect();
    ttfbs.sort();
    (ttfbs, errors)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mock_port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(sse);
            let _ = axum::serve(listener, app).await;
        });

        let bin =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/ai-gateway");
        assert!(
            bin.exists(),
            "build the gateway first: cargo build --release"
        );
        let gw_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let dir =
            std::env::temp_dir().join(format!("ai-gateway-stream-bench-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut gw = Command::new(&bin)
            .env_clear()
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{gw_port}"))
            .env(
                "GATEWAY_THREADS",
                std::env::var("GATEWAY_THREADS").unwrap_or_else(|_| "1".into()),
            )
            .env("GATEWAY_HEALTH_CHECK_INTERVAL", "off")
            .env("GATEWAY_LOG_LEVEL", "warn")
            .env("GATEWAY_CACHE_BACKEND", "off")
            .env("GATEWAY_UPGRADE_SOCK", dir.join("up.sock"))
            .env("GATEWAY_PID_FILE", dir.join("gw.pid"))
            .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{mock_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", gw_port)).is_err()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_rss = rss_kb(gw.id(), "VmRSS");

        let body =
            r#"{"model":"openai/m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let (direct, derr) = run(
            &format!("http://127.0.0.1:{mock_port}/v1/chat/completions"),
            body,
        )
        .await;
        let (via, verr) = run(
            &format!("http://127.0.0.1:{gw_port}/v1/chat/completions"),
            body,
        )
        .await;
        let peak_rss = rss_kb(gw.id(), "VmHWM");
        let _ = gw.kill();
        let _ = gw.wait();
        let _ = std::fs::remove_dir_all(&dir);

        println!(
            "streams={STREAMS} chunks={CHUNKS} gap={}ms",
            GAP.as_millis()
        );
        println!(
            "{:<10} {:>8} {:>8} {:>8}",
            "ttfb ms", "p50", "p99", "errors"
        );
        println!(
            "{:<10} {:>8.2} {:>8.2} {:>8}",
            "direct",
            pct(&direct, 0.5),
            pct(&direct, 0.99),
            derr
        );
        println!(
            "{:<10} {:>8.2} {:>8.2} {:>8}",
            "gateway",
            pct(&via, 0.5),
            pct(&via, 0.99),
            verr
        );
        println!(
            "added ttfb: p50 {:.2} ms, p99 {:.2} ms",
            pct(&via, 0.5) - pct(&direct, 0.5),
            pct(&via, 0.99) - pct(&direct, 0.99)
        );
        println!(
            "gateway rss: idle {} MB, peak {} MB",
            idle_rss / 1024,
            peak_rss / 1024
        );
    });
}
