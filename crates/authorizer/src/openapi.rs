//! The OpenAPI 3.1 document of every route, built from the code. Served at
//! `GET /openapi.json`; committed as `docs/openapi.json` (regenerate with
//! `cargo run -p authorizer -- openapi > docs/openapi.json`; a test fails while the two differ).
//!
//! - The admin and operations routes are documented on their handlers, `#[utoipa::path]`
//!   (in [`crate::routes::admin`], and [`serve`] here), and merged from [`admin::AdminApi`].
//!   One table in `routes::admin` both registers those routes (`admin::configure`) and lists
//!   the handlers the document is generated from, so a route cannot be registered without
//!   its attribute (it does not compile), and a test checks every registered (method, path)
//!   against the document, so an attribute cannot name another path or method than the
//!   server serves.
//! - The processor routes come from [`Route::ALL`] and the channel routes from
//!   [`ChannelRoute::ALL`], the tables the server registers, one operation per entry. One
//!   handler serves every entry of each table (the route is a value, not a function), so
//!   there is no per-route handler to carry an attribute; the operations are built per
//!   table entry below with an exhaustive `match` over the route enums, which cannot drift:
//!   a route added to an enum does not compile until it is documented here, and one added
//!   to a table is documented as the server registers it (a channel route's method comes
//!   from the same `is_post()`).
//! - The bodies come from the wire, channel and admin types' `ToSchema` derives; the
//!   handlers' bodies are collected from their attributes.
use crate::channel_service;
use crate::routes::admin;
use crate::routes::channels::{self, ChannelRoute};
use crate::routes::processor::Route;
use protocol::wire;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref,
    RefOr, Required, ResponseBuilder, tag::TagBuilder,
};

/// The one error envelope of every route.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"error": {"code": "malformed_request", "message": "missing field `amount` at line 1 column 42"}})))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `unauthorized`, `malformed_request`, `idempotency_key_reused`.
    pub code: String,
    /// Human-readable; never repeats secrets or card data.
    pub message: String,
}

/// What a notification changed.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationEffect {
    /// A movement we booked was reversed (the processor rejected it).
    Reversed,
    /// A transaction we declined or never saw was booked (the processor approved it).
    Forced,
    /// Stored; nothing to change.
    Noop,
    /// Stored for review: the body could not be fully read.
    Review,
}

/// Answer to a stored notification (the processor resends until it gets a 2xx).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct NotificationAnswer {
    pub message: String,
    pub effect: NotificationEffect,
}

/// Where a schema sits in the document: `#/components/schemas/<name>`.
pub fn component_ref<T: ToSchema>() -> String {
    Ref::from_schema_name(T::name()).ref_location
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn string_schema(pattern: Option<&str>, min: Option<usize>, max: Option<usize>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(pattern)
        .min_length(min)
        .max_length(max)
}

fn json_content(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

/// JSON content of any object.
fn any_object() -> utoipa::openapi::Content {
    json_content(RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .build(),
    )))
}

/// `true` as `Required::True`, `false` as `Required::False`.
fn required(required: bool) -> Required {
    if required {
        Required::True
    } else {
        Required::False
    }
}

fn header_param(
    name: &str,
    required: bool,
    schema: ObjectBuilder,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    param(ParameterIn::Header, name, required, schema, description)
}

fn param(
    location: ParameterIn,
    name: &str,
    is_required: bool,
    schema: ObjectBuilder,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(required(is_required))
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// The headers of a request signed like the processor's: x-api-key, x-signature, x-timestamp
/// and x-endpoint, all required, with these descriptions.
fn signature_headers(descriptions: [&str; 4]) -> Vec<utoipa::openapi::path::Parameter> {
    let [key, signature, timestamp, endpoint] = descriptions;
    vec![
        header_param("x-api-key", true, string_schema(None, Some(1), None), key),
        header_param(
            "x-signature",
            true,
            string_schema(Some(SIGNATURE_PATTERN), None, None),
            signature,
        ),
        header_param(
            "x-timestamp",
            true,
            string_schema(Some("^[0-9]{1,12}$"), None, None),
            timestamp,
        ),
        header_param(
            "x-endpoint",
            true,
            string_schema(None, Some(1), None),
            endpoint,
        ),
    ]
}

/// A hand-built operation: its id, tag, summary, description and parameters.
fn operation(
    operation_id: &str,
    tag: &str,
    summary: &str,
    description: &str,
    params: Vec<utoipa::openapi::path::Parameter>,
) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(operation_id))
        .tag(tag)
        .summary(Some(summary))
        .description(Some(description))
        .parameters(Some(params))
}

/// Printable text: no control characters, no U+FFFD (what undecodable escapes become).
const PRINTABLE_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f\ufffd]+$";

fn path_param(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    let schema = if name == "currency" {
        string_schema(Some("^[A-Z]{3}$"), None, None)
    } else if name == "date" {
        string_schema(Some("^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), None, None)
    } else {
        string_schema(Some(PRINTABLE_PATTERN), Some(1), Some(255))
    };
    param(ParameterIn::Path, name, true, schema, description)
}

const SIGNATURE_PATTERN: &str = r"^hmac-sha256 [A-Za-z0-9+/]{43}=$";

/// The headers every signed answer carries.
fn signed(mut r: ResponseBuilder) -> ResponseBuilder {
    for (name, schema, description) in [
        (
            "x-signature",
            string_schema(Some(SIGNATURE_PATTERN), None, None),
            "`hmac-sha256 ` + base64 of HMAC-SHA256(secret, X-Timestamp ++ X-Endpoint ++ the exact response body), with the key pair the request named.",
        ),
        (
            "x-timestamp",
            string_schema(Some("^[0-9]{1,12}$"), None, None),
            "Our unix time in seconds when the answer was signed.",
        ),
        (
            "x-endpoint",
            string_schema(None, None, None),
            "The request's X-Endpoint, echoed.",
        ),
    ] {
        r = r.header(
            name,
            HeaderBuilder::new()
                .schema(schema)
                .description(Some(description))
                .build(),
        );
    }
    r
}

fn response(description: &str, body: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json_content(schema_ref(body)))
}

fn error(description: &str) -> ResponseBuilder {
    response(description, "ErrorBody")
}

fn processor_operation(route: Route) -> utoipa::openapi::path::Operation {
    let (operation_id, summary, description, request, answer) = match route {
        Route::Authorization(None) => (
            "authorize",
            "Authorize a card transaction",
            "The direction comes from `transaction.type`. Always 200 once a decision is reached (APPROVED or REJECTED with a status_detail); REJECTED / SYSTEM_ERROR with nothing booked when the ledger cannot answer within the deadline.",
            "TransactionRequest",
            "AuthorizationResponse",
        ),
        Route::Authorization(Some(wire::Direction::Debit)) => (
            "authorizeDebit",
            "Authorize a debit (money leaves the cardholder's account)",
            "As `/transactions/authorizations`, with the direction given by the route.",
            "TransactionRequest",
            "AuthorizationResponse",
        ),
        Route::Authorization(Some(wire::Direction::Credit)) => (
            "authorizeCredit",
            "Authorize a credit (money arrives on the cardholder's account)",
            "As `/transactions/authorizations`, with the direction given by the route.",
            "TransactionRequest",
            "AuthorizationResponse",
        ),
        Route::Adjustment(wire::Direction::Debit) => (
            "adjustDebit",
            "Book a debit the network already made effective",
            "Cannot be refused: always booked (a balance may go negative; an unknown user or currency is parked on suspense and flagged). An optional field of the wrong type (merchant, card, user, amount.transaction, amount.settlement, amount.details, transaction.point_type and the like) is left out and the booking flagged UNREAD_FIELDS; 400 only when transaction.id, type, original_transaction_id or amount.local cannot be read. 503 when it could not be stored: the processor sends it again.",
            "TransactionRequest",
            "AdjustmentResponse",
        ),
        Route::Adjustment(wire::Direction::Credit) => (
            "adjustCredit",
            "Book a credit (refund, reversal, payment, clearing difference)",
            "Cannot be refused: always booked; malformed optional fields are left out as for adjustDebit (flag UNREAD_FIELDS). 503 when it could not be stored: the processor sends it again.",
            "TransactionRequest",
            "AdjustmentResponse",
        ),
        Route::Notification => (
            "notify",
            "Store the processor's final verdict on a transaction",
            "Deduplicated on `idempotency_key` (body) or x-idempotency-key. A REJECTED verdict reverses a movement we booked (once); an APPROVED verdict for something we declined or never saw books it and flags it. An optional field of event_detail of the wrong type (merchant, card, user, amount.transaction, amount.settlement, amount.details, status_detail and the like) is left out and the verdict applied, flagged UNREAD_FIELDS. A body whose event_id, status, transaction (id, type, original) or amount.local cannot be read, but is a JSON object, is still stored, for review (effect REVIEW). 503 when it could not be stored.",
            "Notification",
            "NotificationAnswer",
        ),
    };
    let idempotency_required = route != Route::Notification;
    let mut params = signature_headers([
        "Which key pair signed the request.",
        "`hmac-sha256 ` + standard base64 of HMAC-SHA256(base64-decoded api secret, X-Timestamp ++ X-Endpoint ++ raw body).",
        "Unix seconds when signed; refused outside processor.authorization_skew_secs (authorizations) or processor.adjustment_skew_secs (adjustments, notifications), both directions.",
        "The path that was signed; must end with (or equal, per processor.endpoint_check) the route called.",
    ]);
    params.push(header_param(
        "x-idempotency-key",
        idempotency_required,
        string_schema(None, Some(1), Some(255)),
        if idempotency_required {
            "Same key = same logical request: a finished duplicate gets the identical answer, re-signed."
        } else {
            "Used when the body has no idempotency_key."
        },
    ));
    let mut op = operation(operation_id, "processor", summary, description, params)
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .description(Some(
                    "Raw JSON; the signature covers these exact bytes. Unknown fields are accepted and kept; a duplicated key in a typed object is refused (400), except on adjustments where the field can be left out (see the operation).",
                ))
                .content("application/json", json_content(schema_ref(request)))
                .build(),
        ))
        .security(SecurityRequirement::new("processorSignature", Vec::<String>::new()))
        .response("200", signed(response("Answered, signed.", answer)).build())
        .response(
            "400",
            signed(error(
                "The body is not a request of this kind (not UTF-8 JSON, a field of the wrong type, an amount with leading zeros, an id that breaks the id rule: 1 to 255 visible ASCII characters; on adjustments only in transaction.id, type, original_transaction_id or amount.local, the rest being left out), or x-idempotency-key is missing or breaks that rule; the message names the field; nothing stored. Signed.",
            ))
            .build(),
        )
        .response(
            "401",
            error("Signature not accepted (unknown key, bad or missing signature, stale or future timestamp, other endpoint). Not signed; says nothing about which check failed; nothing stored.").build(),
        )
        .response(
            "403",
            error("The peer address is not in processor.allowed_networks. Not signed.").build(),
        )
        .response(
            "408",
            error("The body did not arrive within server.body_read_ms_max. Not signed.").build(),
        )
        .response(
            "409",
            signed(error(
                "This x-idempotency-key was used with another body (idempotency_key_reused), or this transaction.id was answered before under another key and this request asks for other money: another amount, currency, direction, route, type, user or card (transaction_id_reused); nothing booked. Signed.",
            ))
            .build(),
        )
        .response(
            "413",
            error("The body is larger than server.body_bytes_max. Not signed.").build(),
        )
        .response(
            "425",
            signed(error(
                "The same request is still being processed; retry shortly. Signed.",
            ))
            .build(),
        );
    if !matches!(route, Route::Authorization(_)) {
        op = op.response(
            "503",
            signed(error("Not stored, or not yet (the database did not answer within processor.answer_ms_max: the commit may still finish); send it again under the same key, which replays it if it was stored. Signed.")).build(),
        );
    }
    op.build()
}

fn channel_operation(route: ChannelRoute) -> utoipa::openapi::path::Operation {
    let (operation_id, summary, description, request, answer) = match route {
        ChannelRoute::Reserve => (
            "reserve",
            "Reserve (hold) an amount on a cardholder account",
            "The authorization's decision and vocabulary, with funds = available + overdraft (available = posted - held). APPROVED holds the amount (no money moves); REJECTED is recorded: the same reservation_id and body replays it, another body is 409 RESERVATION_ID_REUSED. Answered within processor.deadline_ms; REJECTED / SYSTEM_ERROR with nothing held when the ledger cannot answer in time; 503 when the connection was lost while the commit was answered (the hold may stand): send the same key again to hear what was committed.",
            Some(("ReserveBody", true)),
            "ChannelResponse",
        ),
        ChannelRoute::Capture => (
            "captureReservation",
            "Capture a reservation, fully or partly; the remainder is released",
            "Moves the captured amount (HOLD_CAPTURE against PoS clearing). Capturing again with the same amount replays the first answer; with another amount: 409 CAPTURED_WITH_DIFFERENT_AMOUNT. 409 NOT_RESERVED, EXPIRED, AMOUNT_EXCEEDS_RESERVED, PARTIAL_CAPTURE_NOT_POSSIBLE; 400 INVALID_AMOUNT. 503 with nothing committed: send it again.",
            Some(("CaptureBody", false)),
            "ChannelResponse",
        ),
        ChannelRoute::Cancel => (
            "cancelReservation",
            "Cancel a reservation; the hold is released",
            "Body `{}` or empty. Again: 200, the same answer. 409 ALREADY_CAPTURED, EXPIRED. 503 with nothing committed: send it again.",
            None,
            "ChannelResponse",
        ),
        ChannelRoute::Refund => (
            "refundReservation",
            "Refund part of a captured reservation; the account is credited at once",
            "HOLD_REFUND against PoS clearing. The same refund_id and body replays; another body: 409 REFUND_ID_REUSED. 409 NOT_CAPTURED, CURRENCY_MISMATCH, PAYMENT_TOO_OLD (holds.refund_window_days and two days after the capture), REFUND_EXCEEDS_CAPTURED; 400 INVALID_AMOUNT. 503 with nothing committed: send it again.",
            Some(("RefundBody", true)),
            "ChannelResponse",
        ),
        ChannelRoute::Get => (
            "getReservation",
            "A reservation with its refunds",
            "An overdue RESERVED hold is expired first.",
            None,
            "ReservationJson",
        ),
    };
    let mut params = signature_headers([
        "A key of [[channels.keys]]; a processor key is refused here.",
        "As on the processor routes: HMAC-SHA256 over X-Timestamp ++ X-Endpoint ++ raw body.",
        "Unix seconds when signed; refused outside channels.skew_secs.",
        "The path that was signed (with the reservation id), per processor.endpoint_check.",
    ]);
    if route.is_post() {
        params.push(header_param(
            "x-idempotency-key",
            true,
            string_schema(None, Some(1), Some(64)),
            "Same key and body: the identical answer, re-signed; another body: 409.",
        ));
    }
    if route != ChannelRoute::Reserve {
        params.push(path_param(
            "reservation_id",
            "The channel's reservation id, 1 to 64 visible ASCII characters, none of / ? # % \\, and not . or ...",
        ));
    }
    let mut op = operation(operation_id, "channels", summary, description, params)
        .security(SecurityRequirement::new("processorSignature", Vec::<String>::new()))
        .response("200", signed(response("Answered, signed.", answer)).build())
        .response(
            "401",
            error("Signature not accepted (unknown key, a processor key, bad or missing signature, stale timestamp, other endpoint). Not signed.").build(),
        );
    if let Some((body, is_required)) = request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(required(is_required)))
                .content("application/json", json_content(schema_ref(body)))
                .build(),
        ));
    }
    if route.is_post() {
        op = op
            .response(
                "400",
                signed(error("Malformed body or id, missing or bad x-idempotency-key, INVALID_AMOUNT, INVALID_EXPIRES_IN_SECS. Signed.")).build(),
            )
            .response(
                "409",
                signed(error("The x-idempotency-key was used with another body (idempotency_key_reused), or a rule of the reservation refuses it (the code names it). Signed.")).build(),
            )
            .response(
                "425",
                signed(error("The same request is still being processed; retry shortly. Signed.")).build(),
            );
    } else {
        op = op.response(
            "400",
            signed(error("A reservation id that breaks the id rule. Signed.")).build(),
        );
    }
    if route != ChannelRoute::Reserve {
        op = op
            .response(
                "404",
                signed(error(
                    "No reservation with this id for this channel (NOT_FOUND). Signed.",
                ))
                .build(),
            )
            .response(
                "503",
                signed(error("Nothing committed; send it again later. Signed.")).build(),
            );
    } else {
        op = op.response(
            "503",
            signed(error(
                "The commit's answer was lost: the hold may stand. Send the same key again to hear what was committed. Signed.",
            ))
            .build(),
        );
    }
    op.build()
}

/// The refusal body of the InStore routes (section 1.4 of the InStore page).
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"result": "Failure", "error": "NUMBER_MISMATCH", "message": "the route's number differs from payload.number", "requestId": "req-9a8b0002"})))]
pub struct InstoreErrorBody {
    /// Always `Failure`.
    pub result: String,
    /// Stable UPPER_SNAKE reason: MALFORMED, MISSING_FIELD, INVALID_FIELD, ENVELOPE_REQUIRED,
    /// REQUEST_ID_MISMATCH, CALLBACK_URL_NOT_ALLOWED, PAYLOAD_URL_MISMATCH, NUMBER_MISMATCH,
    /// MIXED_PROCESSORS, DUPLICATE_ACCOUNT, UNAUTHORIZED, NOT_FOUND, IDEMPOTENCY_CONFLICT,
    /// PAYLOAD_TOO_LARGE, UNAVAILABLE.
    pub error: String,
    pub message: String,
    /// The request's `requestId`, when it could be read.
    #[serde(rename = "requestId")]
    pub request_id: Option<String>,
}

/// The asynchronous envelope InStore sends to the stored-value POST actions.
#[derive(Serialize, ToSchema)]
pub struct InstoreEnvelope {
    /// The full URL InStore resolved; must end with the action path.
    pub payload_url: String,
    /// The action's payload (the seed's field names); its exact bytes, or their
    /// `JSON.stringify`, are what the signature covers.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// HMAC-SHA256 of the payload with the tenant's verification key, hex or base64; must
    /// agree with X-Signature when both are sent.
    pub verification_signature: Option<String>,
    pub tenant_id: Option<String>,
    /// Must equal `payload.requestId`: the idempotency key.
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// Where the result is POSTed; must start with one of the tenant's callback prefixes.
    #[serde(rename = "callbackUrl")]
    pub callback_url: String,
    /// Accepted, never called.
    #[serde(rename = "statusUrl")]
    pub status_url: Option<String>,
}

/// The acknowledgement of an accepted envelope, sent only after the commit that also
/// wrote its callback.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"requestId": "req-9a8b0001"})))]
pub struct InstoreAck {
    #[serde(rename = "requestId")]
    pub request_id: String,
}

/// One request's line of a pre-loaded accounts acknowledgement.
#[derive(Serialize, ToSchema)]
pub struct InstoreResult {
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// Present when every account of the request carried this same value.
    #[serde(rename = "paymentProcessorId", skip_serializing_if = "Option::is_none")]
    pub payment_processor_id: Option<String>,
}

/// The acknowledgement of a `storedvaluecard_process` envelope with pre-loaded `accounts`
/// (section 2.6 of the InStore page): our one request's line.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"results": [{"requestId": "req-9a8b0001", "paymentProcessorId": "664f1a2b"}]})))]
pub struct InstoreResults {
    pub results: Vec<InstoreResult>,
}

/// The acknowledgement of `storedvaluecard_process`: `{"requestId"}`, or with pre-loaded
/// `accounts` `{"results":[..]}`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum InstoreProcessAck {
    Ack(InstoreAck),
    Results(InstoreResults),
}

/// The operation id of `storedvaluecard_process`, the one action whose acknowledgement may be
/// [`InstoreResults`].
const INSTORE_PROCESS: &str = "instoreProcessStoredValue";

/// The stored-value and pay-on-account routes under `instore.base_path` (documented at its
/// default, `/instore`): (path, is a POST, operation id, summary, description).
pub const INSTORE_ROUTES: [(&str, bool, &str, &str, &str); 8] = [
    (
        "/instore/storedvaluecard",
        true,
        "instoreCreateStoredValueCard",
        "InStore: issue a stored-value card",
        "Creates a card, its own account and (with a positive balance) the opening SV_LOAD. The number is generated (instore.card_number_prefix, Luhn) and told only in the callback.",
    ),
    (
        "/instore/storedvaluecard/{number}",
        true,
        "instoreLookupStoredValueCard",
        "InStore: look a stored-value card up",
        "Balance (posted - held) and status in the callback; a wrong PIN counts toward instore.pin_tries_max. A card of another tenant reads as unknown.",
    ),
    (
        "/instore/storedvaluecard_process",
        true,
        INSTORE_PROCESS,
        "InStore: Load, Redeem or Cancel",
        "Load credits and Redeem debits the card's account against INSTORE_CLEARING (a Redeem spends posted - held + overdraft, like a card authorization); Cancel reverses a whole operation at most once. With pre-loaded accounts the acknowledgement is {\"results\":[..]}.",
    ),
    (
        "/instore/storedvaluelog/{number}",
        false,
        "instoreStoredValueLog",
        "InStore: a stored-value card's log",
        "Query: requestId, locationId, workstationId?, limit (1..500), cursor. The InStore movements of the number, newest first, in the answer. Signed over JS of the query parameters, or the raw query.",
    ),
    (
        "/instore/payonaccount/process",
        true,
        "instorePayOnAccount",
        "InStore: pay on account (Create, Credit, Inquiry, Update)",
        "Bare (the answer is the result) or enveloped (acknowledged, the result called back). Credit charges the sale to the account (POA_CHARGE against INSTORE_CLEARING) while owed + amount <= credit limit; a bare Credit is keyed by x-correlation-id and refused without it (IDEMPOTENCY_KEY_REQUIRED).",
    ),
    (
        "/instore/payonaccountlog",
        true,
        "instorePayOnAccountLog",
        "InStore: store a pay-on-account log record",
        "Stored and echoed; no money moves. Idempotent on (account_number, session_id, order_id, action); another body under that key gets 409. An approved Credit matching no charge of the previous 24 h is flagged LOG_WITHOUT_CHARGE.",
    ),
    (
        "/instore/payonaccountlog/{account_number}",
        false,
        "instorePayOnAccountLogs",
        "InStore: an account's pay-on-account log",
        "The records, newest first, each with received_at. Signed over JS of {\"account_number\":..}, or of the query parameters, or the raw query.",
    ),
    (
        "/instore/payonaccountlog/",
        false,
        "instorePayOnAccountLogsByQuery",
        "InStore: an account's pay-on-account log (query form)",
        "As payonaccountlog/{account_number}, the account named by the query parameter account_number.",
    ),
];

/// The wallet actions under `instore.base_path` (section 4): (path, operation id, summary,
/// description). Each takes a bare body (the seed's fields, answered at once) or an
/// envelope (acknowledged, the answer then sent to callbackUrl).
pub const WALLET_ROUTES: [(&str, &str, &str, &str); 6] = [
    (
        "/instore/initialize_wallet",
        "instoreInitializeWallet",
        "InStore wallet: initialize",
        "Body: location_id. Success for a configured tenant; no state.",
    ),
    (
        "/instore/pay_wallet",
        "instorePayWallet",
        "InStore wallet: pay with a barcode",
        "Body: barcode, currency, total (minor units at precision 2, tip included), tip, pos_local_time, note. Debits the barcode's account against INSTORE_CLEARING (WALLET_PAYMENT) through the decision of a card authorization (card status, limits, posted - held + overdraft). The barcode is the idempotency key: an identical body replays the answer byte for byte, another body gets code 94; expired 54, unknown 14.",
    ),
    (
        "/instore/available_wallet_refund",
        "instoreAvailableWalletRefund",
        "InStore wallet: what is still refundable",
        "Body: transaction_id, pos_local_time. total: the payment less what was refunded or reversed; unknown 25.",
    ),
    (
        "/instore/cancel_wallet_payment",
        "instoreCancelWalletPayment",
        "InStore wallet: cancel a payment",
        "Reverses (WALLET_REVERSAL, once) the payment a transaction_id or barcode names; without either nothing moves (reversed false). An identical body replays the answer.",
    ),
    (
        "/instore/log_cancel_wallet",
        "instoreLogCancelWallet",
        "InStore wallet: log a cancel",
        "Stored, idempotent on the whole body. A payment named by transaction_id, else barcode, that still stands and whose total and currency match is reversed (the POS timed out on pay_wallet): reversed true.",
    ),
    (
        "/instore/refund_wallet_payment",
        "instoreRefundWalletPayment",
        "InStore wallet: refund a payment",
        "Body: transaction_id, pos_local_time, note. Refunds everything still standing (WALLET_REFUND, a new wtx- id); an identical body replays the answer, another once nothing is left gets code 12; unknown 25.",
    ),
];

/// A wallet action: the InStore POST operation, with a bare body or an envelope and the
/// action's answer.
fn wallet_operation(
    path: &str,
    operation_id: &str,
    summary: &str,
    description: &str,
) -> utoipa::openapi::path::Operation {
    let mut op = instore_operation(true, operation_id, summary, description, path);
    op.request_body = Some(
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .description(Some(
                "The seed's fields as the body (bare), or the InstoreEnvelope with them as its payload.",
            ))
            .content("application/json", any_object())
            .build(),
    );
    op.responses.responses.insert(
        "200".to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("Bare: the action's answer (result, code, and its fields; business declines included). Enveloped: {\"requestId\"}, the answer going to callbackUrl. Signed with X-Signature over the exact bytes.")
                .content("application/json", any_object())
                .build(),
        ),
    );
    op.responses.responses.insert(
        "409".to_owned(),
        response(
            "The requestId was used with another action or payload, or the body was signed \
             for another action of its payment (its pay_wallet, or another cancel, log or refund).",
            "InstoreErrorBody",
        )
        .into(),
    );
    op
}

fn instore_operation(
    post: bool,
    operation_id: &str,
    summary: &str,
    description: &str,
    path: &str,
) -> utoipa::openapi::path::Operation {
    let instore_error = |d: &str| response(d, "InstoreErrorBody");
    let stored_value = path.contains("/storedvalue");
    let mut params = vec![
        header_param(
            "x-signature",
            !post,
            string_schema(None, Some(1), None),
            "HMAC-SHA256 with the tenant's verification key, hex or base64 (prefix sha256= or hmac-sha256 allowed): over the envelope's payload on a POST, over the query on a GET.",
        ),
        header_param(
            "x-api-key",
            false,
            string_schema(None, Some(1), None),
            "Required when the tenant has an api_key.",
        ),
        header_param(
            "x-correlation-id",
            false,
            string_schema(None, Some(1), None),
            "Logged and echoed on the callback.",
        ),
    ];
    let query = |name: &str, required: bool, schema: ObjectBuilder, description: &str| {
        param(ParameterIn::Query, name, required, schema, description)
    };
    let number = || string_schema(Some("^[!-~]{1,64}$"), Some(1), Some(64));
    if path.contains("{account_number}") {
        params.push(param(
            ParameterIn::Path,
            "account_number",
            true,
            number(),
            "The pay-on-account account number.",
        ));
    } else if !post && !stored_value {
        params.push(query(
            "account_number",
            true,
            number(),
            "The account (the query form); what the signature covers.",
        ));
    }
    if !post && stored_value {
        // The log's query: part of what the signature covers (section 1.3, GET).
        params.extend([
            query(
                "requestId",
                true,
                string_schema(None, Some(1), None),
                "The request's id; kept as its idempotency key, bound to this card and these parameters (the page aside).",
            ),
            query(
                "locationId",
                true,
                string_schema(None, Some(1), None),
                "The store asking.",
            ),
            query(
                "workstationId",
                false,
                string_schema(None, Some(1), None),
                "The till asking.",
            ),
            query(
                "limit",
                false,
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .minimum(Some(1))
                    .maximum(Some(500)),
                "Page size (default 100).",
            ),
            query(
                "cursor",
                false,
                string_schema(None, Some(1), None),
                "next_cursor of the previous page.",
            ),
        ]);
    }
    if path.contains("{number}") {
        params.push(param(
            ParameterIn::Path,
            "number",
            true,
            number(),
            "The stored-value number; must equal payload.number.",
        ));
    }
    let mut op = operation(operation_id, "instore", summary, description, params)
        .response(
            "400",
            instore_error("Malformed JSON, a duplicate member, a missing or wrong field, a bare body (ENVELOPE_REQUIRED), or an envelope binding broken."),
        )
        .response(
            "401",
            instore_error("Signature, tenant or X-API-Key not accepted; the body never says which."),
        )
        .response(
            "404",
            instore_error("No such action, or (log) no such card for this tenant."),
        )
        .response(
            "503",
            instore_error("Nothing committed; InStore may send it again."),
        );
    if post {
        // The pay-on-account actions take a bare body as well as the envelope.
        let (request, answer) = if stored_value {
            (
                json_content(schema_ref("InstoreEnvelope")),
                response(
                    "Committed with its callback (or a duplicate's identical answer); signed with X-Signature over the exact bytes. With pre-loaded accounts (storedvaluecard_process): {\"results\":[{\"requestId\", \"paymentProcessorId\"?}]}.",
                    if operation_id == INSTORE_PROCESS {
                        "InstoreProcessAck"
                    } else {
                        "InstoreAck"
                    },
                ),
            )
        } else {
            (
                any_object(),
                ResponseBuilder::new()
                    .description("Bare: the result (declines included). Enveloped: the acknowledgement, after the commit that also queued the callback. Signed with X-Signature over the exact bytes.")
                    .content("application/json", any_object()),
            )
        };
        op = op
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", request)
                    .build(),
            ))
            .response("200", answer)
            .response(
                "409",
                instore_error("The requestId was used with another action or payload."),
            )
            .response(
                "413",
                instore_error("The body is larger than instore.body_bytes_max."),
            );
    } else {
        op = op.response(
            "200",
            ResponseBuilder::new()
                .description("The log; signed with X-Signature over the exact bytes.")
                .content("application/json", any_object())
                .build(),
        );
        if stored_value {
            op = op.response(
                "409",
                instore_error("The requestId was used before with another card, other parameters (the page aside) or by an enveloped request."),
            );
        }
    }
    op.build()
}

/// The error answers of the admin routes, named in their handlers' `responses(...)`: each is
/// one status with its description and the [`ErrorBody`] envelope.
pub mod errors {
    use super::{RefOr, SecurityRequirement, error};
    use std::collections::BTreeMap;
    use utoipa::openapi::Response;

    macro_rules! error_answers {
        ($($name:ident $status:literal $description:literal,)*) => {$(
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    [($status.to_owned(), error($description).build().into())].into()
                }
            }
        )*};
    }

    error_answers! {
        BadInput "400" "Invalid input (path, query or body); the error code says which.",
        Unauthorized "401" "Missing or wrong bearer token.",
        NotFound "404" "Not found.",
        BodyTimeout "408" "The body did not arrive within server.body_read_ms_max.",
        KeyReused "409" "This Idempotency-Key was used with another request; nothing booked.",
        BodyTooLarge "413" "The body is larger than server.body_bytes_max.",
        Unprocessable "422" "A withdrawal cannot overdraw the account (insufficient_funds), or a deposit would take the balance beyond what the ledger holds (balance_out_of_range).",
        InvalidControls "422" "The controls document is refused (invalid_controls): the message starts with the JSON path of the first bad field (`spending_limits[0].amount: ...`); nothing changed.",
        TooManyRequests "429" "Too many admin requests with this token (admin rate limit, fleet-wide with Redis), or, without the valid token, too many failed authentications from this client address (per instance); retry after Retry-After seconds.",
        StorageUnavailable "503" "Storage unavailable; try again.",
    }

    /// What every admin operation (tagged `admin`) has whatever it does: the bearer token,
    /// and the answers without it (401), from the admin rate limit (429) and when the store
    /// fails (503).
    pub struct AdminCommon;

    impl utoipa::Modify for AdminCommon {
        fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
            use utoipa::IntoResponses;
            for item in doc.paths.paths.values_mut() {
                let ops = [
                    &mut item.get,
                    &mut item.put,
                    &mut item.post,
                    &mut item.delete,
                    &mut item.patch,
                ];
                for op in ops.into_iter().flatten() {
                    if !op.tags.iter().flatten().any(|t| t == "admin") {
                        continue;
                    }
                    op.security.get_or_insert_with(|| {
                        vec![SecurityRequirement::new("adminToken", Vec::<String>::new())]
                    });
                    let common = [
                        Unauthorized::responses(),
                        TooManyRequests::responses(),
                        StorageUnavailable::responses(),
                    ];
                    for (status, answer) in common.into_iter().flatten() {
                        op.responses.responses.entry(status).or_insert(answer);
                    }
                }
            }
        }
    }
}

/// Every schema the hand-built operations reference, with the ones they reference (the admin
/// handlers' schemas come with [`admin::AdminApi`]).
fn schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut out = Vec::new();
    fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((T::name().into_owned(), T::schema()));
        T::schemas(out);
    }
    add::<wire::TransactionRequest>(&mut out);
    add::<wire::Notification>(&mut out);
    add::<wire::AuthorizationResponse>(&mut out);
    add::<wire::AdjustmentResponse>(&mut out);
    add::<NotificationAnswer>(&mut out);
    add::<ErrorBody>(&mut out);
    add::<channels::ReserveBody>(&mut out);
    add::<channels::CaptureBody>(&mut out);
    add::<channels::RefundBody>(&mut out);
    add::<channel_service::ChannelResponse>(&mut out);
    add::<channel_service::ReservationJson>(&mut out);
    add::<InstoreErrorBody>(&mut out);
    add::<InstoreEnvelope>(&mut out);
    add::<InstoreAck>(&mut out);
    add::<InstoreResults>(&mut out);
    add::<InstoreResult>(&mut out);
    add::<InstoreProcessAck>(&mut out);
    // Referenced by name from `admin::put_account` (an optional body that is never null).
    add::<admin::AccountRules>(&mut out);
    out
}

/// GET or POST.
fn method(post: bool) -> HttpMethod {
    if post {
        HttpMethod::Post
    } else {
        HttpMethod::Get
    }
}

/// The whole document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (path, route) in Route::ALL {
        paths = paths.path(
            path,
            PathItem::new(HttpMethod::Post, processor_operation(route)),
        );
    }
    for (path, route) in ChannelRoute::ALL {
        let op = channel_operation(route);
        paths = paths.path(path, PathItem::new(method(route.is_post()), op));
    }
    for (path, post, id, summary, description) in INSTORE_ROUTES {
        let op = instore_operation(post, id, summary, description, path);
        paths = paths.path(path, PathItem::new(method(post), op));
    }
    for (path, id, summary, description) in WALLET_ROUTES {
        let op = wallet_operation(path, id, summary, description);
        paths = paths.path(path, PathItem::new(HttpMethod::Post, op));
    }
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas())
        .security_scheme(
            "processorSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Signature",
                "HMAC-SHA256 request signature (see the x-signature, x-timestamp, x-endpoint and x-api-key header parameters). Answers are signed the same way with the same key pair.",
            ))),
        )
        .security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (admin.token, or data_dir/admin-token)."))
                    .build(),
            ),
        )
        .build();
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("authorizer")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Card issuer authorization processor: the card processor's signed real-time routes, the two-phase channels' signed reservation API, the issuer's admin API, and operations endpoints. Every error body is {\"error\":{\"code\":..,\"message\":..}}; an unknown route answers 404 in the same envelope.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some([
            TagBuilder::new()
                .name("processor")
                .description(Some("Called by the card processor; signed both ways."))
                .build(),
            TagBuilder::new()
                .name("channels")
                .description(Some(
                    "Two-phase channels (PoS wallets): reservations captured, cancelled, expired and refunded. Signed both ways like the processor routes, with the channels' own keys.",
                ))
                .build(),
            TagBuilder::new()
                .name("instore")
                .description(Some(
                    "The commercetools InStore stored-value and wallet extensions under instore.base_path (documented at /instore): requests signed with the tenant's verification key, acknowledged after the commit that also queues the callback. Refusals use {\"result\":\"Failure\",\"error\":..,\"message\":..}.",
                ))
                .build(),
            TagBuilder::new()
                .name("admin")
                .description(Some("The issuer's back office; bearer token."))
                .build(),
            TagBuilder::new()
                .name("operations")
                .description(Some("Health, readiness, metrics; no authentication."))
                .build(),
        ]))
        .build();
    doc.merge(<admin::AdminApi as utoipa::OpenApi>::openapi());
    doc
}

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", body = Object,
        content_type = "application/json")),
)]
pub async fn serve() -> actix_web::HttpResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get_or_init(json).as_str())
}

/// The document as served and committed: pretty JSON, keys sorted, one trailing newline.
pub fn json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
