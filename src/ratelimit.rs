//! Per-key rate limits: two token buckets per key, requests per minute (with a burst) and
//! tokens per minute, kept in memory or shared by several gateway instances through Redis.
//!
//! - The request bucket holds `burst` requests (default: one minute's worth) and refills at
//!   `rpm / 60` per second; each request takes one.
//! - The token bucket holds `tpm` tokens and refills at `tpm / 60` per second. A request is let
//!   in while at least one token is left; once the answer is complete (streams included) its
//!   real `usage.total_tokens` is taken out, which may drive the bucket below zero: the key then
//!   waits until it has paid the debt back.
//! - With `GATEWAY_RATE_LIMIT_BACKEND=redis` both buckets live in Redis and are updated by one
//!   Lua script (atomic, clocked by Redis' `TIME`), so every instance sees the same buckets.
//!   When Redis cannot be reached or does not answer within [`REDIS_TIMEOUT`], the instance
//!   limits locally and logs a warning; a breaker ([`crate::breaker`]) then keeps requests from
//!   waiting on Redis (one probe at a time, at most 200 ms) until it answers again: limits are
//!   never dropped and the client never sees a 500.
//!
//! ```sh
//! GATEWAY_API_KEYS=team-a=sk-gw-aaa GATEWAY_RATE_LIMIT_RPM=60 GATEWAY_RATE_LIMIT_BURST=5 cargo run
//! curl -i localhost:8080/v1/models -H 'Authorization: Bearer sk-gw-aaa'   # x-ratelimit-* headers
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::breaker::{Breaker, Outcome};
pub use crate::config::ratelimit::{BackendKind, LimitOverrides, Limits, RateLimitConfig};
use crate::config::redis::RedisConfig;
use crate::error::GatewayError;
use crate::redis_link::RedisLink;

/// Longest wait for one Redis round trip before limiting locally.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

/// Capacity and refill speed of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    cap: f64,
    per_sec: f64,
}

impl Limits {
    fn requests(&self) -> Option<Rate> {
        self.rpm.map(|rpm| Rate {
            cap: self.burst.unwrap_or(rpm) as f64,
            per_sec: rpm as f64 / 60.0,
        })
    }

    fn tokens(&self) -> Option<Rate> {
        self.tpm.map(|tpm| Rate {
            cap: tpm as f64,
            per_sec: tpm as f64 / 60.0,
        })
    }
}

/// One limit's state as the `x-ratelimit-*` headers show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The bucket's capacity: what may be spent at once.
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Requests,
    Tokens,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub exceeded: Option<Exceeded>,
    /// Until the refusing bucket(s) can take the request.
    pub retry_after: Duration,
    pub requests: Option<Snapshot>,
    pub tokens: Option<Snapshot>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.exceeded.is_none()
    }
}

fn snapshot(r: Rate, level: f64) -> Snapshot {
    Snapshot {
        limit: r.cap as u64,
        remaining: level.max(0.0).floor() as u64,
        reset: secs((r.cap - level).max(0.0) / r.per_sec),
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(1e9))
    } else {
        Duration::ZERO
    }
}

/// The rule both backends apply (the Lua script mirrors it): a request needs one request and
/// at least one token left. `req`/`tok` are the refilled levels before this request.
fn decide(limits: &Limits, req: Option<f64>, tok: Option<f64>) -> Decision {
    let rr = limits.requests().zip(req);
    let tr = limits.tokens().zip(tok);
    let mut exceeded = None;
    let mut wait: f64 = 0.0;
    if let Some((r, l)) = tr {
        if l < 1.0 {
            exceeded = Some(Exceeded::Tokens);
            wait = wait.max((1.0 - l) / r.per_sec);
        }
    }
    if let Some((r, l)) = rr {
        if l < 1.0 {
            exceeded = Some(Exceeded::Requests);
            wait = wait.max((1.0 - l) / r.per_sec);
        }
    }
    let taken = if exceeded.is_none() { 1.0 } else { 0.0 };
    Decision {
        exceeded,
        retry_after: secs(wait),
        requests: rr.map(|(r, l)| snapshot(r, l - taken)),
        tokens: tr.map(|(r, l)| snapshot(r, l)),
    }
}

/// A bucket's level at an instant.
#[derive(Debug, Clone, Copy)]
struct Level {
    level: f64,
    at: Instant,
}

/// The level now: a bucket never seen is full, and refills up to its capacity.
fn refill(state: Option<Level>, r: Rate, now: Instant) -> f64 {
    match state {
        None => r.cap,
        Some(s) => {
            let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
            (s.level + elapsed * r.per_sec).min(r.cap)
        }
    }
}

#[derive(Debug, Default)]
struct Buckets {
    req: Option<Level>,
    tok: Option<Level>,
}

/// Buckets in this process. A read lock finds the key's bucket pair, a mutex per key guards it:
/// keys never wait for each other.
#[derive(Default)]
pub struct MemoryLimiter {
    keys: RwLock<HashMap<Arc<str>, Arc<Mutex<Buckets>>>>,
}

impl MemoryLimiter {
    fn buckets(&self, name: &Arc<str>) -> Arc<Mutex<Buckets>> {
        if let Some(b) = self.keys.read().get(name) {
            return b.clone();
        }
        self.keys.write().entry(name.clone()).or_default().clone()
    }

    /// Checks one request at `now` and, if allowed, takes it from the request bucket.
    pub fn acquire_at(&self, name: &Arc<str>, limits: &Limits, now: Instant) -> Decision {
        let b = self.buckets(name);
        let mut b = b.lock();
        let req = limits.requests().map(|r| refill(b.req, r, now));
        let tok = limits.tokens().map(|r| refill(b.tok, r, now));
        let d = decide(limits, req, tok);
        if d.allowed() {
            if let Some(l) = req {
                b.req = Some(Level {
                    level: l - 1.0,
                    at: now,
                });
            }
        }
        d
    }

    /// Takes `tokens` from the token bucket (possibly below zero). Returns the new level.
    pub fn charge_at(
        &self,
        name: &Arc<str>,
        limits: &Limits,
        tokens: u64,
        now: Instant,
    ) -> Option<f64> {
        let r = limits.tokens()?;
        let b = self.buckets(name);
        let mut b = b.lock();
        let level = refill(b.tok, r, now) - tokens as f64;
        b.tok = Some(Level { level, at: now });
        Some(level)
    }
}

/// Both buckets of a key in Redis, as hashes `{l: level, t: time}`; the hash tag keeps a key's
/// two buckets in one cluster slot. Idle buckets expire once they would be full anyway.
/// Returns `{allowed, request level, token level}` with levels as strings (Lua numbers would be
/// truncated to integers) and `''` for a bucket not in use.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local rcap, rrate = tonumber(ARGV[2]), tonumber(ARGV[3])
local tcap, trate = tonumber(ARGV[4]), tonumber(ARGV[5])
local cost = tonumber(ARGV[6])

local function level(key, cap, rate)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(v[1]), tonumber(v[2])
  if l == nil or at == nil then return cap end
  local e = now - at
  if e < 0 then e = 0 end
  return math.min(cap, l + e * rate)
end
local function save(key, l, cap, rate)
  redis.call('HSET', key, 'l', string.format('%.6f', l), 't', string.format('%.6f', now))
  redis.call('PEXPIRE', key, math.ceil((cap - l) / rate * 1000) + 1000)
end

local r, tk = nil, nil
if rcap > 0 then r = level(KEYS[1], rcap, rrate) end
if tcap > 0 then tk = level(KEYS[2], tcap, trate) end
-- 17 digits: Rust reads back the very double compared here, so both decide alike.
local function s(x) if x == nil then return '' end return string.format('%.17g', x) end

if mode == 'charge' then
  if tk ~= nil then
    tk = tk - cost
    save(KEYS[2], tk, tcap, trate)
  end
  return {1, '', s(tk)}
end

local ok = 1
if r ~= nil and r < 1 then ok = 0 end
if tk ~= nil and tk < 1 then ok = 0 end
if ok == 1 and r ~= nil then save(KEYS[1], r - 1, rcap, rrate) end
return {ok, s(r), s(tk)}
"#;

/// The Redis backend: one connection ([`RedisLink`]: one node, Cluster or Sentinel), made on
/// first use.
struct RedisLimiter {
    link: RedisLink,
    /// Open while Redis fails: requests limit locally without waiting on it.
    breaker: Breaker,
    script: redis::Script,
}

type ScriptReply = (i64, String, String);

/// The two bucket keys of a key name, in one cluster slot: the hash tag is what lies between the
/// first `{` and the next `}`, so `{<name>}` tags both alike whatever the name holds, unless that
/// tag would be empty (an empty name, or one starting with `}`), when Redis would hash the whole
/// key; those names get a length-prefixed tag in their own `gw:rl:!` family (no collision).
fn bucket_keys(name: &str) -> (String, String) {
    if name.is_empty() || name.starts_with('}') {
        let n = name.len();
        (
            format!("gw:rl:!{{{n}:{name}}}:r"),
            format!("gw:rl:!{{{n}:{name}}}:t"),
        )
    } else {
        (format!("gw:rl:{{{name}}}:r"), format!("gw:rl:{{{name}}}:t"))
    }
}

impl RedisLimiter {
    fn new(c: &RedisConfig) -> Option<Self> {
        match RedisLink::new(c, "ratelimit", REDIS_TIMEOUT) {
            Ok(link) => Some(RedisLimiter {
                link,
                breaker: Breaker::new(),
                script: redis::Script::new(SCRIPT),
            }),
            Err(e) => {
                log::error!("rate limits: GATEWAY_REDIS_URL unusable ({e}); limiting locally");
                None
            }
        }
    }

    async fn eval(
        &self,
        mode: &str,
        name: &str,
        limits: &Limits,
        tokens: u64,
    ) -> redis::RedisResult<ScriptReply> {
        let mut conn = self
            .link
            .conn()
            .await
            .map_err(|why| redis::RedisError::from((redis::ErrorKind::Io, "Redis", why)))?;
        let (rcap, rrate) = limits
            .requests()
            .map(|r| (r.cap, r.per_sec))
            .unwrap_or((0.0, 0.0));
        let (tcap, trate) = limits
            .tokens()
            .map(|r| (r.cap, r.per_sec))
            .unwrap_or((0.0, 0.0));
        let (r, t) = bucket_keys(name);
        self.script
            .key(r)
            .key(t)
            .arg(mode)
            .arg(rcap)
            .arg(rrate)
            .arg(tcap)
            .arg(trate)
            .arg(tokens)
            .invoke_async(&mut conn)
            .await
    }

    /// Runs the script; `None` when Redis is (or was just found) unreachable.
    async fn call(
        &self,
        mode: &str,
        name: &str,
        limits: &Limits,
        tokens: u64,
    ) -> Option<ScriptReply> {
        match self
            .breaker
            .run(REDIS_TIMEOUT, self.eval(mode, name, limits, tokens))
            .await
        {
            Outcome::Done { value, recovered } => {
                self.link.succeeded();
                if recovered {
                    log::warn!(
                        "rate limits: Redis at {} is reachable again; limits are shared again",
                        self.link.addrs()
                    );
                }
                Some(value)
            }
            Outcome::Failed { why, opened } => {
                self.link.failed();
                if opened {
                    log::warn!(
                        "rate limits: Redis at {} is unreachable ({why}); limiting locally on this \
                         instance (each instance then allows the full limit) and probing it every \
                         {:?}",
                        self.link.addrs(),
                        crate::breaker::PROBE_EVERY
                    );
                }
                None
            }
            Outcome::Skipped => None,
        }
    }
}

fn parse_level(s: &str) -> Option<f64> {
    if s.is_empty() {
        None
    } else {
        s.parse().ok()
    }
}

/// What the logging phase needs to charge a request's tokens.
#[derive(Debug, Clone)]
pub struct Charge {
    name: Arc<str>,
    limits: Limits,
}

impl Charge {
    pub fn new(name: Arc<str>, limits: Limits) -> Self {
        Charge { name, limits }
    }
}

/// The limiter every request goes through.
pub struct Limiter {
    config: RateLimitConfig,
    local: MemoryLimiter,
    redis: Option<RedisLimiter>,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let redis = match (config.backend, &config.redis) {
            (BackendKind::Redis, Some(c)) => RedisLimiter::new(c),
            _ => None,
        };
        Limiter {
            config,
            local: MemoryLimiter::default(),
            redis,
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Checks and takes one request for the key `name`.
    pub async fn acquire(&self, name: &Arc<str>, limits: &Limits) -> Decision {
        if let Some(redis) = &self.redis {
            if let Some((_, req, tok)) = redis.call("acquire", name, limits, 0).await {
                // The script applied the same rule to the same levels.
                return decide(limits, parse_level(&req), parse_level(&tok));
            }
        }
        self.local.acquire_at(name, limits, Instant::now())
    }

    /// Takes a finished request's tokens from the key's token bucket.
    pub async fn charge(&self, c: &Charge, tokens: u64) {
        if tokens == 0 || c.limits.tpm.is_none() {
            return;
        }
        if let Some(redis) = &self.redis {
            if redis
                .call("charge", &c.name, &c.limits, tokens)
                .await
                .is_some()
            {
                return;
            }
        }
        self.local
            .charge_at(&c.name, &c.limits, tokens, Instant::now());
    }

    /// Applies `limits` to one request: the `x-ratelimit-*` headers its response carries
    /// (whether it may proceed or not), and either what is charged once its usage is known
    /// (`None`: nothing to charge) or the 429.
    pub async fn admit(
        &self,
        name: Arc<str>,
        limits: Limits,
    ) -> (
        Vec<(&'static str, String)>,
        Result<Option<Charge>, GatewayError>,
    ) {
        if !limits.is_limited() {
            return (Vec::new(), Ok(None));
        }
        let d = self.acquire(&name, &limits).await;
        let h = headers(&d);
        if d.allowed() {
            let charge = limits.tpm.is_some().then_some(Charge { name, limits });
            return (h, Ok(charge));
        }
        let refused = too_many(&name, &limits, &d);
        (h, Err(refused))
    }
}

/// OpenAI's `x-ratelimit-*` headers.
pub fn headers(d: &Decision) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    if let Some(s) = d.requests {
        h.push(("x-ratelimit-limit-requests", s.limit.to_string()));
        h.push(("x-ratelimit-remaining-requests", s.remaining.to_string()));
        h.push(("x-ratelimit-reset-requests", format_reset(s.reset)));
    }
    if let Some(s) = d.tokens {
        h.push(("x-ratelimit-limit-tokens", s.limit.to_string()));
        h.push(("x-ratelimit-remaining-tokens", s.remaining.to_string()));
        h.push(("x-ratelimit-reset-tokens", format_reset(s.reset)));
    }
    h
}

/// The 429, worded like OpenAI's, with `Retry-After` in whole seconds (at least 1).
fn too_many(name: &str, limits: &Limits, d: &Decision) -> GatewayError {
    let (kind, what) = match d.exceeded {
        Some(Exceeded::Tokens) => (
            "tokens",
            format!("tokens per min (TPM): Limit {}", limits.tpm.unwrap_or(0)),
        ),
        _ => {
            let rpm = limits.rpm.unwrap_or(0);
            (
                "requests",
                format!(
                    "requests per min (RPM): Limit {rpm}, burst {}",
                    limits.burst.unwrap_or(rpm)
                ),
            )
        }
    };
    let retry = d.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    crate::metrics::rate_limited(
        name,
        if kind == "tokens" {
            "tokens"
        } else {
            "requests"
        },
    );
    GatewayError::new(
        429,
        kind,
        Some("rate_limit_exceeded"),
        format!(
            "Rate limit reached for key {name} on {what}. Please try again in {}.",
            format_reset(d.retry_after)
        ),
    )
    .with_label("rate_limited")
    .with_retry_after(retry.to_string())
}

/// OpenAI's duration style: `250ms`, `1.5s`, `6m0s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let trim = |s: f64| {
        let t = format!("{s:.3}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        format!("{t}s")
    };
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        trim(s)
    } else {
        let m = (s / 60.0).floor();
        format!("{}m{}", m as u64, trim(s - m * 60.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's rule: the part between the first `{` and the next `}`, when not empty.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')? + open + 1;
        Some(&key[open + 1..close]).filter(|t| !t.is_empty())
    }

    #[test]
    fn both_buckets_of_a_name_share_one_cluster_slot() {
        for name in ["team-a", "", "}", "}x", "a}b", "{", "a{b}c", "{}", "ü{"] {
            let (r, t) = bucket_keys(name);
            let (tr, tt) = (hash_tag(&r), hash_tag(&t));
            assert!(tr.is_some() && tr == tt, "{name:?}: {r} {t}");
        }
        assert_eq!(bucket_keys("team-a").0, "gw:rl:{team-a}:r");
        assert_ne!(bucket_keys("}x").0, bucket_keys("x").0);
        assert_ne!(bucket_keys("}").0, bucket_keys("").0);
    }

    fn limits(rpm: Option<u64>, burst: Option<u64>, tpm: Option<u64>) -> Limits {
        Limits { rpm, burst, tpm }
    }

    #[test]
    fn request_bucket_allows_burst_then_rate() {
        let m = MemoryLimiter::default();
        let k: Arc<str> = Arc::from("k");
        let l = limits(Some(600), Some(10), None);
        let t0 = Instant::now();
        let allowed = (0..50)
            .filter(|_| m.acquire_at(&k, &l, t0).allowed())
            .count();
        assert_eq!(allowed, 10);
        // 10 per second: 1 s later, 10 more.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..50)
            .filter(|_| m.acquire_at(&k, &l, t1).allowed())
            .count();
        assert_eq!(allowed, 10);
        let d = m.acquire_at(&k, &l, t1);
        assert_eq!(d.exceeded, Some(Exceeded::Requests));
        assert!(
            d.retry_after > Duration::from_millis(90)
                && d.retry_after <= Duration::from_millis(100)
        );
        // Never above capacity, however long the key was idle.
        let t2 = t1 + Duration::from_secs(3600);
        let allowed = (0..50)
            .filter(|_| m.acquire_at(&k, &l, t2).allowed())
            .count();
        assert_eq!(allowed, 10);
        // Another key has its own bucket.
        let other: Arc<str> = Arc::from("other");
        assert!(m.acquire_at(&other, &l, t1).allowed());
    }

    #[test]
    fn token_bucket_goes_into_debt_and_recovers() {
        let m = MemoryLimiter::default();
        let k: Arc<str> = Arc::from("k");
        let l = limits(None, None, Some(60)); // one token per second
        let t0 = Instant::now();
        assert!(m.acquire_at(&k, &l, t0).allowed());
        assert_eq!(m.charge_at(&k, &l, 80, t0), Some(-20.0));
        let d = m.acquire_at(&k, &l, t0 + Duration::from_secs(10));
        assert_eq!(d.exceeded, Some(Exceeded::Tokens));
        assert!(
            (d.retry_after.as_secs_f64() - 11.0).abs() < 0.01,
            "{:?}",
            d.retry_after
        );
        assert!(m.acquire_at(&k, &l, t0 + Duration::from_secs(21)).allowed());
        // Requests do not use tokens: only answers do.
        assert!(m.acquire_at(&k, &l, t0 + Duration::from_secs(21)).allowed());
    }

    #[test]
    fn snapshots_for_headers() {
        let m = MemoryLimiter::default();
        let k: Arc<str> = Arc::from("k");
        let l = limits(Some(60), Some(5), Some(1000));
        let t0 = Instant::now();
        let d = m.acquire_at(&k, &l, t0);
        let r = d.requests.unwrap();
        assert_eq!((r.limit, r.remaining), (5, 4));
        assert_eq!(r.reset, Duration::from_secs(1));
        let t = d.tokens.unwrap();
        assert_eq!(
            (t.limit, t.remaining, t.reset),
            (1000, 1000, Duration::ZERO)
        );
        let h = headers(&d);
        assert_eq!(h.len(), 6);
        assert!(h.contains(&("x-ratelimit-reset-requests", "1s".to_string())));
        let e = too_many(
            "team-a",
            &l,
            &Decision {
                exceeded: Some(Exceeded::Requests),
                retry_after: Duration::from_millis(100),
                ..d
            },
        );
        assert_eq!(
            (e.status, e.code.as_deref(), e.retry_after.as_deref()),
            (429, Some("rate_limit_exceeded"), Some("1"))
        );
        assert!(e.message.contains("team-a") && e.message.contains("100ms"));
    }

    #[test]
    fn reset_format() {
        assert_eq!(format_reset(Duration::from_millis(250)), "250ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(17)), "17s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }
}
