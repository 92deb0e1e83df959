//! The HTTP-level refusals of section 1.4 and their one body shape.
//!
//! Business outcomes (insufficient funds, an unknown card) are never errors of this type:
//! they are results, in the callback or in a bare 200 body.

use crate::json::ObjectBuilder;

/// Why a request is refused before or instead of being processed. Each variant has one
/// stable reason string and one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not admitted by the syntactic parse (section 1.3 step 3), or a repeated query parameter.
    Malformed,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or a value outside its domain (negative amount,
    /// precision outside 0..=18, an unknown `action` or `type`).
    InvalidField,
    /// A stored-value POST action received a bare body.
    EnvelopeRequired,
    RequestIdMismatch,
    CallbackUrlNotAllowed,
    PayloadUrlMismatch,
    NumberMismatch,
    /// Pre-loaded accounts naming different `paymentProcessorId` values.
    MixedProcessors,
    /// One number listed twice in pre-loaded accounts.
    DuplicateAccount,
    /// A bare POA `Credit` with no `x-correlation-id` to key it.
    IdempotencyKeyRequired,
    /// Signature, tenant or `X-API-Key` failure; the body never says which.
    Unauthorized,
    /// Unknown action path (the credit-card actions included), or an unknown log number.
    NotFound,
    IdempotencyConflict,
    PayloadTooLarge,
    /// A duplicate whose first copy did not finish within the in-flight wait.
    RequestInFlight,
    /// Storage unavailable or the commit not done in time; nothing was committed.
    Unavailable,
}

impl ErrorCode {
    /// The stable reason written in `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::MissingField => "MISSING_FIELD",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::EnvelopeRequired => "ENVELOPE_REQUIRED",
            ErrorCode::RequestIdMismatch => "REQUEST_ID_MISMATCH",
            ErrorCode::CallbackUrlNotAllowed => "CALLBACK_URL_NOT_ALLOWED",
            ErrorCode::PayloadUrlMismatch => "PAYLOAD_URL_MISMATCH",
            ErrorCode::NumberMismatch => "NUMBER_MISMATCH",
            ErrorCode::MixedProcessors => "MIXED_PROCESSORS",
            ErrorCode::DuplicateAccount => "DUPLICATE_ACCOUNT",
            ErrorCode::IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RequestInFlight => "REQUEST_IN_FLIGHT",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status of section 1.4's table.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed
            | ErrorCode::MissingField
            | ErrorCode::InvalidField
            | ErrorCode::EnvelopeRequired
            | ErrorCode::RequestIdMismatch
            | ErrorCode::CallbackUrlNotAllowed
            | ErrorCode::PayloadUrlMismatch
            | ErrorCode::NumberMismatch
            | ErrorCode::MixedProcessors
            | ErrorCode::DuplicateAccount
            | ErrorCode::IdempotencyKeyRequired => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::IdempotencyConflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RequestInFlight => 425,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// A refusal: its code, a message for people, and the `requestId` when it could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct InstoreError {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: Option<String>,
}

impl InstoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> InstoreError {
        InstoreError {
            code,
            message: message.into(),
            request_id: None,
        }
    }

    /// The 401 every authentication failure gets: one message, whatever failed, so a caller
    /// cannot probe which check it passed.
    pub fn unauthorized() -> InstoreError {
        InstoreError::new(ErrorCode::Unauthorized, "the request is not authenticated")
    }

    /// The opaque 503.
    pub fn unavailable() -> InstoreError {
        InstoreError::new(
            ErrorCode::Unavailable,
            "temporarily unavailable; nothing was committed, retry the request",
        )
    }

    pub fn missing(field: &str) -> InstoreError {
        InstoreError::new(ErrorCode::MissingField, format!("{field} is required"))
    }

    pub fn invalid(field: &str, why: &str) -> InstoreError {
        InstoreError::new(ErrorCode::InvalidField, format!("{field} {why}"))
    }

    pub fn with_request_id(mut self, request_id: Option<&str>) -> InstoreError {
        if self.request_id.is_none() {
            self.request_id = request_id.map(str::to_owned);
        }
        self
    }

    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// `{"result":"Failure","error":..,"message":..,"requestId":..}`, compact; `requestId`
    /// only when known. 5xx bodies carry no detail beyond the fixed message.
    pub fn body(&self) -> String {
        ObjectBuilder::new()
            .field("result", "Failure")
            .field("error", self.code.as_str())
            .field("message", self.message.as_str())
            .field_opt("requestId", self.request_id.as_deref())
            .to_js()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{js, parse};

    #[test]
    fn body_shape_and_statuses() {
        let e = InstoreError::new(ErrorCode::NumberMismatch, "route and payload disagree")
            .with_request_id(Some("req-1"));
        assert_eq!(e.http_status(), 400);
        assert_eq!(
            e.body(),
            r#"{"result":"Failure","error":"NUMBER_MISMATCH","message":"route and payload disagree","requestId":"req-1"}"#
        );
        let u = InstoreError::unauthorized();
        assert_eq!(u.http_status(), 401);
        assert_eq!(
            u.body(),
            r#"{"result":"Failure","error":"UNAUTHORIZED","message":"the request is not authenticated"}"#
        );
        for (code, status) in [
            (ErrorCode::Malformed, 400),
            (ErrorCode::EnvelopeRequired, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::IdempotencyConflict, 409),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::RequestInFlight, 425),
            (ErrorCode::Unavailable, 503),
        ] {
            assert_eq!(code.http_status(), status);
            let body = InstoreError::new(code, "x\n\"y\"").body();
            assert_eq!(js(&parse(body.as_bytes()).unwrap().value), body);
        }
        assert_eq!(
            InstoreError::unavailable().body(),
            r#"{"result":"Failure","error":"UNAVAILABLE","message":"temporarily unavailable; nothing was committed, retry the request"}"#
        );
    }
}
