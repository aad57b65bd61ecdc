//! A dialect's token counting (`POST /v1/messages/count_tokens`): the model's provider counts
//! when it speaks the dialect itself (Anthropic: the request passes through and its answer
//! comes back as it is) or has a counting endpoint of its own (Gemini `countTokens`, vLLM
//! `/tokenize`); for any other provider the gateway answers an estimate (about four characters
//! per token of the messages and tools, `providers::translate::estimate_prompt_tokens`).
//! No failover, no cache, no token charge.

use crate::dialects::Dialect;
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::CallInfo;
use crate::upstream::MAX_ERROR_BODY;

use super::{read_body, respond, Ctx, Gateway, Session};

pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    dialect: &'static dyn Dialect,
) -> Result<(), GatewayError> {
    let body = read_body(session, gw.config.max_body_bytes, gw.config.body_timeout).await?;
    let req = dialect.parse(&body, false)?;
    ctx.model = Some(req.model.clone());
    let route = gw.router.resolve(&req.model)?;
    let cfg = route.provider.config();
    ctx.provider = Some(cfg.name.clone());
    ctx.upstream_model = Some(route.upstream_model.clone());
    let passthrough = route
        .provider
        .speaks(dialect.native_format(), &route.upstream_model);
    if let Some(wait) = route.provider.ready() {
        wait.await?;
    }
    let call = CallInfo {
        client_model: req.model.clone(),
        upstream_model: route.upstream_model.clone(),
        stream: false,
        include_usage: false,
        parallel_tool_calls: req.parallel_tool_calls(),
        passthrough,
        client_format: dialect.native_format(),
        client_headers: if passthrough {
            super::chat::forwarded_headers(session)
        } else {
            Vec::new()
        },
    };
    let upstream = cfg.backends.first().and_then(|backend| {
        route
            .provider
            .count_tokens_request(&req, &call, backend)
            .map(|r| (backend, r))
    });
    let Some((backend, up)) = upstream else {
        let n = crate::providers::translate::estimate_prompt_tokens(&req);
        let body = dialect
            .count_tokens_body(n)
            .ok_or_else(|| GatewayError::not_found("this API has no token counting"))?;
        respond(session, ctx, 200, "application/json", &[], body).await;
        return Ok(());
    };
    let up = up?;
    ctx.attempts = 1;
    let mut resp = gw.upstreams.send(backend, &up).await.map_err(|e| {
        let err = e.into_gateway(&cfg.name);
        metrics::upstream_error(&cfg.name, err.label);
        err
    })?;
    let status = resp.status();
    let body = resp
        .read_all(MAX_ERROR_BODY)
        .await
        .map_err(|e| e.into_gateway(&cfg.name))?;
    resp.release().await;
    if !(200..300).contains(&status) {
        let mut err = route.provider.error(status, &body);
        err.upstream = true;
        metrics::upstream_error(&cfg.name, err.label);
        return Err(err);
    }
    // A translating format's count, in the dialect's shape (an estimate if it cannot be read).
    let body = if passthrough {
        body
    } else {
        let n = route
            .provider
            .count_tokens_response(&body)
            .unwrap_or_else(|| crate::providers::translate::estimate_prompt_tokens(&req));
        dialect
            .count_tokens_body(n)
            .ok_or_else(|| GatewayError::not_found("this API has no token counting"))?
    };
    respond(session, ctx, status, "application/json", &[], body).await;
    Ok(())
}
