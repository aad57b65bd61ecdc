//! The `GATEWAY_METRICS_LISTEN` listener: `/metrics`, `/health`, and the admin API when
//! `GATEWAY_ADMIN_KEY` is set.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;

use crate::error::GatewayError;
use crate::metrics::render;

use super::Session;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 1 << 20;

/// The `GATEWAY_METRICS_LISTEN` listener: `/metrics` (and `/health`), and `/admin/...` when
/// the admin API is on.
pub struct MetricsApp(pub Option<std::sync::Arc<crate::tenants::Tenants>>);

impl MetricsApp {
    async fn admin(t: &crate::tenants::Tenants, session: &mut Session) -> (u16, String, Vec<u8>) {
        let mut body = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(chunk)) = session.read_request_body().await {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return false;
                }
                body.extend_from_slice(&chunk);
            }
            true
        })
        .await;
        if read != Ok(true) {
            let e = GatewayError::bad_request("", "the request body is too large or too slow");
            return (e.status, "application/json".into(), e.body().to_vec());
        }
        let h = session.req_header();
        let (status, out) = crate::tenants::admin::handle(
            t,
            h.method.as_str(),
            h.uri.path(),
            h.uri.query(),
            h.headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            &body,
        )
        .await;
        (status, "application/json".into(), out.to_vec())
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut Session) -> Response<Vec<u8>> {
        let admin = self
            .0
            .as_ref()
            .filter(|t| t.admin_enabled())
            .filter(|_| crate::tenants::admin::is_admin_path(session.req_header().uri.path()));
        if let Some(t) = admin {
            let (status, ctype, body) = Self::admin(t, session).await;
            let len = body.len();
            return Response::builder()
                .status(status)
                .header("content-type", ctype)
                .header("content-length", len)
                .body(body)
                .unwrap_or_else(|_| Response::new(Vec::new()));
        }
        let h = session.req_header();
        let get = h.method == http::Method::GET || h.method == http::Method::HEAD;
        let (status, ctype, body) = match h.uri.path().trim_end_matches('/') {
            "/metrics" if get => {
                let (ctype, body) = render();
                (200, ctype, body)
            }
            "/health" | "/healthz" if get => (
                200,
                "application/json".to_string(),
                b"{\"status\":\"ok\"}".to_vec(),
            ),
            "/metrics" | "/health" | "/healthz" => (
                405,
                "application/json".to_string(),
                GatewayError::method_not_allowed(h.method.as_str(), h.uri.path())
                    .body()
                    .to_vec(),
            ),
            _ => (
                404,
                "application/json".to_string(),
                GatewayError::not_found(format!(
                    "this listener serves only GET /metrics and GET /health, not {}",
                    h.uri.path()
                ))
                .body()
                .to_vec(),
            ),
        };
        let len = body.len();
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("content-length", len)
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
