//! Configuration: every environment variable the gateway reads, parsed once into a typed,
//! validated [`Config`].
//!
//! The parser reads from an injectable map ([`Config::from_map`]) so tests never touch the
//! process environment. All variables are parsed first and every error is reported at once,
//! each naming the variable and the bad value.
//!
//! This module is a leaf: nothing here imports another module of the gateway. Each feature's
//! variables, their parser, their types and their errors live in one file:
//!
//! - [`vars`]: every variable name, and the list of them all.
//! - [`providers`]: the built-in providers' table, custom hosts, base URLs, wire format names.
//! - [`routing`]: failover pool, weights, strategy, health checks, aliases, fallbacks.
//! - [`auth`]: gateway API keys (`GATEWAY_API_KEYS*`) and the keys file's syntax.
//! - [`ratelimit`]: default limits, per-key overrides, the limiter's backend.
//! - [`tls`]: the HTTPS listener's certificate and key, checked against each other.
//! - [`cache`]: the response cache's backend, TTL, scope and semantic layer.
//! - [`pricing`]: `GATEWAY_PRICES` overrides and the built-in price table they override.
//! - [`redis`]: how Redis is reached (one node, Cluster, Sentinel; TLS), for every feature.
//! - [`aws`]: AWS credentials and region, and Bedrock's regional endpoint.
//! - [`state`]: the state backend (`GATEWAY_STATE_BACKEND`) and the stored responses' TTL.
//! - [`vertex`]: Google Vertex AI's service account key file, project and location.
//! - [`tracing`]: OpenTelemetry traces (the standard `OTEL_*` variables).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub mod auth;
pub mod aws;
pub mod cache;
pub mod pricing;
pub mod providers;
pub mod ratelimit;
pub mod redis;
pub mod routing;
pub mod state;
pub mod tls;
pub mod tracing;
pub mod vars;
pub mod vertex;

pub use self::providers::{
    canonical_provider_name, enabling_variable, BaseUrl, HostFlavor, ProviderConfig,
    DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_GEMINI_BASE_URL, DEFAULT_HF_BASE_URL, DEFAULT_OLLAMA_HOST,
    DEFAULT_OPENAI_BASE_URL,
};
pub use self::routing::{pool_strategy_variable, PoolStrategy, RoutingConfig, Strategy};

pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/ai-gateway-upgrade.sock";
pub const DEFAULT_PID_FILE: &str = "/tmp/ai-gateway.pid";

/// A secret (provider key, gateway key). `Debug` and `Display` print `***`, so a key never
/// reaches a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to get at the value: name the call site.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Output format of the per-request log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `GATEWAY_MAX_CONNECTIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConnections {
    Auto,
    Off,
    At(usize),
}

impl MaxConnections {
    /// The limit for a process allowed `descriptors` open files (`None`: no limit).
    pub fn resolve(self, descriptors: u64) -> Option<usize> {
        match self {
            MaxConnections::Auto => {
                Some(usize::try_from(descriptors / 4 * 3).unwrap_or(usize::MAX))
            }
            MaxConnections::Off => None,
            MaxConnections::At(n) => Some(n),
        }
    }
}

/// The validated configuration. The rest of the code only sees this.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub threads: usize,
    pub max_body_bytes: usize,
    pub default_provider: Option<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Longest wait for the whole head of the first request on a new connection.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may stay idle (and then send its next head).
    pub keepalive_timeout: Duration,
    /// Longest a whole request may take, its answer included (`None`: no bound).
    pub request_timeout: Option<Duration>,
    /// Longest a client may take to send a request's body.
    pub body_timeout: Duration,
    /// Most client connections open at once: `Auto` is three quarters of the open-descriptor
    /// limit (the rest is for upstream connections and files), `Off` none.
    pub max_connections: MaxConnections,
    pub models_cache_ttl: Duration,
    pub echo_chunk_delay: Duration,
    pub anthropic_max_tokens: u32,
    /// Configured providers by name (`echo` always present).
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routing: RoutingConfig,
    pub cache: cache::CacheConfig,
    /// A second listener that serves only `/metrics` (then the main listener does not).
    pub metrics_listen: Option<String>,
    /// `GATEWAY_PRICES` entries, consulted before the built-in price table.
    pub prices: Vec<pricing::PriceOverride>,
    pub upgrade_sock: String,
    pub pid_file: String,
    /// Gateway API keys (`GATEWAY_API_KEYS*`).
    pub auth: auth::AuthConfig,
    /// Rate limits (`GATEWAY_RATE_LIMIT_*`, `GATEWAY_REDIS_URL`).
    pub rate_limit: ratelimit::RateLimitConfig,
    /// HTTPS on `GATEWAY_LISTEN`, or beside it on `GATEWAY_TLS_LISTEN` (see `tls`).
    pub tls: Option<tls::TlsConfig>,
    /// HTTP/2 with prior knowledge on the plain listener (`GATEWAY_H2C`).
    pub h2c: bool,
    /// The state backend (`GATEWAY_STATE_BACKEND`) and what it keeps.
    pub state: state::StateConfig,
    /// Google Vertex AI's service account, project and location, when `vertex` is configured.
    pub vertex: Option<vertex::VertexConfig>,
    /// How Redis is reached (`GATEWAY_REDIS_URL` and its companions), when it is set.
    pub redis: Option<redis::RedisConfig>,
    /// AWS credentials and region (`AWS_*`), for the `bedrock` format.
    pub aws: aws::AwsConfig,
    /// OpenTelemetry traces over OTLP (`None`: off).
    pub tracing: Option<tracing::TracingConfig>,
}

/// Every error found, one per line.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Parses a duration: `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| "expected a duration like 30s, 500ms, 2m".to_string())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err("duration must be non-negative".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration of at least 100ms, or `off` (also `0`, `false`, `no`): `None`. Used by the
/// variables that schedule something periodic (health checks, the keys file check).
pub fn parse_duration_or_off(v: &str) -> Result<Option<Duration>, String> {
    if matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "off" | "0" | "false" | "no"
    ) {
        return Ok(None);
    }
    let d = parse_duration(v)?;
    if d < Duration::from_millis(100) {
        return Err("use at least 100ms, or off".into());
    }
    Ok(Some(d))
}

/// `on`/`off` switches (also `true`/`false`, `1`/`0`, `yes`/`no`).
pub fn parse_switch(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// Reads variables and collects errors.
pub(crate) struct Reader<'a> {
    env: &'a HashMap<String, String>,
    pub errors: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(env: &'a HashMap<String, String>) -> Self {
        Reader {
            env,
            errors: Vec::new(),
        }
    }

    /// A non-empty, trimmed value.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.env
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    pub fn parse<T>(&mut self, name: &str, default: T, f: impl Fn(&str) -> Result<T, String>) -> T {
        match self.get(name) {
            None => default,
            Some(v) => match f(v) {
                Ok(t) => t,
                Err(e) => {
                    self.error(name, v, &e);
                    default
                }
            },
        }
    }

    pub fn duration(&mut self, name: &str, default: Duration) -> Duration {
        self.parse(name, default, parse_duration)
    }

    pub fn number<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        self.parse(name, default, |v| {
            v.parse::<T>()
                .map_err(|_| "expected a non-negative whole number".to_string())
        })
    }

    pub fn error(&mut self, name: &str, value: &str, why: &str) {
        // Values of secret variables are never echoed.
        let shown = if is_secret_var(name) { "***" } else { value };
        self.errors.push(format!("{name}={shown:?}: {why}"));
    }
}

fn is_secret_var(name: &str) -> bool {
    name.ends_with("_KEY")
        || name.ends_with("_TOKEN")
        || name.ends_with("_KEYS")
        || name.ends_with("_HEADERS")
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::from_map(&env)
    }

    /// Parses a map of variables (tests pass their own).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut r = Reader::new(env);
        let listen = r.parse(vars::LISTEN, "127.0.0.1:8080".to_string(), |v| {
            v.parse::<SocketAddr>()
                .map(|_| v.to_string())
                .map_err(|_| "expected ADDRESS:PORT, e.g. 127.0.0.1:8080 or [::1]:8080".into())
        });
        let tls = tls::read(&mut r, &listen);
        let h2c = r.parse(vars::H2C, false, parse_switch);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = r.parse(vars::THREADS, cores, |v| match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err("expected a whole number >= 1".into()),
        });
        let max_body_bytes = r.parse(vars::MAX_BODY_BYTES, 32 * 1024 * 1024, |v| {
            match v.parse::<usize>() {
                Ok(n) if n >= 1024 => Ok(n),
                _ => Err("expected a number of bytes >= 1024".into()),
            }
        });
        let log_level = r
            .get(vars::LOG_LEVEL)
            .or_else(|| r.get(vars::RUST_LOG))
            .unwrap_or("info")
            .to_string();
        let log_format = r.parse(vars::LOG_FORMAT, LogFormat::Text, |v| {
            match v.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            }
        });
        let connect_timeout = r.duration(vars::CONNECT_TIMEOUT, Duration::from_secs(5));
        let first_byte_timeout = r.duration(vars::FIRST_BYTE_TIMEOUT, Duration::from_secs(120));
        let idle_timeout = r.duration(vars::IDLE_TIMEOUT, Duration::from_secs(120));
        let shutdown_grace = r.duration(vars::SHUTDOWN_GRACE, Duration::from_secs(30));
        let header_timeout = r.duration(vars::HEADER_TIMEOUT, Duration::from_secs(30));
        let keepalive_timeout = r.duration(vars::KEEPALIVE_TIMEOUT, Duration::from_secs(60));
        let body_timeout = r.parse(vars::BODY_TIMEOUT, Duration::from_secs(60), |v| {
            parse_duration(v).and_then(|d| {
                if d < Duration::from_millis(100) {
                    Err("use at least 100ms".into())
                } else {
                    Ok(d)
                }
            })
        });
        let max_connections = r.parse(vars::MAX_CONNECTIONS, MaxConnections::Auto, |v| {
            match v.trim().to_ascii_lowercase().as_str() {
                "auto" => Ok(MaxConnections::Auto),
                "off" | "0" => Ok(MaxConnections::Off),
                n => match n.parse::<usize>() {
                    Ok(n) => Ok(MaxConnections::At(n)),
                    Err(_) => Err("expected a number of connections, auto or off".into()),
                },
            }
        });
        let request_timeout = r.parse(vars::REQUEST_TIMEOUT, None, |v| {
            parse_duration_or_off(v).map(|d| d.filter(|d| !d.is_zero()))
        });
        let models_cache_ttl = r.duration(vars::MODELS_CACHE_TTL, Duration::from_secs(60));
        let echo_chunk_delay = Duration::from_millis(r.number(vars::ECHO_CHUNK_DELAY_MS, 0u64));
        let anthropic_max_tokens = r.parse(vars::ANTHROPIC_MAX_TOKENS, 4096u32, |v| {
            match v.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err("expected a whole number >= 1".into()),
            }
        });

        let mut providers = providers::read(&mut r);
        let vertex = vertex::read(&mut r, &mut providers);
        let redis = redis::read(&mut r);
        let aws = aws::read(&mut r, &mut providers);
        let mut cache = cache::read(&mut r);
        cache.redis = redis.clone();
        let metrics_listen = r
            .get(vars::METRICS_LISTEN)
            .map(|v| match v.parse::<SocketAddr>() {
                Ok(_) if v == listen => Err("must differ from GATEWAY_LISTEN".to_string()),
                Ok(_) => Ok(v.to_string()),
                Err(_) => Err("expected ADDRESS:PORT, e.g. 127.0.0.1:9090".to_string()),
            });
        let metrics_listen = match metrics_listen {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                let v = r.get(vars::METRICS_LISTEN).unwrap_or_default();
                r.error(vars::METRICS_LISTEN, v, &e);
                None
            }
            None => None,
        };
        let prices = r.parse(vars::PRICES, Vec::new(), pricing::parse_overrides);
        let upgrade_sock = r
            .get(vars::UPGRADE_SOCK)
            .unwrap_or(DEFAULT_UPGRADE_SOCK)
            .to_string();
        let pid_file = r
            .get(vars::PID_FILE)
            .unwrap_or(DEFAULT_PID_FILE)
            .to_string();

        let default_provider = r
            .get(vars::DEFAULT_PROVIDER)
            .map(|s| s.to_ascii_lowercase());
        if let Some(dp) = &default_provider {
            let canonical = canonical_provider_name(dp);
            if !providers.contains_key(canonical) {
                let hint = enabling_variable(canonical);
                r.error(
                    vars::DEFAULT_PROVIDER,
                    dp,
                    &format!("provider {canonical:?} is not configured (set {hint})"),
                );
            }
        }
        let default_provider = default_provider.map(|d| canonical_provider_name(&d).to_string());
        let routing = routing::read(&mut r, &providers);
        let auth = auth::read(&mut r);
        let mut rate_limit = ratelimit::read(&mut r);
        rate_limit.redis = redis.clone();
        let mut state = state::read(&mut r);
        state.redis = redis.clone();
        let tracing = tracing::read(&mut r);

        if !r.errors.is_empty() {
            return Err(ConfigError(r.errors));
        }
        Ok(Config {
            listen,
            threads,
            max_body_bytes,
            default_provider,
            log_level,
            log_format,
            connect_timeout,
            first_byte_timeout,
            idle_timeout,
            shutdown_grace,
            header_timeout,
            keepalive_timeout,
            request_timeout,
            body_timeout,
            max_connections,
            models_cache_ttl,
            echo_chunk_delay,
            anthropic_max_tokens,
            providers,
            routing,
            cache,
            metrics_listen,
            prices,
            upgrade_sock,
            pid_file,
            auth,
            rate_limit,
            tls,
            h2c,
            state,
            vertex,
            redis,
            aws,
            tracing,
        })
    }
}

impl Config {
    /// The resolved configuration as text, secrets masked (for `--check-config`).
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "configuration OK");
        let _ = writeln!(s, "listen           {}", self.listen);
        if let Some(t) = &self.tls {
            let _ = writeln!(
                s,
                "tls              on {} cert={} key={}",
                t.listen.as_deref().unwrap_or(&self.listen),
                t.cert_path.display(),
                t.key_path.display()
            );
        }
        if self.h2c {
            let _ = writeln!(s, "h2c              on");
        }
        let _ = writeln!(s, "threads          {}", self.threads);
        let _ = writeln!(s, "max body bytes   {}", self.max_body_bytes);
        let _ = writeln!(
            s,
            "log              level={} format={}",
            self.log_level,
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
        );
        let _ = writeln!(
            s,
            "timeouts         connect={:?} first_byte={:?} idle={:?} shutdown_grace={:?} header={:?} keepalive={:?} body={:?} request={}",
            self.connect_timeout,
            self.first_byte_timeout,
            self.idle_timeout,
            self.shutdown_grace,
            self.header_timeout,
            self.keepalive_timeout,
            self.body_timeout,
            self.request_timeout
                .map_or("off".to_string(), |d| format!("{d:?}"))
        );
        let _ = writeln!(
            s,
            "connections      max={}",
            match self.max_connections {
                MaxConnections::Auto => "auto (3/4 of the open-descriptor limit)".to_string(),
                MaxConnections::Off => "off".to_string(),
                MaxConnections::At(n) => n.to_string(),
            }
        );
        let _ = writeln!(
            s,
            "default provider {}",
            self.default_provider.as_deref().unwrap_or("(none)")
        );
        let _ = writeln!(s, "cache            {}", self.cache.describe());
        let _ = writeln!(s, "api keys         {}", self.auth.describe());
        let _ = writeln!(s, "rate limits      {}", self.rate_limit.describe());
        let _ = writeln!(s, "state            {}", self.state.describe());
        if let Some(r) = &self.redis {
            let _ = writeln!(s, "redis            {}", r.describe());
        }
        let _ = writeln!(
            s,
            "tracing          {}",
            self.tracing
                .as_ref()
                .map_or("off".to_string(), |t| t.describe())
        );
        let _ = writeln!(s, "providers:");
        for p in self.providers.values() {
            let urls: Vec<String> = p.backends.iter().map(|b| b.to_string()).collect();
            let _ = write!(
                s,
                "  {:<12} format={} key={} default_model={} backends=[{}]",
                p.name,
                p.format,
                if p.api_key.is_some() { "***" } else { "(none)" },
                p.default_model.as_deref().unwrap_or("(none)"),
                urls.join(", ")
            );
            if p.backends.len() > 1 {
                let _ = write!(
                    s,
                    " pool_strategy={}",
                    self.routing.pool_strategy_for(p).as_str()
                );
            }
            let _ = writeln!(s);
        }
        if let Some(v) = &self.vertex {
            let _ = writeln!(
                s,
                "vertex           project={} location={} account={} token_uri={}",
                v.project, v.location, v.account.client_email, v.account.token_uri
            );
        }
        let _ = writeln!(
            s,
            "metrics          {}",
            match &self.metrics_listen {
                Some(a) => format!("http://{a}/metrics (separate listener)"),
                None => format!("http://{}/metrics", self.listen),
            }
        );
        let _ = writeln!(s, "prices           {}", pricing::describe(&self.prices));
        let _ = writeln!(
            s,
            "upgrade          sock={} pid_file={}",
            self.upgrade_sock, self.pid_file
        );
        s
    }
}

/// A variable map for tests (`Config::from_map` takes one).
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_env as env;
    use super::*;

    #[test]
    fn empty_environment_gives_a_working_config() {
        let c = Config::from_map(&env(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.providers.len(), 1);
        assert!(c.providers.contains_key("echo"));
    }

    #[test]
    fn every_error_is_reported_with_its_variable() {
        let e = Config::from_map(&env(&[
            ("GATEWAY_LISTEN", "nope"),
            ("GATEWAY_THREADS", "0"),
            ("GATEWAY_CONNECT_TIMEOUT", "5 parsecs"),
            ("OPENAI_BASE_URL", "ftp://x"),
        ]))
        .unwrap_err();
        let s = e.to_string();
        for v in [
            "GATEWAY_LISTEN",
            "GATEWAY_THREADS",
            "GATEWAY_CONNECT_TIMEOUT",
            "OPENAI_BASE_URL",
        ] {
            assert!(s.contains(v), "{s}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let c = Config::from_map(&env(&[("OPENAI_API_KEY", "sk-very-secret")])).unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }

    #[test]
    fn default_provider_must_be_configured() {
        let e = Config::from_map(&env(&[("GATEWAY_DEFAULT_PROVIDER", "vllm")])).unwrap_err();
        assert!(e.to_string().contains("VLLM_BASE_URL"));
        let c = Config::from_map(&env(&[("GATEWAY_DEFAULT_PROVIDER", "echo")])).unwrap();
        assert_eq!(c.default_provider.as_deref(), Some("echo"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn durations_or_off() {
        assert_eq!(parse_duration_or_off("off"), Ok(None));
        assert_eq!(parse_duration_or_off("0"), Ok(None));
        assert_eq!(parse_duration_or_off("No"), Ok(None));
        assert_eq!(
            parse_duration_or_off("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert!(parse_duration_or_off("50ms").is_err());
        assert!(parse_duration_or_off("soon").is_err());
    }

    #[test]
    fn switches() {
        assert_eq!(parse_switch("ON"), Ok(true));
        assert_eq!(parse_switch("off"), Ok(false));
        assert!(parse_switch("maybe").is_err());
    }
}
