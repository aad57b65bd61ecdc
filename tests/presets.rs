//! The OpenAI-compatible vendors enabled by their own key variable (`config::providers::PRESETS`):
//! each one's key alone (with its base URL moved to a mock upstream on 127.0.0.1) makes
//! `<vendor>/<model>` reach the mock with `Authorization: Bearer <key>`, and `X-Provider` names
//! it. Then, for a few: bare-name detection, streams, `/v1/models`, failover between vendors,
//! and the explicit `GATEWAY_PROVIDER_<NAME>_*` variables overriding a preset.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

/// (prefix, key variable, base URL variable): what the issue names, checked from the outside.
const VENDORS: &[(&str, &str, &str)] = &[
    ("mistral", "MISTRAL_API_KEY", "MISTRAL_BASE_URL"),
    ("groq", "GROQ_API_KEY", "GROQ_BASE_URL"),
    ("deepseek", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL"),
    ("xai", "XAI_API_KEY", "XAI_BASE_URL"),
    ("together", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
    ("fireworks", "FIREWORKS_API_KEY", "FIREWORKS_BASE_URL"),
    ("openrouter", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
    ("cerebras", "CEREBRAS_API_KEY", "CEREBRAS_BASE_URL"),
    ("perplexity", "PERPLEXITY_API_KEY", "PERPLEXITY_BASE_URL"),
    ("deepinfra", "DEEPINFRA_API_TOKEN", "DEEPINFRA_BASE_URL"),
    ("cohere", "COHERE_API_KEY", "COHERE_BASE_URL"),
    ("nvidia", "NVIDIA_API_KEY", "NVIDIA_BASE_URL"),
];

async fn chat(gw: &Gateway, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

/// An OpenAI-compatible vendor: model `refuse-401`/`refuse-500` answer that status in OpenAI's
/// error shape; others the text, plain or streamed.
fn vendor() -> Handler {
    let ok = openai_handler("Hello from the vendor");
    Arc::new(move |r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        match model
            .strip_prefix("refuse-")
            .and_then(|c| c.parse::<u16>().ok())
        {
            Some(code) => json_response(
                code,
                json!({"error": {"message": format!("vendor says {code}"), "type": "vendor_error", "code": "nope"}}),
            ),
            None => ok(r),
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn each_vendor_is_enabled_by_its_key_alone() {
    let mock = Mock::start(vendor()).await;
    for (name, key_var, url_var) in VENDORS {
        let key = format!("sk-{name}-secret");
        let base = format!("{}/{name}/v1", mock.url());
        let gw = Gateway::start(&[(key_var, &key), (url_var, &base)]);
        let model = format!("{name}/org/some-model-1");
        let (status, headers, body) = chat(&gw, chat_body(&model, "hi", false)).await;
        assert_eq!(status, 200, "{name}: {body}\n{}", gw.logs());
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Hello from the vendor"
        );
        assert_eq!(
            headers.get("x-provider").and_then(|h| h.to_str().ok()),
            Some(*name)
        );
        let seen = mock.last();
        assert_eq!(seen.path, format!("/{name}/v1/chat/completions"), "{name}");
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {key}").as_str()),
            "{name}"
        );
        // The prefix is taken off; the rest, slashes and all, is the vendor's model.
        assert_eq!(seen.json()["model"], "org/some-model-1", "{name}");

        // The same battery for each: a stream passes through; upstream errors keep their
        // status and message in OpenAI's shape.
        let (status, _, body) = chat(&gw, chat_body(&format!("{name}/m"), "hi", true)).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            sse_data(&body).last().map(String::as_str),
            Some("[DONE]"),
            "{name}"
        );
        assert!(body.contains("vendor"), "{name}: {body}");
        for code in [401u16, 500] {
            let (status, _, body) = chat(
                &gw,
                chat_body(&format!("{name}/refuse-{code}"), "hi", false),
            )
            .await;
            assert_eq!(status, code, "{name}: {body}");
            let e = serde_json::from_str::<Value>(&body).unwrap()["error"].clone();
            assert_eq!(e["message"], format!("vendor says {code}"), "{name}");
        }
        assert!(!gw.logs().contains(&key), "{name}: the key reached the log");
    }
    // Not configured: a 404 naming the vendor's key variable.
    let gw = Gateway::start(&[]);
    let (status, _, body) = chat(&gw, chat_body("groq/llama-3.3-70b-versatile", "hi", false)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("GROQ_API_KEY"), "{body}");
}

/// One gateway with three vendors: bare names by prefix, a stream passed through, the models
/// listing, and failover from a throttled vendor to the next one of `GATEWAY_PROVIDERS`.
#[tokio::test(flavor = "multi_thread")]
async fn vendors_join_detection_streams_listing_and_failover() {
    let xai = Mock::start(openai_handler("grok says hi")).await;
    let mistral = Mock::start(openai_handler("mistral says hi")).await;
    let groq_handler: Handler = Arc::new(|r: &Recorded| {
        if r.path.ends_with("/models") {
            return json_response(
                200,
                json!({"object": "list", "data": [{"id": "llama-3.3-70b-versatile", "object": "model"}]}),
            );
        }
        let mut resp = json_response(
            429,
            json!({"error": {"message": "Rate limit reached for model", "type": "tokens", "code": "rate_limit_exceeded"}}),
        );
        resp.headers_mut()
            .insert("retry-after", "7".parse().unwrap());
        resp
    });
    let groq = Mock::start(groq_handler).await;
    let gw = Gateway::start(&[
        ("XAI_API_KEY", "xai-key"),
        ("XAI_BASE_URL", &format!("{}/v1", xai.url())),
        ("MISTRAL_API_KEY", "mistral-key"),
        ("MISTRAL_BASE_URL", &mistral.url()),
        ("GROQ_API_KEY", "groq-key"),
        ("GROQ_BASE_URL", &format!("{}/openai/v1", groq.url())),
        ("GATEWAY_PROVIDERS", "groq,mistral"),
        (
            "GATEWAY_PROVIDER_MISTRAL_DEFAULT_MODEL",
            "mistral-small-latest",
        ),
    ]);

    // Bare names of configured vendors.
    let (status, headers, body) = chat(&gw, chat_body("grok-4", "hi", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-provider"], "xai");
    assert_eq!(xai.last().json()["model"], "grok-4");
    assert_eq!(xai.last().header("authorization"), Some("Bearer xai-key"));
    let (status, headers, _) = chat(&gw, chat_body("mistral-large-latest", "hi", false)).await;
    assert_eq!(
        (status, &headers["x-provider"]),
        (200, &"mistral".parse().unwrap())
    );
    // A base URL with no path gets /v1, as OPENAI_BASE_URL does.
    assert_eq!(mistral.last().path, "/v1/chat/completions");
    // DeepSeek is not configured: its bare names are nobody's.
    let (status, _, body) = chat(&gw, chat_body("deepseek-chat", "hi", false)).await;
    assert_eq!(status, 404, "{body}");

    // A stream passes through, usage chunk and [DONE] included.
    let (status, _, body) = chat(
        &gw,
        json!({"model": "xai/grok-3-mini", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "grok says hi");
    assert!(body.contains("\"usage\""));

    // Listing: each vendor's own /models, prefixed.
    let ids = model_ids(&gw).await;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for want in [
        "xai/mock-model",
        "groq/llama-3.3-70b-versatile",
        "mistral/mistral-small-latest",
    ] {
        assert!(ids.contains(&want), "{want} not in {ids:?}");
    }
    let listing = groq
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .expect("groq was asked for its models");
    assert_eq!(listing.path, "/openai/v1/models");
    assert_eq!(listing.header("authorization"), Some("Bearer groq-key"));

    // Groq throttles: the request fails over to Mistral's default model.
    let before = mistral.calls();
    let (status, headers, body) =
        chat(&gw, chat_body("groq/llama-3.3-70b-versatile", "hi", false)).await;
    assert_eq!(status, 200, "{body}\n{}", gw.logs());
    assert_eq!(headers["x-provider"], "mistral");
    assert_eq!(mistral.calls(), before + 1);
    assert_eq!(mistral.last().json()["model"], "mistral-small-latest");
    assert_eq!(groq.calls(), 1);
}

/// `GATEWAY_PROVIDER_<NAME>_*` still configures a preset's name: Cohere's native API as before,
/// with `COHERE_API_KEY` as its key.
#[tokio::test(flavor = "multi_thread")]
async fn explicit_custom_variables_override_the_preset() {
    let mock = Mock::start(openai_handler("custom host")).await;
    let gw = Gateway::start(&[
        ("GROQ_API_KEY", "preset-key"),
        (
            "GATEWAY_PROVIDER_GROQ_BASE_URL",
            &format!("{}/custom/v1", mock.url()),
        ),
        ("GATEWAY_PROVIDER_GROQ_API_KEY", "explicit-key"),
    ]);
    let (status, headers, _) = chat(&gw, chat_body("groq/m", "hi", false)).await;
    assert_eq!(
        (status, &headers["x-provider"]),
        (200, &"groq".parse().unwrap())
    );
    assert_eq!(mock.last().path, "/custom/v1/chat/completions");
    assert_eq!(
        mock.last().header("authorization"),
        Some("Bearer explicit-key")
    );

    // Cohere's native v2 API, configured explicitly, keyed by COHERE_API_KEY.
    let native: Handler = Arc::new(|r: &Recorded| {
        assert_eq!(r.path, "/v2/chat");
        json_response(
            200,
            json!({"id": "c1", "finish_reason": "COMPLETE",
                   "message": {"role": "assistant", "content": [{"type": "text", "text": "native cohere"}]},
                   "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 2}}}),
        )
    });
    let cohere = Mock::start(native).await;
    let gw = Gateway::start(&[
        ("COHERE_API_KEY", "co-key"),
        ("GATEWAY_PROVIDER_COHERE_BASE_URL", &cohere.url()),
        ("GATEWAY_PROVIDER_COHERE_FORMAT", "cohere"),
    ]);
    let (status, headers, body) = chat(&gw, chat_body("command-a-03-2025", "hi", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-provider"], "cohere");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "native cohere");
    assert_eq!(cohere.last().header("authorization"), Some("Bearer co-key"));
}
