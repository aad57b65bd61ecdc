//! The Redis backend: entries shared by every gateway instance that points at the same Redis
//! and prefix.
//!
//! Keys: `<prefix>e:<sha256 hex>` holds an entry (compact JSON, `SET ... EX`);
//! `<prefix>s:<context hex>` is a hash of entry key -> little-endian f32 embedding, the
//! semantic index of one context (capped at [`MAX_VECTORS_PER_CONTEXT`] fields).
//!
//! An outage never reaches the client: every call is bounded by [`TIMEOUT`], any failure reads
//! as "not cached" and drops the write, and a warning is logged (at most every
//! [`super::WARN_EVERY`]). The connection ([`RedisLink`]: one node, Cluster or Sentinel) is
//! made on first use and re-made after a failure, so the cache comes back by itself with Redis.
//! Every call touches one key, so a Redis Cluster takes them all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use once_cell::sync::Lazy;

use super::backend::{Backend, Hit, MAX_VECTORS_PER_CONTEXT};
use super::entry::Entry;
use super::key::Key;
use super::WarnThrottle;
use crate::breaker::{Breaker, Outcome};
use crate::redis_link::{RedisConn, RedisLink};

/// Longest a cache call may add to a request.
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// Adds one vector to a context's hash, replacing a random field when the hash is full, and
/// keeps the hash alive at least as long as its newest entry.
static ADD_VECTOR: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  local victim = redis.call('HRANDFIELD', KEYS[1])
  if victim then redis.call('HDEL', KEYS[1], victim) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
",
    )
});

pub struct RedisBackend {
    link: RedisLink,
    prefix: String,
    warn: WarnThrottle,
    breaker: Breaker,
}

impl RedisBackend {
    pub fn new(link: RedisLink, prefix: &str) -> Self {
        RedisBackend {
            link,
            prefix: prefix.to_string(),
            warn: WarnThrottle::new(),
            breaker: Breaker::new(),
        }
    }

    fn entry_key(&self, k: &Key) -> String {
        format!("{}e:{}", self.prefix, k.hex())
    }

    fn vectors_key(&self, k: &Key) -> String {
        format!("{}s:{}", self.prefix, k.hex())
    }

    fn warn(&self, what: &str, err: &dyn std::fmt::Display) {
        if self.warn.ready() {
            log::warn!("cache: Redis {what} failed, serving without the cache: {err}");
        }
    }

    /// Runs one call under the breaker (at most [`TIMEOUT`] while Redis is healthy; once a call
    /// has failed, at most [`crate::breaker::PROBE_TIMEOUT`], and only for one probing request
    /// at a time): failures are logged and become `None`.
    async fn run<T, F>(&self, what: &str, f: impl FnOnce(RedisConn) -> F) -> Option<T>
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
                    log::warn!("cache: Redis answers again; the shared cache is back");
                }
                Some(value)
            }
            Outcome::Failed { why, opened } => {
                self.link.failed();
                if opened {
                    log::warn!(
                        "cache: Redis {what} failed ({why}); serving without the cache, and \
                         probing Redis every {:?}",
                        crate::breaker::PROBE_EVERY
                    );
                } else {
                    self.warn(what, &why);
                }
                None
            }
            Outcome::Skipped => None,
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &Key) -> Option<Hit> {
        let k = self.entry_key(key);
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .run("GET", |mut c| async move {
                redis::pipe().get(&k).pttl(&k).query_async(&mut c).await
            })
            .await?;
        let entry = Entry::decode(&value?)?;
        // -1: no expiry (never written so by the gateway, but harmless); -2: just expired.
        let ttl_left = match pttl {
            -2 => return None,
            n if n < 0 => Duration::ZERO,
            n => Duration::from_millis(n as u64),
        };
        Some(Hit {
            entry: Arc::new(entry),
            ttl_left,
        })
    }

    async fn put(&self, key: &Key, entry: Arc<Entry>, ttl: Duration) {
        let k = self.entry_key(key);
        let value = entry.encode();
        let secs = ttl.as_secs().max(1);
        let _: Option<()> = self
            .run("SET", |mut c| async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value)
                    .arg("EX")
                    .arg(secs)
                    .query_async(&mut c)
                    .await
            })
            .await;
    }

    async fn add_vector(&self, context: &Key, key: &Key, vector: Arc<[f32]>, ttl: Duration) {
        let k = self.vectors_key(context);
        let field = key.hex();
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        let secs = ttl.as_secs().max(1);
        let _: Option<i64> = self
            .run("semantic index write", |mut c| async move {
                ADD_VECTOR
                    .key(&k)
                    .arg(field)
                    .arg(bytes)
                    .arg(secs)
                    .arg(MAX_VECTORS_PER_CONTEXT)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
    }

    async fn vectors(&self, context: &Key) -> Vec<(Key, Arc<[f32]>)> {
        let k = self.vectors_key(context);
        let all: Option<std::collections::HashMap<String, Vec<u8>>> = self
            .run("HGETALL", |mut c| async move {
                redis::cmd("HGETALL").arg(&k).query_async(&mut c).await
            })
            .await;
        all.unwrap_or_default()
            .into_iter()
            .filter_map(|(field, bytes)| {
                let key = Key::from_hex(&field)?;
                if bytes.len() % 4 != 0 {
                    return None;
                }
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Some((key, Arc::from(v)))
            })
            .collect()
    }
}
