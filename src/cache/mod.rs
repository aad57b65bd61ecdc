//! # Response cache
//!
//! Answers to `/v1/chat/completions` are stored and served again: exact matches by a SHA-256
//! key over everything that can change the answer ([`key`]), and, when enabled, paraphrases of
//! the final user message by embedding similarity ([`semantic`]). Entries live in memory
//! ([`backend::Memory`], `moka`) or in Redis ([`redis_backend`]), shared by every gateway
//! instance on the same Redis.
//!
//! A stored entry is a provider-neutral [`Answer`], so one entry serves both forms: a plain
//! request gets a `chat.completion`, a stream request a replayed SSE stream. Streamed answers
//! are stored too, rebuilt on the side from the bytes the client was sent ([`assemble`]).
//!
//! The chat flow calls four hooks, in order:
//! - [`lookup`] after the model is resolved: serves a hit (exact, coalesced or semantic) and
//!   returns `true`, or leaves a [`Fill`] in `Ctx::cache_fill` for the answer to come;
//! - [`record_body`] / [`record_answer`] with a plain answer, and [`tee`] with every chunk of a
//!   stream after it was written to the client;
//! - [`finish`] once the exchange is over (whatever its outcome): stores a complete, successful
//!   answer and hands it to coalesced followers.
//!
//! ```sh
//! GATEWAY_CACHE_TTL=300 cargo run
//! curl -si localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \
//!   -d '{"model":"echo/test","messages":[{"role":"user","content":"hi"}]}' | grep -i x-cache
//! # x-cache: MISS, then x-cache: HIT and x-cache-ttl: 299 on the second run
//! ```

pub mod assemble;
pub mod backend;
pub mod coalesce;
pub mod entry;
pub mod key;
pub mod redis_backend;
pub mod semantic;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::Session;
use bytes::BytesMut;

use crate::api::{completion_body, Answer, ChatRequest, ChunkWriter};
use crate::error::GatewayError;
use crate::proxy::{respond, Ctx, Gateway};
use crate::routing::Route;

use self::assemble::Assembler;
use self::backend::{Backend, Hit, Memory};
use self::coalesce::{follow, Inflight, Join, Leader};
use self::entry::{answer_from_completion, Entry};
use self::key::{Identity, Key};
use self::redis_backend::RedisBackend;
use crate::config::cache::{BackendKind, CacheConfig, Scope, SemanticConfig};

/// Response headers.
pub const X_CACHE: &str = "x-cache";
pub const X_CACHE_TTL: &str = "x-cache-ttl";
pub const X_CACHE_COALESCED: &str = "x-cache-coalesced";
pub const X_CACHE_SEMANTIC: &str = "x-cache-semantic";
pub const X_CACHE_SIMILARITY: &str = "x-cache-similarity";

/// The cache shared by all requests.
pub struct Cache {
    backend: Option<Arc<dyn Backend>>,
    ttl: Duration,
    scope: Scope,
    semantic: Option<SemanticConfig>,
    inflight: Inflight,
    embed_warn: WarnThrottle,
}

impl Cache {
    pub fn new(c: &CacheConfig) -> Cache {
        let backend: Option<Arc<dyn Backend>> = match c.backend {
            BackendKind::Off => None,
            BackendKind::Memory => Some(Arc::new(Memory::new(c.max_size, c.ttl))),
            BackendKind::Redis => {
                match c
                    .redis_url
                    .as_ref()
                    .map(|u| ::redis::Client::open(u.expose()))
                {
                    Some(Ok(client)) => Some(Arc::new(RedisBackend::new(client, &c.prefix))),
                    // The configuration was validated: this is not expected.
                    _ => {
                        log::error!("cache: the Redis URL is unusable, the cache is off");
                        None
                    }
                }
            }
        };
        Cache {
            backend,
            ttl: c.ttl,
            scope: c.scope,
            semantic: c.semantic.clone(),
            inflight: Inflight::default(),
            embed_warn: WarnThrottle::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.backend.is_some()
    }
}

/// What a request carries from the lookup to the store.
pub struct Fill {
    key: Key,
    ttl: Duration,
    /// The semantic context key and the embedding of the final user message.
    semantic: Option<(Key, Arc<[f32]>)>,
    leader: Option<Leader>,
    plain: Option<Answer>,
    stream: Option<Assembler>,
}

/// What the client asked of the cache, from `Cache-Control` and `X-Cache-TTL`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Control {
    /// `no-cache`: do not serve a stored answer (but store the fresh one).
    pub no_cache: bool,
    /// `no-store`: neither serve nor store.
    pub no_store: bool,
    /// `X-Cache-TTL`: the entry's lifetime, bounded by `GATEWAY_CACHE_TTL`.
    pub ttl: Option<Duration>,
}

impl Control {
    pub fn from_headers(h: &http::HeaderMap) -> Result<Control, GatewayError> {
        let mut c = Control::default();
        for v in h.get_all(http::header::CACHE_CONTROL) {
            let v = String::from_utf8_lossy(v.as_bytes());
            for directive in v.split(',') {
                let d = directive.trim();
                let name = d.split('=').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("no-cache") {
                    c.no_cache = true;
                } else if name.eq_ignore_ascii_case("no-store") {
                    c.no_store = true;
                }
            }
        }
        if let Some(v) = h.get(X_CACHE_TTL) {
            let secs = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    GatewayError::new(
                        400,
                        "invalid_request_error",
                        Some("invalid_cache_ttl"),
                        "the X-Cache-TTL header must be a whole number of seconds",
                    )
                })?;
            c.ttl = Some(Duration::from_secs(secs));
        }
        Ok(c)
    }
}

/// How a hit was found (decides its headers).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Found {
    Exact,
    Coalesced,
    Semantic(f32),
}

fn push_header(ctx: &mut Ctx, name: &'static str, value: String) {
    ctx.headers.retain(|(k, _)| *k != name);
    ctx.headers.push((name, value));
}

fn set_status(ctx: &mut Ctx, label: &'static str, header: &str) {
    ctx.cache = Some(label);
    crate::metrics::cache_lookup(label);
    push_header(ctx, X_CACHE, header.to_string());
}

/// Looks the request up; on a hit, answers the client and returns `true`.
pub async fn lookup(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    route: &Route,
) -> Result<bool, GatewayError> {
    let cache = &gw.cache;
    let Some(backend) = cache.backend.clone() else {
        return Ok(false);
    };
    let control = Control::from_headers(&session.req_header().headers)?;
    // An answer holds one choice; `n > 1` asks for several.
    let several = req
        .fields()
        .iter()
        .find(|(k, _)| k == "n")
        .and_then(|(_, n)| n.get().parse::<u64>().ok())
        .is_some_and(|n| n > 1);
    if control.no_store || several {
        set_status(ctx, "bypass", "BYPASS");
        return Ok(false);
    }
    let scope = match cache.scope {
        Scope::Global => None,
        Scope::Key => Some(ctx.key_name.clone().unwrap_or_default()),
    };
    let id = Identity {
        provider: route.provider_name(),
        upstream_model: &route.upstream_model,
        scope: scope.as_deref(),
    };
    let key = key::exact_request(id, req);
    let ttl = control.ttl.map_or(cache.ttl, |t| t.min(cache.ttl));
    let store = !ttl.is_zero();

    let mut leader = None;
    if control.no_cache {
        set_status(ctx, "bypass", "BYPASS");
    } else {
        if let Some(hit) = backend.get(&key).await {
            serve(session, ctx, req, &hit, Found::Exact).await;
            return Ok(true);
        }
        // Only plain requests wait for a leader: a stream must start as soon as its own
        // upstream does.
        if !req.stream && store {
            match cache.inflight.join(&key) {
                Join::Follower(rx) => {
                    if let Some(hit) = follow(rx).await {
                        serve(session, ctx, req, &hit, Found::Coalesced).await;
                        return Ok(true);
                    }
                }
                Join::Leader(l) => {
                    // The previous leader may have stored and left between our lookup and
                    // our join.
                    if let Some(hit) = backend.get(&key).await {
                        serve(session, ctx, req, &hit, Found::Exact).await;
                        return Ok(true);
                    }
                    leader = Some(l);
                }
            }
        }
        set_status(ctx, "miss", "MISS");
    }

    let mut semantic = None;
    if let Some(sem) = &cache.semantic {
        if let Some(text) = key::final_user_text(req.body()).filter(|_| store || !control.no_cache)
        {
            let context = key::context(id, req.body());
            // Boxed: an upstream exchange of its own, and rare; every request's future would
            // otherwise carry its size (see `Upstreams::session`).
            match Box::pin(semantic::embed(gw, &sem.model, &text)).await {
                Ok(vector) => {
                    if !control.no_cache {
                        if let Some((hit, similarity)) =
                            semantic_match(backend.as_ref(), &context, &vector, sem.threshold).await
                        {
                            if let Some(l) = &leader {
                                l.publish(hit.clone());
                            }
                            serve(session, ctx, req, &hit, Found::Semantic(similarity)).await;
                            return Ok(true);
                        }
                    }
                    semantic = Some((context, vector));
                }
                Err(e) => {
                    if cache.embed_warn.ready() {
                        log::warn!(
                            "cache: embedding with {} failed, semantic lookup skipped: {e}",
                            sem.model
                        );
                    }
                }
            }
        }
    }

    if store {
        ctx.cache_fill = Some(Box::new(Fill {
            key,
            ttl,
            semantic,
            leader,
            plain: None,
            stream: None,
        }));
    }
    Ok(false)
}

/// The best stored answer for `vector` in its context, at or above the threshold.
async fn semantic_match(
    backend: &dyn Backend,
    context: &Key,
    vector: &[f32],
    threshold: f32,
) -> Option<(Hit, f32)> {
    let candidates = backend.vectors(context).await;
    // A few tries: the best match's entry may have expired before its vector.
    for (k, similarity) in semantic::ranked(vector, &candidates, threshold)
        .into_iter()
        .take(3)
    {
        if let Some(hit) = backend.get(&k).await {
            return Some((hit, similarity));
        }
    }
    None
}

/// Answers from a stored entry, in the form the client asked for.
async fn serve(session: &mut Session, ctx: &mut Ctx, req: &ChatRequest, hit: &Hit, found: Found) {
    set_status(ctx, "hit", "HIT");
    // Round up: a live entry never claims 0 seconds left.
    let secs = hit.ttl_left.as_millis().div_ceil(1000);
    push_header(ctx, X_CACHE_TTL, secs.to_string());
    match found {
        Found::Exact => {}
        Found::Coalesced => push_header(ctx, X_CACHE_COALESCED, "true".into()),
        Found::Semantic(s) => {
            push_header(ctx, X_CACHE_SEMANTIC, "true".into());
            push_header(ctx, X_CACHE_SIMILARITY, format!("{s:.4}"));
        }
    }
    ctx.provider = Some(hit.entry.provider.clone());
    // No upstream tokens were spent; the body still reports the original counts.
    ctx.usage = None;
    let answer = &hit.entry.answer;
    let w = ChunkWriter::new(&req.model);
    if req.stream {
        let mut out = BytesMut::with_capacity(512 + answer.content.as_ref().map_or(0, String::len));
        w.replay(&mut out, answer, req.include_usage);
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
        let body = completion_body(&w.id, w.created, &req.model, answer);
        respond(session, ctx, 200, "application/json", &[], body).await;
    }
}

/// A plain upstream answer (an OpenAI `chat.completion` body) for the pending fill.
pub fn record_body(ctx: &mut Ctx, body: &[u8]) {
    if let Some(f) = ctx.cache_fill.as_mut() {
        f.plain = answer_from_completion(body);
    }
}

/// A plain answer the gateway made itself (the echo provider).
pub fn record_answer(ctx: &mut Ctx, answer: &Answer) {
    if let Some(f) = ctx.cache_fill.as_mut() {
        f.plain = Some(answer.clone());
    }
}

/// Bytes of a stream, exactly as they were written to the client.
pub fn tee(ctx: &mut Ctx, bytes: &[u8]) {
    if let Some(f) = ctx.cache_fill.as_mut() {
        f.stream.get_or_insert_with(Assembler::new).feed(bytes);
    }
}

/// Whether [`tee`] wants the bytes (so the caller copies them only then).
pub fn wants_tee(ctx: &Ctx) -> bool {
    ctx.cache_fill.is_some()
}

/// Stores the answer if it is complete and successful, and releases coalesced followers.
/// Call once the exchange is over, whatever its outcome.
pub async fn finish(gw: &Gateway, ctx: &mut Ctx) {
    let Some(fill) = ctx.cache_fill.take() else {
        return;
    };
    let Fill {
        key,
        ttl,
        semantic,
        leader,
        plain,
        stream,
    } = *fill;
    let Some(backend) = gw.cache.backend.as_ref() else {
        return;
    };
    // A client that hung up does not make a complete answer incomplete (a stream cut short
    // never reached `[DONE]`, so its assembler holds nothing); storing it spares the retry.
    if ctx.status != 200 || !matches!(ctx.outcome, "ok" | "client_closed") {
        return;
    }
    let answer = match stream {
        Some(a) => a.answer(),
        None => plain,
    };
    let Some(mut answer) = answer else {
        return;
    };
    // The client may not have asked for the usage chunk; the translator saw it anyway.
    if answer.usage.is_none() {
        answer.usage = ctx.usage;
    }
    let entry = Entry {
        answer,
        provider: ctx.provider.clone().unwrap_or_default(),
    };
    if !entry.cacheable() {
        return;
    }
    let entry = Arc::new(entry);
    if let Some(l) = &leader {
        l.publish(Hit {
            entry: entry.clone(),
            ttl_left: ttl,
        });
    }
    // The leader's slot is freed only once the entry is stored (when `leader` drops at the
    // end), so a request arriving in between waits for it rather than going upstream again.
    backend.put(&key, entry, ttl).await;
    if let Some(n) = backend.entries() {
        crate::metrics::cache_size(n);
    }
    if let Some((context, vector)) = semantic {
        backend.add_vector(&context, &key, vector, ttl).await;
    }
    drop(leader);
}

/// Lets a warning through at most once per [`WARN_EVERY`], so an outage logs a line now and
/// then rather than one per request.
pub(crate) struct WarnThrottle {
    started: Instant,
    /// Milliseconds after `started` of the last warning plus one (0: none yet).
    last: AtomicU64,
}

pub const WARN_EVERY: Duration = Duration::from_secs(10);

impl WarnThrottle {
    pub fn new() -> Self {
        WarnThrottle {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn ready(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < WARN_EVERY.as_millis() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn client_control() {
        assert_eq!(
            Control::from_headers(&headers(&[])).unwrap(),
            Control::default()
        );
        let c =
            Control::from_headers(&headers(&[("cache-control", "max-age=0, No-Cache")])).unwrap();
        assert!(c.no_cache && !c.no_store);
        let c = Control::from_headers(&headers(&[
            ("cache-control", "private"),
            ("cache-control", "no-store"),
            ("x-cache-ttl", " 30 "),
        ]))
        .unwrap();
        assert!(c.no_store && !c.no_cache);
        assert_eq!(c.ttl, Some(Duration::from_secs(30)));
        for bad in ["-1", "1.5", "soon", ""] {
            let e = Control::from_headers(&headers(&[("x-cache-ttl", bad)])).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }

    #[test]
    fn warnings_are_throttled() {
        let w = WarnThrottle::new();
        assert!(w.ready());
        assert!(!w.ready());
    }
}
