//! AWS: the standard variables of AWS's SDKs and CLI (credentials, region, Bedrock API keys),
//! read once for the `bedrock` provider (`bedrock/<model-id>`, README "AWS Bedrock").
//!
//! The provider itself is a row of [`super::providers::BUILTINS`] (its base URL variables and
//! the variables that enable it); this file reads what a row cannot say: the region, the
//! signing credentials, and the regional endpoint used when no base URL variable is set.

use std::collections::BTreeMap;

use super::providers::{BaseUrl, ProviderConfig};
use super::{vars, Reader, Secret};

/// The region when neither `AWS_REGION` nor `AWS_DEFAULT_REGION` is set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The built-in Bedrock provider's name (its model prefix).
pub const BEDROCK: &str = "bedrock";

/// AWS credentials and region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsConfig {
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`, else [`DEFAULT_REGION`].
    pub region: String,
    /// `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` for temporary
    /// credentials): requests are signed with SigV4.
    pub keys: Option<AwsKeys>,
    /// `AWS_BEARER_TOKEN_BEDROCK`: a Bedrock API key, sent as `Authorization: Bearer` (no
    /// signing). Wins over the keys, as in AWS's SDKs.
    pub bearer_token: Option<Secret>,
}

/// Long-term or temporary AWS credentials. The key id is not secret by AWS's rules, but it is
/// kept out of logs all the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// The Bedrock runtime endpoint of a region.
pub fn bedrock_runtime(region: &str) -> BaseUrl {
    BaseUrl {
        tls: true,
        host: format!("bedrock-runtime.{region}.amazonaws.com"),
        port: 443,
        path: String::new(),
    }
}

/// The region a Bedrock runtime host names (`bedrock-runtime.eu-west-1.amazonaws.com`,
/// `bedrock-runtime-fips.us-east-1.amazonaws.com`), if it is one.
pub fn region_of_host(host: &str) -> Option<&str> {
    let rest = host
        .strip_prefix("bedrock-runtime.")
        .or_else(|| host.strip_prefix("bedrock-runtime-fips."))?;
    let (region, _) = rest.split_once('.')?;
    (!region.is_empty()).then_some(region)
}

fn parse_region(v: &str) -> Result<String, String> {
    let ok = v
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok {
        Ok(v.to_string())
    } else {
        Err("expected an AWS region name such as us-east-1".into())
    }
}

/// Reads the AWS variables, and gives the `bedrock` provider (when its variables enabled it)
/// its regional endpoint if no base URL variable was set.
pub(super) fn read(r: &mut Reader, providers: &mut BTreeMap<String, ProviderConfig>) -> AwsConfig {
    let region_var = [vars::AWS_REGION, vars::AWS_DEFAULT_REGION]
        .into_iter()
        .find(|v| r.get(v).is_some());
    let region = match region_var {
        Some(var) => r.parse(var, DEFAULT_REGION.to_string(), parse_region),
        None => DEFAULT_REGION.to_string(),
    };
    let id = r.get(vars::AWS_ACCESS_KEY_ID);
    let secret = r.get(vars::AWS_SECRET_ACCESS_KEY);
    let keys = match (id, secret) {
        (Some(id), Some(secret)) => Some(AwsKeys {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(secret),
            session_token: r.get(vars::AWS_SESSION_TOKEN).map(Secret::new),
        }),
        (Some(_), None) => {
            r.error(
                vars::AWS_SECRET_ACCESS_KEY,
                "",
                "required with AWS_ACCESS_KEY_ID (SigV4 signs with both)",
            );
            None
        }
        (None, Some(_)) => {
            r.error(
                vars::AWS_ACCESS_KEY_ID,
                "",
                "required with AWS_SECRET_ACCESS_KEY (SigV4 signs with both)",
            );
            None
        }
        (None, None) => None,
    };
    let bearer_token = r.get(vars::AWS_BEARER_TOKEN_BEDROCK).map(Secret::new);
    if let Some(p) = providers.get_mut(BEDROCK) {
        if p.backends.is_empty() {
            p.backends.push(bedrock_runtime(&region));
        }
    }
    AwsConfig {
        region,
        keys,
        bearer_token,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, Config};
    use super::*;

    #[test]
    fn bedrock_is_enabled_by_any_of_its_credentials() {
        assert!(!Config::from_map(&env(&[]))
            .unwrap()
            .providers
            .contains_key("bedrock"));
        let c = Config::from_map(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_DEFAULT_REGION", "eu-west-3"),
        ]))
        .unwrap();
        let p = &c.providers["bedrock"];
        assert_eq!(p.format, "bedrock");
        assert_eq!(
            p.backends[0].to_string(),
            "https://bedrock-runtime.eu-west-3.amazonaws.com"
        );
        let keys = c.aws.keys.as_ref().unwrap();
        assert_eq!(keys.secret_access_key.expose(), "s3cr3t");
        assert_eq!(keys.session_token.as_ref().unwrap().expose(), "tok");
        assert!(!c.describe().contains("s3cr3t") && !c.describe().contains("AKIDEXAMPLE"));
        // AWS_REGION wins; the bearer token alone enables the provider.
        let c = Config::from_map(&env(&[
            ("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_DEFAULT_REGION", "eu-west-3"),
        ]))
        .unwrap();
        assert_eq!(c.aws.region, "us-west-2");
        assert_eq!(
            c.providers["bedrock"].backends[0].host,
            "bedrock-runtime.us-west-2.amazonaws.com"
        );
        // A base URL overrides the endpoint; the SDK's own variable works too.
        for var in ["BEDROCK_BASE_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] {
            let c = Config::from_map(&env(&[
                ("AWS_BEARER_TOKEN_BEDROCK", "k"),
                (var, "http://127.0.0.1:9000/"),
            ]))
            .unwrap();
            assert_eq!(
                c.providers["bedrock"].backends[0].to_string(),
                "http://127.0.0.1:9000",
                "{var}"
            );
            assert_eq!(c.aws.region, DEFAULT_REGION);
        }
        assert_eq!(
            region_of_host("bedrock-runtime.ap-south-1.amazonaws.com"),
            Some("ap-south-1")
        );
        assert_eq!(region_of_host("127.0.0.1"), None);
    }

    #[test]
    fn half_a_key_pair_or_a_bad_region_is_an_error_naming_the_variable() {
        let e = Config::from_map(&env(&[("AWS_ACCESS_KEY_ID", "AKID")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let e = Config::from_map(&env(&[("AWS_SECRET_ACCESS_KEY", "s")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_ACCESS_KEY_ID") && !e.contains("=s"), "{e}");
        let e = Config::from_map(&env(&[
            ("AWS_BEARER_TOKEN_BEDROCK", "k"),
            ("AWS_REGION", "US East"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("AWS_REGION"), "{e}");
    }
}
