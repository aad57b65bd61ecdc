//! One way to reach Redis for every feature that keeps something there (the cache, rate limits,
//! state): a single node, a Redis Cluster, or the master a set of Sentinels names; plain or TLS
//! (`rediss://`, system roots or `GATEWAY_REDIS_CA_FILE`, optional client certificate). All of
//! it is redis-rs: `ConnectionManager` for one node, `cluster_async` (MOVED/ASK, slot map
//! refresh) for a cluster, `sentinel` for the master's address.
//!
//! A feature holds a [`RedisLink`] and asks it for a [`RedisConn`], a cloneable handle that runs
//! commands, pipelines and scripts like any redis-rs async connection
//! (`cmd.query_async(&mut c)`, `script.invoke_async(&mut c)`). The link makes the connection on
//! first use, bounded in time and at most one attempt at a time, and waits
//! [`RECONNECT_BACKOFF`] after a failed attempt. The feature reports each call's outcome
//! ([`RedisLink::succeeded`], [`RedisLink::failed`]), which sets `gateway_redis_up{use}` and, for
//! Sentinel, drops the connection so the next call asks the Sentinels for the (possibly new)
//! master.
//!
//! Multi-key scripts must keep their keys in one hash slot (a `{...}` hash tag), or a cluster
//! refuses them with CROSSSLOT: today only the rate limiter's script has two keys, both tagged.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, TlsMode, Value};

use crate::config::redis::{sentinel_data_auth, RedisConfig, Topology};

/// After a failed connection attempt, calls fail at once this long before the next attempt.
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// A connection to Redis, whatever its topology: clone it freely (all share one multiplexed
/// connection, or the cluster's connections).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
            RedisConn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
            RedisConn::Sentinel(c) => c.get_db(),
        }
    }
}

enum Kind {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// How one feature reaches Redis.
pub struct RedisLink {
    kind: Kind,
    /// `host:port` of every node, never a password.
    addrs: String,
    /// The feature, for logs and the `use` label of `gateway_redis_up`.
    user: &'static str,
    /// Longest a connection attempt or a command may take.
    timeout: Duration,
    conn: Mutex<Option<RedisConn>>,
    /// Serialises connection attempts so a burst of first requests makes one.
    connecting: tokio::sync::Mutex<()>,
    next_try: Mutex<Instant>,
    /// Node URLs, scrubbed out of error texts.
    secrets: Vec<crate::config::Secret>,
}

/// The `user` of [`check_tls`]'s throwaway link (no metric).
const CHECK: &str = "start-up check";

fn certificates(c: &RedisConfig) -> Option<redis::TlsCertificates> {
    if c.ca.is_none() && c.client_cert.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: c
            .client_cert
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.pem.clone(),
                client_key: key.pem.clone(),
            }),
        root_cert: c.ca.as_ref().map(|ca| ca.pem.clone()),
    })
}

/// Never the URL: redis-rs errors may quote it.
fn scrub(e: &redis::RedisError, c: &RedisConfig) -> String {
    let mut s = e.to_string();
    for n in c.nodes.iter().chain(std::iter::once(&c.url)) {
        s = s.replace(n.expose(), "***");
    }
    s
}

impl RedisLink {
    /// Builds the client (no connection yet). Fails only on a setting redis-rs refuses (the
    /// configuration checked the URL, so this names the variable for the log).
    pub fn new(c: &RedisConfig, user: &'static str, timeout: Duration) -> Result<Self, String> {
        let certs = certificates(c);
        let kind = match &c.topology {
            Topology::Single => {
                let url = c.nodes.first().map(|n| n.expose()).unwrap_or_default();
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url, certs),
                    None => redis::Client::open(url),
                }
                .map_err(|e| scrub(&e, c))?;
                Kind::Single(client)
            }
            Topology::Cluster => {
                let mut b = redis::cluster::ClusterClient::builder(
                    c.nodes.iter().map(|n| n.expose().to_string()),
                )
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Each call is bounded by the feature's breaker: a retry or two to follow a
                // MOVED/ASK or a fresh slot map, never a long backoff schedule.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100);
                if let Some(certs) = certs {
                    b = b.certs(certs);
                }
                Kind::Cluster(b.build().map_err(|e| scrub(&e, c))?)
            }
            Topology::Sentinel { master } => {
                let mut sentinels = Vec::new();
                for n in &c.nodes {
                    let info = redis::Client::open(n.expose()).map_err(|e| scrub(&e, c))?;
                    sentinels.push(info.get_connection_info().addr().clone());
                }
                let mut b =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
                        .map_err(|e| scrub(&e, c))?;
                let (user, pass, db) = sentinel_data_auth(c);
                if let Some(u) = user {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = pass {
                    b = b.set_client_to_redis_password(p);
                }
                if let Some(db) = db {
                    b = b.set_client_to_redis_db(db);
                }
                if let Some(p) = &c.sentinel_password {
                    b = b.set_client_to_sentinel_password(p.expose());
                }
                if c.tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(certs) = certs {
                        b = b
                            .set_client_to_redis_certificates(certs.clone())
                            .set_client_to_sentinel_certificates(certs);
                    }
                }
                Kind::Sentinel(tokio::sync::Mutex::new(
                    b.build().map_err(|e| scrub(&e, c))?,
                ))
            }
        };
        if user != CHECK {
            crate::metrics::redis_state(user, false);
        }
        Ok(RedisLink {
            kind,
            addrs: c.addrs.clone(),
            user,
            timeout,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_try: Mutex::new(Instant::now()),
            secrets: c.nodes.iter().chain([&c.url]).cloned().collect(),
        })
    }

    /// `host:port` of every node (for logs).
    pub fn addrs(&self) -> &str {
        &self.addrs
    }

    /// The shared connection, made on first use (bounded by the link's timeout). `Err` says
    /// why (never the URL) while Redis is unreachable.
    pub async fn conn(&self) -> Result<RedisConn, String> {
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        let not_yet = || "not connected (retrying shortly)".to_string();
        if Instant::now() < *self.next_try.lock() {
            return Err(not_yet());
        }
        let _one = tokio::time::timeout(self.timeout, self.connecting.lock())
            .await
            .map_err(|_| not_yet())?;
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        if Instant::now() < *self.next_try.lock() {
            return Err(not_yet());
        }
        match tokio::time::timeout(self.timeout * 2, self.connect()).await {
            Ok(Ok(c)) => {
                log::info!("{}: connected to Redis at {}", self.user, self.addrs);
                *self.conn.lock() = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                *self.next_try.lock() = Instant::now() + RECONNECT_BACKOFF;
                let mut why = e.to_string();
                for s in &self.secrets {
                    why = why.replace(s.expose(), "***");
                }
                Err(format!("connect: {why}"))
            }
            Err(_) => {
                *self.next_try.lock() = Instant::now() + RECONNECT_BACKOFF;
                Err(format!("connect: no answer within {:?}", self.timeout * 2))
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<RedisConn> {
        match &self.kind {
            Kind::Single(client) => {
                // No retries inside the manager: a request must not wait through a backoff
                // schedule; it reconnects by itself after a failure.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                Ok(RedisConn::Single(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                ))
            }
            Kind::Cluster(client) => Ok(RedisConn::Cluster(client.get_async_connection().await?)),
            Kind::Sentinel(sentinel) => {
                let master = sentinel.lock().await.async_get_client().await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                Ok(RedisConn::Sentinel(
                    master
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
        }
    }

    /// A call succeeded.
    pub fn succeeded(&self) {
        if self.user != CHECK {
            crate::metrics::redis_state(self.user, true);
        }
    }

    /// A call failed or timed out. With Sentinel the connection is dropped, so the next call
    /// asks the Sentinels where the master is now (after a failover, the old master is gone or
    /// a read-only replica). One node and Cluster reconnect by themselves (the cluster follows
    /// MOVED/ASK and refreshes its slot map).
    pub fn failed(&self) {
        if self.user != CHECK {
            crate::metrics::redis_state(self.user, false);
        }
        if matches!(self.kind, Kind::Sentinel(_)) {
            *self.conn.lock() = None;
        }
    }
}

/// Start-up check for a TLS Redis: one connection attempt within `timeout`. A certificate that
/// fails verification is a configuration error naming the variable to fix; an unreachable Redis
/// is not (the features degrade and reconnect later).
pub async fn check_tls(c: &RedisConfig, timeout: Duration) -> Result<(), String> {
    if !c.tls {
        return Ok(());
    }
    let link = RedisLink::new(c, CHECK, timeout)?;
    let attempt = async {
        let mut conn = link.conn().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| scrub(&e, c))
    };
    let why = match tokio::time::timeout(timeout * 3, attempt).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(why)) => why,
        Err(_) => return Ok(()),
    };
    let lower = why.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        let var = if lower.contains("invalid peer certificate") {
            c.ca.as_ref().map_or(
                format!(
                    "{} (verified against the system's roots; set {} to trust a private CA)",
                    crate::config::vars::REDIS_URL,
                    crate::config::vars::REDIS_CA_FILE
                ),
                |ca| format!("{}={}", ca.var, ca.path.display()),
            )
        } else {
            // The server refused ours, or wants one.
            c.client_cert.as_ref().map_or(
                format!(
                    "{} (not set; the server asks for a client certificate)",
                    crate::config::vars::REDIS_CLIENT_CERT_FILE
                ),
                |(cert, _)| format!("{}={}", cert.var, cert.path.display()),
            )
        };
        return Err(format!(
            "{var}: the TLS handshake with Redis at {} failed: {why}",
            c.addrs
        ));
    }
    log::warn!(
        "Redis at {} is not reachable at start-up ({why}); the features that use it degrade \
         until it is",
        c.addrs
    );
    Ok(())
}

/// [`check_tls`] for the Redis the configuration uses, if any feature uses it, on a
/// throwaway runtime (before Pingora starts its own).
pub fn check_at_startup(config: &crate::config::Config) -> Result<(), String> {
    use crate::config::{cache, ratelimit, state};
    let used = config.cache.backend == cache::BackendKind::Redis
        || config.rate_limit.backend == ratelimit::BackendKind::Redis
        || config.state.backend == state::StateBackend::Redis;
    let Some(c) = config.redis.as_ref().filter(|c| used && c.tls) else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the Redis check: {e}"))?;
    rt.block_on(check_tls(c, Duration::from_secs(2)))
}
