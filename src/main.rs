//! `ai-gateway`: parse the configuration, then run. No logic here.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use ai_gateway::config::{Config, ConfigError};
use ai_gateway::server::{self, Args};
use ai_gateway::telemetry;

/// mimalloc: per-thread free lists make the many small per-request allocations (headers, JSON
/// values, log fields) cheaper than glibc malloc; measured in benches/RESULTS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "ai-gateway: an OpenAI-compatible LLM gateway (configured through environment variables; see README)

usage: ai-gateway [--check-config] [--upgrade] [--daemon] [--version]
  --check-config  print the resolved configuration (secrets masked) and exit; non-zero on errors
  --upgrade       take over the listening sockets of a running ai-gateway (graceful upgrade)
  --daemon        fork into the background once ready and write GATEWAY_PID_FILE (systemd Type=forking)";

fn main() {
    disable_transparent_huge_pages();
    let mut args = Args::default();
    let mut check = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check-config" => check = true,
            "--upgrade" | "-u" => args.upgrade = true,
            "--daemon" | "-d" => args.daemon = true,
            "--version" | "-V" => {
                println!("ai-gateway {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ai-gateway: {e}");
            std::process::exit(2);
        }
    };
    // Wire format names are checked against the codecs the binary has (config cannot know).
    if let Err(e) = ai_gateway::providers::check(&config) {
        eprintln!("ai-gateway: {}", ConfigError(vec![e]));
        std::process::exit(2);
    }
    if check {
        print!("{}", config.describe());
        return;
    }
    telemetry::init_logging(&config.log_level, config.log_format);
    // A TLS Redis whose certificate fails verification is a configuration error (an unreachable
    // one is not: the features that use it degrade until it answers).
    if let Err(e) = ai_gateway::redis_link::check_at_startup(&config) {
        eprintln!("ai-gateway: {}", ConfigError(vec![e]));
        std::process::exit(2);
    }
    server::run(config, args);
    telemetry::flush_logs();
}

/// mimalloc asks for transparent huge pages on its arenas; every new connection's buffers then
/// fault in (and zero) 2 MiB at a time, which made 1,000 simultaneous streams take 220 MB and
/// hundreds of ms to start (benches/RESULTS.md). This is what `MIMALLOC_ALLOW_THP=0` does, done
/// here because mimalloc reads its options before `main` runs.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
