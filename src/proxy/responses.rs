//! What `/v1/responses` adds to the model-answering lifecycle (`chat.rs`): stored responses.
//!
//! - A response made with `store` not `false` is kept in the state backend (`crate::state`)
//!   under its id for `GATEWAY_RESPONSES_TTL`, scoped to the gateway key that made it (its
//!   name; without keys configured, one anonymous scope). For a translated provider the
//!   record holds the conversation: the request's input items (earlier turns included) and
//!   the response object. For a native upstream (one that speaks Responses itself and keeps
//!   its own state) it holds only which provider made it.
//! - `previous_response_id`: for a translated record, the stored input and output items are
//!   put before the request's input (and the field removed), so any provider continues it; for
//!   a native one, the request goes as sent, to that provider only.
//! - `GET`/`DELETE /v1/responses/{id}`: the stored response object, or its deletion
//!   (`{"id","object":"response","deleted":true}`); for a native one, forwarded to the provider
//!   that made it. Another key's id, an unknown or an expired one: 404 in OpenAI's shape (as
//!   a `previous_response_id` too: 404, code `previous_response_not_found`, naming the field;
//!   OpenAI itself answers that case with a 400, issue 16 asks for 404 for every unknown id).
//! - A stored response is written before the answer's last bytes go out, so the client's next
//!   request finds it; state that cannot be read (Redis unreachable) is a 503, never a hang
//!   (every state call is bounded).

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::chat::{self, Options};
use super::{read_body, respond, Ctx, Gateway, Session};
use crate::auth::ANONYMOUS;
use crate::dialects::openai_responses;
use crate::dialects::responses_head;
use crate::dialects::Dialect;
use crate::error::GatewayError;
use crate::sse::SseFramer;

/// The state key of a stored response: its id within its key's scope, so one key's response
/// can never replace another's (an upstream may reuse answer ids).
fn state_key(scope: &str, id: &str) -> String {
    format!("resp:{}:{scope}:{id}", scope.len())
}

/// One stored response, as kept in the state backend (written by [`record_text`]).
#[derive(Deserialize)]
struct Record {
    /// The name of the gateway key that made it.
    scope: String,
    provider: String,
    /// The provider speaks Responses and keeps the response itself.
    native: bool,
    /// Translated only: the request's input items, earlier turns first.
    #[serde(default)]
    input: Option<Value>,
    /// Translated only: the response object as the client got it.
    #[serde(default)]
    response: Option<Value>,
}

/// A record as JSON text: `input` and `response` are JSON text already (the request's and
/// the answer's own bytes), copied as they are.
fn record_text(scope: &str, provider: &str, conversation: Option<(&[u8], &[u8])>) -> Option<Bytes> {
    let mut out = Vec::with_capacity(64 + conversation.map_or(0, |(i, r)| i.len() + r.len()));
    out.extend_from_slice(b"{\"scope\":");
    serde_json::to_writer(&mut out, scope).ok()?;
    out.extend_from_slice(b",\"provider\":");
    serde_json::to_writer(&mut out, provider).ok()?;
    match conversation {
        None => out.extend_from_slice(b",\"native\":true}"),
        Some((input, response)) => {
            out.extend_from_slice(b",\"native\":false,\"input\":");
            out.extend_from_slice(input);
            out.extend_from_slice(b",\"response\":");
            out.extend_from_slice(response);
            out.push(b'}');
        }
    }
    Some(Bytes::from(out))
}

/// What one Responses request needs to remember until its answer is complete.
pub struct Turn {
    scope: String,
    /// The body as sent on (earlier turns spliced in), and where its `input` is.
    body: Bytes,
    input_span: (usize, usize),
    /// The provider of the attempt under way, and whether it passes through.
    provider: String,
    native: bool,
    /// A streamed answer's events, read as they go to the client.
    framer: Option<SseFramer>,
    /// A native stream's response id (`response.created`).
    id: Option<String>,
    /// A translated stream's final event (`response.completed` / `.incomplete`).
    last: Option<String>,
    /// Kept already, or nothing to keep (`store: false`).
    done: bool,
}

/// The scope of the request's gateway key.
fn scope(ctx: &Ctx) -> String {
    ctx.key_name
        .clone()
        .unwrap_or_else(|| ANONYMOUS.to_string())
}

/// `POST /v1/responses`.
pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    dialect: &'static dyn Dialect,
) -> Result<(), GatewayError> {
    let mut body = read_body(session, gw.config.max_body_bytes, gw.config.body_timeout).await?;
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.prompt(&body);
    }
    let mut head = responses_head::read(&body);
    let mut options = Options::default();
    if let Some(mut h) = head.clone() {
        let scope = scope(ctx);
        if let Some(pid) = &h.previous_response_id {
            let record = load(gw, &scope, pid)
                .await?
                .ok_or_else(|| previous_not_found(pid))?;
            if record.native {
                let why = GatewayError::bad_request(
                    "previous_response_id",
                    format!(
                        "response '{pid}' was made by provider '{}': continue it with one of its models",
                        record.provider
                    ),
                );
                options.pin = Some((record.provider, why));
            } else {
                body = splice(&body, &record)?;
                head = responses_head::read(&body);
                if let Some(spliced) = &head {
                    h.input_span = spliced.input_span;
                }
            }
        }
        options.bypass_cache = h.store || h.previous_response_id.is_some();
        ctx.responses = Some(Box::new(Turn {
            scope,
            body: body.clone(),
            input_span: h.input_span,
            provider: String::new(),
            native: false,
            framer: h.stream.then(SseFramer::new),
            id: None,
            last: None,
            done: !h.store,
        }));
    }
    let spans = gw.cache.enabled() && !options.bypass_cache;
    let req = openai_responses::parse_with_head(&body, head, spans)?;
    chat::run(gw, session, ctx, dialect, req, &options).await
}

/// An unknown, expired or another key's `previous_response_id`: 404 naming the field, with
/// OpenAI's code for it (OpenAI answers 400; issue 16 asks for 404 for every unknown id).
fn previous_not_found(id: &str) -> GatewayError {
    let mut e = GatewayError::new(
        404,
        "invalid_request_error",
        Some("previous_response_not_found"),
        format!("Previous response with id '{id}' not found."),
    );
    e.param = Some("previous_response_id".into());
    e
}

fn response_not_found(id: &str) -> GatewayError {
    GatewayError::not_found(format!("Response with id '{id}' not found."))
}

/// The record of `id`, if it exists and belongs to `scope` (another key's is not found).
async fn load(gw: &Gateway, scope: &str, id: &str) -> Result<Option<Record>, GatewayError> {
    let Some(bytes) = gw
        .state
        .get(&state_key(scope, id))
        .await
        .map_err(crate::state::StateError::into_gateway)?
    else {
        return Ok(None);
    };
    let record: Record = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("responses: unreadable stored record for {id}: {e}");
            return Ok(None);
        }
    };
    Ok((record.scope == scope).then_some(record))
}

/// A request's `input` as a list of items (a string is one user message).
fn input_items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(s)) => {
            vec![serde_json::json!({"type": "message", "role": "user", "content": s})]
        }
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// The body with the stored conversation before its input, and without
/// `previous_response_id`.
fn splice(body: &[u8], record: &Record) -> Result<Bytes, GatewayError> {
    let mut top: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_request("", format!("the request body is not a JSON object: {e}"))
    })?;
    let mut items = input_items(record.input.as_ref());
    let output = record
        .response
        .as_ref()
        .and_then(|r| r.get("output"))
        .and_then(Value::as_array);
    for item in output.into_iter().flatten() {
        let mut item = item.clone();
        // The gateway's item ids mean nothing to an upstream.
        if let Some(o) = item.as_object_mut() {
            o.remove("id");
        }
        items.push(item);
    }
    items.extend(input_items(top.get("input")));
    top.insert("input".into(), Value::Array(items));
    top.shift_remove("previous_response_id");
    serde_json::to_vec(&top)
        .map(Bytes::from)
        .map_err(|e| GatewayError::internal(format!("encoding the request: {e}")))
}

/// An attempt is starting on `provider` (`native`: the answer passes through).
pub fn attempting(ctx: &mut Ctx, provider: &str, native: bool) {
    if let Some(t) = ctx.responses.as_mut() {
        t.provider.clear();
        t.provider.push_str(provider);
        t.native = native;
        t.id = None;
        t.last = None;
        if t.framer.is_some() {
            t.framer = Some(SseFramer::new());
        }
    }
}

/// Whether [`tee`] wants a stream's bytes.
pub fn wants_tee(ctx: &Ctx) -> bool {
    ctx.responses.as_ref().is_some_and(|t| !t.done)
}

/// Bytes of a stream as they go to the client: a native stream's id and a translated
/// stream's final event are noted.
pub fn tee(ctx: &mut Ctx, bytes: &[u8]) {
    let Some(t) = ctx.responses.as_mut().filter(|t| !t.done) else {
        return;
    };
    let Some(framer) = t.framer.as_mut() else {
        return;
    };
    // A native stream's id is in its first event: nothing after it is read.
    if t.native && t.id.is_some() {
        return;
    }
    framer.push(bytes);
    while let Some(ev) = framer.next_event() {
        // A host that leaves out `event:` lines still names the event in its `type`.
        let kind = match ev.event.as_deref() {
            Some(k) => Some(k.to_string()),
            None => event_type(&ev.data),
        };
        match kind.as_deref() {
            Some("response.created") if t.native => {
                #[derive(Deserialize)]
                struct Created {
                    response: Id,
                }
                #[derive(Deserialize)]
                struct Id {
                    id: String,
                }
                t.id = serde_json::from_str::<Created>(&ev.data)
                    .ok()
                    .map(|c| c.response.id);
                if t.id.is_some() {
                    t.framer = Some(SseFramer::new());
                    return;
                }
            }
            Some("response.completed" | "response.incomplete") if !t.native => {
                t.last = Some(ev.data);
            }
            _ => {}
        }
    }
}

/// The `type` of an event's data.
fn event_type(data: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Kind>(data).ok().map(|k| k.kind)
}

/// The answer is complete (`body`: a plain answer; `None`: the stream [`tee`] read): keeps it
/// when asked to. A failure to keep it is logged; the client still gets its answer.
pub async fn complete(gw: &Gateway, ctx: &mut Ctx, body: Option<&[u8]>) {
    let Some(t) = ctx.responses.as_mut().filter(|t| !t.done) else {
        return;
    };
    t.done = true;
    let (id, record) = if t.native {
        let id = match body {
            Some(b) => crate::providers::responses_passthrough::response_id(b),
            None => t.id.take(),
        };
        (id, record_text(&t.scope, &t.provider, None))
    } else {
        #[derive(Deserialize)]
        struct Event<'a> {
            #[serde(borrow)]
            response: &'a serde_json::value::RawValue,
        }
        #[derive(Deserialize)]
        struct Id {
            #[serde(default)]
            id: Option<String>,
        }
        let last = t.last.take();
        // The response object as JSON text: the plain answer, or the final event's.
        let response: Option<&str> = match (body, &last) {
            (Some(b), _) => std::str::from_utf8(b).ok(),
            (None, Some(data)) => serde_json::from_str::<Event>(data)
                .ok()
                .map(|e| e.response.get()),
            (None, None) => None,
        };
        let Some(response) = response else {
            return;
        };
        let id = crate::providers::responses_passthrough::response_id(response.as_bytes())
            .or_else(|| serde_json::from_str::<Id>(response).ok().and_then(|i| i.id));
        let input = t.body.get(t.input_span.0..t.input_span.1).unwrap_or(b"[]");
        let text = record_text(&t.scope, &t.provider, Some((input, response.as_bytes())));
        (id, text)
    };
    let (Some(id), Some(value)) = (id, record) else {
        return;
    };
    let ttl = gw.config.state.responses_ttl;
    if let Err(e) = gw.state.put(&state_key(&t.scope, &id), value, ttl).await {
        log::warn!("responses: response {id} was not stored: {}", e.0);
    }
}

/// `GET` or `DELETE /v1/responses/{id}` (`rest`: the id and any query string).
pub async fn by_id(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    rest: &str,
) -> Result<(), GatewayError> {
    let method = session.req_header().method.clone();
    let id = rest.split('?').next().unwrap_or(rest).to_string();
    let scope = scope(ctx);
    let record = load(gw, &scope, &id)
        .await?
        .ok_or_else(|| response_not_found(&id))?;
    ctx.provider = Some(record.provider.clone());
    let delete = method == Method::DELETE;
    if record.native {
        return forward(gw, session, ctx, &record.provider, delete, rest, &id).await;
    }
    if delete {
        gw.state
            .delete(&state_key(&scope, &id))
            .await
            .map_err(crate::state::StateError::into_gateway)?;
        let body = serde_json::json!({"id": id, "object": "response", "deleted": true});
        respond(
            session,
            ctx,
            200,
            "application/json",
            &[],
            Bytes::from(body.to_string()),
        )
        .await;
        return Ok(());
    }
    let body = record
        .response
        .map(|r| Bytes::from(r.to_string()))
        .ok_or_else(|| response_not_found(&id))?;
    respond(session, ctx, 200, "application/json", &[], body).await;
    Ok(())
}

/// A native response's `GET`/`DELETE`, sent to the provider that made it; its answer goes
/// back as it is. A successful delete also forgets the id.
async fn forward(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    provider: &str,
    delete: bool,
    rest: &str,
    id: &str,
) -> Result<(), GatewayError> {
    let Some(p) = gw.router.get(provider) else {
        return Err(response_not_found(id));
    };
    let cfg = p.config();
    let backend = cfg
        .backends
        .first()
        .ok_or_else(|| GatewayError::internal(format!("provider {provider} has no backend")))?;
    let method = if delete { "DELETE" } else { "GET" };
    let req = p
        .stored_response_request(method, rest, backend)
        .ok_or_else(|| response_not_found(id))?;
    let mut resp = gw
        .upstreams
        .send(backend, &req)
        .await
        .map_err(|e| e.into_gateway(provider))?;
    let status = resp.status();
    let body = match resp.read_all(chat::MAX_RESPONSE_BODY).await {
        Ok(b) => b,
        Err(e) => {
            resp.abort().await;
            return Err(e.into_gateway(provider));
        }
    };
    resp.release().await;
    if delete && (200..300).contains(&status) {
        if let Err(e) = gw.state.delete(&state_key(&scope(ctx), id)).await {
            log::warn!("responses: could not forget {id}: {}", e.0);
        }
    }
    if !(200..300).contains(&status) {
        let mut err = p.error(status, &body);
        err.upstream = true;
        return Err(err);
    }
    respond(session, ctx, status, "application/json", &[], body).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_puts_the_stored_turns_first() {
        let record = Record {
            scope: "k".into(),
            provider: "vllm".into(),
            native: false,
            input: Some(serde_json::json!("Hi, I am Ada")),
            response: Some(serde_json::json!({"id": "resp_1", "output": [
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Hello Ada", "annotations": []}]}
            ]})),
        };
        let body = br#"{"model":"m","previous_response_id":"resp_1","input":"What is my name?","store":true}"#;
        let out: Value = serde_json::from_slice(&splice(body, &record).unwrap()).unwrap();
        let input = out["input"].as_array().unwrap();
        assert_eq!(input.len(), 3);
        assert_eq!(input[0]["content"], "Hi, I am Ada");
        assert_eq!(input[1]["content"][0]["text"], "Hello Ada");
        assert!(input[1].get("id").is_none());
        assert_eq!(input[2]["content"], "What is my name?");
        assert!(out.get("previous_response_id").is_none());
        assert_eq!(out["model"], "m");
        // Field order is kept.
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["model", "input", "store"]);
    }

    #[test]
    fn events_without_names_are_read_by_type() {
        assert_eq!(
            event_type(r#"{"type":"response.created","response":{"id":"resp_1"}}"#).as_deref(),
            Some("response.created")
        );
        assert_eq!(event_type("[DONE]"), None);
    }

    #[test]
    fn record_text_is_a_record() {
        let t = record_text(
            "team \"a\"",
            "vllm",
            Some((b"\"hi\"", b"{\"id\":\"resp_1\"}")),
        )
        .unwrap();
        let r: Record = serde_json::from_slice(&t).unwrap();
        assert_eq!((r.scope.as_str(), r.native), ("team \"a\"", false));
        assert_eq!(r.input, Some(serde_json::json!("hi")));
        assert_eq!(r.response.unwrap()["id"], "resp_1");
        let r: Record = serde_json::from_slice(&record_text("k", "openai", None).unwrap()).unwrap();
        assert!(r.native && r.input.is_none());
    }
}
