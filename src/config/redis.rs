//! How the gateway reaches Redis (`GATEWAY_REDIS_*`), shared by every feature that keeps
//! something there (cache, rate limits, state): one node, a Redis Cluster, or a master found
//! through Sentinel; plain or TLS (`rediss://`), with an optional CA file and client
//! certificate. Parsed into [`RedisConfig`]; the certificate files are read and parsed here, so
//! a missing or unreadable one stops start-up naming its variable.

use std::path::PathBuf;

use super::{parse_switch, vars, Reader, Secret};

/// Default port of a Sentinel node.
pub const SENTINEL_PORT: u16 = 26379;

/// What `GATEWAY_REDIS_URL` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis (`redis://` or `rediss://`).
    Single,
    /// Seed nodes of a Redis Cluster (`GATEWAY_REDIS_CLUSTER=on`).
    Cluster,
    /// Sentinel nodes watching the master named `master`.
    Sentinel { master: String },
}

/// PEM bytes read from a file, and the variable that named it (for errors).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub var: &'static str,
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.var, self.path.display())
    }
}

/// A validated Redis connection setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `GATEWAY_REDIS_URL` as given (may carry a password: printed as `***`).
    pub url: Secret,
    /// One URL per node (`redis://` or `rediss://`, credentials and db included): the server,
    /// the cluster's seed nodes, or the Sentinel nodes.
    pub nodes: Vec<Secret>,
    pub topology: Topology,
    /// `rediss://` (or `rediss+sentinel://`).
    pub tls: bool,
    /// `GATEWAY_REDIS_CA_FILE`: trust these roots instead of the system's.
    pub ca: Option<PemFile>,
    /// `GATEWAY_REDIS_CLIENT_CERT_FILE` and `GATEWAY_REDIS_CLIENT_KEY_FILE`.
    pub client_cert: Option<(PemFile, PemFile)>,
    /// `GATEWAY_REDIS_SENTINEL_PASSWORD`: for the Sentinel nodes themselves.
    pub sentinel_password: Option<Secret>,
    /// `host:port` of every node, never a password (for logs).
    pub addrs: String,
}

impl RedisConfig {
    /// One line for `--check-config` (no password).
    pub fn describe(&self) -> String {
        let kind = match &self.topology {
            Topology::Single => "single".to_string(),
            Topology::Cluster => "cluster".to_string(),
            Topology::Sentinel { master } => format!("sentinel master={master}"),
        };
        let mut s = format!(
            "{kind} {} tls={}",
            self.addrs,
            if self.tls { "on" } else { "off" }
        );
        if let Some(ca) = &self.ca {
            s.push_str(&format!(" ca={}", ca.path.display()));
        }
        if let Some((c, _)) = &self.client_cert {
            s.push_str(&format!(" client_cert={}", c.path.display()));
        }
        s
    }
}

/// `user:password@` of a URL's authority, if any.
fn split_userinfo(authority: &str) -> (Option<&str>, &str) {
    match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    }
}

/// Splits `scheme://[userinfo@]h1:p1,h2:p2[/path]` into its parts.
fn split_hosts(url: &str) -> Option<(&str, Option<&str>, Vec<&str>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = split_userinfo(authority);
    let hosts: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    Some((scheme, userinfo, hosts, path))
}

fn read_pem(r: &mut Reader, var: &'static str, what: &str) -> Option<PemFile> {
    let path = r.get(var)?;
    match std::fs::read(path) {
        Ok(pem) if pem_has(&pem, what) => Some(PemFile {
            var,
            path: PathBuf::from(path),
            pem,
        }),
        Ok(_) => {
            r.error(var, path, &format!("the file holds no PEM {what}"));
            None
        }
        Err(e) => {
            r.error(var, path, &format!("cannot read the file: {e}"));
            None
        }
    }
}

fn pem_has(pem: &[u8], what: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    match what {
        "certificate" => text.contains("-----BEGIN CERTIFICATE-----"),
        _ => text.contains("PRIVATE KEY-----"),
    }
}

/// Reads `GATEWAY_REDIS_URL` and the variables that shape it. `None` when no URL is set.
pub(super) fn read(r: &mut Reader) -> Option<RedisConfig> {
    let cluster = r.parse(vars::REDIS_CLUSTER, false, parse_switch);
    let sentinel_master = r.get(vars::REDIS_SENTINEL_MASTER).map(str::to_string);
    let sentinel_password = r.get(vars::REDIS_SENTINEL_PASSWORD).map(Secret::new);
    let ca = read_pem(r, vars::REDIS_CA_FILE, "certificate");
    let cert = read_pem(r, vars::REDIS_CLIENT_CERT_FILE, "certificate");
    let key = read_pem(r, vars::REDIS_CLIENT_KEY_FILE, "private key");
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) | (None, Some(_))
            if r.errors.iter().any(|e| {
                e.starts_with(vars::REDIS_CLIENT_CERT_FILE)
                    || e.starts_with(vars::REDIS_CLIENT_KEY_FILE)
            }) =>
        {
            None
        }
        (Some(_), None) => {
            let v = r.get(vars::REDIS_CLIENT_CERT_FILE).unwrap_or_default();
            r.error(
                vars::REDIS_CLIENT_CERT_FILE,
                v,
                &format!("needs {} too", vars::REDIS_CLIENT_KEY_FILE),
            );
            None
        }
        (None, Some(_)) => {
            let v = r.get(vars::REDIS_CLIENT_KEY_FILE).unwrap_or_default();
            r.error(
                vars::REDIS_CLIENT_KEY_FILE,
                v,
                &format!("needs {} too", vars::REDIS_CLIENT_CERT_FILE),
            );
            None
        }
    };

    let raw = r.get(vars::REDIS_URL)?;
    // The URL may hold a password: it is never echoed.
    let bad = |r: &mut Reader, why: &str| {
        r.error(vars::REDIS_URL, "***", why);
        None
    };
    let Some((scheme, userinfo, hosts, path)) = split_hosts(raw) else {
        return bad(
            r,
            "not a Redis URL; expected redis://[user:password@]host:port[/db], rediss://..., \
             redis+sentinel://host:port[,host:port]/master or comma-separated cluster nodes",
        );
    };
    let scheme = scheme.to_ascii_lowercase();
    let (tls, via_sentinel) = match scheme.as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+sentinel" => (false, true),
        "rediss+sentinel" => (true, true),
        _ => {
            return bad(
                r,
                "expected a redis://, rediss://, redis+sentinel:// or rediss+sentinel:// URL",
            )
        }
    };
    if hosts.is_empty() {
        return bad(r, "names no host");
    }
    let data_scheme = if tls { "rediss" } else { "redis" };
    let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let (topology, node_path) = if via_sentinel || sentinel_master.is_some() {
        if cluster {
            r.error(
                vars::REDIS_CLUSTER,
                "on",
                "Sentinel and Cluster exclude each other",
            );
            return None;
        }
        // redis+sentinel://hosts/<master>[/<db>]; the master may come from the variable instead.
        let mut parts = path.trim_start_matches('/').split('/');
        let from_path = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
        let db = parts.next().filter(|s| !s.is_empty());
        let master = match (from_path, sentinel_master) {
            (Some(m), _) if via_sentinel => m,
            (_, Some(m)) => m,
            _ => {
                return bad(
                    r,
                    &format!(
                        "a Sentinel URL names its master: redis+sentinel://host:port/<master> \
                         (or set {})",
                        vars::REDIS_SENTINEL_MASTER
                    ),
                )
            }
        };
        let db_path = if via_sentinel {
            db.map(|d| format!("/{d}")).unwrap_or_default()
        } else {
            path.to_string()
        };
        (Topology::Sentinel { master }, db_path)
    } else if cluster {
        (Topology::Cluster, path.to_string())
    } else {
        if hosts.len() > 1 {
            return bad(
                r,
                &format!(
                    "names {} hosts; several nodes need {}=on (Redis Cluster) or a \
                     redis+sentinel:// URL",
                    hosts.len(),
                    vars::REDIS_CLUSTER
                ),
            );
        }
        (Topology::Single, path.to_string())
    };
    let sentinel = matches!(topology, Topology::Sentinel { .. });
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for h in &hosts {
        let host_port = if sentinel && !h.contains(':') {
            format!("{h}:{SENTINEL_PORT}")
        } else {
            h.to_string()
        };
        // Sentinel nodes: the URL's credentials are for the data nodes, not the sentinels.
        let node = if sentinel {
            format!("{data_scheme}://{host_port}")
        } else {
            format!("{data_scheme}://{auth}{host_port}{node_path}")
        };
        if let Err(e) = redis::Client::open(node.as_str()) {
            let why = e.to_string().replace(raw, "***");
            return bad(r, &format!("host {h:?} is not usable ({why})"));
        }
        addrs.push(host_port);
        nodes.push(Secret::new(node));
    }
    if sentinel {
        // The data nodes' credentials and db travel apart from the sentinels' URLs.
        let data = format!("{data_scheme}://{auth}127.0.0.1{node_path}");
        if redis::Client::open(data.as_str()).is_err() {
            return bad(r, "the credentials or database number are not usable");
        }
    }
    if !tls && (ca.is_some() || client_cert.is_some()) {
        let var = if ca.is_some() {
            vars::REDIS_CA_FILE
        } else {
            vars::REDIS_CLIENT_CERT_FILE
        };
        let v = r.get(var).unwrap_or_default();
        r.error(
            var,
            v,
            "TLS files need a rediss:// (or rediss+sentinel://) GATEWAY_REDIS_URL",
        );
    }
    Some(RedisConfig {
        url: Secret::new(raw),
        nodes,
        topology,
        tls,
        ca,
        client_cert,
        sentinel_password,
        addrs: addrs.join(","),
    })
}

/// The data nodes' `user:password` and db of a Sentinel URL (`None` where absent).
pub fn sentinel_data_auth(c: &RedisConfig) -> (Option<String>, Option<String>, Option<i64>) {
    let raw = c.url.expose();
    let Some((_, userinfo, _, path)) = split_hosts(raw) else {
        return (None, None, None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, pass) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (
                Some(decode(user)).filter(|s| !s.is_empty()),
                Some(decode(pass)).filter(|s| !s.is_empty()),
            ),
            None => (Some(decode(u)).filter(|s| !s.is_empty()), None),
        },
        None => (None, None),
    };
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let db_seg = if raw.to_ascii_lowercase().contains("+sentinel://") {
        segs.get(1)
    } else {
        segs.first()
    };
    (user, pass, db_seg.and_then(|d| d.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn redis(pairs: &[(&str, &str)]) -> Result<Option<RedisConfig>, String> {
        Config::from_map(&env(pairs))
            .map(|c| c.redis)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn single_cluster_and_sentinel() {
        let c = redis(&[("GATEWAY_REDIS_URL", "redis://u:pw@h:6380/2")])
            .unwrap()
            .unwrap();
        assert_eq!(c.topology, Topology::Single);
        assert_eq!(c.addrs, "h:6380");
        assert_eq!(c.nodes[0].expose(), "redis://u:pw@h:6380/2");

        let c = redis(&[
            ("GATEWAY_REDIS_URL", "rediss://:pw@a:1,b:2, c:3"),
            ("GATEWAY_REDIS_CLUSTER", "on"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.topology, Topology::Cluster);
        assert!(c.tls);
        let nodes: Vec<&str> = c.nodes.iter().map(|n| n.expose()).collect();
        assert_eq!(
            nodes,
            ["rediss://:pw@a:1", "rediss://:pw@b:2", "rediss://:pw@c:3"]
        );
        assert_eq!(c.addrs, "a:1,b:2,c:3");

        let c = redis(&[(
            "GATEWAY_REDIS_URL",
            "redis+sentinel://:pw@s1,s2:5000/mymaster/3",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.topology,
            Topology::Sentinel {
                master: "mymaster".into()
            }
        );
        assert_eq!(c.addrs, "s1:26379,s2:5000");
        assert_eq!(c.nodes[0].expose(), "redis://s1:26379");
        assert_eq!(
            sentinel_data_auth(&c),
            (None, Some("pw".to_string()), Some(3))
        );

        let c = redis(&[
            ("GATEWAY_REDIS_URL", "redis://s1:26379"),
            ("GATEWAY_REDIS_SENTINEL_MASTER", "m"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.topology, Topology::Sentinel { master: "m".into() });
        assert_eq!(redis(&[]).unwrap(), None);
    }

    #[test]
    fn errors_name_the_variable_and_never_the_password() {
        let e = redis(&[("GATEWAY_REDIS_URL", "redis://:secretpw@a:1,b:2")]).unwrap_err();
        assert!(e.contains("GATEWAY_REDIS_URL") && e.contains("GATEWAY_REDIS_CLUSTER"));
        assert!(!e.contains("secretpw"), "{e}");
        let e = redis(&[("GATEWAY_REDIS_URL", "http://:secretpw@a:1")]).unwrap_err();
        assert!(
            e.contains("GATEWAY_REDIS_URL") && !e.contains("secretpw"),
            "{e}"
        );
        let e = redis(&[("GATEWAY_REDIS_URL", "redis+sentinel://a:1")]).unwrap_err();
        assert!(e.contains("master"), "{e}");
        let e = redis(&[
            ("GATEWAY_REDIS_URL", "rediss://a:1"),
            ("GATEWAY_REDIS_CA_FILE", "/nonexistent/ca.pem"),
        ])
        .unwrap_err();
        assert!(e.contains("GATEWAY_REDIS_CA_FILE"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = redis(&[
            ("GATEWAY_REDIS_URL", "redis://a:1"),
            ("GATEWAY_REDIS_CA_FILE", ca.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
        let e = redis(&[
            ("GATEWAY_REDIS_URL", "rediss://a:1"),
            ("GATEWAY_REDIS_CLIENT_CERT_FILE", ca.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(e.contains("GATEWAY_REDIS_CLIENT_KEY_FILE"), "{e}");
    }
}
