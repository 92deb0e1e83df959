//! Adjustments and notifications: the processor's corrections and final verdicts.
//!
//! Neither can be refused. An adjustment is booked whatever it says (on suspense when no
//! cardholder account fits) and flagged for a person where it had to be adapted. A
//! notification carries the processor's last word on an authorization: a rejection undoes
//! what we booked, an approval books what we did not (a forced advice), a verdict that
//! arrives before its authorization is remembered so the authorization cannot book it, and
//! anything contradictory is stored for review.
//!
//! Everything here is pure. The store reads what a request names (the recorded
//! authorization, the cardholder account, the movement to undo), asks [`plan_adjustment`] or
//! [`plan_notification`] what to do, and writes the rows of the answer: it decides nothing.
//! Which rows it must read first is also decided here ([`AdjustmentTerms::account`],
//! [`NotificationAsk::original_to_read`], [`NotificationAsk::account_to_read`]), so a read
//! that depends on a rule follows that rule in one place.

use crate::currency::Currency;
use crate::decision::RequestKind;
use crate::money::{AmountError, to_minor, to_minor_rounded};
pub use crate::plan::{Asked, CardTransaction, direction_str};
use crate::posting::{Leg, PostingPlan, SystemAccount};
use rust_decimal::Decimal;

/// Flags that mark a booking for review; stored comma-separated in the order they were
/// raised (answers and reports show them in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<&'static str>);

/// The flags, each a constant whose value is its own name (as stored).
macro_rules! flags {
    ($($name:ident)*) => {
        impl Flags {
            $(pub const $name: &'static str = stringify!($name);)*
        }
    };
}

flags! {
    SUSPENSE UNKNOWN_CURRENCY EXCESS_PRECISION NEGATIVE_AMOUNT NEGATIVE_BALANCE OUT_OF_RANGE
    UNKNOWN_ORIGINAL FORCED_BY_PROCESSOR UNKNOWN_DIRECTION MISSING_AMOUNT CONFLICTING_VERDICT
    UNPARSED ORIGINAL_NOT_BOOKED ALREADY_CREDITED UNREAD_FIELDS
}

impl Flags {
    pub fn add(&mut self, flag: &'static str) {
        if !self.0.contains(&flag) {
            self.0.push(flag);
        }
    }

    pub fn has(&self, flag: &str) -> bool {
        self.0.contains(&flag)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[&'static str] {
        &self.0
    }

    pub fn stored(&self) -> String {
        self.0.join(",")
    }
}

/// The processor's final word in a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Rejected,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Approved => "APPROVED",
            Verdict::Rejected => "REJECTED",
        }
    }
}

/// What a notification did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationEffect {
    /// Our approved movement was undone.
    Reversed,
    /// A movement we had not booked was booked on the processor's word.
    Forced,
    /// Stored; nothing to move.
    NoOp,
    /// Stored; needs a person (conflicting verdicts, missing data).
    Review,
}

impl NotificationEffect {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotificationEffect::Reversed => "REVERSED",
            NotificationEffect::Forced => "FORCED",
            NotificationEffect::NoOp => "NOOP",
            NotificationEffect::Review => "REVIEW",
        }
    }
}

/// Record kind (and movement `processor_kind`) of authorizations.
pub const KIND_AUTHORIZATION: &str = "AUTHORIZATION";
/// Record kind (and movement kind) of adjustments.
pub const KIND_ADJUSTMENT: &str = "ADJUSTMENT";
/// Movement kind of a booking made on the processor's approval alone.
pub const KIND_FORCED: &str = "FORCED";
/// Movement kind of the exact opposite of an earlier movement.
pub const KIND_REVERSAL: &str = "REVERSAL";

/// What a repeated idempotency key comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The same body: answer with the stored bytes.
    Replay,
    /// Another body under a used key: refused.
    KeyConflict,
}

/// Compares a request with the one first recorded under its key (by body hash).
pub fn repeat_of(recorded_hash: &[u8], request_hash: &[u8]) -> Repeat {
    if recorded_hash == request_hash {
        Repeat::Replay
    } else {
        Repeat::KeyConflict
    }
}

/// Minor units of a movement that must be booked whatever it says, flagging what had to
/// be adapted. `None` when it cannot be held at all.
pub fn movement_amount(
    currency: Option<Currency>,
    amount: Option<Decimal>,
    flags: &mut Flags,
) -> Option<i64> {
    let Some(amount) = amount else {
        flags.add(Flags::OUT_OF_RANGE);
        return None;
    };
    let currency = currency?;
    if amount.is_sign_negative() && !amount.is_zero() {
        flags.add(Flags::NEGATIVE_AMOUNT);
    }
    match to_minor(amount, currency) {
        Ok(m) => Some(m),
        Err(AmountError::ExcessPrecision) => {
            flags.add(Flags::EXCESS_PRECISION);
            to_minor_rounded(amount, currency).ok().or_else(|| {
                flags.add(Flags::OUT_OF_RANGE);
                None
            })
        }
        Err(AmountError::OutOfRange) => {
            flags.add(Flags::OUT_OF_RANGE);
            None
        }
    }
}

/// `minor` signed for the cardholder: a debit takes, a credit gives. `None` (flagged out
/// of range) for the one debit whose opposite does not exist in `i64`.
fn signed_for(direction: RequestKind, minor: i64, flags: &mut Flags) -> Option<i64> {
    if direction != RequestKind::Debit {
        return Some(minor);
    }
    let signed = minor.checked_neg();
    if signed.is_none() {
        flags.add(Flags::OUT_OF_RANGE);
    }
    signed
}

/// A cardholder account as read (and locked) for a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountView {
    pub id: i64,
    pub balance: i64,
}

/// The processor clearing and suspense account ids of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemIds {
    pub clearing: i64,
    pub suspense: i64,
}

/// One movement to write: its descriptive columns, its postings and the accounts that
/// receive them. The cardholder balance after is already checked to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovementPlan<'a> {
    pub kind: &'static str,
    pub processor_kind: &'static str,
    pub transaction_id: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub currency: Currency,
    pub postings: PostingPlan,
    /// The account of the holder leg: the cardholder account when `postings.holder` is
    /// [`Leg::User`], else the system account.
    pub holder_id: i64,
    pub counterparty_id: i64,
    /// The cardholder balance after the movement (`None` on a system account).
    pub balance_after: Option<i64>,
}

/// The descriptive columns of a movement.
#[derive(Debug, Clone, Copy)]
struct Labels<'a> {
    kind: &'static str,
    processor_kind: &'static str,
    transaction_id: Option<&'a str>,
    reference: Option<&'a str>,
}

/// A booking that cannot be refused, against processor clearing. It lands on the
/// cardholder account when it exists and the amount fits its balance, on suspense
/// otherwise (flagged); a negative amount is always parked for a person, as it would move
/// money against the route's direction. A balance left negative is flagged. `None` for a
/// zero amount, which moves nothing but is placed (and flagged) all the same.
fn unrefusable<'a>(
    labels: Labels<'a>,
    currency: Currency,
    amount: i64,
    account: Option<AccountView>,
    ids: SystemIds,
    flags: &mut Flags,
) -> Option<MovementPlan<'a>> {
    let after = account
        .filter(|_| !flags.has(Flags::NEGATIVE_AMOUNT))
        .and_then(|a| Some((a.id, a.balance.checked_add(amount)?)));
    let (postings, holder_id, balance_after) = match after {
        Some((id, balance)) => (PostingPlan::card(amount), id, Some(balance)),
        None => {
            flags.add(Flags::SUSPENSE);
            (PostingPlan::suspense(amount), ids.suspense, None)
        }
    };
    if amount == 0 {
        return None;
    }
    if balance_after.is_some_and(|b| b < 0) {
        flags.add(Flags::NEGATIVE_BALANCE);
    }
    Some(MovementPlan {
        kind: labels.kind,
        processor_kind: labels.processor_kind,
        transaction_id: labels.transaction_id,
        reference: labels.reference,
        currency,
        postings,
        holder_id,
        counterparty_id: ids.clearing,
        balance_after,
    })
}

/// An adjustment's money as the route states it, before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentTerms {
    /// `None`: not a currency code at all (nothing can be booked).
    pub currency: Option<Currency>,
    /// Signed for the cardholder; `None` when the amount cannot be held.
    pub signed: Option<i64>,
    pub flags: Flags,
}

impl AdjustmentTerms {
    /// Reads the currency and amount of adjustment `t` on a route of `direction`.
    pub fn new(t: &CardTransaction<'_>, direction: RequestKind) -> AdjustmentTerms {
        let mut flags = Flags::default();
        if t.unread_fields {
            flags.add(Flags::UNREAD_FIELDS);
        }
        let currency = match Currency::parse_any(t.currency) {
            Ok(c) => {
                if !c.is_listed() {
                    flags.add(Flags::UNKNOWN_CURRENCY);
                }
                Some(c)
            }
            Err(_) => {
                flags.add(Flags::UNKNOWN_CURRENCY);
                None
            }
        };
        let signed = movement_amount(currency, t.amount, &mut flags)
            .and_then(|m| signed_for(direction, m, &mut flags));
        AdjustmentTerms {
            currency,
            signed,
            flags,
        }
    }

    /// The cardholder account (user, currency) to read and lock for adjustment `t`: only
    /// a listed currency has them.
    pub fn account<'a>(&self, t: &CardTransaction<'a>) -> Option<(&'a str, Currency)> {
        Some((t.user_id?, self.currency.filter(Currency::is_listed)?))
    }
}

/// What we hold of an adjustment's original transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Original {
    /// Never recorded.
    Unknown,
    /// Recorded, and no money stands for it: declined or approved for nothing (and no
    /// verdict booked it), or approved and reversed since by a REJECTED verdict.
    BookedNothing,
    /// Recorded, with money standing for it.
    Booked,
}

/// What the store read for an adjustment.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdjustmentFacts {
    /// What we hold of the transaction the adjustment names as its original (`None`: it
    /// names none).
    pub original: Option<Original>,
    /// The cardholder account, when [`AdjustmentTerms::account`] named one and it exists.
    pub account: Option<AccountView>,
    /// The currency's system accounts, when it has a currency.
    pub system: Option<SystemIds>,
}

/// An adjustment, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentPlan<'a> {
    pub flags: Flags,
    pub movement: Option<MovementPlan<'a>>,
    /// Cardholder balance after, when it went to a cardholder account.
    pub balance_after: Option<i64>,
    /// The record's amount (signed for the cardholder).
    pub amount_minor: Option<i64>,
    /// The record's status detail: `INVALID_AMOUNT` when nothing could be booked.
    pub status_detail: &'static str,
}

/// Plans an adjustment: booked on the cardholder account when it fits, on suspense
/// otherwise, never refused.
pub fn plan_adjustment<'a>(
    terms: &AdjustmentTerms,
    facts: &AdjustmentFacts,
    t: &CardTransaction<'a>,
) -> AdjustmentPlan<'a> {
    let mut flags = terms.flags.clone();
    match facts.original {
        Some(Original::Unknown) => flags.add(Flags::UNKNOWN_ORIGINAL),
        // Money given back (or taken again) for a transaction on which none moved: a
        // reversal of a purchase we declined credits what was never paid. Booked all the
        // same (adjustments are never refused), flagged for review.
        Some(Original::BookedNothing) if terms.signed.is_some_and(|a| a != 0) => {
            flags.add(Flags::ORIGINAL_NOT_BOOKED);
        }
        _ => {}
    }
    let mut movement = None;
    if let (Some(amount), Some(currency), Some(ids)) = (terms.signed, terms.currency, facts.system)
    {
        let labels = Labels {
            kind: KIND_ADJUSTMENT,
            processor_kind: KIND_ADJUSTMENT,
            transaction_id: Some(t.transaction_id),
            reference: t.original_transaction_id,
        };
        movement = unrefusable(labels, currency, amount, facts.account, ids, &mut flags);
    } else if facts.account.is_none() {
        flags.add(Flags::SUSPENSE);
    }
    AdjustmentPlan {
        flags,
        balance_after: movement.and_then(|m| m.balance_after),
        movement,
        amount_minor: terms.signed,
        status_detail: if movement.is_some() || terms.signed == Some(0) {
            "APPROVED"
        } else {
            "INVALID_AMOUNT"
        },
    }
}

/// The authorization record a notification's verdict meets, as read under lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordedAuthorization<'a> {
    /// Our answer (`APPROVED` / `REJECTED`); `None` when only a verdict was recorded.
    pub status: Option<&'a str>,
    /// Our movement, when we booked one.
    pub movement_id: Option<i64>,
    /// A verdict recorded before.
    pub verdict: Option<&'a str>,
    /// The direction our authorization was asked for (its route), when one was recorded: an
    /// APPROVED verdict whose type tells none (a type we do not know) books in it.
    pub direction: Option<RequestKind>,
}

impl RecordedAuthorization<'_> {
    fn booked_movement(&self) -> Option<i64> {
        self.movement_id.filter(|_| self.status == Some("APPROVED"))
    }
}

/// A notification as the plan needs it.
#[derive(Debug, Clone, Copy)]
pub struct NotificationAsk<'a> {
    /// The notification's idempotency key: the reference of a forced movement.
    pub key: &'a str,
    pub verdict: Option<Verdict>,
    pub transaction: Option<CardTransaction<'a>>,
    /// Direction implied by the transaction type, when known.
    pub direction: Option<RequestKind>,
    /// The body was JSON but not a notification we could read: keep it for a person.
    pub unparsed: bool,
}

/// The movement a rejection undoes, as read: its two postings in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalMovement<'a> {
    pub currency: Currency,
    pub transaction_id: Option<&'a str>,
    pub holder: Leg,
    pub holder_id: i64,
    pub holder_amount: i64,
    pub counterparty: SystemAccount,
    pub counterparty_id: i64,
    /// The cardholder balance now, when the holder is a cardholder account.
    pub holder_balance: Option<i64>,
    /// What credit adjustments naming the transaction have given the holder account since
    /// (a reversal or refund of the purchase the verdict now rejects).
    pub credited: i64,
}

/// What the store read for a notification.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotificationFacts<'a> {
    pub record: Option<RecordedAuthorization<'a>>,
    /// The movement named by [`NotificationAsk::original_to_read`].
    pub original: Option<OriginalMovement<'a>>,
    /// The account named by [`NotificationAsk::account_to_read`], when it exists.
    pub account: Option<AccountView>,
    /// The currency's system accounts, when the transaction has a currency.
    pub system: Option<SystemIds>,
}

/// How a notification leaves the authorization record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWrite {
    /// Untouched (no verdict to apply, or one that changes nothing).
    None,
    /// The recorded authorization takes the verdict (and the planned movement, if any).
    SetVerdict,
    /// A record is created holding only the verdict (and the planned movement, if any),
    /// so a late authorization finds it and cannot book against it.
    Insert { amount_minor: Option<i64> },
}

/// A notification, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPlan<'a> {
    pub effect: NotificationEffect,
    pub flags: Flags,
    pub movement: Option<MovementPlan<'a>>,
    pub record: RecordWrite,
}

/// Why a plan cannot be made from what was read: the ledger's own rows are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    /// The movement to undo has an amount whose opposite does not exist.
    #[error("amount out of range")]
    AmountOutOfRange,
    /// A reversal was planned without reading the movement it undoes.
    #[error("movement {0} was not read")]
    OriginalNotRead(i64),
    /// A reversal on a cardholder account was planned without reading its balance.
    #[error("account {0} was not read")]
    AccountNotRead(i64),
}

/// A forced booking's amount, signed for the cardholder.
fn forced_amount(
    t: &CardTransaction<'_>,
    direction: Option<RequestKind>,
    flags: &mut Flags,
) -> Option<i64> {
    let minor = movement_amount(currency_of(t), t.amount, flags);
    match (direction, minor) {
        (Some(direction @ (RequestKind::Debit | RequestKind::Credit)), Some(m)) => {
            signed_for(direction, m, flags)
        }
        (_, Some(_)) => {
            flags.add(Flags::UNKNOWN_DIRECTION);
            None
        }
        (_, None) => None,
    }
}

/// A notification's currency, when it is a currency code (listed or not).
fn currency_of(t: &CardTransaction<'_>) -> Option<Currency> {
    Currency::parse_any(t.currency).ok()
}

/// What a verdict does, given the record it meets.
enum Path {
    /// The verdict contradicts one recorded before.
    Conflicting,
    /// The verdict was recorded before.
    Repeated,
    /// A rejection of what we recorded: undo the movement, if we booked one.
    Undo(Option<i64>),
    /// A rejection of what we never saw: remember it.
    Remember,
    /// An approval of what we approved.
    Confirm,
    /// An approval of what we declined or never saw: book it on the processor's word.
    Force,
}

fn path(verdict: Verdict, record: Option<&RecordedAuthorization<'_>>) -> Path {
    match (verdict, record) {
        (_, Some(r)) if r.verdict.is_some_and(|v| v != verdict.as_str()) => Path::Conflicting,
        (_, Some(r)) if r.verdict.is_some() => Path::Repeated,
        (Verdict::Rejected, Some(r)) => Path::Undo(r.booked_movement()),
        (Verdict::Rejected, None) => Path::Remember,
        (Verdict::Approved, Some(r)) if r.status == Some("APPROVED") => Path::Confirm,
        (Verdict::Approved, _) => Path::Force,
    }
}

impl<'a> NotificationAsk<'a> {
    /// The transaction's currency (listed or not), whose system accounts a booking uses.
    pub fn currency(&self) -> Option<Currency> {
        self.transaction.as_ref().and_then(currency_of)
    }

    /// The card transaction whose record the verdict applies to (the record to read and
    /// lock), when there is a verdict to apply.
    pub fn record_to_read(&self) -> Option<&'a str> {
        self.verdict.and(self.transaction).map(|t| t.transaction_id)
    }

    /// The movement to read for undoing, given the record read.
    pub fn original_to_read(&self, record: Option<&RecordedAuthorization<'_>>) -> Option<i64> {
        match path(self.verdict?, record) {
            Path::Undo(movement) => movement,
            _ => None,
        }
    }

    /// The direction a forced booking takes: the verdict's type's, else the one our
    /// authorization was asked for (a type we do not know tells none).
    fn forced_direction(&self, record: Option<&RecordedAuthorization<'_>>) -> Option<RequestKind> {
        self.direction.or(record.and_then(|r| r.direction))
    }

    /// The cardholder account (user, currency) to read and lock for a forced booking,
    /// given the record read.
    pub fn account_to_read(
        &self,
        record: Option<&RecordedAuthorization<'_>>,
    ) -> Option<(&'a str, Currency)> {
        let t = self.transaction?;
        if !matches!(path(self.verdict?, record), Path::Force) {
            return None;
        }
        let signed = forced_amount(&t, self.forced_direction(record), &mut Flags::default());
        let currency = currency_of(&t).filter(Currency::is_listed)?;
        (signed.is_some_and(|a| a != 0)).then_some((t.user_id?, currency))
    }
}

/// Plans a notification: what its verdict does to the record it meets and to the ledger.
pub fn plan_notification<'a>(
    ask: &NotificationAsk<'a>,
    facts: &NotificationFacts<'a>,
) -> Result<NotificationPlan<'a>, VerdictError> {
    let mut flags = Flags::default();
    let (Some(verdict), Some(t)) = (ask.verdict, ask.transaction) else {
        let effect = if ask.unparsed {
            flags.add(Flags::UNPARSED);
            NotificationEffect::Review
        } else {
            NotificationEffect::NoOp
        };
        return Ok(NotificationPlan {
            effect,
            flags,
            movement: None,
            record: RecordWrite::None,
        });
    };
    if t.unread_fields {
        flags.add(Flags::UNREAD_FIELDS);
    }
    let plan = |effect, flags, movement, record| {
        Ok(NotificationPlan {
            effect,
            flags,
            movement,
            record,
        })
    };
    match path(verdict, facts.record.as_ref()) {
        Path::Conflicting => {
            flags.add(Flags::CONFLICTING_VERDICT);
            plan(NotificationEffect::Review, flags, None, RecordWrite::None)
        }
        Path::Repeated => plan(NotificationEffect::NoOp, flags, None, RecordWrite::None),
        Path::Undo(None) => plan(
            NotificationEffect::NoOp,
            flags,
            None,
            RecordWrite::SetVerdict,
        ),
        Path::Undo(Some(movement_id)) => {
            let original = facts
                .original
                .ok_or(VerdictError::OriginalNotRead(movement_id))?;
            // The processor's word stands: the whole debit is undone. Money a credit
            // adjustment gave back for it already is then given twice, as the processor's
            // records say, and a person looks at it (the other order is flagged
            // ORIGINAL_NOT_BOOKED on the adjustment).
            if original.credited > 0 {
                flags.add(Flags::ALREADY_CREDITED);
            }
            match reversal(&original)? {
                Some(m) => plan(
                    NotificationEffect::Reversed,
                    flags,
                    Some(m),
                    RecordWrite::SetVerdict,
                ),
                None => {
                    // The balance cannot hold the reversal: a person decides; a 503 would
                    // only make the processor resend it forever.
                    flags.add(Flags::OUT_OF_RANGE);
                    plan(
                        NotificationEffect::Review,
                        flags,
                        None,
                        RecordWrite::SetVerdict,
                    )
                }
            }
        }
        Path::Remember => plan(
            NotificationEffect::NoOp,
            flags,
            None,
            RecordWrite::Insert { amount_minor: None },
        ),
        Path::Confirm => plan(
            NotificationEffect::NoOp,
            flags,
            None,
            RecordWrite::SetVerdict,
        ),
        Path::Force => {
            flags.add(Flags::FORCED_BY_PROCESSOR);
            let direction = ask.forced_direction(facts.record.as_ref());
            let signed = forced_amount(&t, direction, &mut flags);
            let mut movement = None;
            if let (Some(amount), Some(currency), Some(ids)) =
                (signed.filter(|a| *a != 0), currency_of(&t), facts.system)
            {
                let labels = Labels {
                    kind: KIND_FORCED,
                    processor_kind: KIND_AUTHORIZATION,
                    transaction_id: Some(t.transaction_id),
                    reference: Some(ask.key),
                };
                movement = unrefusable(labels, currency, amount, facts.account, ids, &mut flags);
            }
            let effect = if movement.is_some() || signed == Some(0) {
                NotificationEffect::Forced
            } else {
                NotificationEffect::Review
            };
            let record = if facts.record.is_some() {
                RecordWrite::SetVerdict
            } else {
                RecordWrite::Insert {
                    amount_minor: signed,
                }
            };
            plan(effect, flags, movement, record)
        }
    }
}

/// The exact opposite of `original`, or `None` when the cardholder balance cannot hold it
/// (beyond the ledger's range).
fn reversal<'a>(original: &OriginalMovement<'a>) -> Result<Option<MovementPlan<'a>>, VerdictError> {
    let postings = PostingPlan {
        holder: original.holder,
        counterparty: original.counterparty,
        holder_amount: original.holder_amount,
    }
    .reversed()
    .ok_or(VerdictError::AmountOutOfRange)?;
    let balance_after = match (original.holder, original.holder_balance) {
        (Leg::User, Some(balance)) => match balance.checked_add(postings.holder_amount) {
            Some(after) => Some(after),
            None => return Ok(None),
        },
        (Leg::User, None) => return Err(VerdictError::AccountNotRead(original.holder_id)),
        (Leg::System(_), _) => None,
    };
    Ok(Some(MovementPlan {
        kind: KIND_REVERSAL,
        processor_kind: KIND_AUTHORIZATION,
        transaction_id: original.transaction_id,
        reference: None,
        currency: original.currency,
        postings,
        holder_id: original.holder_id,
        counterparty_id: original.counterparty_id,
        balance_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const IDS: SystemIds = SystemIds {
        clearing: 1,
        suspense: 2,
    };
    const HOLDER: i64 = 10;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn cur(code: &str) -> Currency {
        Currency::parse_any(code).unwrap()
    }

    fn transaction(
        id: &'static str,
        currency: &'static str,
        amount: Option<&'static str>,
        user: Option<&'static str>,
    ) -> CardTransaction<'static> {
        CardTransaction {
            transaction_id: id,
            tx_type: "PURCHASE",
            user_id: user,
            card_id: None,
            currency,
            amount_text: amount.unwrap_or("1e400"),
            amount: amount.map(dec),
            mcc: None,
            original_transaction_id: None,
            ..CardTransaction::default()
        }
    }

    fn account(balance: i64) -> Option<AccountView> {
        Some(AccountView {
            id: HOLDER,
            balance,
        })
    }

    /// An adjustment of `amount` in `currency` on a route of `direction` against an
    /// account holding `balance` (`None`: no account read).
    fn adjust(
        currency: &'static str,
        amount: Option<&'static str>,
        direction: RequestKind,
        balance: Option<i64>,
        original: Option<Original>,
    ) -> AdjustmentPlan<'static> {
        let t = CardTransaction {
            original_transaction_id: Some("auth-1"),
            ..transaction("adj-1", currency, amount, Some("u1"))
        };
        let terms = AdjustmentTerms::new(&t, direction);
        let facts = AdjustmentFacts {
            original,
            account: terms.account(&t).and(balance).and_then(account),
            system: terms.currency.map(|_| IDS),
        };
        plan_adjustment(&terms, &facts, &t)
    }

    #[test]
    fn adjustments_book_on_the_account_or_park_on_suspense() {
        use Original::{Booked, BookedNothing, Unknown};
        use RequestKind::{Credit, Debit};
        // (currency, amount, direction, balance, original,
        //  flags, holder amount, on the account, balance after, status detail)
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let table: &[(&str, Option<&str>, RequestKind, Option<i64>, Option<Original>, &[&str], Option<i64>, bool, Option<i64>, &str)] = &[
            // A refund credits the cardholder; a closing difference debits.
            ("EUR", Some("10.50"), Credit, Some(0), Some(Booked), &[], Some(1050), true, Some(1050), "APPROVED"),
            ("EUR", Some("2.00"), Debit, Some(500), None, &[], Some(-200), true, Some(300), "APPROVED"),
            // Adjustments cannot be refused: the balance may go negative, flagged.
            ("EUR", Some("7.00"), Debit, Some(500), None, &["NEGATIVE_BALANCE"], Some(-700), true, Some(-200), "APPROVED"),
            // No account for the user: suspense.
            ("EUR", Some("1.00"), Credit, None, None, &["SUSPENSE"], Some(100), false, None, "APPROVED"),
            // An unlisted code is booked in its own right (four places), on suspense.
            ("XYZ", Some("1.00"), Credit, None, None, &["UNKNOWN_CURRENCY", "SUSPENSE"], Some(10_000), false, None, "APPROVED"),
            // Not a currency at all: nothing can be booked.
            ("E1", Some("1.00"), Credit, None, None, &["UNKNOWN_CURRENCY", "SUSPENSE"], None, false, None, "INVALID_AMOUNT"),
            // A negative amount never moves money against the route: parked.
            ("EUR", Some("-3.00"), Credit, Some(0), None, &["NEGATIVE_AMOUNT", "SUSPENSE"], Some(-300), false, None, "APPROVED"),
            ("EUR", Some("-3.00"), Debit, Some(0), None, &["NEGATIVE_AMOUNT", "SUSPENSE"], Some(300), false, None, "APPROVED"),
            // Excess precision is rounded and flagged.
            ("EUR", Some("1.005"), Credit, Some(0), None, &["EXCESS_PRECISION"], Some(100), true, Some(100), "APPROVED"),
            // Beyond the ledger's range: recorded, not booked.
            ("EUR", Some("92233720368547758.08"), Credit, Some(0), None, &["OUT_OF_RANGE"], None, false, None, "INVALID_AMOUNT"),
            ("EUR", None, Credit, Some(0), None, &["OUT_OF_RANGE"], None, false, None, "INVALID_AMOUNT"),
            // The one debit whose opposite is not an i64.
            ("EUR", Some("-92233720368547758.08"), Debit, Some(0), None, &["NEGATIVE_AMOUNT", "OUT_OF_RANGE"], None, false, None, "INVALID_AMOUNT"),
            // A balance that cannot hold it: suspense.
            ("EUR", Some("0.01"), Credit, Some(i64::MAX), None, &["SUSPENSE"], Some(1), false, None, "APPROVED"),
            // Zero moves nothing and is approved.
            ("EUR", Some("0"), Credit, Some(0), None, &[], None, false, None, "APPROVED"),
            ("EUR", Some("0"), Credit, None, None, &["SUSPENSE"], None, false, None, "APPROVED"),
            // An original we never recorded is flagged, the adjustment still booked.
            ("EUR", Some("1.00"), Credit, Some(0), Some(Unknown), &["UNKNOWN_ORIGINAL"], Some(100), true, Some(100), "APPROVED"),
            ("XYZ", None, Credit, None, Some(Unknown), &["UNKNOWN_CURRENCY", "OUT_OF_RANGE", "UNKNOWN_ORIGINAL", "SUSPENSE"], None, false, None, "INVALID_AMOUNT"),
            // An original on which no money moved (we declined it): booked, flagged; nothing
            // to flag when the adjustment moves nothing either.
            ("EUR", Some("4.00"), Credit, Some(0), Some(BookedNothing), &["ORIGINAL_NOT_BOOKED"], Some(400), true, Some(400), "APPROVED"),
            ("EUR", Some("0"), Credit, Some(0), Some(BookedNothing), &[], None, false, None, "APPROVED"),
        ];
        for (
            i,
            &(
                currency,
                amount,
                direction,
                balance,
                known,
                flags,
                holder_amount,
                on_account,
                after,
                detail,
            ),
        ) in table.iter().enumerate()
        {
            let p = adjust(currency, amount, direction, balance, known);
            assert_eq!(p.flags.as_slice(), flags, "case {i}: flags");
            assert_eq!(
                p.movement.map(|m| m.postings.holder_amount),
                holder_amount,
                "case {i}: amount"
            );
            assert_eq!(p.balance_after, after, "case {i}: balance after");
            assert_eq!(p.status_detail, detail, "case {i}: detail");
            if let Some(m) = p.movement {
                assert_eq!(
                    m.holder_id,
                    if on_account { HOLDER } else { IDS.suspense },
                    "case {i}"
                );
                assert_eq!(m.postings.holder == Leg::User, on_account, "case {i}: leg");
                assert_eq!(m.counterparty_id, IDS.clearing);
                assert_eq!(m.postings.counterparty, SystemAccount::ProcessorClearing);
                assert_eq!(
                    (m.kind, m.processor_kind),
                    (KIND_ADJUSTMENT, KIND_ADJUSTMENT)
                );
                assert_eq!(
                    (m.transaction_id, m.reference),
                    (Some("adj-1"), Some("auth-1"))
                );
                assert_eq!(m.currency, cur(currency));
            }
        }
    }

    #[test]
    fn adjustments_read_an_account_only_in_a_listed_currency() {
        let account = |c, user| {
            let t = transaction("adj-1", c, Some("1"), user);
            AdjustmentTerms::new(&t, RequestKind::Credit).account(&t)
        };
        assert_eq!(account("EUR", Some("u1")), Some(("u1", cur("EUR"))));
        assert_eq!(account("EUR", None), None);
        assert_eq!(account("XYZ", Some("u1")), None);
        assert_eq!(account("E1", Some("u1")), None);
        let t = transaction("adj-1", "XYZ", Some("1"), None);
        assert_eq!(
            AdjustmentTerms::new(&t, RequestKind::Credit).signed,
            Some(10_000),
            "unlisted codes have four places"
        );
    }

    fn record(
        status: Option<&'static str>,
        movement_id: Option<i64>,
        verdict: Option<&'static str>,
    ) -> Option<RecordedAuthorization<'static>> {
        Some(RecordedAuthorization {
            status,
            movement_id,
            verdict,
            direction: None,
        })
    }

    fn ask(
        verdict: Option<Verdict>,
        amount: Option<&'static str>,
        direction: Option<RequestKind>,
        currency: &'static str,
        user: Option<&'static str>,
    ) -> NotificationAsk<'static> {
        NotificationAsk {
            key: "n-1",
            verdict,
            transaction: Some(transaction("tx-1", currency, amount, user)),
            direction,
            unparsed: false,
        }
    }

    /// Runs a notification the way the store does: reads what the ask names, then plans.
    fn notify(
        a: &NotificationAsk<'static>,
        rec: Option<RecordedAuthorization<'static>>,
        original: Option<OriginalMovement<'static>>,
        balance: Option<i64>,
    ) -> NotificationPlan<'static> {
        let original = a.original_to_read(rec.as_ref()).map(|id| {
            original
                .filter(|_| id == 77)
                .expect("the booked movement is read")
        });
        let account = a.account_to_read(rec.as_ref()).and_then(|(user, c)| {
            assert_eq!(c, cur("EUR"));
            assert!(user == "u1" || balance.is_none(), "only u1 has an account");
            balance.and_then(account)
        });
        let facts = NotificationFacts {
            record: rec,
            original,
            account,
            system: a.currency().map(|_| IDS),
        };
        plan_notification(a, &facts).unwrap()
    }

    fn booked(holder: Leg, holder_amount: i64, balance: Option<i64>) -> OriginalMovement<'static> {
        OriginalMovement {
            currency: cur("EUR"),
            transaction_id: Some("tx-1"),
            holder,
            holder_id: if holder == Leg::User {
                HOLDER
            } else {
                IDS.suspense
            },
            holder_amount,
            counterparty: SystemAccount::ProcessorClearing,
            counterparty_id: IDS.clearing,
            holder_balance: balance,
            credited: 0,
        }
    }

    #[test]
    fn verdicts_against_what_was_recorded() {
        use NotificationEffect::{Forced, NoOp, Reversed, Review};
        use RecordWrite::{Insert, SetVerdict};
        use Verdict::{Approved, Rejected};
        let debit = Some(RequestKind::Debit);
        let user = Leg::User;
        let suspense = Leg::System(SystemAccount::Suspense);
        // (verdict, amount, direction, user, record, booked movement, balance,
        //  effect, flags, holder amount and account of the movement, record write)
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let table: &[(Verdict, &str, Option<RequestKind>, Option<&'static str>, Option<RecordedAuthorization<'static>>, Option<OriginalMovement<'static>>, Option<i64>, NotificationEffect, &[&str], Option<(i64, i64)>, RecordWrite)] = &[
            // A rejection of what we approved undoes it once.
            (Rejected, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), None), Some(booked(user, -1000, Some(0))), None, Reversed, &[], Some((1000, HOLDER)), SetVerdict),
            // ... whole, as the processor says, also when a credit adjustment gave part of it
            // back already: that money is then given twice, and flagged for a person.
            (Rejected, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), None), Some(OriginalMovement { credited: 400, ..booked(user, -1000, Some(0)) }), None, Reversed, &["ALREADY_CREDITED"], Some((1000, HOLDER)), SetVerdict),
            // ... also when it was parked on suspense.
            (Rejected, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), None), Some(booked(suspense, -1000, None)), None, Reversed, &[], Some((1000, IDS.suspense)), SetVerdict),
            // A balance that cannot take the reversal goes to a person.
            (Rejected, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), None), Some(booked(user, -1000, Some(i64::MAX - 5))), None, Review, &["OUT_OF_RANGE"], None, SetVerdict),
            // Approved without a movement (a zero amount, a balance inquiry): nothing to undo.
            (Rejected, "0", debit, Some("u1"), record(Some("APPROVED"), None, None), None, None, NoOp, &[], None, SetVerdict),
            // A rejection of what we declined.
            (Rejected, "10", debit, Some("u1"), record(Some("REJECTED"), None, None), None, None, NoOp, &[], None, SetVerdict),
            // A rejection before its authorization is remembered.
            (Rejected, "10", debit, Some("u1"), None, None, None, NoOp, &[], None, Insert { amount_minor: None }),
            // The same verdict again changes nothing; the other verdict needs a person.
            (Rejected, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), Some("REJECTED")), None, None, NoOp, &[], None, RecordWrite::None),
            (Approved, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), Some("REJECTED")), None, None, Review, &["CONFLICTING_VERDICT"], None, RecordWrite::None),
            (Rejected, "10", debit, Some("u1"), record(None, None, Some("APPROVED")), None, None, Review, &["CONFLICTING_VERDICT"], None, RecordWrite::None),
            // An approval of what we approved is recorded.
            (Approved, "10", debit, Some("u1"), record(Some("APPROVED"), Some(77), None), None, None, NoOp, &[], None, SetVerdict),
            // An approval of what we declined is forced onto the account.
            (Approved, "10", debit, Some("u1"), record(Some("REJECTED"), None, None), None, Some(300), Forced, &["FORCED_BY_PROCESSOR", "NEGATIVE_BALANCE"], Some((-1000, HOLDER)), SetVerdict),
            (Approved, "10", Some(RequestKind::Credit), Some("u1"), record(Some("REJECTED"), None, None), None, Some(300), Forced, &["FORCED_BY_PROCESSOR"], Some((1000, HOLDER)), SetVerdict),
            // ... in the direction our authorization was asked for when the verdict's type
            // tells none (a type we do not know).
            (Approved, "10", None, Some("u1"), Some(RecordedAuthorization { direction: debit, ..record(Some("REJECTED"), None, None).unwrap() }), None, Some(300), Forced, &["FORCED_BY_PROCESSOR", "NEGATIVE_BALANCE"], Some((-1000, HOLDER)), SetVerdict),
            // ... and an approval before its authorization too, recording the amount.
            (Approved, "10", debit, Some("u1"), None, None, Some(5000), Forced, &["FORCED_BY_PROCESSOR"], Some((-1000, HOLDER)), Insert { amount_minor: Some(-1000) }),
            // No account (an unknown user, or none named): suspense.
            (Approved, "10", debit, Some("u9"), None, None, None, Forced, &["FORCED_BY_PROCESSOR", "SUSPENSE"], Some((-1000, IDS.suspense)), Insert { amount_minor: Some(-1000) }),
            (Approved, "10", debit, None, None, None, None, Forced, &["FORCED_BY_PROCESSOR", "SUSPENSE"], Some((-1000, IDS.suspense)), Insert { amount_minor: Some(-1000) }),
            // A negative advice never credits the cardholder.
            (Approved, "-10", debit, Some("u1"), None, None, Some(0), Forced, &["FORCED_BY_PROCESSOR", "NEGATIVE_AMOUNT", "SUSPENSE"], Some((1000, IDS.suspense)), Insert { amount_minor: Some(1000) }),
            // A direction we cannot tell, or an amount we cannot hold: a person decides.
            (Approved, "10", None, Some("u1"), None, None, None, Review, &["FORCED_BY_PROCESSOR", "UNKNOWN_DIRECTION"], None, Insert { amount_minor: None }),
            (Approved, "10", Some(RequestKind::BalanceInquiry), Some("u1"), None, None, None, Review, &["FORCED_BY_PROCESSOR", "UNKNOWN_DIRECTION"], None, Insert { amount_minor: None }),
            (Approved, "92233720368547758.08", debit, Some("u1"), None, None, None, Review, &["FORCED_BY_PROCESSOR", "OUT_OF_RANGE"], None, Insert { amount_minor: None }),
            // Zero is forced without a movement.
            (Approved, "0", debit, Some("u1"), None, None, None, Forced, &["FORCED_BY_PROCESSOR"], None, Insert { amount_minor: Some(0) }),
            // Excess precision is rounded and flagged.
            (Approved, "1.005", debit, Some("u1"), None, None, Some(0), Forced, &["FORCED_BY_PROCESSOR", "EXCESS_PRECISION", "NEGATIVE_BALANCE"], Some((-100, HOLDER)), Insert { amount_minor: Some(-100) }),
        ];
        for (
            i,
            &(
                verdict,
                amount,
                direction,
                user,
                rec,
                original,
                balance,
                effect,
                flags,
                movement,
                write,
            ),
        ) in table.iter().enumerate()
        {
            let a = ask(Some(verdict), Some(amount), direction, "EUR", user);
            let p = notify(&a, rec, original, balance);
            assert_eq!(p.effect, effect, "case {i}: effect");
            assert_eq!(p.flags.as_slice(), flags, "case {i}: flags");
            assert_eq!(
                p.movement.map(|m| (m.postings.holder_amount, m.holder_id)),
                movement,
                "case {i}: movement"
            );
            assert_eq!(p.record, write, "case {i}: record");
            if let Some(m) = p.movement {
                assert_eq!(m.counterparty_id, IDS.clearing, "case {i}");
                assert_eq!(m.processor_kind, KIND_AUTHORIZATION);
                assert_eq!(m.transaction_id, Some("tx-1"));
                let expected_after = match (m.postings.holder, balance, original) {
                    (Leg::User, Some(b), None) => Some(b + m.postings.holder_amount),
                    (Leg::User, _, Some(o)) => {
                        Some(o.holder_balance.unwrap() + m.postings.holder_amount)
                    }
                    _ => None,
                };
                assert_eq!(m.balance_after, expected_after, "case {i}: balance after");
                match verdict {
                    Verdict::Rejected => assert_eq!((m.kind, m.reference), (KIND_REVERSAL, None)),
                    Verdict::Approved => {
                        assert_eq!((m.kind, m.reference), (KIND_FORCED, Some("n-1")))
                    }
                }
            }
        }
    }

    #[test]
    fn reads_follow_the_verdict() {
        let approved = record(Some("APPROVED"), Some(77), None);
        let declined = record(Some("REJECTED"), None, None);
        let debit = Some(RequestKind::Debit);
        let rejects = ask(Some(Verdict::Rejected), Some("1"), debit, "EUR", Some("u1"));
        let approves = ask(Some(Verdict::Approved), Some("1"), debit, "EUR", Some("u1"));
        assert_eq!(rejects.record_to_read(), Some("tx-1"));
        assert_eq!(rejects.original_to_read(approved.as_ref()), Some(77));
        assert_eq!(rejects.original_to_read(declined.as_ref()), None);
        assert_eq!(rejects.account_to_read(None), None);
        assert_eq!(approves.original_to_read(declined.as_ref()), None);
        assert_eq!(
            approves.account_to_read(approved.as_ref()),
            None,
            "confirmed, nothing to book"
        );
        assert_eq!(
            approves.account_to_read(declined.as_ref()),
            Some(("u1", cur("EUR")))
        );
        let zero = ask(Some(Verdict::Approved), Some("0"), debit, "EUR", Some("u1"));
        assert_eq!(zero.account_to_read(None), None, "zero books nothing");
        let unlisted = ask(Some(Verdict::Approved), Some("1"), debit, "XYZ", Some("u1"));
        assert_eq!(unlisted.account_to_read(None), None);
        let no_verdict = ask(None, Some("1"), debit, "EUR", Some("u1"));
        assert_eq!(no_verdict.record_to_read(), None);
        assert_eq!(no_verdict.account_to_read(None), None);
    }

    #[test]
    fn notifications_without_a_verdict() {
        let mut a = ask(None, Some("1"), None, "EUR", Some("u1"));
        let p = plan_notification(&a, &NotificationFacts::default()).unwrap();
        assert_eq!(
            (p.effect, p.record, p.movement),
            (NotificationEffect::NoOp, RecordWrite::None, None)
        );
        assert!(p.flags.is_empty());
        a.unparsed = true;
        a.transaction = None;
        a.verdict = Some(Verdict::Approved);
        let p = plan_notification(&a, &NotificationFacts::default()).unwrap();
        assert_eq!(p.effect, NotificationEffect::Review);
        assert_eq!(p.flags.as_slice(), [Flags::UNPARSED]);
        assert_eq!(p.record, RecordWrite::None);
    }

    #[test]
    fn an_unreadable_movement_is_an_error_not_a_guess() {
        let a = ask(Some(Verdict::Rejected), Some("1"), None, "EUR", None);
        let approved = record(Some("APPROVED"), Some(77), None);
        let facts = |original| NotificationFacts {
            record: approved,
            original,
            account: None,
            system: Some(IDS),
        };
        assert_eq!(
            plan_notification(&a, &facts(None)),
            Err(VerdictError::OriginalNotRead(77))
        );
        let unread = booked(Leg::User, -100, None);
        assert_eq!(
            plan_notification(&a, &facts(Some(unread))),
            Err(VerdictError::AccountNotRead(HOLDER))
        );
        let extreme = booked(Leg::System(SystemAccount::Suspense), i64::MIN, None);
        assert_eq!(
            plan_notification(&a, &facts(Some(extreme))),
            Err(VerdictError::AmountOutOfRange)
        );
    }

    #[test]
    fn a_resent_id_must_ask_for_the_same_money() {
        let recorded = |amount_text: &'static str| {
            let column = |name| match name {
                "endpoint" => Ok(Some("/adjustments/debit")),
                "direction" => Ok(Some("DEBIT")),
                "tx_type" => Ok(Some("PURCHASE")),
                "user_id" => Ok(Some("u1")),
                "card_id" => Ok(None),
                "currency" => Ok(Some("EUR")),
                "amount_text" => Ok(Some(amount_text)),
                other => Err(other),
            };
            Asked::read(|name| column(name).map(|v| v.map(String::from))).unwrap()
        };
        let asked = recorded("10.5");
        let (endpoint, debit) = ("/adjustments/debit", Some(RequestKind::Debit));
        let now = CardTransaction {
            currency: "eur",
            amount_text: "\"10.50\"",
            ..transaction("adj-1", "EUR", Some("10.50"), Some("u1"))
        };
        assert!(
            asked.same_as(endpoint, debit, &now),
            "formatting differs, money does not"
        );
        assert!(!asked.same_as("/adjustments/credit", debit, &now));
        assert!(!asked.same_as(endpoint, Some(RequestKind::Credit), &now));
        assert!(!asked.same_as(endpoint, None, &now));
        #[rustfmt::skip]
        let differs = [
            CardTransaction { tx_type: "REFUND", ..now },
            CardTransaction { user_id: Some("u2"), ..now },
            CardTransaction { user_id: None, ..now },
            CardTransaction { card_id: Some("c1"), ..now },
            CardTransaction { currency: "USD", ..now },
            CardTransaction { amount: Some(dec("10.51")), ..now },
            CardTransaction { amount: None, amount_text: "1e400", ..now },
        ];
        for (i, t) in differs.iter().enumerate() {
            assert!(!asked.same_as(endpoint, debit, t), "case {i}");
        }
        let huge = CardTransaction {
            amount: None,
            amount_text: "1e400",
            ..now
        };
        assert!(recorded("1e400").same_as(endpoint, debit, &huge));
        assert!(recorded("1.05E1").same_as(endpoint, debit, &now));
        assert!(!Asked::default().same_as(endpoint, debit, &now));
    }

    #[test]
    fn keys_directions_and_names() {
        assert_eq!(repeat_of(b"a", b"a"), Repeat::Replay);
        assert_eq!(repeat_of(b"a", b"b"), Repeat::KeyConflict);
        assert_eq!(direction_str(Some(RequestKind::Debit)), Some("DEBIT"));
        assert_eq!(direction_str(Some(RequestKind::Credit)), Some("CREDIT"));
        assert_eq!(direction_str(Some(RequestKind::BalanceInquiry)), None);
        assert_eq!(Verdict::Rejected.as_str(), "REJECTED");
        assert_eq!(NotificationEffect::Forced.as_str(), "FORCED");
        let mut f = Flags::default();
        f.add(Flags::SUSPENSE);
        f.add(Flags::NEGATIVE_AMOUNT);
        f.add(Flags::SUSPENSE);
        assert_eq!(f.stored(), "SUSPENSE,NEGATIVE_AMOUNT");
    }
}
