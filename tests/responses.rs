//! Issue 16: the OpenAI Responses API inbound (`/v1/responses`), translated for every provider.
//! The real `openai` Python SDK (`responses.create`, `.stream`, tool round trips, typed errors)
//! against OpenAI-compatible, Anthropic and Gemini upstreams and `echo`; cut streams end
//! with `response.failed`. The SDK checks need `.venv/bin/python` (scripts/test.sh).

mod common;
mod dialect_support;
mod mocks;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;
use dialect_support::*;
use mocks::*;

const GATEWAY_KEY: &str = "sk-gw-responses-1";

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_responses_translated_and_echo() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let google = Mock::start(gemini()).await;
    let gw = start_with(
        &claude,
        &up,
        GATEWAY_KEY,
        &[
            ("GEMINI_BASE_URL", &google.url()),
            ("GEMINI_API_KEY", GEMINI_KEY),
        ],
    );
    let stdout = run_python(&gw, &["test_responses.py"], &[("GATEWAY_KEY", GATEWAY_KEY)]).await;
    assert!(stdout.contains("sdk: 11 passed, 0 failed"), "{stdout}");
    assert!(google.calls() >= 6, "{}", google.calls());
    // The follow-ups carried the upstream's own tool call id back, as chat tool messages.
    let followups: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .filter(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
        })
        .collect();
    assert_eq!(followups.len(), 2, "one per round trip");
    for b in &followups {
        let m = b["messages"].as_array().unwrap();
        let call = m.iter().find(|m| m["role"] == "assistant").unwrap();
        assert_eq!(call["tool_calls"][0]["id"], CALL_ID, "{b}");
        let result = m.iter().find(|m| m["role"] == "tool").unwrap();
        assert_eq!(result["tool_call_id"], CALL_ID, "{b}");
        assert_eq!(result["content"], "18C", "{b}");
    }
    // What Codex adds was dropped: the upstream got plain chat requests.
    for r in up.requests().iter().filter(|r| r.method == "POST") {
        let b = r.json();
        for k in [
            "store",
            "include",
            "reasoning",
            "prompt_cache_key",
            "client_metadata",
            "input",
        ] {
            assert!(b.get(k).is_none(), "{k} reached the upstream: {b}");
        }
    }
    assert!(claude.calls() >= 8, "{}", claude.calls());
}

async fn post(gw: &Gateway, body: Value) -> (u16, String) {
    let resp = client()
        .post(gw.url("/responses"))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_streams_end_with_response_failed() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    // The OpenAI-compatible stream ends before [DONE].
    up.set(Arc::new(|r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        let mut events = openai_stream_events(&model, &["Hel", "lo"], true);
        events.pop();
        let n = events.len();
        sse_response(events, Duration::from_millis(20), Some(n))
    }));
    let (status, out) = post(
        &gw,
        json!({"model": "vllm/qwen", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(out.starts_with("event: response.created\n"), "{out}");
    assert!(out.contains("\"Hel\""), "{out}");
    assert!(!out.contains("response.completed"), "{out}");
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: response.failed\n"), "{out}");
    // Anthropic cuts the connection before message_stop.
    let (_, out) = post(
        &gw,
        json!({"model": "anthropic/claude-sonnet-4-20250514", "input": CUT_STREAM, "stream": true}),
    )
    .await;
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: response.failed\n"), "{out}");
    // Errors before the stream starts are OpenAI's error objects, over /v1 too.
    let resp = client()
        .post(gw.url("/v1/responses"))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .json(&json!({"model": "vllm/qwen", "input": "hi", "conversation": "conv_1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "conversation", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
}

/// Custom tools (Codex's `apply_patch`), hosted tools left out, reasoning, input files and the
/// echoed settings, through the real SDK's typed parsing; then what reached the upstreams.
#[tokio::test(flavor = "multi_thread")]
async fn responses_tools_reasoning_files_and_echo() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let google = Mock::start(gemini()).await;
    let gw = start_with(
        &claude,
        &up,
        GATEWAY_KEY,
        &[
            ("GEMINI_BASE_URL", &google.url()),
            ("GEMINI_API_KEY", GEMINI_KEY),
        ],
    );
    let stdout = run_python(
        &gw,
        &["test_responses_tools.py"],
        &[("GATEWAY_KEY", GATEWAY_KEY), ("PATCH", PATCH)],
    )
    .await;
    assert!(stdout.contains("sdk: 8 passed, 0 failed"), "{stdout}");
    let posts: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .collect();
    // The custom tool went as a function taking one string; hosted tools never went upstream.
    let with_tools: Vec<&Value> = posts.iter().filter(|b| b["tools"].is_array()).collect();
    assert!(with_tools.len() >= 5, "{posts:?}");
    for b in &with_tools {
        let tools = b["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1, "{b}");
        let f = &tools[0]["function"];
        assert_eq!(f["name"], "apply_patch", "{b}");
        assert_eq!(f["parameters"]["properties"]["input"]["type"], "string");
        assert_eq!(f["parameters"]["required"], json!(["input"]));
    }
    assert!(
        posts.iter().any(|b| b["reasoning_effort"] == "high"),
        "{posts:?}"
    );
    // The follow-ups: the custom call as a tool call with the patch as its input, and the
    // tool's output under the upstream's own call id.
    let followups: Vec<&Value> = posts
        .iter()
        .filter(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
        })
        .collect();
    assert_eq!(followups.len(), 2, "{posts:?}");
    for b in followups {
        let m = b["messages"].as_array().unwrap();
        let call = &m.iter().find(|m| m["role"] == "assistant").unwrap()["tool_calls"][0];
        assert_eq!(call["id"], CALL_ID, "{b}");
        assert_eq!(call["function"]["name"], "apply_patch", "{b}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"input": PATCH}), "{b}");
        let result = m.iter().find(|m| m["role"] == "tool").unwrap();
        assert_eq!(
            (&result["tool_call_id"], &result["content"]),
            (&json!(CALL_ID), &json!("Done! patched")),
            "{b}"
        );
    }
    // Anthropic got the PDF as a document block.
    let document = claude.requests().iter().any(|r| {
        r.json()["messages"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["content"].as_array().is_some_and(|c| {
                    c.iter().any(|b| {
                        b["type"] == "document" && b["source"]["media_type"] == "application/pdf"
                    })
                })
            })
        })
    });
    assert!(document, "no document reached Anthropic");
    // The log line names what was left out.
    let logs = gw.logs();
    assert!(
        logs.contains("dropped_tools=web_search,tool_search"),
        "{logs}"
    );
}

/// `X-Gateway-Dropped-Tools` on streamed answers and `echo`'s; none without hosted tools.
#[tokio::test(flavor = "multi_thread")]
async fn dropped_tools_header() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    let tools = json!([{"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "file_search"}]);
    for (model, stream) in [("vllm/qwen", true), ("echo/x", true), ("echo/x", false)] {
        let resp = client()
            .post(gw.url("/v1/responses"))
            .header("authorization", format!("Bearer {GATEWAY_KEY}"))
            .json(&json!({"model": model, "input": "hi", "stream": stream, "tools": tools}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        assert_eq!(
            resp.headers()
                .get("x-gateway-dropped-tools")
                .and_then(|v| v.to_str().ok()),
            Some("file_search,code_interpreter"),
            "{model} stream={stream}"
        );
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("\"vector_store_ids\""),
            "tools echoed: {body}"
        );
    }
    let resp = client()
        .post(gw.url("/v1/responses"))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .json(&json!({"model": "vllm/qwen", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-gateway-dropped-tools").is_none());
    // The upstream was offered no tool at all.
    for r in up.requests().iter().filter(|r| r.method == "POST") {
        assert!(r.json().get("tools").is_none(), "{}", r.json());
    }
}
