//! The `GATEWAY_METRICS_LISTEN` listener: `/metrics` and `/health`, nothing else.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;

use crate::error::GatewayError;
use crate::metrics::render;

use super::Session;

/// The `GATEWAY_METRICS_LISTEN` listener: `/metrics` (and `/health`) only.
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut Session) -> Response<Vec<u8>> {
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
