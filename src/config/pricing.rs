//! `GATEWAY_PRICES` (price overrides, USD per 1M tokens) and the built-in price table it
//! overrides. `pricing` looks prices up at run time.
//!
//! `GATEWAY_PRICES="gpt-4o=2.5/10,groq/llama-3.3-70b-versatile=0.59/0.79,vllm/*=0.1/0.1"`:
//! entries are `MODEL=INPUT/OUTPUT`; `MODEL` may be qualified by its provider
//! (`provider/model`), and `provider/*` prices every model of that provider that has no more
//! specific price.

use super::providers::canonical_provider_name;

/// Built-in list prices (USD per 1M input and output tokens), the defaults `GATEWAY_PRICES`
/// overrides.
pub const BUILTIN_PRICES: &[(&str, f64, f64)] = &[
    // OpenAI
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("chatgpt-4o-latest", 5.0, 15.0),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4-turbo", 10.0, 30.0),
    ("gpt-4", 30.0, 60.0),
    ("gpt-3.5-turbo", 0.5, 1.5),
    ("o1", 15.0, 60.0),
    ("o1-mini", 1.1, 4.4),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("text-embedding-ada-002", 0.1, 0.0),
    // Anthropic
    ("claude-opus-4", 15.0, 75.0),
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-haiku", 0.25, 1.25),
    // Google
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-2.5-flash", 0.3, 2.5),
    ("gemini-2.5-flash-lite", 0.1, 0.4),
    ("gemini-2.0-flash", 0.1, 0.4),
    ("gemini-2.0-flash-lite", 0.075, 0.3),
    ("gemini-1.5-pro", 1.25, 5.0),
    ("gemini-1.5-flash", 0.075, 0.3),
    // Mistral
    ("mistral-large", 2.0, 6.0),
    ("mistral-medium", 0.4, 2.0),
    ("mistral-small", 0.1, 0.3),
    ("codestral", 0.3, 0.9),
    ("ministral-8b", 0.1, 0.1),
    ("ministral-3b", 0.04, 0.04),
    ("pixtral-large", 2.0, 6.0),
    ("magistral-medium", 2.0, 5.0),
    ("magistral-small", 0.5, 1.5),
    ("devstral-medium", 0.4, 2.0),
    ("devstral-small", 0.1, 0.3),
    ("open-mistral-nemo", 0.15, 0.15),
    ("mistral-embed", 0.1, 0.0),
    // DeepSeek (cache-miss input)
    ("deepseek-chat", 0.28, 0.42),
    ("deepseek-reasoner", 0.28, 0.42),
    // xAI
    ("grok-4", 3.0, 15.0),
    ("grok-4-fast", 0.2, 0.5),
    ("grok-4-1-fast", 0.2, 0.5),
    ("grok-3", 3.0, 15.0),
    ("grok-3-mini", 0.3, 0.5),
    ("grok-code-fast-1", 0.2, 1.5),
    // Cohere
    ("command-a", 2.5, 10.0),
    ("command-r-plus", 2.5, 10.0),
    ("command-r", 0.15, 0.6),
    ("command-r7b", 0.0375, 0.15),
    ("embed-v4.0", 0.12, 0.0),
    ("embed-english-v3.0", 0.1, 0.0),
    ("embed-multilingual-v3.0", 0.1, 0.0),
    // Perplexity (tokens only; its per-request search fees are not counted)
    ("sonar", 1.0, 1.0),
    ("sonar-pro", 3.0, 15.0),
    ("sonar-reasoning", 1.0, 5.0),
    ("sonar-reasoning-pro", 2.0, 8.0),
    ("sonar-deep-research", 2.0, 8.0),
    // AWS Bedrock (on-demand, us-east-1; model ids as Bedrock names them; `pricing` reads an
    // inference profile such as `us.anthropic.claude-...` as its model).
    ("anthropic.claude-opus-4", 15.0, 75.0),
    ("anthropic.claude-opus-4-5", 5.0, 25.0),
    ("anthropic.claude-sonnet-4", 3.0, 15.0),
    ("anthropic.claude-haiku-4-5", 1.0, 5.0),
    ("anthropic.claude-3-7-sonnet", 3.0, 15.0),
    ("anthropic.claude-3-5-sonnet", 3.0, 15.0),
    ("anthropic.claude-3-5-haiku", 0.8, 4.0),
    ("anthropic.claude-3-haiku", 0.25, 1.25),
    ("amazon.nova-premier", 2.5, 12.5),
    ("amazon.nova-pro", 0.8, 3.2),
    ("amazon.nova-lite", 0.06, 0.24),
    ("amazon.nova-micro", 0.035, 0.14),
    ("meta.llama3-3-70b-instruct", 0.72, 0.72),
    ("meta.llama3-1-70b-instruct", 0.72, 0.72),
    ("meta.llama3-1-8b-instruct", 0.22, 0.22),
    ("meta.llama4-maverick-17b-instruct", 0.24, 0.97),
    ("meta.llama4-scout-17b-instruct", 0.17, 0.66),
    ("deepseek.r1", 1.35, 5.4),
    ("amazon.titan-embed-text-v2", 0.02, 0.0),
    ("cohere.embed-english-v3", 0.1, 0.0),
    ("cohere.embed-multilingual-v3", 0.1, 0.0),
];

/// Built-in list prices of hosts that serve other makers' open models, each priced by the host
/// that serves it: `(provider, lower-case model, input, output)`, USD per 1M tokens.
pub const BUILTIN_HOST_PRICES: &[(&str, &str, f64, f64)] = &[
    ("groq", "llama-3.3-70b-versatile", 0.59, 0.79),
    ("groq", "llama-3.1-8b-instant", 0.05, 0.08),
    ("groq", "openai/gpt-oss-120b", 0.15, 0.6),
    (
        "together",
        "meta-llama/llama-3.3-70b-instruct-turbo",
        0.88,
        0.88,
    ),
    ("together", "deepseek-ai/deepseek-v3", 1.25, 1.25),
    ("together", "deepseek-ai/deepseek-r1", 3.0, 7.0),
    ("together", "openai/gpt-oss-120b", 0.15, 0.6),
    (
        "fireworks",
        "accounts/fireworks/models/llama-v3p3-70b-instruct",
        0.9,
        0.9,
    ),
    (
        "fireworks",
        "accounts/fireworks/models/gpt-oss-120b",
        0.15,
        0.6,
    ),
    ("cerebras", "llama3.1-8b", 0.1, 0.1),
    ("cerebras", "llama-3.3-70b", 0.85, 1.2),
    ("cerebras", "gpt-oss-120b", 0.25, 0.69),
];

/// Hosts that bill each maker's list price for its models, named `maker/model`.
pub const MAKER_PRICED: &[&str] = &["openrouter"];

/// Providers that run on the operator's own hardware: no per-token bill.
pub const SELF_HOSTED: &[&str] = &["echo", "ollama", "vllm"];

/// One `GATEWAY_PRICES` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceOverride {
    /// Lower-case provider, when the entry was `provider/model` or `provider/*`.
    pub provider: Option<String>,
    /// Lower-case model name, or `*`.
    pub model: String,
    pub input: f64,
    pub output: f64,
    /// USD per 1M cached prompt tokens (`MODEL=INPUT/OUTPUT/CACHE_READ`).
    pub cache_read: Option<f64>,
}

/// Built-in cache-read prices (USD per 1M cached prompt tokens) where the provider publishes
/// one; a model missing here prices its cached tokens at the input price.
pub const BUILTIN_CACHE_READ: &[(&str, f64)] = &[
    ("gpt-4o", 1.25),
    ("gpt-4o-mini", 0.075),
    ("gpt-4.1", 0.5),
    ("gpt-4.1-mini", 0.1),
    ("gpt-4.1-nano", 0.025),
    ("o1", 7.5),
    ("o3", 0.5),
    ("o3-mini", 0.55),
    ("o4-mini", 0.275),
    ("claude-opus-4", 1.5),
    ("claude-opus-4-5", 0.5),
    ("claude-sonnet-4", 0.3),
    ("claude-haiku-4-5", 0.1),
    ("claude-3-7-sonnet", 0.3),
    ("claude-3-5-sonnet", 0.3),
    ("claude-3-5-haiku", 0.08),
    ("claude-3-haiku", 0.03),
    ("gemini-2.5-pro", 0.31),
    ("gemini-2.5-flash", 0.075),
    ("gemini-2.0-flash", 0.025),
];

/// Parses `GATEWAY_PRICES`.
pub fn parse_overrides(raw: &str) -> Result<Vec<PriceOverride>, String> {
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| {
            format!("entry {entry:?}: {why} (expected MODEL=INPUT/OUTPUT[/CACHE_READ] in USD per 1M tokens, e.g. gpt-4o=2.5/10/1.25)")
        };
        let (name, prices) = entry.split_once('=').ok_or_else(|| bad("no '='"))?;
        let (i, o) = prices
            .split_once('/')
            .ok_or_else(|| bad("no '/' between the two prices"))?;
        let (o, c) = match o.split_once('/') {
            Some((o, c)) => (o, Some(c)),
            None => (o, None),
        };
        let num = |s: &str| -> Result<f64, String> {
            match s.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
                _ => Err(bad("prices must be non-negative numbers")),
            }
        };
        let (input, output) = (num(i)?, num(o)?);
        let cache_read = c.map(num).transpose()?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad("empty model name"));
        }
        // A provider name never contains '/', a model name may (`meta-llama/Llama-3.1-8B`):
        // `a/b` is read as provider `a`, model `b`; bare names stay bare.
        let (provider, model) = match name.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => {
                (Some(canonical_provider_name(p).to_string()), m.to_string())
            }
            Some(_) => return Err(bad("empty provider or model")),
            None if name == "*" => return Err(bad("'*' needs a provider: provider/*")),
            None => (None, name),
        };
        out.push(PriceOverride {
            provider,
            model,
            input,
            output,
            cache_read,
        });
    }
    Ok(out)
}

/// One line for `--check-config`.
pub fn describe(overrides: &[PriceOverride]) -> String {
    let mut s = format!(
        "built-in table ({} models; echo, ollama, vllm cost 0)",
        BUILTIN_PRICES.len() + BUILTIN_HOST_PRICES.len()
    );
    if !overrides.is_empty() {
        let list: Vec<String> = overrides
            .iter()
            .map(|o| match &o.provider {
                Some(p) => format!("{p}/{}={}/{}", o.model, o.input, o.output),
                None => format!("{}={}/{}", o.model, o.input, o.output),
            })
            .collect();
        s.push_str(&format!(" + GATEWAY_PRICES: {}", list.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse() {
        for bad in [
            "gpt-4o",
            "gpt-4o=1",
            "gpt-4o=a/1",
            "gpt-4o=-1/1",
            "=1/1",
            "*=1/1",
            "/x=1/1",
            "x=1/1/a",
        ] {
            assert!(parse_overrides(bad).is_err(), "{bad}");
        }
        assert!(parse_overrides("").unwrap().is_empty());
        assert_eq!(
            parse_overrides("x=1/2/0.5").unwrap()[0].cache_read,
            Some(0.5)
        );
        let o = parse_overrides("gemini/x=1/2").unwrap();
        assert_eq!(o[0].provider.as_deref(), Some("google"));
        assert!(describe(&o).contains("google/x=1/2"));
    }
}
