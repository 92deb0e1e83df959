//! Card rules (status, owner, blocked MCCs) cached in this instance, so an authorization
//! does not read the card in its transaction. The balance, and the account's own rules
//! (columns of the row it locks for the balance), are always read under the row lock.
//!
//! Staleness is bounded three ways: an admin change invalidates the entry here at once
//! and, through Redis pub/sub, on every instance; an entry is never used longer than
//! `rules.cache_ttl_ms` (a lost message cannot keep a stale rule); and with Redis
//! configured the cache is used only while the subscriber is subscribed (flushed on every
//! resubscribe; while it is down, card rules are read in the transaction, as without a
//! cache). A read that started before an invalidation never fills the cache (epochs).

use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{CardRecord, Store};

/// A card's rules as cached: `None` when we hold no record for the card.
pub type CachedCard = Option<Arc<CardRecord>>;

pub struct RulesCache {
    cards: Mutex<HashMap<String, (CachedCard, Instant)>>,
    /// Bumped (under the map's lock) by every invalidation and flush.
    epoch: AtomicU64,
    live: AtomicBool,
    ttl: Duration,
    entries_max: usize,
    metrics: Arc<Metrics>,
}

impl RulesCache {
    /// A cache whose entries live `ttl` (zero disables it), live from the start.
    pub fn new(ttl: Duration, entries_max: usize, metrics: Arc<Metrics>) -> RulesCache {
        RulesCache {
            cards: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(true),
            ttl,
            entries_max: entries_max.max(1),
            metrics,
        }
    }

    /// Whether lookups may use and fill the cache (false while the subscriber is down).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst) && !self.ttl.is_zero()
    }

    /// The card's rules from the cache, reading (and caching) them on a miss. `None`: use
    /// no cached rules (cache off or not live, or the read failed): the transaction reads
    /// the card itself.
    pub async fn card(&self, store: &Store, card_id: &str) -> Option<CachedCard> {
        let epoch = match self.probe(card_id) {
            Ok(cached) => return cached,
            Err(epoch) => epoch,
        };
        let record = store.card_record(card_id).await.ok()?.map(Arc::new);
        self.fill(card_id, record.clone(), epoch);
        Some(record)
    }

    /// The card's rules from the cache without reading them on a miss: `Err(epoch)` on a
    /// miss, to pass to [`RulesCache::fill_read`] with what a read begun after this call
    /// found (grouped commits read the card in the batch's one read statement);
    /// `Ok(None)` when the cache is not in use.
    pub fn probe(&self, card_id: &str) -> Result<Option<CachedCard>, u64> {
        if !self.is_live() {
            self.metrics
                .inc("authorizer_rules_cache_misses_total", &[("kind", "card")]);
            return Ok(None);
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(hit) = self.get(card_id) {
            self.metrics
                .inc("authorizer_rules_cache_hits_total", &[("kind", "card")]);
            return Ok(Some(hit));
        }
        self.metrics
            .inc("authorizer_rules_cache_misses_total", &[("kind", "card")]);
        Err(epoch)
    }

    /// Caches what a read begun after [`RulesCache::probe`] returned `Err(epoch)` found,
    /// unless the card was invalidated since.
    pub fn fill_read(&self, card_id: &str, record: Option<store::CardRecord>, epoch: u64) {
        self.fill(card_id, record.map(Arc::new), epoch);
    }

    fn get(&self, card_id: &str) -> Option<CachedCard> {
        let m = self.cards.lock().ok()?;
        let (v, at) = m.get(card_id)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Caches a value read after `epoch` was observed, unless an invalidation came since.
    fn fill(&self, card_id: &str, value: CachedCard, epoch: u64) {
        let Ok(mut m) = self.cards.lock() else { return };
        if self.epoch.load(Ordering::SeqCst) != epoch || !self.live.load(Ordering::SeqCst) {
            return;
        }
        if m.len() >= self.entries_max {
            let ttl = self.ttl;
            m.retain(|_, (_, at)| at.elapsed() < ttl);
            if m.len() >= self.entries_max {
                m.clear();
            }
        }
        m.insert(card_id.to_owned(), (value, Instant::now()));
    }

    /// Forgets one card's rules; `source` labels the metric (local, fleet).
    pub fn invalidate(&self, card_id: &str, source: &'static str) {
        if let Ok(mut m) = self.cards.lock() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            m.remove(card_id);
        }
        self.metrics.inc(
            "authorizer_rules_cache_invalidations_total",
            &[("source", source)],
        );
    }

    /// Forgets everything (the subscriber reconnected and may have missed messages).
    pub fn flush(&self, source: &'static str) {
        if let Ok(mut m) = self.cards.lock() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            m.clear();
        }
        self.metrics.inc(
            "authorizer_rules_cache_invalidations_total",
            &[("source", source)],
        );
    }

    pub fn len(&self) -> usize {
        self.cards.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::{CardStatus, MccSet};

    fn record(status: CardStatus) -> CachedCard {
        Some(Arc::new(CardRecord {
            user_id: "u".into(),
            status,
            blocked_mccs: MccSet::default(),
            controls: None,
        }))
    }

    fn cache() -> RulesCache {
        RulesCache::new(Duration::from_secs(60), 3, Arc::new(Metrics::new()))
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c = cache();
        let epoch = c.epoch.load(Ordering::SeqCst);
        // The admin change lands while the (old) value is being read.
        c.invalidate("crd", "local");
        c.fill("crd", record(CardStatus::Active), epoch);
        assert!(
            c.get("crd").is_none(),
            "a stale read must not fill the cache"
        );
        let epoch = c.epoch.load(Ordering::SeqCst);
        c.fill("crd", record(CardStatus::Blocked), epoch);
        assert_eq!(
            c.get("crd").unwrap().unwrap().status,
            CardStatus::Blocked,
            "a read after the change fills it"
        );
    }

    #[test]
    fn invalidate_flush_and_not_live() {
        let c = cache();
        let e = c.epoch.load(Ordering::SeqCst);
        c.fill("a", None, e);
        assert!(matches!(c.get("a"), Some(None)), "absence is cached too");
        c.invalidate("a", "fleet");
        assert!(c.get("a").is_none());
        let e = c.epoch.load(Ordering::SeqCst);
        c.fill("b", None, e);
        c.flush("reconnect");
        assert!(c.is_empty());
        c.set_live(false);
        let e = c.epoch.load(Ordering::SeqCst);
        c.fill("c", None, e);
        assert!(c.is_empty(), "nothing is cached while not live");
        assert!(!c.is_live());
    }

    #[test]
    fn bounded_and_expiring() {
        let c = cache();
        for k in ["a", "b", "c", "d"] {
            let e = c.epoch.load(Ordering::SeqCst);
            c.fill(k, None, e);
        }
        assert!(c.len() <= 3);
        let c = RulesCache::new(Duration::ZERO, 3, Arc::new(Metrics::new()));
        assert!(!c.is_live(), "a zero ttl disables the cache");
    }
}
