//! The InStore payment extension routes under `instore.base_path` (`instore-extensions.md`):
//! the stored-value card extension. Every request: the raw bytes (size-limited), the wire
//! crate's verifier (401 with one body whatever failed), the typed payload (400), then the
//! one writer, whose batch books the money and writes the callback's outbox row in one
//! transaction; only after that commit is the request acknowledged. Logs and metrics name
//! the route template, never the concrete path (it can hold a card number).

use crate::app::AppState;
use crate::instore_service::{self, PlanContext, Planner, SvRequest};
use actix_web::http::{Method as HttpMethod, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use instore::body::{CallbackAction, LogEntry};
use instore::payload::{
    self, CardNumber, CardSet, StoredValueCreate, StoredValueLogQuery, StoredValueLookup,
    StoredValueProcess,
};
use instore::verify::{Headers, Rejection};
use instore::{Amount, ErrorCode, InstoreError, Method, Route, Tenant, Tenants};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{InstoreCall, InstoreOutcome};

#[path = "instore_poa.rs"]
pub(crate) mod poa;

/// What the InStore routes share: the validated tenants and the key of the PIN and CVC
/// hashes.
pub struct InstoreState {
    pub tenants: Tenants,
    pub secret_hash_key: Vec<u8>,
}

/// One answer: status, exact bytes, the key to sign them with (once a tenant is known),
/// and the metrics label.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    pub(super) key: Option<Vec<u8>>,
    pub(super) outcome: &'static str,
}

impl Reply {
    pub(super) fn ok(body: Vec<u8>, tenant: &Tenant, outcome: &'static str) -> Reply {
        Reply {
            status: 200,
            body,
            key: Some(tenant.verification_key().to_vec()),
            outcome,
        }
    }

    /// A committed request's acknowledgement, counted as declined or approved.
    pub(super) fn decided(ack: Vec<u8>, tenant: &Tenant, declined: bool) -> Reply {
        Reply::ok(ack, tenant, if declined { "declined" } else { "approved" })
    }

    pub(super) fn error(e: &InstoreError, tenant: Option<&Tenant>) -> Reply {
        Reply {
            status: e.http_status(),
            body: e.body().into_bytes(),
            key: tenant.map(|t| t.verification_key().to_vec()),
            outcome: e.code.as_str(),
        }
    }

    fn into_response(self) -> HttpResponse {
        let mut r = HttpResponse::build(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        r.content_type("application/json");
        // Our signature over the exact bytes; InStore may ignore it.
        if let Some(key) = &self.key {
            r.insert_header(("X-Signature", instore::signature::sign(key, &self.body)));
        }
        r.body(self.body)
    }
}

pub(super) fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn verifier_headers(req: &HttpRequest) -> Headers<'_> {
    Headers {
        x_signature: header(req, "X-Signature"),
        x_api_key: header(req, "X-API-Key"),
        tenant_id: header(req, "tenant_id"),
    }
}

/// Entry point of every path under the base path.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let base = state.settings.instore.base_path.as_str();
    let relative = req.path().strip_prefix(base).unwrap_or_default();
    let method = match *req.method() {
        HttpMethod::GET => Some(Method::Get),
        HttpMethod::POST => Some(Method::Post),
        _ => None,
    };
    let route = method
        .ok_or_else(|| InstoreError::new(ErrorCode::NotFound, "no such InStore action"))
        .and_then(|m| Route::parse(m, relative));
    let (template, reply) = match route {
        Err(e) => ("unknown", Reply::error(&e, None)),
        Ok(route) => {
            let template = route.template();
            let reply = match &route {
                Route::StoredValueCreate
                | Route::StoredValueLookup { .. }
                | Route::StoredValueProcess => post(&req, payload, &state, &route).await,
                Route::StoredValueLog { number } => get(&req, &state, &route, number).await,
                Route::Wallet(action) => {
                    super::instore_wallet::post(&req, payload, &state, &route, *action).await
                }
                Route::PoaProcess | Route::PoaLog => poa::post(&req, payload, &state, &route).await,
                Route::PoaLogQuery { account_number } => {
                    poa::get(&req, &state, &route, account_number.as_deref()).await
                }
            };
            (template, reply)
        }
    };
    let metrics = &state.metrics;
    metrics.inc(
        "instore_requests_total",
        &[("route", template), ("outcome", reply.outcome)],
    );
    metrics.observe(
        "instore_request_duration_seconds",
        &[("route", template)],
        started.elapsed(),
    );
    tracing::info!(
        route = template,
        status = reply.status,
        outcome = reply.outcome,
        correlation_id = header(&req, "x-correlation-id").unwrap_or(""),
        "instore request"
    );
    reply.into_response()
}

/// A refusal of the verifier: 401s are counted by reason (never told to the caller).
/// The verifier's verdict on a request: the refusal to answer, or the request verified
/// (`form`: which signed form matched, counted).
fn admitted<V>(
    state: &AppState,
    route: &Route,
    verdict: Result<V, Rejection>,
    form: fn(&V) -> instore::MatchedForm,
) -> Result<V, Reply> {
    let verified = verdict.map_err(|r| refused(state, route, &r))?;
    state.metrics.inc(
        "instore_signature_matches_total",
        &[("form", form(&verified).as_str())],
    );
    Ok(verified)
}

fn refused(state: &AppState, route: &Route, r: &Rejection) -> Reply {
    if let Some(reason) = r.auth_failure {
        state.metrics.inc(
            "instore_signature_failures_total",
            &[("reason", reason.as_str())],
        );
        tracing::warn!(
            route = route.template(),
            reason = reason.as_str(),
            "instore request not authenticated"
        );
    }
    Reply::error(&r.error, None)
}

/// Reads the verified payload as the route's typed request.
fn read_request(route: &Route, value: &instore::Value) -> Result<SvRequest, InstoreError> {
    Ok(match route {
        Route::StoredValueCreate => SvRequest::Create(StoredValueCreate::read(value)?),
        Route::StoredValueLookup { .. } => {
            let lookup = StoredValueLookup::read(value)?;
            let cards = lookup
                .card_set()
                .map_err(|e| e.with_request_id(Some(&lookup.context.request_id)))?;
            SvRequest::Lookup { lookup, cards }
        }
        _ => {
            let process = StoredValueProcess::read(value)?;
            let cards = match &process {
                StoredValueProcess::Move {
                    number,
                    accounts,
                    context,
                    ..
                } => Some(
                    CardSet::build(number, None, accounts)
                        .map_err(|e| e.with_request_id(Some(&context.request_id)))?,
                ),
                StoredValueProcess::Cancel { .. } => None,
            };
            SvRequest::Process { process, cards }
        }
    })
}

/// For `POSSIBLE_DUPLICATE`: the card, session, reference, movement kind and signed amount
/// of a Load or Redeem whose amount reads as money.
fn duplicate_probe(request: &SvRequest) -> Option<(String, String, String, &'static str, i64)> {
    let SvRequest::Process {
        process:
            StoredValueProcess::Move {
                action,
                number,
                amount,
                session_id,
                reference,
                ..
            },
        ..
    } = request
    else {
        return None;
    };
    let (_, minor) = amount.resolve().ok()?;
    let (kind, signed) = match action {
        payload::MoneyAction::Load => (ledger::instore::KIND_SV_LOAD, minor),
        payload::MoneyAction::Redeem => (ledger::instore::KIND_SV_REDEEM, -minor),
    };
    Some((
        number.as_str().to_owned(),
        session_id.clone(),
        reference.clone(),
        kind,
        signed,
    ))
}

/// The raw body, size-limited, through the verifier: the verified request, or the answer
/// that refuses it.
pub(super) async fn read_verified<'s>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &'s AppState,
    route: &Route,
) -> Result<instore::VerifiedPost<'s>, Reply> {
    let settings = &state.settings.instore;
    let body = match super::read_body(req, payload, settings.body_bytes_max).await {
        Ok(b) => b,
        Err((status, _)) if status == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Reply::error(
                &InstoreError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the body exceeds {} bytes", settings.body_bytes_max),
                ),
                None,
            ));
        }
        Err((status, _)) => {
            let mut r = Reply::error(
                &InstoreError::new(ErrorCode::Malformed, "the body could not be read in time"),
                None,
            );
            r.status = status.as_u16();
            return Err(r);
        }
    };
    let tenants = &state.instore.tenants;
    let verdict = instore::verify_post(
        tenants,
        route,
        verifier_headers(req),
        &body,
        settings.body_bytes_max,
    );
    admitted(state, route, verdict, |v| v.matched)
}

async fn post(req: &HttpRequest, payload: web::Payload, state: &AppState, route: &Route) -> Reply {
    let settings = &state.settings.instore;
    let verified = or_answer!(read_verified(req, payload, state, route).await);
    let tenant = verified.tenant;
    let Some(envelope) = verified.envelope.as_ref() else {
        // The verifier refuses a bare body on these routes; never reached.
        return Reply::error(
            &InstoreError::new(ErrorCode::EnvelopeRequired, "an envelope is required"),
            Some(tenant),
        );
    };
    let request = match read_request(route, &verified.payload.value) {
        Ok(r) => r,
        Err(e) => {
            return Reply::error(&e.with_request_id(Some(&envelope.request_id)), Some(tenant));
        }
    };
    let request_id = envelope.request_id.as_str();
    let correlation_id = header(req, "x-correlation-id");
    let request_hash =
        payload::request_hash(&verified.payload.value, &state.instore.secret_hash_key);
    let action = request.action();
    let (location_id, workstation_id) = request.location();
    let call = InstoreCall {
        tenant_id: tenant.tenant_id.clone(),
        request_id: request_id.to_owned(),
        action: action.as_str(),
        request_hash,
        request_hash_unkeyed: payload::request_hash_unkeyed(&verified.payload.value),
        callback_url: envelope.callback_url.clone(),
        correlation_id: correlation_id.map(str::to_owned),
        numbers: request.numbers(),
        operation: request.operation().map(str::to_owned),
        duplicate_probe: duplicate_probe(&request),
        location_id: location_id.to_owned(),
        workstation_id: workstation_id.map(str::to_owned),
        now_ms: store::now_ms(),
        poa: None,
        deadline: None,
    };
    let ctx = PlanContext {
        tenant,
        request_id,
        correlation_id,
        secret_hash_key: &state.instore.secret_hash_key,
        pin_tries_max: settings.pin_tries_max,
        card_number_prefix: &settings.card_number_prefix,
        now_ms: call.now_ms,
    };
    let planner = Arc::new(Planner::new(request, &ctx));
    let outcome = instore_service::execute(state, call, planner.clone()).await;
    match outcome {
        Ok(InstoreOutcome::Done { ack }) => {
            let notes = planner.notes();
            answer_delay().await;
            let m = &state.metrics;
            m.add(
                "instore_injected_balance_mismatch_total",
                &[],
                notes.injected_mismatches,
            );
            if notes.possible_duplicate {
                m.inc("instore_possible_duplicates_total", &[]);
            }
            tracing::info!(
                route = route.template(),
                tenant = %tenant.tenant_id,
                request_id,
                action = action.as_str(),
                decision = notes.declined.map_or("approved", |r| r.as_str()),
                "instore request committed"
            );
            Reply::decided(ack, tenant, notes.declined.is_some())
        }
        Ok(InstoreOutcome::Replay { ack }) => Reply::ok(ack, tenant, "replay"),
        Ok(InstoreOutcome::Conflict) => Reply::error(
            &InstoreError::new(
                ErrorCode::IdempotencyConflict,
                "this requestId was used with another action or payload",
            )
            .with_request_id(Some(request_id)),
            Some(tenant),
        ),
        Err(e) => {
            tracing::error!(route = route.template(), request_id, error = %e, "instore request not committed");
            Reply::error(
                &InstoreError::unavailable().with_request_id(Some(request_id)),
                Some(tenant),
            )
        }
    }
}

/// Test-only fault: `AUTHORIZER_FAULT_INSTORE_ANSWER_DELAY_MS` holds a freshly committed
/// request's acknowledgement this long, so that a test can kill the process between the
/// commit and the answer and check that InStore's retry replays it. Unset: no delay.
pub(super) async fn answer_delay() {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let delay = *DELAY.get_or_init(|| {
        std::env::var("AUTHORIZER_FAULT_INSTORE_ANSWER_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    });
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
}

/// `created_at` of a log entry: RFC 3339 UTC with milliseconds.
pub(super) fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn log_action(kind: &str) -> CallbackAction {
    match kind {
        ledger::instore::KIND_SV_REDEEM => CallbackAction::Redeem,
        ledger::instore::KIND_SV_CANCEL => CallbackAction::Cancel,
        _ => CallbackAction::Load,
    }
}

/// The verifier's verdict on a GET of `route`: the request, or the answer refusing it.
fn verified_get<'s>(
    req: &HttpRequest,
    state: &'s AppState,
    route: &Route,
) -> Result<instore::VerifiedGet<'s>, Reply> {
    let verdict = instore::verify_get(
        &state.instore.tenants,
        route,
        verifier_headers(req),
        req.query_string(),
    );
    admitted(state, route, verdict, |v| v.matched)
}

/// What a log read asked for: its card number and its query's parameters, by name (a
/// repeat need not keep their order), but not the page (`cursor`, `limit`: the pages of
/// one card's log may share a requestId). SHA-256 over lengths and bytes.
fn read_fingerprint(number: &str, params: &[(String, String)]) -> [u8; 32] {
    let mut sorted: Vec<&(String, String)> = params
        .iter()
        .filter(|(n, _)| n != "cursor" && n != "limit")
        .collect();
    sorted.sort();
    let mut h = Sha256::new();
    for part in
        std::iter::once(number).chain(sorted.iter().flat_map(|(n, v)| [n.as_str(), v.as_str()]))
    {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// `GET storedvaluelog/{number}`: the card's InStore movements, newest first, in the answer.
async fn get(req: &HttpRequest, state: &AppState, route: &Route, number: &str) -> Reply {
    let verified = or_answer!(verified_get(req, state, route));
    let tenant = verified.tenant;
    let fail = |e: InstoreError| Reply::error(&e, Some(tenant));
    let query = match StoredValueLogQuery::read(&verified.params) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let request_id = query.context.request_id.as_str();
    let number = match CardNumber::parse(number, "number") {
        Ok(n) => n,
        Err(e) => return fail(e.with_request_id(Some(request_id))),
    };
    let before = match query.cursor.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(c)) if c > 0 => Some(c),
        Some(_) => {
            return fail(
                InstoreError::invalid("cursor", "is not a cursor this log gave")
                    .with_request_id(Some(request_id)),
            );
        }
    };
    let unavailable = |e: store::StoreError| {
        tracing::error!(route = route.template(), error = %e, "instore log not read");
        fail(InstoreError::unavailable().with_request_id(Some(request_id)))
    };
    // §1.3: the signature may leave the number out, so the requestId is bound to the one
    // card and parameters it first read (its namespace is the enveloped requests').
    match state
        .store
        .instore_read_key(
            &tenant.tenant_id,
            request_id,
            &read_fingerprint(number.as_str(), &verified.params),
            store::now_ms(),
        )
        .await
    {
        Ok(store::ReadKey::Fresh | store::ReadKey::Repeat) => {}
        Ok(store::ReadKey::Conflict) => {
            return fail(
                InstoreError::new(
                    ErrorCode::IdempotencyConflict,
                    "requestId was used before with another card, other parameters or another action",
                )
                .with_request_id(Some(request_id)),
            );
        }
        Err(e) => return unavailable(e),
    }
    let card = match state
        .store
        .reader()
        .instore_card(number.as_str(), &tenant.tenant_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return fail(
                InstoreError::new(ErrorCode::NotFound, "no such stored-value card")
                    .with_request_id(Some(request_id)),
            );
        }
        Err(e) => return unavailable(e),
    };
    let limit = usize::from(query.limit);
    let mut rows = match state
        .store
        .reader()
        .instore_log(number.as_str(), before, i64::from(query.limit) + 1)
        .await
    {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let next = (rows.len() > limit).then(|| rows[limit - 1].movement_id.to_string());
    rows.truncate(limit);
    let currency = card.account.currency;
    let times: Vec<String> = rows.iter().map(|r| rfc3339_ms(r.created_at_ms)).collect();
    let entries: Vec<LogEntry<'_>> = rows
        .iter()
        .zip(&times)
        .map(|(r, t)| LogEntry {
            created_at: t,
            action: log_action(&r.kind),
            amount: Amount::new(r.amount_minor, currency),
            balance: Amount::new(r.balance_after_minor, currency),
            external_transaction_id: &r.external_transaction_id,
            external_payment_id: &r.external_payment_id,
            reference: r.reference.as_deref(),
            session_id: r.session_id.as_deref(),
            location_id: &r.location_id,
            workstation_id: r.workstation_id.as_deref(),
        })
        .collect();
    let balance = Amount::new(
        card.account.balance.saturating_sub(card.account.held),
        currency,
    );
    let body = instore::body::log_body(request_id, &number, balance, &entries, next.as_deref());
    Reply::ok(body.into_bytes(), tenant, "log")
}
