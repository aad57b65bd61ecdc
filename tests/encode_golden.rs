//! Request translation to Anthropic and Gemini, byte for byte: a broad corpus of OpenAI chat
//! requests (every translated field, every content part, tool calls and results, escapes,
//! duplicate keys, and the 400s) encoded through `Provider::chat_request`, compared with the
//! output recorded in `tests/golden/encode.json`.
//!
//! The recording was made by the JSON-tree encoders the typed ones replaced, so this test is
//! what shows the replacement changed nothing. Bodies are compared as JSON text with the
//! fields in their order, after one round through a JSON tree: JSON the upstream takes as is
//! (tool schemas, tool call arguments, `top_p`) is now forwarded as the client spelled it
//! (`1E3`, a key sent twice), where the tree wrote `1000.0` and the last value. To re-record
//! after an intended change:
//!
//!     GOLDEN_UPDATE=1 cargo test --test encode_golden
//!
//! and review the diff of `tests/golden/encode.json`.

use std::collections::HashMap;

use ai_gateway::api::ChatRequest;
use ai_gateway::config::{BaseUrl, Config};
use ai_gateway::providers::{self, CallInfo};
use serde_json::{json, Value};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/encode.json");

/// A request as raw text (so duplicate keys and escapes can be written as sent).
enum Req {
    Json(Value),
    Text(&'static str),
}

fn corpus() -> Vec<(&'static str, Req)> {
    use Req::{Json as J, Text as T};
    let user = |c: Value| json!({"role": "user", "content": c});
    let with = |extra: Value| {
        let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        J(b)
    };
    let tool = |name: &str, params: Value| json!({"type": "function", "function": {"name": name, "description": format!("{name} it"), "parameters": params}});
    let weather = json!({"type": "object", "properties": {"city": {"type": "string", "description": "the \"city\""}}, "required": ["city"]});
    let history = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": " {\"city\": \"Rome\", \"n\": [1, 2.5, -3e2, true, null]} "}},
            {"id": "call_3", "type": "function", "function": {"name": "noargs", "arguments": ""}},
            {"id": "call_4", "type": "function", "function": {"name": "noargs", "arguments": "   "}},
            {"id": "call_5", "type": "function", "function": {"name": "noargs"}},
            {"id": "call_6", "type": "function", "function": {"name": "objargs", "arguments": {"a": {"b": [1]}}}},
            {"id": "call_7", "type": "function", "function": {"name": "noargs", "arguments": null}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp\": 21, \"unit\": \"C\"}"},
        {"role": "tool", "tool_call_id": "call_3", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "tool", "tool_call_id": "call_4", "content": null},
        {"role": "tool", "tool_call_id": "call_5", "content": ""},
        {"role": "tool", "tool_call_id": "call_6", "content": "[1,2]"},
        {"role": "tool", "tool_call_id": "call_7"},
        {"role": "user", "content": "thanks"}
    ]);
    let tools = json!([
        tool("get_weather", weather.clone()),
        {"type": "function", "function": {"name": "noargs"}},
        {"function": {"name": "objargs", "parameters": {"properties": {"a": {"type": "object"}}}}},
        {"type": "function", "function": {"name": "nullparams", "description": null, "parameters": null}}
    ]);
    vec![
        ("plain text", J(json!({"model": "m", "messages": [user(json!("hello"))]}))),
        (
            "system, developer and cache_control",
            J(json!({"model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "use metric", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": ""}]},
                {"role": "system", "content": [{"type": "text", "text": "third", "cache_control": null}]},
                {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}
            ]})),
        ),
        (
            "multi-part content with images",
            J(json!({"model": "m", "messages": [user(json!([
                {"type": "text", "text": "what is this?"},
                {"type": "text", "text": ""},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}, "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "HTTP://EXAMPLE.COM/A.GIF#frag"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/noext"}},
                {"type": "image_url", "image_url": "https://example.com/direct.png"},
                {"type": "refusal", "refusal": "no"}
            ]))]})),
        ),
        (
            "files and audio",
            J(json!({"model": "m", "messages": [user(json!([
                {"type": "text", "text": "read"},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
            ]))]})),
        ),
        (
            "non-PDF file",
            J(json!({"model": "m", "messages": [user(json!([
                {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}}
            ]))]})),
        ),
        (
            "audio",
            J(json!({"model": "m", "messages": [user(json!([
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}
            ]))]})),
        ),
        (
            "tool history, every argument form",
            J(json!({"model": "m", "messages": history.clone(), "tools": tools.clone()})),
        ),
        (
            "tool history, no parallel calls",
            J(json!({"model": "m", "messages": history.clone(), "tools": tools.clone(), "parallel_tool_calls": false})),
        ),
        ("tool_choice auto", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": tools.clone(), "tool_choice": "auto"}))),
        ("tool_choice none", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": tools.clone(), "tool_choice": "none", "parallel_tool_calls": false}))),
        ("tool_choice required", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": tools.clone(), "tool_choice": "required"}))),
        ("tool_choice required, single", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": tools.clone(), "tool_choice": "required", "parallel_tool_calls": false}))),
        ("tool_choice named", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": tools.clone(), "tool_choice": {"type": "function", "function": {"name": "noargs"}}}))),
        ("tool_choice null", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": tools.clone(), "tool_choice": null, "parallel_tool_calls": true}))),
        ("tool_choice without tools", J(json!({"model": "m", "messages": [user(json!("hi"))], "tool_choice": "auto"}))),
        ("tools empty", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": [], "tool_choice": "none"}))),
        ("tools null", J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": null}))),
        (
            "tool schema with $ref and nullable (gemini reduction)",
            J(json!({"model": "m", "messages": [user(json!("hi"))], "tools": [tool("f", json!({
                "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
                "properties": {"t": {"type": ["number", "null"]}, "unit": {"$ref": "#/$defs/Unit", "description": "u"},
                    "any": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "k": {"const": "x"},
                    "list": {"type": "array", "items": {"type": "string", "format": "date-time"}}},
                "required": ["t"], "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}}}))]})),
        ),
        ("response_format text", with(json!({"response_format": {"type": "text"}}))),
        ("response_format json_object", with(json!({"response_format": {"type": "json_object"}}))),
        ("response_format null", with(json!({"response_format": null}))),
        (
            "response_format json_schema",
            with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "person", "description": "a person", "strict": true,
                "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false}}}})),
        ),
        (
            "response_format json_schema without name or schema",
            with(json!({"response_format": {"type": "json_schema", "json_schema": {}}})),
        ),
        (
            "response_format json_schema, schema without type",
            with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {"a": {"type": "integer"}}}}}})),
        ),
        (
            "response_format json_schema, array root",
            with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}})),
        ),
        ("response_format bad type", with(json!({"response_format": {"type": "yaml"}}))),
        ("response_format json_schema not an object", with(json!({"response_format": {"type": "json_schema", "json_schema": "x"}}))),
        ("response_format with tools", with(json!({"response_format": {"type": "json_object"}, "tools": [tool("f", json!({"type": "object"}))]}))),
        ("stop string", with(json!({"stop": "END"}))),
        ("stop list with blanks", with(json!({"stop": ["END", "  ", "", "\n\n", "STOP"]}))),
        ("stop only blanks", with(json!({"stop": [" "]}))),
        ("stop null", with(json!({"stop": null}))),
        ("temperature 0", with(json!({"temperature": 0}))),
        ("temperature 0.7", with(json!({"temperature": 0.7}))),
        ("temperature 1.7", with(json!({"temperature": 1.7}))),
        ("temperature 2", with(json!({"temperature": 2}))),
        ("temperature null", with(json!({"temperature": null}))),
        ("temperature 3", with(json!({"temperature": 3}))),
        ("temperature negative", with(json!({"temperature": -0.1}))),
        ("max_tokens", with(json!({"max_tokens": 77}))),
        ("max_completion_tokens wins", with(json!({"max_tokens": 5, "max_completion_tokens": 100}))),
        ("max_completion_tokens null", with(json!({"max_tokens": 5, "max_completion_tokens": null}))),
        ("max_tokens 0", with(json!({"max_tokens": 0}))),
        ("max_tokens negative", with(json!({"max_tokens": -1}))),
        ("max_completion_tokens 0", with(json!({"max_completion_tokens": 0, "max_tokens": 9}))),
        (
            "sampling fields",
            with(json!({"top_p": 0.9, "top_k": 40, "seed": 7, "presence_penalty": 0, "frequency_penalty": 0.0, "n": 1})),
        ),
        ("penalties", with(json!({"presence_penalty": 0.5, "frequency_penalty": -0.25}))),
        ("top_k odd value", with(json!({"top_k": "forty"}))),
        ("n 2", with(json!({"n": 2}))),
        ("n 0", with(json!({"n": 0}))),
        ("n 200", with(json!({"n": 200}))),
        ("user", with(json!({"user": "u-42"}))),
        ("user not a string", with(json!({"user": 42}))),
        ("stream", with(json!({"stream": true, "stream_options": {"include_usage": true}}))),
        ("stream false", with(json!({"stream": false}))),
        (
            "harmless fields",
            with(json!({"store": true, "metadata": {"a": "b"}, "service_tier": "auto", "logprobs": false, "top_logprobs": 0,
                "logit_bias": {}, "modalities": ["text"], "prompt_cache_key": "k", "safety_identifier": "s", "prediction": {"type": "content", "content": "x"}})),
        ),
        ("logprobs", with(json!({"logprobs": true}))),
        ("top_logprobs", with(json!({"top_logprobs": 2}))),
        ("logit_bias", with(json!({"logit_bias": {"50256": -100}}))),
        ("modalities audio", with(json!({"modalities": ["text", "audio"]}))),
        ("audio", with(json!({"audio": {"voice": "x"}}))),
        ("unknown field", with(json!({"x_unknown": 1}))),
        ("unknown null field", with(json!({"x_unknown": null}))),
        ("reasoning_effort none", with(json!({"reasoning_effort": "none"}))),
        ("reasoning_effort minimal", with(json!({"reasoning_effort": "minimal"}))),
        ("reasoning_effort medium", with(json!({"reasoning_effort": "medium"}))),
        ("reasoning_effort high", with(json!({"reasoning_effort": "high"}))),
        ("reasoning_effort bad", with(json!({"reasoning_effort": "extreme"}))),
        ("reasoning_effort number", with(json!({"reasoning_effort": 3}))),
        (
            "prefill with trailing whitespace",
            J(json!({"model": "m", "messages": [user(json!("hi")), {"role": "assistant", "content": "Sure:  \n"}]})),
        ),
        (
            "prefill of parts, last one blank",
            J(json!({"model": "m", "messages": [user(json!("hi")), {"role": "assistant", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": " \t"}]}]})),
        ),
        (
            "prefill that is only whitespace",
            J(json!({"model": "m", "messages": [user(json!("hi")), {"role": "assistant", "content": "   "}]})),
        ),
        (
            "last assistant ends with a tool call",
            J(json!({"model": "m", "messages": [user(json!("hi")), {"role": "assistant", "content": "ok ", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]})),
        ),
        (
            "merging and tool results first",
            J(json!({"model": "m", "messages": [
                user(json!("a")), user(json!([{"type": "text", "text": "b"}])),
                {"role": "assistant", "content": "x", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "assistant", "content": "y"},
                user(json!("before")),
                {"role": "tool", "tool_call_id": "c1", "content": "r"},
                user(json!("after")),
                {"role": "assistant", "content": null},
                {"role": "user", "content": null},
                {"role": "user", "content": ""},
                user(json!("end"))
            ]})),
        ),
        (
            "escapes and unicode",
            T(r#"{"model":"m","messages":[{"role":"system","content":"line\none \"quoted\" \u00e9\ud83d\ude00 tab\t"},{"role":"user","content":[{"type":"text","text":"caf\u00e9 \\ back\/slash"},{"type":"image_url","image_url":{"url":"data:image\/png;base64,AA\/BB+="}},{"type":"image_url","image_url":{"url":"https:\/\/example.com\/a\u002epng"}}]},{"role":"assistant","content":"","tool_calls":[{"id":"c\u0031","type":"function","function":{"name":"f\u006f","arguments":"{\"q\":\"\\u00e9\\n\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"r\u00e9sultat \"ok\""}],"user":"u\u00e9","stop":["\u0045ND"],"tools":[{"type":"function","function":{"name":"fo","description":"d\u00e9sc","parameters":{"type":"object","properties":{"q":{"type":"string","description":"\u00e9"}}}}}]}"#),
        ),
        (
            "duplicate keys keep the last value",
            T(r#"{"model":"m","temperature":2,"temperature":0.5,"messages":[{"role":"assistant","role":"user","content":"first","content":[{"type":"image_url","type":"text","text":"one","text":"two"}]},{"role":"assistant","content":"","tool_calls":[{"id":"x","id":"c1","function":{"name":"g","name":"f","arguments":"{\"a\":1,\"a\":2}"}}]},{"role":"tool","tool_call_id":"nope","tool_call_id":"c1","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"string","properties":{},"type":"object"}}}]}"#),
        ),
        (
            "whitespace between tokens",
            T("{ \"model\" : \"m\" ,\n \"messages\" : [ { \"role\" : \"user\" , \"content\" : [ { \"type\" : \"text\" , \"text\" : \"hi\" } ] } ] , \"temperature\" : 0.5 , \"stop\" : [ \"END\" ] , \"tools\" : [ { \"type\" : \"function\" , \"function\" : { \"name\" : \"f\" , \"parameters\" : { \"type\" : \"object\" , \"properties\" : { } } } } ] , \"user\" : \"u\" }"),
        ),
        (
            "numbers in passthrough fields",
            T(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":1,"top_k":40,"seed":12345678901,"temperature":1e-1,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"n":{"type":"number","minimum":-1.5,"maximum":1E3}}}}}]}"#),
        ),
        // The 400s.
        ("only a system message", J(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}))),
        ("only empty messages", J(json!({"model": "m", "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": null}]}))),
        ("unanswered tool result", J(json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}))),
        ("tool result without id", J(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}))),
        ("tool_call_id not a string", J(json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": 5, "content": "x"}]}))),
        ("bad arguments", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]}))),
        ("arguments not an object", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}))),
        ("arguments a number", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}]}))),
        ("tool call without name", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]}))),
        ("tool call without id", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "f"}}]}]}))),
        ("tool call without function", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]}))),
        ("tool_calls not an array", J(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": {"id": "c"}}]}))),
        ("tool_calls null", J(json!({"model": "m", "messages": [user(json!("hi")), {"role": "assistant", "content": "x", "tool_calls": null}]}))),
        ("ftp image", J(json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]))]}))),
        ("bad data url", J(json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}}]))]}))),
        ("image without url", J(json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"detail": "low"}}]))]}))),
        ("file by id", J(json!({"model": "m", "messages": [user(json!([{"type": "file", "file": {"file_id": "file-1"}}]))]}))),
        ("file not a data url", J(json!({"model": "m", "messages": [user(json!([{"type": "file", "file": {"file_data": "JVBERi0="}}]))]}))),
        ("audio without format", J(json!({"model": "m", "messages": [user(json!([{"type": "input_audio", "input_audio": {"data": "AA"}}]))]}))),
        ("video part", J(json!({"model": "m", "messages": [user(json!([{"type": "video", "video": {}}]))]}))),
        ("part without type", J(json!({"model": "m", "messages": [user(json!([{"text": "x"}]))]}))),
        ("part not an object", J(json!({"model": "m", "messages": [user(json!(["x"]))]}))),
        ("text part not a string", J(json!({"model": "m", "messages": [user(json!([{"type": "text", "text": 5}]))]}))),
        ("function role", J(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}))),
        ("system image", J(json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]}))),
        ("tool of another type", with(json!({"tools": [{"type": "code_interpreter"}]}))),
        ("tool without function", with(json!({"tools": [{"type": "function"}]}))),
        ("tool not an object", with(json!({"tools": ["f"]}))),
        ("tool without name", with(json!({"tools": [{"type": "function", "function": {"name": ""}}]}))),
        ("tool parameters not an object", with(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}))),
        ("reserved tool name", with(json!({"tools": [{"type": "function", "function": {"name": "gateway_json_response"}}]}))),
        ("tool_choice bogus", with(json!({"tools": [tool("f", json!({"type": "object"}))], "tool_choice": "always"}))),
        ("tool_choice unknown function", with(json!({"tools": [tool("f", json!({"type": "object"}))], "tool_choice": {"type": "function", "function": {"name": "g"}}}))),
        ("tool_choice without name", with(json!({"tools": [tool("f", json!({"type": "object"}))], "tool_choice": {"type": "function"}}))),
        ("tool_choice number", with(json!({"tools": [tool("f", json!({"type": "object"}))], "tool_choice": 1}))),
        ("tool_choice required without tools", with(json!({"tool_choice": "required"}))),
        ("several errors: field first", with(json!({"x_unknown": 1, "n": 5, "temperature": 9, "messages": [{"role": "tool", "tool_call_id": "x"}]}))),
        ("several errors: messages before max_tokens", with(json!({"max_tokens": 0, "temperature": 9, "messages": [{"role": "tool", "tool_call_id": "x"}]}))),
        ("several errors: max_tokens before temperature", with(json!({"max_tokens": 0, "temperature": 9, "tools": [{"type": "x"}]}))),
        ("several errors: temperature before tools", with(json!({"temperature": 9, "tools": [{"type": "x"}], "response_format": {"type": "x"}}))),
        ("several errors: n and tools", with(json!({"n": 0, "tools": [{"type": "x"}], "response_format": {"type": "x"}}))),
        ("several errors: tools before response_format", with(json!({"tools": [{"type": "x"}], "response_format": {"type": "x"}}))),
    ]
}

fn config() -> Config {
    let env: HashMap<String, String> = [
        ("OPENAI_API_KEY", "sk-test"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("GEMINI_API_KEY", "g-test"),
        ("GATEWAY_ANTHROPIC_MAX_TOKENS", "1234"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Config::from_map(&env).unwrap()
}

/// What each provider makes of every request of the corpus.
fn encode_all() -> Value {
    let config = config();
    let backend = BaseUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: 9,
        path: String::new(),
    };
    let mut out = Vec::new();
    for (name, req) in corpus() {
        let text = match req {
            Req::Json(v) => v.to_string(),
            Req::Text(t) => t.to_string(),
        };
        let mut case = json!({"name": name, "request": text});
        for provider in ["anthropic", "google"] {
            let p = providers::build(&config.providers[provider], &config).unwrap();
            let result = ChatRequest::parse(text.as_bytes()).and_then(|req| {
                let call = CallInfo {
                    client_model: format!("{provider}/m"),
                    upstream_model: "claude-or-gemini-1".into(),
                    stream: req.stream,
                    include_usage: req.include_usage,
                    parallel_tool_calls: req.parallel_tool_calls(),
                    passthrough: false,
                    client_format: "openai",
                    client_headers: Vec::new(),
                };
                p.chat_request(&req, &call, &backend)
            });
            case[provider] = match result {
                Ok(r) => json!({
                    "path": r.path,
                    "body": String::from_utf8(r.body.to_vec()).unwrap(),
                }),
                Err(e) => json!({"error": {
                    "status": e.status, "message": e.message, "param": e.param, "code": e.code,
                }}),
            };
        }
        out.push(case);
    }
    Value::Array(out)
}

/// A body as JSON text in its field order, numbers written one way, a key sent twice once.
fn canonical(outcome: &Value) -> Value {
    let mut o = outcome.clone();
    if let Some(body) = o.get("body").and_then(Value::as_str) {
        // A tree keeps the field order (serde_json's `preserve_order`).
        let tree: Value = serde_json::from_str(body).unwrap();
        o["body"] = Value::String(tree.to_string());
    }
    o
}

#[test]
fn translation_matches_the_recording() {
    let now = encode_all();
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        let text = serde_json::to_string_pretty(&now).unwrap() + "\n";
        std::fs::create_dir_all(std::path::Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, text).unwrap();
        return;
    }
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let (now, recorded) = (now.as_array().unwrap(), recorded.as_array().unwrap());
    assert_eq!(now.len(), recorded.len(), "corpus size");
    let mut bad = Vec::new();
    for (n, r) in now.iter().zip(recorded) {
        for p in ["anthropic", "google"] {
            if canonical(&n[p]) != canonical(&r[p]) || n["request"] != r["request"] {
                bad.push(format!(
                    "{} / {p}:\n  now:      {}\n  recorded: {}",
                    n["name"], n[p], r[p]
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // The corpus exercises both outcomes for both providers.
    for p in ["anthropic", "google"] {
        let errors = now.iter().filter(|c| c[p].get("error").is_some()).count();
        assert!(
            errors > 20 && now.len() - errors > 40,
            "{p}: {errors} errors"
        );
    }
}
