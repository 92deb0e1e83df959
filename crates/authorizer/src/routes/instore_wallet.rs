//! The InStore digital wallet extension (instore-extensions.md section 4): the six wallet
//! actions under `instore.base_path`, bare or enveloped, and the admin route that issues
//! barcodes. Every action that reads a payment or moves money goes through the one writer,
//! whose batch books it and writes its answer (and, enveloped, the callback's outbox row)
//! in one transaction; only after that commit is the request answered. Barcodes are never
//! logged.

use super::admin::{
    AccountPath, AdminError, PageQuery, cursor, json_body, json_response, page_limit, page_of,
    printable_id,
};
use super::instore::{Reply, answer_delay, header, read_verified, rfc3339_ms};
use super::webhooks::admin_call;
use crate::app::AppState;
use crate::openapi::errors;
use crate::wallet_service::{self, Planner, WalletRequest, barcode_digits};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use instore::payload;
use instore::{ErrorCode, InstoreError, Route, WalletAction};
use ledger::format_minor;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use store::InstoreOutcome;
use store::wallet::BarcodeIssue;
use utoipa::ToSchema;

/// A wallet action: verified, read, decided and committed through the one writer.
pub(super) async fn post(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    route: &Route,
    action: WalletAction,
) -> Reply {
    let verified = or_answer!(read_verified(req, payload, state, route).await);
    let tenant = verified.tenant;
    let envelope = verified.envelope.as_ref();
    let request_id = envelope.map(|e| e.request_id.as_str());
    let request = match WalletRequest::read(action, &verified.payload.value) {
        Ok(r) => r,
        Err(e) => return Reply::error(&e.with_request_id(request_id), Some(tenant)),
    };
    if envelope.is_none() && matches!(request, WalletRequest::Initialize(_)) {
        // No state: a bare initialize is answered at once.
        let answer = instore::body::wallet_status(None, instore::Outcome::APPROVED, None, None);
        return Reply::ok(answer.into_bytes(), tenant, "approved");
    }
    let mut call = request.call(action, &tenant.tenant_id);
    call.request_hash =
        payload::request_hash(&verified.payload.value, &state.instore.secret_hash_key);
    call.envelope = envelope.map(|e| (e.request_id.clone(), e.callback_url.clone()));
    call.correlation_id = header(req, "x-correlation-id").map(str::to_owned);
    let planner = Arc::new(Planner::new(
        request,
        tenant,
        &call,
        &state.settings.instore.wallet_method,
    ));
    let outcome = wallet_service::execute(state, call, planner.clone()).await;
    match outcome {
        Ok(InstoreOutcome::Done { ack }) => {
            answer_delay().await;
            let declined = planner.declined();
            tracing::info!(
                route = route.template(),
                tenant = %tenant.tenant_id,
                request_id = request_id.unwrap_or(""),
                decision = declined.map_or("approved", |r| r.as_str()),
                "instore wallet request committed"
            );
            Reply::decided(ack, tenant, declined.is_some())
        }
        Ok(InstoreOutcome::Replay { ack }) => Reply::ok(ack, tenant, "replay"),
        Ok(InstoreOutcome::Conflict) => Reply::error(
            &InstoreError::new(
                ErrorCode::IdempotencyConflict,
                if request_id.is_some() {
                    "this requestId was used with another action or payload, or its payload \
                     was signed for another action"
                } else {
                    "this body was signed for another action"
                },
            )
            .with_request_id(request_id),
            Some(tenant),
        ),
        Err(e) => {
            tracing::error!(route = route.template(), error = %e, "instore wallet request not committed");
            Reply::error(
                &InstoreError::unavailable().with_request_id(request_id),
                Some(tenant),
            )
        }
    }
}

/// A wallet payment decided on an account, approved or declined, and why. Amounts are
/// decimal strings in the account's currency.
#[derive(Serialize, ToSchema)]
pub struct WalletDecisionItem {
    pub id: i64,
    /// The InStore tenant whose till asked.
    pub tenant_id: String,
    /// The last four digits of the barcode paid with (a declined payment leaves its barcode
    /// usable, so the whole of it is not kept).
    pub barcode_last4: String,
    /// `APPROVED`, or the wallet's reason (`LIMIT_EXCEEDED`, `INSUFFICIENT_FUNDS`,
    /// `NOT_PERMITTED`, `BARCODE_USED`, `BARCODE_EXPIRED`, `CARD_INACTIVE`, ..).
    pub outcome: String,
    /// The payment, when approved.
    pub transaction_id: Option<String>,
    /// Total as asked, tip included; null when it does not read in the account's currency.
    pub total: Option<String>,
    /// Tip as asked; null when it does not read in the account's currency.
    pub tip: Option<String>,
    /// The checks run, in order, with their inputs (the account's balance, held and
    /// available amounts and legacy limits, the card, each spending control with the limit
    /// and what its window had counted), as an authorization's. Null when the wallet's own
    /// rules decided before them (a barcode used or expired, a card not active, a currency
    /// or amount that does not read), and when the wallet's own limits or funds declined
    /// but the same debit, as the controls read it, declines for another reason (it would
    /// explain another answer).
    #[schema(value_type = Option<Object>)]
    pub explanation: Option<serde_json::Value>,
    pub decided_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WalletDecisionsPage {
    pub decisions: Vec<WalletDecisionItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Wallet payments decided on an account, approved or declined, with why; newest first,
/// cursor-paginated
#[utoipa::path(
    get,
    path = "/v1/accounts/{user_id}/{currency}/wallet-payments",
    operation_id = "listWalletPaymentDecisions",
    tag = "admin",
    params(AccountPath, PageQuery),
    responses(
        (status = 200, description = "One page.", body = WalletDecisionsPage),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn wallet_payments(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (uid, c) = path.account()?;
        let limit = page_limit(query.limit, 50, 500)?;
        let before = cursor(query.cursor.as_deref())?;
        let rows = state
            .store
            .reader()
            .wallet_decisions(uid, c, before, limit + 1)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        let (page, next) = page_of(&rows, limit, |r| r.id.to_string());
        let e = c.exponent();
        let decisions = page
            .iter()
            .map(|k| {
                let d = &k.decision;
                WalletDecisionItem {
                    id: k.id,
                    tenant_id: k.tenant_barcode.0.clone(),
                    barcode_last4: k.tenant_barcode.1.clone(),
                    outcome: d.outcome.clone(),
                    transaction_id: d.transaction_id.clone(),
                    total: d.total.map(|t| format_minor(t, e)),
                    tip: d.tip.map(|t| format_minor(t, e)),
                    explanation: d
                        .explanation
                        .as_deref()
                        .and_then(ledger::plan::render_explanation),
                    decided_at_ms: k.decided_at_ms,
                }
            })
            .collect();
        let page = WalletDecisionsPage {
            decisions,
            next_cursor: next,
        };
        Ok(json_response(StatusCode::OK, &page))
    })
    .await
}

/// The default lifetime of a barcode, in seconds.
pub const BARCODE_LIFETIME_SECS: u64 = 300;
/// The longest lifetime a barcode may be given, in seconds.
pub const BARCODE_LIFETIME_MAX_SECS: u64 = 3600;

/// Issue a single-use wallet barcode for one of our accounts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarcodeRequest {
    /// The cardholder whose account `pay_wallet` debits.
    #[schema(min_length = 1, max_length = 255)]
    user_id: String,
    /// The account's currency (ISO 4217).
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// One of the user's cards: its status must be ACTIVE when the barcode is paid with.
    card_id: Option<String>,
    /// Lifetime in seconds: 1 to 3600, default 300.
    #[schema(minimum = 1, maximum = 3600)]
    expires_in_secs: Option<u64>,
}

/// An issued barcode: give it to the cardholder's app, never log it.
#[derive(Serialize, ToSchema)]
pub struct IssuedBarcode {
    /// 24 digits from the OS random source.
    barcode: String,
    /// RFC 3339, UTC, milliseconds.
    expires_at: String,
}

/// Issue a single-use wallet barcode for (user, currency), optionally bound to one card
#[utoipa::path(
    post,
    path = "/v1/wallet/barcodes",
    operation_id = "issueWalletBarcode",
    tag = "admin",
    request_body = BarcodeRequest,
    responses(
        (status = 201, description = "Issued; unique among barcodes not yet expired.", body = IssuedBarcode),
        (status = 422, description = "Refused (invalid_user_id, unknown_currency, invalid_expiry, account_not_found, card_not_found); nothing issued."),
        errors::BadInput, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn issue_barcode(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let b: BarcodeRequest = json_body(&req, payload, &state).await?;
        if !printable_id(&b.user_id) {
            return Err(AdminError::unprocessable(
                "invalid_user_id",
                "user_id must be 1 to 255 printable characters",
            ));
        }
        let currency = ledger::Currency::parse(&b.currency)
            .map_err(|e| AdminError::unprocessable("unknown_currency", e.to_string()))?;
        let lifetime = b.expires_in_secs.unwrap_or(BARCODE_LIFETIME_SECS);
        if !(1..=BARCODE_LIFETIME_MAX_SECS).contains(&lifetime) {
            return Err(AdminError::unprocessable(
                "invalid_expiry",
                format!("expires_in_secs must be 1 to {BARCODE_LIFETIME_MAX_SECS}"),
            ));
        }
        if b.card_id.as_deref().is_some_and(|c| !printable_id(c)) {
            return Err(AdminError::unprocessable(
                "card_not_found",
                "card_id must be 1 to 255 printable characters",
            ));
        }
        let lifetime_ms = i64::try_from(lifetime * 1000).unwrap_or(i64::MAX);
        let expires_at_ms = store::now_ms().saturating_add(lifetime_ms);
        let issued = state
            .store
            .issue_wallet_barcode(
                &b.user_id,
                currency,
                b.card_id.as_deref(),
                expires_at_ms,
                barcode_digits,
            )
            .await?;
        let barcode = match issued {
            BarcodeIssue::Issued(b) => b,
            BarcodeIssue::AccountNotFound => {
                return Err(AdminError::unprocessable(
                    "account_not_found",
                    "the user has no account in that currency",
                ));
            }
            BarcodeIssue::CardNotFound => {
                return Err(AdminError::unprocessable(
                    "card_not_found",
                    "no such card, or it is not the user's",
                ));
            }
        };
        tracing::info!(
            user_id = %b.user_id,
            currency = currency.code(),
            "wallet barcode issued"
        );
        Ok(json_response(
            StatusCode::CREATED,
            &IssuedBarcode {
                barcode,
                expires_at: rfc3339_ms(expires_at_ms),
            },
        ))
    })
    .await
}
