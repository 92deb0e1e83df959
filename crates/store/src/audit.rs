//! Proves the ledger's invariants on a live database.

use crate::{Store, StoreError, run};
use futures_util::TryStreamExt;
use ledger::controls::{Counter, CounterKey, Owner, TimeZone, decode_counters};
use ledger::plan::{
    CounterWrite, GiveBack, owner_kind, release_counted, still_counted, windows_of,
};
use sqlx::Row;
use std::collections::HashMap;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// The audit's findings and what it looked at.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub accounts: i64,
    pub movements: i64,
    pub postings: i64,
    pub processor_transactions: i64,
    pub notifications: i64,
    pub holds: i64,
    /// Money movements of authorizations, adjustments and notifications...
    pub processor_movements: i64,
    /// ...of which an active subscription was owed the event (the others were committed
    /// before any subscription of their type was active, or within 2 s of its activation,
    /// or before `deliveries_pruned_before_ms`).
    pub processor_movements_owed_events: i64,
    /// The retention has deleted settled delivery rows of events before this instant (0:
    /// none yet); the checks that each event owed has its rows start a second after it.
    pub deliveries_pruned_before_ms: i64,
    /// Subscriptions ACTIVE now.
    pub active_subscriptions: i64,
    pub violations: Vec<Violation>,
    /// Findings that are not broken invariants (a sweeper lagging behind).
    pub warnings: Vec<Violation>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The processor's money movements with the event each one is reported by: an
/// authorization's (`evt-auth-<transaction id>`), an adjustment's (`evt-adj-...`), or, for a
/// reversal or a forced booking, its notification's (`evt-notif-<key>`; NULL when no
/// notification names the movement).
macro_rules! processor_events {
    () => {
        "SELECT m.id, m.kind, m.transaction_id, m.created_at_ms, \
           CASE m.kind WHEN 'AUTHORIZATION' THEN 'authorization.decided' \
             WHEN 'ADJUSTMENT' THEN 'adjustment.booked' ELSE 'notification.applied' END AS event_type, \
           CASE m.kind WHEN 'AUTHORIZATION' THEN 'evt-auth-' || m.transaction_id \
             WHEN 'ADJUSTMENT' THEN 'evt-adj-' || m.transaction_id \
             ELSE 'evt-notif-' || n.idempotency_key END AS event_id \
         FROM movements m LEFT JOIN notifications n ON n.movement_id = m.id \
          AND m.kind IN ('REVERSAL', 'FORCED') \
         WHERE m.kind IN ('AUTHORIZATION', 'ADJUSTMENT', 'REVERSAL', 'FORCED')"
    };
}

/// The instant from which every event still has its subscribers' delivery rows: the
/// retention deletes settled rows of events before `outbox_retention.pruned_before_ms` (0
/// until it has deleted one). A second's margin: an event's instant and its row's are read
/// in one commit, and the margin keeps the check off the edge.
macro_rules! rows_kept_from {
    () => {
        "COALESCE((SELECT CASE WHEN pruned_before_ms = 0 THEN 0 ELSE pruned_before_ms + 1000 END \
          FROM outbox_retention WHERE id = 1), 0)"
    };
}

/// POA accounts owing more than their credit limit; the caller appends the condition on
/// `p.limit_lowered_at_ms`.
macro_rules! poa_over_limit {
    () => {
        "SELECT 'POA account ' || p.user_id || ' (' || p.currency || ') owes ' || CAST(-a.balance_minor AS TEXT) || \
           ' over its credit limit ' || CAST(a.overdraft_limit_minor AS TEXT) FROM poa_accounts p \
         JOIN accounts a ON a.kind = 'USER' AND a.user_id = p.user_id AND a.currency = p.currency \
         WHERE -a.balance_minor > a.overdraft_limit_minor AND p.limit_lowered_at_ms"
    };
}

/// Subscription `s` is owed event `x`: ACTIVE, wanting its type, and the event committed
/// at least 2 s after it became active (an instance learns of a new subscription within
/// `outbox::SUBSCRIPTIONS_TTL`, 1 s) and after the rows the retention deleted.
macro_rules! owed_to_s {
    () => {
        concat!(
            "s.state = 'ACTIVE' AND x.created_at_ms >= s.active_since_ms + 2000 \
             AND (s.event_types = '*' OR ',' || s.event_types || ',' LIKE '%,' || x.event_type || ',%') \
             AND x.created_at_ms >= ",
            rows_kept_from!()
        )
    };
}

/// Each check is a query returning one row per violation, rendered as text.
const CHECKS: &[(&str, &str)] = &[
    (
        "movement postings sum to zero",
        "SELECT 'movement ' || CAST(movement_id AS TEXT) || ' sums to ' || CAST(CAST(SUM(amount_minor) AS BIGINT) AS TEXT) \
         FROM postings GROUP BY movement_id HAVING SUM(amount_minor) <> 0",
    ),
    (
        "every movement has postings",
        "SELECT 'movement ' || CAST(m.id AS TEXT) || ' has no postings' FROM movements m \
         WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.movement_id = m.id)",
    ),
    (
        "posting currency matches its account",
        "SELECT 'posting ' || CAST(p.id AS TEXT) || ' in ' || m.currency || ' on a ' || a.currency || ' account' \
         FROM postings p JOIN accounts a ON a.id = p.account_id JOIN movements m ON m.id = p.movement_id \
         WHERE a.currency <> m.currency",
    ),
    (
        "account balance equals the sum of its postings",
        "SELECT 'account ' || a.user_id || '/' || a.currency || ' balance ' || CAST(a.balance_minor AS TEXT) || \
         ' but postings sum to ' || CAST(CAST(COALESCE(SUM(p.amount_minor), 0) AS BIGINT) AS TEXT) \
         FROM accounts a LEFT JOIN postings p ON p.account_id = a.id WHERE a.kind = 'USER' \
         GROUP BY a.id, a.user_id, a.currency, a.balance_minor \
         HAVING a.balance_minor <> COALESCE(SUM(p.amount_minor), 0)",
    ),
    (
        "each posting's balance-after follows from the one before",
        "SELECT 'posting ' || CAST(id AS TEXT) || ' on account ' || CAST(account_id AS TEXT) || ' breaks the chain' FROM ( \
           SELECT id, account_id, amount_minor, balance_after_minor, account_version, \
             LAG(balance_after_minor, 1, 0) OVER (PARTITION BY account_id ORDER BY id) AS prev_balance, \
             LAG(account_version, 1, 0) OVER (PARTITION BY account_id ORDER BY id) AS prev_version \
           FROM postings p WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.account_id AND a.kind = 'USER') \
         ) x WHERE balance_after_minor IS NULL OR prev_balance + amount_minor <> balance_after_minor \
           OR account_version <> prev_version + 1",
    ),
    (
        "account version matches its last posting",
        "SELECT 'account ' || a.user_id || '/' || a.currency || ' version ' || CAST(a.version AS TEXT) \
         FROM accounts a WHERE a.kind = 'USER' AND a.version <> \
         (SELECT COUNT(*) FROM postings p WHERE p.account_id = a.id)",
    ),
    (
        "processor transaction booked at most once per kind",
        "SELECT processor_kind || ' ' || transaction_id || ' booked ' || CAST(COUNT(*) AS TEXT) || ' times' \
         FROM movements WHERE kind IN ('AUTHORIZATION', 'ADJUSTMENT', 'FORCED') AND transaction_id IS NOT NULL \
         GROUP BY processor_kind, transaction_id HAVING COUNT(*) > 1",
    ),
    (
        "processor transaction reversed at most once",
        "SELECT transaction_id || ' reversed ' || CAST(COUNT(*) AS TEXT) || ' times' FROM movements \
         WHERE kind = 'REVERSAL' GROUP BY transaction_id HAVING COUNT(*) > 1",
    ),
    (
        "recorded movement belongs to its transaction",
        "SELECT r.kind || ' ' || r.transaction_id || ' points at movement ' || CAST(r.movement_id AS TEXT) \
         FROM processor_transactions r JOIN movements m ON m.id = r.movement_id \
         WHERE m.transaction_id IS NULL OR m.transaction_id <> r.transaction_id",
    ),
    (
        "system accounts keep no running balance",
        "SELECT 'system account ' || kind || '/' || currency || ' has a running balance' FROM accounts \
         WHERE kind <> 'USER' AND (balance_minor <> 0 OR version <> 0)",
    ),
    (
        "account held equals the sum of its RESERVED holds and is not negative",
        "SELECT 'account ' || COALESCE(a.user_id, a.kind) || '/' || a.currency || ' held ' || CAST(a.held_minor AS TEXT) || \
         ' but RESERVED holds sum to ' || CAST(CAST(COALESCE(SUM(h.amount_minor), 0) AS BIGINT) AS TEXT) \
         FROM accounts a LEFT JOIN holds h ON h.account_id = a.id AND h.state = 'RESERVED' \
         GROUP BY a.id, a.user_id, a.kind, a.currency, a.held_minor \
         HAVING a.held_minor <> COALESCE(SUM(h.amount_minor), 0) OR a.held_minor < 0",
    ),
    (
        "a CAPTURED hold has one HOLD_CAPTURE movement of its captured amount, other holds none",
        "SELECT 'hold ' || CAST(h.id AS TEXT) || ' (' || h.state || ') and its capture movement disagree' FROM holds h \
         WHERE (h.state = 'CAPTURED') <> (h.capture_movement_id IS NOT NULL) \
            OR (h.state = 'CAPTURED' AND NOT EXISTS (SELECT 1 FROM postings p JOIN movements m ON m.id = p.movement_id \
                 WHERE p.movement_id = h.capture_movement_id AND m.kind = 'HOLD_CAPTURE' \
                   AND p.account_id = h.account_id AND p.amount_minor = -h.captured_minor))",
    ),
    (
        "every HOLD_CAPTURE movement is the capture of exactly one hold",
        "SELECT 'HOLD_CAPTURE movement ' || CAST(m.id AS TEXT) || ' captures ' || CAST(COUNT(h.id) AS TEXT) || ' holds' \
         FROM movements m LEFT JOIN holds h ON h.capture_movement_id = m.id WHERE m.kind = 'HOLD_CAPTURE' \
         GROUP BY m.id HAVING COUNT(h.id) <> 1",
    ),
    (
        "captured <= amount, and refunded = sum of HOLD_REFUND <= captured",
        "SELECT 'hold ' || CAST(h.id AS TEXT) || ' amount ' || CAST(h.amount_minor AS TEXT) || ' captured ' || \
           CAST(h.captured_minor AS TEXT) || ' refunded ' || CAST(h.refunded_minor AS TEXT) || ' refund postings ' || \
           CAST(CAST(r.total AS BIGINT) AS TEXT) \
         FROM holds h, (SELECT h2.id AS hid, COALESCE(SUM(p.amount_minor), 0) AS total FROM holds h2 \
             LEFT JOIN hold_events e ON e.hold_id = h2.id AND e.kind = 'REFUNDED' \
             LEFT JOIN movements m ON m.id = e.movement_id AND m.kind = 'HOLD_REFUND' \
             LEFT JOIN postings p ON p.movement_id = m.id AND p.account_id = h2.account_id \
             GROUP BY h2.id) r \
         WHERE r.hid = h.id AND (h.captured_minor > h.amount_minor OR h.refunded_minor > h.captured_minor \
            OR h.refunded_minor <> r.total)",
    ),
    (
        "every HOLD_REFUND movement is one refund event",
        "SELECT 'HOLD_REFUND movement ' || CAST(m.id AS TEXT) || ' has ' || CAST(COUNT(e.id) AS TEXT) || ' refund events' \
         FROM movements m LEFT JOIN hold_events e ON e.movement_id = m.id AND e.kind = 'REFUNDED' \
         WHERE m.kind = 'HOLD_REFUND' GROUP BY m.id HAVING COUNT(e.id) <> 1",
    ),
    (
        "every hold's events start with RESERVED and end in its state",
        "SELECT 'hold ' || CAST(h.id AS TEXT) || ' is ' || h.state || ' but its events say ' || \
           COALESCE((SELECT e.kind FROM hold_events e WHERE e.hold_id = h.id AND e.kind <> 'REFUNDED' ORDER BY e.id DESC LIMIT 1), 'nothing') \
         FROM holds h \
         WHERE COALESCE((SELECT e.kind FROM hold_events e WHERE e.hold_id = h.id AND e.kind <> 'REFUNDED' ORDER BY e.id DESC LIMIT 1), 'nothing') <> h.state \
            OR COALESCE((SELECT e.kind FROM hold_events e WHERE e.hold_id = h.id ORDER BY e.id LIMIT 1), 'nothing') <> 'RESERVED' \
            OR (SELECT COUNT(*) FROM hold_events e WHERE e.hold_id = h.id AND e.kind <> 'REFUNDED') > 2",
    ),
    // InStore (instore-extensions.md section 6.4): sums and balances are the checks above.
    // Card numbers are never printed: a leg is named by its external transaction id.
    (
        "each InStore request is booked at most once",
        "SELECT 'InStore request ' || tenant_id || '/' || request_id || ' booked ' || \
           CAST(COUNT(DISTINCT external_payment_id) AS TEXT) || ' operation(s) in ' || CAST(COUNT(*) AS TEXT) || \
           ' leg(s) on ' || CAST(COUNT(DISTINCT number) AS TEXT) || ' card(s)' \
         FROM instore_movements GROUP BY tenant_id, request_id \
         HAVING COUNT(DISTINCT external_payment_id) > 1 OR COUNT(*) <> COUNT(DISTINCT number)",
    ),
    (
        "each InStore leg belongs to a processed request",
        "SELECT 'InStore leg ' || l.external_transaction_id || ' names request ' || l.tenant_id || '/' || \
           l.request_id || ', which has no record' FROM instore_movements l \
         WHERE NOT EXISTS (SELECT 1 FROM instore_requests q \
                           WHERE q.tenant_id = l.tenant_id AND q.request_id = l.request_id)",
    ),
    (
        "each InStore leg is its ledger movement",
        "SELECT 'InStore leg ' || l.external_transaction_id || ' (' || l.kind || ' ' || CAST(l.amount_minor AS TEXT) || \
           ' ' || l.currency || ') does not match movement ' || CAST(l.movement_id AS TEXT) \
         FROM instore_movements l LEFT JOIN movements m ON m.id = l.movement_id \
         WHERE m.id IS NULL OR m.kind <> l.kind OR m.currency <> l.currency \
            OR NOT EXISTS (SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id \
                           WHERE p.movement_id = l.movement_id AND a.kind = 'USER' AND p.amount_minor = l.amount_minor) \
         UNION ALL \
         SELECT 'movement ' || CAST(m.id AS TEXT) || ' (' || m.kind || ') has no InStore leg' FROM movements m \
         WHERE m.kind IN ('SV_LOAD', 'SV_REDEEM', 'SV_CANCEL') \
           AND NOT EXISTS (SELECT 1 FROM instore_movements l WHERE l.movement_id = m.id)",
    ),
    (
        "each InStore operation is reversed at most once",
        "SELECT 'operation ' || reverses_payment_id || ' reversed by ' || CAST(COUNT(DISTINCT request_id) AS TEXT) || \
           ' requests' FROM instore_movements WHERE kind = 'SV_CANCEL' \
         GROUP BY reverses_payment_id HAVING COUNT(DISTINCT request_id) > 1",
    ),
    (
        "an InStore reversal's amount equals the original's, leg by leg",
        "SELECT 'cancel leg ' || c.external_transaction_id || ' of ' || c.reverses_payment_id || ' moves ' || \
           CAST(c.amount_minor AS TEXT) || ' against ' || COALESCE(CAST(o.amount_minor AS TEXT), 'no leg of that card') \
         FROM instore_movements c LEFT JOIN instore_movements o ON o.external_payment_id = c.reverses_payment_id \
          AND o.kind <> 'SV_CANCEL' AND o.number = c.number \
         WHERE c.kind = 'SV_CANCEL' AND (o.amount_minor IS NULL OR c.amount_minor <> -o.amount_minor) \
         UNION ALL \
         SELECT 'leg ' || o.external_transaction_id || ' of cancelled operation ' || o.external_payment_id || \
           ' was not reversed' FROM instore_movements o \
         WHERE o.kind <> 'SV_CANCEL' \
           AND EXISTS (SELECT 1 FROM instore_movements c WHERE c.kind = 'SV_CANCEL' \
                       AND c.reverses_payment_id = o.external_payment_id) \
           AND NOT EXISTS (SELECT 1 FROM instore_movements c WHERE c.kind = 'SV_CANCEL' \
                           AND c.reverses_payment_id = o.external_payment_id AND c.number = o.number)",
    ),
    (
        // The other direction (each callback row has its request) is the delivery check.
        "each processed InStore request has exactly one callback row",
        // The callback rows counted once, then joined: no index covers rows without a
        // subscription, so a count per request would scan the outbox per request.
        "SELECT 'InStore request ' || q.tenant_id || '/' || q.request_id || ' has ' || \
           CAST(COALESCE(c.n, 0) AS TEXT) || ' callback rows' FROM instore_requests q \
         LEFT JOIN (SELECT event_id, COUNT(*) AS n FROM outbox WHERE subscription_id IS NULL \
                    GROUP BY event_id) c ON c.event_id = q.callback_event_id \
         WHERE q.callback_event_id <> '' AND COALESCE(c.n, 0) <> 1",
    ),
    (
        // The unique index `outbox_event_subscription` guards this; the audit says so too.
        "no event has two delivery rows for one subscription",
        "SELECT 'event ' || event_id || ' has ' || CAST(COUNT(*) AS TEXT) || \
           ' delivery rows for subscription ' || CAST(subscription_id AS TEXT) \
         FROM outbox WHERE subscription_id IS NOT NULL GROUP BY event_id, subscription_id \
         HAVING COUNT(*) > 1",
    ),
    (
        // Section 6.4; an account whose limit was lowered since is a warning instead.
        "each POA account owes no more than its credit limit",
        concat!(poa_over_limit!(), " IS NULL"),
    ),
    (
        // An instance learns of a new subscription within `outbox::SUBSCRIPTIONS_TTL`
        // (1 s); an event committed 2 s after the subscription became active is wanted.
        "every hold event since a subscription became active has its delivery row",
        concat!(
            "SELECT 'hold event ' || CAST(e.id AS TEXT) || ' (' || e.kind || ') has no delivery for subscription ' || CAST(s.id AS TEXT) \
         FROM hold_events e JOIN webhook_subscriptions s ON s.state = 'ACTIVE' AND e.created_at_ms >= s.active_since_ms + 2000 \
         WHERE (s.event_types = '*' OR ',' || s.event_types || ',' LIKE '%,' || \
                CASE e.kind WHEN 'RESERVED' THEN 'hold.reserved' WHEN 'CAPTURED' THEN 'hold.captured' \
                WHEN 'CANCELLED' THEN 'hold.released' WHEN 'EXPIRED' THEN 'hold.expired' ELSE 'hold.refunded' END || ',%') \
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.subscription_id = s.id \
                           AND o.event_id = 'evt-hold-' || CAST(e.id AS TEXT)) \
           AND e.created_at_ms >= ",
            rows_kept_from!()
        ),
    ),
    (
        "every processor movement since a subscription became active has its event row",
        concat!(
            "SELECT 'movement ' || CAST(x.id AS TEXT) || ' (' || x.kind || ' ' || COALESCE(x.transaction_id, '-') || \
               ') has no ' || x.event_type || ' row ' || COALESCE(x.event_id, '(no notification names it)') || \
               ' for subscription ' || CAST(s.id AS TEXT) \
             FROM (",
            processor_events!(),
            ") x JOIN webhook_subscriptions s ON ",
            owed_to_s!(),
            // An outer join, not `x.event_id IS NULL OR NOT EXISTS (...)`: under the `OR`
            // Postgres runs the subquery once per movement. An authorization's delivery that
            // its record owes to a sender still there, from that sender's mark on (being sent,
            // or awaiting its takeover), has no row yet, rightly.
            " LEFT JOIN outbox o ON o.subscription_id = s.id AND o.event_id = x.event_id \
             WHERE o.id IS NULL AND NOT EXISTS (SELECT 1 FROM processor_transactions r \
               JOIN outbox_senders w ON w.id = r.webhook_sender \
              WHERE x.kind = 'AUTHORIZATION' AND r.kind = 'AUTHORIZATION' \
                AND r.transaction_id = x.transaction_id AND r.created_at_ms >= w.sent_below \
                AND ',' || r.webhook_subscriptions || ',' LIKE '%,' || CAST(s.id AS TEXT) || ',%')"
        ),
    ),
];

/// How many processor movements there are, how many of them some subscription was owed an
/// event row, and how many subscriptions are ACTIVE.
const EVENTS_OWED: &str = concat!(
    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE ",
    owed_to_s!(),
    ") THEN 1 ELSE 0 END), 0), \
     (SELECT COUNT(*) FROM webhook_subscriptions WHERE state = 'ACTIVE') FROM (",
    processor_events!(),
    ") x"
);

/// The event types and ids each ledger row is reported by, as `'<type> <id>'`, except the
/// reconciliation's (a rerun of a date replaces its run, not the events of the earlier one).
/// `{hold}` and `{movement}` stand for the numeric row id read from the event id.
const DELIVERY_REPORTS_A_ROW: &str = "\
SELECT 'delivery ' || CAST(o.id AS TEXT) || ' (' || o.event_type || ' ' || o.event_id || \
       ') reports no row of the ledger' FROM outbox o WHERE NOT CASE \
  WHEN o.event_type = 'authorization.decided' THEN EXISTS (SELECT 1 FROM processor_transactions t \
       WHERE t.kind = 'AUTHORIZATION' AND t.transaction_id = SUBSTR(o.event_id, 10) \
         AND o.event_id = 'evt-auth-' || t.transaction_id) \
  WHEN o.event_type = 'adjustment.booked' THEN EXISTS (SELECT 1 FROM processor_transactions t \
       WHERE t.kind = 'ADJUSTMENT' AND t.transaction_id = SUBSTR(o.event_id, 9) \
         AND o.event_id = 'evt-adj-' || t.transaction_id) \
  WHEN o.event_type = 'notification.applied' THEN EXISTS (SELECT 1 FROM notifications n \
       WHERE n.idempotency_key = SUBSTR(o.event_id, 11) AND o.event_id = 'evt-notif-' || n.idempotency_key) \
  WHEN o.event_type LIKE 'hold.%' THEN EXISTS (SELECT 1 FROM hold_events e WHERE e.id = {hold} \
       AND o.event_id = 'evt-hold-' || CAST(e.id AS TEXT) \
       AND o.event_type = CASE e.kind WHEN 'RESERVED' THEN 'hold.reserved' WHEN 'CAPTURED' THEN 'hold.captured' \
           WHEN 'CANCELLED' THEN 'hold.released' WHEN 'EXPIRED' THEN 'hold.expired' ELSE 'hold.refunded' END) \
  WHEN o.event_type IN ('account.funded', 'account.withdrawn') THEN EXISTS (SELECT 1 FROM movements m \
       WHERE m.id = {movement} \
         AND ((m.kind = 'DEPOSIT' AND o.event_id = 'evt-deposit-' || CAST(m.id AS TEXT) \
               AND o.event_type = 'account.funded') \
           OR (m.kind = 'WITHDRAWAL' AND o.event_id = 'evt-withdrawal-' || CAST(m.id AS TEXT) \
               AND o.event_type = 'account.withdrawn'))) \
  WHEN o.event_type = 'reconciliation.finished' THEN EXISTS (SELECT 1 FROM recon_runs r \
       WHERE o.event_id LIKE 'evt-recon-' || r.business_date || '-%') \
  WHEN o.event_type = 'instore.callback' AND o.subscription_id IS NULL THEN EXISTS ( \
       SELECT 1 FROM instore_requests q WHERE q.callback_event_id = o.event_id) \
  ELSE 1 = 0 END \
ORDER BY o.id LIMIT 1000";

/// The number after `prefix` in `o.event_id`, as the backend compares ids (NULL when it is
/// not a number: a Postgres cast of other text would fail the whole audit).
fn id_after(pg: bool, prefix: &str) -> String {
    let digits = format!("SUBSTR(o.event_id, {})", prefix.len() + 1);
    if pg {
        format!("CASE WHEN {digits} ~ '^[0-9]{{1,18}}$' THEN CAST({digits} AS BIGINT) END")
    } else {
        format!("CAST({digits} AS INTEGER)")
    }
}

/// The longest wait of the retry schedule ([`crate::outbox::backoff_ms`] at its cap, plus
/// the jitter): a delivery due for longer than this, or scheduled further ahead, is stuck.
pub const DELIVERY_STUCK_MS: i64 = 360_000;

/// Deliveries to a subscription that is ACTIVE (they go to its URL of now), still pending, and either
/// overdue (due more than `$2` ago, before `$1`) or scheduled further ahead of their last
/// attempt than the schedule ever waits (`$2`).
const STUCK_DELIVERIES: &str = "\
SELECT 'delivery ' || CAST(o.id AS TEXT) || ' (' || o.event_id || ') to subscription ' || CAST(s.id AS TEXT) || \
       ' after ' || CAST(o.attempts AS TEXT) || ' attempt(s) is ' || \
       CASE WHEN o.next_attempt_at_ms < $1 THEN 'overdue: due at ' ELSE 'scheduled beyond the retry schedule: at ' END || \
       CAST(o.next_attempt_at_ms AS TEXT) \
  FROM outbox o JOIN webhook_subscriptions s ON s.id = o.subscription_id AND s.state = 'ACTIVE' \
 WHERE o.state = 'PENDING' AND (o.next_attempt_at_ms < $1 OR o.next_attempt_at_ms > o.updated_at_ms + $2) \
 ORDER BY o.id LIMIT 100";

const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM movements), \
    (SELECT COUNT(*) FROM postings), (SELECT COUNT(*) FROM processor_transactions), \
    (SELECT COUNT(*) FROM notifications), (SELECT COUNT(*) FROM holds)";

/// The sweep interval the audit assumes when none is given (`holds.sweep_interval_ms`).
pub const SWEEP_INTERVAL_MS_DEFAULT: i64 = 60_000;

impl Store {
    /// Checks every invariant on one consistent snapshot.
    pub async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.audit_with(SWEEP_INTERVAL_MS_DEFAULT).await
    }

    /// [`Store::audit`], warning about RESERVED holds more than two sweep intervals past
    /// their expiry ("sweeper lagging"): a warning, not a violation, since every operation
    /// expires an overdue hold before it looks at it.
    pub async fn audit_with(&self, sweep_interval_ms: i64) -> Result<AuditReport, StoreError> {
        let now = crate::now_ms();
        let lag_before = now.saturating_sub(sweep_interval_ms.saturating_mul(2));
        let pg = self.is_postgres();
        let delivery_check = DELIVERY_REPORTS_A_ROW
            .replace("{hold}", &id_after(pg, "evt-hold-"))
            .replace(
                "{movement}",
                &format!(
                    "(CASE WHEN o.event_type = 'account.funded' THEN {} ELSE {} END)",
                    id_after(pg, "evt-deposit-"),
                    id_after(pg, "evt-withdrawal-")
                ),
            );
        let mut tx = self.begin_read().await?;
        if let crate::Tx::Pg(tx) = &mut tx {
            // The audit reads the whole ledger: the request path's statement timeout
            // (`database.statement_ms_max`) would fail it once the ledger has grown.
            sqlx::query("SET LOCAL statement_timeout = 0")
                .execute(&mut **tx)
                .await?;
        }
        let mut report = AuditReport::default();
        run!(&mut tx, c => {
            let r = sqlx::query(COUNTS).fetch_one(&mut *c).await?;
            report.accounts = r.try_get(0)?;
            report.movements = r.try_get(1)?;
            report.postings = r.try_get(2)?;
            report.processor_transactions = r.try_get(3)?;
            report.notifications = r.try_get(4)?;
            report.holds = r.try_get(5)?;
            let r = sqlx::query(EVENTS_OWED).fetch_one(&mut *c).await?;
            report.processor_movements = r.try_get(0)?;
            report.processor_movements_owed_events = r.try_get(1)?;
            report.active_subscriptions = r.try_get(2)?;
            report.deliveries_pruned_before_ms =
                sqlx::query_scalar("SELECT pruned_before_ms FROM outbox_retention WHERE id = 1")
                    .fetch_optional(&mut *c)
                    .await?
                    .unwrap_or(0);
            for (invariant, sql) in CHECKS.iter().chain(crate::wallet::WALLET_CHECKS).chain([(
                "every delivery reports a row of the ledger",
                delivery_check.as_str(),
            )].iter()) {
                for row in sqlx::query(sql).fetch_all(&mut *c).await? {
                    report.violations.push(Violation { invariant, detail: row.try_get(0)? });
                }
            }
            for row in sqlx::query(STUCK_DELIVERIES)
                .bind(now.saturating_sub(DELIVERY_STUCK_MS))
                .bind(DELIVERY_STUCK_MS)
                .fetch_all(&mut *c)
                .await?
            {
                report.warnings.push(Violation { invariant: "delivery stuck", detail: row.try_get(0)? });
            }
            for row in sqlx::query(
                "SELECT 'hold ' || CAST(id AS TEXT) || ' (' || channel || '/' || reservation_id || \
                 ') expired at ' || CAST(expires_at_ms AS TEXT) || ' is still RESERVED' \
                 FROM holds WHERE state = 'RESERVED' AND expires_at_ms < $1 ORDER BY id LIMIT 100",
            )
            .bind(lag_before)
            .fetch_all(&mut *c)
            .await?
            {
                report.warnings.push(Violation { invariant: "sweeper lagging", detail: row.try_get(0)? });
            }
            for row in sqlx::query(concat!(poa_over_limit!(), " IS NOT NULL")).fetch_all(&mut *c).await? {
                report.warnings.push(Violation {
                    invariant: "POA account over a lowered credit limit",
                    detail: row.try_get(0)?,
                });
            }
        });
        // The counters are checked at an instant read once the snapshot is taken: every
        // write it sees was stamped before it.
        let tz = &self.controls_time_zone;
        let at = crate::now_ms();
        report
            .violations
            .extend(counter_violations(&mut tx, tz, at).await?);
        Ok(report)
    }
}

const COUNTERS_DIFFER: &str = "every control counter holds what the records it counts still hold";

/// One counter: its owner, the owner's id (`user/currency` or the card id) and its key.
type CounterId = (Owner, String, CounterKey);

/// The spending controls' counters against the records that counted in them: each
/// authorization, hold and wallet payment keeps what it counted and what it gave back
/// since, so every counter must hold the sum of what its records still hold. A card's
/// counter rows are kept for every window; an account's row drops the windows that are
/// over, so its counters are checked in the windows holding `now_ms` (in `tz`).
async fn counter_violations(
    tx: &mut crate::Tx,
    tz: &TimeZone,
    now_ms: i64,
) -> Result<Vec<Violation>, sqlx::Error> {
    // An account's counters are checked in the windows holding `now_ms` only.
    let current = windows_of([now_ms], tz);
    let checked =
        |owner: Owner, key: &CounterKey| owner == Owner::Card || current.contains(&key.window);
    let mut expected: HashMap<CounterId, Counter> = HashMap::new();
    let mut add = |writes: Vec<CounterWrite>| {
        for w in writes.into_iter().filter(|w| checked(w.owner, &w.key)) {
            let c = expected.entry((w.owner, w.owner_id, w.key)).or_default();
            c.amount += w.amount;
            c.count += w.count;
        }
    };
    // Streamed: the records of the whole history, one at a time.
    run!(tx, c => {
        let mut rows = sqlx::query_scalar::<_, String>(
            "SELECT controls_counted FROM processor_transactions \
             WHERE kind = 'AUTHORIZATION' AND controls_counted IS NOT NULL \
             UNION ALL SELECT controls_counted FROM holds WHERE controls_counted IS NOT NULL",
        )
        .fetch(c);
        while let Some(stored) = rows.try_next().await? {
            add(still_counted(&stored));
        }
    });
    // A wallet payment's row is immutable: what it gave back is its returns, replayed in
    // the order they were booked.
    let payments: Vec<(String, i64, String)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT transaction_id, total_minor, controls_counted FROM wallet_payments \
             WHERE controls_counted IS NOT NULL",
        )
        .fetch_all(c)
        .await?
    });
    let returns: Vec<(String, String, i64)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT payment_transaction_id, kind, amount_minor FROM wallet_returns \
             ORDER BY movement_id",
        )
        .fetch_all(c)
        .await?
    });
    let mut returned: HashMap<&str, Vec<(bool, i64)>> = HashMap::new();
    for (payment, kind, amount) in &returns {
        let reversal = kind.as_str() == crate::wallet::ReturnKind::Reversal.movement_kind();
        returned
            .entry(payment)
            .or_default()
            .push((reversal, *amount));
    }
    for (id, total, stored) in payments {
        let mut text = stored;
        for &(reversal, amount) in returned.get(id.as_str()).into_iter().flatten() {
            let give = GiveBack::Credit { amount, reversal };
            if let Some((_, after)) = release_counted(&text, give, Some(total)) {
                text = after;
            }
        }
        add(still_counted(&text));
    }
    let mut stored: HashMap<CounterId, Counter> = HashMap::new();
    let cards: Vec<(String, String, String, i64, i64)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT owner_id, window_key, categories, amount_minor, count FROM control_counters \
             WHERE owner_kind = $1",
        )
        .bind(owner_kind(Owner::Card))
        .fetch_all(c)
        .await?
    });
    for (card, window, categories, amount, count) in cards {
        if let Some(key) = CounterKey::from_columns(&window, &categories) {
            stored.insert((Owner::Card, card, key), Counter { amount, count });
        }
    }
    let accounts: Vec<(String, String, String)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT user_id, currency, counters FROM accounts WHERE kind = 'USER' AND counters <> ''",
        )
        .fetch_all(c)
        .await?
    });
    for (user, currency, counters) in &accounts {
        for (key, c) in decode_counters(counters).filter(|(k, _)| checked(Owner::Account, k)) {
            stored.insert((Owner::Account, format!("{user}/{currency}"), key), c);
        }
    }
    let mut ids: Vec<&CounterId> = expected.keys().chain(stored.keys()).collect();
    ids.sort_unstable_by(|a, b| (owner_kind(a.0), &a.1, &a.2).cmp(&(owner_kind(b.0), &b.1, &b.2)));
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let want = expected.get(id).copied().unwrap_or_default();
        let have = stored.get(id).copied().unwrap_or_default();
        if (want.amount, want.count) != (have.amount, have.count) {
            out.push(Violation {
                invariant: COUNTERS_DIFFER,
                detail: format!(
                    "{} {} counter {}: holds {} minor units and {} authorizations, its records {} and {}",
                    owner_kind(id.0).to_lowercase(),
                    id.1,
                    id.2,
                    have.amount,
                    have.count,
                    want.amount,
                    want.count
                ),
            });
        }
    }
    Ok(out)
}
