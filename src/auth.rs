//! Gateway API keys: who may call the `/v1` API, under which name, with which limits.
//!
//! Keys come from `GATEWAY_API_KEYS` (comma-separated) and/or `GATEWAY_API_KEYS_FILE` (one per
//! line). An entry is
//!
//! ```text
//! [name=]key[:rpm=N|off][:burst=N][:tpm=N|off]
//! team-a=sk-gw-aaa
//! team-b=sk-gw-bbb:rpm=60:burst=5:tpm=20000
//! ```
//!
//! The name is what logs and metrics show; the key itself is kept only as its SHA-256 digest.
//! The keys file is re-read on `SIGHUP` and when its content changes (polled every
//! `GATEWAY_API_KEYS_RELOAD_INTERVAL`); a file that no longer parses leaves the keys as they
//! were. Try it:
//!
//! ```sh
//! GATEWAY_API_KEYS=team-a=sk-gw-aaa cargo run
//! curl localhost:8080/v1/models -H 'Authorization: Bearer sk-gw-aaa'
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::auth::check_unique;
pub use crate::config::auth::{load_file, parse_file, AuthConfig, Budget, KeySpec, Period, Policy};
use crate::config::vars;
use crate::error::GatewayError;
use crate::ratelimit::{Limits, RateLimitConfig};

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A key that authenticated: its name and effective limits.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    pub name: Arc<str>,
    pub limits: Limits,
    /// Budget and allow-list (`None`: neither, the key costs nothing extra per request).
    pub policy: Option<Arc<Policy>>,
    /// Unix seconds after which the key is refused (admin-made keys only).
    pub expires_at: Option<u64>,
    digest: [u8; 32],
}

impl KeyEntry {
    /// An entry for a key known by its SHA-256 digest (admin-made keys: the secret is never
    /// kept).
    pub fn from_digest(
        name: &str,
        digest: [u8; 32],
        limits: Limits,
        policy: Policy,
        expires_at: Option<u64>,
    ) -> KeyEntry {
        KeyEntry {
            name: Arc::from(name),
            limits,
            policy: (!policy.is_empty()).then(|| Arc::new(policy)),
            expires_at,
            digest,
        }
    }
}

/// The SHA-256 digest a key is kept as.
pub fn key_digest(key: &str) -> [u8; 32] {
    digest(key)
}

/// The current keys, replaced whole on reload.
#[derive(Default)]
struct KeySet {
    by_digest: HashMap<[u8; 32], Arc<KeyEntry>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Invalid,
}

impl Refusal {
    pub fn error(self) -> GatewayError {
        let msg = match self {
            Refusal::Missing => {
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            }
            Refusal::Malformed => {
                "Malformed Authorization header: expected 'Authorization: Bearer <key>'."
            }
            Refusal::Invalid => "Incorrect API key provided.",
        };
        GatewayError::new(401, "invalid_request_error", Some("invalid_api_key"), msg)
            .with_label("unauthorized")
    }
}

/// The keys in force, and how to reload them.
pub struct Auth {
    config: AuthConfig,
    defaults: RateLimitConfig,
    set: RwLock<Arc<KeySet>>,
    /// Admin-made keys (`tenants` keeps them in step with the state backend).
    dynamic: RwLock<Arc<KeySet>>,
}

impl Auth {
    pub fn new(config: AuthConfig, defaults: RateLimitConfig) -> Self {
        let auth = Auth {
            config,
            defaults,
            set: RwLock::new(Arc::new(KeySet::default())),
            dynamic: RwLock::new(Arc::new(KeySet::default())),
        };
        let keys: Vec<KeySpec> = auth
            .config
            .env_keys
            .iter()
            .chain(&auth.config.file_keys)
            .cloned()
            .collect();
        *auth.set.write() = Arc::new(auth.build(&keys));
        register_secrets(&keys);
        auth
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled()
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    fn build(&self, keys: &[KeySpec]) -> KeySet {
        let by_digest = keys
            .iter()
            .map(|k| {
                let d = digest(k.key.expose());
                let entry = KeyEntry {
                    name: Arc::from(k.name.as_str()),
                    limits: k.overrides.apply(&self.defaults.defaults),
                    policy: (!k.policy.is_empty()).then(|| Arc::new(k.policy.clone())),
                    expires_at: None,
                    digest: d,
                };
                (d, Arc::new(entry))
            })
            .collect();
        KeySet { by_digest }
    }

    /// Checks an `Authorization` header value. `Ok(None)`: auth is off.
    ///
    /// The presented key is hashed and looked up by digest, then the digests are compared with
    /// `subtle`: the time taken depends on the SHA-256 of the guess, which tells an attacker
    /// nothing about any configured key, and stays flat however many keys are configured.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Option<Arc<KeyEntry>>, Refusal> {
        if !self.enabled() {
            return Ok(None);
        }
        let key = bearer(header.ok_or(Refusal::Missing)?)?;
        self.check(key)
    }

    /// Checks a key given bare (an `x-api-key` header's value), as [`Auth::authenticate`] does
    /// a bearer token.
    pub fn authenticate_key(&self, key: &[u8]) -> Result<Option<Arc<KeyEntry>>, Refusal> {
        if !self.enabled() {
            return Ok(None);
        }
        let key = std::str::from_utf8(key)
            .map_err(|_| Refusal::Malformed)?
            .trim();
        if key.is_empty() {
            return Err(Refusal::Missing);
        }
        if key.contains(char::is_whitespace) {
            return Err(Refusal::Malformed);
        }
        self.check(key)
    }

    fn check(&self, key: &str) -> Result<Option<Arc<KeyEntry>>, Refusal> {
        let d = digest(key);
        let set = self.set.read().clone();
        match set.by_digest.get(&d) {
            Some(e) if bool::from(e.digest.ct_eq(&d)) => Ok(Some(e.clone())),
            _ => {
                let dynamic = self.dynamic.read().clone();
                match dynamic.by_digest.get(&d) {
                    Some(e) if bool::from(e.digest.ct_eq(&d)) => {
                        if e.expires_at.is_some_and(|t| crate::api::unix_now() >= t) {
                            return Err(Refusal::Invalid);
                        }
                        Ok(Some(e.clone()))
                    }
                    _ => Err(Refusal::Invalid),
                }
            }
        }
    }

    /// Replaces the admin-made keys in force (a name also configured in the environment or
    /// the keys file is left out: configuration wins).
    pub fn set_dynamic(&self, entries: Vec<KeyEntry>) {
        let configured: HashSet<Arc<str>> = self
            .set
            .read()
            .by_digest
            .values()
            .map(|e| e.name.clone())
            .collect();
        let by_digest = entries
            .into_iter()
            .filter(|e| !configured.contains(&e.name))
            .map(|e| (e.digest, Arc::new(e)))
            .collect();
        *self.dynamic.write() = Arc::new(KeySet { by_digest });
    }

    /// The keys from the environment and the keys file (configuration, read-only for the
    /// admin API).
    pub fn configured(&self) -> Vec<Arc<KeyEntry>> {
        let mut v: Vec<Arc<KeyEntry>> = self.set.read().by_digest.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Defaults an admin-made key's limits start from.
    pub fn default_limits(&self) -> Limits {
        self.defaults.defaults
    }

    pub fn key_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .set
            .read()
            .by_digest
            .values()
            .map(|e| e.name.to_string())
            .collect();
        v.sort();
        v
    }

    /// Re-reads the keys file; on error the keys in force stay as they are.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let Some(path) = &self.config.file else {
            return Err("no GATEWAY_API_KEYS_FILE configured".into());
        };
        let file_keys = load_file(path)?;
        let all: Vec<KeySpec> = self
            .config
            .env_keys
            .iter()
            .chain(&file_keys)
            .cloned()
            .collect();
        check_unique(all.iter())?;
        let new = self.build(&all);
        register_secrets(&all);
        let mut guard = self.set.write();
        let old_names: HashSet<Arc<str>> =
            guard.by_digest.values().map(|e| e.name.clone()).collect();
        let new_names: HashSet<Arc<str>> = new.by_digest.values().map(|e| e.name.clone()).collect();
        let changed = guard.by_digest.len() != new.by_digest.len()
            || new
                .by_digest
                .iter()
                .any(|(d, e)| guard.by_digest.get(d).map(|o| o.as_ref()) != Some(e.as_ref()));
        let mut report = ReloadReport {
            keys: new.by_digest.len(),
            added: new_names
                .difference(&old_names)
                .map(|n| n.to_string())
                .collect(),
            removed: old_names
                .difference(&new_names)
                .map(|n| n.to_string())
                .collect(),
            changed,
        };
        report.added.sort();
        report.removed.sort();
        *guard = Arc::new(new);
        Ok(report)
    }
}

/// Gateway keys are never echoed by an upstream (they are not sent there), but a client may
/// put one in a prompt that an upstream quotes in an error: redacted too.
fn register_secrets(keys: &[KeySpec]) {
    crate::redact::set_group("keys", keys.iter().map(|k| k.key.expose().to_string()));
}

/// What a reload changed (names only).
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadReport {
    pub keys: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Any key, name or limit differs.
    pub changed: bool,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} key(s)", self.keys)?;
        if !self.added.is_empty() {
            write!(f, ", added [{}]", self.added.join(", "))?;
        }
        if !self.removed.is_empty() {
            write!(f, ", removed [{}]", self.removed.join(", "))?;
        }
        Ok(())
    }
}

/// The key in `Bearer <key>` (scheme case-insensitive, as RFC 9110 says).
fn bearer(value: &[u8]) -> Result<&str, Refusal> {
    let v = std::str::from_utf8(value)
        .map_err(|_| Refusal::Malformed)?
        .trim();
    let (scheme, rest) = v
        .split_once(' ')
        .ok_or(if v.eq_ignore_ascii_case("bearer") {
            Refusal::Missing
        } else {
            Refusal::Malformed
        })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Malformed);
    }
    let key = rest.trim();
    if key.is_empty() {
        return Err(Refusal::Missing);
    }
    if key.contains(char::is_whitespace) {
        return Err(Refusal::Malformed);
    }
    Ok(key)
}

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> Self {
        r.error()
    }
}

/// Name of the shared bucket when auth is off (rate limits still apply to everyone together).
pub const ANONYMOUS: &str = "anonymous";

/// Reloads the keys file on `SIGHUP` and whenever its content changes.
pub struct KeysWatcher(pub Arc<Auth>);

impl KeysWatcher {
    fn apply(&self, why: &str) {
        match self.0.reload() {
            Ok(r) if r.changed => log::info!("api keys reloaded ({why}): {r}"),
            Ok(r) => log::info!("api keys reloaded ({why}): unchanged, {r}"),
            Err(e) => {
                log::error!("api keys NOT reloaded ({why}), the previous keys stay in force: {e}")
            }
        }
    }
}

/// The file's content digest; `None` when it cannot be read.
fn fingerprint(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

#[async_trait]
impl pingora::services::background::BackgroundService for KeysWatcher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        // Listening for SIGHUP even without a keys file: `systemctl reload` (or a stray HUP)
        // must never kill the gateway.
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!(
                    "api keys: cannot listen for SIGHUP ({e}); reloading on file change only"
                );
                None
            }
        };
        let Some(path) = self.0.config.file.clone() else {
            if let Some(h) = hup.as_mut() {
                log::info!("api keys: no keys file; SIGHUP has nothing to reload");
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = h.recv() => log::info!("SIGHUP: no GATEWAY_API_KEYS_FILE, nothing to reload"),
                    }
                }
            }
            return;
        };
        let interval = self.0.config.reload_interval;
        // Polling the content (not inotify) also sees Kubernetes ConfigMap symlink swaps and
        // files edited in place on any filesystem; reading a keys file is cheap.
        let mut last = fingerprint(&path);
        log::info!(
            "api keys: watching {} (SIGHUP{})",
            path.display(),
            interval
                .map(|d| format!(", every {d:?}"))
                .unwrap_or_default()
        );
        loop {
            let tick = async {
                match interval {
                    Some(d) => tokio::time::sleep(d).await,
                    None => futures::future::pending::<()>().await,
                }
            };
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangup => {
                    last = fingerprint(&path);
                    self.apply("SIGHUP");
                }
                _ = tick => {
                    let now = fingerprint(&path);
                    if now != last {
                        last = now;
                        self.apply("file changed");
                    }
                }
            }
        }
    }
}

/// Start-up lines: which keys (names only), or a loud warning that anyone may call.
pub fn log_startup(auth: &Auth, limits: &RateLimitConfig, listen: &str) {
    if auth.enabled() {
        log::info!("api keys: {}", auth.config().describe());
    } else {
        let exposed = listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        let msg = format!(
            "AUTH IS OFF: neither {} nor {} is set, so anyone who can reach http://{listen} can \
             use the gateway and the provider keys behind it",
            vars::API_KEYS,
            vars::API_KEYS_FILE
        );
        if exposed {
            log::error!("{msg}. {listen} is not a loopback address: set gateway keys now.");
        } else {
            log::warn!("{msg}.");
        }
    }
    log::info!("rate limits: {}", limits.describe());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimitConfig;

    fn auth(env: &str) -> Auth {
        let keys = crate::config::auth::parse_env_keys(env).unwrap();
        let cfg = AuthConfig {
            env_keys: keys,
            ..AuthConfig::default()
        };
        Auth::new(cfg, RateLimitConfig::default())
    }

    #[test]
    fn bearer_header() {
        let a = auth("team-a=sk-aaa,team-b=sk-bbb");
        let name = |h: &[u8]| {
            a.authenticate(Some(h))
                .map(|e| e.map(|e| e.name.to_string()))
        };
        assert_eq!(name(b"Bearer sk-aaa"), Ok(Some("team-a".into())));
        assert_eq!(name(b"bearer   sk-bbb "), Ok(Some("team-b".into())));
        assert_eq!(name(b"Bearer sk-aa"), Err(Refusal::Invalid));
        assert_eq!(name(b"Bearer sk-aaaa"), Err(Refusal::Invalid));
        assert_eq!(name(b"Basic c2stYWFhOg=="), Err(Refusal::Malformed));
        assert_eq!(name(b"sk-aaa"), Err(Refusal::Malformed));
        assert_eq!(name(b"Bearer a b"), Err(Refusal::Malformed));
        assert_eq!(name(b"Bearer \xff"), Err(Refusal::Malformed));
        assert_eq!(name(b"Bearer "), Err(Refusal::Missing));
        assert_eq!(name(b"Bearer"), Err(Refusal::Missing));
        assert_eq!(a.authenticate(None), Err(Refusal::Missing));
        let off = Auth::new(AuthConfig::default(), RateLimitConfig::default());
        assert_eq!(off.authenticate(None), Ok(None));
        assert_eq!(
            a.authenticate_key(b"sk-bbb")
                .map(|e| e.map(|e| e.name.to_string())),
            Ok(Some("team-b".into()))
        );
        assert_eq!(a.authenticate_key(b"sk-bb"), Err(Refusal::Invalid));
        assert_eq!(a.authenticate_key(b" "), Err(Refusal::Missing));
        assert_eq!(off.authenticate_key(b"x"), Ok(None));
        let v: serde_json::Value =
            serde_json::from_slice(&Refusal::Invalid.error().body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn reload_adds_removes_and_keeps_old_keys_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "team-a=sk-a\n").unwrap();
        let cfg = AuthConfig {
            file: Some(path.clone()),
            file_keys: load_file(&path).unwrap(),
            ..AuthConfig::default()
        };
        let a = Auth::new(cfg, RateLimitConfig::default());
        assert!(a.authenticate(Some(b"Bearer sk-a")).is_ok());
        std::fs::write(&path, "team-b=sk-b\n").unwrap();
        let r = a.reload().unwrap();
        assert_eq!(
            (r.added, r.removed),
            (vec!["team-b".to_string()], vec!["team-a".to_string()])
        );
        assert_eq!(a.authenticate(Some(b"Bearer sk-a")), Err(Refusal::Invalid));
        assert!(a.authenticate(Some(b"Bearer sk-b")).is_ok());
        std::fs::write(&path, "team-c=sk-c:rpm=zero\n").unwrap();
        assert!(a.reload().is_err());
        assert!(a.authenticate(Some(b"Bearer sk-b")).is_ok());
        // An emptied file locks everyone out; it does not turn auth off.
        std::fs::write(&path, "").unwrap();
        a.reload().unwrap();
        assert_eq!(a.authenticate(Some(b"Bearer sk-b")), Err(Refusal::Invalid));
        assert_eq!(a.authenticate(None), Err(Refusal::Missing));
    }
}
