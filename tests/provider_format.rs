//! `GATEWAY_PROVIDER_<NAME>_FORMAT`: a custom host speaking another wire format than OpenAI's.
//! A custom provider pointed at the mock Anthropic API with format `anthropic` answers through
//! the Anthropic translation; a format no codec answers to stops start-up (exit 2), naming the
//! variable, and so does `--check-config`.

mod common;
mod mocks;

use common::*;
use mocks::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_host_with_the_anthropic_format_is_translated() {
    let mock = Mock::start(anthropic()).await;
    let gw = Gateway::start(&[
        ("GATEWAY_PROVIDER_MYCLAUDE_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_MYCLAUDE_FORMAT", "anthropic"),
        ("GATEWAY_PROVIDER_MYCLAUDE_API_KEY", ANTHROPIC_KEY),
    ]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("myclaude/claude-x", "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "myclaude");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "myclaude/claude-x");
    assert_eq!(
        v["choices"][0]["message"]["content"], "Hello from Claude",
        "{v}"
    );

    // The mock saw an Anthropic Messages request at the host root's /v1/messages.
    assert_eq!(mock.calls(), 1);
    let sent = mock.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.json()["model"], "claude-x");
    assert_eq!(sent.json()["messages"][0]["role"], "user");
    assert!(sent.json().get("max_tokens").is_some(), "an Anthropic body");

    // Streams are translated into OpenAI chunks too.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat_body("myclaude/claude-x", "hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello from Claude");
    assert_eq!(mock.last().json()["stream"], true);
}

#[test]
fn check_config_shows_the_format() {
    let out = Gateway::command(&[
        ("GATEWAY_PROVIDER_MYCLAUDE_BASE_URL", "http://127.0.0.1:9"),
        ("GATEWAY_PROVIDER_MYCLAUDE_FORMAT", "anthropic"),
        ("GATEWAY_PROVIDER_GROQ_BASE_URL", "http://127.0.0.1:9"),
    ])
    .arg("--check-config")
    .output()
    .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}");
    let line = |name: &str| {
        s.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{s}"))
            .to_string()
    };
    assert!(line("myclaude").contains("format=anthropic"), "{s}");
    // The host root is kept as given for the Anthropic format, `/v1` added for OpenAI's.
    assert!(line("myclaude").contains("[http://127.0.0.1:9]"), "{s}");
    assert!(line("groq").contains("format=openai"), "{s}");
    assert!(line("groq").contains("[http://127.0.0.1:9/v1]"), "{s}");
}

#[test]
fn an_unknown_format_stops_start_up_naming_the_variable() {
    let vars = [
        ("GATEWAY_PROVIDER_X_BASE_URL", "http://127.0.0.1:9"),
        ("GATEWAY_PROVIDER_X_FORMAT", "klingon"),
    ];
    for check in [false, true] {
        let mut cmd = Gateway::command(&vars);
        cmd.env("GATEWAY_LISTEN", format!("127.0.0.1:{}", free_port()));
        if check {
            cmd.arg("--check-config");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check={check}: {err}");
        assert!(
            err.contains("ai-gateway: invalid configuration"),
            "check={check}: {err}"
        );
        assert!(
            err.contains("GATEWAY_PROVIDER_X_FORMAT=\"klingon\""),
            "check={check}: {err}"
        );
        for known in ["openai", "anthropic", "gemini"] {
            assert!(err.contains(known), "check={check}: {err}");
        }
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
            "check={check}"
        );
    }
    // A malformed name is refused by the configuration parser itself.
    let out = Gateway::command(&[
        ("GATEWAY_PROVIDER_X_BASE_URL", "http://127.0.0.1:9"),
        ("GATEWAY_PROVIDER_X_FORMAT", "Anthropic"),
    ])
    .arg("--check-config")
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("GATEWAY_PROVIDER_X_FORMAT"), "{err}");
}
