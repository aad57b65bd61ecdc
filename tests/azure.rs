//! Azure OpenAI (`azure/<deployment>`) against a mock Azure resource: a real HTTP server on
//! 127.0.0.1 that speaks Azure's format (its `api-key` header, the deployment paths with their
//! `api-version`, or the v1 API; prompt filter results in answers and as a stream's first chunk;
//! its error bodies: `401`, `404 DeploymentNotFound`, the `400 content_filter` of a filtered
//! prompt, `429` with `Retry-After`). Plain, streamed, tools, embeddings, Responses, Messages,
//! errors, throttling with failover to a second resource, and the real `openai` Python SDK.

#[path = "mocks/azure.rs"]
mod azure_mock;
mod common;

use std::time::Duration;

use azure_mock::*;
use common::*;
use serde_json::{json, Value};

/// A gateway in front of one Azure resource at `endpoint`, with a dated API version.
fn azure_gateway(endpoint: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut vars = vec![
        ("AZURE_OPENAI_ENDPOINT", endpoint),
        ("AZURE_OPENAI_API_KEY", KEY),
        ("OPENAI_API_VERSION", VERSION),
    ];
    vars.extend_from_slice(extra);
    Gateway::start(&vars)
}

async fn post(gw: &Gateway, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_urls_plain_stream_tools_embeddings_and_filters() {
    let mock = Mock::start(azure(Some(VERSION))).await;
    let gw = azure_gateway(&format!("{}/", mock.url()), &[]);

    // Plain: Azure's body passes through, its filter results included.
    let (status, headers, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "hi", false),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", gw.logs());
    assert_eq!(headers["x-provider"], "azure");
    let v = json_of(&body);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from Azure");
    assert_eq!(
        v["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"],
        false
    );
    assert_eq!(v["usage"]["total_tokens"], 12);
    let seen = mock.last();
    assert_eq!(seen.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen.header("api-key"), Some(KEY));
    assert!(seen.header("authorization").is_none());

    // Streamed: the choice-less first chunk passes, the text arrives, usage only when asked.
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "hi", true),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(chunks[0]["prompt_filter_results"].is_array(), "{body}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from Azure");
    assert!(
        !body.contains("\"usage\":{"),
        "usage the client did not ask for: {body}"
    );
    assert_eq!(mock.last().json()["stream_options"]["include_usage"], true);

    // Tools.
    let mut tools = chat_body("azure/gpt-4o", "weather in Paris?", false);
    tools["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let (status, _, body) = post(&gw, "/v1/chat/completions", tools).await;
    assert_eq!(status, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert!(mock.last().json()["tools"].is_array());

    // Embeddings on the deployment's URL.
    let (status, _, body) = post(
        &gw,
        "/v1/embeddings",
        json!({"model": "azure/text-embedding-3-small", "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["data"][0]["embedding"][1], -0.2);
    assert_eq!(
        mock.last().path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );

    // Legacy completions go under the deployment the body names.
    let (status, _, body) = post(
        &gw,
        "/v1/completions",
        json!({"model": "azure/gpt-4o", "prompt": "say"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["choices"][0]["text"], " done");
    assert_eq!(mock.last().path, "/openai/deployments/gpt-4o/completions");
    assert_eq!(mock.last().query.as_deref(), Some("api-version=2024-10-21"));

    // A filtered answer: finish_reason content_filter, the filter results kept.
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "filtered-answer", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        v["choices"][0]["content_filter_results"]["violence"]["filtered"],
        true
    );
    // ... and for a Messages client, a refusal.
    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        json!({"model": "azure/gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "filtered-answer"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["stop_reason"], "refusal");

    // ... streamed too: the last choice chunk says content_filter (a Messages stream: refusal).
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "filtered-answer", true),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let finish: Vec<String> = sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(finish, ["content_filter"], "{body}");
    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        json!({"model": "azure/gpt-4o", "max_tokens": 50, "stream": true,
               "messages": [{"role": "user", "content": "filtered-answer"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"stop_reason\":\"refusal\""), "{body}");

    // A filtered prompt: 400 content_filter in OpenAI's shape, naming what was filtered.
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "forbidden", false),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let e = &json_of(&body)["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "content_filter");
    assert_eq!(e["param"], "prompt");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("content management policy") && msg.contains("(filtered: violence)"),
        "{msg}"
    );

    // An unknown deployment: Azure's 404 and code.
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/nope", "hi", false),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json_of(&body)["error"]["code"], "DeploymentNotFound");

    // Responses at a version without Azure's Responses API: translated to the chat deployment.
    let (status, _, body) = post(
        &gw,
        "/v1/responses",
        json!({"model": "azure/gpt-4o", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["output"][0]["content"][0]["text"],
        "Hello from Azure"
    );
    assert_eq!(
        mock.last().path,
        "/openai/deployments/gpt-4o/chat/completions"
    );

    // The models listing (no tokens): the resource's models, prefixed.
    let models: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models.to_string().contains("\"azure/gpt-4o\""), "{models}");
    let listing = mock
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(
        (listing.path.as_str(), listing.query.as_deref()),
        ("/openai/models", Some("api-version=2024-10-21"))
    );
    assert!(!gw.logs().contains(KEY), "the key reached the log");

    // A wrong key: Azure's 401 as an authentication error.
    let gw = Gateway::start(&[
        ("AZURE_OPENAI_ENDPOINT", &mock.url()),
        ("AZURE_OPENAI_API_KEY", "wrong"),
        ("AZURE_OPENAI_API_VERSION", VERSION),
    ]);
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "hi", false),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(json_of(&body)["error"]["type"], "authentication_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_api_responses_messages_and_health() {
    let mock = Mock::start(azure(None)).await;
    let gw = Gateway::start(&[
        (
            "AZURE_OPENAI_ENDPOINT",
            &format!("{}/openai/v1", mock.url()),
        ),
        ("AZURE_OPENAI_API_KEY", KEY),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "200ms"),
    ]);
    let (status, _, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/gpt-4o", "hi", false),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", gw.logs());
    let seen = mock.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/openai/v1/chat/completions", None)
    );
    assert_eq!(seen.json()["model"], "gpt-4o");

    // Responses pass through to Azure's own Responses API.
    let (status, _, body) = post(
        &gw,
        "/v1/responses",
        json!({"model": "azure/gpt-4o", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["output"][0]["content"][0]["text"],
        "hello from azure responses"
    );
    assert_eq!(mock.last().path, "/openai/v1/responses");
    assert_eq!(mock.last().json()["model"], "gpt-4o");

    // A Messages client's stream, decoded from Azure's (its id from the first chunk with one).
    let (status, _, body) = post(
        &gw,
        "/v1/messages",
        json!({"model": "azure/gpt-4o", "max_tokens": 50, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<Value> = sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(events[0]["type"], "message_start");
    assert_eq!(events[0]["message"]["id"], "msg_chatcmpl-az1", "{body}");
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from Azure");
    assert_eq!(events.last().unwrap()["type"], "message_stop");

    // Claude Code's thinking budget, mapped to a reasoning effort, goes only to a deployment
    // named after a reasoning model: gpt-4o would refuse it.
    for (deployment, effort) in [("gpt-4o", Value::Null), ("o3-mini", json!("medium"))] {
        let thinking = json!({"model": format!("azure/{deployment}"), "max_tokens": 8000,
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "messages": [{"role": "user", "content": "hi"}]});
        post(&gw, "/v1/messages", thinking).await;
        assert_eq!(
            mock.last().json()["reasoning_effort"],
            effort,
            "{deployment}"
        );
    }

    // The health probe is the models listing: no tokens spent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let probed = loop {
        let got = mock.requests().into_iter().find(|r| r.method == "GET");
        if got.is_some() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let probe = probed.expect("a health probe");
    assert_eq!(probe.path, "/openai/v1/models");
    assert_eq!(probe.header("api-key"), Some(KEY));
    let health: Value = client()
        .get(gw.url("/health/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(health.to_string().contains("azure"), "{health}");
}

/// A throttled deployment fails over to a second resource (a custom provider of format
/// `azure`); without a fallback the 429 and its `Retry-After` reach the client.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_fails_over_to_a_second_resource() {
    let primary = Mock::start(azure(Some(VERSION))).await;
    let second = Mock::start(azure(Some("2025-04-01-preview"))).await;
    let gw = azure_gateway(
        &primary.url(),
        &[
            ("GATEWAY_PROVIDER_AZURE_EU_BASE_URL", &second.url()),
            ("GATEWAY_PROVIDER_AZURE_EU_FORMAT", "azure"),
            ("GATEWAY_PROVIDER_AZURE_EU_API_KEY", KEY),
            (
                "GATEWAY_PROVIDER_AZURE_EU_API_VERSION",
                "2025-04-01-preview",
            ),
            ("GATEWAY_FALLBACK_MODELS", "azure/throttled=azure-eu/gpt-4o"),
        ],
    );
    let (status, headers, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/throttled", "hi", true),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", gw.logs());
    assert_eq!(headers["x-provider"], "azure-eu");
    assert!(
        sse_data(&body).iter().any(|d| d.contains("Azure")),
        "{body}"
    );
    assert_eq!(primary.calls(), 1);
    assert_eq!(second.calls(), 1);
    let seen = second.last();
    assert_eq!(seen.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(
        seen.query.as_deref(),
        Some("api-version=2025-04-01-preview")
    );

    // No fallback for this one: the client sees Azure's 429, retryable.
    let gw = azure_gateway(&primary.url(), &[]);
    let (status, headers, body) = post(
        &gw,
        "/v1/chat/completions",
        chat_body("azure/throttled", "hi", false),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|h| h.to_str().ok()),
        Some("6")
    );
    let e = &json_of(&body)["error"];
    assert_eq!(e["type"], "rate_limit_error");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("exceeded token rate limit"));
}

/// The official `openai` Python SDK through the gateway to the Azure mock.
#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_through_the_gateway_to_azure() {
    let mock = Mock::start(azure(Some(VERSION))).await;
    let gw = azure_gateway(&mock.url(), &[]);
    let stdout = run_python(&gw, &["test_azure.py"], &[]).await;
    assert!(
        stdout.contains("azure sdk: ") && stdout.contains(" 0 failed"),
        "{stdout}"
    );
    assert!(mock.calls() >= 6, "{}", mock.calls());
}

/// Azure joins the cache, cost and metrics like any provider.
#[tokio::test(flavor = "multi_thread")]
async fn cache_cost_and_metrics() {
    let mock = Mock::start(azure(Some(VERSION))).await;
    let gw = azure_gateway(&mock.url(), &[("GATEWAY_CACHE_BACKEND", "memory")]);
    let ask = || {
        post(
            &gw,
            "/v1/chat/completions",
            chat_body("azure/gpt-4o", "cache me", false),
        )
    };
    let (status, first, _) = ask().await;
    assert_eq!(status, 200);
    assert_eq!(first["x-cache"], "MISS");
    let (status, second, body) = ask().await;
    assert_eq!(status, 200);
    assert_eq!(second["x-cache"], "HIT");
    assert_eq!(
        json_of(&body)["choices"][0]["message"]["content"],
        "Hello from Azure"
    );
    assert_eq!(mock.calls(), 1, "a hit costs no upstream call");

    // A filtered answer is never stored: asked twice, it goes upstream twice.
    for _ in 0..2 {
        let (status, headers, _) = post(
            &gw,
            "/v1/chat/completions",
            chat_body("azure/gpt-4o", "filtered-answer", false),
        )
        .await;
        assert_eq!(status, 200);
        assert_ne!(headers["x-cache"], "HIT");
    }
    assert_eq!(mock.calls(), 3);

    // The deployment named after its model is priced as gpt-4o (9 prompt, 3 completion tokens).
    // Cost is counted when the request's log line is written, just after the answer's last
    // byte: poll the metrics until the third request shows (bounded: 50 x 100 ms).
    let one: f64 = (9.0 * 2.5 + 3.0 * 10.0) / 1e6;
    let mut cost: f64 = 0.0;
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = client()
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        cost = metrics
            .lines()
            .find(|l| l.starts_with("gateway_cost_usd_total{") && l.contains("provider=\"azure\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if (cost - 3.0 * one).abs() < 1e-9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        (cost - 3.0 * one).abs() < 1e-9,
        "{cost} != 3 x {one}:\n{metrics}"
    );
    assert!(metrics.contains("provider=\"azure\""));
}
