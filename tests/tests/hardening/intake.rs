//! Hardening: what the processor sends is bounded and readable before it is booked or logged.
//!
//! Processor ids (transaction, original transaction, card and user ids, notification event
//! ids and keys, `x-idempotency-key`) are 1 to 255 visible ASCII characters; a body is UTF-8
//! throughout, 32 levels deep at most, and its amounts carry no leading zeros.

use crate::support::{admin_money, assert_amounts_malformed, assert_booked_flagged};
use e2e::*;
use serde_json::json;

fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).expect("own body is UTF-8");
    assert!(text.contains(from), "{from} not in the body");
    text.replacen(from, to, 1).into_bytes()
}

/// `value` as the inside of a JSON string (quotes not included).
fn json_inner(value: &str) -> String {
    let quoted = serde_json::to_string(value).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

/// Every byte but ASCII letters and digits percent-encoded, as a careful client writes a
/// path segment.
fn encode_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts a signed 400 `malformed_request` whose message names `field`.
fn assert_refused(app: &TestApp, r: &Resp, path: &str, field: &str, case: &str) {
    assert_eq!(
        r.status,
        400,
        "{case} on {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    app.assert_signed(r, path);
    let e = r.json();
    assert_eq!(e["error"]["code"], "malformed_request", "{case} on {path}");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("{field} must be 1 to 255 visible ASCII")),
        "{case} on {path}: {message}"
    );
}

const ROUTES: [&str; 5] = [AUTH, AUTH_DEBIT, AUTH_CREDIT, ADJ_DEBIT, ADJ_CREDIT];

/// Whether `field` breaking the id rule refuses a request on `path`: an adjustment cannot
/// be refused, so only its transaction ids do; its card or user is left out instead
/// (`hostile_card_and_user_ids_leave_an_adjustment_booked_without_them`).
fn refuses(path: &str, field: &str) -> bool {
    ![ADJ_DEBIT, ADJ_CREDIT].contains(&path) || field.starts_with("transaction.")
}

/// Ids that would forge or hide a log line, or that no one could type into a URL.
fn hostile_ids() -> Vec<(&'static str, String)> {
    vec![
        ("newline", "ctx-1\nINFO forged=line".into()),
        ("carriage return", "ctx-1\r\nWARN forged".into()),
        ("ANSI escape", "ctx-\u{1b}[2K\u{1b}[1Gforged".into()),
        ("space", "ctx-1 decision=APPROVED".into()),
        ("tab", "ctx-1\tforged".into()),
        ("DEL", "ctx-\u{7f}".into()),
        ("NEL", "ctx-\u{85}forged".into()),
        ("line separator", "ctx-\u{2028}forged".into()),
        ("bidi override", "ctx-\u{202e}degrof".into()),
        ("replacement character", "ctx-\u{fffd}".into()),
        ("non-ASCII letter", "ctx-\u{e9}".into()),
        ("empty", String::new()),
    ]
}

/// Item 3: an id that could forge a log line is refused on intake, on every route and in
/// every id field, with a 400 naming the field; nothing is stored, the refusal is counted.
async fn hostile_ids_are_refused_on_intake(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let auth_refusals = app.metrics.counter(
        "authorizer_invalid_ids_total",
        &[("route", AUTH), ("field", "transaction.id")],
    );
    for (case, id) in hostile_ids() {
        let bad = json_inner(&id);
        let ok = uid("ctx");
        let t = Tx::new(&ok, "PURCHASE", "u1", "1.00", "ARS");
        let with_bad_tx = replace(
            &t.body(),
            &format!("\"id\":\"{ok}\""),
            &format!("\"id\":\"{bad}\""),
        );
        let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "1.00", "ARS").original("ctx-0");
        let with_bad_original = replace(
            &refund.body(),
            "\"original_transaction_id\":\"ctx-0\"",
            &format!("\"original_transaction_id\":\"{bad}\""),
        );
        let with_bad_card = replace(&t.body(), "\"id\":\"crd-u1\"", &format!("\"id\":\"{bad}\""));
        let with_bad_user = replace(
            &t.body(),
            "\"user\":{\"id\":\"u1\"}",
            &format!("\"user\":{{\"id\":\"{bad}\"}}"),
        );
        for path in ROUTES {
            for (field, body) in [
                ("transaction.id", &with_bad_tx),
                ("transaction.original_transaction_id", &with_bad_original),
                ("card.id", &with_bad_card),
                ("user.id", &with_bad_user),
            ] {
                if !refuses(path, field) {
                    continue;
                }
                let r = app.processor(path, body, &uid("k")).await;
                assert_refused(&app, &r, path, field, case);
            }
        }
    }
    // The header key follows the same rule (a value with a byte that is not visible ASCII
    // but still a legal header value: space, tab, or more than 255 bytes).
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    for key in ["k 1".to_owned(), "k\t1".to_owned(), "k".repeat(256)] {
        for path in [AUTH, ADJ_DEBIT, NOTIFY] {
            let body = if path == NOTIFY {
                replace(
                    &t.advice("authorization-advice", "REJECTED", "OTHER", "x"),
                    "\"idempotency_key\":\"x\"",
                    "\"idempotency_key\":\"\"",
                )
            } else {
                t.body()
            };
            let r = app.processor(path, &body, &key).await;
            assert_refused(&app, &r, path, "x-idempotency-key", "header key");
        }
    }
    assert_eq!(app.ledger().await, before, "nothing stored, nothing moved");
    assert_eq!(
        app.metrics.counter(
            "authorizer_invalid_ids_total",
            &[("route", AUTH), ("field", "transaction.id")],
        ),
        auth_refusals + hostile_ids().len() as u64,
        "each refusal counted"
    );
    assert!(
        app.metrics
            .counter("authorizer_bad_requests_total", &[("reason", "invalid_id")])
            >= (hostile_ids().len() * (ROUTES.len() * 4 - 2 * 2)) as u64
    );
    // The same transaction with a plain id is booked as usual.
    let r = app.send(AUTH, &t).await;
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "99.00");
}

/// Item 3: every id intake accepts can be looked up again, percent-encoded or not.
async fn every_booked_id_is_retrievable(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let n = uid("n");
    let ids = [
        format!("ctx/{n}%2F+?#&=;,"),
        format!("ctx-{n}\"'\\`<>{{}}[]|^~!@$*()"),
        format!("{n}%"),
        format!("{n}%zz%41"),
        format!("{n}+plus"),
        format!("..{n}"),
        format!("{n}{}", "x".repeat(255 - n.len())),
    ];
    for id in &ids {
        let t = Tx::new(id, "PURCHASE", "u1", "1.00", "ARS");
        let body = replace(
            &t.body(),
            &format!("\"id\":\"{id}\""),
            &format!("\"id\":\"{}\"", json_inner(id)),
        );
        let r = app.processor(AUTH_DEBIT, &body, &uid("k")).await;
        assert_eq!(r.status, 200, "{id}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["status"], "APPROVED", "{id}");
        let h = app
            .admin(
                "GET",
                &format!("/v1/transactions/{}", encode_segment(id)),
                None,
                None,
            )
            .await;
        assert_eq!(h.status, 200, "{id}: {}", String::from_utf8_lossy(&h.body));
        let h = h.json();
        assert_eq!(h["transaction_id"], id.as_str());
        assert_eq!(h["records"][0]["transaction_id"], id.as_str());
        assert_eq!(h["records"][0]["request"]["transaction"]["id"], id.as_str());
    }
    // A plus sign in a path is a plus sign, not a space.
    let plus = format!("{n}+plus");
    let h = app
        .admin("GET", &format!("/v1/transactions/{plus}"), None, None)
        .await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["transaction_id"], plus.as_str());
    for (path, status, code) in [
        // Ids booked before the rule (spaces, control characters) can still be asked for:
        // not found here, never "invalid".
        ("/v1/transactions/ctx%0Aforged", 404, "not_found"),
        ("/v1/transactions/ctx%20one", 404, "not_found"),
        ("/v1/transactions/ctx%1B%5B2K", 404, "not_found"),
        // No store can hold U+0000, and U+FFFD is what bytes that are not UTF-8 decode to.
        ("/v1/transactions/ctx%00", 400, "invalid_transaction_id"),
        ("/v1/transactions/ctx%FF", 400, "invalid_transaction_id"),
        (
            "/v1/transactions/ctx%EF%BF%BD",
            400,
            "invalid_transaction_id",
        ),
    ] {
        let h = app.admin("GET", path, None, None).await;
        assert_eq!(h.status, status, "{path}");
        assert_eq!(h.json()["error"]["code"], code, "{path}");
    }
    assert_eq!(
        app.available("u1", "ARS").await,
        format!("{}.00", 100 - ids.len())
    );
}

/// Items 3 and 10: a notification whose transaction id breaks the rule (a control character,
/// or 10 kB) is kept for review and moves no money: a 400 would be resent forever and the
/// processor's verdict lost (a card or user id that breaks it is left out:
/// `a_verdict_stands_without_the_fields_it_cannot_read`). It is not linked to any transaction (its ids stay in the
/// raw body), so no index holds them: on Postgres a 10 kB id in an indexed column would fail
/// every resend with 503. A key that breaks the rule cannot dedupe: 400, nothing stored.
async fn notifications_with_bad_ids_are_kept_for_review(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let long = "9".repeat(10_000);
    let mut kept = 0;
    for (field, id) in [
        (
            "event_detail.transaction.id",
            "ctx-1\nINFO forged".to_owned(),
        ),
        ("event_detail.transaction.id", long.clone()),
    ] {
        let ok = uid("ctx");
        let t = Tx::new(&ok, "PURCHASE", "u1", "40.00", "ARS");
        let key = uid("adv");
        let advice = t.approved_advice(&key);
        let bad = json_inner(&id);
        let advice = replace(
            &advice,
            &format!("\"id\":\"{ok}\""),
            &format!("\"id\":\"{bad}\""),
        );
        let counted = app.metrics.counter(
            "authorizer_invalid_ids_total",
            &[("route", NOTIFY), ("field", field)],
        );
        let r = app.processor(NOTIFY, &advice, &key).await;
        app.assert_signed_status(&r, 200, NOTIFY, field);
        assert_eq!(r.json()["effect"], "REVIEW", "{field}");
        kept += 1;
        // A resend is the same answer, stored once.
        let again = app.processor(NOTIFY, &advice, &key).await;
        assert_eq!((again.status, &again.body), (200, &r.body), "{field}");
        assert_eq!(
            app.metrics.counter(
                "authorizer_invalid_ids_total",
                &[("route", NOTIFY), ("field", field)],
            ),
            counted + 2,
            "{field}"
        );
        // Nothing was booked under the transaction id the detail names.
        let h = app
            .admin(
                "GET",
                &format!("/v1/transactions/{}", encode_segment(&ok)),
                None,
                None,
            )
            .await;
        assert_eq!(h.status, 404, "{field}");
    }
    // The key is what dedupes: one that breaks the rule is refused (before anything is
    // stored), in the body or in the header.
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "40.00", "ARS");
    for key in ["adv\n1".to_owned(), long.clone()] {
        let advice = t.advice("authorization-advice", "REJECTED", "OTHER", &key);
        let r = app.processor(NOTIFY, &advice, &uid("k")).await;
        assert_refused(&app, &r, NOTIFY, "idempotency_key", "body key");
    }
    // A signed body that is no notification at all (our own answer to one, sent back under a
    // key of the sender's choosing) is refused, not kept for a person.
    for key in [uid("k"), uid("k")] {
        let ours = br#"{"message":"Notification stored","effect":"REVERSED"}"#;
        let r = app.processor(NOTIFY, ours, &key).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("not a notification"), "{}", r.text());
    }
    let after = app.ledger().await;
    assert_eq!(
        (
            after.movements,
            after.postings,
            after.processor_transactions,
            &after.available
        ),
        (
            before.movements,
            before.postings,
            before.processor_transactions,
            &before.available
        ),
        "no money moved"
    );
    assert_eq!(
        after.notifications,
        before.notifications + kept,
        "kept for review, once each"
    );
}

/// An adjustment whose card or user id breaks the rule (a forged log line, 256 bytes) is
/// booked all the same, as the network made it effective: without the card, or on suspense
/// without the user, flagged `UNREAD_FIELDS`. The id is stored nowhere but the raw request.
async fn hostile_card_and_user_ids_leave_an_adjustment_booked_without_them(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let unread = |path: &str, field: &str| {
        app.metrics.counter(
            "authorizer_unread_fields_total",
            &[("route", path), ("field", field)],
        )
    };
    let before = (unread(ADJ_DEBIT, "card"), unread(ADJ_CREDIT, "user"));
    let bad_ids = ["ctx-1\nINFO forged=line".to_owned(), "8".repeat(256)];
    for bad in &bad_ids {
        let bad = json_inner(bad);
        for (path, kind, id, flags) in [
            (ADJ_DEBIT, "PURCHASE", "crd-u1", &["UNREAD_FIELDS"][..]),
            (
                ADJ_CREDIT,
                "REFUND",
                "u1",
                &["UNREAD_FIELDS", "SUSPENSE"][..],
            ),
        ] {
            let tx = Tx::new(&uid("ctx"), kind, "u1", "1.00", "ARS");
            let body = replace(
                &tx.body(),
                &format!("\"id\":\"{id}\""),
                &format!("\"id\":\"{bad}\""),
            );
            let r = app.processor(path, &body, &uid("k")).await;
            assert_booked_flagged(&app, &r, path, flags);
            // The id is in no column: the record names no card, or no user.
            let h = app
                .admin("GET", &format!("/v1/transactions/{}", tx.id), None, None)
                .await;
            assert_eq!(h.status, 200);
            let record = &h.json()["records"][0];
            let column = if path == ADJ_DEBIT {
                "card_id"
            } else {
                "user_id"
            };
            assert_eq!(record[column], serde_json::Value::Null, "{record}");
        }
    }
    // The debits without their card reached the cardholder; the credits without a user
    // did not.
    assert_eq!(app.available("u1", "ARS").await, "98.00");
    assert_eq!(
        (unread(ADJ_DEBIT, "card"), unread(ADJ_CREDIT, "user")),
        (before.0 + 2, before.1 + 2)
    );
    app.assert_audit_clean().await;
}

/// Item 10: a 10 kB id is a clear 400 naming the field on every route, never a 503 from an
/// index that cannot hold it, and nothing is stored; 255 bytes is still booked, 256 is not.
async fn long_ids_are_refused_with_400(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let long = "9".repeat(10_000);
    let just_over = "8".repeat(256);
    for bad in [&long, &just_over] {
        let ok = uid("ctx");
        let t = Tx::new(&ok, "REFUND", "u1", "1.00", "ARS").original("ctx-0");
        let body = t.body();
        for (field, b) in [
            (
                "transaction.id",
                replace(
                    &body,
                    &format!("\"id\":\"{ok}\""),
                    &format!("\"id\":\"{bad}\""),
                ),
            ),
            (
                "transaction.original_transaction_id",
                replace(
                    &body,
                    "\"original_transaction_id\":\"ctx-0\"",
                    &format!("\"original_transaction_id\":\"{bad}\""),
                ),
            ),
            (
                "card.id",
                replace(&body, "\"id\":\"crd-u1\"", &format!("\"id\":\"{bad}\"")),
            ),
            (
                "user.id",
                replace(
                    &body,
                    "\"user\":{\"id\":\"u1\"}",
                    &format!("\"user\":{{\"id\":\"{bad}\"}}"),
                ),
            ),
        ] {
            for path in ROUTES.into_iter().filter(|p| refuses(p, field)) {
                let r = app.processor(path, &b, &uid("k")).await;
                assert_refused(&app, &r, path, field, &format!("{} bytes", bad.len()));
            }
        }
    }
    assert_eq!(app.ledger().await, before, "nothing stored, nothing moved");
    // At the bound, every id field at once: booked, and found again.
    let max = |p: &str| format!("{p}{}", "7".repeat(255 - p.len()));
    let (tx_id, card, user) = (max(&uid("ctx")), max(&uid("crd")), max(&uid("usr")));
    // (Opened and funded by hand: `funded` would derive a deposit key longer than 255.)
    let r = app
        .admin("PUT", &format!("/v1/accounts/{user}/ARS"), None, None)
        .await;
    assert_eq!(r.status, 201);
    let r = admin_money(&app, "deposits", &user, "ARS", "10.00").await;
    assert_eq!(r.status, 201);
    let t = Tx::new(&tx_id, "PURCHASE", &user, "1.00", "ARS").card(&card);
    let r = app.processor(AUTH, &t.body(), &"k".repeat(255)).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let refund = Tx::new(&max(&uid("ctx")), "REFUND", &user, "1.00", "ARS")
        .card(&card)
        .original(&tx_id);
    let r = app.send(ADJ_CREDIT, &refund).await;
    assert_eq!(r.status, 200);
    let h = app
        .admin("GET", &format!("/v1/transactions/{tx_id}"), None, None)
        .await;
    assert_eq!(h.status, 200);
    let h = h.json();
    assert_eq!(h["records"][0]["card_id"], card.as_str());
    assert_eq!(
        h["adjustments"][0]["original_transaction_id"],
        tx_id.as_str()
    );
    assert_eq!(app.available(&user, "ARS").await, "10.00");
}

/// Item 9: a body is UTF-8 throughout, including strings the parser skips (unknown fields,
/// `extra_data`); otherwise 400 on every route, notifications included, and nothing stored.
async fn invalid_utf8_anywhere_is_refused(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    let splice = |body: Vec<u8>, marker: &str, bytes: &[u8]| {
        let pos = body
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .expect("marker in the body")
            + marker.len();
        [&body[..pos], bytes, &body[pos..]].concat()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unknown field",
            splice(t.body(), "\"extra_data\":{\"pin_presence\":\"", b"\xff\xfe"),
        ),
        (
            "truncated sequence",
            splice(t.body(), "\"name\":\"Computer", b"\xc3"),
        ),
        (
            "surrogate as UTF-8",
            splice(t.body(), "\"card_presence\":\"", b"\xed\xa0\x80"),
        ),
        (
            "overlong encoding",
            splice(t.body(), "\"terminal_id\":\"", b"\xc0\xaf"),
        ),
    ];
    for (case, body) in &cases {
        for path in [AUTH, ADJ_DEBIT, ADJ_CREDIT] {
            let r = app.processor(path, body, &uid("k")).await;
            assert_eq!(r.status, 400, "{case} on {path}");
            app.assert_signed(&r, path);
            assert_eq!(r.json()["error"]["code"], "malformed_request", "{case}");
            assert!(
                r.error_message().contains("not valid UTF-8"),
                "{case}: {}",
                r.json()
            );
        }
    }
    let key = uid("adv");
    let advice = splice(
        t.advice("authorization-advice", "REJECTED", "OTHER", &key),
        "\"extra_detail\":\"",
        b"\xff",
    );
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("not valid UTF-8"));
    assert_eq!(app.ledger().await, before, "nothing stored");
    // Valid multi-byte text in the same places is kept as sent.
    let fine = splice(
        t.body(),
        "\"extra_data\":{\"pin_presence\":\"",
        "caf\u{e9} \u{1f4b3}".as_bytes(),
    );
    let r = app.processor(AUTH, &fine, &uid("k")).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let h = app.admin_get(&format!("/v1/transactions/{}", t.id)).await;
    assert_eq!(
        h["records"][0]["request"]["extra_data"]["pin_presence"],
        "caf\u{e9} \u{1f4b3}ONLINE"
    );
}

/// Item 9: zero-padded amounts are refused as strings as they are as JSON numbers, on the
/// processor routes and the admin API; `0.07` and `0` are ordinary amounts.
async fn leading_zero_amounts_are_refused(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    let zero_padded = [
        "\"007.00\"",
        "\"007\"",
        "\"00\"",
        "\"-007.00\"",
        "\"00.50\"",
        "007",
        "007.00",
        "-01",
    ];
    let paths = [AUTH, AUTH_DEBIT, ADJ_DEBIT, ADJ_CREDIT];
    assert_amounts_malformed(&app, &zero_padded, "\"7.00\"", &paths).await;
    // In a detail line too: every amount of the body is read the same way.
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "\"7.00\"", "ARS")
        .details(r#"[{"type":"BASE","currency":"ARS","amount":"007.00","name":"BASE"}]"#);
    assert_eq!(app.send(AUTH, &t).await.status, 400);
    for amount in ["007.00", "007", "-01.00"] {
        let r = admin_money(&app, "deposits", "u1", "ARS", amount).await;
        assert_eq!(r.status, 400, "{amount}");
        assert_eq!(r.json()["error"]["code"], "invalid_amount", "{amount}");
    }
    assert_eq!(app.ledger().await, before, "nothing stored, nothing moved");
    for amount in ["\"0.07\"", "0.07", "\"0\"", "0"] {
        let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", amount, "ARS");
        let r = app.send(AUTH, &t).await;
        assert_eq!(r.json()["status"], "APPROVED", "{amount}");
    }
    assert_eq!(app.available("u1", "ARS").await, "99.86");
}

/// Item 9: the nesting limit is 32 levels on every route, and `docs/security.md` says so.
async fn nesting_limit_is_32_levels_as_documented(app: TestApp) {
    use protocol::wire::MAX_DEPTH;
    assert_eq!(MAX_DEPTH, 32);
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md"))
        .expect("docs/security.md");
    assert!(
        doc.contains(&format!("JSON nesting is limited to {MAX_DEPTH} levels")),
        "docs/security.md states another nesting limit"
    );
    app.funded("u1", "ARS", "100.00").await;
    let before = app.ledger().await;
    // The body's top-level object is level 1: `levels - 1` arrays in a top-level field.
    let nested = |body: Vec<u8>, levels: usize| {
        let arrays = format!("{}{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
        replace(
            &body,
            "\"extra_data\":",
            &format!("\"deep\":{arrays},\"extra_data\":"),
        )
    };
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS");
    for path in [AUTH, ADJ_CREDIT, NOTIFY] {
        let body = if path == NOTIFY {
            t.advice("authorization-advice", "REJECTED", "OTHER", &uid("adv"))
        } else {
            t.body()
        };
        let body = if path == NOTIFY {
            replace(
                &body,
                "\"idempotency_key\":",
                "\"extra_data\":null,\"idempotency_key\":",
            )
        } else {
            body
        };
        let r = app
            .processor(path, &nested(body, MAX_DEPTH + 1), &uid("k"))
            .await;
        assert_eq!(r.status, 400, "{path}");
        app.assert_signed(&r, path);
        assert_eq!(r.json()["error"]["code"], "malformed_request");
        assert!(
            r.error_message()
                .contains(&format!("nested deeper than {MAX_DEPTH} levels")),
            "{path}"
        );
    }
    assert_eq!(app.ledger().await, before, "nothing stored");
    // Exactly at the limit: booked, and the nested field kept.
    let r = app
        .processor(AUTH, &nested(t.body(), MAX_DEPTH), &uid("k"))
        .await;
    assert_eq!(r.json()["status"], "APPROVED");
    let h = app.admin_get(&format!("/v1/transactions/{}", t.id)).await;
    assert!(h["records"][0]["request"]["deep"].is_array());
}

/// A real authorizer process whose log is read back; killed when dropped (a panic while it
/// starts included, so none outlives its test).
struct LoggingNode {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl Drop for LoggingNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LoggingNode {
    /// Starts the command-line authorizer on the embedded store, logging at `info` in
    /// `format`; returns it and its base URL.
    fn start(format: &str) -> (LoggingNode, String) {
        use std::io::BufRead;
        let data = tempfile::tempdir().expect("dir");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authorizer-node"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHORIZER_CONFIG_DIR", data.path().join("no-config"))
            .env("AUTHORIZER__SERVER__LISTEN", "127.0.0.1:0")
            .env("AUTHORIZER__SERVER__WORKERS", "1")
            .env("AUTHORIZER__DATABASE__DATA_DIR", data.path())
            .env("AUTHORIZER__PROCESSOR__API_KEY", API_KEY)
            .env("AUTHORIZER__PROCESSOR__API_SECRET", API_SECRET)
            .env("AUTHORIZER__ADMIN__TOKEN", ADMIN_TOKEN)
            .env("AUTHORIZER__LOG__FILTER", "info")
            .env("AUTHORIZER__LOG__FORMAT", format)
            // Without colours, any escape sequence in the log came from a request.
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("authorizer-node starts");
        let stderr = child.stderr.take().expect("stderr");
        let node = LoggingNode {
            child,
            log: Default::default(),
            _data: data,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = node.log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let addr: String = addr
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("node did not start: {:?}", node.log_lines()));
        (node, format!("http://{addr}"))
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Sends `body` to the node, signed as the processor signs.
async fn send_signed(base: &str, path: &str, body: &[u8], key: &str) -> u16 {
    let secret = protocol::ApiSecret::from_base64(API_SECRET).expect("demo secret");
    let ts = crate_now().to_string();
    let sig = protocol::signature::sign(&secret, &ts, path, body);
    awc::Client::default()
        .post(format!("{base}{path}"))
        .insert_header(("x-api-key", API_KEY))
        .insert_header(("x-timestamp", ts))
        .insert_header(("x-endpoint", path))
        .insert_header(("x-signature", sig))
        .insert_header(("x-idempotency-key", key))
        .insert_header(("content-type", "application/json"))
        .send_body(body.to_vec())
        .await
        .expect("answered")
        .status()
        .as_u16()
}

/// Item 3, read in the log itself: hostile ids on every route, in both log formats, forge no
/// line and leave no escape sequence, while ordinary ids are still logged, unquoted.
#[actix_rt::test]
async fn hostile_ids_forge_no_log_line() {
    for format in ["text", "json"] {
        let (node, base) = LoggingNode::start(format);
        let plain = uid("ctx");
        let t = Tx::new(&plain, "PURCHASE", "u1", "1.00", "ARS");
        assert_eq!(send_signed(&base, AUTH, &t.body(), &uid("k")).await, 200);
        for id in [
            "ctx-1\nFORGED INFO authorization decision=APPROVED",
            "ctx-1\r\nFORGED",
            "ctx-\u{1b}[2K\u{1b}[1GFORGED",
            "ctx-1 FORGED=field",
            "ctx-\u{2028}FORGED",
        ] {
            let ok = uid("ctx");
            let t = Tx::new(&ok, "REFUND", "u1", "1.00", "ARS");
            let (from, to) = (
                format!("\"id\":\"{ok}\""),
                format!("\"id\":\"{}\"", json_inner(id)),
            );
            let bad = replace(&t.body(), &from, &to);
            for path in [AUTH, ADJ_CREDIT] {
                assert_eq!(
                    send_signed(&base, path, &bad, &uid("k")).await,
                    400,
                    "{id:?}"
                );
            }
            let key = uid("adv");
            let advice = t.approved_advice(&key);
            let advice = replace(&advice, &from, &to);
            assert_eq!(
                send_signed(&base, NOTIFY, &advice, &key).await,
                200,
                "{id:?}"
            );
        }
        // The lines are written before the answers; give the reader thread a moment.
        actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
        let lines = node.log_lines();
        drop(node);
        assert!(
            lines.iter().any(|l| l.contains(&plain)),
            "{format}: the plain authorization is logged: {lines:#?}"
        );
        for line in &lines {
            assert!(!line.contains("FORGED"), "{format}: {line}");
            assert!(!line.contains(['\u{1b}', '\u{2028}']), "{format}: {line:?}");
        }
    }
}

/// A notification whose `event_detail` holds an optional field that does not read (a numeric
/// MCC, a card or user id that breaks the id rule, a numeric `status_detail`) keeps its
/// verdict: the field is left out, as for an adjustment, and the notification flagged
/// `UNREAD_FIELDS`. Before, the whole detail went unread: a rejection left the cardholder
/// debited, an approval of a purchase we never saw was not booked.
async fn a_verdict_stands_without_the_fields_it_cannot_read(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let unread = |field: &str| {
        app.metrics.counter(
            "authorizer_unread_fields_total",
            &[("route", NOTIFY), ("field", field)],
        )
    };
    let (mcc, card, detail) = (
        unread("event_detail.merchant.mcc"),
        unread("event_detail.card"),
        unread("event_detail.status_detail"),
    );
    // A rejection of an approved purchase, with a numeric MCC, a 10 kB card id and a
    // numeric status_detail: the purchase is reversed.
    let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", "40.00", "ARS");
    assert_eq!(app.send(AUTH, &t).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "60.00");
    let key = uid("adv");
    let advice = t.advice("authorization-advice", "REJECTED", "OTHER", &key);
    let advice = replace(&advice, "\"mcc\":\"5045\"", "\"mcc\":5045");
    let advice = replace(
        &advice,
        "\"id\":\"crd-u1\"",
        &format!("\"id\":\"{}\"", "9".repeat(10_000)),
    );
    let advice = replace(
        &advice,
        "\"status_detail\":\"OTHER\"",
        "\"status_detail\":7",
    );
    let r = app.processor(NOTIFY, &advice, &key).await;
    app.assert_signed_status(&r, 200, NOTIFY, "rejection");
    assert_eq!(r.json()["effect"], "REVERSED", "{}", r.text());
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    let h = app.admin_get(&format!("/v1/transactions/{}", t.id)).await;
    assert_eq!(
        h["notifications"][0]["flags"],
        json!(["UNREAD_FIELDS"]),
        "{h}"
    );
    // A resend is the same answer and counts nothing more.
    let again = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!((again.status, &again.body), (200, &r.body));
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    assert_eq!(
        (
            unread("event_detail.merchant.mcc"),
            unread("event_detail.card"),
            unread("event_detail.status_detail"),
        ),
        (mcc + 1, card + 1, detail + 1),
        "each field once, by name"
    );
    // The approval of a purchase we never saw, whose user id breaks the rule: booked on
    // the currency's suspense account (no user to book it on), flagged for a person.
    let unseen = Tx::new(&uid("ctx"), "PURCHASE", "u1", "25.00", "ARS");
    let key = uid("adv");
    let advice = replace(
        &unseen.approved_advice(&key),
        "\"user\":{\"id\":\"u1\"}",
        "\"user\":{\"id\":\"u1\\nINFO forged\"}",
    );
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.json()["effect"], "FORCED", "{}", r.text());
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    let h = app
        .admin_get(&format!("/v1/transactions/{}", unseen.id))
        .await;
    let flags = h["notifications"][0]["flags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for flag in ["FORCED_BY_PROCESSOR", "UNREAD_FIELDS", "SUSPENSE"] {
        assert!(flags.contains(&json!(flag)), "{flag}: {h}");
    }
    // A status that does not read is what the verdict needs: kept for review, nothing moved.
    let other = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    assert_eq!(app.send(AUTH, &other).await.json()["status"], "APPROVED");
    let key = uid("adv");
    let advice = replace(
        &other.advice("authorization-advice", "REJECTED", "OTHER", &key),
        "\"status\":\"REJECTED\"",
        "\"status\":0",
    );
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.json()["effect"], "REVIEW", "{}", r.text());
    assert_eq!(app.available("u1", "ARS").await, "90.00");
}

both_backends!(
    hostile_ids_are_refused_on_intake,
    every_booked_id_is_retrievable,
    notifications_with_bad_ids_are_kept_for_review,
    a_verdict_stands_without_the_fields_it_cannot_read,
    long_ids_are_refused_with_400,
    hostile_card_and_user_ids_leave_an_adjustment_booked_without_them,
    invalid_utf8_anywhere_is_refused,
    leading_zero_amounts_are_refused,
    nesting_limit_is_32_levels_as_documented,
);
