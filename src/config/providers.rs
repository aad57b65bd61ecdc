//! Providers: the built-in vendors (one row each in [`BUILTINS`]), custom hosts
//! (`GATEWAY_PROVIDER_<NAME>_*`), their base URLs and keys.
//!
//! A provider's wire format is data here (`ProviderConfig::format`, a lower-case name such as
//! `openai` or `anthropic`): configuration cannot know which formats the gateway implements,
//! so it only checks the name's shape; `providers::check` refuses names no codec answers to.

use std::collections::BTreeMap;
use std::fmt;

use super::{vars, Reader, Secret};

pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_OLLAMA_HOST: &str = "http://localhost:11434";
pub const DEFAULT_HF_BASE_URL: &str = "https://router.huggingface.co/v1";

/// The wire format of Azure OpenAI (`providers/azure.rs`): OpenAI's bodies on Azure's paths.
pub const AZURE_FORMAT: &str = "azure";

/// The wire format of a custom provider when `GATEWAY_PROVIDER_<NAME>_FORMAT` is not set.
pub const DEFAULT_CUSTOM_FORMAT: &str = "openai";

/// What kind of host this is: decides the health probe and small quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostFlavor {
    OpenAi,
    Anthropic,
    Gemini,
    Ollama,
    Vllm,
    HuggingFace,
    Azure,
    Custom,
    Echo,
    Vertex,
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
pub enum UrlStyle {
    /// OpenAI-style: includes the version path; no path at all gets `/v1`.
    OpenAi,
    /// Host root (Anthropic, Gemini SDKs): the path is kept as given.
    Root,
    /// Ollama `host:port`, scheme optional; the OpenAI API is at `/v1`.
    Ollama,
}

pub(super) fn parse_base_url(raw: &str, style: UrlStyle) -> Result<BaseUrl, String> {
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
    /// The wire format the host speaks, a lower-case name (`openai`, `anthropic`, `gemini`,
    /// `echo`, ...): the key of the provider codec that talks to it.
    pub format: String,
    pub flavor: HostFlavor,
    /// One or more identical backends (a pool).
    pub backends: Vec<BaseUrl>,
    pub api_key: Option<Secret>,
    /// Model used when this provider serves a request as a fallback or for `auto`.
    pub default_model: Option<String>,
    /// An OpenAI-compatible host that also speaks Anthropic Messages (`/messages` beside
    /// `/chat/completions`, as recent vLLM and Ollama do): Messages clients pass through.
    pub native_messages: bool,
    /// An OpenAI-compatible host that also speaks the OpenAI Responses API (`/responses`
    /// beside `/chat/completions`): Responses clients pass through. On by default for OpenAI.
    pub native_responses: bool,
    /// The API version a versioned API is called with (Azure's `api-version`, from
    /// `AZURE_OPENAI_API_VERSION` / `OPENAI_API_VERSION`, or `GATEWAY_PROVIDER_<NAME>_API_VERSION`).
    pub api_version: Option<String>,
    /// Whether the host lists its models (`<base URL>/models`): the listing in `/v1/models` and
    /// the no-token health probe. False for presets whose API has none (Perplexity, Cohere's
    /// compatibility API): they get no active probe, only the passive breaker.
    pub lists_models: bool,
}

/// The wire format name of the OpenAI Responses API (the `openai.responses` dialect's own).
pub const RESPONSES_FORMAT: &str = "openai-responses";

impl ProviderConfig {
    /// Whether the host speaks wire format `format` itself, so a client in that format passes
    /// through: its own format (Azure's chat is OpenAI's on the wire), Anthropic's when
    /// [`ProviderConfig::native_messages`], OpenAI Responses when
    /// [`ProviderConfig::native_responses`].
    pub fn speaks(&self, format: &str) -> bool {
        self.format == format
            || (format == "openai" && self.format == AZURE_FORMAT)
            || (self.native_messages && format == "anthropic")
            || (self.native_responses && format == RESPONSES_FORMAT)
    }
}

/// One built-in provider: its names, its format and the variables that configure it.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Canonical name, the model prefix (`google`).
    pub name: &'static str,
    /// Other prefixes that mean the same provider (`gemini`).
    pub aliases: &'static [&'static str],
    /// Wire format name (see [`ProviderConfig::format`]).
    pub format: &'static str,
    pub flavor: HostFlavor,
    /// Base URL variables, the first one set wins, each with how it is read. The first one's
    /// style also reads [`Builtin::default_base_url`], and errors in the default name it.
    pub base_url_vars: &'static [(&'static str, UrlStyle)],
    /// Used when the provider is enabled by its key alone.
    pub default_base_url: Option<&'static str>,
    /// Key variables, the first one set wins.
    pub key_vars: &'static [&'static str],
    /// Whether a key alone enables the provider (otherwise a base URL variable must be set).
    pub key_enables: bool,
    pub default_model_var: Option<&'static str>,
    /// The switch that makes Messages clients pass through (`VLLM_NATIVE_MESSAGES`).
    pub native_messages_var: Option<&'static str>,
    /// The switch that makes Responses clients pass through (`VLLM_NATIVE_RESPONSES`), and
    /// its value when not set (on for OpenAI itself).
    pub native_responses_var: Option<(&'static str, bool)>,
    /// The default model when its variable is not set.
    pub default_model: Option<&'static str>,
    /// Always configured, needing no variable at all (the offline `echo` provider).
    pub always: bool,
}

/// The built-in providers, one row each: a new OpenAI-compatible vendor is one more row.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "echo",
        aliases: &[],
        format: "echo",
        flavor: HostFlavor::Echo,
        base_url_vars: &[],
        default_base_url: None,
        key_vars: &[],
        key_enables: false,
        default_model_var: None,
        native_messages_var: None,
        native_responses_var: None,
        default_model: Some("echo"),
        always: true,
    },
    Builtin {
        name: "openai",
        aliases: &[],
        format: "openai",
        flavor: HostFlavor::OpenAi,
        base_url_vars: &[(vars::OPENAI_BASE_URL, UrlStyle::OpenAi)],
        default_base_url: Some(DEFAULT_OPENAI_BASE_URL),
        key_vars: &[vars::OPENAI_API_KEY],
        key_enables: true,
        default_model_var: Some(vars::OPENAI_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: Some((vars::OPENAI_NATIVE_RESPONSES, true)),
        default_model: Some("gpt-4o-mini"),
        always: false,
    },
    Builtin {
        name: "anthropic",
        aliases: &[],
        format: "anthropic",
        flavor: HostFlavor::Anthropic,
        base_url_vars: &[(vars::ANTHROPIC_BASE_URL, UrlStyle::Root)],
        default_base_url: Some(DEFAULT_ANTHROPIC_BASE_URL),
        key_vars: &[vars::ANTHROPIC_API_KEY],
        key_enables: true,
        default_model_var: Some(vars::ANTHROPIC_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: None,
        default_model: Some("claude-3-5-haiku-latest"),
        always: false,
    },
    Builtin {
        name: "google",
        aliases: &["gemini"],
        format: "gemini",
        flavor: HostFlavor::Gemini,
        base_url_vars: &[(vars::GEMINI_BASE_URL, UrlStyle::Root)],
        default_base_url: Some(DEFAULT_GEMINI_BASE_URL),
        key_vars: &[vars::GEMINI_API_KEY, vars::GOOGLE_API_KEY],
        key_enables: true,
        default_model_var: Some(vars::GEMINI_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: None,
        default_model: Some("gemini-2.0-flash"),
        always: false,
    },
    // Ollama is enabled only when one of its variables is set: a default-on provider that is
    // not running would only add a dead failover candidate and a failing health check.
    Builtin {
        name: "ollama",
        aliases: &[],
        format: "openai",
        flavor: HostFlavor::Ollama,
        base_url_vars: &[
            (vars::OLLAMA_BASE_URL, UrlStyle::OpenAi),
            (vars::OLLAMA_HOST, UrlStyle::Ollama),
        ],
        default_base_url: None,
        key_vars: &[],
        key_enables: false,
        default_model_var: Some(vars::OLLAMA_DEFAULT_MODEL),
        native_messages_var: Some(vars::OLLAMA_NATIVE_MESSAGES),
        native_responses_var: Some((vars::OLLAMA_NATIVE_RESPONSES, false)),
        default_model: None,
        always: false,
    },
    Builtin {
        name: "vllm",
        aliases: &[],
        format: "openai",
        flavor: HostFlavor::Vllm,
        base_url_vars: &[(vars::VLLM_BASE_URL, UrlStyle::OpenAi)],
        default_base_url: None,
        key_vars: &[vars::VLLM_API_KEY],
        key_enables: false,
        default_model_var: Some(vars::VLLM_DEFAULT_MODEL),
        native_messages_var: Some(vars::VLLM_NATIVE_MESSAGES),
        native_responses_var: Some((vars::VLLM_NATIVE_RESPONSES, false)),
        default_model: None,
        always: false,
    },
    Builtin {
        name: "huggingface",
        aliases: &["hf"],
        format: "openai",
        flavor: HostFlavor::HuggingFace,
        base_url_vars: &[(vars::HF_BASE_URL, UrlStyle::OpenAi)],
        default_base_url: Some(DEFAULT_HF_BASE_URL),
        key_vars: &[vars::HF_TOKEN, vars::HUGGINGFACE_API_KEY],
        key_enables: true,
        default_model_var: Some(vars::HF_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: Some((vars::HF_NATIVE_RESPONSES, false)),
        default_model: None,
        always: false,
    },
    // Google Vertex AI: the key file enables it; its default host depends on the location, so
    // `config::vertex` fills it in (with the project and the checked key file).
    Builtin {
        name: "vertex",
        aliases: &[],
        format: "vertex",
        flavor: HostFlavor::Vertex,
        base_url_vars: &[(vars::VERTEX_BASE_URL, UrlStyle::Root)],
        default_base_url: None,
        key_vars: &[vars::GOOGLE_APPLICATION_CREDENTIALS],
        key_enables: true,
        default_model_var: Some(vars::VERTEX_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: None,
        default_model: Some("gemini-2.0-flash"),
        always: false,
    },
    // Azure OpenAI: a resource's endpoint enables it (its key alone cannot: the endpoint is
    // the resource's own host). `azure/<deployment>`; the API version is read in `read_azure`.
    Builtin {
        name: "azure",
        aliases: &[],
        format: AZURE_FORMAT,
        flavor: HostFlavor::Azure,
        base_url_vars: &[(vars::AZURE_OPENAI_ENDPOINT, UrlStyle::Root)],
        default_base_url: None,
        key_vars: &[vars::AZURE_OPENAI_API_KEY],
        key_enables: false,
        default_model_var: Some(vars::AZURE_OPENAI_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: Some((vars::AZURE_OPENAI_NATIVE_RESPONSES, true)),
        default_model: None,
        always: false,
    },
    // AWS Bedrock: enabled by a Bedrock API key or an access key; without a base URL variable
    // the endpoint is the region's (`config::aws`, which also reads the secret and region).
    Builtin {
        name: "bedrock",
        aliases: &[],
        format: "bedrock",
        flavor: HostFlavor::Custom,
        base_url_vars: &[
            (vars::BEDROCK_BASE_URL, UrlStyle::Root),
            (vars::AWS_ENDPOINT_URL_BEDROCK_RUNTIME, UrlStyle::Root),
        ],
        default_base_url: None,
        key_vars: &[vars::AWS_BEARER_TOKEN_BEDROCK, vars::AWS_ACCESS_KEY_ID],
        key_enables: true,
        default_model_var: Some(vars::BEDROCK_DEFAULT_MODEL),
        native_messages_var: None,
        native_responses_var: None,
        default_model: None,
        always: false,
    },
];

/// One well-known OpenAI-compatible vendor, enabled by its own key variable alone: a default
/// for the custom-provider machinery (`GATEWAY_PROVIDER_<NAME>_*`, which still overrides any
/// part of it). Adding a vendor is one row of [`PRESETS`].
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// Lower-case name: the model prefix (`groq/...`) and what `X-Provider` shows.
    pub name: &'static str,
    /// The vendor's usual key variable; set, it enables the provider. Sent as
    /// `Authorization: Bearer`.
    pub key_var: &'static str,
    /// Overrides [`Preset::base_url`]; read like `OPENAI_BASE_URL` (the path as given, `/v1`
    /// when it has none). Set alone, it enables the provider too (a keyless proxy in front).
    pub base_url_var: &'static str,
    /// The base URL the vendor documents for OpenAI SDKs, used as given.
    pub base_url: &'static str,
    /// Bare model names routed here when this vendor is configured (`grok-4` -> xai): the
    /// name starts with one of these and has no `/`.
    pub detect: &'static [&'static str],
    /// Whether the API lists models at `<base URL>/models` (the no-token health probe).
    pub lists_models: bool,
}

/// The OpenAI-compatible vendors that work from their key variable alone.
#[rustfmt::skip]
pub const PRESETS: &[Preset] = &[
    Preset { name: "mistral", key_var: "MISTRAL_API_KEY", base_url_var: "MISTRAL_BASE_URL", base_url: "https://api.mistral.ai/v1", detect: &["mistral-", "codestral-", "ministral-", "magistral-", "pixtral-", "devstral-"], lists_models: true },
    Preset { name: "groq", key_var: "GROQ_API_KEY", base_url_var: "GROQ_BASE_URL", base_url: "https://api.groq.com/openai/v1", detect: &[], lists_models: true },
    Preset { name: "deepseek", key_var: "DEEPSEEK_API_KEY", base_url_var: "DEEPSEEK_BASE_URL", base_url: "https://api.deepseek.com", detect: &["deepseek-"], lists_models: true },
    Preset { name: "xai", key_var: "XAI_API_KEY", base_url_var: "XAI_BASE_URL", base_url: "https://api.x.ai/v1", detect: &["grok-"], lists_models: true },
    Preset { name: "together", key_var: "TOGETHER_API_KEY", base_url_var: "TOGETHER_BASE_URL", base_url: "https://api.together.xyz/v1", detect: &[], lists_models: true },
    Preset { name: "fireworks", key_var: "FIREWORKS_API_KEY", base_url_var: "FIREWORKS_BASE_URL", base_url: "https://api.fireworks.ai/inference/v1", detect: &[], lists_models: true },
    Preset { name: "openrouter", key_var: "OPENROUTER_API_KEY", base_url_var: "OPENROUTER_BASE_URL", base_url: "https://openrouter.ai/api/v1", detect: &[], lists_models: true },
    Preset { name: "cerebras", key_var: "CEREBRAS_API_KEY", base_url_var: "CEREBRAS_BASE_URL", base_url: "https://api.cerebras.ai/v1", detect: &[], lists_models: true },
    Preset { name: "perplexity", key_var: "PERPLEXITY_API_KEY", base_url_var: "PERPLEXITY_BASE_URL", base_url: "https://api.perplexity.ai", detect: &[], lists_models: false },
    Preset { name: "deepinfra", key_var: "DEEPINFRA_API_TOKEN", base_url_var: "DEEPINFRA_BASE_URL", base_url: "https://api.deepinfra.com/v1/openai", detect: &[], lists_models: true },
    Preset { name: "cohere", key_var: "COHERE_API_KEY", base_url_var: "COHERE_BASE_URL", base_url: "https://api.cohere.ai/compatibility/v1", detect: &["command-"], lists_models: false },
    Preset { name: "nvidia", key_var: "NVIDIA_API_KEY", base_url_var: "NVIDIA_BASE_URL", base_url: "https://integrate.api.nvidia.com/v1", detect: &[], lists_models: true },
];

/// The preset named `name`, if there is one.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset vendor a bare model name belongs to by its well-known prefix (`grok-4` -> xai),
/// whether configured or not; names with a `/` (`deepseek-ai/DeepSeek-R1`) belong to none.
pub fn detect_preset(model: &str) -> Option<&'static str> {
    if model.contains('/') {
        return None;
    }
    let m = model.to_ascii_lowercase();
    PRESETS
        .iter()
        .find(|p| p.detect.iter().any(|d| m.starts_with(d)))
        .map(|p| p.name)
}

/// The built-in row a name or alias belongs to.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS
        .iter()
        .find(|b| b.name == name || b.aliases.contains(&name))
}

/// Names that are built in (aliases included): known even when not configured.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS
        .iter()
        .flat_map(|b| std::iter::once(b.name).chain(b.aliases.iter().copied()))
}

/// Whether `name` (lower-case) is a built-in provider name or alias.
pub fn is_builtin(name: &str) -> bool {
    builtin(name).is_some()
}

/// Maps aliases to the canonical provider name (`google` and `gemini`, `hf` and `huggingface`).
pub fn canonical_provider_name(name: &str) -> &str {
    match builtin(name) {
        Some(b) => b.name,
        None => name,
    }
}

/// The upper-case part of a custom provider's variables (`together-ai` -> `TOGETHER_AI`).
fn custom_var_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Which variable enables a provider (for `model_not_found` messages).
pub fn enabling_variable(name: &str) -> String {
    if let Some(p) = preset(name) {
        return format!("{} (or {})", p.key_var, p.base_url_var);
    }
    let Some(b) = builtin(name).filter(|b| !b.always) else {
        return format!(
            "{}{}_BASE_URL",
            vars::PROVIDER_PREFIX,
            custom_var_name(name)
        );
    };
    let mut parts = Vec::new();
    if b.key_enables {
        if let Some((first, rest)) = b.key_vars.split_first() {
            let mut s = first.to_string();
            for k in rest {
                s.push_str(&format!(" (or {k})"));
            }
            parts.push(s);
        }
    }
    parts.extend(b.base_url_vars.iter().map(|(v, _)| v.to_string()));
    parts.join(" or ")
}

/// The variable that sets a custom provider's wire format (`GATEWAY_PROVIDER_<NAME>_FORMAT`).
pub fn format_variable(name: &str) -> String {
    format!("{}{}_FORMAT", vars::PROVIDER_PREFIX, custom_var_name(name))
}

/// How a custom host's base URL is read for its format: like the built-in provider of that
/// format (host root for `anthropic` and `gemini`), OpenAI-style otherwise.
fn url_style_for_format(format: &str) -> UrlStyle {
    BUILTINS
        .iter()
        .find(|b| b.format == format)
        .and_then(|b| b.base_url_vars.first())
        .map_or(UrlStyle::OpenAi, |(_, style)| *style)
}

/// A wire format name: non-empty, lower-case `[a-z0-9_-]`.
fn parse_format(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(v.to_string())
    } else {
        Err(
            "expected a lower-case wire format name ([a-z0-9_-]), e.g. openai, anthropic or gemini"
                .into(),
        )
    }
}

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

/// One built-in provider, if its variables enable it.
fn read_builtin(r: &mut Reader, b: &Builtin) -> Option<ProviderConfig> {
    let key = b.key_vars.iter().find_map(|v| r.get(v)).map(Secret::new);
    let base = b
        .base_url_vars
        .iter()
        .find_map(|(var, style)| r.get(var).map(|raw| (*var, raw, *style)));
    let base = match base {
        Some(found) => Some(found),
        None if b.always || (b.key_enables && key.is_some()) => {
            match (b.base_url_vars.first(), b.default_base_url) {
                (Some((var, style)), Some(url)) => Some((*var, url, *style)),
                _ => None,
            }
        }
        None => return None,
    };
    let backends = match base {
        Some((var, raw, style)) => read_urls(r, var, raw, style),
        None => Vec::new(),
    };
    let default_model = b
        .default_model_var
        .and_then(|v| r.get(v))
        .or(b.default_model)
        .map(str::to_string);
    let native_messages = match b.native_messages_var {
        Some(v) => r.parse(v, false, super::parse_switch),
        None => false,
    };
    let native_responses = match b.native_responses_var {
        Some((v, default)) => r.parse(v, default, super::parse_switch),
        None => false,
    };
    Some(ProviderConfig {
        name: b.name.into(),
        format: b.format.into(),
        flavor: b.flavor,
        backends,
        api_key: key,
        default_model,
        native_messages,
        native_responses,
        api_version: None,
        lists_models: true,
    })
}

pub(super) fn read(r: &mut Reader) -> BTreeMap<String, ProviderConfig> {
    let mut providers = BTreeMap::new();
    for b in BUILTINS {
        if let Some(p) = read_builtin(r, b) {
            providers.insert(p.name.clone(), p);
        }
    }
    if let Some(azure) = providers.get_mut("azure") {
        read_azure(r, azure);
    }

    // Any other host: GATEWAY_PROVIDER_<NAME>_BASE_URL (+ _API_KEY, _DEFAULT_MODEL, _FORMAT,
    // _NATIVE_MESSAGES, _NATIVE_RESPONSES, _API_VERSION); and the presets, enabled by their
    // own key (or base URL) variable, each a default the same variables override.
    let mut custom: BTreeMap<String, Option<String>> = r
        .env
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(vars::PROVIDER_PREFIX)?;
            let name = rest.strip_suffix("_BASE_URL")?;
            Some((name.to_string(), Some(v.clone())))
        })
        .collect();
    for p in PRESETS {
        if r.get(p.key_var).is_some() || r.get(p.base_url_var).is_some() {
            custom.entry(custom_var_name(p.name)).or_insert(None);
        }
    }
    for (upper, explicit) in custom {
        let name = upper.to_ascii_lowercase().replace('_', "-");
        if let Some(p) = read_custom(r, &name, &upper, explicit.as_deref()) {
            providers.insert(name, p);
        }
    }
    providers
}

/// Azure's API version: `AZURE_OPENAI_API_VERSION`, else `OPENAI_API_VERSION` (the official
/// SDK's). A dated version (`2024-10-21`, `2025-04-01-preview`) selects the deployment URLs;
/// none, or `v1`, the v1 API. Responses pass through by default where the API has them: the
/// v1 API, and dated versions from `2025-03-01-preview` on.
fn read_azure(r: &mut Reader, azure: &mut ProviderConfig) {
    let found = [vars::AZURE_OPENAI_API_VERSION, vars::OPENAI_API_VERSION]
        .iter()
        .find_map(|v| r.get(v).map(|raw| (*v, raw)));
    if let Some((var, raw)) = found {
        match parse_api_version(raw) {
            Ok(v) => azure.api_version = v,
            Err(e) => r.error(var, raw, &e),
        }
    }
    let dated_before_responses = azure
        .api_version
        .as_deref()
        .is_some_and(|v| v < "2025-03-01");
    if dated_before_responses && r.get(vars::AZURE_OPENAI_NATIVE_RESPONSES).is_none() {
        azure.native_responses = false;
    }
}

/// An `api-version`: a date with an optional suffix (`2024-10-21`, `2025-04-01-preview`), or
/// `v1` (read as none: the v1 API takes no version).
fn parse_api_version(raw: &str) -> Result<Option<String>, String> {
    if raw.eq_ignore_ascii_case("v1") {
        return Ok(None);
    }
    let b = raw.as_bytes();
    let dated = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && raw[10..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-');
    if dated {
        Ok(Some(raw.to_string()))
    } else {
        Err("expected an API version like 2024-10-21 or 2025-04-01-preview, or v1".into())
    }
}

/// One custom provider (`GATEWAY_PROVIDER_<UPPER>_*`), over its preset's defaults when `name`
/// is a preset's. `explicit`: the value of `GATEWAY_PROVIDER_<UPPER>_BASE_URL`, if set.
fn read_custom(
    r: &mut Reader,
    name: &str,
    upper: &str,
    explicit: Option<&str>,
) -> Option<ProviderConfig> {
    let var = |suffix: &str| format!("{}{}_{suffix}", vars::PROVIDER_PREFIX, upper);
    let preset = preset(name);
    if name.is_empty() || is_builtin(name) {
        let raw = explicit.unwrap_or_default();
        r.error(
            &var("BASE_URL"),
            raw,
            "this name is built in; use its own variables",
        );
        return None;
    }
    let format = r.parse(
        &var("FORMAT"),
        DEFAULT_CUSTOM_FORMAT.to_string(),
        parse_format,
    );
    let backends = match (explicit, preset) {
        (Some(raw), _) => read_urls(r, &var("BASE_URL"), raw, url_style_for_format(&format)),
        (None, Some(p)) => {
            if format != DEFAULT_CUSTOM_FORMAT {
                // The preset's URL is its OpenAI-compatible API; another format is another API.
                let why = format!("the {} format needs {}", format, var("BASE_URL"));
                r.error(&var("FORMAT"), &format, &why);
                return None;
            }
            match r.get(p.base_url_var) {
                Some(raw) => read_urls(r, p.base_url_var, raw, UrlStyle::OpenAi),
                None => read_urls(r, p.base_url_var, p.base_url, UrlStyle::Root),
            }
        }
        (None, None) => return None,
    };
    let key = r
        .get(&var("API_KEY"))
        .or_else(|| preset.and_then(|p| r.get(p.key_var)))
        .map(Secret::new);
    let default_model = r.get(&var("DEFAULT_MODEL")).map(str::to_string);
    let native_messages = r.parse(&var("NATIVE_MESSAGES"), false, super::parse_switch);
    let native_responses = r.parse(&var("NATIVE_RESPONSES"), false, super::parse_switch);
    let api_version = r.parse(&var("API_VERSION"), None, parse_api_version);
    Some(ProviderConfig {
        name: name.to_string(),
        format,
        flavor: HostFlavor::Custom,
        backends,
        api_key: key,
        default_model,
        native_messages,
        native_responses,
        api_version,
        lists_models: explicit.is_some() || preset.is_none_or(|p| p.lists_models),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, Config};
    use super::*;

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
    fn builtin_table_keeps_every_enabling_rule() {
        // A key alone enables openai, anthropic, google (either key) and huggingface (either
        // token), with the default base URL and default model.
        for (var, name, url) in [
            ("OPENAI_API_KEY", "openai", DEFAULT_OPENAI_BASE_URL),
            ("ANTHROPIC_API_KEY", "anthropic", DEFAULT_ANTHROPIC_BASE_URL),
            ("GEMINI_API_KEY", "google", DEFAULT_GEMINI_BASE_URL),
            ("GOOGLE_API_KEY", "google", DEFAULT_GEMINI_BASE_URL),
            ("HF_TOKEN", "huggingface", DEFAULT_HF_BASE_URL),
            ("HUGGINGFACE_API_KEY", "huggingface", DEFAULT_HF_BASE_URL),
        ] {
            let c = Config::from_map(&env(&[(var, "k")])).unwrap();
            let p = &c.providers[name];
            assert_eq!(p.backends[0].to_string(), url, "{var}");
            assert_eq!(p.api_key.as_ref().map(Secret::expose), Some("k"), "{var}");
        }
        let c =
            Config::from_map(&env(&[("GEMINI_API_KEY", "g"), ("GOOGLE_API_KEY", "o")])).unwrap();
        assert_eq!(c.providers["google"].api_key, Some(Secret::new("g")));
        assert_eq!(
            c.providers["google"].default_model.as_deref(),
            Some("gemini-2.0-flash")
        );
        // A vLLM key alone does not enable vllm; its base URL does, and takes the key.
        let c = Config::from_map(&env(&[("VLLM_API_KEY", "k")])).unwrap();
        assert!(!c.providers.contains_key("vllm"));
        let c = Config::from_map(&env(&[
            ("VLLM_API_KEY", "k"),
            ("VLLM_BASE_URL", "http://127.0.0.1:8000"),
        ]))
        .unwrap();
        assert_eq!(c.providers["vllm"].api_key, Some(Secret::new("k")));
        assert_eq!(c.providers["vllm"].default_model, None);
        // OLLAMA_BASE_URL wins over OLLAMA_HOST.
        let c = Config::from_map(&env(&[
            ("OLLAMA_HOST", "10.0.0.1:11434"),
            ("OLLAMA_BASE_URL", "http://10.0.0.2:11434/v1"),
            ("OLLAMA_DEFAULT_MODEL", "llama3"),
        ]))
        .unwrap();
        let o = &c.providers["ollama"];
        assert_eq!(o.backends[0].to_string(), "http://10.0.0.2:11434/v1");
        assert_eq!(o.default_model.as_deref(), Some("llama3"));
        assert_eq!(
            (o.format.as_str(), o.flavor),
            ("openai", HostFlavor::Ollama)
        );
        assert_eq!(c.providers["echo"].format, "echo");
        // Names and aliases.
        assert_eq!(canonical_provider_name("gemini"), "google");
        assert_eq!(canonical_provider_name("hf"), "huggingface");
        assert_eq!(canonical_provider_name("groq"), "groq");
        let names: Vec<&str> = builtin_names().collect();
        for n in [
            "openai",
            "anthropic",
            "google",
            "gemini",
            "ollama",
            "vllm",
            "huggingface",
            "hf",
            "echo",
            "vertex",
            "azure",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        assert_eq!(names.len(), 12);
        assert_eq!(
            enabling_variable("openai"),
            "OPENAI_API_KEY or OPENAI_BASE_URL"
        );
        assert_eq!(
            enabling_variable("huggingface"),
            "HF_TOKEN (or HUGGINGFACE_API_KEY) or HF_BASE_URL"
        );
        assert_eq!(enabling_variable("vllm"), "VLLM_BASE_URL");
        assert!(enabling_variable("ollama").contains("OLLAMA_HOST"));
        assert!(enabling_variable("google").starts_with("GEMINI_API_KEY (or GOOGLE_API_KEY)"));
        assert_eq!(
            enabling_variable("together-ai"),
            "GATEWAY_PROVIDER_TOGETHER_AI_BASE_URL"
        );
    }

    #[test]
    fn custom_provider_format() {
        // Default: OpenAI, OpenAI-style URL (`/v1` added).
        let c = Config::from_map(&env(&[(
            "GATEWAY_PROVIDER_GROQ_BASE_URL",
            "https://api.groq.com",
        )]))
        .unwrap();
        let g = &c.providers["groq"];
        assert_eq!(g.format, "openai");
        assert_eq!(g.flavor, HostFlavor::Custom);
        assert_eq!(g.backends[0].to_string(), "https://api.groq.com/v1");
        // Anthropic: the host root, path kept as given.
        let c = Config::from_map(&env(&[
            (
                "GATEWAY_PROVIDER_MYCLAUDE_BASE_URL",
                "http://127.0.0.1:9000",
            ),
            ("GATEWAY_PROVIDER_MYCLAUDE_FORMAT", "anthropic"),
        ]))
        .unwrap();
        let m = &c.providers["myclaude"];
        assert_eq!(m.format, "anthropic");
        assert_eq!(m.backends[0].to_string(), "http://127.0.0.1:9000");
        let c = Config::from_map(&env(&[
            ("GATEWAY_PROVIDER_MYGEM_BASE_URL", "http://127.0.0.1:9000/"),
            ("GATEWAY_PROVIDER_MYGEM_FORMAT", "gemini"),
        ]))
        .unwrap();
        assert_eq!(c.providers["mygem"].backends[0].path, "");
        // Config checks only the shape of the name; which names exist is the providers' call.
        let c = Config::from_map(&env(&[
            ("GATEWAY_PROVIDER_X_BASE_URL", "http://127.0.0.1:9000"),
            ("GATEWAY_PROVIDER_X_FORMAT", "bedrock-converse"),
        ]))
        .unwrap();
        assert_eq!(c.providers["x"].format, "bedrock-converse");
        for bad in ["Anthropic", "open ai", "gemini!"] {
            let e = Config::from_map(&env(&[
                ("GATEWAY_PROVIDER_X_BASE_URL", "http://127.0.0.1:9000"),
                ("GATEWAY_PROVIDER_X_FORMAT", bad),
            ]))
            .unwrap_err()
            .to_string();
            assert!(e.contains("GATEWAY_PROVIDER_X_FORMAT"), "{bad}: {e}");
        }
        assert_eq!(
            format_variable("together-ai"),
            "GATEWAY_PROVIDER_TOGETHER_AI_FORMAT"
        );
    }

    #[test]
    fn native_responses_switches() {
        let c = Config::from_map(&env(&[
            ("OPENAI_API_KEY", "k"),
            ("VLLM_BASE_URL", "http://127.0.0.1:8000/v1"),
            ("OLLAMA_HOST", "127.0.0.1:11434"),
            ("OLLAMA_NATIVE_RESPONSES", "on"),
            ("HF_TOKEN", "hf"),
            ("HF_NATIVE_RESPONSES", "on"),
            (
                "GATEWAY_PROVIDER_GROQ_BASE_URL",
                "https://api.groq.com/openai/v1",
            ),
            ("GATEWAY_PROVIDER_GROQ_NATIVE_RESPONSES", "on"),
            (
                "GATEWAY_PROVIDER_LOCAL_BASE_URL",
                "http://127.0.0.1:9000/v1",
            ),
        ]))
        .unwrap();
        let speaks = |name: &str| c.providers[name].speaks(RESPONSES_FORMAT);
        // OpenAI by default; the others when switched on.
        assert!(speaks("openai") && speaks("ollama") && speaks("huggingface") && speaks("groq"));
        assert!(!speaks("vllm") && !speaks("local") && !speaks("echo"));
        let off = Config::from_map(&env(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_NATIVE_RESPONSES", "off"),
        ]))
        .unwrap();
        assert!(!off.providers["openai"].speaks(RESPONSES_FORMAT));
        let e = Config::from_map(&env(&[
            ("VLLM_BASE_URL", "http://127.0.0.1:8000/v1"),
            ("VLLM_NATIVE_RESPONSES", "maybe"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("VLLM_NATIVE_RESPONSES"));
    }
    #[test]
    fn each_preset_is_enabled_by_its_key_alone() {
        for p in PRESETS {
            assert!(
                vars::ALL.contains(&p.key_var),
                "{} not in vars::ALL",
                p.key_var
            );
            assert!(vars::ALL.contains(&p.base_url_var), "{}", p.base_url_var);
            let upper = p.name.to_ascii_uppercase();
            assert_eq!(p.base_url_var, format!("{upper}_BASE_URL"));
            let c = Config::from_map(&env(&[(p.key_var, "sk-v")])).unwrap();
            let got = &c.providers[p.name];
            assert_eq!(got.backends[0].to_string(), p.base_url, "{}", p.name);
            assert_eq!(got.api_key, Some(Secret::new("sk-v")));
            assert_eq!(
                (got.format.as_str(), got.flavor),
                ("openai", HostFlavor::Custom)
            );
            assert_eq!(got.lists_models, p.lists_models);
            // Its base URL variable moves it (read OpenAI-style: no path gets /v1).
            let c = Config::from_map(&env(&[
                (p.key_var, "sk-v"),
                (p.base_url_var, "http://127.0.0.1:9"),
            ]))
            .unwrap();
            assert_eq!(
                c.providers[p.name].backends[0].to_string(),
                "http://127.0.0.1:9/v1"
            );
            assert_eq!(
                enabling_variable(p.name),
                format!("{} (or {})", p.key_var, p.base_url_var)
            );
        }
        assert!(!Config::from_map(&env(&[]))
            .unwrap()
            .providers
            .contains_key("groq"));
        // Documented URLs are used as given (Perplexity's has no version path).
        let c = Config::from_map(&env(&[("PERPLEXITY_API_KEY", "k")])).unwrap();
        assert_eq!(c.providers["perplexity"].backends[0].path, "");
        assert_eq!(detect_preset("grok-4"), Some("xai"));
        assert_eq!(detect_preset("Mistral-Large-Latest"), Some("mistral"));
        assert_eq!(detect_preset("command-a-03-2025"), Some("cohere"));
        assert_eq!(detect_preset("deepseek-reasoner"), Some("deepseek"));
        assert_eq!(detect_preset("deepseek-ai/DeepSeek-R1"), None);
        assert_eq!(detect_preset("llama-3.3-70b"), None);
    }

    #[test]
    fn explicit_custom_variables_override_a_preset() {
        // Cohere's native API, configured explicitly, stays as it was; COHERE_API_KEY is its
        // key when GATEWAY_PROVIDER_COHERE_API_KEY is not set.
        let c = Config::from_map(&env(&[
            ("COHERE_API_KEY", "co"),
            ("GATEWAY_PROVIDER_COHERE_BASE_URL", "http://127.0.0.1:9"),
            ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
        ]))
        .unwrap();
        let co = &c.providers["cohere"];
        assert_eq!(co.format, "cohere");
        assert_eq!(co.backends[0].to_string(), "http://127.0.0.1:9/v1");
        assert_eq!(co.api_key, Some(Secret::new("co")));
        let c = Config::from_map(&env(&[
            ("COHERE_API_KEY", "co"),
            ("GATEWAY_PROVIDER_COHERE_API_KEY", "explicit"),
            ("GATEWAY_PROVIDER_COHERE_DEFAULT_MODEL", "command-a-03-2025"),
        ]))
        .unwrap();
        let co = &c.providers["cohere"];
        assert_eq!(co.format, "openai");
        assert_eq!(
            co.backends[0].to_string(),
            "https://api.cohere.ai/compatibility/v1"
        );
        assert_eq!(co.api_key, Some(Secret::new("explicit")));
        assert_eq!(co.default_model.as_deref(), Some("command-a-03-2025"));
        // Another format with the preset's OpenAI-compatible URL is refused, naming why.
        let e = Config::from_map(&env(&[
            ("COHERE_API_KEY", "co"),
            ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("GATEWAY_PROVIDER_COHERE_BASE_URL"), "{e}");
        // A built-in name still cannot be a custom provider.
        let e = Config::from_map(&env(&[("GATEWAY_PROVIDER_OPENAI_BASE_URL", "http://x:1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("built in"), "{e}");
    }

    #[test]
    fn azure_needs_its_endpoint_and_reads_the_api_version() {
        let c = Config::from_map(&env(&[("AZURE_OPENAI_API_KEY", "k")])).unwrap();
        assert!(!c.providers.contains_key("azure"));
        let az = |extra: &[(&str, &str)]| {
            let mut vars = vec![
                ("AZURE_OPENAI_API_KEY", "k"),
                ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/"),
            ];
            vars.extend_from_slice(extra);
            Config::from_map(&env(&vars)).map(|c| c.providers["azure"].clone())
        };
        let a = az(&[]).unwrap();
        assert_eq!(a.format, AZURE_FORMAT);
        assert_eq!(a.backends[0].to_string(), "https://res.openai.azure.com");
        assert_eq!(a.api_version, None);
        assert!(a.speaks("openai") && a.speaks(RESPONSES_FORMAT));
        let a = az(&[("OPENAI_API_VERSION", "2024-10-21")]).unwrap();
        assert_eq!(a.api_version.as_deref(), Some("2024-10-21"));
        // No Responses API at that version: translated unless switched on.
        assert!(!a.speaks(RESPONSES_FORMAT));
        let a = az(&[
            ("OPENAI_API_VERSION", "2024-10-21"),
            ("AZURE_OPENAI_API_VERSION", "2025-04-01-preview"),
        ])
        .unwrap();
        assert_eq!(a.api_version.as_deref(), Some("2025-04-01-preview"));
        assert!(a.speaks(RESPONSES_FORMAT));
        assert_eq!(
            az(&[("OPENAI_API_VERSION", "v1")]).unwrap().api_version,
            None
        );
        let e = az(&[("AZURE_OPENAI_API_VERSION", "latest-ish")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AZURE_OPENAI_API_VERSION"), "{e}");
        assert!(enabling_variable("azure").contains("AZURE_OPENAI_ENDPOINT"));
    }
}
