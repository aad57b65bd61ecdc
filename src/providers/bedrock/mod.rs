//! AWS Bedrock runtime (`bedrock/<model-id>`): chat through the Converse and ConverseStream APIs
//! (`POST /model/{modelId}/converse`, `/converse-stream`), one translation for every model
//! family Bedrock serves (Claude, Llama, Mistral, Nova, Cohere, DeepSeek...), and embeddings
//! through InvokeModel (`POST /model/{modelId}/invoke`) for Titan and Cohere embedding models.
//!
//! Auth (README, "AWS Bedrock"): a Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`, or a custom
//! host's `GATEWAY_PROVIDER_<NAME>_API_KEY`) goes as `Authorization: Bearer`; otherwise each
//! attempt is signed with SigV4 by AWS's `aws-sigv4` (the signature covers the body and the
//! time, so it is made per attempt, never cached). The model id is percent-encoded in the path
//! (`:` -> `%3A`), as AWS's SDKs send it. Streams are `application/vnd.amazon.eventstream`
//! frames, decoded incrementally by `aws-smithy-eventstream` ([`converse::ConverseStream`]).
//!
//! Errors: AWS names the error in the `x-amzn-ErrorType` header (and the message in the body's
//! `message`); [`map_error`] maps it to OpenAI's status and type, keeping the AWS name as `code`.
//!
//! `converse.rs` holds the Converse API's serde types and what they mean for the canonical
//! request, answers and stream events.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use crate::api::{ChatRequest, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::aws::{region_of_host, AwsConfig, BEDROCK};
use crate::config::{BaseUrl, Config, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamTranslator, Translated, UpstreamRequest,
};

pub mod converse;

const NAME: &str = "Bedrock";

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

/// The header AWS names its error type in.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";

/// What a model id keeps unencoded in a path: RFC 3986's unreserved characters (AWS's SDKs
/// encode everything else, `:` and `/` of inference profile ARNs included).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How requests are authenticated.
enum Auth {
    /// A Bedrock API key.
    Bearer(String),
    /// SigV4 with these credentials (made once; signing per attempt only hashes).
    SigV4(Identity),
    /// Nothing (a base URL pointing at a proxy that signs).
    None,
}

pub struct Bedrock {
    cfg: ProviderConfig,
    auth: Auth,
    /// The region signed for when the host does not name one.
    region: String,
}

impl Bedrock {
    pub fn new(cfg: ProviderConfig, aws: &AwsConfig) -> Self {
        // The built-in provider's `api_key` is whichever of its key variables was set; a custom
        // host's is its own Bedrock API key.
        let own_key = cfg.api_key.as_ref().filter(|_| cfg.name != BEDROCK);
        let auth = if let Some(k) = own_key.or(aws.bearer_token.as_ref()) {
            Auth::Bearer(format!("Bearer {}", k.expose()))
        } else if let Some(keys) = &aws.keys {
            let creds = Credentials::new(
                keys.access_key_id.expose(),
                keys.secret_access_key.expose(),
                keys.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "environment",
            );
            Auth::SigV4(creds.into())
        } else {
            Auth::None
        };
        Bedrock {
            cfg,
            auth,
            region: aws.region.clone(),
        }
    }

    /// Builds the provider from the configuration (its [`crate::providers::REGISTRY`] line).
    pub fn build(cfg: &ProviderConfig, config: &Config) -> Self {
        Bedrock::new(cfg.clone(), &config.aws)
    }

    /// A request with its auth headers: the bearer token, or a SigV4 signature over the method,
    /// the path, the host, the content type, the body and the time of this call.
    fn request(
        &self,
        method: &'static str,
        backend: &BaseUrl,
        path: String,
        mut headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<UpstreamRequest, GatewayError> {
        if method == "POST" {
            headers.push(("content-type", "application/json".to_string()));
        }
        match &self.auth {
            Auth::Bearer(v) => headers.push(("authorization", v.clone())),
            Auth::None => {}
            Auth::SigV4(identity) => {
                let region = region_of_host(&backend.host).unwrap_or(&self.region);
                for (k, v) in sigv4_headers(identity, region, method, backend, &path, &body)? {
                    headers.push((k, v));
                }
            }
        }
        Ok(UpstreamRequest {
            method,
            path,
            headers,
            body,
            propagation: None,
        })
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) for one request,
/// signed now. The signed headers are `host` (what the connector sends: the base URL's
/// authority) and `content-type` for a request with a body.
pub fn sigv4_headers(
    identity: &Identity,
    region: &str,
    method: &str,
    backend: &BaseUrl,
    path: &str,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, GatewayError> {
    let failed = |e: &dyn std::fmt::Display| {
        GatewayError::internal(format!("signing the Bedrock request failed: {e}"))
    };
    let authority = backend.authority();
    let scheme = if backend.tls { "https" } else { "http" };
    let uri = format!("{scheme}://{authority}{path}");
    let mut signed: Vec<(&str, &str)> = vec![("host", authority.as_str())];
    if method != "GET" {
        signed.push(("content-type", "application/json"));
    }
    let signable = SignableRequest::new(
        method,
        uri.as_str(),
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| failed(&e))?;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(SERVICE)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| failed(&e))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

/// `/model/{modelId}/{action}` under the base URL's path, the id percent-encoded.
fn model_path(backend: &BaseUrl, model: &str, action: &str) -> String {
    format!(
        "{}/model/{}/{action}",
        backend.path,
        utf8_percent_encode(model, PATH_SEGMENT)
    )
}

impl Provider for Bedrock {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = converse::encode_request(req, call)?;
        let (action, accept) = if call.stream {
            ("converse-stream", "application/vnd.amazon.eventstream")
        } else {
            ("converse", "application/json")
        };
        self.request(
            "POST",
            backend,
            model_path(backend, &call.upstream_model, action),
            vec![("accept", accept.to_string())],
            body,
        )
    }

    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        converse::decode_response(&body, call, w)
    }

    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        Box::new(converse::ConverseStream::new(call, w))
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        map_error(status, None, body)
    }

    fn error_type_header(&self) -> Option<&'static str> {
        Some(ERROR_TYPE_HEADER)
    }

    fn typed_error(&self, status: u16, body: &[u8], error_type: Option<&str>) -> GatewayError {
        map_error(status, error_type, body)
    }

    fn embeddings_request(
        &self,
        body: &Map<String, Value>,
        upstream_model: &str,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let payload = encode_embeddings(body, upstream_model)?;
        self.request(
            "POST",
            backend,
            model_path(backend, upstream_model, "invoke"),
            vec![("accept", "application/json".to_string())],
            Bytes::from(payload.to_string()),
        )
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        client_model: &str,
    ) -> Result<(Bytes, Option<Usage>), GatewayError> {
        decode_embeddings(&body, client_model)
    }

    /// ListAsyncInvokes (`GET /async-invoke?maxResults=1`): the one read-only call of the
    /// runtime endpoint, so it checks the endpoint, the credentials and the region and costs no
    /// tokens. Needs the `bedrock:ListAsyncInvokes` permission (README).
    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        self.request(
            "GET",
            backend,
            format!("{}/async-invoke?maxResults=1", backend.path),
            Vec::new(),
            Bytes::new(),
        )
        .ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Error mapping

/// An AWS error type as its bare name: `x-amzn-ErrorType` may carry a URL after `:`, a body's
/// `__type` a namespace before `#`.
fn bare_type(t: &str) -> &str {
    let t = t.split(':').next().unwrap_or(t);
    t.rsplit('#').next().unwrap_or(t).trim()
}

/// The status the gateway answers an AWS error type with (matched without case: stream
/// exceptions spell them `throttlingException`), or `None` to keep the upstream's.
pub fn status_for_type(t: &str) -> Option<u16> {
    let t = t.to_ascii_lowercase();
    Some(match t.as_str() {
        "validationexception" | "servicequotaexceededexception" => 400,
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception"
        | "invalidclienttokenid" => 401,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "throttlingexception" | "toomanyrequestsexception" => 429,
        "internalserverexception" => 500,
        "modelerrorexception" | "modelstreamerrorexception" => 502,
        "serviceunavailableexception" | "modelnotreadyexception" => 503,
        "modeltimeoutexception" => 504,
        _ => return None,
    })
}

/// An AWS error -> the OpenAI error object. The type comes from `x-amzn-ErrorType` (or the
/// body's `__type`/`code`), the message from the body's `message`; the AWS name is the `code`.
pub fn map_error(status: u16, error_type: Option<&str>, body: &[u8]) -> GatewayError {
    let (message, kind, code) = upstream_error_message(body);
    let body_type = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        ["__type", "code", "Code"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
    });
    let name = error_type
        .map(str::to_string)
        .or(body_type)
        .map(|t| bare_type(&t).to_string())
        .filter(|t| !t.is_empty());
    let status = name
        .as_deref()
        .and_then(status_for_type)
        .unwrap_or(if status < 400 { 502 } else { status });
    let kind_of = ErrorKind::for_status(status);
    GatewayError::from_upstream(status, kind_of, name.or(code).or(kind), message)
}

// ---------------------------------------------------------------------------------------------
// Embeddings (InvokeModel)

/// Which embedding API a model id speaks (inference profiles such as `us.cohere.embed-v4:0`
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedFamily {
    Titan,
    Cohere,
}

fn embed_family(model: &str) -> Option<EmbedFamily> {
    let bare = model.rsplit('/').next().unwrap_or(model);
    let family = |p: &str| bare.starts_with(p) || bare.contains(&format!(".{p}"));
    if family("amazon.titan-embed") {
        Some(EmbedFamily::Titan)
    } else if family("cohere.embed") {
        Some(EmbedFamily::Cohere)
    } else {
        None
    }
}

/// The InvokeModel body of an OpenAI embeddings request.
fn encode_embeddings(body: &Map<String, Value>, model: &str) -> Result<Value, GatewayError> {
    let Some(family) = embed_family(model) else {
        return Err(GatewayError::bad_request(
            "model",
            format!(
                "{model:?} is not a Bedrock embedding model the gateway knows: use a Titan \
                 (amazon.titan-embed-text-v2:0) or Cohere (cohere.embed-*) model"
            ),
        ));
    };
    let bad = |m: &str| GatewayError::bad_request("input", m);
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("'input' must be a string or an array of strings for Bedrock models (token arrays cannot be sent)"))?,
        _ => return Err(bad("'input' must be a non-empty string or array of strings")),
    };
    let dimensions = body.get("dimensions").and_then(Value::as_u64);
    match family {
        EmbedFamily::Titan => {
            let [text] = texts.as_slice() else {
                return Err(bad(
                    "Titan embedding models embed one text per request: send one input",
                ));
            };
            let mut v = json!({ "inputText": text });
            if let Some(d) = dimensions {
                v["dimensions"] = json!(d);
            }
            Ok(v)
        }
        EmbedFamily::Cohere => {
            let input_type = body
                .get("input_type")
                .and_then(Value::as_str)
                .unwrap_or("search_document");
            let mut v = json!({ "texts": texts, "input_type": input_type });
            if let Some(d) = dimensions {
                v["output_dimension"] = json!(d);
            }
            Ok(v)
        }
    }
}

/// A Titan (`embedding`, `inputTextTokenCount`) or Cohere (`embeddings` as a list, or by type
/// under `float`) answer -> OpenAI's list.
fn decode_embeddings(
    body: &[u8],
    client_model: &str,
) -> Result<(Bytes, Option<Usage>), GatewayError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| crate::providers::translate::bad_upstream_body(NAME, e))?;
    let (vectors, usage) = if let Some(e) = v.get("embedding").filter(|e| e.is_array()) {
        let tokens = v.get("inputTextTokenCount").and_then(Value::as_u64);
        (vec![e.clone()], tokens.map(|t| Usage::new(t, 0)))
    } else {
        let list = match v.get("embeddings") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Object(o)) => o
                .get("float")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if list.is_empty() {
            return Err(crate::providers::translate::bad_upstream_body(
                NAME,
                "no embedding in the answer",
            ));
        }
        (list, None)
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let mut out = json!({"object": "list", "data": data, "model": client_model});
    if let Some(u) = usage {
        out["usage"] = json!({"prompt_tokens": u.prompt_tokens, "total_tokens": u.total_tokens});
    }
    Ok((Bytes::from(out.to_string()), usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::aws::AwsKeys;
    use crate::config::{HostFlavor, Secret};

    fn cfg(name: &str, key: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            format: "bedrock".into(),
            flavor: HostFlavor::Custom,
            backends: vec![crate::config::aws::bedrock_runtime("eu-west-1")],
            api_key: key.map(Secret::new),
            default_model: None,
            native_messages: false,
            native_responses: false,
            api_version: None,
            lists_models: true,
        }
    }

    fn aws(bearer: Option<&str>) -> AwsConfig {
        AwsConfig {
            region: "us-east-1".into(),
            keys: Some(AwsKeys {
                access_key_id: Secret::new("AKIDEXAMPLE"),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: Some(Secret::new("session-token")),
            }),
            bearer_token: bearer.map(Secret::new),
        }
    }

    #[test]
    fn model_ids_are_percent_encoded_in_the_path() {
        let b = BaseUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: 9,
            path: "/p".into(),
        };
        assert_eq!(
            model_path(&b, "us.anthropic.claude-sonnet-4-20250514-v1:0", "converse"),
            "/p/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse"
        );
        assert_eq!(
            model_path(
                &b,
                "arn:aws:bedrock:us-east-1:123:inference-profile/x",
                "invoke"
            ),
            "/p/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fx/invoke"
        );
    }

    #[test]
    fn signs_with_the_hosts_region_or_sends_the_bearer_token() {
        let p = Bedrock::new(cfg("bedrock", Some("AKIDEXAMPLE")), &aws(None));
        let backend = p.cfg.backends[0].clone();
        let r = p
            .request(
                "POST",
                &backend,
                "/model/m/converse".into(),
                Vec::new(),
                Bytes::from("{}"),
            )
            .unwrap();
        let h = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let auth = h("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/eu-west-1/bedrock/aws4_request")
                && auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(h("x-amz-security-token"), "session-token");
        assert_eq!(h("x-amz-date").len(), 16);
        assert!(!auth.contains("wJalr"));
        // The bearer token wins over the keys; a custom host's own key is its bearer token.
        let p = Bedrock::new(cfg("bedrock", Some("tok")), &aws(Some("tok")));
        let r = p
            .request(
                "GET",
                &backend,
                "/async-invoke".into(),
                Vec::new(),
                Bytes::new(),
            )
            .unwrap();
        assert_eq!(r.headers, vec![("authorization", "Bearer tok".to_string())]);
        let p = Bedrock::new(cfg("west", Some("own")), &aws(None));
        let r = p.health_probe(&backend).unwrap();
        assert_eq!(r.path, "/async-invoke?maxResults=1");
        assert_eq!(r.headers, vec![("authorization", "Bearer own".to_string())]);
    }

    #[test]
    fn errors_follow_the_aws_error_type() {
        let body = br#"{"message":"Too many requests, please wait before trying again."}"#;
        let e = map_error(
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            body,
        );
        assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
        assert_eq!(e.code.as_deref(), Some("ThrottlingException"));
        assert_eq!(
            e.message,
            "Too many requests, please wait before trying again."
        );
        for (t, status) in [
            ("ValidationException", 400),
            ("AccessDeniedException", 403),
            ("UnrecognizedClientException", 401),
            ("InvalidSignatureException", 401),
            ("ResourceNotFoundException", 404),
            ("ServiceUnavailableException", 503),
            ("ModelNotReadyException", 503),
            ("ModelTimeoutException", 504),
            ("InternalServerException", 500),
        ] {
            assert_eq!(map_error(400, Some(t), b"{}").status, status, "{t}");
        }
        // No header: the body's `__type`, else the status as it came.
        let e = map_error(
            400,
            None,
            br#"{"__type":"com.amazon#ValidationException","message":"bad"}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("ValidationException"))
        );
        assert_eq!(map_error(418, None, b"teapot").status, 418);
    }

    #[test]
    fn embeddings_for_titan_and_cohere() {
        let req = |v: Value| v.as_object().unwrap().clone();
        let t = encode_embeddings(
            &req(json!({"input": "hi", "dimensions": 256})),
            "amazon.titan-embed-text-v2:0",
        )
        .unwrap();
        assert_eq!(t, json!({"inputText": "hi", "dimensions": 256}));
        let e = encode_embeddings(
            &req(json!({"input": ["a", "b"]})),
            "amazon.titan-embed-text-v2:0",
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let c =
            encode_embeddings(&req(json!({"input": ["a", "b"]})), "us.cohere.embed-v4:0").unwrap();
        assert_eq!(
            c,
            json!({"texts": ["a", "b"], "input_type": "search_document"})
        );
        assert!(encode_embeddings(&req(json!({"input": "x"})), "anthropic.claude-v2").is_err());
        let (b, u) = decode_embeddings(
            br#"{"embedding":[0.5,1.0],"inputTextTokenCount":3}"#,
            "bedrock/t",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 1.0]));
        assert_eq!(v["model"], "bedrock/t");
        assert_eq!(u.unwrap().prompt_tokens, 3);
        for body in [
            r#"{"embeddings":[[1.0],[2.0]],"id":"x","response_type":"embeddings_floats"}"#,
            r#"{"embeddings":{"float":[[1.0],[2.0]]},"response_type":"embeddings_by_type"}"#,
        ] {
            let (b, u) = decode_embeddings(body.as_bytes(), "m").unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["data"][1]["embedding"], json!([2.0]), "{body}");
            assert_eq!(v["data"][1]["index"], 1);
            assert!(u.is_none());
        }
    }
}
