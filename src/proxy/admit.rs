//! The gate for the `/v1` API: authenticate the key (`Authorization: Bearer`, or `x-api-key`), name it on the request, then apply its
//! rate limits (whose `x-ratelimit-*` headers go on the response either way).

use std::sync::Arc;

use crate::auth::ANONYMOUS;
use crate::error::GatewayError;

use super::{Ctx, Gateway, Session};

pub async fn admit(gw: &Gateway, session: &Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let headers = &session.req_header().headers;
    let header = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    // Anthropic's clients send the key as `x-api-key` (Claude Code sends either header).
    let result = match (header, headers.get("x-api-key")) {
        (None, Some(key)) => gw.auth.authenticate_key(key.as_bytes()),
        _ => gw.auth.authenticate(header),
    };
    let (name, limits) = match result {
        Ok(Some(e)) => {
            ctx.key_name = Some(e.name.to_string());
            ctx.tenant = gw.tenants.admission(&e);
            (e.name.clone(), e.limits)
        }
        Ok(None) => (Arc::from(ANONYMOUS), gw.limiter.config().defaults),
        Err(refusal) => {
            ctx.headers.push(("www-authenticate", "Bearer".into()));
            return Err(refusal.error());
        }
    };
    // A span only when limits apply (without them nothing is checked).
    let span = ctx
        .trace
        .as_ref()
        .filter(|_| limits.is_limited())
        .map(|t| t.child("gateway.rate_limit"));
    let (headers, admitted) = gw.limiter.admit(name, limits).await;
    crate::trace::end_rate_limit(span, admitted.is_ok());
    ctx.headers.extend(headers);
    ctx.rate_limit = admitted?;
    Ok(())
}
