//! The rest of the OpenAI API a client library calls: legacy `/v1/completions`, moderations,
//! image generations and edits, audio speech, transcriptions and translations, and rerank
//! (`/v1/rerank`, `/rerank`, `/v2/rerank`, as vLLM serves them).
//!
//! One lifecycle for all of them: read the body (bounded; a body over the limit is drained
//! before the 413 so the client reads it), read `model` from the JSON or the multipart form,
//! route it like chat (prefixes, aliases, pools, failover before the first byte), and send the
//! body to a provider that serves the endpoint with only `model` rewritten (every other byte
//! as sent, a multipart body's boundary and parts included). The answer goes back as it
//! arrives, whatever its size and type (JSON, SSE, audio). A provider without the endpoint is
//! a 400 naming the model. `completions` also has the cache, usage and the stream guarantee
//! of chat: a stream cut by the upstream ends with an error event, never silently. The
//! offline `echo` provider answers completions and moderations itself.
//!
//! ```sh
//! curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \
//!   -d '{"model":"echo/test","prompt":"Say this is a test"}'
//! curl -s localhost:8080/v1/audio/transcriptions -F model=openai/whisper-1 -F file=@a.wav
//! ```

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::chat::{retryable_status, FAILOVER_HEADER, MAX_RESPONSE_BODY};
use super::{cache, multipart, respond, response_head, Ctx, Gateway, Session};
use crate::api::{random_token, unix_now, Answer, Usage};
use crate::cache::{Control, Identity, Lookup};
use crate::dialects::openai_chat::OpenAiChat;
use crate::dialects::Dialect;
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::{echo, openai};
use crate::routing::{all_unavailable, Route};
use crate::sse::SseFramer;
use crate::upstream::{SendError, UpstreamResponse, MAX_ERROR_BODY};

/// One endpoint.
#[derive(Debug)]
pub struct Api {
    /// Its label in metrics (`completions`, `audio.speech`).
    pub name: &'static str,
    /// Its path at an OpenAI-compatible upstream, under the base path (`/completions`); a
    /// `/v2/...` path is under the host's root.
    pub upstream: &'static str,
    /// The body is `multipart/form-data` (an upload) rather than JSON.
    pub multipart: bool,
    /// The model a request that names none is routed to, where OpenAI allows leaving it out.
    pub default_model: Option<&'static str>,
}

/// OpenAI's default moderation model.
pub const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

const fn api(name: &'static str, upstream: &'static str, multipart: bool) -> Api {
    Api {
        name,
        upstream,
        multipart,
        default_model: None,
    }
}

/// Every endpoint, by the path it serves (after the optional `/v1` prefix).
pub static APIS: &[(&str, Api)] = &[
    ("/completions", api("completions", "/completions", false)),
    (
        "/moderations",
        Api {
            name: "moderations",
            upstream: "/moderations",
            multipart: false,
            default_model: Some(DEFAULT_MODERATION_MODEL),
        },
    ),
    (
        "/images/generations",
        api("images.generations", "/images/generations", false),
    ),
    ("/images/edits", api("images.edits", "/images/edits", true)),
    (
        "/images/variations",
        api("images.variations", "/images/variations", true),
    ),
    ("/audio/speech", api("audio.speech", "/audio/speech", false)),
    (
        "/audio/transcriptions",
        api("audio.transcriptions", "/audio/transcriptions", true),
    ),
    (
        "/audio/translations",
        api("audio.translations", "/audio/translations", true),
    ),
    ("/rerank", api("rerank", "/rerank", false)),
    ("/v2/rerank", api("rerank", "/v2/rerank", false)),
];

/// The endpoint serving a path (without `/v1` and trailing slashes).
pub fn for_path(path: &str) -> Option<&'static Api> {
    APIS.iter().find(|(p, _)| *p == path).map(|(_, a)| a)
}

/// What the proxy read out of a request body.
struct Request {
    /// The model as the client named it (or the endpoint's default).
    model: String,
    stream: bool,
    include_usage: bool,
    body: Bytes,
    content_type: String,
    shape: Shape,
}

enum Shape {
    /// A JSON object; `model_given`: whether it has a `model` (else one is added upstream), and
    /// where its value is in the body when the light pass found it.
    Json {
        model_given: bool,
        model_at: Option<Range<usize>>,
    },
    /// A multipart form and its `model` part.
    Form { model: multipart::Part },
}

impl Request {
    /// The body for an upstream that calls the model `upstream_model`.
    fn upstream_body(&self, upstream_model: &str) -> Result<Bytes, GatewayError> {
        match &self.shape {
            Shape::Json {
                model_given: true,
                model_at: Some(at),
            } => {
                let value = serde_json::to_string(upstream_model)
                    .map_err(|e| GatewayError::internal(format!("encoding the model: {e}")))?;
                let mut out = BytesMut::with_capacity(self.body.len() + value.len());
                out.extend_from_slice(&self.body[..at.start]);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(&self.body[at.end..]);
                Ok(out.freeze())
            }
            Shape::Json {
                model_given: true, ..
            } => {
                crate::providers::anthropic::passthrough::rewrite_model(&self.body, upstream_model)
            }
            Shape::Json {
                model_given: false, ..
            } => {
                // `{"model":"...",` then the rest of the object after its `{`.
                let value = serde_json::to_string(upstream_model)
                    .map_err(|e| GatewayError::internal(format!("encoding the model: {e}")))?;
                let text = self.body.as_ref();
                let open = text.iter().position(|c| *c == b'{').ok_or_else(|| {
                    GatewayError::bad_request("", "the request body must be a JSON object")
                })?;
                let rest = &text[open + 1..];
                let empty = rest
                    .iter()
                    .find(|c| !c.is_ascii_whitespace())
                    .is_some_and(|c| *c == b'}');
                let mut out = BytesMut::with_capacity(text.len() + value.len() + 12);
                out.extend_from_slice(b"{\"model\":");
                out.extend_from_slice(value.as_bytes());
                if !empty {
                    out.extend_from_slice(b",");
                }
                out.extend_from_slice(rest);
                Ok(out.freeze())
            }
            Shape::Form { model } => Ok(multipart::replace(
                &self.body,
                model,
                upstream_model.as_bytes(),
            )),
        }
    }

    /// The JSON body as a tree (built only for `echo` and the cache key).
    fn obj(&self) -> Option<Map<String, Value>> {
        match &self.shape {
            Shape::Json { .. } => crate::api::parse_object(&self.body).ok(),
            Shape::Form { .. } => None,
        }
    }
}

/// Reads the whole body, up to `limit` bytes. Over the limit, the rest is read and dropped
/// (up to a bound, for a while) before the 413 goes out: a client still sending its upload
/// would otherwise see the connection reset instead of the answer.
async fn read_body(
    session: &mut Session,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, GatewayError> {
    match super::read_body(session, limit, deadline).await {
        Err(e) if e.status == 413 => {
            let drain = async {
                let mut seen = 0usize;
                let bound = limit.saturating_mul(4).clamp(1 << 20, 256 << 20);
                while let Ok(Some(chunk)) = session.read_request_body().await {
                    seen += chunk.len();
                    if seen > bound {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
            Err(e)
        }
        other => other,
    }
}

fn parse(api: &Api, body: Bytes, content_type: &str) -> Result<Request, GatewayError> {
    if api.multipart {
        let Some(boundary) = multipart::boundary(content_type) else {
            return Err(GatewayError::bad_request(
                "",
                format!(
                    "{} takes a multipart/form-data body (Content-Type: multipart/form-data; boundary=...)",
                    api.upstream
                ),
            ));
        };
        let parts = multipart::parts(&body, boundary)
            .map_err(|e| GatewayError::bad_request("", format!("malformed multipart body: {e}")))?;
        // A streamed transcription asks with a `stream` field (for the log line and metrics).
        let stream = parts.iter().any(|p| {
            !p.file
                && p.name.as_deref() == Some("stream")
                && body[p.body.clone()].eq_ignore_ascii_case(b"true")
        });
        let Some(part) = parts
            .into_iter()
            .find(|p| !p.file && p.name.as_deref() == Some("model"))
        else {
            return Err(GatewayError::bad_request(
                "model",
                "missing required parameter: 'model'",
            ));
        };
        let model = std::str::from_utf8(&body[part.body.clone()])
            .map_err(|_| GatewayError::bad_request("model", "'model' must be UTF-8 text"))?
            .trim()
            .to_string();
        if model.is_empty() {
            return Err(GatewayError::bad_request(
                "model",
                "'model' must not be empty",
            ));
        }
        return Ok(Request {
            model,
            stream,
            include_usage: false,
            body,
            content_type: content_type.to_string(),
            shape: Shape::Form { model: part },
        });
    }
    // The few fields the proxy reads, borrowed from the body: no tree of a long prompt is built.
    // Anything the light pass cannot read (not an object, a key sent twice, invalid JSON) takes
    // the tree, which words every error.
    let light = serde_json::from_slice::<Light>(&body).ok().map(|l| {
        let tiny =
            |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
        // `raw` borrows from `body`: its place in it is a difference of addresses (checked).
        let model_at = l.model.and_then(|raw| {
            let start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
            let at = start..start + raw.get().len();
            (body.get(at.clone()) == Some(raw.get().as_bytes())).then_some(at)
        });
        let mut fields = Map::new();
        for (k, v) in [
            ("model", tiny(l.model)),
            ("stream", tiny(l.stream)),
            ("stream_options", tiny(l.stream_options)),
            ("prompt", l.prompt.map(|_| Value::Bool(true))),
        ] {
            if let Some(v) = v {
                fields.insert(k.to_string(), v);
            }
        }
        (fields, model_at)
    });
    let (obj, model_at) = match light {
        Some((fields, at)) => (fields, at),
        None => (crate::api::parse_object(&body)?, None),
    };
    let (model, model_given) = match (obj.get("model"), api.default_model) {
        (None | Some(Value::Null), Some(default)) => (default.to_string(), false),
        _ => (crate::api::required_model(&obj)?, true),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::bad_request(
                "stream",
                "'stream' must be a boolean",
            ))
        }
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if api.name == "completions" && obj.get("prompt").is_none_or(Value::is_null) {
        return Err(GatewayError::bad_request(
            "prompt",
            "missing required parameter: 'prompt'",
        ));
    }
    Ok(Request {
        model,
        stream,
        include_usage,
        body,
        content_type: "application/json".to_string(),
        shape: Shape::Json {
            model_given,
            model_at: model_at.filter(|_| model_given),
        },
    })
}

/// What the light pass reads of a JSON body (other fields are skipped, unparsed).
#[derive(serde::Deserialize)]
struct Light<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    stream: Option<&'a RawValue>,
    #[serde(default, borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
}

/// Whether `route`'s provider serves `api`.
fn offers(route: &Route, api: &Api) -> bool {
    let cfg = route.provider.config();
    if cfg.format == "echo" {
        return matches!(api.name, "completions" | "moderations");
    }
    cfg.backends.first().is_some_and(|b| {
        route
            .provider
            .api_request(api.upstream, "", Bytes::new(), b)
            .is_some()
    })
}

/// `POST` to one of the endpoints.
pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    api: &'static Api,
) -> Result<(), GatewayError> {
    let body = read_body(session, gw.config.max_body_bytes, gw.config.body_timeout).await?;
    if let (Some(t), "completions") = (ctx.trace.as_deref_mut(), api.name) {
        t.prompt(&body);
    }
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut req = parse(api, body, &content_type)?;
    if matches!(
        req.shape,
        Shape::Json {
            model_given: false,
            ..
        }
    ) {
        req.model = default_model(gw, &req.model);
    }
    ctx.model = Some(req.model.clone());
    ctx.stream = req.stream;
    let failover = !session
        .req_header()
        .headers
        .get(FAILOVER_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("off"));
    let mut routes = gw.router.plan(&req.model, failover)?;
    let Some(first) = routes.first().cloned() else {
        return Err(all_unavailable(Duration::from_secs(1)));
    };
    routes.retain(|r| offers(r, api));
    if routes.is_empty() {
        ctx.provider = Some(first.provider_name().to_string());
        return Err(GatewayError::bad_request(
            "model",
            format!(
                "the model '{}' is served by provider '{}', which does not offer /v1{} ({})",
                req.model,
                first.provider_name(),
                api.upstream.trim_start_matches("/v2"),
                api.name
            ),
        )
        .with_label("unsupported_endpoint"));
    }
    if ctx.tenant.is_some() {
        // Allow-list as for chat; the budget must not be spent (these APIs have no token
        // maximum to reserve: their real cost is added after the answer).
        super::tenant::allow(ctx, &req.model, &mut routes)?;
        super::tenant::reserve(gw, ctx, &routes, 0, 0).await?;
    }
    ctx.provider = Some(routes[0].provider_name().to_string());
    ctx.upstream_model = Some(routes[0].upstream_model.clone());
    if api.name == "completions" && lookup(gw, session, ctx, &req, &routes[0]).await? {
        return Ok(());
    }
    let result = run(gw, session, ctx, api, &req, &routes).await;
    cache::finish(gw, ctx).await;
    result
}

/// Where a request that names no model goes: OpenAI's default model at OpenAI when it is
/// configured, else wherever the bare name routes (`GATEWAY_DEFAULT_PROVIDER`), else `echo`
/// (the gateway with nothing configured).
fn default_model(gw: &Gateway, model: &str) -> String {
    if gw.router.get("openai").is_some() {
        format!("openai/{model}")
    } else if gw.router.resolve(model).is_ok() || gw.router.get("echo").is_none() {
        model.to_string()
    } else {
        format!("echo/{model}")
    }
}

/// Tries the candidates in order until one serves the request (before any byte reached the
/// client) or `GATEWAY_RETRY_MAX` retries are spent.
async fn run(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    api: &'static Api,
    req: &Request,
    routes: &[Route],
) -> Result<(), GatewayError> {
    let max_attempts = 1 + gw.config.routing.retry_max;
    let lone = routes.len() == 1;
    let mut last_err: Option<GatewayError> = None;
    let mut previous: Option<String> = None;
    for route in routes {
        if ctx.attempts as usize >= max_attempts {
            break;
        }
        let name = route.provider_name().to_string();
        let pool = gw.router.pool(&name);
        let backend = match pool {
            None => None,
            Some(p) => match p.pick_for(&[], None) {
                Some((i, _, why)) => {
                    if p.backends.len() > 1 {
                        ctx.pick = Some(why.as_str());
                        ctx.backend = p.balance.replica(i).map(|r| r.label().clone());
                    }
                    Some(i)
                }
                None if lone => Some(0),
                None => continue,
            },
        };
        // In flight on its backend until the attempt ends.
        let _in_flight = backend.and_then(|i| pool.and_then(|p| p.start(i)));
        ctx.attempts += 1;
        if let Some(from) = &previous {
            metrics::failover(from, &name);
            log::info!(
                "failover from={from} to={name} attempt={} endpoint={}",
                ctx.attempts,
                api.name
            );
        }
        ctx.provider = Some(name.clone());
        ctx.upstream_model = Some(route.upstream_model.clone());
        let target = backend.and_then(|i| pool.and_then(|p| p.backends.get(i)));
        if let Some(t) = ctx.trace.as_deref_mut() {
            let op = crate::trace::operation(ctx.endpoint).unwrap_or(api.name);
            t.start_attempt(op, &name, &route.upstream_model, ctx.attempts);
        }
        let result = attempt(gw, session, ctx, api, req, route, target.map(|b| &b.url)).await;
        if let Some(t) = ctx.trace.as_deref_mut() {
            match &result {
                Ok(()) => t.end_attempt(None, None, ctx.usage),
                Err((err, _)) => t.end_attempt(
                    Some((err.label, &err.message)),
                    err.upstream.then_some(err.status),
                    None,
                ),
            }
        }
        match result {
            Ok(()) => {
                if let (Some(p), Some(b)) = (pool, target) {
                    b.breaker.record_success();
                    if let Some(head) = ctx.upstream_head {
                        p.record_latency(head);
                    }
                }
                return Ok(());
            }
            Err((err, retryable)) => {
                if let Some(b) = target {
                    if retryable {
                        b.breaker.record_failure(&if err.upstream {
                            format!("{} from upstream", err.status)
                        } else {
                            err.label.to_string()
                        });
                    } else {
                        b.breaker.record_success();
                    }
                }
                if !retryable {
                    return Err(err);
                }
                last_err = Some(err);
                previous = Some(name);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| all_unavailable(Duration::from_secs(1))))
}

type Failed = (GatewayError, bool);

/// One attempt: `Ok` once the client has been answered (possibly with a stream that ended in
/// an error event), `Err((error, retryable))` when nothing reached it.
async fn attempt(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    api: &'static Api,
    req: &Request,
    route: &Route,
    backend: Option<&crate::config::BaseUrl>,
) -> Result<(), Failed> {
    let cfg = route.provider.config();
    if cfg.format == "echo" {
        return serve_echo(gw, session, ctx, api, req).await;
    }
    let Some(backend) = backend.or(cfg.backends.first()) else {
        return Err((
            GatewayError::internal(format!("provider {} has no backend", cfg.name)),
            true,
        ));
    };
    let body = req
        .upstream_body(&route.upstream_model)
        .map_err(|e| (e, false))?;
    let Some(mut up) = route
        .provider
        .api_request(api.upstream, &req.content_type, body, backend)
    else {
        return Err((
            GatewayError::bad_request(
                "model",
                format!("provider '{}' does not offer {}", cfg.name, api.name),
            ),
            false,
        ));
    };
    if let Some(t) = &ctx.trace {
        up.propagation = Some(t.propagation());
    }
    let asked = Instant::now();
    let sent = tokio::select! {
        r = gw.upstreams.send(backend, &up) => r,
        _ = client_gone(session) => {
            ctx.outcome = "client_closed";
            return Ok(());
        }
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let err = e.into_gateway(&cfg.name);
            metrics::upstream_error(&cfg.name, err.label);
            return Err((err, true));
        }
    };
    ctx.upstream_head = Some(asked.elapsed());
    let status = resp.status();
    if !(200..300).contains(&status) {
        let retry_after = resp.header("retry-after").map(str::to_string);
        let body = resp.read_all(MAX_ERROR_BODY).await.unwrap_or_default();
        resp.release().await;
        let mut err = route.provider.error(status, &body);
        err.upstream = true;
        if err.retry_after.is_none() {
            err.retry_after = retry_after;
        }
        metrics::upstream_error(&cfg.name, err.label);
        let retryable = retryable_status(status) || retryable_status(err.status);
        return Err((err, retryable));
    }
    let content_type = resp
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    if api.name == "completions" && !content_type.starts_with("text/event-stream") {
        // A completion is a small JSON answer: read whole, for its usage and the cache.
        let body = match resp.read_all(MAX_RESPONSE_BODY).await {
            Ok(b) => b,
            Err(e) => {
                resp.abort().await;
                let err = e.into_gateway(&cfg.name);
                metrics::upstream_error(&cfg.name, err.label);
                return Err((err, true));
            }
        };
        resp.release().await;
        ctx.usage = openai::usage_of(&body);
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.observe(&body);
        }
        if let Some(answer) = ctx
            .cache_fill
            .is_some()
            .then(|| answer_of_completion(&body))
            .flatten()
        {
            cache::record_answer(ctx, &answer);
            cache::store_complete(gw, ctx).await;
        }
        respond(session, ctx, 200, &content_type, &[], body).await;
        return Ok(());
    }
    forward(gw, session, ctx, api, &cfg.name, resp, &content_type).await
}

/// Resolves when the client has gone away (reset, closed). Pending otherwise.
async fn client_gone(session: &mut Session) {
    loop {
        match session.read_body_or_idle(true).await {
            Ok(Some(_)) => continue,
            _ => return,
        }
    }
}

/// Writes the head of a streamed answer: the upstream's content type, its length when it gave
/// one (a binary answer the client can then check is whole), chunked otherwise.
async fn write_head(
    session: &mut Session,
    ctx: &mut Ctx,
    content_type: &str,
    length: Option<usize>,
) -> bool {
    let mut extra: Vec<(&str, &str)> = Vec::new();
    if content_type.starts_with("text/event-stream") {
        extra.push(("cache-control", "no-cache"));
    }
    if length.is_none() && !session.is_http2() {
        extra.push(("transfer-encoding", "chunked"));
    }
    let head = match response_head(ctx, 200, content_type, &extra, length) {
        Ok(h) => h,
        Err(_) => return false,
    };
    ctx.status = 200;
    ctx.responded = true;
    session.write_response_header(Box::new(head)).await.is_ok()
}

async fn write(session: &mut Session, ctx: &mut Ctx, data: Bytes, end: bool) -> bool {
    if data.is_empty() && !end {
        return true;
    }
    ctx.mark_first_byte();
    ctx.bytes += data.len();
    session.write_response_body(data, end).await.is_ok()
}

/// Relays a successful answer chunk by chunk as it arrives. The head goes out with the first
/// bytes, so an upstream that fails before sending any can still be retried elsewhere. A
/// completions stream that ends before `data: [DONE]` gets an error event; any other answer cut
/// short (audio, or the SSE of a streamed transcription or speech, whose ends are events of
/// their own rather than `[DONE]`) is cut short for the client too: the connection is closed
/// before the body's end.
#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    api: &'static Api,
    provider: &str,
    mut resp: UpstreamResponse<'_>,
    content_type: &str,
) -> Result<(), Failed> {
    let sse = content_type.starts_with("text/event-stream");
    let length = if sse {
        None
    } else {
        resp.header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let _active = sse.then(metrics::StreamGuard::new);
    let completions = sse && api.name == "completions";
    let mut watch = completions.then(|| Watch::new(ctx.cache_fill.is_some()));
    let mut started = false;
    loop {
        let next = tokio::select! {
            c = resp.chunk() => Some(c),
            _ = client_gone(session) => None,
        };
        let Some(next) = next else {
            ctx.outcome = "client_closed";
            resp.abort().await;
            return Ok(());
        };
        let err = match next {
            Ok(Some(chunk)) => {
                if let Some(w) = watch.as_mut() {
                    w.feed(&chunk);
                    ctx.usage = w.usage.or(ctx.usage);
                }
                if !started {
                    started = true;
                    if !write_head(session, ctx, content_type, length).await {
                        ctx.outcome = "client_closed";
                        resp.abort().await;
                        return Ok(());
                    }
                }
                if watch.as_ref().is_some_and(|w| w.done) {
                    // The last bytes of a complete stream: stored before the client has them.
                    if let Some(answer) = watch.as_mut().and_then(Watch::answer) {
                        cache::record_answer(ctx, &answer);
                        cache::store_complete(gw, ctx).await;
                    }
                }
                if !write(session, ctx, chunk, false).await {
                    ctx.outcome = "client_closed";
                    resp.abort().await;
                    return Ok(());
                }
                continue;
            }
            Ok(None) => {
                if watch.as_ref().is_none_or(|w| w.done) {
                    if !started && !write_head(session, ctx, content_type, length).await {
                        ctx.outcome = "client_closed";
                        return Ok(());
                    }
                    if !write(session, ctx, Bytes::new(), true).await {
                        ctx.outcome = "client_closed";
                    }
                    resp.release().await;
                    return Ok(());
                }
                GatewayError::bad_gateway(format!(
                    "provider {provider} ended the stream before its end ([DONE])"
                ))
            }
            Err(SendError::Timeout(m)) => GatewayError::gateway_timeout(format!(
                "provider {provider} stopped sending mid-stream: {m}"
            )),
            Err(e) => e.into_gateway(provider),
        };
        let err = err.with_label("stream_interrupted");
        metrics::upstream_error(provider, err.label);
        resp.abort().await;
        if !started {
            return Err((err, true));
        }
        ctx.outcome = "stream_error";
        ctx.error = Some(err.message.clone());
        if completions {
            // Bytes already reached the client: the stream ends with an error event.
            let _ = write(session, ctx, OpenAiChat.error_event(&err), true).await;
        } else {
            // No way to say so inside a binary body: the client sees it end early.
            session.set_keepalive(None);
            session.shutdown().await;
        }
        return Ok(());
    }
}

/// Reads a completions SSE stream on the side, as it passes through: whether it reached
/// `[DONE]`, its usage, and (for the cache) the answer it carried.
struct Watch {
    framer: SseFramer,
    done: bool,
    usage: Option<Usage>,
    /// `None` once the answer cannot be stored (not cached, several choices, logprobs).
    text: Option<String>,
    finish: Option<String>,
}

impl Watch {
    fn new(assemble: bool) -> Self {
        Watch {
            framer: SseFramer::new(),
            done: false,
            usage: None,
            text: assemble.then(String::new),
            finish: None,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        self.framer.push(bytes);
        while let Some(ev) = self.framer.next_event() {
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                self.done = true;
                return;
            }
            if self.text.is_none() && !data.contains("\"usage\"") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                self.text = None;
                continue;
            };
            if let Some(u) = v.get("usage").and_then(Usage::from_value) {
                self.usage = Some(u);
            }
            let Some(text) = self.text.as_mut() else {
                continue;
            };
            if v.get("error").is_some() {
                self.text = None;
                continue;
            }
            for c in v
                .get("choices")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let index_ok = c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0;
                let plain = c.get("logprobs").is_none_or(Value::is_null);
                if !index_ok || !plain {
                    self.text = None;
                    break;
                }
                if let Some(t) = c.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
                if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                    self.finish = Some(f.to_string());
                }
            }
        }
    }

    fn answer(&mut self) -> Option<Answer> {
        Some(Answer {
            stop_sequence: None,
            reasoning: None,
            content: Some(self.text.take()?),
            tool_calls: Vec::new(),
            finish_reason: self.finish.take()?,
            usage: self.usage,
        })
    }
}

/// The answer in a `text_completion` body, when it is one plain choice (what the cache keeps).
fn answer_of_completion(body: &[u8]) -> Option<Answer> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let choices = v.get("choices")?.as_array()?;
    let [c] = choices.as_slice() else {
        return None;
    };
    if !c.get("logprobs").is_none_or(Value::is_null) {
        return None;
    }
    Some(Answer {
        stop_sequence: None,
        reasoning: None,
        content: Some(c.get("text")?.as_str()?.to_string()),
        tool_calls: Vec::new(),
        finish_reason: c.get("finish_reason")?.as_str()?.to_string(),
        usage: v.get("usage").and_then(Usage::from_value),
    })
}

/// Whether a completions request's answer may be cached: one choice, no log probabilities.
fn cacheable(obj: &Map<String, Value>) -> bool {
    let one = |k: &str| obj.get(k).and_then(Value::as_u64).is_none_or(|n| n <= 1);
    let prompts = match obj.get("prompt") {
        Some(Value::Array(items)) => {
            items.len() <= 1 || items.iter().all(|i| i.is_number()) // one prompt of tokens
        }
        _ => true,
    };
    one("n") && one("best_of") && obj.get("logprobs").is_none_or(Value::is_null) && prompts
}

/// Looks a completions request up in the cache; on a hit, answers it and returns `true`.
async fn lookup(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &Request,
    route: &Route,
) -> Result<bool, GatewayError> {
    if !gw.cache.enabled() {
        return Ok(false);
    }
    let Some(obj) = req.obj() else {
        return Ok(false);
    };
    if !cacheable(&obj) {
        return Ok(false);
    }
    let control = Control::from_headers(&session.req_header().headers)?;
    let scope = gw
        .cache
        .per_key()
        .then(|| ctx.key_name.clone().unwrap_or_default());
    // The endpoint is part of the provider's name in the key (a name that cannot hold a NUL),
    // so a completion never answers a chat request nor the reverse.
    let provider = format!("{}\0completions", route.provider_name());
    let identity = Identity {
        provider: &provider,
        upstream_model: &route.upstream_model,
        scope: scope.as_deref(),
    };
    let fields: Vec<(&str, String)> = obj
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    let key =
        crate::cache::key::exact_fields(identity, fields.iter().map(|(k, v)| (*k, v.as_str())));
    match gw.cache.lookup_exact(control, key, req.stream).await {
        Lookup::Off => Ok(false),
        Lookup::Miss { status, fill } => {
            if let Some(s) = status {
                set_cache_status(ctx, s);
            }
            ctx.cache_fill = fill;
            Ok(false)
        }
        Lookup::Hit(hit, found) => {
            set_cache_status(ctx, crate::cache::Status::Hit);
            for (k, v) in crate::cache::hit_headers(&hit, found) {
                ctx.headers.retain(|(name, _)| *name != k);
                ctx.headers.push((k, v));
            }
            ctx.provider = Some(hit.entry.provider.clone());
            ctx.usage = None;
            let answer = &hit.entry.answer;
            let w = CompletionWriter::new(&req.model);
            let text = answer.content.clone().unwrap_or_default();
            if req.stream {
                let mut out = BytesMut::new();
                w.chunk(&mut out, 0, &text, None);
                w.chunk(&mut out, 0, "", Some(&answer.finish_reason));
                if req.include_usage {
                    if let Some(u) = &answer.usage {
                        w.usage(&mut out, u);
                    }
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                respond(
                    session,
                    ctx,
                    200,
                    "text/event-stream",
                    &[("cache-control", "no-cache")],
                    out.freeze(),
                )
                .await;
            } else {
                let body = w.body(
                    &[(text, answer.finish_reason.clone())],
                    answer.usage.as_ref(),
                );
                respond(session, ctx, 200, "application/json", &[], body).await;
            }
            Ok(true)
        }
    }
}

fn set_cache_status(ctx: &mut Ctx, status: crate::cache::Status) {
    ctx.cache = Some(status.label());
    ctx.headers.retain(|(k, _)| *k != crate::cache::X_CACHE);
    ctx.headers
        .push((crate::cache::X_CACHE, status.header().to_string()));
}

/// Writes OpenAI `text_completion` bodies and stream chunks.
struct CompletionWriter {
    id: String,
    created: u64,
    model: String,
}

impl CompletionWriter {
    fn new(model: &str) -> Self {
        CompletionWriter {
            id: format!("cmpl-{}", random_token(24)),
            created: unix_now(),
            model: model.to_string(),
        }
    }

    fn body(&self, choices: &[(String, String)], usage: Option<&Usage>) -> Bytes {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, (text, finish))| {
                json!({"text": text, "index": i, "logprobs": null, "finish_reason": finish})
            })
            .collect();
        let mut v = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = usage_json(u);
        }
        Bytes::from(v.to_string())
    }

    fn chunk(&self, out: &mut BytesMut, index: usize, text: &str, finish: Option<&str>) {
        let v = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": index, "logprobs": null, "finish_reason": finish}],
        });
        sse(out, &v);
    }

    fn usage(&self, out: &mut BytesMut, u: &Usage) {
        let v = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(u),
        });
        sse(out, &v);
    }
}

fn sse(out: &mut BytesMut, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    })
}

/// The offline `echo` provider: completions echo the prompt, moderations flag nothing.
async fn serve_echo(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    api: &'static Api,
    req: &Request,
) -> Result<(), Failed> {
    let Some(obj) = req.obj() else {
        return Err((
            GatewayError::bad_request("model", "echo does not offer this endpoint"),
            false,
        ));
    };
    if api.name == "moderations" {
        let body = echo::moderation(&obj, &req.model).map_err(|e| (e, false))?;
        respond(session, ctx, 200, "application/json", &[], body).await;
        return Ok(());
    }
    let prompts = echo::prompts(&obj).map_err(|e| (e, false))?;
    let w = CompletionWriter::new(&req.model);
    let prompt_tokens: u64 = prompts.iter().map(|p| echo::words(p)).sum();
    let usage = Usage::new(prompt_tokens, prompt_tokens);
    ctx.usage = Some(usage);
    if let [p] = prompts.as_slice() {
        cache::record_answer(
            ctx,
            &Answer {
                stop_sequence: None,
                reasoning: None,
                content: Some(p.clone()),
                tool_calls: Vec::new(),
                finish_reason: "stop".into(),
                usage: Some(usage),
            },
        );
    }
    if !req.stream {
        cache::store_complete(gw, ctx).await;
        let choices: Vec<(String, String)> =
            prompts.iter().map(|p| (p.clone(), "stop".into())).collect();
        let body = w.body(&choices, Some(&usage));
        respond(session, ctx, 200, "application/json", &[], body).await;
        return Ok(());
    }
    if !write_head(session, ctx, "text/event-stream", None).await {
        ctx.outcome = "client_closed";
        return Ok(());
    }
    let _active = metrics::StreamGuard::new();
    let delay = gw.config.echo_chunk_delay;
    let mut out = BytesMut::with_capacity(1024);
    for (i, p) in prompts.iter().enumerate() {
        for piece in echo::word_pieces(p) {
            w.chunk(&mut out, i, piece, None);
            // Written as it is made: the stream's memory stays bounded.
            if !delay.is_zero() || out.len() >= 32 * 1024 {
                if !write(session, ctx, out.split().freeze(), false).await {
                    ctx.outcome = "client_closed";
                    return Ok(());
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        w.chunk(&mut out, i, "", Some("stop"));
    }
    if req.include_usage {
        w.usage(&mut out, &usage);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    cache::store_complete(gw, ctx).await;
    if !write(session, ctx, out.freeze(), true).await {
        ctx.outcome = "client_closed";
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            for_path("/completions").map(|a| a.name),
            Some("completions")
        );
        assert_eq!(for_path("/rerank").map(|a| a.upstream), Some("/rerank"));
        assert_eq!(
            for_path("/v2/rerank").map(|a| a.upstream),
            Some("/v2/rerank")
        );
        assert!(for_path("/audio/transcriptions").is_some_and(|a| a.multipart));
        assert!(for_path("/chat/completions").is_none());
    }

    #[test]
    fn json_bodies_change_only_in_their_model() {
        let api = for_path("/moderations").unwrap();
        let body = Bytes::from_static(b"{ \"input\" : \"x\",\n \"model\":\"openai/omni\" }");
        let req = parse(api, body, "application/json").unwrap();
        assert_eq!(req.model, "openai/omni");
        assert_eq!(
            &req.upstream_body("omni").unwrap()[..],
            b"{ \"input\" : \"x\",\n \"model\":\"omni\" }"
        );
        // The default model is added when none is named.
        let req = parse(api, Bytes::from_static(b" {\"input\":\"x\"}"), "").unwrap();
        assert_eq!(req.model, DEFAULT_MODERATION_MODEL);
        let sent = req.upstream_body("m").unwrap();
        assert_eq!(&sent[..], b"{\"model\":\"m\",\"input\":\"x\"}");
        let req = parse(api, Bytes::from_static(b"{ }"), "").unwrap();
        assert_eq!(&req.upstream_body("m").unwrap()[..], b"{\"model\":\"m\" }");
        // An escaped model name, and a body the light pass leaves to the tree (a key twice).
        let req = parse(
            api,
            Bytes::from_static(b"{\"model\":\"openai\\/omni\",\"input\":\"x\"}"),
            "",
        )
        .unwrap();
        assert_eq!(req.model, "openai/omni");
        assert_eq!(
            &req.upstream_body("omni").unwrap()[..],
            b"{\"model\":\"omni\",\"input\":\"x\"}"
        );
        let req = parse(
            api,
            Bytes::from_static(b"{\"input\":\"x\",\"input\":\"y\",\"model\":\"m\"}"),
            "",
        )
        .unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(
            &req.upstream_body("n").unwrap()[..],
            b"{\"input\":\"x\",\"input\":\"y\",\"model\":\"n\"}"
        );
        for bad in [
            &b"{\"model\":1}"[..],
            b"{\"model\":\" \"}",
            b"not json",
            b"{\"model\":\"m\",\"stream\":1}",
        ] {
            assert!(parse(api, Bytes::from_static(bad), "").is_err(), "{bad:?}");
        }
        // Completions need a model and a prompt.
        let api = for_path("/completions").unwrap();
        assert!(parse(api, Bytes::from_static(b"{\"prompt\":\"x\"}"), "").is_err());
        assert!(parse(api, Bytes::from_static(b"{\"model\":\"m\"}"), "").is_err());
        assert!(parse(api, Bytes::from_static(b"[1]"), "").is_err());
    }

    #[test]
    fn completion_streams_are_watched_for_their_end() {
        let mut w = Watch::new(true);
        w.feed(b"data: {\"choices\":[{\"text\":\"Hel\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"text\":\"lo\",\"index\":0,\"finish_reason\":\"stop\"}]}\n\n");
        assert!(!w.done);
        w.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3}}\n\ndata: [DO");
        w.feed(b"NE]\n\n");
        assert!(w.done);
        assert_eq!(w.usage, Some(Usage::new(2, 1)));
        let a = w.answer().unwrap();
        assert_eq!(a.content.as_deref(), Some("Hello"));
        assert_eq!(a.finish_reason, "stop");
    }
}
