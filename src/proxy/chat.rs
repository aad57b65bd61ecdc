//! The model-answering endpoints, one lifecycle for every client dialect
//! (`/v1/chat/completions`, `/v1/messages`, `/v1/responses`): parse with the dialect, resolve, look up the cache, exchange with
//! the upstream (failing over between candidates), and answer the client in its dialect (JSON,
//! or a stream forwarded chunk by chunk as it arrives).

use bytes::BytesMut;

use std::time::{Duration, Instant};

use super::{cache, read_body, respond, response_head, Ctx, Gateway, Session};
use crate::api::{unix_now, ChatRequest};
use crate::balance::PromptKey;
use crate::cache::assemble::RecordAnswers;
use crate::canonical::{AnswerWriter, EventWriter, Usage};
use crate::config::BaseUrl;
use crate::dialects::{Dialect, KEEPALIVE_EVERY};
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::{echo, CallInfo, StreamStatus};
use crate::routing::{all_unavailable, Route};
use crate::upstream::{SendError, UpstreamResponse, MAX_ERROR_BODY};

/// Largest non-streamed upstream answer the gateway accepts.
pub(super) const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// How one attempt against one upstream ended.
pub enum Attempt {
    /// The client got its answer (possibly a stream that ended with an error event).
    Served,
    /// Nothing reached the client; `retryable` says whether another provider may be tried.
    Failed { err: GatewayError, retryable: bool },
}

/// Statuses after which another provider is tried.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    dialect: &'static dyn Dialect,
) -> Result<(), GatewayError> {
    let body = read_body(session, gw.config.max_body_bytes, gw.config.body_timeout).await?;
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.prompt(&body);
    }
    let req = dialect.parse(&body, gw.cache.enabled())?;
    run(gw, session, ctx, dialect, req, &Options::default()).await
}

/// What an endpoint family adds to the lifecycle (`responses.rs`: a follow-up to a response
/// a native upstream made must go to that provider; stored responses skip the cache).
#[derive(Default)]
pub(super) struct Options {
    /// Only this provider may serve the request, and why (the error when the model routes
    /// elsewhere).
    pub pin: Option<(String, GatewayError)>,
    /// Neither look up nor store the answer in the response cache.
    pub bypass_cache: bool,
}

/// The lifecycle after the request was parsed (with spans for the cache key unless
/// `options.bypass_cache`).
pub(super) async fn run(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    dialect: &'static dyn Dialect,
    req: ChatRequest,
    options: &Options,
) -> Result<(), GatewayError> {
    ctx.model = Some(req.model.clone());
    ctx.stream = req.stream;
    let failover = !session
        .req_header()
        .headers
        .get(FAILOVER_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("off"));
    let mut routes = gw.router.plan(&req.model, failover)?;
    if let Some((provider, err)) = &options.pin {
        routes.retain(|r| r.provider_name() == provider);
        if routes.is_empty() {
            return Err(err.clone());
        }
    }
    if ctx.tenant.is_some() {
        super::tenant::allow(ctx, &req.model, &mut routes)?;
        let (prompt, completion) = super::tenant::worst_tokens(gw, &req);
        super::tenant::reserve(gw, ctx, &routes, prompt, completion).await?;
    }
    let Some(first) = routes.first() else {
        return Err(all_unavailable(Duration::from_secs(1)));
    };
    ctx.provider = Some(first.provider_name().to_string());
    ctx.upstream_model = Some(first.upstream_model.clone());
    // The cache key names the first candidate (the model's own provider, or for a pool the
    // one the strategy picked). A request only its own dialect's format can carry has no
    // canonical form to key.
    if !options.bypass_cache && gw.cache.enabled() && req.untranslatable().is_none() {
        let span = ctx.trace.as_ref().map(|t| t.child("gateway.cache.lookup"));
        let hit = cache::lookup(gw, session, ctx, &req, first, dialect).await;
        crate::trace::end_cache_lookup(span, ctx.cache);
        if hit? {
            return Ok(());
        }
    }
    let result = run_candidates(gw, session, ctx, &req, &routes, dialect).await;
    // Releases coalesced followers and stores the answer, whatever the outcome.
    cache::finish(gw, ctx).await;
    result
}

/// Request header that turns failover off for one request.
pub const FAILOVER_HEADER: &str = "x-gateway-failover";

/// Tries the candidates in order (each backend of a pool at most once) until one serves the
/// request or `GATEWAY_RETRY_MAX` retries are spent.
async fn run_candidates(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    routes: &[Route],
    dialect: &'static dyn Dialect,
) -> Result<(), GatewayError> {
    let max_attempts = 1 + gw.config.routing.retry_max;
    let lone = routes.len() == 1;
    let mut last_upstream_err: Option<GatewayError> = None;
    let mut last_err: Option<GatewayError> = None;
    let mut previous: Option<(String, Duration)> = None;
    // The prompt's block hashes, made once, when a pool that routes by prefix is reached.
    let mut prompt: Option<PromptKey> = None;
    'routes: for route in routes {
        let name = route.provider_name().to_string();
        let pool = gw.router.pool(&name);
        let mut tried: Vec<usize> = Vec::new();
        loop {
            if ctx.attempts as usize >= max_attempts {
                break 'routes;
            }
            // Which backend: the pool's pick (breakers, active checks, round robin). A lone
            // candidate whose backends all cool down is still tried: there is no alternative.
            let backend = match pool {
                None => None,
                Some(p) => {
                    if prompt.is_none() && p.balance.wants_prompt() {
                        prompt = Some(prompt_key(req));
                    }
                    match p.pick_for(&tried, prompt.as_ref()) {
                        Some((i, _, why)) => {
                            if p.backends.len() > 1 {
                                ctx.pick = Some(why.as_str());
                            }
                            Some(i)
                        }
                        None if lone && tried.is_empty() => Some(0),
                        None => continue 'routes,
                    }
                }
            };
            if let Some(i) = backend {
                tried.push(i);
            }
            ctx.attempts += 1;
            if let Some((from, took)) = &previous {
                crate::metrics::failover(from, &name);
                log::info!(
                    "failover from={} to={} attempt={} latency={}ms",
                    from,
                    name,
                    ctx.attempts,
                    took.as_millis()
                );
            }
            ctx.provider = Some(name.clone());
            ctx.upstream_model = Some(route.upstream_model.clone());
            // The one place pass-through is decided: the client's dialect is the provider's
            // wire format.
            let passthrough = route
                .provider
                .speaks(dialect.native_format(), &route.upstream_model);
            let call = CallInfo {
                client_model: req.model.clone(),
                upstream_model: route.upstream_model.clone(),
                stream: req.stream,
                include_usage: req.include_usage,
                parallel_tool_calls: req.parallel_tool_calls(),
                passthrough,
                client_format: dialect.native_format(),
                client_headers: if passthrough {
                    forwarded_headers(session)
                } else {
                    Vec::new()
                },
            };
            super::responses::attempting(ctx, &name, passthrough);
            let started = Instant::now();
            let target = backend.and_then(|i| pool.and_then(|p| p.backends.get(i)));
            let url = target.map(|b| &b.url);
            // In flight on its backend until the attempt ends (a stream: after its last byte).
            let _in_flight = match (pool, backend) {
                (Some(p), Some(i)) => {
                    if p.backends.len() > 1 {
                        ctx.backend = p.balance.replica(i).map(|r| r.label().clone());
                    }
                    p.start(i)
                }
                _ => None,
            };
            if let Some(t) = ctx.trace.as_deref_mut() {
                let op = crate::trace::operation(ctx.endpoint).unwrap_or("chat");
                t.start_attempt(op, &name, &route.upstream_model, ctx.attempts);
            }
            let result = attempt(gw, session, ctx, req, route, &call, url, dialect).await;
            if let Some(t) = ctx.trace.as_deref_mut() {
                match &result {
                    Attempt::Served if ctx.outcome == "stream_error" => {
                        let msg = ctx.error.as_deref().unwrap_or_default();
                        t.end_attempt(Some(("stream_error", msg)), None, ctx.usage)
                    }
                    Attempt::Served => t.end_attempt(None, None, ctx.usage),
                    Attempt::Failed { err, .. } => t.end_attempt(
                        Some((err.label, &err.message)),
                        err.upstream.then_some(err.status),
                        None,
                    ),
                }
            }
            match result {
                Attempt::Served => {
                    if let (Some(p), Some(b)) = (pool, target) {
                        b.breaker.record_success();
                        if let Some(head) = ctx.upstream_head {
                            p.record_latency(head);
                        }
                    }
                    return Ok(());
                }
                Attempt::Failed { err, retryable } => {
                    if let Some(b) = target {
                        if retryable {
                            b.breaker.record_failure(&failure_reason(&err));
                        } else {
                            // The client's own error: the provider answered, so it is up.
                            b.breaker.record_success();
                        }
                    }
                    if !retryable {
                        return Err(err);
                    }
                    if err.upstream {
                        last_upstream_err = Some(err.clone());
                    }
                    last_err = Some(err);
                    previous = Some((name.clone(), started.elapsed()));
                    if pool.is_none() {
                        continue 'routes;
                    }
                }
            }
        }
    }
    // Nothing served the request.
    if ctx.attempts <= 1 {
        return Err(last_err.unwrap_or_else(|| all_unavailable(Duration::from_secs(1))));
    }
    if let Some(e) = last_upstream_err {
        return Err(e);
    }
    let wait = routes
        .iter()
        .filter_map(|r| gw.router.pool(r.provider_name()))
        .map(|p| p.retry_in())
        .min()
        .unwrap_or_default();
    let mut e = all_unavailable(wait);
    if let Some(last) = last_err {
        e.message = format!("{} (last error: {})", e.message, last.message);
    }
    Err(e)
}

/// The prompt text a pool's prefix affinity hashes: the client's body as sent when it came in
/// another dialect (no translation is run for it), else the tools and messages as sent.
fn prompt_key(req: &ChatRequest) -> PromptKey {
    if let Some(native) = req.native_body() {
        return PromptKey::new(&[native]);
    }
    let tools = req
        .fields()
        .iter()
        .find(|(k, _)| k == "tools")
        .map_or(&b""[..], |(_, v)| v.get().as_bytes());
    PromptKey::new(&[tools, req.messages_raw().as_bytes()])
}

/// Client headers a pass-through forwards upstream: the Messages API's version and beta flags.
const FORWARDED: &[&str] = &["anthropic-version", "anthropic-beta"];

pub(super) fn forwarded_headers(session: &Session) -> Vec<(&'static str, String)> {
    let headers = &session.req_header().headers;
    let mut out = Vec::new();
    for name in FORWARDED {
        // A header sent several times goes as one, its values joined (`anthropic-beta`).
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            out.push((*name, values.join(",")));
        }
    }
    out
}

/// How a failure reads in the health log line.
pub(super) fn failure_reason(err: &GatewayError) -> String {
    if err.upstream {
        format!("{} from upstream", err.status)
    } else {
        err.label.to_string()
    }
}

/// One attempt against one route.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    route: &Route,
    call: &CallInfo,
    backend: Option<&BaseUrl>,
    dialect: &'static dyn Dialect,
) -> Attempt {
    let cfg = route.provider.config();
    // Only a translated attempt reads the canonical request (a deferred one is built here).
    if let Some(err) = (!call.passthrough).then(|| req.untranslatable()).flatten() {
        return Attempt::Failed {
            err: err.clone(),
            retryable: false,
        };
    }
    note_dropped_tools(ctx, req, !call.passthrough);
    if cfg.format == "echo" {
        serve_echo(gw, session, ctx, req, call, dialect).await;
        return Attempt::Served;
    }
    let Some(backend) = backend.or(cfg.backends.first()) else {
        return Attempt::Failed {
            err: GatewayError::internal(format!("provider {} has no backend", cfg.name)),
            retryable: true,
        };
    };
    // A cloud's access token, when it must be fetched first (Vertex AI).
    if let Some(wait) = route.provider.ready() {
        if let Err(err) = wait.await {
            metrics::upstream_error(&cfg.name, err.label);
            return Attempt::Failed {
                err,
                retryable: true,
            };
        }
    }
    let mut up_req = match route.provider.chat_request(req, call, backend) {
        Ok(r) => r,
        Err(err) => {
            return Attempt::Failed {
                err,
                retryable: false,
            }
        }
    };
    if let Some(t) = &ctx.trace {
        up_req.propagation = Some(t.propagation());
    }
    // Wait for the response head, or for the client to hang up (which cancels the upstream
    // request by dropping it).
    let asked = Instant::now();
    let sent = tokio::select! {
        r = gw.upstreams.send(backend, &up_req) => r,
        _ = client_gone(session) => {
            ctx.outcome = "client_closed";
            return Attempt::Served;
        }
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let err = e.into_gateway(&cfg.name);
            metrics::upstream_error(&cfg.name, err.label);
            return Attempt::Failed {
                err,
                retryable: true,
            };
        }
    };
    ctx.upstream_head = Some(asked.elapsed());
    let status = resp.status();
    if !(200..300).contains(&status) {
        let retry_after = resp.header("retry-after").map(str::to_string);
        let error_type = route
            .provider
            .error_type_header()
            .and_then(|h| resp.header(h))
            .map(str::to_string);
        let body = resp.read_all(MAX_ERROR_BODY).await.unwrap_or_default();
        resp.release().await;
        let mut err = route
            .provider
            .typed_error(status, &body, error_type.as_deref());
        err.upstream = true;
        if call.passthrough && dialect.is_error_body(&body) {
            // Untouched but for secrets the upstream echoed.
            let body = crate::redact::body(body);
            err.native = Some((status, body));
        }
        if err.retry_after.is_none() {
            err.retry_after = retry_after;
        }
        metrics::upstream_error(&cfg.name, err.label);
        return Attempt::Failed {
            retryable: retryable_status(status) || retryable_status(err.status),
            err,
        };
    }
    if call.stream {
        stream_response(gw, session, ctx, req, route, call, resp, dialect).await
    } else {
        let body = match read_answer(gw, ctx, &cfg.name, resp).await {
            Ok(b) => b,
            Err(failed) => return failed,
        };
        // A pass-through writes no answer: its writer is the plain one, so a deferred
        // request is never translated for it.
        let for_req;
        let answers: &dyn AnswerWriter = if call.passthrough {
            dialect.answers()
        } else {
            for_req = dialect.answers_for(req);
            &*for_req
        };
        let recorder = cache::answer_recorder(ctx, call, answers);
        let writer = match &recorder {
            Some(r) => r as &dyn AnswerWriter,
            None => answers,
        };
        match route.provider.chat_response(body, call, writer) {
            Ok(t) => {
                ctx.usage = t.usage;
                let body = t.body;
                cache::record_plain(ctx, call, &body, recorder);
                cache::store_complete(gw, ctx).await;
                super::responses::complete(gw, ctx, Some(&body)).await;
                respond(session, ctx, 200, "application/json", &[], body).await;
                Attempt::Served
            }
            Err(err) => {
                metrics::upstream_error(&cfg.name, err.label);
                Attempt::Failed {
                    err,
                    retryable: true,
                }
            }
        }
    }
}

/// An upstream body cut short after its head (`what`: "the stream", "its answer"): a plain
/// message and a code of its own, Pingora's wording only in the debug log.
fn cut_short(e: SendError, provider: &str, what: &str, idle: std::time::Duration) -> GatewayError {
    log::debug!("provider {provider}: {what} was cut short: {e:?}");
    match e {
        SendError::Timeout(_) => GatewayError::gateway_timeout(format!(
            "provider {provider} stopped sending {what} (nothing for {}s, GATEWAY_IDLE_TIMEOUT)",
            idle.as_secs_f64()
        )),
        SendError::Connect(_) | SendError::Broken(_) => {
            let mut err = GatewayError::bad_gateway(format!(
                "provider {provider} closed the connection before {what} was complete"
            ));
            err.code = Some("upstream_body_interrupted".into());
            err.label = "upstream_interrupted";
            err
        }
    }
}

/// Reports the tools a translation left out (`X-Gateway-Dropped-Tools`, the log line), for
/// the attempt about to answer: none when it passes the request through (`translated` false:
/// the upstream runs them), though a translated attempt before it failed over.
pub(super) fn note_dropped_tools(ctx: &mut Ctx, req: &ChatRequest, translated: bool) {
    if !translated {
        if ctx.dropped_tools.take().is_some() {
            ctx.headers.retain(|(k, _)| *k != DROPPED_TOOLS_HEADER);
        }
        return;
    }
    if ctx.dropped_tools.is_some() {
        return;
    }
    if let Some(d) = req.notes().and_then(|n| n.dropped_tools.as_ref()) {
        ctx.headers.push((DROPPED_TOOLS_HEADER, d.clone()));
        ctx.dropped_tools = Some(d.clone());
    }
}

/// Response header naming the tools a translated request left out.
pub const DROPPED_TOOLS_HEADER: &str = "x-gateway-dropped-tools";

/// Resolves when the client has gone away (reset, closed). Pending otherwise.
async fn client_gone(session: &mut Session) {
    loop {
        match session.read_body_or_idle(true).await {
            Ok(Some(_)) => continue,
            _ => return,
        }
    }
}

async fn write_stream_head(session: &mut Session, ctx: &mut Ctx) -> bool {
    let mut extra: Vec<(&str, &str)> = vec![("cache-control", "no-cache")];
    if !session.is_http2() {
        extra.push(("transfer-encoding", "chunked"));
    }
    let head = match response_head(ctx, 200, "text/event-stream", &extra, None) {
        Ok(h) => h,
        Err(_) => return false,
    };
    ctx.status = 200;
    ctx.responded = true;
    session.write_response_header(Box::new(head)).await.is_ok()
}

async fn write_chunk(session: &mut Session, ctx: &mut Ctx, out: &mut BytesMut, end: bool) -> bool {
    if out.is_empty() && !end {
        return true;
    }
    ctx.mark_first_byte();
    ctx.bytes += out.len();
    let data = out.split().freeze();
    super::responses::tee(ctx, &data);
    // The cache reads a copy only after the client has the bytes: it never delays them.
    let copy = cache::wants_tee(ctx).then(|| data.clone());
    let ok = session.write_response_body(data, end).await.is_ok();
    if let (true, Some(copy)) = (ok, copy) {
        cache::tee(ctx, &copy);
    }
    ok
}

/// Writes the end of a complete, successful stream. The cache stores the answer first, so a
/// request that follows at once (on this instance or another sharing Redis) finds it; the
/// client waits for a memory insert or one Redis write, once per stream.
async fn write_last(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    out: &mut BytesMut,
) -> bool {
    // A stored response is kept before its last bytes go out, like the cache's entry.
    if super::responses::wants_tee(ctx) {
        super::responses::tee(ctx, out);
        super::responses::complete(gw, ctx, None).await;
    }
    if cache::wants_tee(ctx) {
        ctx.mark_first_byte();
        ctx.bytes += out.len();
        let data = out.split().freeze();
        cache::tee(ctx, &data);
        cache::store_complete(gw, ctx).await;
        return session.write_response_body(data, true).await.is_ok();
    }
    write_chunk(session, ctx, out, true).await
}

/// A complete upstream answer, read whole (the connection back to the pool) with the secrets
/// it echoed cut out, and seen by the trace; a body cut short fails the attempt.
async fn read_answer(
    gw: &Gateway,
    ctx: &mut Ctx,
    provider: &str,
    mut resp: UpstreamResponse<'_>,
) -> Result<bytes::Bytes, Attempt> {
    let body = match resp.read_all(MAX_RESPONSE_BODY).await {
        Ok(b) => b,
        Err(e) => {
            resp.abort().await;
            let err = cut_short(e, provider, "its answer", gw.upstreams.timeouts.idle);
            metrics::upstream_error(provider, err.label);
            return Err(Attempt::Failed {
                err,
                retryable: true,
            });
        }
    };
    resp.release().await;
    // Secrets an upstream echoed never reach the client (nor the cache): cut out of the
    // upstream's own bytes, before a translation adds the gateway's (a Responses answer echoes
    // the request's settings: three times the bytes to scan).
    let body = crate::redact::body(body);
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.observe(&body);
    }
    Ok(body)
}

/// An upstream that answered a streamed request with one complete JSON answer (some
/// OpenAI-compatible servers ignore `stream`): decoded as the complete answer it is and sent to
/// the client as its dialect's stream, the way a cache hit is, instead of JSON bytes inside an
/// event stream and a truncated-stream error. A body that is no chat completion, or one of
/// several choices, fails the attempt.
#[allow(clippy::too_many_arguments)]
async fn json_as_stream(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    route: &Route,
    call: &CallInfo,
    resp: UpstreamResponse<'_>,
    dialect: &'static dyn Dialect,
) -> Attempt {
    let provider = route.provider_name();
    let body = match read_answer(gw, ctx, provider, resp).await {
        Ok(b) => b,
        Err(failed) => return failed,
    };
    // Decoded as the non-streamed answer it is, into canonical answers.
    let decode = CallInfo {
        stream: false,
        passthrough: false,
        ..call.clone()
    };
    // The cache's recorder keeps the one canonical answer (its usage filled in) that the
    // dialect's plain writer is given; that body itself is not sent.
    let kept = RecordAnswers::new(dialect.answers());
    if let Err(err) = route.provider.chat_response(body, &decode, &kept) {
        metrics::upstream_error(provider, err.label);
        return Attempt::Failed {
            err,
            retryable: true,
        };
    }
    let choices = kept.choices();
    let Some(answer) = kept.take() else {
        let (why, retryable) = if choices > 1 {
            (
                format!(
                    "it answered a streamed request with one JSON answer of {choices} choices, \
                     which the gateway does not replay as a stream"
                ),
                false,
            )
        } else {
            (
                "it answered a streamed request with JSON that is not a chat completion".into(),
                true,
            )
        };
        let err = crate::providers::translate::bad_upstream_body(provider, why);
        metrics::upstream_error(provider, err.label);
        return Attempt::Failed { err, retryable };
    };
    log::debug!("provider {provider}: answered a streamed request with JSON; sent as a stream");
    ctx.usage = answer.usage;
    let mut w = cache::tee_events(ctx, dialect.events_for(req, &call.client_model));
    let mut out = BytesMut::with_capacity(512 + answer.content.as_ref().map_or(0, String::len));
    crate::dialects::replay(w.as_mut(), &mut out, &answer, req.include_usage);
    if !write_stream_head(session, ctx).await || !write_last(gw, session, ctx, &mut out).await {
        ctx.outcome = "client_closed";
    }
    Attempt::Served
}

/// Forwards a successful upstream stream, translated, chunk by chunk. Nothing is written to
/// the client until the first translated bytes exist, so a stream that dies before that can
/// still be retried elsewhere.
#[allow(clippy::too_many_arguments)]
async fn stream_response(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    route: &Route,
    call: &CallInfo,
    mut resp: UpstreamResponse<'_>,
    dialect: &'static dyn Dialect,
) -> Attempt {
    if resp
        .header("content-type")
        .is_some_and(|t| !t.starts_with("text/event-stream") && t.contains("json"))
    {
        return json_as_stream(gw, session, ctx, req, route, call, resp, dialect).await;
    }
    let provider = route.provider_name().to_string();
    let _active = metrics::StreamGuard::new();
    // Between a dialect and its own wire format the provider forwards the upstream's bytes and
    // never writes an event: it gets a writer that is nothing (and allocates nothing).
    let writer: Box<dyn EventWriter> = if call.passthrough {
        cache::passthrough_stream(ctx, call);
        Box::new(Passthrough)
    } else {
        cache::tee_events(ctx, dialect.events_for(req, &call.client_model))
    };
    let on_failure = writer.on_failure();
    let mut tr = route.provider.stream_translator(call, writer);
    // A translated stream whose upstream falls silent gets the dialect's keep-alive (a
    // pass-through stream carries the upstream's own).
    let keepalive = if call.passthrough {
        None
    } else {
        dialect.keepalive()
    };
    let mut out = BytesMut::with_capacity(4096);
    let mut started = false;
    // Secrets an upstream echoes are cut out of what goes to the client (and the cache).
    let mut redactor = crate::redact::StreamRedactor::new();
    // Whether what went out so far ends between events (a pass-through upstream's last event
    // may lack its blank line: the gateway's error event must not be glued onto it).
    let mut between_events = true;
    loop {
        // The upstream read is never dropped half-way (a keep-alive goes out while it waits).
        let woke = {
            let chunk = resp.chunk();
            tokio::pin!(chunk);
            loop {
                tokio::select! {
                    c = &mut chunk => break Some(c),
                    _ = client_gone(session) => break None,
                    _ = tokio::time::sleep(KEEPALIVE_EVERY), if started && keepalive.is_some() => {
                        if let Some(k) = &keepalive {
                            out.extend_from_slice(k);
                        }
                        redactor.apply(&mut out, false);
                        if !write_chunk(session, ctx, &mut out, false).await {
                            break None;
                        }
                    }
                }
            }
        };
        let Some(next) = woke else {
            ctx.outcome = "client_closed";
            resp.abort().await;
            return Attempt::Served;
        };
        let status = match next {
            Ok(Some(chunk)) => {
                if let Some(t) = ctx.trace.as_deref_mut() {
                    t.observe(&chunk);
                }
                tr.feed(&chunk, &mut out)
            }
            Ok(None) => tr.finish(&mut out),
            Err(e) => StreamStatus::Failed(
                cut_short(e, &provider, "the stream", gw.upstreams.timeouts.idle)
                    .with_label("stream_interrupted"),
            ),
        };
        ctx.usage = tr.usage().or(ctx.usage);
        if let StreamStatus::Failed(err) = status {
            metrics::upstream_error(&provider, err.label);
            resp.abort().await;
            if !started && out.is_empty() {
                return Attempt::Failed {
                    err,
                    retryable: true,
                };
            }
            // Bytes already reached the client: the stream ends with an error event, never
            // silently.
            if !started && !write_stream_head(session, ctx).await {
                ctx.outcome = "client_closed";
                return Attempt::Served;
            }
            redactor.apply(&mut out, true);
            if !out.is_empty() {
                between_events = out.ends_with(b"\n\n") || out.ends_with(b"\r\n\r\n");
            }
            if !between_events {
                out.extend_from_slice(b"\n\n");
            }
            match (tr.failure_event(&err), &on_failure) {
                // A pass-through that words the failure itself (a native Responses stream).
                (Some(ev), _) => out.extend_from_slice(&ev),
                (None, Some(f)) => {
                    let code = err.code.as_deref().unwrap_or(err.kind.as_str());
                    out.extend_from_slice(&f.event(code, &err.message));
                }
                (None, None) => out.extend_from_slice(&dialect.error_event(&err)),
            }
            ctx.outcome = "stream_error";
            ctx.error = Some(err.message.clone());
            write_chunk(session, ctx, &mut out, true).await;
            return Attempt::Served;
        }
        if !out.is_empty() && !started {
            started = true;
            if !write_stream_head(session, ctx).await {
                ctx.outcome = "client_closed";
                resp.abort().await;
                return Attempt::Served;
            }
        }
        let done = status == StreamStatus::Done;
        if done && !started {
            started = true;
            if !write_stream_head(session, ctx).await {
                ctx.outcome = "client_closed";
                resp.abort().await;
                return Attempt::Served;
            }
        }
        redactor.apply(&mut out, done);
        if !out.is_empty() {
            between_events = out.ends_with(b"\n\n") || out.ends_with(b"\r\n\r\n");
        }
        let written = if done {
            write_last(gw, session, ctx, &mut out).await
        } else {
            write_chunk(session, ctx, &mut out, false).await
        };
        if !written {
            ctx.outcome = "client_closed";
            resp.abort().await;
            return Attempt::Served;
        }
        if done {
            // Let the connection go back to the pool if the body ends right after [DONE].
            let drain = async {
                while let Ok(Some(_)) = resp.chunk().await {}
                resp
            };
            if let Ok(resp) = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await {
                resp.release().await;
            }
            return Attempt::Served;
        }
    }
}

/// The writer a pass-through stream is given: the provider forwards bytes and writes no
/// event, so there is nothing to write them with.
struct Passthrough;

impl EventWriter for Passthrough {
    fn id(&mut self, _: &str) {}
    fn role(&mut self, _: &mut BytesMut, _: u32) {}
    fn text(&mut self, _: &mut BytesMut, _: u32, _: &str) {}
    fn tool_start(&mut self, _: &mut BytesMut, _: u32, _: u32, _: &str, _: &str) {}
    fn tool_args(&mut self, _: &mut BytesMut, _: u32, _: u32, _: &str) {}
    fn finish(&mut self, _: &mut BytesMut, _: u32, _: &str) {}
    fn usage(&mut self, _: &mut BytesMut, _: &Usage) {}
    fn done(&mut self, _: &mut BytesMut) {}
}

/// The offline `echo` provider: its answer written in the client's dialect, streamed word by
/// word (with `GATEWAY_ECHO_CHUNK_DELAY_MS` between words) when asked.
/// An `echo` stream is written to the client whenever this much of it is ready.
const ECHO_FLUSH_BYTES: usize = 32 * 1024;

async fn serve_echo(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    call: &CallInfo,
    dialect: &'static dyn Dialect,
) {
    let answer = echo::answer(req);
    ctx.usage = answer.usage;
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.answered(Some(&call.client_model), Some(&answer.finish_reason));
    }
    if !call.stream {
        cache::record_answer(ctx, &answer);
        cache::store_complete(gw, ctx).await;
        let body = dialect.answers_for(req).answer_body(
            "",
            unix_now(),
            &call.client_model,
            std::slice::from_ref(&answer),
            answer.usage.as_ref(),
        );
        super::responses::complete(gw, ctx, Some(&body)).await;
        respond(session, ctx, 200, "application/json", &[], body).await;
        return;
    }
    // The answer is known: the cache need not read it back from the stream.
    cache::record_answer(ctx, &answer);
    if !write_stream_head(session, ctx).await {
        ctx.outcome = "client_closed";
        return;
    }
    let _active = metrics::StreamGuard::new();
    let delay = gw.config.echo_chunk_delay;
    let mut w = dialect.events_for(req, &call.client_model);
    let mut out = BytesMut::with_capacity(1024);
    w.role(&mut out, 0);
    let text = answer.content.clone().unwrap_or_default();
    for piece in echo::word_pieces(&text) {
        w.text(&mut out, 0, piece);
        // Written as it is made: a stream's memory stays bounded whatever the answer's length.
        if !delay.is_zero() || out.len() >= ECHO_FLUSH_BYTES {
            if !write_chunk(session, ctx, &mut out, false).await {
                ctx.outcome = "client_closed";
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
    for (i, t) in answer.tool_calls.iter().enumerate() {
        w.tool_start(&mut out, 0, i as u32, &t.id, &t.name);
        w.tool_args(&mut out, 0, i as u32, &t.arguments);
    }
    w.finish(&mut out, 0, &answer.finish_reason);
    if call.include_usage {
        if let Some(u) = &answer.usage {
            w.usage(&mut out, u);
        }
    }
    w.done(&mut out);
    if !write_last(gw, session, ctx, &mut out).await {
        ctx.outcome = "client_closed";
    }
}
