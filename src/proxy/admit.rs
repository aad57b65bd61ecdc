//! The gate for the `/v1` API: authenticate the key, name it on the request, then apply its
//! rate limits (whose `x-ratelimit-*` headers go on the response either way).

use std::sync::Arc;

use crate::auth::ANONYMOUS;
use crate::error::GatewayError;

use super::{Ctx, Gateway, Session};

pub async fn admit(gw: &Gateway, session: &Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let header = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let (name, limits) = match gw.auth.authenticate(header) {
        Ok(Some(e)) => {
            ctx.key_name = Some(e.name.to_string());
            (e.name.clone(), e.limits)
        }
        Ok(None) => (Arc::from(ANONYMOUS), gw.limiter.config().defaults),
        Err(refusal) => {
            ctx.headers.push(("www-authenticate", "Bearer".into()));
            return Err(refusal.error());
        }
    };
    let (headers, admitted) = gw.limiter.admit(name, limits).await;
    ctx.headers.extend(headers);
    ctx.rate_limit = admitted?;
    Ok(())
}
