//! Issue 9: HTTPS (rustls, ALPN h2 + http/1.1) and h2c for clients; unbuffered streams over h2;
//! many streams on one connection; a reset cancels only its own upstream request; certificates
//! replaced without dropping connections; bad TLS variables stop start-up.
//!
//! Certificates are made by the test with `rcgen`: a CA, and a leaf for `localhost` and
//! `127.0.0.1` signed by it; the certificate file holds the chain (leaf, then CA).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http::Version;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A CA and a leaf it signed, written where the gateway reads them.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA certificate (PEM) and a leaf chain + key (PEM) signed by it.
fn make_pair(cn: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{cn} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, cn);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let chain = format!("{}{}", leaf_cert.pem(), ca_cert.pem());
    (ca_cert.pem(), chain, leaf_key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let (ca_pem, chain, key_pem) = make_pair("first");
        std::fs::write(&cert, chain).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        Pki {
            dir,
            ca_pem,
            cert,
            key,
        }
    }

    /// Writes a new pair (from a new CA) over the same files; returns the new CA.
    fn replace(&self, cn: &str) -> String {
        let (ca_pem, chain, key_pem) = make_pair(cn);
        std::fs::write(&self.cert, chain).unwrap();
        std::fs::write(&self.key, key_pem).unwrap();
        ca_pem
    }

    fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

/// An HTTPS client that trusts only `ca_pem`; HTTP/1.1 only, or h2 offered through ALPN.
fn https_client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn https(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// The content of a non-streamed completion.
async fn plain_content(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The content assembled from an SSE body, which must end with `[DONE]`.
fn stream_content(body: &str) -> String {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Plain and streamed echo completions through `c`, which must negotiate `version`.
async fn plain_and_streamed(c: &reqwest::Client, url: &str, version: Version) {
    let r = c
        .post(url)
        .json(&chat_body("echo/t", "over tls", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), version);
    assert_eq!(r.headers()["x-provider"], "echo");
    assert_eq!(plain_content(r).await, "over tls");

    let r = c
        .post(url)
        .json(&chat_body("echo/t", "streamed over tls", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), version);
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    if version == Version::HTTP_2 {
        // Connection-specific headers are forbidden in h2.
        assert!(!r.headers().contains_key("transfer-encoding"));
    }
    assert_eq!(
        stream_content(&r.text().await.unwrap()),
        "streamed over tls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http1_and_h2_plain_and_streamed() {
    let pki = Pki::new();
    let gw = Gateway::start(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
    ]);
    let url = https(gw.port, "/v1/chat/completions");
    plain_and_streamed(&https_client(&pki.ca_pem, true), &url, Version::HTTP_11).await;
    plain_and_streamed(&https_client(&pki.ca_pem, false), &url, Version::HTTP_2).await;

    // GATEWAY_LISTEN speaks only TLS now: plain HTTP gets no answer from the gateway.
    let plain = client().get(gw.url("/health")).send().await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    assert!(
        gw.logs()
            .contains(&format!("listening on https://127.0.0.1:{}", gw.port)),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listen_adds_https_beside_the_plain_listener() {
    let pki = Pki::new();
    let tls_port = free_port();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let gw = Gateway::start(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("GATEWAY_TLS_LISTEN", &tls_listen),
    ]);
    wait_port(tls_port);
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_11);
    let url = https(tls_port, "/v1/chat/completions");
    plain_and_streamed(&https_client(&pki.ca_pem, false), &url, Version::HTTP_2).await;
    plain_and_streamed(&https_client(&pki.ca_pem, true), &url, Version::HTTP_11).await;
}

fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_with_prior_knowledge_beside_http1() {
    let gw = Gateway::start(&[("GATEWAY_H2C", "on")]);
    let url = gw.url("/v1/chat/completions");
    plain_and_streamed(&h2c_client(), &url, Version::HTTP_2).await;
    // The same port still speaks HTTP/1.1.
    plain_and_streamed(&client(), &url, Version::HTTP_11).await;

    // Without GATEWAY_H2C an h2c client gets nowhere.
    let off = Gateway::start(&[]);
    let r = h2c_client()
        .post(off.url("/v1/chat/completions"))
        .json(&chat_body("echo/t", "x", false))
        .send()
        .await;
    assert!(
        r.is_err(),
        "h2c answered without GATEWAY_H2C: {:?}",
        r.map(|r| r.version())
    );
}

/// Time to the first body bytes and to the end, and the first bytes themselves.
async fn timed_stream(r: reqwest::Response) -> (Duration, Duration, String, String) {
    let start = Instant::now();
    let mut s = r.bytes_stream();
    let first = s.next().await.unwrap().unwrap();
    let t_first = start.elapsed();
    let mut all = first.to_vec();
    while let Some(c) = s.next().await {
        all.extend_from_slice(&c.unwrap());
    }
    (
        t_first,
        start.elapsed(),
        String::from_utf8_lossy(&first).into_owned(),
        String::from_utf8(all).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_streams_are_as_unbuffered_as_http1() {
    let pki = Pki::new();
    let gw = Gateway::start(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "200"),
    ]);
    let url = https(gw.port, "/v1/chat/completions");
    let text = "one two three four five six seven eight";
    for (http1, version) in [(true, Version::HTTP_11), (false, Version::HTTP_2)] {
        let r = https_client(&pki.ca_pem, http1)
            .post(&url)
            .json(&chat_body("echo/t", text, true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        let (first, total, first_bytes, all) = timed_stream(r).await;
        // Seven 200 ms gaps between the eight words.
        assert!(
            total >= Duration::from_millis(1400),
            "{version:?}: {total:?}"
        );
        assert!(
            first * 2 < total,
            "{version:?}: first bytes after {first:?} of {total:?}: buffered"
        );
        assert!(
            first_bytes.contains("one") && !first_bytes.contains("eight"),
            "{first_bytes}"
        );
        assert_eq!(stream_content(&all), text);
    }
}

/// One HTTP/2 connection, opened by hand so every request provably shares it.
struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    scheme: &'static str,
}

impl H2Conn {
    async fn over<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        io: T,
        scheme: &'static str,
        port: u16,
    ) -> H2Conn {
        let (send, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn {
            send,
            authority: format!("127.0.0.1:{port}"),
            scheme,
        }
    }

    /// TLS with ALPN `h2` only, trusting only `ca_pem`.
    async fn tls(port: u16, ca_pem: &str) -> H2Conn {
        let mut roots = rustls::RootCertStore::empty();
        let der: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        roots.add(der[0].clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        H2Conn::over(tls, "https", port).await
    }

    async fn plain(port: u16) -> H2Conn {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        H2Conn::over(tcp, "http", port).await
    }

    /// Sends a chat request; returns the response and the request's send half (to reset it).
    async fn chat(&self, body: &Value) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let bytes = Bytes::from(body.to_string());
        let req = http::Request::builder()
            .method("POST")
            .uri(format!(
                "{}://{}/v1/chat/completions",
                self.scheme, self.authority
            ))
            .header("content-type", "application/json")
            .header("content-length", bytes.len())
            .body(())
            .unwrap();
        let mut send = self.send.clone().ready().await.unwrap();
        let (resp, mut stream) = send.send_request(req, false).unwrap();
        stream.send_data(bytes, true).unwrap();
        (resp, stream)
    }
}

/// Reads an h2 response body to the end.
async fn read_h2(resp: h2::client::ResponseFuture) -> (u16, String) {
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    (status, String::from_utf8(all).unwrap())
}

/// 20 concurrent streamed completions on `conn`, each checked against its own prompt.
/// Returns how long they took together and how long one took alone.
async fn twenty_streams(conn: &H2Conn) -> (Duration, Duration) {
    let started = Instant::now();
    let (resp, _s) = conn.chat(&chat_body("echo/t", "alone a b c d", true)).await;
    let (status, body) = read_h2(resp).await;
    assert_eq!(status, 200);
    assert_eq!(stream_content(&body), "alone a b c d");
    let one = started.elapsed();

    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..20 {
        let prompt = format!("stream{i} a b c d");
        let (resp, s) = conn.chat(&chat_body("echo/t", &prompt, true)).await;
        pending.push(tokio::spawn(async move {
            let _s = s;
            (prompt, read_h2(resp).await)
        }));
    }
    for p in pending {
        let (prompt, (status, body)) = p.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            stream_content(&body),
            prompt,
            "a stream got another's answer"
        );
    }
    let twenty = started.elapsed();
    eprintln!("20 concurrent streams on one h2 connection: {twenty:?}; one stream alone: {one:?}");
    (twenty, one)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_streams_share_one_connection() {
    let pki = Pki::new();
    let gw = Gateway::start(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "100"),
    ]);
    let conn = H2Conn::tls(gw.port, &pki.ca_pem).await;
    let (twenty, one) = twenty_streams(&conn).await;
    // One after another would take 20 times as long as one: they ran side by side.
    assert!(
        twenty < one * 8,
        "20 streams took {twenty:?}, one took {one:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_h2c_streams_share_one_connection() {
    let gw = Gateway::start(&[
        ("GATEWAY_H2C", "on"),
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "100"),
    ]);
    let conn = H2Conn::plain(gw.port).await;
    let (twenty, one) = twenty_streams(&conn).await;
    assert!(
        twenty < one * 8,
        "20 streams took {twenty:?}, one took {one:?}"
    );
}

/// Per prompt: whether the upstream stream was dropped, and whether it ran to its end.
#[derive(Default)]
struct Upstreams {
    dropped: HashMap<String, Arc<AtomicBool>>,
    finished: HashMap<String, Arc<AtomicBool>>,
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

const EVENTS: u32 = 40;

/// An OpenAI mock whose stream sends `EVENTS` pieces 50 ms apart, tagged with the prompt
/// (except "A", which stalls for a minute after its first piece).
fn slow_openai(state: Arc<Mutex<Upstreams>>) -> Handler {
    Arc::new(move |r: &Recorded| {
        if r.method == "GET" {
            return json_response(200, json!({"object": "list", "data": []}));
        }
        let tag = r.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let dropped = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        {
            let mut s = state.lock().unwrap();
            s.dropped.insert(tag.clone(), dropped.clone());
            s.finished.insert(tag.clone(), finished.clone());
        }
        let flag = DropFlag(dropped);
        let stream = futures::stream::unfold((0u32, flag), move |(i, flag)| {
            let tag = tag.clone();
            let finished = finished.clone();
            async move {
                if i > EVENTS {
                    return None;
                }
                // "A" goes silent after its first piece: only the gateway watching the
                // client (not a failed write) can notice A's reset then.
                let gap = if tag == "A" && i == 1 { 60_000 } else { 50 };
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                let ev = if i == EVENTS {
                    finished.store(true, Ordering::SeqCst);
                    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n".to_string()
                } else {
                    format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{tag}{i} \"}},\"finish_reason\":null}}]}}\n\n")
                };
                Some((Ok::<_, std::io::Error>(Bytes::from(ev)), (i + 1, flag)))
            }
        });
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        resp
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn resetting_one_stream_cancels_only_its_upstream_request() {
    let state = Arc::new(Mutex::new(Upstreams::default()));
    let mock = Mock::start(slow_openai(state.clone())).await;
    let pki = Pki::new();
    let gw = Gateway::start(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("OPENAI_BASE_URL", &mock.url()),
    ]);
    let conn = H2Conn::tls(gw.port, &pki.ca_pem).await;
    let (resp_a, mut send_a) = conn.chat(&chat_body("openai/m", "A", true)).await;
    let (resp_b, _send_b) = conn.chat(&chat_body("openai/m", "B", true)).await;

    // Both streams are flowing before A is reset.
    let resp_a = resp_a.await.unwrap();
    assert_eq!(resp_a.status(), 200);
    let mut body_a = resp_a.into_body();
    let first = body_a.data().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("A0"));
    let b = tokio::spawn(read_h2(resp_b));
    send_a.send_reset(h2::Reason::CANCEL);
    drop(body_a);

    let flag = |tag: &str, which: &str| {
        let s = state.lock().unwrap();
        let m = if which == "dropped" {
            &s.dropped
        } else {
            &s.finished
        };
        m.get(tag).map(|f| f.load(Ordering::SeqCst))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while flag("A", "dropped") != Some(true) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        flag("A", "dropped"),
        Some(true),
        "A's upstream request was not cancelled"
    );
    assert_eq!(
        flag("A", "finished"),
        Some(false),
        "A's upstream ran to its end"
    );
    assert_eq!(
        flag("B", "dropped"),
        Some(false),
        "B's upstream was cancelled with A"
    );

    let (status, body) = tokio::time::timeout(Duration::from_secs(30), b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    let expected: String = (0..EVENTS).map(|i| format!("B{i} ")).collect();
    assert_eq!(stream_content(&body), expected);
    assert_eq!(flag("B", "finished"), Some(true));
    assert!(
        gw.wait_log("outcome=client_closed", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );

    // The connection outlived the reset: it still serves requests.
    let (resp, _s) = conn.chat(&chat_body("echo/t", "still here", false)).await;
    let (status, body) = read_h2(resp).await;
    assert_eq!(status, 200);
    assert!(body.contains("still here"), "{body}");
}

/// Streams `text` (echo, slow) on `conn`, in the background.
async fn slow_echo(conn: &H2Conn, text: &str) -> tokio::task::JoinHandle<(u16, String)> {
    let (resp, s) = conn.chat(&chat_body("echo/t", text, true)).await;
    tokio::spawn(async move {
        let _s = s;
        read_h2(resp).await
    })
}

async fn health_with(ca_pem: &str, port: u16) -> Result<u16, reqwest::Error> {
    https_client(ca_pem, false)
        .get(https(port, "/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_replaces_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let gw = Gateway::start(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "100"),
    ]);
    assert!(
        gw.wait_log("reloads on SIGHUP", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    let old_ca = pki.ca_pem.clone();
    let conn = H2Conn::tls(gw.port, &old_ca).await;
    let text = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19";
    let in_flight = slow_echo(&conn, text).await;

    let new_ca = pki.replace("second");
    gw.signal("HUP");
    assert!(
        gw.wait_log("TLS certificate reloaded", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    // New handshakes get the new certificate...
    assert_eq!(health_with(&new_ca, gw.port).await.unwrap(), 200);
    assert!(
        health_with(&old_ca, gw.port).await.is_err(),
        "still serving the old certificate"
    );
    // ...while the stream that started before the reload runs to its end on its connection,
    // and that connection takes new requests.
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(stream_content(&body), text);
    let (resp, _s) = conn
        .chat(&chat_body("echo/t", "same connection", false))
        .await;
    assert_eq!(read_h2(resp).await.0, 200);

    // A broken pair is refused and the current one stays in use.
    let (_ca, _chain, other_key) = make_pair("third");
    std::fs::write(&pki.key, other_key).unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_log("NOT reloaded", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    assert!(gw.logs().contains("GATEWAY_TLS_KEY"), "{}", gw.logs());
    assert_eq!(health_with(&new_ca, gw.port).await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_replaces_the_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let vars = [
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("GATEWAY_ECHO_CHUNK_DELAY_MS", "100"),
    ];
    let mut old = Gateway::start(&vars);
    let old_ca = pki.ca_pem.clone();
    let conn = H2Conn::tls(old.port, &old_ca).await;
    let text =
        "u0 u1 u2 u3 u4 u5 u6 u7 u8 u9 u10 u11 u12 u13 u14 u15 u16 u17 u18 u19 u20 u21 u22 u23 u24";
    let in_flight = slow_echo(&conn, text).await;

    // The documented procedure: new files in place, start the successor with --upgrade and
    // the same environment, then SIGQUIT the old process.
    let new_ca = pki.replace("upgraded");
    let listen = format!("127.0.0.1:{}", old.port);
    let log_path = pki.dir.path().join("new.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Gateway::command(&vars);
    cmd.arg("--upgrade")
        .env("GATEWAY_LISTEN", &listen)
        .env("GATEWAY_UPGRADE_SOCK", old.dir.path().join("upgrade.sock"))
        .env("GATEWAY_PID_FILE", pki.dir.path().join("new.pid"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .stdin(Stdio::null());
    let mut new = cmd.spawn().unwrap();
    let sock = old.dir.path().join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    old.signal("QUIT");

    // New connections reach the successor, with the new certificate.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = false;
    while Instant::now() < deadline {
        if health_with(&new_ca, old.port).await.ok() == Some(200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = new.kill();
    let _ = new.wait();
    assert!(
        served,
        "the new process never served the new certificate: {new_log}\n{}",
        old.logs()
    );
    // The stream on the old process's connection finished in full, then the old one exited.
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(stream_content(&body), text);
    assert!(
        old.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        old.logs()
    );
}

/// Runs the gateway with `vars`; it must exit non-zero. Returns what it printed.
fn start_fails(vars: &[(&str, &str)]) -> String {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Gateway::command(vars)
        .env("GATEWAY_LISTEN", &listen)
        .env("GATEWAY_UPGRADE_SOCK", dir.path().join("u.sock"))
        .env("GATEWAY_PID_FILE", dir.path().join("g.pid"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started with {vars:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{vars:?} exited with {}", out.status);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn misconfigured_tls_stops_start_up_naming_the_variable() {
    let pki = Pki::new();
    let (_c, _chain, foreign_key) = make_pair("foreign");
    let foreign = pki.dir.path().join("foreign.key");
    std::fs::write(&foreign, foreign_key).unwrap();
    let missing = pki.dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let foreign = foreign.to_str().unwrap();
    let not_pem = pki.dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.to_str().unwrap();

    // (variables, what the error says, what else it says)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("GATEWAY_TLS_CERT", pki.cert())],
            "GATEWAY_TLS_KEY is not set",
            "certificate and its private key",
        ),
        (
            vec![("GATEWAY_TLS_KEY", pki.key())],
            "GATEWAY_TLS_CERT is not set",
            "certificate and its private key",
        ),
        (
            vec![
                ("GATEWAY_TLS_CERT", missing),
                ("GATEWAY_TLS_KEY", pki.key()),
            ],
            "GATEWAY_TLS_CERT=",
            "cannot read the file",
        ),
        (
            vec![
                ("GATEWAY_TLS_CERT", pki.cert()),
                ("GATEWAY_TLS_KEY", missing),
            ],
            "GATEWAY_TLS_KEY=",
            "cannot read the file",
        ),
        (
            vec![
                ("GATEWAY_TLS_CERT", not_pem),
                ("GATEWAY_TLS_KEY", pki.key()),
            ],
            "GATEWAY_TLS_CERT=",
            "no PEM certificate",
        ),
        (
            vec![
                ("GATEWAY_TLS_CERT", pki.cert()),
                ("GATEWAY_TLS_KEY", foreign),
            ],
            "GATEWAY_TLS_KEY=",
            "does not match the certificate",
        ),
        (
            vec![("GATEWAY_TLS_LISTEN", "127.0.0.1:8443")],
            "GATEWAY_TLS_LISTEN=",
            "needs GATEWAY_TLS_CERT",
        ),
        (
            vec![("GATEWAY_H2C", "sometimes")],
            "GATEWAY_H2C=",
            "expected on or off",
        ),
    ];
    for (vars, name, why) in cases {
        let out = start_fails(&vars);
        assert!(out.contains(name) && out.contains(why), "{vars:?}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    // The key's path is shown (it is not a secret), and every error is reported at once.
    let out = start_fails(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", foreign),
        ("GATEWAY_H2C", "sometimes"),
    ]);
    assert!(out.contains(foreign), "{out}");
    assert!(out.contains("GATEWAY_H2C"), "{out}");
}

#[test]
fn check_config_shows_the_listeners() {
    let pki = Pki::new();
    let out = Gateway::command(&[
        ("GATEWAY_TLS_CERT", pki.cert()),
        ("GATEWAY_TLS_KEY", pki.key()),
        ("GATEWAY_TLS_LISTEN", "127.0.0.1:8443"),
        ("GATEWAY_H2C", "on"),
    ])
    .arg("--check-config")
    .output()
    .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("tls              on 127.0.0.1:8443"), "{s}");
    assert!(s.contains("h2c              on"), "{s}");
    assert!(!s.contains("BEGIN"), "key material printed: {s}");
}
