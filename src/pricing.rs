//! Estimated cost of a request in USD: a built-in table of well-known models' list prices,
//! overridable with `GATEWAY_PRICES`.
//!
//! Prices are USD per 1M tokens, `(input, output)`. A price applies to its model and to that
//! model's dated or tagged variants (`gpt-4o` prices `gpt-4o-2024-08-06`, `claude-sonnet-4`
//! prices `claude-sonnet-4-20250514`); the longest matching name wins, so `gpt-4o-mini` is not
//! priced as `gpt-4o`. Self-hosted providers (`echo`, `ollama`, `vllm`) cost 0 unless
//! overridden. Everything else without a price has no cost (`None`), never a guess.
//!
//! `GATEWAY_PRICES="gpt-4o=2.5/10,groq/llama-3.3-70b-versatile=0.59/0.79,vllm/*=0.1/0.1"`:
//! entries are `MODEL=INPUT/OUTPUT`; `MODEL` may be qualified by its provider
//! (`provider/model`), and `provider/*` prices every model of that provider that has no more
//! specific price. `MODEL=INPUT/OUTPUT/CACHE_READ` also prices cached prompt tokens
//! (`prompt_tokens_details.cached_tokens`); without it the built-in cache-read price applies
//! where the table has one ([`crate::config::pricing::BUILTIN_CACHE_READ`]), else the input
//! price. Batch pricing is ignored.

use once_cell::sync::Lazy;
use parking_lot::RwLock;

use crate::api::Usage;
pub use crate::config::pricing::{parse_overrides, PriceOverride};
use crate::config::pricing::{
    BUILTIN_CACHE_READ, BUILTIN_HOST_PRICES, BUILTIN_PRICES, MAKER_PRICED, SELF_HOSTED,
};

static OVERRIDES: Lazy<RwLock<Vec<PriceOverride>>> = Lazy::new(|| RwLock::new(Vec::new()));

/// Installs the `GATEWAY_PRICES` entries (once, at start-up).
pub fn set_overrides(o: Vec<PriceOverride>) {
    *OVERRIDES.write() = o;
}

/// USD per 1M input and output tokens for this provider's model, if known.
pub fn price(provider: &str, model: &str) -> Option<(f64, f64)> {
    lookup(&OVERRIDES.read(), provider, model)
}

/// Estimated cost of one request in USD, if the model's price is known. Cached prompt tokens
/// are priced at the cache-read price ([`cache_read_price`]).
pub fn cost_usd(provider: &str, model: &str, usage: &Usage) -> Option<f64> {
    let (input, output) = price(provider, model)?;
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let cache_in = if cached > 0 {
        cache_read_price(provider, model).unwrap_or(input)
    } else {
        input
    };
    Some(
        ((usage.prompt_tokens - cached) as f64 * input
            + cached as f64 * cache_in
            + usage.completion_tokens as f64 * output)
            / 1e6,
    )
}

/// USD per 1M cached prompt tokens: the `GATEWAY_PRICES` entry's third price, else the
/// built-in table's (for providers that are not self-hosted).
pub fn cache_read_price(provider: &str, model: &str) -> Option<f64> {
    let provider = provider.to_ascii_lowercase();
    let model = model.to_ascii_lowercase();
    let mut best: Option<(usize, u8, Option<f64>)> = None;
    for o in OVERRIDES.read().iter() {
        let qualified = o.provider.is_some();
        if qualified && o.provider.as_deref() != Some(provider.as_str()) {
            continue;
        }
        let len = if o.model == "*" {
            0
        } else if matches(&o.model, &model) {
            o.model.len()
        } else {
            continue;
        };
        let rank = if qualified { 4 } else { 3 };
        if best.is_none_or(|(l, r, _)| (len, rank) > (l, r)) {
            best = Some((len, rank, o.cache_read));
        }
    }
    if let Some((_, _, c)) = best {
        // The override that prices the model decides: without a third price, the input price.
        return c;
    }
    if SELF_HOSTED.contains(&provider.as_str()) {
        return None;
    }
    BUILTIN_CACHE_READ
        .iter()
        .filter(|(k, _)| matches(k, &model))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, p)| *p)
}

/// Whether `key` prices `name`: the same name, or a variant of it (`-2024-08-06`, `:8b`, `@001`).
fn matches(key: &str, name: &str) -> bool {
    match name.strip_prefix(key) {
        Some("") => true,
        Some(rest) => rest.starts_with(['-', ':', '@']),
        None => false,
    }
}

/// A Bedrock inference profile (`us.anthropic.claude-...`, `global.`, `eu.`, `apac.`...) is
/// priced as its model (`anthropic.claude-...`).
fn bedrock_model(model: &str) -> &str {
    const GEOS: &[&str] = &[
        "us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.", "us-gov.",
    ];
    GEOS.iter()
        .find_map(|g| model.strip_prefix(g))
        .filter(|rest| rest.contains('.'))
        .unwrap_or(model)
}

/// The price from `overrides`, then the built-in tables. The longest matching model name wins;
/// on a tie a provider-qualified entry beats a bare one, and an override beats the table. On a
/// host that bills each maker's list price (OpenRouter), `maker/model`
/// (`anthropic/claude-sonnet-4`) is priced by the bare table as `model`; a Bedrock inference
/// profile as its model.
pub fn lookup(overrides: &[PriceOverride], provider: &str, model: &str) -> Option<(f64, f64)> {
    let provider = provider.to_ascii_lowercase();
    let lower = model.to_ascii_lowercase();
    let model = bedrock_model(&lower);
    // (length of the matched model name, rank of the source, price)
    let mut best: Option<(usize, u8, (f64, f64))> = None;
    let mut offer = |len: usize, rank: u8, p: (f64, f64)| {
        if best.is_none_or(|(l, r, _)| (len, rank) > (l, r)) {
            best = Some((len, rank, p));
        }
    };
    for o in overrides {
        let qualified = o.provider.is_some();
        if qualified && o.provider.as_deref() != Some(provider.as_str()) {
            continue;
        }
        if o.model == "*" {
            offer(0, 5, (o.input, o.output));
        } else if matches(&o.model, model) {
            offer(
                o.model.len(),
                if qualified { 5 } else { 4 },
                (o.input, o.output),
            );
        }
    }
    if SELF_HOSTED.contains(&provider.as_str()) {
        offer(0, 1, (0.0, 0.0));
    } else {
        for (p, k, i, out) in BUILTIN_HOST_PRICES {
            if *p == provider && matches(k, model) {
                offer(k.len(), 3, (*i, *out));
            }
        }
        let bare = match model.rsplit_once('/') {
            Some((_, m)) if MAKER_PRICED.contains(&provider.as_str()) => m,
            _ => model,
        };
        for (k, i, out) in BUILTIN_PRICES {
            if matches(k, bare) {
                offer(k.len(), 2, (*i, *out));
            }
        }
    }
    best.map(|(_, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prices_match_variants_but_not_siblings() {
        assert_eq!(lookup(&[], "openai", "gpt-4o"), Some((2.5, 10.0)));
        assert_eq!(
            lookup(&[], "openai", "gpt-4o-2024-08-06"),
            Some((2.5, 10.0))
        );
        assert_eq!(
            lookup(&[], "openai", "gpt-4o-mini-2024-07-18"),
            Some((0.15, 0.6))
        );
        assert_eq!(lookup(&[], "openai", "gpt-4.1-mini"), Some((0.4, 1.6)));
        assert_eq!(lookup(&[], "openai", "o3-mini"), Some((1.1, 4.4)));
        assert_eq!(
            lookup(&[], "anthropic", "claude-sonnet-4-20250514"),
            Some((3.0, 15.0))
        );
        assert_eq!(
            lookup(&[], "anthropic", "claude-3-5-haiku-latest"),
            Some((0.8, 4.0))
        );
        assert_eq!(
            lookup(&[], "google", "gemini-2.0-flash-001"),
            Some((0.1, 0.4))
        );
        assert_eq!(
            lookup(&[], "google", "gemini-2.0-flash-lite"),
            Some((0.075, 0.3))
        );
        // `gpt-4` must not price `gpt-4.5-preview`, `o1` must not price `o10`.
        assert_eq!(lookup(&[], "openai", "gpt-4.5-preview"), None);
        assert_eq!(lookup(&[], "openai", "o10"), None);
        assert_eq!(lookup(&[], "groq", "llama-3.3-70b"), None);
        assert_eq!(lookup(&[], "other", "llama-3.3-70b-versatile"), None);
        // Vendors' own models, and hosts' prices for the open models they serve.
        assert_eq!(
            lookup(&[], "mistral", "mistral-large-latest"),
            Some((2.0, 6.0))
        );
        assert_eq!(
            lookup(&[], "xai", "grok-4-fast-reasoning"),
            Some((0.2, 0.5))
        );
        assert_eq!(
            lookup(&[], "cohere", "command-r7b-12-2024"),
            Some((0.0375, 0.15))
        );
        assert_eq!(
            lookup(&[], "cohere", "command-r-08-2024"),
            Some((0.15, 0.6))
        );
        assert_eq!(
            lookup(&[], "groq", "llama-3.3-70b-versatile"),
            Some((0.59, 0.79))
        );
        assert_eq!(
            lookup(&[], "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
            Some((0.88, 0.88))
        );
        assert_eq!(lookup(&[], "azure", "gpt-4o"), Some((2.5, 10.0)));
        // OpenRouter's maker/model ids take the maker's list price.
        assert_eq!(
            lookup(&[], "openrouter", "anthropic/claude-sonnet-4"),
            Some((3.0, 15.0))
        );
        assert_eq!(lookup(&[], "together", "Qwen/Qwen3-235B"), None);
        // Elsewhere a maker's name is no price: Together's Mistral Small is not Mistral's.
        assert_eq!(lookup(&[], "together", "mistralai/mistral-small-24b"), None);
        assert_eq!(
            lookup(&[], "vllm", "meta-llama/Llama-3.1-8B"),
            Some((0.0, 0.0))
        );
        assert_eq!(lookup(&[], "echo", "anything"), Some((0.0, 0.0)));
        // Bedrock model ids and inference profiles.
        for m in [
            "anthropic.claude-sonnet-4-20250514-v1:0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ] {
            assert_eq!(lookup(&[], "bedrock", m), Some((3.0, 15.0)), "{m}");
        }
        assert_eq!(
            lookup(&[], "bedrock", "us.anthropic.claude-opus-4-5-20251101-v1:0"),
            Some((5.0, 25.0))
        );
        assert_eq!(
            lookup(&[], "bedrock", "amazon.nova-lite-v1:0"),
            Some((0.06, 0.24))
        );
        assert_eq!(
            lookup(&[], "bedrock", "us.amazon.nova-pro-v1:0"),
            Some((0.8, 3.2))
        );
    }

    #[test]
    fn overrides_parse_and_win_on_the_same_name() {
        let o = parse_overrides(
            "gpt-4o=5/20, groq/llama-3.3-70b=0.59/0.79,vllm/*=0.1/0.2,hf/meta-llama/Llama-3.1-8B=1/1",
        )
        .unwrap();
        assert_eq!(o.len(), 4);
        assert_eq!(lookup(&o, "openai", "gpt-4o-2024-08-06"), Some((5.0, 20.0)));
        // The more specific built-in name still wins over a shorter override.
        assert_eq!(lookup(&o, "openai", "gpt-4o-mini"), Some((0.15, 0.6)));
        assert_eq!(
            lookup(&o, "groq", "llama-3.3-70b-versatile"),
            Some((0.59, 0.79))
        );
        assert_eq!(lookup(&o, "other", "llama-3.3-70b"), None);
        assert_eq!(lookup(&o, "vllm", "anything"), Some((0.1, 0.2)));
        assert_eq!(
            lookup(&o, "huggingface", "meta-llama/Llama-3.1-8B"),
            Some((1.0, 1.0))
        );
        // Bad overrides are refused by the parser (config/pricing.rs's tests).
    }

    #[test]
    fn cost_is_tokens_times_price() {
        let u = Usage::new(1_000_000, 500_000);
        let c = lookup(&[], "openai", "gpt-4o")
            .map(|(i, o)| (u.prompt_tokens as f64 * i + u.completion_tokens as f64 * o) / 1e6);
        assert_eq!(c, Some(7.5));
        assert_eq!(cost_usd("echo", "x", &u), Some(0.0));
        assert_eq!(cost_usd("groq", "unknown-model", &u), None);
        // Cached prompt tokens at the cache-read price: 1M prompt of which 800k cached.
        let mut u = Usage::new(1_000_000, 0);
        u.cached_tokens = 800_000;
        let c = cost_usd("openai", "gpt-4o-2024-08-06", &u).unwrap();
        assert!((c - (0.2 * 2.5 + 0.8 * 1.25)).abs() < 1e-9, "{c}");
    }
}
