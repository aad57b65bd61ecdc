//! Configuration: every environment variable the gateway reads, parsed once into a typed,
//! validated [`Config`].
//!
//! The parser reads from an injectable map ([`Config::from_map`]) so tests never touch the
//! process environment. All variables are parsed first and every error is reported at once,
//! each naming the variable and the bad value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Every variable name, in one place.
pub mod vars {
    pub const LISTEN: &str = "GATEWAY_LISTEN";
    pub const THREADS: &str = "GATEWAY_THREADS";
    pub const MAX_BODY_BYTES: &str = "GATEWAY_MAX_BODY_BYTES";
    pub const DEFAULT_PROVIDER: &str = "GATEWAY_DEFAULT_PROVIDER";
    pub const LOG_LEVEL: &str = "GATEWAY_LOG_LEVEL";
    pub const RUST_LOG: &str = "RUST_LOG";
    pub const LOG_FORMAT: &str = "GATEWAY_LOG_FORMAT";
    pub const CONNECT_TIMEOUT: &str = "GATEWAY_CONNECT_TIMEOUT";
    pub const FIRST_BYTE_TIMEOUT: &str = "GATEWAY_FIRST_BYTE_TIMEOUT";
    pub const IDLE_TIMEOUT: &str = "GATEWAY_IDLE_TIMEOUT";
    pub const SHUTDOWN_GRACE: &str = "GATEWAY_SHUTDOWN_GRACE";
    pub const MODELS_CACHE_TTL: &str = "GATEWAY_MODELS_CACHE_TTL";
    pub const ECHO_CHUNK_DELAY_MS: &str = "GATEWAY_ECHO_CHUNK_DELAY_MS";
    pub const TLS_CERT: &str = "GATEWAY_TLS_CERT";
    pub const TLS_KEY: &str = "GATEWAY_TLS_KEY";
    pub const TLS_LISTEN: &str = "GATEWAY_TLS_LISTEN";
    pub const H2C: &str = "GATEWAY_H2C";

    // Response cache (src/cache/).
    pub const CACHE_BACKEND: &str = "GATEWAY_CACHE_BACKEND";
    pub const CACHE_TTL: &str = "GATEWAY_CACHE_TTL";
    pub const CACHE_MAX_SIZE: &str = "GATEWAY_CACHE_MAX_SIZE";
    pub const CACHE_SCOPE: &str = "GATEWAY_CACHE_SCOPE";
    pub const CACHE_PREFIX: &str = "GATEWAY_CACHE_PREFIX";
    pub const SEMANTIC_CACHE: &str = "GATEWAY_SEMANTIC_CACHE";
    pub const SEMANTIC_CACHE_MODEL: &str = "GATEWAY_SEMANTIC_CACHE_MODEL";
    pub const SEMANTIC_CACHE_THRESHOLD: &str = "GATEWAY_SEMANTIC_CACHE_THRESHOLD";
    /// Shared by every feature that uses Redis (cache, rate limits).
    pub const REDIS_URL: &str = "GATEWAY_REDIS_URL";

    pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
    pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
    pub const OPENAI_DEFAULT_MODEL: &str = "OPENAI_DEFAULT_MODEL";
    pub const ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";
    pub const ANTHROPIC_BASE_URL: &str = "ANTHROPIC_BASE_URL";
    pub const ANTHROPIC_DEFAULT_MODEL: &str = "ANTHROPIC_DEFAULT_MODEL";
    pub const ANTHROPIC_MAX_TOKENS: &str = "GATEWAY_ANTHROPIC_MAX_TOKENS";
    pub const GEMINI_API_KEY: &str = "GEMINI_API_KEY";
    pub const GOOGLE_API_KEY: &str = "GOOGLE_API_KEY";
    pub const GEMINI_BASE_URL: &str = "GEMINI_BASE_URL";
    pub const GEMINI_DEFAULT_MODEL: &str = "GEMINI_DEFAULT_MODEL";
    pub const OLLAMA_HOST: &str = "OLLAMA_HOST";
    pub const OLLAMA_BASE_URL: &str = "OLLAMA_BASE_URL";
    pub const OLLAMA_DEFAULT_MODEL: &str = "OLLAMA_DEFAULT_MODEL";
    pub const VLLM_BASE_URL: &str = "VLLM_BASE_URL";
    pub const VLLM_API_KEY: &str = "VLLM_API_KEY";
    pub const VLLM_DEFAULT_MODEL: &str = "VLLM_DEFAULT_MODEL";
    pub const HF_TOKEN: &str = "HF_TOKEN";
    pub const HUGGINGFACE_API_KEY: &str = "HUGGINGFACE_API_KEY";
    pub const HF_BASE_URL: &str = "HF_BASE_URL";
    pub const HF_DEFAULT_MODEL: &str = "HF_DEFAULT_MODEL";
    pub const PROVIDERS: &str = "GATEWAY_PROVIDERS";
    pub const WEIGHTS: &str = "GATEWAY_WEIGHTS";
    pub const STRATEGY: &str = "GATEWAY_STRATEGY";
    pub const RETRY_MAX: &str = "GATEWAY_RETRY_MAX";
    pub const HEALTH_CHECK_INTERVAL: &str = "GATEWAY_HEALTH_CHECK_INTERVAL";
    pub const UNHEALTHY_COOLDOWN: &str = "GATEWAY_UNHEALTHY_COOLDOWN";
    pub const FAILURE_THRESHOLD: &str = "GATEWAY_FAILURE_THRESHOLD";
    pub const MODEL_ALIASES: &str = "GATEWAY_MODEL_ALIASES";
    pub const FALLBACK_MODELS: &str = "GATEWAY_FALLBACK_MODELS";
    /// `GATEWAY_PROVIDER_<NAME>_BASE_URL` / `_API_KEY` / `_DEFAULT_MODEL`.
    pub const PROVIDER_PREFIX: &str = "GATEWAY_PROVIDER_";

    pub const API_KEYS: &str = "GATEWAY_API_KEYS";
    pub const API_KEYS_FILE: &str = "GATEWAY_API_KEYS_FILE";
    pub const API_KEYS_RELOAD_INTERVAL: &str = "GATEWAY_API_KEYS_RELOAD_INTERVAL";
    pub const RATE_LIMIT_RPM: &str = "GATEWAY_RATE_LIMIT_RPM";
    pub const RATE_LIMIT_BURST: &str = "GATEWAY_RATE_LIMIT_BURST";
    pub const RATE_LIMIT_TPM: &str = "GATEWAY_RATE_LIMIT_TPM";
    pub const RATE_LIMIT_BACKEND: &str = "GATEWAY_RATE_LIMIT_BACKEND";
    pub const METRICS_LISTEN: &str = "GATEWAY_METRICS_LISTEN";
    pub const PRICES: &str = "GATEWAY_PRICES";
    pub const UPGRADE_SOCK: &str = "GATEWAY_UPGRADE_SOCK";
    pub const PID_FILE: &str = "GATEWAY_PID_FILE";

    /// Every variable the gateway reads, templates with `<NAME>` included. `conf/ai-gateway.env`
    /// must list exactly these (a test checks both directions): add a new variable here too.
    pub const ALL: &[&str] = &[
        LISTEN,
        THREADS,
        MAX_BODY_BYTES,
        DEFAULT_PROVIDER,
        LOG_LEVEL,
        RUST_LOG,
        LOG_FORMAT,
        CONNECT_TIMEOUT,
        FIRST_BYTE_TIMEOUT,
        IDLE_TIMEOUT,
        SHUTDOWN_GRACE,
        MODELS_CACHE_TTL,
        ECHO_CHUNK_DELAY_MS,
        TLS_CERT,
        TLS_KEY,
        TLS_LISTEN,
        H2C,
        METRICS_LISTEN,
        PRICES,
        UPGRADE_SOCK,
        PID_FILE,
        PROVIDERS,
        WEIGHTS,
        STRATEGY,
        RETRY_MAX,
        HEALTH_CHECK_INTERVAL,
        UNHEALTHY_COOLDOWN,
        FAILURE_THRESHOLD,
        MODEL_ALIASES,
        FALLBACK_MODELS,
        CACHE_BACKEND,
        CACHE_TTL,
        CACHE_MAX_SIZE,
        CACHE_SCOPE,
        CACHE_PREFIX,
        SEMANTIC_CACHE,
        SEMANTIC_CACHE_MODEL,
        SEMANTIC_CACHE_THRESHOLD,
        REDIS_URL,
        API_KEYS,
        API_KEYS_FILE,
        API_KEYS_RELOAD_INTERVAL,
        RATE_LIMIT_RPM,
        RATE_LIMIT_BURST,
        RATE_LIMIT_TPM,
        RATE_LIMIT_BACKEND,
        OPENAI_API_KEY,
        OPENAI_BASE_URL,
        OPENAI_DEFAULT_MODEL,
        ANTHROPIC_API_KEY,
        ANTHROPIC_BASE_URL,
        ANTHROPIC_DEFAULT_MODEL,
        ANTHROPIC_MAX_TOKENS,
        GEMINI_API_KEY,
        GOOGLE_API_KEY,
        GEMINI_BASE_URL,
        GEMINI_DEFAULT_MODEL,
        OLLAMA_HOST,
        OLLAMA_BASE_URL,
        OLLAMA_DEFAULT_MODEL,
        VLLM_BASE_URL,
        VLLM_API_KEY,
        VLLM_DEFAULT_MODEL,
        HF_TOKEN,
        HUGGINGFACE_API_KEY,
        HF_BASE_URL,
        HF_DEFAULT_MODEL,
        "GATEWAY_PROVIDER_<NAME>_BASE_URL",
        "GATEWAY_PROVIDER_<NAME>_API_KEY",
        "GATEWAY_PROVIDER_<NAME>_DEFAULT_MODEL",
    ];
}

pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/ai-gateway-upgrade.sock";
pub const DEFAULT_PID_FILE: &str = "/tmp/ai-gateway.pid";

pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_OLLAMA_HOST: &str = "http://localhost:11434";
pub const DEFAULT_HF_BASE_URL: &str = "https://router.huggingface.co/v1";

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

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireKind {
    /// OpenAI Chat Completions (OpenAI, vLLM, Ollama `/v1`, HF router/TGI, Groq, ...).
    OpenAi,
    Anthropic,
    Gemini,
    /// Built-in offline provider.
    Echo,
}

/// What kind of host this is: decides the health probe and small quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostFlavor {
    OpenAi,
    Anthropic,
    Gemini,
    Ollama,
    Vllm,
    HuggingFace,
    Custom,
    Echo,
}

/// One upstream base URL, split for the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without trailing slash, e.g. `/v1` or `` (empty).
    pub path: String,
}

impl BaseUrl {
    /// `host` or `host:port` when the port is not the scheme's default.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{}:{}", host, self.port)
        }
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{}://{}{}", scheme, self.authority(), self.path)
    }
}

/// How a base URL variable is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlStyle {
    /// OpenAI-style: includes the version path; no path at all gets `/v1`.
    OpenAi,
    /// Host root (Anthropic, Gemini SDKs): the path is kept as given.
    Root,
    /// Ollama `host:port`, scheme optional; the OpenAI API is at `/v1`.
    Ollama,
}

fn parse_base_url(raw: &str, style: UrlStyle) -> Result<BaseUrl, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty URL".into());
    }
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else if style == UrlStyle::Ollama {
        format!("http://{raw}")
    } else {
        return Err("URL needs a scheme (http:// or https://)".into());
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| format!("not a URL ({e})"))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err("URL has no host".into()),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let mut path = url.path().trim_end_matches('/').to_string();
    match style {
        UrlStyle::OpenAi if path.is_empty() => path = "/v1".into(),
        UrlStyle::Ollama => path = format!("{path}/v1"),
        _ => {}
    }
    if url.query().is_some() {
        return Err("URL must not carry a query string".into());
    }
    Ok(BaseUrl {
        tls,
        host,
        port,
        path,
    })
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Lower-case name used as the model prefix (`openai`, `groq`, ...).
    pub name: String,
    pub kind: WireKind,
    pub flavor: HostFlavor,
    /// One or more identical backends (a pool).
    pub backends: Vec<BaseUrl>,
    pub api_key: Option<Secret>,
    /// Model used when this provider serves a request as a fallback or for `auto`.
    pub default_model: Option<String>,
}

/// How candidates are ordered (`GATEWAY_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Random by weight (`GATEWAY_WEIGHTS`).
    Weighted,
    /// Strict order of `GATEWAY_PROVIDERS` (or of the alias).
    Priority,
    /// Lowest recent time to response head first, with some exploration.
    Latency,
    /// Cheapest per token first, from the price table.
    Cost,
}

/// Failover, load balancing and health settings.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// `GATEWAY_PROVIDERS`: the pool for `auto` and the failover order. Empty: no
    /// cross-provider failover unless `GATEWAY_FALLBACK_MODELS` says so.
    pub providers: Vec<String>,
    /// Weight per provider name (`GATEWAY_WEIGHTS`, aligned with `GATEWAY_PROVIDERS`).
    pub weights: BTreeMap<String, u32>,
    pub strategy: Strategy,
    /// Retries after the first attempt.
    pub retry_max: usize,
    /// `None`: active health checks off.
    pub health_check_interval: Option<Duration>,
    pub cooldown: Duration,
    pub failure_threshold: u32,
    /// `name -> [provider/model, ...]`.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// `model -> [provider/model, ...]` tried in order after the model's own provider.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

/// Output format of the per-request log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    pub models_cache_ttl: Duration,
    pub echo_chunk_delay: Duration,
    pub anthropic_max_tokens: u32,
    /// Configured providers by name (`echo` always present).
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routing: RoutingConfig,
    pub cache: crate::cache::config::CacheConfig,
    /// A second listener that serves only `/metrics` (then the main listener does not).
    pub metrics_listen: Option<String>,
    /// `GATEWAY_PRICES` entries, consulted before the built-in price table.
    pub prices: Vec<crate::pricing::PriceOverride>,
    pub upgrade_sock: String,
    pub pid_file: String,
    /// Gateway API keys (`GATEWAY_API_KEYS*`).
    pub auth: crate::auth::AuthConfig,
    /// Rate limits (`GATEWAY_RATE_LIMIT_*`, `GATEWAY_REDIS_URL`).
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// HTTPS on `GATEWAY_LISTEN`, or beside it on `GATEWAY_TLS_LISTEN` (see `tls`).
    pub tls: Option<crate::tls::TlsConfig>,
    /// HTTP/2 with prior knowledge on the plain listener (`GATEWAY_H2C`).
    pub h2c: bool,
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
    name.ends_with("_KEY") || name.ends_with("_TOKEN") || name.ends_with("_KEYS")
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
        let tls = crate::tls::read_config(&mut r, &listen);
        let h2c = r.parse(vars::H2C, false, crate::tls::parse_switch);
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
        let models_cache_ttl = r.duration(vars::MODELS_CACHE_TTL, Duration::from_secs(60));
        let echo_chunk_delay = Duration::from_millis(r.number(vars::ECHO_CHUNK_DELAY_MS, 0u64));
        let anthropic_max_tokens = r.parse(vars::ANTHROPIC_MAX_TOKENS, 4096u32, |v| {
            match v.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err("expected a whole number >= 1".into()),
            }
        });

        let providers = read_providers(&mut r);
        let cache = crate::cache::config::read(&mut r);
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
        let prices = r.parse(vars::PRICES, Vec::new(), crate::pricing::parse_overrides);
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
        let routing = read_routing(&mut r, &providers);
        let auth = crate::auth::read_config(&mut r);
        let rate_limit = crate::ratelimit::read_config(&mut r);

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
            "log              level={} format={:?}",
            self.log_level, self.log_format
        );
        let _ = writeln!(
            s,
            "timeouts         connect={:?} first_byte={:?} idle={:?} shutdown_grace={:?}",
            self.connect_timeout, self.first_byte_timeout, self.idle_timeout, self.shutdown_grace
        );
        let _ = writeln!(
            s,
            "default provider {}",
            self.default_provider.as_deref().unwrap_or("(none)")
        );
        let _ = writeln!(s, "cache            {}", self.cache.describe());
        let _ = writeln!(s, "api keys         {}", self.auth.describe());
        let _ = writeln!(s, "rate limits      {}", self.rate_limit.describe());
        let _ = writeln!(s, "providers:");
        for p in self.providers.values() {
            let urls: Vec<String> = p.backends.iter().map(|b| b.to_string()).collect();
            let _ = writeln!(
                s,
                "  {:<12} format={:?} key={} default_model={} backends=[{}]",
                p.name,
                p.kind,
                if p.api_key.is_some() { "***" } else { "(none)" },
                p.default_model.as_deref().unwrap_or("(none)"),
                urls.join(", ")
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
        let _ = writeln!(
            s,
            "prices           {}",
            crate::pricing::describe(&self.prices)
        );
        let _ = writeln!(
            s,
            "upgrade          sock={} pid_file={}",
            self.upgrade_sock, self.pid_file
        );
        s
    }
}

/// Checks that `provider/model` names a configured provider.
fn check_model_ref(
    r: &mut Reader,
    var: &str,
    m: &str,
    providers: &BTreeMap<String, ProviderConfig>,
) -> bool {
    let Some((p, model)) = m.split_once('/') else {
        r.error(var, m, "each model must be written provider/model");
        return false;
    };
    let name = canonical_provider_name(&p.to_ascii_lowercase()).to_string();
    if model.is_empty() {
        r.error(var, m, "model name missing after the provider");
        return false;
    }
    if !providers.contains_key(&name) {
        let hint = enabling_variable(&name);
        r.error(
            var,
            m,
            &format!("provider {name:?} is not configured (set {hint})"),
        );
        return false;
    }
    true
}

/// `name=provider/model|provider/model` entries separated by `;` or `,`.
fn read_model_map(
    r: &mut Reader,
    var: &str,
    providers: &BTreeMap<String, ProviderConfig>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(raw) = r.get(var) else {
        return out;
    };
    for entry in raw
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some((name, members)) = entry.split_once('=') else {
            r.error(var, entry, "expected name=provider/model|provider/model");
            continue;
        };
        let members: Vec<String> = members
            .split('|')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        if members.is_empty() {
            r.error(var, entry, "no models after '='");
            continue;
        }
        let ok = members
            .iter()
            .all(|m| check_model_ref(r, var, m, providers));
        if ok {
            out.insert(name.trim().to_string(), members);
        }
    }
    out
}

fn read_routing(r: &mut Reader, providers: &BTreeMap<String, ProviderConfig>) -> RoutingConfig {
    let mut names = Vec::new();
    if let Some(raw) = r.get(vars::PROVIDERS) {
        for p in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let name = canonical_provider_name(&p.to_ascii_lowercase()).to_string();
            if !providers.contains_key(&name) {
                let hint = enabling_variable(&name);
                r.error(
                    vars::PROVIDERS,
                    p,
                    &format!("provider {name:?} is not configured (set {hint})"),
                );
            } else if names.contains(&name) {
                r.error(vars::PROVIDERS, p, "listed twice");
            } else {
                names.push(name);
            }
        }
    }
    let mut weights = BTreeMap::new();
    if let Some(raw) = r.get(vars::WEIGHTS) {
        let parsed: Result<Vec<u32>, _> = raw.split(',').map(|w| w.trim().parse::<u32>()).collect();
        match parsed {
            Err(_) => r.error(vars::WEIGHTS, raw, "expected comma-separated whole numbers"),
            Ok(ws) if r.get(vars::PROVIDERS).is_none() => {
                let _ = ws;
                r.error(
                    vars::WEIGHTS,
                    raw,
                    "weights need GATEWAY_PROVIDERS (one weight per provider, same order)",
                );
            }
            Ok(ws) if ws.len() != names.len() => r.error(
                vars::WEIGHTS,
                raw,
                &format!(
                    "{} weights for {} providers in GATEWAY_PROVIDERS",
                    ws.len(),
                    names.len()
                ),
            ),
            Ok(ws) if ws.iter().all(|w| *w == 0) => {
                r.error(vars::WEIGHTS, raw, "at least one weight must be above 0")
            }
            Ok(ws) => {
                for (n, w) in names.iter().zip(ws) {
                    weights.insert(n.clone(), w);
                }
            }
        }
    }
    let strategy = r.parse(vars::STRATEGY, Strategy::Weighted, |v| {
        match v.to_ascii_lowercase().as_str() {
            "weighted" => Ok(Strategy::Weighted),
            "priority" => Ok(Strategy::Priority),
            "latency" => Ok(Strategy::Latency),
            "cost" => Ok(Strategy::Cost),
            _ => Err("expected weighted, priority, latency or cost".into()),
        }
    });
    let retry_max = r.number(vars::RETRY_MAX, 3usize);
    let interval = r.parse(
        vars::HEALTH_CHECK_INTERVAL,
        Some(Duration::from_secs(30)),
        |v| {
            if matches!(
                v.to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            ) {
                return Ok(None);
            }
            let d = parse_duration(v)?;
            if d < Duration::from_millis(100) {
                return Err("use at least 100ms, or off".into());
            }
            Ok(Some(d))
        },
    );
    let cooldown = r.duration(vars::UNHEALTHY_COOLDOWN, Duration::from_secs(30));
    let failure_threshold = r.parse(vars::FAILURE_THRESHOLD, 1u32, |v| match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number >= 1".into()),
    });
    let aliases = read_model_map(r, vars::MODEL_ALIASES, providers);
    let fallbacks = read_model_map(r, vars::FALLBACK_MODELS, providers);
    RoutingConfig {
        providers: names,
        weights,
        strategy,
        retry_max,
        health_check_interval: interval,
        cooldown,
        failure_threshold,
        aliases,
        fallbacks,
    }
}

/// Maps aliases to the canonical provider name (`google` and `gemini`, `hf` and `huggingface`).
pub fn canonical_provider_name(name: &str) -> &str {
    match name {
        "gemini" => "google",
        "hf" => "huggingface",
        other => other,
    }
}

/// Which variable enables a provider (for `model_not_found` messages).
pub fn enabling_variable(name: &str) -> String {
    match name {
        "openai" => "OPENAI_API_KEY or OPENAI_BASE_URL".into(),
        "anthropic" => "ANTHROPIC_API_KEY".into(),
        "google" => "GEMINI_API_KEY (or GOOGLE_API_KEY)".into(),
        "ollama" => "OLLAMA_HOST or OLLAMA_BASE_URL".into(),
        "vllm" => "VLLM_BASE_URL".into(),
        "huggingface" => "HF_TOKEN (or HUGGINGFACE_API_KEY) or HF_BASE_URL".into(),
        other => format!(
            "{}{}_BASE_URL",
            vars::PROVIDER_PREFIX,
            other.to_ascii_uppercase().replace('-', "_")
        ),
    }
}

/// Names that are built in: known even when not configured.
pub const BUILTIN_PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "gemini",
    "ollama",
    "vllm",
    "huggingface",
    "hf",
    "echo",
];

fn read_urls(r: &mut Reader, name: &str, raw: &str, style: UrlStyle) -> Vec<BaseUrl> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match parse_base_url(part, style) {
            Ok(u) => out.push(u),
            Err(e) => r.error(name, part, &e),
        }
    }
    if out.is_empty() && r.errors.is_empty() {
        r.error(name, raw, "no URL given");
    }
    out
}

fn read_providers(r: &mut Reader) -> BTreeMap<String, ProviderConfig> {
    let mut providers = BTreeMap::new();
    let mut add = |p: ProviderConfig| {
        providers.insert(p.name.clone(), p);
    };

    add(ProviderConfig {
        name: "echo".into(),
        kind: WireKind::Echo,
        flavor: HostFlavor::Echo,
        backends: Vec::new(),
        api_key: None,
        default_model: Some("echo".into()),
    });

    let key = r.get(vars::OPENAI_API_KEY).map(Secret::new);
    let base = r.get(vars::OPENAI_BASE_URL);
    if key.is_some() || base.is_some() {
        let backends = read_urls(
            r,
            vars::OPENAI_BASE_URL,
            base.unwrap_or(DEFAULT_OPENAI_BASE_URL),
            UrlStyle::OpenAi,
        );
        add(ProviderConfig {
            name: "openai".into(),
            kind: WireKind::OpenAi,
            flavor: HostFlavor::OpenAi,
            backends,
            api_key: key,
            default_model: Some(
                r.get(vars::OPENAI_DEFAULT_MODEL)
                    .unwrap_or("gpt-4o-mini")
                    .to_string(),
            ),
        });
    }

    let key = r.get(vars::ANTHROPIC_API_KEY).map(Secret::new);
    let base = r.get(vars::ANTHROPIC_BASE_URL);
    if key.is_some() || base.is_some() {
        let backends = read_urls(
            r,
            vars::ANTHROPIC_BASE_URL,
            base.unwrap_or(DEFAULT_ANTHROPIC_BASE_URL),
            UrlStyle::Root,
        );
        add(ProviderConfig {
            name: "anthropic".into(),
            kind: WireKind::Anthropic,
            flavor: HostFlavor::Anthropic,
            backends,
            api_key: key,
            default_model: Some(
                r.get(vars::ANTHROPIC_DEFAULT_MODEL)
                    .unwrap_or("claude-3-5-haiku-latest")
                    .to_string(),
            ),
        });
    }

    let key = r
        .get(vars::GEMINI_API_KEY)
        .or_else(|| r.get(vars::GOOGLE_API_KEY))
        .map(Secret::new);
    let base = r.get(vars::GEMINI_BASE_URL);
    if key.is_some() || base.is_some() {
        let backends = read_urls(
            r,
            vars::GEMINI_BASE_URL,
            base.unwrap_or(DEFAULT_GEMINI_BASE_URL),
            UrlStyle::Root,
        );
        add(ProviderConfig {
            name: "google".into(),
            kind: WireKind::Gemini,
            flavor: HostFlavor::Gemini,
            backends,
            api_key: key,
            default_model: Some(
                r.get(vars::GEMINI_DEFAULT_MODEL)
                    .unwrap_or("gemini-2.0-flash")
                    .to_string(),
            ),
        });
    }

    // Ollama is enabled only when one of its variables is set: a default-on provider that is
    // not running would only add a dead failover candidate and a failing health check.
    let ollama = r
        .get(vars::OLLAMA_BASE_URL)
        .map(|v| (vars::OLLAMA_BASE_URL, v, UrlStyle::OpenAi))
        .or_else(|| {
            r.get(vars::OLLAMA_HOST)
                .map(|v| (vars::OLLAMA_HOST, v, UrlStyle::Ollama))
        });
    if let Some((name, raw, style)) = ollama {
        let backends = read_urls(r, name, raw, style);
        add(ProviderConfig {
            name: "ollama".into(),
            kind: WireKind::OpenAi,
            flavor: HostFlavor::Ollama,
            backends,
            api_key: None,
            default_model: r.get(vars::OLLAMA_DEFAULT_MODEL).map(str::to_string),
        });
    }

    if let Some(raw) = r.get(vars::VLLM_BASE_URL) {
        let backends = read_urls(r, vars::VLLM_BASE_URL, raw, UrlStyle::OpenAi);
        add(ProviderConfig {
            name: "vllm".into(),
            kind: WireKind::OpenAi,
            flavor: HostFlavor::Vllm,
            backends,
            api_key: r.get(vars::VLLM_API_KEY).map(Secret::new),
            default_model: r.get(vars::VLLM_DEFAULT_MODEL).map(str::to_string),
        });
    }

    let key = r
        .get(vars::HF_TOKEN)
        .or_else(|| r.get(vars::HUGGINGFACE_API_KEY))
        .map(Secret::new);
    let base = r.get(vars::HF_BASE_URL);
    if key.is_some() || base.is_some() {
        let backends = read_urls(
            r,
            vars::HF_BASE_URL,
            base.unwrap_or(DEFAULT_HF_BASE_URL),
            UrlStyle::OpenAi,
        );
        add(ProviderConfig {
            name: "huggingface".into(),
            kind: WireKind::OpenAi,
            flavor: HostFlavor::HuggingFace,
            backends,
            api_key: key,
            default_model: r.get(vars::HF_DEFAULT_MODEL).map(str::to_string),
        });
    }

    // Any other OpenAI-compatible host: GATEWAY_PROVIDER_<NAME>_BASE_URL (+ _API_KEY).
    let mut custom: Vec<(String, String)> = r
        .env
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(vars::PROVIDER_PREFIX)?;
            let name = rest.strip_suffix("_BASE_URL")?;
            Some((name.to_string(), v.clone()))
        })
        .collect();
    custom.sort();
    for (upper, raw) in custom {
        let name = upper.to_ascii_lowercase().replace('_', "-");
        let var = format!("{}{}_BASE_URL", vars::PROVIDER_PREFIX, upper);
        if name.is_empty() || BUILTIN_PROVIDERS.contains(&name.as_str()) {
            r.error(&var, &raw, "this name is built in; use its own variables");
            continue;
        }
        let backends = read_urls(r, &var, &raw, UrlStyle::OpenAi);
        let key = r
            .get(&format!("{}{}_API_KEY", vars::PROVIDER_PREFIX, upper))
            .map(Secret::new);
        let default_model = r
            .get(&format!("{}{}_DEFAULT_MODEL", vars::PROVIDER_PREFIX, upper))
            .map(str::to_string);
        add(ProviderConfig {
            name,
            kind: WireKind::OpenAi,
            flavor: HostFlavor::Custom,
            backends,
            api_key: key,
            default_model,
        });
    }
    providers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_environment_gives_a_working_config() {
        let c = Config::from_map(&env(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.providers.len(), 1);
        assert!(c.providers.contains_key("echo"));
    }

    #[test]
    fn base_urls_follow_sdk_conventions() {
        let c = Config::from_map(&env(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:9000"),
            (
                "VLLM_BASE_URL",
                "http://10.0.0.5:8000/v1/,http://10.0.0.6:8000",
            ),
            ("OLLAMA_HOST", "localhost:11434"),
            ("ANTHROPIC_API_KEY", "k"),
            ("GEMINI_BASE_URL", "http://127.0.0.1:7000/"),
            (
                "GATEWAY_PROVIDER_GROQ_BASE_URL",
                "https://api.groq.com/openai/v1/",
            ),
        ]))
        .unwrap();
        assert_eq!(
            c.providers["openai"].backends[0].to_string(),
            "http://127.0.0.1:9000/v1"
        );
        let v = &c.providers["vllm"].backends;
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].path, "/v1");
        assert_eq!(v[1].path, "/v1");
        assert_eq!(
            c.providers["ollama"].backends[0].to_string(),
            "http://localhost:11434/v1"
        );
        assert_eq!(
            c.providers["anthropic"].backends[0].to_string(),
            "https://api.anthropic.com"
        );
        assert_eq!(c.providers["google"].backends[0].path, "");
        assert_eq!(
            c.providers["groq"].backends[0].to_string(),
            "https://api.groq.com/openai/v1"
        );
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
}
