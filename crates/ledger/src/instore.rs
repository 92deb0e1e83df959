//! Stored-value movements of the InStore extension (`SV_LOAD`, `SV_REDEEM`, `SV_CANCEL`):
//! the postings of the legs a decision asked for, each against the state the earlier legs
//! left. Pure: the store locks the accounts, asks [`plan_stored_value`], and writes the
//! bookings (or answers the refusal) in the same transaction.
//!
//! A card's balance is its account's balance, shared with card authorizations and holds:
//! every debit is checked against what is spendable now, `posted − held + overdraft`; the
//! reversal of a Load never reaches into the overdraft.

use crate::posting::PostingPlan;

/// Movement kind of a stored-value Load (and of a created card's opening balance).
pub const KIND_SV_LOAD: &str = "SV_LOAD";
/// Movement kind of a stored-value Redeem.
pub const KIND_SV_REDEEM: &str = "SV_REDEEM";
/// Movement kind of the reversal of a Load or Redeem.
pub const KIND_SV_CANCEL: &str = "SV_CANCEL";

/// The operation a set of legs belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvKind {
    /// Credits only.
    Load,
    /// Debits only, within what is spendable (overdraft included).
    Redeem,
    /// Credits (a Redeem reversed) or debits (a Load reversed, never into the overdraft).
    Cancel,
}

impl SvKind {
    pub fn movement_kind(self) -> &'static str {
        match self {
            SvKind::Load => KIND_SV_LOAD,
            SvKind::Redeem => KIND_SV_REDEEM,
            SvKind::Cancel => KIND_SV_CANCEL,
        }
    }
}

/// A cardholder account as read under lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvAccount {
    pub id: i64,
    /// Posted balance, minor units.
    pub balance: i64,
    /// What the account's reserved holds keep.
    pub held: i64,
    pub overdraft_limit: i64,
}

/// Why the legs cannot be booked. The decision checks these first; the plan re-checks them
/// against the locked state so that no write can break the ledger's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvRefusal {
    /// A leg of zero, or a sign its operation does not allow.
    InvalidLeg,
    /// A debit beyond what the account can spend.
    InsufficientFunds,
    /// A balance beyond what the ledger can hold.
    BalanceOutOfRange,
}

/// One leg, planned: the postings and the account's state after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvBooking {
    pub account_id: i64,
    /// The cardholder account against InStore clearing.
    pub postings: PostingPlan,
    /// Posted balance after.
    pub balance_after: i64,
    /// posted − held after: what the callback and the log report.
    pub available_after: i64,
}

/// Plans `legs` (account, signed minor units on it) in order; an account named by several
/// legs is seen by each in the state the earlier ones left. All or nothing.
pub fn plan_stored_value(
    kind: SvKind,
    legs: &[(SvAccount, i64)],
) -> Result<Vec<SvBooking>, SvRefusal> {
    let mut state: Vec<SvAccount> = Vec::with_capacity(legs.len());
    let mut out = Vec::with_capacity(legs.len());
    for &(account, delta) in legs {
        let allowed = match kind {
            SvKind::Load => delta > 0,
            SvKind::Redeem => delta < 0,
            SvKind::Cancel => delta != 0,
        };
        if !allowed {
            return Err(SvRefusal::InvalidLeg);
        }
        let current = match state.iter_mut().find(|a| a.id == account.id) {
            Some(a) => a,
            None => {
                state.push(account);
                state.last_mut().expect("just pushed")
            }
        };
        let available = current.balance.saturating_sub(current.held);
        if delta < 0 {
            let debit = delta.checked_neg().ok_or(SvRefusal::BalanceOutOfRange)?;
            let room = match kind {
                SvKind::Redeem => available.saturating_add(current.overdraft_limit),
                _ => available,
            };
            if debit > room {
                return Err(SvRefusal::InsufficientFunds);
            }
        }
        let balance_after = current
            .balance
            .checked_add(delta)
            .ok_or(SvRefusal::BalanceOutOfRange)?;
        current.balance = balance_after;
        out.push(SvBooking {
            account_id: account.id,
            postings: PostingPlan::instore(delta),
            balance_after,
            available_after: balance_after.saturating_sub(current.held),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posting::{Leg, SystemAccount};
    use SvRefusal::{BalanceOutOfRange, InsufficientFunds, InvalidLeg};

    fn acct(id: i64, balance: i64, held: i64, overdraft_limit: i64) -> SvAccount {
        SvAccount {
            id,
            balance,
            held,
            overdraft_limit,
        }
    }

    /// (balance after, available after) per leg, or the refusal.
    type Expected = Result<Vec<(i64, i64)>, SvRefusal>;
    /// An operation, its legs, and what the plan must make of them.
    type Case = (SvKind, Vec<(SvAccount, i64)>, Expected);

    #[test]
    fn legs_against_the_state_left_before_them() {
        let a = acct(1, 5_000, 0, 0);
        let held = acct(2, 5_000, 1_000, 0);
        let overdraft = acct(3, 100, 0, 500);
        #[rustfmt::skip]
        let table: &[Case] = &[
            // Section 7.1: 50.00 less 12.20.
            (SvKind::Redeem, vec![(a, -1_220)], Ok(vec![(3_780, 3_780)])),
            (SvKind::Load, vec![(a, 1_220)], Ok(vec![(6_220, 6_220)])),
            // Holds reduce what a Redeem may spend, to the unit.
            (SvKind::Redeem, vec![(held, -4_000)], Ok(vec![(1_000, 0)])),
            (SvKind::Redeem, vec![(held, -4_001)], Err(InsufficientFunds)),
            // A Redeem may use the overdraft; the reversal of a Load may not.
            (SvKind::Redeem, vec![(overdraft, -600)], Ok(vec![(-500, -500)])),
            (SvKind::Redeem, vec![(overdraft, -601)], Err(InsufficientFunds)),
            (SvKind::Cancel, vec![(overdraft, -101)], Err(InsufficientFunds)),
            (SvKind::Cancel, vec![(overdraft, -100)], Ok(vec![(0, 0)])),
            (SvKind::Cancel, vec![(held, 1_220)], Ok(vec![(6_220, 5_220)])),
            // A split over two cards of one account: the second leg sees the first.
            (SvKind::Redeem, vec![(a, -3_000), (a, -2_000)], Ok(vec![(2_000, 2_000), (0, 0)])),
            (SvKind::Redeem, vec![(a, -3_000), (a, -2_001)], Err(InsufficientFunds)),
            // Split over two accounts, all or nothing.
            (SvKind::Redeem, vec![(a, -5_000), (held, -4_001)], Err(InsufficientFunds)),
            // Signs each operation allows.
            (SvKind::Load, vec![(a, -1)], Err(InvalidLeg)),
            (SvKind::Redeem, vec![(a, 1)], Err(InvalidLeg)),
            (SvKind::Cancel, vec![(a, 0)], Err(InvalidLeg)),
            // Beyond the ledger's range.
            (SvKind::Load, vec![(acct(4, i64::MAX, 0, 0), 1)], Err(BalanceOutOfRange)),
            (SvKind::Redeem, vec![(a, i64::MIN)], Err(BalanceOutOfRange)),
        ];
        for (i, (kind, legs, expected)) in table.iter().enumerate() {
            let got = plan_stored_value(*kind, legs).map(|b| {
                b.iter()
                    .map(|b| (b.balance_after, b.available_after))
                    .collect::<Vec<_>>()
            });
            assert_eq!(&got, expected, "case {i}");
        }
    }

    #[test]
    fn every_leg_posts_against_instore_clearing_and_balances() {
        let b = plan_stored_value(SvKind::Redeem, &[(acct(7, 100, 0, 0), -40)]).unwrap();
        assert_eq!(b[0].account_id, 7);
        let legs = b[0].postings.legs().unwrap();
        assert_eq!(legs[0], (Leg::User, -40));
        assert_eq!(legs[1], (Leg::System(SystemAccount::InstoreClearing), 40));
        assert_eq!(
            [SvKind::Load, SvKind::Redeem, SvKind::Cancel].map(SvKind::movement_kind),
            [KIND_SV_LOAD, KIND_SV_REDEEM, KIND_SV_CANCEL]
        );
    }
}
