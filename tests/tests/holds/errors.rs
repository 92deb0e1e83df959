//! Every error row of §2.2 over HTTP, and what the transport refuses: signatures, the other
//! caller's keys, idempotency keys, reused reservation ids, bad expiries, unknown currencies.

use super::common::*;
use e2e::*;
use protocol::ApiSecret;
use serde_json::json;

/// The §2.2 table, row by row.
async fn error_rows(app: TestApp) {
    app.funded("u1", "DKK", "1000.00").await;
    // unknown reservation_id
    let r = post(&app, &capture_path("nope"), &json!({})).await;
    assert_eq!(error_code(&r, 404), "NOT_FOUND");
    let r = post(&app, &cancel_path("nope"), &json!({})).await;
    assert_eq!(error_code(&r, 404), "NOT_FOUND");
    let r = post(
        &app,
        &refund_path("nope"),
        &json!({"refund_id": "x", "amount": "1"}),
    )
    .await;
    assert_eq!(error_code(&r, 404), "NOT_FOUND");
    let r = app.channel("GET", &get_path("nope"), b"", None).await;
    assert_eq!(error_code(&r, 404), "NOT_FOUND");

    // capture: cancelled
    reserve(
        &app,
        &reservation("c1", "10.00", "DKK"),
        "APPROVED",
        "APPROVED",
    )
    .await;
    let first = post(&app, &cancel_path("c1"), &json!({})).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["reservation"]["state"], "CANCELLED");
    // cancel again: 200, the same body (an empty body too).
    let again = app
        .channel("POST", &cancel_path("c1"), b"", Some(&uid("ck")))
        .await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let r = post(&app, &capture_path("c1"), &json!({})).await;
    assert_eq!(error_code(&r, 409), "NOT_RESERVED");
    // refund: not captured (cancelled, reserved)
    let r = post(
        &app,
        &refund_path("c1"),
        &json!({"refund_id": "x", "amount": "1"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "NOT_CAPTURED");

    // capture: more than reserved; not representable; zero
    reserve(
        &app,
        &reservation("c2", "10.00", "DKK"),
        "APPROVED",
        "APPROVED",
    )
    .await;
    let r = post(
        &app,
        &refund_path("c2"),
        &json!({"refund_id": "x", "amount": "1"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "NOT_CAPTURED");
    let r = post(&app, &capture_path("c2"), &json!({"amount": "10.01"})).await;
    assert_eq!(error_code(&r, 409), "AMOUNT_EXCEEDS_RESERVED");
    for bad in [json!("0.00"), json!("-1.00"), json!("1.001"), json!(0)] {
        let r = post(&app, &capture_path("c2"), &json!({ "amount": bad })).await;
        assert_eq!(error_code(&r, 400), "INVALID_AMOUNT", "{bad}");
    }
    // partial capture not possible
    let mut full = reservation("c3", "10.00", "DKK");
    full["partial_capture_possible"] = json!(false);
    reserve(&app, &full, "APPROVED", "APPROVED").await;
    let r = post(&app, &capture_path("c3"), &json!({"amount": "9.99"})).await;
    assert_eq!(error_code(&r, 409), "PARTIAL_CAPTURE_NOT_POSSIBLE");
    // without an amount: the full amount
    let r = post(&app, &capture_path("c3"), &json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["reservation"]["captured"], "10.00");
    // cancel: captured
    let r = post(&app, &cancel_path("c3"), &json!({})).await;
    assert_eq!(error_code(&r, 409), "ALREADY_CAPTURED");
    // capture again with another amount
    let r = post(&app, &capture_path("c3"), &json!({"amount": "5.00"})).await;
    assert_eq!(error_code(&r, 409), "CAPTURED_WITH_DIFFERENT_AMOUNT");

    // refund: currency mismatch; above captured; refund id replay and reuse
    let r = post(
        &app,
        &refund_path("c3"),
        &json!({"refund_id": "r1", "amount": "1.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "CURRENCY_MISMATCH");
    let r = post(
        &app,
        &refund_path("c3"),
        &json!({"refund_id": "r1", "amount": "10.01"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "REFUND_EXCEEDS_CAPTURED");
    let r = post(
        &app,
        &refund_path("c3"),
        &json!({"refund_id": "r1", "amount": "0"}),
    )
    .await;
    assert_eq!(error_code(&r, 400), "INVALID_AMOUNT");
    let body = json!({"refund_id": "r1", "amount": "4.00"});
    let first = post(&app, &refund_path("c3"), &body).await;
    assert_eq!(first.status, 200);
    let again = post(&app, &refund_path("c3"), &body).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let r = post(
        &app,
        &refund_path("c3"),
        &json!({"refund_id": "r1", "amount": "5.00"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "REFUND_ID_REUSED");
    assert_eq!(movements_of(&app, "DKK", "HOLD_REFUND").await, 1);

    // capture, cancel and refund of an expired hold
    let mut short = reservation("c4", "10.00", "DKK");
    short["expires_in_secs"] = json!(1);
    reserve(&app, &short, "APPROVED", "APPROVED").await;
    actix_rt::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = post(&app, &cancel_path("c4"), &json!({})).await;
    assert_eq!(error_code(&r, 409), "EXPIRED");
    let r = post(&app, &capture_path("c4"), &json!({})).await;
    assert_eq!(error_code(&r, 409), "EXPIRED");
    let r = post(
        &app,
        &refund_path("c4"),
        &json!({"refund_id": "x", "amount": "1"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "NOT_CAPTURED");

    // payment too old: a capture made 91 days ago (moved back in the database).
    reserve(
        &app,
        &reservation("c5", "10.00", "DKK"),
        "APPROVED",
        "APPROVED",
    )
    .await;
    assert_eq!(
        post(&app, &capture_path("c5"), &json!({})).await.status,
        200
    );
    age_capture(&app, "c5", 91).await;
    let r = post(
        &app,
        &refund_path("c5"),
        &json!({"refund_id": "x", "amount": "1"}),
    )
    .await;
    assert_eq!(error_code(&r, 409), "PAYMENT_TOO_OLD");
    let (posted, held, _) = balances(&app, "DKK").await;
    assert_eq!((posted.as_str(), held.as_str()), ("984.00", "10.00"));
}

/// Moves a capture `days` into the past (refund window test).
async fn age_capture(app: &TestApp, reservation_id: &str, days: i64) {
    let sql = "UPDATE holds SET captured_at_ms = captured_at_ms - $1 WHERE reservation_id = $2";
    let ms = days * 86_400_000;
    match &app.database_url {
        Some(url) => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(sql)
                .bind(ms)
                .bind(reservation_id)
                .execute(&mut c)
                .await
                .expect("age");
        }
        None => {
            use sqlx::Connection;
            let path = app.data_dir.path().join("authorizer.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                .await
                .expect("connect");
            sqlx::query(sql)
                .bind(ms)
                .bind(reservation_id)
                .execute(&mut c)
                .await
                .expect("age");
        }
    }
}

/// Signatures, keys of the other caller, idempotency keys, reused ids, bad input.
async fn transport_and_input(app: TestApp) {
    app.funded("u1", "DKK", "100.00").await;
    let body = bytes(&reservation("t1", "10.00", "DKK"));
    let chan = ApiSecret::from_base64(CHANNEL_SECRET).unwrap();
    let proc_secret = ApiSecret::from_base64(API_SECRET).unwrap();
    // a bad signature (signed with another secret), and a stale timestamp
    let other = ApiSecret::from_base64("BBECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let r = app
        .channel_signed(
            "POST",
            RES,
            &body,
            Some("k1"),
            CHANNEL_KEY,
            &other,
            crate_now(),
        )
        .await;
    assert_eq!(error_code(&r, 401), "unauthorized");
    let r = app
        .channel_signed(
            "POST",
            RES,
            &body,
            Some("k1"),
            CHANNEL_KEY,
            &chan,
            crate_now() - 3600,
        )
        .await;
    assert_eq!(error_code(&r, 401), "unauthorized");
    // the processor's key on a channel route
    let r = app
        .channel_signed(
            "POST",
            RES,
            &body,
            Some("k1"),
            API_KEY,
            &proc_secret,
            crate_now(),
        )
        .await;
    assert_eq!(error_code(&r, 401), "unauthorized");
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
    let r = post(&app, RES, &reservation("t1", "11.00", "DKK")).await;
    assert_eq!(error_code(&r, 409), "RESERVATION_ID_REUSED");
    assert_eq!(balances(&app, "DKK").await.1, "10.00", "one hold");

    // expires_in_secs outside 1..=expiry_secs_max
    for bad in [json!(0), json!(-5), json!(604_801)] {
        let mut b = reservation(&uid("t"), "1.00", "DKK");
        b["expires_in_secs"] = bad.clone();
        let r = post(&app, RES, &b).await;
        assert_eq!(error_code(&r, 400), "INVALID_EXPIRES_IN_SECS", "{bad}");
    }
    // malformed bodies and ids
    let r = app.channel("POST", RES, b"{", Some(&uid("ck"))).await;
    assert_eq!(error_code(&r, 400), "malformed_request");
    let r = post(&app, RES, &reservation(&"x".repeat(65), "1.00", "DKK")).await;
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
    reserve(
        &app,
        &reservation("t8", "90.00", "DKK"),
        "APPROVED",
        "APPROVED",
    )
    .await;
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

both_backends!(error_rows, transport_and_input);
