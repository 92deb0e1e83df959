//! Two-phase money: authorization holds reserved by a channel (a PoS wallet), then
//! captured (fully or partly), cancelled or expired, and refunded after a capture.
//!
//! A hold moves no money: it raises the account's `held` amount, and every debit decision
//! spends `posted - held + overdraft`. Money moves only at capture (`HOLD_CAPTURE`:
//! account -c, PoS clearing +c) and refund (`HOLD_REFUND`: account +r, PoS clearing -r).
//!
//! Every function here is pure: it takes the hold (and what it needs of the account) as
//! read under lock and returns either a refusal or the exact effects to write. The store
//! writes them; it decides nothing.
//!
//! State machine: `RESERVED` -> `CAPTURED` | `CANCELLED` | `EXPIRED`, all final. A hold is
//! expired once `now >= expires_at_ms`, whether or not the sweeper has run: every
//! operation on an overdue `RESERVED` hold first expires it ([`due`], [`expire`]).

use crate::decision::{AccountState, AuthorizationInput, CardState, Decision, RequestKind, decide};
use crate::posting::PostingPlan;

/// Milliseconds in a UTC day: the daily-limit window.
const DAY_MS: i64 = 86_400_000;

/// Where a hold is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Reserved,
    Captured,
    Cancelled,
    Expired,
}

impl HoldState {
    pub const ALL: [HoldState; 4] = [
        HoldState::Reserved,
        HoldState::Captured,
        HoldState::Cancelled,
        HoldState::Expired,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            HoldState::Reserved => "RESERVED",
            HoldState::Captured => "CAPTURED",
            HoldState::Cancelled => "CANCELLED",
            HoldState::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<HoldState> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

/// One row of a hold's append-only history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEventKind {
    Reserved,
    Captured,
    Cancelled,
    Expired,
    Refunded,
}

impl HoldEventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            HoldEventKind::Reserved => "RESERVED",
            HoldEventKind::Captured => "CAPTURED",
            HoldEventKind::Cancelled => "CANCELLED",
            HoldEventKind::Expired => "EXPIRED",
            HoldEventKind::Refunded => "REFUNDED",
        }
    }

    /// The metrics label (`authorizer_holds_total{event}`).
    pub fn label(&self) -> &'static str {
        match self {
            HoldEventKind::Reserved => "reserved",
            HoldEventKind::Captured => "captured",
            HoldEventKind::Cancelled => "cancelled",
            HoldEventKind::Expired => "expired",
            HoldEventKind::Refunded => "refunded",
        }
    }
}

/// A hold as read (and locked) before an operation on it. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub state: HoldState,
    /// The reserved amount.
    pub amount: i64,
    pub captured: i64,
    pub refunded: i64,
    pub partial_capture_possible: bool,
    pub reserved_at_ms: i64,
    pub expires_at_ms: i64,
    pub captured_at_ms: Option<i64>,
    /// The UTC day whose daily counter took the reservation, when it is not the day of
    /// `reserved_at_ms`: a reservation stamped just before midnight that reached its
    /// account after a request of the new day had moved the counter on counted in the new
    /// day. `None`: the day of `reserved_at_ms`.
    pub counted_day: Option<i64>,
}

impl Hold {
    /// The UTC day whose daily counter took the reservation.
    pub fn counted_day(&self) -> i64 {
        self.counted_day
            .unwrap_or(self.reserved_at_ms.div_euclid(DAY_MS))
    }

    /// What part of a release (`released`) goes back to the daily counter: all of it
    /// while the counter that took the reservation is today's (or ahead of today: see
    /// [`Hold::counted_day`]), nothing on a later day (that day's counter never counted it).
    fn give_back(&self, now_ms: i64, released: i64) -> i64 {
        if self.counted_day() >= now_ms.div_euclid(DAY_MS) {
            released
        } else {
            0
        }
    }
}

/// Why an operation on a hold is refused. Each maps to one HTTP status and stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldError {
    /// Capture of a cancelled hold.
    NotReserved,
    /// Capture or cancel of an expired hold.
    Expired,
    AmountExceedsReserved,
    PartialCaptureNotPossible,
    CapturedWithDifferentAmount,
    /// An amount ≤ 0 or not representable in the currency.
    InvalidAmount,
    AlreadyCaptured,
    NotCaptured,
    CurrencyMismatch,
    PaymentTooOld,
    RefundExceedsCaptured,
    RefundIdReused,
    ReservationIdReused,
}

impl HoldError {
    /// The stable code of the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            HoldError::NotReserved => "NOT_RESERVED",
            HoldError::Expired => "EXPIRED",
            HoldError::AmountExceedsReserved => "AMOUNT_EXCEEDS_RESERVED",
            HoldError::PartialCaptureNotPossible => "PARTIAL_CAPTURE_NOT_POSSIBLE",
            HoldError::CapturedWithDifferentAmount => "CAPTURED_WITH_DIFFERENT_AMOUNT",
            HoldError::InvalidAmount => "INVALID_AMOUNT",
            HoldError::AlreadyCaptured => "ALREADY_CAPTURED",
            HoldError::NotCaptured => "NOT_CAPTURED",
            HoldError::CurrencyMismatch => "CURRENCY_MISMATCH",
            HoldError::PaymentTooOld => "PAYMENT_TOO_OLD",
            HoldError::RefundExceedsCaptured => "REFUND_EXCEEDS_CAPTURED",
            HoldError::RefundIdReused => "REFUND_ID_REUSED",
            HoldError::ReservationIdReused => "RESERVATION_ID_REUSED",
        }
    }

    /// The HTTP status: 400 for a bad amount, 409 for every state conflict.
    pub fn http_status(&self) -> u16 {
        match self {
            HoldError::InvalidAmount => 400,
            _ => 409,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HoldError::NotReserved => "The reservation is not reserved any more",
            HoldError::Expired => "The reservation has expired",
            HoldError::AmountExceedsReserved => "The amount exceeds the reserved amount",
            HoldError::PartialCaptureNotPossible => "This reservation can only be captured in full",
            HoldError::CapturedWithDifferentAmount => {
                "The reservation was captured with another amount"
            }
            HoldError::InvalidAmount => {
                "The amount must be greater than zero and representable in the currency"
            }
            HoldError::AlreadyCaptured => "The reservation is captured; refund it instead",
            HoldError::NotCaptured => "Only a captured reservation can be refunded",
            HoldError::CurrencyMismatch => "The currency differs from the reservation's",
            HoldError::PaymentTooOld => "The capture is older than the refund window",
            HoldError::RefundExceedsCaptured => "Refunds would exceed the captured amount",
            HoldError::RefundIdReused => "This refund_id was used with another body",
            HoldError::ReservationIdReused => "This reservation_id was used with another body",
        }
    }
}

/// The exact changes one operation makes. Deltas are signed minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// The hold's state afterwards.
    pub state: HoldState,
    pub captured: i64,
    pub refunded: i64,
    /// Change of the account's `held_minor`.
    pub held_delta: i64,
    /// Change of the account's posted balance (the movement's holder leg).
    pub posted_delta: i64,
    /// The movement to book, if money moves (`HOLD_CAPTURE` or `HOLD_REFUND`).
    pub postings: Option<PostingPlan>,
    /// The event row to append.
    pub event: HoldEventKind,
    pub event_amount: i64,
    /// Given back to the daily counter of `counted_day` (a release on the day of the
    /// reservation).
    pub daily_give_back: i64,
    /// The UTC day whose counter `daily_give_back` comes off ([`Hold::counted_day`]): a
    /// counter of another day is left alone.
    pub counted_day: i64,
}

impl Effects {
    /// The movement kind of [`Effects::postings`].
    pub fn movement_kind(&self) -> Option<&'static str> {
        match (self.postings, self.event) {
            (None, _) => None,
            (Some(_), HoldEventKind::Refunded) => Some("HOLD_REFUND"),
            (Some(_), _) => Some("HOLD_CAPTURE"),
        }
    }
}

/// What a capture or cancel came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Apply these effects.
    Apply(Effects),
    /// Already done with the same meaning: answer the first answer again.
    Replay,
}

/// Decides a reservation: the authorization decision for a debit of `amount`, against
/// `account` whose `held` already counts the other holds. Same rules, same order, same
/// declines. Approved: the hold adds the amount to `held` and to today's daily counter.
pub fn reserve(
    input: &AuthorizationInput<'_>,
    account: Option<&AccountState>,
    card: Option<&CardState>,
) -> Decision {
    let input = AuthorizationInput {
        kind: Some(RequestKind::Debit),
        ..input.clone()
    };
    decide(&input, account, card)
}

/// Whether the hold has reached its expiry (`now >= expires_at_ms`) while still reserved.
pub fn due(hold: &Hold, now_ms: i64) -> bool {
    hold.state == HoldState::Reserved && now_ms >= hold.expires_at_ms
}

/// What part of a release goes back to the daily counter: all of it on the UTC day of the
/// reservation, nothing on a later day (that day's counter never counted it).
pub fn daily_give_back(reserved_at_ms: i64, now_ms: i64, released: i64) -> i64 {
    if reserved_at_ms.div_euclid(DAY_MS) == now_ms.div_euclid(DAY_MS) {
        released
    } else {
        0
    }
}

/// Expires a due hold (lazily or by the sweeper); `None` when it is not due.
pub fn expire(hold: &Hold, now_ms: i64) -> Option<Effects> {
    if !due(hold, now_ms) {
        return None;
    }
    Some(Effects {
        state: HoldState::Expired,
        captured: 0,
        refunded: 0,
        held_delta: -hold.amount,
        posted_delta: 0,
        postings: None,
        event: HoldEventKind::Expired,
        event_amount: hold.amount,
        daily_give_back: hold.give_back(now_ms, hold.amount),
        counted_day: hold.counted_day(),
    })
}

/// What expiring the due holds of one account comes to, written at once: one change of
/// the account's held amount and daily counter, and a transition per expired hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiries {
    /// Per hold given, in order: its effects, or `None` when it is not due (captured,
    /// cancelled or expired by someone else since it was listed, or not at its expiry yet).
    pub holds: Vec<Option<Effects>>,
    /// Change of the account's `held_minor`: minus the sum of the expired amounts.
    pub held_delta: i64,
    /// The account's daily counter afterwards (releases of today's reservations given back).
    pub daily_spent: i64,
}

impl Expiries {
    /// How many holds expire.
    pub fn count(&self) -> usize {
        self.holds.iter().filter(|e| e.is_some()).count()
    }
}

/// Expires every due hold of `holds`, all of one account whose daily counter is `spent`
/// for the UTC day `spent_day` (the sweeper's batch, planned per account).
pub fn expire_due(holds: &[Hold], spent_day: i64, spent: i64, now_ms: i64) -> Expiries {
    let effects: Vec<Option<Effects>> = holds.iter().map(|h| expire(h, now_ms)).collect();
    // Only what the counter of `spent_day` took comes off it.
    let (released, given_back) =
        effects
            .iter()
            .flatten()
            .fold((0_i64, 0_i64), |(held, back), e| {
                let back_here = if e.counted_day == spent_day {
                    e.daily_give_back
                } else {
                    0
                };
                (
                    held.saturating_add(e.held_delta),
                    back.saturating_add(back_here),
                )
            });
    Expiries {
        holds: effects,
        held_delta: released,
        daily_spent: give_back_counter(spent_day, spent, spent_day, given_back),
    }
}

/// Captures `amount` (`None`: the full reserved amount). The hold must not be due: the
/// caller expires it first (see [`expire`]). The remainder is released.
pub fn capture(hold: &Hold, amount: Option<i64>, now_ms: i64) -> Result<Transition, HoldError> {
    let amount = amount.unwrap_or(hold.amount);
    if amount <= 0 {
        return Err(HoldError::InvalidAmount);
    }
    match hold.state {
        HoldState::Captured if amount == hold.captured => return Ok(Transition::Replay),
        HoldState::Captured => return Err(HoldError::CapturedWithDifferentAmount),
        HoldState::Cancelled => return Err(HoldError::NotReserved),
        HoldState::Expired => return Err(HoldError::Expired),
        HoldState::Reserved if due(hold, now_ms) => return Err(HoldError::Expired),
        HoldState::Reserved => {}
    }
    if amount > hold.amount {
        return Err(HoldError::AmountExceedsReserved);
    }
    if amount < hold.amount && !hold.partial_capture_possible {
        return Err(HoldError::PartialCaptureNotPossible);
    }
    let released = hold.amount - amount;
    Ok(Transition::Apply(Effects {
        state: HoldState::Captured,
        captured: amount,
        refunded: 0,
        held_delta: -hold.amount,
        posted_delta: -amount,
        postings: Some(PostingPlan::pos(-amount)),
        event: HoldEventKind::Captured,
        event_amount: amount,
        daily_give_back: hold.give_back(now_ms, released),
        counted_day: hold.counted_day(),
    }))
}

/// Cancels a reserved hold; again on a cancelled one is a replay.
pub fn cancel(hold: &Hold, now_ms: i64) -> Result<Transition, HoldError> {
    match hold.state {
        HoldState::Cancelled => Ok(Transition::Replay),
        HoldState::Captured => Err(HoldError::AlreadyCaptured),
        HoldState::Expired => Err(HoldError::Expired),
        HoldState::Reserved if due(hold, now_ms) => Err(HoldError::Expired),
        HoldState::Reserved => Ok(Transition::Apply(Effects {
            state: HoldState::Cancelled,
            captured: 0,
            refunded: 0,
            held_delta: -hold.amount,
            posted_delta: 0,
            postings: None,
            event: HoldEventKind::Cancelled,
            event_amount: hold.amount,
            daily_give_back: hold.give_back(now_ms, hold.amount),
            counted_day: hold.counted_day(),
        })),
    }
}

/// How long past `window_days` a refund is still taken: the most a channel waits between
/// creating a refund and capturing it (MobilePay: 24 h), and a day more for its delivery to
/// us (retries, an outage of ours).
pub const REFUND_CAPTURE_GRACE_MS: i64 = 2 * DAY_MS;

/// A refund as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundAsk {
    /// Minor units; `None` when the amount is not representable in the hold's currency.
    pub amount: Option<i64>,
    /// False when the request named a currency other than the hold's.
    pub currency_matches: bool,
    pub window_days: u32,
}

/// Refunds part of a captured hold, crediting the account at once. (A replay of a
/// `refund_id` is the caller's: it is recognised before the hold is looked at.)
pub fn refund(hold: &Hold, ask: &RefundAsk, now_ms: i64) -> Result<Effects, HoldError> {
    let amount = ask
        .amount
        .filter(|a| *a > 0)
        .ok_or(HoldError::InvalidAmount)?;
    if hold.state != HoldState::Captured {
        return Err(HoldError::NotCaptured);
    }
    if !ask.currency_matches {
        return Err(HoldError::CurrencyMismatch);
    }
    // The channel sends a refund when it captures it, which may be a day after the customer
    // asked for it (MobilePay auto-captures a refund after 24 h), and its delivery may take
    // longer: one asked for on the last day of the window arrives after it, and the channel
    // has paid it out already.
    let window_ms = i64::from(ask.window_days) * DAY_MS + REFUND_CAPTURE_GRACE_MS;
    let captured_at = hold.captured_at_ms.unwrap_or(hold.reserved_at_ms);
    if now_ms.saturating_sub(captured_at) > window_ms {
        return Err(HoldError::PaymentTooOld);
    }
    let refunded = hold
        .refunded
        .checked_add(amount)
        .filter(|r| *r <= hold.captured)
        .ok_or(HoldError::RefundExceedsCaptured)?;
    Ok(Effects {
        state: HoldState::Captured,
        captured: hold.captured,
        refunded,
        held_delta: 0,
        posted_delta: amount,
        postings: Some(PostingPlan::pos(amount)),
        event: HoldEventKind::Refunded,
        event_amount: amount,
        // Money given back the day it was reserved comes off that day's counter, as a
        // credit adjustment's does a card purchase's (never more than stands captured).
        daily_give_back: hold.give_back(now_ms, credit_left(hold.captured, hold.refunded, amount)),
        counted_day: hold.counted_day(),
    })
}

/// What a credit of `credit` against a debit gives back to the daily counter: the part of
/// the debit's `debited` amount that earlier credits (`credited_before`) have not already
/// given back, and only on the UTC day the debit was booked (a later day's counter never
/// counted it).
pub fn credit_give_back(
    debited: i64,
    credited_before: i64,
    booked_at_ms: i64,
    now_ms: i64,
    credit: i64,
) -> i64 {
    daily_give_back(
        booked_at_ms,
        now_ms,
        credit_left(debited, credited_before, credit),
    )
}

/// The part of a credit of `credit` that the debit's `debited` amount still holds after
/// earlier credits (`credited_before`): what a credit may give back, never more.
fn credit_left(debited: i64, credited_before: i64, credit: i64) -> i64 {
    let left = debited.saturating_sub(credited_before.max(0)).max(0);
    credit.clamp(0, left)
}

/// Applies a daily give-back to the counter of `today` (never below zero; a counter of
/// another day is left alone: it is reset when next used).
pub fn give_back_counter(spent_day: i64, spent: i64, today: i64, give_back: i64) -> i64 {
    if spent_day == today {
        spent.saturating_sub(give_back).max(0)
    } else {
        spent
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decision::Decline;
    use crate::posting::{Leg, SystemAccount};
    use crate::{Currency, MccSet};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z
    const HOUR: i64 = 3_600_000;

    fn dkk() -> Currency {
        Currency::parse("DKK").unwrap()
    }

    fn account(posted: i64, held: i64) -> AccountState {
        AccountState {
            currency: dkk(),
            balance: posted,
            held,
            overdraft_limit: 0,
            per_transaction_limit: None,
            daily_limit: None,
            daily_spent: 0,
            blocked_mccs: MccSet::default(),
        }
    }

    fn input(amount: &str) -> AuthorizationInput<'static> {
        AuthorizationInput {
            kind: None,
            currency: Some(dkk()),
            amount: Some(Decimal::from_str(amount).unwrap()),
            mcc: Some("7832"),
        }
    }

    pub(crate) fn reserved(amount: i64) -> Hold {
        Hold {
            state: HoldState::Reserved,
            amount,
            captured: 0,
            refunded: 0,
            partial_capture_possible: true,
            reserved_at_ms: T0,
            expires_at_ms: T0 + 7 * 24 * HOUR,
            captured_at_ms: None,
            counted_day: None,
        }
    }

    fn captured(amount: i64, captured: i64, refunded: i64) -> Hold {
        Hold {
            state: HoldState::Captured,
            captured,
            refunded,
            captured_at_ms: Some(T0 + HOUR),
            ..reserved(amount)
        }
    }

    fn ask(amount: i64) -> RefundAsk {
        RefundAsk {
            amount: Some(amount),
            currency_matches: true,
            window_days: 90,
        }
    }

    pub(crate) fn applied(t: Result<Transition, HoldError>) -> Effects {
        match t {
            Ok(Transition::Apply(e)) => e,
            other => panic!("expected effects, got {other:?}"),
        }
    }

    #[test]
    fn reserve_uses_available_plus_overdraft_and_the_same_declines() {
        // Funds are posted - held + overdraft.
        assert!(reserve(&input("374.50"), Some(&account(50_000, 12_550)), None).is_approved());
        assert_eq!(
            reserve(&input("374.51"), Some(&account(50_000, 12_550)), None),
            Decision::Declined(Decline::InsufficientFunds)
        );
        let mut od = account(50_000, 12_550);
        od.overdraft_limit = 1;
        assert!(reserve(&input("374.51"), Some(&od), None).is_approved());
        // Same vocabulary as an authorization: the direction is always a debit.
        let mut limited = account(1_000_000, 0);
        limited.per_transaction_limit = Some(10_000);
        assert_eq!(
            reserve(&input("100.01"), Some(&limited), None),
            Decision::Declined(Decline::AbovePerTransactionLimit)
        );
        assert_eq!(
            reserve(&input("1.001"), Some(&account(1000, 0)), None),
            Decision::Declined(Decline::AmountNotRepresentable)
        );
        assert_eq!(
            reserve(&input("1"), None, None),
            Decision::Declined(Decline::AccountNotFound)
        );
        let mut blocked = account(100_000, 0);
        blocked.blocked_mccs = MccSet::from_stored("7832").unwrap();
        assert_eq!(
            reserve(&input("1"), Some(&blocked), None),
            Decision::Declined(Decline::MerchantBlocked)
        );
        // The daily counter counts the reserved amount.
        let mut daily = account(100_000, 0);
        daily.daily_limit = Some(10_000);
        daily.daily_spent = 9_000;
        assert_eq!(
            reserve(&input("10.01"), Some(&daily), None),
            Decision::Declined(Decline::AboveDailyLimit)
        );
        match reserve(&input("10.00"), Some(&daily), None) {
            Decision::Approved {
                daily_spent_after, ..
            } => assert_eq!(daily_spent_after, 10_000),
            other => panic!("{other:?}"),
        }
    }

    /// Every refusal of the §2.2 error table, one row each.
    #[test]
    fn error_table() {
        let now = T0 + 2 * HOUR;
        let mut no_partial = reserved(10_000);
        no_partial.partial_capture_possible = false;
        let cancelled = Hold {
            state: HoldState::Cancelled,
            ..reserved(10_000)
        };
        let expired = Hold {
            state: HoldState::Expired,
            ..reserved(10_000)
        };
        let overdue = Hold {
            expires_at_ms: now,
            ..reserved(10_000)
        };
        type Row = (
            &'static str,
            Result<Transition, HoldError>,
            Result<Transition, HoldError>,
        );
        let rows: Vec<Row> = vec![
            (
                "capture cancelled",
                capture(&cancelled, None, now),
                Err(HoldError::NotReserved),
            ),
            (
                "capture expired",
                capture(&expired, None, now),
                Err(HoldError::Expired),
            ),
            (
                "capture overdue (not yet swept)",
                capture(&overdue, None, now),
                Err(HoldError::Expired),
            ),
            (
                "capture above reserved",
                capture(&reserved(10_000), Some(10_001), now),
                Err(HoldError::AmountExceedsReserved),
            ),
            (
                "partial capture not possible",
                capture(&no_partial, Some(9_999), now),
                Err(HoldError::PartialCaptureNotPossible),
            ),
            (
                "full capture where partial is not possible",
                capture(&no_partial, Some(10_000), now).map(|_| Transition::Replay),
                Ok(Transition::Replay),
            ),
            (
                "capture again, same amount",
                capture(&captured(10_000, 8_000, 0), Some(8_000), now),
                Ok(Transition::Replay),
            ),
            (
                "capture again, different amount",
                capture(&captured(10_000, 8_000, 0), Some(7_000), now),
                Err(HoldError::CapturedWithDifferentAmount),
            ),
            (
                "capture again without amount after a partial capture",
                capture(&captured(10_000, 8_000, 0), None, now),
                Err(HoldError::CapturedWithDifferentAmount),
            ),
            (
                "capture zero",
                capture(&reserved(10_000), Some(0), now),
                Err(HoldError::InvalidAmount),
            ),
            (
                "capture negative",
                capture(&reserved(10_000), Some(-1), now),
                Err(HoldError::InvalidAmount),
            ),
            (
                "cancel captured",
                cancel(&captured(10_000, 10_000, 0), now),
                Err(HoldError::AlreadyCaptured),
            ),
            (
                "cancel expired",
                cancel(&expired, now),
                Err(HoldError::Expired),
            ),
            (
                "cancel overdue",
                cancel(&overdue, now),
                Err(HoldError::Expired),
            ),
            (
                "cancel again",
                cancel(&cancelled, now),
                Ok(Transition::Replay),
            ),
        ];
        for (name, got, want) in rows {
            assert_eq!(got, want, "row: {name}");
        }
        let refunds: Vec<(&str, Hold, RefundAsk, i64, HoldError)> = vec![
            (
                "refund reserved",
                reserved(10_000),
                ask(100),
                now,
                HoldError::NotCaptured,
            ),
            (
                "refund cancelled",
                cancelled.clone(),
                ask(100),
                now,
                HoldError::NotCaptured,
            ),
            (
                "refund expired",
                expired.clone(),
                ask(100),
                now,
                HoldError::NotCaptured,
            ),
            (
                "refund in another currency",
                captured(10_000, 10_000, 0),
                RefundAsk {
                    currency_matches: false,
                    ..ask(100)
                },
                now,
                HoldError::CurrencyMismatch,
            ),
            (
                "refund after the window and the two days a capture may take",
                captured(10_000, 10_000, 0),
                ask(100),
                T0 + HOUR + 92 * 24 * HOUR + 1,
                HoldError::PaymentTooOld,
            ),
            (
                "refund above captured",
                captured(10_000, 8_000, 3_000),
                ask(5_001),
                now,
                HoldError::RefundExceedsCaptured,
            ),
            (
                "refund zero",
                captured(10_000, 8_000, 0),
                ask(0),
                now,
                HoldError::InvalidAmount,
            ),
            (
                "refund not representable",
                captured(10_000, 8_000, 0),
                RefundAsk {
                    amount: None,
                    ..ask(1)
                },
                now,
                HoldError::InvalidAmount,
            ),
        ];
        for (name, hold, a, at, want) in refunds {
            assert_eq!(refund(&hold, &a, at), Err(want), "row: {name}");
        }
        // On the last day of the window it is still allowed, and exactly up to captured; so
        // is a refund the channel captured and delivered two days after it was asked for.
        for at in [T0 + HOUR + 90 * 24 * HOUR, T0 + HOUR + 92 * 24 * HOUR] {
            assert!(refund(&captured(10_000, 8_000, 3_000), &ask(5_000), at).is_ok());
        }
        // Every code maps to its status.
        assert_eq!(HoldError::InvalidAmount.http_status(), 400);
        assert_eq!(HoldError::RefundIdReused.http_status(), 409);
        assert_eq!(
            HoldError::ReservationIdReused.code(),
            "RESERVATION_ID_REUSED"
        );
    }

    #[test]
    fn capture_releases_the_remainder_and_moves_the_captured_amount() {
        let e = applied(capture(&reserved(12_550), Some(10_000), T0 + HOUR));
        assert_eq!(e.state, HoldState::Captured);
        assert_eq!(e.held_delta, -12_550);
        assert_eq!(e.posted_delta, -10_000);
        assert_eq!(e.captured, 10_000);
        assert_eq!(e.event, HoldEventKind::Captured);
        assert_eq!(e.movement_kind(), Some("HOLD_CAPTURE"));
        let legs = e.postings.unwrap().legs().unwrap();
        assert_eq!(legs[0], (Leg::User, -10_000));
        assert_eq!(legs[1], (Leg::System(SystemAccount::PosClearing), 10_000));
        // Same day: the released remainder goes back to the daily counter.
        assert_eq!(e.daily_give_back, 2_550);
        // Without an amount: the full reserved amount, nothing released.
        let full = applied(capture(&reserved(12_550), None, T0 + HOUR));
        assert_eq!((full.captured, full.daily_give_back), (12_550, 0));
    }

    #[test]
    fn releases_give_back_the_daily_counter_only_on_the_same_utc_day() {
        let day = T0.div_euclid(DAY_MS) * DAY_MS;
        let mut h = reserved(5_000);
        h.reserved_at_ms = day + 23 * HOUR;
        assert_eq!(
            applied(cancel(&h, day + 23 * HOUR + 1)).daily_give_back,
            5_000
        );
        assert_eq!(applied(cancel(&h, day + DAY_MS)).daily_give_back, 0);
        h.expires_at_ms = day + 23 * HOUR + 10;
        assert_eq!(
            expire(&h, day + 23 * HOUR + 10).unwrap().daily_give_back,
            5_000
        );
        assert_eq!(expire(&h, day + DAY_MS).unwrap().daily_give_back, 0);
        let partial = applied(capture(&reserved(5_000), Some(4_000), T0 + DAY_MS));
        assert_eq!(partial.daily_give_back, 0);
        // A refund of a capture: what it credits, on the reservation's day only.
        let mut captured = Hold {
            state: HoldState::Captured,
            captured: 5_000,
            refunded: 1_000,
            captured_at_ms: Some(day + 23 * HOUR + 1),
            ..h
        };
        let ask = RefundAsk {
            amount: Some(3_000),
            currency_matches: true,
            window_days: 90,
        };
        let same_day = refund(&captured, &ask, day + 23 * HOUR + 2).unwrap();
        assert_eq!(same_day.daily_give_back, 3_000);
        assert_eq!(
            refund(&captured, &ask, day + DAY_MS)
                .unwrap()
                .daily_give_back,
            0
        );
        captured.refunded = 4_000;
        let over = refund(&captured, &ask, day + 23 * HOUR + 2);
        assert_eq!(over, Err(HoldError::RefundExceedsCaptured));
        assert_eq!(give_back_counter(10, 7_000, 10, 5_000), 2_000);
        assert_eq!(give_back_counter(10, 3_000, 10, 5_000), 0);
        assert_eq!(give_back_counter(9, 3_000, 10, 5_000), 3_000);
    }

    #[test]
    fn a_reservation_counted_in_the_new_day_is_given_back_to_that_days_counter() {
        // Stamped 23:59:59.990, it reached the account after a request of the new day had
        // moved the counter on, so the new day's counter took it.
        let day = T0.div_euclid(DAY_MS);
        let next = day + 1;
        let h = Hold {
            reserved_at_ms: next * DAY_MS - 10,
            expires_at_ms: next * DAY_MS + 3 * DAY_MS,
            counted_day: Some(next),
            ..reserved(5_000)
        };
        // Released on the new day, or by a release stamped before midnight too.
        for now in [next * DAY_MS + 60_000, next * DAY_MS - 5] {
            let e = applied(cancel(&h, now));
            assert_eq!((e.daily_give_back, e.counted_day), (5_000, next));
            let partial = applied(capture(&h, Some(1_000), now));
            assert_eq!(partial.daily_give_back, 4_000);
        }
        // The day after: that counter is not the one that took it.
        assert_eq!(applied(cancel(&h, (next + 1) * DAY_MS)).daily_give_back, 0);
        // The sweeper gives back to the counter that took each hold only.
        let old = Hold {
            expires_at_ms: next * DAY_MS,
            ..reserved(700)
        };
        let h = Hold {
            expires_at_ms: next * DAY_MS + HOUR,
            ..h
        };
        let due = [h.clone(), old];
        let x = expire_due(&due, next, 9_000, next * DAY_MS + HOUR);
        assert_eq!((x.count(), x.daily_spent), (2, 4_000));
        // The counter still of the day before takes nothing back from the new day's hold.
        let x = expire_due(&[h], day, 9_000, next * DAY_MS + HOUR);
        assert_eq!(x.daily_spent, 9_000);
    }

    #[test]
    fn a_credit_gives_back_what_its_debit_still_holds_on_the_day_it_was_booked() {
        let day = T0.div_euclid(DAY_MS) * DAY_MS;
        // The whole debit, part of it, and what earlier credits left of it.
        assert_eq!(
            credit_give_back(40_000, 0, day + HOUR, day + 2 * HOUR, 40_000),
            40_000
        );
        assert_eq!(
            credit_give_back(40_000, 0, day + HOUR, day + 2 * HOUR, 15_000),
            15_000
        );
        assert_eq!(
            credit_give_back(40_000, 15_000, day, day + HOUR, 30_000),
            25_000
        );
        assert_eq!(credit_give_back(40_000, 40_000, day, day + HOUR, 10_000), 0);
        assert_eq!(credit_give_back(40_000, 55_000, day, day + HOUR, 10_000), 0);
        // A debit that holds nothing (reversed already, or never booked) gives nothing.
        assert_eq!(credit_give_back(0, 0, day, day + HOUR, 10_000), 0);
        // The next day's counter never counted it.
        assert_eq!(
            credit_give_back(40_000, 0, day + 23 * HOUR, day + DAY_MS, 40_000),
            0
        );
    }

    #[test]
    fn expiry_is_due_at_expires_at_and_only_while_reserved() {
        let h = reserved(100);
        assert!(!due(&h, h.expires_at_ms - 1));
        assert!(due(&h, h.expires_at_ms));
        assert_eq!(expire(&h, h.expires_at_ms - 1), None);
        let e = expire(&h, h.expires_at_ms).unwrap();
        assert_eq!(
            (e.state, e.held_delta, e.posted_delta),
            (HoldState::Expired, -100, 0)
        );
        assert_eq!(e.postings, None);
        assert_eq!(expire(&captured(100, 100, 0), h.expires_at_ms + 1), None);
        for s in HoldState::ALL {
            assert_eq!(HoldState::parse(s.as_str()), Some(s));
        }
    }

    /// A sweep of one account: only the due reserved holds expire, in one change of the
    /// account; today's reservations go back to the daily counter, yesterday's do not.
    #[test]
    fn due_holds_of_an_account_expire_together() {
        // 22:23 UTC, the day of T0.
        let now = T0 + 10 * 60_000;
        let today = now.div_euclid(DAY_MS);
        let due_today = Hold {
            expires_at_ms: T0 + 60_000,
            ..reserved(1_000)
        };
        let due_yesterday = Hold {
            reserved_at_ms: T0 - 30 * HOUR,
            expires_at_ms: T0,
            ..reserved(300)
        };
        let not_yet = reserved(5_000);
        let taken = Hold {
            expires_at_ms: T0,
            ..captured(700, 700, 0)
        };
        let holds = [due_today, not_yet, due_yesterday, taken];
        let e = expire_due(&holds, today, 2_500, now);
        let states: Vec<Option<HoldState>> = e.holds.iter().map(|h| h.map(|h| h.state)).collect();
        assert_eq!(
            states,
            [
                Some(HoldState::Expired),
                None,
                Some(HoldState::Expired),
                None
            ]
        );
        assert_eq!((e.count(), e.held_delta, e.daily_spent), (2, -1_300, 1_500));
        // A counter of another day is left alone; nothing due changes nothing.
        assert_eq!(expire_due(&holds, today - 1, 2_500, now).daily_spent, 2_500);
        let none = expire_due(&holds[1..2], today, 2_500, now);
        assert_eq!(
            (none.count(), none.held_delta, none.daily_spent),
            (0, 0, 2_500)
        );
    }

    /// §2.4 at the ledger level: balances after every step.
    #[test]
    fn worked_example() {
        let (mut posted, mut held) = (50_000_i64, 0_i64);
        let now = T0;
        // 1. reserve 125.50
        let d = reserve(&input("125.50"), Some(&account(posted, held)), None);
        assert!(d.is_approved());
        held += 12_550;
        let mut h = reserved(12_550);
        assert_eq!(posted - held, 37_450);
        // 2. a card authorization of 400.00: the hold counts.
        let card = AuthorizationInput {
            kind: Some(RequestKind::Debit),
            ..input("400.00")
        };
        assert_eq!(
            decide(&card, Some(&account(posted, held)), None),
            Decision::Declined(Decline::InsufficientFunds)
        );
        // 3. capture 100.00: 25.50 released.
        let e = applied(capture(&h, Some(10_000), now + 1));
        posted += e.posted_delta;
        held += e.held_delta;
        h.state = e.state;
        h.captured = e.captured;
        h.captured_at_ms = Some(now + 1);
        assert_eq!((posted, held), (40_000, 0));
        // 4. capture 100.00 again: the same answer.
        assert_eq!(capture(&h, Some(10_000), now + 2), Ok(Transition::Replay));
        // 5. capture 90.00
        assert_eq!(
            capture(&h, Some(9_000), now + 3),
            Err(HoldError::CapturedWithDifferentAmount)
        );
        // 6. refund r1 30.00
        let e = refund(&h, &ask(3_000), now + 4).unwrap();
        posted += e.posted_delta;
        h.refunded = e.refunded;
        assert_eq!(posted, 43_000);
        // 7. refund r2 80.00: 30 + 80 > 100
        assert_eq!(
            refund(&h, &ask(8_000), now + 5),
            Err(HoldError::RefundExceedsCaptured)
        );
        // 8. refund r2 70.00
        let e = refund(&h, &ask(7_000), now + 6).unwrap();
        posted += e.posted_delta;
        h.refunded = e.refunded;
        assert_eq!((posted, held, h.refunded), (50_000, 0, 10_000));
        // 9. reserve mp-2 50.00 for 2 s
        assert!(reserve(&input("50.00"), Some(&account(posted, held)), None).is_approved());
        held += 5_000;
        let mp2 = Hold {
            reserved_at_ms: now + 7,
            expires_at_ms: now + 7 + 2_000,
            ..reserved(5_000)
        };
        assert_eq!(posted - held, 45_000);
        // 10. 3 s later: capture finds it expired (lazily), and the hold is released.
        let later = now + 7 + 3_000;
        let e = expire(&mp2, later).unwrap();
        held += e.held_delta;
        assert_eq!(capture(&mp2, None, later), Err(HoldError::Expired));
        assert_eq!((posted, held, posted - held), (50_000, 0, 50_000));
    }
}
