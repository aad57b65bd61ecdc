//! `/v1/embeddings`: the model's provider only (no failover to other providers, no cache); a
//! provider with several backends is asked through its pool, the next backend when one fails.
//! The answer is translated to OpenAI's shape where the provider's differs. The semantic cache
//! embeds through the same path.

use bytes::Bytes;

use crate::api::{parse_object, required_model};
use crate::error::GatewayError;
use crate::metrics;
use crate::routing::Route;
use crate::upstream::MAX_ERROR_BODY;

use super::chat::MAX_RESPONSE_BODY;
use super::{read_body, respond, Ctx, Gateway, Session};

/// `POST /v1/embeddings`.
pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<(), GatewayError> {
    let body = read_body(session, gw.config.max_body_bytes, gw.config.body_timeout).await?;
    let obj = parse_object(&body)?;
    let model = required_model(&obj)?;
    match obj.get("input") {
        Some(serde_json::Value::String(_)) | Some(serde_json::Value::Array(_)) => {}
        None | Some(serde_json::Value::Null) => {
            return Err(GatewayError::bad_request(
                "input",
                "missing required parameter: 'input'",
            ))
        }
        Some(_) => {
            return Err(GatewayError::bad_request(
                "input",
                "'input' must be a string or an array",
            ))
        }
    }
    ctx.model = Some(model.clone());
    let mut route = gw.router.resolve(&model)?;
    if ctx.tenant.is_some() {
        let mut routes = vec![route];
        super::tenant::allow(ctx, &model, &mut routes)?;
        let prompt = (body.len() as u64).div_ceil(4);
        super::tenant::reserve(gw, ctx, &routes, prompt, 0).await?;
        route = routes
            .pop()
            .ok_or_else(|| GatewayError::internal("no route left"))?;
    }
    ctx.provider = Some(route.provider_name().to_string());
    ctx.upstream_model = Some(route.upstream_model.clone());
    ctx.attempts = 1;
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.prompt(&body);
        t.start_attempt(
            "embeddings",
            route.provider_name(),
            &route.upstream_model,
            1,
        );
    }
    let propagate = ctx.trace.as_ref().map(|t| t.propagation());
    let result = embed(gw, &route, &obj, &model, propagate).await;
    if let Some(t) = ctx.trace.as_deref_mut() {
        match &result {
            Ok((_, usage)) => t.end_attempt(None, None, *usage),
            Err(e) => t.end_attempt(
                Some((e.label, &e.message)),
                e.upstream.then_some(e.status),
                None,
            ),
        }
    }
    let (bytes, usage) = result?;
    ctx.usage = usage;
    respond(session, ctx, 200, "application/json", &[], bytes).await;
    Ok(())
}

/// Embeddings from the route's provider (also used by the semantic cache); `propagate`: trace
/// headers for the upstream. A provider with several backends (a replica pool) is asked through
/// its pool: the pool's pick, counted in flight, and the next backend when one fails (it cannot
/// be reached, or answers 429 or 5xx), at most `GATEWAY_RETRY_MAX` times; the breakers learn
/// from each answer as for chat.
pub async fn embed(
    gw: &Gateway,
    route: &Route,
    obj: &serde_json::Map<String, serde_json::Value>,
    client_model: &str,
    propagate: Option<crate::trace::Propagation>,
) -> Result<(Bytes, Option<crate::api::Usage>), GatewayError> {
    let cfg = route.provider.config();
    if cfg.format == "echo" {
        return crate::providers::echo::embeddings(obj, client_model);
    }
    if cfg.backends.is_empty() {
        return Err(GatewayError::bad_request(
            "model",
            format!("provider {} does not offer embeddings", cfg.name),
        ));
    }
    let pool = gw.router.pool(&cfg.name);
    let tries = cfg.backends.len().min(1 + gw.config.routing.retry_max);
    let mut tried: Vec<usize> = Vec::with_capacity(tries);
    let mut last: Option<GatewayError> = None;
    while tried.len() < tries {
        let i = match pool.and_then(|p| p.pick_for(&tried, None)) {
            Some((i, _, _)) => i,
            // Every backend cooling down: the first is still tried, as for chat.
            None if tried.is_empty() => 0,
            None => break,
        };
        tried.push(i);
        let Some(backend) = cfg.backends.get(i) else {
            break;
        };
        let _in_flight = pool.and_then(|p| p.start(i));
        let breaker = pool.and_then(|p| p.backends.get(i)).map(|b| &b.breaker);
        match exchange(gw, route, obj, client_model, backend, propagate.clone()).await {
            Ok(answer) => {
                if let Some(b) = breaker {
                    b.record_success();
                }
                return Ok(answer);
            }
            Err(err) => {
                let retryable = !err.upstream || err.status == 429 || err.status >= 500;
                if let Some(b) = breaker {
                    if retryable {
                        b.record_failure(&super::chat::failure_reason(&err));
                    } else {
                        b.record_success();
                    }
                }
                if !retryable {
                    return Err(err);
                }
                if tried.len() < tries {
                    log::info!(
                        "embeddings: backend {} of provider {} failed ({}); trying another",
                        i,
                        cfg.name,
                        err.label
                    );
                }
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        GatewayError::bad_gateway(format!("no backend of provider {} is available", cfg.name))
    }))
}

/// One embeddings exchange with one backend.
async fn exchange(
    gw: &Gateway,
    route: &Route,
    obj: &serde_json::Map<String, serde_json::Value>,
    client_model: &str,
    backend: &crate::config::BaseUrl,
    propagate: Option<crate::trace::Propagation>,
) -> Result<(Bytes, Option<crate::api::Usage>), GatewayError> {
    let cfg = route.provider.config();
    let mut up = route
        .provider
        .embeddings_request(obj, &route.upstream_model, backend)?;
    up.propagation = propagate;
    let mut resp = gw.upstreams.send(backend, &up).await.map_err(|e| {
        let err = e.into_gateway(&cfg.name);
        metrics::upstream_error(&cfg.name, err.label);
        err
    })?;
    let status = resp.status();
    let error_type = route
        .provider
        .error_type_header()
        .and_then(|h| resp.header(h))
        .map(str::to_string);
    let limit = if (200..300).contains(&status) {
        MAX_RESPONSE_BODY
    } else {
        MAX_ERROR_BODY
    };
    let body = resp
        .read_all(limit)
        .await
        .map_err(|e| e.into_gateway(&cfg.name))?;
    resp.release().await;
    if !(200..300).contains(&status) {
        let err = route
            .provider
            .typed_error(status, &body, error_type.as_deref());
        metrics::upstream_error(&cfg.name, err.label);
        return Err(err);
    }
    let (bytes, usage) = route.provider.embeddings_response(body, client_model)?;
    if cfg.format == "openai" {
        return Ok((bytes, usage));
    }
    // Translated answers: usage estimated if uncounted, base64 encoding applied.
    Ok(crate::providers::translate::finish_embeddings(
        obj, bytes, usage,
    ))
}
