//! Issue 17: the Anthropic Messages API inbound (`/v1/messages`). The real `anthropic` Python
//! SDK against a native Anthropic upstream (pass-through), an OpenAI-compatible upstream
//! (translated) and `echo`; pass-through byte for byte; cut streams end with an `error` event.
//! The SDK checks need `.venv/bin/python` with the `anthropic` package (scripts/test.sh).

mod common;
mod dialect_support;
mod mocks;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;
use dialect_support::*;
use mocks::*;

const GATEWAY_KEY: &str = "sk-gw-messages-1";

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk_native_translated_and_echo() {
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
    let stdout = run_python(&gw, &["test_messages.py"], &[("GATEWAY_KEY", GATEWAY_KEY)]).await;
    assert!(stdout.contains("sdk: 13 passed, 0 failed"), "{stdout}");
    // The translated follow-up carried the upstream's own tool call id back.
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
    assert!(google.calls() >= 7, "{}", google.calls());
    for b in &followups {
        let m = b["messages"].as_array().unwrap();
        let call = m.iter().find(|m| m["role"] == "assistant").unwrap();
        assert_eq!(call["tool_calls"][0]["id"], CALL_ID, "{b}");
        let result = m.iter().find(|m| m["role"] == "tool").unwrap();
        assert_eq!(result["tool_call_id"], CALL_ID, "{b}");
    }
    // Native: the client's key never reached Anthropic, the provider's did (the mock checks).
    assert!(claude.calls() >= 6, "{}", claude.calls());
}

/// A native upstream that answers with a fixed body or stream, whatever it is sent.
fn fixed(body: &'static str, stream: bool) -> Handler {
    Arc::new(move |_r: &Recorded| {
        if stream {
            let events = body.split_inclusive("\n\n").map(str::to_string).collect();
            sse_response(events, Duration::ZERO, None)
        } else {
            let mut r = json_response(200, json!({}));
            *r.body_mut() = axum::body::Body::from(body);
            r
        }
    })
}

const THINKING_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think.\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

const THINKING_BODY: &str = "{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"Hmm.\",\"signature\":\"c2ln\"},{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_1\",\"name\":\"web_search\",\"input\":{\"query\":\"x\"}},{\"type\":\"text\",\"text\":\"42\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":5,\"cache_read_input_tokens\":3},\"future_field\":{\"kept\":true}}";

/// What the client sends: odd spacing, unknown fields, thinking with a signature, cache control.
const CLIENT_BODY: &str = "{ \"model\" : \"anthropic/claude-sonnet-4-5\",\n  \"max_tokens\": 1024, \"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 512},\n  \"context_management\": {\"edits\": [{\"type\": \"clear_tool_uses_20250919\"}]},\n  \"tools\": [{\"type\": \"web_search_20250305\", \"name\": \"web_search\"}],\n  \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi \\u00e9\", \"cache_control\": {\"type\": \"ephemeral\"}}]},\n    {\"role\": \"assistant\", \"content\": [{\"type\": \"thinking\", \"thinking\": \"x\", \"signature\": \"c2ln\"}, {\"type\": \"text\", \"text\": \"ok\"}]},\n    {\"role\": \"user\", \"content\": \"and?\"}], \"stream\": STREAM }";

#[tokio::test(flavor = "multi_thread")]
async fn native_pass_through_is_byte_exact() {
    let claude = Mock::start(fixed(THINKING_BODY, false)).await;
    let up = Mock::start(vllm()).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    let c = client();
    for stream in [false, true] {
        claude.set(if stream {
            fixed(THINKING_STREAM, true)
        } else {
            fixed(THINKING_BODY, false)
        });
        let body = CLIENT_BODY.replace("STREAM", if stream { "true" } else { "false" });
        let resp = c
            .post(gw.url("/v1/messages?beta=true"))
            .header("x-api-key", GATEWAY_KEY)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "context-management-2025-06-27")
            .header("anthropic-beta", "interleaved-thinking-2025-05-14")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-provider"].to_str().unwrap(), "anthropic");
        assert!(resp.headers().get("x-request-id").is_some());
        let got = resp.text().await.unwrap();
        let want = if stream {
            THINKING_STREAM
        } else {
            THINKING_BODY
        };
        assert_eq!(got, want, "the client gets the upstream's bytes");
        let sent = claude.last();
        let expected = body.replacen(
            "\"anthropic/claude-sonnet-4-5\"",
            "\"claude-sonnet-4-5\"",
            1,
        );
        assert_eq!(
            String::from_utf8(sent.body.to_vec()).unwrap(),
            expected,
            "the upstream gets the client's bytes, model aside"
        );
        assert_eq!(sent.path, "/v1/messages");
        assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
        assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
        let beta = sent.header("anthropic-beta").unwrap_or("");
        assert!(
            beta.contains("context-management-2025-06-27")
                && beta.contains("interleaved-thinking-2025-05-14"),
            "{beta}"
        );
        assert!(sent.header("authorization").is_none());
    }
    // A Bearer key is accepted too; no key is an Anthropic-shaped 401.
    let resp = c
        .post(gw.url("/v1/messages"))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .body(CLIENT_BODY.replace("STREAM", "false"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .post(gw.url("/v1/messages"))
        .body(CLIENT_BODY.replace("STREAM", "false"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
}

async fn stream_text(gw: &Gateway, model: &str, text: &str) -> String {
    let body = json!({"model": model, "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]});
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", GATEWAY_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_streams_end_with_an_error_event() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    // Native: the upstream closes before message_stop.
    let out = stream_text(&gw, "anthropic/claude-sonnet-4-20250514", CUT_STREAM).await;
    assert!(out.contains("Claude"), "{out}");
    assert!(!out.contains("message_stop"), "{out}");
    assert!(
        out.ends_with("\n\n") && out.contains("event: error\ndata: {"),
        "{out}"
    );
    // Native: an upstream error event mid-stream becomes the gateway's error event.
    let out = stream_text(&gw, "anthropic/claude-sonnet-4-20250514", FAIL_MID_STREAM).await;
    assert!(out.contains("overloaded_error"), "{out}");
    // Translated: the OpenAI stream ends before [DONE].
    up.set(Arc::new(|r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        let mut events = openai_stream_events(&model, &["Hel", "lo"], true);
        events.pop();
        let n = events.len();
        sse_response(events, Duration::from_millis(20), Some(n))
    }));
    let out = stream_text(&gw, "vllm/qwen", "hi").await;
    assert!(out.starts_with("event: message_start\n"), "{out}");
    assert!(
        out.contains("\"text_delta\"") && out.contains("\"Hel\""),
        "{out}"
    );
    assert!(!out.contains("message_stop"), "{out}");
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn native_messages_switch_passes_through_to_an_openai_compatible_host() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(fixed(THINKING_STREAM, true)).await;
    let gw = start_with(&claude, &up, GATEWAY_KEY, &[("VLLM_NATIVE_MESSAGES", "on")]);
    let body = CLIENT_BODY
        .replace("STREAM", "true")
        .replace("anthropic/claude-sonnet-4-5", "vllm/qwen3-coder");
    let resp = client()
        .post(gw.url("/v1/messages?beta=true"))
        .header("x-api-key", GATEWAY_KEY)
        .header("anthropic-version", "2023-06-01")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), THINKING_STREAM);
    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        String::from_utf8(sent.body.to_vec()).unwrap(),
        body.replacen("\"vllm/qwen3-coder\"", "\"qwen3-coder\"", 1)
    );
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {VLLM_KEY}").as_str())
    );
    // An OpenAI chat client of the same host still goes to /chat/completions.
    up.set(vllm());
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .json(&chat_body("vllm/qwen3-coder", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_translated_upstream_gets_pings() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(Arc::new(|r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        let mut events = openai_stream_events(&model, &["Hi"], true);
        // The text at once, the rest after 16 s of silence.
        let rest = events.split_off(2).concat();
        let events = vec![events.concat(), rest];
        sse_response(events, Duration::from_millis(16_000), None)
    }))
    .await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    let out = stream_text(&gw, "vllm/qwen", "hi").await;
    let ping = out.find("event: ping\n").expect(&out);
    assert!(ping > out.find("content_block_delta").unwrap(), "{out}");
    assert!(
        out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_model_names_go_to_another_provider_through_aliases() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(vllm()).await;
    let gw = start_with(
        &claude,
        &up,
        GATEWAY_KEY,
        &[(
            "GATEWAY_MODEL_ALIASES",
            "claude-sonnet-4-5-20250929=vllm/qwen3-coder;claude-haiku-4-5=vllm/qwen3-8b",
        )],
    );
    for (model, upstream) in [
        ("claude-sonnet-4-5-20250929", "qwen3-coder"),
        ("claude-haiku-4-5", "qwen3-8b"),
    ] {
        let out = stream_text(&gw, model, "hi").await;
        assert!(out.contains("\"vLLM\""), "{out}");
        assert!(out.contains(&format!("\"model\":\"{model}\"")), "{out}");
        assert_eq!(up.last().json()["model"], upstream);
    }
    assert_eq!(claude.calls(), 0);
}

/// A native upstream that answers every request with `status` and `body` as given.
fn failing(status: u16, body: &'static str) -> Handler {
    Arc::new(move |_r: &Recorded| {
        let mut r = json_response(status, json!({}));
        *r.body_mut() = axum::body::Body::from(body);
        r
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn native_error_bodies_reach_the_client_untouched() {
    const ANTHROPIC_ERROR: &str = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"max_tokens: 999999 > 64000, which is the maximum\"},\"request_id\":\"req_011CQ9xyz\"}";
    let claude = Mock::start(failing(400, ANTHROPIC_ERROR)).await;
    let up = Mock::start(vllm()).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    let send = || async {
        let resp = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", GATEWAY_KEY)
            .header("anthropic-version", "2023-06-01")
            .body(CLIENT_BODY.replace("STREAM", "false"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    };
    // Anthropic's own error: its status and bytes, `request_id` included.
    assert_eq!(send().await, (400, ANTHROPIC_ERROR.to_string()));
    // An overloaded Anthropic (529, not retried elsewhere: there is no other candidate).
    const OVERLOADED: &str = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},\"request_id\":\"req_2\"}";
    claude.set(failing(529, OVERLOADED));
    assert_eq!(send().await, (529, OVERLOADED.to_string()));
    // Anything else an upstream says is rewritten into Anthropic's shape, status kept.
    for (status, body, kind) in [
        (502, "<html>bad gateway</html>", "api_error"),
        (
            400,
            "{\"error\":{\"message\":\"bad things\",\"type\":\"invalid_request_error\"}}",
            "invalid_request_error",
        ),
        (
            400,
            "{\"type\":\"error\",\"error\":\"not an object\"}",
            "invalid_request_error",
        ),
    ] {
        claude.set(failing(status, body));
        let (got_status, got) = send().await;
        assert_eq!(got_status, status, "{got}");
        let v: Value = serde_json::from_str(&got).unwrap_or_else(|_| panic!("{got}"));
        assert_eq!(v["type"], "error", "{got}");
        assert_eq!(v["error"]["type"], kind, "{got}");
        assert!(v["error"]["message"].is_string(), "{got}");
        assert!(v.get("request_id").is_none(), "{got}");
    }
}

/// An OpenAI-compatible upstream that stops on the request's first stop sequence and says so
/// as vLLM does (`stop_reason` in the choice), plain or streamed; with `vllm_style` off, as
/// OpenAI does (`finish_reason: stop` only).
fn stopping(vllm_style: bool) -> Handler {
    Arc::new(move |r: &Recorded| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        let stop = body["stop"][0].clone();
        let mut choice = json!({"index": 0, "finish_reason": "stop"});
        if vllm_style {
            choice["stop_reason"] = stop;
        }
        if body["stream"] != true {
            choice["message"] = json!({"role": "assistant", "content": "1, 2, 3"});
            return json_response(
                200,
                json!({"id": "chatcmpl-s", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}),
            );
        }
        choice["delta"] = json!({});
        let chunk = |c: Value| {
            let v = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [c]});
            format!("data: {v}\n\n")
        };
        let events = vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": "1, 2, 3"}, "finish_reason": null}),
            ),
            chunk(choice),
            "data: [DONE]\n\n".to_string(),
        ];
        sse_response(events, Duration::ZERO, None)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_answers_name_the_stop_sequence_they_stopped_on() {
    let claude = Mock::start(anthropic()).await;
    let up = Mock::start(stopping(true)).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    let ask = |stream: bool| {
        json!({"model": "vllm/qwen3-8b", "max_tokens": 64, "stream": stream,
            "stop_sequences": ["4", "END"],
            "messages": [{"role": "user", "content": "count"}]})
    };
    for vllm_style in [true, false] {
        up.set(stopping(vllm_style));
        let (reason, sequence) = if vllm_style {
            (json!("stop_sequence"), json!("4"))
        } else {
            (json!("end_turn"), Value::Null)
        };
        let resp = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", GATEWAY_KEY)
            .json(&ask(false))
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (&v["stop_reason"], &v["stop_sequence"]),
            (&reason, &sequence),
            "{v}"
        );
        assert_eq!(up.last().json()["stop"], json!(["4", "END"]));
        let resp = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", GATEWAY_KEY)
            .json(&ask(true))
            .send()
            .await
            .unwrap();
        let out = resp.text().await.unwrap();
        let delta = out
            .split("\n\n")
            .find(|e| e.starts_with("event: message_delta"))
            .and_then(|e| e.split_once("data: "))
            .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(
            (
                &delta["delta"]["stop_reason"],
                &delta["delta"]["stop_sequence"]
            ),
            (&reason, &sequence),
            "{out}"
        );
    }
}

/// An OpenAI-compatible upstream that reasons, then stops on the request's first stop sequence
/// and names it as vLLM does, plain or streamed.
fn reasoning_and_stopping() -> Handler {
    Arc::new(|r: &Recorded| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        let stop = body["stop"][0].clone();
        let usage = json!({"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15});
        if body["stream"] != true {
            return json_response(
                200,
                json!({"id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "1, 2, 3",
                        "reasoning_content": "Counting."}, "finish_reason": "stop", "stop_reason": stop}],
                    "usage": usage}),
            );
        }
        let chunk = |c: Value| {
            let v = json!({"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [c]});
            format!("data: {v}\n\n")
        };
        let mut events = vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "reasoning_content": "Count"}, "finish_reason": null}),
            ),
            chunk(
                json!({"index": 0, "delta": {"reasoning_content": "ing."}, "finish_reason": null}),
            ),
            chunk(json!({"index": 0, "delta": {"content": "1, 2, 3"}, "finish_reason": null})),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": stop})),
        ];
        let v = json!({"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {v}\n\n"));
        events.push("data: [DONE]\n\n".to_string());
        sse_response(events, Duration::ZERO, None)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn thinking_stop_sequences_and_native_errors_through_the_sdk() {
    let claude = Mock::start(failing(
        400,
        "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"max_tokens: 999999 > 64000, which is the maximum\"},\"request_id\":\"req_011CQ9native\"}",
    ))
    .await;
    let up = Mock::start(reasoning_and_stopping()).await;
    let gw = start(&claude, &up, GATEWAY_KEY);
    let stdout = run_python(
        &gw,
        &["test_messages_reasoning.py"],
        &[("GATEWAY_KEY", GATEWAY_KEY)],
    )
    .await;
    assert!(stdout.contains("sdk: 3 passed, 0 failed"), "{stdout}");
    // The thinking budget (4,000 tokens) reached the upstream as a medium reasoning effort.
    let sent: Vec<Value> = up.requests().iter().map(Recorded::json).collect();
    assert_eq!(sent.len(), 2);
    for b in &sent {
        assert_eq!(b["reasoning_effort"], "medium", "{b}");
        assert_eq!(b["stop"], json!(["END", "STOP"]), "{b}");
    }
}
