//! Google Gemini API (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`)
//! behind OpenAI Chat Completions and Embeddings. The key travels in `x-goog-api-key`, never in
//! the URL.
//!
//! Choices (README, "Anthropic and Gemini"): tool call ids are synthesised (`call_<random>`);
//! `parallel_tool_calls: false` keeps only the first call of an answer (Gemini cannot be told);
//! `user` cannot change the answer and is dropped; any other field without an equivalent is a
//! 400 naming it. Reasoning (README, "Reasoning"): `reasoning_effort` becomes `thinkingConfig`
//! by model family, thought parts are `reasoning_content`, and a call's `thoughtSignature`
//! travels in its id (`translate::Thought`) and comes back to this provider and model only.
//!
//! `wire.rs` holds the Gemini API's serde types, `translate.rs` what they mean for the gateway's
//! canonical (OpenAI chat) request, answers and stream events.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::{ChatRequest, Usage};
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::stream::SseDriver;
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamTranslator, Translated, UpstreamRequest,
};

mod translate;
mod wire;

#[cfg(test)]
use translate::decode_response;
use translate::{decode_embeddings, decode_response_for, encode_embeddings, encode_request_for};
pub use translate::{
    encode_request, family, finish_reason, schema, thinking_config, Family, GeminiStream,
    SKIP_SIGNATURE,
};
pub use wire::ThinkingConfig;

const NAME: &str = "Gemini";

/// The built-in provider's name: the tag of thought signatures decoded without a provider named.
const PROVIDER: &str = "gemini";

/// Most candidates a stream is allowed to address (Gemini allows up to 8).
const MAX_CANDIDATES: usize = 8;

/// Deepest `$ref`/nesting a tool schema is expanded to.
const MAX_SCHEMA_DEPTH: u32 = 24;

pub struct Gemini {
    cfg: ProviderConfig,
}

impl Gemini {
    pub fn new(cfg: ProviderConfig) -> Self {
        Gemini { cfg }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.api_key {
            Some(k) => vec![("x-goog-api-key", k.expose().to_string())],
            None => Vec::new(),
        }
    }
}

impl Provider for Gemini {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = model_path(&call.upstream_model)?;
        let body = encode_request_for(req, &self.cfg.name, &call.upstream_model)?;
        let path = if req.stream {
            format!(
                "{}/v1beta/{model}:streamGenerateContent?alt=sse",
                backend.path
            )
        } else {
            format!("{}/v1beta/{model}:generateContent", backend.path)
        };
        Ok(UpstreamRequest::post(path, self.headers(), body))
    }

    /// `models/{model}:countTokens` with the request as a `generateContentRequest`.
    fn count_tokens_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        let build = || {
            let model = model_path(&call.upstream_model)?;
            let inner = encode_request_for(req, &self.cfg.name, &call.upstream_model)?;
            let model_json = serde_json::to_string(&model)
                .map_err(|e| GatewayError::internal(format!("encoding the model: {e}")))?;
            // {"generateContentRequest":{"model":"models/m", <the request's fields>}}
            let fields = inner
                .strip_prefix(b"{")
                .and_then(|b| b.strip_suffix(b"}"))
                .unwrap_or_default();
            let mut body = Vec::with_capacity(inner.len() + 64);
            body.extend_from_slice(b"{\"generateContentRequest\":{\"model\":");
            body.extend_from_slice(model_json.as_bytes());
            if !fields.is_empty() {
                body.push(b',');
                body.extend_from_slice(fields);
            }
            body.extend_from_slice(b"}}");
            Ok(UpstreamRequest::post(
                format!("{}/v1beta/{model}:countTokens", backend.path),
                self.headers(),
                Bytes::from(body),
            ))
        };
        Some(build())
    }

    fn count_tokens_response(&self, body: &[u8]) -> Option<u64> {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get("totalTokens")?
            .as_u64()
    }

    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        decode_response_for(&body, call, w, &self.cfg.name)
    }

    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        Box::new(SseDriver::new(
            GeminiStream::new(call, w).provider(&self.cfg.name),
        ))
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        map_error(status, body)
    }

    fn embeddings_request(
        &self,
        body: &Map<String, Value>,
        upstream_model: &str,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = model_path(upstream_model)?;
        let out = encode_embeddings(body, &model)?;
        let bytes = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))?;
        Ok(UpstreamRequest::post(
            format!("{}/v1beta/{model}:batchEmbedContents", backend.path),
            self.headers(),
            Bytes::from(bytes),
        ))
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        client_model: &str,
    ) -> Result<(Bytes, Option<Usage>), GatewayError> {
        decode_embeddings(&body, client_model)
    }

    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1beta/models?pageSize=1000", backend.path),
            self.headers(),
        ))
    }

    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        crate::providers::openai::parse_model_list(body)
    }

    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1beta/models?pageSize=1", backend.path),
            self.headers(),
        ))
    }
}

/// `gemini-2.0-flash` -> `models/gemini-2.0-flash` (tuned models keep `tunedModels/`). The name
/// goes into the URL path, so only the characters model names use are allowed.
pub fn model_path(model: &str) -> Result<String, GatewayError> {
    let (prefix, name) = if let Some(n) = model.strip_prefix("tunedModels/") {
        ("tunedModels", n)
    } else {
        ("models", model.strip_prefix("models/").unwrap_or(model))
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(GatewayError::bad_request(
            "model",
            format!("{model:?} is not a valid Gemini model name"),
        ));
    }
    Ok(format!("{prefix}/{name}"))
}

// ---------------------------------------------------------------------------------------------
// Error mapping

/// A Gemini error body -> the OpenAI error object. `RESOURCE_EXHAUSTED` is 429 and an invalid
/// key (`API_KEY_INVALID`, sent as 400) is 401, so clients react as they would to OpenAI; the
/// Gemini status (`INVALID_ARGUMENT`, ...) is kept as `code`.
pub fn map_error(status: u16, body: &[u8]) -> GatewayError {
    // Some Gemini endpoints wrap the error in a one-element array.
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().map(|v| match v {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    });
    let (message, _, _) = match &err {
        Some(v) => upstream_error_message(v.to_string().as_bytes()),
        None => upstream_error_message(body),
    };
    let inner = err.as_ref().and_then(|v| v.get("error"));
    let gstatus = inner
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let key_invalid = inner
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .is_some_and(|d| {
            d.iter()
                .any(|x| x.get("reason").is_some_and(|r| r == "API_KEY_INVALID"))
        });
    let status = match gstatus.as_deref() {
        _ if key_invalid => 401,
        Some("RESOURCE_EXHAUSTED") => 429,
        Some("UNAUTHENTICATED") => 401,
        Some("PERMISSION_DENIED") => 403,
        _ => status,
    };
    GatewayError::from_upstream(status, ErrorKind::for_status(status), gstatus, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChatCompletionsWriter, ChunkWriter};

    /// The OpenAI chunk writer with a fixed id and time (tests compare exact output).
    fn fixed_writer(call: &CallInfo) -> Box<dyn EventWriter> {
        Box::new(ChunkWriter {
            id: "chatcmpl-x".into(),
            created: 7,
            model: call.client_model.clone(),
        })
    }
    use crate::providers::StreamStatus;
    use bytes::BytesMut;
    use serde_json::json;

    fn call(include_usage: bool, parallel: bool) -> CallInfo {
        CallInfo {
            client_model: "google/gemini-2.0-flash".into(),
            upstream_model: "gemini-2.0-flash".into(),
            stream: true,
            include_usage,
            parallel_tool_calls: parallel,
            passthrough: false,
            client_format: "openai",
            client_headers: Vec::new(),
        }
    }

    fn encode(body: Value) -> Result<Value, GatewayError> {
        let bytes = encode_request(&ChatRequest::parse(body.to_string().as_bytes())?)?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn model_paths() {
        assert_eq!(
            model_path("gemini-2.0-flash").unwrap(),
            "models/gemini-2.0-flash"
        );
        assert_eq!(
            model_path("models/gemini-2.5-pro").unwrap(),
            "models/gemini-2.5-pro"
        );
        assert_eq!(
            model_path("tunedModels/my-model-1").unwrap(),
            "tunedModels/my-model-1"
        );
        for bad in ["", "a/b", "x?key=1", "../v1/x", "m:generateContent"] {
            assert_eq!(
                model_path(bad).unwrap_err().param.as_deref(),
                Some("model"),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_translation() {
        let v = encode(json!({
            "model": "google/gemini-2.0-flash",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "user", "content": [{"type": "text", "text": ""},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_b", "content": "{\"time\":\"12:00\"}"},
                {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 50, "temperature": 1.5, "top_p": 0.8, "stop": "END", "n": 2, "seed": 3,
            "presence_penalty": 0.1, "user": "u1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {
                "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
                "properties": {"t": {"type": ["number", "null"]}, "unit": {"$ref": "#/$defs/Unit"}},
                "required": ["t"], "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}}}}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "strict": true,
                        "parameters": {"type": "object", "properties": {"city": {"type": "string", "format": "uri"}}, "additionalProperties": false}}},
                      {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
        }))
        .unwrap();
        assert_eq!(
            v["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        let c = v["contents"].as_array().unwrap();
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(
            c[0],
            json!({"role": "user", "parts": [
                {"text": "weather?"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}}
            ]})
        );
        assert_eq!(
            c[1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]})
        );
        assert_eq!(
            c[2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                {"text": "thanks"}
            ]})
        );
        let g = &v["generationConfig"];
        assert_eq!(g["maxOutputTokens"], 50);
        assert_eq!(g["temperature"], 1.5);
        assert_eq!(g["topP"], 0.8);
        assert_eq!(g["stopSequences"], json!(["END"]));
        assert_eq!(g["candidateCount"], 2);
        assert_eq!(g["seed"], 3);
        assert_eq!(g["presencePenalty"], 0.1);
        assert_eq!(g["responseMimeType"], "application/json");
        assert_eq!(
            g["responseSchema"],
            json!({"type": "object", "required": ["t"], "properties": {
            "t": {"type": "number", "nullable": true}, "unit": {"type": "string", "enum": ["C", "F"]}}})
        );
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "get_time"}
            ]}])
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert!(v.get("user").is_none());
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}, "reasoning_effort": "low"})).unwrap();
        assert_eq!(
            v["generationConfig"],
            json!({"responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}})
        );
        let v =
            encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert!(v.get("generationConfig").is_none() && v.get("tools").is_none());
    }

    #[test]
    fn untranslatable_fields_are_400s_naming_them() {
        let base = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        for (extra, param) in [
            (json!({"logprobs": true}), "logprobs"),
            (json!({"logit_bias": {"1": 2}}), "logit_bias"),
            (json!({"audio": {"voice": "x"}}), "audio"),
            (json!({"x_unknown": 1}), "x_unknown"),
            (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}),
                "messages[0].tool_call_id",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
        ] {
            let e = encode(base(extra.clone())).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
    }

    #[test]
    fn response_translation() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"thinking...","thought":true},{"text":"Let me "},{"text":"check."},
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},{"functionCall":{"name":"get_time"}}],"role":"model"},
            "finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":12,"totalTokenCount":20,"thoughtsTokenCount":3,"cachedContentTokenCount":2},
            "modelVersion":"gemini-2.0-flash","responseId":"resp1"}"#;
        let t = decode_response(body, &call(false, true), &ChatCompletionsWriter).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["id"], "chatcmpl-resp1");
        assert_eq!(v["model"], "google/gemini-2.0-flash");
        let c = &v["choices"][0];
        assert_eq!(c["message"]["content"], "Let me check.");
        assert_eq!(c["message"]["reasoning_content"], "thinking...");
        assert_eq!(c["finish_reason"], "tool_calls");
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert_eq!(
            calls[0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            calls[1]["function"],
            json!({"name": "get_time", "arguments": "{}"})
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 15, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 3}})
        );

        let t = decode_response(body, &call(false, false), &ChatCompletionsWriter).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "parallel_tool_calls=false keeps one call"
        );

        for (reason, want) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("OTHER", "stop"),
        ] {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            let v: Value = serde_json::from_slice(
                &decode_response(
                    body.to_string().as_bytes(),
                    &call(false, true),
                    &ChatCompletionsWriter,
                )
                .unwrap()
                .body,
            )
            .unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
        }
        let two = br#"{"candidates":[{"content":{"parts":[{"text":"B"}]},"finishReason":"STOP","index":1},{"content":{"parts":[{"text":"A"}]},"finishReason":"MAX_TOKENS","index":0}],
            "usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}}"#;
        let v: Value = serde_json::from_slice(
            &decode_response(two, &call(false, true), &ChatCompletionsWriter)
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "A");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(
            (
                v["choices"][1]["index"].clone(),
                v["choices"][1]["message"]["content"].clone()
            ),
            (json!(1), json!("B"))
        );
        assert_eq!(v["usage"]["total_tokens"], 3);
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}}"#;
        let v: Value = serde_json::from_slice(
            &decode_response(blocked, &call(false, true), &ChatCompletionsWriter)
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn errors_map_to_openai_shape() {
        let e = map_error(429, br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#);
        assert_eq!(
            (e.status, e.kind.as_str(), e.code.as_deref()),
            (429, "rate_limit_error", Some("RESOURCE_EXHAUSTED"))
        );
        assert_eq!(e.message, "Resource has been exhausted (e.g. check quota).");
        let e = map_error(400, br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#);
        assert_eq!((e.status, e.kind.as_str()), (401, "authentication_error"));
        let e = map_error(
            400,
            br#"[{"error":{"code":400,"message":"bad schema","status":"INVALID_ARGUMENT"}}]"#,
        );
        assert_eq!(
            (e.status, e.message.as_str(), e.code.as_deref()),
            (400, "bad schema", Some("INVALID_ARGUMENT"))
        );
        let e = map_error(503, br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#);
        assert_eq!((e.status, e.kind.as_str()), (503, "server_error"));
    }

    #[test]
    fn embeddings_both_ways() {
        let req = json!({"model": "google/text-embedding-004", "input": ["a", "bb"], "dimensions": 3, "encoding_format": "float", "user": "u"});
        let v = encode_embeddings(req.as_object().unwrap(), "models/text-embedding-004").unwrap();
        assert_eq!(
            v,
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "bb"}]}, "outputDimensionality": 3}
            ]})
        );
        let one = json!({"model": "m", "input": "hello"});
        assert_eq!(
            encode_embeddings(one.as_object().unwrap(), "models/m").unwrap()["requests"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        for (bad, param) in [
            (json!({"input": [1, 2]}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": "x", "dimensions": 0}), "dimensions"),
            (
                json!({"input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!({"input": "x", "task": "y"}), "task"),
        ] {
            assert_eq!(
                encode_embeddings(bad.as_object().unwrap(), "models/m")
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some(param),
                "{bad}"
            );
        }
        let (body, usage) = decode_embeddings(
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#,
            "google/text-embedding-004",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "google/text-embedding-004");
        assert_eq!(
            v["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.3, 0.4]})
        );
        assert!(usage.is_none());
    }

    // ---- streams: recorded-shape fixtures, fed split at every byte offset ----

    fn ev(v: Value) -> String {
        format!("data: {v}\r\n\r\n")
    }

    fn text_stream(stamp_every_chunk: bool) -> String {
        let fr = |last: bool| {
            if last || stamp_every_chunk {
                json!("STOP")
            } else {
                Value::Null
            }
        };
        [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "finishReason": fr(false), "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": " wörld"}], "role": "model"}, "finishReason": fr(false), "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "!"}], "role": "model"}, "finishReason": fr(true), "index": 0}],
                      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"})),
        ]
        .concat()
    }

    fn tools_stream() -> String {
        [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Checking."}], "role": "model"}, "index": 0}], "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}], "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}, "responseId": "r1"})),
        ]
        .concat()
    }

    fn chunk(choice: u32, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash",
               "choices": [{"index": choice, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    fn usage_chunk(p: u64, c: u64, t: u64) -> Value {
        json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash",
               "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}})
    }

    fn run(input: &[u8], split: usize, c: &CallInfo) -> (Vec<u8>, StreamStatus, Option<Usage>) {
        let mut t = SseDriver::new(GeminiStream::new(c, fixed_writer(c)));
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(&mut t, input, split, &mut out);
        (out.to_vec(), status, t.usage())
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let d = e.strip_prefix("data: ").unwrap();
                if d == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    /// Tool call ids are random: replaced by their position before comparing.
    fn normalise(mut evs: Vec<Value>) -> Vec<Value> {
        for e in &mut evs {
            if let Some(tc) = e.pointer_mut("/choices/0/delta/tool_calls/0") {
                if let Some(id) = tc.get("id").and_then(Value::as_str) {
                    assert!(id.starts_with("call_") && id.len() == 29, "{id}");
                    let index = tc["index"].clone();
                    tc["id"] = json!(format!("call_{index}"));
                }
            }
        }
        evs
    }

    fn check(input: &str, c: &CallInfo, want: &[Value], want_status: &StreamStatus) {
        let input = input.as_bytes();
        let (whole, status, _) = run(input, 0, c);
        assert_eq!(&status, want_status);
        let whole = normalise(events(&whole));
        assert_eq!(whole, want);
        for split in 0..=input.len() {
            let (out, status, _) = run(input, split, c);
            assert_eq!(normalise(events(&out)), whole, "split at {split}");
            assert_eq!(&status, want_status, "split at {split}");
        }
    }

    #[test]
    fn text_stream_at_every_split() {
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "Hello"}), None),
            chunk(0, json!({"content": " wörld"}), None),
            chunk(0, json!({"content": "!"}), None),
            chunk(0, json!({}), Some("stop")),
            usage_chunk(5, 3, 8),
            json!("[DONE]"),
        ];
        check(
            &text_stream(false),
            &call(true, true),
            &want,
            &StreamStatus::Done,
        );
        // finishReason stamped on every chunk: still one finish chunk, at the end.
        check(
            &text_stream(true),
            &call(true, true),
            &want,
            &StreamStatus::Done,
        );
        let mut no_usage = want.to_vec();
        no_usage.remove(5);
        check(
            &text_stream(false),
            &call(false, true),
            &no_usage,
            &StreamStatus::Done,
        );
        let (_, _, usage) = run(text_stream(false).as_bytes(), 11, &call(false, true));
        assert_eq!(
            usage,
            Some(Usage::new(5, 3)),
            "usage known without the usage chunk"
        );
    }

    #[test]
    fn tool_stream_with_several_calls_at_every_split() {
        let tc = |v: Value| chunk(0, json!({"tool_calls": [v]}), None);
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "Checking."}), None),
            tc(
                json!({"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            ),
            tc(json!({"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}})),
            tc(
                json!({"index": 1, "id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}),
            ),
            tc(json!({"index": 1, "function": {"arguments": "{}"}})),
            chunk(0, json!({}), Some("tool_calls")),
            usage_chunk(9, 4, 13),
            json!("[DONE]"),
        ];
        check(
            &tools_stream(),
            &call(true, true),
            &want,
            &StreamStatus::Done,
        );
        // parallel_tool_calls: false keeps the first call only.
        let mut single = want.to_vec();
        single.drain(4..6);
        check(
            &tools_stream(),
            &call(true, false),
            &single,
            &StreamStatus::Done,
        );
    }

    #[test]
    fn several_candidates_keep_their_own_index() {
        let input = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "A"}]}, "index": 0}, {"content": {"parts": [{"text": "B"}]}, "index": 1}], "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0}, {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}], "responseId": "r1"})),
        ]
        .concat();
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "A"}), None),
            chunk(1, json!({"role": "assistant", "content": ""}), None),
            chunk(1, json!({"content": "B"}), None),
            chunk(0, json!({"content": "a"}), None),
            chunk(1, json!({"content": "b"}), None),
            chunk(0, json!({}), Some("stop")),
            chunk(1, json!({}), Some("length")),
            json!("[DONE]"),
        ];
        check(&input, &call(false, true), &want, &StreamStatus::Done);
    }

    #[test]
    fn blocked_prompt_stream_ends_with_content_filter() {
        let input = ev(
            json!({"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}, "responseId": "r1"}),
        );
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({}), Some("content_filter")),
            json!("[DONE]"),
        ];
        check(&input, &call(false, true), &want, &StreamStatus::Done);
    }

    #[test]
    fn error_event_fails_without_a_finish_chunk() {
        let input = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}], "responseId": "r1"})),
            ev(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})),
        ]
        .concat();
        let (_, status, _) = run(input.as_bytes(), 0, &call(true, true));
        let StreamStatus::Failed(e) = &status else {
            panic!("{status:?}")
        };
        assert_eq!(
            (e.status, e.message.as_str()),
            (503, "The model is overloaded.")
        );
        let want = [
            chunk(0, json!({"role": "assistant", "content": ""}), None),
            chunk(0, json!({"content": "Hel"}), None),
        ];
        check(&input, &call(true, true), &want, &status);
    }

    #[test]
    fn stream_without_finish_reason_fails() {
        let full = tools_stream();
        let input = &full[..full
            .find("data: ")
            .map(|_| full[6..].find("data: ").unwrap() + 6)
            .unwrap()];
        let (out, status, _) = run(input.as_bytes(), 0, &call(true, true));
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
            "{status:?}"
        );
        let evs = events(&out);
        assert_eq!(
            evs.len(),
            2,
            "role and content, no finish, no [DONE]: {evs:?}"
        );
        check(input, &call(true, true), &evs, &status);
        // Cut in the middle of the last event: the partial JSON is an error too.
        let input = &full[..full.len() - 10];
        let (_, status, _) = run(input.as_bytes(), 0, &call(false, true));
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
            "{status:?}"
        );
    }

    // ---- reasoning (issue 20) ----

    #[test]
    fn thinking_config_per_level_and_family() {
        use crate::providers::translate::Effort as E;
        let levels = [E::None, E::Minimal, E::Low, E::Medium, E::High, E::Xhigh];
        let table = |model: &str| -> Vec<Value> {
            levels
                .iter()
                .map(|e| serde_json::to_value(thinking_config(model, *e)).unwrap())
                .collect()
        };
        let budget = |n: u32, show: bool| {
            if show {
                json!({"thinkingBudget": n, "includeThoughts": true})
            } else {
                json!({"thinkingBudget": n})
            }
        };
        let level = |l: &str, show: bool| {
            if show {
                json!({"thinkingLevel": l, "includeThoughts": true})
            } else {
                json!({"thinkingLevel": l})
            }
        };
        assert_eq!(family("gemini-3-pro-preview"), Family::Three { pro: true });
        assert_eq!(
            family("models/gemini-3.1-pro-preview"),
            Family::Three { pro: true }
        );
        assert_eq!(
            family("gemini-3-flash-preview"),
            Family::Three { pro: false }
        );
        assert_eq!(family("gemini-2.5-pro"), Family::TwoFive { pro: true });
        assert_eq!(
            family("gemini-2.5-flash-lite"),
            Family::TwoFive { pro: false }
        );
        assert_eq!(family("gemini-2.0-flash"), Family::Other);
        // Gemini 3 Pro: only low and high; low stands for none.
        assert_eq!(
            table("gemini-3-pro-preview"),
            [
                level("low", false),
                level("low", true),
                level("low", true),
                level("high", true),
                level("high", true),
                level("high", true)
            ]
        );
        // Gemini 3 Flash: minimal stands for none.
        assert_eq!(
            table("gemini-3-flash-preview"),
            [
                level("minimal", false),
                level("minimal", true),
                level("low", true),
                level("medium", true),
                level("high", true),
                level("high", true)
            ]
        );
        // 2.5 Pro cannot stop thinking (128 at least) and goes to 32768.
        assert_eq!(
            table("gemini-2.5-pro"),
            [
                budget(128, false),
                budget(1024, true),
                budget(1024, true),
                budget(8192, true),
                budget(24576, true),
                budget(32768, true)
            ]
        );
        for model in [
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.0-flash",
            "gemini-flash-latest",
        ] {
            assert_eq!(
                table(model),
                [
                    budget(0, false),
                    budget(1024, true),
                    budget(1024, true),
                    budget(8192, true),
                    budget(24576, true),
                    budget(24576, true)
                ],
                "{model}"
            );
        }
    }

    fn call_for(model: &str) -> CallInfo {
        let mut c = call(false, true);
        c.upstream_model = model.into();
        c
    }

    fn encode_for(provider: &str, model: &str, body: Value) -> Value {
        let req = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
        let bytes = translate::encode_request_for(&req, provider, model).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn thought_signatures_round_trip_in_the_call_ids() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"Plan: weather then time.","thought":true},
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln/+="},
            {"functionCall":{"name":"get_time","args":{}}}],"role":"model"},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":4,"thoughtsTokenCount":7,"totalTokenCount":16},"responseId":"r1"}"#;
        let t = decode_response_for(
            body,
            &call_for("gemini-3-pro-preview"),
            &ChatCompletionsWriter,
            "google",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["reasoning_content"], "Plan: weather then time.");
        assert_eq!(t.usage.unwrap().reasoning_tokens, 7);
        let id = m["tool_calls"][0]["id"].as_str().unwrap();
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        let (base, thought) = crate::providers::translate::split_id(id);
        assert!(base.starts_with("call_") && base.len() == 29);
        assert_eq!(thought.unwrap().signature.as_deref(), Some("c2ln/+="));
        // The second (parallel) call is not signed: a plain id.
        assert_eq!(m["tool_calls"][1]["id"].as_str().unwrap().len(), 29);

        let next = json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            m,
            {"role": "tool", "tool_call_id": m["tool_calls"][0]["id"], "content": "18C"},
            {"role": "tool", "tool_call_id": m["tool_calls"][1]["id"], "content": "12:00"}
        ]});
        // Back to the provider and model that signed: restored on the call it was on.
        let v = encode_for("google", "gemini-3-pro-preview", next.clone());
        assert_eq!(
            v["contents"][1]["parts"],
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln/+="},
                   {"functionCall": {"name": "get_time", "args": {}}}])
        );
        assert_eq!(
            v["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
        // Another provider's Gemini 3 (or another model): the documented placeholder instead.
        for (provider, model) in [
            ("vertex", "gemini-3-pro-preview"),
            ("google", "gemini-3-flash-preview"),
        ] {
            let v = encode_for(provider, model, next.clone());
            assert_eq!(
                v["contents"][1]["parts"][0]["thoughtSignature"],
                SKIP_SIGNATURE
            );
            assert!(v["contents"][1]["parts"][1]
                .get("thoughtSignature")
                .is_none());
        }
        // Gemini 2.5 needs no placeholder: the call goes unsigned.
        let v = encode_for("google", "gemini-2.5-flash", next);
        assert!(!v.to_string().contains("thoughtSignature"), "{v}");
    }

    #[test]
    fn thought_stream_at_every_split() {
        let c = call_for("gemini-3-flash-preview");
        let input = [
            ev(json!({"candidates": [{"content": {"parts": [{"text": "Thinking ", "thought": true}], "role": "model"}, "index": 0}], "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"text": "hard.", "thought": true}], "role": "model"}, "index": 0}], "responseId": "r1"})),
            ev(json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
                      "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "thoughtsTokenCount": 6, "totalTokenCount": 19}, "responseId": "r1"})),
        ]
        .concat();
        let input = input.as_bytes();
        // Ids are random apart from the signature: compared with their base replaced.
        let norm = |out: &[u8]| -> Vec<Value> {
            let mut evs = events(out);
            for e in &mut evs {
                if let Some(tc) = e.pointer_mut("/choices/0/delta/tool_calls/0/id") {
                    let (_, thought) = crate::providers::translate::split_id(tc.as_str().unwrap());
                    *tc = json!(thought.and_then(|t| t.signature));
                }
            }
            evs
        };
        let want = vec![
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]}),
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [{"index": 0, "delta": {"reasoning_content": "Thinking "}, "logprobs": null, "finish_reason": null}]}),
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [{"index": 0, "delta": {"reasoning_content": "hard."}, "logprobs": null, "finish_reason": null}]}),
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c2ln", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}, "logprobs": null, "finish_reason": null}]}),
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}, "logprobs": null, "finish_reason": null}]}),
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]}),
            json!({"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 7, "model": "google/gemini-2.0-flash", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19, "completion_tokens_details": {"reasoning_tokens": 6}}}),
            json!("[DONE]"),
        ];
        let mut c = c;
        c.include_usage = true;
        for split in 0..=input.len() {
            let (out, status, usage) = run(input, split, &c);
            assert_eq!(status, StreamStatus::Done, "split at {split}");
            assert_eq!(norm(&out), want, "split at {split}");
            assert_eq!(usage.unwrap().reasoning_tokens, 6);
        }
    }
}
