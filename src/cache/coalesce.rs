//! Request coalescing: while one plain request for a key is in flight upstream (the leader),
//! identical ones (followers) wait for its answer instead of making their own call.
//!
//! A leader that ends without a storable answer (an error, a client gone, an answer that may
//! not be cached) releases its followers empty-handed and each proceeds on its own, so one
//! failure is never fanned out to everyone who happened to ask at the same time.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::backend::Hit;
use super::key::Key;

type Slot = watch::Receiver<Option<Hit>>;

#[derive(Default)]
pub struct Inflight {
    map: Arc<Mutex<HashMap<Key, Slot>>>,
}

pub enum Join {
    Leader(Leader),
    Follower(Slot),
}

/// Held by the request that goes upstream; dropping it releases the followers.
pub struct Leader {
    key: Key,
    tx: watch::Sender<Option<Hit>>,
    map: Arc<Mutex<HashMap<Key, Slot>>>,
}

impl Inflight {
    pub fn join(&self, key: &Key) -> Join {
        let mut map = self.map.lock();
        if let Some(rx) = map.get(key) {
            return Join::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(*key, rx);
        Join::Leader(Leader {
            key: *key,
            tx,
            map: self.map.clone(),
        })
    }

    /// Keys with a leader in flight.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Leader {
    /// Hands the answer to every follower (and to any that joins until this is dropped).
    pub fn publish(&self, hit: Hit) {
        self.tx.send_replace(Some(hit));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Only this leader can hold the slot for its key: a new one is made only after
        // this removal.
        self.map.lock().remove(&self.key);
    }
}

/// Waits for the leader: its answer, or `None` when it ended without one.
pub async fn follow(mut rx: Slot) -> Option<Hit> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Answer;
    use crate::cache::entry::Entry;
    use std::time::Duration;

    #[tokio::test]
    async fn followers_get_the_leaders_answer_or_go_alone() {
        let f = Inflight::default();
        let k = Key([1; 32]);
        let Join::Leader(leader) = f.join(&k) else {
            panic!("first is the leader")
        };
        let Join::Follower(a) = f.join(&k) else {
            panic!("second follows")
        };
        let Join::Follower(b) = f.join(&k) else {
            panic!("third follows")
        };
        let wa = tokio::spawn(follow(a));
        let entry = Arc::new(Entry {
            provider: "p".into(),
            model: None,
            answer: Answer::default(),
        });
        leader.publish(Hit {
            entry: entry.clone(),
            ttl_left: Duration::from_secs(5),
        });
        assert_eq!(wa.await.unwrap().map(|h| h.entry), Some(entry.clone()));
        // Late joiners see the answer at once while the leader is still finishing.
        let Join::Follower(late) = f.join(&k) else {
            panic!("still in flight")
        };
        assert_eq!(follow(late).await.map(|h| h.entry), Some(entry.clone()));
        drop(leader);
        // A follower that subscribed before the publish but looks after it still sees it.
        assert_eq!(follow(b).await.map(|h| h.entry), Some(entry));
        assert!(f.is_empty());

        let Join::Leader(leader) = f.join(&k) else {
            panic!("slot was freed")
        };
        let Join::Follower(c) = f.join(&k) else {
            panic!("follows")
        };
        drop(leader);
        assert!(follow(c).await.is_none());
        assert!(f.is_empty());
    }
}
