//! Every Redis call of tenants, over the state backend's connection ([`State::with_redis`]).
//!
//! Keys (prefix `aigw:tenants:`), each multi-key script's keys in one hash slot through a
//! `{...}` hash tag (Redis Cluster):
//!
//! - `aigw:tenants:{keys}`: hash, key name -> [`KeyRecord`] JSON; `aigw:tenants:{keys}:version`:
//!   bumped on every write (instances poll it every [`super::SYNC_EVERY`]).
//! - `aigw:tenants:{k:NAME}:spend:PERIOD`: micro-dollars spent in a period (each settlement
//!   adds to its day `2026-12-05`, week `w2026-11-30`, month `2026-12` and `total`).
//! - `aigw:tenants:{k:NAME}:res`: open reservations, a sorted set of `id:micro` scored by
//!   expiry (unix ms), so a crashed instance's reservations lapse.
//! - `aigw:tenants:{k:NAME}:usage:DAY`: hash of `requests|prompt|completion|cost` + tab + model.
//! - `aigw:tenants:{k:NAME}:journal:ID`: a replayed journal entry (`SET NX` in the settle
//!   script, kept as long as spend, 40 days), so a second replay of it counts nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use once_cell::sync::Lazy;

use super::{Counters, KeyRecord, Settlement, Spend};
use crate::auth::Budget;
use crate::state::{State, StateError};

const PREFIX: &str = "aigw:tenants:";
/// Usage rows expire after this many seconds (400 days).
const USAGE_TTL: u64 = super::USAGE_DAYS * 86_400;
/// A period's spend is kept this long past its start (the longest period, a month, plus slack).
const SPEND_TTL: u64 = 40 * 86_400;

/// KEYS: spend, res. ARGV: budget, worst, member, now_ms, expires_ms.
/// Returns {admitted, spent, reserved}.
static RESERVE: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local open = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  open = open + tonumber(string.match(m, ':(%d+)$') or '0')
end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local budget = tonumber(ARGV[1])
local worst = tonumber(ARGV[2])
if spent + open >= budget or spent + open + worst > budget then
  return {0, spent, open}
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), ARGV[3])
redis.call('PEXPIREAT', KEYS[2], tonumber(ARGV[5]))
return {1, spent, open}
",
    )
});

/// KEYS: res, usage, then the spend of the day, week, month (expiring after ARGV[3] seconds)
/// and total, then (a journalled settlement) its marker. ARGV: member or '', cost, spend ttl,
/// model, requests, prompt, completion, usage ttl, journal id or ''. Returns 1, or 2 when the
/// journalled settlement was already counted.
static SETTLE: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
if ARGV[9] ~= '' and not redis.call('SET', KEYS[7], '1', 'NX', 'EX', ARGV[3]) then
  return 2
end
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local cost = tonumber(ARGV[2])
if cost > 0 then
  for i = 3, 6 do
    redis.call('INCRBY', KEYS[i], cost)
    if i < 6 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
  end
end
if tonumber(ARGV[5]) == 0 and cost == 0 then return 1 end
local m = '\t' .. ARGV[4]
redis.call('HINCRBY', KEYS[2], 'requests' .. m, ARGV[5])
redis.call('HINCRBY', KEYS[2], 'prompt' .. m, ARGV[6])
redis.call('HINCRBY', KEYS[2], 'completion' .. m, ARGV[7])
redis.call('HINCRBY', KEYS[2], 'cost' .. m, cost)
redis.call('EXPIRE', KEYS[2], ARGV[8])
return 1
",
    )
});

/// KEYS: keys hash, version. ARGV: name, record JSON, create (1) or update (0).
static PUT: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local live = false
if cur then live = (cjson.decode(cur).revoked_at == nil) end
if (ARGV[3] == '1') == live then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
",
    )
});

fn keys_hash() -> String {
    format!("{PREFIX}{{keys}}")
}

fn tag(key: &str) -> String {
    format!("{PREFIX}{{k:{key}}}")
}

pub struct RedisTenants {
    state: Arc<State>,
}

impl RedisTenants {
    pub fn new(state: Arc<State>) -> Self {
        RedisTenants { state }
    }

    async fn call<T, F>(
        &self,
        what: &str,
        f: impl FnOnce(crate::state::RedisConn) -> F,
    ) -> Result<T, StateError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.state
            .with_redis(what, f)
            .await
            .unwrap_or_else(|| Err(StateError("no Redis state backend".into())))
    }

    /// `Ok(Err(spend))`: refused.
    pub async fn reserve(
        &self,
        key: &str,
        period: &str,
        budget: Budget,
        worst: u64,
        id: &str,
        expires_ms: u64,
    ) -> Result<Result<(), Spend>, StateError> {
        let t = tag(key);
        let (spend, res) = (format!("{t}:spend:{period}"), format!("{t}:res"));
        let member = format!("{id}:{worst}");
        let now = super::now_ms();
        let (ok, spent, reserved): (i64, u64, u64) = self
            .call("tenants reserve", move |mut c| async move {
                RESERVE
                    .key(spend)
                    .key(res)
                    .arg(budget.micro_usd)
                    .arg(worst)
                    .arg(member)
                    .arg(now)
                    .arg(expires_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(if ok == 1 {
            Ok(())
        } else {
            Err(Spend { spent, reserved })
        })
    }

    /// `id`: a journalled settlement's id, counted once however often it is replayed.
    pub async fn settle(&self, s: &Settlement, id: Option<&str>) -> Result<(), StateError> {
        let t = tag(&s.key);
        let mut keys = vec![format!("{t}:res"), format!("{t}:usage:{}", s.day)];
        keys.extend(s.periods.iter().map(|p| format!("{t}:spend:{p}")));
        if let Some(id) = id {
            keys.push(format!("{t}:journal:{id}"));
        }
        let id = id.unwrap_or_default().to_string();
        let member = s.reservation.clone().unwrap_or_default();
        let c = s.counters;
        let model = s.model.clone();
        let _: i64 = self
            .call("tenants settle", move |mut conn| async move {
                SETTLE
                    .key(&keys)
                    .arg(member)
                    .arg(c.cost)
                    .arg(SPEND_TTL)
                    .arg(model)
                    .arg(c.requests)
                    .arg(c.prompt_tokens)
                    .arg(c.completion_tokens)
                    .arg(USAGE_TTL)
                    .arg(id)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    pub async fn spend(&self, key: &str, period: &str) -> Result<Spend, StateError> {
        let t = tag(key);
        let (spend, res) = (format!("{t}:spend:{period}"), format!("{t}:res"));
        let now = super::now_ms();
        let (spent, members): (Option<u64>, Vec<String>) = self
            .call("tenants spend", move |mut c| async move {
                redis::pipe()
                    .get(spend)
                    .zrangebyscore(res, now, "+inf")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let reserved = members
            .iter()
            .filter_map(|m| m.rsplit(':').next()?.parse::<u64>().ok())
            .sum();
        Ok(Spend {
            spent: spent.unwrap_or(0),
            reserved,
        })
    }

    pub async fn usage(
        &self,
        key: &str,
        days: &[String],
    ) -> Result<Vec<(String, BTreeMap<String, Counters>)>, StateError> {
        let t = tag(key);
        let names: Vec<String> = days.iter().map(|d| format!("{t}:usage:{d}")).collect();
        let rows: Vec<Vec<(String, u64)>> = self
            .call("tenants usage", move |mut c| async move {
                let mut p = redis::pipe();
                for n in &names {
                    p.hgetall(n);
                }
                p.query_async(&mut c).await
            })
            .await?;
        Ok(days
            .iter()
            .cloned()
            .zip(rows)
            .map(|(day, fields)| {
                let mut by_model: BTreeMap<String, Counters> = BTreeMap::new();
                for (f, v) in fields {
                    let Some((what, model)) = f.split_once('\t') else {
                        continue;
                    };
                    let c = by_model.entry(model.to_string()).or_default();
                    match what {
                        "requests" => c.requests = v,
                        "prompt" => c.prompt_tokens = v,
                        "completion" => c.completion_tokens = v,
                        "cost" => c.cost = v,
                        _ => {}
                    }
                }
                (day, by_model)
            })
            .collect())
    }

    pub async fn version(&self) -> Result<u64, StateError> {
        let k = format!("{}:version", keys_hash());
        let v: Option<u64> = self
            .call("tenants version", move |mut c| async move {
                redis::cmd("GET").arg(k).query_async(&mut c).await
            })
            .await?;
        Ok(v.unwrap_or(0))
    }

    pub async fn records(&self) -> Result<Vec<KeyRecord>, StateError> {
        let k = keys_hash();
        let all: Vec<(String, String)> = self
            .call("tenants keys", move |mut c| async move {
                redis::cmd("HGETALL").arg(k).query_async(&mut c).await
            })
            .await?;
        Ok(all
            .into_iter()
            .filter_map(
                |(name, json)| match serde_json::from_str::<KeyRecord>(&json) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        log::warn!(
                            "tenants: key record {name:?} in Redis is unreadable ({e}); skipped"
                        );
                        None
                    }
                },
            )
            .collect())
    }

    pub async fn put(&self, rec: &KeyRecord, create: bool) -> Result<bool, StateError> {
        let json = serde_json::to_string(rec).map_err(|e| StateError(e.to_string()))?;
        let (h, v) = (keys_hash(), format!("{}:version", keys_hash()));
        let name = rec.name.clone();
        let done: i64 = self
            .call("tenants put", move |mut c| async move {
                PUT.key(h)
                    .key(v)
                    .arg(name)
                    .arg(json)
                    .arg(if create { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(done == 1)
    }
}
