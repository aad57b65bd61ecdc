//! Anthropic Messages API (`POST /v1/messages`) behind OpenAI Chat Completions: requests,
//! answers, streams and errors translated both ways.
//!
//! Choices (README, "Anthropic and Gemini"): `temperature` above 1 is clamped to 1 (Anthropic's
//! maximum); `n > 1` is a 400; `response_format` JSON is emulated with one forced tool whose
//! input is the answer; `seed`, `user` (sent as `metadata.user_id`) and the fields of
//! [`crate::providers::translate::harmless`] cannot change the answer; any other field without
//! an equivalent is a 400 naming it. Reasoning (README, "Reasoning"): `reasoning_effort`
//! becomes `thinking` (a budget, or adaptive for Claude 4.6+), thinking blocks are
//! `reasoning_content`, and their signatures travel in the tool call ids
//! (`translate::Thought`) back to this provider and model only.
//!
//! `wire.rs` holds the Messages API's serde types, `translate.rs` what they mean for the
//! gateway's canonical (OpenAI chat) request, answers and stream events. A client that speaks
//! Messages itself (`CallInfo::passthrough`) is served by `passthrough.rs` instead: its body,
//! `anthropic-version` and `anthropic-beta` go upstream as sent (`model` rewritten, the
//! provider's key in place of the client's), answers and streams come back untouched.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::ChatRequest;
use crate::canonical::{AnswerWriter, EventWriter};
use crate::config::{BaseUrl, ProviderConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::stream::SseDriver;
use crate::providers::{
    upstream_error_message, CallInfo, Provider, StreamTranslator, Translated, UpstreamRequest,
};

pub mod passthrough;
mod translate;
mod wire;

pub use crate::providers::translate::BUDGETS;
#[cfg(test)]
use translate::decode_response;
use translate::{decode_response_for, encode_request_for};
pub use translate::{encode_request, finish_reason, thinking_for, AnthropicStream, Thinking};

/// The API version every request names (`anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// The tool that carries the answer when the client asked for JSON (`response_format`):
/// Anthropic has no JSON mode, so the gateway forces a call to this tool and returns its input
/// as the message content. Client tools may not use the name.
pub const JSON_TOOL: &str = "gateway_json_response";

const NAME: &str = "Anthropic";

/// The built-in provider's name: the tag of reasoning state decoded without a provider named.
const PROVIDER: &str = "anthropic";

pub struct Anthropic {
    cfg: ProviderConfig,
    default_max_tokens: u32,
}

impl Anthropic {
    pub fn new(cfg: ProviderConfig, default_max_tokens: u32) -> Self {
        Anthropic {
            cfg,
            default_max_tokens,
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("anthropic-version", API_VERSION.to_string())];
        if let Some(k) = &self.cfg.api_key {
            h.push(("x-api-key", k.expose().to_string()));
        }
        h
    }

    /// A pass-through's headers: the client's `anthropic-version` (the gateway's when it sent
    /// none) and `anthropic-beta`, and the provider's key.
    fn passthrough_headers(&self, call: &CallInfo) -> Vec<(&'static str, String)> {
        let mut h = call.client_headers.clone();
        if !h.iter().any(|(k, _)| *k == "anthropic-version") {
            h.push(("anthropic-version", API_VERSION.to_string()));
        }
        if let Some(k) = &self.cfg.api_key {
            h.push(("x-api-key", k.expose().to_string()));
        }
        h
    }
}

impl Provider for Anthropic {
    fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    fn chat_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        if let (true, Some(native)) = (call.passthrough, req.native_body()) {
            let body = passthrough::native_body_for(req, native, &call.upstream_model)?;
            return Ok(UpstreamRequest::post(
                format!("{}/v1/messages", backend.path),
                self.passthrough_headers(call),
                body,
            ));
        }
        let body = encode_request_for(req, call, self.default_max_tokens, &self.cfg.name)?;
        Ok(UpstreamRequest::post(
            format!("{}/v1/messages", backend.path),
            self.headers(),
            body,
        ))
    }

    fn chat_response(
        &self,
        body: Bytes,
        call: &CallInfo,
        w: &dyn AnswerWriter,
    ) -> Result<Translated, GatewayError> {
        if call.passthrough {
            let usage = passthrough::usage_of(&body);
            return Ok(Translated { body, usage });
        }
        decode_response_for(&body, call, w, &self.cfg.name)
    }

    fn stream_translator(
        &self,
        call: &CallInfo,
        w: Box<dyn EventWriter>,
    ) -> Box<dyn StreamTranslator> {
        if call.passthrough {
            return Box::new(SseDriver::passthrough(
                passthrough::PassthroughStream::default(),
            ));
        }
        Box::new(SseDriver::new(
            AnthropicStream::new(call, w).provider(&self.cfg.name),
        ))
    }

    fn count_tokens_request(
        &self,
        req: &ChatRequest,
        call: &CallInfo,
        backend: &BaseUrl,
    ) -> Option<Result<UpstreamRequest, GatewayError>> {
        let native = req.native_body().filter(|_| call.passthrough)?;
        Some(
            passthrough::native_body_for(req, native, &call.upstream_model).map(|body| {
                UpstreamRequest::post(
                    format!("{}/v1/messages/count_tokens", backend.path),
                    self.passthrough_headers(call),
                    body,
                )
            }),
        )
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        map_error(status, body)
    }

    fn embeddings_request(
        &self,
        _body: &Map<String, Value>,
        _upstream_model: &str,
        _backend: &BaseUrl,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut e = GatewayError::bad_request(
            "model",
            "Anthropic has no embeddings API: use an embeddings model of another provider \
             (for example openai/text-embedding-3-small or google/text-embedding-004)",
        );
        e.code = Some("embeddings_not_supported".into());
        Err(e)
    }

    fn models_request(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1/models?limit=1000", backend.path),
            self.headers(),
        ))
    }

    fn parse_models(&self, body: &[u8]) -> Vec<String> {
        crate::providers::openai::parse_model_list(body)
    }

    fn health_probe(&self, backend: &BaseUrl) -> Option<UpstreamRequest> {
        Some(UpstreamRequest::get(
            format!("{}/v1/models?limit=1", backend.path),
            self.headers(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Error mapping

/// The HTTP status Anthropic uses for an error `type` (stream errors carry only the type).
pub(super) fn status_for_type(t: &str) -> u16 {
    match t {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// An Anthropic error body -> the OpenAI error object. 529 (overloaded) becomes 503 so every
/// client treats it as retryable; the Anthropic error type is kept as `code`.
pub fn map_error(status: u16, body: &[u8]) -> GatewayError {
    let (message, kind, _) = upstream_error_message(body);
    let status = if status == 529 { 503 } else { status };
    GatewayError::from_upstream(status, ErrorKind::for_status(status), kind, message)
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
    use crate::api::Usage;
    use crate::providers::StreamStatus;
    use bytes::BytesMut;
    use serde_json::json;

    fn call(include_usage: bool) -> CallInfo {
        CallInfo {
            client_model: "anthropic/claude-sonnet-4-20250514".into(),
            upstream_model: "claude-sonnet-4-20250514".into(),
            stream: true,
            include_usage,
            parallel_tool_calls: true,
            passthrough: false,
            client_format: "openai",
            client_headers: Vec::new(),
        }
    }

    fn encode(body: Value) -> Result<Value, GatewayError> {
        let req = ChatRequest::parse(body.to_string().as_bytes())?;
        let bytes = encode_request(&req, &call(false), 4096)?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn request_translation() {
        let v = encode(json!({
            "model": "anthropic/claude-sonnet-4-20250514",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "use metric"},
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "text", "text": ""},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "21C"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "thanks"}
            ],
            "max_completion_tokens": 100, "max_tokens": 5, "temperature": 1.7, "top_p": 0.9,
            "stop": ["END", "  "], "user": "u-42", "seed": 7, "n": 1, "store": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                      {"type": "function", "function": {"name": "noargs"}}],
            "tool_choice": "required", "parallel_tool_calls": false, "stream": true
        }))
        .unwrap();
        assert_eq!(v["model"], "claude-sonnet-4-20250514");
        assert_eq!(v["max_tokens"], 100);
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["top_p"], 0.9);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["metadata"], json!({"user_id": "u-42"}));
        assert_eq!(v["stream"], true);
        assert!(v.get("seed").is_none() && v.get("store").is_none() && v.get("n").is_none());
        assert_eq!(
            v["system"],
            json!([{"type": "text", "text": "be brief"}, {"type": "text", "text": "use metric"}])
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            v["tools"][1],
            json!({"name": "noargs", "input_schema": {"type": "object", "properties": {}}})
        );
        assert_eq!(
            v["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "the empty assistant message is dropped, tool results and the next user text merge: {m:?}");
        assert_eq!(m[0]["role"], "user");
        assert_eq!(
            m[0]["content"],
            json!([
                {"type": "text", "text": "weather in Paris and Rome?"},
                {"type": "text", "text": "and "},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ])
        );
        assert_eq!(
            m[1],
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}
            ]})
        );
        assert_eq!(
            m[2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "21C"},
                {"type": "text", "text": "thanks"}
            ]})
        );
    }

    #[test]
    fn defaults_and_json_mode() {
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure:  "}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}}))
        .unwrap();
        assert_eq!(v["max_tokens"], 4096);
        assert!(v.get("stream").is_none() && v.get("temperature").is_none());
        assert_eq!(
            v["messages"][1]["content"][0]["text"], "Sure:",
            "a prefill loses its trailing whitespace"
        );
        assert_eq!(v["tools"][0]["name"], JSON_TOOL);
        assert_eq!(
            v["tools"][0]["input_schema"]["properties"]["name"]["type"],
            "string"
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": true})
        );
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"})).unwrap();
        assert_eq!(v["tool_choice"], json!({"type": "none"}));
        let v = encode(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]})).unwrap();
        assert!(v.get("tool_choice").is_none());
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
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
            (json!({"x_unknown": 1}), "x_unknown"),
            (json!({"temperature": 3}), "temperature"),
            (
                json!({"response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]}),
                "response_format",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": JSON_TOOL}}]}),
                "tools",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "system", "content": "only a system prompt"}]}),
                "messages",
            ),
        ] {
            let e = encode(base(extra.clone())).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
        // Harmless ones pass.
        encode(base(json!({"presence_penalty": 0, "logprobs": false, "metadata": {"a": "b"}, "reasoning_effort": "none", "modalities": ["text"]}))).unwrap();
    }

    #[test]
    fn response_translation() {
        let body = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",
            "content":[{"type":"thinking","thinking":"hmm","signature":"x"},{"type":"text","text":"Checking."},
                       {"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"location":"Paris"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":377,"output_tokens":65,"cache_creation_input_tokens":10,"cache_read_input_tokens":100}}"#;
        let t = decode_response(body, &call(false), &ChatCompletionsWriter).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["id"], "chatcmpl-msg_01");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "anthropic/claude-sonnet-4-20250514");
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "Checking.");
        assert_eq!(c["message"]["reasoning_content"], "hmm");
        // The thinking block's signature travels in the call's id, for the next turn.
        let id = c["message"]["tool_calls"][0]["id"].as_str().unwrap();
        let (base, thought) = crate::providers::translate::split_id(id);
        assert_eq!(base, "toolu_01");
        let thought = thought.unwrap();
        assert_eq!(
            (thought.provider.as_str(), thought.model.as_str()),
            ("anthropic", "claude-sonnet-4-20250514")
        );
        assert_eq!(thought.blocks[0].signature.as_deref(), Some("x"));
        assert_eq!(
            (thought.blocks[0].offset, thought.blocks[0].len),
            (Some(0), Some(3))
        );
        assert_eq!(
            c["message"]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"})
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 487, "completion_tokens": 65, "total_tokens": 552, "prompt_tokens_details": {"cached_tokens": 100}})
        );
        assert_eq!(t.usage.unwrap().cached_tokens, 100);

        for (reason, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("refusal", "content_filter"),
        ] {
            let body = json!({"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": reason, "usage": {"input_tokens": 1, "output_tokens": 1}});
            let v: Value = serde_json::from_slice(
                &decode_response(
                    body.to_string().as_bytes(),
                    &call(false),
                    &ChatCompletionsWriter,
                )
                .unwrap()
                .body,
            )
            .unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
        }
        let json_mode = br#"{"id":"m","content":[{"type":"tool_use","id":"t","name":"gateway_json_response","input":{"name":"Ada"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#;
        let v: Value = serde_json::from_slice(
            &decode_response(json_mode, &call(false), &ChatCompletionsWriter)
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "{\"name\":\"Ada\"}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(
            decode_response(b"<html>", &call(false), &ChatCompletionsWriter)
                .unwrap_err()
                .status,
            502
        );
    }

    #[test]
    fn errors_map_to_openai_shape() {
        let e = map_error(529, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#);
        assert_eq!(
            (
                e.status,
                e.message.as_str(),
                e.kind.as_str(),
                e.code.as_deref()
            ),
            (503, "Overloaded", "server_error", Some("overloaded_error"))
        );
        let e = map_error(401, br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#);
        assert_eq!((e.status, e.kind.as_str()), (401, "authentication_error"));
        let e = map_error(
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        );
        assert_eq!(
            (e.status, e.kind.as_str(), e.message.as_str()),
            (429, "rate_limit_error", "slow")
        );
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "slow");
    }

    // ---- streams: recorded-shape fixtures, fed split at every byte offset ----

    fn ev(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn start() -> String {
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
        )
    }

    fn text_stream() -> String {
        [
            start(),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string(),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " wörld"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 12}})),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
        .concat()
    }

    fn tools_stream() -> String {
        [
            start(),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"locati"}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "on\": \"Paris\"}"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"tz\":\"CET\"}"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_C", "name": "ping_all", "input": {}}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 3})),
            ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 65}})),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
        .concat()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-msg_1", "object": "chat.completion.chunk", "created": 7, "model": "anthropic/claude-sonnet-4-20250514",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    fn usage_chunk(p: u64, c: u64, cached: u64) -> Value {
        json!({"id": "chatcmpl-msg_1", "object": "chat.completion.chunk", "created": 7, "model": "anthropic/claude-sonnet-4-20250514",
               "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, "prompt_tokens_details": {"cached_tokens": cached}}})
    }

    /// Runs `input` split in two at `split`, returns the output events and the final status.
    fn run(
        input: &[u8],
        split: usize,
        include_usage: bool,
    ) -> (Vec<u8>, StreamStatus, Option<Usage>) {
        let mut t = SseDriver::new(AnthropicStream::new(
            &call(include_usage),
            fixed_writer(&call(include_usage)),
        ));
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_split(&mut t, input, split, &mut out);
        (out.to_vec(), status, t.usage())
    }

    use crate::providers::stream::data_events as events;

    /// Every split gives the same bytes as the whole, and those bytes are `want`.
    fn check(input: &str, include_usage: bool, want: &[Value], want_status: &StreamStatus) {
        let input = input.as_bytes();
        let (whole, status, _) = run(input, 0, include_usage);
        assert_eq!(&status, want_status);
        assert_eq!(events(&whole), want);
        for split in 0..=input.len() {
            let (out, status, _) = run(input, split, include_usage);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(&status, want_status, "split at {split}");
        }
        // And one byte at a time.
        let mut t = SseDriver::new(AnthropicStream::new(
            &call(include_usage),
            fixed_writer(&call(include_usage)),
        ));
        let mut out = BytesMut::new();
        let status = crate::providers::stream::feed_bytewise(&mut t, input, &mut out);
        assert_eq!(out.to_vec(), whole);
        assert_eq!(&status, want_status);
    }

    #[test]
    fn text_stream_at_every_split() {
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hello"}), None),
            chunk(json!({"content": " wörld"}), None),
            chunk(json!({}), Some("stop")),
            json!("[DONE]"),
        ];
        check(&text_stream(), false, &want, &StreamStatus::Done);
        let mut with_usage = want.to_vec();
        with_usage.insert(4, usage_chunk(30, 12, 5));
        check(&text_stream(), true, &with_usage, &StreamStatus::Done);
        let (_, _, usage) = run(text_stream().as_bytes(), 3, false);
        let u = usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (30, 12, 5),
            "usage known without the usage chunk"
        );
    }

    #[test]
    fn tool_stream_with_several_calls_at_every_split() {
        let tc = |v: Value| chunk(json!({"tool_calls": [v]}), None);
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Let me check."}), None),
            tc(
                json!({"index": 0, "id": "toolu_A", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            ),
            tc(json!({"index": 0, "function": {"arguments": "{\"locati"}})),
            tc(json!({"index": 0, "function": {"arguments": "on\": \"Paris\"}"}})),
            tc(
                json!({"index": 1, "id": "toolu_B", "type": "function", "function": {"name": "get_time", "arguments": ""}}),
            ),
            tc(json!({"index": 1, "function": {"arguments": "{\"tz\":\"CET\"}"}})),
            tc(
                json!({"index": 2, "id": "toolu_C", "type": "function", "function": {"name": "ping_all", "arguments": ""}}),
            ),
            tc(json!({"index": 2, "function": {"arguments": "{}"}})),
            chunk(json!({}), Some("tool_calls")),
            usage_chunk(30, 65, 5),
            json!("[DONE]"),
        ];
        check(&tools_stream(), true, &want, &StreamStatus::Done);
    }

    #[test]
    fn json_mode_stream_becomes_content() {
        let input = [
            start(),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_J", "name": JSON_TOOL, "input": {}}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"name\":"}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"Ada\"}"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}})),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
        .concat();
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "{\"name\":"}), None),
            chunk(json!({"content": "\"Ada\"}"}), None),
            chunk(json!({}), Some("stop")),
            json!("[DONE]"),
        ];
        check(&input, false, &want, &StreamStatus::Done);
    }

    #[test]
    fn error_event_fails_without_a_finish_chunk() {
        let input = [
            start(),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}})),
            ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        ]
        .concat();
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hel"}), None),
        ];
        let (_, status, _) = run(input.as_bytes(), 0, false);
        let StreamStatus::Failed(e) = &status else {
            panic!("{status:?}")
        };
        assert_eq!(
            (e.status, e.message.as_str(), e.code.as_deref()),
            (503, "Overloaded", Some("overloaded_error"))
        );
        check(&input, true, &want, &status);
    }

    #[test]
    fn error_before_any_content_writes_nothing_so_failover_stays_possible() {
        let input = [start(), ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))].concat();
        let (out, status, _) = run(input.as_bytes(), 0, false);
        assert!(out.is_empty());
        assert!(matches!(status, StreamStatus::Failed(e) if e.status == 503));
    }

    #[test]
    fn truncated_streams_fail_and_never_finish() {
        let full = tools_stream();
        // Cut after message_delta: the finish_reason is known but must not be sent.
        let cut = full.find("event: message_stop").unwrap();
        let input = &full[..cut];
        let (out, status, _) = run(input.as_bytes(), 0, true);
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated")),
            "{status:?}"
        );
        let evs = events(&out);
        assert!(evs
            .iter()
            .all(|e| e["choices"][0]["finish_reason"].is_null()
                && e != "[DONE]"
                && e.get("usage").is_none()));
        check(input, true, &evs, &status);
        // Cut in the middle of an event.
        let input = &full[..full.len() / 2];
        let (out, status, _) = run(input.as_bytes(), 0, false);
        assert!(
            matches!(&status, StreamStatus::Failed(e) if e.code.as_deref() == Some("stream_truncated"))
        );
        check(input, false, &events(&out), &status);
    }

    #[test]
    fn unknown_events_are_ignored_thinking_is_reasoning_and_done_is_final() {
        let input = [
            start(),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}})),
            ev("brand_new_event", json!({"type": "brand_new_event", "x": 1})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}})),
            ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 3}})),
            ev("message_stop", json!({"type": "message_stop"})),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n".to_string(),
        ]
        .concat();
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"reasoning_content": "hmm"}), None),
            chunk(json!({"content": "Hi"}), None),
            chunk(json!({}), Some("length")),
            json!("[DONE]"),
        ];
        check(&input, false, &want, &StreamStatus::Done);
    }

    // ---- reasoning (issue 20) ----

    fn encode_for(model: &str, body: Value) -> Value {
        let req = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
        let mut c = call(false);
        c.upstream_model = model.into();
        let bytes = encode_request(&req, &c, 4096).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn effort_table_per_level_and_family() {
        use crate::providers::translate::Effort as E;
        let levels = [E::None, E::Minimal, E::Low, E::Medium, E::High, E::Xhigh];
        let budget = |n| Some(Thinking::Budget(n));
        let adaptive = |e| Some(Thinking::Adaptive(e));
        // Models that take a budget: Claude up to 4.5, 3.7, and names the gateway cannot place.
        for model in [
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1",
            "claude-opus-4-20250514",
            "claude-haiku-4-5",
            "claude-3-7-sonnet-20250219",
            "some-custom-model",
        ] {
            let got: Vec<_> = levels.iter().map(|e| thinking_for(model, *e)).collect();
            assert_eq!(
                got,
                [
                    None,
                    budget(1024),
                    budget(2048),
                    budget(8192),
                    budget(16384),
                    budget(24576)
                ],
                "{model}"
            );
        }
        // Claude 4.6: adaptive, `max` standing for xhigh.
        for model in [
            "claude-opus-4-6",
            "claude-sonnet-4-6",
            "anthropic.claude-opus-4-6-v1",
            "claude-mythos-preview",
        ] {
            let got: Vec<_> = levels.iter().map(|e| thinking_for(model, *e)).collect();
            assert_eq!(
                got,
                [
                    None,
                    adaptive("low"),
                    adaptive("low"),
                    adaptive("medium"),
                    adaptive("high"),
                    adaptive("max")
                ],
                "{model}"
            );
        }
        // 4.7 and later have xhigh.
        for model in [
            "claude-opus-4-7",
            "claude-fable-5",
            "claude-sonnet-5-20260301",
        ] {
            assert_eq!(thinking_for(model, E::Xhigh), adaptive("xhigh"), "{model}");
            assert_eq!(thinking_for(model, E::Minimal), adaptive("low"), "{model}");
        }
        assert_eq!(BUDGETS.len(), 5);
    }

    #[test]
    fn effort_in_the_request() {
        let ask = json!([{"role": "user", "content": "hi"}]);
        // A budget: max_tokens raised when it would not fit; kept when it does.
        let v = encode_for(
            "claude-sonnet-4-5",
            json!({"model": "m", "messages": ask, "reasoning_effort": "medium", "max_tokens": 500}),
        );
        assert_eq!(
            v["thinking"],
            json!({"type": "enabled", "budget_tokens": 8192})
        );
        assert_eq!(v["max_tokens"], 8692);
        let v = encode_for(
            "claude-sonnet-4-5",
            json!({"model": "m", "messages": ask, "reasoning_effort": "low", "max_completion_tokens": 30000}),
        );
        assert_eq!(
            (
                v["thinking"]["budget_tokens"].as_u64(),
                v["max_tokens"].as_u64()
            ),
            (Some(2048), Some(30000))
        );
        // Adaptive: the effort level, max_tokens as asked.
        let v = encode_for(
            "claude-opus-4-6",
            json!({"model": "m", "messages": ask, "reasoning_effort": "xhigh", "max_tokens": 500}),
        );
        assert_eq!(v["thinking"], json!({"type": "adaptive"}));
        assert_eq!(v["output_config"], json!({"effort": "max"}));
        assert_eq!(v["max_tokens"], 500);
        // none: no thinking, sampling settings kept.
        let v = encode_for(
            "claude-opus-4-6",
            json!({"model": "m", "messages": ask, "reasoning_effort": "none", "temperature": 0.3, "top_k": 4}),
        );
        assert!(v.get("thinking").is_none() && v.get("output_config").is_none());
        assert_eq!(
            (v["temperature"].as_f64(), v["top_k"].as_u64()),
            (Some(0.3), Some(4))
        );
        // Thinking on: temperature other than 1, top_k, top_p below 0.95 dropped; 1 and 0.95 kept.
        let v = encode_for(
            "claude-sonnet-4-5",
            json!({"model": "m", "messages": ask, "reasoning_effort": "high", "temperature": 0.3, "top_k": 4, "top_p": 0.9}),
        );
        assert!(
            v.get("temperature").is_none() && v.get("top_k").is_none() && v.get("top_p").is_none(),
            "{v}"
        );
        let v = encode_for(
            "claude-sonnet-4-5",
            json!({"model": "m", "messages": ask, "reasoning_effort": "high", "temperature": 1, "top_p": 0.95}),
        );
        assert_eq!(
            (v["temperature"].as_f64(), v["top_p"].as_f64()),
            (Some(1.0), Some(0.95))
        );
        // A forced tool (or JSON mode, which forces one): no thinking.
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for choice in [
            json!("required"),
            json!({"type": "function", "function": {"name": "f"}}),
        ] {
            let v = encode_for(
                "claude-sonnet-4-5",
                json!({"model": "m", "messages": ask, "reasoning_effort": "high", "tools": tools, "tool_choice": choice, "temperature": 0.3}),
            );
            assert!(v.get("thinking").is_none(), "{v}");
            assert_eq!(v["temperature"], 0.3);
        }
        let v = encode_for(
            "claude-sonnet-4-5",
            json!({"model": "m", "messages": ask, "reasoning_effort": "high", "response_format": {"type": "json_object"}}),
        );
        assert!(v.get("thinking").is_none());
        let v = encode_for(
            "claude-sonnet-4-5",
            json!({"model": "m", "messages": ask, "reasoning_effort": "high", "tools": tools, "tool_choice": "auto"}),
        );
        assert!(v.get("thinking").is_some());
    }

    /// An answer with thinking, a redacted block and a tool call, as the client gets it.
    fn thinking_answer() -> Value {
        let body = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [{"type": "thinking", "thinking": "Let me think: café ☕.", "signature": "c2lnbmF0dXJl+/="},
                        {"type": "redacted_thinking", "data": "UkVEQUNURUQ="},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "Paris"}},
                        {"type": "thinking", "thinking": "And the time.", "signature": "c2Vjb25k"},
                        {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 20}});
        let t = decode_response(
            body.to_string().as_bytes(),
            &call(false),
            &ChatCompletionsWriter,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        v["choices"][0]["message"].clone()
    }

    fn next_turn(message: &Value) -> Value {
        let calls = message["tool_calls"].as_array().unwrap();
        json!({"model": "m", "reasoning_effort": "high", "messages": [
            {"role": "user", "content": "weather?"},
            message,
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "12:00"}
        ]})
    }

    #[test]
    fn thinking_blocks_go_back_in_order_with_their_signatures() {
        let message = thinking_answer();
        assert_eq!(
            message["reasoning_content"],
            "Let me think: café ☕.\n\nAnd the time."
        );
        let v = encode_for("claude-sonnet-4-20250514", next_turn(&message));
        assert_eq!(v["thinking"]["type"], "enabled");
        assert_eq!(
            v["messages"][1]["content"],
            json!([
                {"type": "thinking", "thinking": "Let me think: café ☕.", "signature": "c2lnbmF0dXJl+/="},
                {"type": "redacted_thinking", "data": "UkVEQUNURUQ="},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "thinking", "thinking": "And the time.", "signature": "c2Vjb25k"},
                {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}
            ])
        );
        assert_eq!(v["messages"][2]["content"][0]["tool_use_id"], "toolu_01");
        assert_eq!(v["messages"][2]["content"][1]["tool_use_id"], "toolu_02");

        // `reasoning` is read as well as `reasoning_content`.
        let mut m = message.clone();
        let r = m
            .as_object_mut()
            .unwrap()
            .remove("reasoning_content")
            .unwrap();
        m["reasoning"] = r;
        let v = encode_for("claude-sonnet-4-20250514", next_turn(&m));
        assert_eq!(v["messages"][1]["content"][0]["type"], "thinking");

        // The reasoning changed, or missing: the blocks cannot be rebuilt; thinking off.
        for edit in [Some(json!("Let me think")), None] {
            let mut m = message.clone();
            match edit {
                Some(r) => m["reasoning_content"] = r,
                None => drop(m.as_object_mut().unwrap().remove("reasoning_content")),
            }
            let v = encode_for("claude-sonnet-4-20250514", next_turn(&m));
            assert!(v.get("thinking").is_none(), "{v}");
            assert!(!v.to_string().contains("\"thinking\""), "{v}");
            assert_eq!(v["messages"][1]["content"][1]["id"], "toolu_01");
        }
        // Another model (or provider) made them: not sent, thinking off.
        let v = encode_for("claude-opus-4-1", next_turn(&message));
        assert!(v.get("thinking").is_none() && !v.to_string().contains("c2lnbmF0dXJl"));
        // A loop that is closed (a new user question) may think again, without the old blocks.
        let mut next = next_turn(&message);
        next["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "content": "and tomorrow?"}));
        let v = encode_for("claude-opus-4-1", next);
        assert!(v.get("thinking").is_some());
        assert_eq!(v["messages"][1]["content"][0]["type"], "text");
    }

    #[test]
    fn ids_that_anthropic_would_refuse_are_made_to_fit() {
        let v = encode(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "functions.get:0", "type": "function", "function": {"name": "get", "arguments": "{}"}},
                {"id": "functions_get_0", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "functions.get:0", "content": "a"},
            {"role": "tool", "tool_call_id": "functions_get_0", "content": "b"}
        ]}))
        .unwrap();
        let a = v["messages"][1]["content"][0]["id"].as_str().unwrap();
        let b = v["messages"][1]["content"][1]["id"].as_str().unwrap();
        assert!(
            a.starts_with("functions_get_0_")
                && a.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
            "{a}"
        );
        assert_eq!(b, "functions_get_0");
        assert_eq!(v["messages"][2]["content"][0]["tool_use_id"], a);
        assert_eq!(v["messages"][2]["content"][1]["tool_use_id"], b);
    }

    fn thinking_stream() -> String {
        [
            start(),
            ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think: café."}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln+/="}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "UkVE"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 2, "content_block": {"type": "thinking", "thinking": ""}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 2, "delta": {"type": "thinking_delta", "thinking": "More."}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 2, "delta": {"type": "signature_delta", "signature": "bW9yZQ=="}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
            ev("content_block_start", json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}})),
            ev("content_block_delta", json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":\"Paris\"}"}})),
            ev("content_block_stop", json!({"type": "content_block_stop", "index": 3})),
            ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}})),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
        .concat()
    }

    #[test]
    fn thinking_stream_at_every_split() {
        let thought = crate::providers::translate::Thought {
            provider: "anthropic".into(),
            model: "claude-sonnet-4-20250514".into(),
            signature: None,
            blocks: vec![
                crate::providers::translate::ThinkingRef {
                    offset: Some(0),
                    len: Some(20),
                    signature: Some("c2ln+/=".into()),
                    redacted: None,
                },
                crate::providers::translate::ThinkingRef {
                    redacted: Some("UkVE".into()),
                    ..Default::default()
                },
                crate::providers::translate::ThinkingRef {
                    offset: Some(22),
                    len: Some(5),
                    signature: Some("bW9yZQ==".into()),
                    redacted: None,
                },
            ],
        };
        let id = crate::providers::translate::encode_id("toolu_A", &thought);
        let want = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"reasoning_content": "Let me "}), None),
            chunk(json!({"reasoning_content": "think: café."}), None),
            chunk(json!({"reasoning_content": "\n\n"}), None),
            chunk(json!({"reasoning_content": "More."}), None),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":\"Paris\"}"}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
            json!("[DONE]"),
        ];
        check(&thinking_stream(), false, &want, &StreamStatus::Done);
        // The reasoning as the client assembles it holds each block's text where the id says
        // (byte offsets).
        let text = "Let me think: café.\n\nMore.";
        assert_eq!(&text[0..20], "Let me think: café.");
        assert_eq!(&text[22..27], "More.");
    }
}
