//! HTTP routes: the processor's endpoints, the two-phase channels' API and the issuer's
//! admin API.

/// The value in `Ok`, or returns the `Err`: `?` for the handlers whose refusals are
/// answers (a `Reply`, an `Answer`, an `HttpResponse`) rather than errors.
macro_rules! or_answer {
    ($result:expr) => {
        match $result {
            Ok(v) => v,
            Err(answer) => return answer,
        }
    };
}

pub mod admin;
pub mod channels;
pub mod controls;
pub mod instore;
pub mod instore_admin;
pub mod instore_callbacks;
pub mod instore_wallet;
pub mod processor;
pub mod webhooks;

use crate::app::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use std::time::Duration;

/// How long a request body may take to arrive once its head is read (app data).
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// An answer in the JSON error envelope.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(error_body(code, message))
}

/// Path parameters that cannot be decoded (e.g. percent-encoded bytes that are not UTF-8):
/// 400 in the JSON envelope instead of actix's plain-text 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| {
        actix_web::error::InternalError::from_response(
            "path",
            error_response(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "A path parameter is not valid UTF-8 text",
            ),
        )
        .into()
    })
}

/// Query strings that do not fit (e.g. `limit=abc`): 400 in the JSON envelope.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|e, _| {
        let message = format!("Query string refused: {e}");
        actix_web::error::InternalError::from_response(
            "query",
            error_response(StatusCode::BAD_REQUEST, "invalid_query", &message),
        )
        .into()
    })
}

/// The processor routes' network allow-list: `Some(403)` for a peer outside it. The TCP
/// peer decides; forwarding headers are not trusted.
pub fn refuse_peer(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    if state.processor_peers.is_empty() {
        return None;
    }
    let peer = req.peer_addr().map(|a| a.ip());
    if state.processor_peers.allows(peer) {
        return None;
    }
    // The route's pattern, not the path as sent: another spelling of it is no new series.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    state
        .metrics
        .inc("authorizer_forbidden_peers_total", &[("route", &route)]);
    tracing::warn!(
        peer = %peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
        "processor route refused: peer not in processor.allowed_networks"
    );
    Some(error_response(
        StatusCode::FORBIDDEN,
        "forbidden_network",
        "This address may not call the processor routes",
    ))
}

/// The one JSON error envelope: `{"error":{"code":..,"message":..}}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } }))
        .unwrap_or_default()
}

/// A processor route behind the network allow-list.
pub async fn guarded(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    route: processor::Route,
) -> HttpResponse {
    if let Some(refused) = refuse_peer(&req, &state) {
        return refused;
    }
    crate::signed::handle(req, payload, state, route).await
}

/// Reads the raw body, refusing more than `limit` bytes without buffering them, and a body
/// that takes longer than the [`BodyReadTimeout`] in the app data (408).
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    let bound = req
        .app_data::<BodyReadTimeout>()
        .map(|t| t.0)
        .unwrap_or(Duration::from_secs(10));
    match tokio::time::timeout(bound, read_body_unbounded(req, payload, limit)).await {
        Ok(r) => r,
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "body_timeout")),
    }
}

async fn read_body_unbounded(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| (StatusCode::BAD_REQUEST, "body_unreadable"))?;
        if body.len() + chunk.len() > limit {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
