//! Tenants: per-key USD budgets with reservations, model allow-lists, admin-made keys, and the
//! usage they record, kept in the state backend (this process, optionally persisted to
//! `GATEWAY_STATE_DIR`; or Redis, shared by every instance).
//!
//! - A budgeted request reserves its worst-case cost before it is sent ([`Tenants::reserve`]):
//!   admitted while `spend + open reservations + worst case <= budget`, else `429
//!   insufficient_quota`. After the answer (streams included) the reservation is settled to the
//!   real cost ([`Tenants::settle`]).
//! - Spend is counted in whole micro-dollars per key in each of its current day, week, month
//!   and total (calendar-aligned in UTC), so a budget of any period, set at any time, sees it;
//!   usage in daily rows per key and model.
//! - Admin-made keys are records holding the key's SHA-256, never the secret; `auth` checks
//!   them beside the configured keys ([`crate::auth::Auth::set_dynamic`]).
//!
//! `store.rs` is the local backend, `redis.rs` the Redis one (every Redis call of tenants),
//! `admin.rs` the admin API over plain data.

pub mod admin;
mod journal;
mod redis;
mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::api::{unix_now, Usage};
use crate::auth::{Auth, Budget, KeyEntry, Period, Policy};
use crate::config::auth::{budget_from_usd, MICRO};
use crate::config::state::StateBackend;
use crate::config::Config;
use crate::error::GatewayError;
use crate::state::{State, StateError};

/// How often an instance re-reads the admin-made keys from Redis (a revocation is seen by every
/// instance within this plus one round trip).
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// Without a successful read of the keys for this long, admin-made keys are refused (a key
/// revoked meanwhile must never get in).
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// Daily usage rows kept.
pub const USAGE_DAYS: u64 = 400;

/// An admin-made key as stored (the secret only as its SHA-256, in hex).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub name: String,
    pub sha256: String,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Requests per minute (0: off; absent: the gateway's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Set when the key was revoked (the record stays, so its usage is still reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// `{"usd": 5, "period": "day"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetJson {
    pub usd: f64,
    pub period: String,
}

impl BudgetJson {
    pub fn of(b: &Budget) -> BudgetJson {
        BudgetJson {
            usd: b.usd(),
            period: b.period.as_str().to_string(),
        }
    }

    pub fn budget(&self) -> Option<Budget> {
        budget_from_usd(self.usd, Period::parse(&self.period)?)
    }
}

impl KeyRecord {
    pub fn policy(&self) -> Policy {
        Policy {
            budget: self.budget.as_ref().and_then(BudgetJson::budget),
            models: self.models.clone(),
        }
    }

    fn entry(&self, defaults: &crate::ratelimit::Limits) -> Option<KeyEntry> {
        let mut d = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut d).ok()?;
        let ov = crate::ratelimit::LimitOverrides {
            rpm: self.rpm.map(|n| (n > 0).then_some(n)),
            tpm: self.tpm.map(|n| (n > 0).then_some(n)),
            burst: self.burst.filter(|n| *n > 0),
        };
        Some(KeyEntry::from_digest(
            &self.name,
            d,
            ov.apply(defaults),
            self.policy(),
            self.expires_at,
        ))
    }
}

/// Requests, tokens and cost of one key and model on one day.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Micro-dollars.
    pub cost: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cost += o.cost;
    }
}

/// A key's budget state in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub spent: u64,
    pub reserved: u64,
}

/// What a request holds against its key's budget until it settles.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: String,
    pub micro: u64,
    pub period: String,
}

/// A request's tenant bookkeeping (set by admit for keys with a policy, or every key while the
/// admin API is on).
#[derive(Debug)]
pub struct Admission {
    pub key: Arc<str>,
    pub policy: Option<Arc<Policy>>,
    pub reservation: Option<Reservation>,
}

/// One settled request, as the backends record it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settlement {
    pub key: String,
    /// The ids of the day, week, month and total periods it is counted in (so any budget
    /// period, including one set later, sees it).
    pub periods: [String; 4],
    pub reservation: Option<String>,
    pub day: String,
    pub model: String,
    pub counters: Counters,
}

enum Backend {
    Local(store::Local),
    Redis(redis::RedisTenants),
}

/// Budgets, allow-lists and admin-made keys.
pub struct Tenants {
    auth: Arc<Auth>,
    backend: Backend,
    admin_key: Option<[u8; 32]>,
    reserve_tokens: u64,
    reserve_ttl: Duration,
    /// Settlements Redis did not take, replayed when it answers (a file in
    /// `GATEWAY_STATE_DIR` when set).
    journal: Arc<journal::Journal>,
    ticks: AtomicU64,
    /// Admin-made keys: last version read, and when the last read succeeded.
    version: AtomicU64,
    synced: Mutex<Option<Instant>>,
    stale_logged: std::sync::atomic::AtomicBool,
}

impl Tenants {
    /// Fails when `GATEWAY_STATE_DIR` cannot be created or its file cannot be read.
    pub fn new(config: &Config, auth: Arc<Auth>, state: Arc<State>) -> Result<Tenants, String> {
        let redis = config.state.backend == StateBackend::Redis && state.shared();
        let (backend, journal) = if redis {
            (
                Backend::Redis(redis::RedisTenants::new(state)),
                journal::Journal::open(config.state.dir.as_deref())?,
            )
        } else {
            (
                Backend::Local(store::Local::open(config.state.dir.as_deref())?),
                journal::Journal::open(None)?,
            )
        };
        let t = Tenants {
            auth,
            backend,
            admin_key: config
                .auth
                .admin_key
                .as_ref()
                .map(|k| crate::auth::key_digest(k.expose())),
            reserve_tokens: config.state.reserve_tokens,
            reserve_ttl: config
                .request_timeout
                .unwrap_or(Duration::from_secs(900))
                .max(Duration::from_secs(60))
                + Duration::from_secs(60),
            journal,
            ticks: AtomicU64::new(0),
            version: AtomicU64::new(u64::MAX),
            synced: Mutex::new(None),
            stale_logged: std::sync::atomic::AtomicBool::new(false),
        };
        if let Backend::Local(l) = &t.backend {
            t.install(l.keys());
        }
        // A client that pastes the admin key into a prompt never sees it quoted back.
        crate::redact::set_group(
            "admin",
            config.auth.admin_key.iter().map(|k| k.expose().to_string()),
        );
        Ok(t)
    }

    /// Whether the admin API is on (`GATEWAY_ADMIN_KEY`).
    pub fn admin_enabled(&self) -> bool {
        self.admin_key.is_some()
    }

    /// Whether every key's usage is recorded (the admin API reports it); otherwise only keys
    /// with a budget or allow-list pay for tenant bookkeeping.
    pub fn tracking(&self) -> bool {
        self.admin_key.is_some()
    }

    /// Where the state lives, for the start-up line.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Redis(_) => match self.journal.path() {
                Some(p) => format!("redis (shared), journal {}", p.display()),
                None => {
                    "redis (shared), journal in memory (set GATEWAY_STATE_DIR to keep it)".into()
                }
            },
            Backend::Local(l) => l.describe(),
        }
    }

    /// The admission for an authenticated key, if tenants has anything to do for it.
    pub fn admission(&self, e: &KeyEntry) -> Option<Box<Admission>> {
        if e.policy.is_none() && !self.tracking() {
            return None;
        }
        Some(Box::new(Admission {
            key: e.name.clone(),
            policy: e.policy.clone(),
            reservation: None,
        }))
    }

    /// Makes `records` the admin-made keys in force.
    fn install(&self, records: Vec<KeyRecord>) {
        let defaults = self.auth.default_limits();
        let entries = records
            .iter()
            .filter(|r| r.revoked_at.is_none())
            .filter_map(|r| r.entry(&defaults))
            .collect();
        self.auth.set_dynamic(entries);
    }

    /// Reserves `worst` micro-dollars against the admission's budget, if it has one.
    pub async fn reserve(&self, adm: &mut Admission, worst: u64) -> Result<(), GatewayError> {
        let Some(budget) = adm.policy.as_ref().and_then(|p| p.budget) else {
            return Ok(());
        };
        let now = unix_now();
        let period = current_id(budget.period, now);
        let id = crate::api::random_token(16);
        let expires = now_ms() + self.reserve_ttl.as_millis() as u64;
        let outcome = match &self.backend {
            Backend::Local(l) => {
                Ok(l.reserve(&adm.key, &period, budget.micro_usd, worst, &id, expires))
            }
            Backend::Redis(r) => {
                r.reserve(&adm.key, &period, budget, worst, &id, expires)
                    .await
            }
        };
        match outcome {
            Ok(Ok(())) => {
                adm.reservation = Some(Reservation {
                    id,
                    micro: worst,
                    period,
                });
                Ok(())
            }
            Ok(Err(spend)) => {
                crate::metrics::rate_limited(&adm.key, "budget");
                Err(insufficient_quota(&adm.key, budget, spend, worst, now))
            }
            Err(e) => Err(e.into_gateway()),
        }
    }

    /// Settles a request: its reservation released, its real cost added to the key's spend and
    /// its usage to the day's row. `cost` is the real cost in USD when known; a request that was
    /// answered but whose usage is unknown is charged its reservation.
    pub async fn settle(
        &self,
        adm: Box<Admission>,
        model: Option<&str>,
        usage: Option<Usage>,
        cost: Option<f64>,
        answered: bool,
    ) {
        let micro = match (cost, &adm.reservation) {
            (Some(c), _) if c.is_finite() && c > 0.0 => (c * MICRO).round() as u64,
            (Some(_), _) => 0,
            (None, Some(r)) if answered && usage.is_none() => r.micro,
            (None, _) => 0,
        };
        if micro > 0 {
            crate::metrics::spend(&adm.key, micro as f64 / MICRO);
        }
        // An allow-list-only key with the admin API off has nothing to record.
        if adm.reservation.is_none()
            && !self.tracking()
            && adm.policy.as_ref().is_none_or(|p| p.budget.is_none())
        {
            return;
        }
        let now = unix_now();
        let u = usage.unwrap_or_default();
        let ids = current_ids(now);
        let s = Settlement {
            key: adm.key.to_string(),
            periods: (*ids).clone(),
            reservation: adm.reservation.as_ref().map(|r| r.member()),
            day: ids[0].clone(),
            model: model.unwrap_or("unknown").to_string(),
            counters: Counters {
                // A request refused before it was sent (allow-list, budget) is not usage.
                requests: u64::from(answered || usage.is_some() || micro > 0),
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                cost: micro,
            },
        };
        match &self.backend {
            Backend::Local(l) => l.settle(&s),
            Backend::Redis(r) => {
                if let Err(e) = r.settle(&s, None).await {
                    log::warn!(
                        "tenants: spend of key={} kept in the local journal until Redis answers ({})",
                        s.key,
                        e.0
                    );
                    let key = s.key.clone();
                    if !self.journal.push(s) {
                        log::error!("tenants: journal full, spend of key={key} dropped");
                    }
                }
            }
        }
    }

    /// The key's spend and open reservations in the current period of `budget`.
    pub async fn spend(&self, key: &str, period: Period) -> Result<Spend, StateError> {
        let p = current_id(period, unix_now());
        match &self.backend {
            Backend::Local(l) => Ok(l.spend(key, &p)),
            Backend::Redis(r) => r.spend(key, &p).await,
        }
    }

    /// Usage of `key` on each of `days`, by model.
    pub async fn usage(
        &self,
        key: &str,
        days: &[String],
    ) -> Result<Vec<(String, BTreeMap<String, Counters>)>, StateError> {
        match &self.backend {
            Backend::Local(l) => Ok(days.iter().map(|d| (d.clone(), l.usage(key, d))).collect()),
            Backend::Redis(r) => r.usage(key, days).await,
        }
    }

    /// Every admin-made key record (revoked ones included).
    pub async fn records(&self) -> Result<Vec<KeyRecord>, StateError> {
        match &self.backend {
            Backend::Local(l) => Ok(l.all_records()),
            Backend::Redis(r) => r.records().await,
        }
    }

    /// Stores a record: `create` needs the name free (or revoked), otherwise it must exist and
    /// not be revoked. `Ok(false)`: that condition did not hold.
    pub async fn put(&self, rec: &KeyRecord, create: bool) -> Result<bool, StateError> {
        let done = match &self.backend {
            Backend::Local(l) => l.put(rec, create),
            Backend::Redis(r) => r.put(rec, create).await?,
        };
        if done {
            self.refresh().await;
        }
        Ok(done)
    }

    /// Re-reads the admin-made keys now (after a write here, so the change is in force on this
    /// instance before the admin's call returns).
    async fn refresh(&self) {
        match &self.backend {
            Backend::Local(l) => self.install(l.keys()),
            Backend::Redis(_) => {
                self.version.store(u64::MAX, Ordering::Relaxed);
                self.sync().await;
            }
        }
    }

    /// One background step: Redis keys re-read when their version changed (refused altogether
    /// once unread for [`STALE_AFTER`]), the journal replayed; the local file written if
    /// anything changed.
    pub async fn sync(&self) {
        match &self.backend {
            Backend::Local(l) => l.flush_if_dirty(),
            Backend::Redis(r) => {
                if let Ok(v) = r.version().await {
                    let ok = if v != self.version.load(Ordering::Relaxed) {
                        match r.records().await {
                            Ok(recs) => {
                                self.install(recs);
                                self.version.store(v, Ordering::Relaxed);
                                true
                            }
                            Err(_) => false,
                        }
                    } else {
                        true
                    };
                    if ok {
                        *self.synced.lock() = Some(Instant::now());
                        if self.stale_logged.swap(false, Ordering::Relaxed) {
                            log::warn!(
                                "tenants: Redis answers again; admin-made keys back in force"
                            );
                        }
                    }
                }
                let stale = self.synced.lock().is_none_or(|t| t.elapsed() > STALE_AFTER);
                if stale && !self.stale_logged.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "tenants: admin-made keys could not be read from Redis for {STALE_AFTER:?}; \
                         they are refused until it answers (a revoked key must never get in)"
                    );
                    self.auth.set_dynamic(Vec::new());
                    self.version.store(u64::MAX, Ordering::Relaxed);
                } else if stale {
                    self.auth.set_dynamic(Vec::new());
                }
                if self.ticks.fetch_add(1, Ordering::Relaxed) % journal::ADOPT_EVERY
                    == journal::ADOPT_EVERY - 1
                {
                    self.journal.adopt();
                }
                let pending = self.journal.pending();
                let mut done = 0;
                for e in &pending {
                    if r.settle(&e.s, Some(&e.id)).await.is_err() {
                        break;
                    }
                    done += 1;
                }
                if done > 0 {
                    // Cut only after Redis took them (a crash before: replayed again, counted
                    // once through their ids).
                    self.journal.replayed(done);
                    log::info!("tenants: {done} journalled settlement(s) replayed");
                }
            }
        }
    }

    /// Writes what is pending (at shutdown).
    pub fn flush(&self) {
        match &self.backend {
            Backend::Local(l) => l.flush_if_dirty(),
            Backend::Redis(_) => {
                self.journal.persist();
                let n = self.journal.len();
                if n > 0 {
                    match self.journal.path() {
                        Some(p) => log::warn!(
                            "tenants: {n} settlement(s) not yet in Redis stay in {} for the next start",
                            p.display()
                        ),
                        None => log::error!(
                            "tenants: {n} settlement(s) not yet in Redis are lost with this process \
                             (set GATEWAY_STATE_DIR to keep them)"
                        ),
                    }
                }
            }
        }
    }

    /// Whether `header` carries the admin key (`Authorization: Bearer ...`), compared by
    /// digest in constant time.
    pub fn is_admin(&self, header: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(want) = self.admin_key else {
            return false;
        };
        let Some(v) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Some((scheme, key)) = v.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let got = crate::auth::key_digest(key.trim());
        bool::from(got.ct_eq(&want))
    }

    /// The configured (environment and keys file) keys.
    pub fn configured(&self) -> Vec<Arc<KeyEntry>> {
        self.auth.configured()
    }

    /// Completion tokens reserved when a request sets no maximum.
    pub fn reserve_tokens(&self) -> u64 {
        self.reserve_tokens
    }
}

impl Reservation {
    /// The reservation as the backends list it: `id:micro-dollars`.
    pub fn member(&self) -> String {
        format!("{}:{}", self.id, self.micro)
    }
}

/// Whether `model` is one the patterns allow: an exact name, or a prefix ending in `*`.
pub fn model_allowed(patterns: &[String], model: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => p == model,
    })
}

/// The 429 of a spent budget, in OpenAI's shape and code, with the reset time.
fn insufficient_quota(key: &str, b: Budget, s: Spend, worst: u64, now: u64) -> GatewayError {
    let usd = |m: u64| format!("${:.2}", m as f64 / MICRO);
    let reset = match period_end(b.period, now) {
        Some(t) => format!("it resets at {}", rfc3339(t)),
        None => "a total budget never resets".to_string(),
    };
    let msg = format!(
        "You exceeded your current quota: key {key} has a budget of {} per {} ({} spent, {} \
         reserved by requests in flight, this request may cost up to {}); {reset}.",
        usd(b.micro_usd),
        b.period.as_str(),
        usd(s.spent),
        usd(s.reserved),
        usd(worst),
    );
    let mut e = GatewayError::new(429, "insufficient_quota", Some("insufficient_quota"), msg)
        .with_label("insufficient_quota");
    if let Some(t) = period_end(b.period, now) {
        e = e.with_retry_after(t.saturating_sub(now).max(1).to_string());
    }
    e
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 -> (year, month, day) (Howard Hinnant's civil calendar algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) -> days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a unix time.
pub fn day_id(t: u64) -> String {
    let (y, m, d) = civil((t / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` into days since the epoch.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // 2026-02-31 is not a day.
    (civil(days) == (y, m, d)).then_some(days)
}

/// The `YYYY-MM-DD` of a day number.
pub fn day_name(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// First day (days since the epoch) of the period holding `t`.
fn period_start_day(p: Period, t: u64) -> Option<i64> {
    let days = (t / 86_400) as i64;
    match p {
        Period::Day => Some(days),
        // 1970-01-01 was a Thursday: Monday-based weeks start 3 days earlier.
        Period::Week => Some(days - (days + 3).rem_euclid(7)),
        Period::Month => {
            let (y, m, _) = civil(days);
            Some(days_from_civil(y, m, 1))
        }
        Period::Total => None,
    }
}

/// The id of the period holding `t` (`2026-12-05`, `w2026-11-30`, `2026-12`, `total`).
pub fn period_id(p: Period, t: u64) -> String {
    match (p, period_start_day(p, t)) {
        (Period::Day, Some(d)) => day_name(d),
        (Period::Week, Some(d)) => format!("w{}", day_name(d)),
        (Period::Month, Some(d)) => day_name(d)[..7].to_string(),
        _ => "total".into(),
    }
}

/// The ids of the day, week, month and total periods holding `t` (made once a day: the
/// request path clones them).
fn current_ids(t: u64) -> Arc<[String; 4]> {
    static CACHE: Mutex<Option<(u64, Arc<[String; 4]>)>> = Mutex::new(None);
    let day = t / 86_400;
    let mut c = CACHE.lock();
    match &*c {
        Some((d, ids)) if *d == day => ids.clone(),
        _ => {
            let ids = Arc::new(
                [Period::Day, Period::Week, Period::Month, Period::Total].map(|p| period_id(p, t)),
            );
            *c = Some((day, ids.clone()));
            ids
        }
    }
}

/// [`period_id`] through the daily cache.
fn current_id(p: Period, t: u64) -> String {
    let i = match p {
        Period::Day => 0,
        Period::Week => 1,
        Period::Month => 2,
        Period::Total => 3,
    };
    current_ids(t)[i].clone()
}

/// When the period holding `t` ends (unix seconds); `None` for `total`.
pub fn period_end(p: Period, t: u64) -> Option<u64> {
    let start = period_start_day(p, t)?;
    let next = match p {
        Period::Day => start + 1,
        Period::Week => start + 7,
        Period::Month => {
            let (y, m, _) = civil(start);
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            days_from_civil(y, m, 1)
        }
        Period::Total => return None,
    };
    Some((next * 86_400) as u64)
}

/// The days (as `YYYY-MM-DD`) of the period holding `t` up to `t`, at most [`USAGE_DAYS`].
pub fn period_days(p: Period, t: u64) -> Vec<String> {
    let today = (t / 86_400) as i64;
    let start = period_start_day(p, t).unwrap_or(today - USAGE_DAYS as i64 + 1);
    (start..=today).map(day_name).collect()
}

/// `2026-12-05T00:00:00Z`.
pub fn rfc3339(t: u64) -> String {
    let (y, m, d) = civil((t / 86_400) as i64);
    let s = t % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Background service: [`Tenants::sync`] every [`SYNC_EVERY`], a last flush at shutdown.
pub struct TenantsService(pub Arc<Tenants>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for TenantsService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        self.0.sync().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.0.sync().await;
                    self.0.flush();
                    return;
                }
                _ = tokio::time::sleep(SYNC_EVERY) => self.0.sync().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_aligned_in_utc() {
        // 2026-12-05T12:00:00Z, a Saturday.
        let t = days_from_civil(2026, 12, 5) as u64 * 86_400 + 43_200;
        assert_eq!(day_id(t), "2026-12-05");
        assert_eq!(period_id(Period::Day, t), "2026-12-05");
        assert_eq!(period_id(Period::Week, t), "w2026-11-30");
        assert_eq!(period_id(Period::Month, t), "2026-12");
        assert_eq!(period_id(Period::Total, t), "total");
        assert_eq!(current_id(Period::Week, t), "w2026-11-30");
        assert_eq!(current_ids(t)[0], day_id(t));
        assert_eq!(
            rfc3339(period_end(Period::Day, t).unwrap()),
            "2026-12-06T00:00:00Z"
        );
        assert_eq!(
            rfc3339(period_end(Period::Week, t).unwrap()),
            "2026-12-07T00:00:00Z"
        );
        assert_eq!(
            rfc3339(period_end(Period::Month, t).unwrap()),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(period_end(Period::Total, t), None);
        assert_eq!(period_days(Period::Week, t).len(), 6);
        assert_eq!(parse_day("2026-02-31"), None);
        assert_eq!(
            parse_day("2024-02-29").map(day_name).as_deref(),
            Some("2024-02-29")
        );
    }

    #[test]
    fn patterns() {
        let p = vec!["openai/gpt-4o-mini".to_string(), "vllm/*".to_string()];
        assert!(model_allowed(&p, "openai/gpt-4o-mini"));
        assert!(model_allowed(&p, "vllm/llama"));
        assert!(!model_allowed(&p, "openai/gpt-4o"));
        assert!(!model_allowed(&p, "vllmx/a"));
    }
}
