//! How a pool of replicas picks one for a request: `round_robin`, `least_requests` (power of two
//! choices over requests in flight) or `inference` (least load with prefix affinity), and what
//! `inference` knows about each replica: requests in flight from this gateway (streams until
//! their last byte), and the replica's own queue, running requests and KV-cache use, read from
//! its Prometheus `/metrics` in the background ([`scrape`]).
//!
//! Prefix affinity: a prompt's text is cut into [`BLOCK`]-byte blocks, each hashed together
//! with the blocks before it (the way vLLM's prefix cache hashes token blocks). A bounded table
//! ([`TABLE_SLOTS`] slots per pool) maps a block's hash to the replica that was last given it.
//! A request goes to the replica holding its longest known prefix while that replica's load is
//! within `GATEWAY_POOL_AFFINITY_BOUND` requests of the least loaded one's; otherwise to the
//! least loaded (`spillover`), which then holds the prefix. A pick is a binary search over the
//! prompt's block hashes in the table and one pass over the replicas: no lock, no allocation.
//!
//! ```sh
//! VLLM_BASE_URL=http://10.0.0.5:8000,http://10.0.0.6:8000 ai-gateway
//! curl -s localhost:8080/health/providers | jq '.providers[] | {strategy, backends: [.backends[] | {url, load}]}'
//! ```

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use serde_json::{json, Value};

use crate::config::{BaseUrl, PoolStrategy};

/// Bytes of prompt text per hashed block (about 32 tokens).
pub const BLOCK: usize = 128;
/// Blocks hashed per prompt at most (the first 32 KiB of the prompt): prompts sharing more
/// than that are one prefix as far as affinity is concerned.
pub const MAX_BLOCKS: usize = 256;
/// Slots of a pool's affinity table (8 bytes each: 512 KiB per `inference` pool).
pub const TABLE_SLOTS: usize = 1 << 16;
/// Weight of a full KV cache in the load, in requests.
const KV_WEIGHT: u64 = 2;
/// Largest `/metrics` answer read.
const MAX_METRICS_BODY: usize = 8 * 1024 * 1024;
/// A scraped figure not known (the scrape failed, or the replica does not expose it).
const UNKNOWN: u32 = u32::MAX;

/// Why a pick chose its replica: the log line's `pick=` and the metrics' `pick` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    RoundRobin,
    LeastRequests,
    /// The replica holding the prompt's longest known prefix, within the load bound.
    Affinity,
    /// No known prefix: the least loaded replica.
    LeastLoad,
    /// The prefix's replica was loaded beyond the bound (or unavailable): the least loaded.
    Spillover,
}

impl PickReason {
    pub const ALL: [PickReason; 5] = [
        PickReason::RoundRobin,
        PickReason::LeastRequests,
        PickReason::Affinity,
        PickReason::LeastLoad,
        PickReason::Spillover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::RoundRobin => "round_robin",
            PickReason::LeastRequests => "least_requests",
            PickReason::Affinity => "affinity",
            PickReason::LeastLoad => "least_load",
            PickReason::Spillover => "spillover",
        }
    }
}

/// A prompt's chained block hashes (full blocks only, at most [`MAX_BLOCKS`]).
#[derive(Debug, Clone, Default)]
pub struct PromptKey {
    blocks: Vec<u64>,
}

impl PromptKey {
    /// Hashes the prompt text given in parts (tools, then messages, say), as one stream.
    pub fn new(parts: &[&[u8]]) -> PromptKey {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut blocks = Vec::with_capacity((total / BLOCK).min(MAX_BLOCKS));
        let seed = |h: u64| foldhash::fast::FixedState::with_seed(h).build_hasher();
        let mut prev = 0x9e37_79b9_7f4a_7c15u64;
        let mut h = seed(prev);
        let mut filled = 0;
        'parts: for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let take = (BLOCK - filled).min(rest.len());
                h.write(&rest[..take]);
                filled += take;
                rest = &rest[take..];
                if filled == BLOCK {
                    // Never zero: zero marks an empty slot in the table.
                    prev = h.finish() | 1 << 63;
                    blocks.push(prev);
                    if blocks.len() == MAX_BLOCKS {
                        break 'parts;
                    }
                    h = seed(prev);
                    filled = 0;
                }
            }
        }
        PromptKey { blocks }
    }

    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// Block hash -> the replica last given that prefix. Each slot holds the hash's upper 48 bits
/// and the replica's index plus one; a later block that lands on the slot replaces it.
pub struct AffinityTable {
    slots: Box<[AtomicU64]>,
}

const REPLICA_BITS: u64 = 16;
const REPLICA_MASK: u64 = (1 << REPLICA_BITS) - 1;

impl AffinityTable {
    pub fn new(slots: usize) -> AffinityTable {
        let n = slots.next_power_of_two().max(16);
        AffinityTable {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, h: u64) -> &AtomicU64 {
        // The low bits index; the high bits are the tag.
        &self.slots[(h as usize) & (self.slots.len() - 1)]
    }

    /// The replica holding block `h`, if the table remembers it.
    fn get(&self, h: u64) -> Option<usize> {
        let v = self.slot(h).load(Ordering::Relaxed);
        (v != 0 && v >> REPLICA_BITS == h >> REPLICA_BITS)
            .then_some((v & REPLICA_MASK) as usize)
            .and_then(|r| r.checked_sub(1))
    }

    /// The replica holding the prompt's longest known prefix, and how many blocks it holds.
    /// A binary search: a prefix's blocks are recorded together, so if block `k` is known so
    /// are the blocks before it (unless another prefix took their slot since).
    pub fn lookup(&self, key: &PromptKey) -> Option<(usize, usize)> {
        let b = &key.blocks;
        self.get(*b.first()?)?;
        let (mut lo, mut hi) = (0, b.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.get(b[mid]).is_some() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.get(b[lo]).map(|r| (r, lo + 1))
    }

    /// Remembers that `replica` was given this prompt.
    pub fn record(&self, key: &PromptKey, replica: usize) {
        let r = (replica as u64 + 1) & REPLICA_MASK;
        for &h in &key.blocks {
            let v = (h >> REPLICA_BITS) << REPLICA_BITS | r;
            let s = self.slot(h);
            if s.load(Ordering::Relaxed) != v {
                s.store(v, Ordering::Relaxed);
            }
        }
    }

    /// Forgets every prefix held by `replica` (it became unhealthy).
    pub fn forget(&self, replica: usize) {
        let r = (replica as u64 + 1) & REPLICA_MASK;
        for s in self.slots.iter() {
            let v = s.load(Ordering::Relaxed);
            if v != 0 && v & REPLICA_MASK == r {
                let _ = s.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Slots in use (for `/health/providers`; a full pass, not for the request path).
    pub fn entries(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
    }
}

/// What one replica's `/metrics` said, last time it was read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scraped {
    pub waiting: Option<u32>,
    pub running: Option<u32>,
    /// KV-cache use, 0 to 1.
    pub kv_cache: Option<f64>,
}

/// The load figures of one replica.
pub struct Replica {
    in_flight: AtomicU32,
    waiting: AtomicU32,
    running: AtomicU32,
    /// KV-cache use in thousandths.
    kv_milli: AtomicU32,
    /// When the figures were last read (ms since the pool started; 0: never).
    scraped_at: AtomicU64,
    scrape_error: Mutex<Option<String>>,
    picks: AtomicU64,
    affinity_hits: AtomicU64,
    counters: Option<crate::metrics::PoolCounters>,
    /// The backend's URL, for the log line.
    label: Arc<str>,
}

impl Replica {
    fn new(provider: &str, url: &BaseUrl) -> Replica {
        Replica {
            in_flight: AtomicU32::new(0),
            waiting: AtomicU32::new(UNKNOWN),
            running: AtomicU32::new(UNKNOWN),
            kv_milli: AtomicU32::new(UNKNOWN),
            scraped_at: AtomicU64::new(0),
            scrape_error: Mutex::new(None),
            picks: AtomicU64::new(0),
            affinity_hits: AtomicU64::new(0),
            label: url.to_string().into(),
            counters: crate::metrics::pool_counters(
                provider,
                &url.to_string(),
                &PickReason::ALL.map(PickReason::as_str),
            ),
        }
    }

    /// The backend's URL.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn known(a: &AtomicU32) -> Option<u32> {
        match a.load(Ordering::Relaxed) {
            UNKNOWN => None,
            v => Some(v),
        }
    }

    /// The load `inference` compares, in thousandths of a request: the requests on the replica
    /// (this gateway's in flight, or the replica's own running and waiting when higher: other
    /// clients), plus its queue again (a queued request waits for a slot, then runs), plus up
    /// to [`KV_WEIGHT`] requests for a full KV cache. Unknown figures count as zero.
    pub fn load(&self) -> u64 {
        let in_flight = u64::from(self.in_flight());
        let waiting = u64::from(Self::known(&self.waiting).unwrap_or(0));
        let running = u64::from(Self::known(&self.running).unwrap_or(0));
        let kv = u64::from(Self::known(&self.kv_milli).unwrap_or(0));
        1000 * in_flight.max(running + waiting) + 1000 * waiting + kv * KV_WEIGHT
    }

    fn set(&self, s: Option<Scraped>, at: u64, error: Option<String>) {
        let s = s.unwrap_or(Scraped {
            waiting: None,
            running: None,
            kv_cache: None,
        });
        let put = |a: &AtomicU32, v: Option<u32>| a.store(v.unwrap_or(UNKNOWN), Ordering::Relaxed);
        put(&self.waiting, s.waiting);
        put(&self.running, s.running);
        put(
            &self.kv_milli,
            s.kv_cache
                .map(|k| (k.clamp(0.0, 1.0) * 1000.0).round() as u32),
        );
        self.scraped_at.store(at, Ordering::Relaxed);
        *self.scrape_error.lock() = error;
    }

    fn count(&self, reason: PickReason) {
        self.picks.fetch_add(1, Ordering::Relaxed);
        if reason == PickReason::Affinity {
            self.affinity_hits.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = &self.counters {
            c.count(reason as usize, reason == PickReason::Affinity);
        }
    }
}

/// Counts a request in flight on a replica until dropped (after a stream's last byte).
pub struct InFlight(Arc<Balancer>, usize);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(r) = self.0.replicas.get(self.1) {
            r.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A pool's strategy and what it knows of its replicas.
pub struct Balancer {
    pub strategy: PoolStrategy,
    replicas: Box<[Replica]>,
    affinity: AffinityTable,
    /// The affinity bound, in thousandths of a request.
    bound: u64,
    turn: AtomicUsize,
    /// Scrape `/metrics` this often (`None`: never).
    pub metrics_interval: Option<Duration>,
    started: Instant,
}

impl Balancer {
    pub fn new(
        provider: &str,
        urls: &[BaseUrl],
        strategy: PoolStrategy,
        bound: u32,
        metrics_interval: Option<Duration>,
    ) -> Balancer {
        let inference = strategy == PoolStrategy::Inference && urls.len() > 1;
        Balancer {
            strategy,
            replicas: urls.iter().map(|u| Replica::new(provider, u)).collect(),
            // Only an `inference` pool of several replicas uses the table.
            affinity: AffinityTable::new(if inference { TABLE_SLOTS } else { 16 }),
            bound: u64::from(bound) * 1000,
            turn: AtomicUsize::new(0),
            metrics_interval: metrics_interval.filter(|_| inference),
            started: Instant::now(),
        }
    }

    /// Whether picks read a prompt key (an `inference` pool of several replicas).
    pub fn wants_prompt(&self) -> bool {
        self.strategy == PoolStrategy::Inference && self.replicas.len() > 1
    }

    pub fn replica(&self, i: usize) -> Option<&Replica> {
        self.replicas.get(i)
    }

    /// Counts a request on replica `i` until the guard drops.
    pub fn start(self: &Arc<Self>, i: usize) -> Option<InFlight> {
        let r = self.replicas.get(i)?;
        r.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self.clone(), i))
    }

    /// Picks a replica among those `eligible` says may take the request (not tried yet,
    /// breaker closed or past its cooldown). Round robin is the caller's (Pingora's load
    /// balancer); this serves the other strategies.
    pub fn pick(
        &self,
        key: Option<&PromptKey>,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<(usize, PickReason)> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let picked = match self.strategy {
            PoolStrategy::LeastRequests => self.two_choices(&eligible),
            _ => self.least_load(key, start, &eligible),
        }?;
        if let Some(r) = self.replicas.get(picked.0) {
            r.count(picked.1);
        }
        Some(picked)
    }

    /// Power of two choices over requests in flight; a full pass when the two drawn are not
    /// both eligible.
    fn two_choices(&self, eligible: &impl Fn(usize) -> bool) -> Option<(usize, PickReason)> {
        let n = self.replicas.len();
        let reason = PickReason::LeastRequests;
        if n == 1 {
            return eligible(0).then_some((0, reason));
        }
        let mut rng = rand::thread_rng();
        let a = rng.gen_range(0..n);
        let b = (a + 1 + rng.gen_range(0..n - 1)) % n;
        let flight = |i: usize| self.replicas[i].in_flight();
        if eligible(a) && eligible(b) {
            let i = if flight(b) < flight(a) { b } else { a };
            return Some((i, reason));
        }
        (0..n)
            .map(|k| (a + k) % n)
            .filter(|&i| eligible(i))
            .min_by_key(|&i| flight(i))
            .map(|i| (i, reason))
    }

    /// `inference`: the prefix's replica within the bound, else the least loaded (ties taken
    /// in turn).
    fn least_load(
        &self,
        key: Option<&PromptKey>,
        start: usize,
        eligible: &impl Fn(usize) -> bool,
    ) -> Option<(usize, PickReason)> {
        let n = self.replicas.len();
        let mut best: Option<(usize, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(i) {
                continue;
            }
            let l = self.replicas[i].load();
            if best.is_none_or(|(_, b)| l < b) {
                best = Some((i, l));
            }
        }
        let (min_i, min_load) = best?;
        let Some(key) = key.filter(|k| k.blocks() > 0) else {
            return Some((min_i, PickReason::LeastLoad));
        };
        let (i, reason) = match self.affinity.lookup(key) {
            None => (min_i, PickReason::LeastLoad),
            Some((a, _)) if a == min_i => (a, PickReason::Affinity),
            Some((a, _))
                if a < n && eligible(a) && self.replicas[a].load() <= min_load + self.bound =>
            {
                (a, PickReason::Affinity)
            }
            Some(_) => (min_i, PickReason::Spillover),
        };
        self.affinity.record(key, i);
        Some((i, reason))
    }

    /// Counts a pick made elsewhere (round robin: Pingora's load balancer).
    pub fn counted(&self, i: usize, reason: PickReason) {
        if let Some(r) = self.replicas.get(i) {
            r.count(reason);
        }
    }

    /// A replica became unhealthy: the prefixes it held go to whoever serves them next.
    pub fn forget(&self, i: usize) {
        if self.wants_prompt() {
            self.affinity.forget(i);
        }
    }

    /// Replica `i`'s figures for `/health/providers`.
    pub fn replica_status(&self, i: usize) -> Value {
        let Some(r) = self.replicas.get(i) else {
            return Value::Null;
        };
        let at = r.scraped_at.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        json!({
            "in_flight": r.in_flight(),
            "waiting": Replica::known(&r.waiting),
            "running": Replica::known(&r.running),
            "kv_cache_usage": Replica::known(&r.kv_milli).map(|k| f64::from(k) / 1000.0),
            "load": r.load() as f64 / 1000.0,
            "scraped_ms_ago": (at > 0).then(|| now.saturating_sub(at)),
            "scrape_error": *r.scrape_error.lock(),
            "picks": r.picks.load(Ordering::Relaxed),
            "affinity_hits": r.affinity_hits.load(Ordering::Relaxed),
        })
    }

    /// The pool's own fields for `/health/providers`.
    pub fn status(&self) -> Value {
        let mut v = json!({ "strategy": self.strategy.as_str() });
        if self.wants_prompt() {
            v["affinity"] = json!({
                "bound": self.bound as f64 / 1000.0,
                "entries": self.affinity.entries(),
                "slots": self.affinity.slots.len(),
                "block_bytes": BLOCK,
            });
            v["metrics_interval_ms"] = json!(self.metrics_interval.map(|d| d.as_millis() as u64));
        }
        v
    }

    /// Records one replica's scrape: figures, or why there are none (all unknown then).
    pub fn scraped(&self, i: usize, result: Result<Scraped, String>) {
        let Some(r) = self.replicas.get(i) else {
            return;
        };
        let at = (self.started.elapsed().as_millis() as u64).max(1);
        match result {
            Ok(s) => r.set(Some(s), at, None),
            Err(e) => r.set(None, at, Some(e)),
        }
    }
}

/// Reads the queue, running requests and KV-cache use from a Prometheus text exposition:
/// vLLM's `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`
/// (or the older `vllm:gpu_cache_usage_perc`), and SGLang's `sglang:num_queue_reqs`,
/// `sglang:num_running_reqs`, `sglang:token_usage`. Counts are summed over label sets (several
/// models or engines), KV-cache use is the highest. `Err` when none of them is there.
pub fn parse_metrics(text: &str) -> Result<Scraped, String> {
    let mut waiting: Option<f64> = None;
    let mut running: Option<f64> = None;
    let mut kv: Option<f64> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        let (slot, is_kv) = match name {
            "vllm:num_requests_waiting" | "sglang:num_queue_reqs" => (&mut waiting, false),
            "vllm:num_requests_running" | "sglang:num_running_reqs" => (&mut running, false),
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" | "sglang:token_usage" => {
                (&mut kv, true)
            }
            _ => continue,
        };
        let rest = &line[name_end..];
        // Label values may hold spaces: the value follows the last `}`.
        let rest = match rest.strip_prefix('{') {
            Some(_) => match rest.rfind('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            },
            None => rest,
        };
        let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if !v.is_finite() || v < 0.0 {
            continue;
        }
        *slot = Some(match (*slot, is_kv) {
            (None, _) => v,
            (Some(old), true) => old.max(v),
            (Some(old), false) => old + v,
        });
    }
    if waiting.is_none() && running.is_none() && kv.is_none() {
        return Err("no queue or KV-cache figures in /metrics".into());
    }
    let count = |v: Option<f64>| v.map(|v| v.min(1e6).round() as u32);
    // A percentage (0-100) read as a fraction.
    let kv = kv.map(|k| if k > 1.0 { (k / 100.0).min(1.0) } else { k });
    Ok(Scraped {
        waiting: count(waiting),
        running: count(running),
        kv_cache: kv,
    })
}

/// The `/metrics` path at the replica's host root (a base URL's `/v1` left out).
pub fn metrics_path(url: &BaseUrl) -> String {
    let root = url.path.strip_suffix("/v1").unwrap_or(&url.path);
    format!("{root}/metrics")
}

/// Reads every replica's `/metrics` once, in parallel, each bounded by `timeout`; a failure,
/// a slow answer or a body with none of the figures marks that replica's figures unknown.
pub async fn scrape(
    balancer: &Balancer,
    urls: &[BaseUrl],
    upstreams: &crate::upstream::Upstreams,
    timeout: Duration,
) {
    let results =
        futures::future::join_all(urls.iter().map(|u| scrape_one(u, upstreams, timeout))).await;
    for (i, r) in results.into_iter().enumerate() {
        balancer.scraped(i, r);
    }
}

/// One replica's `/metrics`, read within `timeout`.
async fn scrape_one(
    url: &BaseUrl,
    upstreams: &crate::upstream::Upstreams,
    timeout: Duration,
) -> Result<Scraped, String> {
    let req = crate::providers::UpstreamRequest::get(metrics_path(url), Vec::new());
    let fetch = async {
        let mut resp = upstreams
            .send(url, &req)
            .await
            .map_err(|e| format!("metrics scrape: {}", e.reason()))?;
        let status = resp.status();
        let body = match resp.read_all(MAX_METRICS_BODY).await {
            Ok(b) => {
                resp.release().await;
                b
            }
            Err(e) => return Err(format!("metrics scrape: {}", e.reason())),
        };
        if !(200..300).contains(&status) {
            return Err(format!("metrics scrape answered {status}"));
        }
        parse_metrics(&String::from_utf8_lossy(&body))
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "metrics scrape took longer than {}ms",
            timeout.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(port: u16) -> BaseUrl {
        BaseUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port,
            path: "/v1".into(),
        }
    }

    fn balancer(n: u16, strategy: PoolStrategy) -> Balancer {
        let urls: Vec<BaseUrl> = (0..n).map(|i| url(9000 + i)).collect();
        Balancer::new("test", &urls, strategy, 2, None)
    }

    fn text(turns: usize) -> String {
        let mut s = String::from("[{\"role\":\"system\",\"content\":\"");
        s.push_str(&"You are a helpful assistant. ".repeat(20));
        s.push_str("\"}");
        for t in 0..turns {
            s.push_str(&format!(
                ",{{\"role\":\"user\",\"content\":\"question {t} {}\"}}",
                "x".repeat(300)
            ));
        }
        s.push(']');
        s
    }

    #[test]
    fn blocks_chain_so_a_shared_prefix_shares_hashes() {
        let a = PromptKey::new(&[text(3).as_bytes()]);
        let b = PromptKey::new(&[text(4).as_bytes()]);
        assert!(a.blocks() > 4);
        let shared = a.blocks.iter().zip(&b.blocks).take_while(|(x, y)| x == y);
        assert!(shared.count() >= a.blocks() - 1);
        let split = PromptKey::new(&[b"abc", &[b'x'; 300]]);
        assert_eq!(split.blocks(), 2);
        assert_eq!(PromptKey::new(&[&[b'y'; 100_000]]).blocks(), MAX_BLOCKS);
    }

    #[test]
    fn affinity_keeps_a_conversation_and_spills_over_beyond_the_bound() {
        let b = balancer(4, PoolStrategy::Inference);
        let all = |_| true;
        let first = b.pick(Some(&PromptKey::new(&[text(1).as_bytes()])), all);
        let (home, why) = first.unwrap();
        assert_eq!(why, PickReason::LeastLoad);
        for t in 2..6 {
            let key = PromptKey::new(&[text(t).as_bytes()]);
            assert_eq!(b.pick(Some(&key), all), Some((home, PickReason::Affinity)));
        }
        // Loaded beyond the bound (2): the next turn goes elsewhere, which then holds it.
        let arc = Arc::new(b);
        let _busy: Vec<_> = (0..3).map(|_| arc.start(home).unwrap()).collect();
        let key = PromptKey::new(&[text(6).as_bytes()]);
        let (other, why) = arc.pick(Some(&key), all).unwrap();
        assert_ne!(other, home);
        assert_eq!(why, PickReason::Spillover);
        let key = PromptKey::new(&[text(7).as_bytes()]);
        assert_eq!(
            arc.pick(Some(&key), all),
            Some((other, PickReason::Affinity))
        );
        // Unhealthy: not eligible, and forgotten.
        let key = PromptKey::new(&[text(8).as_bytes()]);
        let (next, why) = arc.pick(Some(&key), |i| i != other).unwrap();
        assert_ne!(next, other);
        assert_eq!(why, PickReason::Spillover);
        arc.forget(next);
        assert!(arc.affinity.lookup(&key).is_none());
    }

    #[test]
    fn least_load_reads_the_scraped_queue_and_kv_cache() {
        let b = balancer(3, PoolStrategy::Inference);
        let figures = |w, k| Scraped {
            waiting: Some(w),
            running: Some(0),
            kv_cache: Some(k),
        };
        b.scraped(0, Ok(figures(5, 0.1)));
        b.scraped(1, Ok(figures(0, 0.9)));
        b.scraped(2, Ok(figures(0, 0.2)));
        for _ in 0..5 {
            assert_eq!(b.pick(None, |_| true), Some((2, PickReason::LeastLoad)));
        }
        b.scraped(2, Err("connection refused".into()));
        // Unknown figures count as zero.
        assert_eq!(b.pick(None, |_| true), Some((2, PickReason::LeastLoad)));
        assert_eq!(b.pick(None, |i| i != 2), Some((1, PickReason::LeastLoad)));
    }

    #[test]
    fn least_requests_takes_the_one_with_fewer_in_flight() {
        let b = Arc::new(balancer(2, PoolStrategy::LeastRequests));
        let _g = b.start(0).unwrap();
        for _ in 0..10 {
            assert_eq!(b.pick(None, |_| true), Some((1, PickReason::LeastRequests)));
        }
        assert_eq!(
            b.pick(None, |i| i == 0),
            Some((0, PickReason::LeastRequests))
        );
        drop(_g);
        assert_eq!(b.replicas[0].in_flight(), 0);
    }

    #[test]
    fn metrics_text_of_vllm_and_sglang_and_garbage() {
        let vllm = "# HELP vllm:num_requests_waiting x\n\
            # TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"m a\"} 3.0\n\
            vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 2.0\n\
            vllm:num_requests_running{model_name=\"m\"} 4.0 1712345678000\n\
            vllm:kv_cache_usage_perc{model_name=\"m\"} 0.42\n\
            vllm:prompt_tokens_total{model_name=\"m\"} 1e9\n";
        assert_eq!(
            parse_metrics(vllm),
            Ok(Scraped {
                waiting: Some(5),
                running: Some(4),
                kv_cache: Some(0.42)
            })
        );
        let old = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.7\n";
        assert_eq!(parse_metrics(old).unwrap().kv_cache, Some(0.7));
        let sglang = "sglang:num_queue_reqs{model_name=\"m\"} 7\nsglang:num_running_reqs 2\nsglang:token_usage 0.5\n";
        let s = parse_metrics(sglang).unwrap();
        assert_eq!(
            (s.waiting, s.running, s.kv_cache),
            (Some(7), Some(2), Some(0.5))
        );
        for garbage in [
            "",
            "<html>nope</html>",
            "vllm:num_requests_waiting NaN\n",
            "\u{0}\u{1}{{{",
        ] {
            assert!(parse_metrics(garbage).is_err(), "{garbage:?}");
        }
        assert_eq!(metrics_path(&url(1)), "/metrics");
    }
}
