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
];

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
        BUILTIN_PRICES.len()
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
