//! Issue 24 (3): OpenTelemetry traces over OTLP HTTP/protobuf. A collector stand-in (a real HTTP
//! server on 127.0.0.1 that decodes each export with the OpenTelemetry proto definitions)
//! receives the gateway's spans; mock upstreams record the `traceparent` they were sent.

mod common;
mod mocks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::{json, Value};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const GATEWAY_KEY: &str = "sk-gw-trace-secret";

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    /// 0 unset, 1 ok, 2 error.
    status: i32,
    start: u64,
    end: u64,
    attrs: HashMap<String, Value>,
    service: String,
    /// The instrumentation scope's name.
    scope: String,
    /// W3C trace flags (bits 0-7) and whether the parent is remote (bits 8 and 9).
    flags: u32,
    trace_state: String,
}

impl Span {
    fn str(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).and_then(Value::as_str)
    }
    fn int(&self, k: &str) -> Option<i64> {
        self.attrs.get(k).and_then(Value::as_i64)
    }
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn any(v: Option<Any>) -> Value {
    match v {
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        Some(Any::ArrayValue(a)) => Value::Array(
            a.values
                .into_iter()
                .map(|v| any(v.value))
                .collect::<Vec<_>>(),
        ),
        _ => Value::Null,
    }
}

/// Each export's path and headers.
type Posts = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// The collector stand-in: `POST /v1/traces` (or any path), protobuf in, spans recorded.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Posts,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct CollectorState {
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Posts,
    hang: Arc<AtomicBool>,
}

async fn collect(
    State(st): State<CollectorState>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let h = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    st.posts.lock().unwrap().push((uri.path().to_string(), h));
    if st.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| any(kv.value.clone().and_then(|v| v.value)))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss.scope.map(|s| s.name).unwrap_or_default();
            for s in ss.spans {
                out.push(Span {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    kind: s.kind,
                    status: s.status.map_or(0, |st| st.code),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    attrs: s
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, any(kv.value.and_then(|v| v.value))))
                        .collect(),
                    service: service.clone(),
                    scope: scope.clone(),
                    flags: s.flags,
                    trace_state: s.trace_state,
                });
            }
        }
    }
    st.spans.lock().unwrap().extend(out);
    let body = ExportTraceServiceResponse::default().encode_to_vec();
    ([("content-type", "application/x-protobuf")], body).into_response()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Collector {
    async fn start(hang: bool) -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let st = CollectorState {
            spans: Arc::default(),
            posts: Arc::default(),
            hang: Arc::new(AtomicBool::new(hang)),
        };
        let (spans, posts) = (st.spans.clone(), st.posts.clone());
        let app = axum::Router::new()
            .fallback(axum::routing::post(collect))
            .with_state(st);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            port,
            spans,
            posts,
            task,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` server spans have arrived, then returns every span so far.
    async fn wait_servers(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if spans.iter().filter(|s| s.kind == SERVER).count() >= n {
                // The children end before their server span: they are in the same or an
                // earlier export.
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{n} server spans never arrived: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn otel_vars(collector: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_SERVICE_NAME".into(), "gw-under-test".into()),
        ("OTEL_TRACES_SAMPLER".into(), "always_on".into()),
    ]
}

fn start(vars: &[(String, String)]) -> Gateway {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start(&refs)
}

fn failing_upstream() -> Handler {
    Arc::new(|_r: &Recorded| {
        json_response(
            503,
            json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}),
        )
    })
}

fn traceparent_of(r: &Recorded) -> (String, String) {
    let tp = r.header("traceparent").expect("traceparent sent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_attempts_are_sibling_spans_in_the_clients_trace() {
    let collector = Collector::start(false).await;
    let a = Mock::start(failing_upstream()).await;
    let b = Mock::start(openai_handler("Paris is the capital.")).await;
    let mut vars = otel_vars(&collector.base());
    vars.extend([
        ("GATEWAY_PROVIDER_A_BASE_URL".into(), a.url()),
        ("GATEWAY_PROVIDER_A_DEFAULT_MODEL".into(), "m".into()),
        ("GATEWAY_PROVIDER_B_BASE_URL".into(), b.url()),
        ("GATEWAY_PROVIDER_B_DEFAULT_MODEL".into(), "m".into()),
        ("GATEWAY_PROVIDERS".into(), "a,b".into()),
        ("GATEWAY_STRATEGY".into(), "priority".into()),
        (
            "GATEWAY_API_KEYS".into(),
            format!("team-a={GATEWAY_KEY}:rpm=1000"),
        ),
        ("GATEWAY_CACHE_BACKEND".into(), "memory".into()),
        ("GATEWAY_PRICES".into(), "m=1000/2000".into()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "x-collector-token=tok%20123".into(),
        ),
    ]);
    let gw = start(&vars);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .json(&chat_body("auto", "What is the capital of France?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = collector.wait_servers(1).await;
    let server = spans.iter().find(|s| s.kind == SERVER).unwrap();
    assert_eq!(server.trace_id, TRACE_ID, "the client's trace");
    assert_eq!(
        server.parent, CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(server.service, "gw-under-test");
    assert_eq!(server.scope, "ai-gateway");
    assert_eq!(server.trace_state, "vendor=abc", "the client's tracestate");
    assert_eq!(
        server.flags, 0x301,
        "sampled, and the parent known to be remote"
    );
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(server.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(server.str("gen_ai.request.model"), Some("auto"));
    assert_eq!(server.str("gen_ai.provider.name"), Some("b"));
    assert_eq!(server.str("gen_ai.response.model"), Some("m"));
    assert_eq!(server.int("gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(server.int("gen_ai.usage.output_tokens"), Some(7));
    assert_eq!(
        server.attrs.get("gen_ai.response.finish_reasons"),
        Some(&json!(["stop"]))
    );
    assert_eq!(server.str("gateway.key.name"), Some("team-a"));
    assert_eq!(server.str("gateway.cache"), Some("miss"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(server.int("gateway.attempts"), Some(2));
    // 11 x 1000/1M + 7 x 2000/1M
    let cost = server.attrs["gateway.cost_usd"].as_f64().unwrap();
    assert!((cost - 0.025).abs() < 1e-9, "{cost}");
    // No prompt, no answer, no key.
    for s in &spans {
        assert!(!s.attrs.contains_key("gen_ai.input.messages"), "{s:?}");
        assert!(!s.attrs.contains_key("gen_ai.output.messages"), "{s:?}");
        let all = format!("{:?}", s.attrs);
        assert!(
            !all.contains(GATEWAY_KEY) && !all.contains("capital"),
            "{all}"
        );
    }

    // The attempts: siblings under the server span, the first failed.
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| s.int("gateway.attempt"));
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for s in &attempts {
        assert_eq!(s.parent, server.span_id);
        assert_eq!(s.flags, 0x101, "sampled, and the parent known to be local");
        assert_eq!(s.trace_id, TRACE_ID);
        assert_eq!(s.str("gen_ai.request.model"), Some("m"));
        assert!(s.start >= server.start && s.end <= server.end);
    }
    assert_eq!(attempts[0].str("gen_ai.provider.name"), Some("a"));
    assert_eq!(attempts[0].status, 2, "the failed attempt is an error");
    assert_eq!(attempts[0].int("http.response.status_code"), Some(503));
    assert_eq!(attempts[1].str("gen_ai.provider.name"), Some("b"));
    assert_ne!(attempts[1].status, 2);
    assert_eq!(attempts[1].int("gen_ai.usage.output_tokens"), Some(7));
    assert!(attempts[0].end <= attempts[1].start);

    // Each upstream was sent its own attempt's span as parent, in the client's trace.
    let (tid, parent) = traceparent_of(&a.last());
    assert_eq!(
        (tid.as_str(), parent.as_str()),
        (TRACE_ID, attempts[0].span_id.as_str())
    );
    let (tid, parent) = traceparent_of(&b.last());
    assert_eq!(
        (tid.as_str(), parent.as_str()),
        (TRACE_ID, attempts[1].span_id.as_str())
    );
    assert_eq!(b.last().header("tracestate"), Some("vendor=abc"));

    // Cache lookup and rate limits: children of the server span.
    let child = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    };
    let cache = child("gateway.cache.lookup");
    assert_eq!(cache.parent, server.span_id);
    assert_eq!(cache.str("gateway.cache"), Some("miss"));
    let limits = child("gateway.rate_limit");
    assert_eq!(limits.parent, server.span_id);
    assert_eq!(
        limits.attrs.get("gateway.rate_limit.allowed"),
        Some(&json!(true))
    );

    // The export: HTTP/protobuf to <endpoint>/v1/traces with OTEL_EXPORTER_OTLP_HEADERS.
    let posts = collector.posts.lock().unwrap().clone();
    assert!(posts.iter().all(|(p, _)| p == "/v1/traces"), "{posts:?}");
    assert_eq!(posts[0].1["content-type"], "application/x-protobuf");
    assert_eq!(posts[0].1["x-collector-token"], "tok 123");
    // A request without a traceparent starts its own trace.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat_body("b/m", "again", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = collector.wait_servers(2).await;
    let second = spans.iter().filter(|s| s.kind == SERVER).nth(1).unwrap();
    assert_ne!(second.trace_id, TRACE_ID);
    assert!(second.parent.is_empty());
    let (tid, _) = traceparent_of(&b.last());
    assert_eq!(tid, second.trace_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_messages_responses_and_embeddings_are_traced() {
    let collector = Collector::start(false).await;
    // An OpenAI stream whose events come 100 ms apart.
    let openai = Mock::start(Arc::new(|r: &Recorded| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("m").to_string();
        if body["stream"] == json!(true) {
            sse_response(
                openai_stream_events(&model, &["Rome ", "is ", "the ", "capital."], true),
                Duration::from_millis(100),
                None,
            )
        } else {
            json_response(200, openai_completion(&model, "Rome is the capital."))
        }
    }))
    .await;
    let anthropic = Mock::start(mocks::anthropic()).await;
    let mut vars = otel_vars(&collector.base());
    vars.extend([
        ("OPENAI_BASE_URL".into(), openai.url()),
        ("OPENAI_API_KEY".into(), "sk-upstream-openai".into()),
        ("OPENAI_NATIVE_RESPONSES".into(), "off".into()),
        ("ANTHROPIC_BASE_URL".into(), anthropic.url()),
        ("ANTHROPIC_API_KEY".into(), mocks::ANTHROPIC_KEY.into()),
        (
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT".into(),
            "true".into(),
        ),
    ]);
    let gw = start(&vars);
    let c = client();

    // A chat stream: the server span ends at the last byte.
    let mut body = chat_body("openai/gpt-4o-mini", "Capital of Italy?", true);
    body["stream_options"] = json!({"include_usage": true});
    let t = Instant::now();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let took = t.elapsed();
    assert!(text.contains("capital."), "{text}");
    let spans = collector.wait_servers(1).await;
    let server = spans.iter().find(|s| s.kind == SERVER).unwrap().clone();
    let lasted = Duration::from_nanos(server.end - server.start);
    assert!(
        lasted >= Duration::from_millis(400) && lasted <= took + Duration::from_millis(50),
        "span {lasted:?}, request {took:?}"
    );
    let ttft = server.attrs["gen_ai.server.time_to_first_token"]
        .as_f64()
        .unwrap();
    assert!(ttft > 0.0 && ttft < lasted.as_secs_f64() - 0.2, "{ttft}");
    assert_eq!(server.attrs["gateway.stream"], json!(true));
    assert_eq!(server.str("gen_ai.response.model"), Some("gpt-4o-mini"));
    assert_eq!(server.int("gen_ai.usage.output_tokens"), Some(4));
    assert_eq!(
        server.attrs.get("gen_ai.response.finish_reasons"),
        Some(&json!(["stop"]))
    );
    // Opted in: the prompt and the answer.
    assert!(server
        .str("gen_ai.input.messages")
        .is_some_and(|m| m.contains("Capital of Italy?")));
    assert!(server
        .str("gen_ai.output.messages")
        .is_some_and(|m| m.contains("capital.")));
    let attempt = spans
        .iter()
        .find(|s| s.kind == CLIENT && s.parent == server.span_id)
        .unwrap();
    assert!(
        attempt.end >= server.start + 400_000_000,
        "the attempt lasts the stream"
    );
    let (tid, parent) = traceparent_of(&openai.last());
    assert_eq!(
        (tid, parent),
        (server.trace_id.clone(), attempt.span_id.clone())
    );

    // Anthropic Messages (native pass-through), Responses (translated to chat), embeddings
    // (the echo provider: no upstream, still an attempt span).
    let messages = json!({"model": "anthropic/claude-3-5-haiku-latest", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}]});
    let r = c
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let responses = json!({"model": "openai/gpt-4o-mini", "input": "hello"});
    let r = c
        .post(gw.url("/v1/responses"))
        .json(&responses)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let embeddings = json!({"model": "echo/embed", "input": "hello"});
    let r = c
        .post(gw.url("/v1/embeddings"))
        .json(&embeddings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let spans = collector.wait_servers(4).await;
    let server_for = |path: &str| {
        spans
            .iter()
            .find(|s| s.kind == SERVER && s.str("url.path") == Some(path))
            .unwrap_or_else(|| panic!("no server span for {path}: {spans:#?}"))
    };
    let attempt_of = |server: &Span| {
        spans
            .iter()
            .find(|s| s.kind == CLIENT && s.parent == server.span_id)
            .unwrap_or_else(|| panic!("no attempt under {server:?}"))
            .clone()
    };
    let m = server_for("/v1/messages");
    assert_eq!(m.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(m.str("gen_ai.provider.name"), Some("anthropic"));
    assert!(m.int("gen_ai.usage.output_tokens").is_some(), "{m:?}");
    assert!(
        m.attrs.contains_key("gen_ai.response.finish_reasons"),
        "{m:?}"
    );
    let (tid, parent) = traceparent_of(&anthropic.last());
    assert_eq!((tid, parent), (m.trace_id.clone(), attempt_of(m).span_id));
    let resp = server_for("/v1/responses");
    assert_eq!(resp.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(resp.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(
        attempt_of(resp).str("gen_ai.request.model"),
        Some("gpt-4o-mini")
    );
    // No limits configured: nothing to check, no rate-limit span.
    assert!(!spans.iter().any(|s| s.name == "gateway.rate_limit"));
    let e = server_for("/v1/embeddings");
    assert_eq!(e.str("gen_ai.operation.name"), Some("embeddings"));
    assert_eq!(
        attempt_of(e).str("gen_ai.operation.name"),
        Some("embeddings")
    );
}

/// Sends `n` chat requests one after another; each must succeed, none may take long.
async fn unaffected(gw: &Gateway, n: usize) {
    let c = client();
    for i in 0..n {
        let t = Instant::now();
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("echo/m", &format!("request {i}"), i % 2 == 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    let r = c.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_down_or_hanging_never_touches_requests() {
    // Down: nothing listens on the port.
    let closed = free_port();
    let mut vars = otel_vars(&format!("http://127.0.0.1:{closed}"));
    vars.push(("OTEL_BSP_MAX_QUEUE_SIZE".into(), "8".into()));
    let gw = start(&vars);
    unaffected(&gw, 30).await;
    // Hanging: accepts, never answers (the export times out on its own thread).
    let hanging = Collector::start(true).await;
    let mut vars = otel_vars(&hanging.base());
    vars.push(("OTEL_BSP_MAX_QUEUE_SIZE".into(), "8".into()));
    vars.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "30000".into()));
    let gw2 = start(&vars);
    unaffected(&gw2, 30).await;
    // The hanging collector holds the export thread: the bounded queue dropped what did not
    // fit, and said so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = client()
            .get(gw2.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let dropped = m
            .lines()
            .find(|l| l.starts_with("gateway_trace_spans_total{outcome=\"dropped\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no dropped spans counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !hanging.posts.lock().unwrap().is_empty(),
        "an export was tried"
    );
    unaffected(&gw, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_sdk_disabled_turns_tracing_off() {
    let collector = Collector::start(false).await;
    let up = Mock::start(openai_handler("ok")).await;
    let mut vars = otel_vars(&collector.base());
    vars.extend([
        ("OTEL_SDK_DISABLED".into(), "true".into()),
        ("GATEWAY_PROVIDER_A_BASE_URL".into(), up.url()),
        ("GATEWAY_PROVIDER_A_DEFAULT_MODEL".into(), "m".into()),
    ]);
    let gw = start(&vars);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&chat_body("a/m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up.last().header("traceparent").is_none());
    // Ten schedule delays: nothing was exported.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(collector.posts.lock().unwrap().is_empty());
    // Without OTEL_SDK_DISABLED the same set-up exports.
    vars.retain(|(k, _)| k != "OTEL_SDK_DISABLED");
    let gw = start(&vars);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("a/m", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    collector.wait_servers(1).await;
    assert!(up.last().header("traceparent").is_some());
}

#[test]
fn bad_tracing_variables_stop_start_up_naming_them() {
    for (var, value) in [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
    ] {
        let mut vars = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        vars.retain(|(k, _)| *k != var);
        vars.push((var, value));
        let out = Gateway::command(&vars)
            .arg("--check-config")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn samplers_follow_the_clients_decision_or_the_ratio() {
    let collector = Collector::start(false).await;
    let up = Mock::start(openai_handler("ok")).await;
    let mut vars = otel_vars(&collector.base());
    vars.retain(|(k, _)| k != "OTEL_TRACES_SAMPLER");
    vars.extend([
        ("GATEWAY_PROVIDER_A_BASE_URL".into(), up.url()),
        ("GATEWAY_PROVIDER_A_DEFAULT_MODEL".into(), "m".into()),
    ]);
    // The default, parentbased_always_on: a client that says "not sampled" is not traced, and
    // the upstream is told so, in the client's trace.
    let gw = start(&vars);
    let c = client();
    let send = |tp: Option<String>| {
        let mut r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("a/m", "hi", false));
        if let Some(tp) = tp {
            r = r.header("traceparent", tp);
        }
        r.send()
    };
    let r = send(Some(format!("00-{TRACE_ID}-{CLIENT_SPAN}-00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tp = up.last().header("traceparent").unwrap().to_string();
    assert!(
        tp.starts_with(&format!("00-{TRACE_ID}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    // A sampled client and one without context are traced.
    let r = send(Some(format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let spans = collector.wait_servers(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let servers: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|s| s.kind == SERVER)
        .collect();
    assert_eq!(servers.len(), 2, "{spans:#?}");
    assert!(servers.iter().any(|s| s.parent == CLIENT_SPAN));
    drop(gw);
    // traceidratio 0: nothing is sampled, the context still goes upstream.
    vars.push(("OTEL_TRACES_SAMPLER".into(), "traceidratio".into()));
    vars.push(("OTEL_TRACES_SAMPLER_ARG".into(), "0".into()));
    let gw = start(&vars);
    for _ in 0..5 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("a/m", "hi", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(up.last().header("traceparent").unwrap().ends_with("-00"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        collector
            .spans()
            .iter()
            .filter(|s| s.kind == SERVER)
            .count(),
        2
    );
}

/// A CA (PEM) and a `ServerConfig` for `localhost`/`127.0.0.1` signed by it.
fn tls_pair() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "collector test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "collector");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
    .unwrap();
    (ca_cert.pem(), config)
}

/// TLS in front of a collector stand-in: accepts on 127.0.0.1, terminates TLS and relays the
/// bytes to the plain collector. Counts handshakes that completed.
struct TlsFront {
    port: u16,
    handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    async fn start(config: rustls::ServerConfig, backend: u16) -> TlsFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, count) = (acceptor.clone(), count.clone());
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                    let Ok(Ok(mut tls)) = accepted else { return };
                    count.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) =
                        tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    else {
                        return;
                    };
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        tokio::io::copy_bidirectional(&mut tls, &mut plain),
                    )
                    .await;
                });
            }
        });
        TlsFront {
            port,
            handshakes,
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `gateway_trace_spans_total{outcome="<outcome>"}` on `/metrics`.
async fn spans_counted(gw: &Gateway, outcome: &str) -> f64 {
    let m = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("gateway_trace_spans_total{{outcome=\"{outcome}\"}}");
    m.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_collectors_are_verified_with_the_configured_ca() {
    let collector = Collector::start(false).await;
    let (ca_pem, server_config) = tls_pair();
    let front = TlsFront::start(server_config, collector.port).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("collector-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let endpoint = format!("https://localhost:{}", front.port);

    // The right CA (the traces variable wins over the general one, which names no file).
    let mut vars = otel_vars(&endpoint);
    vars.extend([
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE".into(),
            ca_file.to_str().unwrap().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
            dir.path().join("absent.pem").to_str().unwrap().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "x-honeycomb-team=tls-secret".into(),
        ),
    ]);
    let gw = start(&vars);
    unaffected(&gw, 3).await;
    let spans = collector.wait_servers(3).await;
    assert!(spans.iter().all(|s| s.service == "gw-under-test"));
    assert!(front.handshakes.load(Ordering::SeqCst) >= 1);
    let posts = collector.posts.lock().unwrap().clone();
    assert_eq!(posts[0].0, "/v1/traces");
    assert_eq!(
        posts[0].1.get("x-honeycomb-team").map(String::as_str),
        Some("tls-secret")
    );
    assert_eq!(spans_counted(&gw, "failed").await, 0.0);
    drop(gw);

    // A CA that did not sign the collector's certificate: requests are unaffected, the
    // handshake is refused, the spans are counted as failed and never arrive.
    let (other_ca, _) = tls_pair();
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, other_ca).unwrap();
    let before = collector.posts.lock().unwrap().len();
    let handshakes = front.handshakes.load(Ordering::SeqCst);
    let mut vars = otel_vars(&endpoint);
    vars.extend([
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
            wrong.to_str().unwrap().to_string(),
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "2000".into()),
    ]);
    let gw = start(&vars);
    unaffected(&gw, 5).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while spans_counted(&gw, "failed").await < 1.0 {
        assert!(Instant::now() < deadline, "no failed spans counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spans_counted(&gw, "exported").await, 0.0);
    assert_eq!(collector.posts.lock().unwrap().len(), before);
    assert_eq!(front.handshakes.load(Ordering::SeqCst), handshakes);
    unaffected(&gw, 2).await;
}

#[test]
fn an_unreadable_collector_ca_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for path in [dir.path().join("absent.pem"), not_pem] {
        let out = Gateway::command(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", path.to_str().unwrap()),
        ])
        .arg("--check-config")
        .output()
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{err}");
    }
}
