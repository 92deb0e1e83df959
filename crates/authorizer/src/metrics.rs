//! Prometheus metrics in the text exposition format. Counters and histograms are kept
//! in maps keyed by name and labels; label values come from closed sets chosen by the
//! code (routes, decisions, reasons), never from request content.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds: fine below the deadline, coarse above.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 2.0, 5.0,
];

/// Holds (two-phase channels): kept apart from the processor's metrics above.
const HOLD_METRICS: [(&str, &str); 3] = [
    (
        "authorizer_holds_total",
        "Hold events by event (reserved, captured, cancelled, expired, refunded).",
    ),
    (
        "authorizer_hold_sweep_duration_seconds",
        "Time of one sweep expiring due holds.",
    ),
    (
        "authorizer_holds_reserved",
        "Holds in state RESERVED (read from the ledger by the sweeper).",
    ),
];

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum_micros: u64,
}

/// The process's metrics registry.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    gauges: Mutex<BTreeMap<Key, i64>>,
    histograms: Mutex<BTreeMap<Key, Histogram>>,
    help: Mutex<BTreeMap<&'static str, &'static str>>,
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        for (name, help) in [
            (
                "authorizer_requests_total",
                "Processor requests by route and outcome.",
            ),
            (
                "authorizer_request_duration_seconds",
                "Time to answer a processor request, by route and decision.",
            ),
            (
                "authorizer_signature_failures_total",
                "Requests refused for their signature, by reason.",
            ),
            (
                "authorizer_bad_requests_total",
                "Requests refused before processing (malformed, oversized), by reason.",
            ),
            (
                "authorizer_replays_total",
                "Duplicates answered from the stored response, by route.",
            ),
            (
                "authorizer_idempotency_conflicts_total",
                "Idempotency keys reused with another body (HTTP 409).",
            ),
            (
                "authorizer_in_flight_rejections_total",
                "Duplicates answered 425 while the first was in flight.",
            ),
            (
                "authorizer_negative_balances_total",
                "Bookings that left a cardholder balance below zero.",
            ),
            (
                "authorizer_store_failures_total",
                "Requests the store could not serve, by route and kind.",
            ),
            (
                "authorizer_flagged_bookings_total",
                "Bookings flagged for review, by flag.",
            ),
            (
                "authorizer_invalid_ids_total",
                "Processor requests refused for an id that breaks the id rule, by route and field.",
            ),
            (
                "authorizer_transaction_conflicts_total",
                "Transaction ids resent under a new key asking for other money (HTTP 409), by route.",
            ),
            (
                "authorizer_admin_requests_total",
                "Admin API requests by status class.",
            ),
            (
                "authorizer_commit_batches_total",
                "Grouped commits: batches committed.",
            ),
            (
                "authorizer_commit_batch_items_total",
                "Grouped commits: authorizations in those batches.",
            ),
            (
                "authorizer_commit_batch_overlaps_total",
                "Grouped commits: batches still committing after commit_batch_overlap_ms, so that the next one started beside them (row locks, a slow disk).",
            ),
            (
                "authorizer_redis_fallbacks_total",
                "Redis calls that failed or were skipped (Redis down); the request fell back to the in-process state and Postgres, by operation.",
            ),
            (
                "authorizer_rules_cache_hits_total",
                "Card rules answered from this instance's cache.",
            ),
            (
                "authorizer_rules_cache_misses_total",
                "Card rules read from the database (not cached, expired, or cache not in use).",
            ),
            (
                "authorizer_rules_cache_invalidations_total",
                "Card rule invalidations applied to this instance's cache, by source (local admin change, fleet message, flush on subscriber reconnect).",
            ),
            (
                "authorizer_admin_rate_limited_total",
                "Admin API requests refused with 429 by the per-token rate limit.",
            ),
            (
                "authorizer_admin_auth_failures_total",
                "Admin API requests that failed authentication, by reason (invalid_token: wrong, missing or unreadable; duplicate_header: Authorization sent more than once).",
            ),
            (
                "authorizer_admin_auth_lockouts_total",
                "Admin API requests without the valid token refused with 429 because their client address was over admin.auth_failures_burst/auth_failures_per_sec.",
            ),
            (
                "authorizer_malformed_http_total",
                "Requests refused with 400 by the HTTP layer because they are not HTTP (garbage bytes, a bad request line or header); logged at debug only.",
            ),
            (
                "authorizer_ready",
                "1 while this instance takes traffic; 0 from the start of a graceful shutdown.",
            ),
            (
                "authorizer_reconciliation_breaks",
                "Breaks found by the latest reconciliation run (read from the ledger at scrape time).",
            ),
            (
                "authorizer_reconciliation_malformed_rows",
                "Malformed file rows of the latest reconciliation run.",
            ),
        ] {
            m.describe(name, help);
        }
        // Holds (two-phase channels).
        for (name, help) in HOLD_METRICS {
            m.describe(name, help);
        }
        m
    }

    fn describe(&self, name: &'static str, help: &'static str) {
        if let Ok(mut h) = self.help.lock() {
            h.insert(name, help);
        }
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(key).or_default() += n;
        }
    }

    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, &str)], v: i64) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        if let Ok(mut g) = self.gauges.lock() {
            g.insert(key, v);
        }
    }

    /// The value of one gauge, if set.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.gauges
            .lock()
            .ok()
            .and_then(|g| g.iter().find(|((n, _), _)| *n == name).map(|(_, v)| *v))
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], d: Duration) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        let secs = d.as_secs_f64();
        if let Ok(mut h) = self.histograms.lock() {
            let h = h.entry(key).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum_micros += u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        }
    }

    /// The value of one counter (tests and the simulator read it).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|((n, l), _)| {
                        *n == name
                            && labels
                                .iter()
                                .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
                    })
                    .map(|(_, v)| *v)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        // Counted by the log layer, which exists once per process.
        if let Ok(mut c) = self.counters.lock() {
            c.insert(
                ("authorizer_malformed_http_total", Vec::new()),
                crate::telemetry::malformed_http_requests(),
            );
        }
        let mut out = String::new();
        let help = self.help.lock().map(|h| h.clone()).unwrap_or_default();
        let header = |out: &mut String, name: &str, kind: &str, done: &mut Option<String>| {
            if done.as_deref() != Some(name) {
                if let Some(h) = help.get(name) {
                    let _ = writeln!(out, "# HELP {name} {h}");
                }
                let _ = writeln!(out, "# TYPE {name} {kind}");
                *done = Some(name.to_owned());
            }
        };
        let mut last = None;
        if let Ok(c) = self.counters.lock() {
            for ((name, labels), v) in c.iter() {
                header(&mut out, name, "counter", &mut last);
                let _ = writeln!(out, "{name}{} {v}", label_text(labels, None));
            }
        }
        if let Ok(g) = self.gauges.lock() {
            for ((name, labels), v) in g.iter() {
                header(&mut out, name, "gauge", &mut last);
                let _ = writeln!(out, "{name}{} {v}", label_text(labels, None));
            }
        }
        if let Ok(h) = self.histograms.lock() {
            for ((name, labels), hist) in h.iter() {
                header(&mut out, name, "histogram", &mut last);
                for (i, b) in BUCKETS.iter().enumerate() {
                    let le = format!("{b}");
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        label_text(labels, Some(&le)),
                        hist.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    label_text(labels, Some("+Inf")),
                    hist.count
                );
                let sum = hist.sum_micros / 1_000_000;
                let frac = hist.sum_micros % 1_000_000;
                let _ = writeln!(
                    out,
                    "{name}_sum{} {sum}.{frac:06}",
                    label_text(labels, None)
                );
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    label_text(labels, None),
                    hist.count
                );
            }
        }
        out
    }
}

fn label_text(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.inc("authorizer_replays_total", &[("route", "authorization")]);
        m.inc("authorizer_replays_total", &[("route", "authorization")]);
        m.observe(
            "authorizer_request_duration_seconds",
            &[("route", "authorization"), ("decision", "APPROVED")],
            Duration::from_micros(1500),
        );
        let text = m.render();
        assert!(
            text.contains("authorizer_replays_total{route=\"authorization\"} 2"),
            "{text}"
        );
        assert!(text.contains("# TYPE authorizer_request_duration_seconds histogram"));
        assert!(text.contains(
            "authorizer_request_duration_seconds_bucket{route=\"authorization\",decision=\"APPROVED\",le=\"0.001\"} 0"
        ));
        assert!(text.contains(
            "authorizer_request_duration_seconds_bucket{route=\"authorization\",decision=\"APPROVED\",le=\"0.002\"} 1"
        ));
        assert!(text.contains("authorizer_request_duration_seconds_sum{route=\"authorization\",decision=\"APPROVED\"} 0.001500"));
        assert_eq!(
            m.counter("authorizer_replays_total", &[("route", "authorization")]),
            2
        );
        m.set_gauge("authorizer_ready", &[], 1);
        m.set_gauge("authorizer_ready", &[], 0);
        let text = m.render();
        assert!(
            text.contains("# TYPE authorizer_ready gauge\nauthorizer_ready 0\n"),
            "{text}"
        );
        assert_eq!(m.gauge("authorizer_ready"), Some(0));
    }
}
