//! A circuit breaker for a dependency every request may call (Redis): once a call has failed or
//! timed out, requests stop waiting on it and get the documented degradation at once, while one
//! request at a time probes it with a short timeout until it answers again.
//!
//! Closed (healthy): calls run with the caller's own timeout (at most a second), so the first
//! requests to meet a hung Redis find it within a second. Open: calls are skipped without
//! waiting, except that every [`PROBE_EVERY`] one caller is let through with [`PROBE_TIMEOUT`];
//! its success closes the breaker. So, once open, no request waits longer than
//! [`PROBE_TIMEOUT`] on the dependency. The state changes are logged by the caller (it knows
//! what degrades) through the booleans [`Breaker::failed`] and [`Breaker::succeeded`] return.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

/// How long one probe of an open breaker may wait.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// How often an open breaker lets one call through as a probe.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// What a call may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call, with the caller's timeout.
    Call,
    /// Open, and this caller is the probe: call with [`PROBE_TIMEOUT`].
    Probe,
    /// Open: skip the call.
    Skip,
}

impl Permit {
    /// The timeout for a permitted call (`normal` when closed). `None` for [`Permit::Skip`].
    pub fn timeout(self, normal: Duration) -> Option<Duration> {
        match self {
            Permit::Call => Some(normal),
            Permit::Probe => Some(normal.min(PROBE_TIMEOUT)),
            Permit::Skip => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
    /// When (ms since [`EPOCH`]) the next probe may start.
    next_probe: AtomicU64,
}

impl Breaker {
    pub fn new() -> Self {
        Breaker::default()
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Whether (and how) to call the dependency now.
    pub fn permit(&self) -> Permit {
        if !self.is_open() {
            return Permit::Call;
        }
        let now = now_ms();
        let next = self.next_probe.load(Ordering::Acquire);
        if now >= next
            && self
                .next_probe
                .compare_exchange(
                    next,
                    now + PROBE_EVERY.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            Permit::Probe
        } else {
            Permit::Skip
        }
    }

    /// A call failed or timed out. True when this opened the breaker (log it once).
    pub fn failed(&self) -> bool {
        self.next_probe
            .store(now_ms() + PROBE_EVERY.as_millis() as u64, Ordering::Release);
        !self.open.swap(true, Ordering::AcqRel)
    }

    /// A call succeeded. True when this closed the breaker (log it once).
    pub fn succeeded(&self) -> bool {
        self.is_open() && self.open.swap(false, Ordering::AcqRel)
    }

    /// Runs `call` under the breaker: `None` when skipped, failed or timed out (`Err` holds
    /// why, for the caller's log line, and whether this call opened the breaker).
    pub async fn run<T, E: std::fmt::Display>(
        &self,
        normal: Duration,
        call: impl Future<Output = Result<T, E>>,
    ) -> Outcome<T> {
        let Some(timeout) = self.permit().timeout(normal) else {
            return Outcome::Skipped;
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(v)) => Outcome::Done {
                value: v,
                recovered: self.succeeded(),
            },
            Ok(Err(e)) => Outcome::Failed {
                why: e.to_string(),
                opened: self.failed(),
            },
            Err(_) => Outcome::Failed {
                why: format!("no answer within {timeout:?}"),
                opened: self.failed(),
            },
        }
    }
}

/// What [`Breaker::run`] did.
#[derive(Debug)]
pub enum Outcome<T> {
    Done { value: T, recovered: bool },
    Failed { why: String, opened: bool },
    Skipped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_on_failure_skips_then_probes_and_closes() {
        let b = Breaker::new();
        assert_eq!(b.permit(), Permit::Call);
        let hung = b
            .run(Duration::from_millis(50), async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(())
            })
            .await;
        assert!(matches!(hung, Outcome::Failed { opened: true, .. }));
        // Open: callers skip without waiting until the probe is due.
        let t = Instant::now();
        let skipped = b
            .run(Duration::from_secs(1), async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(())
            })
            .await;
        assert!(matches!(skipped, Outcome::Skipped));
        assert!(t.elapsed() < Duration::from_millis(50));
        // The probe waits at most PROBE_TIMEOUT, and only one caller gets it.
        tokio::time::sleep(PROBE_EVERY).await;
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Skip);
        tokio::time::sleep(PROBE_EVERY).await;
        let t = Instant::now();
        let probe = b
            .run(Duration::from_secs(1), async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(())
            })
            .await;
        assert!(matches!(probe, Outcome::Failed { opened: false, .. }));
        assert!(t.elapsed() < PROBE_TIMEOUT + Duration::from_millis(100));
        // A successful probe closes it.
        tokio::time::sleep(PROBE_EVERY).await;
        let ok = b
            .run(Duration::from_secs(1), async { Ok::<_, String>(7) })
            .await;
        assert!(matches!(
            ok,
            Outcome::Done {
                value: 7,
                recovered: true
            }
        ));
        assert_eq!(b.permit(), Permit::Call);
    }
}
