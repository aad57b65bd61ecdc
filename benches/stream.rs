//! Streaming benchmark: 1,000 concurrent streams of 100 chunks each from a mock that waits
//! 20 ms between chunks, first directly and then through the gateway. Reports the time to first
//! byte added by the gateway (p50/p99) and the gateway's idle and peak RSS.
//!
//! Two schedules, each run directly and through the gateway:
//! - ramp (the target): stream i starts at i ms, so the 1,000 starts spread over 1 s while every
//!   stream lasts 2 s: all 1,000 are open at once from 1 s to 2 s (the most streams open at the
//!   same time is printed). Time to first byte is then a stream's own latency under that load.
//! - burst: all 1,000 start in the same instant; time to first byte is mostly the wait in the
//!   queue of 1,000 connection and request set-ups (the direct mock's own p50 is tens of ms).
//!
//!     benches/stream.sh          (raises the open-files limit, then `cargo bench --bench stream`)
//!
//! Everything runs on loopback; every loop is bounded (streams, chunks, a 120 s deadline).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// User+system CPU time of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resets the peak RSS (VmHWM) of a process to its current RSS.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
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
/// Runs the streams, stream i starting at `i * spacing`. Returns the times to first byte, the
/// number of failed streams and the most streams open at the same time.
async fn run(url: &str, body: &'static str, spacing: Duration) -> (Vec<Duration>, usize, usize) {
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(STREAMS)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let start = tokio::time::Instant::now();
    let tasks = (0..STREAMS).map(|i| {
        let c = client.clone();
        let url = url.to_string();
        let (open, most) = (open.clone(), most.clone());
        async move {
            tokio::time::sleep_until(start + spacing * i as u32).await;
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
            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now_open, Ordering::SeqCst);
            let mut total = first.len();
            let mut n = 0;
            while let Some(Ok(c)) = s.next().await {
                total += c.len();
                n += 1;
                if n > CHUNKS * 4 {
                    break;
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
            (total > 0).then_some(ttfb)
        }
    });
    let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .unwrap_or_default();
    let errors = STREAMS - results.iter().filter(|r| r.is_some()).count();
    let mut ttfbs: Vec<Duration> = results.into_iter().flatten().collect();
    ttfbs.sort();
    (ttfbs, errors, most.load(Ordering::SeqCst))
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
            // Allocator settings to compare (e.g. MIMALLOC_ALLOW_THP=0).
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")))
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
        let direct_url = format!("http://127.0.0.1:{mock_port}/v1/chat/completions");
        let gw_url = format!("http://127.0.0.1:{gw_port}/v1/chat/completions");
        let pid = gw.id();
        // Per schedule: the gateway's CPU seconds and peak RSS over its run.
        let through = |spacing: Duration| {
            let url = gw_url.clone();
            async move {
                reset_peak(pid);
                let cpu0 = cpu_secs(pid);
                let r = run(&url, body, spacing).await;
                (r, cpu_secs(pid) - cpu0, rss_kb(pid, "VmHWM"))
            }
        };
        let ramp = Duration::from_millis(1);
        let ramp_direct = run(&direct_url, body, ramp).await;
        let (ramp_gw, ramp_cpu, ramp_peak) = through(ramp).await;
        let burst_direct = run(&direct_url, body, Duration::ZERO).await;
        let (burst_gw, burst_cpu, burst_peak) = through(Duration::ZERO).await;
        let ramped = (ramp_direct, ramp_gw);
        let burst = (burst_direct, burst_gw);
        let peak_rss = ramp_peak.max(burst_peak);
        let _ = gw.kill();
        let _ = gw.wait();
        let _ = std::fs::remove_dir_all(&dir);

        println!(
            "streams={STREAMS} chunks={CHUNKS} gap={}ms",
            GAP.as_millis()
        );
        println!(
            "{:<16} {:>8} {:>8} {:>8} {:>9}",
            "ttfb ms", "p50", "p99", "errors", "max open"
        );
        for (name, (direct, via), cpu, peak) in [
            ("ramp 1/ms", &ramped, ramp_cpu, ramp_peak),
            ("burst", &burst, burst_cpu, burst_peak),
        ] {
            for (who, (t, errors, most)) in [("direct", direct), ("gateway", via)] {
                println!(
                    "{:<16} {:>8.2} {:>8.2} {:>8} {:>9}",
                    format!("{name} {who}"),
                    pct(t, 0.5),
                    pct(t, 0.99),
                    errors,
                    most
                );
            }
            println!(
                "{name}: added ttfb p50 {:.2} ms, p99 {:.2} ms; gateway cpu {:.2} s ({:.1} us per chunk), peak rss {} MB",
                pct(&via.0, 0.5) - pct(&direct.0, 0.5),
                pct(&via.0, 0.99) - pct(&direct.0, 0.99),
                cpu,
                cpu * 1e6 / (STREAMS * (CHUNKS + 1)) as f64,
                peak / 1024
            );
        }
        println!(
            "gateway rss: idle {} MB, peak {} MB (the larger of the two schedules)",
            idle_rss / 1024,
            peak_rss / 1024
        );
    });
}
