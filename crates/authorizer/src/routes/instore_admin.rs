//! Admin routes of the InStore stored-value extension (section 6.3): link a number to one of
//! our cards, look a card's numbers up, list their movements. Card numbers travel only in
//! request bodies; answers show the last four. Registered from the table in
//! [`super::admin`].

use super::admin::{
    AdminError, Result, card_id, currency, exponent_of, flags, json_body, json_response, page_of,
    printable,
};
use super::webhooks::admin_call;
use crate::app::AppState;
use crate::openapi::errors;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use instore::payload::CardNumber;
use ledger::{Currency, format_minor};
use serde::{Deserialize, Serialize};
use store::{SvCardView, SvLink, SvLinkOutcome, SvMovementRow};
use utoipa::{IntoParams, ToSchema};

/// The card a stored-value route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SvCardPath {
    /// Our card id (the processor's, or `svc-…` for a card InStore created).
    #[param(min_length = 1, max_length = 255)]
    card_id: String,
}

/// Link a stored-value number to a card.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SvLinkRequest {
    /// The number store tills present: 1 to 64 printable ASCII characters.
    #[schema(min_length = 1, max_length = 64)]
    number: String,
    /// The account of the card's holder in this currency is the one spent (ISO 4217).
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Configured InStore tenants that may use the number.
    tenants: Vec<String>,
    /// GiftCard, ReturnCard or Promotional.
    #[serde(rename = "type")]
    card_type: String,
    /// Set (or replace) the PIN a lookup must present; kept as a keyed hash only.
    pin: Option<String>,
}

/// One stored-value number of a card.
#[derive(Serialize, ToSchema)]
pub struct SvNumber {
    /// The last four characters of the number.
    number_last4: String,
    currency: String,
    #[serde(rename = "type")]
    card_type: String,
    /// The card's status (ACTIVE reads as Active in InStore).
    status: String,
    tenants: Vec<String>,
    /// Linked to an existing account by this API (its limits apply to Redeem).
    linked: bool,
    pin_on_record: bool,
    cvc_on_record: bool,
    /// Posted balance, decimal.
    posted: String,
    held: String,
    /// posted − held: what a lookup reports.
    available: String,
}

/// A card's stored-value numbers.
#[derive(Serialize, ToSchema)]
pub struct SvCard {
    card_id: String,
    user_id: String,
    numbers: Vec<SvNumber>,
}

fn number_json(v: &SvCardView) -> SvNumber {
    let exp = v.currency.exponent();
    SvNumber {
        number_last4: v.number_last4.clone(),
        currency: v.currency.code().to_owned(),
        card_type: v.card_type.clone(),
        status: v.status.clone(),
        tenants: v.tenants.clone(),
        linked: v.linked,
        pin_on_record: v.pin_on_record,
        cvc_on_record: v.cvc_on_record,
        posted: format_minor(v.posted, exp),
        held: format_minor(v.held, exp),
        available: format_minor(v.posted.saturating_sub(v.held), exp),
    }
}

async fn card_json(store: &store::Store, card_id: &str) -> Result<SvCard> {
    let views = store.stored_value_cards(card_id).await?;
    let first = views
        .first()
        .ok_or_else(|| AdminError::not_found("stored-value card"))?;
    Ok(SvCard {
        card_id: first.card_id.clone(),
        user_id: first.user_id.clone(),
        numbers: views.iter().map(number_json).collect(),
    })
}

impl SvCardPath {
    /// The card id, checked as every admin route checks one.
    fn card_id(self) -> Result<String> {
        card_id(self.card_id)
    }
}

/// Link a stored-value number to a card and currency; set its type, tenants and PIN
#[utoipa::path(
    put,
    path = "/v1/stored-value-cards/{card_id}",
    operation_id = "putStoredValueCard",
    tag = "admin",
    params(SvCardPath),
    request_body = SvLinkRequest,
    responses(
        (status = 200, description = "Linked; the card's numbers.", body = SvCard),
        (status = 409, description = "The number belongs to another card, or its history to another account (number_taken)."),
        errors::BadInput, errors::NotFound, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn put_stored_value_card(
    req: HttpRequest,
    path: web::Path<SvCardPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let card_id = path.into_inner().card_id()?;
        let b: SvLinkRequest = json_body(&req, payload, &state).await?;
        let number = CardNumber::parse(&b.number, "number")
            .map_err(|e| AdminError::bad("invalid_number", e.message))?;
        let currency: Currency = currency(&b.currency)?;
        if !matches!(
            b.card_type.as_str(),
            "GiftCard" | "ReturnCard" | "Promotional"
        ) {
            return Err(AdminError::bad(
                "invalid_type",
                "type must be GiftCard, ReturnCard or Promotional",
            ));
        }
        if b.tenants.is_empty()
            || b.tenants
                .iter()
                .any(|t| state.instore.tenants.get(t).is_none())
        {
            return Err(AdminError::bad(
                "unknown_tenant",
                "tenants must name one or more configured InStore tenants",
            ));
        }
        let pin_hash = match b.pin.as_deref() {
            None => None,
            Some(p) if !p.is_empty() && p.len() <= 64 => {
                Some(instore::signature::secret_hash(&state.instore.secret_hash_key, p).to_vec())
            }
            Some(_) => return Err(AdminError::bad("invalid_pin", "pin must be 1 to 64 bytes")),
        };
        let link = SvLink {
            card_id: &card_id,
            number: number.as_str(),
            currency,
            card_type: &b.card_type,
            tenants: &b.tenants,
            pin_hash: pin_hash.as_deref(),
        };
        match state
            .store
            .put_stored_value_card(&link, store::now_ms())
            .await?
        {
            SvLinkOutcome::Linked => {}
            SvLinkOutcome::CardNotFound => return Err(AdminError::not_found("card")),
            SvLinkOutcome::AccountNotFound => return Err(AdminError::not_found("account")),
            SvLinkOutcome::NumberTaken => {
                return Err(AdminError::new(
                    StatusCode::CONFLICT,
                    "number_taken",
                    "the number belongs to another card, or its history to another account",
                ));
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &card_json(&state.store, &card_id).await?,
        ))
    })
    .await
}

/// A card's stored-value numbers (masked), type, status, tenants and balances
#[utoipa::path(
    get,
    path = "/v1/stored-value-cards/{card_id}",
    operation_id = "getStoredValueCard",
    tag = "admin",
    params(SvCardPath),
    responses(
        (status = 200, description = "The card's numbers.", body = SvCard),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn get_stored_value_card(
    req: HttpRequest,
    path: web::Path<SvCardPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let card_id = path.into_inner().card_id()?;
        Ok(json_response(
            StatusCode::OK,
            &card_json(&state.store.reader(), &card_id).await?,
        ))
    })
    .await
}

/// A page of movements.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SvMovementsQuery {
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// One leg of an InStore movement.
#[derive(Serialize, ToSchema)]
pub struct SvMovement {
    movement_id: i64,
    /// SV_LOAD, SV_REDEEM or SV_CANCEL.
    kind: String,
    external_transaction_id: String,
    external_payment_id: String,
    number_last4: String,
    tenant_id: String,
    request_id: String,
    currency: String,
    /// Signed from the card's side, decimal.
    amount: String,
    /// posted − held after, decimal.
    balance_after: String,
    location_id: String,
    workstation_id: Option<String>,
    session_id: Option<String>,
    reference: Option<String>,
    /// POSSIBLE_DUPLICATE when a movement repeats an earlier one.
    flags: Vec<String>,
    created_at_ms: i64,
}

/// A page of movements, newest first.
#[derive(Serialize, ToSchema)]
pub struct SvMovementPage {
    movements: Vec<SvMovement>,
    next_cursor: Option<i64>,
}

fn movement_json(m: &SvMovementRow) -> SvMovement {
    let exp = exponent_of(&m.currency);
    SvMovement {
        movement_id: m.movement_id,
        kind: m.kind.clone(),
        external_transaction_id: m.external_transaction_id.clone(),
        external_payment_id: m.external_payment_id.clone(),
        number_last4: store::instore::last_four(&m.number).to_owned(),
        tenant_id: m.tenant_id.clone(),
        request_id: m.request_id.clone(),
        currency: m.currency.clone(),
        amount: format_minor(m.amount_minor, exp),
        balance_after: format_minor(m.balance_after_minor, exp),
        location_id: m.location_id.clone(),
        workstation_id: m.workstation_id.clone(),
        session_id: m.session_id.clone(),
        reference: m.reference.clone(),
        flags: flags(&m.flags),
        created_at_ms: m.created_at_ms,
    }
}

/// The InStore movements of a card's stored-value numbers, newest first
#[utoipa::path(
    get,
    path = "/v1/stored-value-cards/{card_id}/movements",
    operation_id = "listStoredValueMovements",
    tag = "admin",
    params(SvCardPath, SvMovementsQuery),
    responses(
        (status = 200, description = "A page of movements.", body = SvMovementPage),
        errors::BadInput,
    ),
)]
pub async fn stored_value_movements(
    req: HttpRequest,
    path: web::Path<SvCardPath>,
    query: web::Query<SvMovementsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let card_id = path.into_inner().card_id()?;
        let limit = query.limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(AdminError::bad("invalid_limit", "limit must be 1 to 500"));
        }
        let rows = state
            .store
            .reader()
            .stored_value_movements(&card_id, query.cursor, limit + 1)
            .await?;
        let (page, next_cursor) = page_of(&rows, limit, |m| m.movement_id);
        Ok(json_response(
            StatusCode::OK,
            &SvMovementPage {
                movements: page.iter().map(movement_json).collect(),
                next_cursor,
            },
        ))
    })
    .await
}

/// The tenant a summary is of.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The InStore tenant id (a tenant no longer configured still has its history).
    #[param(min_length = 1, max_length = 255)]
    tenant_id: String,
}

/// The day a summary covers.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// A calendar day, YYYY-MM-DD, in `controls.time_zone` (the issuer's business day).
    #[param(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    day: String,
}

/// The movements of one action in one currency.
#[derive(Serialize, ToSchema)]
pub struct SummaryTotal {
    /// Load, Redeem, Cancel of Load or Cancel of Redeem.
    action: String,
    currency: String,
    /// Requests that booked money (a split Redeem is one operation).
    operations: i64,
    /// Card legs booked (a split Redeem has one per card).
    movements: i64,
    /// Signed from the cards' side, decimal: a Redeem and a Cancel of Load are negative.
    amount: String,
}

/// The day's net in one currency.
#[derive(Serialize, ToSchema)]
pub struct SummaryNet {
    currency: String,
    operations: i64,
    /// The sum of every action's amount: positive, the tenant's tills took in that much
    /// more stored value than they paid out, which the tenant owes the issuer; negative,
    /// the issuer owes the tenant.
    amount: String,
}

/// One tenant's InStore movements of one day, for the retailer's settlement.
#[derive(Serialize, ToSchema)]
pub struct InstoreSummary {
    tenant_id: String,
    day: String,
    time_zone: String,
    /// The day's first instant, Unix milliseconds (included).
    from_ms: i64,
    /// The next day's first instant (excluded).
    to_ms: i64,
    /// Per currency, then action.
    totals: Vec<SummaryTotal>,
    /// Per currency.
    net: Vec<SummaryNet>,
}

fn summary_json(
    tenant_id: String,
    day: String,
    time_zone: String,
    (from_ms, to_ms): (i64, i64),
    rows: &[store::SvSummaryRow],
) -> InstoreSummary {
    let mut net: Vec<SummaryNet> = Vec::new();
    let mut sums: Vec<(String, i64, i64)> = Vec::new();
    for r in rows {
        match sums.iter_mut().find(|(c, _, _)| *c == r.currency) {
            Some((_, ops, amount)) => {
                *ops += r.operations;
                *amount = amount.saturating_add(r.amount_minor);
            }
            None => sums.push((r.currency.clone(), r.operations, r.amount_minor)),
        }
    }
    for (currency, operations, amount) in sums {
        net.push(SummaryNet {
            amount: format_minor(amount, exponent_of(&currency)),
            currency,
            operations,
        });
    }
    InstoreSummary {
        tenant_id,
        day,
        time_zone,
        from_ms,
        to_ms,
        totals: rows
            .iter()
            .map(|r| SummaryTotal {
                action: r.action.clone(),
                currency: r.currency.clone(),
                operations: r.operations,
                movements: r.legs,
                amount: format_minor(r.amount_minor, exponent_of(&r.currency)),
            })
            .collect(),
        net,
    }
}

/// The first instants of `day` and of the day after, in `tz`, in milliseconds.
fn day_bounds(day: &str, tz: &jiff::tz::TimeZone) -> Option<(i64, i64)> {
    let date: jiff::civil::Date = day.parse().ok()?;
    let start = date.to_zoned(tz.clone()).ok()?;
    let next = date.tomorrow().ok()?.to_zoned(tz.clone()).ok()?;
    Some((
        start.timestamp().as_millisecond(),
        next.timestamp().as_millisecond(),
    ))
}

/// One tenant's InStore movements of one day: totals per action and currency, and the net
#[utoipa::path(
    get,
    path = "/v1/instore/tenants/{tenant_id}/summary",
    operation_id = "getInstoreSummary",
    tag = "admin",
    params(TenantPath, SummaryQuery),
    responses(
        (status = 200, description = "The day's totals (empty when nothing was booked).", body = InstoreSummary),
        errors::BadInput,
    ),
)]
pub async fn instore_summary(
    req: HttpRequest,
    path: web::Path<TenantPath>,
    query: web::Query<SummaryQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let tenant_id = path.into_inner().tenant_id;
        printable(&tenant_id, "invalid_tenant", "tenant id")?;
        let tz = state
            .settings
            .controls
            .resolve()
            .map_err(|e| AdminError::bad("invalid_time_zone", e.0))?;
        let bounds = day_bounds(&query.day, &tz).ok_or_else(|| {
            AdminError::bad("invalid_day", "day must be a calendar day, YYYY-MM-DD")
        })?;
        let rows = state
            .store
            .reader()
            .instore_summary(&tenant_id, bounds.0, bounds.1)
            .await?;
        Ok(json_response(
            StatusCode::OK,
            &summary_json(
                tenant_id,
                query.day.clone(),
                state.settings.controls.time_zone.clone(),
                bounds,
                &rows,
            ),
        ))
    })
    .await
}
