//! Issue 22, tenants shared through a real `redis-server` by two gateway instances: a budget
//! counts spend from both, a key made on one works on the other, a key revoked on one is
//! refused by both within a second; Redis holds key hashes, never secrets; with Redis gone,
//! admin-made keys are refused and budgeted requests get 503, and spend recorded meanwhile is
//! replayed when it is back (from `GATEWAY_STATE_DIR` across a restart, counted once).

mod common;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use redis_support::RedisServer;
use serde_json::{json, Value};

const ADMIN: &str = "sk-admin-redis-0123456789";
const PRICES: &str = "openai/m=0/1000000";

fn handler() -> Handler {
    Arc::new(|r: &Recorded| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("m").to_string();
        let mut v = openai_completion(&model, "two words");
        v["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12});
        json_response(200, v)
    })
}

fn start(mock: &Mock, redis: &RedisServer) -> Gateway {
    Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_PRICES", PRICES),
        ("GATEWAY_ADMIN_KEY", ADMIN),
        ("GATEWAY_STATE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", &redis.url()),
        ("GATEWAY_API_KEYS", "env=sk-gw-env:budget=10/month"),
    ])
}

async fn chat(gw: &Gateway, key: &str) -> (u16, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model":"openai/m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}),
        )
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(path))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Polls `f` until it returns true, up to `limit`; the time it took.
async fn within<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_keys_budgets_and_revocations_through_redis() {
    let redis = RedisServer::start();
    let mock = Mock::start(handler()).await;
    let a = start(&mock, &redis);
    let b = start(&mock, &redis);

    // A budget holds across instances: $10 is five $2 requests, wherever they land.
    for (i, gw) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let (s, v) = chat(gw, "sk-gw-env").await;
        assert_eq!(s, 200, "request {i}: {v}");
    }
    let settled = within(Duration::from_secs(5), || async {
        let (_, v) = admin(&b, "GET", "/admin/keys/env", None).await;
        v["usage"]["reserved_usd"] == 0.0 && v["usage"]["spend_usd"] == 10.0
    })
    .await;
    assert!(settled.is_some(), "spend from both instances counted");
    for gw in [&a, &b] {
        let (s, v) = chat(gw, "sk-gw-env").await;
        assert_eq!(s, 429, "{v}");
        assert_eq!(v["error"]["code"], "insufficient_quota");
    }
    assert_eq!(mock.calls(), 5);

    // A key made on A works on B.
    let (s, v) = admin(
        &a,
        "POST",
        "/admin/keys",
        Some(json!({"name":"team-b","budget":{"usd":4,"period":"day"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let secret = v["key"].as_str().unwrap().to_string();
    let seen = within(Duration::from_secs(5), || async {
        chat(&b, &secret).await.0 == 200
    })
    .await;
    assert!(seen.is_some(), "the key made on A works on B");
    let (s, _) = chat(&a, &secret).await;
    assert_eq!(s, 200);
    // Its $4 is spent (one request on each): both refuse.
    let spent = within(Duration::from_secs(5), || async {
        chat(&a, &secret).await.0 == 429 && chat(&b, &secret).await.0 == 429
    })
    .await;
    assert!(spent.is_some());
    let (_, one) = admin(&b, "GET", "/admin/keys/team-b", None).await;
    assert_eq!(one["usage"]["spend_usd"], 4.0, "{one}");
    assert_eq!(one["usage"]["requests"], 2, "{one}");
    assert!(one.get("key").is_none());

    // Redis holds the key's SHA-256, never the secret.
    let mut c = redis.conn().await;
    let keys: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("aigw:tenants:{keys}")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].1.contains(&secret));
    assert!(keys[0].1.contains("sha256"));

    // Revoked on B: refused by both within one second.
    let (s, _) = admin(
        &b,
        "PATCH",
        "/admin/keys/team-b",
        Some(json!({"budget": null})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = admin(&b, "DELETE", "/admin/keys/team-b", None).await;
    assert_eq!(s, 200);
    // Timed from the moment the DELETE returned.
    let took = within(Duration::from_secs(3), || async {
        chat(&a, &secret).await.0 == 401
    })
    .await
    .expect("A refuses the revoked key");
    assert!(took < Duration::from_secs(1), "A took {took:?}");
    let (s, _) = chat(&b, &secret).await;
    assert_eq!(s, 401, "refused where it was revoked");
    let (_, u) = admin(&a, "GET", "/admin/usage?group_by=key", None).await;
    let row = u["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "team-b")
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["requests"], 2, "{u}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_gone_admin_keys_are_refused_and_spend_is_replayed_later() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let mock = Mock::start(handler()).await;
    let gw = Gateway::start(&[
        ("OPENAI_BASE_URL", &mock.url()),
        ("GATEWAY_PRICES", PRICES),
        ("GATEWAY_ADMIN_KEY", ADMIN),
        ("GATEWAY_STATE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", &redis.url()),
        (
            "GATEWAY_API_KEYS",
            "env=sk-gw-env:budget=10/month,free=sk-gw-free",
        ),
    ]);
    let (s, v) = admin(&gw, "POST", "/admin/keys", Some(json!({"name":"made"}))).await;
    assert_eq!(s, 200);
    let secret = v["key"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, &secret).await.0, 200);
    redis.stop();
    // Within about a second, admin-made keys are refused (a revocation could not be seen).
    let refused = within(Duration::from_secs(5), || async {
        chat(&gw, &secret).await.0 == 401
    })
    .await;
    assert!(
        refused.is_some(),
        "admin-made keys refused while Redis is away"
    );
    // A budgeted key cannot be checked: 503, nothing sent upstream.
    let calls = mock.calls();
    let (s, v) = chat(&gw, "sk-gw-env").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(mock.calls(), calls);
    // Admin writes are refused.
    let (s, _) = admin(&gw, "POST", "/admin/keys", Some(json!({"name":"later"}))).await;
    assert_eq!(s, 503);
    // A key without a budget is served, and its usage journalled.
    assert_eq!(chat(&gw, "sk-gw-free").await.0, 200);
    assert!(gw.wait_log("kept in the local journal", Duration::from_secs(10)));
    // Redis back (same port, empty): the key records are gone with it, but the journal is
    // replayed.
    let redis = RedisServer::start_on(port);
    let replayed = within(Duration::from_secs(10), || async {
        let (s, u) = admin(&gw, "GET", "/admin/keys/free", None).await;
        s == 200 && u["usage"]["requests"] == 1
    })
    .await;
    assert!(replayed.is_some(), "{}", gw.logs());
    drop(redis);
}

/// The journal files in a state directory, and how many entries they hold.
fn journal_lines(dir: &std::path::Path) -> (Vec<std::path::PathBuf>, usize) {
    let mut files = Vec::new();
    let mut lines = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("tenants-journal-") && name.ends_with(".jsonl") {
            lines += std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .count();
            files.push(e.path());
        }
    }
    (files, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_journalled_while_redis_is_down_survives_a_restart_and_counts_once() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let mock = Mock::start(handler()).await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("state");
    let (dir_s, url, upstream) = (dir.to_string_lossy().to_string(), redis.url(), mock.url());
    let vars = |keys: &'static str| {
        [
            ("OPENAI_BASE_URL", upstream.clone()),
            ("GATEWAY_PRICES", PRICES.to_string()),
            ("GATEWAY_ADMIN_KEY", ADMIN.to_string()),
            ("GATEWAY_STATE_BACKEND", "redis".to_string()),
            ("GATEWAY_REDIS_URL", url.clone()),
            ("GATEWAY_STATE_DIR", dir_s.clone()),
            ("GATEWAY_API_KEYS", keys.to_string()),
        ]
    };
    let v1 = vars("team=sk-gw-team");
    let mut first = Gateway::start(&v1.each_ref().map(|(k, v)| (*k, v.as_str())));
    assert_eq!(chat(&first, "sk-gw-team").await.0, 200);
    let settled = within(Duration::from_secs(5), || async {
        admin(&first, "GET", "/admin/keys/team", None).await.1["usage"]["requests"] == 1
    })
    .await;
    assert!(settled.is_some(), "{}", first.logs());
    redis.stop();
    // Three requests of $2 each (2 completion tokens at $1) served and settled with Redis away.
    for _ in 0..3 {
        assert_eq!(chat(&first, "sk-gw-team").await.0, 200);
    }
    let on_disk = within(Duration::from_secs(10), || async {
        journal_lines(&dir).1 == 3
    })
    .await;
    assert!(
        on_disk.is_some(),
        "{:?}\n{}",
        journal_lines(&dir),
        first.logs()
    );
    // As if a crash had hit between adopting a journal and removing it: the same entries twice.
    let (files, _) = journal_lines(&dir);
    assert_eq!(files.len(), 1);
    std::fs::copy(&files[0], dir.join("tenants-journal-copy.jsonl")).unwrap();
    // No graceful shutdown: what was acknowledged as written must already be on disk.
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());

    // Started again (Redis still away), now with a $10 budget on the key.
    let v2 = vars("team=sk-gw-team:budget=10/month");
    let gw = Gateway::start(&v2.each_ref().map(|(k, v)| (*k, v.as_str())));
    assert!(
        gw.wait_log("taken from", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    // Redis back, empty: the spend in it is the replay, counted once although the entries were
    // in two files (and the first request's $2, settled before Redis went, is gone with it).
    let redis = RedisServer::start_on(port);
    let replayed = within(Duration::from_secs(15), || async {
        let (s, u) = admin(&gw, "GET", "/admin/keys/team", None).await;
        s == 200 && u["usage"]["requests"] == 3 && journal_lines(&dir).1 == 0
    })
    .await;
    assert!(
        replayed.is_some(),
        "{:?}\n{}",
        journal_lines(&dir),
        gw.logs()
    );
    let (_, u) = admin(&gw, "GET", "/admin/keys/team", None).await;
    assert_eq!(u["usage"]["spend_usd"], 6.0, "{u}");
    // $6 of $10 spent: two more $2 requests, then refused.
    let calls = mock.calls();
    assert_eq!(chat(&gw, "sk-gw-team").await.0, 200);
    assert_eq!(chat(&gw, "sk-gw-team").await.0, 200);
    let (s, v) = chat(&gw, "sk-gw-team").await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(mock.calls(), calls + 2);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_with_redis_away_keeps_the_journal_only_with_a_state_dir() {
    let mut redis = RedisServer::start();
    let mock = Mock::start(handler()).await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_string_lossy().to_string();
    let url = redis.url();
    let base = [
        ("OPENAI_BASE_URL", mock.url()),
        ("GATEWAY_PRICES", PRICES.to_string()),
        ("GATEWAY_ADMIN_KEY", ADMIN.to_string()),
        ("GATEWAY_STATE_BACKEND", "redis".to_string()),
        ("GATEWAY_REDIS_URL", url),
        ("GATEWAY_API_KEYS", "team=sk-gw-team".to_string()),
    ];
    let base = base.each_ref().map(|(k, v)| (*k, v.as_str()));
    let mut with_dir = base.to_vec();
    with_dir.push(("GATEWAY_STATE_DIR", &dir));
    let mut kept = Gateway::start(&with_dir);
    let mut lost = Gateway::start(&base);
    redis.stop();
    for gw in [&kept, &lost] {
        assert_eq!(chat(gw, "sk-gw-team").await.0, 200);
        assert!(gw.wait_log("kept in the local journal", Duration::from_secs(10)));
    }
    for gw in [&mut kept, &mut lost] {
        gw.signal("TERM");
        assert!(
            gw.wait_exit(Duration::from_secs(30)).is_some(),
            "{}",
            gw.logs()
        );
    }
    assert!(
        kept.logs()
            .contains("1 settlement(s) not yet in Redis stay in"),
        "{}",
        kept.logs()
    );
    assert_eq!(journal_lines(state.path()).1, 1);
    assert!(
        lost.logs()
            .contains("1 settlement(s) not yet in Redis are lost with this process"),
        "{}",
        lost.logs()
    );
}
