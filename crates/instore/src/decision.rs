//! The decision tables of section 6.2 as pure functions over the state the store prefetches.
//! Every check runs before anything is written; a decline is a value.

use ledger::Currency;

use crate::money::{
    MoneyError, WALLET_PRECISION, WireAmount, WireUint, listed_currency, to_minor,
    to_minor_positive,
};
use crate::signature::{Mac, secret_matches};

/// A stable business reason (`error`) with its two-character response code (`code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    CardNotFound,
    UnknownCurrency,
    CurrencyMismatch,
    InvalidAmount,
    CardInactive,
    InvalidCvc,
    LimitExceeded,
    InsufficientFunds,
    NotFound,
    NotReversible,
    InvalidPin,
    NotPermitted,
    AccountNotFound,
    AccountBlocked,
    UserNotAuthorized,
    CreditLimitExceeded,
    CreditLimitTooHigh,
    AccountExists,
    FieldNotUpdatable,
    InvalidTransaction,
    NothingToRefund,
    BarcodeNotFound,
    BarcodeExpired,
    BarcodeUsed,
    /// Reserved: we decide before we acknowledge, so it is never sent today.
    SystemError,
}

impl Reason {
    /// A decline for a secret (PIN, CVC) or a card not active: its answer leaves the balance
    /// out, as a lookup's does, or a till without the secret could read it.
    pub fn withholds_balance(self) -> bool {
        matches!(
            self,
            Reason::InvalidPin | Reason::InvalidCvc | Reason::CardInactive
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CardNotFound => "CARD_NOT_FOUND",
            Reason::UnknownCurrency => "UNKNOWN_CURRENCY",
            Reason::CurrencyMismatch => "CURRENCY_MISMATCH",
            Reason::InvalidAmount => "INVALID_AMOUNT",
            Reason::CardInactive => "CARD_INACTIVE",
            Reason::InvalidCvc => "INVALID_CVC",
            Reason::LimitExceeded => "LIMIT_EXCEEDED",
            Reason::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Reason::NotFound => "NOT_FOUND",
            Reason::NotReversible => "NOT_REVERSIBLE",
            Reason::InvalidPin => "INVALID_PIN",
            Reason::NotPermitted => "NOT_PERMITTED",
            Reason::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Reason::AccountBlocked => "ACCOUNT_BLOCKED",
            Reason::UserNotAuthorized => "USER_NOT_AUTHORIZED",
            Reason::CreditLimitExceeded => "CREDIT_LIMIT_EXCEEDED",
            Reason::CreditLimitTooHigh => "CREDIT_LIMIT_TOO_HIGH",
            Reason::AccountExists => "ACCOUNT_EXISTS",
            Reason::FieldNotUpdatable => "FIELD_NOT_UPDATABLE",
            Reason::InvalidTransaction => "INVALID_TRANSACTION",
            Reason::NothingToRefund => "NOTHING_TO_REFUND",
            Reason::BarcodeNotFound => "BARCODE_NOT_FOUND",
            Reason::BarcodeExpired => "BARCODE_EXPIRED",
            Reason::BarcodeUsed => "BARCODE_USED",
            Reason::SystemError => "SYSTEM_ERROR",
        }
    }

    /// The ISO 8583-style response code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::CardNotFound | Reason::AccountNotFound | Reason::BarcodeNotFound => "14",
            Reason::UnknownCurrency | Reason::CurrencyMismatch | Reason::InvalidAmount => "13",
            Reason::CardInactive | Reason::AccountBlocked => "62",
            Reason::InvalidCvc => "82",
            Reason::LimitExceeded | Reason::CreditLimitTooHigh => "61",
            Reason::InsufficientFunds | Reason::CreditLimitExceeded => "51",
            Reason::NotFound => "25",
            Reason::NotReversible
            | Reason::AccountExists
            | Reason::FieldNotUpdatable
            | Reason::InvalidTransaction
            | Reason::NothingToRefund => "12",
            Reason::InvalidPin => "55",
            Reason::NotPermitted | Reason::UserNotAuthorized => "57",
            Reason::BarcodeExpired => "54",
            Reason::BarcodeUsed => "94",
            Reason::SystemError => "96",
        }
    }
}

impl From<MoneyError> for Reason {
    fn from(e: MoneyError) -> Reason {
        match e {
            MoneyError::UnknownCurrency => Reason::UnknownCurrency,
            MoneyError::InvalidAmount => Reason::InvalidAmount,
        }
    }
}

/// Approved (`None`) or declined with a reason: the `result`, `status`, `code` and `error`
/// members of every result body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub Option<Reason>);

impl Outcome {
    pub const APPROVED: Outcome = Outcome(None);

    pub fn declined(reason: Reason) -> Outcome {
        Outcome(Some(reason))
    }

    pub fn is_approved(self) -> bool {
        self.0.is_none()
    }

    pub fn result(self) -> &'static str {
        if self.is_approved() {
            "Success"
        } else {
            "Failure"
        }
    }

    pub fn status(self) -> &'static str {
        if self.is_approved() {
            "approved"
        } else {
            "declined"
        }
    }

    pub fn code(self) -> &'static str {
        self.0.map_or("00", Reason::code)
    }

    pub fn error(self) -> Option<&'static str> {
        self.0.map(Reason::as_str)
    }
}

/// The spending state of a ledger account, as every debit decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funds {
    pub currency: Currency,
    /// Posted balance in minor units.
    pub posted: i64,
    /// Sum of open holds.
    pub held: i64,
    pub overdraft_limit: i64,
    pub per_transaction_limit: Option<i64>,
    pub daily_limit: Option<i64>,
    pub daily_spent: i64,
}

impl Funds {
    /// A fresh account with no holds, limits or overdraft.
    pub fn plain(currency: Currency, posted: i64) -> Funds {
        Funds {
            currency,
            posted,
            held: 0,
            overdraft_limit: 0,
            per_transaction_limit: None,
            daily_limit: None,
            daily_spent: 0,
        }
    }

    /// posted - held + overdraft: the one number card authorizations, Redeem, POA Credit and
    /// `pay_wallet` all spend against.
    pub fn spendable(&self) -> i64 {
        self.posted
            .saturating_sub(self.held)
            .saturating_add(self.overdraft_limit)
    }

    /// posted - held: the balance we report (a lookup never offers the overdraft).
    pub fn available(&self) -> i64 {
        self.posted.saturating_sub(self.held)
    }

    fn within_limits(&self, amount: i64) -> bool {
        let per_tx = self.per_transaction_limit.is_none_or(|l| amount <= l);
        let daily = self
            .daily_limit
            .is_none_or(|l| self.daily_spent.checked_add(amount).is_some_and(|s| s <= l));
        per_tx && daily
    }
}

/// A stored-value card as the store prefetches it for a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvCard {
    pub number: String,
    /// Whether the card is bound to the requesting tenant. A card of another tenant is
    /// answered exactly as an unknown one.
    pub tenant_matches: bool,
    /// `ACTIVE`; any other status reads as `Inactive`.
    pub active: bool,
    pub cvc_hash: Option<Mac>,
    pub pin_hash: Option<Mac>,
    pub pin_tries: u32,
    /// Whether the number is linked to an existing cardholder account, whose limits then
    /// apply to Redeem (check 7).
    pub linked: bool,
    pub funds: Funds,
    /// The ledger account the card spends, when known. Cards of one account share its
    /// funds: `funds` is the account's, read once per card.
    pub account_id: Option<i64>,
}

impl SvCard {
    /// An active card of the requesting tenant with no secrets on record, not linked.
    pub fn new(number: &str, funds: Funds) -> SvCard {
        SvCard {
            number: number.to_owned(),
            tenant_matches: true,
            active: true,
            cvc_hash: None,
            pin_hash: None,
            pin_tries: 0,
            linked: false,
            funds,
            account_id: None,
        }
    }
}

/// One card of a stored-value request: what the store found for the number and what the
/// request presented for it.
#[derive(Debug, Clone, Copy)]
pub struct CardRequest<'a> {
    pub number: &'a str,
    pub card: Option<&'a SvCard>,
    pub cvc: Option<&'a str>,
    pub pin: Option<&'a str>,
}

/// One card's part of an approved Load or Redeem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub number: String,
    /// Minor units moved on the card's account: positive credits, negative debits.
    pub delta: i64,
    /// posted - held after the movement.
    pub balance_after: i64,
}

/// An approved Load or Redeem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub currency: Currency,
    /// The processed amount, in minor units (positive).
    pub amount: i64,
    /// One per card used, in card-set order.
    pub legs: Vec<Leg>,
}

/// Checks 1 to 4 of section 6.2 over every card, in check order: the first failing check
/// decides, whichever card fails it.
fn common_checks(wire: &WireAmount, cards: &[CardRequest<'_>]) -> Result<(Currency, i64), Reason> {
    if cards
        .iter()
        .any(|c| !c.card.is_some_and(|k| k.tenant_matches))
    {
        return Err(Reason::CardNotFound);
    }
    let currency = listed_currency(&wire.currency)?;
    let known = || cards.iter().filter_map(|c| c.card);
    if known().any(|k| k.funds.currency != currency) {
        return Err(Reason::CurrencyMismatch);
    }
    let amount = to_minor_positive(wire.amount, wire.precision, currency)?;
    if known().any(|k| !k.active) {
        return Err(Reason::CardInactive);
    }
    Ok((currency, amount))
}

/// Stored-value `Load` (checks 1 to 5). Several cards cannot share a Load: the seed does not
/// say how to divide the amount.
pub fn decide_load(wire: &WireAmount, cards: &[CardRequest<'_>]) -> Result<Movement, Reason> {
    if cards.len() != 1 {
        return Err(Reason::InvalidTransaction);
    }
    let (currency, amount) = common_checks(wire, cards)?;
    let card = cards[0].card.expect("checked by common_checks");
    let balance_after = card
        .funds
        .available()
        .checked_add(amount)
        .filter(|b| *b <= crate::json::SAFE_INTEGER_MAX)
        .ok_or(Reason::InvalidAmount)?;
    Ok(Movement {
        currency,
        amount,
        legs: vec![Leg {
            number: card.number.clone(),
            delta: amount,
            balance_after,
        }],
    })
}

/// Stored-value `Redeem` over one card or a split tender over several (checks 1 to 8).
/// All or nothing: each card is asked for `min(spendable, remaining)`, the last card for all
/// that remains; the limits of check 7 apply to what a card is asked for.
pub fn decide_redeem(
    wire: &WireAmount,
    cards: &[CardRequest<'_>],
    secret_hash_key: &[u8],
) -> Result<Movement, Reason> {
    let (currency, amount) = common_checks(wire, cards)?;
    let known: Vec<(&CardRequest<'_>, &SvCard)> = cards
        .iter()
        .map(|c| (c, c.card.expect("checked by common_checks")))
        .collect();
    // Check 6: secrets on record must be presented.
    for (req, card) in &known {
        if let Some(stored) = &card.cvc_hash
            && !req
                .cvc
                .is_some_and(|c| secret_matches(secret_hash_key, stored, c))
        {
            return Err(Reason::InvalidCvc);
        }
        if let (Some(stored), Some(pin)) = (&card.pin_hash, req.pin)
            && !secret_matches(secret_hash_key, stored, pin)
        {
            return Err(Reason::InvalidPin);
        }
    }
    // What the cards before card `i` take from its account (numbers linked to one account
    // spend the same funds, and count together toward its limits).
    let taken_before = |asks: &[i64], i: usize| -> i64 {
        let account = known[i].1.account_id;
        asks.iter()
            .zip(&known)
            .take(i)
            .filter(|(_, (_, c))| account.is_some() && c.account_id == account)
            .map(|(ask, _)| *ask)
            .sum()
    };
    let mut remaining = amount;
    let mut asks = Vec::with_capacity(known.len());
    for (i, (_, card)) in known.iter().enumerate() {
        let last = i + 1 == known.len();
        let ask = if last {
            remaining
        } else {
            let spendable = card.funds.spendable() - taken_before(&asks, i);
            remaining.min(spendable.max(0))
        };
        asks.push(ask);
        remaining -= ask;
    }
    // Check 7.
    for (i, ((_, card), ask)) in known.iter().zip(&asks).enumerate() {
        if card.linked && *ask > 0 && !card.funds.within_limits(taken_before(&asks, i) + ask) {
            return Err(Reason::LimitExceeded);
        }
    }
    // Check 8: only the last card can be asked for more than it holds.
    let n = known.len() - 1;
    if asks[n] > known[n].1.funds.spendable() - taken_before(&asks, n) {
        return Err(Reason::InsufficientFunds);
    }
    let legs = known
        .iter()
        .zip(&asks)
        .enumerate()
        .filter(|(_, (_, ask))| **ask > 0)
        .map(|(i, ((_, card), ask))| Leg {
            number: card.number.clone(),
            delta: -ask,
            balance_after: card.funds.available() - taken_before(&asks, i) - ask,
        })
        .collect();
    Ok(Movement {
        currency,
        amount,
        legs,
    })
}

/// Whether an injected account's `balance` differs from the ledger's (section 2.6): counted
/// in `instore_injected_balance_mismatch_total`, never trusted. An injected balance that
/// cannot be read as money in the card's currency differs.
pub fn injected_balance_differs(
    injected: &WireAmount,
    ledger_balance: i64,
    currency: Currency,
) -> bool {
    listed_currency(&injected.currency) != Ok(currency)
        || to_minor(injected.amount, injected.precision, currency) != Ok(ledger_balance)
}

/// A wrong PIN (at lookup or on Redeem): the store increments the try counter and blocks the card when it
/// reaches `instore.pin_tries_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinFailure {
    pub tries_after: u32,
    pub block: bool,
}

impl PinFailure {
    /// One more wrong PIN on `card`.
    fn on(card: &SvCard, pin_tries_max: u32) -> PinFailure {
        let tries_after = card.pin_tries.saturating_add(1);
        PinFailure {
            tries_after,
            block: tries_after >= pin_tries_max,
        }
    }
}

/// The result of `storedvaluecard/:number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupDecision {
    /// An inactive card is a successful lookup that reports `Inactive`. `reset_pin_tries`
    /// is set when a right PIN ends a run of wrong ones.
    Found {
        active: bool,
        balance: i64,
        currency: Currency,
        reset_pin_tries: bool,
    },
    Declined {
        reason: Reason,
        pin_failure: Option<PinFailure>,
    },
}

/// Lookup of one card. A missing PIN where one is on record is `INVALID_PIN` but does not
/// count as a try: a POS that was not configured to prompt for it must not block cards.
pub fn decide_lookup(
    card: Option<&SvCard>,
    pin: Option<&str>,
    secret_hash_key: &[u8],
    pin_tries_max: u32,
) -> LookupDecision {
    let Some(card) = card.filter(|c| c.tenant_matches) else {
        return LookupDecision::Declined {
            reason: Reason::CardNotFound,
            pin_failure: None,
        };
    };
    if let Some(stored) = &card.pin_hash {
        // A card not active (blocked, by its PIN tries or otherwise) answers without its
        // PIN being checked, counted or reset: no answer tells a right PIN from a wrong one
        // once the tries are spent.
        if !card.active {
            return LookupDecision::Declined {
                reason: Reason::CardInactive,
                pin_failure: None,
            };
        }
        match pin {
            None => {
                return LookupDecision::Declined {
                    reason: Reason::InvalidPin,
                    pin_failure: None,
                };
            }
            Some(p) if !secret_matches(secret_hash_key, stored, p) => {
                return LookupDecision::Declined {
                    reason: Reason::InvalidPin,
                    pin_failure: Some(PinFailure::on(card, pin_tries_max)),
                };
            }
            Some(_) => {}
        }
    }
    LookupDecision::Found {
        active: card.active,
        balance: card.funds.available(),
        currency: card.funds.currency,
        reset_pin_tries: card.pin_tries > 0,
    }
}

/// The PIN try a Redeem's wrong PIN counts (check 6), as a lookup counts it: the first card
/// whose PIN on record the request's PIN does not match. `None` when every PIN given
/// matches (a PIN not given where one is on record counts no try, as at lookup).
pub fn redeem_pin_failure<'a>(
    cards: &[CardRequest<'a>],
    secret_hash_key: &[u8],
    pin_tries_max: u32,
) -> Option<(&'a str, PinFailure)> {
    cards.iter().find_map(|c| {
        let card = c.card?;
        let (Some(stored), Some(pin)) = (&card.pin_hash, c.pin) else {
            return None;
        };
        (!secret_matches(secret_hash_key, stored, pin))
            .then(|| (c.number, PinFailure::on(card, pin_tries_max)))
    })
}

/// The cards of an approved Redeem whose right PIN came after wrong ones: their tries go
/// back to zero, as at lookup.
pub fn redeem_pin_resets<'a>(cards: &[CardRequest<'a>], secret_hash_key: &[u8]) -> Vec<&'a str> {
    cards
        .iter()
        .filter(|c| {
            c.card.is_some_and(|card| {
                card.pin_tries > 0
                    && matches!((&card.pin_hash, c.pin), (Some(stored), Some(pin))
                        if secret_matches(secret_hash_key, stored, pin))
            })
        })
        .map(|c| c.number)
        .collect()
}

/// `storedvaluecard`: the currency and opening balance of the new card.
pub fn decide_create(enabled: bool, balance: &WireAmount) -> Result<(Currency, i64), Reason> {
    if !enabled {
        return Err(Reason::NotPermitted);
    }
    Ok(balance.resolve()?)
}

/// Which operation a stored-value movement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// A Load, or the opening balance of a created card.
    Load,
    Redeem,
}

/// One leg of a booked operation, with its card's state now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationLeg {
    pub number: String,
    pub external_transaction_id: String,
    /// Minor units the operation moved on this card (positive).
    pub amount: i64,
    pub funds_now: Funds,
}

/// The reversal already booked for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRecord {
    pub external_transaction_id: String,
    /// posted - held of the requested number right after the reversal.
    pub balance_after: i64,
}

/// An operation named by `external_payment_id`, as the store prefetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    pub tenant_matches: bool,
    pub currency: Currency,
    pub legs: Vec<OperationLeg>,
    pub reversal: Option<ReversalRecord>,
}

/// The result of a stored-value `Cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelDecision {
    /// Book the reversal: one leg per leg of the operation, opposite sign.
    Reverse(Movement),
    /// Already reversed under another `requestId`: success, no movement, original ids.
    AlreadyCancelled(ReversalRecord),
    Declined(Reason),
}

/// Exact reversal, at most once, of the whole operation.
pub fn decide_cancel(
    operation: Option<&Operation>,
    number: &str,
    external_transaction_id: &str,
) -> CancelDecision {
    let Some(op) = operation.filter(|o| o.tenant_matches) else {
        return CancelDecision::Declined(Reason::NotFound);
    };
    if !op.legs.iter().any(|l| l.number == number) {
        return CancelDecision::Declined(Reason::NotFound);
    }
    let names_a_leg = op
        .legs
        .iter()
        .any(|l| l.external_transaction_id == external_transaction_id);
    if let Some(r) = &op.reversal {
        if r.external_transaction_id == external_transaction_id {
            return CancelDecision::Declined(Reason::NotReversible);
        }
        if names_a_leg {
            return CancelDecision::AlreadyCancelled(r.clone());
        }
    }
    if !names_a_leg {
        return CancelDecision::Declined(Reason::NotFound);
    }
    let sign = match op.kind {
        OperationKind::Redeem => 1,
        OperationKind::Load => -1,
    };
    // A Load is reversed only from money the card still holds: never into the overdraft.
    if op.kind == OperationKind::Load && op.legs.iter().any(|l| l.funds_now.available() < l.amount)
    {
        return CancelDecision::Declined(Reason::InsufficientFunds);
    }
    let legs = op
        .legs
        .iter()
        .map(|l| Leg {
            number: l.number.clone(),
            delta: sign * l.amount,
            balance_after: l.funds_now.available() + sign * l.amount,
        })
        .collect();
    CancelDecision::Reverse(Movement {
        currency: op.currency,
        amount: op.legs.iter().map(|l| l.amount).sum(),
        legs,
    })
}

/// A pay-on-account account as the store prefetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaAccount {
    pub tenant_matches: bool,
    pub company_name: Option<String>,
    pub authorized_user_ids: Vec<String>,
    pub blocked: bool,
    /// The ledger account: its overdraft limit is the credit limit.
    pub funds: Funds,
}

impl PoaAccount {
    /// What the company owes: the negated posted balance (negative when it has prepaid).
    pub fn owed(&self) -> i64 {
        -self.funds.posted
    }

    pub fn credit_limit(&self) -> i64 {
        self.funds.overdraft_limit
    }
}

/// A POA `Create` as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaCreateRequest<'a> {
    pub company_name: Option<&'a str>,
    pub authorized_user_ids: &'a [String],
    pub credit_limit: &'a WireAmount,
    pub balance: Option<&'a WireAmount>,
}

/// The result of a POA `Create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoaCreateDecision {
    Open {
        currency: Currency,
        credit_limit: i64,
    },
    /// The account exists with the same data: replay the original approval.
    Replay,
    Declined(Reason),
}

/// POA `Create`. `ceilings` is the tenant's `poa_credit_limit_max` for the limit's
/// currency (`None`: no ceiling configured, so no credit can be granted in it).
pub fn decide_poa_create(
    enabled: bool,
    ceiling: impl Fn(Currency) -> Option<i64>,
    existing: Option<&PoaAccount>,
    req: &PoaCreateRequest<'_>,
) -> PoaCreateDecision {
    use PoaCreateDecision::Declined;
    if !enabled {
        return Declined(Reason::NotPermitted);
    }
    let (currency, credit_limit) = match req.credit_limit.resolve() {
        Ok(v) => v,
        Err(e) => return Declined(e.into()),
    };
    if let Some(b) = req.balance {
        match b.resolve() {
            Ok((_, 0)) => {}
            Ok(_) | Err(MoneyError::InvalidAmount) => return Declined(Reason::InvalidAmount),
            Err(MoneyError::UnknownCurrency) => return Declined(Reason::UnknownCurrency),
        }
    }
    if let Some(acc) = existing {
        let same = acc.tenant_matches
            && acc.company_name.as_deref() == req.company_name
            && acc.authorized_user_ids == req.authorized_user_ids
            && acc.funds.currency == currency
            && acc.credit_limit() == credit_limit;
        return if same {
            PoaCreateDecision::Replay
        } else {
            Declined(Reason::AccountExists)
        };
    }
    if ceiling(currency).is_none_or(|max| credit_limit > max) {
        return Declined(Reason::CreditLimitTooHigh);
    }
    PoaCreateDecision::Open {
        currency,
        credit_limit,
    }
}

/// An approved POA `Credit`: the sale charged to the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaCharge {
    pub currency: Currency,
    pub amount: i64,
    pub owed_after: i64,
    pub performing_user: Option<String>,
}

/// POA `Credit`: approved while owed + held + amount <= credit limit. The performing user is
/// the request's `authorized_user_id`, else the single element of `authorized_user_ids`; a
/// non-empty list on the account must contain it.
pub fn decide_poa_credit(
    account: Option<&PoaAccount>,
    amount: &WireAmount,
    authorized_user_id: Option<&str>,
    authorized_user_ids: &[String],
) -> Result<PoaCharge, Reason> {
    let acc = account
        .filter(|a| a.tenant_matches)
        .ok_or(Reason::AccountNotFound)?;
    if acc.blocked {
        return Err(Reason::AccountBlocked);
    }
    let performing_user = authorized_user_id
        .map(str::to_owned)
        .or(match authorized_user_ids {
            [one] => Some(one.clone()),
            _ => None,
        });
    if !acc.authorized_user_ids.is_empty()
        && !performing_user
            .as_ref()
            .is_some_and(|u| acc.authorized_user_ids.contains(u))
    {
        return Err(Reason::UserNotAuthorized);
    }
    let currency = listed_currency(&amount.currency)?;
    if currency != acc.funds.currency {
        return Err(Reason::CurrencyMismatch);
    }
    let minor = to_minor_positive(amount.amount, amount.precision, currency)?;
    if minor > acc.funds.spendable() {
        return Err(Reason::CreditLimitExceeded);
    }
    Ok(PoaCharge {
        currency,
        amount: minor,
        owed_after: acc.owed() + minor,
        performing_user,
    })
}

/// POA `Update`: the new company name and user list. `credit_limit` and `balance` may be
/// echoed only with their current values.
pub fn decide_poa_update(
    account: Option<&PoaAccount>,
    credit_limit: Option<&WireAmount>,
    balance: Option<&WireAmount>,
) -> Result<(), Reason> {
    let acc = account
        .filter(|a| a.tenant_matches)
        .ok_or(Reason::AccountNotFound)?;
    let equals = |w: &WireAmount, current: i64| {
        listed_currency(&w.currency).is_ok_and(|c| c == acc.funds.currency)
            && to_minor(w.amount, w.precision, acc.funds.currency) == Ok(current)
    };
    if credit_limit.is_some_and(|w| !equals(w, acc.credit_limit()))
        || balance.is_some_and(|w| !equals(w, acc.owed()))
    {
        return Err(Reason::FieldNotUpdatable);
    }
    Ok(())
}

/// A wallet barcode as the store prefetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barcode {
    pub tenant_matches: bool,
    pub expired: bool,
    /// The request hash of the `pay_wallet` that used it, if any.
    pub used_by_request_hash: Option<String>,
    pub card_active: bool,
    pub funds: Funds,
}

/// The result of `pay_wallet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletPayDecision {
    /// A retry with an identical body: answer with the stored response, byte for byte.
    Replay,
    Approved {
        currency: Currency,
        total: i64,
        tip: i64,
        subtotal: i64,
    },
    Declined(Reason),
}

/// `pay_wallet`: the single-use barcode is the idempotency key; `total` includes `tip`.
pub fn decide_pay_wallet(
    barcode: Option<&Barcode>,
    request_hash: &str,
    currency: &str,
    total: WireUint,
    tip: WireUint,
) -> WalletPayDecision {
    use WalletPayDecision::Declined;
    let Some(b) = barcode.filter(|b| b.tenant_matches) else {
        return Declined(Reason::BarcodeNotFound);
    };
    if let Some(used) = &b.used_by_request_hash {
        return if used == request_hash {
            WalletPayDecision::Replay
        } else {
            Declined(Reason::BarcodeUsed)
        };
    }
    if b.expired {
        return Declined(Reason::BarcodeExpired);
    }
    let currency = match listed_currency(currency) {
        Ok(c) if c == b.funds.currency => c,
        Ok(_) => return Declined(Reason::CurrencyMismatch),
        Err(e) => return Declined(e.into()),
    };
    let amounts = to_minor_positive(total, WALLET_PRECISION, currency)
        .and_then(|t| Ok((t, to_minor(tip, WALLET_PRECISION, currency)?)));
    let (total, tip) = match amounts {
        Ok((t, tip)) if tip <= t => (t, tip),
        _ => return Declined(Reason::InvalidAmount),
    };
    if !b.card_active {
        return Declined(Reason::CardInactive);
    }
    if !b.funds.within_limits(total) {
        return Declined(Reason::LimitExceeded);
    }
    if total > b.funds.spendable() {
        return Declined(Reason::InsufficientFunds);
    }
    WalletPayDecision::Approved {
        currency,
        total,
        tip,
        subtotal: total - tip,
    }
}

/// A wallet payment as the store prefetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletPayment {
    pub tenant_matches: bool,
    pub currency: Currency,
    pub total: i64,
    pub refunded: i64,
    pub reversed: i64,
}

impl WalletPayment {
    /// What still stands: neither refunded nor reversed.
    pub fn standing(&self) -> i64 {
        self.total - self.refunded - self.reversed
    }
}

fn known_payment(payment: Option<&WalletPayment>) -> Result<&WalletPayment, Reason> {
    payment.filter(|p| p.tenant_matches).ok_or(Reason::NotFound)
}

/// `available_wallet_refund`: what is still refundable.
pub fn decide_available_refund(payment: Option<&WalletPayment>) -> Result<i64, Reason> {
    Ok(known_payment(payment)?.standing())
}

/// `refund_wallet_payment`: refunds everything still standing. A retry with an identical
/// body is replayed by the caller before this is asked.
pub fn decide_wallet_refund(payment: Option<&WalletPayment>) -> Result<i64, Reason> {
    match known_payment(payment)?.standing() {
        0 => Err(Reason::NothingToRefund),
        n => Ok(n),
    }
}

/// `cancel_wallet_payment` and `log_cancel_wallet`: the amount to reverse (0 when nothing
/// stands). `log_cancel_wallet` also requires its `total` and `currency` to match the
/// payment; a log that does not match reverses nothing.
pub fn decide_wallet_reversal(
    payment: Option<&WalletPayment>,
    logged: Option<(&str, WireUint)>,
) -> Result<i64, Reason> {
    let p = known_payment(payment)?;
    if let Some((currency, total)) = logged {
        let matches = listed_currency(currency).is_ok_and(|c| c == p.currency)
            && to_minor(total, WALLET_PRECISION, p.currency) == Ok(p.total);
        if !matches {
            return Ok(0);
        }
    }
    Ok(p.standing())
}
