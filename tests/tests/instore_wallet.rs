//! The InStore digital wallet extension end to end (instore-extensions.md sections 4, 6.4
//! and 6.5 test 8): barcodes issued by the admin API, bare wallet requests signed as
//! InStore signs them, against a real server on both stores; the one balance a wallet
//! payment shares with the processor's authorizations and the channels' holds; the
//! audit's wallet invariant.

use e2e::instore::{CallbackReceiver, TENANT, sign, tenant_settings};
use e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

/// A bare wallet request signed over its exact bytes: the raw answer.
async fn wallet_raw(app: &TestApp, action: &str, body: &Value) -> Resp {
    let bytes = body.to_string();
    let r = app
        .instore_post(action, bytes.as_bytes(), Some(&sign(bytes.as_bytes())))
        .await;
    assert_eq!(r.status, 200, "{action}: {}", r.text());
    r
}

/// A bare wallet request: its answer as JSON.
async fn wallet(app: &TestApp, action: &str, body: &Value) -> Value {
    wallet_raw(app, action, body).await.json()
}

/// `user`'s card `crd-{user}` put in `status` (created when new).
async fn card_status(app: &TestApp, user: &str, status: &str) {
    let r = app
        .admin_put(
            &format!("/v1/cards/crd-{user}"),
            json!({"user_id": user, "status": status}),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "card: {}", r.text());
}

/// `user`'s account in USD with `amount` and its card `crd-{user}`, ACTIVE.
async fn wallet_user(app: &TestApp, user: &str, amount: &str) {
    app.funded(user, "USD", amount).await;
    card_status(app, user, "ACTIVE").await;
}

/// The admin API's answer to a request for a barcode.
async fn barcode_request(app: &TestApp, body: Value) -> Resp {
    app.admin("POST", "/v1/wallet/barcodes", Some(body), None)
        .await
}

/// A barcode for `user`'s USD account and card, valid `secs` (default lifetime: `None`).
async fn barcode(app: &TestApp, user: &str, secs: Option<u64>) -> String {
    let mut body = json!({"user_id": user, "currency": "USD", "card_id": format!("crd-{user}")});
    if let Some(s) = secs {
        body["expires_in_secs"] = json!(s);
    }
    let r = barcode_request(app, body).await;
    assert_eq!(r.status, 201, "barcode: {}", r.text());
    let b = r.json()["barcode"].as_str().expect("barcode").to_owned();
    assert!(
        b.len() == 24 && b.bytes().all(|c| c.is_ascii_digit()),
        "{b}"
    );
    b
}

/// `action` (`refund_wallet_payment` or `cancel_wallet_payment`) of `payment`, approved.
async fn returned(app: &TestApp, action: &str, payment: &Value) {
    let body = json!({"transaction_id": payment["transaction_id"]});
    let r = wallet(app, action, &body).await;
    assert_eq!(verdict(&r), ("Success", "00"), "{action}: {r}");
}

/// `user` pays `total` with a barcode of its own: the answer.
async fn paid_afresh(app: &TestApp, user: &str, total: i64, time: &str) -> Value {
    let b = barcode(app, user, None).await;
    wallet(app, "pay_wallet", &pay(&b, total, 0, time)).await
}

fn pay(barcode: &str, total: i64, tip: i64, time: &str) -> Value {
    json!({
        "barcode": barcode, "currency": "USD", "total": total,
        "pos_local_time": time, "tip": tip, "note": "payment",
    })
}

/// `cancel` sent as the till's `cancel_wallet_payment`: its payment reversed and `user` back
/// at 100.00 USD; the answer.
async fn cancelled(app: &TestApp, user: &str, cancel: &Value) -> Value {
    let r = wallet(app, "cancel_wallet_payment", cancel).await;
    assert_eq!(
        (verdict(&r), &r["reversed"]),
        (("Success", "00"), &json!(true)),
        "{r}"
    );
    assert_eq!(app.available(user, "USD").await, "100.00");
    r
}

/// `(result, code)` of a wallet answer.
fn verdict(v: &Value) -> (&str, &str) {
    (
        v["result"].as_str().unwrap_or("?"),
        v["code"].as_str().unwrap_or("?"),
    )
}

/// Section 6.5, test 8: pay, retry replay, reuse with another body (94), expiry (54),
/// available_wallet_refund, full refund, refund again (12), and a payment whose answer the
/// POS never saw reversed by its log_cancel_wallet, once.
async fn wallet_story(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-w", "100.00").await;
    let b1 = barcode(&app, "u-w", None).await;
    assert!(wallet(&app, "initialize_wallet", &json!({"location_id": "L1"})).await["code"] == "00");

    // Pay 25.00, tip 3.00 included.
    let first = wallet_raw(
        &app,
        "pay_wallet",
        &pay(&b1, 2500, 300, "2024-01-24 12:37:54"),
    )
    .await;
    let paid = first.json();
    assert_eq!(verdict(&paid), ("Success", "00"), "{paid}");
    let tx = paid["transaction_id"]
        .as_str()
        .expect("transaction_id")
        .to_owned();
    assert!(tx.starts_with("wtx-") && tx.len() == 24, "{tx}");
    assert_eq!(
        (
            &paid["total"],
            &paid["tip"],
            &paid["subtotal"],
            &paid["method"]
        ),
        (
            &json!("2500"),
            &json!("300"),
            &json!("2200"),
            &json!("wallet")
        )
    );
    assert_eq!(app.available("u-w", "USD").await, "75.00");
    // The retry: the same bytes, nothing booked.
    let again = wallet_raw(
        &app,
        "pay_wallet",
        &pay(&b1, 2500, 300, "2024-01-24 12:37:54"),
    )
    .await;
    assert_eq!(again.body, first.body, "a retry replays byte for byte");
    assert_eq!(again.header("X-Signature"), first.header("X-Signature"));
    // Another body on a used barcode: 94.
    let reused = wallet(
        &app,
        "pay_wallet",
        &pay(&b1, 2600, 300, "2024-01-24 12:38:00"),
    )
    .await;
    assert_eq!(verdict(&reused), ("Failure", "94"), "{reused}");
    assert_eq!(reused["error_message"], "BARCODE_USED");
    assert_eq!(reused["transaction_id"], Value::Null);
    assert_eq!(app.movements("u-w", "USD", "WALLET_PAYMENT").await, 1);
    assert_eq!(app.available("u-w", "USD").await, "75.00");
    // Expired: 54; unknown: 14.
    let short = barcode(&app, "u-w", Some(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = wallet(&app, "pay_wallet", &pay(&short, 100, 0, "t")).await;
    assert_eq!(verdict(&expired), ("Failure", "54"), "{expired}");
    let unknown = wallet(
        &app,
        "pay_wallet",
        &pay("000000000000000000000000", 100, 0, "t"),
    )
    .await;
    assert_eq!(verdict(&unknown), ("Failure", "14"), "{unknown}");

    // What is refundable, then the full refund.
    let available = json!({"transaction_id": tx, "pos_local_time": "t1"});
    let a = wallet(&app, "available_wallet_refund", &available).await;
    assert_eq!(
        (verdict(&a), &a["total"]),
        (("Success", "00"), &json!("2500")),
        "{a}"
    );
    let refund = json!({"transaction_id": tx, "pos_local_time": "t2", "note": "return"});
    let refunded = wallet_raw(&app, "refund_wallet_payment", &refund).await;
    let r = refunded.json();
    assert_eq!(verdict(&r), ("Success", "00"), "{r}");
    let refund_tx = r["transaction_id"].as_str().expect("refund id");
    assert!(
        refund_tx.starts_with("wtx-") && refund_tx != tx,
        "{refund_tx}"
    );
    assert_eq!(
        (&r["original_transaction_id"], &r["original_reference"]),
        (&json!(tx), &Value::Null)
    );
    assert_eq!(app.available("u-w", "USD").await, "100.00");
    // The same body replays; another, with nothing left, gets 12.
    let replay = wallet_raw(&app, "refund_wallet_payment", &refund).await;
    assert_eq!(replay.body, refunded.body);
    let twice = json!({"transaction_id": tx, "pos_local_time": "t3", "note": "return"});
    let r = wallet(&app, "refund_wallet_payment", &twice).await;
    assert_eq!(verdict(&r), ("Failure", "12"), "{r}");
    assert_eq!(r["error_message"], "NOTHING_TO_REFUND");
    let a = wallet(&app, "available_wallet_refund", &available).await;
    assert_eq!(a["total"], "0", "{a}");
    assert_eq!(app.movements("u-w", "USD", "WALLET_REFUND").await, 1);
    let r = wallet(
        &app,
        "refund_wallet_payment",
        &json!({"transaction_id": "wtx-00000000000000000000", "pos_local_time": "t"}),
    )
    .await;
    assert_eq!(verdict(&r), ("Failure", "25"), "{r}");

    // pay_wallet timed out at the POS: its log of the cancel gives the money back, once.
    let b3 = barcode(&app, "u-w", None).await;
    let lost = wallet(&app, "pay_wallet", &pay(&b3, 1000, 0, "t4")).await;
    assert_eq!(verdict(&lost), ("Success", "00"));
    assert_eq!(app.available("u-w", "USD").await, "90.00");
    let log = |time: &str| {
        json!({
            "barcode": b3, "total": "1000", "tip": 0, "currency": "USD", "reference": "ref-1",
            "response_code": "", "pos_local_time": time, "error_message": "timeout",
        })
    };
    let logged = wallet_raw(&app, "log_cancel_wallet", &log("t5")).await;
    let l = logged.json();
    assert_eq!(
        (verdict(&l), &l["reversed"]),
        (("Success", "00"), &json!(true)),
        "{l}"
    );
    assert_eq!(app.available("u-w", "USD").await, "100.00");
    assert_eq!(
        wallet_raw(&app, "log_cancel_wallet", &log("t5")).await.body,
        logged.body
    );
    let l = wallet(&app, "log_cancel_wallet", &log("t6")).await;
    assert_eq!(
        (verdict(&l), &l["reversed"]),
        (("Success", "00"), &json!(false)),
        "{l}"
    );
    assert_eq!(app.movements("u-w", "USD", "WALLET_REVERSAL").await, 1);
    assert_eq!(app.available("u-w", "USD").await, "100.00");

    // A log whose total does not match reverses nothing, but its reference is the
    // payment's original_reference; a cancel reverses only what it names.
    let b4 = barcode(&app, "u-w", None).await;
    let p4 = wallet(&app, "pay_wallet", &pay(&b4, 500, 0, "t7")).await;
    let tx4 = p4["transaction_id"].as_str().expect("tx4").to_owned();
    let mut mismatch = log("t8");
    mismatch["barcode"] = json!(b4);
    mismatch["total"] = json!("499");
    mismatch["reference"] = json!("ref-2");
    let l = wallet(&app, "log_cancel_wallet", &mismatch).await;
    assert_eq!(l["reversed"], false, "{l}");
    let nothing = wallet(&app, "cancel_wallet_payment", &json!({"tenant_id": TENANT})).await;
    assert_eq!(
        (verdict(&nothing), &nothing["reversed"]),
        (("Success", "00"), &json!(false))
    );
    let unknown = wallet(
        &app,
        "cancel_wallet_payment",
        &json!({"transaction_id": "wtx-00000000000000000000"}),
    )
    .await;
    assert_eq!(verdict(&unknown), ("Failure", "25"), "{unknown}");
    let r = wallet(
        &app,
        "refund_wallet_payment",
        &json!({"transaction_id": tx4, "pos_local_time": "t9"}),
    )
    .await;
    assert_eq!(
        (verdict(&r), &r["original_reference"]),
        (("Success", "00"), &json!("ref-2")),
        "{r}"
    );
    let c = wallet(
        &app,
        "cancel_wallet_payment",
        &json!({"transaction_id": tx4}),
    )
    .await;
    assert_eq!(c["reversed"], false, "nothing left to reverse: {c}");
    assert_eq!(app.available("u-w", "USD").await, "100.00");
    let report = app.assert_audit_clean().await;
    assert!(report.movements >= 6);
}

/// One balance: a processor authorization and a wallet payment on the same account each
/// see what the other took; a declined payment does not use its barcode up.
async fn wallet_and_authorization_share_the_balance(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-s", "100.00").await;
    let auth = Tx::new(&uid("w"), "PURCHASE", "u-s", "30.0", "USD").card("crd-u-s");
    let r = app.send(AUTH_DEBIT, &auth).await;
    assert_eq!(r.json()["status"], "APPROVED", "{}", r.text());
    let b = barcode(&app, "u-s", None).await;
    let short = wallet(&app, "pay_wallet", &pay(&b, 7001, 0, "t1")).await;
    assert_eq!(verdict(&short), ("Failure", "51"), "{short}");
    assert_eq!(short["error_message"], "INSUFFICIENT_FUNDS");
    let exact = wallet(&app, "pay_wallet", &pay(&b, 7000, 0, "t2")).await;
    assert_eq!(verdict(&exact), ("Success", "00"), "{exact}");
    assert_eq!(app.available("u-s", "USD").await, "0.00");
    let late = Tx::new(&uid("w"), "PURCHASE", "u-s", "0.01", "USD").card("crd-u-s");
    assert_eq!(
        app.send(AUTH_DEBIT, &late).await.json()["status"],
        "REJECTED"
    );
    // The processor's refund credits the account; a blocked card declines the wallet (62).
    app.funded("u-s", "USD", "10.00").await;
    card_status(&app, "u-s", "BLOCKED").await;
    let b = barcode(&app, "u-s", None).await;
    let blocked = wallet(&app, "pay_wallet", &pay(&b, 100, 0, "t3")).await;
    assert_eq!(verdict(&blocked), ("Failure", "62"), "{blocked}");
    // A tip above the total, a currency other than the account's: 13.
    card_status(&app, "u-s", "ACTIVE").await;
    let bad = wallet(&app, "pay_wallet", &pay(&b, 100, 101, "t4")).await;
    assert_eq!(verdict(&bad), ("Failure", "13"), "{bad}");
    let mut other = pay(&b, 100, 0, "t5");
    other["currency"] = json!("EUR");
    let bad = wallet(&app, "pay_wallet", &other).await;
    assert_eq!(verdict(&bad), ("Failure", "13"), "{bad}");
    assert_eq!(app.movements("u-s", "USD", "WALLET_PAYMENT").await, 1);
}

/// A hold of the reservation API reduces what pay_wallet can spend, as it does a card
/// authorization's.
async fn a_hold_reduces_what_the_wallet_spends(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-h", "50.00").await;
    app.usd_hold("u-h", "20.00").await;
    let b = barcode(&app, "u-h", None).await;
    let short = wallet(&app, "pay_wallet", &pay(&b, 3001, 0, "t1")).await;
    assert_eq!(verdict(&short), ("Failure", "51"), "{short}");
    let exact = wallet(&app, "pay_wallet", &pay(&b, 3000, 0, "t2")).await;
    assert_eq!(verdict(&exact), ("Success", "00"), "{exact}");
    let a = app.account("u-h", "USD").await;
    assert_eq!(
        (&a["posted"], &a["held"], &a["available"]),
        (&json!("20.00"), &json!("20.00"), &json!("0.00"))
    );
}

/// Enveloped: acknowledged after the commit that also queued the callback (the answer with
/// its requestId); a duplicate replays the acknowledgement and moves nothing.
async fn enveloped_payment_calls_back(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-e", "10.00").await;
    let b = barcode(&app, "u-e", None).await;
    let mut payload = pay(&b, 250, 0, "t1");
    payload["requestId"] = json!("req-w-1");
    for _ in 0..2 {
        let r = app
            .instore_acknowledged(
                "pay_wallet",
                &payload,
                "https://instore.example/callback/w1",
            )
            .await;
        assert_eq!(r.body, br#"{"requestId":"req-w-1"}"#);
    }
    let cb = app.instore_callback("req-w-1").await;
    assert_eq!(
        (verdict(&cb), &cb["requestId"]),
        (("Success", "00"), &json!("req-w-1"))
    );
    assert_eq!(app.available("u-e", "USD").await, "7.50");
    assert_eq!(app.movements("u-e", "USD", "WALLET_PAYMENT").await, 1);
}

/// A payment made bare, then sent again in an envelope (the same payload, which names no
/// requestId: the envelope's is the key) is a replay: the envelope's callback is the
/// payment's answer written with the envelope's requestId, and nothing moves again.
async fn a_bare_payment_sent_again_in_an_envelope_replays_with_its_request_id(
    app: TestApp,
    _rx: CallbackReceiver,
) {
    wallet_user(&app, "u-r", "10.00").await;
    let b = barcode(&app, "u-r", None).await;
    let payload = pay(&b, 250, 0, "t1");
    let first = wallet(&app, "pay_wallet", &payload).await;
    assert_eq!(
        (verdict(&first), &first["requestId"]),
        (("Success", "00"), &Value::Null)
    );
    let (body, signature) = instore_sim::sim::envelope(
        e2e::instore::KEY.as_bytes(),
        e2e::instore::TENANT,
        "https://issuer.example/instore/pay_wallet",
        &payload.to_string(),
        "req-w-9",
        "https://instore.example/callback/w9",
    );
    let r = app
        .instore_post("pay_wallet", body.as_bytes(), Some(&signature))
        .await;
    assert_eq!(r.body, br#"{"requestId":"req-w-9"}"#, "{}", r.text());
    let cb = app.instore_callback("req-w-9").await;
    assert_eq!(
        (&cb["requestId"], &cb["transaction_id"]),
        (&json!("req-w-9"), &first["transaction_id"])
    );
    assert_eq!(app.available("u-r", "USD").await, "7.50");
    assert_eq!(app.movements("u-r", "USD", "WALLET_PAYMENT").await, 1);
}

/// A signature covers the body, not the action it is sent to. Our signed answers sent back
/// as requests are refused (400: `result` and `code` are never a request's); the payment's
/// own signed body sent to the actions that give money back is refused (409: it was
/// verified under `pay_wallet`), bare or wrapped in an envelope of the sender's making.
/// Nothing moves; the till's own cancel still reverses the payment.
async fn a_signed_body_moves_money_under_its_own_action_only(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-x", "100.00").await;
    let b = barcode(&app, "u-x", None).await;
    let body = json!({"barcode": b, "currency": "USD", "total": 1000, "tip": 0});
    let paid = wallet_raw(&app, "pay_wallet", &body).await;
    let answer = paid.json();
    assert_eq!(verdict(&answer), ("Success", "00"), "{answer}");
    assert_eq!(app.available("u-x", "USD").await, "90.00");
    let signed_answer = paid
        .header("X-Signature")
        .expect("a signed answer")
        .to_owned();
    for action in ["refund_wallet_payment", "cancel_wallet_payment"] {
        let r = app
            .instore_post(action, &paid.body, Some(&signed_answer))
            .await;
        assert_eq!(r.status, 400, "{action}: {}", r.text());
        assert_eq!(r.json()["error"], "INVALID_FIELD", "{action}: {}", r.text());
    }
    let bytes = body.to_string();
    let signature = sign(bytes.as_bytes());
    for action in ["cancel_wallet_payment", "log_cancel_wallet"] {
        let r = app
            .instore_post(action, bytes.as_bytes(), Some(&signature))
            .await;
        assert_eq!(r.status, 409, "{action}: {}", r.text());
        assert_eq!(r.json()["error"], "IDEMPOTENCY_CONFLICT", "{}", r.text());
    }
    let (wrapped, same) = instore_sim::sim::envelope(
        e2e::instore::KEY.as_bytes(),
        TENANT,
        "https://issuer.example/instore/cancel_wallet_payment",
        &bytes,
        "req-x-1",
        "https://instore.example/callback/x1",
    );
    assert_eq!(same, signature, "the captured signature is all it takes");
    let r = app
        .instore_post("cancel_wallet_payment", wrapped.as_bytes(), Some(&same))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        app.available("u-x", "USD").await,
        "90.00",
        "nothing given back"
    );
    assert_eq!(app.movements("u-x", "USD", "WALLET_REVERSAL").await, 0);
    // The till's own cancel names the payment.
    let cancel = json!({"transaction_id": answer["transaction_id"]});
    cancelled(&app, "u-x", &cancel).await;
    app.assert_audit_clean().await;
}

/// The admin route refuses what it cannot issue, with 422 and nothing stored.
async fn barcode_route_validates(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-b", "1.00").await;
    app.funded("u-other", "USD", "0").await;
    let cases = [
        (
            json!({"user_id": "u-b", "currency": "USD", "expires_in_secs": 0}),
            "invalid_expiry",
        ),
        (
            json!({"user_id": "u-b", "currency": "USD", "expires_in_secs": 3601}),
            "invalid_expiry",
        ),
        (
            json!({"user_id": "u-b", "currency": "XXQ"}),
            "unknown_currency",
        ),
        (json!({"user_id": "", "currency": "USD"}), "invalid_user_id"),
        (
            json!({"user_id": "u-none", "currency": "USD"}),
            "account_not_found",
        ),
        (
            json!({"user_id": "u-b", "currency": "EUR"}),
            "account_not_found",
        ),
        (
            json!({"user_id": "u-b", "currency": "USD", "card_id": "crd-none"}),
            "card_not_found",
        ),
        (
            json!({"user_id": "u-other", "currency": "USD", "card_id": "crd-u-b"}),
            "card_not_found",
        ),
    ];
    for (body, code) in cases {
        let r = barcode_request(&app, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{body}");
    }
    let r = barcode_request(&app, json!({"user_id": "u-b"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let ok = barcode_request(
        &app,
        json!({"user_id": "u-b", "currency": "USD", "expires_in_secs": 3600}),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert!(
        ok.json()["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

/// A refund or a cancel on the payment's UTC day gives the account's daily limit the amount
/// back, as a reversal of a card purchase does.
async fn returns_give_todays_daily_limit_back(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-d", "200.00").await;
    let r = app
        .admin_put("/v1/accounts/u-d/USD", json!({"daily_limit": "50.00"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paid = |total: i64, time: &'static str| paid_afresh(&app, "u-d", total, time);
    let first = paid(3000, "t1").await;
    assert_eq!(verdict(&first), ("Success", "00"), "{first}");
    // 30.00 of 50.00 spent today: 20.01 more is over the daily limit.
    assert_eq!(verdict(&paid(2001, "t2").await), ("Failure", "61"));
    returned(&app, "refund_wallet_payment", &first).await;
    let second = paid(4500, "t3").await;
    assert_eq!(verdict(&second), ("Success", "00"), "{second}");
    returned(&app, "cancel_wallet_payment", &second).await;
    // The whole daily limit is there again, and not a cent more.
    assert_eq!(verdict(&paid(5000, "t4").await), ("Success", "00"));
    assert_eq!(verdict(&paid(1, "t5").await), ("Failure", "61"));
    assert_eq!(app.available("u-d", "USD").await, "150.00");
    app.assert_audit_clean().await;
}

/// A bare cancel that finds no payment for its barcode (it came before the payment, which
/// another instance may still be committing) keeps no answer: sent again once the payment
/// stands, it is decided again and reverses it, instead of replaying "not found" while the
/// customer stays charged.
async fn a_cancel_before_its_payment_is_decided_again(app: TestApp, _rx: CallbackReceiver) {
    wallet_user(&app, "u-c", "100.00").await;
    let b = barcode(&app, "u-c", None).await;
    let cancel = json!({"barcode": b});
    let early = wallet_raw(&app, "cancel_wallet_payment", &cancel).await;
    assert_eq!(
        verdict(&early.json()),
        ("Failure", "25"),
        "{}",
        early.text()
    );
    // As an earlier version kept it: the answer of a cancel that found no payment.
    let body = ::instore::json::parse(cancel.to_string().as_bytes()).expect("JSON");
    let hash = ::instore::payload::request_hash(&body.value, b"no secrets in it");
    let bytes = match app.backend {
        Backend::Postgres => format!("convert_to('{}', 'UTF8')", early.text()),
        Backend::Sqlite => format!("CAST('{}' AS BLOB)", early.text()),
    };
    let mut c = DirectConn::open(&app).await;
    c.execute(&format!(
        "INSERT INTO wallet_requests (tenant_id, action, request_hash, response_body, \
         created_at_ms) VALUES ('{TENANT}', 'cancel_wallet_payment', '{hash}', {bytes}, 1)"
    ))
    .await;
    let p = wallet(&app, "pay_wallet", &pay(&b, 2500, 0, "t1")).await;
    assert_eq!(verdict(&p), ("Success", "00"), "{p}");
    assert_eq!(app.available("u-c", "USD").await, "75.00");
    let again = cancelled(&app, "u-c", &cancel).await;
    // Once it found the payment, its answer is kept: the same cancel replays it.
    let third = wallet_raw(&app, "cancel_wallet_payment", &cancel).await;
    assert_eq!(third.json(), again);
    assert_eq!(app.available("u-c", "USD").await, "100.00");
    app.assert_audit_clean().await;
}

e2e::instore_scenarios!(
    a_cancel_before_its_payment_is_decided_again,
    returns_give_todays_daily_limit_back,
    wallet_story,
    wallet_and_authorization_share_the_balance,
    a_hold_reduces_what_the_wallet_spends,
    enveloped_payment_calls_back,
    a_bare_payment_sent_again_in_an_envelope_replays_with_its_request_id,
    barcode_route_validates,
    a_signed_body_moves_money_under_its_own_action_only,
);

/// A wallet payment is decided as a card authorization is (section 4): the spending controls
/// of the barcode's account and card apply, reading the tenant's store (`mcc`, `country`); a
/// limit declines with 61, another control with 57; the payment counts, and its refund and
/// its reversal give the room back.
async fn at_a_store_with_mcc_and_country(backend: Backend) {
    let app = controls_app(backend, Some(("5411", "USA")), "u-c").await;
    let controls = |path: String, body: Value| {
        let app = &app;
        async move {
            let r = app.admin("PUT", &path, Some(body), None).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    let card = "/v1/cards/crd-u-c/controls".to_owned();
    let account = "/v1/accounts/u-c/USD/controls".to_owned();
    let limit =
        json!({"currency": "USD", "spending_limits": [{"amount": "50.00", "interval": "monthly"}]});
    controls(card, limit).await;
    controls(account.clone(), json!({"blocked_countries": ["US"]})).await;
    let paid = |total: i64, time: &'static str| paid_afresh(&app, "u-c", total, time);
    let r = paid(100, "t1").await;
    assert_eq!(verdict(&r), ("Failure", "57"), "{r}");
    assert_eq!(r["error_message"], "NOT_PERMITTED");
    controls(account, json!({"blocked_categories": ["5812"]})).await;
    let first = paid(3000, "t2").await;
    assert_eq!(verdict(&first), ("Success", "00"), "{first}");
    let r = paid(2001, "t3").await;
    assert_eq!(verdict(&r), ("Failure", "61"), "{r}");
    assert_eq!(r["error_message"], "LIMIT_EXCEEDED");
    // A refund gives its money back to the monthly limit.
    returned(&app, "refund_wallet_payment", &first).await;
    let second = paid(5000, "t4").await;
    assert_eq!(verdict(&second), ("Success", "00"), "{second}");
    assert_eq!(verdict(&paid(1, "t5").await), ("Failure", "61"));
    // So does a reversal.
    returned(&app, "cancel_wallet_payment", &second).await;
    assert_eq!(verdict(&paid(5000, "t6").await), ("Success", "00"));
    assert_eq!(app.available("u-c", "USD").await, "50.00");
    // Every decision is kept with why, newest first: the limit's decline shows the card's
    // monthly limit and what it had counted, the country's names its control.
    let decided = decisions(&app, "u-c", "").await;
    let outcomes: Vec<&str> = decided
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    let want = [
        "APPROVED",
        "LIMIT_EXCEEDED",
        "APPROVED",
        "LIMIT_EXCEEDED",
        "APPROVED",
    ];
    assert_eq!(outcomes[..5], want, "{decided:?}");
    assert_eq!(outcomes[5], "NOT_PERMITTED", "{decided:?}");
    assert_eq!(decided[4]["transaction_id"], first["transaction_id"]);
    assert_eq!(decided[3]["total"], "20.01");
    let e = &decided[3]["explanation"];
    let want = [json!("card"), json!("50.00"), json!("30.00"), json!(false)];
    assert_eq!(spending_limit_check(e), want, "{e}");
    let e = &decided[5]["explanation"];
    assert_eq!(
        e["controls"]["declined"]["control"], "blocked_countries",
        "{e}"
    );
    assert_eq!(decided[0]["explanation"]["status"], "APPROVED");
    app.assert_audit_clean().await;
    app.stop().await;
}

/// The wallet payments decided on `user`'s USD account, newest first (`query`: the page).
async fn decisions(app: &TestApp, user: &str, query: &str) -> Vec<Value> {
    let path = format!("/v1/accounts/{user}/USD/wallet-payments{query}");
    let page = app.admin_get(&path).await;
    page["decisions"].as_array().cloned().unwrap_or_default()
}

/// A tenant configured without `mcc` and `country`: its store's category and country are not
/// known but not in doubt, so the rules that read them are left out (a blocked category, a
/// legacy blocked MCC, a blocked country), while the limits stand.
async fn at_a_store_without_mcc_or_country(backend: Backend) {
    let app = controls_app(backend, None, "u-n").await;
    let controls = json!({"currency": "USD", "blocked_categories": ["gambling"],
        "blocked_countries": ["RU"], "spending_limits": [{"amount": "10.00", "interval": "daily"}]});
    let r = app
        .admin("PUT", "/v1/cards/crd-u-n/controls", Some(controls), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .admin_put("/v1/accounts/u-n/USD", json!({"blocked_mccs": ["7995"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = barcode(&app, "u-n", None).await;
    let paid = wallet(&app, "pay_wallet", &pay(&b, 1000, 0, "t1")).await;
    assert_eq!(verdict(&paid), ("Success", "00"), "{paid}");
    let b2 = barcode(&app, "u-n", None).await;
    let over = wallet(&app, "pay_wallet", &pay(&b2, 1, 0, "t2")).await;
    assert_eq!(verdict(&over), ("Failure", "61"), "{over}");
    // The paid barcode again: its resend replays and is no new decision, another body is
    // refused by the wallet's own rules, which the controls do not explain.
    let again = wallet(&app, "pay_wallet", &pay(&b, 1000, 0, "t1")).await;
    assert_eq!(again, paid);
    let reused = wallet(&app, "pay_wallet", &pay(&b, 2, 0, "t3")).await;
    assert_eq!(reused["error_message"], "BARCODE_USED", "{reused}");
    // More than the account holds: the wallet says so first, but the controls would decline
    // the same debit by the card's daily limit, so no explanation of another answer is kept.
    let broke = wallet(&app, "pay_wallet", &pay(&b2, 20000, 0, "t4")).await;
    assert_eq!(broke["error_message"], "INSUFFICIENT_FUNDS", "{broke}");
    let decided = decisions(&app, "u-n", "").await;
    let seen: Vec<(&str, &str)> = decided
        .iter()
        .map(|d| (d["outcome"].as_str().unwrap(), d["total"].as_str().unwrap()))
        .collect();
    let want = [
        ("INSUFFICIENT_FUNDS", "200.00"),
        ("BARCODE_USED", "0.02"),
        ("LIMIT_EXCEEDED", "0.01"),
        ("APPROVED", "10.00"),
    ];
    assert_eq!(seen, want, "{decided:?}");
    assert_eq!(decided[0]["explanation"], Value::Null);
    assert_eq!(decided[1]["explanation"], Value::Null);
    assert_eq!(decided[2]["explanation"]["status_detail"], "INVALID_AMOUNT");
    assert_eq!(decided[3]["transaction_id"], paid["transaction_id"]);
    assert_eq!(decided[3]["barcode_last4"], b[20..]);
    assert_eq!(decided[2]["barcode_last4"], b2[20..]);
    // The barcodes themselves are not shown; pages follow the cursor.
    let path = "/v1/accounts/u-n/USD/wallet-payments?limit=3";
    let page = app.admin_get(path).await;
    let text = page.to_string();
    assert!(!text.contains(&b) && !text.contains(&b2), "{text}");
    let next = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = decisions(&app, "u-n", &format!("?limit=3&cursor={next}")).await;
    assert_eq!(rest, decided[3..]);
    // An account without controls short of funds: the explanation shows what it had.
    wallet_user(&app, "u-f", "5.00").await;
    let b3 = barcode(&app, "u-f", None).await;
    let short = wallet(&app, "pay_wallet", &pay(&b3, 600, 0, "t5")).await;
    assert_eq!(short["error_message"], "INSUFFICIENT_FUNDS", "{short}");
    let e = decisions(&app, "u-f", "").await[0]["explanation"].clone();
    let seen = (&e["status_detail"], &e["account"]["available"]);
    assert_eq!(seen, (&json!("INSUFFICIENT_FUNDS"), &json!("5.00")), "{e}");
    for (path, status) in [
        ("/v1/accounts/u-none/USD/wallet-payments", 404),
        ("/v1/accounts/u-n/USD/wallet-payments?cursor=x", 400),
        ("/v1/accounts/u-n/USD/wallet-payments?limit=0", 400),
    ] {
        let r = app.admin("GET", path, None, None).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    app.assert_audit_clean().await;
    app.stop().await;
}

/// A server whose tenant's store has `store` (mcc, country) configured, and `user` with
/// 100.00 USD and an active card.
async fn controls_app(
    backend: Backend,
    store: Option<(&'static str, &'static str)>,
    user: &str,
) -> TestApp {
    let app = TestApp::spawn_with(backend, move |s| {
        tenant_settings(s, "http://127.0.0.1:9");
        if let Some((mcc, country)) = store {
            s.instore.tenants[0].mcc = Some(mcc.into());
            s.instore.tenants[0].country = Some(country.into());
        }
    })
    .await;
    wallet_user(&app, user, "100.00").await;
    app
}

async fn wallet_payments_pass_the_spending_controls(backend: Backend) {
    at_a_store_with_mcc_and_country(backend).await;
    at_a_store_without_mcc_or_country(backend).await;
}

e2e::on_each_backend!(
    wallet_payments_pass_the_spending_controls_postgres,
    wallet_payments_pass_the_spending_controls_sqlite,
    wallet_payments_pass_the_spending_controls
);

/// Section 6.4: a payment given back more than its total is reported by name.
async fn over_returned_payment_is_reported(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| tenant_settings(s, "http://127.0.0.1:9")).await;
    wallet_user(&app, "u-a", "20.00").await;
    let b = barcode(&app, "u-a", None).await;
    let paid = wallet(&app, "pay_wallet", &pay(&b, 1500, 0, "t")).await;
    let tx = paid["transaction_id"].as_str().expect("tx").to_owned();
    let r = wallet(
        &app,
        "refund_wallet_payment",
        &json!({"transaction_id": tx}),
    )
    .await;
    assert_eq!(verdict(&r), ("Success", "00"), "{r}");
    app.assert_audit_clean().await;
    // A second return row for the same refund, written behind the server's back.
    let mut c = DirectConn::open(&app).await;
    c.execute(&format!(
        "INSERT INTO wallet_returns (transaction_id, payment_transaction_id, kind, amount_minor, \
         movement_id, tenant_id, correlation_id, created_at_ms) \
         SELECT 'wtx-forged', payment_transaction_id, kind, amount_minor, movement_id, tenant_id, \
         correlation_id, created_at_ms FROM wallet_returns WHERE payment_transaction_id = '{tx}'"
    ))
    .await;
    let report = app.store.audit().await.expect("audit runs");
    let found: Vec<_> = report
        .violations
        .iter()
        .filter(|v| v.invariant == "for each wallet payment, refunded + reversed <= total")
        .collect();
    assert_eq!(found.len(), 1, "{:?}", report.violations);
    assert!(found[0].detail.contains(&tx), "{:?}", found[0]);
    assert!(!found[0].detail.contains(&b), "no barcode in the report");
    app.stop().await;
}

e2e::on_each_backend!(
    over_returned_payment_is_reported_postgres,
    over_returned_payment_is_reported_sqlite,
    over_returned_payment_is_reported
);
