//! Access tokens for a Google service account: an RS256-signed JWT (claims `iss`, `scope`,
//! `aud` = the key file's `token_uri`, `iat`, `exp`) exchanged at `token_uri` (grant type
//! `urn:ietf:params:oauth:grant-type:jwt-bearer`) for a bearer token, held until shortly before
//! it expires.
//!
//! - Requests read the held token without waiting ([`TokenSource::header`]). Once a token is in
//!   the last quarter of its life (at most its last 5 minutes), the first request to see that
//!   starts one refresh in the background and goes on with the old token, which is still good.
//! - Only when no usable token is held (the first request, or after a long idle spell) does a
//!   request wait ([`TokenSource::ensure`]); one exchange runs at a time, and requests queued
//!   behind it take its result instead of starting their own. A failed exchange is answered to
//!   the requests waiting within the next second without asking again.
//! - The exchange is bounded ([`EXCHANGE_TIMEOUT`]): a token endpoint that does not answer is a
//!   502 to the client, one that refuses the credentials a 401, never a hang.
//! - Neither the JWT nor the token is ever logged or put in an error message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::config::vertex::ServiceAccount;
use crate::config::Secret;
use crate::error::{ErrorKind, GatewayError};

/// The scope the access token is asked for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The OAuth grant type of a signed-JWT exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long the signed JWT is good for (Google's maximum).
const JWT_LIFETIME: u64 = 3600;

/// Longest one exchange at the token endpoint may take, connection included.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failed exchange is the answer for requests that come after it.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// Most of a token endpoint's error body kept for the message.
const MAX_ERROR_TEXT: usize = 300;

/// A held access token.
struct Token {
    /// `Bearer <token>`, ready for the header.
    header: Secret,
    /// From here on, a request starts a background refresh.
    refresh_at: Instant,
    /// From here on, the token is not used.
    valid_until: Instant,
}

/// The JWT's claims.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token endpoint's error body (`{"error":"invalid_grant","error_description":"..."}`).
#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The access tokens of one service account.
pub struct TokenSource {
    client_email: String,
    token_uri: String,
    kid: Option<String>,
    key: EncodingKey,
    http: reqwest::Client,
    current: RwLock<Option<Arc<Token>>>,
    /// Held for the length of an exchange (one at a time); keeps the last failure and when.
    exchange: tokio::sync::Mutex<Option<(Instant, GatewayError)>>,
    /// A background refresh is under way.
    background: AtomicBool,
    /// Exchanges that returned a token (for the log line and tests).
    obtained: AtomicU64,
}

impl TokenSource {
    /// The account's token source. Fails only on a key that the configuration should already
    /// have refused, or an HTTP client that cannot be built.
    pub fn new(account: &ServiceAccount) -> Result<TokenSource, String> {
        let key =
            EncodingKey::from_rsa_pem(account.private_key.expose().as_bytes()).map_err(|_| {
                "the service account's private_key is not an RSA key in PEM".to_string()
            })?;
        let http = reqwest::Client::builder()
            .timeout(EXCHANGE_TIMEOUT)
            .connect_timeout(EXCHANGE_TIMEOUT / 2)
            .no_proxy()
            .build()
            .map_err(|e| format!("building the token endpoint's HTTP client: {e}"))?;
        Ok(TokenSource {
            client_email: account.client_email.clone(),
            token_uri: account.token_uri.clone(),
            kid: account.private_key_id.clone(),
            key,
            http,
            current: RwLock::new(None),
            exchange: tokio::sync::Mutex::new(None),
            background: AtomicBool::new(false),
            obtained: AtomicU64::new(0),
        })
    }

    /// Whether a usable token is held (then [`TokenSource::header`] has it).
    pub fn usable(&self) -> bool {
        self.current
            .read()
            .as_ref()
            .is_some_and(|t| Instant::now() < t.valid_until)
    }

    /// The `Authorization` value of the held token, if it is usable. A token near its end has
    /// a refresh started in the background (one at a time); this call never waits.
    pub fn header(self: &Arc<Self>) -> Option<String> {
        let token = self.current.read().clone()?;
        let now = Instant::now();
        if now >= token.valid_until {
            return None;
        }
        if now >= token.refresh_at {
            self.refresh_in_background();
        }
        Some(token.header.expose().to_string())
    }

    /// Waits until a usable token is held: exchanges one unless another caller just did.
    pub async fn ensure(&self) -> Result<(), GatewayError> {
        self.refresh(false).await
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.background.store(false, Ordering::Release);
            return;
        };
        let me = Arc::clone(self);
        runtime.spawn(async move {
            // A failure is logged by `refresh`; the old token serves until it expires.
            let _ = me.refresh(true).await;
            me.background.store(false, Ordering::Release);
        });
    }

    /// One exchange unless the held token is still good (`early`: good for a while yet).
    async fn refresh(&self, early: bool) -> Result<(), GatewayError> {
        let mut last_failure = self.exchange.lock().await;
        let now = Instant::now();
        let fresh = self.current.read().as_ref().is_some_and(|t| {
            if early {
                now < t.refresh_at
            } else {
                now < t.valid_until
            }
        });
        if fresh {
            return Ok(());
        }
        if let Some((at, err)) = last_failure.as_ref() {
            if !early && now.duration_since(*at) < FAILURE_HOLD {
                return Err(err.clone());
            }
        }
        match self.exchange_once().await {
            Ok(token) => {
                *self.current.write() = Some(Arc::new(token));
                *last_failure = None;
                let n = self.obtained.fetch_add(1, Ordering::Relaxed) + 1;
                log::info!(
                    "vertex: access token obtained for {} (exchange {n})",
                    self.client_email
                );
                Ok(())
            }
            Err(err) => {
                log::warn!("vertex: {}", err.message);
                *last_failure = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    /// Signs a JWT and exchanges it for a token.
    async fn exchange_once(&self) -> Result<Token, GatewayError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + JWT_LIFETIME,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.kid.clone();
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            GatewayError::internal(format!(
                "Vertex AI: signing the service account's JWT failed ({e})"
            ))
        })?;
        let asked = Instant::now();
        let sent = self
            .http
            .post(&self.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", jwt.as_str())])
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    format!("no answer within {}s", EXCHANGE_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    "could not connect".to_string()
                } else {
                    "the exchange failed".to_string()
                };
                return Err(unavailable(format!(
                    "Vertex AI: could not get an access token from the token endpoint {} ({why})",
                    self.token_uri
                )));
            }
        };
        let status = resp.status().as_u16();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(_) => {
                return Err(unavailable(format!(
                    "Vertex AI: the token endpoint {} broke off its answer",
                    self.token_uri
                )))
            }
        };
        if !(200..300).contains(&status) {
            return Err(refused(&self.token_uri, status, &body));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            unavailable(format!(
                "Vertex AI: the token endpoint {} answered without an access_token",
                self.token_uri
            ))
        })?;
        if answer.access_token.is_empty() {
            return Err(unavailable(format!(
                "Vertex AI: the token endpoint {} answered an empty access_token",
                self.token_uri
            )));
        }
        Ok(token(
            answer.access_token,
            Duration::from_secs(answer.expires_in.unwrap_or(JWT_LIFETIME).max(1)),
            asked,
        ))
    }
}

/// A token good for `lifetime` from `asked` (when it was asked for: the conservative start).
/// It is used until its last tenth (at most a minute) and refreshed from its last quarter (at
/// most five minutes): an hour's token is refreshed after 55 minutes, dropped after 59.
fn token(access_token: String, lifetime: Duration, asked: Instant) -> Token {
    let margin = (lifetime / 10).min(Duration::from_secs(60));
    let early = (lifetime / 4).min(Duration::from_secs(300));
    Token {
        header: Secret::new(format!("Bearer {access_token}")),
        refresh_at: asked + lifetime - early,
        valid_until: asked + lifetime - margin,
    }
}

/// The token endpoint could not be asked: a 502 (the provider's failure, so failover applies).
fn unavailable(message: String) -> GatewayError {
    let mut e = GatewayError::bad_gateway(message);
    e.code = Some("vertex_token_unavailable".into());
    e.label = "upstream_auth";
    e
}

/// The token endpoint answered an error: refused credentials (4xx) are a 401, anything else
/// a 502. Only the endpoint's `error` and `error_description` are quoted.
fn refused(token_uri: &str, status: u16, body: &[u8]) -> GatewayError {
    let said = serde_json::from_slice::<TokenError>(body)
        .ok()
        .map(|e| {
            [e.error, e.error_description]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        })
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(MAX_ERROR_TEXT).collect::<String>())
        .unwrap_or_else(|| "no error given".into());
    if (400..500).contains(&status) && status != 429 {
        let mut e = GatewayError::new(
            401,
            ErrorKind::Authentication,
            Some("vertex_credentials_refused"),
            format!(
                "Vertex AI: the token endpoint {token_uri} refused the service account's \
                 credentials ({status}: {said})"
            ),
        );
        e.label = "upstream_auth";
        e
    } else {
        unavailable(format!(
            "Vertex AI: the token endpoint {token_uri} answered {status} ({said})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_windows_follow_the_lifetime() {
        let now = Instant::now();
        let hour = token("t".into(), Duration::from_secs(3600), now);
        assert_eq!(hour.refresh_at - now, Duration::from_secs(3300));
        assert_eq!(hour.valid_until - now, Duration::from_secs(3540));
        assert_eq!(hour.header.expose(), "Bearer t");
        assert_eq!(format!("{:?}", hour.header), "***");
        let short = token("t".into(), Duration::from_secs(8), now);
        assert_eq!(short.refresh_at - now, Duration::from_secs(6));
        assert_eq!(short.valid_until - now, Duration::from_millis(7200));
    }

    #[test]
    fn token_endpoint_errors() {
        let e = refused(
            "http://x/token",
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        assert_eq!(e.status, 401);
        assert_eq!(e.code.as_deref(), Some("vertex_credentials_refused"));
        assert!(e.message.contains("invalid_grant: Invalid JWT Signature."));
        let e = refused("http://x/token", 503, b"<html>down</html>");
        assert_eq!(e.status, 502);
        assert_eq!(e.code.as_deref(), Some("vertex_token_unavailable"));
        assert!(e.message.contains("503 (no error given)"), "{}", e.message);
    }
}
