//! Issue 3 with the real OpenAI Python SDK: streamed tool calls through Anthropic and Gemini are
//! reassembled by the SDK's own accumulator, the results go back in a second turn,
//! `embeddings.create` works (the SDK's default base64 included), and errors are typed.
//! Needs `.venv/bin/python` with the `openai` package, or `AI_GATEWAY_TEST_PYTHON`.

mod common;
mod mocks;

use common::*;
use mocks::*;

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
    let stdout = run_python(&gw, &["test_translate.py"], &[]).await;
    assert!(stdout.contains("sdk: 5 passed, 0 failed"), "{stdout}");
    // Both upstreams were really used.
    assert!(
        claude.calls() >= 4 && google.calls() >= 4,
        "anthropic {} gemini {}",
        claude.calls(),
        google.calls()
    );
}
