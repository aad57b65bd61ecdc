//! Health of providers and of each backend in a provider's pool.
//!
//! - Passive: a breaker per backend. `GATEWAY_FAILURE_THRESHOLD` consecutive failures
//!   (default 1) take it out of rotation for `GATEWAY_UNHEALTHY_COOLDOWN`; after that one trial
//!   request is let through (half-open): success closes the breaker, failure opens it again.
//! - Active: every `GATEWAY_HEALTH_CHECK_INTERVAL`, Pingora's load-balancing health check runs a
//!   probe that costs no tokens against each backend; a passing probe closes the breaker at
//!   once, a failing one opens it.
//!
//! A provider is available while at least one of its backends is.
//!
//! The load balancer knows each backend by the address its URL resolves to
//! ([`crate::discovery::UrlDiscovery`], through the resolver the connector uses), re-resolved
//! every [`DNS_TTL`] when a URL has a host name.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use serde_json::{json, Value};

use crate::balance::{Balancer, PickReason, PromptKey};
use crate::config::{BaseUrl, PoolStrategy};
use crate::discovery::{BackendIndices, UrlDiscovery, DNS_TTL};
use crate::providers::Provider;
use crate::upstream::{Upstreams, MAX_ERROR_BODY};

/// What the breaker knows about one backend.
#[derive(Debug)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    /// Half-open: a trial request is in flight.
    trial: bool,
    last_error: Option<String>,
}

/// Passive health of one backend.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<BreakerState>,
    threshold: u32,
    cooldown: Duration,
    /// Who this is, for log lines.
    label: String,
    /// The provider this backend belongs to, and its other backends' breakers are consulted
    /// through `Pool`; the metric is set from transitions here.
    provider: String,
}

/// What a caller may do with a backend now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// The cooldown is over: this request is the trial.
    Trial,
    Open,
}

impl Breaker {
    pub fn new(label: String, threshold: u32, cooldown: Duration) -> Self {
        let provider = label
            .split_whitespace()
            .next()
            .and_then(|p| p.strip_prefix("provider="))
            .unwrap_or_default()
            .to_string();
        Breaker {
            state: Mutex::new(BreakerState {
                failures: 0,
                open_until: None,
                trial: false,
                last_error: None,
            }),
            threshold: threshold.max(1),
            cooldown,
            label,
            provider,
        }
    }

    /// Whether a request may use this backend; takes the half-open trial slot if it is free.
    pub fn admit(&self) -> Admission {
        let mut s = self.state.lock();
        match s.open_until {
            None => Admission::Closed,
            Some(t) if Instant::now() < t => Admission::Open,
            Some(_) if s.trial => Admission::Open,
            Some(_) => {
                s.trial = true;
                Admission::Trial
            }
        }
    }

    /// Whether the backend would be admitted now (no trial slot taken).
    pub fn is_available(&self) -> bool {
        let s = self.state.lock();
        match s.open_until {
            None => true,
            Some(t) => Instant::now() >= t && !s.trial,
        }
    }

    pub fn record_success(&self) {
        let mut s = self.state.lock();
        let was_open = s.open_until.is_some();
        s.failures = 0;
        s.open_until = None;
        s.trial = false;
        if was_open {
            log::info!("{} status=recovered", self.label);
            crate::metrics::provider_health(&self.provider, true);
        }
    }

    pub fn record_failure(&self, reason: &str) {
        let mut s = self.state.lock();
        s.failures += 1;
        s.last_error = Some(reason.to_string());
        let was_open = s.open_until.is_some();
        if s.trial || s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.cooldown);
            s.trial = false;
            if !was_open {
                log::info!("{} status=unhealthy reason={:?}", self.label, reason);
                crate::metrics::provider_health(&self.provider, false);
            }
        }
    }

    /// A failed active check: opens the breaker at once, whatever the threshold.
    pub fn record_probe_failure(&self, reason: &str) {
        for _ in 0..self.threshold {
            self.record_failure(reason);
        }
    }

    /// Time until the cooldown ends (zero when closed or over).
    pub fn retry_in(&self) -> Duration {
        let s = self.state.lock();
        s.open_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    fn status(&self) -> Value {
        let s = self.state.lock();
        let state = match s.open_until {
            None => "healthy",
            Some(t) if Instant::now() < t => "unhealthy",
            Some(_) => "half_open",
        };
        json!({
            "state": state,
            "consecutive_failures": s.failures,
            "cooldown_remaining_ms": s.open_until.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64).unwrap_or(0),
            "last_error": s.last_error,
        })
    }
}

/// One backend of a provider: its URL and breaker.
pub struct BackendHealth {
    pub url: BaseUrl,
    pub breaker: Breaker,
}

/// A provider's pool: its backends, Pingora's round-robin load balancer over them, and a
/// latency estimate for the `latency` strategy.
pub struct Pool {
    pub provider: String,
    pub backends: Vec<Arc<BackendHealth>>,
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    /// EWMA of time to response head, in microseconds (0 = not measured yet).
    latency_us: AtomicU64,
    /// Rotation among backends the load balancer does not tell apart: several URLs behind one
    /// address, and those outside its set.
    turn: AtomicUsize,
    /// The discovery's switch for name lookups (off while [`Pool::load`] runs).
    lookups: Arc<AtomicBool>,
    /// The strategy and each backend's load figures (`src/balance.rs`).
    pub balance: Arc<Balancer>,
    upstreams: Arc<Upstreams>,
}

/// The backends a pick has already looked at through the load balancer.
#[derive(Default)]
struct Seen {
    low: Cell<u64>,
    high: RefCell<Vec<usize>>,
}

impl Seen {
    fn insert(&self, i: usize) {
        if i < 64 {
            self.low.set(self.low.get() | (1 << i));
        } else {
            self.high.borrow_mut().push(i);
        }
    }

    fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low.get() & (1 << i) != 0
        } else {
            self.high.borrow().contains(&i)
        }
    }
}

impl Pool {
    pub fn new(
        provider: &Arc<dyn Provider>,
        upstreams: Arc<Upstreams>,
        threshold: u32,
        cooldown: Duration,
        check_interval: Option<Duration>,
    ) -> Pool {
        let cfg = provider.config();
        let many = cfg.backends.len() > 1;
        let backends: Vec<Arc<BackendHealth>> = cfg
            .backends
            .iter()
            .map(|u| {
                let label = if many {
                    format!("provider={} backend={}", cfg.name, u)
                } else {
                    format!("provider={}", cfg.name)
                };
                Arc::new(BackendHealth {
                    url: u.clone(),
                    breaker: Breaker::new(label, threshold, cooldown),
                })
            })
            .collect();
        let mut discovery = UrlDiscovery::new(
            upstreams.resolver().clone(),
            cfg.name.clone(),
            cfg.backends.clone(),
        );
        if check_interval.is_some() {
            // A backend whose name does not resolve is not in the load balancer, so it is never
            // probed: with active checks on, each failed lookup counts as the failed probe it
            // would have been (a probe cannot connect to a name that does not resolve).
            let unresolved = backends.clone();
            discovery = discovery.on_unresolved(move |i, _| {
                if let Some(bh) = unresolved.get(i) {
                    bh.breaker
                        .record_probe_failure("health probe: connect_error");
                }
            });
        }
        // IP literals never change: one round (at load) is enough for them.
        let update_frequency = discovery.has_names().then_some(DNS_TTL);
        let lookups = discovery.lookups();
        let mut lb_backends = Backends::new(Box::new(discovery));
        // Without an interval no probe is installed at all (Pingora would still run it once).
        if check_interval.is_some() {
            lb_backends.set_health_check(Box::new(Probe {
                provider: provider.clone(),
                upstreams: upstreams.clone(),
                backends: backends.clone(),
            }));
        }
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(lb_backends);
        lb.health_check_frequency = check_interval;
        lb.update_frequency = update_frequency;
        lb.parallel_health_check = true;
        Pool {
            provider: cfg.name.clone(),
            backends,
            lb: Arc::new(lb),
            latency_us: AtomicU64::new(0),
            turn: AtomicUsize::new(0),
            lookups,
            balance: Arc::new(Balancer::new(
                &cfg.name,
                &cfg.backends,
                PoolStrategy::RoundRobin,
                0,
                None,
            )),
            upstreams,
        }
    }

    /// Sets how the pool picks a backend: `strategy`, the affinity `bound` (requests) and how
    /// often `inference` reads the backends' `/metrics`.
    pub fn with_strategy(
        mut self,
        strategy: PoolStrategy,
        bound: u32,
        metrics_interval: Option<Duration>,
    ) -> Pool {
        let urls: Vec<BaseUrl> = self.backends.iter().map(|b| b.url.clone()).collect();
        self.balance = Arc::new(Balancer::new(
            &self.provider,
            &urls,
            strategy,
            bound,
            metrics_interval,
        ));
        self
    }

    /// Picks a backend by the pool's strategy for a request whose prompt is `key` (read only
    /// by `inference`), leaving out those `tried`: see [`Pool::pick`]. Says why it chose it.
    pub fn pick_for(
        &self,
        tried: &[usize],
        key: Option<&PromptKey>,
    ) -> Option<(usize, Admission, PickReason)> {
        if self.balance.strategy == PoolStrategy::RoundRobin {
            let (i, a) = self.pick_round_robin(tried)?;
            self.balance.counted(i, PickReason::RoundRobin);
            return Some((i, a, PickReason::RoundRobin));
        }
        // Breakers (which active checks open and close too) say who may take the request; a
        // breaker taken by another request between the look and the admission is left out.
        let n = self.backends.len();
        let lost = Seen::default();
        for _ in 0..n.max(1) {
            let eligible = |i: usize| {
                !tried.contains(&i)
                    && !lost.contains(i)
                    && self
                        .backends
                        .get(i)
                        .is_some_and(|b| b.breaker.is_available())
            };
            let (i, reason) = self.balance.pick(key, eligible)?;
            match self.backends.get(i).map(|b| b.breaker.admit()) {
                Some(Admission::Open) | None => {
                    lost.insert(i);
                }
                Some(a) => return Some((i, a, reason)),
            }
        }
        None
    }

    /// Counts a request on backend `i` as in flight until the guard drops.
    pub fn start(&self, i: usize) -> Option<crate::balance::InFlight> {
        self.balance.start(i)
    }

    /// Reads every backend's `/metrics` every `every` until shutdown; a backend whose breaker
    /// opened loses the prefixes it held.
    async fn scrape_loop(&self, every: Duration, mut shutdown: pingora::server::ShutdownWatch) {
        let urls: Vec<BaseUrl> = self.backends.iter().map(|b| b.url.clone()).collect();
        let timeout = every.clamp(Duration::from_millis(50), Duration::from_secs(2));
        let mut was_up: Vec<bool> = vec![true; urls.len()];
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            crate::balance::scrape(&self.balance, &urls, &self.upstreams, timeout).await;
            for (i, b) in self.backends.iter().enumerate() {
                let up = b.breaker.is_available();
                if was_up[i] && !up {
                    self.balance.forget(i);
                }
                was_up[i] = up;
            }
        }
    }

    /// Loads the backends whose address needs no lookup (IP literals, cached answers) into the
    /// load balancer, at once, before the server runs: nothing waits for a name server there.
    /// The background service's first round, at its start, resolves the names; until then a
    /// backend left out is still picked (see [`Pool::pick`]).
    pub async fn load(&self) {
        self.lookups.store(false, Ordering::Relaxed);
        let _ = self.lb.update().await;
        self.lookups.store(true, Ordering::Relaxed);
    }

    fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// Picks an available backend not in `tried`, round-robin, honouring active checks and
    /// breakers. A half-open backend's trial slot is taken by the pick.
    ///
    /// The load balancer picks an address; the URLs behind it take turns. A backend outside the
    /// load balancer's set (its name does not resolve, or has not been looked up yet), or that
    /// this pass did not reach, is still picked when no backend the pass saw can be: its breaker
    /// decides, as for any other, and a failed connection opens it.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, Admission)> {
        self.pick_for(tried, None).map(|(i, a, _)| (i, a))
    }

    fn pick_round_robin(&self, tried: &[usize]) -> Option<(usize, Admission)> {
        let admitted = Cell::new(None);
        let seen = Seen::default();
        let n = self.backends.len().max(1);
        self.lb.select_with(b"", n * 2, |b, healthy| {
            let Some(BackendIndices(group)) = b.ext.get::<BackendIndices>() else {
                return false;
            };
            let start = if group.len() > 1 { self.next_turn() } else { 0 };
            for k in 0..group.len() {
                let i = group[(start + k) % group.len()];
                seen.insert(i);
                if let Some(a) = self.admit(i, tried, healthy) {
                    admitted.set(Some((i, a)));
                    return true;
                }
            }
            false
        });
        if let Some(picked) = admitted.get() {
            return Some(picked);
        }
        let n = self.backends.len();
        if (0..n).all(|i| seen.contains(i)) {
            return None;
        }
        let start = self.next_turn();
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !seen.contains(*i))
            .find_map(|i| self.admit(i, tried, true).map(|a| (i, a)))
    }

    /// Whether backend `i` may take this request (`healthy`: the last active check passed).
    fn admit(&self, i: usize, tried: &[usize], healthy: bool) -> Option<Admission> {
        if tried.contains(&i) {
            return None;
        }
        let bh = self.backends.get(i)?;
        // A breaker past its cooldown may try even if the last active check failed: the
        // trial decides.
        if !healthy && !bh.breaker.is_available() {
            return None;
        }
        match bh.breaker.admit() {
            Admission::Open => None,
            a => Some(a),
        }
    }

    /// The address the load balancer knows backend `i` by (`None`: not resolved).
    fn address(&self, i: usize) -> Option<String> {
        self.lb.backends().get_backend().iter().find_map(|b| {
            let BackendIndices(group) = b.ext.get::<BackendIndices>()?;
            group.contains(&i).then(|| b.addr.to_string())
        })
    }

    /// Whether any backend could take a request now.
    pub fn is_available(&self) -> bool {
        self.backends.iter().any(|b| b.breaker.is_available())
    }

    /// Shortest wait until a backend leaves its cooldown.
    pub fn retry_in(&self) -> Duration {
        self.backends
            .iter()
            .map(|b| b.breaker.retry_in())
            .min()
            .unwrap_or_default()
    }

    pub fn record_latency(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            us.max(1)
        } else {
            (old * 7 + us * 3) / 10
        };
        self.latency_us.store(new.max(1), Ordering::Relaxed);
    }

    /// EWMA of time to response head, if measured.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn status(&self) -> Value {
        let backends: Vec<Value> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut v = b.breaker.status();
                v["url"] = json!(b.url.to_string());
                v["address"] = json!(self.address(i));
                v["load"] = self.balance.replica_status(i);
                v
            })
            .collect();
        let mut v = json!({
            "name": self.provider,
            "healthy": self.is_available(),
            "latency_ms": self.latency().map(|d| d.as_secs_f64() * 1000.0),
            "backends": backends,
        });
        if let (Some(o), Value::Object(b)) = (v.as_object_mut(), self.balance.status()) {
            o.extend(b);
        }
        v
    }
}

/// Runs a pool's load balancer in the background: backend list and active health checks.
pub struct PoolService(pub Arc<Pool>);

#[async_trait]
impl pingora::services::background::BackgroundService for PoolService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        let pool = &self.0;
        match pool.balance.metrics_interval {
            None => pool.lb.start(shutdown).await,
            Some(every) => {
                tokio::join!(
                    pool.lb.start(shutdown.clone()),
                    pool.scrape_loop(every, shutdown)
                );
            }
        }
    }
}

/// `GET /health/providers`: every provider's state.
pub fn providers_status(pools: &std::collections::BTreeMap<String, Arc<Pool>>) -> Value {
    let list: Vec<Value> = pools.values().map(|p| p.status()).collect();
    json!({ "providers": list })
}

/// The active probe: the provider's no-token request (`/models`, `/health`, `/api/version`...).
struct Probe {
    provider: Arc<dyn Provider>,
    upstreams: Arc<Upstreams>,
    backends: Vec<Arc<BackendHealth>>,
}

impl Probe {
    /// One backend's probe, recorded by its breaker.
    async fn probe(&self, bh: &BackendHealth) -> Result<(), String> {
        // A cloud's access token first (Vertex AI): failing to get one fails the probe.
        if let Some(wait) = self.provider.ready() {
            if let Err(e) = wait.await {
                let why = format!("health probe: {}", e.label);
                bh.breaker.record_probe_failure(&why);
                return Err(why);
            }
        }
        let Some(req) = self.provider.health_probe(&bh.url) else {
            return Ok(());
        };
        let result = match self.upstreams.send(&bh.url, &req).await {
            Ok(mut resp) => {
                let status = resp.status();
                let _ = resp.read_all(MAX_ERROR_BODY).await;
                resp.release().await;
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("health probe answered {status}"))
                }
            }
            Err(e) => Err(format!("health probe: {}", e.reason())),
        };
        match result {
            Ok(()) => {
                bh.breaker.record_success();
                Ok(())
            }
            Err(why) => {
                bh.breaker.record_probe_failure(&why);
                Err(why)
            }
        }
    }
}

#[async_trait]
impl HealthCheck for Probe {
    /// Probes every URL behind the target's address, each recorded by its own breaker; the
    /// address passes while one of them does.
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let fail =
            |why: String| pingora::Error::explain(pingora::ErrorType::Custom("probe_failed"), why);
        let Some(BackendIndices(group)) = target.ext.get::<BackendIndices>() else {
            return Err(fail("unknown backend".into()));
        };
        let mut failed = None;
        let mut passed = false;
        for &i in group.iter() {
            let Some(bh) = self.backends.get(i) else {
                failed = Some("unknown backend".to_string());
                continue;
            };
            match self.probe(bh).await {
                Ok(()) => passed = true,
                Err(why) => failed = Some(why),
            }
        }
        match failed {
            Some(why) if !passed => Err(fail(why)),
            _ => Ok(()),
        }
    }

    /// Names the target in Pingora's log lines by what it is: its URLs and real address.
    fn backend_summary(&self, target: &Backend) -> String {
        let urls: Vec<String> = target
            .ext
            .get::<BackendIndices>()
            .map(|BackendIndices(group)| {
                group
                    .iter()
                    .filter_map(|&i| self.backends.get(i))
                    .map(|b| b.url.to_string())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "provider={} backend={} address={}",
            self.provider.config().name,
            urls.join(","),
            target.addr
        )
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upstream::Timeouts;

    /// The `vllm` pool over `urls` (comma-separated), no active checks.
    fn pool(urls: &str) -> Pool {
        checked_pool(urls, None)
    }

    fn checked_pool(urls: &str, check_interval: Option<Duration>) -> Pool {
        let env = [("VLLM_BASE_URL".to_string(), urls.to_string())]
            .into_iter()
            .collect();
        let config = Config::from_map(&env).unwrap();
        let provider = crate::providers::build(&config.providers["vllm"], &config).unwrap();
        let t = Duration::from_secs(2);
        let upstreams = Arc::new(Upstreams::new(Timeouts {
            connect: t,
            first_byte: t,
            idle: t,
        }));
        Pool::new(
            &provider,
            upstreams,
            1,
            Duration::from_secs(60),
            check_interval,
        )
    }

    fn addresses(p: &Pool) -> Vec<Value> {
        p.status()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["address"].clone())
            .collect()
    }

    fn picks(p: &Pool, n: usize) -> Vec<usize> {
        (0..n).map(|_| p.pick(&[]).unwrap().0).collect()
    }

    #[tokio::test]
    async fn a_pool_of_two_local_urls_is_known_by_their_real_addresses() {
        let p = pool("http://127.0.0.1:9101,http://localhost:9102");
        let lb = |p: &Pool| -> Vec<String> {
            p.lb.backends()
                .get_backend()
                .iter()
                .map(|b| b.addr.to_string())
                .collect()
        };
        p.load().await;
        assert_eq!(lb(&p), ["127.0.0.1:9101"], "loading looks nothing up");
        assert_eq!(addresses(&p), [json!("127.0.0.1:9101"), Value::Null]);
        let mut got = picks(&p, 4);
        got.sort();
        assert_eq!(got, [0, 0, 0, 0], "the one in the balancer first");
        assert_eq!(p.pick(&[0]).unwrap().0, 1, "the other is still reachable");
        // The background service's round resolves the name.
        p.lb.update().await.unwrap();
        assert_eq!(lb(&p), ["127.0.0.1:9101", "127.0.0.1:9102"]);
        assert_eq!(
            addresses(&p),
            [json!("127.0.0.1:9101"), json!("127.0.0.1:9102")]
        );
        let mut got = picks(&p, 4);
        got.sort();
        assert_eq!(got, [0, 0, 1, 1], "round robin");
        let (first, _) = p.pick(&[]).unwrap();
        assert_eq!(
            p.pick(&[first]).unwrap().0,
            1 - first,
            "failover to the other"
        );
    }

    #[tokio::test]
    async fn urls_behind_one_address_take_turns() {
        let p = pool("http://127.0.0.1:9101/a,http://127.0.0.1:9101/b");
        p.load().await;
        assert_eq!(p.lb.backends().get_backend().len(), 1);
        assert_eq!(
            addresses(&p),
            [json!("127.0.0.1:9101"), json!("127.0.0.1:9101")]
        );
        let mut got = picks(&p, 4);
        got.sort();
        assert_eq!(got, [0, 0, 1, 1]);
        assert_eq!(p.pick(&[0]).unwrap().0, 1);
        p.backends[1].breaker.record_failure("500");
        assert_eq!(picks(&p, 3), [0, 0, 0], "the open breaker sits out");
        assert_eq!(p.pick(&[0]), None);
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_stays_reachable() {
        let p = pool("http://127.0.0.1:9101,http://no-such-host.invalid:9102");
        p.load().await;
        p.lb.update().await.unwrap();
        assert_eq!(p.lb.backends().get_backend().len(), 1);
        assert_eq!(addresses(&p), [json!("127.0.0.1:9101"), Value::Null]);
        assert_eq!(p.pick(&[]).unwrap().0, 0, "the resolved backend first");
        assert_eq!(p.pick(&[0]).unwrap().0, 1, "then the other");
        p.backends[0].breaker.record_failure("500");
        assert_eq!(p.pick(&[]).unwrap().0, 1);
        p.backends[1].breaker.record_failure("connect_error");
        assert_eq!(p.pick(&[]), None);
        assert!(!p.is_available());
    }

    #[tokio::test]
    async fn with_active_checks_a_name_that_does_not_resolve_fails_its_probe() {
        let p = checked_pool(
            "http://127.0.0.1:9101,http://no-such-host.invalid:9102",
            Some(Duration::from_secs(60)),
        );
        p.load().await;
        let v = p.status();
        assert_eq!(
            v["backends"][1]["state"], "healthy",
            "not looked up yet: {v}"
        );
        p.lb.update().await.unwrap();
        let v = p.status();
        assert_eq!(v["backends"][1]["state"], "unhealthy", "{v}");
        assert_eq!(
            v["backends"][1]["last_error"], "health probe: connect_error",
            "{v}"
        );
        assert_eq!(v["backends"][0]["state"], "healthy", "{v}");
        assert_eq!(p.pick(&[0]), None);
    }

    #[tokio::test]
    async fn probe_log_lines_name_urls_and_real_addresses() {
        let p = pool("http://127.0.0.1:9101/a,http://localhost:9101/b");
        p.lb.update().await.unwrap();
        let env = [("VLLM_BASE_URL".to_string(), "http://x:1".to_string())]
            .into_iter()
            .collect();
        let config = Config::from_map(&env).unwrap();
        let t = Duration::from_secs(1);
        let probe = Probe {
            provider: crate::providers::build(&config.providers["vllm"], &config).unwrap(),
            upstreams: Arc::new(Upstreams::new(Timeouts {
                connect: t,
                first_byte: t,
                idle: t,
            })),
            backends: p.backends.clone(),
        };
        let set = p.lb.backends().get_backend();
        let summaries: Vec<String> = set.iter().map(|b| probe.backend_summary(b)).collect();
        assert_eq!(
            summaries,
            [
                "provider=vllm backend=http://127.0.0.1:9101/a,http://localhost:9101/b \
              address=127.0.0.1:9101"
            ]
        );
    }

    #[tokio::test]
    async fn a_pool_not_loaded_yet_still_picks() {
        let p = pool("http://127.0.0.1:9101,http://127.0.0.1:9102");
        let mut got = picks(&p, 4);
        got.sort();
        assert_eq!(got, [0, 0, 1, 1]);
        assert_eq!(addresses(&p), [Value::Null, Value::Null]);
    }

    #[test]
    fn breaker_opens_cools_down_and_half_opens() {
        let b = Breaker::new("provider=x".into(), 2, Duration::from_millis(50));
        assert_eq!(b.admit(), Admission::Closed);
        b.record_failure("500");
        assert_eq!(b.admit(), Admission::Closed, "below the threshold");
        b.record_failure("500");
        assert_eq!(b.admit(), Admission::Open);
        assert!(b.retry_in() > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admission::Trial);
        assert_eq!(b.admit(), Admission::Open, "one trial at a time");
        b.record_failure("500 again");
        assert_eq!(b.admit(), Admission::Open, "a failed trial re-opens");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admission::Trial);
        b.record_success();
        assert_eq!(b.admit(), Admission::Closed);
    }
}
