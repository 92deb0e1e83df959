//! The issuer's admin API: accounts, funding, cards, history, health and metrics.
//! Amounts are decimal strings; every error uses the one JSON envelope. These routes and
//! `/openapi.json` are registered ([`configure`]) and documented ([`AdminApi`]) from one table.

use crate::app::AppState;
use crate::openapi::errors::{self, AdminCommon};
use crate::routes::webhooks::admin_call;
use crate::routes::{error_body, read_body};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use ledger::{CardStatus, Currency, MccSet, format_minor, to_minor};
use protocol::WireAmount;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::{AccountSettings, AccountView, FundingCall, FundingOutcome, StoredResponse};
use utoipa::{IntoParams, ToSchema};

/// The admin and operations routes, one table: `method "path" => handler`. [`configure`]
/// registers exactly these, [`AdminApi`] documents exactly these handlers (from their
/// `#[utoipa::path]`: a handler without one does not compile here), and [`ROUTES`] lists
/// them for the test that the document has every registered (method, path). Every operation
/// tagged `admin` is documented with the bearer token and the answers any admin call can give
/// (401, 429, 503) by [`crate::openapi::errors::AdminCommon`]; a handler lists only its own.
macro_rules! admin_routes {
    ($($method:ident $path:literal => $($handler:ident)::+,)*) => {
        /// Registers the admin and operations routes on the server.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.route($path, web::$method().to($($handler)::+));)*
        }

        /// The OpenAPI paths (and the schemas they reference) of the admin and operations
        /// routes.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($handler)::+),*), modifiers(&AdminCommon))]
        pub struct AdminApi;

        /// `(method, path)` of every route [`configure`] registers, method in lower case.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];
    };
}

admin_routes! {
    get "/healthz" => healthz,
    get "/readyz" => readyz,
    get "/metrics" => metrics,
    get "/openapi.json" => crate::openapi::serve,
    put "/v1/accounts/{user_id}/{currency}" => put_account,
    get "/v1/accounts/{user_id}/{currency}" => get_account,
    post "/v1/accounts/{user_id}/{currency}/deposits" => deposit,
    post "/v1/accounts/{user_id}/{currency}/withdrawals" => withdraw,
    get "/v1/accounts/{user_id}/{currency}/postings" => postings,
    get "/v1/accounts/{user_id}/{currency}/holds" => holds,
    get "/v1/accounts/{user_id}/{currency}/wallet-payments" => super::instore_wallet::wallet_payments,
    get "/v1/channels/{channel}/reservations/{reservation_id}" => reservation_decision,
    put "/v1/accounts/{user_id}/{currency}/controls" => super::controls::put_account_controls,
    get "/v1/accounts/{user_id}/{currency}/controls" => super::controls::get_account_controls,
    put "/v1/cards/{card_id}" => put_card,
    put "/v1/cards/{card_id}/controls" => super::controls::put_card_controls,
    get "/v1/cards/{card_id}/controls" => super::controls::get_card_controls,
    get "/v1/transactions/{transaction_id}" => get_transaction,
    get "/v1/reconciliation/runs" => reconciliation_runs,
    get "/v1/reconciliation/runs/{date}/breaks" => reconciliation_breaks,
    post "/v1/webhooks/subscriptions" => super::webhooks::create_subscription,
    get "/v1/webhooks/subscriptions" => super::webhooks::list_subscriptions,
    get "/v1/webhooks/subscriptions/{id}" => super::webhooks::get_subscription,
    patch "/v1/webhooks/subscriptions/{id}" => super::webhooks::change_subscription,
    delete "/v1/webhooks/subscriptions/{id}" => super::webhooks::delete_subscription,
    post "/v1/webhooks/subscriptions/{id}/check" => super::webhooks::check_subscription,
    get "/v1/outbox" => super::webhooks::list_outbox,
    post "/v1/outbox/{id}/redeliver" => super::webhooks::redeliver,
    put "/v1/stored-value-cards/{card_id}" => super::instore_admin::put_stored_value_card,
    get "/v1/stored-value-cards/{card_id}" => super::instore_admin::get_stored_value_card,
    get "/v1/stored-value-cards/{card_id}/movements" => super::instore_admin::stored_value_movements,
    get "/v1/instore/tenants/{tenant_id}/summary" => super::instore_admin::instore_summary,
    post "/v1/wallet/barcodes" => super::instore_wallet::issue_barcode,
    put "/v1/instore/poa/{tenant_id}/{account_number}" => super::instore::poa::put_poa_account,
    post "/v1/instore/poa/{tenant_id}/{account_number}/reversals" => super::instore::poa::reverse_poa_charge,
    get "/v1/instore/callbacks" => super::instore_callbacks::list_instore_callbacks,
    post "/v1/instore/callbacks/{id}/redeliver" => super::instore_callbacks::redeliver_instore_callback,
}

/// The account a route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The cardholder: 1 to 255 bytes of printable text.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\ufffd]+$"
    )]
    pub(crate) user_id: String,
    /// ISO 4217 code, e.g. ARS.
    #[param(pattern = "^[A-Z]{3}$")]
    pub(crate) currency: String,
}

impl AccountPath {
    /// The account's user id and currency, each checked (the currency first).
    pub(crate) fn account(&self) -> Result<(&str, Currency)> {
        let c = currency(&self.currency)?;
        Ok((user_id(&self.user_id)?, c))
    }
}

/// The account a `PUT` opens: its user id as the processor sends it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NewAccountPath {
    /// The cardholder: 1 to 255 visible ASCII characters, as the processor sends it.
    #[param(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    user_id: String,
    /// ISO 4217 code, e.g. ARS.
    #[param(pattern = "^[A-Z]{3}$")]
    currency: String,
}

impl NewAccountPath {
    /// The account's user id and currency, each checked (the currency first).
    fn account(&self) -> Result<(&str, Currency)> {
        let c = currency(&self.currency)?;
        registered_id(&self.user_id, "invalid_user_id", "user id")?;
        Ok((&self.user_id, c))
    }
}

/// The card a `PUT` registers: its id as the processor sends it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NewCardPath {
    /// The processor's card id: 1 to 255 visible ASCII characters.
    #[param(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    card_id: String,
}

/// The card a route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CardPath {
    /// The processor's card id.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\ufffd]+$"
    )]
    pub(crate) card_id: String,
}

impl CardPath {
    /// The card id, checked: 1 to 255 bytes of printable text.
    pub(crate) fn card_id(self) -> Result<String> {
        card_id(self.card_id)
    }
}

/// A card's rules changed: in force here for the next authorization, and on every instance
/// of the fleet once the message arrives (each cached entry also expires on its own).
pub(crate) async fn card_changed(state: &AppState, card_id: &str) {
    state.rules.invalidate(card_id, "local");
    state.fleet.publish_card_change(card_id).await;
}

/// The processor transaction a route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TransactionPath {
    /// The processor's transaction id.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\ufffd]+$"
    )]
    pub(crate) transaction_id: String,
}

/// The reconciliation run a route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RunPath {
    /// Business date, YYYY-MM-DD.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    date: String,
}

/// The `Idempotency-Key` header of deposits and withdrawals.
const IDEMPOTENCY_KEY: &str = "Same key and request: the identical answer, booked once.";

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
    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub(crate) fn not_found(what: &str) -> Self {
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

pub(crate) type Result<T> = std::result::Result<T, AdminError>;

pub(crate) fn respond(state: &AppState, r: Result<HttpResponse>) -> HttpResponse {
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

pub(crate) fn json_response<T: Serialize>(status: StatusCode, v: &T) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(serde_json::to_vec(v).unwrap_or_default())
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(req: &HttpRequest) -> &str {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .unwrap_or("")
}

/// Whether the request carries the admin bearer token.
pub(crate) fn token_matches(req: &HttpRequest, state: &AppState) -> bool {
    state.admin_token.matches(bearer(req))
}

/// Bearer token check: constant time over fixed-length digests; only the digest of the
/// configured token is held (see [`crate::security::TokenDigest`]).
pub(crate) fn check_token(req: &HttpRequest, state: &AppState) -> Result<()> {
    if !token_matches(req, state) {
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid bearer token",
        ));
    }
    Ok(())
}

pub(crate) fn currency(code: &str) -> Result<Currency> {
    Currency::parse(code).map_err(|e| AdminError::bad("unknown_currency", e.to_string()))
}

/// Whether an identifier is 1 to 255 bytes of printable text. U+FFFD is refused too: the
/// router decodes percent-escapes that are not UTF-8 into it, so `u%FF` and `u%FE` would
/// otherwise both name the account `u\u{FFFD}`.
pub(crate) fn printable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && !id
            .chars()
            .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
}

/// Whether a transaction id can be looked up. Wider than what intake books today
/// (`protocol::wire::is_valid_id`) on purpose: ids booked before that rule, with spaces,
/// control characters or beyond 255 bytes, must stay retrievable, and a read-only exact
/// match can do no harm. Still refused: U+FFFD, which the router substitutes for
/// percent-escapes that are not UTF-8 (`ctx%FF` would find `ctx\u{FFFD}`), and U+0000,
/// which no Postgres text parameter can carry.
pub(crate) fn lookup_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['\0', char::REPLACEMENT_CHARACTER])
}

pub(crate) fn user_id(id: &str) -> Result<&str> {
    printable(id, "invalid_user_id", "user id")?;
    Ok(id)
}

/// [`printable_id`], as a 400 `code` naming `what`.
pub(crate) fn printable(id: &str, code: &'static str, what: &str) -> Result<()> {
    if printable_id(id) {
        return Ok(());
    }
    Err(AdminError::bad(
        code,
        format!("{what} must be 1 to 255 printable characters"),
    ))
}

/// An id a `PUT` registers (a user's account, a card, a card's holder), checked against the
/// processor's id rule (`protocol::wire::is_valid_id`: 1 to 255 visible ASCII characters):
/// the processor names accounts and cards by these ids, so one it could never send would
/// register an account or a card that no authorization can reach. Reads stay wider
/// ([`printable_id`]), so what was registered before the rule stays reachable.
pub(crate) fn registered_id(id: &str, code: &'static str, what: &str) -> Result<()> {
    if protocol::wire::is_valid_id(id) {
        return Ok(());
    }
    Err(AdminError::bad(
        code,
        format!(
            "{what} must be 1 to 255 visible ASCII characters (letters, digits, punctuation; \
             no spaces), as the processor sends it"
        ),
    ))
}

/// A card id, checked: 1 to 255 bytes of printable text.
pub(crate) fn card_id(id: String) -> Result<String> {
    printable(&id, "invalid_card_id", "card id")?;
    Ok(id)
}

/// The decimals of a stored currency code; 2 when the ledger does not know the code.
pub(crate) fn exponent_of(code: &str) -> u8 {
    Currency::parse_any(code).map_or(2, |c| c.exponent())
}

/// An exact decimal string in the currency's minor units; never rounded.
pub(crate) fn amount(text: &str, c: Currency, field: &str) -> Result<i64> {
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

pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| AdminError::bad("malformed_request", json_error(&e)))
}

/// A JSON error for the caller, without the value it names: serde says "invalid type:
/// integer `4111111111111111`, expected a string", and that value may be a card number or a
/// PIN sent as a number. The kind of value stays ("invalid type: integer, expected ...").
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // What serde says first, and whether the value's kind stays in its place (not for a
    // variant's name, which is the value itself).
    for (prefix, kind_of) in [
        ("invalid type:", true),
        ("invalid value:", true),
        ("unknown variant", false),
    ] {
        // The last ", expected": the value itself may hold one.
        if let Some(rest) = text.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected")
        {
            let kind = found
                .trim_start()
                .split([' ', '`'])
                .next()
                .unwrap_or_default();
            let kind = if kind_of {
                format!(" {kind}")
            } else {
                String::new()
            };
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    text
}

/// The body, read within the limits, as the JSON of `T`.
pub(crate) async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<T> {
    parse_json(&body(req, payload, state).await?)
}

pub(crate) async fn body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Vec<u8>> {
    read_body(req, payload, state.settings.server.body_bytes_max)
        .await
        .map_err(|(status, code)| AdminError::new(status, code, "Request body refused"))
}

fn account_json(a: &AccountView) -> Account {
    let e = a.currency.exponent();
    let s = &a.settings;
    Account {
        user_id: a.user_id.clone(),
        currency: a.currency.code().to_owned(),
        available: format_minor(a.balance.saturating_sub(a.held), e),
        posted: format_minor(a.balance, e),
        held: format_minor(a.held, e),
        balance_minor: a.balance,
        version: a.version,
        overdraft_limit: format_minor(s.overdraft_limit, e),
        per_transaction_limit: s.per_transaction_limit.map(|v| format_minor(v, e)),
        daily_limit: s.daily_limit.map(|v| format_minor(v, e)),
        blocked_mccs: s.blocked_mccs.to_list(),
        created_at_ms: a.created_at_ms,
        updated_at_ms: a.updated_at_ms,
    }
}

/// Rules of an account (all optional; absent means none, and an overdraft of 0).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountRules {
    /// How far the balance may go below zero, a decimal string.
    #[serde(default)]
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("0"))]
    overdraft_limit: Option<String>,
    /// Largest single authorization, a decimal string; null: no limit.
    #[serde(default)]
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    per_transaction_limit: Option<String>,
    /// Largest sum of authorizations per UTC day, a decimal string; null: no limit.
    #[serde(default)]
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    daily_limit: Option<String>,
    /// Merchant category codes (four digits) refused on this account.
    #[serde(default)]
    blocked_mccs: Option<Vec<String>>,
}

fn mccs(list: &[String]) -> Result<MccSet> {
    MccSet::from_list(list)
        .map_err(|_| AdminError::bad("invalid_mcc", "blocked_mccs must be four-digit codes"))
}

/// Open an account (idempotent); an optional body sets its rules
///
/// The user id is the processor's `user.id`: 1 to 255 visible ASCII characters (other ids are
/// refused with `invalid_user_id`, as no authorization could reach their account).
#[utoipa::path(
    put,
    path = "/v1/accounts/{user_id}/{currency}",
    operation_id = "openAccount",
    tag = "admin",
    params(NewAccountPath),
    // Optional, and never `null`: `Option<AccountRules>` would document a nullable body.
    request_body = ref(crate::openapi::component_ref::<AccountRules>()),
    responses(
        (status = 200, body = Account,
            description = "Already open (rules updated when a body is given)."),
        (status = 201, description = "Opened.", body = Account),
        errors::BadInput, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn put_account(
    req: HttpRequest,
    path: web::Path<NewAccountPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (uid, c) = path.account()?;
        let raw = body(&req, payload, &state).await?;
        let settings = if raw.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let b: AccountRules = parse_json(&raw)?;
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
            .open_account(uid, c, settings.as_ref(), store::now_ms())
            .await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(status, &account_json(&view)))
    })
    .await
}

/// Posted, held and available balance (posted - held), version and rules
#[utoipa::path(
    get,
    path = "/v1/accounts/{user_id}/{currency}",
    operation_id = "getAccount",
    tag = "admin",
    params(AccountPath),
    responses(
        (status = 200, description = "The account.", body = Account),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn get_account(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (uid, c) = path.account()?;
        let view = state
            .store
            .reader()
            .account(uid, c)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        Ok(json_response(StatusCode::OK, &account_json(&view)))
    })
    .await
}

/// A deposit or withdrawal.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundingRequest {
    /// A positive decimal string with at most the currency's decimals.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("100.00"))]
    amount: String,
    /// Free text kept with the movement (no U+0000).
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000]*$")]
    reference: Option<String>,
}

/// Add money to an account
#[utoipa::path(
    post,
    path = "/v1/accounts/{user_id}/{currency}/deposits",
    operation_id = "deposit",
    tag = "admin",
    params(
        AccountPath,
        ("idempotency-key" = String, Header, min_length = 1, max_length = 255,
            description = IDEMPOTENCY_KEY),
    ),
    request_body = FundingRequest,
    responses(
        (status = 201, body = FundingReceipt,
            description = "Booked (or the replay of the same request)."),
        errors::BadInput, errors::NotFound, errors::BodyTimeout,
        errors::KeyReused, errors::BodyTooLarge,
    ),
)]
pub async fn deposit(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    fund(req, path, payload, state, false).await
}

/// Take money out of an account; never overdraws
#[utoipa::path(
    post,
    path = "/v1/accounts/{user_id}/{currency}/withdrawals",
    operation_id = "withdraw",
    tag = "admin",
    params(
        AccountPath,
        ("idempotency-key" = String, Header, min_length = 1, max_length = 255,
            description = IDEMPOTENCY_KEY),
    ),
    request_body = FundingRequest,
    responses(
        (status = 201, body = FundingReceipt,
            description = "Booked (or the replay of the same request)."),
        errors::BadInput, errors::NotFound, errors::BodyTimeout,
        errors::KeyReused, errors::BodyTooLarge, errors::Unprocessable,
    ),
)]
pub async fn withdraw(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    fund(req, path, payload, state, true).await
}

async fn fund(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
    withdrawal: bool,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (uid, c) = path.account()?;
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
        let b: FundingRequest = parse_json(&raw)?;
        if b.reference.as_deref().is_some_and(|r| r.contains('\0')) {
            // No store can hold it (Postgres text refuses NUL): a clear 400, not a 503.
            return Err(AdminError::bad(
                "invalid_reference",
                "reference must not contain U+0000",
            ));
        }
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
        let (user_id, reference) = (uid.to_owned(), b.reference.clone());
        let render = move |movement_id: i64, balance: i64| StoredResponse {
            status: 201,
            body: serde_json::to_vec(&FundingReceipt {
                movement_id,
                kind: if withdrawal {
                    FundingKind::Withdrawal
                } else {
                    FundingKind::Deposit
                },
                user_id: user_id.clone(),
                currency: c.code().to_owned(),
                amount: format_minor(minor, c.exponent()),
                available: format_minor(balance, c.exponent()),
                reference: reference.clone(),
            })
            .unwrap_or_default(),
        };
        let stored = match crate::service::fund(&state, &call, Box::new(render)).await? {
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
                return Err(AdminError::unprocessable(
                    "insufficient_funds",
                    "A withdrawal cannot overdraw the account",
                ));
            }
            FundingOutcome::BalanceOutOfRange => {
                return Err(AdminError::unprocessable(
                    "balance_out_of_range",
                    "The deposit would take the balance beyond what the ledger can hold",
                ));
            }
        };
        Ok(
            HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK))
                .content_type("application/json")
                .body(stored.body),
        )
    })
    .await
}

/// A page size checked against `1..=max`; `default` when none is asked for.
pub(crate) fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(AdminError::bad(
            "invalid_limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// The id a page's `next_cursor` stands for; `None` (no cursor): the first page.
pub(crate) fn cursor(text: Option<&str>) -> Result<Option<i64>> {
    match text {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| AdminError::bad("invalid_cursor", "cursor is not one we issued")),
    }
}

/// The first `limit` of `rows` (read one past a page) and the next page's cursor: `key` of
/// the last row shown, when there are more.
pub(crate) fn page_of<T, K>(rows: &[T], limit: i64, key: impl Fn(&T) -> K) -> (&[T], Option<K>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() > limit {
        let page = &rows[..limit];
        (page, page.last().map(key))
    } else {
        (rows, None)
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub(crate) limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// A reservation a two-phase channel asked for.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReservationPath {
    /// The channel's key name (`channels.keys[].name`).
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\ufffd]+$"
    )]
    channel: String,
    /// The channel's `reservation_id`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\ufffd]+$"
    )]
    reservation_id: String,
}

/// What was decided for a channel's reservation, and why.
#[derive(Serialize, ToSchema)]
pub struct ReservationRecord {
    pub channel: String,
    pub reservation_id: String,
    /// The exact answer the channel got (and gets again for a resend).
    pub answer: Value,
    /// The checks run, in order, with their inputs (the account's balance, held and
    /// available amounts and legacy limits, the card, each spending control with the limit
    /// and what its window had counted), and the outcome: as an authorization's. `null` for
    /// a reservation decided before explanations were kept.
    #[schema(value_type = Option<Object>)]
    pub explanation: Option<Value>,
    pub decided_at_ms: i64,
}

/// What was decided for a channel's reservation, and why (approved or declined)
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/reservations/{reservation_id}",
    operation_id = "getReservationDecision",
    tag = "admin",
    params(ReservationPath),
    responses(
        (status = 200, description = "The answer and its explanation.", body = ReservationRecord),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn reservation_decision(
    req: HttpRequest,
    path: web::Path<ReservationPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let ReservationPath {
            channel,
            reservation_id,
        } = path.into_inner();
        printable(&channel, "invalid_channel", "channel")?;
        printable(&reservation_id, "invalid_reservation_id", "reservation id")?;
        let d = state
            .store
            .reader()
            .reservation_decision(&channel, &reservation_id)
            .await?
            .ok_or_else(|| AdminError::not_found("reservation"))?;
        let v = ReservationRecord {
            answer: stored_body(&Some(d.answer.body)),
            explanation: d
                .explanation
                .as_deref()
                .and_then(ledger::plan::render_explanation),
            decided_at_ms: d.decided_at_ms,
            channel,
            reservation_id,
        };
        Ok(json_response(StatusCode::OK, &v))
    })
    .await
}

/// Query of the holds listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HoldsQuery {
    /// Only holds in this state: RESERVED, CAPTURED, CANCELLED or EXPIRED.
    state: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Holds reserved on an account by two-phase channels, newest first, cursor-paginated
#[utoipa::path(
    get,
    path = "/v1/accounts/{user_id}/{currency}/holds",
    operation_id = "listHolds",
    tag = "admin",
    params(AccountPath, HoldsQuery),
    responses(
        (status = 200, description = "One page.", body = HoldsPage),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn holds(
    req: HttpRequest,
    path: web::Path<AccountPath>,
    query: web::Query<HoldsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (uid, c) = path.account()?;
        let limit = page_limit(query.limit, 50, 500)?;
        let hold_state = match query.state.as_deref() {
            None | Some("") => None,
            Some(s) => Some(ledger::holds::HoldState::parse(s).ok_or_else(|| {
                AdminError::bad(
                    "invalid_state",
                    "state must be RESERVED, CAPTURED, CANCELLED or EXPIRED",
                )
            })?),
        };
        let before = cursor(query.cursor.as_deref())?;
        let rows = state
            .store
            .reader()
            .account_holds(uid, c, hold_state, before, limit + 1)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        let (page, next) = page_of(&rows, limit, |r| r.id.to_string());
        let e = c.exponent();
        let items: Vec<HoldItem> = page
            .iter()
            .map(|h| HoldItem {
                id: h.id,
                channel: h.channel.clone(),
                reservation_id: h.reservation_id.clone(),
                state: h.state.as_str().to_owned(),
                amount: format_minor(h.amount, e),
                captured: format_minor(h.captured, e),
                refunded: format_minor(h.refunded, e),
                partial_capture_possible: h.partial_capture_possible,
                expires_at_ms: h.expires_at_ms,
                captured_at_ms: h.captured_at_ms,
                card_id: h.card_id.clone(),
                reference: h.reference.clone(),
                created_at_ms: h.created_at_ms,
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &HoldsPage {
                holds: items,
                next_cursor: next,
            },
        ))
    })
    .await
}

/// Postings of an account, newest first, cursor-paginated
#[utoipa::path(
    get,
    path = "/v1/accounts/{user_id}/{currency}/postings",
    operation_id = "listPostings",
    tag = "admin",
    params(AccountPath, PageQuery),
    responses(
        (status = 200, description = "One page.", body = PostingsPage),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn postings(
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
            .postings(uid, c, limit + 1, before)
            .await?
            .ok_or_else(|| AdminError::not_found("account"))?;
        let (page, next) = page_of(&rows, limit, |r| r.id.to_string());
        let e = c.exponent();
        let items: Vec<Posting> = page
            .iter()
            .map(|p| Posting {
                id: p.id,
                movement_id: p.movement_id,
                kind: p.movement_kind.clone(),
                transaction_id: p.transaction_id.clone(),
                reference: p.reference.clone(),
                amount: format_minor(p.amount, e),
                balance_after: p.balance_after.map(|b| format_minor(b, e)),
                version: p.account_version,
                created_at_ms: p.created_at_ms,
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &PostingsPage {
                postings: items,
                next_cursor: next,
            },
        ))
    })
    .await
}

/// A card we hold a record for, and its rules.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardRequest {
    /// The cardholder the card belongs to, as the processor names it: 1 to 255 visible ASCII
    /// characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
    user_id: String,
    #[schema(inline, value_type = CardStatusName)]
    status: String,
    /// Merchant category codes (four digits) refused on this card.
    #[serde(default)]
    blocked_mccs: Vec<String>,
}

/// Register or update a card and its rules (in force for the next authorization)
///
/// The card id and its holder's user id are the processor's `card.id` and `user.id`: 1 to 255
/// visible ASCII characters each (other ids are refused with `invalid_card_id` or
/// `invalid_user_id`).
#[utoipa::path(
    put,
    path = "/v1/cards/{card_id}",
    operation_id = "putCard",
    tag = "admin",
    params(NewCardPath),
    request_body = CardRequest,
    responses(
        (status = 200, description = "Updated.", body = Card),
        (status = 201, description = "Registered.", body = Card),
        errors::BadInput, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn put_card(
    req: HttpRequest,
    path: web::Path<NewCardPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let card_id = path.into_inner().card_id;
        registered_id(&card_id, "invalid_card_id", "card id")?;
        let b: CardRequest = json_body(&req, payload, &state).await?;
        registered_id(&b.user_id, "invalid_user_id", "user id")?;
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
        card_changed(&state, &card_id).await;
        let v = Card {
            card_id: card.card_id,
            user_id: card.user_id,
            status: card.status.as_str().to_owned(),
            blocked_mccs: card.blocked_mccs.to_list(),
            updated_at_ms: card.updated_at_ms,
        };
        Ok(json_response(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &v,
        ))
    })
    .await
}

/// A stored body as JSON when it is JSON, else as text.
fn stored_body(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// The flags of a comma-separated stored list.
pub(crate) fn flags(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

fn record_json(r: &store::TransactionRecordView) -> TransactionRecord {
    TransactionRecord {
        kind: r.kind.clone(),
        transaction_id: r.transaction_id.clone(),
        endpoint: r.asked.endpoint.clone(),
        direction: r.asked.direction.clone(),
        tx_type: r.asked.tx_type.clone(),
        user_id: r.asked.user_id.clone(),
        card_id: r.asked.card_id.clone(),
        currency: r.asked.currency.clone(),
        amount: r.asked.amount_text.clone(),
        amount_minor: r.amount_minor,
        status: r.status.clone(),
        status_detail: r.status_detail.clone(),
        flags: flags(&r.flags),
        original_transaction_id: r.original_transaction_id.clone(),
        movement_id: r.movement_id,
        verdict: r.verdict.clone(),
        verdict_detail: r.verdict_detail.clone(),
        verdict_movement_id: r.verdict_movement_id,
        request: stored_body(&r.request_body),
        response: stored_body(&r.response_body),
        explanation: r
            .explanation
            .as_deref()
            .and_then(ledger::plan::render_explanation),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

/// What we received, decided and booked for a processor transaction id
#[utoipa::path(
    get,
    path = "/v1/transactions/{transaction_id}",
    operation_id = "getTransaction",
    tag = "admin",
    params(TransactionPath),
    responses(
        (status = 200, description = "The history.", body = TransactionHistory),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn get_transaction(
    req: HttpRequest,
    path: web::Path<TransactionPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let id = path.into_inner().transaction_id;
        if !lookup_id(&id) {
            return Err(AdminError::bad(
                "invalid_transaction_id",
                "transaction id must be non-empty text (percent-encoded UTF-8, no U+0000)",
            ));
        }
        let h = state
            .store
            .reader()
            .transaction_history(&id)
            .await?
            .ok_or_else(|| AdminError::not_found("transaction"))?;
        let movements: Vec<Movement> = h
            .movements
            .iter()
            .map(|m| {
                let exp = exponent_of(&m.currency);
                Movement {
                    id: m.id,
                    kind: m.kind.clone(),
                    currency: m.currency.clone(),
                    transaction_id: m.transaction_id.clone(),
                    created_at_ms: m.created_at_ms,
                    postings: m
                        .postings
                        .iter()
                        .map(|(kind, user, amt)| MovementPosting {
                            account: kind.clone(),
                            user_id: user.clone(),
                            amount: format_minor(*amt, exp),
                        })
                        .collect(),
                }
            })
            .collect();
        let v = TransactionHistory {
            transaction_id: id,
            records: h.records.iter().map(record_json).collect(),
            adjustments: h.linked_adjustments.iter().map(record_json).collect(),
            notifications: h
                .notifications
                .iter()
                .map(|n| NotificationRecord {
                    idempotency_key: n.idempotency_key.clone(),
                    event_id: n.event_id.clone(),
                    verdict: n.verdict.clone(),
                    status_detail: n.status_detail.clone(),
                    effect: n.effect.clone(),
                    flags: flags(&n.flags),
                    movement_id: n.movement_id,
                    received_at_ms: n.received_at_ms,
                })
                .collect(),
            movements,
        };
        Ok(json_response(StatusCode::OK, &v))
    })
    .await
}

/// The process is up
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "Up.", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    json_response(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
            store: None,
            redis: None,
        },
    )
}

/// Ready to serve: the database answers and the server is not draining
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Health),
        (status = 503, description = "Draining, or the database is unreachable.", body = Health),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &Health {
                status: "draining".into(),
                store: None,
                redis: None,
            },
        );
    }
    match state.store.ping().await {
        Ok(()) => json_response(
            StatusCode::OK,
            &Health {
                status: "ready".into(),
                store: Some(state.store.describe().to_owned()),
                // Redis down is degraded, not unready: Postgres serves every request.
                redis: Some(
                    match (state.fleet.is_configured(), state.fleet.healthy()) {
                        (false, _) => "not configured",
                        (true, true) => "ok",
                        (true, false) => "degraded",
                    }
                    .to_owned(),
                ),
            },
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &Health {
                    status: "database unreachable".into(),
                    store: None,
                    redis: None,
                },
            )
        }
    }
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.",
        body = String, content_type = "text/plain")),
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The latest reconciliation run, read from the ledger at scrape time (every instance
    // reports the same figure; the reconciler is a batch job without an endpoint of its own).
    match state.store.runs(1).await {
        Ok(runs) => {
            if let Some(run) = runs.first() {
                state
                    .metrics
                    .set_gauge("authorizer_reconciliation_breaks", &[], run.break_count);
                state.metrics.set_gauge(
                    "authorizer_reconciliation_malformed_rows",
                    &[],
                    run.malformed_rows,
                );
                // A run that failed is not stored: an alert on this growing old (a day and
                // more) sees a reconciliation that stopped, which the counts cannot show.
                state.metrics.set_gauge(
                    "authorizer_reconciliation_finished_timestamp_seconds",
                    &[],
                    run.finished_at_ms / 1000,
                );
                // Breaks or not: rows not read, or a day whose clearing was not checked.
                let unchecked = serde_json::from_str::<serde_json::Value>(&run.summary)
                    .is_ok_and(|s| s["presentments_delivered"] == serde_json::Value::Bool(false));
                state.metrics.set_gauge(
                    "authorizer_reconciliation_incomplete",
                    &[],
                    i64::from(run.malformed_rows > 0 || unchecked),
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the latest reconciliation run"),
    }
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}

fn run_json(r: &store::RunRecord) -> Run {
    Run {
        business_date: r.business_date.clone(),
        status: r.status.clone(),
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        matched: r.matched,
        pending: r.pending,
        presentments_matched: r.presentments_matched,
        breaks: r.break_count,
        malformed_rows: r.malformed_rows,
        summary: serde_json::from_str::<Value>(&r.summary).unwrap_or(Value::Null),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// How many runs, newest first.
    #[param(minimum = 1, maximum = 366, default = 30)]
    limit: Option<i64>,
}

/// Reconciliation runs, newest business date first
#[utoipa::path(
    get,
    path = "/v1/reconciliation/runs",
    operation_id = "listReconciliationRuns",
    tag = "admin",
    params(RunsQuery),
    responses(
        (status = 200, description = "The runs.", body = RunsPage),
        errors::BadInput,
    ),
)]
pub async fn reconciliation_runs(
    req: HttpRequest,
    query: web::Query<RunsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let limit = page_limit(query.limit, 30, 366)?;
        let runs = state.store.reader().runs(limit).await?;
        Ok(json_response(
            StatusCode::OK,
            &RunsPage {
                runs: runs.iter().map(run_json).collect(),
            },
        ))
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreaksQuery {
    /// Only breaks of this class (e.g. `amount_mismatch`).
    class: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// Breaks of one business date's run
#[utoipa::path(
    get,
    path = "/v1/reconciliation/runs/{date}/breaks",
    operation_id = "listReconciliationBreaks",
    tag = "admin",
    params(RunPath, BreaksQuery),
    responses(
        (status = 200, description = "The run and one page of its breaks.", body = BreaksPage),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn reconciliation_breaks(
    req: HttpRequest,
    path: web::Path<RunPath>,
    query: web::Query<BreaksQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let reads = state.store.reader();
        let date = path.into_inner().date;
        // A calendar date, or nothing reaches the store (U+0000 would make it fail).
        if date.len() != 10 || date.parse::<jiff::civil::Date>().is_err() {
            return Err(AdminError::bad(
                "invalid_date",
                "the business date must be a calendar date, YYYY-MM-DD",
            ));
        }
        let limit = page_limit(query.limit, 100, 1000)?;
        if let Some(c) = query.class.as_deref()
            && ledger::reconcile::BreakClass::parse(c).is_none()
        {
            return Err(AdminError::bad(
                "invalid_class",
                format!("no break class '{c}'"),
            ));
        }
        let run = reads
            .run(&date)
            .await?
            .ok_or_else(|| AdminError::not_found("reconciliation run"))?;
        let rows = reads
            .run_breaks(
                &date,
                query.class.as_deref(),
                limit + 1,
                query.cursor.unwrap_or(0),
            )
            .await?;
        let (page, next) = page_of(&rows, limit, |b| b.seq);
        let items: Vec<Break> = page
            .iter()
            .map(|b| {
                let exp = b.currency.as_deref().map_or(2, exponent_of);
                let amt = |v: Option<i64>| v.map(|m| format_minor(m, exp));
                Break {
                    seq: b.seq,
                    class: b.class.clone(),
                    transaction_id: b.transaction_id.clone(),
                    kind: b.kind.clone(),
                    currency: b.currency.clone(),
                    ledger_amount: amt(b.ledger_amount_minor),
                    file_amount: amt(b.file_amount_minor),
                    difference: amt(b.difference_minor),
                    file: b.file.clone(),
                    line: b.line,
                    detail: b.detail.clone(),
                }
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &BreaksPage {
                run: run_json(&run),
                breaks: items,
                next_cursor: next,
            },
        ))
    })
    .await
}

// Response bodies of the admin API. They are what the handlers serialize, and their
// schemas are what docs/openapi.json publishes.

/// A cardholder account. Amounts are decimal strings in the currency's units.
#[derive(Serialize, ToSchema)]
pub struct Account {
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// What can be spent now: `posted - held` (may be negative after adjustments).
    pub available: String,
    /// The posted balance: what the postings sum to.
    pub posted: String,
    /// The sum of the account's RESERVED holds (reserved by a channel, not yet captured,
    /// cancelled or expired).
    pub held: String,
    /// The posted balance in minor units.
    pub balance_minor: i64,
    /// Increases with every posting on the account.
    pub version: i64,
    pub overdraft_limit: String,
    pub per_transaction_limit: Option<String>,
    pub daily_limit: Option<String>,
    pub blocked_mccs: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FundingKind {
    Deposit,
    Withdrawal,
}

/// A booked deposit or withdrawal (replayed identically for a repeated Idempotency-Key).
#[derive(Serialize, ToSchema)]
pub struct FundingReceipt {
    pub movement_id: i64,
    pub kind: FundingKind,
    pub user_id: String,
    pub currency: String,
    pub amount: String,
    /// Available balance after the movement.
    pub available: String,
    pub reference: Option<String>,
}

/// One posting on the account, newest first.
#[derive(Serialize, ToSchema)]
pub struct Posting {
    pub id: i64,
    pub movement_id: i64,
    /// Movement kind, e.g. `AUTHORIZATION`, `DEPOSIT`, `ADJUSTMENT_CREDIT`.
    pub kind: String,
    pub transaction_id: Option<String>,
    pub reference: Option<String>,
    /// Signed decimal: negative takes money from the account.
    pub amount: String,
    pub balance_after: Option<String>,
    pub version: Option<i64>,
    pub created_at_ms: i64,
}

/// A page of holds, newest first.
#[derive(Serialize, ToSchema)]
pub struct HoldsPage {
    pub holds: Vec<HoldItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A hold reserved by a two-phase channel. Amounts are decimal strings.
#[derive(Serialize, ToSchema)]
pub struct HoldItem {
    pub id: i64,
    /// The channel key's name.
    pub channel: String,
    pub reservation_id: String,
    /// RESERVED, CAPTURED, CANCELLED or EXPIRED.
    pub state: String,
    pub amount: String,
    pub captured: String,
    pub refunded: String,
    pub partial_capture_possible: bool,
    pub expires_at_ms: i64,
    pub captured_at_ms: Option<i64>,
    pub card_id: Option<String>,
    pub reference: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PostingsPage {
    pub postings: Vec<Posting>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A card and its rules.
#[derive(Serialize, ToSchema)]
pub struct Card {
    pub card_id: String,
    pub user_id: String,
    #[schema(inline, value_type = CardStatusName)]
    pub status: String,
    pub blocked_mccs: Vec<String>,
    pub updated_at_ms: i64,
}

/// Card status values.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CardStatusName {
    Active,
    Blocked,
    Lost,
    Stolen,
    Closed,
}

/// What we received on one processor route about a transaction, decided and booked.
#[derive(Serialize, ToSchema)]
pub struct TransactionRecord {
    /// `authorization` or `adjustment`.
    pub kind: String,
    pub transaction_id: String,
    pub endpoint: Option<String>,
    pub direction: Option<String>,
    #[serde(rename = "type")]
    pub tx_type: Option<String>,
    pub user_id: Option<String>,
    pub card_id: Option<String>,
    pub currency: Option<String>,
    /// The amount exactly as the processor sent it.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    pub status: Option<String>,
    pub status_detail: Option<String>,
    pub flags: Vec<String>,
    pub original_transaction_id: Option<String>,
    pub movement_id: Option<i64>,
    pub verdict: Option<String>,
    pub verdict_detail: Option<String>,
    pub verdict_movement_id: Option<i64>,
    /// The raw request as received (JSON, or text when it was not JSON).
    pub request: Value,
    /// The exact answer we sent.
    pub response: Value,
    /// Authorizations decided here: the checks run, in order, with their inputs (the
    /// account's balance, held and available amounts, the card, and each spending control
    /// with the limit and what the window had counted), and the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub explanation: Option<Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationRecord {
    pub idempotency_key: String,
    pub event_id: String,
    pub verdict: Option<String>,
    pub status_detail: Option<String>,
    /// `REVERSED`, `FORCED`, `NOOP` or `REVIEW`.
    pub effect: String,
    pub flags: Vec<String>,
    pub movement_id: Option<i64>,
    pub received_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct MovementPosting {
    /// Account kind: `CARDHOLDER`, `CLEARING`, `FUNDING`, `SUSPENSE`.
    pub account: String,
    pub user_id: Option<String>,
    pub amount: String,
}

#[derive(Serialize, ToSchema)]
pub struct Movement {
    pub id: i64,
    pub kind: String,
    pub currency: String,
    pub transaction_id: Option<String>,
    pub created_at_ms: i64,
    pub postings: Vec<MovementPosting>,
}

/// Everything about one processor transaction id.
#[derive(Serialize, ToSchema)]
pub struct TransactionHistory {
    pub transaction_id: String,
    pub records: Vec<TransactionRecord>,
    /// Adjustments whose `original_transaction_id` is this transaction.
    pub adjustments: Vec<TransactionRecord>,
    pub notifications: Vec<NotificationRecord>,
    pub movements: Vec<Movement>,
}

/// `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `draining` or `database unreachable`.
    pub status: String,
    /// Which store is in use (when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The fleet's shared Redis (when ready): `ok`, `degraded` (requests fall back to the
    /// database) or `not configured`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

/// One reconciliation run.
#[derive(Serialize, ToSchema)]
pub struct Run {
    /// `YYYY-MM-DD`.
    pub business_date: String,
    /// `clean`; `breaks`; or `incomplete`: no break, but rows of the files could not be
    /// read (`malformed_rows`), or no presentments file came, so they were not checked.
    pub status: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub matched: i64,
    pub pending: i64,
    pub presentments_matched: i64,
    pub breaks: i64,
    pub malformed_rows: i64,
    /// Totals per currency and counts per class.
    pub summary: Value,
}

#[derive(Serialize, ToSchema)]
pub struct RunsPage {
    pub runs: Vec<Run>,
}

/// One difference between the ledger and the processor's files.
#[derive(Serialize, ToSchema)]
pub struct Break {
    pub seq: i64,
    pub class: String,
    pub transaction_id: String,
    pub kind: Option<String>,
    pub currency: Option<String>,
    pub ledger_amount: Option<String>,
    pub file_amount: Option<String>,
    pub difference: Option<String>,
    /// The file of the row the break comes from: `transactions` or `presentments`, or the
    /// file's own name when the day had several files of that kind; `line` is the row's
    /// line in it (the header is line 1).
    pub file: Option<String>,
    pub line: Option<i64>,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct BreaksPage {
    pub run: Run,
    pub breaks: Vec<Break>,
    pub next_cursor: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::json_error;

    fn error_of(json: &str) -> String {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        enum Kind {
            GiftCard,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Card {
            number: String,
            pin: Option<String>,
            count: Option<u32>,
            kind: Option<Kind>,
        }
        json_error(&serde_json::from_str::<Card>(json).unwrap_err())
    }

    #[test]
    fn a_json_error_names_the_kind_of_value_not_the_value() {
        let e = error_of(r#"{"number": 4111111111111111}"#);
        assert_eq!(
            e,
            "invalid type: integer, expected a string at line 1 column 27"
        );
        let e = error_of(r#"{"number": "1", "pin": 1234}"#);
        assert!(
            e.starts_with("invalid type: integer, expected") && !e.contains("1234"),
            "{e}"
        );
        // A value that holds the words themselves, and a variant that is not one.
        let e = error_of(r#"{"number": "1", "count": "4111, expected x"}"#);
        assert!(
            e.starts_with("invalid type: string, expected u32") && !e.contains("4111"),
            "{e}"
        );
        let e = error_of(r#"{"number": "1", "kind": "4111111111111111"}"#);
        assert!(
            e.starts_with("unknown variant, expected") && !e.contains("4111"),
            "{e}"
        );
        // Errors that carry no value stay as they are.
        assert_eq!(
            error_of(r#"{"pin": "1"}"#),
            "missing field `number` at line 1 column 12"
        );
    }
}
