//! Service discovery: which socket address a backend URL's host name stands for.
//!
//! One [`Resolver`] and its cache serve both users of DNS: the connector
//! ([`crate::upstream`]), which resolves a URL when it connects, and the health pools
//! ([`crate::health`]), whose Pingora load balancer knows each backend by the address its URL
//! resolves to ([`UrlDiscovery`]). Both therefore see the same answer while it is cached, and no
//! address is ever made up.
//!
//! This is a module of its own rather than part of `upstream.rs` because it sits below both
//! users: the pools need the resolver and Pingora's discovery trait, not the exchange.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;

use crate::config::BaseUrl;

/// How long a DNS answer is used before the name is looked up again. The pools re-run
/// discovery at this interval too, so a changed answer reaches the load balancer.
pub const DNS_TTL: Duration = Duration::from_secs(30);

/// Why a host name gave no address.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolveError {
    /// The lookup took longer than the resolver's timeout.
    Timeout(String),
    /// The name does not resolve, or has no address.
    Failed(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Timeout(m) => write!(f, "{m}: timed out"),
            ResolveError::Failed(m) => f.write_str(m),
        }
    }
}

/// Host name -> socket address, each answer cached for a TTL. Failures are not cached: the
/// next use asks again.
pub struct Resolver {
    cache: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
    ttl: Duration,
    /// Bound on one lookup.
    timeout: Duration,
}

impl Resolver {
    pub fn new(ttl: Duration, timeout: Duration) -> Self {
        Resolver {
            cache: Mutex::new(HashMap::new()),
            ttl,
            timeout,
        }
    }

    /// The address to connect to for `host:port`: an IP literal as is, a name from the cache
    /// or a fresh lookup (IPv4 preferred, the common case for API hosts).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Some((addr, at)) = self.cache.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(*addr);
            }
        }
        let lookup = tokio::time::timeout(self.timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| ResolveError::Timeout(format!("resolving {host}")))?
            .map_err(|e| ResolveError::Failed(format!("resolving {host}: {e}")))?;
        let addrs: Vec<SocketAddr> = lookup.collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| ResolveError::Failed(format!("{host} has no address")))?;
        self.cache.lock().insert(key, (addr, Instant::now()));
        Ok(addr)
    }

    /// The address for `host:port` if it needs no lookup: an IP literal or a cached answer.
    pub fn peek(&self, host: &str, port: u16) -> Option<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        let cache = self.cache.lock();
        let (addr, at) = cache.get(&(host.to_string(), port))?;
        (at.elapsed() < self.ttl).then_some(*addr)
    }

    /// [`Resolver::resolve`] for a URL's host and port.
    pub async fn resolve_url(&self, url: &BaseUrl) -> Result<SocketAddr, ResolveError> {
        self.resolve(&url.host, url.port).await
    }

    #[cfg(test)]
    fn seed(&self, host: &str, port: u16, addr: SocketAddr, at: Instant) {
        self.cache
            .lock()
            .insert((host.to_string(), port), (addr, at));
    }

    #[cfg(test)]
    fn cached(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.cache
            .lock()
            .get(&(host.to_string(), port))
            .map(|(a, _)| *a)
    }
}

/// The indices (into the pool's backend list) of the backends behind one address, in the
/// `ext` of each Pingora [`Backend`] a [`UrlDiscovery`] reports.
#[derive(Debug, Clone)]
pub struct BackendIndices(pub Arc<[usize]>);

/// Pingora service discovery for a pool of backend URLs: each URL is resolved through the
/// shared [`Resolver`] and the load balancer gets one [`Backend`] per distinct address.
///
/// Pingora's `Backend` equality, ordering and hash are its address and weight only (`ext` is
/// ignored), and a set of them is a `BTreeSet`. Two URLs on the same host and port (different
/// paths, say) resolve to the same address, so they cannot be two backends: they become one,
/// whose `ext` lists every index that shares the address and whose weight is their number, so
/// round robin gives the address the share the URLs would have had one by one; the pool then
/// rotates among the URLs behind it. A URL whose name does not resolve (yet) is left out of the
/// set (the pool still reaches it through its breaker, see `Pool::pick`) and joins when it
/// resolves on a later round.
pub struct UrlDiscovery {
    resolver: Arc<Resolver>,
    provider: String,
    urls: Vec<BaseUrl>,
    last: Mutex<Reported>,
    /// Told of each backend (its index) whose name did not resolve, every round.
    on_unresolved: Option<Unresolved>,
    /// While false, a round looks nothing up (see [`UrlDiscovery::lookups`]).
    lookups: Arc<AtomicBool>,
}

/// A callback for a backend (its index) whose name did not resolve.
type Unresolved = Box<dyn Fn(usize, &ResolveError) + Send + Sync>;

/// What the previous round reported.
#[derive(Default)]
struct Reported {
    /// Each backend's address (`None`: unresolved); empty before the first round.
    addrs: Vec<Option<SocketAddr>>,
    /// The membership handed to Pingora.
    members: BTreeMap<SocketAddr, Arc<[usize]>>,
}

impl UrlDiscovery {
    pub fn new(resolver: Arc<Resolver>, provider: String, urls: Vec<BaseUrl>) -> Self {
        UrlDiscovery {
            resolver,
            provider,
            urls,
            last: Mutex::new(Reported::default()),
            on_unresolved: None,
            lookups: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The switch for name lookups. While it is off, a round reports only what needs no lookup
    /// (IP literals and cached answers) and leaves the other names for a later round, neither
    /// resolved nor failed: a pool is loaded that way before the server runs, so a name server
    /// that is slow to answer cannot hold up the start.
    pub fn lookups(&self) -> Arc<AtomicBool> {
        self.lookups.clone()
    }

    /// Calls `f` with the index of each backend whose name does not resolve, on every round
    /// (the pools' active checks count it as a failed probe: such a backend is never probed).
    pub fn on_unresolved(
        mut self,
        f: impl Fn(usize, &ResolveError) + Send + Sync + 'static,
    ) -> Self {
        self.on_unresolved = Some(Box::new(f));
        self
    }

    /// Logs each backend's address when it is new or changed, and a name that stopped
    /// resolving (`before` is empty before the first round with lookups).
    fn log_changes(
        &self,
        before: &[Option<SocketAddr>],
        found: &[Result<SocketAddr, ResolveError>],
    ) {
        let first = before.is_empty();
        for (i, (url, r)) in self.urls.iter().zip(found).enumerate() {
            let was = before.get(i).copied().flatten();
            match r {
                Ok(a) if first || was != Some(*a) => {
                    log::info!("provider={} backend={} address={}", self.provider, url, a)
                }
                Err(e) if first || was.is_some() => log::warn!(
                    "provider={} backend={} does not resolve ({}); it stays out of the load \
                     balancer until it does",
                    self.provider,
                    url,
                    e
                ),
                _ => {}
            }
        }
    }

    /// Whether any URL needs a lookup (an IP literal never changes, so no periodic rounds).
    pub fn has_names(&self) -> bool {
        self.urls.iter().any(|u| u.host.parse::<IpAddr>().is_err())
    }

    /// Resolves every URL and works out the membership to report.
    async fn round(&self) -> BTreeMap<SocketAddr, Arc<[usize]>> {
        let lookups = self.lookups.load(Ordering::Relaxed);
        let found: Vec<Result<SocketAddr, ResolveError>> = if lookups {
            futures::future::join_all(self.urls.iter().map(|u| self.resolver.resolve_url(u))).await
        } else {
            self.urls
                .iter()
                .map(|u| {
                    self.resolver
                        .peek(&u.host, u.port)
                        .ok_or_else(|| ResolveError::Failed("not looked up yet".into()))
                })
                .collect()
        };
        let mut groups: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
        for (i, r) in found.iter().enumerate() {
            if let Ok(a) = r {
                groups.entry(*a).or_default().push(i);
            }
        }
        let mut members: BTreeMap<SocketAddr, Arc<[usize]>> =
            groups.into_iter().map(|(a, v)| (a, v.into())).collect();
        if lookups {
            if let Some(f) = &self.on_unresolved {
                for (i, r) in found.iter().enumerate() {
                    if let Err(e) = r {
                        f(i, e);
                    }
                }
            }
        }

        let mut last = self.last.lock();
        // Without lookups nothing was resolved or failed: no news to log.
        if lookups {
            self.log_changes(&last.addrs, &found);
            last.addrs = found.iter().map(|r| r.as_ref().ok().copied()).collect();
        }
        // Pingora keeps its current set (and the `ext` in it) when the new one is equal, which
        // compares addresses and weights only. Should the same addresses and weights come back
        // with other indices behind them (two names swapping addresses), that would leave stale
        // indices in place: those addresses sit this round out instead, which makes the set
        // differ; they are back, with their new indices, on the next round.
        let same_identity = members.len() == last.members.len()
            && members
                .iter()
                .zip(&last.members)
                .all(|((a, v), (b, w))| a == b && v.len() == w.len());
        if same_identity {
            members.retain(|a, v| last.members.get(a).is_some_and(|w| w == v));
        }
        last.members = members.clone();
        members
    }
}

#[async_trait]
impl ServiceDiscovery for UrlDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let set = self
            .round()
            .await
            .into_iter()
            .map(|(addr, indices)| {
                let mut b = Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                    weight: indices.len(),
                    ext: http::Extensions::new(),
                };
                b.ext.insert(BackendIndices(indices));
                b
            })
            .collect();
        Ok((set, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> BaseUrl {
        let (scheme, rest) = s.split_once("://").unwrap_or(("http", s));
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').unwrap();
        BaseUrl {
            tls: scheme == "https",
            host: host.to_string(),
            port: port.parse().unwrap(),
            path: path.to_string(),
        }
    }

    fn resolver() -> Arc<Resolver> {
        Arc::new(Resolver::new(DNS_TTL, Duration::from_secs(2)))
    }

    async fn members(d: &UrlDiscovery) -> Vec<(String, usize, Vec<usize>)> {
        let (set, _) = d.discover().await.unwrap();
        set.iter()
            .map(|b| {
                let BackendIndices(i) = b.ext.get::<BackendIndices>().unwrap().clone();
                (b.addr.to_string(), b.weight, i.to_vec())
            })
            .collect()
    }

    #[tokio::test]
    async fn answers_are_cached_for_the_ttl() {
        let r = resolver();
        let ip = r.resolve("127.0.0.1", 80).await.unwrap();
        assert_eq!(ip, "127.0.0.1:80".parse().unwrap());
        assert_eq!(r.cached("127.0.0.1", 80), None, "IP literals need no cache");

        let a = r.resolve("localhost", 8080).await.unwrap();
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(r.cached("localhost", 8080), Some(a));

        // A cached answer is used without a lookup (this name would not resolve)...
        let fake: SocketAddr = "192.0.2.7:443".parse().unwrap();
        r.seed("cached.invalid", 443, fake, Instant::now());
        assert_eq!(r.resolve("cached.invalid", 443).await, Ok(fake));
        // ...until it expires.
        r.seed("cached.invalid", 443, fake, Instant::now() - DNS_TTL);
        assert!(r.resolve("cached.invalid", 443).await.is_err());
    }

    #[tokio::test]
    async fn a_pool_is_known_by_its_real_addresses() {
        let d = UrlDiscovery::new(
            resolver(),
            "p".into(),
            vec![
                url("http://127.0.0.1:9101/v1"),
                url("http://localhost:9102/v1"),
            ],
        );
        assert!(d.has_names());
        assert_eq!(
            members(&d).await,
            vec![
                ("127.0.0.1:9101".to_string(), 1, vec![0]),
                ("127.0.0.1:9102".to_string(), 1, vec![1]),
            ]
        );
    }

    #[tokio::test]
    async fn urls_sharing_an_address_are_one_backend_and_names_that_fail_are_left_out() {
        let d = UrlDiscovery::new(
            resolver(),
            "p".into(),
            vec![
                url("http://127.0.0.1:9101/a"),
                url("http://no-such-host.invalid:9101/v1"),
                url("http://127.0.0.1:9101/b"),
            ],
        );
        assert_eq!(
            members(&d).await,
            vec![("127.0.0.1:9101".to_string(), 2, vec![0, 2])]
        );
    }

    #[tokio::test]
    async fn without_lookups_only_literals_and_cached_answers_count() {
        let r = resolver();
        let failed = Arc::new(AtomicBool::new(false));
        let told = failed.clone();
        let d = UrlDiscovery::new(
            r.clone(),
            "p".into(),
            vec![
                url("http://127.0.0.1:9101"),
                url("http://cached.invalid:9102"),
                url("http://unknown.invalid:9103"),
            ],
        )
        .on_unresolved(move |_, _| told.store(true, Ordering::Relaxed));
        r.seed(
            "cached.invalid",
            9102,
            "192.0.2.9:9102".parse().unwrap(),
            Instant::now(),
        );
        d.lookups().store(false, Ordering::Relaxed);
        assert_eq!(
            members(&d).await,
            vec![
                ("127.0.0.1:9101".to_string(), 1, vec![0]),
                ("192.0.2.9:9102".to_string(), 1, vec![1]),
            ]
        );
        assert!(
            !failed.load(Ordering::Relaxed),
            "a name not looked up has not failed"
        );
        d.lookups().store(true, Ordering::Relaxed);
        assert_eq!(members(&d).await.len(), 2);
        assert!(failed.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn swapped_indices_are_never_left_stale() {
        let r = resolver();
        let d = UrlDiscovery::new(
            r.clone(),
            "p".into(),
            vec![url("http://one.invalid:1"), url("http://two.invalid:1")],
        );
        let x: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let y: SocketAddr = "192.0.2.2:1".parse().unwrap();
        r.seed("one.invalid", 1, x, Instant::now());
        r.seed("two.invalid", 1, y, Instant::now());
        let first = members(&d).await;
        assert_eq!(
            first,
            vec![
                ("192.0.2.1:1".to_string(), 1, vec![0]),
                ("192.0.2.2:1".to_string(), 1, vec![1]),
            ]
        );
        assert_eq!(
            members(&d).await,
            first,
            "an unchanged answer, an unchanged set"
        );
        // The names swap addresses: the same set by Pingora's equality, other indices.
        r.seed("one.invalid", 1, y, Instant::now());
        r.seed("two.invalid", 1, x, Instant::now());
        assert!(
            members(&d).await.is_empty(),
            "the swapped addresses sit out"
        );
        assert_eq!(
            members(&d).await,
            vec![
                ("192.0.2.1:1".to_string(), 1, vec![1]),
                ("192.0.2.2:1".to_string(), 1, vec![0]),
            ]
        );
    }
}
