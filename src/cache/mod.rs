//! # Response cache
//!
//! Answers to `/v1/chat/completions` are stored and served again: exact matches by a SHA-256
//! key over everything that can change the answer ([`key`]), and, when enabled, paraphrases of
//! the final user message by embedding similarity ([`semantic`]). Entries live in memory
//! ([`backend::Memory`], `moka`) or in Redis ([`redis_backend`]), shared by every gateway
//! instance on the same Redis.
//!
//! A stored entry is a provider-neutral [`Answer`] (reasoning included), so one entry serves
//! every form and every dialect: a plain request gets its dialect's answer body, a stream
//! request a replayed stream. A translated answer is recorded as the canonical answer the
//! provider hands the client's dialect ([`assemble::TeeEvents`], [`assemble::RecordAnswers`]);
//! an OpenAI chat answer passed through untouched is read from the bytes the client was sent
//! ([`assemble::Assembler`]). A pass-through in another dialect (Anthropic Messages to a
//! native upstream) is not stored: its answer carries what a canonical answer cannot (thinking
//! signatures, server tool blocks), and a replay would lose it.
//!
//! The cache takes and returns plain values and never writes to a client; the proxy's chat
//! flow (`proxy/cache.rs`) uses it in three steps:
//! - [`Cache::lookup`] after the model is resolved: a [`Lookup::Hit`] (exact, coalesced or
//!   semantic) to serve in the client's dialect with [`hit_headers`], or a miss with the [`Fill`]
//!   that travels with the request;
//! - [`Fill::record_body`] / [`Fill::record_answer`] with a plain answer, [`Fill::tee_events`]
//!   around a translated stream's writer, [`Fill::tee`] with every chunk of a chat stream
//!   passed through after it was written to the client, or [`Fill::forgo`];
//! - [`Cache::store`] once the exchange is over (whatever its outcome): stores a complete,
//!   successful answer and hands it to coalesced followers.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::api::{Answer, ChatRequest};
use crate::error::GatewayError;

use self::assemble::{Assembler, Recorder, TeeEvents};
pub use self::backend::Hit;
use self::backend::{Backend, Memory};
use self::coalesce::{follow, Inflight, Join, Leader};
use self::entry::{answer_from_completion, Entry};
pub use self::key::Identity;
pub use self::key::Key;
use self::redis_backend::RedisBackend;
use crate::canonical::EventWriter;
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
            BackendKind::Memory => Some(Arc::new(Memory::new(c.max_size, c.max_bytes, c.ttl))),
            BackendKind::Redis => {
                match c
                    .redis
                    .as_ref()
                    .map(|r| crate::redis_link::RedisLink::new(r, "cache", redis_backend::TIMEOUT))
                {
                    Some(Ok(link)) => Some(Arc::new(RedisBackend::new(link, &c.prefix))),
                    // The configuration was validated: this is not expected.
                    Some(Err(e)) => {
                        log::error!("cache: the Redis setting is unusable ({e}), the cache is off");
                        None
                    }
                    None => {
                        log::error!("cache: no GATEWAY_REDIS_URL, the cache is off");
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

    /// Whether entries are per gateway key (`GATEWAY_CACHE_SCOPE=key`).
    pub fn per_key(&self) -> bool {
        matches!(self.scope, Scope::Key)
    }
}

/// What a request carries from the lookup to the store.
pub struct Fill {
    key: Key,
    ttl: Duration,
    /// The semantic context key and the embedding of the final user message.
    semantic: Option<(Key, Arc<[f32]>)>,
    leader: Option<Leader>,
    source: Source,
    /// The model a passed-through answer named (see [`Entry::model`]).
    model: Option<String>,
}

/// Where a fill's answer comes from.
enum Source {
    /// Nothing recorded yet.
    Nothing,
    /// A plain answer, or one the gateway made itself.
    Plain(Answer),
    /// The OpenAI chat stream bytes the client was sent.
    Bytes(Assembler),
    /// The canonical events of a translated stream.
    Events(Arc<Mutex<Recorder>>),
    /// Not to be stored.
    Forgone,
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
pub enum Found {
    Exact,
    Coalesced,
    Semantic(f32),
}

/// Embeds text for the semantic layer. The proxy implements it with an upstream embeddings
/// exchange; the cache only sees vectors.
#[async_trait::async_trait]
pub trait Embedder: Sync {
    /// `text` embedded by `model` (a model name as a client would write it), unit length.
    async fn embed(&self, model: &str, text: &str) -> Result<Arc<[f32]>, String>;
}

/// What a lookup asks of the request, as plain values.
pub struct Query<'a> {
    pub control: Control,
    pub req: &'a ChatRequest,
    /// The first candidate (the cache key names it) and the scope (the gateway key's name).
    pub identity: Identity<'a>,
}

/// What a lookup decided.
pub enum Lookup {
    /// The cache is off: nothing to say.
    Off,
    /// A stored answer to serve (its status is already counted).
    Hit(Hit, Found),
    /// Not served from the cache. `status` is the `X-Cache` outcome (`miss` or `bypass`, or
    /// `None` when the request did not ask); `fill`, when the answer is to be stored, goes
    /// with the request to [`Cache::store`].
    Miss {
        status: Option<Status>,
        fill: Option<Box<Fill>>,
    },
}

/// A lookup's outcome as the client sees it: a metrics label and the `X-Cache` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    Hit,
    Miss,
    Bypass,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
        }
    }

    pub fn header(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Bypass => "BYPASS",
        }
    }
}

impl Cache {
    /// Looks a request up: an exact hit, a coalesced one (waiting for an identical request in
    /// flight), or a semantic one; otherwise what to store once the answer is known.
    pub async fn lookup(&self, q: Query<'_>, embedder: &dyn Embedder) -> Lookup {
        let Some(backend) = self.backend.clone() else {
            return Lookup::Off;
        };
        let Query {
            control,
            req,
            identity: id,
        } = q;
        // An answer holds one choice; `n > 1` asks for several.
        let several = req
            .fields()
            .iter()
            .find(|(k, _)| k == "n")
            .and_then(|(_, n)| n.get().parse::<u64>().ok())
            .is_some_and(|n| n > 1);
        if control.no_store || several {
            return miss(Status::Bypass, None);
        }
        let key = key::exact_request(id, req);
        let ttl = control.ttl.map_or(self.ttl, |t| t.min(self.ttl));
        let store = !ttl.is_zero();

        let mut leader = None;
        let status = if control.no_cache {
            Status::Bypass
        } else {
            if let Some(hit) = backend.get(&key).await {
                return hit_of(hit, Found::Exact);
            }
            // Only plain requests wait for a leader: a stream must start as soon as its own
            // upstream does.
            if !req.stream && store {
                match self.inflight.join(&key) {
                    Join::Follower(rx) => {
                        if let Some(hit) = follow(rx).await {
                            return hit_of(hit, Found::Coalesced);
                        }
                    }
                    Join::Leader(l) => {
                        // The previous leader may have stored and left between our lookup and
                        // our join.
                        if let Some(hit) = backend.get(&key).await {
                            return hit_of(hit, Found::Exact);
                        }
                        leader = Some(l);
                    }
                }
            }
            Status::Miss
        };

        let mut semantic = None;
        if let Some(sem) = &self.semantic {
            if let Some(text) =
                key::final_user_text(req.body()).filter(|_| store || !control.no_cache)
            {
                let context = key::context(id, req.body());
                // Boxed by the trait: an upstream exchange of its own, and rare; every
                // request's future would otherwise carry its size.
                let embedded = tokio::time::timeout(
                    semantic::EMBED_TIMEOUT,
                    embedder.embed(&sem.model, &text),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", semantic::EMBED_TIMEOUT)));
                match embedded {
                    Ok(vector) => {
                        if !control.no_cache {
                            if let Some((hit, similarity)) =
                                semantic_match(backend.as_ref(), &context, &vector, sem.threshold)
                                    .await
                            {
                                if let Some(l) = &leader {
                                    l.publish(hit.clone());
                                }
                                // The miss counted above stands: the exact key missed.
                                crate::metrics::cache_lookup(status.label());
                                return hit_of(hit, Found::Semantic(similarity));
                            }
                        }
                        semantic = Some((context, vector));
                    }
                    Err(e) => {
                        if self.embed_warn.ready() {
                            log::warn!(
                                "cache: embedding with {} failed, semantic lookup skipped: {e}",
                                sem.model
                            );
                        }
                    }
                }
            }
        }

        let fill = store.then(|| {
            Box::new(Fill {
                key,
                ttl,
                semantic,
                leader,
                source: Source::Nothing,
                model: None,
            })
        });
        miss(status, fill)
    }

    /// Looks up a request by its exact key alone (an endpoint the semantic layer does not
    /// read, such as legacy completions, whose key the caller made with
    /// [`key::exact_fields`]): an exact or coalesced hit, or what to store once the answer is
    /// known (recorded with [`Fill::record_answer`]).
    pub async fn lookup_exact(&self, control: Control, key: Key, stream: bool) -> Lookup {
        let Some(backend) = self.backend.clone() else {
            return Lookup::Off;
        };
        if control.no_store {
            return miss(Status::Bypass, None);
        }
        let ttl = control.ttl.map_or(self.ttl, |t| t.min(self.ttl));
        let store = !ttl.is_zero();
        let mut leader = None;
        let status = if control.no_cache {
            Status::Bypass
        } else {
            if let Some(hit) = backend.get(&key).await {
                return hit_of(hit, Found::Exact);
            }
            if !stream && store {
                match self.inflight.join(&key) {
                    Join::Follower(rx) => {
                        if let Some(hit) = follow(rx).await {
                            return hit_of(hit, Found::Coalesced);
                        }
                    }
                    Join::Leader(l) => {
                        if let Some(hit) = backend.get(&key).await {
                            return hit_of(hit, Found::Exact);
                        }
                        leader = Some(l);
                    }
                }
            }
            Status::Miss
        };
        let fill = store.then(|| {
            Box::new(Fill {
                key,
                ttl,
                semantic: None,
                leader,
                source: Source::Nothing,
                model: None,
            })
        });
        miss(status, fill)
    }

    /// Stores the answer of a finished exchange if it is complete and successful, and releases
    /// coalesced followers. Call once the exchange is over, whatever its outcome (`served`:
    /// the client got a complete 200 answer, or hung up after one).
    pub async fn store(
        &self,
        fill: Box<Fill>,
        served: bool,
        usage: Option<crate::api::Usage>,
        provider: &str,
    ) {
        let Fill {
            key,
            ttl,
            semantic,
            leader,
            source,
            mut model,
        } = *fill;
        let Some(backend) = self.backend.as_ref() else {
            return;
        };
        if !served {
            return;
        }
        let answer = match source {
            Source::Plain(a) => Some(a),
            Source::Bytes(a) => {
                model = a.model().map(str::to_string);
                a.answer()
            }
            Source::Events(r) => {
                std::mem::take(&mut *r.lock().unwrap_or_else(PoisonError::into_inner)).answer()
            }
            Source::Nothing | Source::Forgone => None,
        };
        let Some(mut answer) = answer else {
            return;
        };
        // The client may not have asked for the usage chunk; the translator saw it anyway.
        if answer.usage.is_none() {
            answer.usage = usage;
        }
        let entry = Entry {
            answer,
            provider: provider.to_string(),
            model,
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
}

fn miss(status: Status, fill: Option<Box<Fill>>) -> Lookup {
    crate::metrics::cache_lookup(status.label());
    Lookup::Miss {
        status: Some(status),
        fill,
    }
}

fn hit_of(hit: Hit, found: Found) -> Lookup {
    crate::metrics::cache_lookup(Status::Hit.label());
    Lookup::Hit(hit, found)
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

/// The response headers of a hit, beside `X-Cache: HIT`.
pub fn hit_headers(hit: &Hit, found: Found) -> Vec<(&'static str, String)> {
    // Round up: a live entry never claims 0 seconds left.
    let secs = hit.ttl_left.as_millis().div_ceil(1000);
    let mut h = vec![(X_CACHE_TTL, secs.to_string())];
    match found {
        Found::Exact => {}
        Found::Coalesced => h.push((X_CACHE_COALESCED, "true".into())),
        Found::Semantic(s) => {
            h.push((X_CACHE_SEMANTIC, "true".into()));
            h.push((X_CACHE_SIMILARITY, format!("{s:.4}")));
        }
    }
    h
}

impl Fill {
    /// A plain OpenAI `chat.completion` body, passed through to the client.
    pub fn record_body(&mut self, body: &[u8]) {
        self.source = match answer_from_completion(body) {
            Some((a, model)) => {
                self.model = model;
                Source::Plain(a)
            }
            None => Source::Nothing,
        };
    }

    /// A plain answer: translated, or made by the gateway itself (the echo provider).
    pub fn record_answer(&mut self, answer: Answer) {
        self.source = Source::Plain(answer);
    }

    /// `writer` (the client's dialect) wrapped to record the canonical events of a translated
    /// stream on their way to it.
    pub fn tee_events(&mut self, writer: Box<dyn EventWriter>) -> Box<dyn EventWriter> {
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        self.source = Source::Events(recorder.clone());
        Box::new(TeeEvents::new(writer, recorder))
    }

    /// The answer is not to be stored (coalesced followers are still released).
    pub fn forgo(&mut self) {
        self.source = Source::Forgone;
    }

    /// Whether [`Fill::tee`] reads stream bytes: no once the answer comes another way.
    pub fn wants_bytes(&self) -> bool {
        matches!(self.source, Source::Nothing | Source::Bytes(_))
    }

    /// Bytes of an OpenAI chat stream, exactly as they were written to the client.
    pub fn tee(&mut self, bytes: &[u8]) {
        match &mut self.source {
            Source::Bytes(a) => a.feed(bytes),
            Source::Nothing => {
                let mut a = Assembler::new();
                a.feed(bytes);
                self.source = Source::Bytes(a);
            }
            _ => {}
        }
    }
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
