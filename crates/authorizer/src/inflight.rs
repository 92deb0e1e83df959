//! Requests in flight in this process, by idempotency key, and the answers finished
//! recently. A duplicate that arrives while the first is still being processed waits for
//! the first's answer instead of taking a database connection to block on the same keys;
//! a duplicate of a recently finished request is answered from memory, identically, even
//! when the database is too busy to look it up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many finished answers are kept, and for how long: the processor retries within
/// minutes, and the database keeps every answer for good.
const RECENT_MAX: usize = 100_000;
const RECENT_TTL: Duration = Duration::from_secs(600);

/// A finished answer, shared with waiting duplicates.
#[derive(Clone, Debug)]
pub struct Finished {
    pub request_hash: [u8; 32],
    pub status: u16,
    pub body: Arc<Vec<u8>>,
}

type Slot = watch::Receiver<Option<Finished>>;

#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<String, Slot>>,
    recent: Mutex<Recent>,
}

/// Finished answers by key, oldest first for eviction.
#[derive(Default)]
struct Recent {
    answers: HashMap<String, Finished>,
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    fn insert(&mut self, key: String, answer: Finished) {
        let now = Instant::now();
        while let Some((at, _)) = self.order.front() {
            if self.order.len() < RECENT_MAX && now.duration_since(*at) < RECENT_TTL {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
        if self.answers.insert(key.clone(), answer).is_none() {
            self.order.push_back((now, key));
        }
    }

    fn get(&self, key: &str) -> Option<Finished> {
        self.answers.get(key).cloned()
    }
}

/// The result of claiming a key.
pub enum Claim {
    /// This request processes the key; finish (or drop) the guard when done.
    Owner(Guard),
    /// Another request holds the key; wait on this.
    Duplicate(Slot),
    /// The key finished recently: its stored answer.
    Finished(Finished),
}

/// Held by the request that processes a key. Dropping it without finishing lets
/// waiters go to the database themselves.
pub struct Guard {
    owner: Arc<InFlight>,
    key: String,
    tx: watch::Sender<Option<Finished>>,
}

impl Guard {
    /// Shares a durably stored answer with waiting duplicates and later ones.
    pub fn finish(self, answer: Finished) {
        if let Ok(mut r) = self.owner.recent.lock() {
            r.insert(self.key.clone(), answer.clone());
        }
        let _ = self.tx.send(Some(answer));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.owner.map.lock() {
            m.remove(&self.key);
        }
    }
}

impl InFlight {
    pub fn claim(self: &Arc<Self>, key: &str) -> Claim {
        let Ok(mut m) = self.map.lock() else {
            // A poisoned map only loses the in-process shortcut; the database still
            // guarantees a single booking.
            let (tx, _) = watch::channel(None);
            return Claim::Owner(Guard {
                owner: self.clone(),
                key: String::new(),
                tx,
            });
        };
        if let Some(rx) = m.get(key) {
            return Claim::Duplicate(rx.clone());
        }
        if let Some(done) = self.recent.lock().ok().and_then(|r| r.get(key)) {
            return Claim::Finished(done);
        }
        let (tx, rx) = watch::channel(None);
        m.insert(key.to_owned(), rx);
        Claim::Owner(Guard {
            owner: self.clone(),
            key: key.to_owned(),
            tx,
        })
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What waiting on a duplicate produced.
pub enum Waited {
    Answer(Finished),
    /// The first request ended without an answer to share (it failed): go to the store.
    Abandoned,
    /// Still in flight after the wait bound.
    TimedOut,
}

pub async fn wait(mut slot: Slot, bound: std::time::Duration) -> Waited {
    match tokio::time::timeout(bound, slot.wait_for(Option::is_some)).await {
        Ok(Ok(v)) => v.clone().map(Waited::Answer).unwrap_or(Waited::Abandoned),
        Ok(Err(_)) => Waited::Abandoned,
        Err(_) => Waited::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn duplicate_gets_the_owners_answer() {
        let f = Arc::new(InFlight::default());
        let Claim::Owner(g) = f.claim("k") else {
            panic!("first claim must own")
        };
        let Claim::Duplicate(slot) = f.claim("k") else {
            panic!("second claim must wait")
        };
        let waiter = tokio::spawn(wait(slot, Duration::from_secs(5)));
        g.finish(Finished {
            request_hash: [1; 32],
            status: 200,
            body: Arc::new(b"ok".to_vec()),
        });
        match waiter.await.unwrap() {
            Waited::Answer(a) => assert_eq!(&a.body[..], b"ok"),
            _ => panic!("expected the answer"),
        }
        assert!(f.is_empty());
        // Later duplicates get the finished answer without anyone processing them.
        match f.claim("k") {
            Claim::Finished(a) => assert_eq!(&a.body[..], b"ok"),
            _ => panic!("expected the finished answer"),
        }
    }

    #[tokio::test]
    async fn only_finished_answers_are_remembered() {
        let f = Arc::new(InFlight::default());
        let Claim::Owner(g) = f.claim("failed") else {
            panic!()
        };
        drop(g);
        assert!(
            matches!(f.claim("failed"), Claim::Owner(_)),
            "a failure is not an answer"
        );
    }

    #[test]
    fn recent_answers_are_bounded() {
        let mut r = Recent::default();
        let a = Finished {
            request_hash: [0; 32],
            status: 200,
            body: Arc::new(vec![]),
        };
        for i in 0..RECENT_MAX + 10 {
            r.insert(format!("k{i}"), a.clone());
        }
        assert_eq!(r.answers.len(), RECENT_MAX);
        assert!(r.get("k0").is_none() && r.get(&format!("k{}", RECENT_MAX + 9)).is_some());
    }

    #[tokio::test]
    async fn abandoned_and_timed_out() {
        let f = Arc::new(InFlight::default());
        let Claim::Owner(g) = f.claim("k") else {
            panic!()
        };
        let Claim::Duplicate(slot) = f.claim("k") else {
            panic!()
        };
        assert!(matches!(
            wait(slot.clone(), Duration::from_millis(20)).await,
            Waited::TimedOut
        ));
        drop(g);
        assert!(matches!(
            wait(slot, Duration::from_secs(5)).await,
            Waited::Abandoned
        ));
    }
}
