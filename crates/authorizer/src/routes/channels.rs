//! The two-phase channels' routes (PoS wallets): reserve, capture, cancel, refund and read
//! a reservation. Signed exactly as the processor signs, with the channels' own key ring
//! (`[[channels.keys]]`); every POST needs `x-idempotency-key` with the processor's
//! semantics. Signature first (on the raw bytes), then parse, then the in-flight gate, then
//! the channel service or the store, then a signed answer over the exact bytes sent.

use crate::app::AppState;
use crate::channel_service::{self, reservation_json};
use crate::config::EndpointCheck;
use crate::signed::{self, Answer, Incoming, SignedRoute, Verified, header, request_hash};
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use ledger::Currency;
use ledger::holds::HoldError;
use protocol::amount::WireAmount;
use protocol::signature::headers;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use store::{ChannelCall, ChannelOutcome, HoldOp, ReserveRequest, StoreError};
use utoipa::ToSchema;

/// Ids a channel chooses (reservation, refund, idempotency key): at most this many bytes.
const CHANNEL_ID_BYTES_MAX: usize = 64;

/// Which of the five routes a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRoute {
    Reserve,
    Capture,
    Cancel,
    Refund,
    Get,
}

impl ChannelRoute {
    /// Every route with its path template (as routed, and the metrics label).
    pub const ALL: [(&'static str, ChannelRoute); 5] = [
        ("/channels/v1/reservations", ChannelRoute::Reserve),
        (
            "/channels/v1/reservations/{reservation_id}/capture",
            ChannelRoute::Capture,
        ),
        (
            "/channels/v1/reservations/{reservation_id}/cancel",
            ChannelRoute::Cancel,
        ),
        (
            "/channels/v1/reservations/{reservation_id}/refunds",
            ChannelRoute::Refund,
        ),
        (
            "/channels/v1/reservations/{reservation_id}",
            ChannelRoute::Get,
        ),
    ];

    pub fn path(&self) -> &'static str {
        signed::path_in(&ChannelRoute::ALL, self)
    }

    pub fn is_post(&self) -> bool {
        *self != ChannelRoute::Get
    }
}

/// A reservation: hold `amount` on the account (`user_id`, `currency`) until it is
/// captured, cancelled or expires. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReserveBody {
    /// Unique per channel, 1 to 64 visible ASCII characters.
    reservation_id: String,
    /// The cardholder.
    user_id: String,
    /// Card rules (status, owner, blocked MCCs, spending controls) apply when we hold the card.
    card_id: Option<String>,
    /// Greater than zero and representable in the currency.
    amount: WireAmount,
    /// ISO 4217.
    currency: String,
    merchant: Option<Merchant>,
    /// 1 to holds.expiry_secs_max (outside: 400); default holds.expiry_secs.
    expires_in_secs: Option<i64>,
    /// Default true.
    partial_capture_possible: Option<bool>,
    /// e.g. the order id.
    reference: Option<String>,
}

/// The merchant; its `mcc` and `country` feed the blocked-MCC rule and the spending controls.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Merchant {
    id: Option<String>,
    name: Option<String>,
    mcc: Option<String>,
    /// ISO 3166-1 alpha-2 or alpha-3; without it, the channel's configured country.
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
}

/// A capture; without `amount`, the full reserved amount.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    amount: Option<WireAmount>,
}

/// A refund of a captured reservation; the account is credited at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// 1 to 64 visible ASCII characters; the same refund_id and body replays.
    refund_id: String,
    amount: WireAmount,
    /// When given, must be the reservation's currency.
    currency: Option<String>,
}

fn bad(code: &str, message: &str) -> Answer {
    Answer::error(StatusCode::BAD_REQUEST, code, message, "BAD_REQUEST")
}

fn refused(e: HoldError) -> Answer {
    Answer::error(
        StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::CONFLICT),
        e.code(),
        e.message(),
        e.code(),
    )
}

/// The country configured for `channel` (`[[channels.keys]] country`).
fn channel_country<'s>(state: &'s AppState, channel: &str) -> Option<&'s str> {
    let keys = &state.settings.channels.keys;
    keys.iter()
        .find(|k| k.name == channel)
        .and_then(|k| k.country.as_deref())
}

/// A channel-chosen id: 1 to 64 visible ASCII characters (stored and logged as is).
fn channel_id(field: &str, id: &str) -> Result<(), Answer> {
    if id.len() <= CHANNEL_ID_BYTES_MAX && protocol::wire::is_valid_id(id) {
        Ok(())
    } else {
        Err(bad(
            "malformed_request",
            &format!("{field} must be 1 to 64 visible ASCII characters"),
        ))
    }
}

impl SignedRoute for ChannelRoute {
    /// The channel's name.
    type Signer = String;
    const ROUTES: &'static [(&'static str, ChannelRoute)] = &ChannelRoute::ALL;
    const REFUSED: &'static str = "channel signature refused";

    /// Checks the signature with the channels' own key ring; the key names the channel.
    fn verify(self, r: Incoming<'_>) -> Result<(Verified, String), &'static str> {
        let state = r.state;
        let (verified, key) = signed::verify_signature(
            r.req,
            r.body,
            &state.channels.keys,
            state.settings.channels.skew_secs,
            r.req.path(),
            // The path names the reservation and a capture's or cancel's body does not: the
            // signed path is always checked here, even where the processor's is not.
            match state.settings.processor.endpoint_check {
                EndpointCheck::Off => EndpointCheck::Suffix,
                check => check,
            },
        )?;
        match state.channels.names.get(key) {
            Some(name) => Ok((verified, name.clone())),
            None => Err("unknown_api_key"),
        }
    }

    async fn serve(self, r: Incoming<'_>, channel: String) -> Answer {
        serve(r.req, r.body, r.state, self, &channel, r.started).await
    }
}

async fn serve(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    route: ChannelRoute,
    channel: &str,
    started: Instant,
) -> Answer {
    let reservation_id = req.match_info().get("reservation_id").unwrap_or("");
    if route != ChannelRoute::Reserve
        && let Err(a) = channel_id("reservation_id", reservation_id)
    {
        return a;
    }
    if route == ChannelRoute::Get {
        return get(state, channel, reservation_id).await;
    }
    // Before anything reads it: a string no store can hold (U+0000) would fail the
    // transaction it shares with other requests.
    if let Some(why) = protocol::wire::body_refusal(body) {
        return bad("malformed_request", &why);
    }
    let key = match header(req, headers::IDEMPOTENCY_KEY) {
        Some(k) if !k.is_empty() => k,
        _ => {
            return bad(
                "missing_idempotency_key",
                "x-idempotency-key is required (1 to 64 characters)",
            );
        }
    };
    if let Err(a) = channel_id("x-idempotency-key", key) {
        return a;
    }
    let hash = request_hash(body);
    let call = ChannelCall {
        channel,
        idempotency_key: key,
        request_hash: hash,
        endpoint: req.path(),
        now_ms: store::now_ms(),
        commit_by: None,
        commit_started: None,
    };
    // A refund's body, which its operation borrows.
    let b: RefundBody;
    let op = match route {
        ChannelRoute::Reserve => return reserve(state, call, body, route, started).await,
        ChannelRoute::Capture => {
            let amount = if body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                match serde_json::from_slice::<CaptureBody>(body) {
                    Ok(b) => match b.amount {
                        None => None,
                        Some(a) => match a.value() {
                            Some(v) => Some(v),
                            None => return refused(HoldError::InvalidAmount),
                        },
                    },
                    Err(e) => return bad("malformed_request", &super::admin::json_error(&e)),
                }
            };
            HoldOp::Capture {
                call,
                reservation_id,
                amount,
            }
        }
        ChannelRoute::Cancel => {
            if !body.iter().all(u8::is_ascii_whitespace)
                && !matches!(
                    serde_json::from_slice::<serde_json::Value>(body),
                    Ok(serde_json::Value::Object(ref m)) if m.is_empty()
                )
            {
                return bad("malformed_request", "A cancel takes {} or an empty body");
            }
            HoldOp::Cancel {
                call,
                reservation_id,
            }
        }
        ChannelRoute::Refund => {
            b = match serde_json::from_slice::<RefundBody>(body) {
                Ok(b) => b,
                Err(e) => return bad("malformed_request", &super::admin::json_error(&e)),
            };
            if let Err(a) = channel_id("refund_id", &b.refund_id) {
                return a;
            }
            let Some(amount) = b.amount.value() else {
                return refused(HoldError::InvalidAmount);
            };
            HoldOp::Refund {
                call,
                reservation_id,
                refund_id: &b.refund_id,
                amount: Some(amount),
                currency: b.currency.as_deref(),
                window_days: state.settings.holds.refund_window_days,
            }
        }
        ChannelRoute::Get => return get(state, channel, reservation_id).await,
    };
    let claims = or_answer!(claim(state, route, channel, req.path(), key, &hash).await);
    let r = channel_service::hold(state, op, channel, reservation_id, started).await;
    finish(state, route, claims, hash, r).await
}

/// A key in flight, by channel and path: the same key sent to another path (another
/// reservation's capture, a cancel after a capture) is another request, which the store
/// refuses (409) rather than this gate answering it with the first one's replay.
fn in_flight_key(channel: &str, path: &str, key: &str) -> String {
    format!("channel:{channel}:{path}:{key}")
}

/// Claims the key for this request, or the answer for a duplicate (its replay, 409 for
/// another body, or 425 while it is in flight).
async fn claim(
    state: &AppState,
    route: ChannelRoute,
    channel: &str,
    path: &str,
    key: &str,
    hash: &[u8; 32],
) -> Result<signed::Claims, Answer> {
    let full = in_flight_key(channel, path, key);
    match signed::gate(state, route.path(), &full, hash).await {
        signed::Gate::Proceed(c) => Ok(c),
        signed::Gate::Answered(a) => Err(a),
    }
}

fn count_events(state: &AppState, events: &[ledger::holds::HoldEventKind]) {
    for e in events {
        state
            .metrics
            .inc("authorizer_holds_total", &[("event", e.label())]);
    }
}

/// Turns a store outcome of a capture, cancel or refund into an answer. An infrastructure
/// failure is 503 with nothing committed: the channel sends it again.
async fn finish(
    state: &AppState,
    route: ChannelRoute,
    claims: signed::Claims,
    hash: [u8; 32],
    r: Result<ChannelOutcome, StoreError>,
) -> Answer {
    match r {
        Ok(ChannelOutcome::Fresh { response, events }) => {
            count_events(state, &events);
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
            let label = events.last().map(|e| e.as_str()).unwrap_or("APPROVED");
            Answer {
                status,
                body: claims.finish(hash, response).await,
                outcome: label,
            }
        }
        Ok(ChannelOutcome::Replay(response)) => {
            state
                .metrics
                .inc("authorizer_replays_total", &[("route", route.path())]);
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
            Answer {
                status,
                body: claims.finish(hash, response).await,
                outcome: "REPLAY",
            }
        }
        Ok(ChannelOutcome::KeyConflict) => signed::conflict(state),
        Ok(ChannelOutcome::NotFound) => Answer::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "No reservation with this reservation_id for this channel",
            "NOT_FOUND",
        ),
        Ok(ChannelOutcome::Refused {
            error,
            expired,
            recorded,
        }) => {
            if expired {
                count_events(state, &[ledger::holds::HoldEventKind::Expired]);
            }
            match recorded {
                Some(response) => Answer {
                    status: StatusCode::from_u16(response.status).unwrap_or(StatusCode::CONFLICT),
                    body: claims.finish(hash, response).await,
                    outcome: error.code(),
                },
                None => refused(error),
            }
        }
        Err(e) => signed::store_unavailable(state, route.path(), &e, "channel"),
    }
}

async fn reserve(
    state: &AppState,
    call: ChannelCall<'_>,
    body: &[u8],
    route: ChannelRoute,
    started: Instant,
) -> Answer {
    let b = match serde_json::from_slice::<ReserveBody>(body) {
        Ok(b) => b,
        Err(e) => return bad("malformed_request", &super::admin::json_error(&e)),
    };
    // The id stands in the path of every later call: one that a path cannot carry as it is
    // (`/` splits it, `?` and `#` end it, `%` is read as an escape, and clients and proxies
    // resolve the segments `.` and `..`) would hold money that no capture, cancel or refund
    // could reach.
    if b.reservation_id.contains(['/', '?', '#', '%', '\\'])
        || matches!(b.reservation_id.as_str(), "." | "..")
    {
        return bad(
            "malformed_request",
            "reservation_id may not hold / ? # % or \\, nor be . or ..: it stands in the \
             path of the capture, cancel, refund and read",
        );
    }
    for (field, id) in [
        ("reservation_id", Some(&b.reservation_id)),
        ("user_id", Some(&b.user_id)),
        ("card_id", b.card_id.as_ref()),
    ] {
        if let Some(id) = id
            && let Err(a) = channel_id(field, id)
        {
            return a;
        }
    }
    let h = &state.settings.holds;
    let max = i64::try_from(h.expiry_secs_max).unwrap_or(i64::MAX);
    let expires_in = match b.expires_in_secs {
        None => i64::try_from(h.expiry_secs).unwrap_or(max),
        Some(s) if (1..=max).contains(&s) => s,
        Some(_) => {
            return bad(
                "INVALID_EXPIRES_IN_SECS",
                &format!("expires_in_secs must be between 1 and {max}"),
            );
        }
    };
    let merchant = b
        .merchant
        .as_ref()
        .and_then(|m| serde_json::to_string(m).ok());
    let req = ReserveRequest {
        reservation_id: &b.reservation_id,
        user_id: &b.user_id,
        card_id: b.card_id.as_deref(),
        currency: Currency::parse(&b.currency).ok(),
        amount: b.amount.value(),
        mcc: b.merchant.as_ref().and_then(|m| m.mcc.as_deref()),
        country: ledger::controls::ControlRequest::merchant_country(
            b.merchant.as_ref().and_then(|m| m.country.as_deref()),
            channel_country(state, call.channel),
        ),
        merchant: merchant.as_deref(),
        reference: b.reference.as_deref(),
        expires_at_ms: call.now_ms.saturating_add(expires_in.saturating_mul(1000)),
        partial_capture_possible: b.partial_capture_possible.unwrap_or(true),
    };
    let hash = call.request_hash;
    let (channel, path, key) = (call.channel, call.endpoint, call.idempotency_key);
    let claims = or_answer!(claim(state, route, channel, path, key, &hash).await);
    match channel_service::reserve(state, call, &req, started).await {
        Ok(ChannelOutcome::Fresh { response, events }) => {
            count_events(state, &events);
            let label = if events.is_empty() {
                "REJECTED"
            } else {
                "APPROVED"
            };
            tracing::info!(
                route = route.path(),
                reservation_id = %b.reservation_id,
                idempotency_key = call.idempotency_key,
                decision = label,
                "reservation"
            );
            Answer {
                status: StatusCode::OK,
                body: claims.finish(hash, response).await,
                outcome: label,
            }
        }
        Ok(other) => finish(state, route, claims, hash, Ok(other)).await,
        // The commit was sent and its answer lost: the hold may stand. SYSTEM_ERROR would
        // tell the channel that nothing is held (and no advice comes to undo it); a 503
        // makes it send the same key again and hear what was committed.
        Err(e @ StoreError::Uncertain(_)) => finish(state, route, claims, hash, Err(e)).await,
        Err(e) => {
            state.metrics.inc(
                "authorizer_store_failures_total",
                &[
                    ("route", route.path()),
                    ("kind", signed::store_error_kind(&e)),
                ],
            );
            tracing::error!(
                route = route.path(),
                reservation_id = %b.reservation_id,
                idempotency_key = call.idempotency_key,
                error = %e,
                "reservation answered SYSTEM_ERROR, nothing held"
            );
            Answer::new(200, channel_service::render_system_error(), "SYSTEM_ERROR")
        }
    }
}

async fn get(state: &AppState, channel: &str, reservation_id: &str) -> Answer {
    match channel_service::read(state, channel, reservation_id).await {
        Ok(Some((view, expired))) => {
            if expired {
                count_events(state, &[ledger::holds::HoldEventKind::Expired]);
            }
            let body = serde_json::to_vec(&reservation_json(&view, true)).unwrap_or_default();
            Answer::new(200, body, "OK")
        }
        Ok(None) => Answer::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "No reservation with this reservation_id for this channel",
            "NOT_FOUND",
        ),
        Err(e) => {
            tracing::error!(error = %e, "store failed reading a reservation");
            Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Try again later",
                "UNAVAILABLE",
            )
        }
    }
}
