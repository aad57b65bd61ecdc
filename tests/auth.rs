//! Issue 6, keys: 401 for a missing, wrong or malformed key (no upstream call), 200 for each
//! configured key, key names (never keys) in logs, the keys file reloaded on change and on
//! SIGHUP, the start-up warning without keys, and the OpenAI Python SDK's view of it all.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY_A: &str = "sk-gw-aaa-0123456789abcdef";
const KEY_B: &str = "sk-gw-bbb-0123456789abcdef";
const KEY_UNNAMED: &str = "sk-gw-unnamed-0123456789";

async fn post(url: &str, auth: Option<&str>, body: &Value) -> reqwest::Response {
    let mut rb = client().post(url).json(body);
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    rb.send().await.unwrap()
}

async fn status_with(gw: &Gateway, key: &str) -> u16 {
    post(
        &gw.url("/v1/chat/completions"),
        Some(&format!("Bearer {key}")),
        &chat_body("echo/x", "hi", false),
    )
    .await
    .status()
    .as_u16()
}

/// Asserts a 401 in OpenAI shape with code `invalid_api_key`.
async fn assert_401(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(r.headers()["www-authenticate"], "Bearer", "{what}");
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key", "{what}: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}: {v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"].get("param").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_wrong_or_malformed_keys_get_401_and_never_reach_the_upstream() {
    let mock = Mock::start(openai_handler("hello from upstream")).await;
    let keys = format!("team-a={KEY_A},team-b={KEY_B},{KEY_UNNAMED}");
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_API_KEYS", &keys),
    ]);
    let chat = gw.url("/v1/chat/completions");
    let body = chat_body("openai/gpt-4o", "hi", false);

    assert_401(post(&chat, None, &body).await, "no header").await;
    assert_401(
        post(&chat, Some("Bearer sk-gw-wrong"), &body).await,
        "wrong key",
    )
    .await;
    assert_401(
        post(&chat, Some(&format!("Bearer {KEY_A}x")), &body).await,
        "key + 1 char",
    )
    .await;
    assert_401(
        post(
            &chat,
            Some(&format!("Bearer {}", &KEY_A[..KEY_A.len() - 1])),
            &body,
        )
        .await,
        "prefix of a key",
    )
    .await;
    assert_401(post(&chat, Some(KEY_A), &body).await, "no scheme").await;
    assert_401(
        post(&chat, Some(&format!("Basic {KEY_A}")), &body).await,
        "Basic",
    )
    .await;
    assert_401(post(&chat, Some("Bearer "), &body).await, "empty bearer").await;
    assert_401(
        post(&chat, Some(&format!("Bearer {KEY_A} {KEY_B}")), &body).await,
        "two keys",
    )
    .await;
    let r = client()
        .post(&chat)
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xffkey").unwrap(),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_401(r, "not UTF-8").await;
    // Every /v1 API endpoint, with or without the /v1 prefix, streams included.
    assert_401(
        post(
            &gw.url("/v1/embeddings"),
            None,
            &json!({"model": "openai/e", "input": "x"}),
        )
        .await,
        "embeddings",
    )
    .await;
    assert_401(
        post(&gw.url("/chat/completions"), None, &body).await,
        "no /v1 prefix",
    )
    .await;
    assert_401(
        post(
            &chat,
            Some("Bearer nope"),
            &chat_body("openai/gpt-4o", "hi", true),
        )
        .await,
        "stream",
    )
    .await;
    assert_401(
        client().get(gw.url("/v1/models")).send().await.unwrap(),
        "models",
    )
    .await;
    assert_eq!(
        mock.calls(),
        0,
        "a refused request must not reach the upstream"
    );

    // Health stays open.
    assert_eq!(
        client()
            .get(gw.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Every configured key works, plain and streamed, and models too.
    for key in [KEY_A, KEY_B, KEY_UNNAMED] {
        let auth = format!("Bearer {key}");
        let r = post(&chat, Some(&auth), &body).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello from upstream");
        let r = post(&chat, Some(&auth), &chat_body("openai/gpt-4o", "hi", true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            sse_data(&r.text().await.unwrap())
                .last()
                .map(String::as_str),
            Some("[DONE]")
        );
        let r = client()
            .get(gw.url("/v1/models"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The scheme is case-insensitive (RFC 9110).
    assert_eq!(
        post(&chat, Some(&format!("bearer {KEY_B}")), &body)
            .await
            .status(),
        200
    );
    assert_eq!(mock.calls(), 7);
    // The client's key never goes upstream.
    assert!(mock.requests().iter().all(|r| r
        .header("authorization")
        .is_none_or(|h| !h.contains("sk-gw"))));

    // Logs name the key, never show it.
    for name in ["key=team-a", "key=team-b", "key=key-1"] {
        assert!(
            gw.wait_log(name, Duration::from_secs(5)),
            "{name} missing:\n{}",
            gw.logs()
        );
    }
    assert!(gw.wait_log("status=401", Duration::from_secs(5)));
    let logs = gw.logs();
    for k in [
        KEY_A,
        KEY_B,
        KEY_UNNAMED,
        "sk-gw-wrong",
        &KEY_A[..KEY_A.len() - 1],
    ] {
        assert!(!logs.contains(k), "key {k} leaked into the log:\n{logs}");
    }
    assert!(logs.contains("api keys: on, 3 key(s)"), "{logs}");
    assert!(!logs.contains("AUTH IS OFF"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keys_auth_is_off_and_start_up_warns() {
    let gw = Gateway::start(&[]);
    assert_eq!(status_with(&gw, "anything").await, 200);
    let r = post(
        &gw.url("/v1/chat/completions"),
        None,
        &chat_body("echo/x", "hi", false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        gw.wait_log("AUTH IS OFF", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    assert!(gw.logs().contains("WARN"));
    // A stray SIGHUP (or `systemctl reload`) does not kill it.
    assert!(
        gw.wait_log("SIGHUP has nothing to reload", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    gw.signal("HUP");
    assert!(
        gw.wait_log("SIGHUP: no GATEWAY_API_KEYS_FILE", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    assert_eq!(status_with(&gw, "anything").await, 200);
}

#[test]
fn bad_key_configuration_stops_start_up_without_echoing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "ok=sk-file-secret-1\nsk-file-secret-2\n").unwrap();
    let out = Gateway::command(&[
        (
            "GATEWAY_API_KEYS",
            "a=sk-env-secret-1:rpm=fast,a=sk-env-secret-2",
        ),
        ("GATEWAY_API_KEYS_FILE", file.to_str().unwrap()),
        ("GATEWAY_RATE_LIMIT_BACKEND", "redis"),
        ("GATEWAY_RATE_LIMIT_RPM", "0"),
    ])
    .arg("--check-config")
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for var in [
        "GATEWAY_API_KEYS=",
        "GATEWAY_API_KEYS_FILE=",
        "GATEWAY_RATE_LIMIT_BACKEND=",
        "GATEWAY_RATE_LIMIT_RPM=",
    ] {
        assert!(err.contains(var), "{var} not named in:\n{err}");
    }
    assert!(
        err.contains("line 2") && err.contains("GATEWAY_REDIS_URL"),
        "{err}"
    );
    assert!(
        !err.contains("sk-env-secret") && !err.contains("sk-file-secret"),
        "{err}"
    );

    // A valid configuration prints key names only.
    let out = Gateway::command(&[
        ("GATEWAY_API_KEYS", "a=sk-env-secret-1:rpm=60:burst=5"),
        ("GATEWAY_RATE_LIMIT_TPM", "1000"),
    ])
    .arg("--check-config")
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("on, 1 key(s) [a]") && text.contains("tpm=1000"),
        "{text}"
    );
    assert!(!text.contains("sk-env-secret"), "{text}");
}

/// Replaces the file at once (write + rename), as an operator's tooling would.
fn write_keys(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls until `key` gets `want`, up to 20 s.
async fn wait_status(gw: &Gateway, key: &str, want: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if status_with(gw, key).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_file_change_adds_and_removes_keys_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.txt");
    write_keys(&file, "# team keys\nteam-a=sk-file-aaa\n");
    let gw = Gateway::start(&[
        ("GATEWAY_API_KEYS_FILE", file.to_str().unwrap()),
        ("GATEWAY_API_KEYS_RELOAD_INTERVAL", "200ms"),
        ("GATEWAY_API_KEYS", "ops=sk-env-ops"),
    ]);
    let pid = gw.pid();
    assert_eq!(status_with(&gw, "sk-file-aaa").await, 200);
    assert_eq!(status_with(&gw, "sk-env-ops").await, 200);
    assert_eq!(status_with(&gw, "sk-file-bbb").await, 401);

    write_keys(&file, "team-b=sk-file-bbb\n");
    assert!(
        wait_status(&gw, "sk-file-bbb", 200).await,
        "team-b never added:\n{}",
        gw.logs()
    );
    assert_eq!(
        status_with(&gw, "sk-file-aaa").await,
        401,
        "team-a must be gone"
    );
    assert_eq!(status_with(&gw, "sk-env-ops").await, 200, "env keys stay");
    assert!(
        gw.wait_log("added [team-b], removed [team-a]", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );

    // A broken file leaves the keys in force.
    write_keys(&file, "team-c=sk-file-ccc:rpm=lots\n");
    assert!(
        gw.wait_log("NOT reloaded (file changed)", Duration::from_secs(20)),
        "{}",
        gw.logs()
    );
    assert_eq!(status_with(&gw, "sk-file-bbb").await, 200);
    assert_eq!(status_with(&gw, "sk-file-ccc").await, 401);
    assert_eq!(gw.pid(), pid);
    let logs = gw.logs();
    assert!(
        !logs.contains("sk-file-") && !logs.contains("sk-env-ops"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.txt");
    write_keys(&file, "team-a=sk-hup-aaa\n");
    let mut gw = Gateway::start(&[
        ("GATEWAY_API_KEYS_FILE", file.to_str().unwrap()),
        ("GATEWAY_API_KEYS_RELOAD_INTERVAL", "off"),
    ]);
    assert!(
        gw.wait_log("api keys: watching", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    assert_eq!(status_with(&gw, "sk-hup-aaa").await, 200);

    write_keys(&file, "team-c=sk-hup-ccc:rpm=600\n");
    // Polling is off: nothing changes until the signal.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(status_with(&gw, "sk-hup-ccc").await, 401);
    assert_eq!(status_with(&gw, "sk-hup-aaa").await, 200);

    gw.signal("HUP");
    assert!(wait_status(&gw, "sk-hup-ccc", 200).await, "{}", gw.logs());
    assert_eq!(status_with(&gw, "sk-hup-aaa").await, 401);
    assert!(gw.wait_log("api keys reloaded (SIGHUP)", Duration::from_secs(5)));
    // The new key's own limits are in force.
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some("Bearer sk-hup-ccc"),
        &chat_body("echo/x", "hi", false),
    )
    .await;
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "600");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the gateway"
    );
}

/// The SDK's typed errors: 401 -> `AuthenticationError`, 429 -> `RateLimitError` with the
/// headers a client can act on.
const SDK_SCRIPT: &str = r#"
import os, openai
from openai import OpenAI
base = os.environ["GATEWAY_BASE_URL"]
msgs = [{"role": "user", "content": "hi"}]
good = OpenAI(base_url=base, api_key=os.environ["GOOD_KEY"], max_retries=0)
bad = OpenAI(base_url=base, api_key="sk-not-a-gateway-key", max_retries=0)
try:
    bad.chat.completions.create(model="echo/x", messages=msgs)
    raise SystemExit("401 expected")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e
r = good.chat.completions.with_raw_response.create(model="echo/x", messages=msgs)
assert r.headers["x-ratelimit-limit-requests"] == "2", dict(r.headers)
assert r.headers["x-ratelimit-remaining-requests"] == "1", dict(r.headers)
good.chat.completions.create(model="echo/x", messages=msgs)
try:
    good.chat.completions.create(model="echo/x", messages=msgs)
    raise SystemExit("429 expected")
except openai.RateLimitError as e:
    assert e.status_code == 429 and e.code == "rate_limit_exceeded", e
    assert int(e.response.headers["retry-after"]) >= 1
    assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
print("sdk auth: ok")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_sees_typed_auth_and_rate_limit_errors() {
    // 2 requests at once, then one per 30 s: the third is refused whatever the machine's speed.
    let gw = Gateway::start(&[("GATEWAY_API_KEYS", "sdk=sk-gw-sdk-key:rpm=2")]);
    let stdout = run_python(&gw, &["-c", SDK_SCRIPT], &[("GOOD_KEY", "sk-gw-sdk-key")]).await;
    assert!(stdout.contains("sdk auth: ok"));
}
