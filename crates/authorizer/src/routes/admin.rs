//! The issuer's admin API: accounts, funding, cards, history, health and metrics.
//! Amounts are decimal strings; every error uses the one JSON envelope.

use crate::app::AppState;
use crate::routes::{error_body, read_body};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ledger::{CardStatus, Currency, MccSet, format_minor, to_minor};
use protocol::WireAmount;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::{AccountSettings, AccountView, FundingCall, FundingOutcome, StoredResponse};
use subtle::ConstantTimeEq;

/// An admin API failure, rendered in the JSON envelope.
pub struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AdminError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl From<store::StoreError> for AdminError {
    fn from(e: store::StoreError) -> Self {
        // The cause is logged once here; the body stays opaque.
        tracing::error!(error = %e, "admin request failed in the store");
        AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Storage unavailable, try again",
        )
    }
}

type Result<T> = std::result::Result<T, AdminError>;

fn respond(state: &AppState, r: Result<HttpResponse>) -> HttpResponse {
    let resp = r.unwrap_or_else(|e| {
        HttpResponse::build(e.status)
            .content_type("application/json")
            .body(error_body(e.code, &e.message))
    });
    let class = match resp.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state
        .metrics
        .inc("authorizer_admin_requests_total", &[("class", class)]);
    resp
}

fn json_response(status: StatusCode, v: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(v.to_string())
}

/// Whether the request carries the admin bearer token; constant-time over fixed-length
/// digests.
pub(crate) fn token_matches(req: &HttpRequest, state: &AppState) -> bool {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = Sha256::digest(state.admin_token.expose().as_bytes());
    let got = Sha256::digest(presented.as_bytes());
    !presented.is_empty() && bool::from(want.ct_eq(&got))
}

/// Bearer token check.
fn check_token(req: &HttpRequest, state: &AppState) -> Result<()> {
    if !token_matches(req, state) {
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid bearer token",
        ));
    }
    Ok(())
}

fn currency(code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(|e| AdminError::bad("unknown_currency", e.to_string()))
}

fn user_id(id: &str) -> Result<&str> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(AdminError::bad(
            "invalid_user_id",
            "user id must be 1 to 255 printable characters",
        ));
    }
    Ok(id)
}

/// An exact decimal string in the currency's minor units; never rounded.
fn amount(text: &str, c: Currency, field: &str) -> Result<i64> {
    let invalid = || {
        AdminError::bad(
            "invalid_amount",
            format!(
                "{field} must be a decimal string with at most {} decimals",
                c.exponent()
            ),
        )
    };
    let w = WireAmount::parse(text).map_err(|_| invalid())?;
    to_minor(w.value().ok_or_else(invalid)?, c).map_err(|_| invalid())
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| AdminError::bad("malformed_request", e.to_string()))
}

async fn body(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<Vec<u8>> {
    read_body(req, payload, state.settings.server.body_bytes_max)
        .await
        .map_err(|(status, code)| AdminError::new(status, code, "Request body refused"))
}

fn account_json(a: &AccountView) -> Value {
    let e = a.currency.exponent();
    let s = &a.settings;
    json!({
        "user_id": a.user_id,
        "currency": a.currency.code(),
        "available": format_minor(a.balance, e),
        "balance_minor": a.balance,
        "version": a.version,
        "overdraft_limit": format_minor(s.overdraft_limit, e),
        "per_transaction_limit": s.per_transaction_limit.map(|v| format_minor(v, e)),
        "daily_limit": s.daily_limit.map(|v| format_minor(v, e)),
        "blocked_mccs": s.blocked_mccs.to_list(),
        "created_at_ms": a.created_at_ms,
        "updated_at_ms": a.updated_at_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    #[serde(default)]
    overdraft_limit: Option<String>,
    #[serde(default)]
    per_transaction_limit: Option<String>,
    #[serde(default)]
    daily_limit: Option<String>,
    #[serde(default)]
    blocked_mccs: Option<Vec<String>>,
}

fn mccs(list: &[String]) -> Result<MccSet> {
    MccSet::from_list(list)
        .map_err(|_| AdminError::bad("invalid_mcc", "blocked_mccs must be four-digit codes"))
}

pub async fn put_account(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let (uid, code) = path.into_inner();
        let c = currency(&code)?;
        let raw = body(&req, payload, &state).await?;
        let settings = if raw.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let b: AccountBody = parse_json(&raw)?;
            let limit =
                |v: &Option<String>, f: &str| v.as_deref().map(|t| amount(t, c, f)).transpose();
            let s = AccountSettings {
                overdraft_limit: limit(&b.overdraft_limit, "overdraft_limit")?.unwrap_or(0),
                per_transaction_limit: limit(&b.per_transaction_limit, "per_transaction_limit")?,
                daily_limit: limit(&b.daily_limit, "daily_limit")?,
                blocked_mccs: mccs(b.blocked_mccs.as_deref().unwrap_or_default())?,
            };
            if s.overdraft_limit < 0
                || s.per_transaction_limit.is_some_and(|v| v < 0)
                || s.daily_limit.is_some_and(|v| v < 0)
            {
                return Err(AdminError::bad(
                    "invalid_amount",
                    "limits cannot be negative",
                ));
            }
            Some(s)
        };
        let (view, created) = state
            .store
            .open_account(user_id(&uid)?, c, settings.as_ref(), store::now_ms())
            .await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(status, &account_json(&view)))
    }
    .await;
    respond(&state, r)
}

pub async fn get_account(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let (uid, code) = path.into_inner();
        let view = state
            .store
            .account(user_id(&uid)?, currency(&code)?)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        Ok(json_response(StatusCode::OK, &account_json(&view)))
    }
    .await;
    respond(&state, r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FundingBody {
    amount: String,
    #[serde(default)]
    reference: Option<String>,
}

pub async fn deposit(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    fund(req, path, payload, state, false).await
}

pub async fn withdraw(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    fund(req, path, payload, state, true).await
}

async fn fund(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
    withdrawal: bool,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let (uid, code) = path.into_inner();
        let c = currency(&code)?;
        let uid = user_id(&uid)?;
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                AdminError::bad(
                    "missing_idempotency_key",
                    "Idempotency-Key header is required",
                )
            })?;
        let raw = body(&req, payload, &state).await?;
        let b: FundingBody = parse_json(&raw)?;
        let minor = amount(&b.amount, c, "amount")?;
        if minor <= 0 {
            return Err(AdminError::bad("invalid_amount", "amount must be positive"));
        }
        let mut h = Sha256::new();
        h.update(req.path().as_bytes());
        h.update([0]);
        h.update(&raw);
        let call = FundingCall {
            user_id: uid,
            currency: c,
            amount: minor,
            withdrawal,
            reference: b.reference.as_deref(),
            idempotency_key: key,
            request_hash: h.finalize().into(),
            endpoint: req.path(),
            now_ms: store::now_ms(),
        };
        let render = |movement_id: i64, balance: i64| StoredResponse {
            status: 201,
            body: json!({
                "movement_id": movement_id,
                "kind": if withdrawal { "WITHDRAWAL" } else { "DEPOSIT" },
                "user_id": uid,
                "currency": c.code(),
                "amount": format_minor(minor, c.exponent()),
                "available": format_minor(balance, c.exponent()),
                "reference": b.reference,
            })
            .to_string()
            .into_bytes(),
        };
        let stored = match state.store.fund(&call, render).await? {
            FundingOutcome::Done { response } | FundingOutcome::Replay(response) => response,
            FundingOutcome::KeyConflict => {
                return Err(AdminError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    "Idempotency-Key was used with a different request",
                ));
            }
            FundingOutcome::AccountNotFound => return Err(AdminError::not_found("account")),
            FundingOutcome::InsufficientFunds => {
                return Err(AdminError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "insufficient_funds",
                    "A withdrawal cannot overdraw the account",
                ));
            }
        };
        Ok(
            HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK))
                .content_type("application/json")
                .body(stored.body),
        )
    }
    .await;
    respond(&state, r)
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn postings(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let (uid, code) = path.into_inner();
        let c = currency(&code)?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(AdminError::bad(
                "invalid_limit",
                "limit must be between 1 and 500",
            ));
        }
        let before =
            match query.cursor.as_deref() {
                None | Some("") => None,
                Some(s) => Some(s.parse::<i64>().map_err(|_| {
                    AdminError::bad("invalid_cursor", "cursor is not one we issued")
                })?),
            };
        let rows = state
            .store
            .postings(user_id(&uid)?, c, limit + 1, before)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        let more = rows.len() as i64 > limit;
        let page: Vec<_> = rows.iter().take(limit as usize).collect();
        let e = c.exponent();
        let items: Vec<Value> = page
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "movement_id": p.movement_id,
                    "kind": p.movement_kind,
                    "transaction_id": p.transaction_id,
                    "reference": p.reference,
                    "amount": format_minor(p.amount, e),
                    "balance_after": p.balance_after.map(|b| format_minor(b, e)),
                    "version": p.account_version,
                    "created_at_ms": p.created_at_ms,
                })
            })
            .collect();
        let next = if more {
            page.last().map(|p| p.id.to_string())
        } else {
            None
        };
        Ok(json_response(
            StatusCode::OK,
            &json!({ "postings": items, "next_cursor": next }),
        ))
    }
    .await;
    respond(&state, r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardBody {
    user_id: String,
    status: String,
    #[serde(default)]
    blocked_mccs: Vec<String>,
}

pub async fn put_card(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let card_id = path.into_inner();
        if card_id.is_empty() || card_id.len() > 255 {
            return Err(AdminError::bad(
                "invalid_card_id",
                "card id must be 1 to 255 characters",
            ));
        }
        let raw = body(&req, payload, &state).await?;
        let b: CardBody = parse_json(&raw)?;
        let status = CardStatus::parse(&b.status).ok_or_else(|| {
            AdminError::bad(
                "invalid_status",
                "status must be ACTIVE, BLOCKED, LOST, STOLEN or CLOSED",
            )
        })?;
        let blocked = mccs(&b.blocked_mccs)?;
        let (card, created) = state
            .store
            .put_card(
                &card_id,
                user_id(&b.user_id)?,
                status,
                &blocked,
                store::now_ms(),
            )
            .await?;
        // In force here for the next authorization, and on every instance of the fleet
        // once the message arrives (each cached entry also expires on its own).
        state.rules.invalidate(&card_id, "local");
        state.fleet.publish_card_change(&card_id).await;
        let v = json!({
            "card_id": card.card_id,
            "user_id": card.user_id,
            "status": card.status.as_str(),
            "blocked_mccs": card.blocked_mccs.to_list(),
            "updated_at_ms": card.updated_at_ms,
        });
        Ok(json_response(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &v,
        ))
    }
    .await;
    respond(&state, r)
}

/// A stored body as JSON when it is JSON, else as text.
fn stored_body(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    }
}

fn record_json(r: &store::TransactionRecordView) -> Value {
    json!({
        "kind": r.kind,
        "transaction_id": r.transaction_id,
        "endpoint": r.endpoint,
        "direction": r.direction,
        "type": r.tx_type,
        "user_id": r.user_id,
        "card_id": r.card_id,
        "currency": r.currency,
        "amount": r.amount_text,
        "amount_minor": r.amount_minor,
        "status": r.status,
        "status_detail": r.status_detail,
        "flags": r.flags.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
        "original_transaction_id": r.original_transaction_id,
        "movement_id": r.movement_id,
        "verdict": r.verdict,
        "verdict_detail": r.verdict_detail,
        "verdict_movement_id": r.verdict_movement_id,
        "request": stored_body(&r.request_body),
        "response": stored_body(&r.response_body),
        "created_at_ms": r.created_at_ms,
        "updated_at_ms": r.updated_at_ms,
    })
}

pub async fn get_transaction(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let id = path.into_inner();
        let h = state
            .store
            .transaction_history(&id)
            .await?
            .ok_or_else(|| AdminError::not_found("transaction"))?;
        let movements: Vec<Value> = h
            .movements
            .iter()
            .map(|m| {
                let exp = Currency::parse_any(&m.currency)
                    .map(|c| c.exponent())
                    .unwrap_or(2);
                json!({
                    "id": m.id,
                    "kind": m.kind,
                    "currency": m.currency,
                    "transaction_id": m.transaction_id,
                    "created_at_ms": m.created_at_ms,
                    "postings": m.postings.iter().map(|(kind, user, amt)| json!({
                        "account": kind, "user_id": user, "amount": format_minor(*amt, exp),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let v = json!({
            "transaction_id": id,
            "records": h.records.iter().map(record_json).collect::<Vec<_>>(),
            "adjustments": h.linked_adjustments.iter().map(record_json).collect::<Vec<_>>(),
            "notifications": h.notifications.iter().map(|n| json!({
                "idempotency_key": n.idempotency_key,
                "event_id": n.event_id,
                "verdict": n.verdict,
                "status_detail": n.status_detail,
                "effect": n.effect,
                "flags": n.flags.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
                "movement_id": n.movement_id,
                "received_at_ms": n.received_at_ms,
            })).collect::<Vec<_>>(),
            "movements": movements,
        });
        Ok(json_response(StatusCode::OK, &v))
    }
    .await;
    respond(&state, r)
}

pub async fn healthz() -> HttpResponse {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "draining" }),
        );
    }
    match state.store.ping().await {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({
                "status": "ready",
                "store": state.store.describe(),
                // Redis down is degraded, not unready: Postgres serves every request.
                "redis": match (state.fleet.is_configured(), state.fleet.healthy()) {
                    (false, _) => "not configured",
                    (true, true) => "ok",
                    (true, false) => "degraded",
                },
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "database unreachable" }),
            )
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

fn run_json(r: &store::RunRecord) -> Value {
    json!({
        "business_date": r.business_date,
        "status": r.status,
        "started_at_ms": r.started_at_ms,
        "finished_at_ms": r.finished_at_ms,
        "matched": r.matched,
        "pending": r.pending,
        "presentments_matched": r.presentments_matched,
        "breaks": r.break_count,
        "malformed_rows": r.malformed_rows,
        "summary": serde_json::from_str::<Value>(&r.summary).unwrap_or(Value::Null),
    })
}

#[derive(Deserialize)]
pub struct RunsQuery {
    limit: Option<i64>,
}

pub async fn reconciliation_runs(
    req: HttpRequest,
    query: web::Query<RunsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let limit = query.limit.unwrap_or(30);
        if !(1..=366).contains(&limit) {
            return Err(AdminError::bad(
                "invalid_limit",
                "limit must be between 1 and 366",
            ));
        }
        let runs = state.store.runs(limit).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "runs": runs.iter().map(run_json).collect::<Vec<_>>() }),
        ))
    }
    .await;
    respond(&state, r)
}

#[derive(Deserialize)]
pub struct BreaksQuery {
    class: Option<String>,
    limit: Option<i64>,
    cursor: Option<i64>,
}

pub async fn reconciliation_breaks(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<BreaksQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let r = async {
        check_token(&req, &state)?;
        let date = path.into_inner();
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(AdminError::bad(
                "invalid_limit",
                "limit must be between 1 and 1000",
            ));
        }
        if let Some(c) = query.class.as_deref()
            && ledger::reconcile::BreakClass::parse(c).is_none()
        {
            return Err(AdminError::bad(
                "invalid_class",
                format!("no break class '{c}'"),
            ));
        }
        let run = state
            .store
            .run(&date)
            .await?
            .ok_or_else(|| AdminError::not_found("reconciliation run"))?;
        let rows = state
            .store
            .run_breaks(
                &date,
                query.class.as_deref(),
                limit + 1,
                query.cursor.unwrap_or(0),
            )
            .await?;
        let more = rows.len() as i64 > limit;
        let page = &rows[..rows.len().min(limit as usize)];
        let items: Vec<Value> = page
            .iter()
            .map(|b| {
                let exp = b
                    .currency
                    .as_deref()
                    .and_then(|c| Currency::parse_any(c).ok())
                    .map(|c| c.exponent())
                    .unwrap_or(2);
                let amt = |v: Option<i64>| v.map(|m| format_minor(m, exp));
                json!({
                    "seq": b.seq,
                    "class": b.class,
                    "transaction_id": b.transaction_id,
                    "kind": b.kind,
                    "currency": b.currency,
                    "ledger_amount": amt(b.ledger_amount_minor),
                    "file_amount": amt(b.file_amount_minor),
                    "difference": amt(b.difference_minor),
                    "file": b.file,
                    "line": b.line,
                    "detail": b.detail,
                })
            })
            .collect();
        let next = if more {
            page.last().map(|b| b.seq)
        } else {
            None
        };
        Ok(json_response(
            StatusCode::OK,
            &json!({ "run": run_json(&run), "breaks": items, "next_cursor": next }),
        ))
    }
    .await;
    respond(&state, r)
}
