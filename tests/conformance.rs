//! The conformance battery: ONE set of checks run against every wire format, each through its
//! own mock upstream (the same mocks as the provider's own test file) and one gateway per
//! provider, with an OpenAI chat client (plain HTTP + JSON, as the SDKs send it):
//!
//! - `plain`: content, `finish_reason: stop`, usage with prompt/completion/total tokens;
//! - `stream`: chunks, a final `finish_reason`, usage (`stream_options.include_usage`), `[DONE]`;
//! - `tools`: a tool call (id, name, JSON arguments, `finish_reason: tool_calls`), then the tool
//!   result turn accepted;
//! - `streamtools`: the same tool call streamed (id and name once, arguments in fragments that
//!   join into a JSON object, `finish_reason: tool_calls`, `[DONE]`);
//! - `failover`: an upstream 429 moves a plain and a streamed request to the `echo` provider;
//! - `error`: an upstream 400-class error comes back OpenAI-shaped with the upstream's status;
//! - `observed`: `X-Provider` names the provider, the request log line carries the model, and
//!   `gateway_requests_total` counts it.
//!
//! `TABLE` is the providers x checks matrix: every cell is run, and a cell a provider cannot do
//! says why (it is not skipped silently). The test prints the matrix and fails on any cell that
//! is neither passing nor listed.

#[path = "mocks/azure.rs"]
mod azure_mock;
#[path = "mocks/bedrock.rs"]
mod bedrock_mock;
mod common;
mod mocks;
#[path = "mocks/vertex.rs"]
mod vertex_mock;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mocks::*;
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    Plain,
    Stream,
    Tools,
    StreamTools,
    Failover,
    Error,
    Observed,
}

const CHECKS: [Check; 7] = [
    Check::Plain,
    Check::Stream,
    Check::Tools,
    Check::StreamTools,
    Check::Failover,
    Check::Error,
    Check::Observed,
];

/// The cells a provider cannot do, with the reason. Every other cell must pass.
const NOT_APPLICABLE: &[(&str, Check, &str)] = &[
    (
        "echo",
        Check::Failover,
        "echo never answers 429 (it is the fallback target of every other row)",
    ),
    (
        "echo",
        Check::Error,
        "echo has no upstream; its row checks the gateway's own 400 for a body without messages instead",
    ),
];

/// One row of the table: a provider behind its mock.
struct Row {
    /// The row's name in the table.
    name: &'static str,
    /// What `X-Provider` must say.
    provider: &'static str,
    /// A model the mock answers.
    model: String,
    /// A model the mock answers with a 429.
    throttled: Option<String>,
    /// A request the mock refuses, and the status the client must see.
    refused: (Value, u16),
    env: Vec<(String, String)>,
    /// The mocks, kept alive for the gateway.
    _mocks: Vec<Box<dyn Any + Send + Sync>>,
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An OpenAI-compatible upstream (`common::openai_handler`) that also calls a tool when offered
/// tools (and quotes the tool result when the last message is one), and answers a model named
/// `refuse-<status>` with that status in OpenAI's error shape.
fn openai_upstream() -> Handler {
    let ok = openai_handler("Hello from the upstream");
    Arc::new(move |r: &Recorded| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        if let Some(code) = model
            .strip_prefix("refuse-")
            .and_then(|c| c.parse::<u16>().ok())
        {
            let kind = if code == 429 {
                "rate_limit_exceeded"
            } else {
                "invalid_request_error"
            };
            return json_response(
                code,
                json!({"error": {"message": format!("upstream says {code}"), "type": kind, "param": null, "code": kind}}),
            );
        }
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or(Value::Null);
        if body["tools"].is_array() && body["stream"] == true && last["role"] != "tool" {
            let chunk = |delta: Value, finish: Value| {
                let v = json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                format!("data: {v}\n\n")
            };
            let events = vec![
                chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_up1",
                    "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
                "data: [DONE]\n\n".to_string(),
            ];
            return sse_response(events, Duration::ZERO, None);
        }
        if body["tools"].is_array() && body["stream"] != true {
            let message = if last["role"] == "tool" {
                json!({"role": "assistant", "content": format!("Tool said: {}", last["content"].as_str().unwrap_or(""))})
            } else {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_up1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
            };
            let finish = if last["role"] == "tool" {
                "stop"
            } else {
                "tool_calls"
            };
            let mut v = openai_completion(&model, "");
            v["choices"][0]["message"] = message;
            v["choices"][0]["finish_reason"] = json!(finish);
            return json_response(200, v);
        }
        ok(r)
    })
}

async fn rows() -> Vec<Row> {
    let mut rows = Vec::new();

    let openai = Mock::start(openai_upstream()).await;
    rows.push(Row {
        name: "openai",
        provider: "openai",
        model: "openai/gpt-4o-mini".into(),
        throttled: Some("openai/refuse-429".into()),
        refused: (chat_body("openai/refuse-400", "hi", false), 400),
        env: vars(&[
            ("OPENAI_BASE_URL", &openai.url()),
            ("OPENAI_API_KEY", "sk-conformance-openai"),
        ]),
        _mocks: vec![Box::new(openai)],
    });

    let anthropic_mock = Mock::start(anthropic()).await;
    rows.push(Row {
        name: "anthropic",
        provider: "anthropic",
        model: "anthropic/claude-sonnet-4-20250514".into(),
        throttled: Some("anthropic/claude-ratelimited".into()),
        refused: (
            chat_body("anthropic/claude-sonnet-4-20250514", REFUSE_400, false),
            400,
        ),
        env: vars(&[
            ("ANTHROPIC_BASE_URL", &anthropic_mock.url()),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ]),
        _mocks: vec![Box::new(anthropic_mock)],
    });

    let gemini_mock = Mock::start(gemini()).await;
    rows.push(Row {
        name: "gemini",
        provider: "google",
        model: "google/gemini-2.0-flash".into(),
        throttled: Some("google/gemini-exhausted".into()),
        refused: (chat_body("google/gemini-2.0-flash", REFUSE_400, false), 400),
        env: vars(&[
            ("GEMINI_BASE_URL", &gemini_mock.url()),
            ("GEMINI_API_KEY", GEMINI_KEY),
        ]),
        _mocks: vec![Box::new(gemini_mock)],
    });

    let cohere_mock = Mock::start(cohere()).await;
    rows.push(Row {
        name: "cohere (native /v2/chat)",
        provider: "cohere",
        model: "cohere/command-a-03-2025".into(),
        throttled: Some("cohere/command-ratelimited".into()),
        refused: (
            chat_body("cohere/command-a-03-2025", REFUSE_400, false),
            400,
        ),
        env: vars(&[
            ("GATEWAY_PROVIDER_COHERE_BASE_URL", &cohere_mock.url()),
            ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
            ("GATEWAY_PROVIDER_COHERE_API_KEY", COHERE_KEY),
        ]),
        _mocks: vec![Box::new(cohere_mock)],
    });

    let azure = Mock::start(azure_mock::azure(Some(azure_mock::VERSION))).await;
    rows.push(Row {
        name: "azure",
        provider: "azure",
        model: "azure/gpt-4o".into(),
        throttled: Some("azure/throttled".into()),
        // Azure's own 400: the content filter refusing the prompt.
        refused: (chat_body("azure/gpt-4o", "something forbidden", false), 400),
        env: vars(&[
            ("AZURE_OPENAI_ENDPOINT", &format!("{}/", azure.url())),
            ("AZURE_OPENAI_API_KEY", azure_mock::KEY),
            ("OPENAI_API_VERSION", azure_mock::VERSION),
        ]),
        _mocks: vec![Box::new(azure)],
    });

    let counters = Arc::new(bedrock_mock::Counters::default());
    let bedrock = Mock::start(bedrock_mock::bedrock(
        bedrock_mock::SECRET_ACCESS_KEY,
        counters,
    ))
    .await;
    rows.push(Row {
        name: "bedrock (SigV4)",
        provider: "bedrock",
        model: "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        throttled: Some("bedrock/mock.throttled-v1:0".into()),
        // A ValidationException (400) from the mock.
        refused: (
            chat_body(
                &format!("bedrock/{}", bedrock_mock::ECHO_TOKEN_MODEL),
                "hi",
                false,
            ),
            400,
        ),
        env: vars(&[
            ("BEDROCK_BASE_URL", &bedrock.url()),
            ("AWS_ACCESS_KEY_ID", bedrock_mock::ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", bedrock_mock::SECRET_ACCESS_KEY),
            ("AWS_REGION", bedrock_mock::REGION),
        ]),
        _mocks: vec![Box::new(bedrock)],
    });

    for (name, provider, model, throttled) in [
        (
            "vertex (Gemini)",
            "vertex",
            "vertex/gemini-2.0-flash",
            "vertex/gemini-exhausted",
        ),
        (
            "vertex (Claude)",
            "vertex",
            "vertex/claude-sonnet-4@20250514",
            "vertex/claude-ratelimited",
        ),
    ] {
        let vertex = vertex_mock::VertexMock::start(3600).await;
        rows.push(Row {
            name,
            provider,
            model: model.into(),
            throttled: Some(throttled.into()),
            refused: (chat_body(model, REFUSE_400, false), 400),
            env: vertex.env(),
            _mocks: vec![Box::new(vertex)],
        });
    }

    for (vendor, key_var, url_var) in [
        ("groq", "GROQ_API_KEY", "GROQ_BASE_URL"),
        ("deepseek", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL"),
    ] {
        let mock = Mock::start(openai_upstream()).await;
        rows.push(Row {
            name: vendor,
            provider: vendor,
            model: format!("{vendor}/some-model-1"),
            throttled: Some(format!("{vendor}/refuse-429")),
            refused: (chat_body(&format!("{vendor}/refuse-422"), "hi", false), 422),
            env: vars(&[
                (key_var, &format!("sk-{vendor}-conformance")),
                (url_var, &format!("{}/v1", mock.url())),
            ]),
            _mocks: vec![Box::new(mock)],
        });
    }

    // The self-hosted OpenAI-compatible servers and a custom `GATEWAY_PROVIDER_<NAME>_*` host.
    for (name, url_var, extra) in [
        ("ollama", "OLLAMA_BASE_URL", None),
        ("vllm", "VLLM_BASE_URL", None),
        (
            "huggingface",
            "HF_BASE_URL",
            Some(("HF_TOKEN", "hf_conformance")),
        ),
        ("sidecar", "GATEWAY_PROVIDER_SIDECAR_BASE_URL", None),
    ] {
        let mock = Mock::start(openai_upstream()).await;
        let mut env = vars(&[(url_var, &format!("{}/v1", mock.url()))]);
        env.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
        rows.push(Row {
            name,
            provider: name,
            model: format!("{name}/some-model-1"),
            throttled: Some(format!("{name}/refuse-429")),
            refused: (chat_body(&format!("{name}/refuse-400"), "hi", false), 400),
            env,
            _mocks: vec![Box::new(mock)],
        });
    }

    rows.push(Row {
        name: "echo",
        provider: "echo",
        model: "echo/conformance".into(),
        throttled: None,
        refused: (json!({"model": "echo/conformance"}), 400),
        env: Vec::new(),
        _mocks: Vec::new(),
    });
    rows
}

async fn post(
    gw: &Gateway,
    body: &Value,
) -> Result<(u16, reqwest::header::HeaderMap, String), String> {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, headers, text))
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn parse(body: &str) -> Result<Value, String> {
    serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn check_usage(u: &Value, what: &str) -> Result<(), String> {
    let p = u["prompt_tokens"].as_u64();
    let c = u["completion_tokens"].as_u64();
    let t = u["total_tokens"].as_u64();
    ensure!(
        p.is_some() && c.is_some() && t.is_some(),
        "{what}: usage lacks prompt/completion/total tokens: {u}"
    );
    ensure!(
        p.unwrap_or(0) + c.unwrap_or(0) == t.unwrap_or(0),
        "{what}: total_tokens is not prompt + completion: {u}"
    );
    ensure!(t.unwrap_or(0) > 0, "{what}: zero tokens: {u}");
    Ok(())
}

async fn plain(gw: &Gateway, row: &Row) -> Result<(), String> {
    let (status, headers, body) = post(gw, &chat_body(&row.model, "hello there", false)).await?;
    ensure!(status == 200, "status {status}: {body}");
    ensure!(
        header(&headers, "x-provider") == row.provider,
        "x-provider {:?}",
        header(&headers, "x-provider")
    );
    let v = parse(&body)?;
    ensure!(v["object"] == "chat.completion", "object: {body}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    ensure!(!content.is_empty(), "no content: {body}");
    ensure!(
        v["choices"][0]["message"]["role"] == "assistant",
        "role: {body}"
    );
    ensure!(
        v["choices"][0]["finish_reason"] == "stop",
        "finish_reason: {body}"
    );
    check_usage(&v["usage"], "plain")
}

async fn stream(gw: &Gateway, row: &Row) -> Result<(), String> {
    let mut body = chat_body(&row.model, "hello there", true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = post(gw, &body).await?;
    ensure!(status == 200, "status {status}: {text}");
    ensure!(
        header(&headers, "content-type").starts_with("text/event-stream"),
        "content-type {:?}",
        header(&headers, "content-type")
    );
    ensure!(
        header(&headers, "x-provider") == row.provider,
        "x-provider {:?}",
        header(&headers, "x-provider")
    );
    let data = sse_data(&text);
    ensure!(
        data.last().map(String::as_str) == Some("[DONE]"),
        "no [DONE] at the end: {text}"
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| parse(d))
        .collect::<Result<_, _>>()?;
    let mut content = String::new();
    let mut finish = None;
    let mut usage = None;
    for c in &chunks {
        if c.get("error").is_some() {
            return Err(format!("error event: {c}"));
        }
        // Azure's choice-less first chunk carries only its prompt filter results.
        if c["object"] != "chat.completion.chunk" && c["prompt_filter_results"].is_null() {
            return Err(format!("not a chunk: {c}"));
        }
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            ensure!(finish.is_none(), "two finish_reasons: {text}");
            finish = Some(f.to_string());
        }
        if c["usage"].is_object() {
            usage = Some(c["usage"].clone());
        }
    }
    ensure!(chunks.len() >= 2, "fewer than two chunks: {text}");
    ensure!(!content.is_empty(), "no content: {text}");
    ensure!(
        finish.as_deref() == Some("stop"),
        "finish_reason {finish:?}: {text}"
    );
    let usage = usage.ok_or_else(|| format!("no usage chunk: {text}"))?;
    check_usage(&usage, "stream")
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

async fn tools(gw: &Gateway, row: &Row) -> Result<(), String> {
    // `call <tool> <json>` is what makes echo call a tool; the mocks call one whenever offered.
    let ask = "call get_weather {\"city\":\"Paris\"}";
    let mut body = chat_body(&row.model, ask, false);
    body["tools"] = weather_tool();
    let (status, _, text) = post(gw, &body).await?;
    ensure!(status == 200, "status {status}: {text}");
    let v = parse(&text)?;
    ensure!(
        v["choices"][0]["finish_reason"] == "tool_calls",
        "finish_reason: {text}"
    );
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap_or("");
    ensure!(!id.is_empty(), "no tool call id: {text}");
    ensure!(call["type"] == "function", "type: {text}");
    ensure!(call["function"]["name"] == "get_weather", "name: {text}");
    let args = call["function"]["arguments"].as_str().unwrap_or("");
    let parsed: Value =
        serde_json::from_str(args).map_err(|e| format!("arguments not JSON ({e}): {text}"))?;
    ensure!(parsed.is_object(), "arguments not an object: {text}");

    // The tool result turn.
    let mut body = json!({
        "model": row.model,
        "messages": [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "18C and sunny"}
        ],
        "tools": weather_tool(),
    });
    body["stream"] = json!(false);
    let (status, _, text) = post(gw, &body).await?;
    ensure!(status == 200, "tool result turn: status {status}: {text}");
    let v = parse(&text)?;
    let m = &v["choices"][0]["message"];
    ensure!(
        m["content"].as_str().is_some_and(|c| !c.is_empty()) || m["tool_calls"].is_array(),
        "tool result turn: no answer: {text}"
    );
    Ok(())
}

/// The tool call streamed: the id and name once, the arguments in fragments that join into a
/// JSON object, `finish_reason: tool_calls`, `[DONE]`.
async fn stream_tools(gw: &Gateway, row: &Row) -> Result<(), String> {
    let mut body = chat_body(&row.model, "call get_weather {\"city\":\"Paris\"}", true);
    body["tools"] = weather_tool();
    let (status, _, text) = post(gw, &body).await?;
    ensure!(status == 200, "status {status}: {text}");
    let data = sse_data(&text);
    ensure!(
        data.last().map(String::as_str) == Some("[DONE]"),
        "no [DONE] at the end: {text}"
    );
    let (mut id, mut name, mut args, mut finish) =
        (String::new(), String::new(), String::new(), None);
    for d in &data[..data.len() - 1] {
        let c = parse(d)?;
        ensure!(c.get("error").is_none(), "error event: {c}");
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            ensure!(call["index"] == 0, "a second tool call: {text}");
            if let Some(i) = call["id"].as_str() {
                ensure!(id.is_empty(), "the id twice: {text}");
                id = i.to_string();
            }
            if let Some(n) = call["function"]["name"].as_str() {
                name.push_str(n);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                args.push_str(a);
            }
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    ensure!(!id.is_empty(), "no tool call id: {text}");
    ensure!(name == "get_weather", "name {name:?}: {text}");
    let parsed: Value = serde_json::from_str(&args)
        .map_err(|e| format!("arguments {args:?} not JSON ({e}): {text}"))?;
    ensure!(parsed.is_object(), "arguments not an object: {text}");
    ensure!(
        finish.as_deref() == Some("tool_calls"),
        "finish_reason {finish:?}: {text}"
    );
    Ok(())
}

async fn failover(gw: &Gateway, row: &Row) -> Result<(), String> {
    let throttled = row.throttled.as_deref().ok_or("no throttled model")?;
    for stream in [false, true] {
        let (status, headers, text) =
            post(gw, &chat_body(throttled, "hello there", stream)).await?;
        ensure!(status == 200, "stream={stream}: status {status}: {text}");
        ensure!(
            header(&headers, "x-provider") == "echo",
            "stream={stream}: x-provider {:?}",
            header(&headers, "x-provider")
        );
        if stream {
            ensure!(
                sse_data(&text).last().map(String::as_str) == Some("[DONE]"),
                "stream: no [DONE]: {text}"
            );
        } else {
            let v = parse(&text)?;
            ensure!(
                v["choices"][0]["message"]["content"] == "hello there",
                "not echo's answer: {text}"
            );
        }
    }
    Ok(())
}

async fn error(gw: &Gateway, row: &Row) -> Result<(), String> {
    let (body, want) = &row.refused;
    let (status, headers, text) = post(gw, body).await?;
    ensure!(status == *want, "status {status}, want {want}: {text}");
    ensure!(
        header(&headers, "content-type").starts_with("application/json"),
        "content-type {:?}",
        header(&headers, "content-type")
    );
    let v = parse(&text)?;
    let e = &v["error"];
    ensure!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no error.message: {text}"
    );
    ensure!(e["type"].is_string(), "no error.type: {text}");
    ensure!(e.get("code").is_some(), "no error.code: {text}");
    Ok(())
}

/// The log line and the metrics of the `plain`, `stream` and `tools` requests made before (four
/// 2xx requests), and the failover of the `failover` check.
async fn observed(gw: &Gateway, row: &Row) -> Result<(), String> {
    let model_field = format!("model={}", row.model);
    let provider_field = format!("provider={}", row.provider);
    let ok = gw.wait_log(&model_field, Duration::from_secs(5));
    let logs = gw.logs();
    let line = logs.lines().find(|l| {
        l.contains(&model_field) && l.contains(&provider_field) && l.contains("status=200")
    });
    ensure!(
        ok && line.is_some(),
        "no request line with {model_field} {provider_field} status=200 in the log"
    );
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .map_err(|e| format!("metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("metrics: {e}"))?;
    let provider_label = format!("provider=\"{}\"", row.provider);
    // The metrics label the model without its provider prefix.
    let bare = row
        .model
        .split_once('/')
        .map_or(row.model.as_str(), |(_, m)| m);
    let model_label = format!("model=\"{bare}\"");
    let counted: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("gateway_requests_total{")
                && l.contains(&provider_label)
                && l.contains(&model_label)
                && l.contains("status_class=\"2xx\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ensure!(
        counted.total_cmp(&4.0).is_ge(),
        "gateway_requests_total counts {counted} 2xx requests for {provider_label} {model_label}:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("gateway_requests_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if row.throttled.is_some() {
        let from = format!("from=\"{}\"", row.provider);
        let failovers = metrics.lines().any(|l| {
            l.starts_with("gateway_failovers_total{")
                && l.contains(&from)
                && l.contains("to=\"echo\"")
        });
        ensure!(
            failovers,
            "gateway_failovers_total has no {from} to=\"echo\""
        );
    }
    Ok(())
}

async fn run(gw: &Gateway, row: &Row, check: Check) -> Result<(), String> {
    match check {
        Check::Plain => plain(gw, row).await,
        Check::Stream => stream(gw, row).await,
        Check::Tools => tools(gw, row).await,
        Check::StreamTools => stream_tools(gw, row).await,
        Check::Failover => failover(gw, row).await,
        Check::Error => error(gw, row).await,
        Check::Observed => observed(gw, row).await,
    }
}

fn not_applicable(row: &Row, check: Check) -> Option<&'static str> {
    NOT_APPLICABLE
        .iter()
        .find(|(name, c, _)| *name == row.name && *c == check)
        .map(|(.., why)| *why)
}

/// Runs one row's cells: the well-behaved requests first (concurrently), then the failing ones
/// (a 429 may cool the provider down), then what the log and metrics say of them.
async fn run_row(row: &Row) -> Vec<(Check, Result<(), String>)> {
    let mut env = row.env.clone();
    if let Some(t) = &row.throttled {
        env.push((
            "GATEWAY_FALLBACK_MODELS".into(),
            format!("{t}=echo/fallback"),
        ));
    }
    env.push(("GATEWAY_LOG_LEVEL".into(), "info".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = match Gateway::try_start(&pairs) {
        Ok(gw) => gw,
        Err(e) => {
            return CHECKS
                .iter()
                .map(|c| (*c, Err(format!("gateway did not start: {e}"))))
                .collect();
        }
    };
    let mut out = Vec::new();
    for phase in [
        &[
            Check::Plain,
            Check::Stream,
            Check::Tools,
            Check::StreamTools,
        ][..],
        &[Check::Failover, Check::Error][..],
        &[Check::Observed][..],
    ] {
        let results = futures::future::join_all(phase.iter().map(|c| async {
            if not_applicable(row, *c).is_some() && *c != Check::Error {
                return (*c, Ok(()));
            }
            (*c, run(&gw, row, *c).await)
        }))
        .await;
        out.extend(results);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_provider_passes_the_battery() {
    let rows = rows().await;
    let results = futures::future::join_all(rows.iter().map(run_row)).await;

    let mut table = format!("{:<26}", "provider");
    for c in CHECKS {
        table.push_str(&format!(" {:<9}", format!("{c:?}").to_lowercase()));
    }
    table.push('\n');
    let mut failures = Vec::new();
    for (row, cells) in rows.iter().zip(&results) {
        table.push_str(&format!("{:<26}", row.name));
        for c in CHECKS {
            let (_, result) = cells.iter().find(|(k, _)| *k == c).expect("every cell ran");
            let mark = match (result, not_applicable(row, c)) {
                (Ok(()), Some(_)) if c != Check::Error => "n/a",
                (Ok(()), _) => "ok",
                (Err(e), _) => {
                    failures.push(format!("{} / {c:?}: {e}", row.name));
                    "FAIL"
                }
            };
            table.push_str(&format!(" {mark:<9}"));
        }
        table.push('\n');
    }
    for (name, c, why) in NOT_APPLICABLE {
        table.push_str(&format!("{name} / {c:?}: {why}\n"));
    }
    println!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n\n"));
}
