//! Where entries live: the [`Backend`] trait and the in-memory backend (`moka`). The Redis
//! backend is in `redis.rs`.
//!
//! Backends never fail a request: an unreachable store answers "nothing here" and drops
//! writes, so the request proceeds as a miss.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache as Moka;
use moka::Expiry;
use parking_lot::Mutex;

use super::entry::Entry;
use super::key::Key;

/// Most vectors kept for one semantic context (one system prompt and history). Past it, new
/// vectors replace old ones, so a busy context keeps its most recent questions.
pub const MAX_VECTORS_PER_CONTEXT: usize = 256;

/// A stored entry and how long it has left.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Arc<Entry>,
    pub ttl_left: Duration,
}

#[async_trait]
pub trait Backend: Send + Sync {
    async fn get(&self, key: &Key) -> Option<Hit>;
    async fn put(&self, key: &Key, entry: Arc<Entry>, ttl: Duration);
    /// Indexes `key` under a semantic context with the (unit-length) embedding of its final
    /// user message.
    async fn add_vector(&self, context: &Key, key: &Key, vector: Arc<[f32]>, ttl: Duration);
    /// Every vector indexed under a context, with the entry key it points to.
    async fn vectors(&self, context: &Key) -> Vec<(Key, Arc<[f32]>)>;
    /// Entries held, where the backend can tell cheaply (for the cache size metric).
    fn entries(&self) -> Option<u64> {
        None
    }
}

#[derive(Clone)]
struct MemEntry {
    entry: Arc<Entry>,
    ttl: Duration,
    expires: Instant,
}

/// Each entry lives for its own TTL (the configured one, or less when the request asked).
struct OwnTtl;

impl Expiry<Key, MemEntry> for OwnTtl {
    fn expire_after_create(&self, _k: &Key, v: &MemEntry, _at: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _k: &Key,
        v: &MemEntry,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

struct Vector {
    key: Key,
    vector: Arc<[f32]>,
    expires: Instant,
}

/// What an entry costs beside its answer's bytes (its structs, key and moka's node).
const ENTRY_OVERHEAD: usize = 256;

pub struct Memory {
    entries: Moka<Key, MemEntry>,
    contexts: Moka<Key, Arc<Mutex<VecDeque<Vector>>>>,
}

impl Memory {
    /// At most `max_entries` entries and `max_bytes` bytes of them: moka weighs each entry, its
    /// bytes plus `max_bytes / max_entries`, against `max_bytes`, so neither bound is passed
    /// (many small entries are bounded by their count, a few large ones by their bytes).
    pub fn new(max_entries: u64, max_bytes: u64, ttl: Duration) -> Self {
        let floor = max_bytes / max_entries.max(1);
        Memory {
            entries: Moka::builder()
                .max_capacity(max_bytes)
                .weigher(move |_k: &Key, v: &MemEntry| {
                    let bytes = (v.entry.size() + v.entry.provider.len() + ENTRY_OVERHEAD) as u64;
                    u32::try_from(bytes.saturating_add(floor)).unwrap_or(u32::MAX)
                })
                .expire_after(OwnTtl)
                .build(),
            contexts: Moka::builder()
                .max_capacity(max_entries)
                .time_to_idle(ttl)
                .build(),
        }
    }

    /// Entries currently held (after pending evictions have run).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Backend for Memory {
    fn entries(&self) -> Option<u64> {
        Some(self.entries.entry_count())
    }

    async fn get(&self, key: &Key) -> Option<Hit> {
        let e = self.entries.get(key)?;
        let ttl_left = e.expires.checked_duration_since(Instant::now())?;
        Some(Hit {
            entry: e.entry,
            ttl_left,
        })
    }

    async fn put(&self, key: &Key, entry: Arc<Entry>, ttl: Duration) {
        self.entries.insert(
            *key,
            MemEntry {
                entry,
                ttl,
                expires: Instant::now() + ttl,
            },
        );
        // moka evicts in batches; running them now keeps the entry count within
        // GATEWAY_CACHE_MAX_SIZE at every moment, not just eventually. Writes are rare (one
        // per upstream answer), so this costs little.
        self.entries.run_pending_tasks();
    }

    async fn add_vector(&self, context: &Key, key: &Key, vector: Arc<[f32]>, ttl: Duration) {
        let list = self.contexts.get_with(*context, Default::default);
        let now = Instant::now();
        let mut l = list.lock();
        l.retain(|v| v.expires > now && v.key != *key);
        while l.len() >= MAX_VECTORS_PER_CONTEXT {
            l.pop_front();
        }
        l.push_back(Vector {
            key: *key,
            vector,
            expires: now + ttl,
        });
    }

    async fn vectors(&self, context: &Key) -> Vec<(Key, Arc<[f32]>)> {
        let Some(list) = self.contexts.get(context) else {
            return Vec::new();
        };
        let now = Instant::now();
        let l = list.lock();
        l.iter()
            .filter(|v| v.expires > now)
            .map(|v| (v.key, v.vector.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Answer;

    fn entry(text: &str) -> Arc<Entry> {
        Arc::new(Entry {
            provider: "p".into(),
            model: None,
            answer: Answer {
                content: Some(text.into()),
                finish_reason: "stop".into(),
                ..Default::default()
            },
        })
    }

    fn key(i: u8) -> Key {
        Key([i; 32])
    }

    #[tokio::test]
    async fn bounded_and_expiring() {
        let m = Memory::new(3, 1 << 30, Duration::from_secs(60));
        for i in 0..20 {
            m.put(&key(i), entry("x"), Duration::from_secs(60)).await;
            assert!(m.len() <= 3, "after {i}: {}", m.len());
        }
        let m = Memory::new(10, 1 << 30, Duration::from_secs(60));
        m.put(&key(1), entry("short"), Duration::from_millis(50))
            .await;
        m.put(&key(2), entry("long"), Duration::from_secs(60)).await;
        let h = m.get(&key(2)).await.unwrap();
        assert!(h.ttl_left <= Duration::from_secs(60) && h.ttl_left > Duration::from_secs(50));
        assert_eq!(h.entry.answer.content.as_deref(), Some("long"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(m.get(&key(1)).await.is_none());
        assert!(m.get(&key(2)).await.is_some());
    }

    #[tokio::test]
    async fn bounded_in_bytes() {
        // Room for 100 entries but 200 KB: answers of 30 KB fit six at a time at most.
        let m = Memory::new(100, 200_000, Duration::from_secs(60));
        let big = "x".repeat(30_000);
        for i in 0..20 {
            m.put(&key(i), entry(&big), Duration::from_secs(60)).await;
            assert!(m.len() <= 6, "after {i}: {} entries", m.len());
            assert!(m.entries.weighted_size() <= 200_000);
        }
        assert!(!m.is_empty());
        // Small answers are bounded by their count.
        let m = Memory::new(5, 1 << 30, Duration::from_secs(60));
        for i in 0..20 {
            m.put(&key(i), entry("x"), Duration::from_secs(60)).await;
            assert!(m.len() <= 5, "after {i}: {} entries", m.len());
        }
    }

    #[tokio::test]
    async fn vectors_per_context_are_capped() {
        let m = Memory::new(10, 1 << 30, Duration::from_secs(60));
        let ctx = key(200);
        for i in 0..(MAX_VECTORS_PER_CONTEXT + 10) {
            let k = Key([
                (i % 250) as u8,
                (i / 250) as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            m.add_vector(
                &ctx,
                &k,
                Arc::from(vec![1.0f32, 0.0]),
                Duration::from_secs(60),
            )
            .await;
        }
        assert_eq!(m.vectors(&ctx).await.len(), MAX_VECTORS_PER_CONTEXT);
        assert!(m.vectors(&key(201)).await.is_empty());
    }
}
