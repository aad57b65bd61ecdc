//! The response cache in a request's lifecycle: the cache library decides; this file reads
//! the request's cache headers, puts the cache's headers on the response, writes hits, and
//! embeds text for the semantic layer through the gateway's own providers.

use crate::canonical::AnswerWriter;
use std::sync::Arc;

use bytes::BytesMut;

use crate::api::{unix_now, Answer, ChatRequest};
use crate::cache::assemble::RecordAnswers;
use crate::cache::{self, Control, Embedder, Found, Hit, Identity, Lookup, Query};
use crate::canonical::EventWriter;
use crate::dialects::{replay, Dialect};
use crate::error::GatewayError;
use crate::providers::CallInfo;
use crate::routing::Route;

use super::{respond, Ctx, Gateway, Session};

#[async_trait::async_trait]
impl Embedder for Gateway {
    async fn embed(&self, model: &str, text: &str) -> Result<Arc<[f32]>, String> {
        let route = self
            .router
            .resolve(model)
            .map_err(GatewayError::into_message)?;
        let obj = match serde_json::json!({"model": model, "input": text}) {
            serde_json::Value::Object(o) => o,
            _ => return Err("internal: request is not an object".into()),
        };
        let (body, _usage) = super::embeddings::embed(self, &route, &obj, model, None)
            .await
            .map_err(GatewayError::into_message)?;
        cache::semantic::parse_embedding(&body)
    }
}

fn push_header(ctx: &mut Ctx, name: &'static str, value: String) {
    ctx.headers.retain(|(k, _)| *k != name);
    ctx.headers.push((name, value));
}

fn set_status(ctx: &mut Ctx, status: cache::Status) {
    ctx.cache = Some(status.label());
    push_header(ctx, cache::X_CACHE, status.header().to_string());
}

/// Looks the request up; on a hit, answers the client and returns `true`.
pub async fn lookup(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    route: &Route,
    dialect: &'static dyn Dialect,
) -> Result<bool, GatewayError> {
    if !gw.cache.enabled() {
        return Ok(false);
    }
    let control = Control::from_headers(&session.req_header().headers)?;
    let scope = gw
        .cache
        .per_key()
        .then(|| ctx.key_name.clone().unwrap_or_default());
    let identity = Identity {
        provider: route.provider_name(),
        upstream_model: &route.upstream_model,
        scope: scope.as_deref(),
    };
    let query = Query {
        control,
        req,
        identity,
    };
    match gw.cache.lookup(query, gw).await {
        Lookup::Off => Ok(false),
        Lookup::Miss { status, fill } => {
            if let Some(s) = status {
                set_status(ctx, s);
            }
            ctx.cache_fill = fill;
            Ok(false)
        }
        Lookup::Hit(hit, found) => {
            serve(session, ctx, req, &hit, found, dialect).await;
            Ok(true)
        }
    }
}

/// Answers from a stored entry, in the form the client asked for.
async fn serve(
    session: &mut Session,
    ctx: &mut Ctx,
    req: &ChatRequest,
    hit: &Hit,
    found: Found,
    dialect: &'static dyn Dialect,
) {
    set_status(ctx, cache::Status::Hit);
    for (k, v) in cache::hit_headers(hit, found) {
        push_header(ctx, k, v);
    }
    ctx.provider = Some(hit.entry.provider.clone());
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.answered(
            hit.entry.model.as_deref(),
            Some(&hit.entry.answer.finish_reason),
        );
    }
    super::chat::note_dropped_tools(ctx, req, true);
    // No upstream tokens were spent; the body still reports the original counts.
    ctx.usage = None;
    let answer = &hit.entry.answer;
    // The model the stored answer named: a hit says what the miss said.
    let model = hit.entry.model.as_deref().unwrap_or(&req.model);
    let (content_type, body) = if req.stream {
        let mut w = dialect.events_for(req, model);
        let mut out = BytesMut::with_capacity(512 + answer.content.as_ref().map_or(0, String::len));
        replay(w.as_mut(), &mut out, answer, req.include_usage);
        ("text/event-stream", out.freeze())
    } else {
        let body = dialect.answers_for(req).answer_body(
            "",
            unix_now(),
            model,
            std::slice::from_ref(answer),
            answer.usage.as_ref(),
        );
        ("application/json", body)
    };
    let extra: &[(&str, &str)] = if req.stream {
        &[("cache-control", "no-cache")]
    } else {
        &[]
    };
    // An entry recorded from a translated answer holds the upstream's text as it was: secrets
    // are cut out here, as on the way out of a miss.
    let body = crate::redact::body(body);
    respond(session, ctx, 200, content_type, extra, body).await;
}

/// The wire format whose answers the cache can read from the bytes the client was sent.
const CHAT_FORMAT: &str = "openai";

/// For a translated plain answer the pending fill wants: the client's dialect's writer `answers`,
/// recording the canonical answer it writes (give it to [`record_plain`]).
pub fn answer_recorder<'a>(
    ctx: &Ctx,
    call: &CallInfo,
    answers: &'a dyn AnswerWriter,
) -> Option<RecordAnswers<'a>> {
    (ctx.cache_fill.is_some() && !call.passthrough).then(|| RecordAnswers::new(answers))
}

/// A plain upstream answer for the pending fill: the canonical answer `recorded` while it was
/// translated, or an OpenAI chat body passed through; a pass-through in another dialect is
/// not stored (see [`crate::cache`]).
pub fn record_plain(
    ctx: &mut Ctx,
    call: &CallInfo,
    body: &[u8],
    recorded: Option<RecordAnswers<'_>>,
) {
    let Some(f) = ctx.cache_fill.as_mut() else {
        return;
    };
    match recorded.and_then(RecordAnswers::take) {
        Some(answer) => f.record_answer(answer),
        None if call.passthrough && call.client_format == CHAT_FORMAT => f.record_body(body),
        None => f.forgo(),
    }
}

/// The writer of a translated stream's events: the client's dialect's, recording the answer
/// for the pending fill.
pub fn tee_events(ctx: &mut Ctx, writer: Box<dyn EventWriter>) -> Box<dyn EventWriter> {
    match ctx.cache_fill.as_mut() {
        Some(f) => f.tee_events(writer),
        None => writer,
    }
}

/// A stream passed through: the fill reads it from the bytes in OpenAI chat, else (another
/// dialect's native stream) does not store it.
pub fn passthrough_stream(ctx: &mut Ctx, call: &CallInfo) {
    if let Some(f) = ctx.cache_fill.as_mut() {
        if call.client_format != CHAT_FORMAT {
            f.forgo();
        }
    }
}

/// A plain answer the gateway made itself (the echo provider).
pub fn record_answer(ctx: &mut Ctx, answer: &Answer) {
    if let Some(f) = ctx.cache_fill.as_mut() {
        f.record_answer(answer.clone());
    }
}

/// Bytes of a stream, exactly as they were written to the client.
pub fn tee(ctx: &mut Ctx, bytes: &[u8]) {
    if let Some(f) = ctx.cache_fill.as_mut() {
        f.tee(bytes);
    }
}

/// Whether [`tee`] wants the bytes (so the caller copies them only then).
pub fn wants_tee(ctx: &Ctx) -> bool {
    ctx.cache_fill.as_ref().is_some_and(|f| f.wants_bytes())
}

/// Stores a complete, successful answer that is about to reach the client (the whole plain
/// body, or the stream's last bytes, recorded), and releases coalesced followers. Storing
/// before the client has it makes the entry visible to whatever request the client sends next.
pub async fn store_complete(gw: &Gateway, ctx: &mut Ctx) {
    let Some(fill) = ctx.cache_fill.take() else {
        return;
    };
    let provider = ctx.provider.as_deref().unwrap_or_default();
    gw.cache.store(fill, true, ctx.usage, provider).await;
}

/// Stores the answer if it is complete and successful (unless [`store_complete`] already
/// did), and releases coalesced followers. Call once the exchange is over, whatever its
/// outcome.
pub async fn finish(gw: &Gateway, ctx: &mut Ctx) {
    let Some(fill) = ctx.cache_fill.take() else {
        return;
    };
    // A client that hung up does not make a complete answer incomplete (a stream cut short
    // never reached `[DONE]`, so its assembler holds nothing); storing it spares the retry.
    let served = ctx.status == 200 && matches!(ctx.outcome, "ok" | "client_closed");
    let provider = ctx.provider.as_deref().unwrap_or_default();
    gw.cache.store(fill, served, ctx.usage, provider).await;
}
