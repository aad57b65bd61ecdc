//! The client-facing listeners: HTTPS (TLS terminated here, rustls, ALPN `h2` + `http/1.1`) and
//! plain text (HTTP/1.1, plus HTTP/2 with prior knowledge when `GATEWAY_H2C=on`).
//!
//! The certificate and key are read and checked against each other while the configuration is
//! parsed, so a bad pair stops start-up with a message naming the variable. Pingora is given a
//! certificate resolver rather than the file paths: `SIGHUP` re-reads both files and swaps the
//! pair for new handshakes while open connections carry on; a pair that fails the same checks
//! is refused and the old one stays in use.
//!
//! ```sh
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
//!   -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem -out cert.pem
//! GATEWAY_TLS_CERT=cert.pem GATEWAY_TLS_KEY=key.pem cargo run
//! curl --cacert cert.pem --http2 -w '\n%{http_version}\n' https://localhost:8080/health
//! ```

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use pingora::listeners::tls::TlsSettings;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{vars, Reader};

/// TLS settings from `GATEWAY_TLS_CERT`, `GATEWAY_TLS_KEY` and `GATEWAY_TLS_LISTEN`.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// A separate HTTPS address (`GATEWAY_TLS_LISTEN`); `None`: `GATEWAY_LISTEN` speaks HTTPS.
    pub listen: Option<String>,
    /// The pair as it was checked at start-up, so the listener serves exactly what was validated.
    pub certified: Arc<CertifiedKey>,
}

impl fmt::Debug for TlsConfig {
    // The key material stays out of `Debug` output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// What is wrong with a certificate/key pair, by the file (and so the variable) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Cert(String),
    Key(String),
    /// The key is fine on its own but is not the certificate's.
    Mismatch,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Cert(e) => write!(f, "certificate: {e}"),
            LoadError::Key(e) => write!(f, "private key: {e}"),
            LoadError::Mismatch => f.write_str("the private key does not match the certificate"),
        }
    }
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1)
/// and checks that the key is the certificate's.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, LoadError> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| LoadError::Cert(format!("cannot read the file ({e})")))?;
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_slice()))
            .collect::<Result<_, _>>()
            .map_err(|e| LoadError::Cert(format!("not valid PEM ({e})")))?;
    if chain.is_empty() {
        return Err(LoadError::Cert(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        ));
    }
    let key_pem =
        std::fs::read(key).map_err(|e| LoadError::Key(format!("cannot read the file ({e})")))?;
    let der = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
        .map_err(|e| LoadError::Key(format!("not valid PEM ({e})")))?
        .ok_or_else(|| {
            LoadError::Key("no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".into())
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| LoadError::Key(format!("unsupported key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(LoadError::Mismatch)
        }
        // Every key type the ring provider loads can tell its public key, so this is a
        // certificate rustls cannot parse.
        Err(e) => Err(LoadError::Cert(format!("cannot be used ({e})"))),
    }
}

/// Errors for the TLS variables, in the config's `NAME="value": why` form. Paths are not
/// secret, so the key's path is shown (the generic reader would mask any `*_KEY` value).
fn push(r: &mut Reader, name: &str, value: &str, why: &str) {
    r.errors.push(format!("{name}={value:?}: {why}"));
}

/// Parses `GATEWAY_TLS_CERT`, `GATEWAY_TLS_KEY` and `GATEWAY_TLS_LISTEN`; loads and checks the
/// pair. `None` (plain text only) when neither file variable is set.
pub(crate) fn read_config(r: &mut Reader, listen: &str) -> Option<TlsConfig> {
    let cert = r.get(vars::TLS_CERT);
    let key = r.get(vars::TLS_KEY);
    let tls_listen = r.get(vars::TLS_LISTEN);
    if let Some(l) = tls_listen {
        let addr = l.parse::<std::net::SocketAddr>();
        if addr.is_err() {
            push(
                r,
                vars::TLS_LISTEN,
                l,
                "expected ADDRESS:PORT, e.g. 0.0.0.0:8443",
            );
        } else if addr.ok() == listen.parse().ok() {
            push(
                r,
                vars::TLS_LISTEN,
                l,
                "same address as GATEWAY_LISTEN; leave GATEWAY_TLS_LISTEN unset to serve HTTPS there",
            );
        }
    }
    let (cert, key) = match (cert, key) {
        (None, None) => {
            if let Some(l) = tls_listen {
                push(
                    r,
                    vars::TLS_LISTEN,
                    l,
                    "needs GATEWAY_TLS_CERT and GATEWAY_TLS_KEY",
                );
            }
            return None;
        }
        (Some(c), None) => {
            r.errors.push(format!(
                "{} is not set, but {}={c:?} is: HTTPS needs both the certificate and its private key",
                vars::TLS_KEY,
                vars::TLS_CERT
            ));
            return None;
        }
        (None, Some(k)) => {
            r.errors.push(format!(
                "{} is not set, but {}={k:?} is: HTTPS needs both the certificate and its private key",
                vars::TLS_CERT,
                vars::TLS_KEY
            ));
            return None;
        }
        (Some(c), Some(k)) => (c, k),
    };
    let certified = match load(Path::new(cert), Path::new(key)) {
        Ok(c) => c,
        Err(LoadError::Cert(e)) => {
            push(r, vars::TLS_CERT, cert, &e);
            return None;
        }
        Err(LoadError::Key(e)) => {
            push(r, vars::TLS_KEY, key, &e);
            return None;
        }
        Err(LoadError::Mismatch) => {
            push(
                r,
                vars::TLS_KEY,
                key,
                &format!(
                    "this private key does not match the certificate in {}={cert:?}",
                    vars::TLS_CERT
                ),
            );
            return None;
        }
    };
    Some(TlsConfig {
        cert_path: cert.into(),
        key_path: key.into(),
        listen: tls_listen.map(str::to_string),
        certified,
    })
}

/// `on`/`off` switches.
pub(crate) fn parse_switch(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// The certificate every handshake gets; replaced whole by [`ReloadableCert::reload`].
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadableCert {
    pub fn new(cfg: &TlsConfig) -> Self {
        ReloadableCert {
            current: RwLock::new(cfg.certified.clone()),
            cert_path: cfg.cert_path.clone(),
            key_path: cfg.key_path.clone(),
        }
    }

    /// Re-reads both files. On any error the pair in use is kept.
    pub fn reload(&self) -> Result<(), LoadError> {
        let fresh = load(&self.cert_path, &self.key_path)?;
        *self.current.write() = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// Reloads the certificate on `SIGHUP`.
struct Reloader(Arc<ReloadableCert>);

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            log::error!("could not install the SIGHUP handler: certificates reload only through a graceful upgrade");
            return;
        };
        log::info!("TLS certificate reloads on SIGHUP");
        loop {
            tokio::select! {
                _ = hup.recv() => match self.0.reload() {
                    Ok(()) => log::info!(
                        "SIGHUP: TLS certificate reloaded from {} and {}",
                        self.0.cert_path.display(),
                        self.0.key_path.display()
                    ),
                    Err(e) => log::error!(
                        "SIGHUP: TLS certificate NOT reloaded, still serving the previous one: {e} ({}={}, {}={})",
                        vars::TLS_CERT,
                        self.0.cert_path.display(),
                        vars::TLS_KEY,
                        self.0.key_path.display()
                    ),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// What the listeners are, from the validated configuration.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub listen: String,
    pub h2c: bool,
    pub tls: Option<TlsConfig>,
}

/// Adds the configured listeners to the proxy service (and the SIGHUP reloader to the server).
///
/// With `h2c` the app must already serve it (Pingora peeks for the HTTP/2 preface, so HTTP/1.1
/// keeps working on the same port; it never applies h2c to TLS connections: ALPN decides there).
pub fn add_listeners<A>(
    server: &mut Server,
    service: &mut Service<A>,
    l: &Listeners,
) -> pingora::Result<()> {
    let plain = |service: &mut Service<A>| {
        service.add_tcp(&l.listen);
        let h2c = if l.h2c { " (HTTP/1.1 and h2c)" } else { "" };
        log::info!("ai-gateway listening on http://{}{h2c}", l.listen);
    };
    let Some(tls) = &l.tls else {
        plain(service);
        return Ok(());
    };
    let https = match &tls.listen {
        Some(addr) => {
            plain(service);
            addr
        }
        None => {
            if l.h2c {
                log::warn!(
                    "GATEWAY_H2C=on has no effect: GATEWAY_LISTEN speaks HTTPS (set GATEWAY_TLS_LISTEN to keep a plain listener)"
                );
            }
            &l.listen
        }
    };
    let certs = Arc::new(ReloadableCert::new(tls));
    // With a resolver installed the paths given to the constructor are never read.
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(certs.clone());
    settings.enable_h2();
    service.add_tls_with_settings(https, None, settings);
    log::info!(
        "ai-gateway listening on https://{https} (ALPN h2, http/1.1; certificate {})",
        tls.cert_path.display()
    );
    server.add_service(background_service("tls reload", Reloader(certs)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_matching_pair_loads_and_a_foreign_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = pair(dir.path(), "a");
        let (_c2, k2) = pair(dir.path(), "b");
        assert!(load(&c1, &k1).is_ok());
        assert_eq!(load(&c1, &k2).unwrap_err(), LoadError::Mismatch);
        assert!(matches!(
            load(&dir.path().join("none"), &k1),
            Err(LoadError::Cert(_))
        ));
        assert!(matches!(load(&c1, &c1), Err(LoadError::Key(_))));
        assert!(matches!(load(&k1, &k1), Err(LoadError::Cert(_))));
    }

    #[test]
    fn a_failed_reload_keeps_the_pair_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(dir.path(), "a");
        let cfg = TlsConfig {
            cert_path: c.clone(),
            key_path: k.clone(),
            listen: None,
            certified: load(&c, &k).unwrap(),
        };
        let r = ReloadableCert::new(&cfg);
        let before = r.current.read().cert[0].clone();
        let (_c2, k2) = pair(dir.path(), "b");
        std::fs::copy(&k2, &k).unwrap();
        assert_eq!(r.reload().unwrap_err(), LoadError::Mismatch);
        assert_eq!(r.current.read().cert[0], before);
        let (c3, k3) = pair(dir.path(), "c");
        std::fs::copy(&c3, &c).unwrap();
        std::fs::copy(&k3, &k).unwrap();
        r.reload().unwrap();
        assert_ne!(r.current.read().cert[0], before);
    }

    #[test]
    fn config_reads_the_tls_variables() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(dir.path(), "a");
        let env = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (c, k) = (c.to_str().unwrap(), k.to_str().unwrap());
        let cfg = Config::from_map(&env(&[
            ("GATEWAY_TLS_CERT", c),
            ("GATEWAY_TLS_KEY", k),
            ("GATEWAY_TLS_LISTEN", "0.0.0.0:8443"),
            ("GATEWAY_H2C", "on"),
        ]))
        .unwrap();
        let tls = cfg.tls.as_ref().unwrap();
        assert_eq!(tls.listen.as_deref(), Some("0.0.0.0:8443"));
        assert!(cfg.h2c);
        assert!(!format!("{cfg:?}").contains("BEGIN"));
        let none = Config::from_map(&env(&[])).unwrap();
        assert!(none.tls.is_none() && !none.h2c);
        let e = Config::from_map(&env(&[
            ("GATEWAY_LISTEN", "127.0.0.1:8080"),
            ("GATEWAY_TLS_CERT", c),
            ("GATEWAY_TLS_KEY", k),
            ("GATEWAY_TLS_LISTEN", "127.0.0.1:8080"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("GATEWAY_TLS_LISTEN=\"127.0.0.1:8080\": same address"),
            "{e}"
        );
    }

    #[test]
    fn switches() {
        assert_eq!(parse_switch("ON"), Ok(true));
        assert_eq!(parse_switch("off"), Ok(false));
        assert!(parse_switch("maybe").is_err());
    }
}
