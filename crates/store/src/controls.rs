//! The spending controls documents of accounts and cards, as the admin API sets and reads
//! them. The documents are validated and put in canonical form by `ledger::controls`
//! before they get here; the plan reads them with the rows of the snapshot.

use crate::{Store, StoreError, run_pool};
use ledger::Currency;

/// A stored controls document: its canonical JSON (`{}` when none is set) and its version,
/// bumped by every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredControls {
    pub document: String,
    pub version: i64,
}

fn stored((document, version): (String, i64)) -> StoredControls {
    StoredControls {
        document: if document.is_empty() {
            "{}".to_owned()
        } else {
            document
        },
        version,
    }
}

impl Store {
    /// The controls of the account (`None`: no such account).
    pub async fn account_controls(
        &self,
        user_id: &str,
        currency: Currency,
    ) -> Result<Option<StoredControls>, StoreError> {
        let row: Option<(String, i64)> = run_pool!(&self.db, p => {
            sqlx::query_as(
                "SELECT controls, controls_version FROM accounts \
                 WHERE kind = 'USER' AND user_id = $1 AND currency = $2",
            )
            .bind(user_id)
            .bind(currency.code())
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(stored))
    }

    /// Replaces the account's controls with `canonical` (`''`: none); `None`: no such
    /// account, nothing changed.
    pub async fn set_account_controls(
        &self,
        user_id: &str,
        currency: Currency,
        canonical: &str,
        now_ms: i64,
    ) -> Result<Option<StoredControls>, StoreError> {
        let row: Option<(String, i64)> = run_pool!(&self.db, p => {
            sqlx::query_as(
                "UPDATE accounts SET controls = $3, controls_version = controls_version + 1, \
                 updated_at_ms = $4 WHERE kind = 'USER' AND user_id = $1 AND currency = $2 \
                 RETURNING controls, controls_version",
            )
            .bind(user_id)
            .bind(currency.code())
            .bind(canonical)
            .bind(now_ms)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(stored))
    }

    /// The controls of the card (`None`: no such card).
    pub async fn card_controls(&self, card_id: &str) -> Result<Option<StoredControls>, StoreError> {
        let row: Option<(String, i64)> = run_pool!(&self.db, p => {
            sqlx::query_as("SELECT controls, controls_version FROM cards WHERE card_id = $1")
                .bind(card_id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(stored))
    }

    /// Replaces the card's controls with `canonical` (`''`: none); `None`: no such card,
    /// nothing changed.
    pub async fn set_card_controls(
        &self,
        card_id: &str,
        canonical: &str,
        now_ms: i64,
    ) -> Result<Option<StoredControls>, StoreError> {
        let row: Option<(String, i64)> = run_pool!(&self.db, p => {
            sqlx::query_as(
                "UPDATE cards SET controls = $2, controls_version = controls_version + 1, \
                 updated_at_ms = $3 WHERE card_id = $1 RETURNING controls, controls_version",
            )
            .bind(card_id)
            .bind(canonical)
            .bind(now_ms)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(stored))
    }
}
