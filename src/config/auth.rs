//! Gateway API keys (`GATEWAY_API_KEYS`, `GATEWAY_API_KEYS_FILE`,
//! `GATEWAY_API_KEYS_RELOAD_INTERVAL`) and the syntax of one key entry:
//!
//! ```text
//! [name=]key[:rpm=N|off][:burst=N][:tpm=N|off][:budget=USD/PERIOD][:models=PATTERN|PATTERN...]
//! ```
//!
//! `budget=50/month` (periods `day`, `week`, `month`, `total`) and `models=openai/*|fast`
//! make the key a tenant's (see `tenants`). The keys file is parsed here at start-up, and by `auth` again on every reload.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::ratelimit::LimitOverrides;
use super::{parse_duration_or_off, vars, Reader, Secret};

/// Longest key name (names end up in log lines and Redis keys).
const MAX_NAME_LEN: usize = 64;

/// One key as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub key: Secret,
    pub overrides: LimitOverrides,
    /// `budget=` and `models=` (empty when neither is set).
    pub policy: Policy,
}

/// A budget's period: calendar-aligned in UTC, or never reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Week,
    Month,
    Total,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" => Some(Period::Day),
            "week" | "weekly" => Some(Period::Week),
            "month" | "monthly" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }
}

/// A spend limit in USD per period, kept in micro-dollars (whole numbers add up exactly, in
/// memory and in Redis' `INCRBY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub micro_usd: u64,
    pub period: Period,
}

/// Micro-dollars in one dollar.
pub const MICRO: f64 = 1_000_000.0;

impl Budget {
    pub fn usd(&self) -> f64 {
        self.micro_usd as f64 / MICRO
    }
}

/// What a tenant's key may spend and use, beside its rate limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub budget: Option<Budget>,
    /// Model patterns (`openai/*`, `vllm/*`, exact names, aliases); `None`: every model.
    pub models: Option<Vec<String>>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.budget.is_none() && self.models.is_none()
    }
}

/// `50/month`, `5/day`, `100/total`, `$20/week`.
pub fn parse_budget(v: &str) -> Result<Budget, String> {
    let bad = || format!("budget={v:?}: expected USD/PERIOD (50/month; day, week, month, total)");
    let (usd, period) = v.split_once('/').ok_or_else(bad)?;
    let usd = usd.trim().trim_start_matches('$');
    let usd: f64 = usd.parse().map_err(|_| bad())?;
    let period = Period::parse(period).ok_or_else(bad)?;
    budget_from_usd(usd, period).ok_or_else(bad)
}

/// A budget of `usd` dollars (finite, >= 0, below a billion).
pub fn budget_from_usd(usd: f64, period: Period) -> Option<Budget> {
    (usd.is_finite() && (0.0..1e9).contains(&usd)).then(|| Budget {
        micro_usd: (usd * MICRO).round() as u64,
        period,
    })
}

/// `openai/gpt-4o-mini|vllm/*`: patterns separated by `|` (an exact name, a name ending in `*`).
pub fn parse_models(v: &str) -> Result<Vec<String>, String> {
    let pats: Vec<String> = v
        .split('|')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if pats.is_empty() {
        return Err("models= needs at least one model or pattern (openai/*|fast)".into());
    }
    if let Some(p) = pats.iter().find(|p| p.trim_end_matches('*').contains('*')) {
        return Err(format!(
            "model pattern {p:?}: '*' may only end a pattern (openai/*)"
        ));
    }
    Ok(pats)
}

/// Keys settings, validated.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Keys from `GATEWAY_API_KEYS`.
    pub env_keys: Vec<KeySpec>,
    /// `GATEWAY_API_KEYS_FILE`.
    pub file: Option<PathBuf>,
    /// Keys read from the file at start-up.
    pub file_keys: Vec<KeySpec>,
    /// How often the file is checked for changes (`None`: only on SIGHUP).
    pub reload_interval: Option<Duration>,
    /// `GATEWAY_ADMIN_KEY`: turns the admin API on (and key auth with it).
    pub admin_key: Option<Secret>,
}

impl AuthConfig {
    /// Auth is on as soon as keys are configured at all. A keys file that is (or becomes)
    /// empty keeps it on: emptying the file locks everyone out rather than opening up.
    pub fn enabled(&self) -> bool {
        !self.env_keys.is_empty() || self.file.is_some() || self.admin_key.is_some()
    }

    pub fn describe(&self) -> String {
        if !self.enabled() {
            return "off (no GATEWAY_API_KEYS, GATEWAY_API_KEYS_FILE or GATEWAY_ADMIN_KEY)".into();
        }
        let names: Vec<&str> = self
            .env_keys
            .iter()
            .chain(&self.file_keys)
            .map(|k| k.name.as_str())
            .collect();
        let file = match &self.file {
            Some(f) => format!(
                " file={} reload={}",
                f.display(),
                self.reload_interval
                    .map(|d| format!("{d:?}+SIGHUP"))
                    .unwrap_or_else(|| "SIGHUP".into())
            ),
            None => String::new(),
        };
        format!("on, {} key(s) [{}]{file}", names.len(), names.join(", "))
    }
}

/// Reads `GATEWAY_API_KEYS`, `GATEWAY_API_KEYS_FILE` and `GATEWAY_API_KEYS_RELOAD_INTERVAL`.
pub(super) fn read(r: &mut Reader) -> AuthConfig {
    let mut cfg = AuthConfig {
        reload_interval: Some(Duration::from_secs(2)),
        ..AuthConfig::default()
    };
    if let Some(raw) = r.get(vars::API_KEYS) {
        match parse_env_keys(raw) {
            Ok(keys) => cfg.env_keys = keys,
            Err(errs) => {
                for e in errs {
                    r.error(vars::API_KEYS, raw, &e);
                }
            }
        }
    }
    if let Some(path) = r.get(vars::API_KEYS_FILE) {
        let path = PathBuf::from(path);
        match load_file(&path) {
            Ok(keys) => cfg.file_keys = keys,
            Err(e) => r.error(vars::API_KEYS_FILE, &path.display().to_string(), &e),
        }
        cfg.file = Some(path);
    }
    if let Some(k) = r.get(vars::ADMIN_KEY) {
        if k.trim().is_empty() || k.contains(char::is_whitespace) {
            r.error(
                vars::ADMIN_KEY,
                "***",
                "the admin key must be non-empty, without spaces",
            );
        } else {
            cfg.admin_key = Some(Secret::new(k.to_string()));
        }
    }
    cfg.reload_interval = r.parse(
        vars::API_KEYS_RELOAD_INTERVAL,
        cfg.reload_interval,
        parse_duration_or_off,
    );
    if let Err(e) = check_unique(cfg.env_keys.iter().chain(&cfg.file_keys)) {
        r.error(
            vars::API_KEYS_FILE,
            "",
            &format!("{e} (across GATEWAY_API_KEYS and the file)"),
        );
    }
    cfg
}

/// Parses `GATEWAY_API_KEYS` (comma-separated entries; unnamed keys become `key-1`, ...).
/// Errors name the entry, never the key.
pub fn parse_env_keys(raw: &str) -> Result<Vec<KeySpec>, Vec<String>> {
    parse_entries(
        raw.split(',').enumerate().map(|(i, e)| (i + 1, e)),
        Source::Env,
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Source {
    Env,
    File,
}

/// Reads and parses a keys file. Errors name the line, never the key.
pub fn load_file(path: &std::path::Path) -> Result<Vec<KeySpec>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the keys file: {e}"))?;
    parse_file(&text)
}

/// One entry per line; blank lines and lines starting with `#` are skipped.
pub fn parse_file(text: &str) -> Result<Vec<KeySpec>, String> {
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    parse_entries(lines, Source::File).map_err(|errs| errs.join("; "))
}

fn parse_entries<'a>(
    entries: impl Iterator<Item = (usize, &'a str)>,
    source: Source,
) -> Result<Vec<KeySpec>, Vec<String>> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    let mut unnamed = 0;
    for (pos, raw) in entries {
        let at = match source {
            Source::Env => format!("entry {pos}"),
            Source::File => format!("line {pos}"),
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        match parse_entry(raw) {
            Ok((name, key, overrides, policy)) => {
                let name = match name {
                    Some(n) => n,
                    None if source == Source::Env => {
                        unnamed += 1;
                        format!("key-{unnamed}")
                    }
                    None => {
                        errors.push(format!("{at}: a key in the file needs a name (name=key)"));
                        continue;
                    }
                };
                keys.push(KeySpec {
                    name,
                    key: Secret::new(key),
                    overrides,
                    policy,
                });
            }
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    if let Err(e) = check_unique(keys.iter()) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

/// `[name=]key[:opt=value]...`. Error messages never contain the key.
type Entry = (Option<String>, String, LimitOverrides, Policy);

fn parse_entry(raw: &str) -> Result<Entry, String> {
    let mut parts = raw.split(':');
    let head = parts.next().unwrap_or("").trim();
    let (name, key) = match head.split_once('=') {
        Some((n, k)) => (Some(n.trim()), k.trim()),
        None => (None, head),
    };
    if let Some(n) = name {
        if n.is_empty()
            || n.len() > MAX_NAME_LEN
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "key name {n:?} must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
            ));
        }
    }
    if key.is_empty() {
        return Err("empty key".into());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the key contains whitespace or control characters".into());
    }
    let mut ov = LimitOverrides::default();
    let mut policy = Policy::default();
    for opt in parts.map(str::trim).filter(|o| !o.is_empty()) {
        let Some((k, v)) = opt.split_once('=') else {
            return Err(format!(
                "option {opt:?} must be rpm=, burst=, tpm=, budget= or models="
            ));
        };
        let v = v.trim();
        let off = matches!(
            v.to_ascii_lowercase().as_str(),
            "off" | "none" | "unlimited"
        );
        let num = || match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("{k}={v:?}: expected a whole number >= 1 or off")),
        };
        match k.trim() {
            "rpm" => ov.rpm = Some(if off { None } else { Some(num()?) }),
            "tpm" => ov.tpm = Some(if off { None } else { Some(num()?) }),
            "burst" => ov.burst = Some(num()?),
            "budget" => policy.budget = if off { None } else { Some(parse_budget(v)?) },
            "models" => policy.models = Some(parse_models(v)?),
            other => {
                return Err(format!(
                    "unknown option {other:?} (rpm, burst, tpm, budget, models)"
                ))
            }
        }
    }
    Ok((name.map(str::to_string), key.to_string(), ov, policy))
}

/// No name and no key used twice (keys are compared as they are; errors name the entry).
pub fn check_unique<'a>(keys: impl Iterator<Item = &'a KeySpec>) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for k in keys {
        if !names.insert(k.name.as_str()) {
            return Err(format!("key name {:?} is used twice", k.name));
        }
        if !seen.insert(k.key.expose()) {
            return Err(format!("key {:?} repeats the key of another entry", k.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_syntax() {
        let (n, k, o, _) = parse_entry("team-a=sk-gw-aaa:rpm=60:burst=5:tpm=off").unwrap();
        assert_eq!(n.as_deref(), Some("team-a"));
        assert_eq!(k, "sk-gw-aaa");
        assert_eq!(o.rpm, Some(Some(60)));
        assert_eq!(o.burst, Some(5));
        assert_eq!(o.tpm, Some(None));
        let (n, k, _, _) = parse_entry("bare-key").unwrap();
        assert_eq!((n, k.as_str()), (None, "bare-key"));
        // A key with '=' (base64 padding) works when named.
        let (_, k, _, _) = parse_entry("b=abc==").unwrap();
        assert_eq!(k, "abc==");
        for bad in [
            "=k",
            "a b=k",
            "n=",
            "n=k:rpm=0",
            "n=k:rpm=x",
            "n=k:foo=1",
            "n=k:rpm",
            "n=k:budget=5",
            "n=k:budget=x/day",
            "n=k:budget=5/year",
            "n=k:models=",
            "n=k:models=a*b",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn budget_and_models_options() {
        let (_, k, o, p) =
            parse_entry("team-a=sk-gw-aaa:budget=50/month:models=openai/gpt-4o-mini|vllm/*:rpm=5")
                .unwrap();
        assert_eq!(k, "sk-gw-aaa");
        assert_eq!(o.rpm, Some(Some(5)));
        assert_eq!(
            p.budget,
            Some(Budget {
                micro_usd: 50_000_000,
                period: Period::Month
            })
        );
        assert_eq!(
            p.models.as_deref(),
            Some(&["openai/gpt-4o-mini".to_string(), "vllm/*".to_string()][..])
        );
        let (_, _, _, p) = parse_entry("b=k:budget=0.5/total").unwrap();
        assert_eq!(
            p.budget.map(|b| (b.micro_usd, b.period)),
            Some((500_000, Period::Total))
        );
        let f = parse_file("t=k:budget=5/day:models=anthropic/*\n").unwrap();
        assert_eq!(f[0].policy.budget.map(|b| b.period), Some(Period::Day));
    }

    #[test]
    fn errors_never_contain_the_key() {
        let errs = parse_entries(
            [
                "a=sk-secret-1:nope=1",
                "a=sk-secret-2",
                "b=sk-secret-2",
                "sk-secret-3 x",
            ]
            .into_iter()
            .enumerate(),
            Source::Env,
        )
        .unwrap_err();
        assert!(errs.len() >= 2);
        for e in &errs {
            assert!(!e.contains("sk-secret"), "{e}");
        }
        let e = parse_file("a=sk-secret-1\nsk-secret-9\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("sk-secret"), "{e}");
    }

    #[test]
    fn names_and_duplicates() {
        let keys = parse_entries(
            ["k1", " team=k2 ", "k3"].into_iter().enumerate(),
            Source::Env,
        )
        .unwrap();
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["key-1", "team", "key-2"]);
        assert!(parse_entries(["a=k", "a=j"].into_iter().enumerate(), Source::Env).is_err());
        assert!(parse_entries(["a=k", "b=k"].into_iter().enumerate(), Source::Env).is_err());
        let f = parse_file("# comment\n\nteam-a=sk-a:tpm=100\n  team-b=sk-b\n").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].overrides.tpm, Some(Some(100)));
    }
}
