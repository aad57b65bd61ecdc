//! Issue 3, `POST /v1/embeddings`: Gemini (`batchEmbedContents`, translated both ways), Ollama
//! (its OpenAI-compatible `/v1/embeddings`, passed through), string and list inputs, dimensions,
//! base64 encoding, usage; Anthropic refuses (see tests/anthropic.rs).

mod common;
mod mocks;

use std::sync::Arc;

use base64::Engine;
use common::*;
use mocks::*;
use serde_json::{json, Value};

async fn embed(gw: &Gateway, body: Value) -> (u16, Value) {
    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_embeddings_are_translated_both_ways() {
    let mock = Mock::start(gemini()).await;
    let gw = Gateway::start(&[
        ("GEMINI_BASE_URL", &mock.url()),
        ("GEMINI_API_KEY", GEMINI_KEY),
    ]);

    // A list of strings, with dimensions.
    let (status, v) = embed(&gw, json!({"model": "google/text-embedding-004", "input": ["hello", "big world"], "dimensions": 3})).await;
    assert_eq!(status, 200, "{v}");
    let sent = mock.last();
    assert_eq!(
        sent.path,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert_eq!(
        sent.json(),
        json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 3},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "big world"}]}, "outputDimensionality": 3}
        ]})
    );
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "google/text-embedding-004");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(
        data[1]["embedding"],
        json!([9.0 / 8.0, 10.0 / 8.0, 11.0 / 8.0])
    );
    // Gemini counts no tokens for embeddings: the gateway estimates 4 characters per token.
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));

    // A single string, floats by default.
    let (status, v) = embed(
        &gw,
        json!({"model": "google/text-embedding-004", "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 4);

    // base64, as the OpenAI SDKs ask by default: little-endian f32.
    let (status, v) = embed(&gw, json!({"model": "google/text-embedding-004", "input": "hello", "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{v}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, vec![5.0 / 8.0, 6.0 / 8.0, 7.0 / 8.0, 8.0 / 8.0]);

    // Token arrays cannot be sent to Gemini.
    let before = mock.calls();
    let (status, v) = embed(
        &gw,
        json!({"model": "google/text-embedding-004", "input": [[1, 2, 3]]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "input");
    assert_eq!(mock.calls(), before);
}

/// A mock Ollama: its OpenAI-compatible `/v1/embeddings` and its `/api/version` health probe.
fn ollama() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.path == "/api/version" {
            return json_response(200, json!({"version": "0.6.0"}));
        }
        if r.path != "/v1/embeddings" {
            return json_response(404, json!({"error": "not found"}));
        }
        let body = r.json();
        let inputs: Vec<String> = match &body["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => {
                return json_response(
                    400,
                    json!({"error": {"message": "invalid input", "type": "invalid_request_error"}}),
                )
            }
        };
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": [s.len() as f64, 0.5]}))
            .collect();
        json_response(
            200,
            json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 7, "total_tokens": 7}}),
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_embeddings_pass_through() {
    let mock = Mock::start(ollama()).await;
    let gw = Gateway::start(&[("OLLAMA_HOST", &format!("127.0.0.1:{}", mock.port))]);
    let (status, v) = embed(&gw, json!({"model": "ollama/nomic-embed-text", "input": ["a", "bcd"], "encoding_format": "float"})).await;
    assert_eq!(status, 200, "{v}");
    let sent = mock.last();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(
        sent.json(),
        json!({"model": "nomic-embed-text", "input": ["a", "bcd"], "encoding_format": "float"})
    );
    assert_eq!(v["data"][1]["embedding"], json!([3.0, 0.5]));
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    assert!(
        gw.wait_log("prompt_tokens=7", std::time::Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
}

/// Ollama as above, but an input of `"reject"` is refused with a 400 (the client's error).
fn rejecting_ollama() -> Handler {
    let inner = ollama();
    Arc::new(move |r: &Recorded| {
        if r.path == "/v1/embeddings" && r.json()["input"] == "reject" {
            return json_response(
                400,
                json!({"error": {"message": "rejected input", "type": "invalid_request_error"}}),
            );
        }
        inner(r)
    })
}

/// A provider with several backends (a replica pool) is asked through its pool: round robin
/// spreads the calls, a backend that cannot be reached is passed over for the next one, and a
/// client error is not retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_of_embedding_backends_is_balanced_and_fails_over() {
    let a = Mock::start(rejecting_ollama()).await;
    let b = Mock::start(rejecting_ollama()).await;
    let gw = Gateway::start(&[
        ("OLLAMA_BASE_URL", &format!("{},{}", a.url(), b.url())),
        ("GATEWAY_POOL_STRATEGY", "round_robin"),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
    ]);
    for _ in 0..4 {
        let (status, v) = embed(
            &gw,
            json!({"model": "ollama/nomic-embed-text", "input": "hi"}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(
        (a.calls(), b.calls()),
        (2, 2),
        "round robin over both backends"
    );
    // The upstream's 400 is the client's answer, not a reason to ask the other backend.
    let (status, v) = embed(
        &gw,
        json!({"model": "ollama/nomic-embed-text", "input": "reject"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(a.calls() + b.calls(), 5, "asked once");

    // The first backend refuses connections: every request is served by the second.
    let live = Mock::start(ollama()).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&[
        ("OLLAMA_BASE_URL", &format!("{dead},{}", live.url())),
        ("GATEWAY_POOL_STRATEGY", "round_robin"),
        ("GATEWAY_HEALTH_CHECK_INTERVAL", "off"),
    ]);
    for _ in 0..3 {
        let (status, v) = embed(
            &gw,
            json!({"model": "ollama/nomic-embed-text", "input": ["x", "yz"]}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"][1]["embedding"], json!([2.0, 0.5]));
    }
    assert_eq!(live.calls(), 3);
}
