//! OpenTelemetry traces over OTLP HTTP/protobuf: one server span per request, a child span per
//! upstream attempt (failovers are siblings), spans for the cache lookup and the rate limits,
//! with the GenAI semantic-convention attributes. Off unless an endpoint is set
//! (`config::tracing`): then a request's context holds no trace (`None`) and nothing here runs.
//!
//! Spans are made with the OpenTelemetry SDK (sampler, ids, span data) and exported by
//! `opentelemetry-otlp`'s HTTP/protobuf exporter, batched on the gateway's own `trace-export`
//! thread: ending a span only appends it to a bounded queue under a short lock. A full queue
//! drops the span and counts it (`gateway_trace_spans_total{outcome="dropped"}`); a collector
//! that is down or hangs costs the export thread its timeout, never a request.
//!
//! The `traceparent` sent upstream names the attempt's own span as parent, in the client's
//! trace when it sent a `traceparent` (W3C Trace Context, `tracestate` kept).
//!
//! Prompts and answers are exported only with
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (secrets the gateway knows are cut
//! out first); key names are exported, keys never.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler as SdkSampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use parking_lot::{Condvar, Mutex};

use crate::api::Usage;
use crate::config::tracing::{Root, Sampler, TracingConfig};

/// A span the caller ends (cache lookup, rate limits).
pub type Span = opentelemetry_sdk::trace::Span;

/// Most bytes of a prompt or an answer exported when content capture is on.
const MAX_CONTENT: usize = 16 * 1024;
/// Most distinct finish reasons kept per request.
const MAX_FINISH_REASONS: usize = 8;

/// The process's tracer, once tracing is set up (`init`).
static TRACING: OnceLock<Tracing> = OnceLock::new();

struct Tracing {
    tracer: SdkTracer,
    /// Kept so the tracer stays live.
    _provider: SdkTracerProvider,
    queue: Arc<Queue>,
    config: TracingConfig,
    propagator: TraceContextPropagator,
    started: AtomicBool,
}

/// Sets up the tracer and the export queue (no thread yet: see [`start_export`]).
pub fn init(config: &TracingConfig) {
    if TRACING.get().is_some() {
        return;
    }
    // Header values (a vendor's API key) never reach a log line.
    crate::redact::set_group(
        "otlp",
        config.headers.iter().map(|(_, v)| v.expose().to_string()),
    );
    let queue = Arc::new(Queue::new(config.max_queue));
    let sampler = match config.sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::Ratio(r) => SdkSampler::TraceIdRatioBased(r),
        Sampler::ParentBased(root) => SdkSampler::ParentBased(Box::new(match root {
            Root::AlwaysOn => SdkSampler::AlwaysOn,
            Root::AlwaysOff => SdkSampler::AlwaysOff,
            Root::Ratio(r) => SdkSampler::TraceIdRatioBased(r),
        })),
    };
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(QueueProcessor(queue.clone()))
        .build();
    let tracer = provider.tracer("ai-gateway");
    let _ = TRACING.set(Tracing {
        tracer,
        _provider: provider,
        queue,
        config: config.clone(),
        propagator: TraceContextPropagator::new(),
        started: AtomicBool::new(false),
    });
    log::info!(
        "tracing: OTLP http/protobuf to {} (service {}, sampler {:?})",
        config.endpoint,
        config.service_name,
        config.sampler
    );
}

/// Starts the export thread in this process (after any fork). Later calls do nothing.
pub fn start_export() {
    let Some(t) = TRACING.get() else { return };
    if t.started.swap(true, Ordering::AcqRel) {
        return;
    }
    let config = t.config.clone();
    let queue = t.queue.clone();
    let spawned = std::thread::Builder::new()
        .name("trace-export".into())
        .spawn(move || export_loop(&config, &queue));
    if let Err(e) = spawned {
        log::error!("tracing: cannot start the export thread: {e}");
    }
}

/// Exports what is queued, waiting at most `limit` (before the process exits).
pub fn flush(limit: Duration) {
    if let Some(t) = TRACING.get() {
        if t.started.load(Ordering::Acquire) {
            t.queue.flush(limit);
        }
    }
}

// --- The export queue -------------------------------------------------------------------------

struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the export thread (a full batch, or a flush).
    wake: Condvar,
    /// Wakes a flush waiting for the export thread.
    done: Condvar,
    max: usize,
}

#[derive(Default)]
struct QueueState {
    spans: Vec<SpanData>,
    /// Flushes asked for, and flushes done (a flush waits until `flushed` reaches its number).
    asked: u64,
    flushed: u64,
    /// The export thread is waiting for spans: worth a notify.
    idle: bool,
}

impl Queue {
    fn new(max: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            max,
        }
    }

    fn push(&self, span: SpanData, batch: usize) {
        let mut s = self.state.lock();
        if s.spans.len() >= self.max {
            drop(s);
            crate::metrics::trace_spans("dropped", 1);
            return;
        }
        s.spans.push(span);
        let wake = s.idle && s.spans.len() >= batch;
        drop(s);
        if wake {
            self.wake.notify_one();
        }
    }

    fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut s = self.state.lock();
        s.asked += 1;
        let mine = s.asked;
        self.wake.notify_one();
        while s.flushed < mine {
            if self.done.wait_until(&mut s, deadline).timed_out() {
                return;
            }
        }
    }
}

#[derive(Debug)]
struct QueueProcessor(Arc<Queue>);

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue(max {})", self.max)
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let batch = TRACING.get().map_or(512, |t| t.config.max_batch);
        self.0.push(span, batch);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn export_loop(config: &TracingConfig, queue: &Queue) {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let headers = config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect();
    let built = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_headers(headers)
        .with_timeout(config.export_timeout);
    let built = match http_client(config) {
        Ok(client) => built.with_http_client(client).build(),
        Err(e) => {
            log::error!(
                "tracing: cannot set up TLS for {}: {e}; no spans are exported",
                config.endpoint
            );
            return;
        }
    };
    let mut exporter = match built {
        Ok(e) => e,
        Err(e) => {
            log::error!("tracing: cannot build the OTLP exporter: {e}; no spans are exported");
            return;
        }
    };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    exporter.set_resource(&resource);
    let mut last_warning: Option<Instant> = None;
    loop {
        let (batch, flush_to) = {
            let mut s = queue.state.lock();
            let deadline = Instant::now() + config.schedule_delay;
            while s.spans.len() < config.max_batch && s.asked == s.flushed {
                s.idle = true;
                if queue.wake.wait_until(&mut s, deadline).timed_out() {
                    break;
                }
            }
            s.idle = false;
            let n = s.spans.len().min(if s.asked > s.flushed {
                usize::MAX
            } else {
                config.max_batch
            });
            let batch: Vec<SpanData> = s.spans.drain(..n).collect();
            (batch, s.asked)
        };
        let mut rest = batch;
        while !rest.is_empty() {
            let later = rest.split_off(rest.len().min(config.max_batch));
            let chunk = std::mem::replace(&mut rest, later);
            let n = chunk.len() as u64;
            match futures::executor::block_on(exporter.export(chunk)) {
                Ok(()) => crate::metrics::trace_spans("exported", n),
                Err(e) => {
                    crate::metrics::trace_spans("failed", n);
                    // At most one warning a minute: a collector that is down says so once.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        log::warn!(
                            "tracing: export to {} failed: {}",
                            config.endpoint,
                            describe(&e)
                        );
                    }
                }
            }
        }
        let mut s = queue.state.lock();
        if flush_to > s.flushed {
            s.flushed = flush_to;
            queue.done.notify_all();
        }
    }
}

/// The exporter's blocking HTTP client (built on the export thread, outside any async runtime):
/// rustls on the ring provider Pingora uses, trusting the system roots and the configured CA file.
fn http_client(config: &TracingConfig) -> Result<reqwest_otlp::blocking::Client, String> {
    let builder = reqwest_otlp::blocking::Client::builder().timeout(config.export_timeout);
    if !config.endpoint.starts_with("https://") {
        return builder.build().map_err(|e| e.to_string());
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    for c in &config.ca_certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("the CA file holds a certificate rustls refuses: {e}"))?;
    }
    log::debug!(
        "tracing: trusting {added} system root certificates and {} from the CA file",
        config.ca_certs.len()
    );
    if roots.is_empty() {
        return Err(
            "no system root certificates and no OTEL_EXPORTER_OTLP_CERTIFICATE file".to_string(),
        );
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    builder
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| e.to_string())
}

fn describe(e: &OTelSdkError) -> String {
    crate::redact::text(&e.to_string()).into_owned()
}

// --- One request's trace ------------------------------------------------------------------

/// One request's spans, on its context while tracing is on.
pub struct RequestTrace {
    t: &'static Tracing,
    /// Holds the server span.
    server: Context,
    /// The upstream attempt under way.
    attempt: Option<Context>,
    response_model: Option<String>,
    finish_reasons: Vec<String>,
    /// The answer's bytes, when content capture is on.
    answer: Option<Vec<u8>>,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Whether tracing is on in this process.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// A request's trace, when tracing is on: the server span, a child of the client's
/// `traceparent` when it sent one.
pub fn start(headers: &http::HeaderMap, method: &str) -> Option<Box<RequestTrace>> {
    let t = TRACING.get()?;
    let parent = t
        .propagator
        .extract_with_context(&Context::new(), &Headers(headers));
    let span = t.tracer.build_with_context(
        SpanBuilder::from_name(method.to_string()).with_kind(SpanKind::Server),
        &parent,
    );
    Some(Box::new(RequestTrace {
        t,
        server: Context::new().with_span(span),
        attempt: None,
        response_model: None,
        finish_reasons: Vec::new(),
        answer: None,
    }))
}

/// `chat`, `embeddings`, `text_completion` (GenAI `gen_ai.operation.name`) for an endpoint
/// family; `None` for those that ask no model.
pub fn operation(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "chat" | "responses" | "messages" => Some("chat"),
        "embeddings" => Some("embeddings"),
        "completions" => Some("text_completion"),
        _ => None,
    }
}

/// What the request's server span says when it ends (plain values from the request context).
pub struct Summary<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub endpoint: &'a str,
    pub status: u16,
    pub outcome: &'static str,
    pub request_id: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub cache: Option<&'static str>,
    pub stream: bool,
    pub attempts: u32,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub ttfb: Option<Duration>,
    pub error: Option<&'a str>,
}

/// The method as a static value (no allocation) when it is a standard one.
fn static_method(m: &str) -> Value {
    match m {
        "POST" => "POST".into(),
        "GET" => "GET".into(),
        "DELETE" => "DELETE".into(),
        "HEAD" => "HEAD".into(),
        other => other.to_string().into(),
    }
}

fn string_array(v: &[String]) -> Value {
    Value::Array(opentelemetry::Array::String(
        v.iter().map(|s| s.clone().into()).collect(),
    ))
}

fn content(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_CONTENT)];
    let text = String::from_utf8_lossy(cut);
    crate::redact::text(&text).into_owned()
}

impl RequestTrace {
    fn recording(&self) -> bool {
        self.server.span().is_recording()
    }

    /// A child of the server span, started now (the caller sets its attributes and ends it).
    pub fn child(&self, name: &'static str) -> Span {
        self.t.tracer.build_with_context(
            SpanBuilder::from_name(name).with_kind(SpanKind::Internal),
            &self.server,
        )
    }

    /// The request body, exported only with content capture on.
    pub fn prompt(&self, body: &[u8]) {
        if self.t.config.capture_content && self.recording() {
            self.server
                .span()
                .set_attribute(KeyValue::new("gen_ai.input.messages", content(body)));
        }
    }

    /// Starts the span of one upstream attempt (ending the previous one if it is still open).
    pub fn start_attempt(
        &mut self,
        operation: &'static str,
        provider: &str,
        upstream_model: &str,
        number: u32,
    ) {
        if let Some(prev) = self.attempt.take() {
            prev.span().end();
        }
        self.response_model = None;
        self.finish_reasons.clear();
        if self.t.config.capture_content {
            self.answer = Some(Vec::new());
        }
        let span = self.t.tracer.build_with_context(
            SpanBuilder::from_name(format!("{operation} {upstream_model}"))
                .with_kind(SpanKind::Client)
                .with_attributes([
                    KeyValue::new("gen_ai.operation.name", operation),
                    KeyValue::new("gen_ai.provider.name", provider.to_string()),
                    KeyValue::new("gen_ai.request.model", upstream_model.to_string()),
                    KeyValue::new("gateway.attempt", i64::from(number)),
                ]),
            &self.server,
        );
        self.attempt = Some(Context::new().with_span(span));
    }

    /// `traceparent` (and `tracestate`) for the upstream: the attempt's span as parent. The
    /// W3C `traceparent` is written out here (hex digits into one buffer: the formatting
    /// machinery the propagator uses costs ten times as much per request); `tracestate` is the
    /// SDK's.
    pub fn upstream_headers(&self) -> Vec<(&'static str, String)> {
        let cx = self.attempt.as_ref().unwrap_or(&self.server);
        let span = cx.span();
        let sc = span.span_context();
        let mut out = Vec::with_capacity(2);
        if !sc.is_valid() {
            return out;
        }
        let mut tp = String::with_capacity(55);
        tp.push_str("00-");
        push_hex(&mut tp, &sc.trace_id().to_bytes());
        tp.push('-');
        push_hex(&mut tp, &sc.span_id().to_bytes());
        tp.push('-');
        push_hex(&mut tp, &[sc.trace_flags().to_u8()]);
        out.push(("traceparent", tp));
        let state = sc.trace_state().header();
        if !state.is_empty() {
            out.push(("tracestate", state));
        }
        out
    }

    /// Reads the upstream's answer as it passes (the model it names, finish reasons; the text
    /// itself only with content capture on).
    pub fn observe(&mut self, bytes: &[u8]) {
        if self.attempt.is_none() || !self.recording() {
            return;
        }
        if self.response_model.is_none() {
            self.response_model = json_strings(bytes, &FIND_MODEL).next().map(str::to_string);
        }
        for finder in [&*FIND_FINISH, &*FIND_STOP] {
            for r in json_strings(bytes, finder) {
                if self.finish_reasons.len() < MAX_FINISH_REASONS
                    && !self.finish_reasons.iter().any(|f| f == r)
                {
                    self.finish_reasons.push(r.to_string());
                }
            }
        }
        if let Some(a) = self.answer.as_mut() {
            let room = MAX_CONTENT.saturating_sub(a.len());
            a.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Ends the attempt's span: served (`error` None) or failed.
    pub fn end_attempt(
        &mut self,
        error: Option<(&str, &str)>,
        upstream_status: Option<u16>,
        usage: Option<Usage>,
    ) {
        let Some(cx) = self.attempt.take() else {
            return;
        };
        let span = cx.span();
        if span.is_recording() {
            let mut a = Vec::with_capacity(5);
            if let Some(s) = upstream_status {
                a.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            match error {
                Some((label, message)) => {
                    a.push(KeyValue::new("error.type", label.to_string()));
                    span.set_status(Status::error(crate::redact::text(message).into_owned()));
                }
                None => self.gen_ai_answer(&mut a, usage),
            }
            span.set_attributes(a);
        }
        span.end();
    }

    fn gen_ai_answer(&self, a: &mut Vec<KeyValue>, usage: Option<Usage>) {
        if let Some(m) = &self.response_model {
            a.push(KeyValue::new("gen_ai.response.model", m.clone()));
        }
        if !self.finish_reasons.is_empty() {
            a.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                string_array(&self.finish_reasons),
            ));
        }
        if let Some(u) = usage {
            a.push(KeyValue::new(
                "gen_ai.usage.input_tokens",
                u.prompt_tokens as i64,
            ));
            a.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                u.completion_tokens as i64,
            ));
        }
    }

    /// A cache hit or the echo provider answered: the answer's model and finish reason, known.
    pub fn answered(&mut self, model: Option<&str>, finish_reason: Option<&str>) {
        if let Some(m) = model {
            self.response_model = Some(m.to_string());
        }
        if let Some(f) = finish_reason {
            self.finish_reasons = vec![f.to_string()];
        }
    }

    /// Ends the server span with what the request came to.
    pub fn finish(mut self, s: &Summary) {
        if self.attempt.is_some() {
            // An attempt the request left half-way (a timeout dropped it).
            self.end_attempt(Some(("cancelled", "the request ended first")), None, None);
        }
        let span = self.server.span();
        if span.is_recording() {
            let route = if s.endpoint == "other" { "" } else { s.path };
            span.update_name(if route.is_empty() {
                s.method.to_string()
            } else {
                format!("{} {route}", s.method)
            });
            let mut a = Vec::with_capacity(20);
            a.push(KeyValue::new(
                "http.request.method",
                static_method(s.method),
            ));
            a.push(KeyValue::new("url.path", s.path.to_string()));
            a.push(KeyValue::new(
                "http.response.status_code",
                i64::from(s.status),
            ));
            a.push(KeyValue::new(
                "gateway.request_id",
                s.request_id.to_string(),
            ));
            a.push(KeyValue::new("gateway.outcome", s.outcome));
            a.push(KeyValue::new("gateway.stream", s.stream));
            a.push(KeyValue::new("gateway.attempts", i64::from(s.attempts)));
            if let Some(op) = operation(s.endpoint) {
                a.push(KeyValue::new("gen_ai.operation.name", op));
            }
            if let Some(p) = s.provider {
                a.push(KeyValue::new("gen_ai.provider.name", p.to_string()));
            }
            if let Some(m) = s.model {
                a.push(KeyValue::new("gen_ai.request.model", m.to_string()));
            }
            if let Some(m) = &self.response_model {
                a.push(KeyValue::new("gen_ai.response.model", m.clone()));
            } else if let (Some(m), Some(_)) = (s.upstream_model, s.usage) {
                a.push(KeyValue::new("gen_ai.response.model", m.to_string()));
            }
            if !self.finish_reasons.is_empty() {
                a.push(KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    string_array(&self.finish_reasons),
                ));
            }
            if let Some(u) = s.usage {
                a.push(KeyValue::new(
                    "gen_ai.usage.input_tokens",
                    u.prompt_tokens as i64,
                ));
                a.push(KeyValue::new(
                    "gen_ai.usage.output_tokens",
                    u.completion_tokens as i64,
                ));
            }
            if let Some(t) = s.ttfb.filter(|_| s.stream) {
                a.push(KeyValue::new(
                    "gen_ai.server.time_to_first_token",
                    t.as_secs_f64(),
                ));
            }
            if let Some(k) = s.key_name {
                a.push(KeyValue::new("gateway.key.name", k.to_string()));
            }
            if let Some(c) = s.cache {
                a.push(KeyValue::new("gateway.cache", c));
            }
            if let Some(c) = s.cost_usd {
                a.push(KeyValue::new("gateway.cost_usd", c));
            }
            if let Some(answer) = self.answer.as_deref().filter(|a| !a.is_empty()) {
                a.push(KeyValue::new("gen_ai.output.messages", content(answer)));
            }
            span.set_attributes(a);
            if s.status >= 500 {
                let msg = s.error.unwrap_or(s.outcome);
                span.set_status(Status::error(crate::redact::text(msg).into_owned()));
            }
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

/// Ends the rate-limit span: whether the limits let the request through.
pub fn end_rate_limit(span: Option<Span>, allowed: bool) {
    if let Some(mut s) = span {
        s.set_attribute(KeyValue::new("gateway.rate_limit.allowed", allowed));
        s.end();
    }
}

/// Ends the cache-lookup span with its outcome (`hit`, `miss`, ...).
pub fn end_cache_lookup(span: Option<Span>, outcome: Option<&'static str>) {
    if let Some(mut s) = span {
        s.set_attribute(KeyValue::new("gateway.cache", outcome.unwrap_or("none")));
        s.end();
    }
}

/// The keys `observe` looks for, their searchers built once.
static FIND_MODEL: once_cell::sync::Lazy<memchr::memmem::Finder<'static>> =
    once_cell::sync::Lazy::new(|| memchr::memmem::Finder::new(b"\"model\""));
static FIND_FINISH: once_cell::sync::Lazy<memchr::memmem::Finder<'static>> =
    once_cell::sync::Lazy::new(|| memchr::memmem::Finder::new(b"\"finish_reason\""));
static FIND_STOP: once_cell::sync::Lazy<memchr::memmem::Finder<'static>> =
    once_cell::sync::Lazy::new(|| memchr::memmem::Finder::new(b"\"stop_reason\""));

/// The string values of `key` in a JSON text (`"key": "value"`; `null` and other types are
/// skipped). A cheap scan of the upstream's bytes: the answer is not parsed for this.
fn json_strings<'a>(
    hay: &'a [u8],
    finder: &'a memchr::memmem::Finder<'static>,
) -> impl Iterator<Item = &'a str> + 'a {
    let key = finder.needle();
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let i = at + finder.find(hay.get(at..)?)?;
        at = i + key.len();
        let rest = &hay[at..];
        let skip = |r: &[u8]| r.iter().take_while(|c| c.is_ascii_whitespace()).count();
        let mut j = skip(rest);
        if rest.get(j) != Some(&b':') {
            continue;
        }
        j += 1;
        j += skip(&rest[j..]);
        if rest.get(j) != Some(&b'"') {
            continue;
        }
        let start = j + 1;
        let len = memchr::memchr(b'"', &rest[start..])?;
        let v = &rest[start..start + len];
        at += start + len;
        if v.is_empty() || v.contains(&b'\\') {
            continue;
        }
        if let Ok(s) = std::str::from_utf8(v) {
            return Some(s);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_json_string_values() {
        let body = br#"{"model": "gpt-4o-2024", "choices":[{"finish_reason":null},{"finish_reason":"stop"}],"x":{"model":3}}"#;
        assert_eq!(
            json_strings(body, &FIND_MODEL).collect::<Vec<_>>(),
            ["gpt-4o-2024"]
        );
        assert_eq!(
            json_strings(body, &FIND_FINISH).collect::<Vec<_>>(),
            ["stop"]
        );
        let sse = b"data: {\"delta\":{\"stop_reason\":\"end_turn\"}}\n\ndata: {\"model\"";
        assert_eq!(
            json_strings(sse, &FIND_STOP).collect::<Vec<_>>(),
            ["end_turn"]
        );
        assert_eq!(json_strings(sse, &FIND_MODEL).count(), 0);
    }

    #[test]
    fn operations() {
        assert_eq!(operation("messages"), Some("chat"));
        assert_eq!(operation("embeddings"), Some("embeddings"));
        assert_eq!(operation("health"), None);
    }
}
