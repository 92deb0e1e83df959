//! How a movement splits into postings. Every plan has two legs that sum to zero by
//! construction, so no caller can write an unbalanced movement.

/// Accounts the issuer holds per currency, whose balances are derived from postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemAccount {
    /// The processor's side of every card movement.
    ProcessorClearing,
    /// Where deposits come from and withdrawals go to (the issuer's funding).
    Funding,
    /// Movements that could not be attributed to a cardholder account.
    Suspense,
    /// The two-phase channels' side (PoS wallets): captures and refunds of holds.
    PosClearing,
    /// The store tenants' side of InStore movements (stored-value loads, redeems and
    /// their reversals): what the tenants owe or are owed.
    InstoreClearing,
}

impl SystemAccount {
    pub const ALL: [SystemAccount; 5] = [
        SystemAccount::ProcessorClearing,
        SystemAccount::Funding,
        SystemAccount::Suspense,
        SystemAccount::PosClearing,
        SystemAccount::InstoreClearing,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SystemAccount::ProcessorClearing => "PROCESSOR_CLEARING",
            SystemAccount::Funding => "FUNDING",
            SystemAccount::Suspense => "SUSPENSE",
            SystemAccount::PosClearing => "POS_CLEARING",
            SystemAccount::InstoreClearing => "INSTORE_CLEARING",
        }
    }

    pub fn parse(s: &str) -> Option<SystemAccount> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The account a movement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The cardholder account of the request.
    User,
    System(SystemAccount),
}

/// A balanced two-leg movement: `holder` receives `holder_amount` (signed, minor units),
/// `counterparty` the opposite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostingPlan {
    pub holder: Leg,
    pub counterparty: SystemAccount,
    pub holder_amount: i64,
}

impl PostingPlan {
    /// A card movement on the cardholder account against processor clearing.
    pub fn card(holder_amount: i64) -> PostingPlan {
        PostingPlan {
            holder: Leg::User,
            counterparty: SystemAccount::ProcessorClearing,
            holder_amount,
        }
    }

    /// A card movement that names no known cardholder account: parked on suspense.
    pub fn suspense(holder_amount: i64) -> PostingPlan {
        PostingPlan {
            holder: Leg::System(SystemAccount::Suspense),
            counterparty: SystemAccount::ProcessorClearing,
            holder_amount,
        }
    }

    /// Funding moved in (positive) or out (negative) by the issuer.
    pub fn funding(holder_amount: i64) -> PostingPlan {
        PostingPlan {
            holder: Leg::User,
            counterparty: SystemAccount::Funding,
            holder_amount,
        }
    }

    /// A channel movement (hold capture or refund) on the cardholder account against
    /// PoS clearing.
    pub fn pos(holder_amount: i64) -> PostingPlan {
        PostingPlan {
            holder: Leg::User,
            counterparty: SystemAccount::PosClearing,
            holder_amount,
        }
    }

    /// An InStore movement on the cardholder account against InStore clearing.
    pub fn instore(holder_amount: i64) -> PostingPlan {
        PostingPlan {
            holder: Leg::User,
            counterparty: SystemAccount::InstoreClearing,
            holder_amount,
        }
    }

    /// The legs as (account, signed amount); they always sum to zero.
    pub fn legs(&self) -> Option<[(Leg, i64); 2]> {
        let other = self.holder_amount.checked_neg()?;
        Some([
            (self.holder, self.holder_amount),
            (Leg::System(self.counterparty), other),
        ])
    }

    /// The plan that undoes this one.
    pub fn reversed(&self) -> Option<PostingPlan> {
        Some(PostingPlan {
            holder_amount: self.holder_amount.checked_neg()?,
            ..*self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_sum_to_zero_and_reverse() {
        for amt in [0, 1, -1, 99_000, i64::MAX, i64::MIN + 1] {
            let p = PostingPlan::card(amt);
            let legs = p.legs().unwrap();
            assert_eq!(legs[0].1 + legs[1].1, 0);
            assert_eq!(legs[1].0, Leg::System(SystemAccount::ProcessorClearing));
            assert_eq!(p.reversed().unwrap().reversed().unwrap(), p);
        }
        assert!(PostingPlan::card(i64::MIN).legs().is_none());
        assert_eq!(
            PostingPlan::suspense(5).holder,
            Leg::System(SystemAccount::Suspense)
        );
        assert_eq!(PostingPlan::funding(5).counterparty, SystemAccount::Funding);
    }

    #[test]
    fn system_account_names_round_trip() {
        for a in SystemAccount::ALL {
            assert_eq!(SystemAccount::parse(a.as_str()), Some(a));
        }
    }
}
