//! The upstream exchange over Pingora's HTTP connector: pooled keep-alive HTTP/1.1 and h2
//! sessions, rustls with SNI and certificate verification, connect / first-byte / idle
//! timeouts; host names resolved through the shared [`crate::discovery::Resolver`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::header::{self, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::{http_req_header_to_wire, HttpSession as HttpSessionV1};
use pingora::protocols::{Stream, ALPN};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::BaseUrl;
use crate::discovery::{ResolveError, Resolver, DNS_TTL};
use crate::error::GatewayError;
use crate::pool::IdlePool;
use crate::providers::UpstreamRequest;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle plain-HTTP connections kept per upstream (Pingora's default pool size).
const POOL_PER_UPSTREAM: usize = 128;
/// Error bodies are read whole, up to this size.
pub const MAX_ERROR_BODY: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

/// Shared by all requests: the connectors (and their pools) and the resolver.
pub struct Upstreams {
    /// TLS upstreams: h2 or HTTP/1.1, as ALPN decides.
    connector: Connector,
    /// Plain-HTTP upstreams (HTTP/1.1): new connections. The request is written on the
    /// connection directly, head and body in one write; see [`Upstreams::exchange_plain`].
    plain: TransportConnector,
    /// Their idle connections (see [`crate::pool`] for why not Pingora's pool).
    idle: IdlePool<Stream>,
    /// Shared with the health pools' service discovery (see [`Upstreams::resolver`]).
    resolver: Arc<Resolver>,
    pub timeouts: Timeouts,
}

/// Why an exchange failed before a response head arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    Connect(String),
    Timeout(String),
    /// The connection closed or broke before the response head.
    Broken(String),
}

impl SendError {
    pub fn into_gateway(self, provider: &str) -> GatewayError {
        match self {
            SendError::Connect(m) => {
                GatewayError::bad_gateway(format!("could not connect to provider {provider}: {m}"))
            }
            SendError::Timeout(m) => {
                GatewayError::gateway_timeout(format!("provider {provider} timed out: {m}"))
            }
            SendError::Broken(m) => GatewayError::bad_gateway(format!(
                "provider {provider} closed the connection before answering: {m}"
            ))
            .with_label("upstream_broken"),
        }
    }

    /// Low-cardinality reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Connect(_) => "connect_error",
            SendError::Timeout(_) => "timeout",
            SendError::Broken(_) => "connection_broken",
        }
    }
}

fn classify(e: &Error) -> SendError {
    let msg = e.to_string();
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => SendError::Timeout(msg),
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::BindError
        | ErrorType::SocketError
        | ErrorType::TLSWantX509Lookup => SendError::Connect(msg),
        _ => SendError::Broken(msg),
    }
}

impl Upstreams {
    pub fn new(timeouts: Timeouts) -> Self {
        Upstreams {
            connector: Connector::new(None),
            plain: TransportConnector::new(None),
            idle: IdlePool::new(POOL_IDLE, POOL_PER_UPSTREAM),
            resolver: Arc::new(Resolver::new(DNS_TTL, timeouts.connect)),
            timeouts,
        }
    }

    /// The resolver (and its cache) this connector uses: the pools resolve their backends
    /// through it, so they and the connector agree on each backend's address.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    async fn peer(&self, base: &BaseUrl) -> Result<HttpPeer, SendError> {
        let addr = self.resolver.resolve_url(base).await.map_err(|e| match e {
            ResolveError::Timeout(m) => SendError::Timeout(m),
            ResolveError::Failed(m) => SendError::Connect(m),
        })?;
        let mut peer = HttpPeer::new(addr, base.tls, base.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect);
        o.idle_timeout = Some(POOL_IDLE);
        o.alpn = if base.tls { ALPN::H2H1 } else { ALPN::H1 };
        o.tcp_keepalive = None;
        Ok(peer)
    }

    /// Sends a request and reads the response head (bounded by the first-byte timeout).
    /// A pooled connection that turns out to be dead is replaced once by a fresh one.
    pub async fn send(
        &self,
        base: &BaseUrl,
        req: &UpstreamRequest,
    ) -> Result<UpstreamResponse<'_>, SendError> {
        let peer = self.peer(base).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (result, mut session, reused) = if peer.tls() {
                let (mut session, reused) = Box::pin(self.connector.get_http_session(&peer))
                    .await
                    .map_err(|e| classify(&e))?;
                let result = self.exchange_head(&mut session, base, req).await;
                (result, session, reused)
            } else {
                self.exchange_plain(&peer, base, req)
                    .await
                    .map_err(|e| classify(&e))?
            };
            match result {
                Ok(()) => {
                    session.set_read_timeout(Some(self.timeouts.idle));
                    let status = session
                        .response_header()
                        .map(|h| h.status.as_u16())
                        .ok_or_else(|| SendError::Broken("no response header".into()))?;
                    return Ok(UpstreamResponse {
                        upstreams: self,
                        inner: Box::new(Exchange {
                            session: Some(session),
                            peer,
                            status,
                        }),
                    });
                }
                Err(e) => {
                    session.shutdown().await;
                    let err = classify(&e);
                    // A kept-alive connection the server had already closed: try a new one.
                    if reused && attempts < 3 && matches!(err, SendError::Broken(_)) {
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// A plain-HTTP/1.1 exchange up to the response head, on a pooled connection or a new one
    /// (the outer error: no connection). Pingora's client session flushes a request's head and
    /// body separately, two writes that wake the upstream twice; here the request goes out as
    /// one buffer in one write, and a client session is made on the connection to read the
    /// response. The connect future (~10 KB) is boxed: every request's future holds this
    /// one's, and Pingora copies each request's future once.
    async fn exchange_plain(
        &self,
        peer: &HttpPeer,
        base: &BaseUrl,
        req: &UpstreamRequest,
    ) -> pingora::Result<(pingora::Result<()>, HttpSession, bool)> {
        let head = request_head(base, req)?;
        let mut wire = http_req_header_to_wire(&head)
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "request target"))?;
        wire.extend_from_slice(&req.body);
        let (mut stream, reused) = match self.idle.take(peer.reuse_hash(), still_open) {
            Some(s) => (s, true),
            None => (Box::pin(self.plain.new_stream(peer)).await?, false),
        };
        let written = pingora::time::timeout(self.timeouts.first_byte, async {
            stream.write_all(&wire).await?;
            stream.flush().await
        })
        .await;
        let mut h1 = HttpSessionV1::new_with_options(stream, peer);
        let result = match written {
            Ok(Ok(())) => {
                h1.read_timeout = Some(self.timeouts.first_byte);
                h1.read_response().await.map(|_| ())
            }
            Ok(Err(e)) => Err(Error::because(
                ErrorType::WriteError,
                "while writing the request",
                e,
            )),
            Err(_) => Error::e_explain(ErrorType::WriteTimedout, "while writing the request"),
        };
        Ok((result, HttpSession::H1(h1), reused))
    }

    /// Returns a session to the pool of the connector it came from.
    async fn release(&self, session: HttpSession, peer: &HttpPeer) {
        match session {
            HttpSession::H1(mut h1) if !peer.tls() => {
                h1.respect_keepalive();
                if let Some(mut stream) = h1.reuse().await {
                    if still_open(&mut stream) {
                        self.idle.put(peer.reuse_hash(), stream);
                    }
                }
            }
            s => {
                Box::pin(
                    self.connector
                        .release_http_session(s, peer, Some(POOL_IDLE)),
                )
                .await
            }
        }
    }

    async fn exchange_head(
        &self,
        session: &mut HttpSession,
        base: &BaseUrl,
        req: &UpstreamRequest,
    ) -> pingora::Result<()> {
        let head = request_head(base, req)?;
        let has_body = req.method != "GET";
        session.set_write_timeout(Some(self.timeouts.first_byte));
        session.set_read_timeout(Some(self.timeouts.first_byte));
        // Pingora flushes the head and the body separately: corked, they leave in one segment,
        // so the upstream is woken once per request instead of twice.
        let corked = has_body && cork(session, true);
        let written = async {
            session.write_request_header(Box::new(head)).await?;
            if has_body {
                session.write_request_body(req.body.clone(), true).await?;
            }
            session.finish_request_body().await
        }
        .await;
        if corked {
            cork(session, false);
        }
        written?;
        session.read_response_header().await?;
        Ok(())
    }
}

/// Whether an idle connection can carry another request: nothing to read and not closed (an
/// HTTP/1.1 server sends nothing unasked; bytes or EOF mean it cannot be reused). The same
/// non-blocking check Pingora's pool makes.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Unconstrained: a task out of its cooperative budget would see Pending whatever the state.
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}

/// The request head for an upstream. No case map (names go out lower-case, as HTTP/2 sends
/// them anyway), and the names and values known up front are not parsed again per request.
fn request_head(base: &BaseUrl, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    let mut head =
        RequestHeader::build_no_case(req.method, req.path.as_bytes(), Some(6 + req.headers.len()))?;
    head.insert_header(header::HOST, base.authority())?;
    head.insert_header(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("ai-gateway/", env!("CARGO_PKG_VERSION"))),
    )?;
    head.insert_header(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    )?;
    for (k, v) in &req.headers {
        head.insert_header(*k, v.as_str())?;
    }
    if let Some(p) = &req.propagation {
        // Names known at compile time and values already checked: nothing parsed here.
        head.insert_header(crate::trace::TRACEPARENT, p.traceparent.clone())?;
        if let Some(state) = &p.tracestate {
            head.insert_header(crate::trace::TRACESTATE, state.clone())?;
        }
    }
    if req.method != "GET" {
        // JSON unless the request names its own type (a multipart upload's boundary).
        if !req.headers.iter().any(|(k, _)| *k == "content-type") {
            head.insert_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )?;
        }
        head.insert_header(header::CONTENT_LENGTH, HeaderValue::from(req.body.len()))?;
    }
    Ok(head)
}

/// Sets `TCP_CORK` on an HTTP/1.1 upstream connection (true when it was set).
#[cfg(target_os = "linux")]
fn cork(session: &HttpSession, on: bool) -> bool {
    let HttpSession::H1(h1) = session else {
        return false;
    };
    // The socket's fd (under TLS too; Pingora's pool keys connections by it).
    let fd = h1.stream().id();
    let value: libc::c_int = on.into();
    // SAFETY: `fd` is the open socket the session owns for the duration of this call, and the
    // option value is a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn cork(_session: &HttpSession, _on: bool) -> bool {
    false
}

/// A response whose head has arrived; the body is read chunk by chunk.
pub struct UpstreamResponse<'a> {
    upstreams: &'a Upstreams,
    /// Boxed: a response moves through several futures (forwarding, draining, release), each
    /// move is a copy, and each holder's size is part of every request's future.
    inner: Box<Exchange>,
}

struct Exchange {
    /// `Some` until `release` or `abort` consumes the response.
    session: Option<HttpSession>,
    peer: HttpPeer,
    status: u16,
}

impl UpstreamResponse<'_> {
    pub fn status(&self) -> u16 {
        self.inner.status
    }

    /// A response header (read from the session's copy of the head, not cloned).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .session
            .as_ref()?
            .response_header()?
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// The next body chunk; `None` at the end. Each read is bounded by the idle timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SendError> {
        let session = match self.inner.session.as_mut() {
            Some(s) => s,
            None => return Ok(None),
        };
        match session.read_response_body().await {
            Ok(Some(b)) => Ok(Some(b)),
            Ok(None) => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }

    /// Reads the rest of the body, up to `limit` bytes (more is an error).
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, SendError> {
        let too_big = || SendError::Broken(format!("response body larger than {limit} bytes"));
        let first = match self.chunk().await? {
            None => return Ok(Bytes::new()),
            Some(c) => c,
        };
        // Most bodies arrive in one piece: no copy then.
        let second = match self.chunk().await? {
            None if first.len() <= limit => return Ok(first),
            None => return Err(too_big()),
            Some(c) => c,
        };
        let mut buf = BytesMut::with_capacity(first.len() + second.len());
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        while let Some(c) = self.chunk().await? {
            if buf.len() + c.len() > limit {
                return Err(too_big());
            }
            buf.extend_from_slice(&c);
        }
        if buf.len() > limit {
            return Err(too_big());
        }
        Ok(buf.freeze())
    }

    /// Returns the connection to the pool if the body was read to its end; closes it otherwise.
    pub async fn release(mut self) {
        if let Some(mut s) = self.inner.session.take() {
            if s.response_done() {
                self.upstreams.release(s, &self.inner.peer).await;
            } else {
                s.shutdown().await;
            }
        }
    }

    /// Abandons the exchange (client went away, or a stream failed): closes the connection or
    /// resets the h2 stream, which cancels the upstream request.
    pub async fn abort(mut self) {
        if let Some(mut s) = self.inner.session.take() {
            s.shutdown().await;
        }
    }
}
