//! The request lifecycle: the only code that sees Pingora's session, the per-request [`Ctx`]
//! and the shared [`Gateway`]. Everything it calls (cache, auth, rate limits, routing, health,
//! providers, telemetry) takes and returns plain values and never writes to a client.
//!
//! One request: `app` reads the head; `Gateway::handle` routes it by path to an endpoint
//! family (a file each: `chat`, `responses`, `count_tokens`, `embeddings`, `models`,
//! `passthrough` for the OpenAI API's other endpoints), `admit` checks its
//! key and rate limits; the family parses the body, resolves the model, consults the cache
//! (`cache`), exchanges with the upstream and answers; then `Gateway::log` charges token
//! limits, counts metrics and writes the one log line.
//!
//! The gateway answers every request itself, upstream exchange included (see DESIGN.md), so it
//! is a `pingora_core` `HttpServerApp` (`app::App`) rather than a `ProxyHttp` behind
//! Pingora's proxy cycle, whose phases, proxy session and cache state it would never use.

mod admit;
mod app;
mod cache;
mod chat;
mod count_tokens;
mod embeddings;
mod metrics_app;
mod models;
mod multipart;
mod passthrough;
mod responses;
mod tenant;

pub use app::{App, Limited};
pub use chat::FAILOVER_HEADER;
pub use metrics_app::MetricsApp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Method;
use parking_lot::Mutex;
use pingora::http::ResponseHeader;

use crate::api::{random_token, Usage};
use crate::config::Config;
use crate::dialects::Dialect;
use crate::error::GatewayError;
use crate::routing::Router;
use crate::telemetry::{duration_ms, RequestLog};
use crate::upstream::{Timeouts, Upstreams};

/// One request's HTTP session with the client (HTTP/1.x or an HTTP/2 stream).
pub type Session = pingora::protocols::http::ServerSession;

/// State shared by all requests.
pub struct Gateway {
    pub config: Arc<Config>,
    pub router: Router,
    pub upstreams: Arc<Upstreams>,
    pub models_cache: Mutex<Option<(Instant, Bytes)>>,
    /// Requests in flight (for graceful shutdown).
    pub inflight: Arc<AtomicUsize>,
    pub cache: crate::cache::Cache,
    pub auth: Arc<crate::auth::Auth>,
    pub limiter: crate::ratelimit::Limiter,
    /// State kept between requests (stored Responses).
    pub state: Arc<crate::state::State>,
    /// Budgets, allow-lists and admin-made keys.
    pub tenants: Arc<crate::tenants::Tenants>,
}

/// Provider keys and Redis passwords, for [`crate::redact`] (gateway keys register themselves
/// in `auth`, as the keys file changes).
fn register_secrets(config: &Config) {
    let providers = config
        .providers
        .values()
        .filter_map(|p| p.api_key.as_ref())
        .map(|k| k.expose().to_string());
    let urls = config.redis.iter().flat_map(|r| {
        std::iter::once(&r.url)
            .chain(&r.nodes)
            .filter_map(|u| crate::redact::url_password(u.expose()))
            .chain(r.sentinel_password.iter().map(|p| p.expose().to_string()))
    });
    let aws = &config.aws;
    let aws = [
        aws.bearer_token.as_ref(),
        aws.keys.as_ref().map(|k| &k.secret_access_key),
        aws.keys.as_ref().and_then(|k| k.session_token.as_ref()),
    ]
    .into_iter()
    .flatten()
    .map(|k| k.expose().to_string());
    crate::redact::set_group("providers", providers.chain(urls).chain(aws));
}

impl Gateway {
    /// Fails when a provider cannot be built (an unknown wire format).
    pub fn new(config: Config) -> Result<Self, String> {
        register_secrets(&config);
        let upstreams = Arc::new(Upstreams::new(Timeouts {
            connect: config.connect_timeout,
            first_byte: config.first_byte_timeout,
            idle: config.idle_timeout,
        }));
        let router = Router::new(&config, upstreams.clone())?;
        let cache = crate::cache::Cache::new(&config.cache);
        let auth = Arc::new(crate::auth::Auth::new(
            config.auth.clone(),
            config.rate_limit.clone(),
        ));
        let limiter = crate::ratelimit::Limiter::new(config.rate_limit.clone());
        let state = Arc::new(crate::state::State::new(&config.state));
        let tenants = Arc::new(crate::tenants::Tenants::new(
            &config,
            auth.clone(),
            state.clone(),
        )?);
        Ok(Gateway {
            state,
            tenants,
            cache,
            config: Arc::new(config),
            router,
            upstreams,
            models_cache: Mutex::new(None),
            inflight: Arc::new(AtomicUsize::new(0)),
            auth,
            limiter,
        })
    }
}

/// Decrements the in-flight count when the request's context is dropped.
pub struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-request state.
pub struct Ctx {
    pub request_id: String,
    pub start: Instant,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: u16,
    pub outcome: &'static str,
    pub stream: bool,
    pub ttfb: Option<Duration>,
    pub usage: Option<Usage>,
    pub bytes: usize,
    pub attempts: u32,
    pub error: Option<String>,
    pub cache: Option<&'static str>,
    pub key_name: Option<String>,
    /// The model name the serving provider was asked for (set once the model resolved; the
    /// failover feature updates it with `provider`). Metrics and cost use it.
    pub upstream_model: Option<String>,
    /// Whether any response header has gone to the client.
    pub responded: bool,
    /// Headers every response to this request carries (set by features such as rate limits
    /// and the cache before the response is written).
    pub headers: Vec<(&'static str, String)>,
    /// Time to the response head of the last upstream attempt.
    pub upstream_head: Option<Duration>,
    /// The response cache's state between its lookup and its store.
    pub cache_fill: Option<Box<crate::cache::Fill>>,
    /// Whose token bucket pays for this request's usage (charged in `logging`).
    pub rate_limit: Option<crate::ratelimit::Charge>,
    /// The client API the request speaks, once routed to one (decides the error shape).
    pub dialect: Option<&'static dyn Dialect>,
    /// The tools a translated request left out (`X-Gateway-Dropped-Tools`), for the log line.
    pub dropped_tools: Option<String>,
    /// A Responses request's stored-response bookkeeping (`responses.rs`).
    pub responses: Option<Box<responses::Turn>>,
    /// The endpoint family, for metrics (`chat`, `responses`, `messages`, ...).
    pub endpoint: &'static str,
    /// The backend of a pool of several that served (or last tried) the request, and why the
    /// pool picked it (the log line's `backend=` and `pick=`).
    pub backend: Option<std::sync::Arc<str>>,
    pub pick: Option<&'static str>,
    /// The request's trace spans, while tracing is on (`crate::trace`).
    pub trace: Option<Box<crate::trace::RequestTrace>>,
    /// The key's budget reservation and allow-list (keys with a policy, or all while the admin
    /// API is on): settled in `logging`.
    pub tenant: Option<Box<crate::tenants::Admission>>,
    _inflight: InflightGuard,
}

impl Ctx {
    pub fn mark_first_byte(&mut self) {
        if self.ttfb.is_none() {
            self.ttfb = Some(self.start.elapsed());
        }
    }
}

fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|c| c.is_ascii_graphic())
}

/// `GATEWAY_REQUEST_TIMEOUT` ran out (the request's work, the upstream exchange with it, has
/// been dropped): a 504 in the client's shape when nothing was sent yet; a stream under way ends
/// with the client's error event. The connection is not kept (a write may have been cut).
async fn request_timed_out(session: &mut Session, ctx: &mut Ctx, limit: Duration) {
    let mut err = GatewayError::gateway_timeout(format!(
        "the request took longer than the gateway allows (GATEWAY_REQUEST_TIMEOUT={}s)",
        limit.as_secs_f64()
    ));
    err.code = Some("request_timeout".into());
    err.label = "request_timeout";
    session.set_keepalive(None);
    ctx.error = Some(err.message.clone());
    if !ctx.responded {
        respond_error(session, ctx, &err).await;
    } else if ctx.stream {
        let event = match ctx.dialect {
            Some(d) => d.error_event(&err),
            None => crate::dialects::openai_chat::OpenAiChat.error_event(&err),
        };
        // Blank lines first: the last event sent may not have ended.
        let mut out = bytes::BytesMut::with_capacity(event.len() + 2);
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(&event);
        ctx.bytes += out.len();
        let _ = session.write_response_body(out.freeze(), true).await;
    }
    ctx.outcome = "timeout";
    if let Some(p) = ctx.provider.as_deref() {
        crate::metrics::upstream_error(p, err.label);
    }
}

/// Writes a complete response with the gateway's standard headers.
pub async fn respond(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Bytes,
) {
    let head = match response_head(ctx, status, content_type, extra, Some(body.len())) {
        Ok(h) => h,
        Err(_) => return,
    };
    ctx.status = status;
    ctx.responded = true;
    let head_only = session.req_header().method == Method::HEAD;
    if session.write_response_header(Box::new(head)).await.is_err() {
        ctx.outcome = "client_closed";
        return;
    }
    if head_only || body.is_empty() {
        return;
    }
    ctx.mark_first_byte();
    ctx.bytes += body.len();
    if session.write_response_body(body, true).await.is_err() {
        ctx.outcome = "client_closed";
    }
}

/// A response head with `X-Request-Id`, `X-Provider` and the given headers.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const X_PROVIDER: http::HeaderName = http::HeaderName::from_static("x-provider");

pub fn response_head(
    ctx: &Ctx,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    content_length: Option<usize>,
) -> pingora::Result<ResponseHeader> {
    // No case map (names go out lower-case, as over HTTP/2), and constant names unparsed.
    let mut h = ResponseHeader::build_no_case(status, Some(4 + extra.len() + ctx.headers.len()))?;
    h.insert_header(http::header::CONTENT_TYPE, content_type)?;
    if let Some(n) = content_length {
        h.insert_header(http::header::CONTENT_LENGTH, http::HeaderValue::from(n))?;
    }
    h.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    h.insert_header(X_PROVIDER, ctx.provider.as_deref().unwrap_or("gateway"))?;
    for (k, v) in &ctx.headers {
        h.insert_header(*k, v.as_str())?;
    }
    for (k, v) in extra {
        h.append_header(k.to_string(), *v)?;
    }
    Ok(h)
}

/// Sends an error in OpenAI shape.
pub async fn respond_error(session: &mut Session, ctx: &mut Ctx, e: &GatewayError) {
    ctx.error = Some(e.message.clone());
    if ctx.outcome == "ok" {
        ctx.outcome = e.label;
    }
    let mut extra: Vec<(&str, &str)> = Vec::new();
    if let Some(r) = &e.retry_after {
        extra.push(("retry-after", r.as_str()));
    }
    if e.status == 405 {
        extra.push(("allow", allowed_methods(session.req_header().uri.path())));
    }
    if e.status == 413 {
        // The rest of the body is not read: the connection cannot be reused.
        session.set_keepalive(None);
    }
    let (status, body) = match (ctx.dialect, &e.native) {
        // An upstream of the client's own format said it in the client's shape: as it came.
        (Some(_), Some((status, body))) => (*status, body.clone()),
        (Some(d), None) => (d.status(e), d.error_body(e)),
        (None, _) => (e.status, e.body()),
    };
    respond(session, ctx, status, "application/json", &extra, body).await;
}

fn allowed_methods(path: &str) -> &'static str {
    match endpoint(path) {
        Some(Endpoint::Dialect(_))
        | Some(Endpoint::CountTokens(_))
        | Some(Endpoint::Embeddings)
        | Some(Endpoint::Api(_)) => "POST",
        Some(Endpoint::StoredResponse) => "GET, DELETE",
        _ => "GET, HEAD",
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    /// A client API that asks a model for an answer (OpenAI chat, ...).
    Dialect(&'static dyn Dialect),
    /// A dialect's token counting (`/v1/messages/count_tokens`).
    CountTokens(&'static dyn Dialect),
    Embeddings,
    /// `/v1/responses/{id}`: a stored response (`GET`, `DELETE`).
    StoredResponse,
    /// The OpenAI API's other endpoints (completions, moderations, images, audio, rerank).
    Api(&'static passthrough::Api),
    Models,
    /// `GET /v1/models/{model}`.
    Model,
    Health,
    Ready,
    ProvidersHealth,
    Metrics,
    /// `/admin/...` (the admin API, when on and no metrics listener serves it).
    Admin,
}

/// Paths are accepted with or without the `/v1` prefix.
fn endpoint(path: &str) -> Option<Endpoint> {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("/v1").unwrap_or(p);
    if let Some(d) = crate::dialects::for_path(p) {
        return Some(Endpoint::Dialect(d));
    }
    if let Some(d) = p
        .strip_suffix("/count_tokens")
        .and_then(crate::dialects::for_path)
        .filter(|d| d.count_tokens_body(0).is_some())
    {
        return Some(Endpoint::CountTokens(d));
    }
    if stored_response_id(p).is_some() {
        return Some(Endpoint::StoredResponse);
    }
    if let Some(api) = passthrough::for_path(p) {
        return Some(Endpoint::Api(api));
    }
    if p.starts_with("/models/") {
        return Some(Endpoint::Model);
    }
    if crate::tenants::admin::is_admin_path(path.trim_end_matches('/')) {
        return Some(Endpoint::Admin);
    }
    match p {
        "/embeddings" => Some(Endpoint::Embeddings),
        "/models" => Some(Endpoint::Models),
        "/health" | "/healthz" => Some(Endpoint::Health),
        "/ready" | "/readyz" => Some(Endpoint::Ready),
        "/health/providers" => Some(Endpoint::ProvidersHealth),
        "/metrics" => Some(Endpoint::Metrics),
        _ => None,
    }
}

/// The id in `/responses/{id}` (after the optional `/v1`), if the path is one.
fn stored_response_id(p: &str) -> Option<&str> {
    p.strip_prefix("/responses/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The endpoint family's name in metrics.
fn endpoint_label(ep: Endpoint) -> &'static str {
    match ep {
        Endpoint::Dialect(d) | Endpoint::CountTokens(d) => {
            let family = match d.name() {
                "openai.chat" => "chat",
                "openai.responses" => "responses",
                "anthropic.messages" => "messages",
                other => other,
            };
            if matches!(ep, Endpoint::CountTokens(_)) {
                match family {
                    "messages" => "messages_count_tokens",
                    _ => "count_tokens",
                }
            } else {
                family
            }
        }
        Endpoint::Embeddings => "embeddings",
        Endpoint::StoredResponse => "responses_stored",
        Endpoint::Api(api) => api.name,
        Endpoint::Models | Endpoint::Model => "models",
        Endpoint::Health | Endpoint::Ready | Endpoint::ProvidersHealth => "health",
        Endpoint::Metrics => "metrics",
        Endpoint::Admin => "admin",
    }
}

/// Reads the whole request body, up to `limit` bytes (413 above it).
/// Reads the whole request body, at most `limit` bytes, within `deadline`
/// (`GATEWAY_BODY_TIMEOUT`: a body trickled a byte at a time cannot hold the request for ever).
pub async fn read_body(
    session: &mut Session,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, GatewayError> {
    match tokio::time::timeout(deadline, read_body_unbounded(session, limit)).await {
        Ok(r) => r,
        Err(_) => {
            // The rest of the body is never read: the connection cannot carry another request.
            session.set_keepalive(None);
            Err(GatewayError::new(
                408,
                "invalid_request_error",
                Some("request_body_timeout"),
                format!(
                    "the request body did not arrive within {}s (GATEWAY_BODY_TIMEOUT)",
                    deadline.as_secs_f64()
                ),
            )
            .with_label("body_timeout"))
        }
    }
}

async fn read_body_unbounded(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            format!("the request body is larger than {limit} bytes (GATEWAY_MAX_BODY_BYTES)"),
        )
        .with_label("too_large")
    };
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(GatewayError::bad_request(
                    "",
                    format!("could not read the request body: {e}"),
                )
                .with_label("bad_body"))
            }
        }
    }
    Ok(buf.freeze())
}

impl Gateway {
    async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
        let (method, path) = {
            let h = session.req_header();
            (h.method.clone(), h.uri.path().to_string())
        };
        if method == Method::CONNECT {
            return Err(GatewayError::new(
                405,
                "invalid_request_error",
                Some("method_not_allowed"),
                "CONNECT is not supported: the gateway does not tunnel connections",
            ));
        }
        let ep = endpoint(&path)
            .ok_or_else(|| GatewayError::not_found(format!("no route for {method} {path}")))?;
        let is_get = method == Method::GET || method == Method::HEAD;
        ctx.endpoint = endpoint_label(ep);
        match ep {
            // Errors from here on (the key, rate limits) take the dialect's shape.
            Endpoint::Dialect(d) | Endpoint::CountTokens(d) => ctx.dialect = Some(d),
            Endpoint::StoredResponse => {
                ctx.dialect = crate::dialects::for_path("/responses");
            }
            Endpoint::Models | Endpoint::Model => {
                ctx.dialect = Some(crate::dialects::for_headers(&session.req_header().headers))
            }
            _ => {}
        }
        if matches!(
            ep,
            Endpoint::Dialect(_)
                | Endpoint::CountTokens(_)
                | Endpoint::Embeddings
                | Endpoint::StoredResponse
                | Endpoint::Api(_)
                | Endpoint::Models
                | Endpoint::Model
        ) {
            admit::admit(self, session, ctx).await?;
        }
        match ep {
            Endpoint::Health if is_get => {
                respond(
                    session,
                    ctx,
                    200,
                    "application/json",
                    &[],
                    Bytes::from_static(b"{\"status\":\"ok\"}"),
                )
                .await;
                Ok(())
            }
            Endpoint::Models if is_get => models::list(self, session, ctx).await,
            Endpoint::Model if is_get => models::retrieve(self, session, ctx, &path).await,
            Endpoint::Ready if is_get => {
                // Ready while at least one configured upstream provider can take a request;
                // with none configured (echo only), always.
                let pools = &self.router.pools;
                let ready = pools.is_empty() || pools.values().any(|p| p.is_available());
                let (status, body): (u16, &'static [u8]) = if ready {
                    (200, b"{\"status\":\"ready\"}")
                } else {
                    (503, b"{\"status\":\"unavailable\"}")
                };
                respond(
                    session,
                    ctx,
                    status,
                    "application/json",
                    &[],
                    Bytes::from_static(body),
                )
                .await;
                Ok(())
            }
            Endpoint::ProvidersHealth if is_get => {
                let body = crate::health::providers_status(&self.router.pools).to_string();
                respond(
                    session,
                    ctx,
                    200,
                    "application/json",
                    &[],
                    Bytes::from(body),
                )
                .await;
                Ok(())
            }
            // With GATEWAY_METRICS_LISTEN set, metrics stay off the public listener.
            Endpoint::Metrics if self.config.metrics_listen.is_some() => Err(
                GatewayError::not_found(format!("no route for {method} {path}")),
            ),
            Endpoint::Admin
                if self.config.metrics_listen.is_none() && self.tenants.admin_enabled() =>
            {
                let body = read_body(session, 1 << 20, self.config.body_timeout).await?;
                let h = session.req_header();
                let (status, out) = crate::tenants::admin::handle(
                    &self.tenants,
                    h.method.as_str(),
                    h.uri.path(),
                    h.uri.query(),
                    h.headers
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                    &body,
                )
                .await;
                respond(session, ctx, status, "application/json", &[], out).await;
                Ok(())
            }
            Endpoint::Admin => Err(GatewayError::not_found(format!(
                "no route for {method} {path}{}",
                if self.tenants.admin_enabled() {
                    " (the admin API is on the GATEWAY_METRICS_LISTEN listener)"
                } else {
                    " (the admin API is off: set GATEWAY_ADMIN_KEY)"
                }
            ))),
            Endpoint::Metrics if is_get => {
                let (ctype, body) = crate::metrics::render();
                respond(session, ctx, 200, &ctype, &[], Bytes::from(body)).await;
                Ok(())
            }
            Endpoint::Dialect(d) if method == Method::POST && d.name() == "openai.responses" => {
                responses::handle(self, session, ctx, d).await
            }
            Endpoint::Dialect(d) if method == Method::POST => {
                chat::handle(self, session, ctx, d).await
            }
            Endpoint::StoredResponse if method == Method::GET || method == Method::DELETE => {
                let p = path.trim_end_matches('/');
                let p = p.strip_prefix("/v1").unwrap_or(p);
                let mut rest = stored_response_id(p).unwrap_or_default().to_string();
                if let Some(q) = session.req_header().uri.query() {
                    rest = format!("{rest}?{q}");
                }
                responses::by_id(self, session, ctx, &rest).await
            }
            Endpoint::CountTokens(d) if method == Method::POST => {
                count_tokens::handle(self, session, ctx, d).await
            }
            Endpoint::Embeddings if method == Method::POST => {
                embeddings::handle(self, session, ctx).await
            }
            Endpoint::Api(api) if method == Method::POST => {
                passthrough::handle(self, session, ctx, api).await
            }
            _ => Err(GatewayError::method_not_allowed(method.as_str(), &path)),
        }
    }
}

impl Gateway {
    pub(crate) fn new_ctx(&self) -> Ctx {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ctx {
            request_id: String::new(),
            start: Instant::now(),
            model: None,
            provider: None,
            status: 0,
            outcome: "ok",
            stream: false,
            ttfb: None,
            usage: None,
            bytes: 0,
            attempts: 0,
            error: None,
            cache: None,
            key_name: None,
            upstream_model: None,
            responded: false,
            headers: Vec::new(),
            upstream_head: None,
            cache_fill: None,
            rate_limit: None,
            dialect: None,
            dropped_tools: None,
            backend: None,
            pick: None,
            responses: None,
            endpoint: "other",
            trace: None,
            tenant: None,
            _inflight: InflightGuard(self.inflight.clone()),
        }
    }

    /// Answers the request, errors included.
    pub(crate) async fn handle(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.start = Instant::now();
        ctx.request_id = match session.req_header().headers.get("x-request-id") {
            Some(v) if valid_request_id(v.as_bytes()) => {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            }
            _ => format!("req_{}", random_token(24)),
        };
        let h = session.req_header();
        // Health probes and scrapes are not traced (nor counted in metrics).
        if crate::trace::enabled() && !crate::metrics::is_probe(h.uri.path()) {
            ctx.trace = crate::trace::start(&h.headers, h.method.as_str());
        }
        let routed = match self.config.request_timeout {
            None => self.route(session, ctx).await,
            Some(limit) => match tokio::time::timeout(limit, self.route(session, ctx)).await {
                Ok(r) => r,
                Err(_) => return request_timed_out(session, ctx, limit).await,
            },
        };
        if let Err(e) = routed {
            if !ctx.responded {
                respond_error(session, ctx, &e).await;
            }
        }
    }

    /// Charges the rate limits, records the metrics and writes the request's log line.
    pub(crate) async fn log(&self, session: &Session, ctx: &mut Ctx) {
        if let (Some(c), Some(u)) = (ctx.rate_limit.take(), ctx.usage) {
            self.limiter.charge(&c, u.total_tokens).await;
        }
        let h = session.req_header();
        let usage = ctx.usage;
        let upstream_model = ctx.upstream_model.as_deref().or(ctx.model.as_deref());
        let cost_usd = match (ctx.provider.as_deref(), upstream_model, usage) {
            (Some(p), Some(m), Some(u)) => crate::pricing::cost_usd(p, m, &u),
            _ => None,
        };
        if let Some(t) = ctx.tenant.take() {
            let answered = (200..300).contains(&ctx.status);
            // A cache hit cost the provider nothing: usage, but no spend.
            let spent = if ctx.cache == Some("hit") {
                Some(0.0)
            } else {
                cost_usd
            };
            self.tenants
                .settle(t, upstream_model, usage, spent, answered)
                .await;
        }
        if !crate::metrics::is_probe(h.uri.path()) {
            crate::metrics::request(&crate::metrics::RequestRecord {
                endpoint: ctx.endpoint,
                provider: ctx.provider.as_deref(),
                model: upstream_model,
                status: ctx.status,
                cache: ctx.cache,
                stream: ctx.stream,
                latency: ctx.start.elapsed(),
                ttfb: ctx.ttfb,
                usage,
                cost_usd,
            });
        }
        let line = RequestLog {
            req: &ctx.request_id,
            method: h.method.as_str(),
            path: h.uri.path(),
            model: ctx.model.as_deref(),
            provider: ctx.provider.as_deref(),
            status: ctx.status,
            outcome: ctx.outcome,
            cache: ctx.cache,
            key: ctx.key_name.as_deref(),
            stream: ctx.stream,
            latency_ms: duration_ms(ctx.start.elapsed()),
            ttfb_ms: ctx.ttfb.map(duration_ms),
            prompt_tokens: usage.map(|u| u.prompt_tokens),
            completion_tokens: usage.map(|u| u.completion_tokens),
            tokens: usage.map(|u| u.total_tokens).unwrap_or(0),
            cost_usd,
            bytes: ctx.bytes,
            attempts: ctx.attempts,
            error: ctx.error.as_deref(),
            dropped_tools: ctx.dropped_tools.as_deref(),
            backend: ctx.backend.as_deref(),
            pick: ctx.pick,
        };
        line.emit(self.config.log_format);
        if let Some(t) = ctx.trace.take() {
            t.finish(&crate::trace::Summary {
                method: h.method.as_str(),
                path: h.uri.path(),
                endpoint: ctx.endpoint,
                status: ctx.status,
                outcome: ctx.outcome,
                request_id: &ctx.request_id,
                model: ctx.model.as_deref(),
                provider: ctx.provider.as_deref(),
                upstream_model,
                key_name: ctx.key_name.as_deref(),
                cache: ctx.cache,
                stream: ctx.stream,
                attempts: ctx.attempts,
                usage,
                cost_usd,
                ttfb: ctx.ttfb,
                error: ctx.error.as_deref(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_and_without_v1() {
        let chat = |e: Option<Endpoint>| matches!(e, Some(Endpoint::Dialect(d)) if d.name() == "openai.chat");
        assert!(chat(endpoint("/v1/chat/completions")));
        assert!(chat(endpoint("/chat/completions/")));
        assert!(matches!(endpoint("/v1/models"), Some(Endpoint::Models)));
        assert!(matches!(endpoint("/health"), Some(Endpoint::Health)));
        assert!(endpoint("/v1/nope").is_none());
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(b"abc-123"));
        assert!(!valid_request_id(b"has space"));
        assert!(!valid_request_id(b""));
    }
}
