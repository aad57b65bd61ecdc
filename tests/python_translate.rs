//! Issue 3 with the real OpenAI Python SDK: streamed tool calls through Anthropic and Gemini are
//! reassembled by the SDK's own accumulator, the results go back in a second turn,
//! `embeddings.create` works (the SDK's default base64 included), and errors are typed.
//! Needs `.venv/bin/python` with the `openai` package, or `AI_GATEWAY_TEST_PYTHON`.

mod common;
mod mocks;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use mocks::*;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("AI_GATEWAY_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the openai package: run scripts/test.sh (it creates .venv) or set AI_GATEWAY_TEST_PYTHON"
    );
    venv
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_through_anthropic_and_gemini() {
    let claude = Mock::start(anthropic()).await;
    let google = Mock::start(gemini()).await;
    let gw = Gateway::start(&[
        ("ANTHROPIC_BASE_URL", &claude.url()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("GEMINI_BASE_URL", &google.url()),
        ("GEMINI_API_KEY", GEMINI_KEY),
    ]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_translate.py");
    let py = python();
    let base = gw.base();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .env("GATEWAY_BASE_URL", base)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.logs()
    );
    assert!(stdout.contains("sdk: 5 passed, 0 failed"), "{stdout}");
    // Both upstreams were really used.
    assert!(
        claude.calls() >= 4 && google.calls() >= 4,
        "anthropic {} gemini {}",
        claude.calls(),
        google.calls()
    );
}
