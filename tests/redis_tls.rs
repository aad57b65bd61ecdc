//! Issue 24: a real TLS-only Redis (`redis-server --port 0 --tls-port`, certificates made here
//! with rcgen, client certificates required, a password for a named user): the cache and the
//! rate limits work over `rediss://` with `GATEWAY_REDIS_CA_FILE` and a client certificate, and a
//! Redis whose certificate another CA signed stops start-up with an error naming the variable.

mod cache_support;
mod common;
mod redis_topology;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cache_support::*;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use redis_topology::{stored_response_is_shared, Node};

/// A CA, and a certificate + key it signed for `localhost` / `127.0.0.1`, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, name);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let p = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&p.ca, ca_cert.pem()).unwrap();
    std::fs::write(&p.cert, leaf_cert.pem()).unwrap();
    std::fs::write(&p.key, leaf_key.serialize_pem()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const PASSWORD: &str = "tls-redis-pw-9f3e";

/// `redis-server` serving TLS only, requiring a client certificate from `server.ca`'s CA and
/// the user `gw` with [`PASSWORD`].
fn tls_redis(dir: &Path, server: &Pki) -> Node {
    let password = format!(">{PASSWORD}");
    let spawn = |port: u16| {
        Node::spawn(
            port,
            dir,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                s(&server.cert),
                "--tls-key-file",
                s(&server.key),
                "--tls-ca-cert-file",
                s(&server.ca),
                "--tls-auth-clients",
                "yes",
                "--user",
                "gw",
                "on",
                &password,
                "~*",
                "&*",
                "+@all",
            ],
        )
    };
    Node::start(dir, spawn, |port| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_and_limits_over_tls_and_a_wrong_ca_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "redis");
    let mut redis = tls_redis(dir.path(), &pki);
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let url = mock.url();
    let redis_url = format!("rediss://gw:{PASSWORD}@127.0.0.1:{}", redis.port);
    let vars = [
        ("OPENAI_BASE_URL", url.as_str()),
        ("GATEWAY_CACHE_BACKEND", "redis"),
        ("GATEWAY_RATE_LIMIT_BACKEND", "redis"),
        ("GATEWAY_STATE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", redis_url.as_str()),
        ("GATEWAY_REDIS_CA_FILE", s(&pki.ca)),
        // The server's own pair doubles as the client certificate (same CA).
        ("GATEWAY_REDIS_CLIENT_CERT_FILE", s(&pki.cert)),
        ("GATEWAY_REDIS_CLIENT_KEY_FILE", s(&pki.key)),
        (
            "GATEWAY_API_KEYS",
            "tls=sk-tls:rpm=6:burst=3,state=sk-tls-state:rpm=off",
        ),
    ];
    let a = Gateway::start(&vars);
    let b = Gateway::start(&vars);
    let auth = [("authorization", "Bearer sk-tls")];

    let r = post(&a, &chat("over tls"), &auth).await;
    assert_eq!(
        (r.cache(), r.content().as_str()),
        ("MISS", "answer 1"),
        "{}",
        a.logs()
    );
    let r = post(&b, &chat("over tls"), &auth).await;
    assert_eq!(
        (r.cache(), r.content().as_str()),
        ("HIT", "answer 1"),
        "{}",
        b.logs()
    );
    // Three requests taken so far from a burst of 3 shared by both instances.
    let r = post(&a, &chat("over tls"), &auth).await;
    assert_eq!(r.status, 200);
    let r = post(&b, &chat("over tls"), &auth).await;
    assert_eq!(r.status, 429, "the shared bucket is empty: {}", b.logs());
    assert_eq!(mock.calls(), 1);
    // Stored Responses over TLS: made through one instance, read through the other.
    stored_response_is_shared(&a, &[&b], "sk-tls-state").await;
    for g in [&a, &b] {
        let logs = g.logs();
        assert!(logs.contains("connected to Redis at 127.0.0.1"), "{logs}");
        assert!(
            !logs.contains("unreachable") && !logs.contains("failed"),
            "{logs}"
        );
        assert!(!logs.contains(PASSWORD), "{logs}");
    }
    let metrics = client()
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_redis_up{use=\"cache\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_redis_up{use=\"ratelimit\"} 1"),
        "{metrics}"
    );

    // The same Redis checked against another CA: start-up stops, naming the variable.
    let other = make_pki(dir.path(), "other");
    let mut wrong = vars.to_vec();
    wrong.retain(|(k, _)| *k != "GATEWAY_REDIS_CA_FILE");
    wrong.push(("GATEWAY_REDIS_CA_FILE", s(&other.ca)));
    let e = Gateway::try_start(&wrong)
        .err()
        .expect("start-up must fail");
    println!("wrong CA: {e}");
    assert!(e.contains("exited with exit status: 2"), "{e}");
    assert!(e.contains("GATEWAY_REDIS_CA_FILE"), "{e}");
    assert!(e.to_ascii_lowercase().contains("certificate"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
    // System roots do not know the test CA either: the error says how to trust it.
    wrong.retain(|(k, _)| *k != "GATEWAY_REDIS_CA_FILE");
    let e = Gateway::try_start(&wrong)
        .err()
        .expect("start-up must fail");
    println!("system roots: {e}");
    assert!(
        e.contains("GATEWAY_REDIS_URL") && e.contains("GATEWAY_REDIS_CA_FILE"),
        "{e}"
    );

    // No client certificate for a server that requires one: named too.
    let mut anonymous = vars.to_vec();
    anonymous.retain(|(k, _)| !k.starts_with("GATEWAY_REDIS_CLIENT_"));
    let e = Gateway::try_start(&anonymous)
        .err()
        .expect("start-up must fail");
    println!("no client certificate: {e}");
    assert!(e.contains("GATEWAY_REDIS_CLIENT_CERT_FILE"), "{e}");

    // An unreachable TLS Redis is no configuration error: the gateway starts and degrades.
    redis.kill();
    let g = Gateway::start(&vars);
    let r = post(&g, &chat("over tls"), &auth).await;
    assert_eq!((r.status, r.cache()), (200, "MISS"));
    assert!(
        g.logs().contains("not reachable at start-up"),
        "{}",
        g.logs()
    );
}
