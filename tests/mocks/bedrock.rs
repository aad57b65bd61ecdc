//! A mock AWS Bedrock runtime: a real HTTP server on loopback (through `common::Mock`) that
//! authenticates every request as AWS does, by recomputing its SigV4 signature from the request
//! it received with the test's secret (`aws-sigv4`, the crate family the gateway signs with) or
//! by checking its Bedrock API key, and refuses a wrong one with AWS's own 403. It validates the
//! Converse body as strictly as Bedrock (roles alternate and start with a user turn, known block
//! kinds, tool results answer earlier tool uses, tool blocks need a `toolConfig`), answers
//! Converse and InvokeModel (Titan, Cohere embeddings), and streams ConverseStream as
//! `application/vnd.amazon.eventstream` frames made by `aws-smithy-eventstream`'s encoder, sent
//! in small pieces that cut frames anywhere.
//!
//! What it answers is driven by the request: tools -> a `get_weather` call; tool results ->
//! "Tool said: ..."; images -> "I see N images"; magic model ids select AWS errors.
#![allow(dead_code, clippy::result_large_err)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::*;

pub const ACCESS_KEY_ID: &str = "AKIDMOCKBEDROCK01";
pub const SECRET_ACCESS_KEY: &str = "mock/bedrock+secret-key-0123456789";
pub const SESSION_TOKEN: &str = "mock-session-token-xyz";
pub const REGION: &str = "us-west-2";
pub const API_KEY: &str = "ABSKbW9jay1iZWRyb2NrLWFwaS1rZXk=";

/// User text that makes a stream fail with a `throttlingException` frame after the first text.
pub const FAIL_MID_STREAM: &str = "please fail mid-stream";

/// A model id whose error message repeats the request's session token.
pub const ECHO_TOKEN_MODEL: &str = "mock.echo-token-v1:0";

/// A model id whose ConverseStream answers 200 and then, first thing, a throttlingException
/// frame.
pub const STREAM_THROTTLED_MODEL: &str = "mock.stream-throttled-v1:0";

/// Model ids that answer with an AWS error: (model, status, x-amzn-ErrorType, message).
pub const ERROR_MODELS: &[(&str, u16, &str, &str)] = &[
    (
        "mock.throttled-v1:0",
        429,
        "ThrottlingException",
        "Too many requests, please wait before trying again.",
    ),
    (
        "mock.denied-v1:0",
        403,
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
    ),
    (
        "mock.missing-v1:0",
        404,
        "ResourceNotFoundException",
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    (
        "mock.unavailable-v1:0",
        503,
        "ServiceUnavailableException",
        "Bedrock is unable to process your request.",
    ),
    (
        "mock.notready-v1:0",
        429,
        "ModelNotReadyException",
        "Model is not ready for inference.",
    ),
];

/// What the mock counts: signatures it refused.
#[derive(Default)]
pub struct Counters {
    pub refused: AtomicUsize,
    pub probes: AtomicUsize,
}

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    let mut r = json_response(status, json!({ "message": message }));
    r.headers_mut().insert(
        "x-amzn-errortype",
        format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")
            .parse()
            .unwrap(),
    );
    r
}

fn validation(message: impl Into<String>) -> Response {
    aws_error(400, "ValidationException", &message.into())
}

/// `20261205T034331Z` -> a time.
fn amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    let dt =
        aws_smithy_types::DateTime::from_str(&rfc, aws_smithy_types::date_time::Format::DateTime)
            .ok()?;
    SystemTime::try_from(dt).ok()
}

/// Recomputes the request's SigV4 signature with `secret` and compares it with the one sent.
pub fn verify_sigv4(r: &Recorded, secret: &str) -> Result<(), String> {
    let auth = r.header("authorization").ok_or("no authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not an AWS4-HMAC-SHA256 signature")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(format!("unexpected part {part:?}")),
        }
    }
    let (credential, signed_headers, signature) = (
        credential.ok_or("no Credential")?,
        signed_headers.ok_or("no SignedHeaders")?,
        signature.ok_or("no Signature")?,
    );
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, _date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("bad credential scope {credential:?}"));
    };
    if *key_id != ACCESS_KEY_ID {
        return Err(format!("unknown access key {key_id}"));
    }
    if *service != "bedrock" || *region != REGION {
        return Err(format!(
            "scope {region}/{service}, expected {REGION}/bedrock"
        ));
    }
    let time = amz_date(r.header("x-amz-date").ok_or("no x-amz-date")?).ok_or("bad x-amz-date")?;
    let skew = SystemTime::now()
        .duration_since(time)
        .unwrap_or_else(|e| e.duration());
    if skew > Duration::from_secs(300) {
        return Err("request time too skewed".into());
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    for must in ["host", "x-amz-date"] {
        if !signed.contains(&must) {
            return Err(format!("{must} is not signed"));
        }
    }
    // The crate adds x-amz-date and the session token itself, from the time and identity.
    let mut headers = Vec::new();
    for name in signed
        .iter()
        .filter(|n| !["x-amz-date", "x-amz-security-token"].contains(n))
    {
        let v = r
            .header(name)
            .ok_or_else(|| format!("signed header {name} missing"))?;
        headers.push((*name, v));
    }
    let token = r.header("x-amz-security-token").map(str::to_string);
    if token.is_some() != signed.contains(&"x-amz-security-token") {
        return Err("x-amz-security-token sent but not signed (or the reverse)".into());
    }
    let host = r.header("host").ok_or("no host")?;
    let uri = match &r.query {
        Some(q) => format!("http://{host}{}?{q}", r.path),
        None => format!("http://{host}{}", r.path),
    };
    let identity: Identity = Credentials::new(ACCESS_KEY_ID, secret, token, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        &r.method,
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&r.body),
    )
    .map_err(|e| e.to_string())?;
    let (_, expected) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    if expected == signature {
        Ok(())
    } else {
        Err("signature mismatch".into())
    }
}

/// The Bedrock runtime mock. `secret` is the secret key it checks signatures with.
pub fn bedrock(secret: &'static str, counters: Arc<Counters>) -> Handler {
    Arc::new(move |r: &Recorded| {
        match r.header("authorization") {
            Some(a) if a.starts_with("Bearer ") => {
                if a != format!("Bearer {API_KEY}") {
                    counters.refused.fetch_add(1, Ordering::SeqCst);
                    return aws_error(
                        403,
                        "UnrecognizedClientException",
                        "The security token included in the request is invalid.",
                    );
                }
            }
            Some(_) => {
                if let Err(why) = verify_sigv4(r, secret) {
                    counters.refused.fetch_add(1, Ordering::SeqCst);
                    eprintln!("mock bedrock refused a signature: {why}");
                    return aws_error(403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.");
                }
            }
            None => {
                return aws_error(
                    403,
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                );
            }
        }
        if r.method == "GET" && r.path == "/async-invoke" {
            counters.probes.fetch_add(1, Ordering::SeqCst);
            return json_response(200, json!({"asyncInvokeSummaries": []}));
        }
        let Some(rest) = r.path.strip_prefix("/model/") else {
            return aws_error(404, "UnknownOperationException", "unknown operation");
        };
        let Some((raw_id, action)) = rest.split_once('/') else {
            return aws_error(404, "UnknownOperationException", "unknown operation");
        };
        if raw_id.contains(':') {
            return validation("the model id must be percent-encoded in the path");
        }
        let model = percent_encoding::percent_decode_str(raw_id)
            .decode_utf8_lossy()
            .into_owned();
        if model == ECHO_TOKEN_MODEL {
            let token = r.header("x-amz-security-token").unwrap_or_default();
            return validation(format!(
                "the session token {token} is not valid for this model"
            ));
        }
        if model == STREAM_THROTTLED_MODEL && action == "converse-stream" {
            return binary(frame(
                &[
                    (":exception-type", "throttlingException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                &json!({"message": "Too many requests, please wait before trying again."}),
            ));
        }
        if let Some((_, status, kind, msg)) = ERROR_MODELS.iter().find(|(m, ..)| *m == model) {
            return aws_error(*status, kind, msg);
        }
        if r.header("content-type") != Some("application/json") {
            return validation("content-type must be application/json");
        }
        let body = r.json();
        match action {
            "converse" => match converse(&body) {
                Ok(answer) => json_response(200, answer),
                Err(resp) => resp,
            },
            "converse-stream" => match converse(&body) {
                Ok(answer) => event_stream(&answer, user_text(&body).contains(FAIL_MID_STREAM)),
                Err(resp) => resp,
            },
            "invoke" => invoke(&model, &body),
            _ => aws_error(404, "UnknownOperationException", "unknown operation"),
        }
    })
}

fn user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default()
}

/// Validates a Converse body and makes its answer (a Converse response).
fn converse(body: &Value) -> Result<Value, Response> {
    let allowed = [
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "additionalModelRequestFields",
    ];
    for k in body
        .as_object()
        .ok_or_else(|| validation("body must be an object"))?
        .keys()
    {
        if !allowed.contains(&k.as_str()) {
            return Err(validation(format!("extraneous key [{k}] is not permitted")));
        }
    }
    let messages = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| validation("messages must not be empty"))?;
    let mut expect = "user";
    let mut tool_uses: Vec<String> = Vec::new();
    let mut has_tool_blocks = false;
    let mut images = 0;
    let mut last_results: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != expect {
            return Err(validation(format!(
                "messages[{i}]: roles must alternate, starting with user"
            )));
        }
        expect = if role == "user" { "assistant" } else { "user" };
        let content = m["content"]
            .as_array()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| validation(format!("messages[{i}].content must not be empty")))?;
        last_results.clear();
        for b in content {
            let o = b
                .as_object()
                .ok_or_else(|| validation("content blocks are objects"))?;
            if o.len() != 1 {
                return Err(validation("a content block is a union: exactly one member"));
            }
            let (kind, v) = o.iter().next().unwrap();
            match kind.as_str() {
                "text" if v.as_str().is_some_and(|t| !t.is_empty()) => {}
                "image" if role == "user" => {
                    let fmt = v["format"].as_str().unwrap_or("");
                    if !["png", "jpeg", "gif", "webp"].contains(&fmt)
                        || !v["source"]["bytes"].is_string()
                    {
                        return Err(validation("bad image block"));
                    }
                    images += 1;
                }
                "cachePoint" if v == &json!({"type": "default"}) => {}
                "toolUse" if role == "assistant" => {
                    has_tool_blocks = true;
                    let id = v["toolUseId"]
                        .as_str()
                        .ok_or_else(|| validation("toolUseId"))?;
                    if !v["input"].is_object() || !v["name"].is_string() {
                        return Err(validation("toolUse needs a name and an object input"));
                    }
                    tool_uses.push(id.to_string());
                }
                "toolResult" if role == "user" => {
                    has_tool_blocks = true;
                    let id = v["toolUseId"].as_str().unwrap_or("");
                    if !tool_uses.iter().any(|u| u == id) {
                        return Err(validation(format!("toolResult {id} answers no toolUse")));
                    }
                    let text: String = v["content"]
                        .as_array()
                        .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
                        .unwrap_or_default();
                    last_results.push(text);
                }
                other => {
                    return Err(validation(format!(
                        "messages[{i}]: unexpected block {other} for {role}"
                    )))
                }
            }
        }
    }
    if expect != "assistant" {
        return Err(validation("the conversation must end with a user message"));
    }
    if has_tool_blocks && body.get("toolConfig").is_none() {
        return Err(validation("The toolConfig field must be defined when using toolUse and toolResult content blocks."));
    }
    if let Some(sys) = body.get("system") {
        if !sys.as_array().is_some_and(|s| {
            s.iter()
                .all(|b| b["text"].is_string() || b["cachePoint"].is_object())
        }) {
            return Err(validation("system must be text blocks"));
        }
    }
    let usage = json!({"inputTokens": 11, "outputTokens": 7, "totalTokens": 23, "cacheReadInputTokens": 3, "cacheWriteInputTokens": 2});
    let (content, stop) = if !last_results.is_empty() {
        (
            json!([{"text": format!("Tool said: {}", last_results.join(", "))}]),
            "end_turn",
        )
    } else if let Some(forced) = body["toolConfig"]["toolChoice"]["tool"]["name"].as_str() {
        (
            json!([{"toolUse": {"toolUseId": "tooluse_forced", "name": forced, "input": {"answer": "Hello from Bedrock"}}}]),
            "tool_use",
        )
    } else if body.get("toolConfig").is_some() {
        (
            json!([{"text": "Let me check."}, {"toolUse": {"toolUseId": "tooluse_mock1", "name": "get_weather", "input": {"city": "Paris"}}}]),
            "tool_use",
        )
    } else if images > 0 {
        (
            json!([{"text": format!("I see {images} images")}]),
            "end_turn",
        )
    } else {
        (json!([{"text": "Hello from Bedrock"}]), "end_turn")
    };
    Ok(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": {"latencyMs": 42}
    }))
}

fn frame(headers: &[(&str, &str)], payload: &Value) -> Vec<u8> {
    let mut m = Message::new(Bytes::from(payload.to_string()));
    for (k, v) in headers {
        m = m.add_header(Header::new(
            k.to_string(),
            HeaderValue::String(v.to_string().into()),
        ));
    }
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
    out
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &payload,
    )
}

/// A Converse answer as ConverseStream frames, sent 7 bytes at a time.
fn event_stream(answer: &Value, fail: bool) -> Response {
    let mut bytes = event(
        "messageStart",
        json!({"role": "assistant", "p": "abcdefgh"}),
    );
    let content = answer["output"]["message"]["content"].as_array().unwrap();
    for (i, b) in content.iter().enumerate() {
        if let Some(t) = b["text"].as_str() {
            for piece in t.split_inclusive(' ') {
                bytes.extend(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": i, "delta": {"text": piece}, "p": "ab"}),
                ));
                if fail {
                    bytes.extend(frame(
                        &[
                            (":exception-type", "throttlingException"),
                            (":content-type", "application/json"),
                            (":message-type", "exception"),
                        ],
                        &json!({"message": "Too many tokens, please wait before trying again."}),
                    ));
                    return binary(bytes);
                }
            }
        }
        if let Some(t) = b.get("toolUse") {
            bytes.extend(event("contentBlockStart", json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": t["toolUseId"], "name": t["name"]}}})));
            let input = t["input"].to_string();
            let (a, z) = input.split_at(input.len() / 2);
            for part in [a, z] {
                bytes.extend(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": part}}}),
                ));
            }
        }
        bytes.extend(event("contentBlockStop", json!({"contentBlockIndex": i})));
    }
    bytes.extend(event(
        "messageStop",
        json!({"stopReason": answer["stopReason"]}),
    ));
    bytes.extend(event(
        "metadata",
        json!({"usage": answer["usage"], "metrics": {"latencyMs": 42}}),
    ));
    binary(bytes)
}

fn binary(bytes: Vec<u8>) -> Response {
    let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut r = Response::new(Body::from_stream(futures::stream::iter(pieces)));
    r.headers_mut().insert(
        "content-type",
        "application/vnd.amazon.eventstream".parse().unwrap(),
    );
    r
}

/// InvokeModel for Titan and Cohere embedding models.
fn invoke(model: &str, body: &Value) -> Response {
    if model.starts_with("amazon.titan-embed") {
        let Some(text) = body["inputText"].as_str() else {
            return validation("inputText is required");
        };
        let dims = body["dimensions"].as_u64().unwrap_or(4) as usize;
        let v: Vec<f64> = (0..dims)
            .map(|i| (i as f64 + text.len() as f64) / 10.0)
            .collect();
        return json_response(
            200,
            json!({"embedding": v, "inputTextTokenCount": text.split_whitespace().count()}),
        );
    }
    if model.contains("cohere.embed") {
        let Some(texts) = body["texts"].as_array() else {
            return validation("texts is required");
        };
        if body["input_type"].as_str().is_none() {
            return validation("input_type is required");
        }
        let v: Vec<Vec<f64>> = texts
            .iter()
            .enumerate()
            .map(|(i, _)| vec![i as f64, 0.5])
            .collect();
        return json_response(
            200,
            json!({"embeddings": v, "id": "emb-1", "response_type": "embeddings_floats", "texts": texts}),
        );
    }
    validation(format!(
        "model {model} does not support InvokeModel in this mock"
    ))
}
