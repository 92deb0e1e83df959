//! The fields accounts and cards had before controls, read as controls: an account's
//! per-transaction limit, daily limit and blocked MCCs, a card's blocked MCCs.

use super::{Categories, Controls, Interval, SpendingLimit};
use crate::decision::{AccountState, CardState};

impl Controls {
    /// The controls an account's legacy fields amount to: blocked MCCs become blocked
    /// categories, the per-transaction limit a `per_authorization` spending limit and the
    /// daily limit a `daily` one (the decision reads it on the account's own counter of the
    /// UTC day, `daily_spent`, not on a window counter). Evaluated beside
    /// the account's own controls, so both must pass.
    pub fn from_account_state(account: &AccountState) -> Controls {
        let mut spending_limits: Vec<SpendingLimit> = [
            (Interval::PerAuthorization, account.per_transaction_limit),
            (Interval::Daily, account.daily_limit),
        ]
        .into_iter()
        .filter_map(|(interval, limit)| {
            limit.map(|amount| SpendingLimit {
                interval,
                categories: None,
                amount,
            })
        })
        .collect();
        spending_limits.sort_unstable();
        Controls {
            currency: Some(account.currency),
            blocked_categories: Categories::from_mcc_set(&account.blocked_mccs),
            spending_limits,
            ..Controls::default()
        }
    }

    /// The controls a card's legacy blocked MCCs amount to.
    pub fn from_card_state(card: &CardState) -> Controls {
        Controls {
            blocked_categories: Categories::from_mcc_set(&card.blocked_mccs),
            ..Controls::default()
        }
    }
}
