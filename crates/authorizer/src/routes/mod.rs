//! HTTP routes: the processor's endpoints and the issuer's admin API.

pub mod admin;
pub mod processor;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

/// The one JSON error envelope: `{"error":{"code":..,"message":..}}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } }))
        .unwrap_or_default()
}

/// Reads the raw body, refusing more than `limit` bytes without buffering them.
pub async fn read_body(
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
