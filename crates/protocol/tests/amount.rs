//! Section 5: amounts arrive as JSON numbers or strings and are parsed exactly.

use protocol::amount::{AmountError, WireAmount};
use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Holder {
    total: WireAmount,
}

/// Deserializes `{"total": <json>}` the way a request body is parsed.
fn from_json(json: &str) -> Result<WireAmount, serde_json::Error> {
    let body = format!(r#"{{"total":{json}}}"#);
    serde_json::from_slice::<Holder>(body.as_bytes()).map(|h| h.total)
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap()
}

#[test]
fn number_keeps_its_text() {
    let a = from_json("990.0").unwrap();
    assert_eq!(a.text(), "990.0");
    assert_eq!(a.value(), Some(dec("990.0")));
    assert_eq!(a.value().unwrap().scale(), 1);
    assert_eq!(a.to_string(), "990.0");
}

#[test]
fn string_amount() {
    let a = from_json(r#""1060.74""#).unwrap();
    assert_eq!(a.text(), "1060.74");
    assert_eq!(a.value(), Some(dec("1060.74")));
    assert_eq!(a, WireAmount::parse("1060.74").unwrap());
}

#[test]
fn zeros() {
    let a = from_json("0").unwrap();
    assert_eq!(a.text(), "0");
    assert_eq!(a.value(), Some(Decimal::ZERO));
    let a = from_json(r#""0.00""#).unwrap();
    assert_eq!(a.text(), "0.00");
    assert_eq!(a.value(), Some(dec("0.00")));
}

#[test]
fn negative_parses() {
    let a = from_json("-5").unwrap();
    assert_eq!(a.value(), Some(dec("-5")));
    assert!(a.value().unwrap().is_sign_negative());
    let a = from_json(r#""-5.10""#).unwrap();
    assert_eq!(a.value(), Some(dec("-5.10")));
}

#[test]
fn exponent_numbers() {
    let a = from_json("1E2").unwrap();
    assert_eq!(a.text(), "1E2");
    assert_eq!(a.value(), Some(dec("100")));
    assert_eq!(from_json("1.5e-3").unwrap().value(), Some(dec("0.0015")));
    assert_eq!(from_json("2e+1").unwrap().value(), Some(dec("20")));
}

#[test]
fn out_of_range_is_well_formed_but_has_no_value() {
    for json in [
        "12345678901234567890123456789012345678",
        r#""12345678901234567890123456789012345678""#,
        "1e400",
        "-1e400",
        "1e-400",
        "79228162514264337593543950336",
    ] {
        let a = from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(a.value(), None, "{json}");
    }
    assert_eq!(
        from_json("12345678901234567890123456789012345678")
            .unwrap()
            .text(),
        "12345678901234567890123456789012345678"
    );
    // A number far beyond f64 range: serde_json would reject it as a float, the raw path doesn't.
    let huge = "9".repeat(400);
    assert_eq!(from_json(&huge).unwrap().value(), None);
}

#[test]
fn float_rounding_does_not_happen() {
    // f64 cannot hold these exactly; the decimal must be what was written.
    assert_eq!(from_json("0.1").unwrap().value(), Some(dec("0.1")));
    assert_eq!(
        from_json("12345678901234567.89").unwrap().value(),
        Some(dec("12345678901234567.89"))
    );
}

#[test]
fn rejected_forms_are_serde_errors() {
    for json in [
        "true",
        "false",
        "null",
        "{}",
        r#"{"total":1}"#,
        "[]",
        "[1]",
        r#""""#,
        r#"" 1""#,
        r#""1 ""#,
        r#""1 000""#,
        r#""+1""#,
        r#""1,5""#,
        r#""NaN""#,
        r#""Infinity""#,
        r#""-Infinity""#,
        r#""0x10""#,
        r#"".5""#,
        r#""5.""#,
        r#""-""#,
        r#""1_000""#,
        r#""1e2""#,
        r#""1..2""#,
        r#""--1""#,
        r#""١""#,
    ] {
        assert!(from_json(json).is_err(), "{json} should be refused");
    }
}

#[test]
fn null_is_refused_for_required_amount_but_fine_for_optional() {
    #[derive(Deserialize)]
    struct Opt {
        amount: Option<WireAmount>,
    }
    let o: Opt = serde_json::from_str(r#"{"amount":null}"#).unwrap();
    assert!(o.amount.is_none());
    let o: Opt = serde_json::from_str(r#"{"amount":"1.00"}"#).unwrap();
    assert_eq!(o.amount.unwrap().text(), "1.00");
}

#[test]
fn error_messages_do_not_echo_the_value() {
    let e = from_json(r#""secret-4111111111111111""#)
        .unwrap_err()
        .to_string();
    assert!(!e.contains("4111"), "{e}");
    assert!(
        !WireAmount::parse("4111 1111")
            .unwrap_err()
            .to_string()
            .contains("4111")
    );
}

#[test]
fn parse_is_for_plain_decimals() {
    assert_eq!(WireAmount::parse("990.0").unwrap().text(), "990.0");
    assert_eq!(WireAmount::parse("").unwrap_err(), AmountError::Empty);
    for bad in ["1E2", "+1", ".5", "5.", "1,5", " 1", "NaN", "0x10"] {
        assert_eq!(
            WireAmount::parse(bad).unwrap_err(),
            AmountError::NotPlainDecimal,
            "{bad}"
        );
    }
    assert_eq!(
        WireAmount::parse_json_number("1E2").unwrap().value(),
        Some(dec("100"))
    );
}

#[test]
fn serializes_as_string_of_text() {
    let a = from_json("990.0").unwrap();
    assert_eq!(serde_json::to_string(&a).unwrap(), r#""990.0""#);
    let back: WireAmount = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back.text(), "990.0");
    assert_eq!(back.value(), a.value());
}

#[test]
fn going_through_serde_json_value_loses_exactness() {
    // Documents the caveat on WireAmount: a serde_json::Value has already gone through f64, so
    // request bodies must be parsed from the raw bytes (TransactionRequest::from_slice).
    let v: serde_json::Value = serde_json::from_str(r#"{"total":990.0}"#).unwrap();
    assert_eq!(
        serde_json::from_value::<Holder>(v).unwrap().total.text(),
        "990.0"
    );
    let v: serde_json::Value = serde_json::from_str(r#"{"total":12345678901234567.89}"#).unwrap();
    let via_value = serde_json::from_value::<Holder>(v).unwrap().total;
    assert_ne!(via_value.value(), Some(dec("12345678901234567.89")));
}
