//! Where each limit of a controls document stands at an instant: what its window is, what
//! was counted in it and what is left, as the next debit would be judged (a cardholder's
//! "how much can I still spend this month", an operator's first answer to "why was my
//! card declined").

use super::{Categories, Controls, Counter, CounterKey, Interval, TimeZone, Window};
use crate::Currency;
use crate::money::format_minor;
use jiff::Timestamp;
use serde::Serialize;

/// One limit and where it stands. Amounts are decimal strings in the controls' currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitUsage {
    /// A cap on money; `per_authorization` has no window and counts nothing.
    Spending {
        /// The account's own `per_transaction_limit` or `daily_limit` (its day is the UTC
        /// day), which the decision applies before the controls.
        legacy: bool,
        interval: Interval,
        categories: Option<Vec<String>>,
        #[serde(flatten)]
        window: WindowView,
        currency: String,
        limit: String,
        /// Debited in the window (`None` per authorization).
        spent: Option<String>,
        /// What a debit may still take: the limit less what was spent, never below zero.
        remaining: String,
    },
    /// A cap on the number of approved debits.
    Velocity {
        interval: Interval,
        categories: Option<Vec<String>>,
        #[serde(flatten)]
        window: WindowView,
        limit: u32,
        counted: i64,
        remaining: i64,
    },
}

/// The window an instant is in: its stored key and its bounds (RFC 3339; none for
/// `all_time`, and no window at all per authorization).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WindowView {
    pub window: Option<String>,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
}

/// Where each limit of `c` stands at `now_ms` (in `tz`), with `counter` the owner's counter of
/// a key (zero when there is none). Every limit is listed, whatever category it is
/// restricted to; the spending limits of a card whose controls name no currency (it has
/// none) are left out.
pub fn usage(
    c: &Controls,
    counter: impl Fn(&CounterKey) -> Counter,
    now_ms: i64,
    tz: &TimeZone,
) -> Vec<LimitUsage> {
    let at = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let of = |interval: Interval, cats: Option<&Categories>| {
        let window = interval.window(at, tz)?;
        let key = CounterKey {
            window: window.key,
            categories: cats.cloned(),
        };
        Some((WindowView::of(&window), counter(&key)))
    };
    let mut out = Vec::new();
    if let Some(currency) = c.currency {
        for l in &c.spending_limits {
            let cats = l.categories.as_ref();
            let (window, spent) = of(l.interval, cats).unzip();
            out.push(
                Spent {
                    legacy: false,
                    interval: l.interval,
                    categories: cats.map(Categories::to_strings),
                    window,
                    currency,
                    limit: l.amount,
                    spent: spent.map(|n| n.amount),
                }
                .usage(),
            );
        }
    }
    for l in &c.velocity_limits {
        let cats = l.categories.as_ref();
        let counted = of(l.interval, cats);
        let n = counted.as_ref().map_or(0, |(_, n)| n.count);
        out.push(LimitUsage::Velocity {
            interval: l.interval,
            categories: cats.map(Categories::to_strings),
            limit: l.count,
            counted: n,
            remaining: (i64::from(l.count) - n).max(0),
            window: counted.map(|(w, _)| w).unwrap_or_default(),
        });
    }
    out
}

/// Where an account's legacy limits stand at `now_ms`: its `per_transaction_limit` and its
/// `daily_limit` against `spent_today`, what its daily counter holds for the UTC day of
/// `now_ms`.
pub fn legacy_usage(
    per_transaction: Option<i64>,
    daily: Option<i64>,
    spent_today: i64,
    currency: Currency,
    now_ms: i64,
) -> Vec<LimitUsage> {
    let at = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let limit = |interval: Interval, amount: i64, spent: Option<i64>| {
        Spent {
            legacy: true,
            interval,
            categories: None,
            window: interval
                .window(at, &TimeZone::UTC)
                .map(|w| WindowView::of(&w)),
            currency,
            limit: amount,
            spent,
        }
        .usage()
    };
    let per_transaction = per_transaction.map(|a| limit(Interval::PerAuthorization, a, None));
    let daily = daily.map(|a| limit(Interval::Daily, a, Some(spent_today)));
    per_transaction.into_iter().chain(daily).collect()
}

impl WindowView {
    fn of(w: &Window) -> WindowView {
        WindowView {
            window: Some(w.key.to_string()),
            window_start: w.start.map(|t| t.to_string()),
            window_end: w.end.map(|t| t.to_string()),
        }
    }
}

/// A spending limit in minor units, and what its window holds (`None`: no window).
struct Spent {
    legacy: bool,
    interval: Interval,
    categories: Option<Vec<String>>,
    window: Option<WindowView>,
    currency: Currency,
    limit: i64,
    spent: Option<i64>,
}

impl Spent {
    fn usage(self) -> LimitUsage {
        let places = self.currency.exponent();
        let left = self.limit.saturating_sub(self.spent.unwrap_or(0)).max(0);
        LimitUsage::Spending {
            legacy: self.legacy,
            interval: self.interval,
            categories: self.categories,
            window: self.window.unwrap_or_default(),
            currency: self.currency.to_string(),
            limit: format_minor(self.limit, places),
            spent: self.spent.map(|s| format_minor(s, places)),
            remaining: format_minor(left, places),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_shows_its_window_what_it_counted_and_what_is_left() {
        let c = Controls::from_json(
            r#"{"spending_limits":[{"amount":"100.00","interval":"per_authorization"},
                {"amount":"500.00","interval":"monthly"},
                {"amount":"50.00","interval":"daily","categories":["gambling"]}],
                "velocity_limits":[{"count":2,"interval":"daily"}]}"#,
            Some(Currency::parse("ARS").unwrap()),
        )
        .unwrap();
        let at: Timestamp = "2026-12-06T20:00:00Z".parse().unwrap();
        let counter = |k: &CounterKey| match (k.window.to_string().as_str(), &k.categories) {
            ("monthly:2026-12", None) => Counter {
                amount: 60_000,
                count: 3,
            },
            ("daily:2026-12-06", None) => Counter {
                amount: 10_000,
                count: 1,
            },
            _ => Counter::default(),
        };
        let now = at.as_millisecond();
        let u = serde_json::to_value(usage(&c, counter, now, &TimeZone::UTC)).unwrap();
        let limits: Vec<_> = u.as_array().unwrap().iter().collect();
        assert_eq!(limits.len(), 4, "{u}");
        assert_eq!(limits[0]["interval"], "per_authorization");
        assert!(limits[0]["window"].is_null() && limits[0]["spent"].is_null());
        assert_eq!(limits[0]["remaining"], "100.00");
        // Over the limit by hand: nothing is left, not less than nothing.
        let monthly = limits.iter().find(|l| l["interval"] == "monthly").unwrap();
        assert_eq!(monthly["window"], "monthly:2026-12");
        assert_eq!(monthly["window_start"], "2026-12-01T00:00:00Z");
        assert_eq!(monthly["window_end"], "2027-01-01T00:00:00Z");
        assert_eq!(
            (&monthly["spent"], &monthly["remaining"]),
            (&"600.00".into(), &"0.00".into())
        );
        let gambling = limits.iter().find(|l| !l["categories"].is_null()).unwrap();
        assert_eq!(gambling["spent"], "0.00");
        let velocity = limits.iter().find(|l| l["kind"] == "velocity").unwrap();
        assert_eq!(
            (&velocity["counted"], &velocity["remaining"]),
            (&1.into(), &1.into())
        );
        // The account's own limits, its day the UTC day.
        let ars = Currency::parse("ARS").unwrap();
        let legacy = serde_json::to_value(legacy_usage(None, Some(60_000), 59_900, ars, now));
        let daily = &legacy.unwrap()[0];
        assert_eq!(
            (&daily["legacy"], &daily["window"]),
            (&true.into(), &"daily:2026-12-06".into())
        );
        assert_eq!(daily["remaining"], "1.00");
    }
}
