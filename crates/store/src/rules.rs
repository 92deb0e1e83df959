//! Card rules read outside a transaction, for a cache in front of the store. A cached
//! record is handed back to [`Store::authorize_with`](crate::Store::authorize_with) or a
//! [`BatchItem`](crate::BatchItem) as a [`CardLookup`], which then skips reading the card in
//! the transaction. Account rules are columns of the account row that the transaction locks
//! for the balance anyway, so they are always read there, under the lock.

use crate::{Store, StoreError, run_pool};
use ledger::{CardState, CardStatus, MccSet};

/// The rules of a card we hold a record for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// The user the card is registered to.
    pub user_id: String,
    pub status: CardStatus,
    pub blocked_mccs: MccSet,
}

impl CardRecord {
    /// The record as the decision sees it for a request naming `user_id`.
    pub fn state_for(&self, user_id: Option<&str>) -> CardState {
        CardState {
            status: self.status,
            belongs_to_user: user_id == Some(self.user_id.as_str()),
            blocked_mccs: self.blocked_mccs.clone(),
        }
    }

    pub(crate) fn from_stored(user_id: String, status: &str, blocked: &str) -> CardRecord {
        CardRecord {
            user_id,
            // An unreadable status is treated as not active: refuse rather than guess.
            status: CardStatus::parse(status).unwrap_or(CardStatus::Blocked),
            blocked_mccs: MccSet::from_stored(blocked).unwrap_or_default(),
        }
    }
}

/// Where an authorization takes the rules of the card it names.
#[derive(Debug, Clone, Copy, Default)]
pub enum CardLookup<'a> {
    /// Read the card in the authorization's transaction.
    #[default]
    InTransaction,
    /// Known beforehand: we hold no record for this card.
    Absent,
    /// Known beforehand: this record.
    Known(&'a CardRecord),
}

impl CardLookup<'_> {
    /// The card state when it is known beforehand; `None` when it must be read.
    pub(crate) fn known(&self, user_id: Option<&str>) -> Option<Option<CardState>> {
        match self {
            CardLookup::InTransaction => None,
            CardLookup::Absent => Some(None),
            CardLookup::Known(r) => Some(Some(r.state_for(user_id))),
        }
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
        Ok(row.map(|(user, status, blocked)| CardRecord::from_stored(user, &status, &blocked)))
    }
}
