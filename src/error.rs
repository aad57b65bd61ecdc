//! The error every client sees: the OpenAI error object
//! `{"error":{"message","type","param","code"}}` with a status, plus a low-cardinality label
//! for metrics and logs.

use bytes::Bytes;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    pub status: u16,
    pub message: String,
    /// OpenAI `type`: `invalid_request_error`, `authentication_error`, `rate_limit_error`, ...
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// `Retry-After` to send, in seconds (as text, passed through from upstreams).
    pub retry_after: Option<String>,
    /// Low-cardinality reason for logs and metrics (`bad_request`, `upstream_5xx`, ...).
    pub label: &'static str,
    /// An HTTP error answered by an upstream (not one the gateway made up).
    pub upstream: bool,
}

impl GatewayError {
    pub fn new(status: u16, kind: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            message: message.into(),
            kind: kind.to_string(),
            param: None,
            code: code.map(str::to_string),
            retry_after: None,
            label: label_for_status(status),
            upstream: false,
        }
    }

    /// 400 `invalid_request_error` naming the offending field.
    pub fn bad_request(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(400, "invalid_request_error", None, message);
        if !param.is_empty() {
            e.param = Some(param.to_string());
        }
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", Some("not_found"), message)
    }

    pub fn model_not_found(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            message,
        );
        e.param = Some("model".into());
        e
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            Some("method_not_allowed"),
            format!("method {method} is not allowed on {path}"),
        )
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            502,
            "upstream_error",
            Some("upstream_connect_error"),
            message,
        );
        e.label = "upstream_connect";
        e
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(504, "upstream_error", Some("upstream_timeout"), message);
        e.label = "upstream_timeout";
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", Some("internal_error"), message)
    }

    pub fn with_label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    pub fn with_retry_after(mut self, secs: impl Into<String>) -> Self {
        self.retry_after = Some(secs.into());
        self
    }

    /// The JSON body, `{"error":{...}}`.
    pub fn body(&self) -> Bytes {
        let v = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        Bytes::from(v.to_string())
    }

    /// The same object as one SSE event, for errors after the stream started.
    pub fn sse_event(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.message.len() + 96);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

/// Label for an upstream error status.
pub fn label_for_status(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "too_large",
        429 => "rate_limited",
        500..=599 => "server_error",
        400..=499 => "client_error",
        _ => "other",
    }
}

/// The OpenAI `type` conventionally used for a status.
pub fn kind_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = GatewayError::bad_request("messages", "messages is required");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert!(v["error"]["code"].is_null());
        assert_eq!(v["error"]["message"], "messages is required");
        assert!(e.sse_event().starts_with(b"data: {\"error\""));
        assert!(e.sse_event().ends_with(b"\n\n"));
    }
}
