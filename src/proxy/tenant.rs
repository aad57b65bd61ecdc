//! A tenant key's allow-list and budget on the request path (only for keys that have one: a
//! key without `ctx.tenant` passes through here at the cost of one `Option` check).
//!
//! - Allow-list: a candidate is allowed when the client's model name (an alias included) or the
//!   candidate's `provider/model` matches one of the key's patterns; the others are dropped
//!   from the failover order, and none left is `403 model_not_allowed`.
//! - Budget: the worst case (prompt estimate plus `max_tokens` / `max_completion_tokens` /
//!   `max_output_tokens` times `n`, or `GATEWAY_BUDGET_RESERVE_TOKENS` when none is set, priced
//!   at the dearest candidate) is reserved before anything is sent upstream.

use bytes::Bytes;
use serde::Deserialize;

use super::Ctx;
use super::Gateway;
use crate::api::{ChatRequest, Usage};
use crate::config::auth::MICRO;
use crate::error::GatewayError;
use crate::routing::Route;
use crate::tenants::model_allowed;

fn not_allowed(key: &str, model: &str, patterns: &[String]) -> GatewayError {
    let mut e = GatewayError::new(
        403,
        "invalid_request_error",
        Some("model_not_allowed"),
        format!(
            "key {key} may not use the model '{model}' (it may use: {})",
            patterns.join(", ")
        ),
    )
    .with_label("model_not_allowed");
    e.param = Some("model".into());
    e
}

/// Drops the candidates the key may not use; 403 when none is left.
pub(super) fn allow(ctx: &Ctx, model: &str, routes: &mut Vec<Route>) -> Result<(), GatewayError> {
    let Some(t) = ctx.tenant.as_deref() else {
        return Ok(());
    };
    let Some(pats) = t.policy.as_ref().and_then(|p| p.models.as_ref()) else {
        return Ok(());
    };
    if model_allowed(pats, model) {
        return Ok(());
    }
    routes.retain(|r| model_allowed(pats, &format!("{}/{}", r.provider_name(), r.upstream_model)));
    if routes.is_empty() {
        return Err(not_allowed(&t.key, model, pats));
    }
    Ok(())
}

/// Reserves `prompt` and `completion` tokens priced at the dearest of `routes`.
pub(super) async fn reserve(
    gw: &Gateway,
    ctx: &mut Ctx,
    routes: &[Route],
    prompt: u64,
    completion: u64,
) -> Result<(), GatewayError> {
    let Some(t) = ctx.tenant.as_deref_mut() else {
        return Ok(());
    };
    if t.policy.as_ref().and_then(|p| p.budget).is_none() {
        return Ok(());
    }
    let usage = Usage::new(prompt, completion);
    let worst = routes
        .iter()
        .filter_map(|r| crate::pricing::cost_usd(r.provider_name(), &r.upstream_model, &usage))
        .fold(0.0f64, f64::max);
    let micro = (worst * MICRO).round() as u64;
    gw.tenants.reserve(t, micro).await
}

#[derive(Deserialize, Default)]
struct MaxTokens {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
}

/// A chat-like request's worst case in tokens: (prompt estimate, completion maximum).
pub(super) fn worst_tokens(gw: &Gateway, req: &ChatRequest) -> (u64, u64) {
    let (prompt, m) = match req.native_body() {
        // Another dialect's body: about four bytes a token of the whole body, and its own
        // maximum field, read without translating it.
        Some(b) => (
            (b.len() as u64).div_ceil(4),
            serde_json::from_slice::<MaxTokens>(b).unwrap_or_default(),
        ),
        None => {
            let mut m = MaxTokens::default();
            for (k, v) in req.fields() {
                let n = || serde_json::from_str::<u64>(v.get()).ok();
                match k.as_str() {
                    "max_tokens" => m.max_tokens = n(),
                    "max_completion_tokens" => m.max_completion_tokens = n(),
                    "n" => m.n = n(),
                    _ => {}
                }
            }
            // About four bytes a token of the messages and tools as sent (bytes, not
            // characters: as conservative, and no pass over the text).
            let tools = req
                .fields()
                .iter()
                .find(|(k, _)| k == "tools")
                .map_or(0, |(_, v)| v.get().len());
            (((req.messages_raw().len() + tools) as u64).div_ceil(4), m)
        }
    };
    let max = m
        .max_completion_tokens
        .or(m.max_tokens)
        .or(m.max_output_tokens)
        .unwrap_or(gw.tenants.reserve_tokens());
    (prompt, max.saturating_mul(m.n.unwrap_or(1).max(1)))
}

/// `/v1/models` for a key with an allow-list: only the models it may use.
pub(super) fn filter_models(ctx: &Ctx, body: Bytes) -> Bytes {
    let Some(pats) = ctx
        .tenant
        .as_deref()
        .and_then(|t| t.policy.as_ref())
        .and_then(|p| p.models.as_ref())
    else {
        return body;
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    if let Some(data) = v.get_mut("data").and_then(|d| d.as_array_mut()) {
        data.retain(|m| {
            m.get("id")
                .and_then(|id| id.as_str())
                .is_some_and(|id| model_allowed(pats, id))
        });
    }
    Bytes::from(v.to_string())
}
