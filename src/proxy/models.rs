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
    let Some(req) = p.models_request(backend) else {
        return Vec::new();
    };
    let fetch = async {
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

pub async fn list(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
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
    let dialect = crate::dialects::for_headers(&session.req_header().headers);
    let body = dialect.model_list(&body);
    respond(session, ctx, 200, "application/json", &[], body).await;
    Ok(())
}
