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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr;
use serde_json::{json, Value};

use crate::config::BaseUrl;
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
}

/// Pingora's load balancer keys backends by socket address. Ours are URLs whose host names are
/// resolved at connect time, so the address here is only an identity (the backend's index);
/// the index is also kept in the backend's extensions.
fn identity(i: usize) -> SocketAddr {
    SocketAddr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], (i + 1) as u16)))
}

#[derive(Clone, Copy)]
struct BackendIndex(usize);

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
        let set: std::collections::BTreeSet<Backend> = (0..backends.len())
            .map(|i| {
                let mut b = Backend {
                    addr: identity(i),
                    weight: 1,
                    ext: http::Extensions::new(),
                };
                b.ext.insert(BackendIndex(i));
                b
            })
            .collect();
        let discovery = pingora::lb::discovery::Static::new(set);
        let mut lb_backends = Backends::new(discovery);
        // Without an interval no probe is installed at all (Pingora would still run it once).
        if check_interval.is_some() {
            lb_backends.set_health_check(Box::new(Probe {
                provider: provider.clone(),
                upstreams,
                backends: backends.clone(),
            }));
        }
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(lb_backends);
        lb.health_check_frequency = check_interval;
        lb.parallel_health_check = true;
        Pool {
            provider: cfg.name.clone(),
            backends,
            lb: Arc::new(lb),
            latency_us: AtomicU64::new(0),
        }
    }

    /// Loads the static backend list into the load balancer (needed before the first select;
    /// the background service also does it).
    pub async fn load(&self) {
        let _ = self.lb.update().await;
    }

    /// Picks an available backend not in `tried`, round-robin, honouring active checks and
    /// breakers. A half-open backend's trial slot is taken by the pick.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, Admission)> {
        let admitted = Mutex::new(None);
        let n = self.backends.len().max(1);
        self.lb.select_with(b"", n * 2, |b, healthy| {
            let Some(BackendIndex(i)) = b.ext.get::<BackendIndex>().copied() else {
                return false;
            };
            if tried.contains(&i) {
                return false;
            }
            let Some(bh) = self.backends.get(i) else {
                return false;
            };
            // A breaker past its cooldown may try even if the last active check failed: the
            // trial decides.
            if !healthy && !bh.breaker.is_available() {
                return false;
            }
            match bh.breaker.admit() {
                Admission::Open => false,
                a => {
                    *admitted.lock() = Some((i, a));
                    true
                }
            }
        });
        admitted.into_inner()
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
            .map(|b| {
                let mut v = b.breaker.status();
                v["url"] = json!(b.url.to_string());
                v
            })
            .collect();
        json!({
            "name": self.provider,
            "healthy": self.is_available(),
            "latency_ms": self.latency().map(|d| d.as_secs_f64() * 1000.0),
            "backends": backends,
        })
    }
}

/// Runs a pool's load balancer in the background: backend list and active health checks.
pub struct PoolService(pub Arc<Pool>);

#[async_trait]
impl pingora::services::background::BackgroundService for PoolService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.lb.start(shutdown).await
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

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let fail =
            |why: String| pingora::Error::explain(pingora::ErrorType::Custom("probe_failed"), why);
        let Some(BackendIndex(i)) = target.ext.get::<BackendIndex>().copied() else {
            return Err(fail("unknown backend".into()));
        };
        let Some(bh) = self.backends.get(i) else {
            return Err(fail("unknown backend".into()));
        };
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
                // An active failure opens the breaker at once, whatever the threshold.
                for _ in 0..bh.breaker.threshold {
                    bh.breaker.record_failure(&why);
                }
                Err(fail(why))
            }
        }
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
