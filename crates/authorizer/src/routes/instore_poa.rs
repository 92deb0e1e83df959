//! The pay-on-account routes (instore-extensions.md section 3): `payonaccount/process` and
//! `payonaccountlog` (bare or enveloped), `payonaccountlog/` (GET, both path forms), and
//! the issuer's admin routes of section 6.3 (credit limit, block, reversal of one charge).
//! Every write is a job of the one writer (`crate::instore_poa`).

use super::{Reply, header, read_verified, verified_get};
use crate::app::AppState;
use crate::instore_poa::{AdminResult, PoaAdmin, PoaPlanner, PoaRequest};
use crate::openapi::errors;
use crate::routes::admin::{AdminError, Result, amount, json_body, json_response};
use crate::routes::webhooks::admin_call;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use instore::payload::{self, CardNumber, PoaAction, PoaLogRecord, PoaProcess};
use instore::{ErrorCode, InstoreError, Route};
use ledger::format_minor;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use store::{InstoreOutcome, PoaView};
use utoipa::{IntoParams, ToSchema};

/// The idempotency key of a bare `Credit` is its `x-correlation-id`, scoped to the tenant
/// and the action; this prefix keeps it apart from the envelopes' `requestId`s.
pub const BARE_CREDIT_KEY_PREFIX: &str = "bare:Credit:";

/// Most records a log answer lists.
const LOG_RECORDS_MAX: i64 = 500;

/// `POST payonaccount/process` and `POST payonaccountlog`.
pub(super) async fn post(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    route: &Route,
) -> Reply {
    let verified = or_answer!(read_verified(req, payload, state, route).await);
    let tenant = verified.tenant;
    let envelope = verified.envelope.as_ref();
    let request_id = envelope.map(|e| e.request_id.as_str());
    let correlation_id = header(req, "x-correlation-id");
    let fail = |e: InstoreError| Reply::error(&e.with_request_id(request_id), Some(tenant));
    let value = &verified.payload.value;
    let request = match route {
        Route::PoaProcess => PoaProcess::read(value).map(PoaRequest::Process),
        _ => PoaLogRecord::read(value).map(PoaRequest::Log),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let key = match (&request, envelope) {
        (_, Some(e)) => Some(e.request_id.clone()),
        (PoaRequest::Process(p), None) if p.action == PoaAction::Credit => {
            match instore::money_idempotency_key(&verified, correlation_id) {
                Ok(k) => Some(format!("{BARE_CREDIT_KEY_PREFIX}{k}")),
                Err(e) => return fail(e),
            }
        }
        _ => None,
    };
    let planner = Arc::new(PoaPlanner::new(
        request,
        Some(tenant),
        request_id,
        correlation_id,
        store::now_ms(),
    ));
    let call = planner.call(
        &tenant.tenant_id,
        key,
        envelope.map_or("", |e| e.callback_url.as_str()),
        payload::request_hash(value, &state.instore.secret_hash_key),
    );
    match crate::instore_service::execute(state, call, planner.clone()).await {
        Ok(InstoreOutcome::Done { ack }) => {
            let notes = planner.notes();
            if notes.unmatched_log {
                state.metrics.inc("instore_poa_unmatched_logs_total", &[]);
            }
            tracing::info!(
                route = route.template(),
                tenant = %tenant.tenant_id,
                request_id = request_id.unwrap_or(""),
                decision = notes.declined.map_or("approved", |r| r.as_str()),
                "instore pay-on-account request committed"
            );
            Reply::decided(ack, tenant, notes.declined.is_some())
        }
        Ok(InstoreOutcome::Replay { ack }) => Reply::ok(ack, tenant, "replay"),
        Ok(InstoreOutcome::Conflict) => fail(InstoreError::new(
            ErrorCode::IdempotencyConflict,
            "this key was used with another action or body",
        )),
        Err(e) => {
            tracing::error!(route = route.template(), error = %e, "instore pay-on-account request not committed");
            fail(InstoreError::unavailable())
        }
    }
}

/// `GET payonaccountlog/{account_number}` and `GET payonaccountlog/?account_number=`: the
/// account's records, newest first.
pub(super) async fn get(
    req: &HttpRequest,
    state: &AppState,
    route: &Route,
    account_number: Option<&str>,
) -> Reply {
    let verified = or_answer!(verified_get(req, state, route));
    let tenant = verified.tenant;
    let fail = |e: InstoreError| Reply::error(&e, Some(tenant));
    let from_query = verified
        .params
        .iter()
        .find(|(k, _)| k == "account_number")
        .map(|(_, v)| v.as_str());
    let Some(text) = account_number.or(from_query) else {
        return fail(InstoreError::missing("account_number"));
    };
    let number = match CardNumber::parse(text, "account_number") {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let rows = match state
        .store
        .reader()
        .poa_logs(&tenant.tenant_id, number.as_str(), LOG_RECORDS_MAX)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(route = route.template(), error = %e, "instore pay-on-account log not read");
            return fail(InstoreError::unavailable());
        }
    };
    // Every stored record was written by us from a record read the same way.
    let logs: Vec<(PoaLogRecord, String)> = rows
        .iter()
        .filter_map(|(record, at)| {
            let node = instore::parse(record.as_bytes()).ok()?;
            Some((
                PoaLogRecord::read(&node.value).ok()?,
                super::rfc3339_ms(*at),
            ))
        })
        .collect();
    let body = instore::body::poa_log_list(&number, &logs);
    Reply::ok(body.into_bytes(), tenant, "log")
}

/// The POA account an admin route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PoaPath {
    /// A configured InStore tenant.
    #[param(min_length = 1, max_length = 255)]
    tenant_id: String,
    /// The account number InStore uses: 1 to 64 printable ASCII characters.
    #[param(min_length = 1, max_length = 64, pattern = "^[!-~]{1,64}$")]
    account_number: String,
}

/// A change of a POA account's credit limit or block.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoaSettingsRequest {
    /// The new credit limit, a decimal string in the account's currency (not negative).
    /// Lowered below what is owed, the account charges nothing more until repaid.
    credit_limit: Option<String>,
    /// Block (no Credit is approved) or unblock.
    blocked: Option<bool>,
}

/// The reversal of one charge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoaReversalRequest {
    /// The POA_CHARGE movement to reverse.
    movement_id: i64,
}

/// A POA account as the issuer sees it.
#[derive(Serialize, ToSchema)]
pub struct PoaAccountJson {
    tenant_id: String,
    account_number: String,
    /// The ledger account's user (`GET /v1/accounts/{user_id}/{currency}`).
    user_id: String,
    currency: String,
    company_name: Option<String>,
    authorized_user_ids: Vec<String>,
    blocked: bool,
    /// Decimal strings.
    credit_limit: String,
    owed: String,
    /// What a Credit may still charge: credit limit - owed.
    available: String,
    /// The reversal booked by this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    reversed_movement_id: Option<i64>,
}

fn account_json(path: &PoaPath, v: &PoaView, reversed: Option<i64>) -> PoaAccountJson {
    let e = v.currency.exponent();
    PoaAccountJson {
        tenant_id: path.tenant_id.clone(),
        account_number: path.account_number.clone(),
        user_id: v.user_id.clone(),
        currency: v.currency.code().to_owned(),
        company_name: v.company_name.clone(),
        authorized_user_ids: v.authorized_user_ids.clone(),
        blocked: v.blocked,
        credit_limit: format_minor(v.credit_limit, e),
        owed: format_minor(v.owed, e),
        available: format_minor(v.credit_limit.saturating_sub(v.owed), e),
        reversed_movement_id: reversed,
    }
}

/// The account the path names, checked; `None` when there is none.
async fn named_account(state: &AppState, path: &PoaPath) -> Result<PoaView> {
    if state.instore.tenants.get(&path.tenant_id).is_none() {
        return Err(AdminError::not_found("InStore tenant"));
    }
    CardNumber::parse(&path.account_number, "account_number")
        .map_err(|e| AdminError::bad("invalid_account_number", e.message))?;
    state
        .store
        .poa_account(&path.tenant_id, &path.account_number)
        .await?
        .ok_or_else(|| AdminError::not_found("POA account"))
}

/// Runs an admin change through the one writer and answers with the account after it.
async fn change(
    state: &AppState,
    path: &PoaPath,
    change: PoaAdmin,
    status: StatusCode,
) -> Result<HttpResponse> {
    let planner = Arc::new(PoaPlanner::new(
        PoaRequest::Admin {
            tenant_id: path.tenant_id.clone(),
            account_number: path.account_number.clone(),
            change,
        },
        None,
        None,
        None,
        store::now_ms(),
    ));
    let call = planner.call(&path.tenant_id, None, "", String::new());
    crate::instore_service::execute_admin(state, call, planner.clone()).await?;
    match planner.notes().admin {
        Some(AdminResult::Done) => {}
        Some(AdminResult::AlreadyReversed) => {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "already_reversed",
                "the charge was reversed before",
            ));
        }
        Some(AdminResult::ChargeNotFound) => {
            return Err(AdminError::not_found("POA charge of this account"));
        }
        Some(AdminResult::AccountNotFound) | None => {
            return Err(AdminError::not_found("POA account"));
        }
    }
    let view = named_account(state, path).await?;
    let reversed = match change {
        PoaAdmin::Reverse { movement_id } => Some(movement_id),
        PoaAdmin::Settings { .. } => None,
    };
    Ok(json_response(status, &account_json(path, &view, reversed)))
}

/// Set a POA account's credit limit, block or unblock it
#[utoipa::path(
    put,
    path = "/v1/instore/poa/{tenant_id}/{account_number}",
    operation_id = "putPoaAccount",
    tag = "admin",
    params(PoaPath),
    request_body = PoaSettingsRequest,
    responses(
        (status = 200, description = "Changed; the account.", body = PoaAccountJson),
        errors::BadInput, errors::NotFound, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn put_poa_account(
    req: HttpRequest,
    path: web::Path<PoaPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let path = path.into_inner();
        let b: PoaSettingsRequest = json_body(&req, payload, &state).await?;
        let view = named_account(&state, &path).await?;
        let credit_limit = match b.credit_limit.as_deref() {
            None => None,
            Some(text) => Some(amount(text, view.currency, "credit_limit")?)
                .filter(|l| *l >= 0)
                .map(Some)
                .ok_or_else(|| {
                    AdminError::bad("invalid_amount", "credit_limit must not be negative")
                })?,
        };
        let settings = PoaAdmin::Settings {
            credit_limit,
            blocked: b.blocked,
        };
        change(&state, &path, settings, StatusCode::OK).await
    })
    .await
}

/// Reverse one POA_CHARGE of the account, once
#[utoipa::path(
    post,
    path = "/v1/instore/poa/{tenant_id}/{account_number}/reversals",
    operation_id = "reversePoaCharge",
    tag = "admin",
    params(PoaPath),
    request_body = PoaReversalRequest,
    responses(
        (status = 201, description = "Reversed; the account after.", body = PoaAccountJson),
        (status = 409, description = "The charge was reversed before (already_reversed)."),
        errors::BadInput, errors::NotFound, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn reverse_poa_charge(
    req: HttpRequest,
    path: web::Path<PoaPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let path = path.into_inner();
        let b: PoaReversalRequest = json_body(&req, payload, &state).await?;
        named_account(&state, &path).await?;
        let reverse = PoaAdmin::Reverse {
            movement_id: b.movement_id,
        };
        change(&state, &path, reverse, StatusCode::CREATED).await
    })
    .await
}
