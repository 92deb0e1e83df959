//! Proves the ledger's invariants on a live database.

use crate::{Db, Store, StoreError, run};
use sqlx::Row;

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
    pub violations: Vec<Violation>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
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
];

const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM movements), \
    (SELECT COUNT(*) FROM postings), (SELECT COUNT(*) FROM processor_transactions), \
    (SELECT COUNT(*) FROM notifications)";

impl Store {
    /// Checks every invariant on one consistent snapshot.
    pub async fn audit(&self) -> Result<AuditReport, StoreError> {
        let mut tx = match &self.db {
            Db::Pg(p) => crate::Tx::Pg(
                p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
            Db::Lite(p) => crate::Tx::Lite(p.begin().await?),
        };
        let mut report = AuditReport::default();
        run!(&mut tx, c => {
            let r = sqlx::query(COUNTS).fetch_one(&mut *c).await?;
            report.accounts = r.try_get(0)?;
            report.movements = r.try_get(1)?;
            report.postings = r.try_get(2)?;
            report.processor_transactions = r.try_get(3)?;
            report.notifications = r.try_get(4)?;
            for (invariant, sql) in CHECKS {
                for row in sqlx::query(sql).fetch_all(&mut *c).await? {
                    report.violations.push(Violation { invariant, detail: row.try_get(0)? });
                }
            }
        });
        Ok(report)
    }
}
