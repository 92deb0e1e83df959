//! Admin routes of our event webhooks: subscriptions (created with a secret shown once,
//! validated by the URL challenge of point-integration §3 before any event goes out) and
//! the outbox of deliveries (inspect, redeliver). Registered from the table in
//! [`super::admin`].

use super::admin::{
    AdminError, Result, check_token, json_body, json_response, page_limit, respond,
};
use crate::app::AppState;
use crate::openapi::errors;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::outbox::{DEAD, DELIVERED, EVENT_TYPES, PENDING};
use store::{DeliveryView, Redeliver, SubscriptionView};
use utoipa::{IntoParams, ToSchema};

/// Answers `work` for a caller with the admin token, in the one error envelope.
pub(crate) async fn admin_call(
    req: &HttpRequest,
    state: &AppState,
    work: impl std::future::Future<Output = Result<HttpResponse>>,
) -> HttpResponse {
    let r = match check_token(req, state) {
        Ok(()) => work.await,
        Err(e) => Err(e),
    };
    respond(state, r)
}

/// The longest subscription URL accepted.
const URL_BYTES_MAX: usize = 2048;

/// The subscription or delivery a route names.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// Its id.
    #[param(minimum = 1)]
    pub(crate) id: i64,
}

/// A webhook subscription. Its secret is never shown again after creation.
#[derive(Serialize, ToSchema)]
pub struct Subscription {
    id: i64,
    url: String,
    /// The event types it receives; empty: all of them.
    event_types: Vec<String>,
    /// `PENDING_VALIDATION` until the URL answered the challenge, then `ACTIVE`.
    #[schema(example = "ACTIVE")]
    state: String,
    /// When it first became active: it is owed every event since, also while a new URL
    /// waits for the challenge. Null until then.
    active_since_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<SubscriptionView> for Subscription {
    fn from(v: SubscriptionView) -> Self {
        Subscription {
            id: v.id,
            url: v.url,
            event_types: v.event_types,
            state: v.state,
            active_since_ms: v.active_since_ms,
            created_at_ms: v.created_at_ms,
            updated_at_ms: v.updated_at_ms,
        }
    }
}

/// A new subscription and, this once, its signing secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    subscription: Subscription,
    /// The key of the challenge and of every delivery's `x-signature`. Shown only here.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    subscriptions: Vec<Subscription>,
}

/// Body of a new subscription.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Absolute http or https URL; it must answer the challenge before receiving events.
    url: String,
    /// Event types to receive (see docs/webhooks.md); absent or empty: all.
    #[serde(default)]
    event_types: Vec<String>,
}

/// Body of a URL change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChange {
    /// The new URL: validation starts over.
    url: String,
}

fn checked_url(url: &str) -> Result<()> {
    if url.len() > URL_BYTES_MAX || !processor_client::valid_webhook_url(url) {
        return Err(AdminError::bad(
            "invalid_url",
            "url must be an absolute http or https URL of at most 2048 bytes",
        ));
    }
    Ok(())
}

/// `N` bytes from the OS random source, hex.
fn random_hex<const N: usize>() -> Result<String> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|_| {
        AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "No random source",
        )
    })?;
    Ok(protocol::webhook::hex(&b))
}

/// A fresh signing secret: 32 bytes from the OS random source, hex.
fn new_secret() -> Result<String> {
    Ok(format!("whsec_{}", random_hex::<32>()?))
}

/// Subscribe a URL to our events (it receives none until it passes the challenge)
#[utoipa::path(
    post,
    path = "/v1/webhooks/subscriptions",
    operation_id = "createWebhookSubscription",
    tag = "admin",
    request_body = SubscriptionRequest,
    responses(
        (status = 201, description = "Created, PENDING_VALIDATION; the secret is shown only here.", body = CreatedSubscription),
        errors::BadInput, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn create_subscription(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let b: SubscriptionRequest = json_body(&req, payload, &state).await?;
        checked_url(&b.url)?;
        if let Some(t) = b
            .event_types
            .iter()
            .find(|t| !EVENT_TYPES.contains(&t.as_str()))
        {
            return Err(AdminError::bad(
                "unknown_event_type",
                format!("unknown event type {t}; known: {}", EVENT_TYPES.join(", ")),
            ));
        }
        let mut types = b.event_types.clone();
        types.sort();
        types.dedup();
        let secret = new_secret()?;
        let sub = state
            .store
            .create_subscription(&b.url, &secret, &types, store::now_ms())
            .await?;
        tracing::info!(
            subscription = sub.id,
            url = %processor_client::loggable_url(&sub.url),
            "webhook subscription created"
        );
        Ok(json_response(
            StatusCode::CREATED,
            &CreatedSubscription {
                subscription: sub.into(),
                secret,
            },
        ))
    })
    .await
}

/// Webhook subscriptions
#[utoipa::path(
    get,
    path = "/v1/webhooks/subscriptions",
    operation_id = "listWebhookSubscriptions",
    tag = "admin",
    responses(
        (status = 200, description = "Every subscription, oldest first.", body = SubscriptionList),
    ),
)]
pub async fn list_subscriptions(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    admin_call(&req, &state, async {
        let subs = state.store.reader().subscriptions().await?;
        Ok(json_response(
            StatusCode::OK,
            &SubscriptionList {
                subscriptions: subs.into_iter().map(Subscription::from).collect(),
            },
        ))
    })
    .await
}

/// The answer showing subscription `id` as it is now.
async fn subscription_answer(store: &store::Store, id: i64) -> Result<HttpResponse> {
    let sub = store
        .subscription(id)
        .await?
        .ok_or_else(|| AdminError::not_found("subscription"))?;
    Ok(json_response(StatusCode::OK, &Subscription::from(sub)))
}

/// One webhook subscription
#[utoipa::path(
    get,
    path = "/v1/webhooks/subscriptions/{id}",
    operation_id = "getWebhookSubscription",
    tag = "admin",
    params(IdPath),
    responses(
        (status = 200, description = "The subscription.", body = Subscription),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn get_subscription(
    req: HttpRequest,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        subscription_answer(&state.store.reader(), path.id).await
    })
    .await
}

/// Change a subscription's URL: it receives nothing until the new URL passes the challenge; an active one's events are kept for it meanwhile
#[utoipa::path(
    patch,
    path = "/v1/webhooks/subscriptions/{id}",
    operation_id = "changeWebhookSubscription",
    tag = "admin",
    params(IdPath),
    request_body = SubscriptionChange,
    responses(
        (status = 200, description = "Changed, PENDING_VALIDATION; undelivered events, and those committed until the new URL passes the challenge (for a subscription that was active), follow it to the new URL.", body = Subscription),
        errors::BadInput, errors::NotFound, errors::BodyTimeout, errors::BodyTooLarge,
    ),
)]
pub async fn change_subscription(
    req: HttpRequest,
    path: web::Path<IdPath>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let b: SubscriptionChange = json_body(&req, payload, &state).await?;
        checked_url(&b.url)?;
        if !state
            .store
            .set_subscription_url(path.id, &b.url, store::now_ms())
            .await?
        {
            return Err(AdminError::not_found("subscription"));
        }
        subscription_answer(&state.store, path.id).await
    })
    .await
}

/// Delete a subscription and its secret; its undelivered events become DEAD
#[utoipa::path(
    delete,
    path = "/v1/webhooks/subscriptions/{id}",
    operation_id = "deleteWebhookSubscription",
    tag = "admin",
    params(IdPath),
    responses(
        (status = 204, description = "Deleted."),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn delete_subscription(
    req: HttpRequest,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        if !state
            .store
            .delete_subscription(path.id, store::now_ms())
            .await?
        {
            return Err(AdminError::not_found("subscription"));
        }
        tracing::info!(subscription = path.id, "webhook subscription deleted");
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// Challenge a subscription's URL: `GET <url>?challengeCode=<32 hex>` must answer
/// `{"encrypted_challenge": hex(HMAC-SHA256(secret, challengeCode))}`
#[utoipa::path(
    post,
    path = "/v1/webhooks/subscriptions/{id}/check",
    operation_id = "checkWebhookSubscription",
    tag = "admin",
    params(IdPath),
    responses(
        (status = 200, description = "The URL answered the challenge: ACTIVE.", body = Subscription),
        (status = 400, description = "webhook_validation_failed (the message says why; the subscription stays PENDING_VALIDATION), or invalid input.", body = crate::openapi::ErrorBody),
        errors::NotFound,
    ),
)]
pub async fn check_subscription(
    req: HttpRequest,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let (url, secret) = state
            .store
            .subscription_secret(path.id)
            .await?
            .ok_or_else(|| AdminError::not_found("subscription"))?;
        let code = random_hex::<16>()?;
        let timeout =
            std::time::Duration::from_millis(state.settings.webhooks.challenge_timeout_ms);
        let tls = state.outbound_tls.clone();
        if let Err(why) =
            processor_client::webhook_challenge(&url, &secret, &code, timeout, tls).await
        {
            tracing::info!(subscription = path.id, reason = %why, "webhook challenge failed");
            return Err(AdminError::bad(
                "webhook_validation_failed",
                format!("the URL did not answer the challenge: {why}"),
            ));
        }
        // Active only if the URL is still the one that answered.
        if !state
            .store
            .activate_subscription(path.id, &url, store::now_ms())
            .await?
        {
            return Err(AdminError::bad(
                "webhook_validation_failed",
                "the subscription changed during the challenge",
            ));
        }
        tracing::info!(subscription = path.id, "webhook subscription active");
        subscription_answer(&state.store, path.id).await
    })
    .await
}

/// One delivery of the outbox.
#[derive(Serialize, ToSchema)]
pub struct OutboxDelivery {
    id: i64,
    event_id: String,
    event_type: String,
    /// `None` for a delivery to a configured URL.
    subscription_id: Option<i64>,
    url: String,
    #[schema(example = "PENDING")]
    state: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    last_error: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    delivered_at_ms: Option<i64>,
    /// The exact body sent (JSON; text when it is not). An InStore callback's is left out,
    /// as it carries card numbers: `{"omitted": ..., "body_bytes": .., "body_sha256": ..}`
    /// instead (as `GET /v1/instore/callbacks` shows it).
    #[schema(value_type = Object)]
    body: Value,
}

impl From<DeliveryView> for OutboxDelivery {
    fn from(d: DeliveryView) -> Self {
        let body = if d.event_type == store::instore::CALLBACK_EVENT_TYPE {
            serde_json::json!({
                "omitted": "an InStore callback carries card numbers",
                "body_bytes": d.body.len(),
                "body_sha256": protocol::webhook::hex(&<sha2::Sha256 as sha2::Digest>::digest(&d.body)),
            })
        } else {
            serde_json::from_slice(&d.body)
                .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&d.body).into_owned()))
        };
        OutboxDelivery {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            subscription_id: d.subscription_id,
            url: d.url,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at_ms: d.next_attempt_at_ms,
            last_error: d.last_error,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            delivered_at_ms: d.delivered_at_ms,
            body,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OutboxPage {
    deliveries: Vec<OutboxDelivery>,
    /// `cursor` of the next page; absent on the last.
    next_cursor: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only deliveries in this state: PENDING, DELIVERED or DEAD.
    state: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// Outbox deliveries, newest first
#[utoipa::path(
    get,
    path = "/v1/outbox",
    operation_id = "listOutbox",
    tag = "admin",
    params(OutboxQuery),
    responses(
        (status = 200, description = "A page of deliveries.", body = OutboxPage),
        errors::BadInput,
    ),
)]
pub async fn list_outbox(
    req: HttpRequest,
    query: web::Query<OutboxQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let wanted = query.state.as_deref();
        if wanted.is_some_and(|s| !STATES.contains(&s)) {
            return Err(AdminError::bad(
                "invalid_state",
                "state must be PENDING, DELIVERED or DEAD",
            ));
        }
        let limit = page_limit(query.limit, 100, 1000)?;
        let (rows, next_cursor) =
            outbox_page(&state.store.reader(), None, wanted, query.cursor, limit).await?;
        Ok(json_response(
            StatusCode::OK,
            &OutboxPage {
                deliveries: rows.into_iter().map(OutboxDelivery::from).collect(),
                next_cursor,
            },
        ))
    })
    .await
}

/// The states an outbox listing may ask for.
pub(crate) const STATES: [&str; 3] = [PENDING, DELIVERED, DEAD];

/// A page of the outbox, newest first: the rows of `event_type` (every type when `None`) in
/// state `wanted` (any when `None`) before row `cursor`, and the cursor of the next page
/// (`None` on the last).
pub(crate) async fn outbox_page(
    store: &store::Store,
    event_type: Option<&str>,
    wanted: Option<&str>,
    cursor: Option<i64>,
    limit: i64,
) -> Result<(Vec<DeliveryView>, Option<i64>)> {
    let rows = store
        .deliveries_of(event_type, wanted, cursor, limit)
        .await?;
    let next_cursor = (i64::try_from(rows.len()).unwrap_or(i64::MAX) == limit)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    Ok((rows, next_cursor))
}

/// Puts outbox row `id` back to PENDING, due now (a pending row is left as it is), and
/// returns it as it is then. Not found (404) when there is no such row or it is not of
/// `event_type` (when given).
pub(crate) async fn redeliver_row(
    state: &AppState,
    id: i64,
    event_type: Option<&str>,
) -> Result<DeliveryView> {
    let not_found = || AdminError::not_found("delivery");
    if let Some(t) = event_type {
        let row = state.store.delivery(id).await?.ok_or_else(not_found)?;
        if row.event_type != t {
            return Err(not_found());
        }
    }
    match state.store.redeliver(id, store::now_ms()).await? {
        Redeliver::NotFound => return Err(not_found()),
        Redeliver::Queued => tracing::info!(delivery = id, "delivery queued again"),
        Redeliver::AlreadyPending => {}
    }
    state.store.delivery(id).await?.ok_or_else(not_found)
}

/// Send a DEAD (or DELIVERED) delivery again: back to PENDING, due now, the same bytes
#[utoipa::path(
    post,
    path = "/v1/outbox/{id}/redeliver",
    operation_id = "redeliverOutbox",
    tag = "admin",
    params(IdPath),
    responses(
        (status = 202, description = "PENDING again (or still PENDING): it goes out.", body = OutboxDelivery),
        errors::BadInput, errors::NotFound,
    ),
)]
pub async fn redeliver(
    req: HttpRequest,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> HttpResponse {
    admin_call(&req, &state, async {
        let d = redeliver_row(&state, path.id, None).await?;
        Ok(json_response(
            StatusCode::ACCEPTED,
            &OutboxDelivery::from(d),
        ))
    })
    .await
}
