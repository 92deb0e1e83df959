//! Admin routes of spending controls (docs/controls.md): the document of an account and of
//! a card, set whole and read back in canonical form. Registered from the table in
//! [`super::admin`]. An account's controls are read with the account row in every
//! authorization's transaction; a card's travel with its cached rules, so a change is
//! invalidated here and on every instance of the fleet like the card's other rules.

use super::admin::{AccountPath, AdminError, CardPath, Result, body, card_changed, json_response};
use super::webhooks::admin_call;
use crate::app::AppState;
use crate::openapi::errors;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ledger::Currency;
use ledger::controls::{Controls, LimitUsage};
use serde::Serialize;
use serde_json::Value;
use store::StoredControls;
use utoipa::ToSchema;

/// Spending controls of an account or a card. Every field is optional; `{}` removes every
/// control. Amounts are decimal strings in the controls' currency.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "blocked_categories": ["gambling", "7273"],
    "allowed_countries": ["AR", "URY"],
    "blocked_channels": ["atm"],
    "spending_limits": [{"amount": "500.00", "interval": "monthly"}],
    "velocity_limits": [{"count": 10, "interval": "daily"}]
})))]
pub struct ControlsDocument {
    /// The currency of the spending limits' amounts: implied on an account (may be
    /// repeated, must agree); required on a card with spending limits.
    currency: Option<String>,
    /// MCCs (`"5411"`), inclusive ranges (`"5811-5814"`) or groups (`atm_cash`,
    /// `gambling`, `airlines`, `digital_goods`, `quasi_cash`). Empty: every category.
    allowed_categories: Option<Vec<String>>,
    blocked_categories: Option<Vec<String>>,
    /// ISO 3166-1 alpha-2 or alpha-3 merchant countries. Empty: every country.
    allowed_countries: Option<Vec<String>>,
    blocked_countries: Option<Vec<String>>,
    /// `ecommerce`, `atm`, `contactless`, `manual_entry`, `international`.
    allowed_channels: Option<Vec<String>>,
    blocked_channels: Option<Vec<String>>,
    spending_limits: Option<Vec<SpendingLimitDocument>>,
    velocity_limits: Option<Vec<VelocityLimitDocument>>,
}

/// A cap on the money debited in a window.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct SpendingLimitDocument {
    /// > 0, at most the currency's decimals.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("500.00"))]
    amount: String,
    /// `per_authorization`, `daily`, `weekly` (from Monday), `monthly`, `yearly`, `all_time`.
    interval: String,
    /// Only these categories count (not empty).
    categories: Option<Vec<String>>,
}

/// A cap on the number of approved debits in a window.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct VelocityLimitDocument {
    #[schema(minimum = 1)]
    count: u32,
    /// `daily`, `weekly`, `monthly`, `yearly`, `all_time`.
    interval: String,
    categories: Option<Vec<String>>,
}

/// Where one limit stands now: its window (the one holding the instant of the answer, in
/// the configured time zone, or UTC for a `legacy` daily limit: `window_start` and
/// `window_end` are instants, `null` for
/// `all_time`; no window at all per authorization), what was counted in it and what is left
/// for the next debit, never below zero.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitUsageView {
    /// A cap on money; amounts are decimal strings in the controls' currency.
    #[schema(example = json!({
        "kind": "spending", "legacy": false, "interval": "monthly", "categories": null,
        "window": "monthly:2026-12", "window_start": "2026-12-01T03:00:00Z",
        "window_end": "2027-01-01T03:00:00Z", "currency": "ARS",
        "limit": "500.00", "spent": "120.00", "remaining": "380.00"
    }))]
    Spending {
        /// The account's own `per_transaction_limit` or `daily_limit` (its day the UTC day),
        /// which the decision applies before the controls.
        legacy: bool,
        #[serde(flatten)]
        limited: LimitedView,
        currency: String,
        limit: String,
        #[schema(required = true)]
        spent: Option<String>,
        remaining: String,
    },
    /// A cap on the number of approved debits.
    Velocity {
        #[serde(flatten)]
        limited: LimitedView,
        limit: u32,
        counted: i64,
        remaining: i64,
    },
}

/// What every limit's usage names: its interval, categories and window.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct LimitedView {
    /// `per_authorization` (spending only: no window), `daily`, `weekly`, `monthly`,
    /// `yearly`, `all_time`.
    interval: String,
    /// The categories the limit counts (`null`: all).
    #[schema(required = true)]
    categories: Option<Vec<String>>,
    #[schema(required = true)]
    window: Option<String>,
    #[schema(required = true, format = DateTime)]
    window_start: Option<String>,
    #[schema(required = true, format = DateTime)]
    window_end: Option<String>,
}

/// The stored controls.
#[derive(Serialize, ToSchema)]
pub struct ControlsView {
    /// Bumped by every change.
    pub version: i64,
    /// The canonical form: fields in a fixed order, empty lists left out, lists sorted,
    /// countries as alpha-2, amounts with the currency's decimals.
    #[schema(value_type = ControlsDocument)]
    pub controls: Value,
    /// Where each spending and velocity limit stands at the instant of the answer: an
    /// account's own limits first (`legacy`), then the document's, in its order.
    #[schema(value_type = Vec<LimitUsageView>)]
    pub usage: Value,
}

/// The answer showing the stored controls and where their limits stand.
fn answer(s: StoredControls, usage: Vec<LimitUsage>) -> Result<HttpResponse> {
    let view = ControlsView {
        version: s.version,
        controls: serde_json::from_str(&s.document).unwrap_or(Value::Null),
        usage: serde_json::to_value(usage).unwrap_or(Value::Null),
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// The answer of the card's controls `stored`, with where its limits stand at `now`.
async fn card_answer(
    store: &store::Store,
    card_id: &str,
    stored: StoredControls,
    now: i64,
) -> Result<HttpResponse> {
    let usage = store
        .card_limit_usage(card_id, &stored.document, now)
        .await?;
    answer(stored, usage)
}

/// The answer of an account's controls `stored`, with where its limits (its legacy ones
/// first) stand at `now`.
async fn account_answer(
    store: &store::Store,
    (user, currency): (&str, Currency),
    stored: StoredControls,
    now: i64,
) -> Result<HttpResponse> {
    let usage = store
        .account_limit_usage(user, currency, &stored.document, now)
        .await?;
    answer(stored, usage)
}

/// Reads a controls document: 400 when it is not JSON or names a member twice (which one
/// would count is not for us to guess), 422 naming the first bad field.
fn parse(raw: &[u8], account_currency: Option<Currency>) -> Result<Controls> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| AdminError::bad("malformed_request", super::admin::json_error(&e)))?;
    // serde_json keeps the last of a repeated member; the strict reader refuses it.
    if let Err(instore::JsonError::DuplicateMember(name)) = instore::parse(raw) {
        return Err(AdminError::bad(
            "malformed_request",
            format!("duplicate field `{name}`"),
        ));
    }
    Controls::from_value(&value, account_currency)
        .map_err(|e| AdminError::unprocessable("invalid_controls", e.to_string()))
}

/// The canonical text stored for `c` (`''` when it holds no control).
fn stored_text(c: &Controls) -> String {
    if c.is_empty() {
        String::new()
    } else {
        c.to_canonical_json()
    }
}

/// Set an account's spending controls (in force for its next authorization)
#[utoipa::path(
    put,
    path = "/v1/accounts/{user_id}/{currency}/controls",
    operation_id = "putAccountControls",
    tag = "admin",
    params(AccountPath),
    request_body = ControlsDocument,
    responses(
        (status = 200, description = "Stored.", body = ControlsView),
        errors::BadInput, errors::NotFound, errors::BodyTimeout,
        errors::BodyTooLarge, errors::InvalidControls,
    ),
)]
pub async fn put_account_controls(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (uid, c) = path.account()?;
        let raw = body(&req, payload, &state).await?;
        let controls = parse(&raw, Some(c))?;
        let now = store::now_ms();
        // Stored and read in one transaction: an error means nothing changed.
        let (stored, usage) = state
            .store
            .set_account_controls(uid, c, &stored_text(&controls), now)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        answer(stored, usage)
    })
    .await
}

/// An account's spending controls
#[utoipa::path(
    get,
    path = "/v1/accounts/{user_id}/{currency}/controls",
    operation_id = "getAccountControls",
    tag = "admin",
    params(AccountPath),
    responses(
        (status = 200, description = "The controls (`{}`: none).", body = ControlsView),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn get_account_controls(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let reads = state.store.reader();
        let (uid, c) = path.account()?;
        let stored = reads
            .account_controls(uid, c)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        account_answer(&reads, (uid, c), stored, store::now_ms()).await
    })
    .await
}

/// Set a card's spending controls (in force for its next authorization, on every instance)
#[utoipa::path(
    put,
    path = "/v1/cards/{card_id}/controls",
    operation_id = "putCardControls",
    tag = "admin",
    params(CardPath),
    request_body = ControlsDocument,
    responses(
        (status = 200, description = "Stored.", body = ControlsView),
        errors::BadInput, errors::NotFound, errors::BodyTimeout,
        errors::BodyTooLarge, errors::InvalidControls,
    ),
)]
pub async fn put_card_controls(
    req: HttpRequest,
    path: web::Path<CardPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let id = path.into_inner().card_id()?;
        let raw = body(&req, payload, &state).await?;
        let controls = parse(&raw, None)?;
        let now = store::now_ms();
        // Stored and read in one transaction: an error means nothing changed.
        let (stored, usage) = state
            .store
            .set_card_controls(&id, &stored_text(&controls), now)
            .await?
            .ok_or_else(|| AdminError::not_found("card"))?;
        card_changed(&state, &id).await;
        answer(stored, usage)
    })
    .await
}

/// A card's spending controls
#[utoipa::path(
    get,
    path = "/v1/cards/{card_id}/controls",
    operation_id = "getCardControls",
    tag = "admin",
    params(CardPath),
    responses(
        (status = 200, description = "The controls (`{}`: none).", body = ControlsView),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn get_card_controls(
    req: HttpRequest,
    path: web::Path<CardPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let reads = state.store.reader();
        let id = path.into_inner().card_id()?;
        let stored = reads
            .card_controls(&id)
            .await?
            .ok_or_else(|| AdminError::not_found("card"))?;
        card_answer(&reads, &id, stored, store::now_ms()).await
    })
    .await
}
