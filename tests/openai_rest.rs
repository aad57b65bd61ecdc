//! Issue 18, the rest of the OpenAI API: legacy completions, moderations, images (generations,
//! multipart edits), audio (binary speech, multipart transcriptions and translations), rerank
//! (`/v1/rerank`, `/rerank`, `/v2/rerank`) and `GET /v1/models/{model}`, against a mock
//! OpenAI-compatible upstream that records what it receives; and the offline `echo` provider's
//! completions, moderations, embeddings and tool calls. The real SDKs (Python `openai`, npm
//! `openai`) run the same calls in tests/python/test_rest.py and tests/node/test_rest.mjs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// The mock's audio: 3 MiB of bytes that are not text, so a byte changed anywhere shows.
fn speech_bytes() -> Vec<u8> {
    (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// `status-NNN` anywhere in a request body (a model name, JSON or form field).
fn asked_status(body: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(body);
    let i = text.find("status-")?;
    text.get(i + 7..i + 10)?.parse().ok()
}

fn completion_events(model: &str, pieces: &[&str]) -> Vec<String> {
    let chunk = |text: &str, finish: Value| {
        let v = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut ev: Vec<String> = pieces.iter().map(|p| chunk(p, Value::Null)).collect();
    ev.push(chunk("", json!("stop")));
    ev.push(format!(
        "data: {}\n\n",
        json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model, "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": pieces.len(), "total_tokens": 3 + pieces.len()}})
    ));
    ev.push("data: [DONE]\n\n".into());
    ev
}

/// A streamed transcription: its end is an event of its own, no `[DONE]`.
fn transcript_events() -> Vec<String> {
    vec![
        "data: {\"type\":\"transcript.text.delta\",\"delta\":\"mock \"}\n\n".into(),
        "data: {\"type\":\"transcript.text.delta\",\"delta\":\"words\"}\n\n".into(),
        "data: {\"type\":\"transcript.text.done\",\"text\":\"mock words\"}\n\n".into(),
    ]
}

/// A mock OpenAI-compatible upstream serving every endpoint of the issue.
fn upstream() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.method == "GET" && r.path.ends_with("/models") {
            return json_response(
                200,
                json!({"object": "list", "data": [
                    {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "mock"},
                    {"id": "org/model-x", "object": "model", "created": 1, "owned_by": "mock"}
                ]}),
            );
        }
        if let Some(code) = asked_status(&r.body) {
            return json_response(
                code,
                json!({"error": {"message": format!("mock says {code}"), "type": "mock_error", "param": null, "code": "mock_code"}}),
            );
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("?").to_string();
        let path = r.path.as_str();
        if path.ends_with("/completions") {
            let prompt = body["prompt"].as_str().unwrap_or("");
            if body["stream"] == true {
                let gap = if prompt.contains("slow") {
                    Duration::from_millis(300)
                } else if prompt.contains("cut") {
                    // The events before the cut leave before it.
                    Duration::from_millis(100)
                } else {
                    Duration::ZERO
                };
                let cut = prompt.contains("cut").then_some(2);
                return sse_response(
                    completion_events(&model, &["Hello", " from", " completions"]),
                    gap,
                    cut,
                );
            }
            return json_response(
                200,
                json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
                    "choices": [{"text": "Hello from completions", "index": 0, "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}),
            );
        }
        if path.ends_with("/moderations") {
            return json_response(
                200,
                json!({"id": "modr-mock", "model": model, "results": [{"flagged": true, "categories": {"violence": true}, "category_scores": {"violence": 0.9}}]}),
            );
        }
        if path.ends_with("/images/generations") || path.ends_with("/images/edits") {
            return json_response(
                200,
                json!({"created": 1, "data": [{"b64_json": "aGVsbG8="}]}),
            );
        }
        if path.ends_with("/audio/speech") && body["input"] == "cut" {
            // Three chunks of audio, then the connection drops.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
                Ok(vec![1u8; 65536]),
                Ok(vec![2u8; 65536]),
                Ok(vec![3u8; 65536]),
                Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "cut")),
            ];
            let stream = futures::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                c
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut()
                .insert("content-type", "audio/mpeg".parse().unwrap());
            return resp;
        }
        if path.ends_with("/audio/speech") {
            let mut resp = Response::new(Body::from(speech_bytes()));
            resp.headers_mut()
                .insert("content-type", "audio/mpeg".parse().unwrap());
            return resp;
        }
        if path.ends_with("/audio/transcriptions")
            && String::from_utf8_lossy(&r.body).contains("name=\"stream\"\r\n\r\ntrue")
        {
            return sse_response(transcript_events(), Duration::from_millis(20), None);
        }
        if path.ends_with("/audio/transcriptions") {
            return json_response(200, json!({"text": "mock transcription"}));
        }
        if path.ends_with("/audio/translations") {
            return json_response(200, json!({"text": "mock translation"}));
        }
        if path.ends_with("/rerank") {
            return json_response(
                200,
                json!({"id": "rerank-mock", "model": model, "results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}),
            );
        }
        json_response(
            404,
            json!({"error": {"message": "no such path", "type": "not_found"}}),
        )
    })
}

async fn start() -> (Mock, Gateway) {
    let mock = Mock::start(upstream()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("OPENAI_API_KEY", "sk-mock-rest"),
        ("ANTHROPIC_BASE_URL", &mock.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-mock"),
        ("GATEWAY_MAX_BODY_BYTES", "1048576"),
    ]);
    (mock, gw)
}

/// JSON endpoints: the path a client calls, the path the upstream gets, the fields besides
/// `model` (spaced oddly: the upstream must get them byte for byte).
const JSON_APIS: &[(&str, &str, &str)] = &[
    (
        "/v1/completions",
        "/v1/completions",
        r#""prompt" : "Say hi",  "max_tokens":5"#,
    ),
    (
        "/v1/moderations",
        "/v1/moderations",
        r#""input": ["some text", "more"]"#,
    ),
    (
        "/v1/images/generations",
        "/v1/images/generations",
        r#""prompt":"a cat", "n":1,"size":"256x256""#,
    ),
    (
        "/v1/audio/speech",
        "/v1/audio/speech",
        r#""input":"hello", "voice":"alloy","response_format":"mp3""#,
    ),
    (
        "/v1/rerank",
        "/v1/rerank",
        r#""query":"q","documents":["a","b"],"top_n":2"#,
    ),
    (
        "/rerank",
        "/v1/rerank",
        r#""query":"q","documents":["a","b"]"#,
    ),
    (
        "/v2/rerank",
        "/v2/rerank",
        r#""query":"q","documents":["a","b"]"#,
    ),
];

/// Multipart endpoints: the path a client calls and the upstream's.
const FORM_APIS: &[(&str, &str)] = &[
    ("/v1/audio/transcriptions", "/v1/audio/transcriptions"),
    ("/v1/audio/translations", "/v1/audio/translations"),
    ("/v1/images/edits", "/v1/images/edits"),
];

fn json_body(model: &str, fields: &str) -> String {
    format!("{{ \"model\" :\"{model}\",\n  {fields} }}")
}

const BOUNDARY: &str = "----gateway-test-7MA4YWxkTrZu0gW";

/// A multipart body as the Node SDK sends it: the file first (binary, with CRLFs and dashes
/// inside), `model` after it, then another field.
fn form_body(model: &str, file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
    out.extend_from_slice(file);
    out.extend_from_slice(
        format!(
            "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nkeep me\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn upload(size: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
    f.extend_from_slice(format!("\r\n--{BOUNDARY}x\r\n--").as_bytes());
    f
}

async fn post_json(gw: &Gateway, path: &str, body: String) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post_form(gw: &Gateway, path: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn error_of(r: reqwest::Response, status: u16, what: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "{what}");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn json_endpoints_pass_through_with_only_the_model_rewritten() {
    let (mock, gw) = start().await;
    for (path, upstream_path, fields) in JSON_APIS {
        let sent = json_body("openai/gpt-4o-mini", fields);
        let r = post_json(&gw, path, sent.clone()).await;
        assert_eq!(r.status(), 200, "{path}: {}", gw.logs());
        assert_eq!(r.headers()["x-provider"], "openai", "{path}");
        let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
        let answer = r.bytes().await.unwrap();
        let got = mock.last();
        assert_eq!(&got.path, upstream_path, "{path}");
        assert_eq!(got.header("authorization"), Some("Bearer sk-mock-rest"));
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            json_body("gpt-4o-mini", fields),
            "{path}: only the model changes"
        );
        if *path == "/v1/audio/speech" {
            assert_eq!(ctype, "audio/mpeg");
            assert!(
                answer == speech_bytes(),
                "the audio arrives whole and unchanged"
            );
        } else {
            let v: Value = serde_json::from_slice(&answer).unwrap();
            assert!(v.is_object(), "{path}: {v}");
        }
    }
    // Moderations without a model: OpenAI's default, named to the upstream.
    let r = post_json(&gw, "/v1/moderations", r#"{"input":"x"}"#.into()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        String::from_utf8_lossy(&mock.last().body),
        r#"{"model":"omni-moderation-latest","input":"x"}"#
    );
    // Metrics label the endpoint.
    let m = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for ep in [
        "completions",
        "moderations",
        "images.generations",
        "audio.speech",
        "rerank",
    ] {
        let counted = m.lines().any(|l| {
            l.starts_with("gateway_requests_total{")
                && l.contains(&format!("endpoint=\"{ep}\""))
                && l.contains("provider=\"openai\"")
                && l.contains("status_class=\"2xx\"")
        });
        assert!(counted, "{ep} in\n{m}");
    }
    assert!(gw.logs().contains("/v1/audio/speech"));
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_uploads_keep_every_part_and_byte_with_the_model_rewritten() {
    let (mock, gw) = start().await;
    let file = upload(200 * 1024);
    for (path, upstream_path) in FORM_APIS {
        let r = post_form(&gw, path, form_body("openai/whisper-1", &file)).await;
        assert_eq!(r.status(), 200, "{path}: {}", gw.logs());
        let v: Value = r.json().await.unwrap();
        assert!(v.is_object(), "{v}");
        let got = mock.last();
        assert_eq!(&got.path, upstream_path);
        assert_eq!(
            got.header("content-type"),
            Some(format!("multipart/form-data; boundary={BOUNDARY}").as_str())
        );
        assert!(
            got.body == form_body("whisper-1", &file),
            "{path}: the upstream gets the form as sent, only the model part rewritten"
        );
    }
    // A streamed transcription passes through as it is (it ends without `[DONE]`, as OpenAI's
    // does, and gets no error event for it).
    let mut streamed = form_body("openai/gpt-4o-transcribe", &file);
    let close = format!("--{BOUNDARY}--\r\n");
    streamed.truncate(streamed.len() - close.len());
    streamed.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\ntrue\r\n{close}")
            .as_bytes(),
    );
    let r = post_form(&gw, "/v1/audio/transcriptions", streamed).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.text().await.unwrap(), transcript_events().concat());
    assert!(gw.wait_log("stream=true", Duration::from_secs(5)));
    // A form without a model, or not a form at all: 400.
    let no_model = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nxx\r\n--{BOUNDARY}--\r\n");
    let v = error_of(
        post_form(&gw, "/v1/audio/transcriptions", no_model.into_bytes()).await,
        400,
        "no model",
    )
    .await;
    assert_eq!(v["error"]["param"], "model");
    error_of(
        post_json(
            &gw,
            "/v1/audio/transcriptions",
            r#"{"model":"openai/whisper-1"}"#.into(),
        )
        .await,
        400,
        "json to a multipart endpoint",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_upstream_unsupported_unknown_and_too_large() {
    let (mock, gw) = start().await;
    let file = upload(1024);
    let before = mock.calls();
    for (path, _, fields) in JSON_APIS {
        // The upstream's error, with its status.
        for code in [400u16, 404, 429] {
            let v = error_of(
                post_json(
                    &gw,
                    path,
                    json_body(&format!("openai/status-{code}"), fields),
                )
                .await,
                code,
                path,
            )
            .await;
            assert_eq!(v["error"]["message"], format!("mock says {code}"), "{path}");
        }
        // A provider without the endpoint: 400 naming the model.
        let v = error_of(
            post_json(&gw, path, json_body("anthropic/claude-sonnet-4", fields)).await,
            400,
            path,
        )
        .await;
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("anthropic/claude-sonnet-4") && msg.contains("does not offer"),
            "{msg}"
        );
        // Unknown model.
        let v = error_of(
            post_json(&gw, path, json_body("nobody-knows", fields)).await,
            404,
            path,
        )
        .await;
        assert_eq!(v["error"]["code"], "model_not_found");
    }
    for (path, _) in FORM_APIS {
        let v = error_of(
            post_form(&gw, path, form_body("openai/status-422", &file)).await,
            422,
            path,
        )
        .await;
        assert_eq!(v["error"]["message"], "mock says 422");
        let v = error_of(
            post_form(&gw, path, form_body("anthropic/claude-x", &file)).await,
            400,
            path,
        )
        .await;
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic/claude-x"));
        let v = error_of(
            post_form(&gw, path, form_body("nobody-knows", &file)).await,
            404,
            path,
        )
        .await;
        assert_eq!(v["error"]["code"], "model_not_found");
    }
    let errors_sent = (JSON_APIS.len() * 3) + FORM_APIS.len();
    assert_eq!(
        mock.calls() - before,
        errors_sent,
        "only the upstream errors reached the mock"
    );

    // Bodies over the limit: 413 the client reads, the upload still being sent.
    let before = mock.calls();
    let big = upload(3 * 1024 * 1024);
    for (path, _) in FORM_APIS {
        let v = error_of(
            post_form(&gw, path, form_body("openai/whisper-1", &big)).await,
            413,
            path,
        )
        .await;
        assert_eq!(v["error"]["code"], "request_too_large");
    }
    let huge_prompt = "word ".repeat(300_000);
    let v = error_of(
        post_json(
            &gw,
            "/v1/completions",
            json!({"model": "openai/gpt-4o", "prompt": huge_prompt}).to_string(),
        )
        .await,
        413,
        "completions",
    )
    .await;
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_eq!(mock.calls(), before);
    // Only POST.
    let r = client()
        .get(gw.url("/v1/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_rate_limits_apply() {
    let mock = Mock::start(upstream()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("OPENAI_API_KEY", "sk-mock-rest"),
        ("GATEWAY_API_KEYS", "team=sk-gw-rest-1"),
        ("GATEWAY_RATE_LIMIT_RPM", "1"),
        ("GATEWAY_RATE_LIMIT_BURST", "2"),
    ]);
    let file = upload(1024);
    let mut requests: Vec<(&str, reqwest::RequestBuilder)> = Vec::new();
    for (path, _, fields) in JSON_APIS {
        requests.push((
            path,
            client()
                .post(gw.url(path))
                .header("content-type", "application/json")
                .body(json_body("openai/m", fields)),
        ));
    }
    for (path, _) in FORM_APIS {
        requests.push((
            path,
            client()
                .post(gw.url(path))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(form_body("openai/m", &file)),
        ));
    }
    for (path, rb) in requests {
        let r = rb.send().await.unwrap();
        let v = error_of(r, 401, path).await;
        assert_eq!(v["error"]["code"], "invalid_api_key", "{path}");
    }
    assert_eq!(
        mock.calls(),
        0,
        "nothing unauthenticated reaches the upstream"
    );
    let with_key = |path: &str| {
        client()
            .post(gw.url(path))
            .bearer_auth("sk-gw-rest-1")
            .header("content-type", "application/json")
            .body(json_body("openai/m", r#""prompt":"hi""#))
    };
    assert_eq!(
        with_key("/v1/completions").send().await.unwrap().status(),
        200
    );
    assert_eq!(
        with_key("/v1/completions").send().await.unwrap().status(),
        200
    );
    let r = with_key("/v1/completions").send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    error_of(r, 429, "third request, burst 2").await;
    let r = client()
        .post(gw.url("/v1/audio/transcriptions"))
        .bearer_auth("sk-gw-rest-1")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form_body("openai/m", &file))
        .send()
        .await
        .unwrap();
    error_of(r, 429, "an upload, same key").await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_moves_completions_and_uploads_to_the_next_provider() {
    let down = Mock::start(Arc::new(|_: &Recorded| {
        json_response(
            503,
            json!({"error": {"message": "overloaded", "type": "server_error"}}),
        )
    }))
    .await;
    let up = Mock::start(upstream()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &down.url()),
        ("OPENAI_API_KEY", "sk-mock-rest"),
        ("VLLM_BASE_URL", &up.url()),
        ("ANTHROPIC_BASE_URL", &up.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-mock"),
        (
            "GATEWAY_FALLBACK_MODELS",
            "openai/gpt-3.5-turbo-instruct=anthropic/claude-x|vllm/qwen3-8b;openai/whisper-1=vllm/whisper-large",
        ),
    ]);
    let r = post_json(
        &gw,
        "/v1/completions",
        json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "hi"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(r.headers()["x-provider"], "vllm");
    assert_eq!(down.calls(), 1);
    // Anthropic, which has no completions, was skipped; vLLM got its own model name.
    assert_eq!(up.calls(), 1);
    assert_eq!(up.last().json()["model"], "qwen3-8b");
    let r = post_form(
        &gw,
        "/v1/audio/transcriptions",
        form_body("openai/whisper-1", &upload(4096)),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "vllm");
    assert!(up.last().body == form_body("whisper-large", &upload(4096)));
    // Without failover, the first provider's error.
    let r = client()
        .post(gw.url("/v1/completions"))
        .header("x-gateway-failover", "off")
        .json(&json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn cohere_serves_rerank_natively_and_nothing_else() {
    let mock = Mock::start(upstream()).await;
    let gw = Gateway::start(&[
        ("GATEWAY_PROVIDER_COHERE_BASE_URL", &mock.url()),
        ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
        ("GATEWAY_PROVIDER_COHERE_API_KEY", "co-mock-rest"),
    ]);
    let fields = r#""query":"q", "documents":["a","b"]"#;
    for path in ["/v1/rerank", "/v2/rerank"] {
        let r = post_json(&gw, path, json_body("cohere/rerank-v3.5", fields)).await;
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["results"][0]["index"], 1);
        let sent = mock.last();
        assert_eq!(sent.path, "/v2/rerank");
        assert_eq!(sent.header("authorization"), Some("Bearer co-mock-rest"));
        assert_eq!(
            String::from_utf8_lossy(&sent.body),
            json_body("rerank-v3.5", fields)
        );
    }
    let v = error_of(
        post_json(
            &gw,
            "/v1/completions",
            json_body("cohere/command-a", r#""prompt":"x""#),
        )
        .await,
        400,
        "cohere completions",
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cohere/command-a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_stream_unbuffered_and_a_cut_stream_ends_in_an_error_event() {
    let (mock, gw) = start().await;
    // Unbuffered: the first piece arrives while the upstream is still sending (300 ms gaps).
    let asked = Instant::now();
    let mut r = post_json(
        &gw,
        "/v1/completions",
        json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "slow please", "stream": true})
            .to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = r.chunk().await.unwrap().unwrap();
    let first_at = asked.elapsed();
    let mut all = first.to_vec();
    while let Some(c) = r.chunk().await.unwrap() {
        all.extend_from_slice(&c);
    }
    let total = asked.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("Hello"));
    assert!(total >= Duration::from_millis(1200), "{total:?}");
    assert!(
        first_at + Duration::from_millis(900) <= total,
        "first {first_at:?}, all {total:?}"
    );
    let text = String::from_utf8(all).unwrap();
    let expected: String = completion_events(
        "gpt-3.5-turbo-instruct",
        &["Hello", " from", " completions"],
    )
    .concat();
    assert_eq!(text, expected, "the stream passes through byte for byte");
    assert_eq!(mock.last().json()["model"], "gpt-3.5-turbo-instruct");

    // Cut after two events: the client gets them, then an error event, never a silent end.
    let r = post_json(
        &gw,
        "/v1/completions",
        json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "cut please", "stream": true})
            .to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert!(data.len() >= 2, "{body}");
    assert!(data[0].contains("Hello"), "{body}");
    let err: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{err}"
    );
    assert!(!body.contains("[DONE]"));
    assert!(gw.wait_log("outcome=stream_error", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_answer_cut_upstream_is_cut_for_the_client_too() {
    let (_mock, gw) = start().await;
    let mut r = post_json(
        &gw,
        "/v1/audio/speech",
        json!({"model": "openai/tts-1", "input": "cut", "voice": "alloy"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    let mut got = 0usize;
    let end = loop {
        match r.chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        got >= 65536,
        "the audio before the cut arrived ({got} bytes)"
    );
    assert!(
        end.is_err(),
        "the client sees the body end early, not a complete answer ({got} bytes)"
    );
    assert!(gw.wait_log("outcome=stream_error", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_are_cached_plain_and_streamed() {
    let mock = Mock::start(upstream()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("OPENAI_API_KEY", "sk-mock-rest"),
        ("GATEWAY_CACHE_BACKEND", "memory"),
        ("GATEWAY_CACHE_TTL", "60"),
    ]);
    let body =
        json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "cache me", "max_tokens": 9});
    let r = post_json(&gw, "/v1/completions", body.to_string()).await;
    assert_eq!(r.headers()["x-cache"], "MISS");
    let first: Value = r.json().await.unwrap();
    let r = post_json(&gw, "/v1/completions", body.to_string()).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    let again: Value = r.json().await.unwrap();
    assert_eq!(mock.calls(), 1, "the repeat is served from the cache");
    assert_eq!(again["object"], "text_completion");
    assert_eq!(again["choices"][0]["text"], first["choices"][0]["text"]);
    assert_eq!(again["choices"][0]["finish_reason"], "stop");
    assert_eq!(again["usage"]["total_tokens"], 6);
    assert_eq!(again["model"], "openai/gpt-3.5-turbo-instruct");
    // The same request streamed is a hit too, replayed as completion chunks.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post_json(&gw, "/v1/completions", streamed.to_string()).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    let data = sse_data(&r.text().await.unwrap());
    let text: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(text, "Hello from completions");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.calls(), 1);
    // A streamed answer is stored as well, and a chat request never gets a completion.
    let other =
        json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "stream me", "stream": true});
    let r = post_json(&gw, "/v1/completions", other.to_string()).await;
    assert_eq!(r.headers()["x-cache"], "MISS");
    let _ = r.text().await.unwrap();
    let r = post_json(&gw, "/v1/completions", other.to_string()).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    let _ = r.text().await.unwrap();
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_retrieve_takes_slash_ids_raw_and_percent_encoded() {
    let (_mock, gw) = start().await;
    for path in [
        "/v1/models/openai/org/model-x",
        "/v1/models/openai%2Forg%2Fmodel-x",
        "/v1/models/openai%2forg/model-x",
        "/models/openai/org/model-x",
    ] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["id"], "openai/org/model-x", "{path}");
        assert_eq!(v["object"], "model");
        assert_eq!(v["owned_by"], "openai");
    }
    let v: Value = client()
        .get(gw.url("/v1/models/openai/gpt-4o"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "openai/gpt-4o");
    // An Anthropic client gets Anthropic's model object.
    let v: Value = client()
        .get(gw.url("/v1/models/openai%2Forg%2Fmodel-x"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "model", "{v}");
    assert_eq!(v["id"], "openai/org/model-x");
    // Routable but not listed, and unknown: 404 model_not_found in OpenAI's shape.
    for path in [
        "/v1/models/openai/gpt-5-unlisted",
        "/v1/models/nobody%2Fknows",
    ] {
        let v = error_of(client().get(gw.url(path)).send().await.unwrap(), 404, path).await;
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_completions_moderations_embeddings_and_tool_calls() {
    let gw = Gateway::start(&[]);
    // Completions: the prompt echoed.
    let v: Value = post_json(
        &gw,
        "/v1/completions",
        json!({"model": "echo/test", "prompt": "Say this is a test"}).to_string(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Say this is a test");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
    let body = post_json(&gw, "/v1/completions", json!({"model": "echo/test", "prompt": ["one two", "three"], "stream": true, "stream_options": {"include_usage": true}}).to_string())
        .await
        .text()
        .await
        .unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut texts = [String::new(), String::new()];
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        if let Some(c) = v["choices"].get(0) {
            texts[c["index"].as_u64().unwrap() as usize].push_str(c["text"].as_str().unwrap());
        }
    }
    assert_eq!(texts, ["one two".to_string(), "three".to_string()]);
    // Moderations: never flagged, one result per input; the default model is echo's when
    // nothing else is configured.
    let v: Value = post_json(
        &gw,
        "/v1/moderations",
        json!({"model": "echo/test", "input": ["a", "b"]}).to_string(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][0]["flagged"], false);
    assert_eq!(v["results"][1]["categories"]["violence"], false);
    let r = post_json(
        &gw,
        "/v1/moderations",
        json!({"input": "no model"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provider"], "echo");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "echo/omni-moderation-latest");
    assert_eq!(v["results"][0]["flagged"], false);
    // Embeddings: deterministic unit vectors of the asked length, floats or base64.
    let emb = |body: Value| {
        let gw = &gw;
        async move {
            let r = post_json(gw, "/v1/embeddings", body.to_string()).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let a = emb(json!({"model": "echo/test", "input": ["the cat sat", "the cat sat", "stock prices"], "dimensions": 8})).await;
    let vecs: Vec<Vec<f64>> = a["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vecs[0].len(), 8);
    assert_eq!(vecs[0], vecs[1]);
    assert_ne!(vecs[0], vecs[2]);
    let norm: f64 = vecs[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    assert_eq!(a["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
    let b = emb(json!({"model": "echo/test", "input": "the cat sat", "dimensions": 8, "encoding_format": "base64"})).await;
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    assert_eq!(floats.len(), 8);
    for (x, y) in floats.iter().zip(&vecs[0]) {
        assert!((x - y).abs() < 1e-6);
    }
    // Tool calls: `call <tool> <args>` names an offered tool; a tool result is quoted.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let v: Value = post_json(&gw, "/v1/chat/completions", json!({"model": "echo/test", "tools": tools, "messages": [{"role": "user", "content": "call get_weather {\"city\":\"Paris\"}"}]}).to_string())
        .await
        .json()
        .await
        .unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    let id = call["id"].as_str().unwrap().to_string();
    // Streamed, the same call arrives as tool-call deltas.
    let body = post_json(&gw, "/v1/chat/completions", json!({"model": "echo/test", "stream": true, "tools": tools, "messages": [{"role": "user", "content": "call get_weather {\"city\":\"Paris\"}"}]}).to_string())
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("\"name\":\"get_weather\"") && body.contains("tool_calls"),
        "{body}"
    );
    let v: Value = post_json(&gw, "/v1/chat/completions", json!({"model": "echo/test", "tools": tools, "messages": [
        {"role": "user", "content": "call get_weather {\"city\":\"Paris\"}"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "18C and sunny"}
    ]}).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Tool get_weather returned: 18C and sunny"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Without tools offered, the same text is echoed.
    let v: Value = post_json(&gw, "/v1/chat/completions", json!({"model": "echo/test", "messages": [{"role": "user", "content": "call get_weather now"}]}).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "call get_weather now"
    );
    // Echo offers no audio: 400 naming the model.
    let v = error_of(
        post_json(
            &gw,
            "/v1/audio/speech",
            json!({"model": "echo/test", "input": "x", "voice": "alloy"}).to_string(),
        )
        .await,
        400,
        "speech",
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("echo/test"));
}

fn speech_sha256() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(speech_bytes()))
}

/// The upload both SDK scripts send: bytes 0..=255, 64 times.
fn sdk_upload() -> Vec<u8> {
    (0..256 * 64).map(|i| (i % 256) as u8).collect()
}

/// Every multipart request the mock received carries the SDK's upload byte for byte, and the
/// model rewritten (the provider prefix gone). Returns the bodies.
fn check_uploads(mock: &Mock) -> Vec<Vec<u8>> {
    let upload = sdk_upload();
    let forms: Vec<Recorded> = mock
        .requests()
        .into_iter()
        .filter(|r| {
            r.header("content-type")
                .is_some_and(|c| c.starts_with("multipart/form-data"))
        })
        .collect();
    // images.edit, transcriptions, translations (the refused one never reaches the mock).
    assert_eq!(
        forms.len(),
        3,
        "{:?}",
        forms.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    for f in &forms {
        let body = &f.body;
        assert!(
            body.windows(upload.len()).any(|w| w == upload.as_slice()),
            "{}: the file arrives whole",
            f.path
        );
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("openai/"), "{}: model rewritten", f.path);
        assert!(
            text.contains("\r\n\r\nwhisper-1\r\n") || text.contains("\r\n\r\ngpt-image-1\r\n"),
            "{}: {text:.300}",
            f.path
        );
    }
    forms.into_iter().map(|f| f.body.to_vec()).collect()
}

/// Runs tests/node/test_rest.mjs (the npm `openai` package, installed by scripts/test.sh with
/// `npm ci --prefix tests/node`) against `gw`; asserts it succeeded and returns its stdout.
async fn run_node(gw: &Gateway, env: &[(&str, &str)]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/openai/package.json").exists(),
        "the npm openai package is not installed: run scripts/test.sh (npm ci --prefix tests/node)"
    );
    let mut cmd = std::process::Command::new("node");
    cmd.arg(dir.join("test_rest.mjs"))
        .env("GATEWAY_BASE_URL", gw.base())
        .env("NO_PROXY", "127.0.0.1,localhost");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run node"))
        .await
        .expect("node task");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Node SDK checks failed:\n{stdout}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.logs()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_calls_every_endpoint_against_a_mock() {
    let (mock, gw) = start().await;
    let sha = speech_sha256();
    let out = run_python(
        &gw,
        &["test_rest.py"],
        &[("REST_MODE", "mock"), ("SPEECH_SHA256", &sha)],
    )
    .await;
    assert!(out.contains("sdk rest (mock): 8 passed, 0 failed"), "{out}");
    check_uploads(&mock);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_sdk_calls_every_endpoint_against_a_mock() {
    let (mock, gw) = start().await;
    let sha = speech_sha256();
    let out = run_node(&gw, &[("REST_MODE", "mock"), ("SPEECH_SHA256", &sha)]).await;
    assert!(
        out.contains("node sdk rest (mock): 7 passed, 0 failed"),
        "{out}"
    );
    let forms = check_uploads(&mock);
    // The transcription's form has `model` after the file: routed all the same.
    let text = String::from_utf8_lossy(&forms[1]);
    let file = text.find("name=\"file\"").unwrap();
    let model = text.find("name=\"model\"").unwrap();
    assert!(model > file, "{text:.300}");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sdks_work_offline_against_echo() {
    let gw = Gateway::start(&[]);
    let out = run_python(&gw, &["test_rest.py"], &[("REST_MODE", "echo")]).await;
    assert!(out.contains("sdk rest (echo): 4 passed, 0 failed"), "{out}");
    let out = run_node(&gw, &[("REST_MODE", "echo")]).await;
    assert!(
        out.contains("node sdk rest (echo): 4 passed, 0 failed"),
        "{out}"
    );
}
