//! Per-window counters of an account or a card: what has been spent and how many debits
//! were approved in each window a limit reads.

use std::fmt;

use rustc_hash::FxHashMap;

use super::evaluate::Owner;
use super::{Categories, CategoryItem, WindowKey};

/// Names one counter of one owner: a window, and the categories it counts (`None`: all).
/// Limits of the same window and categories share a counter, whether they cap money or
/// count authorizations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub window: WindowKey,
    pub categories: Option<Categories>,
}

impl fmt::Display for CounterKey {
    /// `monthly:2026-12` or `monthly:2026-12|5811-5814,gambling`: the stored form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.window)?;
        if let Some(c) = &self.categories {
            write!(f, "|{}", c.to_strings().join(","))?;
        }
        Ok(())
    }
}

impl CounterKey {
    /// Reads a counter row's columns: its window key and its category filter (`''`: every
    /// category), as `crate::plan::CounterWrite::columns` writes them.
    pub fn from_columns(window: &str, categories: &str) -> Option<CounterKey> {
        if categories.is_empty() {
            CounterKey::parse(window)
        } else {
            CounterKey::parse(&format!("{window}|{categories}"))
        }
    }

    /// Reads the stored form written by `Display`.
    pub fn parse(s: &str) -> Option<CounterKey> {
        let (window, cats) = match s.split_once('|') {
            Some((w, c)) => (w, Some(c)),
            None => (s, None),
        };
        let categories = match cats {
            None => None,
            Some(c) => Some(Categories::new(
                c.split(',')
                    .map(CategoryItem::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?,
            )),
        };
        Some(CounterKey {
            window: WindowKey::parse(window)?,
            categories,
        })
    }
}

/// What a window has counted: minor units of the owner's controls currency, and approved
/// debits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub amount: i64,
    pub count: i64,
}

impl Counter {
    /// Adds a delta (negative: a give-back). A counter never goes below zero: a give-back
    /// cannot make room that was never taken.
    pub fn add(&mut self, amount: i64, count: i64) {
        self.amount = self.amount.saturating_add(amount).max(0);
        self.count = self.count.saturating_add(count).max(0);
    }
}

/// An owner's counters in the form kept on its own row (an account's `counters` column):
/// one line per counter that has counted something, `key amount count`, in key order. A
/// key never holds a space or a line break (window keys, MCC codes, ranges and group names).
pub fn encode_counters<'a>(
    counters: impl IntoIterator<Item = (&'a CounterKey, &'a Counter)>,
) -> String {
    let mut rows: Vec<_> = counters
        .into_iter()
        .filter(|(_, c)| c.amount != 0 || c.count != 0)
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (key, c) in rows {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{key} {} {}", c.amount, c.count));
    }
    out
}

/// Reads [`encode_counters`]' form; a line that does not read is skipped (it counted in a
/// window no request reads any more, or was never written by this code).
pub fn decode_counters(text: &str) -> impl Iterator<Item = (CounterKey, Counter)> + '_ {
    text.lines().filter_map(|line| {
        let mut parts = line.rsplitn(3, ' ');
        let count = parts.next()?.parse().ok()?;
        let amount = parts.next()?.parse().ok()?;
        let key = CounterKey::parse(parts.next()?)?;
        Some((key, Counter { amount, count }))
    })
}

/// A change to one counter, written by the plan with the batch (and kept with the
/// authorization, so that a reversal gives back exactly what it took).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterDelta {
    pub owner: Owner,
    pub key: CounterKey,
    pub amount: i64,
    pub count: i64,
}

/// Where [`super::evaluate`] reads what a window has counted so far. The plan answers from
/// the counters the store prefetched for the batch, with the batch's earlier approvals
/// applied, mapping [`Owner`] to the request's account and card.
pub trait CounterSource {
    fn counter(&self, owner: Owner, key: &CounterKey) -> Counter;
}

impl<F: Fn(Owner, &CounterKey) -> Counter> CounterSource for F {
    fn counter(&self, owner: Owner, key: &CounterKey) -> Counter {
        self(owner, key)
    }
}

/// The counters of one account and one card, keyed by owner and counter. A counter
/// not in the snapshot has counted nothing.
#[derive(Debug, Clone, Default)]
pub struct CounterSnapshot {
    account: FxHashMap<CounterKey, Counter>,
    card: FxHashMap<CounterKey, Counter>,
}

impl CounterSnapshot {
    fn of(&mut self, owner: Owner) -> &mut FxHashMap<CounterKey, Counter> {
        match owner {
            Owner::Account => &mut self.account,
            Owner::Card => &mut self.card,
        }
    }

    pub fn insert(&mut self, owner: Owner, key: CounterKey, counter: Counter) {
        self.of(owner).insert(key, counter);
    }

    pub fn get(&self, owner: Owner, key: &CounterKey) -> Counter {
        let map = match owner {
            Owner::Account => &self.account,
            Owner::Card => &self.card,
        };
        map.get(key).copied().unwrap_or_default()
    }

    /// Applies deltas, so a later request of the same batch sees an earlier approval
    /// ([`Counter::add`]).
    pub fn apply(&mut self, deltas: &[CounterDelta]) {
        for d in deltas {
            self.of(d.owner)
                .entry(d.key.clone())
                .or_default()
                .add(d.amount, d.count);
        }
    }
}

impl CounterSource for CounterSnapshot {
    fn counter(&self, owner: Owner, key: &CounterKey) -> Counter {
        self.get(owner, key)
    }
}

/// How much of a counted authorization comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// A reversal of the whole authorization or a rejected verdict: the money and the count.
    Whole,
    /// A refund of part of it (a credit adjustment): the money only, since the
    /// authorization did happen.
    Amount(i64),
}

/// What has been given back so far for one counted authorization; kept with it so that
/// a repeated or overlapping reversal gives nothing twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Minor units of the authorization's amount.
    pub amount: i64,
    /// The count came back (a whole reversal or a rejected verdict): nothing more will.
    pub whole: bool,
}

/// The deltas that give back room taken by an approval, into the windows the approval
/// counted in (not the current ones), and the new [`Released`]. `counted` is what the
/// approval added ([`super::Evaluation::counted`]). Never gives back more money than was
/// taken nor the count twice.
pub fn release(
    counted: &[CounterDelta],
    released: Released,
    what: Release,
) -> (Vec<CounterDelta>, Released) {
    let taken = counted.iter().map(|d| d.amount).max().unwrap_or(0);
    release_of(counted, released, what, taken)
}

/// [`release`] of an approval that took `taken` (its own amount: more than its counters
/// took when they count no money, as a card's velocity limits): what was given back
/// grows by what a credit gives back of it, so a reversal of all that is left is known.
pub fn release_of(
    counted: &[CounterDelta],
    released: Released,
    what: Release,
    taken: i64,
) -> (Vec<CounterDelta>, Released) {
    if released.whole {
        return (Vec::new(), released);
    }
    let room = (taken - released.amount).max(0);
    let (back, count, whole) = match what {
        Release::Whole => (room, true, true),
        Release::Amount(a) => (a.clamp(0, room), false, false),
    };
    let deltas = counted
        .iter()
        .filter_map(|d| {
            // A counter that took no money (a card's limits in another currency) gives
            // none back.
            let amount = back.min((d.amount - released.amount).max(0));
            let count = if count { d.count } else { 0 };
            (amount != 0 || count != 0).then(|| CounterDelta {
                owner: d.owner,
                key: d.key.clone(),
                amount: -amount,
                count: -count,
            })
        })
        .collect();
    (
        deltas,
        Released {
            amount: released.amount + back,
            whole,
        },
    )
}
