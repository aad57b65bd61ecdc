//! The response cache's variables (`GATEWAY_CACHE_*`, `GATEWAY_SEMANTIC_CACHE*`,
//! `GATEWAY_REDIS_URL`), parsed into [`CacheConfig`].

use std::time::Duration;

use super::redis::RedisConfig;
use super::{parse_duration, parse_switch, vars, Reader};

/// Where entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Memory,
    Redis,
    Off,
}

/// Whether gateway API keys share entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// Entries are per gateway key (by its name); requests without a key share one scope.
    Key,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    /// The embeddings model, as a client would name it (`openai/text-embedding-3-small`).
    pub model: String,
    /// Lowest cosine similarity that counts as a hit.
    pub threshold: f32,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub backend: BackendKind,
    pub ttl: Duration,
    /// Most entries the memory backend holds.
    pub max_size: u64,
    /// Most bytes of answers the memory backend holds.
    pub max_bytes: u64,
    pub scope: Scope,
    /// `GATEWAY_REDIS_URL` and how to reach it (set by `Config::from_map`).
    pub redis: Option<RedisConfig>,
    /// Prefix of every Redis key the cache writes.
    pub prefix: String,
    pub semantic: Option<SemanticConfig>,
}

impl CacheConfig {
    pub fn enabled(&self) -> bool {
        self.backend != BackendKind::Off
    }

    /// One line for `--check-config`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "backend={} ttl={}s max_size={} max_bytes={} scope={}",
            match self.backend {
                BackendKind::Memory => "memory",
                BackendKind::Redis => "redis",
                BackendKind::Off => "off",
            },
            self.ttl.as_secs(),
            self.max_size,
            self.max_bytes,
            match self.scope {
                Scope::Global => "global",
                Scope::Key => "key",
            }
        );
        if self.backend == BackendKind::Redis {
            s.push_str(&format!(" redis=*** prefix={}", self.prefix));
        }
        if let Some(sem) = &self.semantic {
            s.push_str(&format!(
                " semantic=on model={} threshold={}",
                sem.model, sem.threshold
            ));
        }
        s
    }
}

pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_SIZE: u64 = 10_000;
/// 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_PREFIX: &str = "aigw:cache:";
pub const DEFAULT_THRESHOLD: f32 = 0.95;

pub(super) fn read(r: &mut Reader) -> CacheConfig {
    let backend = r.parse(vars::CACHE_BACKEND, BackendKind::Memory, |v| {
        match v.to_ascii_lowercase().as_str() {
            "memory" => Ok(BackendKind::Memory),
            "redis" => Ok(BackendKind::Redis),
            "off" | "none" | "false" | "0" => Ok(BackendKind::Off),
            _ => Err("expected memory, redis or off".into()),
        }
    });
    // Redis `SET ... EX` counts whole seconds, and so does `X-Cache-TTL`.
    let ttl = r.parse(vars::CACHE_TTL, DEFAULT_TTL, |v| {
        let d = parse_duration(v)?;
        if d.subsec_nanos() != 0 || d.as_secs() == 0 {
            return Err("expected a whole number of seconds >= 1 (300, 5m, 1h)".into());
        }
        Ok(d)
    });
    let max_size = r.parse(vars::CACHE_MAX_SIZE, DEFAULT_MAX_SIZE, |v| {
        match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err("expected a number of entries >= 1".into()),
        }
    });
    let max_bytes = r.parse(vars::CACHE_MAX_BYTES, DEFAULT_MAX_BYTES, |v| {
        parse_bytes(v)
            .filter(|n| *n >= 1024)
            .ok_or_else(|| "expected a number of bytes >= 1024 (268435456, 512k, 256m, 2g)".into())
    });
    let scope = r.parse(vars::CACHE_SCOPE, Scope::Global, |v| {
        match v.to_ascii_lowercase().as_str() {
            "global" => Ok(Scope::Global),
            "key" => Ok(Scope::Key),
            _ => Err("expected global or key".into()),
        }
    });
    let prefix = r
        .get(vars::CACHE_PREFIX)
        .unwrap_or(DEFAULT_PREFIX)
        .to_string();

    // The URL itself is checked by `super::redis` (the same variable, for every feature).
    if r.get(vars::REDIS_URL).is_none() && backend == BackendKind::Redis {
        r.error(
            vars::CACHE_BACKEND,
            "redis",
            &format!("the Redis backend needs {}", vars::REDIS_URL),
        );
    }

    let semantic_on = r.parse(vars::SEMANTIC_CACHE, false, parse_switch);
    let threshold = r.parse(
        vars::SEMANTIC_CACHE_THRESHOLD,
        DEFAULT_THRESHOLD,
        |v| match v.parse::<f32>() {
            Ok(t) if t > 0.0 && t <= 1.0 => Ok(t),
            _ => Err("expected a cosine similarity in (0, 1], e.g. 0.95".into()),
        },
    );
    let model = r.get(vars::SEMANTIC_CACHE_MODEL).map(str::to_string);
    let semantic = if semantic_on {
        if backend == BackendKind::Off {
            r.error(
                vars::SEMANTIC_CACHE,
                "on",
                &format!(
                    "the semantic cache needs a cache backend ({} is off)",
                    vars::CACHE_BACKEND
                ),
            );
        }
        match model {
            Some(model) => Some(SemanticConfig { model, threshold }),
            None => {
                r.error(
                    vars::SEMANTIC_CACHE,
                    "on",
                    &format!(
                        "set {} to an embeddings model, e.g. openai/text-embedding-3-small",
                        vars::SEMANTIC_CACHE_MODEL
                    ),
                );
                None
            }
        }
    } else {
        None
    };

    CacheConfig {
        backend,
        ttl,
        max_size,
        max_bytes,
        scope,
        redis: None,
        prefix,
        semantic,
    }
}

/// A byte count: digits, optionally followed by `k`, `m` or `g` (powers of 1024).
pub(super) fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (digits, unit) = match v.strip_suffix(['k', 'm', 'g']) {
        Some(d) => (d, &v[d.len()..]),
        None => (v.as_str(), ""),
    };
    let n: u64 = digits.trim().parse().ok()?;
    let shift = match unit {
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => 0,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, Config};
    use super::*;

    #[test]
    fn defaults_are_memory_five_minutes_ten_thousand() {
        let c = Config::from_map(&env(&[])).unwrap().cache;
        assert_eq!(c.backend, BackendKind::Memory);
        assert_eq!(c.ttl, Duration::from_secs(300));
        assert_eq!(c.max_size, 10_000);
        assert_eq!(c.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.scope, Scope::Global);
        assert!(c.semantic.is_none());
    }

    #[test]
    fn full_configuration() {
        let c = Config::from_map(&env(&[
            ("GATEWAY_CACHE_BACKEND", "redis"),
            ("GATEWAY_REDIS_URL", "redis://:pw-secret@127.0.0.1:6379/2"),
            ("GATEWAY_CACHE_TTL", "2m"),
            ("GATEWAY_CACHE_SCOPE", "key"),
            ("GATEWAY_CACHE_MAX_BYTES", "64m"),
            ("GATEWAY_SEMANTIC_CACHE", "on"),
            (
                "GATEWAY_SEMANTIC_CACHE_MODEL",
                "openai/text-embedding-3-small",
            ),
            ("GATEWAY_SEMANTIC_CACHE_THRESHOLD", "0.9"),
        ]))
        .unwrap();
        let cc = &c.cache;
        assert_eq!(cc.backend, BackendKind::Redis);
        assert_eq!(cc.ttl, Duration::from_secs(120));
        assert_eq!(cc.scope, Scope::Key);
        assert_eq!(cc.max_bytes, 64 << 20);
        let s = cc.semantic.as_ref().unwrap();
        assert_eq!(s.threshold, 0.9);
        assert!(!format!("{c:?}").contains("pw-secret"));
        assert!(!c.describe().contains("pw-secret"));
    }

    #[test]
    fn errors_name_the_variable_and_hide_redis_passwords() {
        let e = Config::from_map(&env(&[
            ("GATEWAY_CACHE_BACKEND", "disk"),
            ("GATEWAY_CACHE_TTL", "1.5s"),
            ("GATEWAY_CACHE_MAX_SIZE", "0"),
            ("GATEWAY_CACHE_MAX_BYTES", "lots"),
            ("GATEWAY_CACHE_SCOPE", "tenant"),
            ("GATEWAY_REDIS_URL", "http://:pw-secret@host"),
            ("GATEWAY_SEMANTIC_CACHE_THRESHOLD", "1.5"),
        ]))
        .unwrap_err()
        .to_string();
        for v in [
            "GATEWAY_CACHE_BACKEND",
            "GATEWAY_CACHE_TTL",
            "GATEWAY_CACHE_MAX_SIZE",
            "GATEWAY_CACHE_MAX_BYTES",
            "GATEWAY_CACHE_SCOPE",
            "GATEWAY_REDIS_URL",
            "GATEWAY_SEMANTIC_CACHE_THRESHOLD",
        ] {
            assert!(e.contains(v), "{v}: {e}");
        }
        assert!(!e.contains("pw-secret"), "{e}");

        let e = Config::from_map(&env(&[("GATEWAY_CACHE_BACKEND", "redis")])).unwrap_err();
        assert!(e.to_string().contains("GATEWAY_REDIS_URL"), "{e}");
        let e = Config::from_map(&env(&[("GATEWAY_SEMANTIC_CACHE", "on")])).unwrap_err();
        assert!(
            e.to_string().contains("GATEWAY_SEMANTIC_CACHE_MODEL"),
            "{e}"
        );
        let e = Config::from_map(&env(&[
            ("GATEWAY_CACHE_BACKEND", "off"),
            ("GATEWAY_SEMANTIC_CACHE", "on"),
            ("GATEWAY_SEMANTIC_CACHE_MODEL", "openai/x"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("GATEWAY_CACHE_BACKEND"), "{e}");
    }
}
