//! Model name -> provider. `provider/model` picks that provider (the rest, slashes and all, goes
//! upstream); bare names are detected by prefix (`gpt-*`, `o1*`, `o3*`, `o4*`, `chatgpt-*` ->
//! openai, `claude-*` -> anthropic, `gemini-*` -> google) or fall to `GATEWAY_DEFAULT_PROVIDER`,
//! which receives the whole name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{canonical_provider_name, enabling_variable, vars, Config, BUILTIN_PROVIDERS};
use crate::error::GatewayError;
use crate::providers::{self, Provider};

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
    default_provider: Option<String>,
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
    pub fn new(config: &Config) -> Self {
        let providers = config
            .providers
            .values()
            .map(|p| (p.name.clone(), providers::build(p, config)))
            .collect();
        Router {
            providers,
            default_provider: config.default_provider.clone(),
        }
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
            if BUILTIN_PROVIDERS.contains(&p.as_str()) || self.providers.contains_key(name) {
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
        if let Some(d) = &self.default_provider {
            return self.configured(d, model);
        }
        Err(GatewayError::model_not_found(format!(
            "the model '{model}' does not name a provider (use provider/model, e.g. openai/gpt-4o or echo/test) and {} is not set",
            vars::DEFAULT_PROVIDER
        )))
    }
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
        Router::new(&Config::from_map(&env).unwrap())
    }

    fn route(r: &Router, m: &str) -> Result<(String, String), GatewayError> {
        r.resolve(m)
            .map(|r| (r.provider_name().to_string(), r.upstream_model.clone()))
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
}
