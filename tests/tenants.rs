//! Issue 22, tenants on one instance: budgets served until spent then 429
//! `insufficient_quota` (plain and streamed, with a mock reporting known usage and a known
//! price), 50 concurrent requests against the last dollars, allow-lists (allowed, refused,
//! pattern, alias, `/v1/models`, every model API), the admin API (every verb, 401, the secret
//! shown once, rotation), and the local state file surviving a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "sk-admin-test-0123456789";
/// $1 per completion token, prompt tokens free: a request with `max_tokens: 2` has a worst
/// case of $2, and the mock's usage (2 completion tokens) costs exactly $2.
const PRICES: &str = "openai/m=0/1000000,openai/m2=0/1000000";

/// OpenAI chat with usage {prompt 10, completion 2} (streams: two pieces, usage chunk when
/// asked), a model list, and embeddings.
fn handler() -> Handler {
    Arc::new(|r: &Recorded| {
        if r.path.ends_with("/models") {
            return json_response(
                200,
                json!({"object":"list","data":[
                    {"id":"m","object":"model","created":1,"owned_by":"mock"},
                    {"id":"m2","object":"model","created":1,"owned_by":"mock"},
                    {"id":"other","object":"model","created":1,"owned_by":"mock"}]}),
            );
        }
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("m").to_string();
        if r.path.ends_with("/embeddings") {
            return json_response(
                200,
                json!({"object":"list","model":model,
                       "data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],
                       "usage":{"prompt_tokens":3,"total_tokens":3}}),
            );
        }
        if body["stream"] == Value::Bool(true) {
            let usage = body["stream_options"]["include_usage"] == Value::Bool(true);
            let mut ev = openai_stream_events(&model, &["two ", "words"], usage);
            if usage {
                // The usage chunk says prompt 10 (the helper's own 11 is fine too: free).
                let n = ev.len();
                ev[n - 2] = ev[n - 2].replace("\"prompt_tokens\":11", "\"prompt_tokens\":10");
            }
            return sse_response(ev, Duration::ZERO, None);
        }
        let mut v = openai_completion(&model, "two words");
        v["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12});
        json_response(200, v)
    })
}

async fn chat(
    gw: &Gateway,
    key: &str,
    model: &str,
    extra: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut body = chat_body(model, "hi", false);
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v, headers)
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_at(&gw.url(path), method, Some(ADMIN), body).await
}

async fn admin_at(url: &str, method: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `GET /admin/keys/{name}` once no reservation is open (a request settles just after its
/// last byte reached the client).
async fn settled(gw: &Gateway, name: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = admin(gw, "GET", &format!("/admin/keys/{name}"), None).await;
        assert_eq!(s, 200, "{v}");
        if v["usage"]["reserved_usd"] == 0.0 || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_quota(status: u16, v: &Value, resets: &str) {
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
    assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(resets), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_serves_exactly_what_it_pays_for_then_429_insufficient_quota() {
    let mock = Mock::start(handler()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_PRICES", PRICES),
        (
            "GATEWAY_API_KEYS",
            "team-a=sk-gw-aaa:budget=10/month,team-t=sk-gw-ttt:budget=4/total,free=sk-gw-free",
        ),
    ]);
    // $10 serves exactly five requests whose worst and real cost are $2 each; one of them
    // streamed (settled when the stream ends).
    for i in 0..4 {
        let (s, v, _) = chat(&gw, "sk-gw-aaa", "openai/m", json!({"max_tokens": 2})).await;
        assert_eq!(s, 200, "request {i}: {v}");
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-gw-aaa")
        .json(
            &json!({"model":"openai/m","messages":[{"role":"user","content":"hi"}],
            "max_completion_tokens": 2, "stream": true, "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    assert_eq!(mock.calls(), 5);
    let (s, v, h) = chat(&gw, "sk-gw-aaa", "openai/m", json!({"max_tokens": 2})).await;
    assert_quota(s, &v, "resets at");
    assert!(h.get("retry-after").is_some());
    assert_eq!(mock.calls(), 5, "a refused request is never sent upstream");
    // Even a request that could cost nothing is refused once the budget is spent.
    let (s, v, _) = chat(&gw, "sk-gw-aaa", "openai/m", json!({"max_tokens": 0})).await;
    assert_quota(s, &v, "resets at");
    // A worst case larger than the whole budget is refused before anything is spent ($4
    // total; 5 tokens reserve $5), and a total budget says it never resets.
    let (s, v, _) = chat(&gw, "sk-gw-ttt", "openai/m", json!({"max_tokens": 5})).await;
    assert_quota(s, &v, "never resets");
    assert_eq!(mock.calls(), 5);
    // $4 is two $2 requests.
    for _ in 0..2 {
        let (s, v, _) = chat(&gw, "sk-gw-ttt", "openai/m", json!({"max_tokens": 2})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v, _) = chat(&gw, "sk-gw-ttt", "openai/m", json!({"max_tokens": 2})).await;
    assert_quota(s, &v, "never resets");
    // A key without a budget is not limited.
    for _ in 0..8 {
        let (s, _, _) = chat(&gw, "sk-gw-free", "openai/m", json!({"max_tokens": 2})).await;
        assert_eq!(s, 200);
    }
    // The log line names the key, never its secret.
    let logs = gw.logs();
    assert!(logs.contains("team-a"), "{logs}");
    assert!(!logs.contains("sk-gw-aaa"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests_overshoot_no_more_than_the_bound() {
    let mock = Mock::start(handler()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_PRICES", PRICES),
        ("GATEWAY_ADMIN_KEY", ADMIN),
        // Requests without a maximum reserve one completion token ($1) but really cost $2:
        // each admitted one may overshoot by $1.
        ("GATEWAY_BUDGET_RESERVE_TOKENS", "1"),
        (
            "GATEWAY_API_KEYS",
            "exact=sk-gw-exact:budget=10/day,under=sk-gw-under:budget=10/day",
        ),
    ]);
    let fire = |key: &'static str, extra: Value| {
        let gw_url = gw.url("/v1/chat/completions");
        async move {
            let mut tasks = Vec::new();
            for _ in 0..50 {
                let url = gw_url.clone();
                let mut body = chat_body("openai/m", "hi", false);
                for (k, v) in extra.as_object().unwrap() {
                    body[k] = v.clone();
                }
                tasks.push(tokio::spawn(async move {
                    client()
                        .post(url)
                        .bearer_auth(key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }));
            }
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap() {
                    200 => ok += 1,
                    429 => {}
                    s => panic!("unexpected status {s}"),
                }
            }
            ok
        }
    };
    // Reservation equal to the real cost: the bound is zero, exactly five are served.
    let ok = fire("sk-gw-exact", json!({"max_tokens": 2})).await;
    assert_eq!(ok, 5);
    let v = settled(&gw, "exact").await;
    assert_eq!(v["usage"]["spend_usd"], 10.0, "{v}");
    assert_eq!(v["usage"]["reserved_usd"], 0.0, "{v}");
    // Under-reserved: each admitted request may exceed its reservation by $1; spend stays
    // within budget + admitted x $1, and no request is admitted once the budget is spent.
    let ok = fire("sk-gw-under", json!({})).await;
    let v = settled(&gw, "under").await;
    let spend = v["usage"]["spend_usd"].as_f64().unwrap();
    assert!((5..=10).contains(&ok), "{ok} admitted");
    assert!(
        spend <= 10.0 + ok as f64,
        "spend {spend} with {ok} admitted"
    );
    assert_eq!(spend, 2.0 * ok as f64);
    assert_eq!(mock.calls(), 5 + ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_lists_refuse_other_models_with_403_everywhere_and_filter_the_model_list() {
    let mock = Mock::start(handler()).await;
    // The keys file takes the same options as GATEWAY_API_KEYS.
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        keys.path(),
        "# tenants\nlim=sk-gw-lim:models=openai/m|openai/m2*|fast:rpm=100\n",
    )
    .unwrap();
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_MODEL_ALIASES", "fast=openai/m;slow=openai/other"),
        ("GATEWAY_API_KEYS_FILE", keys.path().to_str().unwrap()),
        ("GATEWAY_API_KEYS", "all=sk-gw-all"),
    ]);
    for model in ["openai/m", "openai/m2", "fast"] {
        let (s, v, _) = chat(&gw, "sk-gw-lim", model, json!({})).await;
        assert_eq!(s, 200, "{model}: {v}");
    }
    let calls = mock.calls();
    for model in ["openai/other", "slow", "openai/mx"] {
        let (s, v, _) = chat(&gw, "sk-gw-lim", model, json!({})).await;
        assert_eq!(s, 403, "{model}: {v}");
        assert_eq!(v["error"]["code"], "model_not_allowed", "{v}");
        assert_eq!(v["error"]["param"], "model", "{v}");
    }
    // Responses, Messages and embeddings too, in their own error shapes.
    let post = |path: &'static str, body: Value| {
        let url = gw.url(path);
        async move {
            let r = client()
                .post(url)
                .bearer_auth("sk-gw-lim")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, t) = post(
        "/v1/responses",
        json!({"model":"openai/other","input":"hi"}),
    )
    .await;
    assert_eq!(s, 403, "{t}");
    assert!(t.contains("model_not_allowed"), "{t}");
    let (s, t) = post(
        "/v1/messages",
        json!({"model":"openai/other","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(s, 403, "{t}");
    assert!(
        t.contains("model_not_allowed") || t.contains("permission_error"),
        "{t}"
    );
    let (s, t) = post(
        "/v1/embeddings",
        json!({"model":"openai/other","input":"hi"}),
    )
    .await;
    assert_eq!(s, 403, "{t}");
    assert!(t.contains("model_not_allowed"), "{t}");
    assert_eq!(mock.calls(), calls, "nothing refused reached the upstream");
    let (s, _) = post("/v1/embeddings", json!({"model":"openai/m","input":"hi"})).await;
    assert_eq!(s, 200);
    let (s, t) = post("/v1/responses", json!({"model":"openai/m","input":"hi"})).await;
    assert_eq!(s, 200, "{t}");

    let ids = |key: &'static str| {
        let url = gw.url("/v1/models");
        async move {
            let v: Value = client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut ids: Vec<String> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(ids("sk-gw-lim").await, ["openai/m", "openai/m2"]);
    assert!(ids("sk-gw-all").await.contains(&"openai/other".to_string()));
    let r = client()
        .get(gw.url("/v1/models/openai%2Fother"))
        .bearer_auth("sk-gw-lim")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_every_verb_secret_shown_once_rotation_and_revocation() {
    let mock = Mock::start(handler()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_PRICES", PRICES),
        ("GATEWAY_ADMIN_KEY", ADMIN),
        (
            "GATEWAY_API_KEYS",
            "team-a=sk-gw-aaa:budget=50/month:models=openai/*",
        ),
    ]);
    let keys = gw.url("/admin/keys");
    // 401 without or with a wrong admin key (a gateway key is not an admin key).
    for k in [None, Some("sk-admin-wrong"), Some("sk-gw-aaa")] {
        let (s, v) = admin_at(&keys, "GET", k, None).await;
        assert_eq!(s, 401, "{k:?}: {v}");
    }
    // Auth is on: the admin key turned it on.
    let (s, _, _) = chat(&gw, "nobody", "openai/m", json!({})).await;
    assert_eq!(s, 401);
    // Create: the secret, once.
    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/keys",
        Some(json!({"name":"team-b","budget":{"usd":5,"period":"day"},"models":["openai/m"],"rpm":60})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "team-b");
    let secret = v["key"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("sk-gw-") && secret.len() > 40,
        "{secret}"
    );
    let (s, v) = admin(&gw, "POST", "/admin/keys", Some(json!({"name":"team-b"}))).await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = admin(&gw, "POST", "/admin/keys", Some(json!({"name":"team-a"}))).await;
    assert_eq!(s, 409, "a configured name");
    let (s, _) = admin(&gw, "POST", "/admin/keys", Some(json!({"name":"bad name"}))).await;
    assert_eq!(s, 400);
    let (s, _) = admin(
        &gw,
        "POST",
        "/admin/keys",
        Some(json!({"name":"x","rpm":-1})),
    )
    .await;
    assert_eq!(s, 400);
    // A key past its expiry is refused.
    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/keys",
        Some(json!({"name":"expired","expires_at": 1_000_000_000u64})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = chat(&gw, v["key"].as_str().unwrap(), "openai/m", json!({})).await;
    assert_eq!(s, 401);
    // The key works at once, within its allow-list and budget.
    let (s, v, h) = chat(&gw, &secret, "openai/m", json!({"max_tokens": 2})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.get("x-ratelimit-limit-requests").unwrap(), "60");
    let (s, _, _) = chat(&gw, &secret, "openai/m2", json!({})).await;
    assert_eq!(s, 403);
    let (s, _, _) = chat(&gw, "sk-gw-aaa", "openai/m2", json!({"max_tokens": 2})).await;
    assert_eq!(s, 200);
    // List: every key, configured ones read-only, no secret.
    let (s, list) = admin(&gw, "GET", "/admin/keys", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "expired", "team-b"]);
    assert_eq!(list["data"][0]["read_only"], true);
    // Get: settings and usage by model.
    let one = settled(&gw, "team-b").await;
    assert_eq!(one["usage"]["spend_usd"], 2.0, "{one}");
    assert_eq!(one["usage"]["budget_usd"], 5.0);
    assert_eq!(one["usage"]["requests"], 1);
    assert_eq!(
        one["usage"]["by_model"]["m"]["completion_tokens"], 2,
        "{one}"
    );
    assert!(one["usage"]["resets_at"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00Z"));
    let (s, a) = admin(&gw, "GET", "/admin/keys/team-a", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        a["usage"]["requests"], 1,
        "configured keys' usage is reported: {a}"
    );
    assert_eq!(a["budget"]["usd"], 50.0);
    let (s, _) = admin(&gw, "GET", "/admin/keys/nope", None).await;
    assert_eq!(s, 404);
    // Patch: limits, budget, models. Configured keys stay read-only.
    let (s, v) = admin(
        &gw,
        "PATCH",
        "/admin/keys/team-b",
        Some(json!({"models":["openai/*"],"budget":{"usd":2,"period":"day"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = chat(&gw, &secret, "openai/m2", json!({"max_tokens": 2})).await;
    assert_eq!(s, 429, "the new $2 budget is spent: {v}");
    let (s, _) = admin(
        &gw,
        "PATCH",
        "/admin/keys/team-b",
        Some(json!({"budget":null})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = chat(&gw, &secret, "openai/m2", json!({})).await;
    assert_eq!(s, 200);
    // Without a budget, spend is reported by month.
    let one = settled(&gw, "team-b").await;
    assert_eq!(one["usage"]["period"], "month", "{one}");
    assert_eq!(one["usage"]["spend_usd"], 4.0, "{one}");
    let (s, v) = admin(&gw, "PATCH", "/admin/keys/team-a", Some(json!({"rpm":1}))).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "key_read_only");
    let (s, _) = admin(&gw, "DELETE", "/admin/keys/team-a", None).await;
    assert_eq!(s, 403);
    // Rotate: the old secret stops working, the new one works.
    let (s, v) = admin(&gw, "POST", "/admin/keys/team-b/rotate", None).await;
    assert_eq!(s, 200, "{v}");
    let rotated = v["key"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    let (s, _, _) = chat(&gw, &secret, "openai/m", json!({})).await;
    assert_eq!(s, 401);
    let (s, _, _) = chat(&gw, &rotated, "openai/m", json!({})).await;
    assert_eq!(s, 200);
    // Usage export: daily rows by key and model, or by key only.
    let (s, u) = admin(&gw, "GET", "/admin/usage?group_by=key,model", None).await;
    assert_eq!(s, 200, "{u}");
    let rows = u["data"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["key"] == "team-b" && r["model"] == "m")
        .unwrap_or_else(|| panic!("{u}"));
    assert_eq!(row["requests"], 2, "{u}");
    assert_eq!(row["prompt_tokens"], 20);
    assert!(row["date"].as_str().unwrap().len() == 10);
    let (_, u) = admin(&gw, "GET", "/admin/usage?group_by=key", None).await;
    let b = u["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "team-b")
        .unwrap();
    assert_eq!(b["requests"], 3, "{u}");
    assert!(b.get("model").is_none());
    let (s, _) = admin(&gw, "GET", "/admin/usage?from=2026-13-01", None).await;
    assert_eq!(s, 400);
    // Revoke.
    let (s, v) = admin(&gw, "DELETE", "/admin/keys/team-b", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = chat(&gw, &rotated, "openai/m", json!({})).await;
    assert_eq!(s, 401);
    let (s, _) = admin(&gw, "DELETE", "/admin/keys/team-b", None).await;
    assert_eq!(s, 404);
    // The secrets never appear again: not in list, get, logs or metrics.
    let (_, list) = admin(&gw, "GET", "/admin/keys", None).await;
    let (_, one) = admin(&gw, "GET", "/admin/keys/team-b", None).await;
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_spend_usd_total{key=\"team-b\"} 6"),
        "{metrics}"
    );
    let logs = gw.logs();
    for s in [&secret, &rotated] {
        assert!(!list.to_string().contains(s.as_str()));
        assert!(!one.to_string().contains(s.as_str()));
        assert!(!metrics.contains(s.as_str()));
        assert!(!logs.contains(s.as_str()));
        assert!(!logs.contains(&s[6..]));
    }
    assert!(!logs.contains(ADMIN));
    for action in ["created", "updated", "rotated", "revoked"] {
        assert!(
            logs.contains(&format!("admin: {action} key=team-b")),
            "{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_moves_to_the_metrics_listener_when_there_is_one() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::start(&[
        ("GATEWAY_ADMIN_KEY", ADMIN),
        ("GATEWAY_METRICS_LISTEN", &listen),
    ]);
    let (s, _) = admin(&gw, "GET", "/admin/keys", None).await;
    assert_eq!(s, 404);
    let url = format!("http://{listen}/admin/keys");
    let (s, _) = admin_at(&url, "GET", None, None).await;
    assert_eq!(s, 401);
    let (s, v) = admin_at(&url, "POST", Some(ADMIN), Some(json!({"name":"m-1"}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = chat(&gw, v["key"].as_str().unwrap(), "echo/x", json!({})).await;
    assert_eq!(s, 200);
    // Without GATEWAY_ADMIN_KEY the admin API is off.
    let off = Gateway::start(&[]);
    let (s, _) = admin(&off, "GET", "/admin/keys", None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_state_file_keeps_spend_and_admin_made_keys_across_a_restart() {
    let mock = Mock::start(handler()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nested/state");
    let state_s = state.to_str().unwrap().to_string();
    let vars = [
        ("OPENAI_BASE_URL", mock.url()),
        ("GATEWAY_PRICES", PRICES.to_string()),
        ("GATEWAY_ADMIN_KEY", ADMIN.to_string()),
        ("GATEWAY_STATE_DIR", state_s.clone()),
        (
            "GATEWAY_API_KEYS",
            "env=sk-gw-env:budget=6/total".to_string(),
        ),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut gw = Gateway::start(&vars);
    let (s, v) = admin(
        &gw,
        "POST",
        "/admin/keys",
        Some(json!({"name":"kept","budget":{"usd":10,"period":"month"}})),
    )
    .await;
    assert_eq!(s, 200);
    let secret = v["key"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (s, _, _) = chat(&gw, &secret, "openai/m", json!({"max_tokens": 2})).await;
        assert_eq!(s, 200);
    }
    let (s, _, _) = chat(&gw, "sk-gw-env", "openai/m", json!({"max_tokens": 2})).await;
    assert_eq!(s, 200);
    let file = std::fs::read_to_string(state.join("tenants.json")).unwrap();
    assert!(
        !file.contains(&secret),
        "the file holds the key's hash, not the key"
    );
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some());

    let gw = Gateway::start(&vars);
    let (s, one) = admin(&gw, "GET", "/admin/keys/kept", None).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["usage"]["spend_usd"], 4.0, "{one}");
    let (_, env) = admin(&gw, "GET", "/admin/keys/env", None).await;
    assert_eq!(env["usage"]["spend_usd"], 2.0, "{env}");
    // $10 - $4 spent: three more $2 requests, then 429.
    for _ in 0..3 {
        let (s, v, _) = chat(&gw, &secret, "openai/m", json!({"max_tokens": 2})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v, _) = chat(&gw, &secret, "openai/m", json!({"max_tokens": 2})).await;
    assert_quota(s, &v, "resets at");
    // The env key's total budget ($6, $2 spent before the restart): two more.
    for _ in 0..2 {
        let (s, _, _) = chat(&gw, "sk-gw-env", "openai/m", json!({"max_tokens": 2})).await;
        assert_eq!(s, 200);
    }
    let (s, v, _) = chat(&gw, "sk-gw-env", "openai/m", json!({"max_tokens": 2})).await;
    assert_quota(s, &v, "never resets");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tenant_settings_stop_the_start_naming_the_variable() {
    for (k, v, needle) in [
        ("GATEWAY_API_KEYS", "a=k:budget=5/year", "GATEWAY_API_KEYS"),
        ("GATEWAY_API_KEYS", "a=k:models=", "GATEWAY_API_KEYS"),
        (
            "GATEWAY_BUDGET_RESERVE_TOKENS",
            "0",
            "GATEWAY_BUDGET_RESERVE_TOKENS",
        ),
        ("GATEWAY_PRICES", "m=1/2/x", "GATEWAY_PRICES"),
    ] {
        let e = Gateway::try_start(&[(k, v)]).err().unwrap_or_default();
        assert!(e.contains(needle), "{k}={v}: {e}");
    }
    // A state directory that cannot be made.
    let f = tempfile::NamedTempFile::new().unwrap();
    let path = f.path().join("sub");
    let e = Gateway::try_start(&[("GATEWAY_STATE_DIR", path.to_str().unwrap())])
        .err()
        .unwrap_or_default();
    assert!(e.contains("GATEWAY_STATE_DIR"), "{e}");
}
