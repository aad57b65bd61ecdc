//! The gateway's state backend (`GATEWAY_STATE_BACKEND`, `GATEWAY_REDIS_URL`) and what is kept
//! in it (`GATEWAY_RESPONSES_TTL`), parsed into [`StateConfig`].

use std::time::Duration;

use super::redis::RedisConfig;
use super::{parse_duration, vars, Reader};

/// Where state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// In this process, bounded by `GATEWAY_STATE_MAX_BYTES`.
    Memory,
    /// Shared by every instance that points at the same Redis.
    Redis,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// `GATEWAY_REDIS_URL` and how to reach it (set by `Config::from_map`).
    pub redis: Option<RedisConfig>,
    /// How long a stored Responses response stays retrievable and continuable.
    pub responses_ttl: Duration,
    /// Most memory the memory backend may take, its bookkeeping included.
    pub memory_max_bytes: u64,
    /// `GATEWAY_STATE_DIR`: where the local tenant state file lives (without Redis).
    pub dir: Option<std::path::PathBuf>,
    /// `GATEWAY_BUDGET_RESERVE_TOKENS`: completion tokens a budgeted request without a max
    /// reserves.
    pub reserve_tokens: u64,
}

/// `GATEWAY_BUDGET_RESERVE_TOKENS`'s default.
pub const DEFAULT_RESERVE_TOKENS: u64 = 4096;

/// 30 days, as long as OpenAI keeps a stored response.
pub const DEFAULT_RESPONSES_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// `GATEWAY_STATE_MAX_BYTES`'s default: 256 MiB.
pub const MEMORY_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// What one record costs the process beside its key and value bytes, measured (`benches/soak.sh`
/// with Responses only: 3.1 KB of RSS a record of 1.1 KB): moka's entry, its order queues and
/// expiry timer, the allocations' own overhead.
pub const MEMORY_RECORD_OVERHEAD: u64 = 2048;
/// Prefix of every Redis key the state backend writes.
pub const REDIS_PREFIX: &str = "aigw:state:";

impl StateConfig {
    /// One line for `--check-config`.
    pub fn describe(&self) -> String {
        let backend = match self.backend {
            StateBackend::Memory => "memory".to_string(),
            StateBackend::Redis => format!("redis (***, prefix {REDIS_PREFIX})"),
        };
        format!(
            "backend={backend} responses_ttl={}s max_bytes={}",
            self.responses_ttl.as_secs(),
            self.memory_max_bytes
        )
    }
}

pub(super) fn read(r: &mut Reader) -> StateConfig {
    let backend = r.parse(vars::STATE_BACKEND, StateBackend::Memory, |v| {
        match v.to_ascii_lowercase().as_str() {
            "memory" => Ok(StateBackend::Memory),
            "redis" => Ok(StateBackend::Redis),
            _ => Err("expected memory or redis".into()),
        }
    });
    // Redis `SET ... EX` counts whole seconds.
    let responses_ttl = r.parse(vars::RESPONSES_TTL, DEFAULT_RESPONSES_TTL, |v| {
        let d = parse_duration(v)?;
        if d.subsec_nanos() != 0 || d.as_secs() == 0 {
            return Err("expected a whole number of seconds >= 1 (2592000, 30m, 12h)".into());
        }
        Ok(d)
    });
    let memory_max_bytes = r.parse(vars::STATE_MAX_BYTES, MEMORY_MAX_BYTES, |v| {
        super::cache::parse_bytes(v)
            .filter(|n| *n >= 1 << 20)
            .ok_or_else(|| "expected a number of bytes >= 1m (268435456, 512m, 2g)".into())
    });
    // The URL itself is checked by the cache's reader (the same variable).
    if backend == StateBackend::Redis && r.get(vars::REDIS_URL).is_none() {
        r.error(
            vars::STATE_BACKEND,
            "redis",
            &format!("the Redis state backend needs {}", vars::REDIS_URL),
        );
    }
    let dir = r
        .get(vars::STATE_DIR)
        .map(|d| std::path::PathBuf::from(d.trim()));
    if dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        r.error(vars::STATE_DIR, "", "expected a directory path");
    }
    let reserve_tokens = r.parse(vars::BUDGET_RESERVE_TOKENS, DEFAULT_RESERVE_TOKENS, |v| {
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| "expected a whole number of tokens >= 1".into())
    });
    StateConfig {
        backend,
        redis: None,
        responses_ttl,
        memory_max_bytes,
        dir,
        reserve_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, Config};
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_map(&env(&[])).unwrap();
        assert_eq!(c.state.backend, StateBackend::Memory);
        assert_eq!(c.state.responses_ttl, DEFAULT_RESPONSES_TTL);
        assert_eq!(c.state.memory_max_bytes, 256 << 20);
        let c = Config::from_map(&env(&[("GATEWAY_STATE_MAX_BYTES", "64m")])).unwrap();
        assert_eq!(c.state.memory_max_bytes, 64 << 20);
        let e = Config::from_map(&env(&[("GATEWAY_STATE_MAX_BYTES", "4k")])).unwrap_err();
        assert!(e.to_string().contains("GATEWAY_STATE_MAX_BYTES"), "{e}");
        let c = Config::from_map(&env(&[
            ("GATEWAY_STATE_BACKEND", "redis"),
            ("GATEWAY_REDIS_URL", "redis://:pw@127.0.0.1:6379"),
            ("GATEWAY_RESPONSES_TTL", "1h"),
        ]))
        .unwrap();
        assert_eq!(c.state.backend, StateBackend::Redis);
        assert_eq!(c.state.responses_ttl, Duration::from_secs(3600));
        assert!(!c.describe().contains("pw"));
        let e = Config::from_map(&env(&[
            ("GATEWAY_STATE_BACKEND", "redis"),
            ("GATEWAY_RESPONSES_TTL", "0"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("GATEWAY_REDIS_URL"), "{e}");
        assert!(e.contains("GATEWAY_RESPONSES_TTL"), "{e}");
        let e = Config::from_map(&env(&[("GATEWAY_STATE_BACKEND", "disk")])).unwrap_err();
        assert!(e.to_string().contains("GATEWAY_STATE_BACKEND"));
    }
}
