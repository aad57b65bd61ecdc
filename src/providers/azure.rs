//! Azure OpenAI: OpenAI's bodies, answers and streams on Azure's paths, with its `api-key`
//! header. Everything the OpenAI family does (pass-through for OpenAI clients, decoding for the
//! others) is [`OpenAiCompatible`]'s; this file owns the URLs, the key and Azure's errors.
//!
//! ```text
//! AZURE_OPENAI_ENDPOINT=https://my-resource.openai.azure.com
//! AZURE_OPENAI_API_KEY=...
//! OPENAI_API_VERSION=2024-10-21        # optional: without it, the v1 API
//!
//! curl localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model": "azure/my-gpt-4o-deployment", "messages": [{"role": "user", "content": "Hi"}]}'
//! ```
//!
//! With an API version (`AZURE_OPENAI_API_VERSION`, else `OPENAI_API_VERSION`) the model names
//! a deployment: `POST /openai/deployments/{deployment}/chat/completions?api-version=...`
//! (and `/embeddings`); the Responses API, which has no deployment path, is
//! `/openai/responses?api-version=...` with the deployment as `model`. Without one, the v1 API:
//! `/openai/v1/chat/completions`, `/openai/v1/embeddings`, `/openai/v1/responses`, the
//! deployment in the body's `model`. The endpoint is the resource's root (a `/openai` or
//! `/openai/v1` at its end is dropped).
//!
//! Azure's content filter: a filtered answer's `finish_reason: "content_filter"` and its
//! `prompt_filter_results` / `content_filter_results` pass through to OpenAI clients as they
//! are (and `content_filter` reaches other dialects as their own: Anthropic's `refusal`); a
//! filtered prompt's 400 becomes an OpenAI error with code `content_filter`, `param: "prompt"`
//! and the filtered categories named.

use bytes::Bytes;
use serde_json::Value;

use crate::api::{ChatRequest, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::providers::RESPONSES_FORMAT;
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::openai::{openai_error, parse_model_list, OpenAiCompatible};
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamTranslator, Translated, UpstreamRequest,
};

// ---------------------------------------------------------------------------------------------
// Provider

pub struct Azure {
    cfg: ProviderConfig,
    /// The OpenAI family's codec, without a key: Azure's goes in `api-key`, not `Authorization`.
    inner: OpenAiCompatible,
}

impl Azure {
    pub fn new(cfg: ProviderConfig) -> Self {
        let inner = OpenAiCompatible::new(ProviderConfig {
            api_key: None,
            ..cfg.clone()
        });
        Azure { cfg, inner }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.api_key {
            Some(k) => vec![("api-key", k.expose().to_string())],
            None => Vec::new(),
        }
    }

    /// The URL of `op` (`chat/completions`, `embeddings`, `responses`, `models`): the
    /// deployment's when there is an API version and a deployment, the resource's otherwise.
    fn path(&self, backend: &BaseUrl, deployment: Option<&str>, op: &str) -> String {
        let root = root(backend);
        match (&self.cfg.api_version, deployment) {
            (None, _) => format!("{root}/openai/v1/{op}"),
            (Some(v), Some(d)) => format!(
                "{root}/openai/deployments/{}/{op}?api-version={v}",
                encode_segment(d)
            ),
            (Some(v), None) => format!("{root}/openai/{op}?api-version={v}"),
        }
    }
}

/// The resource's root: an endpoint given with Azure's API path keeps only its root.
fn root(backend: &BaseUrl) -> &str {
    let p = backend.path.as_str();
    p.strip_suffix("/openai/v1")
        .or_else(|| p.strip_suffix("/openai"))
        .unwrap_or(p)
}

/// A deployment name as one path segment (Azure's names are `[A-Za-z0-9._-]`; anything else
/// is escaped rather than allowed to change the path).
fn encode_segment(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    utf8_percent_encode(s, KEEP).to_string()
}

/// The `model` of a JSON body.
fn json_model(content_type: &str, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: String,
    }
    if !content_type.starts_with("application/json") {
        return None;
    }
    serde_json::from_slice::<Model>(body).ok().map(|m| m.model)
}

/// A Responses client passed through to Azure's own Responses API.
fn responses_native(call: &CallInfo) -> bool {
    call.passthrough && call.client_format == RESPONSES_FORMAT
}

impl Provider for Azure {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut up = self.inner.chat_request(req, call, backend)?;
        // The family's codec chose the API (chat, or Responses passed through) by its path.
        up.path = if responses_native(call) && up.path.ends_with("/responses") {
            self.path(backend, None, "responses")
        } else {
            self.path(backend, Some(&call.upstream_model), "chat/completions")
        };
        up.headers.extend(self.headers());
        Ok(up)
    }

    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        self.inner.chat_response(body, call, w)
    }

    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        self.inner.stream_translator(call, w)
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        azure_error(status, body)
    }

    fn embeddings_request(
        &self,
        body: &serde_json::Map<String, Value>,
        upstream_model: &str,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut up = self
            .inner
            .embeddings_request(body, upstream_model, backend)?;
        up.path = self.path(backend, Some(upstream_model), "embeddings");
        up.headers.extend(self.headers());
        Ok(up)
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        client_model: &str,
    ) -> Result<(Bytes, Option<Usage>), GatewayError> {
        self.inner.embeddings_response(body, client_model)
    }

    /// The other OpenAI endpoints (`/completions`, `/images/generations`, `/audio/...`): on a
    /// dated version under the deployment the JSON body's `model` names; otherwise (the v1 API,
    /// or a multipart upload, whose deployment is in a form field) on the v1 API, which every
    /// resource serves beside the dated one, the model in the body.
    fn api_request(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
        backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        if path.starts_with("/v2/") {
            return None;
        }
        let dated = self
            .cfg
            .api_version
            .as_ref()
            .and(json_model(content_type, &body));
        let full = match dated {
            Some(d) => self.path(backend, Some(&d), path.trim_start_matches('/')),
            None => format!("{}/openai/v1{path}", root(backend)),
        };
        let mut headers = self.headers();
        headers.push(("content-type", content_type.to_string()));
        Some(UpstreamRequest::post(full, headers, body))
    }

    /// The models the resource offers (`/openai/v1/models`, `/openai/models?api-version=`):
    /// no tokens, so also the health probe.
    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            self.path(backend, None, "models"),
            self.headers(),
        ))
    }

    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        parse_model_list(body)
    }

    fn stored_response_request(
        &self,
        method: &'static str,
        id_and_query: &str,
        backend: &BaseUrl,
    ) -> Option<UpstreamRequest> {
        let path = match &self.cfg.api_version {
            None => format!("{}/openai/v1/responses/{id_and_query}", root(backend)),
            Some(v) => {
                let sep = if id_and_query.contains('?') { '&' } else { '?' };
                format!(
                    "{}/openai/responses/{id_and_query}{sep}api-version={v}",
                    root(backend)
                )
            }
        };
        Some(UpstreamRequest {
            method,
            path,
            headers: self.headers(),
            body: Bytes::new(),
            propagation: None,
        })
    }

    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        self.models_request(backend)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Azure's error body as OpenAI's object. Azure's errors are OpenAI-shaped but for their
/// `code` (`"429"`, `"DeploymentNotFound"`, `"content_filter"`) and a `status` where `type`
/// would be; a filtered prompt (400 `content_filter`) names the categories that were filtered.
pub fn azure_error(status: u16, body: &[u8]) -> GatewayError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error").unwrap_or(&Value::Null);
    let code = err.get("code").and_then(Value::as_str).unwrap_or("");
    let inner_code = err
        .pointer("/innererror/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    if code == "content_filter" || inner_code == "ResponsibleAIPolicyViolation" {
        let (message, _, _) = upstream_error_message(body);
        let filtered = filtered_categories(err.pointer("/innererror/content_filter_result"));
        let message = if filtered.is_empty() {
            message
        } else {
            format!("{message} (filtered: {})", filtered.join(", "))
        };
        let status = if status == 200 { 400 } else { status };
        let mut e = GatewayError::from_upstream(
            status,
            ErrorKind::InvalidRequest,
            Some("content_filter".into()),
            message,
        );
        e.param = Some("prompt".into());
        return e;
    }
    let mut e = openai_error(status, body);
    // A `type` Azure does not send is read from its `status` field (a number): the status's
    // conventional type instead.
    if err.get("type").and_then(Value::as_str).is_none() {
        e.kind = ErrorKind::for_status(status);
    }
    e
}

/// The content-filter categories marked `filtered: true` (`hate`, `jailbreak`, ...).
fn filtered_categories(result: Option<&Value>) -> Vec<String> {
    let Some(Value::Object(m)) = result else {
        return Vec::new();
    };
    m.iter()
        .filter(|(_, r)| r.get("filtered").and_then(Value::as_bool) == Some(true))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};

    fn azure(version: Option<&str>) -> Azure {
        let echo = Config::from_map(&Default::default()).unwrap().providers["echo"].clone();
        Azure::new(ProviderConfig {
            name: "azure".into(),
            format: "azure".into(),
            api_key: Some(Secret::new("az-key")),
            api_version: version.map(str::to_string),
            ..echo
        })
    }

    fn backend(path: &str) -> BaseUrl {
        BaseUrl {
            tls: true,
            host: "res.openai.azure.com".into(),
            port: 443,
            path: path.into(),
        }
    }

    fn call(stream: bool) -> CallInfo {
        CallInfo {
            client_model: "azure/my dep".into(),
            upstream_model: "my dep".into(),
            stream,
            include_usage: false,
            parallel_tool_calls: true,
            passthrough: true,
            client_format: "openai",
            client_headers: Vec::new(),
        }
    }

    #[test]
    fn deployment_and_v1_paths_with_the_api_key_header() {
        let req = ChatRequest::parse(
            br#"{"model":"azure/my dep","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        for base in ["", "/openai", "/openai/v1"] {
            let up = azure(Some("2024-10-21"))
                .chat_request(&req, &call(false), &backend(base))
                .unwrap();
            assert_eq!(
                up.path,
                "/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21"
            );
            assert_eq!(up.headers, vec![("api-key", "az-key".to_string())]);
            let v: Value = serde_json::from_slice(&up.body).unwrap();
            assert_eq!(v["model"], "my dep");
        }
        let req = ChatRequest::parse(
            br#"{"model":"azure/d","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let up = azure(None)
            .chat_request(&req, &call(true), &backend("/proxy"))
            .unwrap();
        assert_eq!(up.path, "/proxy/openai/v1/chat/completions");
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);

        let b = backend("");
        let dated = azure(Some("2025-04-01-preview"));
        let emb = dated
            .embeddings_request(&serde_json::Map::new(), "emb", &b)
            .unwrap();
        assert_eq!(
            emb.path,
            "/openai/deployments/emb/embeddings?api-version=2025-04-01-preview"
        );
        assert_eq!(
            dated.models_request(&b).unwrap().path,
            "/openai/models?api-version=2025-04-01-preview"
        );
        assert_eq!(
            dated
                .stored_response_request("GET", "resp_1?include=x", &b)
                .unwrap()
                .path,
            "/openai/responses/resp_1?include=x&api-version=2025-04-01-preview"
        );
        let images = Bytes::from_static(br#"{"model":"dall-e-3","prompt":"a cat"}"#);
        assert_eq!(
            dated
                .api_request("/images/generations", "application/json", images, &b)
                .unwrap()
                .path,
            "/openai/deployments/dall-e-3/images/generations?api-version=2025-04-01-preview"
        );
        let upload = dated.api_request(
            "/audio/transcriptions",
            "multipart/form-data; boundary=x",
            Bytes::new(),
            &b,
        );
        assert_eq!(upload.unwrap().path, "/openai/v1/audio/transcriptions");
        let v1 = azure(None);
        assert_eq!(v1.models_request(&b).unwrap().path, "/openai/v1/models");
        assert_eq!(
            v1.api_request("/images/generations", "application/json", Bytes::new(), &b)
                .unwrap()
                .path,
            "/openai/v1/images/generations"
        );
    }

    #[test]
    fn content_filter_and_other_azure_errors() {
        let body = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},"jailbreak":{"filtered":false,"detected":false},"violence":{"filtered":true,"severity":"medium"}}}}}"#;
        let e = azure_error(400, body);
        assert_eq!(e.status, 400);
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.code.as_deref(), Some("content_filter"));
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert!(
            e.message.contains("content management policy"),
            "{}",
            e.message
        );
        assert!(
            e.message.ends_with("(filtered: hate, violence)"),
            "{}",
            e.message
        );

        let e = azure_error(
            429,
            br#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded token rate limit. Please retry after 6 seconds."}}"#,
        );
        assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
        assert_eq!(e.code.as_deref(), Some("429"));
        let e = azure_error(
            404,
            br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
        );
        assert_eq!((e.status, e.kind.as_str()), (404, "invalid_request_error"));
        assert_eq!(e.code.as_deref(), Some("DeploymentNotFound"));
    }
}
