//! Deposits and withdrawals: the issuer moving its own funding into or out of a
//! cardholder account (the admin API). Pure: the store reads and locks the account, asks
//! [`plan_funding`], and writes the movement or answers the refusal.

use crate::posting::PostingPlan;

/// Movement kind of money moved in by the issuer.
pub const KIND_DEPOSIT: &str = "DEPOSIT";
/// Movement kind of money moved out by the issuer.
pub const KIND_WITHDRAWAL: &str = "WITHDRAWAL";

/// A cardholder account as read under lock for funding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FundedAccount {
    /// Posted balance, minor units.
    pub balance: i64,
    /// What the account's reserved holds keep.
    pub held: i64,
}

/// Why a deposit or withdrawal is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FundingRefusal {
    /// A withdrawal never overdraws and never spends what holds keep.
    InsufficientFunds,
    /// The balance after would be beyond what the ledger can hold.
    BalanceOutOfRange,
}

/// A deposit or withdrawal, planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FundingPlan {
    pub kind: &'static str,
    /// The cardholder account against funding.
    pub postings: PostingPlan,
    pub balance_after: i64,
    /// What the receipt shows: what can be spent after, posted less held.
    pub available_after: i64,
}

/// Plans moving `amount` (positive minor units) into the account, or out of it for a
/// withdrawal.
pub fn plan_funding(
    withdrawal: bool,
    amount: i64,
    account: FundedAccount,
) -> Result<FundingPlan, FundingRefusal> {
    let signed = if withdrawal {
        amount
            .checked_neg()
            .ok_or(FundingRefusal::BalanceOutOfRange)?
    } else {
        amount
    };
    // Available alone: a withdrawal has no overdraft.
    if withdrawal && account.balance.saturating_sub(account.held) < amount {
        return Err(FundingRefusal::InsufficientFunds);
    }
    let balance_after = account
        .balance
        .checked_add(signed)
        .ok_or(FundingRefusal::BalanceOutOfRange)?;
    Ok(FundingPlan {
        kind: if withdrawal {
            KIND_WITHDRAWAL
        } else {
            KIND_DEPOSIT
        },
        postings: PostingPlan::funding(signed),
        balance_after,
        available_after: balance_after.saturating_sub(account.held),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FundingRefusal::{BalanceOutOfRange, InsufficientFunds};

    fn acct(balance: i64, held: i64) -> FundedAccount {
        FundedAccount { balance, held }
    }

    /// Holder amount, balance after and available after, or the refusal.
    type Expected = Result<(i64, i64, i64), FundingRefusal>;

    #[test]
    fn deposits_and_withdrawals() {
        // (withdrawal, amount, balance, held, expected)
        #[rustfmt::skip]
        let table: &[(bool, i64, i64, i64, Expected)] = &[
            (false, 500, 0, 0, Ok((500, 500, 500))),
            (false, 500, -200, 0, Ok((500, 300, 300))),
            // The receipt shows what holds leave spendable.
            (false, 500, 1000, 300, Ok((500, 1500, 1200))),
            (true, 400, 1000, 0, Ok((-400, 600, 600))),
            // Exactly what is available, and one more.
            (true, 700, 1000, 300, Ok((-700, 300, 0))),
            (true, 701, 1000, 300, Err(InsufficientFunds)),
            // Never overdraws, whatever the overdraft of card spending.
            (true, 1, 0, 0, Err(InsufficientFunds)),
            (true, 1, -50, 0, Err(InsufficientFunds)),
            // Beyond the ledger's range.
            (false, 1, i64::MAX, 0, Err(BalanceOutOfRange)),
            (false, i64::MAX, 1, 0, Err(BalanceOutOfRange)),
            // A balance so low that available saturates: still refused, not wrapped.
            (true, 1, i64::MIN, 1, Err(InsufficientFunds)),
            (false, 1, i64::MAX - 1, i64::MIN, Ok((1, i64::MAX, i64::MAX))),
        ];
        for (i, &(withdrawal, amount, balance, held, expected)) in table.iter().enumerate() {
            let got = plan_funding(withdrawal, amount, acct(balance, held))
                .map(|p| (p.postings.holder_amount, p.balance_after, p.available_after));
            assert_eq!(got, expected, "case {i}");
        }
    }

    #[test]
    fn kinds_and_counterparty() {
        let d = plan_funding(false, 5, acct(0, 0)).unwrap();
        let w = plan_funding(true, 5, acct(5, 0)).unwrap();
        assert_eq!((d.kind, w.kind), (KIND_DEPOSIT, KIND_WITHDRAWAL));
        assert_eq!(d.postings, PostingPlan::funding(5));
        assert_eq!(w.postings, PostingPlan::funding(-5));
    }
}
