//! The real OpenAI Python SDK against the gateway (echo, a mock upstream, models, typed errors).
//! Needs a Python with the `openai` package: `.venv/bin/python` (made by `scripts/test.sh` and
//! `.ci/run`) or the interpreter named by `AI_GATEWAY_TEST_PYTHON`.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;

/// Mock OpenAI upstream: `status-NNN` models answer with that status; others with a fixed text.
fn upstream() -> Handler {
    let ok = openai_handler("Hello from the mock");
    Arc::new(move |r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        if let Some(code) = model
            .strip_prefix("status-")
            .and_then(|c| c.parse::<u16>().ok())
        {
            return json_response(
                code,
                json!({"error": {"message": format!("mock says {code}"), "type": "mock_error", "param": null, "code": null}}),
            );
        }
        ok(r)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_works_unchanged() {
    let mock = Mock::start(upstream()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("OPENAI_API_KEY", "sk-mock"),
    ]);
    let stdout = run_python(&gw, &["test_sdk.py"], &[]).await;
    assert!(stdout.contains("sdk: ") && stdout.contains(" 0 failed"));
}
