//! Issue 17 with the real Claude Code CLI (npm `@anthropic-ai/claude-code`, installed into
//! `tests/node/` by `scripts/test.sh`): `claude -p`, non-essential traffic off, through the
//! gateway to (a) an Anthropic-format upstream (native pass-through) and (b) an
//! OpenAI-compatible one (translated). Each upstream answers first with a `Bash` tool call, then
//! with text once the tool's result is in: the turn completes and the result reaches the
//! upstream in the follow-up request.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

const GATEWAY_KEY: &str = "sk-gw-claude-code-1";
const UPSTREAM_KEY: &str = "upstream-secret";
/// What the scripted tool call runs, and what its output must contain.
const COMMAND: &str = "echo tool-output-$((6*7))";
const OUTPUT: &str = "tool-output-42";
const FINAL: &str = "All done: the command printed the answer.";

fn claude_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/.bin/claude");
    assert!(
        bin.exists(),
        "Claude Code is not installed: run scripts/test.sh (it runs npm ci --prefix tests/node)"
    );
    bin
}

/// The text of every `tool_result` in a Messages request's last user turn.
fn anthropic_tool_results(body: &Value) -> Vec<String> {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    last["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| match &b["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                    _ => String::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ev(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An Anthropic upstream: a `Bash` call first, text once a tool result is in.
fn anthropic_scripted() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.method != "POST" {
            return json_response(
                404,
                json!({"type": "error", "error": {"type": "not_found_error", "message": "no"}}),
            );
        }
        if r.header("x-api-key") != Some(UPSTREAM_KEY) {
            return json_response(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}),
            );
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        let results = anthropic_tool_results(&body);
        let mut events = vec![ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_cc1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 50, "output_tokens": 1}}}),
        )];
        let stop = if results.is_empty() {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_01CC", "name": "Bash", "input": {}}})));
            let input = json!({"command": COMMAND, "description": "Print the answer"}).to_string();
            let (a, b) = input.split_at(input.len() / 2);
            for part in [a, b] {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}})));
            }
            "tool_use"
        } else {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": FINAL}})));
            "end_turn"
        };
        events.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 12}})));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        sse_response(events, Duration::ZERO, None)
    })
}

/// The `tool` messages of an OpenAI chat request.
fn openai_tool_results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// An OpenAI-compatible upstream: a `Bash` call first, text once a tool result is in.
fn openai_scripted() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.method != "POST" {
            return json_response(200, json!({"object": "list", "data": []}));
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        let chunk = |delta: Value, finish: Value| {
            let v = json!({"id": "chatcmpl-cc", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        if openai_tool_results(&body).is_empty() {
            let args = json!({"command": COMMAND, "description": "Print the answer"}).to_string();
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_cc1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]}),
                Value::Null,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                Value::Null,
            ));
            events.push(chunk(json!({}), json!("tool_calls")));
        } else {
            events.push(chunk(json!({"content": FINAL}), Value::Null));
            events.push(chunk(json!({}), json!("stop")));
        }
        let usage = json!({"id": "chatcmpl-cc", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}});
        events.push(format!("data: {usage}\n\n"));
        events.push("data: [DONE]\n\n".to_string());
        sse_response(events, Duration::ZERO, None)
    })
}

/// Runs `claude -p` against the gateway with `model`; returns its stdout.
async fn run_claude(gw: &Gateway, model: &str) -> String {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(claude_bin());
    cmd.current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CLAUDE_CONFIG_DIR", home.path().join(".claude"))
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", gw.port),
        )
        .env("ANTHROPIC_API_KEY", GATEWAY_KEY)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .args([
            "-p",
            "Run the command that prints the answer, then report.",
            "--model",
            model,
            "--allowedTools",
            "Bash",
            "--max-turns",
            "4",
        ]);
    let out = tokio::task::spawn_blocking(move || {
        let out = cmd.output().expect("run claude");
        drop((home, work));
        out
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "claude -p failed ({}):\n{stdout}\n{}\ngateway log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_through_the_gateway_native_and_translated() {
    let claude = Mock::start(anthropic_scripted()).await;
    let up = Mock::start(openai_scripted()).await;
    let upstream_vllm = format!("{}/v1", up.url());
    let gw = Gateway::start(&[
        ("ANTHROPIC_BASE_URL", &claude.url()),
        ("ANTHROPIC_API_KEY", UPSTREAM_KEY),
        ("VLLM_BASE_URL", &upstream_vllm),
        ("GATEWAY_API_KEYS", GATEWAY_KEY),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
    ]);

    // (a) Anthropic, passed through.
    let stdout = run_claude(&gw, "claude-sonnet-4-5").await;
    assert!(stdout.contains(FINAL), "{stdout}");
    let posts: Vec<Recorded> = claude
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(posts.len() >= 2, "{} requests", posts.len());
    let last = posts.last().unwrap();
    assert_eq!(last.path, "/v1/messages");
    assert!(
        last.header("anthropic-beta").is_some(),
        "its beta flags are forwarded"
    );
    let results = anthropic_tool_results(&last.json());
    assert!(
        results.iter().any(|r| r.contains(OUTPUT)),
        "the tool's output reaches the upstream: {results:?}"
    );

    // (b) An OpenAI-compatible host, translated.
    let stdout = run_claude(&gw, "vllm/qwen3-coder").await;
    assert!(stdout.contains(FINAL), "{stdout}");
    let last = up.last();
    assert_eq!(last.path, "/v1/chat/completions");
    let body = last.json();
    let results = openai_tool_results(&body);
    assert!(
        results.iter().any(|r| r.contains(OUTPUT)),
        "the tool's output reaches the upstream: {results:?}"
    );
    let call = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tool_calls"].is_array())
        .unwrap();
    assert_eq!(
        call["tool_calls"][0]["id"], "call_cc1",
        "the upstream's own id"
    );
    let result = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(result["tool_call_id"], "call_cc1");
}
