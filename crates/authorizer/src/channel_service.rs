//! Between the channels' routes and the store: the reservation's deadline race, and the
//! exact bytes of every answer to a channel, rendered in one place.
//!
//! route (signature, parse, idempotency) -> channel_service -> batcher -> store
//!
//! Every operation on a hold goes through the batcher, the one writer, like every other
//! money-moving request. A reservation is answered within `processor.deadline_ms`, like an
//! authorization: at the deadline, unless its commit has started, it answers REJECTED /
//! SYSTEM_ERROR and nothing is stored (see [`CommitGate`]). Inside a batch a reservation
//! locks the account row it reads, and a batch of authorizations alone checks `held_minor`
//! at its write, so the two never decide on a stale balance.

use crate::app::AppState;
use crate::batcher::{ExpiryJob, ExpiryOf, HoldJob, Job};
use crate::fleet::ReserveMark;
use ledger::{Currency, Decline, format_minor};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use store::{
    ChannelAnswer, ChannelCall, ChannelOutcome, CommitGate, HoldOp, HoldView, ReserveRequest,
    StoreError,
};
use utoipa::ToSchema;

/// The reservations whose reserve this process is deciding, by channel and reservation id.
/// A capture, cancel or refund reads its hold before its transaction, so while a slow batch
/// still commits the reserve it finds none. Answered 404, the channel would stop (MobilePay
/// cancels after an approve that timed out, until 200 or 404), and the hold it meant to
/// release would stand until it expired: it waits for the reserve and looks again instead.
///
/// A reserve is in flight from its request until its batch has committed or rolled back
/// (the guard travels with its job, so a client that hangs up does not end it early), and
/// the end of each is kept for a minute, numbered: a capture, cancel or refund that read
/// nothing while a reserve of its reservation ended (its own batch slower than the
/// reserve's) looks again too. Any other 404 is answered after one read.
#[derive(Debug, Default)]
pub struct Reserving(Mutex<InFlight>);

type ReservationKey = (String, String);

#[derive(Debug, Default)]
struct InFlight {
    deciding: HashMap<ReservationKey, usize>,
    /// How many reserves have ended, of any reservation.
    generation: u64,
    /// The number of the last reserve of each reservation that ended in the last minute.
    ended: HashMap<ReservationKey, u64>,
    /// The same, oldest first, for pruning.
    order: VecDeque<(Instant, u64, ReservationKey)>,
}

/// How long the end of a reserve is kept: far longer than any batch takes to answer.
const ENDED_KEEP: Duration = Duration::from_secs(60);
/// Ends kept at most (a flood of reserves prunes them sooner).
const ENDED_MAX: usize = 100_000;

impl Reserving {
    /// Marks a reserve of `reservation_id` on `channel` in flight until the guard drops.
    fn enter(self: &Arc<Self>, channel: &str, reservation_id: &str) -> ReservingGuard {
        let key = (channel.to_owned(), reservation_id.to_owned());
        *self.lock().deciding.entry(key.clone()).or_default() += 1;
        ReservingGuard {
            set: self.clone(),
            key,
        }
    }

    /// How many reserves have ended so far (of any reservation).
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// This instance's mark of a reserve of this reservation, as the fleet's reads: being
    /// decided, or ended since `seen` (a [`Reserving::generation`]), or neither.
    fn mark(&self, channel: &str, reservation_id: &str, seen: u64) -> ReserveMark {
        let m = self.lock();
        let key = (channel.to_owned(), reservation_id.to_owned());
        if m.deciding.contains_key(&key) {
            ReserveMark::Deciding
        } else if m.ended.get(&key).is_some_and(|&g| g > seen) {
            ReserveMark::Done
        } else {
            ReserveMark::None
        }
    }

    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct ReservingGuard {
    set: Arc<Reserving>,
    key: ReservationKey,
}

impl Drop for ReservingGuard {
    fn drop(&mut self) {
        let mut m = self.set.lock();
        m.generation += 1;
        let (generation, now) = (m.generation, Instant::now());
        m.ended.insert(self.key.clone(), generation);
        m.order.push_back((now, generation, self.key.clone()));
        while let Some((at, g, _)) = m.order.front() {
            if now.duration_since(*at) < ENDED_KEEP && m.order.len() <= ENDED_MAX {
                break;
            }
            let g = *g;
            if let Some((_, _, key)) = m.order.pop_front()
                && m.ended.get(&key) == Some(&g)
            {
                m.ended.remove(&key);
            }
        }
        if let Some(n) = m.deciding.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.deciding.remove(&self.key);
            }
        }
    }
}

/// Reserves, answering within the deadline counted from `started`.
pub async fn reserve(
    state: &AppState,
    call: ChannelCall<'_>,
    req: &ReserveRequest<'_>,
    started: Instant,
) -> Result<ChannelOutcome, StoreError> {
    let (commit_by, due) = crate::service::deadline_of(
        started,
        Duration::from_millis(state.settings.processor.deadline_ms),
    );
    let gate = Arc::new(CommitGate::new());
    // The fleet's mark, for as long as its commit may end after it came: set beside the
    // decision (a slow Redis never eats into the deadline), ended once it is known.
    let ttl_ms =
        state.settings.processor.deadline_ms + state.settings.database.statement_ms_max + 1_000;
    let marking = state.fleet.is_configured().then(|| {
        let fleet = state.fleet.clone();
        let (channel, id) = (call.channel.to_owned(), req.reservation_id.to_owned());
        tokio::spawn(async move { fleet.mark_reserving(&channel, &id, ttl_ms).await })
    });
    let call = ChannelCall {
        commit_by: Some(commit_by),
        ..call
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let mut op = HoldRequest::of(&HoldOp::Reserve { call, req: *req }, Some(gate.clone()));
    // In flight until its batch has ended (or the job is dropped unsent).
    op.deciding = Some(state.reserving.enter(call.channel, req.reservation_id));
    let job = Job::Hold(HoldJob {
        op,
        reply: Some(reply),
    });
    let r = crate::service::by_deadline(state, job, answer, &gate, due, "reservation").await;
    // A commit whose outcome is not known leaves the mark to expire; any other outcome is
    // known: a hold committed, or nothing (a decline, a refusal, the deadline given up).
    if let Some(marking) = marking
        && !matches!(r, Err(StoreError::Uncertain(_)))
    {
        let held = matches!(&r, Ok(ChannelOutcome::Fresh { events, .. }) if !events.is_empty());
        let fleet = state.fleet.clone();
        let (channel, id) = (call.channel.to_owned(), req.reservation_id.to_owned());
        tokio::spawn(async move {
            if let Ok(Some(token)) = marking.await {
                fleet
                    .finish_reserving(&channel, &id, token, held, ttl_ms)
                    .await;
            }
        });
    }
    if let (Ok(ChannelOutcome::Fresh { .. }), Some(delay)) = (&r, answer_delay()) {
        tokio::time::sleep(delay).await;
    }
    r
}

/// A capture, cancel or refund through the one writer (the channel resends on a 5xx).
/// `started`: when its request came; a wait for its reserve ends
/// `processor.answer_ms_max` after it.
pub async fn hold(
    state: &AppState,
    op: HoldOp<'_>,
    channel: &str,
    reservation_id: &str,
    started: Instant,
) -> Result<ChannelOutcome, StoreError> {
    let once = || {
        crate::service::through_writer(state, |reply| {
            Job::Hold(HoldJob {
                op: HoldRequest::of(&op, None),
                reply: Some(reply),
            })
        })
    };
    let seen = state.reserving.generation();
    let mut r = once().await;
    if !matches!(r, Ok(ChannelOutcome::NotFound)) {
        return r;
    }
    let undecided = || {
        Err(StoreError::Timeout(
            "the reserve of this reservation is still being decided".into(),
        ))
    };
    let until = started + Duration::from_millis(state.settings.processor.answer_ms_max);
    // A reserve of it being decided (here, then anywhere in the fleet), or one that ended
    // while this read nothing: wait while it is decided (bounded as any answer is), then
    // look again. Still undecided: 503, sent again, rather than a 404 that ends the retries.
    let here = || async { state.reserving.mark(channel, reservation_id, seen) };
    if here().await != ReserveMark::None {
        if !waited_out(here, Duration::from_millis(5), until).await {
            return undecided();
        }
        r = once().await;
        if !matches!(r, Ok(ChannelOutcome::NotFound)) {
            return r;
        }
    }
    let fleet = || state.fleet.reserving(channel, reservation_id);
    if fleet().await == ReserveMark::None {
        return r;
    }
    if !waited_out(fleet, Duration::from_millis(20), until).await {
        return undecided();
    }
    once().await
}

/// Waits while `mark` reads [`ReserveMark::Deciding`], looking every `every`; `false` when
/// it still does at `until`.
async fn waited_out<F, Fut>(mark: F, every: Duration, until: Instant) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ReserveMark>,
{
    while mark().await == ReserveMark::Deciding {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(every).await;
    }
    true
}

/// A reservation as it stands, with whether this read expired it: an overdue one is
/// expired first by the one writer (lazy expiry, committed like any other movement), then
/// read again.
pub async fn read(
    state: &AppState,
    channel: &str,
    reservation_id: &str,
) -> Result<Option<(HoldView, bool)>, StoreError> {
    let now_ms = store::now_ms();
    let Some(view) = state.store.hold(channel, reservation_id).await? else {
        return Ok(None);
    };
    if !view.due(now_ms) {
        return Ok(Some((view, false)));
    }
    let expired = crate::service::through_writer(state, |reply| {
        Job::Expiry(ExpiryJob {
            scope: ExpiryOf::Hold(channel.to_owned(), reservation_id.to_owned()),
            now_ms,
            reply: Some(reply),
        })
    })
    .await?;
    let view = state.store.hold(channel, reservation_id).await?;
    Ok(view.map(|v| (v, expired.expired > 0)))
}

/// A hold operation, owned while it waits for its batch (what [`HoldOp`] names).
pub struct HoldRequest {
    channel: String,
    idempotency_key: String,
    request_hash: [u8; 32],
    endpoint: String,
    now_ms: i64,
    commit_by: Option<Instant>,
    /// A reservation's: taken just before its batch commits, unless it gave up first.
    gate: Option<Arc<CommitGate>>,
    /// A reservation's: marks it in flight in [`Reserving`] until this request is dropped,
    /// after its batch.
    deciding: Option<ReservingGuard>,
    kind: HoldKind,
}

enum HoldKind {
    Reserve {
        reservation_id: String,
        user_id: String,
        card_id: Option<String>,
        currency: Option<Currency>,
        amount: Option<Decimal>,
        mcc: Option<String>,
        country: Option<String>,
        merchant: Option<String>,
        reference: Option<String>,
        expires_at_ms: i64,
        partial_capture_possible: bool,
    },
    Capture {
        reservation_id: String,
        amount: Option<Decimal>,
    },
    Cancel {
        reservation_id: String,
    },
    Refund {
        reservation_id: String,
        refund_id: String,
        amount: Option<Decimal>,
        currency: Option<String>,
        window_days: u32,
    },
}

impl HoldRequest {
    fn of(op: &HoldOp<'_>, gate: Option<Arc<CommitGate>>) -> HoldRequest {
        let owned = |s: &str| s.to_owned();
        let (call, kind) = match op {
            HoldOp::Reserve { call, req } => (
                call,
                HoldKind::Reserve {
                    reservation_id: owned(req.reservation_id),
                    user_id: owned(req.user_id),
                    card_id: req.card_id.map(owned),
                    currency: req.currency,
                    amount: req.amount,
                    mcc: req.mcc.map(owned),
                    country: req.country.map(owned),
                    merchant: req.merchant.map(owned),
                    reference: req.reference.map(owned),
                    expires_at_ms: req.expires_at_ms,
                    partial_capture_possible: req.partial_capture_possible,
                },
            ),
            HoldOp::Capture {
                call,
                reservation_id,
                amount,
            } => (
                call,
                HoldKind::Capture {
                    reservation_id: owned(reservation_id),
                    amount: *amount,
                },
            ),
            HoldOp::Cancel {
                call,
                reservation_id,
            } => (
                call,
                HoldKind::Cancel {
                    reservation_id: owned(reservation_id),
                },
            ),
            HoldOp::Refund {
                call,
                reservation_id,
                refund_id,
                amount,
                currency,
                window_days,
            } => (
                call,
                HoldKind::Refund {
                    reservation_id: owned(reservation_id),
                    refund_id: owned(refund_id),
                    amount: *amount,
                    currency: currency.map(owned),
                    window_days: *window_days,
                },
            ),
        };
        HoldRequest {
            channel: owned(call.channel),
            idempotency_key: owned(call.idempotency_key),
            request_hash: call.request_hash,
            endpoint: owned(call.endpoint),
            now_ms: call.now_ms,
            commit_by: call.commit_by,
            gate,
            deciding: None,
            kind,
        }
    }

    /// The operation as the store takes it.
    pub fn op(&self) -> HoldOp<'_> {
        let call = ChannelCall {
            channel: &self.channel,
            idempotency_key: &self.idempotency_key,
            request_hash: self.request_hash,
            endpoint: &self.endpoint,
            now_ms: self.now_ms,
            commit_by: self.commit_by,
            commit_started: self.gate.as_deref(),
        };
        match &self.kind {
            HoldKind::Reserve {
                reservation_id,
                user_id,
                card_id,
                currency,
                amount,
                mcc,
                country,
                merchant,
                reference,
                expires_at_ms,
                partial_capture_possible,
            } => HoldOp::Reserve {
                call,
                req: ReserveRequest {
                    reservation_id,
                    user_id,
                    card_id: card_id.as_deref(),
                    currency: *currency,
                    amount: *amount,
                    mcc: mcc.as_deref(),
                    country: country.as_deref(),
                    merchant: merchant.as_deref(),
                    reference: reference.as_deref(),
                    expires_at_ms: *expires_at_ms,
                    partial_capture_possible: *partial_capture_possible,
                },
            },
            HoldKind::Capture {
                reservation_id,
                amount,
            } => HoldOp::Capture {
                call,
                reservation_id,
                amount: *amount,
            },
            HoldKind::Cancel { reservation_id } => HoldOp::Cancel {
                call,
                reservation_id,
            },
            HoldKind::Refund {
                reservation_id,
                refund_id,
                amount,
                currency,
                window_days,
            } => HoldOp::Refund {
                call,
                reservation_id,
                refund_id,
                amount: *amount,
                currency: currency.as_deref(),
                window_days: *window_days,
            },
        }
    }
}

/// Test-only fault: `AUTHORIZER_FAULT_RESERVATION_ANSWER_DELAY_MS` holds a fresh
/// reservation's answer this long after its commit, so that a test can kill the process
/// between the two and check that the channel's retry replays it. Unset: no delay.
fn answer_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("AUTHORIZER_FAULT_RESERVATION_ANSWER_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    })
}

/// RFC 3339 UTC time (whole seconds) of a unix millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_second(ms.div_euclid(1000)) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Outside years -9999..=9999: no stored time is.
        Err(_) => String::new(),
    }
}

/// A refund as the channel sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundJson {
    pub refund_id: String,
    pub amount: String,
    pub created_at: String,
}

/// A reservation as the channel sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationJson {
    pub reservation_id: String,
    /// RESERVED, CAPTURED, CANCELLED or EXPIRED.
    pub state: &'static str,
    pub amount: String,
    pub captured: String,
    pub refunded: String,
    pub currency: String,
    pub expires_at: String,
    pub partial_capture_possible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// On `GET` only: the refunds, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundJson>>,
}

/// The refund an answer reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundAnswer {
    pub refund_id: String,
    pub amount: String,
    pub currency: String,
}

/// Every channel answer of a POST.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelResponse {
    /// APPROVED or REJECTED.
    pub status: &'static str,
    /// APPROVED, INSUFFICIENT_FUNDS, INVALID_MERCHANT, INVALID_AMOUNT, OTHER or SYSTEM_ERROR:
    /// the authorizations' vocabulary.
    pub status_detail: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundAnswer>,
}

fn money(minor: i64, c: Currency) -> String {
    format_minor(minor, c.exponent())
}

/// The reservation object; with its refunds when `with_refunds`.
pub fn reservation_json(h: &HoldView, with_refunds: bool) -> ReservationJson {
    let c = h.currency;
    ReservationJson {
        reservation_id: h.reservation_id.clone(),
        state: h.state.as_str(),
        amount: money(h.amount, c),
        captured: money(h.captured, c),
        refunded: money(h.refunded, c),
        currency: c.code().to_owned(),
        expires_at: rfc3339(h.expires_at_ms),
        partial_capture_possible: h.partial_capture_possible,
        reference: h.reference.clone(),
        refunds: with_refunds.then(|| {
            h.refunds
                .iter()
                .map(|r| RefundJson {
                    refund_id: r.refund_id.clone(),
                    amount: money(r.amount, c),
                    created_at: rfc3339(r.created_at_ms),
                })
                .collect()
        }),
    }
}

/// The exact body of an answer the store records.
pub fn render(a: &ChannelAnswer<'_>) -> Vec<u8> {
    let approved = |message: &str, h: &HoldView| ChannelResponse {
        status: "APPROVED",
        status_detail: "APPROVED",
        message: message.to_owned(),
        reservation: Some(reservation_json(h, false)),
        refund: None,
    };
    let resp = match a {
        ChannelAnswer::Reserved(h) => approved("Reserved", h),
        ChannelAnswer::Captured(h) => approved("Captured", h),
        ChannelAnswer::Cancelled(h) => approved("Cancelled", h),
        ChannelAnswer::Refunded {
            hold,
            refund_id,
            amount,
        } => ChannelResponse {
            refund: Some(RefundAnswer {
                refund_id: (*refund_id).to_owned(),
                amount: money(*amount, hold.currency),
                currency: hold.currency.code().to_owned(),
            }),
            ..approved("Refunded", hold)
        },
        ChannelAnswer::Declined(d, message) => declined(*d, *message),
        ChannelAnswer::Refused(e) => return crate::routes::error_body(e.code(), e.message()),
    };
    serde_json::to_vec(&resp).unwrap_or_default()
}

fn declined(d: Decline, message: Option<&str>) -> ChannelResponse {
    ChannelResponse {
        status: "REJECTED",
        status_detail: d.class().as_str(),
        message: message.unwrap_or(d.message()).to_owned(),
        reservation: None,
        refund: None,
    }
}

/// The answer to a reservation that could not be served in time: nothing held.
pub fn render_system_error() -> Vec<u8> {
    serde_json::to_vec(&ChannelResponse {
        status: "REJECTED",
        status_detail: "SYSTEM_ERROR",
        message: "System error".into(),
        reservation: None,
        refund: None,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_civil_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_604_900_000), "2023-11-21T22:15:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn a_read_looks_again_only_when_its_own_reservation_ended_meanwhile() {
        let set = Arc::new(Reserving::default());
        let seen = set.generation();
        let guard = set.enter("mp", "r-1");
        assert_eq!(set.mark("mp", "r-1", seen), ReserveMark::Deciding);
        let other = set.enter("mp", "r-2");
        drop(other);
        // Another reservation's end is no reason to read again.
        assert_eq!(set.mark("mp", "r-1", seen), ReserveMark::Deciding);
        drop(guard);
        assert_eq!(set.mark("mp", "r-1", seen), ReserveMark::Done);
        // A read that began after that end has no reason either.
        let later = set.generation();
        assert_eq!(set.mark("mp", "r-1", later), ReserveMark::None);
        assert_eq!(
            set.mark("other", "r-1", seen),
            ReserveMark::None,
            "by channel too"
        );
    }
}
