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
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::signal::unix::{signal, SignalKind};

pub use crate::config::tls::{load, LoadError, TlsConfig};
use crate::config::vars;

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
pub fn add_listeners(
    server: &mut Server,
    service: &mut Service<crate::proxy::App>,
    l: &Listeners,
) -> pingora::Result<()> {
    if l.h2c {
        // Pingora peeks for the HTTP/2 preface, so HTTP/1.1 keeps working on the same port;
        // it never applies h2c to TLS connections (ALPN decides there).
        if let Some(app) = service.app_logic_mut() {
            let mut opts = HttpServerOptions::default();
            opts.h2c = true;
            app.server_options = Some(opts);
        }
    }
    let plain = |service: &mut Service<crate::proxy::App>| {
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
    use std::path::Path;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k)
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
}
