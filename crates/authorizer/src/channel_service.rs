//! Between the channels' routes and the store: the reservation's deadline race, and the
//! exact bytes of every answer to a channel, rendered in one place.
//!
//! route (signature, parse, idempotency) -> channel_service -> store
//!
//! A reservation is answered within `processor.deadline_ms`, like an authorization: at the
//! deadline, unless its commit has started, it answers REJECTED / SYSTEM_ERROR and nothing
//! is stored (see [`CommitGate`]). Reservations are written in a transaction of their own
//! (not through the authorizations' batcher): they lock the account row exactly as the
//! batcher's single path does, and the grouped batch's write checks `held_minor`, so the
//! two never decide on a stale balance.

use crate::app::AppState;
use ledger::{Currency, Decline, format_minor};
use serde::Serialize;
use std::time::{Duration, Instant};
use store::{
    ChannelAnswer, ChannelCall, ChannelOutcome, CommitGate, HoldView, ReserveRequest, StoreError,
};
use utoipa::ToSchema;

/// Reserves, answering within the deadline counted from `started`.
pub async fn reserve(
    state: &AppState,
    call: ChannelCall<'_>,
    req: &ReserveRequest<'_>,
    started: Instant,
) -> Result<ChannelOutcome, StoreError> {
    let deadline = Duration::from_millis(state.settings.processor.deadline_ms);
    let due = started + deadline;
    let commit_margin = (deadline / 4).min(Duration::from_millis(150));
    let gate = CommitGate::new();
    let call = ChannelCall {
        commit_by: Some(started + deadline.saturating_sub(commit_margin)),
        commit_started: Some(&gate),
        ..call
    };
    let work = state.store.reserve(&call, req, render);
    tokio::pin!(work);
    let r = tokio::select! {
        r = &mut work => r,
        _ = tokio::time::sleep_until(due.into()) => {
            if gate.abandon() {
                // Dropping the transaction rolls it back: nothing is held.
                Err(StoreError::Timeout("reservation deadline reached".into()))
            } else {
                // The commit is under way: only its result tells whether the hold exists.
                work.await
            }
        }
    };
    if let (Ok(ChannelOutcome::Fresh { .. }), Some(delay)) = (&r, answer_delay()) {
        tokio::time::sleep(delay).await;
    }
    r
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

/// RFC 3339 UTC time (seconds) of a unix millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
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
        ChannelAnswer::Declined(d) => declined(*d),
    };
    serde_json::to_vec(&resp).unwrap_or_default()
}

fn declined(d: Decline) -> ChannelResponse {
    ChannelResponse {
        status: "REJECTED",
        status_detail: d.class().as_str(),
        message: d.message().to_owned(),
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
}
