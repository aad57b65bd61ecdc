//! Upstream wire formats. One file per format (a folder for the translating ones: `wire.rs` for
//! the serde types, `translate.rs` for what they mean), each implementing [`Provider`];
//! OpenAI-compatible vendors are configuration, not code.
//!
//! To add a wire format: write `providers/<format>.rs` implementing [`Provider`] (an SSE stream
//! is an [`stream::EventDecoder`] run by [`stream::SseDriver`]; answers and events are written
//! through the client's [`crate::canonical`] writers) and add its line to [`REGISTRY`]. A custom
//! host selects it with `GATEWAY_PROVIDER_<NAME>_FORMAT=<format>`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::api::{ChatRequest, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::{providers::format_variable, BaseUrl, Config, ProviderConfig};
use crate::error::GatewayError;

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod cohere;
pub mod echo;
pub mod gemini;
pub mod openai;
pub mod responses_passthrough;
pub mod stream;
pub mod translate;
pub mod vertex;

/// A request to send upstream, fully encoded.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: &'static str,
    /// Path and query, base path included (`/v1/chat/completions`).
    pub path: String,
    /// Extra headers (auth, versions). `Host`, `Content-Type` and `Content-Length` are added by
    /// the connector layer.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// W3C `traceparent` / `tracestate` for this attempt, when the request is traced.
    pub propagation: Option<crate::trace::Propagation>,
}

impl UpstreamRequest {
    pub fn get(path: String, headers: Vec<(&'static str, String)>) -> Self {
        UpstreamRequest {
            method: "GET",
            path,
            headers,
            body: Bytes::new(),
            propagation: None,
        }
    }

    pub fn post(path: String, headers: Vec<(&'static str, String)>, body: Bytes) -> Self {
        UpstreamRequest {
            method: "POST",
            path,
            headers,
            body,
            propagation: None,
        }
    }
}

/// What a translator needs to know about the call.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The model name as the client asked for it (reported back in responses).
    pub client_model: String,
    /// The model name sent upstream.
    pub upstream_model: String,
    pub stream: bool,
    /// The client asked for a usage chunk.
    pub include_usage: bool,
    /// False when the client sent `parallel_tool_calls: false`: formats that cannot be told so
    /// upstream (Gemini) keep only the first tool call of an answer.
    pub parallel_tool_calls: bool,
    /// The client's dialect is this upstream's wire format (decided once, by the proxy): the
    /// request goes as the client sent it and answers and streams pass through as bytes;
    /// otherwise the provider decodes them into the dialect's writers.
    pub passthrough: bool,
    /// The wire format of the client's dialect (`Dialect::native_format`): with `passthrough`,
    /// what the request and answers are (a host that speaks several formats serves each).
    pub client_format: &'static str,
    /// Headers of the client's request a pass-through forwards (`anthropic-version`,
    /// `anthropic-beta` for the Messages API), lower-case names.
    pub client_headers: Vec<(&'static str, String)>,
}

/// A translated non-streamed answer.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The response body in the client's dialect.
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// What a stream translator says after a piece of input.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamStatus {
    /// More to come.
    Continue,
    /// The upstream signalled the end; `data: [DONE]` has been written.
    Done,
    /// The upstream signalled an error: the caller ends the stream with this error event.
    Failed(GatewayError),
}

/// Translates one upstream stream into the client's dialect, chunk by chunk.
pub trait StreamTranslator: Send {
    /// Consumes bytes as they came off the wire and appends the client's bytes to `out`.
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> StreamStatus;
    /// The upstream body ended. Formats whose streams simply end (Gemini) write their closing
    /// chunks and `[DONE]` here; for the others an end before the terminal event is an error.
    fn finish(&mut self, out: &mut BytesMut) -> StreamStatus;
    /// Usage seen so far (final once the stream is done).
    fn usage(&self) -> Option<Usage>;

    /// The event ending a failed stream, when this translator words it itself (a pass-through
    /// that knows its upstream's response id and event count; empty when the upstream's own
    /// failure event was already forwarded). `None`: the client's dialect words it.
    fn failure_event(&self, _err: &GatewayError) -> Option<Bytes> {
        None
    }
}

/// One upstream wire format.
pub trait Provider: Send + Sync {
    fn config(&self) -> &ProviderConfig;

    /// Whether a client whose dialect is wire format `format` passes through to
    /// `upstream_model` (its bytes go as sent). A host decides by its configuration; one that
    /// serves several formats decides per model (Vertex AI: its Claude models speak Messages).
    fn speaks(&self, format: &str, _upstream_model: &str) -> bool {
        self.config().speaks(format)
    }

    /// Credentials to fetch before a request can be encoded (a cloud's short-lived access
    /// token): a future that waits for them, or `None` when there is nothing to wait for (every
    /// key-based provider, at no cost on their path).
    fn ready(&self) -> Option<futures::future::BoxFuture<'_, Result<(), GatewayError>>> {
        None
    }

    /// Encodes a chat request for this upstream.
    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// Translates a successful (2xx) non-streamed response body. A translating format decodes
    /// it into canonical answers and has `w` (the client's dialect) write the body; a format
    /// that is the client's dialect passes the body through and ignores `w`.
    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError>;

    /// A translator for a successful streamed response. A translating format decodes events
    /// into calls on `w` (the client's dialect); a format that is the client's dialect passes
    /// events through and drops `w`.
    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator>;

    /// Encodes a token-count request (`POST /v1/messages/count_tokens`) when the upstream can
    /// count: for the client's own format (`call.passthrough`, the answer goes back as it is),
    /// or through its own counting endpoint (read by [`Provider::count_tokens_response`]).
    /// `None`: the gateway estimates instead.
    fn count_tokens_request(
        &self,
        _req: &ChatRequest,
        _call: &CallInfo,
        _backend: &BaseUrl,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        None
    }

    /// The prompt's token count in a successful answer to a translated
    /// [`Provider::count_tokens_request`].
    fn count_tokens_response(&self, _body: &[u8]) -> Option<u64> {
        None
    }

    /// Maps an upstream error response to the OpenAI error object, keeping a meaningful status.
    fn error(&self, status: u16, body: &[u8]) -> GatewayError;

    /// The response header an upstream names its error type in (AWS's `x-amzn-errortype`),
    /// whose value the proxy hands to [`Provider::typed_error`].
    fn error_type_header(&self) -> Option<&'static str> {
        None
    }

    /// [`Provider::error`] with the value of [`Provider::error_type_header`], if it came.
    fn typed_error(&self, status: u16, body: &[u8], _error_type: Option<&str>) -> GatewayError {
        self.error(status, body)
    }

    /// Encodes an embeddings request (`body` is the client's JSON object).
    fn embeddings_request(
        &self,
        _body: &serde_json::Map<String, serde_json::Value>,
        _upstream_model: &str,
        _backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::bad_request(
            "model",
            format!(
                "provider {:?} does not offer embeddings",
                self.config().name
            ),
        ))
    }

    /// Translates a successful embeddings response to OpenAI's shape.
    fn embeddings_response(
        &self,
        body: Bytes,
        _client_model: &str,
    ) -> Result<(Bytes, Option<Usage>), GatewayError> {
        Ok((body, None))
    }

    /// Encodes a request to one of the OpenAI API's other endpoints (`/completions`,
    /// `/moderations`, `/images/...`, `/audio/...`, `/rerank`) for an upstream that serves it:
    /// `body` goes as it is (the proxy already rewrote its `model`), with `content_type` (JSON, or
    /// a multipart upload with its boundary). `path` is under the OpenAI-style base path
    /// (`/v1`); a `/v2/...` path (vLLM's and Cohere's `/v2/rerank`) is under the host's root.
    /// `None`: the upstream has no such endpoint (the client gets a 400 naming the model).
    fn api_request(
        &self,
        _path: &str,
        _content_type: &str,
        _body: Bytes,
        _backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        None
    }

    /// `GET` that lists models, if the upstream has one.
    fn models_request(&self, _backend: &BaseUrl) -> Option<UpstreamRequest> {
        None
    }

    /// Model ids from a models listing.
    fn parse_models(&self, _body: &[u8]) -> Vec<String> {
        Vec::new()
    }

    /// A request about a response stored by a host that speaks the Responses API
    /// (`GET`/`DELETE <base URL>/responses/<id_and_query>`), with this provider's key.
    /// `None`: the format has no stored responses.
    fn stored_response_request(
        &self,
        _method: &'static str,
        _id_and_query: &str,
        _backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        None
    }

    /// A request that costs no tokens, for active health checks.
    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        self.models_request(backend)
    }
}

/// Makes the provider of one configured entry.
pub type Constructor = fn(&ProviderConfig, &Config) -> Arc<dyn Provider>;

/// Every wire format, by the name a provider's configuration gives it
/// (`ProviderConfig::format`, `GATEWAY_PROVIDER_<NAME>_FORMAT` for a custom host). Adding a
/// format is its file plus one line here.
pub const REGISTRY: &[(&str, Constructor)] = &[
    ("openai", openai_compatible),
    ("anthropic", |cfg, config| {
        Arc::new(anthropic::Anthropic::new(
            cfg.clone(),
            config.anthropic_max_tokens,
        ))
    }),
    ("gemini", |cfg, _| {
        Arc::new(gemini::Gemini::new(cfg.clone()))
    }),
    ("echo", |cfg, _| Arc::new(echo::Echo::new(cfg.clone()))),
    ("cohere", |cfg, _| {
        Arc::new(cohere::Cohere::new(cfg.clone()))
    }),
    ("vertex", |cfg, config| {
        Arc::new(vertex::Vertex::new(cfg.clone(), config))
    }),
    ("azure", |cfg, _| Arc::new(azure::Azure::new(cfg.clone()))),
    ("bedrock", |cfg, config| {
        Arc::new(bedrock::Bedrock::build(cfg, config))
    }),
];

/// The constructor of the format named `name`, if there is one.
pub fn format(name: &str) -> Option<Constructor> {
    REGISTRY.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// The names of every format.
pub fn formats() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(n, _)| *n)
}

/// Builds the provider for one configured entry. An unknown format is a configuration error
/// naming the variable that chose it.
pub fn build(cfg: &ProviderConfig, config: &Config) -> Result<Arc<dyn Provider>, String> {
    match format(&cfg.format) {
        Some(make) => Ok(make(cfg, config)),
        None => Err(format!(
            "{}={:?}: unknown wire format for provider {:?} (known formats: {})",
            format_variable(&cfg.name),
            cfg.format,
            cfg.name,
            formats().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Checks that every configured provider's format has a codec (for start-up and
/// `--check-config`); the error lists every provider at fault.
pub fn check(config: &Config) -> Result<(), String> {
    let errors: Vec<String> = config
        .providers
        .values()
        .filter_map(|p| build(p, config).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn openai_compatible(cfg: &ProviderConfig, _: &Config) -> Arc<dyn Provider> {
    Arc::new(openai::OpenAiCompatible::new(cfg.clone()))
}

/// Reads an error message out of any JSON error body: OpenAI's `{"error":{"message"}}`,
/// TGI's `{"error":"..."}`, Anthropic's and Gemini's nested objects, or plain text.
pub fn upstream_error_message(body: &[u8]) -> (String, Option<String>, Option<String>) {
    let text = || {
        let s = String::from_utf8_lossy(body).trim().to_string();
        if s.is_empty() {
            "upstream returned an error with no body".to_string()
        } else {
            s.chars().take(2000).collect()
        }
    };
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return (text(), None, None),
    };
    let err = v.get("error").unwrap_or(&v);
    let as_string = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match err {
        serde_json::Value::String(s) => {
            let t = v.get("error_type").and_then(as_string);
            (s.clone(), t, None)
        }
        serde_json::Value::Object(o) => {
            let msg = o
                .get("message")
                .and_then(as_string)
                .or_else(|| v.get("message").and_then(as_string))
                .unwrap_or_else(text);
            // Google's `status` names the error (`INVALID_ARGUMENT`); a number there is an HTTP
            // status some hosts repeat in the body, not a type.
            let kind = o.get("type").and_then(as_string).or_else(|| {
                o.get("status")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            });
            let code = o.get("code").and_then(as_string);
            (msg, kind, code)
        }
        _ => (text(), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_registered_once() {
        let names: Vec<&str> = formats().collect();
        for name in [
            "openai",
            "anthropic",
            "gemini",
            "echo",
            "cohere",
            "vertex",
            "azure",
            "bedrock",
        ] {
            assert!(format(name).is_some(), "{name}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(format("nope").is_none());
    }

    #[test]
    fn upstream_error_fields() {
        let (m, t, c) = upstream_error_message(
            br#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(
            (m.as_str(), t.as_deref(), c.as_deref()),
            ("bad", Some("INVALID_ARGUMENT"), Some("400"))
        );
        // A numeric `status` is the HTTP status repeated, not the error's type.
        let (m, t, _) =
            upstream_error_message(br#"{"error":{"message":"slow down","status":429}}"#);
        assert_eq!((m.as_str(), t), ("slow down", None));
        let (m, t, c) = upstream_error_message(
            br#"{"error":{"message":"no","type":"invalid_request_error","code":"x"}}"#,
        );
        assert_eq!(
            (m.as_str(), t.as_deref(), c.as_deref()),
            ("no", Some("invalid_request_error"), Some("x"))
        );
        let (m, t, _) = upstream_error_message(b"upstream exploded");
        assert_eq!((m.as_str(), t), ("upstream exploded", None));
    }
}
