//! Issue 24: three gateway instances on one real Redis Cluster (3 masters, 3 replicas, started
//! here and joined by `redis-cli --cluster create`): they share cache entries and rate limits
//! (to within 2 requests over a 10 s window), and killing the master that holds the limit's
//! slot while traffic runs loses no request: the gateways degrade (local limits, cache misses),
//! then use the cluster again once the replica has taken over.

mod cache_support;
mod common;
mod redis_topology;

use std::time::{Duration, Instant};

use cache_support::*;
use common::*;
use redis_topology::{stored_response_is_shared, Cluster};

struct Shot {
    sent: Instant,
    done: Instant,
    status: u16,
}

async fn shoot(c: &reqwest::Client, url: &str, key: &str, body: &serde_json::Value) -> Shot {
    let sent = Instant::now();
    let status = match c
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .json(body)
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            // A body cut short is a lost request too.
            match r.bytes().await {
                Ok(_) => s,
                Err(_) => 0,
            }
        }
        Err(_) => 0,
    };
    Shot {
        sent,
        done: Instant::now(),
        status,
    }
}

/// `workers` loops, each sending to the gateways in turn for `dur`, `gap` apart.
async fn hammer(
    urls: Vec<String>,
    key: &str,
    body: serde_json::Value,
    dur: Duration,
    workers: usize,
    gap: Duration,
) -> Vec<Shot> {
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (urls, key, body) = (urls.clone(), key.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut shots = Vec::new();
            let mut i = w;
            while Instant::now() < end {
                shots.push(shoot(&c, &urls[i % urls.len()], &key, &body).await);
                i += 1;
                tokio::time::sleep(gap).await;
            }
            shots
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn redis_up(c: &reqwest::Client, gw: &Gateway, user: &str) -> Option<i64> {
    let body = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let needle = format!("gateway_redis_up{{use=\"{user}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_share_a_cluster_and_survive_a_master_failover() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let url = mock.url();
    let seeds = cluster.seeds(3);
    let vars = [
        ("OPENAI_BASE_URL", url.as_str()),
        ("GATEWAY_CACHE_BACKEND", "redis"),
        ("GATEWAY_RATE_LIMIT_BACKEND", "redis"),
        ("GATEWAY_STATE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", seeds.as_str()),
        ("GATEWAY_REDIS_CLUSTER", "on"),
        (
            "GATEWAY_API_KEYS",
            "fleet=sk-fleet:rpm=60:burst=5,after=sk-after:rpm=6:burst=3,free=sk-free:rpm=off",
        ),
    ];
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start(&vars)).collect();
    let chat_urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let c = client();

    // Cache: stored through one instance, a hit on the two others.
    let ask = |i: usize, text: &str| {
        let (c, url, body) = (c.clone(), chat_urls[i].clone(), chat(text));
        async move {
            let r = c
                .post(url)
                .header("authorization", "Bearer sk-free")
                .json(&body)
                .send()
                .await
                .unwrap();
            let cache = r
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (r.status().as_u16(), cache)
        }
    };
    for (i, text) in ["alpha", "beta", "gamma"].iter().enumerate() {
        assert_eq!(ask(i, text).await, (200, "MISS".to_string()));
        for (j, g) in gws.iter().enumerate() {
            if j != i {
                let got = ask(j, text).await;
                assert_eq!(
                    got,
                    (200, "HIT".to_string()),
                    "{text} via {j}: {}",
                    g.logs()
                );
            }
        }
    }
    assert_eq!(mock.calls(), 3, "one upstream call per prompt, fleet-wide");
    // Stored Responses: made through one instance, read through the others.
    stored_response_is_shared(&gws[0], &[&gws[1], &gws[2]], "sk-free").await;

    // Rate limits: one bucket for the whole fleet (5 at once, then 1 a second), over 10 s.
    let shots = hammer(
        chat_urls.clone(),
        "sk-fleet",
        chat_body("echo/x", "hi", false),
        Duration::from_secs(10),
        3,
        Duration::from_millis(20),
    )
    .await;
    let first_send = shots.iter().map(|s| s.sent).min().unwrap();
    let first_done = shots.iter().map(|s| s.done).min().unwrap();
    let last_send = shots.iter().map(|s| s.sent).max().unwrap();
    let last_done = shots.iter().map(|s| s.done).max().unwrap();
    let lo = last_send
        .saturating_duration_since(first_done)
        .as_secs_f64();
    let hi = last_done.duration_since(first_send).as_secs_f64();
    let allowed = shots.iter().filter(|s| s.status == 200).count() as f64;
    let (min, max) = ((5.0 + lo - 2.0).floor(), (5.0 + hi + 2.0).ceil());
    println!(
        "{} requests over {lo:.2}..{hi:.2}s, {allowed} allowed, bucket math {min}..{max}",
        shots.len()
    );
    assert!(
        allowed >= min && allowed <= max,
        "{allowed} allowed through three gateways, one shared bucket allows {min}..{max}"
    );
    assert!(shots.iter().all(|s| s.status == 200 || s.status == 429));
    for g in &gws {
        assert!(!g.logs().contains("unreachable"), "{}", g.logs());
        assert_eq!(redis_up(&c, g, "ratelimit").await, Some(1));
    }

    // Failover: kill the master of the limit's slot while cached and limited traffic runs.
    let victim = cluster.master_of("fleet");
    let limited = tokio::spawn(hammer(
        chat_urls.clone(),
        "sk-fleet",
        chat_body("echo/x", "hi", false),
        Duration::from_secs(8),
        2,
        Duration::from_millis(20),
    ));
    let cached = tokio::spawn(hammer(
        chat_urls.clone(),
        "sk-free",
        chat("alpha"),
        Duration::from_secs(8),
        2,
        Duration::from_millis(20),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.node(victim).kill();
    let killed_at = Instant::now();
    let limited = limited.await.unwrap();
    let cached = cached.await.unwrap();
    let lost: Vec<u16> = limited
        .iter()
        .chain(&cached)
        .map(|s| s.status)
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    assert!(
        lost.is_empty(),
        "requests lost during the failover: {lost:?}"
    );
    assert!(cached.iter().all(|s| s.status == 200));
    println!(
        "failover traffic: {} limited, {} cached requests, none lost",
        limited.len(),
        cached.len()
    );

    // Recovery: the replica took the slots; every gateway uses the cluster again.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_ok();
        cluster
    })
    .await
    .unwrap();
    assert_ne!(cluster.master_of("fleet"), victim, "a replica was promoted");
    println!(
        "cluster checked ok {:?} after the kill (once the traffic ended)",
        killed_at.elapsed()
    );
    let degraded = gws
        .iter()
        .filter(|g| g.logs().contains("rate limits: Redis at"))
        .count();
    assert!(degraded > 0, "no gateway noticed the dead master");
    for (i, g) in gws.iter().enumerate() {
        for l in g.logs().lines().filter(|l| l.contains("Redis")) {
            println!("gateway {i}: {l}");
        }
    }
    // Limited requests are what probe the limiter's Redis: send some until every gateway
    // says it is back (log line and gauge).
    let deadline = Instant::now() + Duration::from_secs(30);
    for g in &gws {
        let url = g.url("/v1/chat/completions");
        loop {
            let back =
                !g.logs().contains("is unreachable") || g.logs().contains("is reachable again");
            if back && redis_up(&c, g, "ratelimit").await == Some(1) {
                break;
            }
            assert!(Instant::now() < deadline, "not recovered: {}", g.logs());
            let s = shoot(&c, &url, "sk-fleet", &chat_body("echo/x", "hi", false)).await;
            assert!(s.status == 200 || s.status == 429, "{}", s.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Shared again: 3 at once for the whole fleet, not 3 per instance.
    let mut ok = 0;
    for i in 0..9 {
        let s = shoot(
            &c,
            &chat_urls[i % 3],
            "sk-after",
            &chat_body("echo/x", "hi", false),
        )
        .await;
        assert!(s.status == 200 || s.status == 429, "{}", s.status);
        ok += usize::from(s.status == 200);
    }
    assert_eq!(ok, 3, "one shared bucket after the failover");
    // And the cache: stored through one, a hit on another.
    assert_eq!(ask(0, "after").await, (200, "MISS".to_string()));
    assert_eq!(ask(2, "after").await, (200, "HIT".to_string()));
    drop(cluster);
}
