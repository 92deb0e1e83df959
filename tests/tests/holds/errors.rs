//! Every error row of §2.2 over HTTP, and what the transport refuses: signatures, the other
//! caller's keys, idempotency keys, reused reservation ids, bad expiries, unknown currencies.

use super::common::*;
use e2e::*;
use protocol::ApiSecret;
use serde_json::json;

/// The §2.2 table, row by row.
async fn error_rows(app: TestApp) {
    app.funded("u1", "DKK", "1000.00").await;
    let any_refund = || refund("x", "1");
    // unknown reservation_id, on every route
    let unknown =
        [capture_path("nope"), cancel_path("nope")].map(|p| (p, json!({}), 404, "NOT_FOUND"));
    refusals(&app, unknown).await;
    refusals(
        &app,
        [(refund_path("nope"), any_refund(), 404, "NOT_FOUND")],
    )
    .await;
    let r = app.channel("GET", &get_path("nope"), b"", None).await;
    assert_eq!(error_code(&r, 404), "NOT_FOUND");

    // capture: cancelled
    reserve_approved(&app, "c1", "10.00", "DKK").await;
    let first = post(&app, &cancel_path("c1"), &json!({})).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["reservation"]["state"], "CANCELLED");
    // cancel again: 200, the same body (an empty body too).
    let again = app
        .channel("POST", &cancel_path("c1"), b"", Some(&uid("ck")))
        .await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    // capture: cancelled; refund: not captured (cancelled, then reserved); capture: more
    // than reserved, not representable, zero
    reserve_approved(&app, "c2", "10.00", "DKK").await;
    let mut rows = vec![
        (capture_path("c1"), json!({}), 409, "NOT_RESERVED"),
        (refund_path("c1"), any_refund(), 409, "NOT_CAPTURED"),
        (refund_path("c2"), any_refund(), 409, "NOT_CAPTURED"),
        (
            capture_path("c2"),
            json!({"amount": "10.01"}),
            409,
            "AMOUNT_EXCEEDS_RESERVED",
        ),
    ];
    for bad in [json!("0.00"), json!("-1.00"), json!("1.001"), json!(0)] {
        rows.push((
            capture_path("c2"),
            json!({ "amount": bad }),
            400,
            "INVALID_AMOUNT",
        ));
    }
    refusals(&app, rows).await;

    // partial capture not possible; without an amount: the full amount
    let mut full = reservation("c3", "10.00", "DKK");
    full["partial_capture_possible"] = json!(false);
    reserve(&app, &full, "APPROVED", "APPROVED").await;
    let partial = json!({"amount": "9.99"});
    refusals(
        &app,
        [(
            capture_path("c3"),
            partial,
            409,
            "PARTIAL_CAPTURE_NOT_POSSIBLE",
        )],
    )
    .await;
    let r = post(&app, &capture_path("c3"), &json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["reservation"]["captured"], "10.00");
    // cancel: captured; capture again with another amount; refund: currency mismatch,
    // above captured, zero
    let in_euros = json!({"refund_id": "r1", "amount": "1.00", "currency": "EUR"});
    refusals(
        &app,
        [
            (cancel_path("c3"), json!({}), 409, "ALREADY_CAPTURED"),
            (
                capture_path("c3"),
                json!({"amount": "5.00"}),
                409,
                "CAPTURED_WITH_DIFFERENT_AMOUNT",
            ),
            (refund_path("c3"), in_euros, 409, "CURRENCY_MISMATCH"),
            (
                refund_path("c3"),
                refund("r1", "10.01"),
                409,
                "REFUND_EXCEEDS_CAPTURED",
            ),
            (refund_path("c3"), refund("r1", "0"), 400, "INVALID_AMOUNT"),
        ],
    )
    .await;
    // refund id replay and reuse
    let body = refund("r1", "4.00");
    let first = post(&app, &refund_path("c3"), &body).await;
    assert_eq!(first.status, 200);
    let again = post(&app, &refund_path("c3"), &body).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    refusals(
        &app,
        [(
            refund_path("c3"),
            refund("r1", "5.00"),
            409,
            "REFUND_ID_REUSED",
        )],
    )
    .await;
    assert_eq!(app.movements("u1", "DKK", "HOLD_REFUND").await, 1);

    // capture, cancel and refund of an expired hold
    let mut short = reservation("c4", "10.00", "DKK");
    short["expires_in_secs"] = json!(1);
    reserve(&app, &short, "APPROVED", "APPROVED").await;
    actix_rt::time::sleep(std::time::Duration::from_millis(1100)).await;
    refusals(
        &app,
        [
            (cancel_path("c4"), json!({}), 409, "EXPIRED"),
            (capture_path("c4"), json!({}), 409, "EXPIRED"),
            (refund_path("c4"), any_refund(), 409, "NOT_CAPTURED"),
        ],
    )
    .await;

    // A refund the channel created on the last day of the 90-day window reaches us when it
    // captures it, a day later, or later still: taken up to two days past the window (the
    // cardholder gets it). More than that: payment too old. (Captures moved back in the
    // database.)
    for (id, hours) in [("c5", 91 * 24 + 12), ("c6", 92 * 24 + 1)] {
        reserve_approved(&app, id, "10.00", "DKK").await;
        assert_eq!(post(&app, &capture_path(id), &json!({})).await.status, 200);
        age_capture(&app, id, hours).await;
    }
    let r = post(&app, &refund_path("c5"), &refund("c5-late", "1")).await;
    assert_eq!(r.json()["status"], "APPROVED", "{}", r.text());
    refusals(
        &app,
        [(refund_path("c6"), any_refund(), 409, "PAYMENT_TOO_OLD")],
    )
    .await;
    assert_posted_held(&app, "DKK", "975.00", "10.00").await;
}

/// Moves a capture `hours` into the past (refund window test).
async fn age_capture(app: &TestApp, reservation_id: &str, hours: i64) {
    let ms = hours * 3_600_000;
    DirectConn::open(app)
        .await
        .execute(&format!(
            "UPDATE holds SET captured_at_ms = captured_at_ms - {ms} \
             WHERE reservation_id = '{reservation_id}'"
        ))
        .await;
}

/// Signatures, keys of the other caller, idempotency keys, reused ids, bad input.
async fn transport_and_input(app: TestApp) {
    app.funded("u1", "DKK", "100.00").await;
    let body = bytes(&reservation("t1", "10.00", "DKK"));
    let chan = ApiSecret::from_base64(CHANNEL_SECRET).unwrap();
    let proc_secret = ApiSecret::from_base64(API_SECRET).unwrap();
    // a bad signature (signed with another secret), a stale timestamp, and the processor's
    // key on a channel route
    let other = ApiSecret::from_base64("BBECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let now = crate_now();
    for (key, secret, at) in [
        (CHANNEL_KEY, &other, now),
        (CHANNEL_KEY, &chan, now - 3600),
        (API_KEY, &proc_secret, now),
    ] {
        let r = app
            .channel_signed("POST", RES, &body, Some("k1"), key, secret, at)
            .await;
        assert_eq!(error_code(&r, 401), "unauthorized", "{key} at {at}");
    }
    // a channel key on a processor route
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "DKK");
    let r = app
        .processor_signed(
            AUTH,
            &tx.body(),
            &uid("k"),
            crate_now(),
            AUTH,
            CHANNEL_KEY,
            &chan,
        )
        .await;
    assert_eq!(r.status, 401);
    // nothing was held by any of them
    assert_eq!(balances(&app, "DKK").await.1, "0.00");

    // idempotency keys: missing, too long, not visible ASCII
    let r = app.channel("POST", RES, &body, None).await;
    assert_eq!(error_code(&r, 400), "missing_idempotency_key");
    let r = app.channel("POST", RES, &body, Some(&"k".repeat(65))).await;
    assert_eq!(error_code(&r, 400), "malformed_request");
    let r = app.channel("POST", RES, &body, Some("a b")).await;
    assert_eq!(error_code(&r, 400), "malformed_request");

    // the same key and body replays byte for byte; another body under it is 409
    let first = app.channel("POST", RES, &body, Some("k-t1")).await;
    assert_eq!(first.status, 200);
    app.assert_channel_signed(&first, RES);
    let again = app.channel("POST", RES, &body, Some("k-t1")).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let other_body = bytes(&reservation("t2", "10.00", "DKK"));
    let r = app.channel("POST", RES, &other_body, Some("k-t1")).await;
    assert_eq!(error_code(&r, 409), "idempotency_key_reused");
    // the same reservation id and body under a new key replays; another body is 409
    let r = app.channel("POST", RES, &body, Some("k-t1-b")).await;
    assert_eq!((r.status, &r.body), (200, &first.body));
    assert_eq!(
        refused(&app, RES, &reservation("t1", "11.00", "DKK"), 409).await,
        "RESERVATION_ID_REUSED"
    );
    assert_eq!(balances(&app, "DKK").await.1, "10.00", "one hold");

    // expires_in_secs outside 1..=expiry_secs_max
    for bad in [json!(0), json!(-5), json!(604_801)] {
        let mut b = reservation(&uid("t"), "1.00", "DKK");
        b["expires_in_secs"] = bad.clone();
        assert_eq!(
            refused(&app, RES, &b, 400).await,
            "INVALID_EXPIRES_IN_SECS",
            "{bad}"
        );
    }
    // malformed bodies and ids
    let r = app.channel("POST", RES, b"{", Some(&uid("ck"))).await;
    assert_eq!(error_code(&r, 400), "malformed_request");
    let r = post(&app, RES, &reservation(&"x".repeat(65), "1.00", "DKK")).await;
    assert_eq!(error_code(&r, 400), "malformed_request");
    // an id no path can carry as it is: nothing could ever capture or cancel its hold
    for id in ["ord/1", "ord?1", "ord#1", "ord%2F1", "ord\\1", ".", ".."] {
        let r = post(&app, RES, &reservation(id, "1.00", "DKK")).await;
        assert_eq!(error_code(&r, 400), "malformed_request", "{id}");
        assert!(r.text().contains("may not hold"), "{}", r.text());
    }
    // a string no store can hold (Postgres text refuses U+0000): refused before the writer,
    // where it would have failed the transaction it shared with other requests
    let mut b = reservation(&uid("t"), "1.00", "DKK");
    b["reference"] = json!("order\u{0}1");
    let r = post(&app, RES, &b).await;
    assert_eq!(error_code(&r, 400), "malformed_request");
    assert!(r.text().contains("U+0000"), "{}", r.text());
    let r = app
        .channel(
            "POST",
            "/channels/v1/reservations/t1/cancel",
            b"{\"x\":\"\\u0000\"}",
            Some(&uid("ck")),
        )
        .await;
    assert_eq!(error_code(&r, 400), "malformed_request");

    // declines use the authorization's vocabulary, and are recorded
    reserve(
        &app,
        &reservation("t3", "1.00", "XXX"),
        "REJECTED",
        "INVALID_AMOUNT",
    )
    .await;
    reserve(&app, &reservation("t4", "1.00", "EUR"), "REJECTED", "OTHER").await;
    reserve(
        &app,
        &reservation("t5", "90.01", "DKK"),
        "REJECTED",
        "INSUFFICIENT_FUNDS",
    )
    .await;
    reserve(
        &app,
        &reservation("t6", "1.001", "DKK"),
        "REJECTED",
        "INVALID_AMOUNT",
    )
    .await;
    reserve(
        &app,
        &reservation("t7", "0", "DKK"),
        "REJECTED",
        "INVALID_AMOUNT",
    )
    .await;
    reserve_approved(&app, "t8", "90.00", "DKK").await;
    let r = post(&app, RES, &reservation("t5", "90.01", "DKK")).await;
    assert_eq!(
        r.json()["status_detail"],
        "INSUFFICIENT_FUNDS",
        "a rejection replays"
    );
    let (posted, held, available) = balances(&app, "DKK").await;
    assert_eq!(
        (posted.as_str(), held.as_str(), available.as_str()),
        ("100.00", "100.00", "0.00")
    );
}

/// A key names one request to one path: reused on another reservation's capture, or on a
/// cancel after a capture, it is 409 and changes nothing (it was the first one's replay).
/// A brace in the first reservation's id does not make its record pass for one written
/// before paths were recorded (those name the route's template).
async fn a_key_is_bound_to_its_path(app: TestApp) {
    app.funded("u1", "DKK", "100.00").await;
    let (a, b) = (uid("r{a}"), uid("rb"));
    reserve_approved(&app, &a, "10.00", "DKK").await;
    reserve_approved(&app, &b, "20.00", "DKK").await;
    let key = uid("k-cap");
    let first = app
        .channel("POST", &capture_path(&a), b"{}", Some(&key))
        .await;
    assert_eq!(
        first.json()["reservation"]["state"],
        "CAPTURED",
        "{}",
        first.text()
    );
    for path in [capture_path(&b), cancel_path(&a)] {
        let r = app.channel("POST", &path, b"{}", Some(&key)).await;
        assert_eq!(error_code(&r, 409), "idempotency_key_reused", "{path}");
    }
    let held = app.channel("GET", &get_path(&b), b"", None).await.text();
    assert!(held.contains(r#""state":"RESERVED""#), "{held}");
    // 100.00 - 10.00 captured; 20.00 still held.
    assert_eq!(
        balances(&app, "DKK").await,
        ("90.00".into(), "20.00".into(), "70.00".into())
    );
    // The first is still replayed.
    let again = app
        .channel("POST", &capture_path(&a), b"{}", Some(&key))
        .await;
    assert_eq!(again.body, first.body);
    // A record written before paths were recorded names the route's template: the same
    // body on that route is its replay. (A copy of the first's record under a key never
    // sent, so that the answer comes from the database, not from this instance's memory.)
    let old = uid("k-old");
    DirectConn::open(&app)
        .await
        .execute(&format!(
            "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, \
             response_body, created_at_ms, explanation) SELECT scope, '{old}', request_hash, \
             '/channels/v1/reservations/{{reservation_id}}/capture', response_status, \
             response_body, created_at_ms, explanation FROM idempotency_keys WHERE key = '{key}'"
        ))
        .await;
    let legacy = app
        .channel("POST", &capture_path(&a), b"{}", Some(&old))
        .await;
    assert_eq!(legacy.body, first.body);
    let r = app
        .channel("POST", &cancel_path(&a), b"{}", Some(&old))
        .await;
    assert_eq!(error_code(&r, 409), "idempotency_key_reused");
    // A refusal is the answer its key names too: the same request replays it, another
    // request under the key (a capture the hold allows) is a conflict and holds on.
    let (key, over, within) = (
        uid("k-over"),
        br#"{"amount":"25.00"}"#,
        br#"{"amount":"5.00"}"#,
    );
    let refused = app
        .channel("POST", &capture_path(&b), over, Some(&key))
        .await;
    assert_eq!(error_code(&refused, 409), "AMOUNT_EXCEEDS_RESERVED");
    let again = app
        .channel("POST", &capture_path(&b), over, Some(&key))
        .await;
    assert_eq!((again.status, &again.body), (409, &refused.body));
    let other = app
        .channel("POST", &capture_path(&b), within, Some(&key))
        .await;
    assert_eq!(error_code(&other, 409), "idempotency_key_reused");
    let held = app.channel("GET", &get_path(&b), b"", None).await.text();
    assert!(held.contains(r#""state":"RESERVED""#), "{held}");
    // Not stored: NOT_CAPTURED, which a hold outgrows. The refund sent before its capture
    // goes through under its key once the capture is in.
    let (key, body) = (uid("k-early"), refund("rf-early", "5.00").to_string());
    let early = app
        .channel("POST", &refund_path(&b), body.as_bytes(), Some(&key))
        .await;
    assert_eq!(error_code(&early, 409), "NOT_CAPTURED");
    let captured = app
        .channel("POST", &capture_path(&b), b"{}", Some(&uid("k")))
        .await;
    assert_eq!(captured.status, 200, "{}", captured.text());
    let later = app
        .channel("POST", &refund_path(&b), body.as_bytes(), Some(&key))
        .await;
    assert_eq!(later.status, 200, "{}", later.text());
}

/// A channel request's signed path names its reservation, so it is checked even with
/// `processor.endpoint_check = "off"` (there for processors whose gateway rewrites their own
/// routes' paths): a capture signed for one reservation and sent to another is refused, and
/// the other's hold stays reserved.
async fn a_signature_binds_its_reservation(app: TestApp) {
    app.funded("u1", "DKK", "100.00").await;
    reserve_approved(&app, "sig-a", "10.00", "DKK").await;
    reserve_approved(&app, "sig-b", "20.00", "DKK").await;
    let body = bytes(&json!({"amount": "20.00"}));
    // Signed for another reservation: refused, both still held; signed for its own path,
    // the same capture goes through.
    for (signed_for, status, held) in [("sig-a", 401, "30.00"), ("sig-b", 200, "10.00")] {
        let (path, endpoint) = (capture_path("sig-b"), capture_path(signed_for));
        let r = app
            .channel_signed_for("POST", &path, &endpoint, &body, Some(&uid("ck")))
            .await;
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(balances(&app, "DKK").await.1, held);
    }
}

fn without_endpoint_check(s: &mut authorizer::Settings) {
    s.processor.endpoint_check = authorizer::config::EndpointCheck::Off;
}

mod endpoint_check_off {
    use super::*;
    both_backends!(
        settings = without_endpoint_check;
        a_signature_binds_its_reservation
    );
}

both_backends!(error_rows, transport_and_input, a_key_is_bound_to_its_path);
