//! The processor's events: one function per event kind builds its outbox events from the
//! rows a write path records, so each write path publishes with one line and stays SQL
//! and row mapping. The event id is derived from the recorded row (the transaction id of
//! an authorization or adjustment, the idempotency key of a notification): a replay
//! records nothing and so publishes nothing, and the unique key of the outbox
//! (`event_id`, `subscription_id`) stands behind it.
//!
//! Events never carry a full card number: the processor's card id only (a token).

use crate::batch::BatchItem;
use crate::outbox::Event;
use crate::processor::{AdjustmentResult, NotificationCall, NotificationResult, ProcessorCall};
use ledger::plan::{Asked, CardTransaction, RecordRow, RecordWrite, Writes, direction_str};
use ledger::verdicts::{NotificationEffect, RecordWrite as VerdictRecord};
use ledger::{Currency, RequestKind, format_minor};
use serde::Serialize;
use serde_json::{Value, json};

pub const AUTHORIZATION_DECIDED: &str = "authorization.decided";
pub const ADJUSTMENT_BOOKED: &str = "adjustment.booked";
pub const NOTIFICATION_APPLIED: &str = "notification.applied";

/// The event id of the authorization of `transaction_id`.
pub fn authorization_event_id(transaction_id: &str) -> String {
    format!("evt-auth-{transaction_id}")
}

/// The event id of the adjustment `transaction_id`.
pub fn adjustment_event_id(transaction_id: &str) -> String {
    format!("evt-adj-{transaction_id}")
}

/// The event id of the notification under idempotency key `key`.
pub fn notification_event_id(key: &str) -> String {
    format!("evt-notif-{key}")
}

/// An exact amount string: `minor` (else the transaction's amount; sign dropped: the
/// direction says which way) in the currency's exponent, or the amount as received when it
/// cannot be held exactly in a currency we know.
fn amount(minor: Option<i64>, currency: Option<Currency>, t: &CardTransaction<'_>) -> String {
    let minor = minor.or_else(|| {
        let (a, c) = t.amount.zip(currency)?;
        ledger::to_minor(a, c).ok()
    });
    match (minor, currency) {
        (Some(m), Some(c)) => format_minor(m.saturating_abs(), c.exponent()),
        _ => t.amount_text.trim_matches('"').to_owned(),
    }
}

/// A currency's code, or the text received when it is not a currency code.
fn currency_code(t: &CardTransaction<'_>) -> (Option<Currency>, String) {
    match Currency::parse_any(t.currency) {
        Ok(c) => (Some(c), c.code().to_owned()),
        Err(_) => (None, t.currency.to_owned()),
    }
}

/// What every processor event says of its card transaction.
fn transaction_fields(t: &CardTransaction<'_>, direction: Option<RequestKind>) -> Value {
    json!({
        "transaction_id": t.transaction_id,
        "original_transaction_id": t.original_transaction_id,
        "transaction_type": t.tx_type,
        "direction": direction_str(direction),
        "user_id": t.user_id,
        "card_id": t.card_id,
    })
}

fn merge(mut base: Value, more: Value) -> Value {
    if let (Value::Object(b), Value::Object(m)) = (&mut base, more) {
        b.extend(m);
    }
    base
}

/// `authorization.decided` for every authorization a plan decides or answers (approved,
/// declined, or answered with a verdict that came first): its record rows. Replays under
/// new keys write no record row and publish nothing.
pub(crate) fn authorizations(items: &[BatchItem<'_>], w: &Writes) -> Vec<Event> {
    w.records
        .iter()
        .map(|r| authorization_decided(&items[r.request], r, w))
        .collect()
}

/// The data of `authorization.decided`: [`transaction_fields`] and the decision, its fields
/// declared in name order as every event's data lists them. Rendered for every
/// authorization while somebody subscribes, so typed rather than built as a map.
#[derive(Serialize)]
struct AuthorizationDecided<'a> {
    amount: String,
    card_id: Option<&'a str>,
    currency: String,
    decision: &'a str,
    direction: Option<&'a str>,
    endpoint: &'a str,
    idempotency_key: &'a str,
    movement_id: Option<i64>,
    original_transaction_id: Option<&'a str>,
    posted: Option<String>,
    status_detail: &'a str,
    transaction_id: &'a str,
    transaction_type: &'a str,
    user_id: Option<&'a str>,
    verdict_first: bool,
}

/// What `authorization.decided` says beyond its card transaction: as a plan decides it
/// ([`authorization_decided`]) or as the ledger keeps it ([`rebuilt_authorization_body`]).
struct Decided<'a> {
    direction: Option<&'a str>,
    endpoint: &'a str,
    idempotency_key: &'a str,
    amount_minor: Option<i64>,
    status: &'a str,
    status_detail: &'a str,
    movement_id: Option<i64>,
    posted_minor: Option<i64>,
    verdict_first: bool,
}

/// The `authorization.decided` of `t`, decided as `d`, at `at_ms`.
fn decided_event(t: &CardTransaction<'_>, d: Decided<'_>, at_ms: i64) -> Event {
    let (currency, code) = currency_code(t);
    let data = AuthorizationDecided {
        amount: amount(d.amount_minor, currency, t),
        card_id: t.card_id,
        currency: code,
        decision: d.status,
        direction: d.direction,
        endpoint: d.endpoint,
        idempotency_key: d.idempotency_key,
        movement_id: d.movement_id,
        original_transaction_id: t.original_transaction_id,
        posted: d
            .posted_minor
            .zip(currency)
            .map(|(b, c)| format_minor(b, c.exponent())),
        status_detail: d.status_detail,
        transaction_id: t.transaction_id,
        transaction_type: t.tx_type,
        user_id: t.user_id,
        verdict_first: d.verdict_first,
    };
    Event::new(authorization_event_id(t.transaction_id), at_ms, &data)
}

fn authorization_decided(item: &BatchItem<'_>, r: &RecordRow, w: &Writes) -> Event {
    let posted_minor = r.movement_id.and_then(|m| {
        w.postings
            .iter()
            .find(|p| p.movement_id == m && p.balance_after.is_some())
            .and_then(|p| p.balance_after)
    });
    let decided = Decided {
        direction: direction_str(item.kind),
        endpoint: item.call.endpoint,
        idempotency_key: item.call.idempotency_key,
        amount_minor: r.amount_minor,
        status: r.status,
        status_detail: r.status_detail,
        movement_id: r.movement_id,
        posted_minor,
        verdict_first: r.write == RecordWrite::Answer,
    };
    let mut event = decided_event(&item.tx, decided, item.call.now_ms);
    // Recorded by this answer, with its amount in minor units: every field is the record's
    // (`rebuilt_authorization_body`), so the outbox rows leave the body out.
    event.rebuilt = r.write == RecordWrite::Insert && r.amount_minor.is_some();
    event
}

/// An authorization as its record keeps it, with what its `authorization.decided` says
/// beyond the record: the event's instant (its outbox row's) and the posted balance (its
/// movement's cardholder posting).
pub(crate) struct StoredAuthorization {
    pub transaction_id: String,
    pub asked: Asked,
    pub amount_minor: Option<i64>,
    pub status: Option<String>,
    pub status_detail: Option<String>,
    pub original_transaction_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub movement_id: Option<i64>,
    pub posted_minor: Option<i64>,
    pub at_ms: i64,
}

/// The columns of an authorization's record (`processor_transactions r`) that its event is
/// rebuilt from, and its movement's cardholder posting's balance (`posted_minor`): read by
/// [`stored_authorization!`].
pub(crate) const RECORD_COLUMNS: &str = "r.transaction_id, r.endpoint, r.direction, r.tx_type, \
     r.user_id, r.card_id, r.currency, r.amount_text, r.amount_minor, r.status, r.status_detail, \
     r.original_transaction_id, r.idempotency_key, r.movement_id, \
     (SELECT p.balance_after_minor FROM postings p WHERE p.movement_id = r.movement_id \
       AND p.balance_after_minor IS NOT NULL ORDER BY p.id LIMIT 1) AS posted_minor";

/// The [`StoredAuthorization`] in the [`RECORD_COLUMNS`] of `$row`, for an event at `$at_ms`;
/// `?` on a column that does not decode.
macro_rules! stored_authorization {
    ($row:expr, $at_ms:expr) => {{
        let r = &$row;
        $crate::events::StoredAuthorization {
            transaction_id: r.try_get("transaction_id")?,
            asked: ledger::plan::Asked::read(|column| r.try_get(column))?,
            amount_minor: r.try_get("amount_minor")?,
            status: r.try_get("status")?,
            status_detail: r.try_get("status_detail")?,
            original_transaction_id: r.try_get("original_transaction_id")?,
            idempotency_key: r.try_get("idempotency_key")?,
            movement_id: r.try_get("movement_id")?,
            posted_minor: r.try_get("posted_minor")?,
            at_ms: $at_ms,
        }
    }};
}
pub(crate) use stored_authorization;

/// The body of the `authorization.decided` of `s`, rebuilt from the ledger: the bytes its
/// commit rendered, for an authorization that was recorded when it was answered (not one
/// answering a verdict that came first, whose record the verdict wrote).
pub(crate) fn rebuilt_authorization_body(s: &StoredAuthorization) -> Vec<u8> {
    fn text(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or_default()
    }
    let a = &s.asked;
    let amount_text = text(&a.amount_text);
    let t = CardTransaction {
        transaction_id: &s.transaction_id,
        tx_type: text(&a.tx_type),
        user_id: a.user_id.as_deref(),
        card_id: a.card_id.as_deref(),
        currency: text(&a.currency),
        amount_text,
        amount: amount_text.trim_matches('"').parse().ok(),
        original_transaction_id: s.original_transaction_id.as_deref(),
        ..CardTransaction::default()
    };
    let decided = Decided {
        direction: a.direction.as_deref(),
        endpoint: text(&a.endpoint),
        idempotency_key: text(&s.idempotency_key),
        amount_minor: s.amount_minor,
        status: text(&s.status),
        status_detail: text(&s.status_detail),
        movement_id: s.movement_id,
        posted_minor: s.posted_minor,
        verdict_first: false,
    };
    decided_event(&t, decided, s.at_ms).body(AUTHORIZATION_DECIDED)
}

/// `adjustment.booked` for the adjustment `call` recorded with `amount_minor` (signed for
/// the cardholder) and `status_detail`.
pub(crate) fn adjustment_booked(
    call: &ProcessorCall<'_>,
    t: &CardTransaction<'_>,
    direction: RequestKind,
    amount_minor: Option<i64>,
    status_detail: &str,
    result: &AdjustmentResult,
) -> Vec<Event> {
    let (currency, code) = currency_code(t);
    let data = merge(
        transaction_fields(t, Some(direction)),
        json!({
            "idempotency_key": call.idempotency_key,
            "endpoint": call.endpoint,
            "status_detail": status_detail,
            "currency": code,
            "amount": amount(amount_minor, currency, t),
            "movement_id": result.movement_id,
            "posted": result.balance_after.zip(currency).map(|(b, c)| format_minor(b, c.exponent())),
            "suspense": result.flags.has(ledger::verdicts::Flags::SUSPENSE),
            "flags": result.flags.as_slice(),
        }),
    );
    vec![Event::new(
        adjustment_event_id(t.transaction_id),
        call.now_ms,
        &data,
    )]
}

/// `notification.applied` for notification `n`, whose verdict met the authorization
/// record as `record` says, with `result`.
pub(crate) fn notification_applied(
    n: &NotificationCall<'_>,
    record: VerdictRecord,
    result: &NotificationResult,
) -> Vec<Event> {
    let t = n.transaction.as_ref();
    let (currency, code) = t.map(currency_code).unzip();
    let data = merge(
        t.map(|t| transaction_fields(t, n.direction))
            .unwrap_or_else(|| json!({})),
        json!({
            "idempotency_key": n.key,
            "notification_event_id": n.event_id,
            "verdict": n.verdict.map(|v| v.as_str()),
            "status_detail": n.status_detail,
            "effect": result.effect.as_str(),
            "reversal": result.effect == NotificationEffect::Reversed,
            "forced": result.effect == NotificationEffect::Forced,
            "review": result.effect == NotificationEffect::Review,
            "verdict_before_authorization": matches!(record, VerdictRecord::Insert { .. }),
            "currency": code,
            "amount": t.map(|t| amount(None, currency.flatten(), t)),
            "movement_id": result.movement_id,
            "flags": result.flags.as_slice(),
        }),
    );
    vec![Event::new(notification_event_id(n.key), n.now_ms, &data)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::ProcessorCall;
    use ledger::plan::{CardLookup, PostingRow, StoredResponse};

    fn decided(original: Option<&str>, movement: Option<i64>, write: RecordWrite) -> Vec<u8> {
        decided_event(original, movement, write).body(AUTHORIZATION_DECIDED)
    }

    fn decided_event(original: Option<&str>, movement: Option<i64>, write: RecordWrite) -> Event {
        let item = BatchItem {
            call: ProcessorCall {
                idempotency_key: "key-1",
                request_hash: [0; 32],
                endpoint: "/transactions/authorizations/debit",
                raw_body: b"{}",
                now_ms: 1_764_000_000_123,
                commit_by: None,
                commit_started: None,
            },
            tx: CardTransaction {
                transaction_id: "tx-\"1\"",
                tx_type: "PURCHASE",
                user_id: Some("user-1"),
                card_id: Some("card-1"),
                currency: "ARS",
                amount_text: "\"12.5\"",
                amount: "12.5".parse().ok(),
                original_transaction_id: original,
                ..CardTransaction::default()
            },
            kind: Some(RequestKind::Debit),
            card: CardLookup::InTransaction,
        };
        let record = RecordRow {
            request: 0,
            write,
            amount_minor: Some(-1250),
            status: "APPROVED",
            status_detail: "APPROVED",
            movement_id: movement,
            response: StoredResponse {
                status: 200,
                body: Vec::new(),
            },
            explanation: None,
            counted: None,
        };
        let writes = Writes {
            postings: vec![PostingRow {
                id: 1,
                movement_id: 7,
                account_id: 3,
                amount: -1250,
                balance_after: Some(98_750),
                version: Some(2),
            }],
            ..Writes::default()
        };
        authorization_decided(&item, &record, &writes)
    }

    #[test]
    fn an_authorization_recorded_by_its_answer_is_rebuilt_from_its_record_byte_for_byte() {
        let text = |s: &str| Some(s.to_owned());
        for (original, movement, posted) in
            [(None, Some(7), Some(98_750)), (Some("tx-0"), None, None)]
        {
            let event = decided_event(original, movement, RecordWrite::Insert);
            assert!(event.rebuilt, "its rows leave the body out");
            // The record as the batch stores it, and its movement's cardholder posting.
            let stored = StoredAuthorization {
                transaction_id: "tx-\"1\"".to_owned(),
                asked: Asked {
                    endpoint: text("/transactions/authorizations/debit"),
                    direction: text("DEBIT"),
                    tx_type: text("PURCHASE"),
                    user_id: text("user-1"),
                    card_id: text("card-1"),
                    currency: text("ARS"),
                    amount_text: text("\"12.5\""),
                },
                amount_minor: Some(-1250),
                status: text("APPROVED"),
                status_detail: text("APPROVED"),
                original_transaction_id: original.map(str::to_owned),
                idempotency_key: text("key-1"),
                movement_id: movement,
                posted_minor: posted,
                at_ms: 1_764_000_000_123,
            };
            assert_eq!(
                String::from_utf8(rebuilt_authorization_body(&stored)).unwrap(),
                String::from_utf8(event.body(AUTHORIZATION_DECIDED)).unwrap()
            );
        }
        // One answering a verdict that came first keeps its body: the verdict wrote the record.
        assert!(!decided_event(None, Some(7), RecordWrite::Answer).rebuilt);
    }

    #[test]
    fn an_authorization_event_body_lists_its_keys_in_name_order_with_nulls() {
        let body = decided(None, Some(7), RecordWrite::Insert);
        let expected = json!({
            "created_at_ms": 1_764_000_000_123_i64,
            "id": "evt-auth-tx-\"1\"",
            "type": "authorization.decided",
            "data": {
                "transaction_id": "tx-\"1\"",
                "original_transaction_id": null,
                "transaction_type": "PURCHASE",
                "direction": "DEBIT",
                "user_id": "user-1",
                "card_id": "card-1",
                "idempotency_key": "key-1",
                "endpoint": "/transactions/authorizations/debit",
                "decision": "APPROVED",
                "status_detail": "APPROVED",
                "currency": "ARS",
                "amount": "12.50",
                "movement_id": 7,
                "posted": "987.50",
                "verdict_first": false,
            },
        });
        // The same bytes as the object rendered as a map (keys in name order), as the other
        // events are.
        assert_eq!(
            String::from_utf8(body).unwrap(),
            expected.to_string(),
            "authorization.decided body"
        );
    }

    #[test]
    fn an_authorization_event_without_a_movement_has_no_posted_balance() {
        let body = decided(Some("tx-0"), None, RecordWrite::Answer);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"]["posted"], Value::Null);
        assert_eq!(v["data"]["movement_id"], Value::Null);
        assert_eq!(v["data"]["original_transaction_id"], "tx-0");
        assert_eq!(v["data"]["verdict_first"], true);
    }
}
