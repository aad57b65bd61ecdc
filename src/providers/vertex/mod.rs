//! Google Vertex AI (`vertex/<model>`): Gemini models through `generateContent` /
//! `streamGenerateContent?alt=sse`, Claude models (`claude-*`) through `rawPredict` /
//! `streamRawPredict`, both under `/v1/projects/{project}/locations/{location}/publishers/
//! {google|anthropic}/models/{model}:...`, authorised by a service account's access token
//! (`auth.rs`).
//!
//! No translation of its own: the Gemini and Anthropic codecs encode and decode, this file only
//! changes where a request goes, its auth and, for Claude, the body's envelope (Vertex wants
//! `anthropic_version: "vertex-2023-10-16"` in the body and the model in the URL, not in the
//! body). A Messages client asking for a Claude model passes through: its body goes as sent but
//! for that envelope, `anthropic-beta` with it, and answers and streams come back untouched.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::ChatRequest;
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::{BaseUrl, Config, ProviderConfig};
use crate::error::GatewayError;
use crate::providers::anthropic::Anthropic;
use crate::providers::gemini::Gemini;
use crate::providers::{
    anthropic, gemini, CallInfo, Provider, StreamTranslator, Translated, UpstreamRequest,
};

pub mod auth;

use auth::TokenSource;

/// The `anthropic_version` Vertex wants in a Claude request's body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Most models one listing page asks for.
const LIST_PAGE: u32 = 1000;

pub struct Vertex {
    cfg: ProviderConfig,
    gemini: Gemini,
    anthropic: Anthropic,
    /// `/v1/projects/{project}/locations/{location}/publishers`.
    publishers: String,
    project: String,
    auth: Result<Arc<TokenSource>, GatewayError>,
}

/// Whether the model is one of Anthropic's (served by `rawPredict`).
pub fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

impl Vertex {
    pub fn new(cfg: ProviderConfig, config: &Config) -> Self {
        let gemini = Gemini::new(cfg.clone());
        let anthropic = Anthropic::new(cfg.clone(), config.anthropic_max_tokens);
        let (publishers, project, auth) = match &config.vertex {
            Some(v) => (
                format!("/v1/{}/publishers", v.parent()),
                v.project.clone(),
                TokenSource::new(&v.account)
                    .map(Arc::new)
                    .map_err(|e| GatewayError::internal(format!("Vertex AI: {e}"))),
            ),
            None => (
                String::new(),
                String::new(),
                Err(GatewayError::internal(
                    "Vertex AI is not configured: set GOOGLE_APPLICATION_CREDENTIALS",
                )),
            ),
        };
        Vertex {
            cfg,
            gemini,
            anthropic,
            publishers,
            project,
            auth,
        }
    }

    /// The codec of the model's publisher.
    fn codec(&self, model: &str) -> &dyn Provider {
        if is_claude(model) {
            &self.anthropic
        } else {
            &self.gemini
        }
    }

    /// `Authorization` with the held token. [`Provider::ready`] ran first, so a missing token
    /// means it expired in between: the attempt fails over like any unavailable upstream.
    fn auth_headers(&self) -> Result<Vec<(&'static str, String)>, GatewayError> {
        let auth = self.auth.as_ref().map_err(Clone::clone)?;
        let header = auth.header().ok_or_else(|| {
            let mut e = GatewayError::bad_gateway("Vertex AI: no access token is available (yet)");
            e.code = Some("vertex_token_unavailable".into());
            e.label = "upstream_auth";
            e
        })?;
        Ok(vec![("authorization", header)])
    }

    /// `{root}/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{verb}`.
    fn model_url(&self, backend: &BaseUrl, publisher: &str, model: &str, verb: &str) -> String {
        format!(
            "{}{}/{publisher}/models/{model}:{verb}",
            backend.path, self.publishers
        )
    }

    /// A model listing of Google's publisher (Model Garden; `v1beta1`, the API's only
    /// listing).
    fn listing(&self, backend: &BaseUrl, page: u32) -> Option<UpstreamRequest> {
        let mut headers = self.auth_headers().ok()?;
        headers.push(("x-goog-user-project", self.project.clone()));
        Some(UpstreamRequest::get(
            format!(
                "{}/v1beta1/publishers/google/models?pageSize={page}",
                backend.path
            ),
            headers,
        ))
    }
}

/// The model as it goes into the URL: the characters Vertex model ids use (`@` for Claude's
/// versions), a leading `models/` dropped.
fn model_segment(model: &str) -> Result<&str, GatewayError> {
    let name = model.strip_prefix("models/").unwrap_or(model);
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'@'));
    if ok {
        Ok(name)
    } else {
        Err(GatewayError::bad_request(
            "model",
            format!("{model:?} is not a valid Vertex AI model name"),
        ))
    }
}

impl Provider for Vertex {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn speaks(&self, format: &str, upstream_model: &str) -> bool {
        format == "anthropic" && is_claude(upstream_model)
    }

    fn ready(&self) -> Option<BoxFuture<'_, Result<(), GatewayError>>> {
        match &self.auth {
            Ok(auth) if auth.usable() => None,
            Ok(auth) => Some(Box::pin(auth.ensure())),
            Err(e) => {
                let e = e.clone();
                Some(Box::pin(async move { Err(e) }))
            }
        }
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = model_segment(&call.upstream_model)?;
        let mut headers = self.auth_headers()?;
        if is_claude(model) {
            let inner = self.anthropic.chat_request(req, call, backend)?;
            let body = anthropic_body(&inner.body, false)?;
            // The body carries the version; beta flags stay headers on Vertex too.
            headers.extend(
                inner
                    .headers
                    .into_iter()
                    .filter(|(k, _)| *k == "anthropic-beta"),
            );
            let verb = if call.stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            let path = self.model_url(backend, "anthropic", model, verb);
            return Ok(UpstreamRequest::post(path, headers, body));
        }
        let inner = self.gemini.chat_request(req, call, backend)?;
        let verb = if call.stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let path = self.model_url(backend, "google", model, verb);
        Ok(UpstreamRequest::post(path, headers, inner.body))
    }

    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        self.codec(&call.upstream_model)
            .chat_response(body, call, w)
    }

    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        self.codec(&call.upstream_model).stream_translator(call, w)
    }

    /// Claude counts natively (`count-tokens:rawPredict`, the model in the body) for a Messages
    /// client; Gemini's count is estimated.
    fn count_tokens_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        if !is_claude(&call.upstream_model) {
            return None;
        }
        let inner = self.anthropic.count_tokens_request(req, call, backend)?;
        Some(inner.and_then(|inner| {
            let body = anthropic_body(&inner.body, true)?;
            let mut headers = self.auth_headers()?;
            headers.extend(
                inner
                    .headers
                    .into_iter()
                    .filter(|(k, _)| *k == "anthropic-beta"),
            );
            let path = self.model_url(backend, "anthropic", "count-tokens", "rawPredict");
            Ok(UpstreamRequest::post(path, headers, body))
        }))
    }

    /// Vertex's own errors are Google's (`{"error":{"code","message","status"}}`, 429 as
    /// `RESOURCE_EXHAUSTED`); a Claude model's own are Anthropic's.
    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        #[derive(Deserialize)]
        struct Shape<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<&'a str>,
        }
        let anthropic_shaped = serde_json::from_slice::<Shape>(body)
            .ok()
            .is_some_and(|s| s.kind == Some("error"));
        if anthropic_shaped {
            anthropic::map_error(status, body)
        } else {
            gemini::map_error(status, body)
        }
    }

    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        self.listing(backend, LIST_PAGE)
    }

    /// `publisherModels[].name` (`publishers/google/models/gemini-2.0-flash-001`): the Gemini
    /// models (the listing also holds image, speech and embedding models chat cannot use).
    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        #[derive(Deserialize)]
        struct Listed {
            name: String,
        }
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default, rename = "publisherModels")]
            models: Vec<Listed>,
        }
        serde_json::from_slice::<Listing>(body)
            .map(|l| {
                l.models
                    .into_iter()
                    .filter_map(|m| m.name.rsplit('/').next().map(str::to_string))
                    .filter(|id| id.starts_with("gemini"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One model of the listing: costs no tokens, and proves the token and the host.
    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        self.listing(backend, 1)
    }
}

/// A Messages body as Vertex takes it: `anthropic_version` first, `model` left out unless
/// `keep_model` (the count-tokens endpoint wants it), every other field's value byte for byte,
/// in its order.
pub fn anthropic_body(body: &[u8], keep_model: bool) -> Result<Bytes, GatewayError> {
    let fields: Fields = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request("", format!("reading the request body: {e}")))?;
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(b"{\"anthropic_version\":\"");
    out.extend_from_slice(ANTHROPIC_VERSION.as_bytes());
    out.push(b'"');
    for (key, value) in &fields.0 {
        if key == "anthropic_version" || (!keep_model && key == "model") {
            continue;
        }
        out.push(b',');
        serde_json::to_writer(&mut out, key)
            .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// A JSON object's fields in their order, values as their raw text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<'a>(PhantomData<&'a ()>);
        impl<'de> Visitor<'de> for Object<'de> {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(Object(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_bodies_get_the_vertex_envelope() {
        let body = br#"{"model":"claude-sonnet-4@20250514","max_tokens":10,"messages":[{"role":"user","content":"h\u00e9 1.50"}],"stream":true}"#;
        let out = anthropic_body(body, false).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":10,"messages":[{"role":"user","content":"h\u00e9 1.50"}],"stream":true}"#
        );
        let kept = anthropic_body(br#"{"anthropic_version":"x","model":"m"}"#, true).unwrap();
        assert_eq!(
            &kept[..],
            br#"{"anthropic_version":"vertex-2023-10-16","model":"m"}"#
        );
        assert_eq!(anthropic_body(b"[1]", false).unwrap_err().status, 400);
    }

    #[test]
    fn model_names_and_publishers() {
        assert_eq!(
            model_segment("claude-sonnet-4@20250514").unwrap(),
            "claude-sonnet-4@20250514"
        );
        assert_eq!(
            model_segment("models/gemini-2.0-flash").unwrap(),
            "gemini-2.0-flash"
        );
        for bad in ["", "a/b", "x?y", "m:generateContent"] {
            assert_eq!(model_segment(bad).unwrap_err().status, 400, "{bad}");
        }
        assert!(is_claude("claude-3-5-haiku@20241022") && !is_claude("gemini-2.5-pro"));
    }

    #[test]
    fn errors_of_both_shapes() {
        let cfg = Config::from_map(&std::collections::HashMap::new()).unwrap();
        let p = Vertex::new(cfg.providers["echo"].clone(), &cfg);
        let e = p.error(
            429,
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (429, Some("RESOURCE_EXHAUSTED"))
        );
        let e = p.error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (503, Some("overloaded_error"))
        );
        // Not configured: a clear error, never a panic.
        assert!(p.ready().is_some());
    }

    #[test]
    fn listing_keeps_gemini_models() {
        let cfg = Config::from_map(&std::collections::HashMap::new()).unwrap();
        let p = Vertex::new(cfg.providers["echo"].clone(), &cfg);
        let ids = p.parse_models(
            br#"{"publisherModels":[{"name":"publishers/google/models/gemini-2.0-flash-001"},{"name":"publishers/google/models/imagen-3.0"}]}"#,
        );
        assert_eq!(ids, vec!["gemini-2.0-flash-001".to_string()]);
    }

    #[test]
    fn vertex_prices_are_the_models_prices() {
        use crate::pricing::price;
        assert_eq!(
            price("vertex", "claude-sonnet-4@20250514"),
            price("anthropic", "claude-sonnet-4-20250514")
        );
        assert!(price("vertex", "claude-sonnet-4@20250514").is_some());
        assert_eq!(
            price("vertex", "gemini-2.0-flash-001"),
            price("google", "gemini-2.0-flash")
        );
        assert!(price("vertex", "gemini-2.0-flash-001").is_some());
    }
}
