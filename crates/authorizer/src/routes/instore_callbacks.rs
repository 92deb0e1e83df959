//! Admin routes of the InStore callback outbox (section 6.3 of the InStore page): list the
//! callbacks by state, and queue a delivered or dead one again. A callback is a row of the
//! one outbox (event type [`store::instore::CALLBACK_EVENT_TYPE`]); listing and redelivery
//! are the event webhooks' ([`super::webhooks`]), narrowed to that type. A callback's body
//! carries card numbers, so the listing shows what it says (action, result, code, error),
//! its size and digest, never the body itself. Registered from the table in
//! [`super::admin`].

use super::admin::{AdminError, Result, json_response};
use super::webhooks::{IdPath, STATES, admin_call, outbox_page, redeliver_row};
use crate::app::AppState;
use crate::openapi::errors;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::DeliveryView;
use store::instore::CALLBACK_EVENT_TYPE;
use utoipa::{IntoParams, ToSchema};

/// The largest page.
const LIMIT_MAX: i64 = 1000;

/// One InStore callback of the outbox. The body is not shown: it carries card numbers.
#[derive(Serialize, ToSchema)]
pub struct InstoreCallback {
    /// The outbox row: what `redeliver` names.
    id: i64,
    tenant_id: String,
    #[serde(rename = "requestId")]
    request_id: String,
    /// The body's `action`: Create, Lookup, Load, Redeem or Cancel.
    action: Option<String>,
    /// The body's `result` (Success or Failure), `code` and `error`.
    result: Option<String>,
    code: Option<String>,
    error: Option<String>,
    /// The callbackUrl it goes to (the last duplicate's).
    url: String,
    /// PENDING (to send, or to retry after a failed attempt), DELIVERED or DEAD.
    #[schema(example = "PENDING")]
    state: String,
    /// Attempts since it was (last) queued.
    attempts: i64,
    next_attempt_at_ms: i64,
    /// How the last attempt failed (`answered 500`, `request failed: ...`); null after a
    /// delivery.
    last_error: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    delivered_at_ms: Option<i64>,
    /// Size of the body sent, in bytes, and its SHA-256 (hex): every attempt sends these
    /// bytes.
    body_bytes: usize,
    body_sha256: String,
}

/// The text member `name` of a callback body.
fn member(body: &Value, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::to_owned)
}

impl From<DeliveryView> for InstoreCallback {
    fn from(d: DeliveryView) -> Self {
        let body: Value = serde_json::from_slice(&d.body).unwrap_or(Value::Null);
        let request_id = member(&body, "requestId").unwrap_or_default();
        // The event id is `instore:{tenant}:{requestId}` (store::instore::callback_event_id).
        let tenant_id = d
            .event_id
            .strip_prefix("instore:")
            .and_then(|rest| rest.strip_suffix(request_id.as_str()))
            .and_then(|rest| rest.strip_suffix(':'))
            .unwrap_or_default()
            .to_owned();
        InstoreCallback {
            id: d.id,
            tenant_id,
            action: member(&body, "action"),
            result: member(&body, "result"),
            code: member(&body, "code"),
            error: member(&body, "error"),
            request_id,
            url: d.url,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at_ms: d.next_attempt_at_ms,
            last_error: d.last_error,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            delivered_at_ms: d.delivered_at_ms,
            body_bytes: d.body.len(),
            body_sha256: protocol::webhook::hex(&Sha256::digest(&d.body)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InstoreCallbackPage {
    callbacks: Vec<InstoreCallback>,
    /// `cursor` of the next page; absent on the last.
    next_cursor: Option<i64>,
}

/// The listing's query, read as text so that each bad value is refused by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstoreCallbackQuery {
    /// Only callbacks in this state: PENDING, DELIVERED or DEAD (any case).
    state: Option<String>,
    /// Page size.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    cursor: Option<String>,
}

impl InstoreCallbackQuery {
    /// (state, cursor, limit), each checked: 422 naming the first bad one.
    fn checked(&self) -> Result<(Option<&'static str>, Option<i64>, i64)> {
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => Some(
                STATES
                    .into_iter()
                    .find(|k| k.eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        AdminError::unprocessable(
                            "invalid_state",
                            "state must be PENDING, DELIVERED or DEAD",
                        )
                    })?,
            ),
        };
        let limit = match self.limit.as_deref() {
            None => 100,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=LIMIT_MAX).contains(l))
                .ok_or_else(|| {
                    AdminError::unprocessable(
                        "invalid_limit",
                        "limit must be an integer from 1 to 1000",
                    )
                })?,
        };
        let cursor = match self.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                AdminError::unprocessable(
                    "invalid_cursor",
                    "cursor must be a next_cursor of this listing",
                )
            })?),
        };
        Ok((state, cursor, limit))
    }
}

/// InStore callbacks of the outbox, newest first
#[utoipa::path(
    get,
    path = "/v1/instore/callbacks",
    operation_id = "listInstoreCallbacks",
    tag = "admin",
    params(InstoreCallbackQuery),
    responses(
        (status = 200, description = "A page of callbacks (bodies left out: they carry card numbers).", body = InstoreCallbackPage),
        (status = 422, description = "invalid_state, invalid_limit or invalid_cursor: the code names the field.", body = crate::openapi::ErrorBody),
        errors::BadInput,
    ),
)]
pub async fn list_instore_callbacks(
    req: HttpRequest,
    query: web::Query<InstoreCallbackQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (wanted, cursor, limit) = query.checked()?;
        let (rows, next_cursor) = outbox_page(
            &state.store.reader(),
            Some(CALLBACK_EVENT_TYPE),
            wanted,
            cursor,
            limit,
        )
        .await?;
        Ok(json_response(
            StatusCode::OK,
            &InstoreCallbackPage {
                callbacks: rows.into_iter().map(InstoreCallback::from).collect(),
                next_cursor,
            },
        ))
    })
    .await
}

/// Send a DELIVERED or DEAD InStore callback again: PENDING, due now, its attempts and
/// give-up age restarted, the same bytes and signature
#[utoipa::path(
    post,
    path = "/v1/instore/callbacks/{id}/redeliver",
    operation_id = "redeliverInstoreCallback",
    tag = "admin",
    params(IdPath),
    responses(
        (status = 202, description = "PENDING again (or still PENDING): it goes out.", body = InstoreCallback),
        errors::BadInput,
        (status = 404, description = "No InStore callback with this id.", body = crate::openapi::ErrorBody),
    ),
)]
pub async fn redeliver_instore_callback(
    req: HttpRequest,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let d = redeliver_row(&state, path.id, Some(CALLBACK_EVENT_TYPE)).await?;
        Ok(json_response(
            StatusCode::ACCEPTED,
            &InstoreCallback::from(d),
        ))
    })
    .await
}
