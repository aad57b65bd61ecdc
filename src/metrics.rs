//! Prometheus metrics: the families, the functions other parts call to count what they see,
//! and the `/metrics` exposition (main listener, or the `GATEWAY_METRICS_LISTEN` listener).
//!
//! Requests are counted once, in the `logging` phase ([`request`]). Everything else is a
//! one-line call where the event happens: [`upstream_error`], [`failover`],
//! [`provider_health`], [`cache_lookup`], [`cache_size`], [`rate_limited`], and
//! [`StreamGuard`] around a stream being written.
//!
//! Labels stay low-cardinality and never carry a key: providers come from the configuration,
//! reasons and outcomes are `&'static str`, and models and key names pass through a cap
//! (after [`MAX_MODELS`] distinct models or [`MAX_KEY_NAMES`] key names, new values are
//! counted as `other`).
//!
//! ```sh
//! curl -s localhost:8080/metrics | grep gateway_requests_total
//! ```

use std::collections::HashSet;
use std::time::Duration;

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::Usage;
use crate::config::Config;

/// Distinct `(provider, model)` label pairs before new models become `other`.
pub const MAX_MODELS: usize = 100;
/// Distinct key names before new ones become `other`.
pub const MAX_KEY_NAMES: usize = 200;
/// Longest label value kept (longer ones are cut).
const MAX_LABEL_LEN: usize = 80;

/// Latency buckets in seconds: LLM requests run from milliseconds (cache hits) to minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Remembers label values up to a limit; later values become `other`.
struct LabelCap {
    seen: Mutex<HashSet<String>>,
    max: usize,
}

impl LabelCap {
    fn new(max: usize) -> Self {
        LabelCap {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }

    fn admit(&self, value: &str) -> bool {
        let mut seen = self.seen.lock();
        if seen.contains(value) {
            return true;
        }
        if seen.len() >= self.max {
            return false;
        }
        seen.insert(value.to_string());
        true
    }
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_LABEL_LEN {
        return s;
    }
    let mut end = MAX_LABEL_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    ttfb: HistogramVec,
    prompt_tokens: IntCounterVec,
    completion_tokens: IntCounterVec,
    cost: CounterVec,
    upstream_errors: IntCounterVec,
    failovers: IntCounterVec,
    provider_up: IntGaugeVec,
    redis_up: IntGaugeVec,
    cache_lookups: IntCounterVec,
    cache_entries: IntGauge,
    rate_limited: IntCounterVec,
    spend: CounterVec,
    active_streams: IntGauge,
    connections_refused: IntCounter,
    pool_picks: IntCounterVec,
    pool_affinity_hits: IntCounterVec,
    trace_spans: IntCounterVec,
    build_info: GaugeVec,
    start_time: Gauge,
    models: LabelCap,
    keys: LabelCap,
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        let m = Metrics {
            requests: counter(
                "gateway_requests_total",
                "Requests answered, by endpoint (chat, responses, messages, embeddings, ...), provider, model, status class and cache outcome.",
                &["endpoint", "provider", "model", "status_class", "cache"],
            )?,
            latency: histogram(
                "gateway_request_duration_seconds",
                "Time from the request to the last byte of the response (whole stream included).",
                &["provider", "stream"],
            )?,
            ttfb: histogram(
                "gateway_time_to_first_byte_seconds",
                "Time from the request to the first byte of the response body.",
                &["provider", "stream"],
            )?,
            prompt_tokens: counter(
                "gateway_prompt_tokens_total",
                "Prompt (input) tokens, as reported by the provider.",
                &["provider", "model"],
            )?,
            completion_tokens: counter(
                "gateway_completion_tokens_total",
                "Completion (output) tokens, as reported by the provider.",
                &["provider", "model"],
            )?,
            cost: CounterVec::new(
                Opts::new(
                    "gateway_cost_usd_total",
                    "Estimated cost in USD (price table times tokens; see GATEWAY_PRICES).",
                ),
                &["provider", "model"],
            )?,
            upstream_errors: counter(
                "gateway_upstream_errors_total",
                "Failed upstream attempts, by provider and reason.",
                &["provider", "reason"],
            )?,
            failovers: counter(
                "gateway_failovers_total",
                "Requests moved from one provider to the next.",
                &["from", "to"],
            )?,
            provider_up: IntGaugeVec::new(
                Opts::new(
                    "gateway_provider_up",
                    "1 while the provider is considered healthy, 0 while it is not.",
                ),
                &["provider"],
            )?,
            redis_up: IntGaugeVec::new(
                Opts::new(
                    "gateway_redis_up",
                    "1 while the feature's last Redis call succeeded, 0 from a failed one (or \
                     before the first) until one succeeds.",
                ),
                &["use"],
            )?,
            cache_lookups: counter(
                "gateway_cache_lookups_total",
                "Response cache lookups, by outcome (hit, miss, ...).",
                &["outcome"],
            )?,
            cache_entries: IntGauge::new(
                "gateway_cache_entries",
                "Entries in the response cache.",
            )?,
            rate_limited: counter(
                "gateway_rate_limited_total",
                "Requests refused by a rate limit, by key name and limit.",
                &["key", "limit"],
            )?,
            spend: CounterVec::new(
                Opts::new(
                    "gateway_spend_usd_total",
                    "Spend recorded against each key (estimated USD of real usage), by key name.",
                ),
                &["key"],
            )?,
            active_streams: IntGauge::new(
                "gateway_active_streams",
                "Streamed responses being written right now.",
            )?,
            connections_refused: IntCounter::new(
                "gateway_connections_refused_total",
                "Connections closed at once because GATEWAY_MAX_CONNECTIONS were open.",
            )?,
            pool_picks: counter(
                "gateway_pool_picks_total",
                "Requests given to each backend of a provider's pool, by why it was picked (affinity, least_load, spillover, least_requests, round_robin).",
                &["provider", "backend", "pick"],
            )?,
            pool_affinity_hits: counter(
                "gateway_pool_affinity_hits_total",
                "Requests sent to the backend that held their prompt's prefix (inference pools).",
                &["provider", "backend"],
            )?,
            trace_spans: counter(
                "gateway_trace_spans_total",
                "Finished trace spans by outcome: exported, failed (the collector refused or was unreachable), dropped (the export queue was full).",
                &["outcome"],
            )?,
            build_info: GaugeVec::new(
                Opts::new("gateway_build_info", "Always 1; the version is a label."),
                &["version"],
            )?,
            start_time: Gauge::new(
                "gateway_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
            )?,
            models: LabelCap::new(MAX_MODELS),
            keys: LabelCap::new(MAX_KEY_NAMES),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.latency.clone()))?;
        r.register(Box::new(m.ttfb.clone()))?;
        r.register(Box::new(m.prompt_tokens.clone()))?;
        r.register(Box::new(m.completion_tokens.clone()))?;
        r.register(Box::new(m.cost.clone()))?;
        r.register(Box::new(m.upstream_errors.clone()))?;
        r.register(Box::new(m.failovers.clone()))?;
        r.register(Box::new(m.provider_up.clone()))?;
        r.register(Box::new(m.redis_up.clone()))?;
        r.register(Box::new(m.cache_lookups.clone()))?;
        r.register(Box::new(m.cache_entries.clone()))?;
        r.register(Box::new(m.rate_limited.clone()))?;
        r.register(Box::new(m.spend.clone()))?;
        r.register(Box::new(m.active_streams.clone()))?;
        r.register(Box::new(m.connections_refused.clone()))?;
        r.register(Box::new(m.pool_picks.clone()))?;
        r.register(Box::new(m.pool_affinity_hits.clone()))?;
        r.register(Box::new(m.trace_spans.clone()))?;
        r.register(Box::new(m.build_info.clone()))?;
        r.register(Box::new(m.start_time.clone()))?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        m.start_time.set(now.as_secs_f64());
        Ok(m)
    }

    /// The model label: capped per `(provider, model)` pair.
    fn model_label<'a>(&self, provider: &str, model: &'a str) -> &'a str {
        let model = cut(model);
        if self.models.admit(&format!("{provider}\0{model}")) {
            model
        } else {
            "other"
        }
    }
}

static METRICS: Lazy<Option<Metrics>> = Lazy::new(|| match Metrics::new() {
    Ok(m) => Some(m),
    Err(e) => {
        log::error!("metrics disabled: {e}");
        None
    }
});

fn with(f: impl FnOnce(&Metrics)) {
    if let Some(m) = METRICS.as_ref() {
        f(m)
    }
}

/// Creates the families and marks every configured provider up (the health checker turns a
/// provider's gauge to 0 when it fails).
pub fn init(config: &Config) {
    with(|m| {
        for name in config.providers.keys() {
            m.provider_up.with_label_values(&[name]).set(1);
        }
    });
}

/// Paths that are not traffic: scrapes and liveness probes are not counted as requests.
pub fn is_probe(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("/v1").unwrap_or(p);
    matches!(p, "/metrics" | "/health" | "/healthz")
}

/// One finished request, as the `logging` phase sees it.
pub struct RequestRecord<'a> {
    /// The endpoint family (`chat`, `responses`, `messages`, `embeddings`, `models`, ...).
    pub endpoint: &'static str,
    pub provider: Option<&'a str>,
    /// The model the provider was asked for (only set once the model resolved to a provider).
    pub model: Option<&'a str>,
    pub status: u16,
    pub cache: Option<&'a str>,
    pub stream: bool,
    pub latency: Duration,
    pub ttfb: Option<Duration>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        // No response was written (the client went away first).
        _ => "none",
    }
}

/// Counts one request. Called once per request from the `logging` phase.
pub fn request(r: &RequestRecord) {
    with(|m| {
        let provider = cut(r.provider.unwrap_or("none"));
        let model = match (r.provider, r.model) {
            (Some(p), Some(model)) => m.model_label(p, model),
            _ => "none",
        };
        let stream = if r.stream { "true" } else { "false" };
        m.requests
            .with_label_values(&[
                r.endpoint,
                provider,
                model,
                status_class(r.status),
                r.cache.unwrap_or("none"),
            ])
            .inc();
        m.latency
            .with_label_values(&[provider, stream])
            .observe(r.latency.as_secs_f64());
        if let Some(t) = r.ttfb {
            m.ttfb
                .with_label_values(&[provider, stream])
                .observe(t.as_secs_f64());
        }
        if let Some(u) = r.usage {
            m.prompt_tokens
                .with_label_values(&[provider, model])
                .inc_by(u.prompt_tokens);
            m.completion_tokens
                .with_label_values(&[provider, model])
                .inc_by(u.completion_tokens);
        }
        if let Some(c) = r.cost_usd {
            if c.is_finite() && c >= 0.0 {
                m.cost.with_label_values(&[provider, model]).inc_by(c);
            }
        }
    });
}

/// An upstream attempt failed (`reason`: the error's label, e.g. `upstream_connect`,
/// `upstream_timeout`, `rate_limited`, `server_error`, `stream_interrupted`).
pub fn upstream_error(provider: &str, reason: &'static str) {
    with(|m| {
        m.upstream_errors
            .with_label_values(&[cut(provider), reason])
            .inc()
    });
}

/// A connection was refused: `GATEWAY_MAX_CONNECTIONS` were open.
pub fn connection_refused() {
    with(|m| m.connections_refused.inc());
}

/// Trace spans that were `exported`, `failed` or `dropped` (see `trace`).
pub fn trace_spans(outcome: &'static str, n: u64) {
    with(|m| m.trace_spans.with_label_values(&[outcome]).inc_by(n));
}

/// A request moved from provider `from` to provider `to`.
pub fn failover(from: &str, to: &str) {
    with(|m| m.failovers.with_label_values(&[cut(from), cut(to)]).inc());
}

/// The health checker's verdict on a provider.
pub fn provider_health(provider: &str, up: bool) {
    with(|m| {
        m.provider_up
            .with_label_values(&[cut(provider)])
            .set(i64::from(up))
    });
}

/// Whether a feature (`cache`, `rate limits`, `state`) reaches Redis.
pub fn redis_state(user: &'static str, up: bool) {
    with(|m| m.redis_up.with_label_values(&[user]).set(i64::from(up)));
}

/// A response cache lookup and its outcome (`hit`, `miss`, `semantic_hit`, `bypass`, ...).
pub fn cache_lookup(outcome: &'static str) {
    with(|m| m.cache_lookups.with_label_values(&[outcome]).inc());
}

/// The number of entries in the response cache now.
pub fn cache_size(entries: u64) {
    with(|m| {
        m.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX))
    });
}

/// A request refused by a rate limit. `key_name` is the key's configured NAME, never the key;
/// `limit` says which limit (`requests`, `tokens`, ...).
pub fn rate_limited(key_name: &str, limit: &'static str) {
    with(|m| {
        let key = cut(key_name);
        let key = if m.keys.admit(key) { key } else { "other" };
        m.rate_limited.with_label_values(&[key, limit]).inc()
    });
}

/// One pool backend's pick counters, made once when the pool is built so that counting a
/// pick is an atomic add (no label lookup on the request path).
pub struct PoolCounters {
    /// One per pick reason, in the order given to [`pool_counters`].
    picks: Vec<IntCounter>,
    affinity_hits: IntCounter,
}

impl PoolCounters {
    /// Counts a pick for reason number `reason`; `affinity` also counts an affinity hit.
    pub fn count(&self, reason: usize, affinity: bool) {
        if let Some(c) = self.picks.get(reason) {
            c.inc();
        }
        if affinity {
            self.affinity_hits.inc();
        }
    }
}

/// The counters of `backend` (its URL) in `provider`'s pool, one per pick reason.
pub fn pool_counters(provider: &str, backend: &str, reasons: &[&str]) -> Option<PoolCounters> {
    let m = METRICS.as_ref()?;
    let (provider, backend) = (cut(provider), cut(backend));
    let picks = reasons
        .iter()
        .map(|r| {
            m.pool_picks
                .get_metric_with_label_values(&[provider, backend, r])
                .ok()
        })
        .collect::<Option<Vec<_>>>()?;
    let affinity_hits = m
        .pool_affinity_hits
        .get_metric_with_label_values(&[provider, backend])
        .ok()?;
    Some(PoolCounters {
        picks,
        affinity_hits,
    })
}

/// Adds a request's settled cost to its key's spend.
pub fn spend(key_name: &str, usd: f64) {
    with(|m| {
        let key = cut(key_name);
        let key = if m.keys.admit(key) { key } else { "other" };
        m.spend.with_label_values(&[key]).inc_by(usd)
    });
}

/// Counts a stream as active for as long as it lives.
pub struct StreamGuard(());

impl StreamGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> StreamGuard {
        with(|m| m.active_streams.inc());
        StreamGuard(())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        with(|m| m.active_streams.dec());
    }
}

/// The exposition in Prometheus text format, and its content type.
pub fn render() -> (String, Vec<u8>) {
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Some(m) = METRICS.as_ref() {
        if let Err(e) = encoder.encode(&m.registry.gather(), &mut buf) {
            log::error!("encoding metrics: {e}");
        }
    }
    (encoder.format_type().to_string(), buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_capped() {
        let cap = LabelCap::new(2);
        assert!(cap.admit("a"));
        assert!(cap.admit("b"));
        assert!(cap.admit("a"));
        assert!(!cap.admit("c"));
        assert_eq!(cut(&"é".repeat(100)).len(), MAX_LABEL_LEN);
    }

    #[test]
    fn probes_are_not_traffic() {
        for p in [
            "/metrics",
            "/v1/metrics",
            "/health/",
            "/healthz",
            "/v1/health",
        ] {
            assert!(is_probe(p), "{p}");
        }
        assert!(!is_probe("/v1/chat/completions"));
        assert!(!is_probe("/v1/models"));
    }

    #[test]
    fn exposition_has_the_families() {
        request(&RequestRecord {
            endpoint: "chat",
            provider: Some("echo"),
            model: Some("test"),
            status: 200,
            cache: None,
            stream: true,
            latency: Duration::from_millis(20),
            ttfb: Some(Duration::from_millis(5)),
            usage: Some(Usage::new(3, 4)),
            cost_usd: Some(0.0),
        });
        upstream_error("openai", "upstream_timeout");
        rate_limited("team-a", "requests");
        let g = StreamGuard::new();
        let (ctype, body) = render();
        drop(g);
        let text = String::from_utf8(body).unwrap();
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        assert!(text.contains(
            "gateway_requests_total{cache=\"none\",endpoint=\"chat\",model=\"test\",provider=\"echo\",status_class=\"2xx\"} 1"
        ), "{text}");
        assert!(
            text.contains("gateway_completion_tokens_total{model=\"test\",provider=\"echo\"} 4")
        );
        assert!(text.contains(
            "gateway_upstream_errors_total{provider=\"openai\",reason=\"upstream_timeout\"} 1"
        ));
        assert!(text.contains("gateway_active_streams 1"));
        assert!(text.contains("gateway_rate_limited_total{key=\"team-a\",limit=\"requests\"} 1"));
    }
}
