//! Card rules read outside a transaction, for a cache in front of the store. A cached
//! record is handed back to [`Store::authorize_with`](crate::Store::authorize_with) or a
//! [`BatchItem`](crate::BatchItem) as a [`CardLookup`], which then skips reading the card in
//! the transaction. Account rules are columns of the account row that the transaction locks
//! for the balance anyway, so they are always read there, under the lock.

use crate::{Store, StoreError, run_pool};
use ledger::controls::Controls;
use ledger::{CardStatus, Currency, MccSet};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

pub use ledger::plan::{CardLookup, CardRecord};

/// A card row as the plan reads it.
pub(crate) fn card_from_stored(
    user_id: String,
    status: &str,
    blocked: &str,
    controls: &str,
) -> CardRecord {
    CardRecord {
        user_id,
        // An unreadable status is treated as not active: refuse rather than guess.
        status: CardStatus::parse(status).unwrap_or(CardStatus::Blocked),
        blocked_mccs: MccSet::from_stored(blocked).unwrap_or_default(),
        controls: stored_controls(Some(controls), None),
    }
}

/// The rules of card `$card_id` read on `$on` (a transaction's connection, or a pool):
/// `None` when we hold no record of it.
macro_rules! fetch_card_record {
    ($on:expr, $card_id:expr) => {
        sqlx::query_as::<_, (String, String, String, String)>(
            "SELECT user_id, status, blocked_mccs, controls FROM cards WHERE card_id = $1",
        )
        .bind($card_id)
        .fetch_optional($on)
        .await?
        .map(|(user, status, blocked, controls)| {
            $crate::rules::card_from_stored(user, &status, &blocked, &controls)
        })
    };
}
pub(crate) use fetch_card_record;

/// A stored controls document (`''`: none) as the plan reads it; `account_currency` for
/// an account's. Documents are validated and stored in canonical form, so one that cannot
/// be read again is a damaged row: it is logged and read as no controls.
///
/// Every batch reads the documents of its accounts and cards again (under the lock, as
/// committed), but few distinct documents exist (products set the same ones on many
/// accounts, and a document changes seldom): each is parsed once and shared, from a
/// bounded map keyed by its text, instead of once per authorization.
pub(crate) fn stored_controls(
    stored: Option<&str>,
    account_currency: Option<Currency>,
) -> Option<Arc<Controls>> {
    let text = stored.filter(|s| !s.is_empty())?;
    if let Some((_, hit)) = PARSED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(text)
        .and_then(|of| of.iter().find(|(c, _)| *c == account_currency))
    {
        return hit.clone();
    }
    let parsed = match Controls::from_json(text, account_currency) {
        Ok(c) if c.is_empty() => None,
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::error!(error = %e, "stored spending controls unreadable");
            return None;
        }
    };
    let mut map = PARSED.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= PARSED_MAX {
        map.clear();
    }
    map.entry(text.to_owned())
        .or_default()
        .push((account_currency, parsed.clone()));
    parsed
}

/// How many parsed documents [`stored_controls`] keeps (beyond it, it starts over).
const PARSED_MAX: usize = 4096;

/// Parsed documents by their text, for each currency they were read for.
type Parsed = HashMap<String, Vec<(Option<Currency>, Option<Arc<Controls>>)>>;

static PARSED: LazyLock<Mutex<Parsed>> = LazyLock::new(Default::default);

impl Store {
    /// The card's rules as committed now (`None`: no record), read without locking.
    pub async fn card_record(&self, card_id: &str) -> Result<Option<CardRecord>, StoreError> {
        Ok(run_pool!(&self.db, p => fetch_card_record!(p, card_id)))
    }
}
