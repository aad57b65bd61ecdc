//! The gateway's state: small records kept between requests (stored Responses today; tenants
//! and spend later), by string key, each with its own time to live. One backend for every
//! feature, chosen by `GATEWAY_STATE_BACKEND`: `memory` (this process, bounded in bytes) or
//! `redis` (`GATEWAY_REDIS_URL`, shared by every instance).
//!
//! Plain values in and out: `put`, `get` and `delete` of bytes. Unlike the response cache,
//! state is not an optimisation, so an unreachable Redis is an error the caller sees
//! ([`StateError`], a 503) rather than a miss; every call is bounded by [`TIMEOUT`], so a
//! request never hangs on it.

use crate::breaker::{Breaker, Outcome};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::state::{
    StateBackend, StateConfig, MEMORY_MAX_BYTES, MEMORY_RECORD_OVERHEAD, REDIS_PREFIX,
};
use crate::error::GatewayError;
use crate::redis_link::RedisLink;

/// The connection every state call (stored Responses, tenants) runs on: one node, Cluster or
/// Sentinel (`crate::redis_link`).
pub use crate::redis_link::RedisConn;

/// Longest one state call may take (a connect included).
pub const TIMEOUT: Duration = Duration::from_millis(1000);

/// The state backend could not be reached or answered wrongly.
#[derive(Debug, Clone, PartialEq)]
pub struct StateError(pub String);

impl StateError {
    /// As the client sees it: a 503 saying the state is unavailable (never the Redis URL).
    pub fn into_gateway(self) -> GatewayError {
        GatewayError::new(
            503,
            "service_unavailable_error",
            Some("state_unavailable"),
            format!(
                "the gateway's state backend is unavailable ({}); try again shortly",
                self.0
            ),
        )
        .with_label("state_unavailable")
    }
}

/// Keyed byte strings with a time to live each.
pub struct State {
    inner: Inner,
}

enum Inner {
    Memory(moka::sync::Cache<String, (Bytes, Duration)>),
    Redis(Arc<RedisState>),
}

/// Entries expire after the TTL each was put with.
struct PerEntryTtl;

impl moka::Expiry<String, (Bytes, Duration)> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &String,
        value: &(Bytes, Duration),
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &(Bytes, Duration),
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl State {
    pub fn new(config: &StateConfig) -> State {
        let inner = match (config.backend, &config.redis) {
            (StateBackend::Redis, Some(c)) => match RedisLink::new(c, "state", TIMEOUT) {
                Ok(link) => Inner::Redis(Arc::new(RedisState::new(link))),
                // Checked when the configuration was read; a memory store is still a store.
                Err(_) => Self::memory(config.memory_max_bytes),
            },
            _ => Self::memory(config.memory_max_bytes),
        };
        State { inner }
    }

    /// An in-process store (tests, and the default).
    pub fn in_memory() -> State {
        State {
            inner: Self::memory(MEMORY_MAX_BYTES),
        }
    }

    /// Bounded by what its records cost the process: their bytes and the measured overhead.
    fn memory(max_bytes: u64) -> Inner {
        Inner::Memory(
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &(Bytes, Duration)| {
                    u32::try_from(k.len() as u64 + v.0.len() as u64 + MEMORY_RECORD_OVERHEAD)
                        .unwrap_or(u32::MAX)
                })
                .expire_after(PerEntryTtl)
                .build(),
        )
    }

    /// Whether the store is shared through Redis.
    pub fn shared(&self) -> bool {
        matches!(self.inner, Inner::Redis(_))
    }

    /// Stores `value` under `key` for `ttl` (whole seconds in Redis, at least one).
    pub async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StateError> {
        match &self.inner {
            Inner::Memory(m) => {
                m.insert(key.to_string(), (value, ttl));
                Ok(())
            }
            Inner::Redis(r) => {
                let k = r.key(key);
                let secs = ttl.as_secs().max(1);
                r.run("SET", move |mut c| async move {
                    redis::cmd("SET")
                        .arg(&k)
                        .arg(value.as_ref())
                        .arg("EX")
                        .arg(secs)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
            }
        }
    }

    /// Runs `f` on the shared Redis connection under the state breaker and [`TIMEOUT`] (the
    /// tenants' scripts); `None` when the backend is memory.
    pub async fn with_redis<T, F>(
        &self,
        what: &str,
        f: impl FnOnce(RedisConn) -> F,
    ) -> Option<Result<T, StateError>>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match &self.inner {
            Inner::Memory(_) => None,
            Inner::Redis(r) => Some(r.run(what, f).await),
        }
    }

    /// The value under `key`, if it is there and has not expired.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StateError> {
        match &self.inner {
            Inner::Memory(m) => Ok(m.get(key).map(|(v, _)| v)),
            Inner::Redis(r) => {
                let k = r.key(key);
                let v: Option<Vec<u8>> = r
                    .run("GET", move |mut c| async move {
                        redis::cmd("GET").arg(&k).query_async(&mut c).await
                    })
                    .await?;
                Ok(v.map(Bytes::from))
            }
        }
    }

    /// Removes `key`; whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, StateError> {
        match &self.inner {
            Inner::Memory(m) => Ok(m.remove(key).is_some()),
            Inner::Redis(r) => {
                let k = r.key(key);
                let n: i64 = r
                    .run("DEL", move |mut c| async move {
                        redis::cmd("DEL").arg(&k).query_async(&mut c).await
                    })
                    .await?;
                Ok(n > 0)
            }
        }
    }
}

/// The Redis backend: one connection ([`RedisLink`]: one node, Cluster or Sentinel) made on
/// first use, re-made after a failure. Every call touches one key.
struct RedisState {
    link: RedisLink,
    breaker: Breaker,
}

impl RedisState {
    fn new(link: RedisLink) -> Self {
        RedisState {
            link,
            breaker: Breaker::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{REDIS_PREFIX}{key}")
    }

    /// Runs one call under the breaker: within [`TIMEOUT`] while Redis is healthy; once a call
    /// has failed, requests fail at once (a 503) but for one probe every
    /// [`crate::breaker::PROBE_EVERY`], bounded by [`crate::breaker::PROBE_TIMEOUT`].
    async fn run<T, F>(&self, what: &str, f: impl FnOnce(RedisConn) -> F) -> Result<T, StateError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let call = async {
            let c = self.link.conn().await?;
            f(c).await.map_err(|e| e.to_string())
        };
        match self.breaker.run(TIMEOUT, call).await {
            Outcome::Done { value, recovered } => {
                self.link.succeeded();
                if recovered {
                    log::warn!("state: Redis answers again");
                }
                Ok(value)
            }
            Outcome::Failed { why, opened } => {
                self.link.failed();
                if opened {
                    log::warn!(
                        "state: Redis {what} failed ({why}); stored responses and tenant state are unavailable \
                         until it answers (probed every {:?})",
                        crate::breaker::PROBE_EVERY
                    );
                } else {
                    log::warn!("state: Redis {what} failed: {why}");
                }
                Err(StateError(format!("Redis {what} failed")))
            }
            Outcome::Skipped => Err(StateError("Redis is unreachable".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_put_get_delete_and_expiry() {
        let s = State::in_memory();
        s.put("a", Bytes::from_static(b"1"), Duration::from_secs(60))
            .await
            .unwrap();
        s.put("b", Bytes::from_static(b"2"), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(s.get("b").await.unwrap(), None, "expired");
        assert!(s.delete("a").await.unwrap());
        assert!(!s.delete("a").await.unwrap());
        assert_eq!(s.get("a").await.unwrap(), None);
    }

    fn redis_config(port: u16) -> crate::config::redis::RedisConfig {
        let env = std::collections::HashMap::from([(
            "GATEWAY_REDIS_URL".to_string(),
            format!("redis://127.0.0.1:{port}"),
        )]);
        crate::config::Config::from_map(&env)
            .unwrap()
            .redis
            .unwrap()
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_in_bounded_time() {
        // A port nothing listens on: refused at once, and a 503 for the client.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let s = State {
            inner: Inner::Redis(Arc::new(RedisState::new(
                RedisLink::new(&redis_config(port), "state", TIMEOUT).unwrap(),
            ))),
        };
        let started = std::time::Instant::now();
        let e = s.get("x").await.unwrap_err();
        assert!(started.elapsed() < TIMEOUT * 3);
        let g = e.into_gateway();
        assert_eq!(g.status, 503);
        assert!(!g.message.contains("127.0.0.1"), "{}", g.message);
        assert!(s
            .put("x", Bytes::new(), Duration::from_secs(1))
            .await
            .is_err());
    }
}
