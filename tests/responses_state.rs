//! Issue 16, native pass-through and state: `/v1/responses` passed through to an upstream that
//! speaks Responses (OpenAI by default; `VLLM_NATIVE_RESPONSES=on`), byte for byte both ways; a
//! native stream cut short ends with `response.failed`; stored responses
//! (`previous_response_id`, `GET`/`DELETE /v1/responses/{id}`) for native and translated
//! providers, scoped to the gateway key, shared by two instances through a real redis-server;
//! Redis down is a 503, never a hang. The real `openai` Python SDK drives the state checks
//! (`tests/python/test_responses_state.py`), first straight against the mock upstream to show
//! the mock behaves as the SDK expects.

mod common;
mod dialect_support;
mod mocks;
mod redis_support;
mod responses_mock;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;
use redis_support::RedisServer;
use responses_mock::*;

const KEY: &str = "sk-gw-state-1";
const OTHER: &str = "sk-gw-state-2";
const KEYS: &str = "team-a=sk-gw-state-1,team-b=sk-gw-state-2";

fn native_gateway(mock: &Mock, more: &[(&str, &str)]) -> Gateway {
    let url = mock.url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("OPENAI_BASE_URL", &url),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("GATEWAY_API_KEYS", KEYS),
    ];
    vars.extend_from_slice(more);
    Gateway::start(&vars)
}

/// An OpenAI-compatible chat upstream with a memory of the conversation it is sent: "Your name
/// is X." when an earlier user turn said "My name is X" and the last one asks for it; the
/// dialect tests' vLLM mock (tool calls, tool results) otherwise.
fn chat_with_memory() -> Handler {
    let inner = dialect_support::vllm();
    Arc::new(move |r: &Recorded| {
        let body = r.json();
        let users: Vec<String> = body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["role"] == "user")
                    .map(|m| m["content"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let name = users.iter().find_map(|t| {
            let at = t.find("My name is ")?;
            Some(t[at + 11..].trim_end_matches('.').to_string())
        });
        if let (Some(n), Some(true)) = (name, users.last().map(|u| u.contains("name?"))) {
            let model = body["model"].as_str().unwrap_or("").to_string();
            let text = format!("Your name is {n}.");
            if body["stream"] == true {
                return sse_response(
                    openai_stream_events(&model, &[&text], true),
                    Duration::ZERO,
                    None,
                );
            }
            return json_response(200, openai_completion(&model, &text));
        }
        inner(r)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn native_responses_pass_through_and_keep_state() {
    let state = Arc::new(Responses::default());
    let mock = Mock::start(openai_responses(state.clone())).await;
    let gw = native_gateway(&mock, &[]);
    // The mock as the SDK sees it, straight (no gateway in between).
    let direct = format!("{}/v1", mock.url());
    let out = run_python(
        &gw,
        &["test_responses_state.py"],
        &[
            ("GATEWAY_BASE_URL", &direct),
            ("GATEWAY_KEY", OPENAI_KEY),
            ("MODEL", "gpt-4o-mini"),
        ],
    )
    .await;
    assert!(out.contains("sdk: 8 passed, 0 failed"), "{out}");
    let direct_calls = mock.all_calls();
    // The same checks through the gateway, with a second key that must not see the first's.
    let out = run_python(
        &gw,
        &["test_responses_state.py"],
        &[
            ("GATEWAY_KEY", KEY),
            ("MODEL", "openai/gpt-4o-mini"),
            ("OTHER_KEY", OTHER),
            ("CUT_CHECK", "1"),
        ],
    )
    .await;
    assert!(out.contains("sdk: 8 passed, 0 failed"), "{out}");
    // Every request through the gateway reached /v1/responses with the provider's key.
    let through: Vec<Recorded> = mock.requests().split_off(direct_calls);
    assert!(through.len() >= 12, "{}", through.len());
    for r in &through {
        assert!(r.path.starts_with("/v1/responses"), "{}", r.path);
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
    }
    // The other key's follow-up never reached the upstream: refused by the gateway.
    let log = gw.logs();
    assert!(log.contains("key=team-b"), "{log}");

    // Byte for byte: the body as sent (only `model` rewritten), the answer as the mock wrote it.
    let sent = "{ \"model\" : \"openai/gpt-4o-mini\",\n  \"input\":\"say hello\", \"metadata\":{\"model\":\"keep\"},\"temperature\":0.25 }";
    for stream in [false, true] {
        let body = if stream {
            sent.replace("0.25 }", "0.25, \"stream\": true }")
        } else {
            sent.to_string()
        };
        let resp = client()
            .post(gw.url("/v1/responses"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-provider"], "openai");
        let got = resp.text().await.unwrap();
        assert_eq!(got, state.last(), "stream={stream}");
        let up = mock.last();
        assert_eq!(
            std::str::from_utf8(&up.body).unwrap(),
            body.replace("\"openai/gpt-4o-mini\"", "\"gpt-4o-mini\""),
            "stream={stream}"
        );
    }

    // A native stream cut before response.completed ends with the gateway's response.failed,
    // for the upstream's response, numbered after the last event.
    let resp = client()
        .post(gw.url("/v1/responses"))
        .header("authorization", format!("Bearer {KEY}"))
        .json(&json!({"model": "openai/gpt-4o-mini", "input": "please cut the stream", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    // What came through is the upstream's bytes (the mock may lose its last event in the
    // cut), then the gateway's failure event.
    let want = state.last();
    let at = text
        .find("event: response.failed")
        .expect("a response.failed event");
    assert!(at > 0 && want.starts_with(&text[..at]), "{text}");
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{text}");
    assert_eq!(last["sequence_number"], events.len() - 1, "{text}");
    assert_eq!(last["response"]["id"], events[0]["response"]["id"]);
    assert_eq!(last["response"]["status"], "failed");
    assert!(!text.contains("response.completed"));

    // OPENAI_NATIVE_RESPONSES=off: OpenAI is translated like any provider (chat completions).
    let chat = Mock::start(openai_handler("Hello from chat")).await;
    let chat_url = chat.url();
    let translated = Gateway::start(&[
        ("OPENAI_BASE_URL", &chat_url),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("OPENAI_NATIVE_RESPONSES", "off"),
    ]);
    let r: Value = client()
        .post(translated.url("/v1/responses"))
        .json(&json!({"model": "openai/gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["output"][0]["content"][0]["text"], "Hello from chat",
        "{r}"
    );
    assert_eq!(chat.last().path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread")]
async fn native_switch_for_an_openai_compatible_host() {
    let state = Arc::new(Responses::default());
    let mock = Mock::start(openai_responses(state.clone())).await;
    let url = format!("{}/v1", mock.url());
    let gw = Gateway::start(&[
        ("VLLM_BASE_URL", &url),
        ("VLLM_API_KEY", OPENAI_KEY),
        ("VLLM_NATIVE_RESPONSES", "on"),
    ]);
    let resp = client()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "vllm/qwen3-8b", "input": "My name is Ada.", "tools": [{"type": "web_search"}], "tool_choice": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(mock.last().path, "/v1/responses");
    // No gateway keys: one anonymous scope, continued on the same host.
    let r2: Value = client()
        .post(gw.url("/v1/responses"))
        .json(&json!({"model": "vllm/qwen3-8b", "input": "What is my name?", "previous_response_id": r["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r2["output"][0]["content"][0]["text"], "Your name is Ada.",
        "{r2}"
    );
    assert_eq!(mock.last().json()["previous_response_id"], r["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_providers_keep_the_conversation() {
    let up = Mock::start(chat_with_memory()).await;
    let claude = Mock::start(mocks::anthropic()).await;
    let gw = dialect_support::start_with(&claude, &up, KEY, &[("GATEWAY_API_KEYS", KEYS)]);
    let out = run_python(
        &gw,
        &["test_responses_state.py"],
        &[
            ("GATEWAY_KEY", KEY),
            ("MODEL", "vllm/qwen3-8b"),
            ("OTHER_KEY", OTHER),
        ],
    )
    .await;
    assert!(out.contains("sdk: 8 passed, 0 failed"), "{out}");
    // Every request upstream was plain chat: the stored turns arrived as messages.
    let posts: Vec<Value> = up
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(Recorded::json)
        .collect();
    let chained = posts
        .iter()
        .find(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 7 && m[0]["content"] == "My name is Ada.")
        })
        .expect("the fourth turn carried the three before it");
    let m = chained["messages"].as_array().unwrap();
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(m[1]["content"], "Hello from vLLM", "{chained}");
    assert_eq!(m[3]["content"], "Your name is Ada.", "{chained}");
    for b in &posts {
        assert!(b.get("previous_response_id").is_none(), "{b}");
        assert!(b.get("input").is_none(), "{b}");
    }
    // The mock gives every answer the same id: another key's response with that id does not
    // replace this key's record.
    let c = client();
    let ask = |key: &'static str, body: Value| {
        c.post(gw.url("/v1/responses"))
            .header("authorization", format!("Bearer {key}"))
            .json(&body)
            .send()
    };
    let a: Value = ask(
        KEY,
        json!({"model": "vllm/qwen3-8b", "input": "My name is Ada."}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let b: Value = ask(
        OTHER,
        json!({"model": "vllm/qwen3-8b", "input": "My name is Bob."}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // The mock answers every request with the same id: the gateway's ids are its own, so no
    // two stored responses ever share one.
    assert_ne!(a["id"], b["id"], "the mock reuses its answer id");
    let a2: Value = ask(
        KEY,
        json!({"model": "vllm/qwen3-8b", "input": "My name is Ada Lovelace."}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_ne!(a["id"], a2["id"]);
    let again: Value = ask(
        KEY,
        json!({"model": "vllm/qwen3-8b", "input": "What is my name?", "previous_response_id": a["id"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        again["output"][0]["content"][0]["text"], "Your name is Ada.",
        "{again}"
    );
    // A stored conversation continues on another provider (Anthropic, translated too).
    let r1: Value = c
        .post(gw.url("/v1/responses"))
        .header("authorization", format!("Bearer {KEY}"))
        .json(&json!({"model": "vllm/qwen3-8b", "input": "My name is Ada."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = c
        .post(gw.url("/v1/responses"))
        .header("authorization", format!("Bearer {KEY}"))
        .json(&json!({"model": "anthropic/claude-sonnet-4-20250514", "input": "What is my name?", "previous_response_id": r1["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = claude.last().json();
    let first = &sent["messages"][0]["content"];
    let first = first.as_str().or(first[0]["text"].as_str());
    assert_eq!(first, Some("My name is Ada."), "{sent}");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_state_through_redis() {
    let mut redis = RedisServer::start();
    let up = Mock::start(chat_with_memory()).await;
    let state = Arc::new(Responses::default());
    let native = Mock::start(openai_responses(state.clone())).await;
    let (vllm_url, openai_url, redis_url) = (format!("{}/v1", up.url()), native.url(), redis.url());
    let vars = [
        ("VLLM_BASE_URL", vllm_url.as_str()),
        ("VLLM_API_KEY", dialect_support::VLLM_KEY),
        ("OPENAI_BASE_URL", openai_url.as_str()),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("GATEWAY_API_KEYS", KEYS),
        ("GATEWAY_STATE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", redis_url.as_str()),
        ("GATEWAY_RESPONSES_TTL", "600"),
    ];
    let (a, b) = (Gateway::start(&vars), Gateway::start(&vars));
    let c = client();
    let post = |gw: &Gateway, body: Value| {
        c.post(gw.url("/v1/responses"))
            .header("authorization", format!("Bearer {KEY}"))
            .json(&body)
            .send()
    };
    for model in ["vllm/qwen3-8b", "openai/gpt-4o-mini"] {
        // Made on one instance...
        let r1: Value = post(&a, json!({"model": model, "input": "My name is Ada."}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r1["id"].as_str().unwrap().to_string();
        // ...read and continued on the other, streamed.
        let got = c
            .get(b.url(&format!("/v1/responses/{id}")))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{model}");
        let got: Value = got.json().await.unwrap();
        assert_eq!(got["id"], id, "{model}");
        assert_eq!(got["output"], r1["output"], "{model}");
        let resp = post(
            &b,
            json!({"model": model, "input": "What is my name?", "previous_response_id": id, "stream": true}),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("response.completed"), "{model}: {text}");
        assert!(text.contains("Your name is Ada."), "{model}: {text}");
        // Another key on the other instance: not found.
        let other = c
            .get(b.url(&format!("/v1/responses/{id}")))
            .header("authorization", format!("Bearer {OTHER}"))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404, "{model}");
        let v: Value = other.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    // The record lives in Redis, with the TTL asked for.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aigw:state:resp:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 4, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((590..=600).contains(&ttl), "{ttl}");

    // Redis down: a continuation or a lookup is a prompt 503; a new answer is still served.
    redis.stop();
    let started = Instant::now();
    let resp = post(
        &a,
        json!({"model": "vllm/qwen3-8b", "input": "hi", "previous_response_id": "resp_x"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "state_unavailable", "{v}");
    assert!(!v.to_string().contains("redis://"), "{v}");
    let got = c
        .get(a.url("/v1/responses/resp_x"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    let resp = post(&a, json!({"model": "vllm/qwen3-8b", "input": "hi"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
