//! Idle plain-HTTP/1.1 upstream connections, kept for the next request to the same upstream.
//!
//! Pingora's connection pool spawns a task for every connection it takes back, to watch it
//! while idle (an LRU entry, a map entry, a oneshot channel, an `Arc<Mutex<_>>`, and the task
//! scheduled twice more: once when a request takes the connection and the watcher exits). With
//! one upstream exchange per request that was about 4 µs of CPU per pass-through request, a
//! tenth of it (same-run A/B in `benches/RESULTS.md`). This pool keeps no task: a connection
//! is checked when it is taken (still open, no unexpected bytes, not idle too long) and
//! connections past the idle limit are closed whenever another one is put back.
//!
//! Per upstream (Pingora's reuse hash: address, TLS, SNI, options) the most recently returned
//! connection is taken first (its socket buffers are the warmest, and the older ones reach the
//! idle limit and close), and at most `per_key` are kept.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct IdlePool<S> {
    idle: Mutex<HashMap<u64, VecDeque<(S, Instant)>>>,
    max_idle: Duration,
    per_key: usize,
}

impl<S> IdlePool<S> {
    pub fn new(max_idle: Duration, per_key: usize) -> Self {
        IdlePool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            per_key: per_key.max(1),
        }
    }

    /// The most recently returned connection for `key` that has not been idle too long and
    /// that `usable` accepts. The others met on the way are closed (outside the lock).
    pub fn take(&self, key: u64, mut usable: impl FnMut(&mut S) -> bool) -> Option<S> {
        loop {
            // An emptied queue stays: upstreams are few, and the next put reuses it.
            let (mut conn, since) = self.idle.lock().get_mut(&key)?.pop_back()?;
            if since.elapsed() < self.max_idle && usable(&mut conn) {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request to `key`. Connections for `key` past the idle limit,
    /// and the oldest beyond `per_key`, are closed (outside the lock).
    pub fn put(&self, key: u64, conn: S) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut idle = self.idle.lock();
            let queue = idle.entry(key).or_default();
            while let Some((_, since)) = queue.front() {
                if queue.len() >= self.per_key || now.duration_since(*since) >= self.max_idle {
                    closed.extend(queue.pop_front());
                } else {
                    break;
                }
            }
            queue.push_back((conn, now));
        }
        drop(closed);
    }

    /// Connections kept for `key`.
    #[cfg(test)]
    fn len(&self, key: u64) -> usize {
        self.idle.lock().get(&key).map_or(0, VecDeque::len)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.idle.lock().values().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_per_key_and_unusable_ones_skipped() {
        let pool = IdlePool::new(Duration::from_secs(60), 8);
        pool.put(1, "a");
        pool.put(1, "b");
        pool.put(2, "x");
        assert_eq!(pool.take(1, |_| true), Some("b"));
        // "a" is refused: closed, and the key is empty afterwards.
        assert_eq!(pool.take(1, |c| *c != "a"), None);
        assert_eq!(pool.len(1), 0);
        assert_eq!(pool.take(2, |_| true), Some("x"));
        assert!(pool.is_empty());
    }

    #[test]
    fn at_most_per_key_kept_oldest_closed_first() {
        let pool = IdlePool::new(Duration::from_secs(60), 2);
        for c in ["a", "b", "c"] {
            pool.put(7, c);
        }
        assert_eq!(pool.len(7), 2);
        assert_eq!(pool.take(7, |_| true), Some("c"));
        assert_eq!(pool.take(7, |_| true), Some("b"));
        assert_eq!(pool.take(7, |_| true), None);
    }

    #[test]
    fn idle_too_long_is_never_taken_and_is_closed_on_the_next_put() {
        let pool = IdlePool::new(Duration::from_millis(30), 8);
        pool.put(1, "old");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(pool.take(1, |_| true), None);
        pool.put(1, "old2");
        std::thread::sleep(Duration::from_millis(40));
        pool.put(1, "new");
        assert_eq!(pool.len(1), 1);
        assert_eq!(pool.take(1, |_| true), Some("new"));
    }
}
