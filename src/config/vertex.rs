//! Google Vertex AI: the service account (`GOOGLE_APPLICATION_CREDENTIALS`, the path of its JSON
//! key file), the project (`GOOGLE_CLOUD_PROJECT`, else the key file's `project_id`) and the
//! location (`GOOGLE_CLOUD_LOCATION`, default [`DEFAULT_LOCATION`]; `global` supported).
//!
//! The key file is read and checked once, at start-up: a file that cannot be read, is not a
//! service account key or holds no usable RSA private key stops the gateway with an error that
//! names the variable (never the key). The API host is `{location}-aiplatform.googleapis.com`
//! (`aiplatform.googleapis.com` for `global`) unless `VERTEX_BASE_URL` overrides it.

use std::collections::BTreeMap;
use std::fmt;

use super::providers::{parse_base_url, ProviderConfig, UrlStyle};
use super::{vars, Reader, Secret};

/// The provider's name and model prefix (`vertex/<model>`).
pub const NAME: &str = "vertex";

/// The location when `GOOGLE_CLOUD_LOCATION` is not set: the region with the widest choice of
/// both Gemini and Claude models.
pub const DEFAULT_LOCATION: &str = "us-central1";

/// Google's token endpoint, for a key file that names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The service account, from its JSON key file.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    /// The RSA private key, PEM (PKCS#8 as Google issues it, or PKCS#1).
    pub private_key: Secret,
    /// Sent as the JWT's `kid` header when present.
    pub private_key_id: Option<String>,
    /// Where the signed JWT is exchanged for an access token (and the JWT's audience).
    pub token_uri: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key", &self.private_key)
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

/// Vertex AI's settings, when the provider is configured.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    pub account: ServiceAccount,
    pub project: String,
    pub location: String,
}

impl VertexConfig {
    /// `projects/{project}/locations/{location}`: the parent of every model path.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.location)
    }
}

/// The API host of a location: `https://{location}-aiplatform.googleapis.com`, or
/// `https://aiplatform.googleapis.com` for `global`.
pub fn default_base_url(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".into()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

/// A project id or location: what Google allows in them, so they can go into URL paths as they
/// are.
fn path_segment(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 100
        && v.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b':' | b'_')
        });
    if ok {
        Ok(v.to_string())
    } else {
        Err("expected lower-case letters, digits and dashes".into())
    }
}

/// The fields of a key file the gateway uses.
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
}

/// Reads and checks the key file at `path`: the account, and the key file's `project_id`.
fn read_key_file(path: &str) -> Result<(ServiceAccount, Option<String>), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read the key file: {e}"))?;
    // serde's message could quote the file's bytes: say only where it broke.
    let key: KeyFile = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "not a JSON service account key file (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    match key.kind.as_deref() {
        Some("service_account") => {}
        Some(other) => {
            return Err(format!(
                "the key file is of type {other:?}; Vertex AI needs a service account key \
                 (\"type\": \"service_account\")"
            ))
        }
        None => return Err("the key file has no \"type\" (expected \"service_account\")".into()),
    }
    let client_email = key
        .client_email
        .filter(|s| !s.trim().is_empty())
        .ok_or("the key file has no client_email")?;
    let private_key = key
        .private_key
        .filter(|s| !s.trim().is_empty())
        .ok_or("the key file has no private_key")?;
    if jsonwebtoken::EncodingKey::from_rsa_pem(private_key.as_bytes()).is_err() {
        return Err("the key file's private_key is not an RSA private key in PEM".into());
    }
    let token_uri = key
        .token_uri
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TOKEN_URI.into());
    match url::Url::parse(&token_uri) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
        _ => {
            return Err(format!(
                "the key file's token_uri {token_uri:?} is not an http(s) URL"
            ))
        }
    }
    Ok((
        ServiceAccount {
            client_email,
            private_key: Secret::new(private_key),
            private_key_id: key.private_key_id.filter(|s| !s.is_empty()),
            token_uri,
        },
        key.project_id.filter(|s| !s.is_empty()),
    ))
}

/// Vertex AI's settings when its provider row is enabled (by `GOOGLE_APPLICATION_CREDENTIALS` or
/// `VERTEX_BASE_URL`); fills in the provider's default host for the location.
pub(super) fn read(
    r: &mut Reader,
    providers: &mut BTreeMap<String, ProviderConfig>,
) -> Option<VertexConfig> {
    let p = providers.get_mut(NAME)?;
    // The variable holds a path, not a key: nothing sends it anywhere.
    p.api_key = None;
    let location = r.parse(
        vars::GOOGLE_CLOUD_LOCATION,
        DEFAULT_LOCATION.to_string(),
        path_segment,
    );
    let Some(path) = r.get(vars::GOOGLE_APPLICATION_CREDENTIALS) else {
        r.errors.push(format!(
            "{}: not set; Vertex AI (enabled by {}) needs the path of a service account's JSON \
             key file",
            vars::GOOGLE_APPLICATION_CREDENTIALS,
            vars::VERTEX_BASE_URL
        ));
        return None;
    };
    let (account, key_project) = match read_key_file(path) {
        Ok(k) => k,
        Err(why) => {
            r.error(vars::GOOGLE_APPLICATION_CREDENTIALS, path, &why);
            return None;
        }
    };
    let project = match r.get(vars::GOOGLE_CLOUD_PROJECT) {
        Some(v) => match path_segment(v) {
            Ok(v) => v,
            Err(e) => {
                r.error(vars::GOOGLE_CLOUD_PROJECT, v, &e);
                return None;
            }
        },
        None => match key_project.map(|v| path_segment(&v)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                r.error(
                    vars::GOOGLE_APPLICATION_CREDENTIALS,
                    path,
                    &format!("the key file's project_id: {e}; set GOOGLE_CLOUD_PROJECT"),
                );
                return None;
            }
            None => {
                r.errors.push(format!(
                    "{}: not set, and the key file ({}) has no project_id",
                    vars::GOOGLE_CLOUD_PROJECT,
                    vars::GOOGLE_APPLICATION_CREDENTIALS
                ));
                return None;
            }
        },
    };
    if p.backends.is_empty() {
        match parse_base_url(&default_base_url(&location), UrlStyle::Root) {
            Ok(u) => p.backends.push(u),
            Err(e) => r.error(vars::GOOGLE_CLOUD_LOCATION, &location, &e),
        }
    }
    Some(VertexConfig {
        account,
        project,
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, Config};
    use super::*;

    /// A throwaway 1024-bit RSA key (PKCS#8): only ever used by these tests.
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAOd3MFy5ilUaIAn/
eriUHgKubEyyaCt/jgYFnT9bJBQqw4ANc3Wz9AizGEoRS5L6ca6YuNxhK92DS6EP
kbCHZmCX5iYa2jaNN/+HpY+E1ngIT92KRCF4ed1fSaNWExeKe7PwQ0PTMdLRglJd
/vPwfRwl5sYG5rIqiY6NjpFxyKPLAgMBAAECgYEAxp2z1h0v4o6kZ2/eMnyGs+5P
6BA+6vRtPiWbJT5j2xpG356rMJjWEpD7irMEkn5tBlDub8zCAzYis3XUohHNeftr
KmR4HxiXqANOIW24Orb+Sz39/QwBPtI4XvowEYidtKdHovqqkOBTY0aUOzFBlXN+
dsVXZo5W1EDHi1tntGECQQD61FzSI8FQmV549I04egeTYKYk43HAst+qGeTKzqBp
J7/X+0t3p5cJ/FUtEtmYe8Ms/G1mJl2cnamGZVrFeqoXAkEA7DykVvV7MBj49PPQ
eq1bpb+EU9+Nfn/olni9GAb06iiASAFrFPR3fd3sB3/FBydkWRh6OXEfKGHEi4E3
iJ6IbQJAd4yoAPBRvxyaToQgmv5uhevWxFYzbWjT+bsFtTPueLAdW8/GFG2oK3Y9
EpKda3PxfouBiOJYU8FBf3DnZqAkWQJAamtrEO1nACTPyfEnwovj1EfxQaNcZ1cR
nO9pJ7DCldWG7GkPJxJ13dKiKEKrrGxXbTd0n/nQsm1QkBO2w6m/BQJAdVC3nPPr
gcqSSTEIm50WYDgrWOqNtevfCaQup37M9r7hfGJwV45YoEcFl3MdAX6xLVnhqeT5
VqXwLL4KFXUofw==
-----END PRIVATE KEY-----
";

    fn key_file(fields: serde_json::Value) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), fields.to_string()).unwrap();
        f
    }

    fn good_key() -> serde_json::Value {
        serde_json::json!({
            "type": "service_account",
            "project_id": "key-project",
            "private_key_id": "kid1",
            "private_key": TEST_KEY,
            "client_email": "gw@key-project.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:1/token"
        })
    }

    #[test]
    fn key_file_project_location_and_host() {
        let f = key_file(good_key());
        let path = f.path().to_str().unwrap();
        let c = Config::from_map(&env(&[("GOOGLE_APPLICATION_CREDENTIALS", path)])).unwrap();
        let v = c.vertex.as_ref().unwrap();
        assert_eq!(v.project, "key-project");
        assert_eq!(v.location, DEFAULT_LOCATION);
        assert_eq!(v.parent(), "projects/key-project/locations/us-central1");
        assert_eq!(v.account.token_uri, "http://127.0.0.1:1/token");
        assert_eq!(v.account.private_key_id.as_deref(), Some("kid1"));
        let p = &c.providers[NAME];
        assert_eq!(p.format, "vertex");
        assert_eq!(p.api_key, None);
        assert_eq!(
            p.backends[0].to_string(),
            "https://us-central1-aiplatform.googleapis.com"
        );
        assert!(!format!("{v:?}").contains("PRIVATE KEY"));
        let described = c.describe();
        assert!(
            described.contains("vertex           project=key-project location=us-central1"),
            "{described}"
        );
        assert!(!described.contains("PRIVATE KEY"));

        let c = Config::from_map(&env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", path),
            ("GOOGLE_CLOUD_PROJECT", "my-proj"),
            ("GOOGLE_CLOUD_LOCATION", "global"),
        ]))
        .unwrap();
        assert_eq!(c.vertex.as_ref().unwrap().project, "my-proj");
        assert_eq!(
            c.providers[NAME].backends[0].to_string(),
            "https://aiplatform.googleapis.com"
        );
        let c = Config::from_map(&env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", path),
            ("GOOGLE_CLOUD_LOCATION", "europe-west4"),
            ("VERTEX_BASE_URL", "http://127.0.0.1:9000/"),
        ]))
        .unwrap();
        assert_eq!(c.vertex.as_ref().unwrap().location, "europe-west4");
        assert_eq!(
            c.providers[NAME].backends[0].to_string(),
            "http://127.0.0.1:9000"
        );
        // Nothing set: no Vertex.
        let c = Config::from_map(&env(&[])).unwrap();
        assert!(c.vertex.is_none() && !c.providers.contains_key(NAME));
    }

    #[test]
    fn bad_key_files_stop_start_up_naming_the_variable() {
        let missing = Config::from_map(&env(&[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/key.json",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{missing}"
        );
        assert!(missing.contains("cannot read"), "{missing}");
        let mut cases = vec![];
        let mut v = good_key();
        v["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into();
        cases.push((v, "not an RSA private key"));
        let mut v = good_key();
        v["type"] = "authorized_user".into();
        cases.push((v, "service account"));
        let mut v = good_key();
        v.as_object_mut().unwrap().remove("client_email");
        cases.push((v, "client_email"));
        let mut v = good_key();
        v["token_uri"] = "ftp://x/token".into();
        cases.push((v, "token_uri"));
        for (v, want) in cases {
            let f = key_file(v);
            let e = Config::from_map(&env(&[(
                "GOOGLE_APPLICATION_CREDENTIALS",
                f.path().to_str().unwrap(),
            )]))
            .unwrap_err()
            .to_string();
            assert!(e.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("MIIC"), "the key leaked: {e}");
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "{not json").unwrap();
        let e = Config::from_map(&env(&[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            f.path().to_str().unwrap(),
        )]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a JSON service account key file"), "{e}");
        // No project anywhere.
        let mut v = good_key();
        v.as_object_mut().unwrap().remove("project_id");
        let f = key_file(v);
        let e = Config::from_map(&env(&[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            f.path().to_str().unwrap(),
        )]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("GOOGLE_CLOUD_PROJECT"), "{e}");
        // A base URL without credentials.
        let e = Config::from_map(&env(&[("VERTEX_BASE_URL", "http://127.0.0.1:9000")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
        let f = key_file(good_key());
        let e = Config::from_map(&env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", f.path().to_str().unwrap()),
            ("GOOGLE_CLOUD_LOCATION", "US Central/1"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("GOOGLE_CLOUD_LOCATION"), "{e}");
    }
}
