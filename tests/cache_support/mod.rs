//! Helpers shared by the cache tests (`tests/cache.rs`, `tests/cache_redis.rs`): a client
//! that keeps headers, numbered and slow mock answers, an embeddings mock with fixed vectors,
//! and the semantic checks both backends must pass.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::common::*;

/// A reply as the test sees it.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn cache(&self) -> &str {
        self.h("x-cache").unwrap_or("(none)")
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn content(&self) -> String {
        self.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

pub async fn post(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client().post(gw.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.expect("body"),
    }
}

pub fn chat(text: &str) -> Value {
    chat_body("openai/gpt-4o", text, false)
}

/// An OpenAI upstream whose every answer is new: `answer <n>` for its n-th call, plain or
/// streamed, after `delay`.
pub fn numbered(delay: Duration) -> (Handler, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let h: Handler = Arc::new(move |r: &Recorded| {
        let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("m").to_string();
        let text = format!("answer {i}");
        if body["stream"] == json!(true) {
            let pieces: Vec<String> = vec!["answer ".into(), i.to_string()];
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let usage = body["stream_options"]["include_usage"] == json!(true);
            sse_response(
                openai_stream_events(&model, &refs, usage),
                Duration::ZERO,
                None,
            )
        } else {
            delayed_json(openai_completion(&model, &text), delay)
        }
    });
    (h, n)
}

/// A JSON response whose body arrives after `delay` (the head goes at once).
pub fn delayed_json(v: Value, delay: Duration) -> Response {
    if delay.is_zero() {
        return json_response(200, v);
    }
    let stream = futures::stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::io::Error>(Bytes::from(v.to_string()))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// Content and chunks of an OpenAI SSE body; panics if it is not a well-formed stream.
pub fn parse_stream(body: &str) -> (String, Vec<Value>) {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (text, chunks)
}

/// Embeddings mock: fixed vectors per input text, 500 for "boom".
pub fn embeddings() -> Handler {
    Arc::new(|r: &Recorded| {
        let input = r.json()["input"].as_str().unwrap_or("").to_string();
        let v: Vec<f64> = match input.as_str() {
            "What is the capital of France?" => vec![1.0, 0.0, 0.0],
            "Tell me the capital city of France" => vec![0.98, 0.199, 0.0],
            "What is the population of France?" => vec![0.8, 0.6, 0.0],
            "boom" => {
                return json_response(
                    500,
                    json!({"error": {"message": "embedder down", "type": "server_error", "param": null, "code": null}}),
                )
            }
            _ => vec![0.0, 0.0, 1.0],
        };
        json_response(
            200,
            json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": v}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 5, "total_tokens": 5}
            }),
        )
    })
}

pub fn ask(system: &str, question: &str) -> Value {
    json!({
        "model": "openai/gpt-4o",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
    })
}

pub async fn semantic_checks(gw_a: &Gateway, gw_b: &Gateway, chat_mock: &Mock, emb_mock: &Mock) {
    let q = "What is the capital of France?";
    let first = post(gw_a, &ask("geography tutor", q), &[]).await;
    assert_eq!(
        (first.cache(), first.content().as_str()),
        ("MISS", "answer 1")
    );
    assert_eq!(emb_mock.calls(), 1);
    assert_eq!(emb_mock.last().json()["model"], "text-embedding-3-small");
    assert_eq!(emb_mock.last().json()["input"], q);

    // A paraphrase above the threshold: a hit, saying so and how similar.
    let para = post(
        gw_b,
        &ask("geography tutor", "Tell me the capital city of France"),
        &[],
    )
    .await;
    assert_eq!(para.status, 200, "{}", para.body);
    assert_eq!(para.cache(), "HIT");
    assert_eq!(para.h("x-cache-semantic"), Some("true"));
    let sim: f64 = para.h("x-cache-similarity").unwrap().parse().unwrap();
    assert!((sim - 0.98).abs() < 0.001, "{sim}");
    assert_eq!(para.content(), "answer 1");
    assert_eq!(chat_mock.calls(), 1);

    // Below the threshold: a miss.
    let below = post(
        gw_b,
        &ask("geography tutor", "What is the population of France?"),
        &[],
    )
    .await;
    assert_eq!(
        (below.cache(), below.content().as_str()),
        ("MISS", "answer 2")
    );
    assert_eq!(below.h("x-cache-semantic"), None);

    // The very same question after another system prompt: a miss, whatever the similarity.
    let other = post(gw_b, &ask("pirate who lies", q), &[]).await;
    assert_eq!(
        (other.cache(), other.content().as_str()),
        ("MISS", "answer 3")
    );
    // ...and after different earlier turns, too.
    let mut turns = ask("geography tutor", q);
    turns["messages"] = json!([
        {"role": "system", "content": "geography tutor"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": q}
    ]);
    assert_eq!(post(gw_b, &turns, &[]).await.cache(), "MISS");
    assert_eq!(chat_mock.calls(), 4);

    // The embeddings call fails: the request proceeds as a miss.
    let boom = post(gw_a, &ask("geography tutor", "boom"), &[]).await;
    assert_eq!((boom.status, boom.cache()), (200, "MISS"));
    assert_eq!(chat_mock.calls(), 5);
    // Exact hits still work for it.
    assert_eq!(
        post(gw_a, &ask("geography tutor", "boom"), &[])
            .await
            .cache(),
        "HIT"
    );
}
