//! Prices of well-known models, USD per 1M input and output tokens (used by the `cost`
//! strategy). Minimal table; the operations feature extends it with overrides and per-request
//! cost.

/// `(input, output)` USD per 1M tokens.
pub fn price(_provider: &str, model: &str) -> Option<(f64, f64)> {
    let m = model.to_ascii_lowercase();
    let table: &[(&str, f64, f64)] = &[
        ("gpt-4o-mini", 0.15, 0.60),
        ("gpt-4o", 2.50, 10.00),
        ("claude-3-5-haiku", 0.80, 4.00),
        ("claude-sonnet-4", 3.00, 15.00),
        ("gemini-2.0-flash", 0.10, 0.40),
    ];
    table
        .iter()
        .find(|(prefix, _, _)| m.starts_with(prefix))
        .map(|(_, i, o)| (*i, *o))
}
