//! `GET /v1/models`: the configured providers' models as `provider/model`, from the
//! configuration and, where the upstream lists them, from its own listing (cached for
//! `GATEWAY_MODELS_CACHE_TTL`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::proxy::Session;
use bytes::Bytes;
use serde_json::json;

use crate::api::unix_now;
use crate::error::GatewayError;
use crate::providers::Provider;
use crate::proxy::{respond, Ctx, Gateway};

/// An upstream listing that takes longer than this is left out.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

async fn upstream_models(gw: &Gateway, p: &dyn Provider) -> Vec<String> {
    let Some(backend) = p.config().backends.first() else {
        return Vec::new();
    };
    let fetch = async {
        if let Some(wait) = p.ready() {
            wait.await.ok()?;
        }
        let req = p.models_request(backend)?;
        let mut resp = gw.upstreams.send(backend, &req).await.ok()?;
        if resp.status() != 200 {
            resp.release().await;
            return None;
        }
        let body = resp.read_all(8 * 1024 * 1024).await.ok()?;
        resp.release().await;
        Some(p.parse_models(&body))
    };
    tokio::time::timeout(LIST_TIMEOUT, fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

async fn build(gw: &Gateway) -> Bytes {
    let providers: Vec<_> = gw.router.providers.values().cloned().collect();
    let listings =
        futures::future::join_all(providers.iter().map(|p| upstream_models(gw, p.as_ref()))).await;
    let created = unix_now();
    let mut data = Vec::new();
    for (p, listed) in providers.iter().zip(listings) {
        let name = &p.config().name;
        let mut ids: BTreeSet<String> = listed.into_iter().collect();
        if let Some(m) = &p.config().default_model {
            ids.insert(m.clone());
        }
        for id in ids {
            data.push(json!({
                "id": format!("{name}/{id}"),
                "object": "model",
                "created": created,
                "owned_by": name,
            }));
        }
    }
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// The gateway's model list (OpenAI's list object), cached for `GATEWAY_MODELS_CACHE_TTL`.
async fn listing(gw: &Gateway) -> Bytes {
    let cached = gw
        .models_cache
        .lock()
        .as_ref()
        .filter(|(at, _)| at.elapsed() < gw.config.models_cache_ttl)
        .map(|(_, b)| b.clone());
    let body = match cached {
        Some(b) => b,
        None => {
            let b = build(gw).await;
            *gw.models_cache.lock() = Some((Instant::now(), b.clone()));
            b
        }
    };
    body
}

pub async fn list(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let body = super::tenant::filter_models(ctx, listing(gw).await);
    let dialect = crate::dialects::for_headers(&session.req_header().headers);
    let body = dialect.model_list(&body);
    respond(session, ctx, 200, "application/json", &[], body).await;
    Ok(())
}

/// `GET /v1/models/{model}`: the model object of a model `GET /v1/models` lists (its id may hold
/// `/`, sent as it is or percent-encoded), else 404 `model_not_found`.
pub async fn retrieve(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    path: &str,
) -> Result<(), GatewayError> {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("/v1").unwrap_or(p);
    let raw = p.strip_prefix("/models/").unwrap_or_default();
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| GatewayError::bad_request("model", "the model id is not UTF-8"))?
        .into_owned();
    ctx.model = Some(id.clone());
    let body = super::tenant::filter_models(ctx, listing(gw).await);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let found = list
        .get("data")
        .and_then(serde_json::Value::as_array)
        .and_then(|models| {
            models
                .iter()
                .find(|m| m.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
        })
        .cloned();
    let Some(model) = found else {
        return Err(GatewayError::model_not_found(format!(
            "the model '{id}' does not exist: GET /v1/models lists the models the gateway serves"
        )));
    };
    // In the client's shape: the list writer of its dialect, given a list of this one model.
    let dialect = crate::dialects::for_headers(&session.req_header().headers);
    let one = Bytes::from(json!({"object": "list", "data": [model]}).to_string());
    let shaped: serde_json::Value =
        serde_json::from_slice(&dialect.model_list(&one)).unwrap_or_default();
    let object = shaped
        .get("data")
        .and_then(|d| d.get(0))
        .cloned()
        .unwrap_or(model);
    respond(
        session,
        ctx,
        200,
        "application/json",
        &[],
        Bytes::from(object.to_string()),
    )
    .await;
    Ok(())
}
