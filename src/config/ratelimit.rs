//! Rate limit variables (`GATEWAY_RATE_LIMIT_*`, `GATEWAY_REDIS_URL`): every key's default
//! limits, a key's own overrides (from its `:rpm=`, `:burst=`, `:tpm=` options) and where the
//! buckets live.

use super::redis::RedisConfig;
use super::{vars, Reader};

/// Effective limits of one key. `None`: not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rpm: Option<u64>,
    /// Request bucket capacity; `None`: `rpm`.
    pub burst: Option<u64>,
    pub tpm: Option<u64>,
}

impl Limits {
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// A key's own limits (`:rpm=`, `:burst=`, `:tpm=`). `Some(None)`: explicitly off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitOverrides {
    pub rpm: Option<Option<u64>>,
    pub burst: Option<u64>,
    pub tpm: Option<Option<u64>>,
}

impl LimitOverrides {
    pub fn apply(&self, defaults: &Limits) -> Limits {
        Limits {
            rpm: self.rpm.unwrap_or(defaults.rpm),
            burst: self.burst.or(defaults.burst),
            tpm: self.tpm.unwrap_or(defaults.tpm),
        }
    }
}

/// Where the buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Memory,
    Redis,
}

/// Rate limit settings, validated.
#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    /// `GATEWAY_RATE_LIMIT_RPM` / `_BURST` / `_TPM`: every key's limits unless it sets its own.
    pub defaults: Limits,
    pub backend: BackendKind,
    /// `GATEWAY_REDIS_URL` and how to reach it (set by `Config::from_map`).
    pub redis: Option<RedisConfig>,
}

impl RateLimitConfig {
    pub fn describe(&self) -> String {
        let show = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "off".into());
        let backend = match self.backend {
            BackendKind::Memory => "memory".to_string(),
            BackendKind::Redis => format!(
                "redis ({})",
                self.redis
                    .as_ref()
                    .map(|r| r.addrs.clone())
                    .unwrap_or_default()
            ),
        };
        format!(
            "rpm={} burst={} tpm={} backend={backend}",
            show(self.defaults.rpm),
            show(self.defaults.burst.or(self.defaults.rpm)),
            show(self.defaults.tpm)
        )
    }
}

/// `redis://user:pass@host` -> `redis://***@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

fn limit_value(v: &str) -> Result<Option<u64>, String> {
    if matches!(
        v.to_ascii_lowercase().as_str(),
        "off" | "none" | "unlimited"
    ) {
        return Ok(None);
    }
    match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err("expected a whole number >= 1, or off".into()),
    }
}

/// Reads `GATEWAY_RATE_LIMIT_*` and `GATEWAY_REDIS_URL`.
pub(super) fn read(r: &mut Reader) -> RateLimitConfig {
    let rpm = r.parse(vars::RATE_LIMIT_RPM, None, limit_value);
    let burst = r.parse(vars::RATE_LIMIT_BURST, None, |v| match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err("expected a whole number >= 1".into()),
    });
    let tpm = r.parse(vars::RATE_LIMIT_TPM, None, limit_value);
    let backend = r.parse(vars::RATE_LIMIT_BACKEND, BackendKind::Memory, |v| {
        match v.to_ascii_lowercase().as_str() {
            "memory" => Ok(BackendKind::Memory),
            "redis" => Ok(BackendKind::Redis),
            _ => Err("expected memory or redis".into()),
        }
    });
    // The URL itself is checked by `super::redis`.
    if backend == BackendKind::Redis && r.get(vars::REDIS_URL).is_none() {
        r.error(
            vars::RATE_LIMIT_BACKEND,
            "redis",
            "needs GATEWAY_REDIS_URL (e.g. redis://127.0.0.1:6379)",
        );
    }
    RateLimitConfig {
        defaults: Limits { rpm, burst, tpm },
        backend,
        redis: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u64>, burst: Option<u64>, tpm: Option<u64>) -> Limits {
        Limits { rpm, burst, tpm }
    }

    #[test]
    fn overrides_and_redacted_urls() {
        let d = limits(Some(600), Some(10), Some(1000));
        let o = LimitOverrides {
            rpm: Some(None),
            burst: None,
            tpm: Some(Some(5)),
        };
        assert_eq!(o.apply(&d), limits(None, Some(10), Some(5)));
        assert_eq!(LimitOverrides::default().apply(&d), d);
        assert_eq!(redact_url("redis://u:pw@h:6379/0"), "redis://***@h:6379/0");
    }
}
