//! The error every client sees: the OpenAI error object
//! `{"error":{"message","type","param","code"}}` with a status, plus a low-cardinality label
//! for metrics and logs.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use serde_json::json;

/// OpenAI's error `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    RateLimit,
    Server,
    Api,
    /// The gateway could not get an answer from the upstream (connect, timeout, bad body).
    Upstream,
    /// A type an upstream named that is none of the above, passed on as it came.
    Other(Box<str>),
}

impl ErrorKind {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Server => "server_error",
            ErrorKind::Api => "api_error",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::Other(s) => s,
        }
    }

    /// The type conventionally used for a status.
    pub fn for_status(status: u16) -> Self {
        match status {
            400 | 404 | 405 | 409 | 413 | 415 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            429 => ErrorKind::RateLimit,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Api,
        }
    }
}

impl From<&str> for ErrorKind {
    fn from(s: &str) -> Self {
        match s {
            "invalid_request_error" => ErrorKind::InvalidRequest,
            "authentication_error" => ErrorKind::Authentication,
            "permission_error" => ErrorKind::Permission,
            "rate_limit_error" => ErrorKind::RateLimit,
            "server_error" => ErrorKind::Server,
            "api_error" => ErrorKind::Api,
            "upstream_error" => ErrorKind::Upstream,
            other => ErrorKind::Other(other.into()),
        }
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything an error says. Boxed inside [`GatewayError`], so a `Result` that may carry one
/// stays a pointer wide on the request path.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorDetails {
    pub status: u16,
    pub message: String,
    /// OpenAI `type`.
    pub kind: ErrorKind,
    pub param: Option<String>,
    pub code: Option<String>,
    /// `Retry-After` to send, in seconds (as text, passed through from upstreams).
    pub retry_after: Option<String>,
    /// Low-cardinality reason for logs and metrics (`bad_request`, `upstream_5xx`, ...).
    pub label: &'static str,
    /// An HTTP error answered by an upstream (not one the gateway made up).
    pub upstream: bool,
    /// The upstream's own status and error body, when the client's dialect is the upstream's
    /// format and the body is already in that dialect's error shape: answered untouched.
    pub native: Option<(u16, Bytes)>,
}

/// The error: its details behind one pointer. Fields read and write through `Deref`
/// (`err.status`, `err.label = ...`).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError(Box<ErrorDetails>);

impl Deref for GatewayError {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl DerefMut for GatewayError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl From<ErrorDetails> for GatewayError {
    fn from(d: ErrorDetails) -> Self {
        GatewayError(Box::new(d))
    }
}

impl GatewayError {
    pub fn new(
        status: u16,
        kind: impl Into<ErrorKind>,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ErrorDetails {
            status,
            message: message.into(),
            kind: kind.into(),
            param: None,
            code: code.map(str::to_string),
            retry_after: None,
            label: label_for_status(status),
            upstream: false,
            native: None,
        }
        .into()
    }

    /// An error an upstream answered with, mapped to OpenAI's object (its label from the
    /// status).
    pub fn from_upstream(
        status: u16,
        kind: ErrorKind,
        code: Option<String>,
        message: String,
    ) -> Self {
        ErrorDetails {
            status,
            // Upstreams echo keys (OpenAI's 401 names the key it was given): cut them out
            // before the message reaches a client, a log line or a metric.
            message: capped(match crate::redact::text(&message) {
                std::borrow::Cow::Borrowed(_) => message,
                std::borrow::Cow::Owned(m) => m,
            }),
            kind,
            param: None,
            code: code.map(|c| crate::redact::text(&c).into_owned()),
            retry_after: None,
            label: label_for_status(status),
            upstream: true,
            native: None,
        }
        .into()
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

    /// The message alone (for callers that report it in their own words).
    pub fn into_message(self) -> String {
        self.0.message
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
            "type": self.kind.as_str(),
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
/// The most of an upstream's own words an error quotes (a host that answers with a page of
/// HTML or binary garbage is not repeated whole).
pub const MAX_QUOTED: usize = 1024;

/// `message` cut to [`MAX_QUOTED`] bytes (at a character boundary), saying how much was left out.
pub fn capped(mut message: String) -> String {
    if message.len() <= MAX_QUOTED {
        return message;
    }
    let mut end = MAX_QUOTED;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("... ({cut} more bytes not shown)"));
    message
}

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
        s if (400..500).contains(&s) => "client_error",
        _ => "other",
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

    #[test]
    fn small_and_typed() {
        assert_eq!(std::mem::size_of::<GatewayError>(), 8);
        assert_eq!(ErrorKind::from("rate_limit_error"), ErrorKind::RateLimit);
        assert_eq!(
            ErrorKind::from("insufficient_quota").as_str(),
            "insufficient_quota"
        );
        assert_eq!(ErrorKind::for_status(401), "authentication_error");
        let mut e = GatewayError::internal("boom");
        e.label = "x";
        assert_eq!(
            (e.status, e.kind.as_str(), e.label),
            (500, "server_error", "x")
        );
    }
}
