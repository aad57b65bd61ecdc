//! The real OpenAI Python SDK against the gateway (echo, a mock upstream, models, typed errors).
//! Needs a Python with the `openai` package: `.venv/bin/python` (made by `scripts/test.sh` and
//! `.ci/run`) or the interpreter named by `AI_GATEWAY_TEST_PYTHON`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::*;
use serde_json::json;

pub fn python() -> PathBuf {
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
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_sdk.py");
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
    assert!(stdout.contains("sdk: ") && stdout.contains(" 0 failed"));
}
