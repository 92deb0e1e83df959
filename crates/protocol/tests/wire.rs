//! Sections 5, 6 and 7: request, notification and response bodies.

use protocol::signature::{ApiSecret, sign};
use protocol::wire::{
    AdjustmentResponse, AuthorizationResponse, Balance, Direction, EntryMode, Notification,
    PointType, ProductType, Provider, Status, StatusDetail, TransactionRequest, TransactionType,
    Verdict,
};

const BODY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/request-body.json"
));

/// A minimal valid body with `extra` spliced into the top-level object.
fn body_with(transaction: &str, amount: &str, extra: &str) -> String {
    format!(r#"{{"transaction":{transaction},"amount":{amount}{extra}}}"#)
}

const TX: &str = r#"{"id":"ctx-1","type":"PURCHASE"}"#;
const AMOUNT: &str = r#"{"local":{"total":"10.00","currency":"ARS"}}"#;

#[test]
fn parses_the_vector_body() {
    let r = TransactionRequest::from_slice(BODY).unwrap();
    assert_eq!(r.transaction.id, "ctx-test-1");
    assert_eq!(r.transaction.kind, TransactionType::Purchase);
    assert_eq!(r.transaction.point_type, Some(PointType::Ecommerce));
    assert_eq!(r.transaction.entry_mode, Some(EntryMode::Manual));
    assert_eq!(r.transaction.country_code.as_deref(), Some("ARG"));
    assert_eq!(
        r.transaction.local_date_time.as_deref(),
        Some("2024-01-01T10:00:00")
    );
    assert_eq!(r.transaction.original_transaction_id, None);
    assert_eq!(r.transaction.source, None);
    assert_eq!(r.amount.local.total.text(), "990.0");
    assert_eq!(r.amount.local.currency, "ARS");
    assert_eq!(r.amount.settlement.as_ref().unwrap().total.text(), "11.0");
    let details = r.amount.details.as_ref().unwrap();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0].kind.as_deref(), Some("BASE"));
    assert_eq!(details[0].amount.as_ref().unwrap().text(), "990.0");
    let merchant = r.merchant.as_ref().unwrap();
    assert_eq!(merchant.mcc.as_deref(), Some("5045"));
    assert_eq!(merchant.address, None);
    assert_eq!(merchant.terminal_id, None);
    let card = r.card.as_ref().unwrap();
    assert_eq!(card.id, "crd-1629483284114MGA9BF");
    assert_eq!(card.product_type, Some(ProductType::Prepaid));
    assert_eq!(card.provider, Some(Provider::Mastercard));
    assert_eq!(card.last_four.as_deref(), Some("6708"));
    assert_eq!(r.user.as_ref().unwrap().id, "usr-1629293693904DM2U4T");
}

#[test]
fn request_serialization_round_trips() {
    let r = TransactionRequest::from_slice(BODY).unwrap();
    let bytes = serde_json::to_vec(&r).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // Amounts go out as strings of their text; absent options are skipped, not null.
    assert!(
        text.contains(r#""local":{"total":"990.0","currency":"ARS"}"#),
        "{text}"
    );
    assert!(!text.contains("null"), "{text}");
    assert_eq!(TransactionRequest::from_slice(&bytes).unwrap(), r);
}

/// Found by the `wire_request` fuzz target: a JSON number with an exponent is a valid
/// amount, but it went out as the string "1e3", which our own parser refuses.
#[test]
fn exponent_amounts_round_trip() {
    for literal in ["1e3", "9.9E+1", "-5e-2", "1e400"] {
        let body = body_with(
            TX,
            &format!(r#"{{"local":{{"total":{literal},"currency":"ARS"}}}}"#),
            "",
        );
        let r = TransactionRequest::from_slice(body.as_bytes()).unwrap();
        let bytes = serde_json::to_vec(&r).unwrap();
        let back = TransactionRequest::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{literal}: {}: {}",
                e.message(),
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(back, r, "{literal}");
        assert_eq!(back.amount.local.total.text(), literal);
    }
    // Plain decimals still go out as strings.
    let r = TransactionRequest::from_slice(
        body_with(TX, r#"{"local":{"total":12.50,"currency":"ARS"}}"#, "").as_bytes(),
    )
    .unwrap();
    assert!(
        String::from_utf8(serde_json::to_vec(&r).unwrap())
            .unwrap()
            .contains(r#""total":"12.50""#)
    );
}

#[test]
fn unknown_enum_values_are_kept() {
    let tx = r#"{"id":"ctx-1","type":"NEW_TYPE","point_type":"SPACE","entry_mode":"TELEPATHY",
                 "origin":"ORBITAL","source":"NEW_SOURCE"}"#;
    let card = r#","card":{"id":"crd-1","product_type":"GOLD","provider":"AMEX"}"#;
    let r = TransactionRequest::from_slice(body_with(tx, AMOUNT, card).as_bytes()).unwrap();
    assert_eq!(
        r.transaction.kind,
        TransactionType::Other("NEW_TYPE".into())
    );
    assert_eq!(r.transaction.kind.as_str(), "NEW_TYPE");
    assert!(!r.transaction.kind.is_known());
    assert_eq!(r.transaction.kind.direction(), None);
    assert_eq!(r.transaction.point_type.unwrap().as_str(), "SPACE");
    assert_eq!(r.transaction.entry_mode.unwrap().as_str(), "TELEPATHY");
    assert_eq!(r.transaction.origin.unwrap().as_str(), "ORBITAL");
    assert_eq!(r.transaction.source.unwrap().as_str(), "NEW_SOURCE");
    let card = r.card.unwrap();
    assert_eq!(card.product_type.unwrap().as_str(), "GOLD");
    assert_eq!(card.provider.unwrap().as_str(), "AMEX");
    // Serialized back as the plain string.
    assert_eq!(
        serde_json::to_string(&TransactionType::Other("NEW_TYPE".into())).unwrap(),
        r#""NEW_TYPE""#
    );
}

#[test]
fn entry_mode_other_is_a_known_value() {
    let m: EntryMode = serde_json::from_str(r#""OTHER""#).unwrap();
    assert_eq!(m, EntryMode::OtherMode);
    assert!(m.is_known());
    assert_eq!(serde_json::to_string(&m).unwrap(), r#""OTHER""#);
}

#[test]
fn open_enum_construction_normalizes_known_values() {
    assert_eq!(TransactionType::from("PURCHASE"), TransactionType::Purchase);
    assert_eq!(
        TransactionType::from(String::from("REFUND")),
        TransactionType::Refund
    );
    assert_eq!(
        "REVERSAL_PAYMENT".parse::<TransactionType>(),
        Ok(TransactionType::ReversalPayment)
    );
    // Case matters on the wire.
    assert_eq!(
        TransactionType::from("purchase"),
        TransactionType::Other("purchase".into())
    );
    for known in TransactionType::KNOWN {
        let t = TransactionType::from(*known);
        assert!(t.is_known(), "{known}");
        assert_eq!(t.as_str(), *known);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{known}\""));
    }
    // A non-string is still a parse error (not silently Other).
    assert!(serde_json::from_str::<TransactionType>("5").is_err());
}

#[test]
fn directions() {
    use TransactionType::*;
    for t in [
        Purchase,
        Withdrawal,
        Extracash,
        Cashback,
        ReversalRefund,
        ReversalPayment,
    ] {
        assert_eq!(t.direction(), Some(Direction::Debit), "{t}");
    }
    for t in [
        Refund,
        Payment,
        ReversalPurchase,
        ReversalWithdrawal,
        ReversalExtracash,
    ] {
        assert_eq!(t.direction(), Some(Direction::Credit), "{t}");
    }
    assert_eq!(BalanceInquiry.direction(), None);
    assert_eq!(Other("PURCHASE_V2".into()).direction(), None);
    assert_eq!(Direction::Debit.as_str(), "DEBIT");
    assert_eq!(Direction::Credit.as_str(), "CREDIT");
}

#[test]
fn unknown_fields_and_null_optionals_are_accepted() {
    let extra = r#","installments":{"quantity":"12","credit_type":"NO_PROMOTION"},
        "extra_data":{"pin_presence":"ONLINE"},"brand_new_field":[1,2,{"x":null}]"#;
    let r = TransactionRequest::from_slice(body_with(TX, AMOUNT, extra).as_bytes()).unwrap();
    assert_eq!(r.transaction.id, "ctx-1");

    let extra = r#","installments":null,"extra_data":null,"merchant":null,"card":null,"user":null"#;
    let r = TransactionRequest::from_slice(body_with(TX, AMOUNT, extra).as_bytes()).unwrap();
    assert!(r.merchant.is_none() && r.card.is_none() && r.user.is_none());

    let tx = r#"{"id":"ctx-1","type":"PURCHASE","source":null,"point_type":null,"extra":1}"#;
    let amount = r#"{"local":{"total":1,"currency":"ARS"},"transaction":null,"settlement":null,
                     "details":null}"#;
    let merchant = r#","merchant":{"terminal_id":null,"mcc":"5411","new":true}"#;
    let r = TransactionRequest::from_slice(body_with(tx, amount, merchant).as_bytes()).unwrap();
    assert_eq!(r.transaction.source, None);
    assert_eq!(r.amount.details, None);
    assert_eq!(r.merchant.unwrap().mcc.as_deref(), Some("5411"));

    // Minimal body: everything optional absent.
    let r = TransactionRequest::from_slice(body_with(TX, AMOUNT, "").as_bytes()).unwrap();
    assert_eq!(r.amount.local.total.text(), "10.00");
}

#[test]
fn malformed_bodies_are_errors() {
    let cases = [
        // currency as a number
        body_with(TX, r#"{"local":{"total":"10.00","currency":12}}"#, ""),
        // amount as a boolean
        body_with(TX, r#"{"local":{"total":true,"currency":"ARS"}}"#, ""),
        // amount in a detail line malformed
        body_with(
            TX,
            r#"{"local":{"total":1,"currency":"ARS"},"details":[{"amount":"1,5"}]}"#,
            "",
        ),
        // missing transaction.id
        body_with(r#"{"type":"PURCHASE"}"#, AMOUNT, ""),
        // missing transaction.type
        body_with(r#"{"id":"ctx-1"}"#, AMOUNT, ""),
        // missing amount.local
        body_with(TX, r#"{"transaction":{"total":1,"currency":"EUR"}}"#, ""),
        // missing amount
        format!(r#"{{"transaction":{TX}}}"#),
        // transaction null
        body_with("null", AMOUNT, ""),
        // not JSON / not an object / empty
        "{".to_owned(),
        "[]".to_owned(),
        String::new(),
    ];
    for body in cases {
        let e = TransactionRequest::from_slice(body.as_bytes()).unwrap_err();
        assert!(!e.message().is_empty(), "{body}");
    }
}

#[test]
fn error_message_is_short_and_does_not_echo_amounts() {
    let body = body_with(
        TX,
        r#"{"local":{"total":"4111 1111 1111 1111","currency":"ARS"}}"#,
        "",
    );
    let e = TransactionRequest::from_slice(body.as_bytes()).unwrap_err();
    assert!(!e.to_string().contains("4111"), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");
    let body = body_with(r#"{"type":"PURCHASE"}"#, AMOUNT, "");
    let e = TransactionRequest::from_slice(body.as_bytes()).unwrap_err();
    assert!(e.message().contains("missing field `id`"), "{e}");
}

fn notification(event_id: &str, status: Option<&str>) -> Notification {
    let status = status
        .map(|s| format!(r#","status":"{s}""#))
        .unwrap_or_default();
    let body = format!(
        r#"{{"event_id":"{event_id}","event_detail":{{"transaction":{TX},
            "user":{{"id":"usr-1"}},"card":{{"id":"crd-1"}},"merchant":{{"mcc":"5045"}},
            "amount":{AMOUNT},"status_detail":"CLIENT_TIMEOUT","extra_detail":"x"{status}}},
            "idempotency_key":"ctx-1","unknown":1}}"#
    );
    Notification::from_slice(body.as_bytes()).unwrap()
}

#[test]
fn notification_parsing() {
    let n = notification("authorization-advice", Some("REJECTED"));
    assert_eq!(n.event_id, "authorization-advice");
    assert_eq!(n.idempotency_key.as_deref(), Some("ctx-1"));
    let d = &n.event_detail;
    assert_eq!(d.transaction.as_ref().unwrap().id, "ctx-1");
    assert_eq!(d.user.as_ref().unwrap().id, "usr-1");
    assert_eq!(d.card.as_ref().unwrap().id, "crd-1");
    assert_eq!(d.amount.as_ref().unwrap().local.total.text(), "10.00");
    assert_eq!(d.status.as_deref(), Some("REJECTED"));
    assert_eq!(d.status_detail.as_deref(), Some("CLIENT_TIMEOUT"));
    assert_eq!(d.extra_detail.as_deref(), Some("x"));

    // Sparse notification: only the required fields.
    let n = Notification::from_slice(br#"{"event_id":"other","event_detail":{}}"#).unwrap();
    assert!(n.event_detail.transaction.is_none());
    assert!(n.idempotency_key.is_none());
    assert!(Notification::from_slice(br#"{"event_detail":{}}"#).is_err());
    assert!(Notification::from_slice(br#"{"event_id":"x"}"#).is_err());
}

#[test]
fn notification_verdicts() {
    assert_eq!(
        notification("approved-authorization-advice", None).verdict(),
        Some(Verdict::Approved)
    );
    assert_eq!(
        notification("approved-authorization-advice", Some("APPROVED")).verdict(),
        Some(Verdict::Approved)
    );
    assert_eq!(
        notification("authorization-advice", Some("REJECTED")).verdict(),
        Some(Verdict::Rejected)
    );
    assert_eq!(
        notification("authorization-advice", Some("APPROVED")).verdict(),
        Some(Verdict::Approved)
    );
    assert_eq!(
        notification("authorization-advice", None).verdict(),
        Some(Verdict::Rejected)
    );
    assert_eq!(
        notification("card-created", Some("APPROVED")).verdict(),
        None
    );
}

#[test]
fn authorization_response_exact_bytes_and_vector_2() {
    let r = AuthorizationResponse {
        status: Status::Approved,
        status_detail: StatusDetail::Approved,
        message: "Ok".into(),
        balance: None,
    };
    let bytes = serde_json::to_vec(&r).unwrap();
    assert_eq!(
        bytes,
        br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Ok"}"#
    );
    let secret = ApiSecret::from_base64("uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=").unwrap();
    assert_eq!(
        sign(
            &secret,
            "1700000001",
            "/transactions/authorizations",
            &bytes
        ),
        "hmac-sha256 u9SQX7+Pc1ZEVZUV97hvuysnwDx1gZBVSZ+6EWJKplM="
    );
}

#[test]
fn other_responses_exact_bytes() {
    let r = AuthorizationResponse {
        status: Status::Rejected,
        status_detail: StatusDetail::InsufficientFunds,
        message: "Insufficient funds".into(),
        balance: None,
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"status":"REJECTED","status_detail":"INSUFFICIENT_FUNDS","message":"Insufficient funds"}"#
    );
    let r = AuthorizationResponse {
        status: Status::Approved,
        status_detail: StatusDetail::Approved,
        message: "Balance".into(),
        balance: Some(Balance {
            total: "982345.12".into(),
            currency: "MXN".into(),
        }),
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"status":"APPROVED","status_detail":"APPROVED","message":"Balance","balance":{"total":"982345.12","currency":"MXN"}}"#
    );
    let r = AdjustmentResponse {
        status_detail: StatusDetail::Approved,
        message: "Booked".into(),
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"status_detail":"APPROVED","message":"Booked"}"#
    );
}

#[test]
fn status_strings() {
    for s in [Status::Approved, Status::Rejected] {
        assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    for d in [
        StatusDetail::Approved,
        StatusDetail::InsufficientFunds,
        StatusDetail::InvalidMerchant,
        StatusDetail::InvalidAmount,
        StatusDetail::SystemError,
        StatusDetail::Other,
    ] {
        assert_eq!(d.as_str().parse::<StatusDetail>(), Ok(d));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{}\"", d.as_str())
        );
    }
    assert_eq!(
        StatusDetail::InsufficientFunds.as_str(),
        "INSUFFICIENT_FUNDS"
    );
    assert_eq!(StatusDetail::SystemError.as_str(), "SYSTEM_ERROR");
    assert!("approved".parse::<Status>().is_err());
    assert!("CLIENT_TIMEOUT".parse::<StatusDetail>().is_err());
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_even_in_skipped_fields() {
    use protocol::wire::MAX_DEPTH;
    let body = |extra: &str| {
        format!(
            r#"{{"transaction":{{"id":"ctx-1","type":"PURCHASE"}},"extra":{extra},"amount":{{"local":{{"total":1,"currency":"ARS"}}}}}}"#
        )
    };
    // The request itself is 3 levels deep; the extra field adds its own.
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
    assert!(TransactionRequest::from_slice(body(&ok).as_bytes()).is_ok());
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let err = TransactionRequest::from_slice(body(&deep).as_bytes()).unwrap_err();
    assert!(err.message().contains("nested deeper"), "{err}");
    let just_over = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(TransactionRequest::from_slice(body(&just_over).as_bytes()).is_err());
    // Brackets inside strings (escaped quotes included) do not count.
    let in_string = format!(r#""\"{}""#, "[{".repeat(100));
    assert!(TransactionRequest::from_slice(body(&in_string).as_bytes()).is_ok());
    let n = format!(r#"{{"event_id":"x","event_detail":{{"extra":{deep}}}}}"#);
    assert!(Notification::from_slice(n.as_bytes()).is_err());
}

#[test]
fn a_repeated_key_in_a_read_object_is_refused() {
    for body in [
        r#"{"transaction":{"id":"a","type":"PURCHASE"},"amount":{"local":{"total":1,"total":1000,"currency":"ARS"}}}"#,
        r#"{"transaction":{"id":"a","id":"b","type":"PURCHASE"},"amount":{"local":{"total":1,"currency":"ARS"}}}"#,
        r#"{"transaction":{"id":"a","type":"PURCHASE"},"amount":{"local":{"total":1,"currency":"ARS"}},"amount":{"local":{"total":9,"currency":"ARS"}}}"#,
    ] {
        let err = TransactionRequest::from_slice(body.as_bytes()).unwrap_err();
        assert!(err.message().contains("duplicate field"), "{err}");
    }
    // Repeats inside fields we do not read are left to the stored raw body.
    let skipped = r#"{"transaction":{"id":"a","type":"PURCHASE"},"extra_data":{"x":1,"x":2},"amount":{"local":{"total":1,"currency":"ARS"}}}"#;
    assert!(TransactionRequest::from_slice(skipped.as_bytes()).is_ok());
}

#[test]
fn a_nul_in_any_string_is_refused_and_an_escaped_backslash_is_not_one() {
    let body = |s: &str| {
        format!(
            r#"{{"transaction":{{"id":"a","type":"PURCHASE"}},"extra":"{s}","amount":{{"local":{{"total":1,"currency":"ARS"}}}}}}"#
        )
    };
    let err = TransactionRequest::from_slice(body(r"x\u0000").as_bytes()).unwrap_err();
    assert!(err.message().contains("U+0000"), "{err}");
    assert!(protocol::wire::refused_before_parsing(
        body(r"\u0000").as_bytes()
    ));
    assert!(TransactionRequest::from_slice(body(r"x\\u0000").as_bytes()).is_ok());
    assert!(TransactionRequest::from_slice(body(r"x\u0001").as_bytes()).is_ok());
    let n = r#"{"event_id":"e\u0000","event_detail":{}}"#;
    assert!(Notification::from_slice(n.as_bytes()).is_err());
}

#[test]
fn ids_are_visible_ascii_of_at_most_255_bytes() {
    use protocol::wire::{ID_BYTES_MAX, check_id, is_valid_id};
    for ok in [
        "ctx-200kXoaEJLNzcsvNxY1pmBO7fEx",
        "c-1625519392748E6XZBK",
        "a",
        "ctx/1+2=3#4%5?6&7\"8'9\\0<>{}[]|~`!@$^*()_:;,.",
        &"x".repeat(ID_BYTES_MAX),
    ] {
        assert!(is_valid_id(ok), "{ok:?}");
    }
    for bad in [
        String::new(),
        "x".repeat(ID_BYTES_MAX + 1),
        "x".repeat(10_000),
        "ctx-1\nINFO forged line".into(),
        "ctx-1\r".into(),
        "ctx-\u{1b}[31mred".into(),
        "ctx 1".into(),
        "ctx\t1".into(),
        "ctx-\u{7f}".into(),
        "ctx-\u{85}".into(),
        "ctx-\u{2028}".into(),
        "ctx-\u{202e}".into(),
        "ctx-\u{fffd}".into(),
        "ctx-é".into(),
    ] {
        assert!(!is_valid_id(&bad), "{bad:?}");
        let e = check_id("card.id", &bad).unwrap_err();
        assert_eq!(e.id_field(), Some("card.id"));
        // The message names the field and never the value.
        assert_eq!(e.message(), check_id("card.id", "").unwrap_err().message());
        assert!(e.message().starts_with("card.id must be"), "{e}");
    }
}

#[test]
fn every_id_of_a_request_follows_the_rule() {
    let full = |tx_id: &str, original: &str, card: &str, user: &str| {
        format!(
            r#"{{"transaction":{{"id":{},"type":"REFUND","original_transaction_id":{}}},"card":{{"id":{}}},"user":{{"id":{}}},"merchant":{{"id":"merchant with spaces"}},"amount":{AMOUNT}}}"#,
            serde_json::to_string(tx_id).unwrap(),
            serde_json::to_string(original).unwrap(),
            serde_json::to_string(card).unwrap(),
            serde_json::to_string(user).unwrap(),
        )
    };
    let good = full("ctx-1", "ctx-0", "crd-1", "usr-1");
    let r = TransactionRequest::from_slice(good.as_bytes()).unwrap();
    assert!(r.check_ids().is_ok());
    // merchant.id is neither stored in a column nor logged: not held to the rule.
    assert_eq!(
        r.merchant.unwrap().id.as_deref(),
        Some("merchant with spaces")
    );
    let long = "9".repeat(10_000);
    for (body, field) in [
        (full("ctx\n1", "ctx-0", "crd-1", "usr-1"), "transaction.id"),
        (full(&long, "ctx-0", "crd-1", "usr-1"), "transaction.id"),
        (full("", "ctx-0", "crd-1", "usr-1"), "transaction.id"),
        (
            full("ctx-1", &long, "crd-1", "usr-1"),
            "transaction.original_transaction_id",
        ),
        (
            full("ctx-1", "", "crd-1", "usr-1"),
            "transaction.original_transaction_id",
        ),
        (full("ctx-1", "ctx-0", "crd\u{1b}[2J", "usr-1"), "card.id"),
        (full("ctx-1", "ctx-0", &long, "usr-1"), "card.id"),
        (full("ctx-1", "ctx-0", "crd-1", "usr 1"), "user.id"),
    ] {
        let e = TransactionRequest::from_slice(body.as_bytes()).unwrap_err();
        assert_eq!(e.id_field(), Some(field), "{e}");
        assert!(e.message().starts_with(field), "{e}");
        assert!(!e.message().contains("999"), "the value is not echoed: {e}");
    }
    // Other parse errors name no id field.
    let e = TransactionRequest::from_slice(b"{}").unwrap_err();
    assert_eq!(e.id_field(), None);
}

#[test]
fn every_id_of_a_notification_follows_the_rule() {
    let n = |event_id: &str, key: &str, tx: &str, card: &str| {
        format!(
            r#"{{"event_id":{},"event_detail":{{"transaction":{{"id":{},"type":"PURCHASE"}},"card":{{"id":{}}},"user":{{"id":"usr-1"}}}},"idempotency_key":{}}}"#,
            serde_json::to_string(event_id).unwrap(),
            serde_json::to_string(tx).unwrap(),
            serde_json::to_string(card).unwrap(),
            serde_json::to_string(key).unwrap(),
        )
    };
    assert!(
        Notification::from_slice(n("authorization-advice", "ctx-1", "ctx-1", "crd-1").as_bytes())
            .is_ok()
    );
    // An empty key counts as absent (the header's is used).
    assert!(
        Notification::from_slice(n("authorization-advice", "", "ctx-1", "crd-1").as_bytes())
            .is_ok()
    );
    let long = "x".repeat(10_000);
    for (body, field) in [
        (
            n("authorization\nadvice", "k", "ctx-1", "crd-1"),
            "event_id",
        ),
        (
            n("authorization-advice", &long, "ctx-1", "crd-1"),
            "idempotency_key",
        ),
        (
            n("authorization-advice", "k", &long, "crd-1"),
            "event_detail.transaction.id",
        ),
        (
            n("authorization-advice", "k", "ctx\u{1b}[0m", "crd-1"),
            "event_detail.transaction.id",
        ),
        (
            n("authorization-advice", "k", "ctx-1", &long),
            "event_detail.card.id",
        ),
    ] {
        let e = Notification::from_slice(body.as_bytes()).unwrap_err();
        assert_eq!(e.id_field(), Some(field), "{e}");
    }
}

#[test]
fn a_body_that_is_not_utf8_is_refused_even_in_a_skipped_field() {
    let body = |extra: &[u8]| {
        let mut b =
            br#"{"transaction":{"id":"ctx-1","type":"PURCHASE"},"extra_data":{"note":""#.to_vec();
        b.extend_from_slice(extra);
        b.extend_from_slice(br#""},"amount":{"local":{"total":"10.00","currency":"ARS"}}}"#);
        b
    };
    assert!(TransactionRequest::from_slice(&body(b"caf\xc3\xa9")).is_ok());
    for bad in [
        &b"\xff"[..],
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\xc3",
    ] {
        let e = TransactionRequest::from_slice(&body(bad)).unwrap_err();
        assert!(e.message().contains("not valid UTF-8"), "{e}");
        assert!(protocol::wire::refused_before_parsing(&body(bad)));
    }
    let n = b"{\"event_id\":\"x\",\"event_detail\":{\"extra\":\"\xff\"}}";
    assert!(Notification::from_slice(n).is_err());
    assert!(protocol::wire::refused_before_parsing(n));
}

#[test]
fn leading_zeros_in_amounts_are_refused() {
    for total in [
        r#""007.00""#,
        r#""007""#,
        r#""00""#,
        r#""-01.5""#,
        "007",
        "007.00",
        "-01",
    ] {
        let amount = format!(r#"{{"local":{{"total":{total},"currency":"ARS"}}}}"#);
        let b = body_with(TX, &amount, "");
        assert!(
            TransactionRequest::from_slice(b.as_bytes()).is_err(),
            "{total}"
        );
    }
    for total in [r#""0.07""#, r#""0""#, r#""-0.00""#, "0.07", "0", "70"] {
        let amount = format!(r#"{{"local":{{"total":{total},"currency":"ARS"}}}}"#);
        let b = body_with(TX, &amount, "");
        assert!(
            TransactionRequest::from_slice(b.as_bytes()).is_ok(),
            "{total}"
        );
    }
}
