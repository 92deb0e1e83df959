//! Card rules read outside a transaction, for a cache in front of the store. A cached
//! record is handed back to [`Store::authorize_with`](crate::Store::authorize_with) or a
//! [`BatchItem`](crate::BatchItem) as a [`CardLookup`], which then skips reading the card in
//! the transaction. Account rules are columns of the account row that the transaction locks
//! for the balance anyway, so they are always read there, under the lock.

use crate::{Store, StoreError, run_pool};
use ledger::{CardStatus, MccSet};

pub use ledger::plan::{CardLookup, CardRecord};

/// A card row as the plan reads it.
pub(crate) fn card_from_stored(user_id: String, status: &str, blocked: &str) -> CardRecord {
    CardRecord {
        user_id,
        // An unreadable status is treated as not active: refuse rather than guess.
        status: CardStatus::parse(status).unwrap_or(CardStatus::Blocked),
        blocked_mccs: MccSet::from_stored(blocked).unwrap_or_default(),
    }
}

impl Store {
    /// The card's rules as committed now (`None`: no record), read without locking.
    pub async fn card_record(&self, card_id: &str) -> Result<Option<CardRecord>, StoreError> {
        let row: Option<(String, String, String)> = run_pool!(&self.db, p => {
            sqlx::query_as("SELECT user_id, status, blocked_mccs FROM cards WHERE card_id = $1")
                .bind(card_id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(user, status, blocked)| card_from_stored(user, &status, &blocked)))
    }
}
