//! The authorization decision: a pure function of a prefetched snapshot and the request.
//!
//! Rules, in order (the first that applies decides):
//! 0. direction unknown (bare route, unknown transaction type) -> declined, other;
//! 1. currency not a listed ISO 4217 code -> declined, invalid amount;
//! 2. no account for (user, currency) -> declined, other;
//! 3. card on record and not ACTIVE (or registered to another user) -> declined, other;
//! 4. merchant MCC blocked for the account or the card -> declined, invalid merchant; where
//!    a block applies, a debit whose MCC is missing or cannot be read is declined the same
//!    way (a block must not fail open); MCCs are read through [`Mcc::normalize`];
//! 5. amount not representable in minor units, negative, or above the per-transaction
//!    or daily limit (debits) -> declined, invalid amount;
//!
//! Rules 4 and 5 are the legacy fields (blocked MCCs, per-transaction and daily limits) as
//! the controls they amount to, decided by [`crate::controls::evaluate`]; their answers
//! (`MerchantBlocked`, `AbovePerTransactionLimit`, ...) are the ones they always had.
//! 6. the spending controls of the account and the card (`crate::controls`, evaluated by
//!    the plan, which holds their counters) -> declined, invalid merchant or invalid amount;
//! 7. balance inquiry -> approved with the balance, no movement;
//! 8. debit above available balance plus overdraft -> declined, insufficient funds;
//! 9. otherwise approved; a zero amount approves without a movement.

use crate::controls::{
    Channels, Check, ControlKind, ControlRequest, Controls, Counter, CounterKey, Interval, Owner,
    TimeZone, evaluate,
};
use crate::money::{AmountError, to_minor};
use crate::{Currency, Mcc, MccSet};
use jiff::Timestamp;
use rust_decimal::Decimal;

/// What the processor asks of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Take money from the cardholder.
    Debit,
    /// Give money to the cardholder.
    Credit,
    /// Report the balance; moves nothing.
    BalanceInquiry,
}

/// Lifecycle state of a card we hold a record for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Active,
    Blocked,
    Lost,
    Stolen,
    Closed,
}

impl CardStatus {
    pub const ALL: [CardStatus; 5] = [
        CardStatus::Active,
        CardStatus::Blocked,
        CardStatus::Lost,
        CardStatus::Stolen,
        CardStatus::Closed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            CardStatus::Active => "ACTIVE",
            CardStatus::Blocked => "BLOCKED",
            CardStatus::Lost => "LOST",
            CardStatus::Stolen => "STOLEN",
            CardStatus::Closed => "CLOSED",
        }
    }

    pub fn parse(s: &str) -> Option<CardStatus> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The cardholder account as read (and locked) before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub currency: Currency,
    /// Posted balance in minor units (what the postings sum to).
    pub balance: i64,
    /// Sum of the account's `RESERVED` holds, in minor units (≥ 0). A debit may spend
    /// `balance - held + overdraft_limit`; holds move no money.
    pub held: i64,
    /// How far below zero a debit may take the balance, in minor units.
    pub overdraft_limit: i64,
    pub per_transaction_limit: Option<i64>,
    pub daily_limit: Option<i64>,
    /// Debits approved so far on the current day, in minor units.
    pub daily_spent: i64,
    pub blocked_mccs: MccSet,
}

/// A card we hold a record for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardState {
    pub status: CardStatus,
    /// False when the card is registered to a different user than the request names.
    pub belongs_to_user: bool,
    pub blocked_mccs: MccSet,
}

/// The request as the decision sees it.
#[derive(Debug, Clone)]
pub struct AuthorizationInput<'a> {
    /// `None` when neither the route nor the transaction type says which way money moves.
    pub kind: Option<RequestKind>,
    /// `None` when the currency is not a listed code.
    pub currency: Option<Currency>,
    /// `None` when the amount was well-formed but beyond exact decimal range.
    pub amount: Option<Decimal>,
    pub mcc: Option<&'a str>,
}

/// Why an authorization is refused. A decline is a value, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    UnknownTransactionType,
    UnknownCurrency,
    AccountNotFound,
    CardNotActive(CardStatus),
    CardOfAnotherUser,
    MerchantBlocked,
    /// A block applies and the request's MCC is missing or cannot be read.
    MerchantCategoryUnreadable,
    AmountNotRepresentable,
    NegativeAmount,
    AbovePerTransactionLimit,
    AboveDailyLimit,
    InsufficientFunds,
    /// The processor already told us, through a notification, that this transaction
    /// was rejected on its side: a late authorization must not book it.
    RejectedByProcessor,
    /// The processor's approval came first and booked nothing (no amount, or a type whose
    /// direction we could not tell): it waits for a person, and a late authorization is not
    /// answered APPROVED for money that is not booked.
    VerdictBookedNothing,
    /// A spending control declined (merchant controls: invalid merchant; limits: invalid
    /// amount). The words naming the control are the evaluation's.
    Control(DeclineClass),
}

/// The protocol's reason families, without depending on the protocol crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineClass {
    Other,
    InvalidMerchant,
    InvalidAmount,
    InsufficientFunds,
}

impl DeclineClass {
    /// The processor's `status_detail` word for this family.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeclineClass::Other => "OTHER",
            DeclineClass::InvalidMerchant => "INVALID_MERCHANT",
            DeclineClass::InvalidAmount => "INVALID_AMOUNT",
            DeclineClass::InsufficientFunds => "INSUFFICIENT_FUNDS",
        }
    }
}

impl Decline {
    pub fn class(&self) -> DeclineClass {
        match self {
            Decline::UnknownTransactionType
            | Decline::AccountNotFound
            | Decline::CardNotActive(_)
            | Decline::CardOfAnotherUser
            | Decline::RejectedByProcessor
            | Decline::VerdictBookedNothing => DeclineClass::Other,
            Decline::MerchantBlocked | Decline::MerchantCategoryUnreadable => {
                DeclineClass::InvalidMerchant
            }
            Decline::UnknownCurrency
            | Decline::AmountNotRepresentable
            | Decline::NegativeAmount
            | Decline::AbovePerTransactionLimit
            | Decline::AboveDailyLimit => DeclineClass::InvalidAmount,
            Decline::InsufficientFunds => DeclineClass::InsufficientFunds,
            Decline::Control(class) => *class,
        }
    }

    /// A short human message for the response.
    pub fn message(&self) -> &'static str {
        match self {
            Decline::UnknownTransactionType => "Unknown transaction type",
            Decline::UnknownCurrency => "Unknown currency",
            Decline::AccountNotFound => "Account not found",
            Decline::CardNotActive(_) => "Card not active",
            Decline::CardOfAnotherUser => "Card not registered to this user",
            Decline::MerchantBlocked => "Merchant blocked",
            Decline::MerchantCategoryUnreadable => {
                "Merchant category missing or unreadable where a block applies"
            }
            Decline::AmountNotRepresentable => "Invalid amount",
            Decline::NegativeAmount => "Negative amount",
            Decline::AbovePerTransactionLimit => "Amount above per-transaction limit",
            Decline::AboveDailyLimit => "Amount above daily limit",
            Decline::InsufficientFunds => "Insufficient funds",
            Decline::RejectedByProcessor => "Already rejected by the processor",
            Decline::VerdictBookedNothing => {
                "The processor's approval came first and was not booked: it waits for review"
            }
            Decline::Control(_) => "Declined by a spending control",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approved. `amount` is in minor units and signed from the cardholder's side
    /// (negative for a debit); zero means nothing moves.
    Approved {
        amount: i64,
        balance_after: i64,
        daily_spent_after: i64,
    },
    /// Balance inquiry answered; nothing moves.
    Balance {
        balance: i64,
    },
    Declined(Decline),
}

impl Decision {
    pub fn is_approved(&self) -> bool {
        !matches!(self, Decision::Declined(_))
    }
}

/// Decides an authorization from the snapshot read before it.
pub fn decide(
    input: &AuthorizationInput<'_>,
    account: Option<&AccountState>,
    card: Option<&CardState>,
) -> Decision {
    decide_with(input, account, card, |_, _| None)
}

/// [`decide`], asking `controls(kind, amount)` (minor units, >= 0) at rule 6 whether a
/// spending control declines, and with which reason family.
pub fn decide_with(
    input: &AuthorizationInput<'_>,
    account: Option<&AccountState>,
    card: Option<&CardState>,
    controls: impl FnOnce(RequestKind, i64) -> Option<DeclineClass>,
) -> Decision {
    match decide_inner(input, account, card, controls) {
        Ok(d) => d,
        Err(reason) => Decision::Declined(reason),
    }
}

fn decide_inner(
    input: &AuthorizationInput<'_>,
    account: Option<&AccountState>,
    card: Option<&CardState>,
    controls: impl FnOnce(RequestKind, i64) -> Option<DeclineClass>,
) -> Result<Decision, Decline> {
    let kind = input.kind.ok_or(Decline::UnknownTransactionType)?;
    let currency = input.currency.ok_or(Decline::UnknownCurrency)?;
    let account = account.ok_or(Decline::AccountNotFound)?;
    debug_assert_eq!(account.currency, currency);
    if let Some(card) = card {
        if !card.belongs_to_user {
            return Err(Decline::CardOfAnotherUser);
        }
        if card.status != CardStatus::Active {
            return Err(Decline::CardNotActive(card.status));
        }
    }
    // Rules 4 and 5: the legacy fields are controls (`Controls::from_account_state`,
    // `Controls::from_card_state`), decided by the controls' own evaluation at the place and
    // with the answers they always had.
    let legacy = Legacy::of(account, card);
    if let Some(l) = &legacy {
        l.merchant(kind, currency, input.mcc)?;
    }
    let amount = input.amount.ok_or(Decline::AmountNotRepresentable)?;
    let minor = to_minor(amount, currency).map_err(|e| match e {
        AmountError::ExcessPrecision | AmountError::OutOfRange => Decline::AmountNotRepresentable,
    })?;
    if minor < 0 {
        return Err(Decline::NegativeAmount);
    }
    let daily_spent_after = match kind {
        RequestKind::Debit => {
            if let Some(l) = &legacy {
                l.limits(currency, minor, input.mcc, account.daily_spent)?;
            }
            account
                .daily_spent
                .checked_add(minor)
                .ok_or(Decline::AmountNotRepresentable)?
        }
        RequestKind::Credit | RequestKind::BalanceInquiry => account.daily_spent,
    };
    if let Some(class) = controls(kind, minor) {
        return Err(Decline::Control(class));
    }
    let signed = match kind {
        RequestKind::BalanceInquiry => {
            // What the cardholder can spend: the posted balance less what is held.
            return Ok(Decision::Balance {
                balance: account.balance.saturating_sub(account.held),
            });
        }
        RequestKind::Debit => {
            let available = i128::from(account.balance) - i128::from(account.held)
                + i128::from(account.overdraft_limit);
            if i128::from(minor) > available {
                return Err(Decline::InsufficientFunds);
            }
            -minor
        }
        RequestKind::Credit => minor,
    };
    let balance_after = account
        .balance
        .checked_add(signed)
        .ok_or(Decline::AmountNotRepresentable)?;
    Ok(Decision::Approved {
        amount: signed,
        balance_after,
        daily_spent_after,
    })
}

/// The legacy fields of an account and its card as controls: the merchant part (blocked
/// MCCs of both) and the account's limits (per transaction, daily).
struct Legacy {
    merchant: Vec<(Owner, Controls)>,
    limits: Controls,
}

impl Legacy {
    /// `None` when neither holds a legacy rule.
    fn of(account: &AccountState, card: Option<&CardState>) -> Option<Legacy> {
        let card_blocks = card.filter(|c| !c.blocked_mccs.is_empty());
        if account.blocked_mccs.is_empty()
            && account.per_transaction_limit.is_none()
            && account.daily_limit.is_none()
            && card_blocks.is_none()
        {
            return None;
        }
        let mut of_account = Controls::from_account_state(account);
        let limits = Controls {
            currency: of_account.currency,
            spending_limits: std::mem::take(&mut of_account.spending_limits),
            ..Controls::default()
        };
        let mut merchant = vec![(Owner::Account, of_account)];
        merchant.extend(card_blocks.map(|c| (Owner::Card, Controls::from_card_state(c))));
        Some(Legacy { merchant, limits })
    }

    fn run(
        layers: &[(Owner, &Controls)],
        request: &ControlRequest<'_>,
        daily_spent: i64,
    ) -> Option<(ControlKind, Option<Interval>)> {
        // The daily limit reads the account's own counter of the day (`daily_spent`, already
        // today's), whatever the window key says.
        let spent = |_: Owner, key: &CounterKey| Counter {
            amount: if key.window.interval() == Interval::Daily {
                daily_spent
            } else {
                0
            },
            count: 0,
        };
        let ev = evaluate(layers, request, &spent, &TimeZone::UTC);
        let d = ev.declined?;
        let interval = match ev.checks.last() {
            Some(Check::SpendingLimit { interval, .. }) => Some(*interval),
            _ => None,
        };
        Some((d.control, interval))
    }

    /// Rule 4: a blocked MCC (or one missing or unreadable where a block applies, for a
    /// debit).
    fn merchant(
        &self,
        kind: RequestKind,
        currency: Currency,
        mcc: Option<&str>,
    ) -> Result<(), Decline> {
        let layers: Vec<(Owner, &Controls)> = self.merchant.iter().map(|(o, c)| (*o, c)).collect();
        let request = legacy_request(kind, currency, 0, mcc);
        match Self::run(&layers, &request, 0) {
            None => Ok(()),
            Some(_) if mcc.and_then(|m| Mcc::normalize(m).ok()).is_none() => {
                Err(Decline::MerchantCategoryUnreadable)
            }
            Some(_) => Err(Decline::MerchantBlocked),
        }
    }

    /// Rule 5: a debit above the per-transaction limit, or taking the day's debits above the
    /// daily limit.
    fn limits(
        &self,
        currency: Currency,
        minor: i64,
        mcc: Option<&str>,
        daily_spent: i64,
    ) -> Result<(), Decline> {
        let request = legacy_request(RequestKind::Debit, currency, minor, mcc);
        match Self::run(&[(Owner::Account, &self.limits)], &request, daily_spent) {
            None => Ok(()),
            Some((_, Some(Interval::PerAuthorization))) => Err(Decline::AbovePerTransactionLimit),
            Some(_) => Err(Decline::AboveDailyLimit),
        }
    }
}

/// The request as the legacy rules read it: its direction, currency, amount and MCC.
fn legacy_request<'a>(
    kind: RequestKind,
    currency: Currency,
    amount: i64,
    mcc: Option<&'a str>,
) -> ControlRequest<'a> {
    ControlRequest {
        kind,
        currency,
        amount,
        mcc,
        country: None,
        channels: Channels::default(),
        at: Timestamp::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn ars() -> Currency {
        Currency::parse("ARS").unwrap()
    }

    fn account(balance: i64) -> AccountState {
        AccountState {
            currency: ars(),
            balance,
            held: 0,
            overdraft_limit: 0,
            per_transaction_limit: None,
            daily_limit: None,
            daily_spent: 0,
            blocked_mccs: MccSet::default(),
        }
    }

    fn card(status: CardStatus) -> CardState {
        CardState {
            status,
            belongs_to_user: true,
            blocked_mccs: MccSet::default(),
        }
    }

    fn input(kind: RequestKind, amount: &str) -> AuthorizationInput<'static> {
        AuthorizationInput {
            kind: Some(kind),
            currency: Some(ars()),
            amount: Some(Decimal::from_str(amount).unwrap()),
            mcc: Some("5045"),
        }
    }

    use Decision::*;
    use Decline::*;
    use RequestKind::*;

    type Case = (
        &'static str,
        AuthorizationInput<'static>,
        Option<AccountState>,
        Option<CardState>,
        Decision,
    );

    /// One row per rule, plus the boundaries that matter for money.
    #[test]
    fn decision_table() {
        let blocked = MccSet::from_stored("5045").unwrap();
        let mut with_od = account(1000);
        with_od.overdraft_limit = 500;
        let mut with_hold = account(1000);
        with_hold.held = 500;
        let mut limited = account(1_000_000);
        limited.per_transaction_limit = Some(10_000);
        limited.daily_limit = Some(25_000);
        limited.daily_spent = 20_000;
        let mut acc_blocked = account(1000);
        acc_blocked.blocked_mccs = blocked.clone();
        let mut card_blocked = card(CardStatus::Active);
        card_blocked.blocked_mccs = blocked.clone();
        let mut foreign = card(CardStatus::Active);
        foreign.belongs_to_user = false;
        let mut unknown_cur = input(Debit, "1");
        unknown_cur.currency = None;
        let mut huge = input(Debit, "1");
        huge.amount = None;
        let mut no_kind = input(Debit, "1");
        no_kind.kind = None;
        no_kind.currency = None;

        let cases: Vec<Case> = vec![
            (
                "unknown direction",
                no_kind,
                Some(account(1000)),
                None,
                Declined(UnknownTransactionType),
            ),
            (
                "unknown currency",
                unknown_cur,
                Some(account(1000)),
                None,
                Declined(UnknownCurrency),
            ),
            (
                "no account",
                input(Debit, "1"),
                None,
                None,
                Declined(AccountNotFound),
            ),
            (
                "no account beats card",
                input(Debit, "1"),
                None,
                Some(card(CardStatus::Lost)),
                Declined(AccountNotFound),
            ),
            (
                "card blocked",
                input(Debit, "1"),
                Some(account(1000)),
                Some(card(CardStatus::Blocked)),
                Declined(CardNotActive(CardStatus::Blocked)),
            ),
            (
                "card lost",
                input(Debit, "1"),
                Some(account(1000)),
                Some(card(CardStatus::Lost)),
                Declined(CardNotActive(CardStatus::Lost)),
            ),
            (
                "card stolen",
                input(Credit, "1"),
                Some(account(1000)),
                Some(card(CardStatus::Stolen)),
                Declined(CardNotActive(CardStatus::Stolen)),
            ),
            (
                "card closed",
                input(Debit, "1"),
                Some(account(1000)),
                Some(card(CardStatus::Closed)),
                Declined(CardNotActive(CardStatus::Closed)),
            ),
            (
                "card of another user",
                input(Debit, "1"),
                Some(account(1000)),
                Some(foreign),
                Declined(CardOfAnotherUser),
            ),
            (
                "card not on record",
                input(Debit, "1"),
                Some(account(1000)),
                None,
                Approved {
                    amount: -100,
                    balance_after: 900,
                    daily_spent_after: 100,
                },
            ),
            (
                "mcc blocked on account",
                input(Debit, "1"),
                Some(acc_blocked.clone()),
                None,
                Declined(MerchantBlocked),
            ),
            (
                "mcc blocked on card",
                input(Debit, "1"),
                Some(account(1000)),
                Some(card_blocked.clone()),
                Declined(MerchantBlocked),
            ),
            (
                "card check beats mcc",
                input(Debit, "1"),
                Some(account(1000)),
                Some(CardState {
                    status: CardStatus::Lost,
                    ..card_blocked.clone()
                }),
                Declined(CardNotActive(CardStatus::Lost)),
            ),
            (
                "mcc blocked in another spelling",
                AuthorizationInput {
                    mcc: Some(" 05045"),
                    ..input(Debit, "1")
                },
                Some(account(1000)),
                Some(card_blocked.clone()),
                Declined(MerchantBlocked),
            ),
            (
                "mcc missing where a block applies",
                AuthorizationInput {
                    mcc: None,
                    ..input(Debit, "1")
                },
                Some(account(1000)),
                Some(card_blocked.clone()),
                Declined(MerchantCategoryUnreadable),
            ),
            (
                "mcc unreadable where a block applies",
                AuthorizationInput {
                    mcc: Some("50x5"),
                    ..input(Debit, "1")
                },
                Some(acc_blocked.clone()),
                None,
                Declined(MerchantCategoryUnreadable),
            ),
            (
                "credit without an mcc where a block applies",
                AuthorizationInput {
                    mcc: None,
                    ..input(Credit, "1")
                },
                Some(account(1000)),
                Some(card_blocked.clone()),
                Approved {
                    amount: 100,
                    balance_after: 1100,
                    daily_spent_after: 0,
                },
            ),
            (
                "mcc unreadable and no block",
                AuthorizationInput {
                    mcc: Some("50x5"),
                    ..input(Debit, "1")
                },
                Some(account(1000)),
                Some(card(CardStatus::Active)),
                Approved {
                    amount: -100,
                    balance_after: 900,
                    daily_spent_after: 100,
                },
            ),
            (
                "mcc beats amount",
                input(Debit, "-1"),
                Some(acc_blocked),
                None,
                Declined(MerchantBlocked),
            ),
            (
                "excess precision",
                input(Debit, "1.001"),
                Some(account(1000)),
                None,
                Declined(AmountNotRepresentable),
            ),
            (
                "out of decimal range",
                huge,
                Some(account(1000)),
                None,
                Declined(AmountNotRepresentable),
            ),
            (
                "beyond i64 minor units",
                input(Debit, "99999999999999999999"),
                Some(account(1000)),
                None,
                Declined(AmountNotRepresentable),
            ),
            (
                "negative",
                input(Debit, "-1"),
                Some(account(1000)),
                None,
                Declined(NegativeAmount),
            ),
            (
                "negative credit",
                input(Credit, "-0.01"),
                Some(account(1000)),
                None,
                Declined(NegativeAmount),
            ),
            (
                "per-transaction limit",
                input(Debit, "100.01"),
                Some(limited.clone()),
                None,
                Declined(AbovePerTransactionLimit),
            ),
            (
                "at per-transaction limit, above daily",
                input(Debit, "100.00"),
                Some(limited.clone()),
                None,
                Declined(AboveDailyLimit),
            ),
            (
                "within daily limit exactly",
                input(Debit, "50.00"),
                Some(limited.clone()),
                None,
                Approved {
                    amount: -5000,
                    balance_after: 995_000,
                    daily_spent_after: 25_000,
                },
            ),
            (
                "limits do not apply to credits",
                input(Credit, "1000.00"),
                Some(limited.clone()),
                None,
                Approved {
                    amount: 100_000,
                    balance_after: 1_100_000,
                    daily_spent_after: 20_000,
                },
            ),
            (
                "limit beats insufficient funds",
                input(Debit, "100.01"),
                Some({
                    let mut a = limited.clone();
                    a.balance = 0;
                    a
                }),
                None,
                Declined(AbovePerTransactionLimit),
            ),
            (
                "balance inquiry",
                input(BalanceInquiry, "0"),
                Some(account(1234)),
                None,
                Balance { balance: 1234 },
            ),
            (
                "balance inquiry on negative balance",
                input(BalanceInquiry, "0"),
                Some(account(-50)),
                None,
                Balance { balance: -50 },
            ),
            (
                "insufficient funds",
                input(Debit, "10.01"),
                Some(account(1000)),
                None,
                Declined(InsufficientFunds),
            ),
            (
                "exact balance",
                input(Debit, "10.00"),
                Some(account(1000)),
                None,
                Approved {
                    amount: -1000,
                    balance_after: 0,
                    daily_spent_after: 1000,
                },
            ),
            (
                "overdraft covers",
                input(Debit, "15.00"),
                Some(with_od.clone()),
                None,
                Approved {
                    amount: -1500,
                    balance_after: -500,
                    daily_spent_after: 1500,
                },
            ),
            (
                "a hold reduces what a debit may spend",
                input(Debit, "5.01"),
                Some(with_hold.clone()),
                None,
                Declined(InsufficientFunds),
            ),
            (
                "a debit may spend exactly posted minus held",
                input(Debit, "5.00"),
                Some(with_hold),
                None,
                Approved {
                    amount: -500,
                    balance_after: 500,
                    daily_spent_after: 500,
                },
            ),
            (
                "balance inquiry reports posted minus held",
                input(BalanceInquiry, "0"),
                Some({
                    let mut a = account(1000);
                    a.held = 300;
                    a
                }),
                None,
                Balance { balance: 700 },
            ),
            (
                "overdraft exceeded",
                input(Debit, "15.01"),
                Some(with_od),
                None,
                Declined(InsufficientFunds),
            ),
            (
                "credit",
                input(Credit, "990.0"),
                Some(account(0)),
                None,
                Approved {
                    amount: 99_000,
                    balance_after: 99_000,
                    daily_spent_after: 0,
                },
            ),
            (
                "zero debit on empty account",
                input(Debit, "0.00"),
                Some(account(0)),
                None,
                Approved {
                    amount: 0,
                    balance_after: 0,
                    daily_spent_after: 0,
                },
            ),
            (
                "credit overflow",
                input(Credit, "1.00"),
                Some(account(i64::MAX)),
                None,
                Declined(AmountNotRepresentable),
            ),
        ];
        for (name, inp, acc, crd, want) in cases {
            assert_eq!(
                decide(&inp, acc.as_ref(), crd.as_ref()),
                want,
                "case: {name}"
            );
        }
    }

    #[test]
    fn decline_classes_follow_the_protocol() {
        assert_eq!(UnknownCurrency.class(), DeclineClass::InvalidAmount);
        assert_eq!(AccountNotFound.class(), DeclineClass::Other);
        assert_eq!(CardNotActive(CardStatus::Lost).class(), DeclineClass::Other);
        assert_eq!(MerchantBlocked.class(), DeclineClass::InvalidMerchant);
        assert_eq!(AboveDailyLimit.class(), DeclineClass::InvalidAmount);
        assert_eq!(InsufficientFunds.class(), DeclineClass::InsufficientFunds);
    }

    #[test]
    fn card_status_round_trips() {
        for s in CardStatus::ALL {
            assert_eq!(CardStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CardStatus::parse("active"), None);
    }
}
