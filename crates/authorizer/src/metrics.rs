//! Prometheus metrics, kept and rendered by `prometheus-client` (the Prometheus project's
//! own Rust client) in the Prometheus text format 0.0.4. Call sites name a family and its
//! labels; a family's type follows from the call that first uses it (`inc`/`add`: counter,
//! `set_gauge`: gauge, `observe`: histogram) and its help text from the table in
//! [`Metrics::new`]. Label values come from closed sets chosen by the code (routes,
//! decisions, reasons), never from request content.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Histogram bucket bounds in seconds: fine below the deadline, coarse above.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 2.0, 5.0,
];

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;

fn labels_of(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// One family: the registered `Family` and the same metrics by label set (clones share
/// their value), which the hot path looks up and `counter`/`gauge` read.
struct Series<M> {
    family: Family<Labels, M, fn() -> M>,
    seen: RwLock<HashMap<Labels, M>>,
}

/// The families of one metric type by name, created and registered on first use.
struct Families<M> {
    by_name: RwLock<HashMap<&'static str, Arc<Series<M>>>>,
    new: fn() -> M,
}

impl<M: Metric + TypedMetric + Clone> Families<M> {
    fn new(new: fn() -> M) -> Self {
        Families {
            by_name: RwLock::default(),
            new,
        }
    }

    /// Calls `f` with the metric of `name` and `labels`, creating (and registering, under
    /// `name` less `suffix`) what does not exist yet.
    fn with<R>(
        &self,
        m: &Metrics,
        name: &'static str,
        suffix: &str,
        labels: &[(&'static str, &str)],
        f: impl FnOnce(&M) -> R,
    ) -> R {
        let found = self.by_name.read().ok().and_then(|s| s.get(name).cloned());
        let series = match found {
            Some(s) => s,
            None => {
                let mut by_name = self.by_name.write().unwrap_or_else(|e| e.into_inner());
                by_name
                    .entry(name)
                    .or_insert_with(|| {
                        let family = Family::new_with_constructor(self.new);
                        m.register(
                            name.strip_suffix(suffix).unwrap_or(name),
                            name,
                            family.clone(),
                        );
                        Arc::new(Series {
                            family,
                            seen: RwLock::default(),
                        })
                    })
                    .clone()
            }
        };
        let key = labels_of(labels);
        if let Some(metric) = series.seen.read().ok().and_then(|s| s.get(&key).cloned()) {
            return f(&metric);
        }
        let metric = series.family.get_or_create_owned(&key);
        if let Ok(mut seen) = series.seen.write() {
            seen.insert(key, metric.clone());
        }
        f(&metric)
    }

    /// Every label set and metric of `name`.
    fn read<R>(&self, name: &str, f: impl FnOnce(&HashMap<Labels, M>) -> R) -> Option<R> {
        let series = self.by_name.read().ok()?.get(name).cloned()?;
        let seen = series.seen.read().ok()?;
        Some(f(&seen))
    }
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    help: HashMap<&'static str, &'static str>,
    counters: Families<Counter>,
    gauges: Families<Gauge>,
    histograms: Families<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Mutex::new(Registry::default()),
            help: HashMap::new(),
            counters: Families::new(Counter::default),
            gauges: Families::new(Gauge::default),
            histograms: Families::new(|| Histogram::new(BUCKETS)),
        };
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
                "authorizer_unread_fields_total",
                "Optional fields of adjustments and notifications left out because they could not be read (the adjustment is booked, the notification's verdict applied, flagged UNREAD_FIELDS), by route and field.",
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
                "Grouped commits: requests in those batches (every kind).",
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
                "authorizer_forbidden_peers_total",
                "Processor requests refused with 403 because the TCP peer is outside processor.allowed_networks, by route.",
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
            (
                "authorizer_reconciliation_finished_timestamp_seconds",
                "When the latest reconciliation run finished (unix seconds); a failed run is not stored, so an old value means reconciliation stopped.",
            ),
            (
                "authorizer_reconciliation_incomplete",
                "1 when the latest reconciliation run did not check everything, with breaks or without: rows not read, or no presentments file (its clearing not checked).",
            ),
            (
                "authorizer_holds_total",
                "Hold events of the channels' reservations by event (reserved, captured, cancelled, expired, refunded).",
            ),
            (
                "authorizer_hold_sweep_duration_seconds",
                "Time of one sweep expiring due holds.",
            ),
            (
                "authorizer_holds_reserved",
                "Holds in state RESERVED (read from the ledger by the sweeper).",
            ),
            (
                "authorizer_webhook_deliveries_total",
                "Outbox delivery attempts by outcome (delivered, failed) and deliveries given up (dead).",
            ),
            (
                "authorizer_webhook_attempts_total",
                "Outbox delivery attempts by how the dispatcher took the delivery: handed over by the commit that owes it (an authorization's, whose record names this instance's sender), or claimed.",
            ),
            (
                "authorizer_webhook_pruned_total",
                "Subscribers' delivery rows deleted by the retention: settled (DELIVERED or DEAD) and older than webhooks.retention_days.",
            ),
            (
                "authorizer_webhook_pending",
                "Deliveries still to make (read by the dispatcher): the PENDING rows, and the deliveries this instance is sending from memory.",
            ),
            (
                "authorizer_webhook_delivery_delay_seconds",
                "Time from an event's instant (its commit; an authorization's arrival) to its acknowledgement, also for a redelivery.",
            ),
            (
                "instore_requests_total",
                "InStore requests by route template and outcome (approved, declined, replay, or the refusal's reason).",
            ),
            (
                "instore_request_duration_seconds",
                "Time to answer an InStore request, by route template.",
            ),
            (
                "instore_signature_matches_total",
                "InStore signatures accepted, by the candidate message that matched (raw, js, js_stripped, js_no_tenant, query_json, query_raw).",
            ),
            (
                "instore_signature_failures_total",
                "InStore requests refused with 401, by reason (never told to the caller).",
            ),
            (
                "instore_injected_balance_mismatch_total",
                "Pre-loaded accounts whose injected balance differs from the ledger's (informational, never trusted).",
            ),
            (
                "instore_possible_duplicates_total",
                "Stored-value movements flagged POSSIBLE_DUPLICATE (same card, session, reference, action and amount under a new requestId).",
            ),
            (
                "instore_poa_unmatched_logs_total",
                "payonaccountlog records of an approved Credit that match no charge of the account and amount in the previous 24 h (flagged LOG_WITHOUT_CHARGE).",
            ),
        ] {
            m.describe(name, help);
        }
        m
    }

    fn describe(&mut self, name: &'static str, help: &'static str) {
        self.help.insert(name, help);
    }

    /// Registers a family under `registered` (the text encoder adds `_total` to counters),
    /// with the help text described for `name`.
    fn register(&self, registered: &str, name: &str, metric: impl Metric) {
        let help = self.help.get(name).copied().unwrap_or_else(|| {
            tracing::warn!(metric = name, "metric without a description");
            ""
        });
        // The registry ends every help text with a full stop.
        let help = help.strip_suffix('.').unwrap_or(help);
        if let Ok(mut r) = self.registry.lock() {
            r.register(registered, help, metric);
        }
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        self.counters
            .with(self, name, "_total", labels, |c| c.inc_by(n));
    }

    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, &str)], v: i64) {
        self.gauges.with(self, name, "", labels, |g| g.set(v));
    }

    /// The value of one gauge, if set.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.gauges
            .read(name, |seen| seen.values().next().map(Gauge::get))
            .flatten()
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], d: Duration) {
        self.histograms
            .with(self, name, "", labels, |h| h.observe(d.as_secs_f64()));
    }

    /// The value of one counter (tests and the simulator read it): the sum over the label
    /// sets that include `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .read(name, |seen| {
                seen.iter()
                    .filter(|(l, _)| {
                        labels
                            .iter()
                            .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
                    })
                    .map(|(_, c)| c.get())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Renders every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        // Counted by the log layer, which exists once per process.
        let malformed = crate::telemetry::malformed_http_requests();
        self.counters.with(
            self,
            "authorizer_malformed_http_total",
            "_total",
            &[],
            |c| c.inner().fetch_max(malformed, Ordering::Relaxed),
        );
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_text::encode(&mut out, &r);
        }
        out
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
        assert!(
            text.contains("authorizer_request_duration_seconds_sum{route=\"authorization\",decision=\"APPROVED\"} 0.0015\n"),
            "{text}"
        );
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

    /// What a scraper reads: every family has a `# HELP` and a `# TYPE` line before its
    /// samples, every sample belongs to the family above it and has a number for a value,
    /// counters keep their `_total` name, histograms their buckets, sum and count.
    #[test]
    fn scrape_parses() {
        let m = Metrics::new();
        m.inc("authorizer_forbidden_peers_total", &[("route", "/x")]);
        m.add("authorizer_commit_batch_items_total", &[], 3);
        m.inc(
            "authorizer_bad_requests_total",
            &[("reason", "quote\" and \\ backslash")],
        );
        m.set_gauge("authorizer_reconciliation_breaks", &[], 8);
        m.observe(
            "authorizer_request_duration_seconds",
            &[("route", "authorization"), ("decision", "REJECTED")],
            Duration::from_millis(900),
        );
        let text = m.render();
        let (mut help, mut kind) = (None::<String>, None::<(String, String)>);
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').expect("help text");
                assert!(!h.trim().is_empty() && !h.ends_with(".."), "{line}");
                help = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("type");
                assert_eq!(help.as_deref(), Some(name), "TYPE without HELP: {line}");
                assert!(["counter", "gauge", "histogram"].contains(&t), "{line}");
                kind = Some((name.to_owned(), t.to_owned()));
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample");
                value.parse::<f64>().expect("a number");
                let name = series.split('{').next().unwrap();
                let (family, t) = kind.as_ref().expect("sample before TYPE");
                let ok = match t.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{family}{s}")),
                    _ => name == family,
                };
                assert!(ok, "{line} under {family}");
                samples += 1;
            }
        }
        assert_eq!(samples, 4 + BUCKETS.len() + 3 + 1, "{text}");
        assert!(text.contains("# TYPE authorizer_forbidden_peers_total counter\n"));
        assert!(text.contains("authorizer_commit_batch_items_total 3\n"));
        assert!(
            text.contains(
                "authorizer_bad_requests_total{reason=\"quote\\\" and \\\\ backslash\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("le=\"0.8\"} 0\n") && text.contains("le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("authorizer_malformed_http_total "));
        assert_eq!(m.counter("authorizer_commit_batch_items_total", &[]), 3);
    }

    /// Every metric the code names (outside this file) has a help text.
    #[test]
    fn every_metric_is_described() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("metrics.rs") {
                    out.push(p);
                }
            }
        }
        let m = Metrics::new();
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for part in text.split("\"authorizer_").skip(1) {
                let end = part
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(part.len());
                let name = format!("authorizer_{}", &part[..end]);
                assert!(
                    m.help.contains_key(name.as_str()),
                    "{name} ({}) has no help text",
                    f.display()
                );
            }
        }
    }
}
