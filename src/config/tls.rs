//! The HTTPS listener's variables (`GATEWAY_TLS_CERT`, `GATEWAY_TLS_KEY`,
//! `GATEWAY_TLS_LISTEN`). The certificate and key are read and checked against each other
//! while the configuration is parsed, so a bad pair stops start-up with a message naming the
//! variable; `tls` serves the checked pair and calls [`load`] again on every reload.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::{vars, Reader};

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
pub(super) fn read(r: &mut Reader, listen: &str) -> Option<TlsConfig> {
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
    fn config_reads_the_tls_variables() {
        use super::super::Config;
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
}
