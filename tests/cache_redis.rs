//! Issue 5: the Redis cache backend against a real `redis-server` that each test starts on a
//! free loopback port and stops by its PID: entries shared by two gateway instances, compact
//! values with TTLs, an outage that degrades to misses, recovery, coalescing, and semantic
//! vectors shared through Redis.

mod cache_support;
mod common;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_support::*;
use common::*;
use redis_support::RedisServer;

fn redis_gateway(mock: &Mock, redis_url: &str, extra: &[(&str, &str)]) -> Gateway {
    let url = mock.url();
    let mut vars: Vec<(&str, &str)> = vec![
        ("OPENAI_BASE_URL", &url),
        ("GATEWAY_CACHE_BACKEND", "redis"),
        ("GATEWAY_REDIS_URL", redis_url),
    ];
    vars.extend_from_slice(extra);
    Gateway::start(&vars)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_entries() {
    let redis = RedisServer::start();
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let a = redis_gateway(&mock, &redis.url(), &[("GATEWAY_CACHE_TTL", "120")]);
    let b = redis_gateway(&mock, &redis.url(), &[("GATEWAY_CACHE_TTL", "120")]);

    let r = post(&a, &chat("shared"), &[]).await;
    assert_eq!((r.cache(), r.content().as_str()), ("MISS", "answer 1"));
    let r = post(&b, &chat("shared"), &[]).await;
    assert_eq!(
        (r.cache(), r.content().as_str()),
        ("HIT", "answer 1"),
        "{}",
        b.logs()
    );
    let ttl: u64 = r.h("x-cache-ttl").unwrap().parse().unwrap();
    assert!((100..=120).contains(&ttl), "{ttl}");
    assert_eq!(r.h("x-provider"), Some("openai"));
    assert_eq!(r.json()["usage"]["total_tokens"], 18);

    // A stream stored by one instance serves a plain request on the other.
    let r = post(&b, &chat_body("openai/gpt-4o", "streamed", true), &[]).await;
    assert_eq!(r.cache(), "MISS");
    let r = post(&a, &chat("streamed"), &[]).await;
    assert_eq!((r.cache(), r.content().as_str()), ("HIT", "answer 2"));
    assert_eq!(mock.calls(), 2);

    // What is in Redis: prefixed keys with the TTL set, compact values.
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aigw:cache:e:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        assert_eq!(k.len(), "aigw:cache:e:".len() + 64);
        let ttl: i64 = redis::cmd("TTL").arg(k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0 && ttl <= 120, "{k}: {ttl}");
        let v: Vec<u8> = redis::cmd("GET").arg(k).query_async(&mut c).await.unwrap();
        assert!(
            v.len() < 120,
            "{} bytes: {}",
            v.len(),
            String::from_utf8_lossy(&v)
        );
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["p"], "openai");
    }

    // Another prefix is another cache.
    let other = redis_gateway(&mock, &redis.url(), &[("GATEWAY_CACHE_PREFIX", "tenant2:")]);
    assert_eq!(post(&other, &chat("shared"), &[]).await.cache(), "MISS");
    assert_eq!(post(&other, &chat("shared"), &[]).await.cache(), "HIT");
    assert_eq!(mock.calls(), 3);
}

/// An answer is stored before the client has all of it, so the client's next request, sent to
/// another instance the moment the first one ends, finds it: plain and streamed, many times over
/// (storing after the write left a window that this loop would fall into).
#[tokio::test(flavor = "multi_thread")]
async fn the_next_request_sees_the_stored_answer_at_once() {
    let redis = RedisServer::start();
    let (h, _) = numbered(Duration::ZERO);
    let mock = Mock::start(h).await;
    let a = redis_gateway(&mock, &redis.url(), &[]);
    let b = redis_gateway(&mock, &redis.url(), &[]);
    for i in 0..20 {
        let stream = i % 2 == 1;
        let prompt = format!("at once {i}");
        let first = post(&a, &chat_body("openai/gpt-4o", &prompt, stream), &[]).await;
        assert_eq!(first.cache(), "MISS", "{i}");
        let next = post(&b, &chat(&prompt), &[]).await;
        assert_eq!(next.cache(), "HIT", "request {i} (stream: {stream})");
    }
    assert_eq!(mock.calls(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_degrades_to_misses_and_the_cache_comes_back() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let mock = Mock::start(openai_handler("still here")).await;
    let gw = redis_gateway(&mock, &redis.url(), &[]);
    assert_eq!(post(&gw, &chat("a"), &[]).await.cache(), "MISS");
    assert_eq!(post(&gw, &chat("a"), &[]).await.cache(), "HIT");
    assert_eq!(mock.calls(), 1);

    redis.stop();
    let start = Instant::now();
    for (text, stream) in [("a", false), ("b", false), ("b", false), ("c", true)] {
        let r = post(&gw, &chat_body("openai/gpt-4o", text, stream), &[]).await;
        assert_eq!(r.status, 200, "{text}: {}", r.body);
        assert_eq!(r.cache(), "MISS", "{text}");
        assert!(r.body.contains("still"), "{text}: {}", r.body);
        // The answer reaches the client before the (failing) store: until that ends, an
        // identical request is served the answer in flight by design (coalescing). The access
        // line is written after it, so waiting for it makes the repeated "b" a fresh request.
        let id = r.h("x-request-id").unwrap_or_default().to_string();
        assert!(
            gw.wait_log(&format!("req={id}"), Duration::from_secs(10)),
            "{}",
            gw.logs()
        );
    }
    assert_eq!(mock.calls(), 5, "every request went upstream");
    // Each cache call is bounded; four requests take nowhere near the sum of the timeouts.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(
        gw.wait_log("Redis", Duration::from_secs(5)),
        "no warning about Redis:\n{}",
        gw.logs()
    );
    assert!(
        gw.logs()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("WARN") && l.contains("Redis")),
        "{}",
        gw.logs()
    );

    // Redis is back on the same port: the cache works again without a restart.
    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = false;
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let text = format!("after {i}");
        post(&gw, &chat(&text), &[]).await;
        if post(&gw, &chat(&text), &[]).await.cache() == "HIT" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "the cache did not come back:\n{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_at_start_serves_without_the_cache() {
    let port = free_port();
    let mock = Mock::start(openai_handler("no redis")).await;
    let gw = redis_gateway(&mock, &format!("redis://127.0.0.1:{port}"), &[]);
    for _ in 0..3 {
        let r = post(&gw, &chat("x"), &[]).await;
        assert_eq!((r.status, r.cache()), (200, "MISS"), "{}", r.body);
    }
    assert_eq!(mock.calls(), 3);
    // Once Redis is up, the first connection is made and entries are kept.
    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hit = false;
    while !hit && Instant::now() < deadline {
        post(&gw, &chat("y"), &[]).await;
        hit = post(&gw, &chat("y"), &[]).await.cache() == "HIT";
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(hit, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_requests_make_one_upstream_call() {
    let redis = RedisServer::start();
    let (h, _) = numbered(Duration::from_millis(1500));
    let mock = Mock::start(h).await;
    let gw = Arc::new(redis_gateway(&mock, &redis.url(), &[]));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { post(&gw, &chat("together"), &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(mock.calls(), 1);
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.content() == "answer 1"));
    assert_eq!(replies.iter().filter(|r| r.cache() == "MISS").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn semantic_vectors_are_shared_through_redis() {
    let redis = RedisServer::start();
    let (h, _) = numbered(Duration::ZERO);
    let chat_mock = Mock::start(h).await;
    let emb_mock = Mock::start(embeddings()).await;
    let emb = emb_mock.url();
    let sem: &[(&str, &str)] = &[
        ("GATEWAY_PROVIDER_EMB_BASE_URL", &emb),
        ("GATEWAY_SEMANTIC_CACHE", "on"),
        ("GATEWAY_SEMANTIC_CACHE_MODEL", "emb/text-embedding-3-small"),
    ];
    let a = redis_gateway(&chat_mock, &redis.url(), sem);
    let b = redis_gateway(&chat_mock, &redis.url(), sem);
    // Stored on A, paraphrase answered by B: the vector came through Redis.
    semantic_checks(&a, &b, &chat_mock, &emb_mock).await;
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aigw:cache:s:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "{ttl}");
}
