//! Reading an adjustment or a notification whose optional fields are malformed.
//!
//! An adjustment cannot be refused: the network already made it effective, and a 400 is
//! resent by the processor forever while the money stays unbooked. When a body fails the
//! strict parse only because an optional field has the wrong type (a numeric
//! `merchant.mcc`, a card without an `id`, a `null` settlement total, a user id that
//! breaks the id rule), [`TransactionRequest::from_slice_lenient`] leaves those fields out
//! and parses the rest strictly. The caller books it, flagged, and keeps the raw body as
//! received, so nothing left out is lost.
//!
//! What money needs is never left out: `transaction.id`, `transaction.type`,
//! `transaction.original_transaction_id` (it decides which authorization a reversal
//! corrects) and `amount.local`. A body whose fault is there is refused as before.
//!
//! A notification carries the processor's final verdict, which must not be lost either:
//! [`Notification::from_slice_lenient`] reads its `event_detail` the same way, and keeps
//! `event_id` and `event_detail.status` (the verdict) strict.

use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::wire::{
    AmountDetail, CardRef, EntryMode, Merchant, MoneyField, Notification, Origin, PointType,
    ProductType, Provider, Source, TransactionRequest, UserRef, WireError, check_id,
    refused_before_parsing,
};

/// A JSON object's members in order, each value as its exact text (amounts keep their
/// literal). A name may stand twice: the strict parse of the rebuilt text refuses that for
/// the names it reads, and a member that may be left out is, when it is given twice.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

impl Members {
    fn of(raw: &RawValue) -> Option<Members> {
        serde_json::from_str(raw.get()).ok()
    }

    fn positions(&self, name: &str) -> Vec<usize> {
        (0..self.0.len()).filter(|&i| self.0[i].0 == name).collect()
    }

    /// Leaves out member `name` unless it stands once and its value reads as `T` and passes
    /// `valid`; records its path (`name` within the object at `at`, `""` at the top) when it
    /// does.
    fn keep_if<T: DeserializeOwned>(
        &mut self,
        at: &str,
        name: &str,
        valid: impl Fn(&T) -> bool,
        left_out: &mut Vec<String>,
    ) {
        let found = self.positions(name);
        let readable = match found.as_slice() {
            [] => return,
            [i] => serde_json::from_str::<T>(self.0[*i].1.get()).is_ok_and(|v| valid(&v)),
            _ => false,
        };
        if !readable {
            for i in found.into_iter().rev() {
                self.0.remove(i);
            }
            left_out.push(match at {
                "" => name.to_owned(),
                _ => format!("{at}.{name}"),
            });
        }
    }

    /// Leaves out member `name` unless it reads as `T` (or is `null`).
    fn keep<T: DeserializeOwned>(&mut self, at: &str, name: &str, left_out: &mut Vec<String>) {
        self.keep_if::<Option<T>>(at, name, |_| true, left_out);
    }

    /// Applies `repair` to the members of object `name`, when it is one and stands once.
    fn within(&mut self, name: &str, repair: impl FnOnce(&mut Members)) {
        let [i] = self.positions(name)[..] else {
            return;
        };
        let Some(mut inner) = Members::of(&self.0[i].1) else {
            return;
        };
        repair(&mut inner);
        if let Some(raw) = inner.to_raw() {
            self.0[i].1 = raw;
        }
    }

    /// The members as one JSON object (names written by serde_json, values that were
    /// valid JSON: always valid).
    fn to_raw(&self) -> Option<Box<RawValue>> {
        let mut text = String::from("{");
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(name).ok()?);
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        RawValue::from_string(text).ok()
    }
}

/// Leaves out the optional fields of a request-shaped object (`transaction`'s extras,
/// `merchant`, `card`, `user`, `amount` but its `local`) that do not read, naming each in
/// `out` by its path under `at` (`""`: the top of the body). What money needs is kept as
/// it is: see the [module](crate::lenient) text.
fn leave_out_unreadable(obj: &mut Members, at: &str, out: &mut Vec<String>) {
    let path = |name: &str| match at {
        "" => name.to_owned(),
        _ => format!("{at}.{name}"),
    };
    let (t_at, m_at, c_at, a_at) = (
        path("transaction"),
        path("merchant"),
        path("card"),
        path("amount"),
    );
    obj.within("transaction", |t| {
        t.keep::<PointType>(&t_at, "point_type", out);
        t.keep::<EntryMode>(&t_at, "entry_mode", out);
        t.keep::<Origin>(&t_at, "origin", out);
        t.keep::<Source>(&t_at, "source", out);
        for name in ["country_code", "local_date_time"] {
            t.keep::<String>(&t_at, name, out);
        }
    });
    obj.within("merchant", |m| {
        for name in [
            "id",
            "mcc",
            "name",
            "terminal_id",
            "country",
            "city",
            "address",
        ] {
            m.keep::<String>(&m_at, name, out);
        }
    });
    obj.keep::<Merchant>(at, "merchant", out);
    obj.within("card", |c| {
        c.keep::<ProductType>(&c_at, "product_type", out);
        c.keep::<Provider>(&c_at, "provider", out);
        c.keep::<String>(&c_at, "last_four", out);
    });
    let id_ok = |field: &'static str, id: &str| check_id(field, id).is_ok();
    obj.keep_if::<Option<CardRef>>(
        at,
        "card",
        |c| c.as_ref().is_none_or(|c| id_ok("card.id", &c.id)),
        out,
    );
    // Without a readable user the money is booked on suspense, for review.
    obj.keep_if::<Option<UserRef>>(
        at,
        "user",
        |u| u.as_ref().is_none_or(|u| id_ok("user.id", &u.id)),
        out,
    );
    obj.within("amount", |a| {
        a.keep::<MoneyField>(&a_at, "transaction", out);
        a.keep::<MoneyField>(&a_at, "settlement", out);
        a.keep::<Vec<AmountDetail>>(&a_at, "details", out);
    });
}

/// `parse(body)`, or, when that fails, `parse` of the body without the members `repair`
/// leaves out, and their paths. `Err((fault, left_out))`: the strict parse's fault when
/// nothing was left out, else the fault that is left.
fn read_leniently<T>(
    body: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, WireError>,
    repair: impl FnOnce(&mut Members, &mut Vec<String>),
) -> Result<(T, Vec<String>), (WireError, Vec<String>)> {
    let strict = match parse(body) {
        Ok(parsed) => return Ok((parsed, Vec::new())),
        Err(e) => e,
    };
    if refused_before_parsing(body) {
        return Err((strict, Vec::new()));
    }
    let Ok(mut top) = serde_json::from_slice::<Members>(body) else {
        return Err((strict, Vec::new()));
    };
    let mut left_out = Vec::new();
    repair(&mut top, &mut left_out);
    if left_out.is_empty() {
        return Err((strict, left_out));
    }
    match top.to_raw().map(|raw| parse(raw.get().as_bytes())) {
        Some(Ok(parsed)) => Ok((parsed, left_out)),
        Some(Err(e)) => Err((e, left_out)),
        None => Err((strict, Vec::new())),
    }
}

impl TransactionRequest {
    /// [`TransactionRequest::from_slice`], or, when that fails only because optional fields
    /// are malformed, the request without them and their paths (`merchant.mcc`, `card`,
    /// ...). Never looser about money: see the [module](crate::lenient) text. An empty
    /// list means the body parsed strictly.
    pub fn from_slice_lenient(body: &[u8]) -> Result<(Self, Vec<String>), WireError> {
        read_leniently(body, Self::from_slice, |top, out| {
            leave_out_unreadable(top, "", out);
        })
        .map_err(|(e, left_out)| {
            // The fault that refuses it, not one of those it would have done without: an
            // id breaking the rule names its field; another names the position in the body
            // as received only when nothing was left out before it, so it says what was.
            if left_out.is_empty() || e.id_field().is_some() {
                return e;
            }
            let reason = e.message();
            let reason = reason.rfind(" at line ").map_or(reason, |i| &reason[..i]);
            WireError::new(format!(
                "{reason} (read without {}, which an adjustment may do without)",
                left_out.join(", ")
            ))
        })
    }
}

impl Notification {
    /// [`Notification::from_slice`], or, when that fails only because optional fields of
    /// `event_detail` are malformed, the notification without them and their paths
    /// (`event_detail.merchant.mcc`, `event_detail.user`, ...). The processor's verdict
    /// must not be lost for a field it does not need: what it needs (`event_id`,
    /// `event_detail.status`, the transaction's id, type and original, `amount.local`) is
    /// read strictly, and a body whose fault is there is not read (it is kept for review).
    pub fn from_slice_lenient(body: &[u8]) -> Result<(Self, Vec<String>), WireError> {
        read_leniently(body, Self::from_slice, |top, out| {
            top.within("event_detail", |d| {
                leave_out_unreadable(d, "event_detail", out);
                for name in ["status_detail", "extra_detail"] {
                    d.keep::<String>("event_detail", name, out);
                }
            });
        })
        .map_err(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = concat!(
        r#"{"transaction":{"id":"ctx-1","type":"PURCHASE","point_type":"POS","#,
        r#""original_transaction_id":"ctx-0"},"#,
        r#""merchant":{"id":"m1","mcc":"5045","name":"Shop"},"#,
        r#""card":{"id":"crd-1","product_type":"PREPAID","last_four":"6708"},"#,
        r#""user":{"id":"usr-1"},"#,
        r#""amount":{"local":{"total":990.10,"currency":"ARS"},"#,
        r#""settlement":{"total":"11.00","currency":"USD"}},"#,
        r#""extra_data":{"pin_presence":"ONLINE"}}"#
    );

    fn with(from: &str, to: &str) -> String {
        assert_eq!(GOOD.matches(from).count(), 1, "{from}");
        GOOD.replacen(from, to, 1)
    }

    #[test]
    fn a_strict_body_reads_as_it_does_strictly() {
        let (lenient, left_out) = TransactionRequest::from_slice_lenient(GOOD.as_bytes()).unwrap();
        assert!(left_out.is_empty());
        assert_eq!(
            lenient,
            TransactionRequest::from_slice(GOOD.as_bytes()).unwrap()
        );
    }

    #[test]
    fn malformed_optional_fields_are_left_out_and_named() {
        let cases: &[(&str, &str, &[&str])] = &[
            (r#""mcc":"5045""#, r#""mcc":5045"#, &["merchant.mcc"]),
            (r#""id":"crd-1","#, "", &["card"]),
            (r#""id":"crd-1""#, r#""id":"crd-1\nx""#, &["card"]),
            (
                r#""product_type":"PREPAID""#,
                r#""product_type":7"#,
                &["card.product_type"],
            ),
            (
                r#""total":"11.00""#,
                r#""total":null"#,
                &["amount.settlement"],
            ),
            (r#""id":"usr-1""#, r#""id":12"#, &["user"]),
            (
                r#""point_type":"POS""#,
                r#""point_type":["POS"]"#,
                &["transaction.point_type"],
            ),
            (
                r#""merchant":{"id":"m1","mcc":"5045","name":"Shop"}"#,
                r#""merchant":"Shop""#,
                &["merchant"],
            ),
            (
                r#""name":"Shop"},"card":{"id":"crd-1","#,
                r#""name":false},"card":{"id":5,"#,
                &["merchant.name", "card"],
            ),
            // A name given twice where a field may be left out: that field is (never one of
            // the two picked), or the whole object when the name is one it needs.
            (r#""id":"m1","#, r#""id":"m1","mcc":5,"#, &["merchant.mcc"]),
            (
                r#""point_type":"POS","#,
                r#""point_type":"POS","point_type":"ATM","#,
                &["transaction.point_type"],
            ),
            (r#""id":"usr-1""#, r#""id":"usr-1","id":"usr-2""#, &["user"]),
            (
                r#""user":{"id":"usr-1"}"#,
                r#""user":{"id":"usr-1"},"user":{"id":"usr-2"}"#,
                &["user"],
            ),
            // A name the request does not read may stand twice, as it may strictly.
            (
                r#""extra_data":{"pin_presence":"ONLINE"}"#,
                r#""extra_data":{},"extra_data":{},"merchant":null,"merchant":7"#,
                &["merchant"],
            ),
        ];
        for (from, to, named) in cases {
            let body = with(from, to);
            assert!(
                TransactionRequest::from_slice(body.as_bytes()).is_err(),
                "{body}"
            );
            let (parsed, left_out) = TransactionRequest::from_slice_lenient(body.as_bytes())
                .unwrap_or_else(|e| panic!("{body}: {}", e.message()));
            assert_eq!(&left_out, named, "{body}");
            // The money and the ids it needs are read exactly as sent.
            assert_eq!(parsed.transaction.id, "ctx-1");
            assert_eq!(parsed.amount.local.total.text(), "990.10");
            assert_eq!(
                parsed.transaction.original_transaction_id.as_deref(),
                Some("ctx-0")
            );
        }
    }

    #[test]
    fn what_money_needs_is_never_left_out() {
        for (from, to) in [
            (r#""total":990.10"#, r#""total":null"#),
            (r#""currency":"ARS""#, r#""currency":32"#),
            (r#""id":"ctx-1""#, r#""id":1"#),
            (r#""type":"PURCHASE""#, r#""type":3"#),
            (
                r#""original_transaction_id":"ctx-0""#,
                r#""original_transaction_id":7"#,
            ),
            // A name given twice outside what may be left out is refused, here as strictly.
            (
                r#""local":"#,
                r#""local":{"total":1,"currency":"ARS"},"local":"#,
            ),
            (
                r#""type":"PURCHASE""#,
                r#""type":"PURCHASE","type":"REFUND""#,
            ),
            // Amounts keep their exact rules.
            (r#""total":990.10"#, r#""total":"990,10""#),
        ] {
            let body = with(from, to);
            let strict = TransactionRequest::from_slice(body.as_bytes()).unwrap_err();
            let lenient = TransactionRequest::from_slice_lenient(body.as_bytes()).unwrap_err();
            assert_eq!(lenient.message(), strict.message(), "{body}");
        }
        // Nor when a field that may be left out is wrong as well.
        let only_mcc = with(r#""mcc":"5045""#, r#""mcc":5"#);
        assert!(TransactionRequest::from_slice_lenient(only_mcc.as_bytes()).is_ok());
        // The refusal names the fault that refuses it, not the MCC.
        for (from, to, id_field, says) in [
            (
                r#""total":990.10"#,
                r#""total":null"#,
                None,
                "read without merchant.mcc",
            ),
            (
                r#""original_transaction_id":"ctx-0""#,
                r#""original_transaction_id":"ctx 0""#,
                Some("transaction.original_transaction_id"),
                "transaction.original_transaction_id must be",
            ),
            (
                r#""id":"ctx-1""#,
                r#""id":"ctx-1\u001b[31m""#,
                Some("transaction.id"),
                "transaction.id must be",
            ),
            (
                r#""type":"PURCHASE""#,
                r#""type":{}"#,
                None,
                "read without merchant.mcc",
            ),
        ] {
            assert_eq!(only_mcc.matches(from).count(), 1, "{from}");
            let body = only_mcc.replace(from, to);
            let e = TransactionRequest::from_slice_lenient(body.as_bytes()).unwrap_err();
            assert_eq!(e.id_field(), id_field, "{body}");
            assert!(e.message().contains(says), "{body}: {}", e.message());
            assert!(!e.message().contains(" at line "), "{}", e.message());
        }
    }

    /// An advice whose detail holds malformed optional fields keeps its verdict.
    #[test]
    fn a_notification_keeps_its_verdict_without_the_fields_it_cannot_read() {
        let advice = concat!(
            r#"{"event_id":"authorization-advice","event_detail":{"#,
            r#""transaction":{"id":"ctx-1","type":"PURCHASE","point_type":7},"#,
            r#""merchant":{"id":"m1","mcc":5045},"card":{"id":"crd 1"},"user":{"id":"usr-1"},"#,
            r#""amount":{"local":{"total":"10.00","currency":"ARS"}},"#,
            r#""status":"REJECTED","status_detail":7},"idempotency_key":"adv-1"}"#
        );
        assert!(Notification::from_slice(advice.as_bytes()).is_err());
        let (n, left_out) = Notification::from_slice_lenient(advice.as_bytes()).unwrap();
        assert_eq!(
            left_out,
            [
                "event_detail.transaction.point_type",
                "event_detail.merchant.mcc",
                "event_detail.card",
                "event_detail.status_detail",
            ]
        );
        assert_eq!(n.verdict(), Some(crate::wire::Verdict::Rejected));
        let d = &n.event_detail;
        assert_eq!(d.transaction.as_ref().map(|t| t.id.as_str()), Some("ctx-1"));
        assert_eq!(d.user.as_ref().map(|u| u.id.as_str()), Some("usr-1"));
        assert_eq!(
            d.merchant.as_ref().map(|m| m.id.as_deref()),
            Some(Some("m1"))
        );
        assert!(d.card.is_none() && d.status_detail.is_none());
        // A strict body reads as it does strictly.
        let strict = advice
            .replace(r#","point_type":7"#, "")
            .replace(r#","mcc":5045"#, "")
            .replace(r#""card":{"id":"crd 1"},"#, "")
            .replace(r#","status_detail":7"#, "");
        let (n, left_out) = Notification::from_slice_lenient(strict.as_bytes()).unwrap();
        assert!(left_out.is_empty());
        assert_eq!(n, Notification::from_slice(strict.as_bytes()).unwrap());
        // What the verdict needs is never left out: such a body is not read.
        for (from, to) in [
            (r#""status":"REJECTED""#, r#""status":1"#),
            (r#""id":"ctx-1""#, r#""id":"ctx 1""#),
            (r#""type":"PURCHASE""#, r#""type":3"#),
            (r#""total":"10.00""#, r#""total":null"#),
            (r#""event_id":"authorization-advice""#, r#""event_id":9"#),
        ] {
            assert_eq!(advice.matches(from).count(), 1, "{from}");
            let body = advice.replace(from, to);
            assert!(
                Notification::from_slice_lenient(body.as_bytes()).is_err(),
                "{body}"
            );
        }
    }
}
