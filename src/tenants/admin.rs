//! The admin API (on when `GATEWAY_ADMIN_KEY` is set), over plain data: a method, path, query,
//! `Authorization` header and body in; a status and a JSON body out. Served on the
//! `GATEWAY_METRICS_LISTEN` listener when it is set, else on the main one.
//!
//! ```sh
//! curl -X POST localhost:8080/admin/keys -H "Authorization: Bearer $GATEWAY_ADMIN_KEY" \
//!   -d '{"name":"team-b","budget":{"usd":5,"period":"day"},"models":["anthropic/*"],"rpm":60}'
//! curl localhost:8080/admin/keys/team-b -H "Authorization: Bearer $GATEWAY_ADMIN_KEY"
//! ```
//!
//! Every action is logged as `admin: <action> key=<name>`, never with a secret.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{
    day_name, parse_day, period_days, period_end, rfc3339, BudgetJson, Counters, KeyRecord, Tenants,
};
use crate::api::unix_now;
use crate::auth::{KeyEntry, Period};
use crate::config::auth::{budget_from_usd, MICRO};
use crate::error::GatewayError;

/// Longest key name (as in the keys file).
const MAX_NAME_LEN: usize = 64;
/// Most days one usage export covers.
const MAX_EXPORT_DAYS: i64 = 366;

/// The answer: status and JSON body.
pub type Reply = (u16, Bytes);

fn ok(status: u16, v: Value) -> Reply {
    (status, Bytes::from(v.to_string()))
}

fn err(e: GatewayError) -> Reply {
    (e.status, e.body())
}

fn bad(msg: impl Into<String>) -> Reply {
    err(GatewayError::bad_request("", msg))
}

fn not_found(name: &str) -> Reply {
    err(GatewayError::new(
        404,
        "invalid_request_error",
        Some("key_not_found"),
        format!("no key named {name:?}"),
    ))
}

fn read_only(name: &str) -> Reply {
    err(GatewayError::new(
        403,
        "invalid_request_error",
        Some("key_read_only"),
        format!(
            "key {name:?} comes from GATEWAY_API_KEYS or GATEWAY_API_KEYS_FILE: it is \
             configuration, change it there"
        ),
    ))
}

/// Whether a path is the admin API's.
pub fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Answers one admin request.
pub async fn handle(
    t: &Tenants,
    method: &str,
    path: &str,
    query: Option<&str>,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> Reply {
    if !t.is_admin(authorization) {
        log::warn!("admin: refused {method} {path}: missing or wrong admin key");
        return err(GatewayError::new(
            401,
            "invalid_request_error",
            Some("invalid_admin_key"),
            "the admin API needs 'Authorization: Bearer <GATEWAY_ADMIN_KEY>'",
        ));
    }
    let p = path.trim_end_matches('/');
    let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    let result = match (method, parts.as_slice()) {
        ("POST", ["admin", "keys"]) => create(t, body).await,
        ("GET", ["admin", "keys"]) => list(t).await,
        ("GET", ["admin", "keys", name]) => get(t, name).await,
        ("PATCH", ["admin", "keys", name]) => patch(t, name, body).await,
        ("DELETE", ["admin", "keys", name]) => revoke(t, name).await,
        ("POST", ["admin", "keys", name, "rotate"]) => rotate(t, name).await,
        ("GET", ["admin", "usage"]) => usage(t, query.unwrap_or("")).await,
        (_, ["admin", "keys"])
        | (_, ["admin", "keys", _])
        | (_, ["admin", "keys", _, "rotate"])
        | (_, ["admin", "usage"]) => Err(err(GatewayError::method_not_allowed(method, path))),
        _ => Err(err(GatewayError::not_found(format!(
            "no admin route for {method} {path} (/admin/keys, /admin/keys/{{name}}, \
             /admin/keys/{{name}}/rotate, /admin/usage)"
        )))),
    };
    result.unwrap_or_else(|e| e)
}

fn state_err(e: super::StateError) -> Reply {
    err(e.into_gateway())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn new_secret() -> String {
    format!("sk-gw-{}", crate::api::random_token(43))
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad("the body must be a JSON object")),
    }
}

/// Applies the settable fields of `m` to `rec` (`null` clears one).
fn apply(rec: &mut KeyRecord, m: &Map<String, Value>) -> Result<(), Reply> {
    for (k, v) in m {
        match k.as_str() {
            "name" => {}
            "budget" => {
                rec.budget = match v {
                    Value::Null => None,
                    Value::Object(b) => {
                        let usd = b.get("usd").and_then(Value::as_f64);
                        let period = b
                            .get("period")
                            .and_then(Value::as_str)
                            .and_then(Period::parse);
                        match (usd, period) {
                            (Some(u), Some(p)) => {
                                let b = budget_from_usd(u, p).ok_or_else(|| {
                                    bad("budget.usd must be a number >= 0")
                                })?;
                                Some(BudgetJson::of(&b))
                            }
                            _ => {
                                return Err(bad(
                                    "budget must be {\"usd\": N, \"period\": \"day\"|\"week\"|\"month\"|\"total\"}",
                                ))
                            }
                        }
                    }
                    _ => return Err(bad("budget must be an object or null")),
                }
            }
            "models" => {
                rec.models = match v {
                    Value::Null => None,
                    Value::Array(a) => {
                        let pats: Option<Vec<String>> =
                            a.iter().map(|p| p.as_str().map(str::to_string)).collect();
                        let pats = pats.ok_or_else(|| bad("models must be strings"))?;
                        if pats.is_empty() {
                            return Err(bad("models must name at least one model or pattern"));
                        }
                        crate::config::auth::parse_models(&pats.join("|")).map_err(bad)?;
                        Some(pats)
                    }
                    _ => return Err(bad("models must be an array of patterns or null")),
                }
            }
            "rpm" | "tpm" | "burst" => {
                let n = match v {
                    Value::Null => None,
                    Value::String(s) if s.eq_ignore_ascii_case("off") && k != "burst" => Some(0),
                    v => match v.as_u64() {
                        Some(n) if n >= 1 => Some(n),
                        _ => {
                            return Err(bad(format!(
                                "{k} must be a whole number >= 1, \"off\" or null"
                            )))
                        }
                    },
                };
                match k.as_str() {
                    "rpm" => rec.rpm = n,
                    "tpm" => rec.tpm = n,
                    _ => rec.burst = n,
                }
            }
            "expires_at" => {
                rec.expires_at = match v {
                    Value::Null => None,
                    v => Some(v.as_u64().ok_or_else(|| {
                        bad("expires_at must be unix seconds (a whole number) or null")
                    })?),
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown field {other:?} (name, budget, models, rpm, tpm, burst, expires_at)"
                )))
            }
        }
    }
    Ok(())
}

/// A record as the API shows it: settings only, never the secret or its hash.
fn settings(rec: &KeyRecord) -> Value {
    json!({
        "name": rec.name,
        "source": "admin",
        "read_only": false,
        "created_at": rec.created_at,
        "expires_at": rec.expires_at,
        "revoked_at": rec.revoked_at,
        "budget": rec.budget,
        "models": rec.models,
        "rpm": rec.rpm.map(|n| if n == 0 { json!("off") } else { json!(n) }),
        "tpm": rec.tpm.map(|n| if n == 0 { json!("off") } else { json!(n) }),
        "burst": rec.burst,
    })
}

fn configured_settings(e: &KeyEntry) -> Value {
    let p = e.policy.as_deref().cloned().unwrap_or_default();
    json!({
        "name": &*e.name,
        "source": "config",
        "read_only": true,
        "budget": p.budget.as_ref().map(BudgetJson::of),
        "models": p.models,
        "rpm": e.limits.rpm,
        "tpm": e.limits.tpm,
        "burst": e.limits.burst,
    })
}

async fn find(t: &Tenants, name: &str) -> Result<Option<KeyRecord>, Reply> {
    Ok(t.records()
        .await
        .map_err(state_err)?
        .into_iter()
        .find(|r| r.name == name))
}

fn is_configured(t: &Tenants, name: &str) -> bool {
    t.configured().iter().any(|e| &*e.name == name)
}

async fn create(t: &Tenants, body: &[u8]) -> Result<Reply, Reply> {
    let m = body_object(body)?;
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing required field 'name'"))?
        .to_string();
    if !valid_name(&name) {
        return Err(bad(format!(
            "name {name:?} must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        )));
    }
    let conflict = || {
        err(GatewayError::new(
            409,
            "invalid_request_error",
            Some("key_exists"),
            format!("a key named {name:?} exists already"),
        ))
    };
    if is_configured(t, &name) {
        return Err(conflict());
    }
    let secret = new_secret();
    let mut rec = KeyRecord {
        name: name.clone(),
        sha256: hex::encode(crate::auth::key_digest(&secret)),
        created_at: unix_now(),
        expires_at: None,
        budget: None,
        models: None,
        rpm: None,
        tpm: None,
        burst: None,
        revoked_at: None,
    };
    apply(&mut rec, &m)?;
    if !t.put(&rec, true).await.map_err(state_err)? {
        return Err(conflict());
    }
    log::info!("admin: created key={name}");
    let mut v = settings(&rec);
    v["key"] = Value::String(secret);
    Ok(ok(200, v))
}

async fn list(t: &Tenants) -> Result<Reply, Reply> {
    let mut data: Vec<Value> = t
        .configured()
        .iter()
        .map(|e| configured_settings(e))
        .collect();
    let mut recs = t.records().await.map_err(state_err)?;
    recs.sort_by(|a, b| a.name.cmp(&b.name));
    data.extend(recs.iter().map(settings));
    Ok(ok(200, json!({"object": "list", "data": data})))
}

async fn get(t: &Tenants, name: &str) -> Result<Reply, Reply> {
    let (mut v, policy) = match t.configured().iter().find(|e| &*e.name == name) {
        Some(e) => (
            configured_settings(e),
            e.policy.as_deref().cloned().unwrap_or_default(),
        ),
        None => match find(t, name).await? {
            Some(r) => (settings(&r), r.policy()),
            None => return Err(not_found(name)),
        },
    };
    let now = unix_now();
    let period = policy.budget.map(|b| b.period).unwrap_or(Period::Month);
    let spend = t.spend(name, period).await.map_err(state_err)?;
    let days = period_days(period, now);
    let rows = t.usage(name, &days).await.map_err(state_err)?;
    let mut by_model: BTreeMap<String, Counters> = BTreeMap::new();
    let mut total = Counters::default();
    for (_, models) in rows {
        for (m, c) in models {
            by_model.entry(m).or_default().add(&c);
            total.add(&c);
        }
    }
    let usd = |m: u64| m as f64 / MICRO;
    let budget = policy.budget;
    let by_model_json: Map<String, Value> = by_model
        .iter()
        .map(|(m, c)| (m.clone(), counters_json(c)))
        .collect();
    let remaining = budget.map(|b| usd(b.micro_usd.saturating_sub(spend.spent + spend.reserved)));
    v["usage"] = json!({
        "period": period.as_str(),
        "period_start": days.first(),
        "resets_at": period_end(period, now).map(rfc3339),
        "spend_usd": usd(spend.spent),
        "reserved_usd": usd(spend.reserved),
        "budget_usd": budget.map(|b| b.usd()),
        "remaining_usd": remaining,
        "requests": total.requests,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "cost_usd": usd(total.cost),
        "by_model": by_model_json,
    });
    Ok(ok(200, v))
}

fn counters_json(c: &Counters) -> Value {
    json!({
        "requests": c.requests,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "cost_usd": c.cost as f64 / MICRO,
    })
}

/// The live (not revoked) admin-made record named `name`, or the error to answer.
async fn live(t: &Tenants, name: &str) -> Result<KeyRecord, Reply> {
    if is_configured(t, name) {
        return Err(read_only(name));
    }
    match find(t, name).await? {
        Some(r) if r.revoked_at.is_none() => Ok(r),
        _ => Err(not_found(name)),
    }
}

async fn patch(t: &Tenants, name: &str, body: &[u8]) -> Result<Reply, Reply> {
    let mut rec = live(t, name).await?;
    let m = body_object(body)?;
    if m.get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n != name)
    {
        return Err(bad("a key cannot be renamed"));
    }
    apply(&mut rec, &m)?;
    if !t.put(&rec, false).await.map_err(state_err)? {
        return Err(not_found(name));
    }
    log::info!("admin: updated key={name}");
    Ok(ok(200, settings(&rec)))
}

async fn revoke(t: &Tenants, name: &str) -> Result<Reply, Reply> {
    let mut rec = live(t, name).await?;
    rec.revoked_at = Some(unix_now());
    if !t.put(&rec, false).await.map_err(state_err)? {
        return Err(not_found(name));
    }
    log::info!("admin: revoked key={name}");
    Ok(ok(200, json!({"name": name, "revoked": true})))
}

async fn rotate(t: &Tenants, name: &str) -> Result<Reply, Reply> {
    let mut rec = live(t, name).await?;
    let secret = new_secret();
    rec.sha256 = hex::encode(crate::auth::key_digest(&secret));
    if !t.put(&rec, false).await.map_err(state_err)? {
        return Err(not_found(name));
    }
    log::info!("admin: rotated key={name}");
    let mut v = settings(&rec);
    v["key"] = Value::String(secret);
    Ok(ok(200, v))
}

/// `GET /admin/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&group_by=key,model`: daily rows.
async fn usage(t: &Tenants, query: &str) -> Result<Reply, Reply> {
    let mut from = None;
    let mut to = None;
    let mut by_key = true;
    let mut by_model = true;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "from" => {
                from = Some(parse_day(&v).ok_or_else(|| bad("from must be a date, YYYY-MM-DD"))?)
            }
            "to" => to = Some(parse_day(&v).ok_or_else(|| bad("to must be a date, YYYY-MM-DD"))?),
            "group_by" => {
                by_key = false;
                by_model = false;
                for g in v.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    match g {
                        "key" => by_key = true,
                        "model" => by_model = true,
                        other => {
                            return Err(bad(format!(
                                "group_by {other:?}: expected key, model or key,model"
                            )))
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let today = (unix_now() / 86_400) as i64;
    let to = to.unwrap_or(today);
    let from = from.unwrap_or(to - 29);
    if from > to {
        return Err(bad("from is after to"));
    }
    if to - from >= MAX_EXPORT_DAYS {
        return Err(bad(format!("at most {MAX_EXPORT_DAYS} days per export")));
    }
    let days: Vec<String> = (from..=to).map(day_name).collect();
    let mut names: Vec<String> = t.configured().iter().map(|e| e.name.to_string()).collect();
    names.extend(
        t.records()
            .await
            .map_err(state_err)?
            .into_iter()
            .map(|r| r.name),
    );
    names.sort();
    names.dedup();
    // (day, key, model) -> counters, the dimensions not grouped by left empty.
    let mut rows: BTreeMap<(String, String, String), Counters> = BTreeMap::new();
    for name in &names {
        for (day, models) in t.usage(name, &days).await.map_err(state_err)? {
            for (model, c) in models {
                let k = (
                    day.clone(),
                    if by_key { name.clone() } else { String::new() },
                    if by_model { model } else { String::new() },
                );
                rows.entry(k).or_default().add(&c);
            }
        }
    }
    let group_by: Vec<&str> = [by_key.then_some("key"), by_model.then_some("model")]
        .into_iter()
        .flatten()
        .collect();
    let data: Vec<Value> = rows
        .iter()
        .map(|((day, key, model), c)| {
            let mut v = counters_json(c);
            v["date"] = json!(day);
            if by_key {
                v["key"] = json!(key);
            }
            if by_model {
                v["model"] = json!(model);
            }
            v
        })
        .collect();
    Ok(ok(
        200,
        json!({
            "object": "list",
            "from": day_name(from),
            "to": day_name(to),
            "group_by": group_by,
            "data": data,
        }),
    ))
}
