//! Model name -> provider. `provider/model` picks that provider (the rest, slashes and all, goes
//! upstream); bare names are detected by prefix (`gpt-*`, `o1*`, `o3*`, `o4*`, `chatgpt-*` ->
//! openai, `claude-*` -> anthropic, `gemini-*` -> google; a configured preset's own names,
//! `mistral-*`, `deepseek-*`, `grok-*`, `command-*`...) or fall to `GATEWAY_DEFAULT_PROVIDER`,
//! which receives the whole name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::config::providers::{detect_preset, is_builtin, preset};
use crate::config::{
    canonical_provider_name, enabling_variable, vars, Config, RoutingConfig, Strategy,
};
use crate::error::GatewayError;
use crate::health::Pool;
use crate::providers::{self, Provider};
use crate::upstream::Upstreams;

/// The model name that asks for the whole pool (`GATEWAY_PROVIDERS`).
pub const AUTO: &str = "auto";

/// One place a request can be sent: a provider and the model name it gets.
#[derive(Clone)]
pub struct Route {
    pub provider: Arc<dyn Provider>,
    pub upstream_model: String,
}

impl Route {
    pub fn provider_name(&self) -> &str {
        &self.provider.config().name
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider_name(), self.upstream_model)
    }
}

pub struct Router {
    pub providers: BTreeMap<String, Arc<dyn Provider>>,
    /// Health and load balancing per provider (not for `echo`, which is always up).
    pub pools: BTreeMap<String, Arc<Pool>>,
    default_provider: Option<String>,
    routing: RoutingConfig,
}

/// The provider a bare model name belongs to, by its well-known prefix.
pub fn detect_provider(model: &str) -> Option<&'static str> {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-")
        || m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
        || m.starts_with("chatgpt-")
        || m.starts_with("text-embedding-")
    {
        Some("openai")
    } else if m.starts_with("claude-") {
        Some("anthropic")
    } else if m.starts_with("gemini-") {
        Some("google")
    } else {
        None
    }
}

impl Router {
    /// Builds every configured provider; an unknown wire format is a configuration error.
    pub fn new(config: &Config, upstreams: Arc<Upstreams>) -> Result<Self, String> {
        let providers: BTreeMap<String, Arc<dyn Provider>> = config
            .providers
            .values()
            .map(|p| Ok((p.name.clone(), providers::build(p, config)?)))
            .collect::<Result<_, String>>()?;
        let rc = &config.routing;
        let pools = providers
            .iter()
            .filter(|(_, p)| !p.config().backends.is_empty())
            .map(|(name, p)| {
                let pool = Pool::new(
                    p,
                    upstreams.clone(),
                    rc.failure_threshold,
                    rc.cooldown,
                    rc.health_check_interval,
                )
                .with_strategy(
                    rc.pool_strategy_for(p.config()),
                    rc.pool_affinity_bound,
                    // Ollama has no Prometheus `/metrics`: nothing to scrape.
                    rc.pool_metrics_interval
                        .filter(|_| p.config().flavor != crate::config::HostFlavor::Ollama),
                );
                (name.clone(), Arc::new(pool))
            })
            .collect();
        Ok(Router {
            providers,
            pools,
            default_provider: config.default_provider.clone(),
            routing: rc.clone(),
        })
    }

    pub fn pool(&self, provider: &str) -> Option<&Arc<Pool>> {
        self.pools.get(provider)
    }

    fn available(&self, provider: &str) -> bool {
        self.pools.get(provider).is_none_or(|p| p.is_available())
    }

    fn weight(&self, provider: &str) -> f64 {
        if self.routing.weights.is_empty() {
            return 1.0;
        }
        match self.routing.weights.get(provider) {
            Some(w) => *w as f64,
            // Not listed: the average share of those that are.
            None => {
                let sum: u32 = self.routing.weights.values().sum();
                sum as f64 / self.routing.weights.len() as f64
            }
        }
    }

    /// The pool for `auto`: `GATEWAY_PROVIDERS`, or every configured provider (echo only when
    /// nothing else is), each with its default model.
    fn auto_members(&self) -> Vec<Route> {
        let names: Vec<String> = if !self.routing.providers.is_empty() {
            self.routing.providers.clone()
        } else {
            let real: Vec<String> = self
                .providers
                .keys()
                .filter(|n| *n != "echo")
                .cloned()
                .collect();
            if real.is_empty() {
                vec!["echo".to_string()]
            } else {
                real
            }
        };
        names
            .iter()
            .filter_map(|n| {
                let p = self.providers.get(n)?;
                let model = p.config().default_model.clone()?;
                Some(Route {
                    provider: p.clone(),
                    upstream_model: model,
                })
            })
            .collect()
    }

    /// Orders routes by the configured strategy.
    fn order(&self, mut routes: Vec<Route>) -> Vec<Route> {
        let mut rng = rand::thread_rng();
        match self.routing.strategy {
            Strategy::Priority => routes,
            Strategy::Weighted => {
                // Sampling without replacement, by weight.
                let mut out = Vec::with_capacity(routes.len());
                while !routes.is_empty() {
                    let weights: Vec<f64> = routes
                        .iter()
                        .map(|r| self.weight(r.provider_name()))
                        .collect();
                    let total: f64 = weights.iter().sum();
                    let mut i = 0;
                    if total > 0.0 {
                        let mut x = rng.gen_range(0.0..total);
                        for (j, w) in weights.iter().enumerate() {
                            if x < *w {
                                i = j;
                                break;
                            }
                            x -= w;
                            i = j;
                        }
                    }
                    out.push(routes.remove(i));
                }
                out
            }
            Strategy::Latency => {
                let lat = |r: &Route| {
                    self.pools
                        .get(r.provider_name())
                        .and_then(|p| p.latency())
                        .unwrap_or(Duration::ZERO)
                };
                // Unmeasured (zero) first, so every provider gets measured.
                routes.sort_by_key(lat);
                // Exploration: now and then, try another one first.
                if routes.len() > 1 && rng.gen_bool(0.1) {
                    let i = rng.gen_range(1..routes.len());
                    let r = routes.remove(i);
                    routes.insert(0, r);
                }
                routes
            }
            Strategy::Cost => {
                let price = |r: &Route| {
                    crate::pricing::price(r.provider_name(), &r.upstream_model)
                        .map(|(i, o)| i + o)
                        .unwrap_or(f64::INFINITY)
                };
                routes.sort_by(|a, b| price(a).total_cmp(&price(b)));
                routes
            }
        }
    }

    /// Candidates for a request, in the order they are tried: the model's own provider first
    /// (or, for `auto` and aliases, the pool ordered by the strategy), then the failover order.
    /// Providers in cooldown are left out while others remain; when none remains the answer
    /// is 503 with `Retry-After` (a lone candidate is still tried: there is nothing better).
    pub fn plan(&self, model: &str, failover: bool) -> Result<Vec<Route>, GatewayError> {
        let model = model.trim();
        let mut routes = if model == AUTO || self.routing.aliases.contains_key(model) {
            let members = match self.routing.aliases.get(model) {
                Some(list) => list
                    .iter()
                    .map(|m| self.resolve(m))
                    .collect::<Result<Vec<_>, _>>()?,
                None => self.auto_members(),
            };
            if members.is_empty() {
                return Err(GatewayError::model_not_found(format!(
                    "model '{model}' has no members: set {} and each provider's default model",
                    vars::PROVIDERS
                )));
            }
            self.order(members)
        } else {
            let primary = self.resolve(model)?;
            let mut routes = vec![primary.clone()];
            if failover {
                let key = format!("{}/{}", primary.provider_name(), primary.upstream_model);
                let fallbacks = match self
                    .routing
                    .fallbacks
                    .get(model)
                    .or_else(|| self.routing.fallbacks.get(&key))
                {
                    Some(list) => list.iter().filter_map(|m| self.resolve(m).ok()).collect(),
                    None => self
                        .auto_members()
                        .into_iter()
                        .filter(|r| {
                            !self.routing.providers.is_empty()
                                && r.provider_name() != primary.provider_name()
                        })
                        .collect(),
                };
                routes.extend(self.order(fallbacks));
            }
            routes
        };
        if !failover {
            routes.truncate(1);
        }
        if routes.len() > 1 {
            let all = routes.clone();
            routes.retain(|r| self.available(r.provider_name()));
            if routes.is_empty() {
                let wait = all
                    .iter()
                    .filter_map(|r| self.pools.get(r.provider_name()))
                    .map(|p| p.retry_in())
                    .min()
                    .unwrap_or(Duration::from_secs(1));
                return Err(all_unavailable(wait));
            }
        }
        Ok(routes)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    fn configured(&self, name: &str, model: &str) -> Result<Route, GatewayError> {
        match self.providers.get(name) {
            Some(p) => Ok(Route {
                provider: p.clone(),
                upstream_model: model.to_string(),
            }),
            None => Err(GatewayError::model_not_found(format!(
                "provider '{name}' is not configured; set {} to enable it",
                enabling_variable(name)
            ))),
        }
    }

    /// Resolves a client's model name to its provider and upstream model.
    pub fn resolve(&self, model: &str) -> Result<Route, GatewayError> {
        let model = model.trim();
        if let Some((prefix, rest)) = model.split_once('/') {
            let p = prefix.to_ascii_lowercase();
            let name = canonical_provider_name(&p);
            if is_builtin(&p) || preset(name).is_some() || self.providers.contains_key(name) {
                if rest.is_empty() {
                    return Err(GatewayError::model_not_found(format!(
                        "model '{model}' names provider '{name}' but no model"
                    )));
                }
                return self.configured(name, rest);
            }
        }
        if let Some(name) = detect_provider(model) {
            return self.configured(name, model);
        }
        // A vendor's own model names (`grok-4`, `mistral-large-latest`) only while that vendor
        // is configured: otherwise they stay the default provider's (a local `mistral-7b`).
        if let Some(name) = detect_preset(model).filter(|n| self.providers.contains_key(*n)) {
            return self.configured(name, model);
        }
        if let Some(d) = &self.default_provider {
            return self.configured(d, model);
        }
        // A prefix that names no provider: most likely one the operator meant to add.
        if let Some((prefix, _)) = model.split_once('/').filter(|(p, _)| !p.is_empty()) {
            return Err(GatewayError::model_not_found(format!(
                "the model '{model}' does not name a configured provider: '{prefix}' is not one (to add it, set {}; or set {} for bare names)",
                crate::config::providers::enabling_variable(&prefix.to_ascii_lowercase()),
                vars::DEFAULT_PROVIDER
            )));
        }
        Err(GatewayError::model_not_found(format!(
            "the model '{model}' does not name a provider (use provider/model, e.g. openai/gpt-4o or echo/test) and {} is not set",
            vars::DEFAULT_PROVIDER
        )))
    }
}

/// 503 when every candidate is down or cooling down.
pub fn all_unavailable(wait: Duration) -> GatewayError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    GatewayError::new(
        503,
        "server_error",
        Some("providers_unavailable"),
        format!("every provider for this model is unavailable; retry in {secs}s"),
    )
    .with_retry_after(secs.to_string())
    .with_label("all_unavailable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn router(pairs: &[(&str, &str)]) -> Router {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = Config::from_map(&env).unwrap();
        let up = Arc::new(Upstreams::new(crate::upstream::Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        }));
        Router::new(&c, up).unwrap()
    }

    fn route(r: &Router, m: &str) -> Result<(String, String), GatewayError> {
        r.resolve(m)
            .map(|r| (r.provider_name().to_string(), r.upstream_model.clone()))
    }

    #[test]
    fn unknown_and_unconfigured_providers_say_which_variable_adds_them() {
        let r = router(&[]);
        let e = route(&r, "mock/mock-large").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(
            e.message.contains("GATEWAY_PROVIDER_MOCK_BASE_URL"),
            "{}",
            e.message
        );
        let e = route(&r, "anthropic/claude-sonnet-4").unwrap_err();
        assert!(e.message.contains("ANTHROPIC_API_KEY"), "{}", e.message);
        assert!(e.message.contains("ANTHROPIC_BASE_URL"), "{}", e.message);
        let e = route(&r, "my-model").unwrap_err();
        assert!(
            e.message.contains("GATEWAY_DEFAULT_PROVIDER"),
            "{}",
            e.message
        );
    }

    #[test]
    fn prefixes_detection_and_default() {
        let r = router(&[
            ("OPENAI_API_KEY", "k"),
            ("HF_TOKEN", "t"),
            ("VLLM_BASE_URL", "http://127.0.0.1:8000"),
            ("GATEWAY_DEFAULT_PROVIDER", "vllm"),
            ("GATEWAY_PROVIDER_GROQ_BASE_URL", "http://127.0.0.1:9"),
        ]);
        let s = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
        assert_eq!(route(&r, "openai/gpt-4o"), s("openai", "gpt-4o"));
        assert_eq!(route(&r, "gpt-4o"), s("openai", "gpt-4o"));
        assert_eq!(route(&r, "o3-mini"), s("openai", "o3-mini"));
        assert_eq!(
            route(&r, "huggingface/meta-llama/Llama-3.1-8B-Instruct"),
            s("huggingface", "meta-llama/Llama-3.1-8B-Instruct")
        );
        assert_eq!(route(&r, "hf/org/m"), s("huggingface", "org/m"));
        assert_eq!(
            route(&r, "meta-llama/Llama-3.1-8B-Instruct"),
            s("vllm", "meta-llama/Llama-3.1-8B-Instruct")
        );
        assert_eq!(route(&r, "groq/llama-3.1-70b"), s("groq", "llama-3.1-70b"));
        assert_eq!(route(&r, "echo/test"), s("echo", "test"));
        let e = route(&r, "claude-3-5-haiku-latest").unwrap_err();
        assert_eq!(e.status, 404);
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
        assert!(e.message.contains("ANTHROPIC_API_KEY"), "{}", e.message);
        let e = route(&r, "google/gemini-2.0-flash").unwrap_err();
        assert!(e.message.contains("GEMINI_API_KEY"));
    }

    #[test]
    fn unknown_without_default_is_404() {
        let r = router(&[]);
        let e = route(&r, "mystery-model").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("GATEWAY_DEFAULT_PROVIDER"));
        let e = route(&r, "ollama/llama3").unwrap_err();
        assert!(e.message.contains("OLLAMA_HOST"));
    }
    #[test]
    fn preset_names_are_detected_only_while_configured() {
        let s = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
        let r = router(&[
            ("XAI_API_KEY", "x"),
            ("MISTRAL_API_KEY", "m"),
            ("VLLM_BASE_URL", "http://127.0.0.1:8000"),
            ("GATEWAY_DEFAULT_PROVIDER", "vllm"),
        ]);
        assert_eq!(route(&r, "grok-4"), s("xai", "grok-4"));
        assert_eq!(route(&r, "xai/grok-4"), s("xai", "grok-4"));
        assert_eq!(
            route(&r, "mistral-large-latest"),
            s("mistral", "mistral-large-latest")
        );
        // DeepSeek is not configured: its names stay the default provider's.
        assert_eq!(route(&r, "deepseek-r1"), s("vllm", "deepseek-r1"));
        assert_eq!(
            route(&r, "deepseek-ai/DeepSeek-R1"),
            s("vllm", "deepseek-ai/DeepSeek-R1")
        );
        // A preset prefix that is not configured names its key variable.
        let e = route(&r, "groq/llama-3.3-70b-versatile").unwrap_err();
        assert!(e.message.contains("GROQ_API_KEY"), "{}", e.message);
    }
}
