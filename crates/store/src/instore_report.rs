//! The InStore movements of one tenant over one period, summed for the retailer's own
//! settlement (instore-extensions.md section 6.3): totals per action and currency.

use crate::{Store, StoreError, run_pool};
use sqlx::Row;

/// The movements of one action in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvSummaryRow {
    /// `Load`, `Redeem`, `Cancel of Load` or `Cancel of Redeem`.
    pub action: String,
    pub currency: String,
    /// Requests that booked money (a split Redeem is one operation of several legs).
    pub operations: i64,
    /// Card legs booked.
    pub legs: i64,
    /// The sum of the legs, signed from the cards' side (a Redeem is negative).
    pub amount_minor: i64,
}

/// Groups by action and currency. A Cancel takes the kind of the operation it reverses.
const SUMMARY: &str = "\
SELECT CASE m.kind WHEN 'SV_LOAD' THEN 'Load' WHEN 'SV_REDEEM' THEN 'Redeem' \
         WHEN 'SV_CANCEL' THEN CASE (SELECT o.kind FROM instore_movements o \
             WHERE o.external_payment_id = m.reverses_payment_id AND o.kind <> 'SV_CANCEL' LIMIT 1) \
           WHEN 'SV_LOAD' THEN 'Cancel of Load' WHEN 'SV_REDEEM' THEN 'Cancel of Redeem' \
           ELSE 'Cancel' END \
         ELSE m.kind END AS action, \
       m.currency, COUNT(DISTINCT m.request_id), COUNT(*), CAST(SUM(m.amount_minor) AS BIGINT) \
  FROM instore_movements m \
 WHERE m.tenant_id = $1 AND m.created_at_ms >= $2 AND m.created_at_ms < $3 \
 GROUP BY 1, 2 ORDER BY 2, 1";

impl Store {
    /// The InStore movements `tenant_id`'s tills booked from `from_ms` (included) to
    /// `to_ms` (excluded), per action and currency, ordered by currency then action.
    pub async fn instore_summary(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SvSummaryRow>, StoreError> {
        let mut out = Vec::new();
        run_pool!(&self.db, p => {
            for r in sqlx::query(SUMMARY)
                .bind(tenant_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(p)
                .await?
            {
                out.push(SvSummaryRow {
                    action: r.try_get(0)?,
                    currency: r.try_get(1)?,
                    operations: r.try_get(2)?,
                    legs: r.try_get(3)?,
                    amount_minor: r.try_get(4)?,
                });
            }
        });
        Ok(out)
    }
}
