//! Holds: SQL and row mapping for the two-phase channel API. Every rule comes from
//! `ledger::holds`; this module reads what a rule needs (under lock), asks the rule, and
//! writes the effects it returns, in one transaction.
//!
//! Lock order, everywhere: the cardholder account row first, then the hold row (Postgres
//! `FOR UPDATE`), then the card's row when a debit decides on its counters
//! (`controls::lock_cards`), then control counter rows in their own order (owner, window,
//! categories),
//! so captures, cancels, refunds, reservations, authorizations and the sweeper never
//! deadlock one another.

use crate::controls::{card_counters, give_back_counted, write_counting};
use crate::processor::{
    Holder, LockedAccount, MovementMeta, Step, book, find_idempotent, in_own_tx, load_card_record,
    lock_account_by_id, lock_user_account,
};
use crate::{CommitGate, Store, StoreError, StoredResponse, Tx, day_of, for_update, run};
use ledger::holds::{
    self, Effects, Hold, HoldError, HoldEventKind, HoldState, RefundAsk, Transition,
};
use ledger::plan::{DebitAsk, hold_give_back, plan_debit};
use ledger::{AuthorizationInput, Currency, Decision, Decline, SystemAccount, format_minor};
use rust_decimal::Decimal;
use sqlx::Row;
use std::time::Instant;

/// Transport facts of one channel request.
#[derive(Debug, Clone, Copy)]
pub struct ChannelCall<'a> {
    /// The channel key's name: the holds' `channel`.
    pub channel: &'a str,
    pub idempotency_key: &'a str,
    /// SHA-256 of the raw body.
    pub request_hash: [u8; 32],
    /// The request's path (its reservation's, for a capture, cancel or refund): a key
    /// names one request, to one path.
    pub endpoint: &'a str,
    pub now_ms: i64,
    /// Reservations only: roll back instead of committing once this has passed.
    pub commit_by: Option<Instant>,
    /// Reservations only: see [`CommitGate`].
    pub commit_started: Option<&'a CommitGate>,
}

/// A reservation as parsed from the request.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    pub reservation_id: &'a str,
    pub user_id: &'a str,
    pub card_id: Option<&'a str>,
    /// `None` when the currency is not a listed code.
    pub currency: Option<Currency>,
    /// `None` when the amount was well-formed but beyond exact decimal range.
    pub amount: Option<Decimal>,
    pub mcc: Option<&'a str>,
    /// The merchant's country as the spending controls read it (the merchant's, else the
    /// channel's).
    pub country: Option<&'a str>,
    /// The merchant object as JSON text, kept as received.
    pub merchant: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub expires_at_ms: i64,
    pub partial_capture_possible: bool,
}

/// One refund of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundView {
    pub refund_id: String,
    pub amount: i64,
    pub created_at_ms: i64,
}

/// A reservation's decision as recorded: the answer given under its id and the explanation
/// of its decision (the stored form; `None` for a reservation decided before explanations
/// were kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationDecision {
    pub answer: StoredResponse,
    pub explanation: Option<String>,
    pub decided_at_ms: i64,
}

/// A hold as the channel API and the admin API show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub id: i64,
    pub channel: String,
    pub reservation_id: String,
    pub currency: Currency,
    pub state: HoldState,
    pub amount: i64,
    pub captured: i64,
    pub refunded: i64,
    pub partial_capture_possible: bool,
    pub expires_at_ms: i64,
    pub captured_at_ms: Option<i64>,
    pub card_id: Option<String>,
    pub reference: Option<String>,
    pub created_at_ms: i64,
    pub refunds: Vec<RefundView>,
}

/// What the store asks the caller to render: the decision on a reservation, or the hold
/// after a capture, cancel or refund.
#[derive(Debug, Clone)]
pub enum ChannelAnswer<'a> {
    Reserved(&'a HoldView),
    /// With the words of the spending control that declined, when one did.
    Declined(Decline, Option<&'a str>),
    Captured(&'a HoldView),
    Cancelled(&'a HoldView),
    Refunded {
        hold: &'a HoldView,
        refund_id: &'a str,
        amount: i64,
    },
    /// A rule refused the request (answered with its `http_status`).
    Refused(HoldError),
}

/// How a channel call ended.
#[derive(Debug)]
pub enum ChannelOutcome {
    /// Done now and committed; `events` are the hold events written (for metrics).
    Fresh {
        response: StoredResponse,
        events: Vec<HoldEventKind>,
    },
    /// The first answer again, byte for byte.
    Replay(StoredResponse),
    /// The idempotency key was used with another body.
    KeyConflict,
    /// No such reservation for this channel.
    NotFound,
    /// A rule refused it; `expired` when a lazy expiry was committed on the way.
    /// `recorded`: the refusal as stored under the call's idempotency key (a repeat replays
    /// it, another request under the key is a conflict); `None` for an amount refused
    /// before the request was looked at.
    Refused {
        error: HoldError,
        expired: bool,
        recorded: Option<StoredResponse>,
    },
}

/// Which due holds an expiry takes.
#[derive(Debug, Clone, Copy)]
pub enum ExpiryScope<'a> {
    /// The sweeper's: at most `batch_max` of the longest overdue `RESERVED` holds.
    Due { batch_max: i64 },
    /// One hold that a read found overdue.
    Hold {
        channel: &'a str,
        reservation_id: &'a str,
    },
}

/// An expiry of overdue holds, for the one writer.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryCall<'a> {
    pub scope: ExpiryScope<'a>,
    pub now_ms: i64,
}

/// What an expiry came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Holds expired (and committed, once the batch is).
    pub expired: u64,
    /// The sweeper's batch was full: more may be due.
    pub more: bool,
}

/// Scopes in `idempotency_keys`.
fn key_scope(channel: &str) -> String {
    format!("channel:{channel}")
}
fn reservation_scope(channel: &str) -> String {
    format!("reservation:{channel}")
}
fn refund_scope(channel: &str, reservation_id: &str) -> String {
    format!("refund:{channel}:{reservation_id}")
}

/// The columns every hold read selects.
macro_rules! hold_columns {
    () => {
        "SELECT id, channel, reservation_id, account_id, card_id, currency, amount_minor, state, \
         captured_minor, refunded_minor, partial_capture_possible, expires_at_ms, captured_at_ms, \
         reference, final_response, created_at_ms, controls_counted, counted_day FROM holds"
    };
}

/// A hold row.
struct HoldRow {
    id: i64,
    account_id: i64,
    view: HoldView,
    final_response: Option<Vec<u8>>,
    /// What the reservation counted in the spending controls' counters, and what has been
    /// given back since (`None`: nothing counted).
    counted: Option<String>,
    /// The UTC day whose daily counter took the reservation (`None`: the day it was made).
    counted_day: Option<i64>,
}

impl HoldRow {
    fn rule(&self) -> Hold {
        Hold {
            counted_day: self.counted_day,
            ..self.view.rule()
        }
    }
}

impl HoldView {
    /// Whether the hold is overdue: still `RESERVED` at or after its expiry (every
    /// operation on it expires it first).
    pub fn due(&self, now_ms: i64) -> bool {
        holds::due(&self.rule(), now_ms)
    }

    /// The hold as the rules of `ledger::holds` take it, without the day whose counter took
    /// it (only [`HoldRow::rule`] knows that): for [`HoldView::due`], never for a release.
    fn rule(&self) -> Hold {
        let v = self;
        Hold {
            state: v.state,
            amount: v.amount,
            captured: v.captured,
            refunded: v.refunded,
            partial_capture_possible: v.partial_capture_possible,
            reserved_at_ms: v.created_at_ms,
            expires_at_ms: v.expires_at_ms,
            captured_at_ms: v.captured_at_ms,
            counted_day: None,
        }
    }
}

macro_rules! hold_from_row {
    ($r:expr) => {{
        let r = &$r;
        let code: String = r.try_get("currency")?;
        let state: String = r.try_get("state")?;
        HoldRow {
            id: r.try_get("id")?,
            account_id: r.try_get("account_id")?,
            final_response: r.try_get("final_response")?,
            counted: r.try_get("controls_counted")?,
            counted_day: r.try_get("counted_day")?,
            view: HoldView {
                id: r.try_get("id")?,
                channel: r.try_get("channel")?,
                reservation_id: r.try_get("reservation_id")?,
                currency: Currency::parse_any(&code)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                state: HoldState::parse(&state).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown hold state {state}").into())
                })?,
                amount: r.try_get("amount_minor")?,
                captured: r.try_get("captured_minor")?,
                refunded: r.try_get("refunded_minor")?,
                partial_capture_possible: r.try_get("partial_capture_possible")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
                captured_at_ms: r.try_get("captured_at_ms")?,
                card_id: r.try_get("card_id")?,
                reference: r.try_get("reference")?,
                created_at_ms: r.try_get("created_at_ms")?,
                refunds: Vec::new(),
            },
        }
    }};
}

async fn find_hold(
    tx: &mut Tx,
    channel: &str,
    reservation_id: &str,
    lock: bool,
) -> Result<Option<HoldRow>, sqlx::Error> {
    let sql = for_update!(
        tx,
        concat!(hold_columns!(), " WHERE channel = $1 AND reservation_id = $2"),
        if lock
    );
    run!(tx, c => {
        match sqlx::query(sql).bind(channel).bind(reservation_id).fetch_optional(c).await? {
            Some(r) => Ok(Some(hold_from_row!(r))),
            None => Ok(None),
        }
    })
}

async fn load_refunds(tx: &mut Tx, hold_id: i64) -> Result<Vec<RefundView>, sqlx::Error> {
    let rows: Vec<(Option<String>, i64, i64)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT refund_id, amount_minor, created_at_ms FROM hold_events \
             WHERE hold_id = $1 AND kind = 'REFUNDED' ORDER BY id",
        )
        .bind(hold_id)
        .fetch_all(c)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(id, amount, at)| RefundView {
            refund_id: id.unwrap_or_default(),
            amount,
            created_at_ms: at,
        })
        .collect())
}

/// The event type our subscribers see for a hold event.
fn event_type(kind: HoldEventKind) -> &'static str {
    match kind {
        HoldEventKind::Reserved => "hold.reserved",
        HoldEventKind::Captured => "hold.captured",
        HoldEventKind::Cancelled => "hold.released",
        HoldEventKind::Expired => "hold.expired",
        HoldEventKind::Refunded => "hold.refunded",
    }
}

/// Writes the hold event of a transition of `hold` (as it is after the transition) and
/// publishes it to the subscribers in the same transaction; the event id derives from
/// the row, so it is stable.
async fn insert_event(
    store: &Store,
    tx: &mut Tx,
    hold: &HoldView,
    kind: HoldEventKind,
    amount: i64,
    meta: &EventMeta<'_>,
) -> Result<(), sqlx::Error> {
    let EventMeta {
        movement_id,
        refund_id,
        idempotency_key,
        now_ms,
    } = *meta;
    let id: i64 = run!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO hold_events (hold_id, kind, amount_minor, refund_id, movement_id, \
             idempotency_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(hold.id)
        .bind(kind.as_str())
        .bind(amount)
        .bind(refund_id)
        .bind(movement_id)
        .bind(idempotency_key)
        .bind(now_ms)
        .fetch_one(c)
        .await?
    });
    let event_id = hold_event_id(id);
    store
        .emit(tx, event_type(kind), &event_id, now_ms, || {
            let exp = hold.currency.exponent();
            serde_json::json!({
                "hold_event_id": id,
                "channel": hold.channel,
                "reservation_id": hold.reservation_id,
                "currency": hold.currency.code(),
                "amount": format_minor(amount, exp),
                "refund_id": refund_id,
                "movement_id": movement_id,
                "hold": {
                    "state": hold.state.as_str(),
                    "amount": format_minor(hold.amount, exp),
                    "captured": format_minor(hold.captured, exp),
                    "refunded": format_minor(hold.refunded, exp),
                    "reference": hold.reference,
                },
            })
        })
        .await
}

/// What a hold event records beside the hold: the movement the transition booked, the
/// refund's id, the request's idempotency key, and when.
#[derive(Debug, Clone, Copy)]
struct EventMeta<'a> {
    movement_id: Option<i64>,
    refund_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    now_ms: i64,
}

impl<'a> EventMeta<'a> {
    /// An event of request `call`, before its movement is booked.
    fn of(call: &ChannelCall<'a>, refund_id: Option<&'a str>) -> Self {
        EventMeta {
            movement_id: None,
            refund_id,
            idempotency_key: Some(call.idempotency_key),
            now_ms: call.now_ms,
        }
    }

    /// An expiry at `now_ms`: no request, no movement.
    fn expiry(now_ms: i64) -> Self {
        EventMeta {
            movement_id: None,
            refund_id: None,
            idempotency_key: None,
            now_ms,
        }
    }
}

/// The event id of hold event row `id` (the audit joins on it).
pub fn hold_event_id(id: i64) -> String {
    format!("evt-hold-{id}")
}

/// Writes what `ledger::holds` decided: the movement (if any) with the cardholder's
/// balance, version and daily counter; then `held_minor`; then the hold and its event.
/// `account` is locked and current; the event records `meta` with the movement booked.
/// Returns the movement id.
async fn apply(
    store: &Store,
    tx: &mut Tx,
    account: &LockedAccount,
    hold: &mut HoldRow,
    effects: &Effects,
    pos_clearing: Option<i64>,
    meta: EventMeta<'_>,
) -> Result<Option<i64>, Step> {
    let now_ms = meta.now_ms;
    // Off the counter that took the reservation, while it still counts that day.
    let spent = holds::give_back_counter(
        account.daily_spent_day,
        account.daily_spent,
        effects.counted_day,
        effects.daily_give_back,
    );
    let mut movement_id = None;
    if let (Some(plan), Some(kind)) = (effects.postings, effects.movement_kind()) {
        let clearing =
            pos_clearing.ok_or_else(|| StoreError::Invalid("no PoS clearing account".into()))?;
        let reference = format!("{}:{}", hold.view.channel, hold.view.reservation_id);
        let meta = MovementMeta {
            kind,
            processor_kind: None,
            transaction_id: None,
            reference: Some(&reference),
        };
        let (id, _) = book(
            tx,
            Holder::Account(account),
            clearing,
            plan,
            hold.view.currency,
            &meta,
            now_ms,
            Some((account.daily_spent_day, spent)),
        )
        .await?;
        movement_id = Some(id);
    }
    if effects.held_delta != 0 || (movement_id.is_none() && spent != account.daily_spent) {
        set_held(tx, account.id, effects.held_delta, spent, now_ms).await?;
    }
    let meta = EventMeta {
        movement_id,
        ..meta
    };
    write_transition(store, tx, hold, effects, &meta).await?;
    Ok(movement_id)
}

/// Changes the account's held amount by `held_delta` and sets its daily counter.
async fn set_held(
    tx: &mut Tx,
    account_id: i64,
    held_delta: i64,
    daily_spent: i64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "UPDATE accounts SET held_minor = held_minor + $1, daily_spent_minor = $2, \
             updated_at_ms = $3 WHERE id = $4",
        )
        .bind(held_delta)
        .bind(daily_spent)
        .bind(now_ms)
        .bind(account_id)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Writes the hold's side of a transition: its row as `effects` leave it, and its event.
async fn write_transition(
    store: &Store,
    tx: &mut Tx,
    hold: &mut HoldRow,
    effects: &Effects,
    meta: &EventMeta<'_>,
) -> Result<(), sqlx::Error> {
    let (movement_id, now_ms) = (meta.movement_id, meta.now_ms);
    let captured_at = match effects.event {
        HoldEventKind::Captured => Some(now_ms),
        _ => hold.view.captured_at_ms,
    };
    let capture_movement = match effects.event {
        HoldEventKind::Captured => movement_id,
        _ => None,
    };
    // What the transition releases goes back to the controls' counters the reservation
    // counted in, with the change that releases it.
    let counted = match (&hold.counted, hold_give_back(&hold.rule(), effects)) {
        (Some(counted), Some(give)) => {
            give_back_counted(tx, counted, give, Some(hold.view.amount), now_ms).await?
        }
        _ => None,
    };
    run!(tx, c => {
        sqlx::query(
            "UPDATE holds SET state = $1, captured_minor = $2, refunded_minor = $3, \
             captured_at_ms = $4, capture_movement_id = COALESCE($5, capture_movement_id), \
             updated_at_ms = $6, controls_counted = COALESCE($8, controls_counted) WHERE id = $7",
        )
        .bind(effects.state.as_str())
        .bind(effects.captured)
        .bind(effects.refunded)
        .bind(captured_at)
        .bind(capture_movement)
        .bind(now_ms)
        .bind(hold.id)
        .bind(counted.as_deref())
        .execute(c)
        .await?
        .rows_affected()
    });
    if counted.is_some() {
        hold.counted = counted;
    }
    let v = &mut hold.view;
    v.state = effects.state;
    v.captured = effects.captured;
    v.refunded = effects.refunded;
    v.captured_at_ms = captured_at;
    insert_event(
        store,
        tx,
        &hold.view,
        effects.event,
        effects.event_amount,
        meta,
    )
    .await
}

async fn set_final_response(tx: &mut Tx, hold_id: i64, body: &[u8]) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query("UPDATE holds SET final_response = $1 WHERE id = $2")
            .bind(body)
            .bind(hold_id)
            .execute(c)
            .await?
            .rows_affected()
    });
    Ok(())
}

/// A hold locked for an operation: its account, the hold, and whether it was expired now.
struct Locked {
    account: LockedAccount,
    hold: HoldRow,
    expired: bool,
}

impl Locked {
    /// Writes what the operation decided (see [`apply`]) and reads the hold's refunds
    /// again, for the answer.
    async fn apply(
        &mut self,
        store: &Store,
        tx: &mut Tx,
        effects: &Effects,
        clearing: i64,
        meta: EventMeta<'_>,
    ) -> Result<(), Step> {
        let hold = &mut self.hold;
        apply(
            store,
            tx,
            &self.account,
            hold,
            effects,
            Some(clearing),
            meta,
        )
        .await?;
        hold.view.refunds = load_refunds(tx, hold.id).await?;
        Ok(())
    }
}

/// Replays or refuses by the call's idempotency key; otherwise locks the hold's account,
/// then the hold, and expires it if due (in this transaction). `Err`: already answered (or
/// no such hold).
async fn lock_hold(
    store: &Store,
    tx: &mut Tx,
    call: &ChannelCall<'_>,
    reservation_id: &str,
) -> Result<Result<Locked, ChannelOutcome>, Step> {
    if let Some(o) = check_key(tx, call).await? {
        return Ok(Err(o));
    }
    let (channel, now_ms) = (call.channel, call.now_ms);
    let Some(first) = find_hold(tx, channel, reservation_id, false).await? else {
        return Ok(Err(ChannelOutcome::NotFound));
    };
    let account = lock_account_by_id(tx, first.account_id).await?;
    let Some(mut hold) = find_hold(tx, channel, reservation_id, true).await? else {
        return Ok(Err(ChannelOutcome::NotFound));
    };
    let mut expired = false;
    if let Some(e) = holds::expire(&hold.rule(), now_ms) {
        let meta = EventMeta::expiry(now_ms);
        apply(store, tx, &account, &mut hold, &e, None, meta).await?;
        expired = true;
    }
    // The account as it is now (the expiry changed its held amount).
    let account = if expired {
        lock_account_by_id(tx, hold.account_id).await?
    } else {
        account
    };
    Ok(Ok(Locked {
        account,
        hold,
        expired,
    }))
}

/// Replays or refuses by idempotency key; `None`: go on.
async fn check_key(tx: &mut Tx, call: &ChannelCall<'_>) -> Result<Option<ChannelOutcome>, Step> {
    Ok(
        find_idempotent(tx, &key_scope(call.channel), call.idempotency_key)
            .await?
            .map(|rec| {
                // A record names the path it answered (a reservation's own, for a capture,
                // cancel or refund). One written before paths were recorded names the
                // template of the call's route, `{reservation_id}` and all: its body alone
                // decides. (A reservation id may hold a brace: only the template is legacy.)
                let legacy = rec.request_hash == call.request_hash
                    && rec.endpoint == route_template(call.endpoint);
                if legacy || rec.same_request(&call.request_hash, call.endpoint) {
                    ChannelOutcome::Replay(rec.response)
                } else {
                    ChannelOutcome::KeyConflict
                }
            }),
    )
}

/// The route template a channel path was answered under before paths were recorded:
/// `/channels/v1/reservations/{reservation_id}` with its action, if any.
fn route_template(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('/').collect();
    // "", "channels", "v1", "reservations", the id, the action.
    if let Some(id) = parts.get_mut(4) {
        *id = "{reservation_id}";
    }
    parts.join("/")
}

/// Records `response` as the answer to `call` under its idempotency key.
async fn record_key(
    tx: &mut Tx,
    call: &ChannelCall<'_>,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    let scope = key_scope(call.channel);
    record_in(tx, call, (&scope, call.idempotency_key), response, None).await
}

/// Records `response` as the answer to `call` under `id` in `scope`, with the explanation
/// of the decision it gives (a reservation's).
async fn record_in(
    tx: &mut Tx,
    call: &ChannelCall<'_>,
    (scope, id): (&str, &str),
    response: &StoredResponse,
    explanation: Option<&str>,
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, \
             response_body, created_at_ms, explanation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(scope)
        .bind(id)
        .bind(&call.request_hash[..])
        .bind(call.endpoint)
        .bind(i32::from(response.status))
        .bind(&response.body[..])
        .bind(call.now_ms)
        .bind(explanation)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// The answer already given under `id` in `scope` (a reservation id, a refund id), now
/// recorded under the call's key too; refused with `reused` when another request gave
/// the id. `None`: go on.
async fn replay_id<R>(
    tx: &mut Tx,
    call: &ChannelCall<'_>,
    (scope, id): (&str, &str),
    (reused, expired): (HoldError, bool),
    render: &R,
) -> Result<Option<ChannelOutcome>, Step>
where
    R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
{
    let Some(rec) = find_idempotent(tx, scope, id).await? else {
        return Ok(None);
    };
    if rec.request_hash != call.request_hash {
        return refuse(tx, call, (reused, expired), render).await.map(Some);
    }
    record_key(tx, call, &rec.response).await?;
    Ok(Some(ChannelOutcome::Replay(rec.response)))
}

/// A refusal: a lazy expiry on the way is committed with the transaction; nothing else of
/// the request was written.
/// The refusal is recorded under the call's key, as an answer is: the key names this request.
/// Two are not: an amount refused as such (input, not the hold's state), and `NOT_CAPTURED`,
/// the one state a hold leaves (a refund sent before its capture committed may be sent again
/// under its key once it has).
async fn refuse<R>(
    tx: &mut Tx,
    call: &ChannelCall<'_>,
    (error, expired): (HoldError, bool),
    render: &R,
) -> Result<ChannelOutcome, Step>
where
    R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
{
    if matches!(error, HoldError::InvalidAmount | HoldError::NotCaptured) {
        return Ok(ChannelOutcome::Refused {
            error,
            expired,
            recorded: None,
        });
    }
    let response = StoredResponse {
        status: error.http_status(),
        body: render(&ChannelAnswer::Refused(error)),
    };
    record_key(tx, call, &response).await?;
    Ok(ChannelOutcome::Refused {
        error,
        expired,
        recorded: Some(response),
    })
}

/// Which of capture and cancel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    Capture(Option<i64>),
    Cancel,
}

/// One operation of the channel API on a hold.
#[derive(Debug, Clone, Copy)]
pub enum HoldOp<'a> {
    /// Decides a reservation and, approved, holds the amount; exactly once per
    /// (channel, reservation_id). Declines are recorded too (a new attempt needs a new
    /// reservation_id).
    Reserve {
        call: ChannelCall<'a>,
        req: ReserveRequest<'a>,
    },
    /// `amount` `None`: in full.
    Capture {
        call: ChannelCall<'a>,
        reservation_id: &'a str,
        amount: Option<Decimal>,
    },
    /// Cancelling again gives the same answer.
    Cancel {
        call: ChannelCall<'a>,
        reservation_id: &'a str,
    },
    /// Part of a captured hold: the account is credited at once.
    Refund {
        call: ChannelCall<'a>,
        reservation_id: &'a str,
        refund_id: &'a str,
        amount: Option<Decimal>,
        currency: Option<&'a str>,
        window_days: u32,
    },
}

impl<'a> HoldOp<'a> {
    /// The hold the operation ends or refunds (`None`: a reservation, which makes one).
    fn reservation_id(&self) -> Option<&'a str> {
        match *self {
            HoldOp::Reserve { .. } => None,
            HoldOp::Capture { reservation_id, .. }
            | HoldOp::Cancel { reservation_id, .. }
            | HoldOp::Refund { reservation_id, .. } => Some(reservation_id),
        }
    }

    /// The request.
    fn call(&self) -> &ChannelCall<'a> {
        match self {
            HoldOp::Reserve { call, .. }
            | HoldOp::Capture { call, .. }
            | HoldOp::Cancel { call, .. }
            | HoldOp::Refund { call, .. } => call,
        }
    }
}

/// What an operation needs read before its transaction opens (the embedded store has one
/// connection, and a system account is created in a commit of its own).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HoldTerms {
    Reserve,
    End { ending: Ending, clearing: i64 },
    Refund { ask: RefundAsk, clearing: i64 },
}

/// A fresh reservation commits only within its deadline, and only if its requester has not
/// given up (see [`CommitGate`]).
pub(crate) fn reservation_may_commit(call: &ChannelCall<'_>) -> Result<(), StoreError> {
    crate::processor::may_commit(call.commit_by, call.commit_started, "reservation")
}

impl Store {
    /// A hold operation in a transaction of its own (a batch of one).
    pub(crate) async fn hold_alone<R>(
        &self,
        op: &HoldOp<'_>,
        render: &R,
    ) -> Result<ChannelOutcome, StoreError>
    where
        R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
    {
        let terms = match self.hold_terms(op).await? {
            Ok(terms) => terms,
            Err(answered) => return Ok(answered),
        };
        in_own_tx!(self, tx => {
            let outcome = self.hold_on(tx, op, &terms, render).await?;
            if let (HoldOp::Reserve { call, .. }, ChannelOutcome::Fresh { .. }) = (op, &outcome) {
                reservation_may_commit(call)?;
            }
            Ok(outcome)
        })
        .await
    }

    /// Reads what `op` needs before its transaction; `Err`: already answered (no such
    /// reservation, an amount the currency cannot hold).
    pub(crate) async fn hold_terms(
        &self,
        op: &HoldOp<'_>,
    ) -> Result<Result<HoldTerms, ChannelOutcome>, StoreError> {
        let Some(reservation_id) = op.reservation_id() else {
            return Ok(Ok(HoldTerms::Reserve));
        };
        let channel = op.call().channel;
        let Some(currency) = self.hold_currency(channel, reservation_id).await? else {
            return Ok(Err(ChannelOutcome::NotFound));
        };
        let clearing = self
            .system_account(SystemAccount::PosClearing, currency)
            .await?;
        Ok(Ok(match op {
            HoldOp::Reserve { .. } => HoldTerms::Reserve,
            HoldOp::Capture { amount, .. } => {
                let minor = match amount.map(|a| ledger::to_minor(a, currency)) {
                    None => None,
                    Some(Ok(m)) => Some(m),
                    Some(Err(_)) => {
                        return Ok(Err(ChannelOutcome::Refused {
                            error: HoldError::InvalidAmount,
                            expired: false,
                            recorded: None,
                        }));
                    }
                };
                HoldTerms::End {
                    ending: Ending::Capture(minor),
                    clearing,
                }
            }
            HoldOp::Cancel { .. } => HoldTerms::End {
                ending: Ending::Cancel,
                clearing,
            },
            HoldOp::Refund {
                amount,
                currency: asked,
                window_days,
                ..
            } => HoldTerms::Refund {
                ask: RefundAsk {
                    amount: amount.and_then(|a| ledger::to_minor(a, currency).ok()),
                    currency_matches: asked.is_none_or(|c| c.eq_ignore_ascii_case(currency.code())),
                    window_days: *window_days,
                },
                clearing,
            },
        }))
    }

    /// `op` on `tx`, which the caller commits (a fresh reservation once
    /// [`reservation_may_commit`] allows it).
    pub(crate) async fn hold_on<R>(
        &self,
        tx: &mut Tx,
        op: &HoldOp<'_>,
        terms: &HoldTerms,
        render: &R,
    ) -> Result<ChannelOutcome, Step>
    where
        R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
    {
        let call = op.call();
        let locked = match op.reservation_id() {
            None => None,
            Some(reservation_id) => match lock_hold(self, tx, call, reservation_id).await? {
                Ok(locked) => Some(locked),
                Err(answered) => return Ok(answered),
            },
        };
        match (op, locked, terms) {
            (HoldOp::Reserve { req, .. }, _, _) => self.reserve_on(tx, call, req, render).await,
            (
                HoldOp::Capture { .. } | HoldOp::Cancel { .. },
                Some(locked),
                HoldTerms::End { ending, clearing },
            ) => {
                self.end_hold_on(tx, call, locked, *ending, *clearing, render)
                    .await
            }
            (
                HoldOp::Refund { refund_id, .. },
                Some(locked),
                HoldTerms::Refund { ask, clearing },
            ) => {
                self.refund_on(tx, call, locked, refund_id, ask, *clearing, render)
                    .await
            }
            _ => Err(Step::Fail(StoreError::Invalid(
                "hold operation read with another's terms".into(),
            ))),
        }
    }

    // The body reads as it did with a transaction of its own (`&mut tx`).
    #[allow(clippy::needless_borrow)]
    async fn reserve_on<R>(
        &self,
        tx: &mut Tx,
        call: &ChannelCall<'_>,
        req: &ReserveRequest<'_>,
        render: &R,
    ) -> Result<ChannelOutcome, Step>
    where
        R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
    {
        let mut tx = tx;
        if let Some(o) = check_key(&mut tx, call).await? {
            return Ok(o);
        }
        let res_scope = reservation_scope(call.channel);
        let id = (&res_scope[..], req.reservation_id);
        let reused = HoldError::ReservationIdReused;
        if let Some(o) = replay_id(&mut tx, call, id, (reused, false), render).await? {
            return Ok(o);
        }
        let account = match req.currency {
            Some(c) => lock_user_account(&mut tx, req.user_id, c).await?,
            None => None,
        };
        let card = match req.card_id {
            Some(id) => load_card_record(&mut tx, id).await?,
            None => None,
        };
        let tz = &self.controls_time_zone;
        let card_counters = match (req.card_id, &card) {
            (Some(id), Some(r)) if r.controls.is_some() => {
                card_counters(&mut tx, id, call.now_ms, tz).await?
            }
            _ => Default::default(),
        };
        let today = day_of(call.now_ms);
        let input = AuthorizationInput {
            kind: None,
            currency: req.currency,
            amount: req.amount,
            mcc: req.mcc,
        };
        let ask = DebitAsk {
            user_id: req.user_id,
            country: req.country,
            input: &input,
            now_ms: call.now_ms,
        };
        let card = req.card_id.zip(card.as_ref());
        let plan = plan_debit(&ask, account.as_ref(), card, card_counters, tz);
        let counted = plan.counted.as_ref();
        let decision = plan.decision;
        let mut events = Vec::new();
        let body = match (&decision, &account, req.currency) {
            (
                Decision::Approved {
                    amount,
                    daily_spent_after,
                    ..
                },
                Some(acct),
                Some(currency),
            ) => {
                let minor = -*amount;
                let hold_id: i64 = run!(&mut tx, c => {
                    sqlx::query_scalar(
                        "INSERT INTO holds (channel, reservation_id, account_id, card_id, currency, \
                         amount_minor, state, partial_capture_possible, expires_at_ms, merchant, \
                         reference, request_hash, created_at_ms, updated_at_ms, controls_counted, \
                         counted_day) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'RESERVED', $7, $8, $9, $10, $11, $12, $12, \
                         $13, $14) RETURNING id",
                    )
                    .bind(call.channel)
                    .bind(req.reservation_id)
                    .bind(acct.id)
                    .bind(req.card_id)
                    .bind(currency.code())
                    .bind(minor)
                    .bind(req.partial_capture_possible)
                    .bind(req.expires_at_ms)
                    .bind(req.merchant)
                    .bind(req.reference)
                    .bind(&call.request_hash[..])
                    .bind(call.now_ms)
                    .bind(counted.map(|c| c.kept.as_str()))
                    .bind(acct.spend_day(today))
                    .fetch_one(c)
                    .await?
                });
                run!(&mut tx, c => {
                    sqlx::query(
                        "UPDATE accounts SET held_minor = held_minor + $1, daily_spent_day = $2, \
                         daily_spent_minor = $3, updated_at_ms = $4 WHERE id = $5",
                    )
                    .bind(minor)
                    .bind(acct.spend_day(today))
                    .bind(*daily_spent_after)
                    .bind(call.now_ms)
                    .bind(acct.id)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
                if let Some(c) = counted {
                    write_counting(&mut tx, acct.id, c, call.now_ms).await?;
                }
                let view = HoldView {
                    id: hold_id,
                    channel: call.channel.to_owned(),
                    reservation_id: req.reservation_id.to_owned(),
                    currency,
                    state: HoldState::Reserved,
                    amount: minor,
                    captured: 0,
                    refunded: 0,
                    partial_capture_possible: req.partial_capture_possible,
                    expires_at_ms: req.expires_at_ms,
                    captured_at_ms: None,
                    card_id: req.card_id.map(str::to_owned),
                    reference: req.reference.map(str::to_owned),
                    created_at_ms: call.now_ms,
                    refunds: Vec::new(),
                };
                let meta = EventMeta::of(call, None);
                insert_event(self, &mut tx, &view, HoldEventKind::Reserved, minor, &meta).await?;
                events.push(HoldEventKind::Reserved);
                render(&ChannelAnswer::Reserved(&view))
            }
            (Decision::Declined(d), _, _) => {
                let message = plan.control.as_ref().map(|c| c.message.as_str());
                render(&ChannelAnswer::Declined(*d, message))
            }
            // Approved without an account cannot happen (no account declines first).
            _ => render(&ChannelAnswer::Declined(Decline::AccountNotFound, None)),
        };
        let response = StoredResponse { status: 200, body };
        record_in(&mut tx, call, id, &response, Some(&plan.explanation)).await?;
        record_key(&mut tx, call, &response).await?;
        Ok(ChannelOutcome::Fresh { response, events })
    }

    async fn end_hold_on<R>(
        &self,
        tx: &mut Tx,
        call: &ChannelCall<'_>,
        mut locked: Locked,
        ending: Ending,
        clearing: i64,
        render: &R,
    ) -> Result<ChannelOutcome, Step>
    where
        R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
    {
        let rule = locked.hold.rule();
        let decided = match ending {
            Ending::Capture(amount) => holds::capture(&rule, amount, call.now_ms),
            Ending::Cancel => holds::cancel(&rule, call.now_ms),
        };
        let effects = match decided {
            Err(e) => return refuse(tx, call, (e, locked.expired), render).await,
            Ok(Transition::Replay) => {
                let body = locked.hold.final_response.clone().unwrap_or_default();
                let response = StoredResponse { status: 200, body };
                record_key(tx, call, &response).await?;
                return Ok(ChannelOutcome::Replay(response));
            }
            Ok(Transition::Apply(e)) => e,
        };
        let meta = EventMeta::of(call, None);
        locked.apply(self, tx, &effects, clearing, meta).await?;
        let body = match ending {
            Ending::Capture(_) => render(&ChannelAnswer::Captured(&locked.hold.view)),
            Ending::Cancel => render(&ChannelAnswer::Cancelled(&locked.hold.view)),
        };
        set_final_response(tx, locked.hold.id, &body).await?;
        let response = StoredResponse { status: 200, body };
        record_key(tx, call, &response).await?;
        let mut events = Vec::new();
        if locked.expired {
            events.push(HoldEventKind::Expired);
        }
        events.push(effects.event);
        Ok(ChannelOutcome::Fresh { response, events })
    }

    #[allow(clippy::too_many_arguments)]
    async fn refund_on<R>(
        &self,
        tx: &mut Tx,
        call: &ChannelCall<'_>,
        mut locked: Locked,
        refund_id: &str,
        ask: &RefundAsk,
        clearing: i64,
        render: &R,
    ) -> Result<ChannelOutcome, Step>
    where
        R: Fn(&ChannelAnswer<'_>) -> Vec<u8>,
    {
        let scope = refund_scope(call.channel, &locked.hold.view.reservation_id);
        // The refund id is looked up under the hold's lock: a copy of the refund sent under
        // another key while the first was being written waits here for it, then replays it
        // (read before the lock, it missed the first and was judged as a second refund).
        let reused = HoldError::RefundIdReused;
        let key = (&scope[..], refund_id);
        if let Some(o) = replay_id(tx, call, key, (reused, locked.expired), render).await? {
            return Ok(o);
        }
        let effects = match holds::refund(&locked.hold.rule(), ask, call.now_ms) {
            Ok(e) => e,
            Err(e) => return refuse(tx, call, (e, locked.expired), render).await,
        };
        let meta = EventMeta::of(call, Some(refund_id));
        locked.apply(self, tx, &effects, clearing, meta).await?;
        let body = render(&ChannelAnswer::Refunded {
            hold: &locked.hold.view,
            refund_id,
            amount: effects.event_amount,
        });
        let response = StoredResponse { status: 200, body };
        record_in(tx, call, (&scope, refund_id), &response, None).await?;
        record_key(tx, call, &response).await?;
        Ok(ChannelOutcome::Fresh {
            response,
            events: vec![HoldEventKind::Refunded],
        })
    }

    /// The hold with its refunds, as stored: an overdue reserved hold is still `RESERVED`
    /// here (see [`HoldView::due`]); the caller has the one writer expire it, then reads
    /// again.
    pub async fn hold(
        &self,
        channel: &str,
        reservation_id: &str,
    ) -> Result<Option<HoldView>, StoreError> {
        // One snapshot for the hold and its refunds (a refund committed between the two
        // reads would show in the list and not in `refunded`).
        let mut tx = self.begin_read().await?;
        let Some(mut h) = find_hold(&mut tx, channel, reservation_id, false).await? else {
            return Ok(None);
        };
        h.view.refunds = load_refunds(&mut tx, h.id).await?;
        Ok(Some(h.view))
    }

    /// The currency of a hold (read without locking, to prepare the transaction).
    async fn hold_currency(
        &self,
        channel: &str,
        reservation_id: &str,
    ) -> Result<Option<Currency>, StoreError> {
        let code: Option<String> = crate::run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT currency FROM holds WHERE channel = $1 AND reservation_id = $2")
                .bind(channel)
                .bind(reservation_id)
                .fetch_optional(p)
                .await?
        });
        Ok(code.and_then(|c| Currency::parse_any(&c).ok()))
    }

    /// The decision recorded for `reservation_id` of `channel` (`None`: no such reservation).
    pub async fn reservation_decision(
        &self,
        channel: &str,
        reservation_id: &str,
    ) -> Result<Option<ReservationDecision>, StoreError> {
        let scope = reservation_scope(channel);
        let row: Option<(i32, Vec<u8>, Option<String>, i64)> = crate::run_pool!(&self.db, p => {
            sqlx::query_as(
                "SELECT response_status, response_body, explanation, created_at_ms \
                 FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .bind(&scope)
            .bind(reservation_id)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(
            |(status, body, explanation, decided_at_ms)| ReservationDecision {
                answer: StoredResponse {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                },
                explanation: explanation.filter(|e| !e.is_empty()),
                decided_at_ms,
            },
        ))
    }

    /// Holds of a cardholder account, newest first, optionally in one state, with ids
    /// below `before`. `None` when the account does not exist.
    pub async fn account_holds(
        &self,
        user_id: &str,
        currency: Currency,
        state: Option<HoldState>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Option<Vec<HoldView>>, StoreError> {
        let Some(account) = self.user_account_id(user_id, currency).await? else {
            return Ok(None);
        };
        let sql = concat!(
            hold_columns!(),
            " WHERE account_id = $1 AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        );
        let rows: Vec<HoldRow> = crate::run_pool!(&self.db, p => {
            let mut out = Vec::new();
            for r in sqlx::query(sql)
                .bind(account)
                .bind(state.map(|s| s.as_str()))
                .bind(before)
                .bind(limit)
                .fetch_all(p)
                .await?
            {
                out.push(hold_from_row!(r));
            }
            out
        });
        Ok(Some(rows.into_iter().map(|h| h.view).collect()))
    }

    /// Number of RESERVED holds (the `authorizer_holds_reserved` gauge).
    pub async fn reserved_holds(&self) -> Result<i64, StoreError> {
        Ok(crate::run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM holds WHERE state = 'RESERVED'")
                .fetch_one(p)
                .await?
        }))
    }

    /// Expires the due holds `call` names on `tx`, which the caller commits (the one
    /// writer, beside the other work of its batch). The sweeper's batch takes at most
    /// `batch_max` of the longest overdue holds; on Postgres it takes their accounts with
    /// `FOR UPDATE SKIP LOCKED` (accounts first, the order every writer follows), so
    /// instances share the work and never wait on a request for an account (what is skipped
    /// is taken by the next batch; a card's counter rows, given back by an expiry, are
    /// waited for). Each account's holds are planned together by
    /// [`holds::expire_due`] and written as one change of the account.
    pub(crate) async fn expire_on(
        &self,
        tx: &mut Tx,
        call: &ExpiryCall<'_>,
    ) -> Result<Expired, Step> {
        let now_ms = call.now_ms;
        let candidates: Vec<(i64, i64)> = match call.scope {
            ExpiryScope::Due { batch_max } => run!(tx, c => {
                sqlx::query_as(
                    "SELECT id, account_id FROM holds WHERE state = 'RESERVED' \
                     AND expires_at_ms <= $1 ORDER BY expires_at_ms, id LIMIT $2",
                )
                .bind(now_ms)
                .bind(batch_max)
                .fetch_all(c)
                .await?
            }),
            ExpiryScope::Hold {
                channel,
                reservation_id,
            } => run!(tx, c => {
                sqlx::query_as(
                    "SELECT id, account_id FROM holds WHERE channel = $1 AND reservation_id = $2 \
                     AND state = 'RESERVED' AND expires_at_ms <= $3",
                )
                .bind(channel)
                .bind(reservation_id)
                .bind(now_ms)
                .fetch_all(c)
                .await?
            }),
        };
        let full = match call.scope {
            ExpiryScope::Due { batch_max } => {
                i64::try_from(candidates.len()).unwrap_or(i64::MAX) >= batch_max
            }
            ExpiryScope::Hold { .. } => false,
        };
        let mut accounts: Vec<i64> = candidates.iter().map(|c| c.1).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let accounts: Vec<i64> =
            match (&mut *tx, call.scope) {
                (Tx::Pg(t), ExpiryScope::Due { .. }) if !accounts.is_empty() => sqlx::query_scalar(
                    "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
                )
                .bind(&accounts)
                .fetch_all(&mut **t)
                .await?,
                // One hold a read found overdue: its account is waited for.
                _ => accounts,
            };
        let expiry = EventMeta::expiry(now_ms);
        let mut expired = 0u64;
        for account_id in accounts {
            let account = lock_account_by_id(tx, account_id).await?;
            let mut rows = Vec::new();
            for &(id, _) in candidates.iter().filter(|c| c.1 == account_id) {
                let sql = for_update!(&*tx, concat!(hold_columns!(), " WHERE id = $1"));
                rows.push(run!(tx, c => {
                    let r = sqlx::query(sql).bind(id).fetch_one(c).await?;
                    hold_from_row!(r)
                }));
            }
            let rules: Vec<Hold> = rows.iter().map(HoldRow::rule).collect();
            let plan =
                holds::expire_due(&rules, account.daily_spent_day, account.daily_spent, now_ms);
            if plan.count() == 0 {
                continue;
            }
            set_held(tx, account.id, plan.held_delta, plan.daily_spent, now_ms).await?;
            for (row, effects) in rows.iter_mut().zip(&plan.holds) {
                if let Some(e) = effects {
                    write_transition(self, tx, row, e, &expiry).await?;
                }
            }
            expired += plan.count() as u64;
        }
        Ok(Expired {
            expired,
            more: full && expired > 0,
        })
    }

    /// An expiry in a transaction of its own (a batch of one).
    pub(crate) async fn expire_alone(&self, call: &ExpiryCall<'_>) -> Result<Expired, StoreError> {
        in_own_tx!(self, tx => self.expire_on(tx, call).await).await
    }
}
