//! Issue 16: Codex CLI (npm `@openai/codex`, installed by scripts/test.sh into `.tools/codex`, or
//! the binary named by `AI_GATEWAY_TEST_CODEX`) running `codex exec` through the gateway's
//! `/v1/responses` against an OpenAI-compatible (chat-only) upstream that first answers with a
//! tool call and then with text: the turn completes, the command ran, and its output reached
//! the upstream in the follow-up request. The same against a native Responses upstream (OpenAI's
//! `/v1/responses`, passed through byte for byte). Codex runs offline: its only connections go to the
//! gateway on loopback.

mod common;
mod responses_mock;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Value};

use common::*;

const GATEWAY_KEY: &str = "sk-gw-codex-1";
const VLLM_KEY: &str = "vllm-secret";
/// What the scripted tool call runs, and what its output must carry back.
const MARKER: &str = "gateway-codex-ok";

fn codex() -> PathBuf {
    if let Ok(p) = std::env::var("AI_GATEWAY_TEST_CODEX") {
        return PathBuf::from(p);
    }
    let local =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/codex/node_modules/.bin/codex");
    assert!(
        local.exists(),
        "no Codex CLI: run scripts/test.sh (it installs @openai/codex into .tools/codex) or set AI_GATEWAY_TEST_CODEX"
    );
    local
}

/// A chat-only upstream scripted like a model: a shell tool call first, then, once the tool's
/// output is in the conversation, a text answer quoting it. Streams, as Codex always asks.
/// What a scripted turn answers: a tool call (its arguments sent in two pieces) or text.
enum Turn<'a> {
    Call {
        id: &'a str,
        name: &'a str,
        args: String,
    },
    Text(String),
}

/// A chat-only upstream's guard (models list, provider key) for the scripted handlers:
/// `Some(answer)` when the request is not a chat turn with the right key.
fn not_a_turn(r: &Recorded) -> Option<Response> {
    if r.method == "GET" {
        return Some(json_response(200, json!({"object": "list", "data": []})));
    }
    if r.header("authorization") != Some(&format!("Bearer {VLLM_KEY}")) {
        return Some(json_response(401, json!({"error": {"message": "bad key"}})));
    }
    None
}

/// The OpenAI chat stream of one scripted turn: the role, the reasoning if any, the turn, the
/// finish reason, a usage chunk (`reasoning_tokens` when there was reasoning), `[DONE]`.
fn scripted_stream(model: &str, reasoning: Option<&str>, turn: Turn) -> Response {
    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": "chatcmpl-codex", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(r) = reasoning {
        events.push(chunk(json!({"reasoning_content": r}), Value::Null));
    }
    match turn {
        Turn::Call { id, name, args } => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            let (a, b) = args.split_at(args.len() / 2);
            for part in [a, b] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        Turn::Text(text) => {
            events.push(chunk(json!({"content": text}), Value::Null));
            events.push(chunk(json!({}), json!("stop")));
        }
    }
    let mut usage = json!({"prompt_tokens": 1200, "completion_tokens": 12, "total_tokens": 1212});
    if reasoning.is_some() {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": 4});
    }
    events.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-codex", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage})
    ));
    events.push("data: [DONE]\n\n".to_string());
    sse_response(events, Duration::ZERO, None)
}

fn scripted() -> Handler {
    Arc::new(|r: &Recorded| {
        if let Some(answer) = not_a_turn(r) {
            return answer;
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("");
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let result = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or("").to_string());
        let turn = match result {
            None => Turn::Call {
                id: "call_codex1",
                name: "exec_command",
                args: json!({"cmd": format!("echo {MARKER}")}).to_string(),
            },
            Some(out) => {
                let seen = if out.contains(MARKER) {
                    "saw"
                } else {
                    "missed"
                };
                Turn::Text(format!("All done, I {seen} the marker."))
            }
        };
        scripted_stream(model, None, turn)
    })
}

/// What one `codex exec` left: its stdout (JSON lines) and the directory it worked in.
struct CodexRun {
    stdout: String,
    work: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Runs `codex exec "<prompt>"` through `gw` with `model` (a throw-away CODEX_HOME with one
/// custom provider, the gateway, network features off; hosted web search off unless
/// `web_search`); asserts it succeeded.
async fn codex_run(gw: &Gateway, model: &str, prompt: &str, web_search: bool) -> CodexRun {
    let tmp = tempfile::tempdir().unwrap();
    let (home, work) = (tmp.path().join("codex-home"), tmp.path().join("work"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let config = format!(
        r#"model = "{model}"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
{}
[model_providers.gateway]
name = "ai-gateway"
base_url = "{}"
env_key = "AI_GATEWAY_KEY"
wire_api = "responses"

[analytics]
enabled = false

[feedback]
enabled = false
"#,
        if web_search {
            ""
        } else {
            "web_search = \"disabled\"\n"
        },
        gw.url("/v1")
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let mut cmd = Command::new(codex());
    cmd.args(["exec", "--json", "--skip-git-repo-check", "--strict-config"])
        .arg(prompt)
        .current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .env("CODEX_HOME", &home)
        .env("AI_GATEWAY_KEY", GATEWAY_KEY)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || cmd.output().expect("run codex")),
    )
    .await
    .expect("codex exec finished in time")
    .expect("codex task");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "codex exec failed ({}):\n{stdout}\n{stderr}\ngateway log:\n{}",
        out.status,
        gw.logs()
    );
    CodexRun {
        stdout,
        work,
        _tmp: tmp,
    }
}

/// The tool turn: `codex exec` asked to run `echo MARKER` (hosted web search off: a translated
/// provider cannot run it); its stdout.
async fn codex_exec(gw: &Gateway, model: &str) -> String {
    let prompt = format!("Run `echo {MARKER}` and tell me what it printed.");
    codex_run(gw, model, &prompt, false).await.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_exec_runs_a_tool_turn_through_a_chat_only_upstream() {
    let up = Mock::start(scripted()).await;
    let vllm_url = format!("{}/v1", up.url());
    let gw = Gateway::start(&[
        ("VLLM_BASE_URL", &vllm_url),
        ("VLLM_API_KEY", VLLM_KEY),
        ("GATEWAY_API_KEYS", GATEWAY_KEY),
    ]);
    let stdout = codex_exec(&gw, "vllm/qwen3-8b").await;
    // The turn completed with the model's final text.
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "turn.completed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("All done, I saw the marker."),
        "the final answer: {stdout}"
    );
    // Codex ran the command, and its output went back upstream as the tool's result, under the
    // upstream's own call id.
    let posts: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .collect();
    assert!(posts.len() >= 2, "{posts:?}");
    let followup = posts
        .iter()
        .find(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
        })
        .expect("a follow-up with the tool's output");
    let m = followup["messages"].as_array().unwrap();
    let result = m.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(result["tool_call_id"], "call_codex1", "{followup}");
    assert!(
        result["content"].as_str().unwrap_or("").contains(MARKER),
        "{followup}"
    );
    let call = m
        .iter()
        .find(|m| m["role"] == "assistant" && m.get("tool_calls").is_some())
        .unwrap();
    assert_eq!(
        call["tool_calls"][0]["function"]["name"], "exec_command",
        "{followup}"
    );
    // Codex's system prompt (a developer message) arrived as a system message.
    assert_eq!(m[0]["role"], "system", "{followup}");
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_exec_runs_a_tool_turn_through_a_native_responses_upstream() {
    let state = std::sync::Arc::new(responses_mock::Responses::default());
    let up = Mock::start(responses_mock::openai_responses(state.clone())).await;
    let url = up.url();
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &url),
        ("OPENAI_API_KEY", responses_mock::OPENAI_KEY),
        ("GATEWAY_API_KEYS", GATEWAY_KEY),
    ]);
    let stdout = codex_exec(&gw, "openai/gpt-4o-mini").await;
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "turn.completed"),
        "{stdout}"
    );
    // The final answer quotes the command's output, which the upstream got back.
    assert!(stdout.contains("Tool said:"), "{stdout}");
    let posts: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            assert_eq!(r.path, "/v1/responses");
            r.json()
        })
        .collect();
    assert!(posts.len() >= 2, "{posts:?}");
    // Codex's own request went through as it sent it, model rewritten.
    let first = &posts[0];
    assert_eq!(first["model"], "gpt-4o-mini", "{first}");
    assert_eq!(first["store"], false, "{first}");
    assert!(first.get("client_metadata").is_some(), "{first}");
    assert_eq!(first["input"][0]["role"], "developer", "{first}");
    let followup = posts
        .iter()
        .find(|b| {
            b["input"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["type"] == "function_call_output"))
        })
        .expect("a follow-up with the tool's output");
    let items = followup["input"].as_array().unwrap();
    let call = items.iter().find(|i| i["type"] == "function_call").unwrap();
    assert_eq!(call["name"], "exec_command", "{followup}");
    let result = items
        .iter()
        .find(|i| i["type"] == "function_call_output")
        .unwrap();
    assert_eq!(result["call_id"], call["call_id"], "{followup}");
    assert!(result["output"].to_string().contains(MARKER), "{followup}");
    // store: false: nothing kept by the gateway either.
    assert!(followup.get("previous_response_id").is_none());
}

/// What the scripted `apply_patch` call writes, and the file it creates.
const PATCHED_FILE: &str = "gateway-patched.txt";

/// A chat-only upstream scripted like a reasoning model with Codex's `apply_patch` (offered by
/// the gateway as a function taking one string, `input`): reasoning and a patch first, then,
/// once the tool's output is in the conversation, a text answer.
fn scripted_patch() -> Handler {
    Arc::new(|r: &Recorded| {
        if let Some(answer) = not_a_turn(r) {
            return answer;
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("");
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let done = messages.iter().any(|m| m["role"] == "tool");
        let offered = body["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "apply_patch"));
        if !done && offered {
            let patch = format!(
                "*** Begin Patch\n*** Add File: {PATCHED_FILE}\n+{MARKER}\n*** End Patch\n"
            );
            let turn = Turn::Call {
                id: "call_patch1",
                name: "apply_patch",
                args: json!({"input": patch}).to_string(),
            };
            scripted_stream(model, Some("Planning the patch."), turn)
        } else {
            let text = if done {
                "Patched."
            } else {
                "No apply_patch tool."
            };
            scripted_stream(model, None, Turn::Text(text.to_string()))
        }
    })
}

/// Codex with a model of its own catalog (`gpt-5.5`, aliased to the chat-only upstream) sends
/// its custom `apply_patch` tool and the hosted `web_search` and `tool_search`: the hosted
/// tools are left out (and logged), the patch call comes back as a `custom_tool_call` that
/// Codex applies, and the tool's output reaches the upstream in the follow-up.
#[tokio::test(flavor = "multi_thread")]
async fn codex_exec_applies_a_patch_through_a_chat_only_upstream() {
    let up = Mock::start(scripted_patch()).await;
    let vllm_url = format!("{}/v1", up.url());
    let gw = Gateway::start(&[
        ("VLLM_BASE_URL", &vllm_url),
        ("VLLM_API_KEY", VLLM_KEY),
        ("GATEWAY_API_KEYS", GATEWAY_KEY),
        ("GATEWAY_MODEL_ALIASES", "gpt-5.5=vllm/qwen3-8b"),
    ]);
    // Hosted web search left on: the gateway drops it rather than refuse the request.
    let run = codex_run(
        &gw,
        "gpt-5.5",
        &format!("Create {PATCHED_FILE} containing {MARKER}."),
        true,
    )
    .await;
    let (stdout, work) = (&run.stdout, &run.work);
    assert!(stdout.contains("Patched."), "the final answer: {stdout}");
    // Codex applied the patch.
    let written = std::fs::read_to_string(work.join(PATCHED_FILE)).unwrap_or_default();
    assert_eq!(written.trim(), MARKER, "{stdout}");
    let posts: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .collect();
    assert!(posts.len() >= 2, "{posts:?}");
    // The first request: apply_patch as a one-string function, no hosted tool, the effort.
    let first = &posts[0];
    let tools = first["tools"].as_array().expect("tools");
    let patch = tools
        .iter()
        .find(|t| t["function"]["name"] == "apply_patch")
        .expect("apply_patch offered");
    assert_eq!(
        patch["function"]["parameters"]["required"],
        json!(["input"]),
        "{first}"
    );
    for t in tools {
        assert_eq!(t["type"], "function", "{first}");
    }
    assert!(first["reasoning_effort"].is_string(), "{first}");
    // The follow-up: the patch call under the upstream's id, its output after it.
    let followup = posts
        .iter()
        .find(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
        })
        .expect("a follow-up with the tool's output");
    let m = followup["messages"].as_array().unwrap();
    let call = m
        .iter()
        .find(|m| m["role"] == "assistant" && m.get("tool_calls").is_some())
        .unwrap();
    assert_eq!(call["tool_calls"][0]["id"], "call_patch1", "{followup}");
    assert_eq!(
        call["tool_calls"][0]["function"]["name"], "apply_patch",
        "{followup}"
    );
    let result = m.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(result["tool_call_id"], "call_patch1", "{followup}");
    assert!(
        result["content"]
            .as_str()
            .unwrap_or("")
            .contains(PATCHED_FILE),
        "{followup}"
    );
    // Codex's hosted tools, left out, are named in the log line.
    let logs = gw.logs();
    assert!(
        logs.lines().any(|l| l.contains("path=/v1/responses")
            && l.contains(" dropped_tools=")
            && l.contains("web_search")),
        "{logs}"
    );
}
