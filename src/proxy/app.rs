//! What Pingora runs for every connection: read a request's head, hand it to the gateway,
//! log it, and give the connection back for the next request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use pingora::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp,
};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::config::Config;
use crate::error::GatewayError;

use super::{Gateway, Session};

/// What a new HTTP/1.x connection's first session counts as its remaining reuses.
const FIRST_REQUEST: u32 = u32::MAX;

/// What Pingora runs: the gateway, and the HTTP server options (h2c) the listeners chose.
pub struct App {
    gateway: Gateway,
    server_options: Option<HttpServerOptions>,
}

impl App {
    /// The gateway for this configuration (providers, pools, cache, keys, limits).
    pub fn new(config: Config) -> Result<Self, String> {
        let mut opts = HttpServerOptions::default();
        // An idle HTTP/2 connection is closed like an idle HTTP/1.1 one.
        opts.h2_idle_timeout = Some(config.keepalive_timeout);
        // No practical limit; it tells a connection's first request from later ones.
        opts.keepalive_request_limit = Some(FIRST_REQUEST);
        Ok(App {
            gateway: Gateway::new(config)?,
            server_options: Some(opts),
        })
    }

    /// Serves HTTP/2 with prior knowledge beside HTTP/1.1 on plain listeners.
    pub fn enable_h2c(&mut self) {
        let mut opts = self.server_options.take().unwrap_or_default();
        opts.h2c = true;
        self.server_options = Some(opts);
    }

    /// How long this session may take to deliver its request head: on a new connection
    /// `GATEWAY_HEADER_TIMEOUT` (a client trickling its head, slowloris, is cut off), on a
    /// kept-alive one `GATEWAY_KEEPALIVE_TIMEOUT` (the idle wait for the next request included).
    fn head_deadline(&self, session: &Session) -> std::time::Duration {
        let cfg = &self.gateway.config;
        // Pingora gives a new HTTP/1.x connection's first session the configured request limit
        // (u32::MAX, see `new`) and each later one a count lower by one.
        match session.get_keepalive_reuses_remaining() {
            Some(FIRST_REQUEST) => cfg.header_timeout,
            Some(_) => cfg.keepalive_timeout,
            // HTTP/2: the stream's head has arrived with it; the connection's idle time is
            // bounded by `h2_idle_timeout`.
            None => cfg.header_timeout,
        }
    }

    /// Requests in flight (a graceful shutdown waits for them).
    pub fn inflight(&self) -> Arc<AtomicUsize> {
        self.gateway.inflight.clone()
    }

    /// The health pools, for their background services.
    pub fn pools(&self) -> impl Iterator<Item = (&String, &Arc<crate::health::Pool>)> {
        self.gateway.router.pools.iter()
    }

    /// The gateway keys, for the reloading service.
    pub fn auth(&self) -> Arc<crate::auth::Auth> {
        self.gateway.auth.clone()
    }

    /// Budgets, allow-lists and admin-made keys, for their background service and the
    /// metrics listener's admin API.
    pub fn tenants(&self) -> Arc<crate::tenants::Tenants> {
        self.gateway.tenants.clone()
    }

    /// Start-up lines: providers, keys (names only) or a loud warning, rate limits.
    pub fn log_startup(&self) {
        let gw = &self.gateway;
        let names: Vec<&str> = gw.router.providers.keys().map(String::as_str).collect();
        log::info!("providers: {}", names.join(", "));
        crate::auth::log_startup(&gw.auth, gw.limiter.config(), &gw.config.listen);
        if gw.tenants.admin_enabled() {
            log::info!(
                "admin API: on ({}), tenant state: {}",
                match &gw.config.metrics_listen {
                    Some(a) => format!("http://{a}/admin/"),
                    None => format!("http://{}/admin/", gw.config.listen),
                },
                gw.tenants.describe()
            );
        } else {
            log::info!("tenant state: {}", gw.tenants.describe());
        }
    }
}

/// Resolves once the server is shutting down (at once if it already is).
async fn shutting_down(mut w: ShutdownWatch) {
    loop {
        if *w.borrow_and_update() {
            return;
        }
        if w.changed().await.is_err() {
            // The server dropped the sender: it is going away, but not through a shutdown
            // this connection should act on.
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl HttpServerApp for App {
    /// One request on a connection: Pingora calls this again for the next request on a
    /// kept-alive HTTP/1.x connection, and once per HTTP/2 stream.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // A connection idle between requests is closed when the server shuts down; a request
        // already being read is not dropped for it (biased towards the read).
        // HTTP/1.1 pipelining (RFC 9112, 9.3.2): requests that arrived behind this one in the
        // same read are answered in order, on this connection, instead of being dropped with
        // the connection. (Pingora keeps the setting for the connection's later requests.)
        session.set_pipelining_enabled(true);
        let deadline = self.head_deadline(&session);
        let read = tokio::select! {
            biased;
            r = tokio::time::timeout(deadline, session.read_request()) => match r {
                Ok(r) => r,
                // Too slow to send a head, or idle too long: closed without an answer, as
                // nginx does (a 408 would be read by nobody, or taken for the next answer).
                Err(_) => {
                    session.shutdown().await;
                    return None;
                }
            },
            _ = shutting_down(shutdown.clone()) => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if matches!(e.etype, pingora::ErrorType::InvalidHTTPHeader) {
                    let body = GatewayError::bad_request("", "malformed HTTP request").body();
                    let mut head = Session::generate_error(400);
                    if head.set_content_length(body.len()).is_ok()
                        && head
                            .insert_header(http::header::CONTENT_TYPE, "application/json")
                            .is_ok()
                    {
                        let _ = session.write_error_response(head, body).await;
                    }
                }
                session.shutdown().await;
                return None;
            }
        }
        if *shutdown.borrow() || session.req_header().method == Method::CONNECT {
            // Answer this one, but do not keep the connection for another (a CONNECT gets a
            // 405: the gateway tunnels nothing, and CONNECT changes the message framing).
            session.set_keepalive(None);
        }
        let gw = &self.gateway;
        let mut ctx = gw.new_ctx();
        gw.handle(&mut session, &mut ctx).await;
        gw.log(&session, &mut ctx).await;
        let settings = HttpPersistentSettings::for_session(&session);
        // Finishing may still write (the end of a chunked body): the request stays in flight,
        // for a graceful shutdown to wait for, until it is done (`ctx` holds the count).
        let reused = match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        };
        drop(ctx);
        reused
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.server_options.as_ref()
    }
}

/// The gateway's connections, counted (`GATEWAY_MAX_CONNECTIONS`): Pingora hands each new
/// connection to [`Limited::process_new`], which serves its requests (through [`App`]) until it
/// ends. Over the limit, a new connection gets a `503` and is closed at once, and a warning says
/// so (at most one a second), so a flood of connections cannot take every descriptor.
pub struct Limited {
    app: Arc<App>,
    limit: Option<usize>,
    open: AtomicUsize,
    /// The second of the last warning.
    warned: AtomicU64,
}

impl Limited {
    pub fn new(app: App, limit: Option<usize>) -> Self {
        if let Some(n) = limit {
            log::info!("connections: at most {n} open at once (GATEWAY_MAX_CONNECTIONS)");
        }
        Limited {
            app: Arc::new(app),
            limit,
            open: AtomicUsize::new(0),
            warned: AtomicU64::new(0),
        }
    }

    fn warn_full(&self, limit: usize) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.warned.swap(now, Ordering::Relaxed) != now {
            log::warn!(
                "connection limit reached: {limit} connections are open (GATEWAY_MAX_CONNECTIONS); new connections get a 503 and are closed until some end"
            );
        }
        crate::metrics::connection_refused();
    }
}

/// Counts a connection for as long as it lives.
struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection over the limit reads before it is closed.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 141\r\n\r\n{\"error\":{\"message\":\"the gateway has too many open connections; try again\",\"type\":\"server_error\",\"param\":null,\"code\":\"too_many_connections\"}}";

#[async_trait]
impl ServerApp for Limited {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let now_open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let _open = Open(&self.open);
        if let Some(limit) = self.limit.filter(|l| now_open > *l) {
            self.warn_full(limit);
            let mut stream = stream;
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                let _ = stream.write_all(FULL).await;
                let _ = stream.flush().await;
            })
            .await;
            return None;
        }
        // Every request of the connection, here: the connection ends when this returns.
        let mut next = Some(stream);
        while let Some(s) = next {
            next = self.app.process_new(s, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.app).await;
    }
}
