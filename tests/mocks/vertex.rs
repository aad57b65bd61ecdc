//! A mock Google Vertex AI: a token endpoint and the API, each a real HTTP server on loopback.
//!
//! - The token endpoint takes `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an
//!   `assertion`, checks the JWT's RS256 signature against the test key pair's public half and
//!   its claims (`iss`, `scope`, `aud` = its own URL, `iat`, `exp`, `kid`), and issues a fresh
//!   token with the lifetime the test set; a bad JWT gets Google's `invalid_grant` 400.
//! - The API checks `Authorization: Bearer <a token it issued, not expired>` and the exact
//!   paths (`/v1/projects/{project}/locations/{location}/publishers/{google|anthropic}/models/
//!   {model}:{verb}`), the Claude envelope (`anthropic_version: vertex-2023-10-16`, no `model`),
//!   then answers through the strict Gemini and Anthropic mocks (`mocks::gemini`,
//!   `mocks::anthropic`) with the request put back in their APIs' shape.
//!
//! The key pair comes from `openssl genpkey` (one per test binary).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::common::*;
use crate::mocks::{anthropic, gemini, ANTHROPIC_KEY, GEMINI_KEY};

pub const PROJECT: &str = "test-project";
pub const KEY_PROJECT: &str = "key-file-project";
pub const LOCATION: &str = "us-east5";
pub const EMAIL: &str = "gateway@test-project.iam.gserviceaccount.com";
pub const KID: &str = "kid-test-1";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Tokens the mock issues start with this (tests look for it in logs).
pub const TOKEN_PREFIX: &str = "ya29.mock-token-";
/// A Claude model whose quota is exhausted: Vertex's own (Google-shaped) 429.
pub const CLAUDE_QUOTA: &str = "claude-quota-exhausted";

/// An RSA key pair as PEM: (private PKCS#8, public SPKI).
pub struct KeyPair {
    pub private: String,
    pub public: String,
}

fn openssl(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = Command::new("openssl");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(i) = input {
            stdin.write_all(i.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn generate() -> KeyPair {
    let private = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        None,
    );
    let public = openssl(&["pkey", "-pubout"], Some(&private));
    KeyPair { private, public }
}

/// The key pair the token endpoint trusts.
pub fn keys() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(generate)
}

/// Another key pair, that the token endpoint does not trust.
pub fn wrong_keys() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(generate)
}

/// One issued token.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub at: Instant,
    pub expires: Instant,
}

#[derive(Default)]
pub struct State {
    token_uri: Mutex<String>,
    /// Lifetime of the tokens issued from now on, in seconds.
    pub lifetime: AtomicU64,
    pub issued: Mutex<Vec<Issued>>,
    /// JWTs refused (bad signature or claims).
    pub refused: AtomicUsize,
    /// API requests refused for their token (unknown or expired).
    pub unauthorised: AtomicUsize,
    /// The token endpoint answers 503.
    pub token_down: AtomicBool,
    /// The Bearer token of every API request, in order.
    pub seen_tokens: Mutex<Vec<String>>,
}

impl State {
    pub fn exchanges(&self) -> usize {
        self.issued.lock().unwrap().len()
    }
    pub fn issued(&self) -> Vec<Issued> {
        self.issued.lock().unwrap().clone()
    }
}

/// The token endpoint and the API.
pub struct VertexMock {
    pub token: Mock,
    pub api: Mock,
    pub state: Arc<State>,
    dir: tempfile::TempDir,
}

impl VertexMock {
    /// Tokens live `lifetime` seconds.
    pub async fn start(lifetime: u64) -> VertexMock {
        let state = Arc::new(State::default());
        state.lifetime.store(lifetime, Ordering::SeqCst);
        let s = state.clone();
        let token = Mock::start(Arc::new(move |r: &Recorded| token_answer(&s, r))).await;
        *state.token_uri.lock().unwrap() = format!("{}/token", token.url());
        let s = state.clone();
        let api = Mock::start(Arc::new(move |r: &Recorded| api_answer(&s, r))).await;
        VertexMock {
            token,
            api,
            state,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn token_uri(&self) -> String {
        self.state.token_uri.lock().unwrap().clone()
    }

    /// Writes a service account key file signed by `keys` and returns its path.
    pub fn key_file(&self, name: &str, keys: &KeyPair) -> PathBuf {
        let path = self.dir.path().join(name);
        let v = json!({
            "type": "service_account",
            "project_id": KEY_PROJECT,
            "private_key_id": KID,
            "private_key": keys.private,
            "client_email": EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
        });
        std::fs::write(&path, v.to_string()).unwrap();
        path
    }

    /// The gateway's variables for this mock (project and location set; key file trusted).
    pub fn env(&self) -> Vec<(String, String)> {
        let key = self.key_file("key.json", keys());
        vec![
            (
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                key.to_string_lossy().into_owned(),
            ),
            ("GOOGLE_CLOUD_PROJECT".into(), PROJECT.into()),
            ("GOOGLE_CLOUD_LOCATION".into(), LOCATION.into()),
            ("VERTEX_BASE_URL".into(), self.api.url()),
        ]
    }
}

fn token_error(status: u16, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_answer(s: &State, r: &Recorded) -> Response {
    if s.token_down.load(Ordering::SeqCst) {
        return json_response(503, json!({"error": "unavailable"}));
    }
    if r.method != "POST" || r.path != "/token" {
        return token_error(404, "not_found", "no such endpoint");
    }
    if r.header("content-type") != Some("application/x-www-form-urlencoded") {
        return token_error(400, "invalid_request", "expected a form");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&r.body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some(GRANT) {
        return token_error(400, "unsupported_grant_type", "Invalid grant_type");
    }
    let Some(jwt) = form.get("assertion") else {
        return token_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    if let Err(why) = check_jwt(jwt, &s.token_uri.lock().unwrap()) {
        s.refused.fetch_add(1, Ordering::SeqCst);
        return token_error(400, "invalid_grant", &why);
    }
    let mut issued = s.issued.lock().unwrap();
    let lifetime = s.lifetime.load(Ordering::SeqCst);
    let token = format!("{TOKEN_PREFIX}{}", issued.len() + 1);
    let at = Instant::now();
    issued.push(Issued {
        token: token.clone(),
        at,
        expires: at + Duration::from_secs(lifetime),
    });
    json_response(
        200,
        json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}),
    )
}

/// The JWT's signature against the trusted public key, and its claims.
fn check_jwt(jwt: &str, token_uri: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("bad JWT header: {e}"))?;
    if header.alg != Algorithm::RS256 {
        return Err(format!("alg must be RS256, not {:?}", header.alg));
    }
    if header.kid.as_deref() != Some(KID) {
        return Err(format!("kid must be the key's id, not {:?}", header.kid));
    }
    let key = DecodingKey::from_rsa_pem(keys().public.as_bytes()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[token_uri]);
    v.set_issuer(&[EMAIL]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    v.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &v)
        .map_err(|e| format!("Invalid JWT Signature or claims ({e})"))?;
    let c = data.claims;
    if c["scope"] != SCOPE {
        return Err(format!("scope must be cloud-platform, not {}", c["scope"]));
    }
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    let now = now_unix();
    if iat + 60 < now || iat > now + 60 {
        return Err("iat is not now".into());
    }
    if exp <= iat || exp - iat > 3600 {
        return Err("exp must be within an hour of iat".into());
    }
    Ok(())
}

fn g_error(status: u16, gstatus: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"code": status, "message": message, "status": gstatus}}),
    )
}

fn api_answer(s: &State, r: &Recorded) -> Response {
    let bearer = r
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    s.seen_tokens.lock().unwrap().push(bearer.clone());
    let now = Instant::now();
    let valid = s
        .issued
        .lock()
        .unwrap()
        .iter()
        .any(|i| i.token == bearer && now < i.expires);
    if !valid {
        s.unauthorised.fetch_add(1, Ordering::SeqCst);
        return g_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    if r.header("x-goog-api-key").is_some() || r.header("x-api-key").is_some() {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock: an API key was sent to Vertex",
        );
    }
    if r.method == "GET" {
        if r.path == "/v1beta1/publishers/google/models" {
            if r.header("x-goog-user-project") != Some(PROJECT) {
                return g_error(400, "INVALID_ARGUMENT", "mock: x-goog-user-project");
            }
            return json_response(
                200,
                json!({"publisherModels": [
                    {"name": "publishers/google/models/gemini-2.0-flash-001", "versionId": "001"},
                    {"name": "publishers/google/models/gemini-2.5-pro", "versionId": "default"},
                    {"name": "publishers/google/models/imagen-3.0-generate-002", "versionId": "002"}
                ]}),
            );
        }
        return g_error(404, "NOT_FOUND", "Not found");
    }
    let prefix = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/");
    let key_prefix = format!("/v1/projects/{KEY_PROJECT}/locations/global/publishers/");
    let Some(rest) = r
        .path
        .strip_prefix(&prefix)
        .or_else(|| r.path.strip_prefix(&key_prefix))
    else {
        return g_error(404, "NOT_FOUND", &format!("mock: unknown path {}", r.path));
    };
    let Some((publisher, rest)) = rest.split_once("/models/") else {
        return g_error(404, "NOT_FOUND", "mock: no /models/ in the path");
    };
    let Some((model, verb)) = rest.split_once(':') else {
        return g_error(404, "NOT_FOUND", "mock: no :verb in the path");
    };
    match publisher {
        "google" => {
            if !matches!(verb, "generateContent" | "streamGenerateContent") {
                return g_error(404, "NOT_FOUND", "mock: unknown Gemini verb");
            }
            let mut rec = r.clone();
            rec.path = format!("/v1beta/models/{model}:{verb}");
            rec.headers.remove("authorization");
            rec.headers
                .insert("x-goog-api-key".into(), GEMINI_KEY.into());
            gemini()(&rec)
        }
        "anthropic" => claude(r, model, verb),
        _ => g_error(404, "NOT_FOUND", "mock: unknown publisher"),
    }
}

fn claude(r: &Recorded, model: &str, verb: &str) -> Response {
    let mut body = r.json();
    let Some(obj) = body.as_object_mut() else {
        return g_error(400, "INVALID_ARGUMENT", "mock: the body is not an object");
    };
    if obj.remove("anthropic_version") != Some(json!("vertex-2023-10-16")) {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock: anthropic_version must be vertex-2023-10-16",
        );
    }
    if r.header("anthropic-version").is_some() {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock: the version goes in the body on Vertex",
        );
    }
    if model == "count-tokens" {
        if verb != "rawPredict" || !obj.contains_key("model") {
            return g_error(
                400,
                "INVALID_ARGUMENT",
                "mock: count-tokens wants rawPredict and the model",
            );
        }
        return json_response(200, json!({"input_tokens": 33}));
    }
    if obj.contains_key("model") {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            "mock: the model goes in the URL on Vertex, not in the body",
        );
    }
    let streamed = obj.get("stream") == Some(&json!(true));
    let want = if streamed {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    if verb != want {
        return g_error(
            400,
            "INVALID_ARGUMENT",
            &format!("mock: a request with stream={streamed} goes to {want}, not {verb}"),
        );
    }
    if model == CLAUDE_QUOTA {
        return g_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model",
        );
    }
    obj.insert("model".into(), json!(model));
    let mut rec = r.clone();
    rec.path = "/v1/messages".into();
    rec.body = body.to_string().into();
    rec.headers.remove("authorization");
    rec.headers.insert("x-api-key".into(), ANTHROPIC_KEY.into());
    rec.headers
        .insert("anthropic-version".into(), "2023-06-01".into());
    anthropic()(&rec)
}
