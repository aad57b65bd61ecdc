//! Routing: the failover pool and order (`GATEWAY_PROVIDERS`, `GATEWAY_WEIGHTS`), the strategy,
//! retries, health checks, aliases and fallbacks.

use std::collections::BTreeMap;
use std::time::Duration;

use super::providers::{canonical_provider_name, enabling_variable, HostFlavor, ProviderConfig};
use super::{parse_duration_or_off, vars, Reader};

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

/// How a provider's pool picks one of its backends (`GATEWAY_POOL_STRATEGY`,
/// `<PROVIDER>_POOL_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStrategy {
    /// Each backend in turn.
    RoundRobin,
    /// Fewest requests in flight from this gateway, of two picked at random.
    LeastRequests,
    /// Least load (in flight, the replica's queue and KV-cache use) with prefix affinity.
    Inference,
}

impl PoolStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStrategy::RoundRobin => "round_robin",
            PoolStrategy::LeastRequests => "least_requests",
            PoolStrategy::Inference => "inference",
        }
    }
}

fn parse_pool_strategy(v: &str) -> Result<PoolStrategy, String> {
    match v.to_ascii_lowercase().replace('-', "_").as_str() {
        "round_robin" => Ok(PoolStrategy::RoundRobin),
        "least_requests" => Ok(PoolStrategy::LeastRequests),
        "inference" => Ok(PoolStrategy::Inference),
        _ => Err("expected round_robin, least_requests or inference".into()),
    }
}

/// The per-provider pool strategy variable (`vllm` -> `VLLM_POOL_STRATEGY`, `together-ai` ->
/// `TOGETHER_AI_POOL_STRATEGY`).
pub fn pool_strategy_variable(provider: &str) -> String {
    format!(
        "{}_POOL_STRATEGY",
        provider.to_ascii_uppercase().replace('-', "_")
    )
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
    /// `GATEWAY_POOL_STRATEGY`: every pool's strategy, unless its provider sets its own.
    pub pool_strategy: Option<PoolStrategy>,
    /// `<PROVIDER>_POOL_STRATEGY`, by provider name.
    pub pool_strategies: BTreeMap<String, PoolStrategy>,
    /// `GATEWAY_POOL_METRICS_INTERVAL`: how often `inference` pools scrape their replicas'
    /// `/metrics` (`None`: never).
    pub pool_metrics_interval: Option<Duration>,
    /// `GATEWAY_POOL_AFFINITY_BOUND`: how much more loaded (in requests) than the least loaded
    /// replica a prefix's replica may be and still get the request.
    pub pool_affinity_bound: u32,
}

impl RoutingConfig {
    /// The strategy of `provider`'s pool: its own variable, the global one, else `inference`
    /// for self-hosted inference servers (vLLM, SGLang, Ollama) and `round_robin` for the rest.
    pub fn pool_strategy_for(&self, provider: &ProviderConfig) -> PoolStrategy {
        if let Some(s) = self.pool_strategies.get(&provider.name) {
            return *s;
        }
        if let Some(s) = self.pool_strategy {
            return s;
        }
        let inference_server = matches!(provider.flavor, HostFlavor::Vllm | HostFlavor::Ollama)
            || provider.name.starts_with("sglang")
            || provider.name.starts_with("vllm");
        if inference_server {
            PoolStrategy::Inference
        } else {
            PoolStrategy::RoundRobin
        }
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

pub(super) fn read(r: &mut Reader, providers: &BTreeMap<String, ProviderConfig>) -> RoutingConfig {
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
        parse_duration_or_off,
    );
    let cooldown = r.duration(vars::UNHEALTHY_COOLDOWN, Duration::from_secs(30));
    let failure_threshold = r.parse(vars::FAILURE_THRESHOLD, 1u32, |v| match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number >= 1".into()),
    });
    let aliases = read_model_map(r, vars::MODEL_ALIASES, providers);
    let fallbacks = read_model_map(r, vars::FALLBACK_MODELS, providers);
    let pool_strategy = r.parse(vars::POOL_STRATEGY, None, |v| {
        parse_pool_strategy(v).map(Some)
    });
    let mut pool_strategies = BTreeMap::new();
    for name in providers.keys() {
        let var = pool_strategy_variable(name);
        if let Some(s) = r.parse(&var, None, |v| parse_pool_strategy(v).map(Some)) {
            pool_strategies.insert(name.clone(), s);
        }
    }
    let pool_metrics_interval = r.parse(
        vars::POOL_METRICS_INTERVAL,
        Some(Duration::from_millis(500)),
        parse_duration_or_off,
    );
    let pool_affinity_bound = r.number(vars::POOL_AFFINITY_BOUND, 4u32);
    RoutingConfig {
        pool_strategy,
        pool_strategies,
        pool_metrics_interval,
        pool_affinity_bound,
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

#[cfg(test)]
mod tests {
    use super::super::{test_env as env, Config};
    use super::*;

    fn strategies(pairs: &[(&str, &str)]) -> BTreeMap<String, &'static str> {
        let c = Config::from_map(&env(pairs)).unwrap();
        c.providers
            .values()
            .map(|p| (p.name.clone(), c.routing.pool_strategy_for(p).as_str()))
            .collect()
    }

    #[test]
    fn pool_strategy_defaults_global_and_per_provider() {
        let base = [
            ("VLLM_BASE_URL", "http://127.0.0.1:1,http://127.0.0.1:2"),
            ("OLLAMA_HOST", "127.0.0.1:3"),
            ("OPENAI_API_KEY", "k"),
            ("GATEWAY_PROVIDER_SGLANG_BASE_URL", "http://127.0.0.1:4"),
            ("GATEWAY_PROVIDER_GROQ_BASE_URL", "http://127.0.0.1:5"),
        ];
        let s = strategies(&base);
        assert_eq!(s["vllm"], "inference");
        assert_eq!(s["ollama"], "inference");
        assert_eq!(s["sglang"], "inference");
        assert_eq!(s["openai"], "round_robin");
        assert_eq!(s["groq"], "round_robin");
        let mut with = base.to_vec();
        with.push(("GATEWAY_POOL_STRATEGY", "least_requests"));
        with.push(("SGLANG_POOL_STRATEGY", "Round-Robin"));
        let s = strategies(&with);
        assert_eq!(
            s["vllm"], "least_requests",
            "the global one over the default"
        );
        assert_eq!(s["sglang"], "round_robin", "the provider's own wins");
        assert_eq!(
            pool_strategy_variable("together-ai"),
            "TOGETHER_AI_POOL_STRATEGY"
        );
        let c = Config::from_map(&env(&base)).unwrap();
        assert_eq!(c.routing.pool_affinity_bound, 4);
        assert_eq!(
            c.routing.pool_metrics_interval,
            Some(Duration::from_millis(500))
        );
        let e = Config::from_map(&env(&[
            ("VLLM_BASE_URL", "http://127.0.0.1:1"),
            ("VLLM_POOL_STRATEGY", "fastest"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("VLLM_POOL_STRATEGY"), "{e}");
    }
}
