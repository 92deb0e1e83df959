//! The processor's six routes: signature first (on the raw bytes), then parse, then
//! idempotency, then the service (every kind through the one writer), then a signed answer
//! over the exact bytes sent.

use crate::app::AppState;
use crate::service::{self, decision_label};
use crate::signed::{self, Answer, Incoming, SignedRoute, Verified, header, request_hash};
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use ledger::RequestKind;
use protocol::Notification;
use protocol::signature::headers;
use protocol::wire::{Direction, TransactionRequest, TransactionType};
use std::time::Instant;
use store::{
    CardTransaction, NotificationCall, Outcome, ProcessorCall, StoreError, StoredResponse, Verdict,
};

/// Which of the six routes a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Authorization(Option<Direction>),
    Adjustment(Direction),
    Notification,
}

impl Route {
    pub const ALL: [(&'static str, Route); 6] = [
        ("/transactions/authorizations", Route::Authorization(None)),
        (
            "/transactions/authorizations/debit",
            Route::Authorization(Some(Direction::Debit)),
        ),
        (
            "/transactions/authorizations/credit",
            Route::Authorization(Some(Direction::Credit)),
        ),
        (
            "/transactions/adjustments/debit",
            Route::Adjustment(Direction::Debit),
        ),
        (
            "/transactions/adjustments/credit",
            Route::Adjustment(Direction::Credit),
        ),
        ("/transactions/v1/notifications", Route::Notification),
    ];

    /// The path served, also the metrics label.
    pub fn path(&self) -> &'static str {
        signed::path_in(&Route::ALL, self)
    }

    fn in_flight_prefix(&self) -> &'static str {
        match self {
            Route::Authorization(_) => "authorization:",
            Route::Adjustment(_) => "adjustment:",
            Route::Notification => "notification:",
        }
    }
}

impl SignedRoute for Route {
    type Signer = ();
    const ROUTES: &'static [(&'static str, Route)] = &Route::ALL;
    const REFUSED: &'static str = "signature refused";

    /// Checks the signature on the raw bytes with the processor's key ring.
    fn verify(self, r: Incoming<'_>) -> Result<(Verified, ()), &'static str> {
        let p = &r.state.settings.processor;
        let skew = match self {
            Route::Authorization(_) => p.authorization_skew_secs,
            Route::Adjustment(_) | Route::Notification => p.adjustment_skew_secs,
        };
        let keys = &r.state.keys;
        signed::verify_signature(r.req, r.body, keys, skew, self.path(), p.endpoint_check)
            .map(|(v, _)| (v, ()))
    }

    async fn serve(self, r: Incoming<'_>, _: ()) -> Answer {
        let Incoming {
            req, body, state, ..
        } = r;
        match self {
            Route::Authorization(dir) => {
                authorization(req, body, state, self, dir, r.started).await
            }
            Route::Adjustment(dir) => adjustment(req, body, state, self, dir).await,
            Route::Notification => notification(req, body, state).await,
        }
    }
}

fn idempotency_key<'a>(
    req: &'a HttpRequest,
    state: &AppState,
    route: Route,
) -> Result<&'a str, Answer> {
    match header(req, headers::IDEMPOTENCY_KEY) {
        Some(k) if !k.is_empty() => {
            valid_id(state, route, "x-idempotency-key", k)?;
            Ok(k)
        }
        _ => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "x-idempotency-key is required (1 to 255 characters)",
            "BAD_REQUEST",
        )),
    }
}

/// Counts an id that breaks the rule of `protocol::wire::check_id`; the value itself is
/// neither logged nor echoed.
fn count_invalid_id(state: &AppState, route: Route, field: &'static str) {
    state.metrics.inc(
        "authorizer_invalid_ids_total",
        &[("route", route.path()), ("field", field)],
    );
    tracing::warn!(
        route = route.path(),
        field,
        "processor id breaks the id rule"
    );
}

/// A key that is stored and logged: 400 `malformed_request` naming the field unless it
/// follows the id rule.
fn valid_id(state: &AppState, route: Route, field: &'static str, id: &str) -> Result<(), Answer> {
    protocol::wire::check_id(field, id).map_err(|e| {
        count_invalid_id(state, route, field);
        state
            .metrics
            .inc("authorizer_bad_requests_total", &[("reason", "invalid_id")]);
        Answer::error(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            e.message(),
            "BAD_REQUEST",
        )
    })
}

fn parse_request(
    body: &[u8],
    state: &AppState,
    route: Route,
) -> Result<TransactionRequest, Answer> {
    // Ids are checked by the parser: stored and logged unquoted only once they are known to
    // be visible ASCII of bounded length.
    TransactionRequest::from_slice(body).map_err(|e| refused(&e, state, route))
}

/// The 400 for a body that does not parse, counted.
fn refused(e: &protocol::wire::WireError, state: &AppState, route: Route) -> Answer {
    let reason = match e.id_field() {
        Some(field) => {
            count_invalid_id(state, route, field);
            "invalid_id"
        }
        None => "malformed_request",
    };
    state
        .metrics
        .inc("authorizer_bad_requests_total", &[("reason", reason)]);
    Answer::error(
        StatusCode::BAD_REQUEST,
        "malformed_request",
        e.message(),
        "BAD_REQUEST",
    )
}

/// An adjustment's body: read strictly, or without the optional fields that are malformed
/// (`protocol::lenient`), named. An adjustment cannot be refused: a 400 is resent forever
/// and its money never booked. The stored raw request keeps what is left out.
fn parse_adjustment(
    body: &[u8],
    state: &AppState,
    route: Route,
) -> Result<(TransactionRequest, Vec<String>), Answer> {
    TransactionRequest::from_slice_lenient(body).map_err(|e| refused(&e, state, route))
}

/// The idempotency key and the parsed body of a processor request, or the refusal.
fn keyed_request<'a>(
    req: &'a HttpRequest,
    body: &[u8],
    state: &AppState,
    route: Route,
) -> Result<(&'a str, TransactionRequest), Answer> {
    let key = idempotency_key(req, state, route)?;
    Ok((key, parse_request(body, state, route)?))
}

fn request_kind(d: Direction) -> RequestKind {
    match d {
        Direction::Debit => RequestKind::Debit,
        Direction::Credit => RequestKind::Credit,
    }
}

/// A resend of a processed transaction id under a new key that asks for other money:
/// answering the first answer would tell the processor that this money moved.
fn transaction_conflict(state: &AppState, route: Route) -> Answer {
    state.metrics.inc(
        "authorizer_transaction_conflicts_total",
        &[("route", route.path())],
    );
    Answer::error(
        StatusCode::CONFLICT,
        "transaction_id_reused",
        "This transaction.id was processed with another amount, currency, direction, route, type, user or card",
        "TRANSACTION_CONFLICT",
    )
}

/// Turns a store outcome into an answer, sharing it with waiting duplicates here and,
/// through Redis, with the fleet. Only answers committed in the database get here.
async fn settle<T>(
    state: &AppState,
    route: Route,
    claims: signed::Claims,
    hash: [u8; 32],
    outcome: Outcome<T>,
    label: impl FnOnce(&T) -> &'static str,
) -> Answer {
    let (response, outcome_label): (StoredResponse, &'static str) = match outcome {
        Outcome::Fresh { response, result } => (response, label(&result)),
        Outcome::Replay(r) => {
            state
                .metrics
                .inc("authorizer_replays_total", &[("route", route.path())]);
            (r, "REPLAY")
        }
        Outcome::KeyConflict => return signed::conflict(state),
        Outcome::TransactionConflict => {
            tracing::warn!(
                route = route.path(),
                "transaction id resent under a new key asking for other money: refused with 409"
            );
            return transaction_conflict(state, route);
        }
    };
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let body = claims.finish(hash, response).await;
    Answer {
        status,
        body,
        outcome: outcome_label,
    }
}

/// The body's hash and the claims on `key` for `route`, or the answer a duplicate gets
/// instead.
async fn claim(
    state: &AppState,
    route: Route,
    key: &str,
    body: &[u8],
) -> Result<([u8; 32], signed::Claims), Answer> {
    let hash = request_hash(body);
    // By route: the same key sent to another route is another request, which the store
    // refuses (409), not a duplicate this gate would answer with the first one's replay.
    let full = format!("{}{}:{key}", route.in_flight_prefix(), route.path());
    match signed::gate(state, route.path(), &full, &hash).await {
        signed::Gate::Proceed(c) => Ok((hash, c)),
        signed::Gate::Answered(a) => Err(a),
    }
}

fn system_error() -> Answer {
    Answer::new(200, service::render_system_error(), "SYSTEM_ERROR")
}

async fn authorization(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    route: Route,
    route_direction: Option<Direction>,
    started: Instant,
) -> Answer {
    let (key, parsed) = or_answer!(keyed_request(req, body, state, route));
    let kind = if parsed.transaction.kind == TransactionType::BalanceInquiry {
        Some(RequestKind::BalanceInquiry)
    } else {
        route_direction
            .or_else(|| parsed.transaction.kind.direction())
            .map(request_kind)
    };
    let (hash, claims) = or_answer!(claim(state, route, key, body).await);
    // The request itself moves into the batch; the id stays here for the log line.
    let transaction_id = parsed.transaction.id.clone();
    let result = service::authorize(
        state,
        service::Authorization {
            body,
            parsed,
            idempotency_key: key,
            request_hash: hash,
            endpoint: route.path(),
            kind,
            started,
        },
    )
    .await;
    match result {
        Ok(outcome) => {
            let answer = settle(state, route, claims, hash, outcome, decision_label).await;
            tracing::info!(
                route = route.path(),
                transaction_id = %transaction_id,
                idempotency_key = key,
                decision = answer.outcome,
                elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "authorization"
            );
            answer
        }
        Err(e) => {
            state.metrics.inc(
                "authorizer_store_failures_total",
                &[
                    ("route", route.path()),
                    ("kind", signed::store_error_kind(&e)),
                ],
            );
            let outcome = if matches!(e, StoreError::Uncertain(_)) {
                // The approval may be booked: the processor's advice for this declined
                // authorization reverses it (and reconciliation reports it if none comes).
                "commit outcome unknown: it may be booked until the processor's advice reverses it"
            } else {
                "nothing booked"
            };
            tracing::error!(
                route = route.path(),
                transaction_id = %transaction_id,
                idempotency_key = key,
                error = %e,
                "authorization answered SYSTEM_ERROR, {outcome}"
            );
            system_error()
        }
    }
}

/// Counts and logs the fields an adjustment or notification was stored without: once per
/// stored request, as its flags are, by field name, never its value (the raw request keeps
/// it).
fn count_unread(state: &AppState, route: Route, unread: &[String], transaction_id: &str) {
    for field in unread {
        state.metrics.inc(
            "authorizer_unread_fields_total",
            &[("route", route.path()), ("field", field.as_str())],
        );
    }
    if !unread.is_empty() {
        tracing::warn!(
            route = route.path(),
            transaction_id,
            fields = ?unread,
            "stored without the fields that could not be read (the raw request keeps them)"
        );
    }
}

fn unavailable(state: &AppState, route: Route, e: &StoreError) -> Answer {
    // Not answered in time: it may still be stored, and the resend replays it if so.
    signed::store_unavailable(state, route.path(), e, "processor")
}

async fn adjustment(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    route: Route,
    direction: Direction,
) -> Answer {
    let key = or_answer!(idempotency_key(req, state, route));
    let (parsed, unread) = or_answer!(parse_adjustment(body, state, route));
    let (hash, claims) = or_answer!(claim(state, route, key, body).await);
    let call = ProcessorCall {
        idempotency_key: key,
        request_hash: hash,
        endpoint: route.path(),
        raw_body: body,
        now_ms: store::now_ms(),
        commit_by: None,
        commit_started: None,
    };
    match service::adjust(
        state,
        &call,
        &parsed,
        !unread.is_empty(),
        request_kind(direction),
        claims,
    )
    .await
    {
        Ok((outcome, claims)) => {
            if let Outcome::Fresh { result, .. } = &outcome {
                count_unread(state, route, &unread, &parsed.transaction.id);
                for flag in result.flags.as_slice() {
                    state
                        .metrics
                        .inc("authorizer_flagged_bookings_total", &[("flag", flag)]);
                }
                if result.flags.has(store::Flags::NEGATIVE_BALANCE) {
                    state.metrics.inc("authorizer_negative_balances_total", &[]);
                    tracing::warn!(
                        transaction_id = %parsed.transaction.id,
                        balance_after = ?result.balance_after,
                        "adjustment left a negative balance"
                    );
                }
                tracing::info!(
                    route = route.path(),
                    transaction_id = %parsed.transaction.id,
                    idempotency_key = key,
                    flags = %result.flags.stored(),
                    status_detail = result.status_detail,
                    "{}",
                    if result.movement_id.is_some() {
                        "adjustment booked"
                    } else {
                        "adjustment recorded, no movement"
                    }
                );
            }
            settle(state, route, claims, hash, outcome, |_| "APPROVED").await
        }
        Err(e) => unavailable(state, route, &e),
    }
}

async fn notification(req: &HttpRequest, body: &[u8], state: &AppState) -> Answer {
    let route = Route::Notification;
    // A notification must never be lost: when its detail does not parse, keep what we can
    // read (event id and key) and store it for review rather than refuse it forever.
    // An optional field of `event_detail` that does not read is left out, as for an
    // adjustment: the verdict stands without it, flagged UNREAD_FIELDS.
    let (parsed, unread) = match Notification::from_slice_lenient(body) {
        Ok((n, unread)) => (Ok(n), unread),
        Err(e) => (Err(e), Vec::new()),
    };
    // An id that breaks the rule is kept for review like any unreadable detail: a 400 would
    // be resent forever, and the verdict lost with it. Its ids stay in the raw body only.
    // (A bad key itself is counted where it is refused, below.)
    if let Some(field) = parsed
        .as_ref()
        .err()
        .and_then(|e| e.id_field())
        .filter(|f| *f != "idempotency_key")
    {
        count_invalid_id(state, route, field);
    }
    // Not for a body refused before parsing (not UTF-8, too deep, or a U+0000 no store can
    // hold).
    let loose: Option<serde_json::Value> = match &parsed {
        Ok(_) => None,
        Err(_) if protocol::wire::refused_before_parsing(body) => None,
        Err(_) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .filter(|v| v.is_object()),
    };
    // Kept for review only when it is a notification at all. Our own signed answer
    // (`{"message","effect"}`) sent back here verifies, and would otherwise be stored for a
    // person under any key its sender picks.
    let not_a_notification = loose
        .as_ref()
        .is_some_and(|v| v.get("event_id").is_none() && v.get("event_detail").is_none());
    if parsed.is_err() && (loose.is_none() || not_a_notification) {
        state.metrics.inc(
            "authorizer_bad_requests_total",
            &[("reason", "malformed_request")],
        );
        let msg = if not_a_notification {
            "not a notification: neither event_id nor event_detail".to_owned()
        } else {
            parsed
                .as_ref()
                .err()
                .map(|e| e.message().to_owned())
                .unwrap_or_default()
        };
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            &msg,
            "BAD_REQUEST",
        );
    }
    let loose_str = |field: &str| {
        loose
            .as_ref()
            .and_then(|v| v.get(field))
            .and_then(|v| v.as_str())
    };
    let body_key = match &parsed {
        Ok(n) => n.idempotency_key.as_deref(),
        Err(_) => loose_str("idempotency_key"),
    };
    let body_key = body_key.filter(|k| !k.is_empty());
    let key = match body_key.or(header(req, headers::IDEMPOTENCY_KEY).filter(|k| !k.is_empty())) {
        Some(k) => k,
        None => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "idempotency_key (body) or x-idempotency-key (header) is required",
                "BAD_REQUEST",
            );
        }
    };
    // The key is what dedupes: one that cannot be stored as such is refused, not reviewed.
    let key_field = if body_key.is_some() {
        "idempotency_key"
    } else {
        "x-idempotency-key"
    };
    if let Err(a) = valid_id(state, route, key_field, key) {
        return a;
    }
    let (hash, claims) = or_answer!(claim(state, route, key, body).await);
    let (event_id, verdict, status_detail, transaction, direction) = match &parsed {
        Ok(n) => {
            let d = &n.event_detail;
            // An advice without amounts still names the transaction: keep it, book nothing.
            let local = d.amount.as_ref().map(|a| &a.local);
            let t = d.transaction.as_ref().map(|tx| CardTransaction {
                transaction_id: &tx.id,
                tx_type: tx.kind.as_str(),
                user_id: d.user.as_ref().map(|u| u.id.as_str()),
                card_id: d.card.as_ref().map(|c| c.id.as_str()),
                currency: local.map(|l| l.currency.as_str()).unwrap_or(""),
                amount_text: local.map(|l| l.total.text()).unwrap_or(""),
                amount: local.and_then(|l| l.total.value()),
                mcc: d.merchant.as_ref().and_then(|m| m.mcc.as_deref()),
                original_transaction_id: tx.original_transaction_id.as_deref(),
                unread_fields: !unread.is_empty(),
                ..CardTransaction::default()
            });
            let direction = d
                .transaction
                .as_ref()
                .and_then(|tx| tx.kind.direction())
                .map(request_kind);
            let verdict = n.verdict().map(|v| match v {
                protocol::Verdict::Approved => Verdict::Approved,
                protocol::Verdict::Rejected => Verdict::Rejected,
            });
            (
                n.event_id.as_str(),
                verdict,
                d.status_detail.as_deref(),
                t,
                direction,
            )
        }
        Err(_) => (
            loose_str("event_id")
                .filter(|e| protocol::wire::is_valid_id(e))
                .unwrap_or("unparsed"),
            None,
            None,
            None,
            None,
        ),
    };
    let call = NotificationCall {
        key,
        request_hash: hash,
        raw_body: body,
        now_ms: store::now_ms(),
        event_id,
        verdict,
        status_detail,
        transaction,
        direction,
        unparsed: parsed.is_err(),
    };
    match service::notify(state, &call, claims).await {
        Ok((outcome, claims)) => {
            if let Outcome::Fresh { result, .. } = &outcome {
                let transaction_id = transaction.map(|t| t.transaction_id).unwrap_or("");
                tracing::info!(
                    event_id,
                    idempotency_key = key,
                    transaction_id,
                    effect = result.effect.as_str(),
                    flags = %result.flags.stored(),
                    "notification stored"
                );
                count_unread(state, route, &unread, transaction_id);
                if result.flags.has(store::Flags::NEGATIVE_BALANCE) {
                    state.metrics.inc("authorizer_negative_balances_total", &[]);
                }
                for flag in result.flags.as_slice() {
                    state
                        .metrics
                        .inc("authorizer_flagged_bookings_total", &[("flag", flag)]);
                }
            }
            settle(state, route, claims, hash, outcome, |r| r.effect.as_str()).await
        }
        Err(e) => unavailable(state, route, &e),
    }
}
