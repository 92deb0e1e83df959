//! The InStore stored-value extension end to end (instore-extensions.md sections 1, 2, 6.5
//! and 7): real signed envelopes against a real server on both stores, callbacks through
//! the durable outbox to a loopback receiver, and the one balance a card shares with the
//! processor's authorizations and the channels' holds.

use e2e::instore::{CallbackReceiver, sign};
use e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

const NUMBER: &str = "6280001234567895";

/// A test vector of the InStore page, as bytes or text (a macro: the `include_` macros
/// take a literal path).
macro_rules! vector {
    (bytes, $file:literal) => {
        include_bytes!(concat!("../../crates/instore/tests/vectors/", $file))
    };
    (str, $file:literal) => {
        include_str!(concat!("../../crates/instore/tests/vectors/", $file))
    };
}
const VECTOR_REDEEM_BODY: &[u8] = vector!(bytes, "7.1-body.json");
const VECTOR_REDEEM_PAYLOAD: &[u8] = vector!(bytes, "7.1-payload.json");
const VECTOR_REDEEM_CALLBACK: &str = vector!(str, "7.1-callback.json");
const VECTOR_LOOKUP_BODY: &[u8] = vector!(bytes, "7.2-body.json");
const VECTOR_LOOKUP_CALLBACK: &[u8] = vector!(bytes, "7.2-callback.json");
const VECTOR_CANCEL_PAYLOAD: &str = vector!(str, "7.3-payload.json");
const VECTOR_CANCEL_CALLBACK: &str = vector!(str, "7.3-callback.json");
const VECTOR_CANCEL_AGAIN_CALLBACK: &str = vector!(str, "7.3-callback-again.json");
/// The ids the page's vectors show; real runs draw their own.
const VECTOR_REDEEM_TX: &str = "svt-4f1c2a9b7e3d5c6a8b10";
const VECTOR_REDEEM_PAYMENT: &str = "svp-9c8d7e6f5a4b3c2d1e0f";
const VECTOR_CANCEL_TX: &str = "svt-0a1b2c3d4e5f60718293";

/// The refusal's reason, asserting the HTTP status.
fn refusal(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    r.json()["error"].as_str().expect("error body").to_owned()
}

/// `GET storedvaluelog/{number}?requestId={request_id}&locationId=LondonStore`, signed
/// over JS of its query.
async fn log_read(app: &TestApp, number: &str, request_id: &str) -> Resp {
    let signed = format!(r#"{{"requestId":"{request_id}","locationId":"LondonStore"}}"#);
    app.instore_get(
        &format!("storedvaluelog/{number}"),
        &format!("requestId={request_id}&locationId=LondonStore"),
        &sign(signed.as_bytes()),
    )
    .await
}

/// How many movements of `kind` the ledger holds (every account).
async fn movements(app: &TestApp, user: &str, currency: &str, kind: &str) -> usize {
    app.movements(user, currency, kind).await
}

/// Section 7 end to end: 7.1's exact body and acknowledgement, its replay and its 409;
/// 7.2's pretty-printed envelope and its exact callback, with the negative cases; 7.3's
/// Cancel and the same Cancel under a new requestId; the log of 7.4.
async fn vectors_end_to_end(app: TestApp, _rx: CallbackReceiver) {
    app.stored_value_card("u-sv", "USD", "50.00", NUMBER).await;

    // 7.1: the exact bytes, the header signature in hex.
    let redeem_sig = "9671dfb99c81025be5f2797c2fb0fa207bb84e469063f964cbc5f2a160bfa90d";
    assert_eq!(sign(VECTOR_REDEEM_PAYLOAD), redeem_sig);
    let r = app
        .instore_post(
            "storedvaluecard_process",
            VECTOR_REDEEM_BODY,
            Some(redeem_sig),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, br#"{"requestId":"req-9a8b0001"}"#);
    assert_eq!(
        r.header("X-Signature"),
        Some("6dc54415947f779295eb5b8bb5fbddc55e79bd6a4d80c8a0f7d824e33c89bf0f")
    );
    assert_eq!(app.available("u-sv", "USD").await, "37.80");
    let redeemed = app.instore_callback("req-9a8b0001").await;
    let tx = redeemed["data"]["external_transaction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment = redeemed["data"]["external_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tx.starts_with("svt-") && tx.len() == 24, "{tx}");
    assert!(
        payment.starts_with("svp-") && payment.len() == 24,
        "{payment}"
    );
    let expected = VECTOR_REDEEM_CALLBACK
        .replace(VECTOR_REDEEM_TX, &tx)
        .replace(VECTOR_REDEEM_PAYMENT, &payment);
    assert_eq!(
        String::from_utf8(app.instore_callbacks().await["req-9a8b0001"].clone()).unwrap(),
        expected,
        "the callback of 7.1, byte for byte but for the drawn ids"
    );

    // The same request again: the same acknowledgement, no movement. The base64 spelling
    // of the same MAC verifies too.
    let again = app
        .instore_post(
            "storedvaluecard_process",
            VECTOR_REDEEM_BODY,
            Some("lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC/qQ0="),
        )
        .await;
    assert_eq!((again.status, &again.body), (200, &r.body));
    assert_eq!(movements(&app, "u-sv", "USD", "SV_REDEEM").await, 1);
    // The same requestId with 12.21: 409, nothing else.
    let mut other: Value = serde_json::from_slice(VECTOR_REDEEM_PAYLOAD).unwrap();
    other["amount"]["amount"] = json!(1221);
    let r = app
        .instore_envelope(
            "storedvaluecard_process",
            &other,
            "https://instore.example/callback/req-9a8b0001",
        )
        .await;
    assert_eq!(refusal(&r, 409), "IDEMPOTENCY_CONFLICT");
    assert_eq!(app.available("u-sv", "USD").await, "37.80");

    // 7.2: pretty-printed, non-ASCII escaped: candidate (b) verifies.
    let lookup_sig = "f3cdd1fc319172e5691f726c20c9ac50de75f2067c70e1f6516c9b6b705d561e";
    let r = app
        .instore_post(
            &format!("storedvaluecard/{NUMBER}"),
            VECTOR_LOOKUP_BODY,
            Some(lookup_sig),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, br#"{"requestId":"req-9a8b0002"}"#);
    let callback = app.instore_callbacks().await["req-9a8b0002"].clone();
    assert_eq!(
        callback, VECTOR_LOOKUP_CALLBACK,
        "the callback of 7.2, byte for byte"
    );
    assert_eq!(
        sign(&callback),
        "e84351b4111510b296d23cb7bc023f71498d6c16695d5dad2201da2095083077"
    );
    // Its negative cases.
    let r = app
        .instore_post(
            "storedvaluecard/6280007654321010",
            VECTOR_LOOKUP_BODY,
            Some(lookup_sig),
        )
        .await;
    assert_eq!(refusal(&r, 400), "NUMBER_MISMATCH");
    // The vector's body with one part changed (the signature kept): a callback URL off the
    // allow-list, a number given twice.
    for (part, changed, code) in [
        (
            "https://instore.example/callback/req-9a8b0002",
            "https://evil.example/x",
            "CALLBACK_URL_NOT_ALLOWED",
        ),
        (
            r#""cartKey": "3819232132""#,
            r#""cartKey": "3819232132", "number": "6280001234567895""#,
            "MALFORMED",
        ),
    ] {
        let body = String::from_utf8_lossy(VECTOR_LOOKUP_BODY).replace(part, changed);
        let r = app
            .instore_post(
                &format!("storedvaluecard/{NUMBER}"),
                body.as_bytes(),
                Some(lookup_sig),
            )
            .await;
        assert_eq!(refusal(&r, 400), code, "{changed}");
    }

    // 7.3: the Cancel of 7.1's Redeem, with the ids its callback returned.
    let cancel = |request_id: &str| {
        VECTOR_CANCEL_PAYLOAD
            .replace("req-9a8b0003", request_id)
            .replace(VECTOR_REDEEM_TX, &tx)
            .replace(VECTOR_REDEEM_PAYMENT, &payment)
    };
    for request_id in ["req-9a8b0003", "req-9a8b0004"] {
        let payload: Value = serde_json::from_str(&cancel(request_id)).unwrap();
        app.instore_acknowledged(
            "storedvaluecard_process",
            &payload,
            &format!("https://instore.example/callback/{request_id}"),
        )
        .await;
    }
    assert_eq!(app.available("u-sv", "USD").await, "50.00");
    assert_eq!(movements(&app, "u-sv", "USD", "SV_CANCEL").await, 1);
    let callbacks = app.instore_callbacks().await;
    let first: Value = serde_json::from_slice(&callbacks["req-9a8b0003"]).unwrap();
    let reversal = first["data"]["external_transaction_id"].as_str().unwrap();
    let ids = |vector: &str| {
        vector
            .replace(VECTOR_REDEEM_TX, &tx)
            .replace(VECTOR_REDEEM_PAYMENT, &payment)
            .replace(VECTOR_CANCEL_TX, reversal)
    };
    assert_eq!(
        String::from_utf8(callbacks["req-9a8b0003"].clone()).unwrap(),
        ids(VECTOR_CANCEL_CALLBACK)
    );
    assert_eq!(
        String::from_utf8(callbacks["req-9a8b0004"].clone()).unwrap(),
        ids(VECTOR_CANCEL_AGAIN_CALLBACK),
        "already cancelled: the original reversal's ids, nothing booked"
    );

    // 7.4: the log, signed over JS of the query.
    let r = app
        .instore_get(
            &format!("storedvaluelog/{NUMBER}"),
            "requestId=req-9a8b0005&locationId=LondonStore&workstationId=POS-03",
            "55b4731f1f203fad83625e0bce0be4fac90dd6dc75225af5348a93743045e13e",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = r.json();
    assert_eq!(
        log["balance"],
        json!({"amount": 5000, "precision": 2, "currency": "USD"})
    );
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["Cancel", "Redeem"], "newest first");
    assert_eq!(entries[1]["amount"]["amount"], -1220);
    assert_eq!(entries[1]["balance"]["amount"], 3780);
    assert_eq!(entries[0]["external_transaction_id"], reversal);
    assert_eq!(log["next_cursor"], Value::Null);
    // §1.3: that signature leaves the number out, so its requestId is bound to this card.
    // The same read again is answered; sent to another card's log, or with a requestId an
    // enveloped request used, it is 409 and shows nothing.
    let query = "requestId=req-9a8b0005&locationId=LondonStore&workstationId=POS-03";
    let signature = "55b4731f1f203fad83625e0bce0be4fac90dd6dc75225af5348a93743045e13e";
    let r = app
        .instore_get(&format!("storedvaluelog/{NUMBER}"), query, signature)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Another page of it under the same requestId (signed over the raw query).
    let page = format!("{query}&limit=1");
    let r = app
        .instore_get(
            &format!("storedvaluelog/{NUMBER}"),
            &page,
            &sign(page.as_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["entries"].as_array().map(Vec::len), Some(1));
    const OTHER: &str = "6280001234567812";
    app.stored_value_card("u-other", "USD", "7.00", OTHER).await;
    let r = app
        .instore_get(&format!("storedvaluelog/{OTHER}"), query, signature)
        .await;
    assert_eq!(refusal(&r, 409), "IDEMPOTENCY_CONFLICT");
    assert!(!r.text().contains("700"), "{}", r.text());
    let r = log_read(&app, NUMBER, "req-9a8b0001").await;
    assert_eq!(refusal(&r, 409), "IDEMPOTENCY_CONFLICT");
    // Nor may an enveloped request take a read's requestId: nothing moves. Also not when
    // the read commits while the request is being written.
    let r = app
        .instore_envelope(
            "storedvaluecard_process",
            &redeem("req-9a8b0005", NUMBER, 100),
            "https://instore.example/callback/read-id",
        )
        .await;
    assert_eq!(refusal(&r, 409), "IDEMPOTENCY_CONFLICT");
    let mut reader = DirectConn::open(&app).await;
    let (begin, hash) = match app.backend {
        Backend::Postgres => ("BEGIN", "decode('01', 'hex')"),
        Backend::Sqlite => ("BEGIN IMMEDIATE", "X'01'"),
    };
    reader.execute(begin).await;
    reader
        .execute(&format!(
            "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, \
             response_body, created_at_ms) VALUES ('instore-read:{}', 'req-race-1', {hash}, \
             'storedvaluelog', 200, {hash}, 1)",
            e2e::instore::TENANT
        ))
        .await;
    let commit_later = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        reader.execute("COMMIT").await;
    };
    let payload = redeem("req-race-1", NUMBER, 100);
    let redeeming = app.instore_envelope(
        "storedvaluecard_process",
        &payload,
        "https://instore.example/callback/read-race",
    );
    let (r, ()) = futures_util::future::join(redeeming, commit_later).await;
    assert_eq!(refusal(&r, 409), "IDEMPOTENCY_CONFLICT");
    // Another card's log, or a wrong signature: 404 and 401.
    let r = log_read(&app, "6280007654321010", "req-9a8b0006").await;
    assert_eq!(refusal(&r, 404), "NOT_FOUND");
    let r = app
        .instore_get(
            &format!("storedvaluelog/{NUMBER}"),
            "requestId=req-9a8b0005&locationId=LondonStore&workstationId=POS-04",
            "55b4731f1f203fad83625e0bce0be4fac90dd6dc75225af5348a93743045e13e",
        )
        .await;
    assert_eq!(refusal(&r, 401), "UNAUTHORIZED");
}

/// A card created by `storedvaluecard`, its callback refused three times: four deliveries,
/// byte-identical, signed, with the correlation id, at growing intervals. A replay with
/// another allowed callbackUrl moves no money and delivers the same bytes there.
async fn callback_retries_until_delivered(app: TestApp, rx: CallbackReceiver) {
    rx.fail_first(3);
    let payload = json!({
        "requestId": "req-create-1",
        "locationId": "LondonStore",
        "workstationId": "POS-03",
        "type": "GiftCard",
        "status": "Active",
        "balance": {"amount": 2500, "precision": 2, "currency": "USD"},
        "issuer": "Store",
    });
    let r = app
        .instore_acknowledged("storedvaluecard", &payload, &rx.url("/cb/create"))
        .await;
    assert_eq!(r.body, br#"{"requestId":"req-create-1"}"#);
    let posts = rx.wait_for("/cb/create", 4, Duration::from_secs(30)).await;
    let statuses: Vec<u16> = posts.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    for p in &posts {
        assert_eq!(p.body, posts[0].body, "byte-identical on every attempt");
        assert_eq!(p.signature, sign(&p.body), "signed with the tenant's key");
        assert_eq!(p.correlation_id, "corr-test");
    }
    // Backoff: at least about 1, 2 and 4 s (-20 %) between attempts. The schedule itself
    // is `store::outbox::backoff_ms`'s unit test; no upper bound per gap here, since on a
    // loaded machine a sender's round may come late (the 30 s wait above bounds it).
    for (i, want) in [1.0f64, 2.0, 4.0].iter().enumerate() {
        let gap = posts[i + 1].at.duration_since(posts[i].at).as_secs_f64();
        assert!(gap >= want * 0.8 - 0.05, "gap {i}: {gap}s");
    }
    let created: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(created["action"], "Create");
    assert_eq!(created["status"], "approved");
    let number = created["data"]["number"].as_str().unwrap().to_owned();
    assert!(number.starts_with("628000") && number.len() == 16);
    assert_eq!(created["data"]["balance"]["amount"], 2500);
    // The number is ours now: a Redeem on it.
    let redeem = json!({
        "requestId": "req-create-2", "locationId": "LondonStore", "action": "Redeem",
        "number": number, "amount": {"amount": "500", "precision": "2", "currency": "USD"},
        "session_id": "s-1", "reference": "order-1",
    });
    app.instore_acknowledged("storedvaluecard_process", &redeem, &rx.url("/cb/redeem"))
        .await;
    let posts = rx.wait_for("/cb/redeem", 4, Duration::from_secs(30)).await;
    let done: Value = serde_json::from_slice(&posts[3].body).unwrap();
    assert_eq!(done["data"]["balance"]["amount"], 2000, "{done}");

    // A replay of the Create to another allowed URL: the same acknowledgement, the same
    // callback bytes there, no second card or movement.
    rx.fail_first(0);
    let r = app
        .instore_envelope("storedvaluecard", &payload, &rx.url("/cb/create-again"))
        .await;
    assert_eq!(r.body, br#"{"requestId":"req-create-1"}"#);
    let again = rx
        .wait_for("/cb/create-again", 1, Duration::from_secs(10))
        .await;
    assert_eq!(again[0].body, posts_body(&rx, "/cb/create"));
    let report = app.assert_audit_clean().await;
    assert_eq!(report.movements, 2, "one opening Load, one Redeem");
}

fn posts_body(rx: &CallbackReceiver, path: &str) -> Vec<u8> {
    rx.posts(path)[0].body.clone()
}

/// Refused envelopes change nothing: a flipped signature (401), a body over the limit
/// (413), malformed JSON and a bare body (400), a Redeem on an unknown card (declined in
/// its callback, no movement).
async fn bad_envelopes_change_nothing(app: TestApp, _rx: CallbackReceiver) {
    app.stored_value_card("u-bad", "USD", "10.00", NUMBER).await;
    let before = app.assert_audit_clean().await;
    let outbox = app.instore_callbacks().await.len();
    let payload: Value = serde_json::from_slice(VECTOR_REDEEM_PAYLOAD).unwrap();
    let (body, signature) = e2e::instore::envelope(
        "storedvaluecard_process",
        &payload,
        "https://instore.example/callback/req-9a8b0001",
    );
    let mut flipped = signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let r = app
        .instore_post(
            "storedvaluecard_process",
            &body,
            Some(std::str::from_utf8(&flipped).unwrap()),
        )
        .await;
    assert_eq!(refusal(&r, 401), "UNAUTHORIZED");
    // The same signature over a payload with one byte changed.
    let changed = String::from_utf8(body.clone())
        .unwrap()
        .replace("1220", "1221");
    let r = app
        .instore_post(
            "storedvaluecard_process",
            changed.as_bytes(),
            Some(&signature),
        )
        .await;
    assert_eq!(refusal(&r, 401), "UNAUTHORIZED");
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    let r = app
        .instore_post("storedvaluecard_process", big.as_bytes(), Some(&signature))
        .await;
    assert_eq!(refusal(&r, 413), "PAYLOAD_TOO_LARGE");
    let r = app
        .instore_post(
            "storedvaluecard_process",
            b"{\"payload\":",
            Some(&signature),
        )
        .await;
    assert_eq!(refusal(&r, 400), "MALFORMED");
    let bare = payload.to_string();
    let r = app
        .instore_post(
            "storedvaluecard_process",
            bare.as_bytes(),
            Some(&sign(bare.as_bytes())),
        )
        .await;
    assert_eq!(refusal(&r, 400), "ENVELOPE_REQUIRED");
    let r = app.instore_post("capture_payment", b"{}", None).await;
    assert_eq!(refusal(&r, 404), "NOT_FOUND");
    // The flipped header disagrees with the body's copy; the changed payload fails the MAC.
    for reason in ["signatures_disagree", "mac_mismatch"] {
        assert_eq!(
            app.metrics
                .counter("instore_signature_failures_total", &[("reason", reason)]),
            1,
            "{reason}"
        );
    }
    let after = app.assert_audit_clean().await;
    assert_eq!(
        (after.movements, after.postings),
        (before.movements, before.postings)
    );
    assert_eq!(
        app.instore_callbacks().await.len(),
        outbox,
        "no callback row"
    );
    assert_eq!(app.available("u-bad", "USD").await, "10.00");

    // A business decline is a 200 and a callback, never a movement.
    let unknown = json!({
        "requestId": "req-unknown", "locationId": "L", "action": "Redeem",
        "number": "6280009999999999", "amount": {"amount": 100, "precision": 2, "currency": "USD"},
        "session_id": "s", "reference": "r",
    });
    app.instore_acknowledged(
        "storedvaluecard_process",
        &unknown,
        "https://instore.example/callback/x",
    )
    .await;
    let cb = app.instore_callback("req-unknown").await;
    assert_eq!(
        (&cb["result"], &cb["error"], &cb["code"]),
        (&json!("Failure"), &json!("CARD_NOT_FOUND"), &json!("14"))
    );
    assert_eq!(cb["data"]["balance"], Value::Null);
    assert_eq!(app.assert_audit_clean().await.movements, before.movements);
}

fn redeem(request_id: &str, number: &str, minor: i64) -> Value {
    json!({
        "requestId": request_id, "locationId": "LondonStore", "workstationId": "POS-03",
        "action": "Redeem", "number": number,
        "amount": {"amount": minor, "precision": 2, "currency": "USD"},
        "session_id": format!("session-{request_id}"), "reference": "order",
    })
}

/// A Redeem of `minor` from the card `NUMBER`, acknowledged: its callback.
async fn redeemed(app: &TestApp, request_id: &str, minor: i64) -> Value {
    app.instore_acknowledged(
        "storedvaluecard_process",
        &redeem(request_id, NUMBER, minor),
        "https://instore.example/callback/share",
    )
    .await;
    app.instore_callback(request_id).await
}

/// A Cancel of a Redeem on the Redeem's UTC day gives the linked account's daily limit that
/// amount back, as a reversal of a card purchase does.
async fn a_cancelled_redeem_gives_todays_daily_limit_back(app: TestApp, _rx: CallbackReceiver) {
    app.stored_value_card("u1", "USD", "100.00", NUMBER).await;
    let r = app
        .admin_put("/v1/accounts/u1/USD", json!({"daily_limit": "50.00"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = redeemed(&app, "req-day-1", 3000).await;
    assert_eq!(first["result"], "Success", "{first}");
    let over = redeemed(&app, "req-day-2", 2001).await;
    assert_eq!(over["error"], "LIMIT_EXCEEDED", "{over}");
    let cancel = json!({
        "requestId": "req-day-3", "locationId": "LondonStore", "workstationId": "POS-03",
        "action": "Cancel", "number": NUMBER,
        "external_transaction_id": first["data"]["external_transaction_id"],
        "external_payment_id": first["data"]["external_payment_id"],
    });
    let to = "https://instore.example/callback/share";
    app.instore_acknowledged("storedvaluecard_process", &cancel, to)
        .await;
    let cancelled = app.instore_callback("req-day-3").await;
    assert_eq!(cancelled["result"], "Success", "{cancelled}");
    // The whole daily limit is there again, and not a cent more.
    let whole = redeemed(&app, "req-day-4", 5000).await;
    assert_eq!(whole["result"], "Success", "{whole}");
    let more = redeemed(&app, "req-day-5", 1).await;
    assert_eq!(more["error"], "LIMIT_EXCEEDED", "{more}");
    assert_eq!(app.available("u1", "USD").await, "50.00");
    app.assert_audit_clean().await;
}

/// A wrong PIN on a Redeem counts a try as at lookup: the right one after wrong ones sets
/// the count back to zero, and the last of `instore.pin_tries_max` (3) wrong ones in a row
/// blocks the card, which then answers without its PIN being checked. A decline for the PIN
/// (or a blocked card) does not tell the balance, as a lookup does not: a Redeem would
/// otherwise be a balance query without the PIN.
async fn a_wrong_pin_on_redeem_counts_a_try(app: TestApp, _rx: CallbackReceiver) {
    app.stored_value_card_with_pin(NUMBER).await;
    // Without its PIN, a decline for another reason (more than the card holds) does not
    // tell the balance either.
    let over = redeem("req-pin-over", NUMBER, 1_000_000);
    let to = "https://instore.example/callback/pin";
    app.instore_acknowledged("storedvaluecard_process", &over, to)
        .await;
    let cb = app.instore_callback("req-pin-over").await;
    assert_eq!(cb["error"], "INSUFFICIENT_FUNDS", "{cb}");
    assert!(cb["data"]["balance"].is_null(), "{cb}");
    let with_pin = |n: usize, pin: &str| {
        let mut p = redeem(&format!("req-pin-{n}"), NUMBER, 100);
        p["accounts"] = json!([{"number": NUMBER, "pin": pin}]);
        p
    };
    let mut n = 0;
    let mut try_pin = async |pin: &str| {
        n += 1;
        let to = "https://instore.example/callback/pin";
        app.instore_acknowledged("storedvaluecard_process", &with_pin(n, pin), to)
            .await;
        let cb = app.instore_callback(&format!("req-pin-{n}")).await;
        let error = cb["error"].as_str().unwrap_or("none").to_owned();
        assert_eq!(cb["data"]["balance"].is_null(), error != "none", "{cb}");
        error
    };
    for (pin, answer) in [
        ("0000", "INVALID_PIN"),
        ("0001", "INVALID_PIN"),
        ("1234", "none"),
        ("0002", "INVALID_PIN"),
        ("0003", "INVALID_PIN"),
        ("0004", "INVALID_PIN"),
        ("1234", "CARD_INACTIVE"),
    ] {
        assert_eq!(try_pin(pin).await, answer, "{pin}");
    }
    let card = app.admin_get("/v1/stored-value-cards/crd-u1").await;
    assert_eq!(card["numbers"][0]["status"], "BLOCKED", "{card}");
    assert_eq!(app.available("u1", "USD").await, "99.00");
}

/// A number whose Redeem moved u1's money, once replaced on u1's card, cannot be linked to
/// u2's: a Cancel of that Redeem, found by its number, would credit u2. u1's card may take
/// it back.
async fn a_number_with_history_stays_its_accounts(app: TestApp, _rx: CallbackReceiver) {
    const SECOND: &str = "6280001234567812";
    app.stored_value_card("u1", "USD", "100.00", NUMBER).await;
    let r = redeemed(&app, "req-hist-1", 1000).await;
    assert_eq!(r["result"], "Success", "{r}");
    let link = |card: &str, number: &str| {
        let path = format!("/v1/stored-value-cards/{card}");
        let body = json!({
            "number": number, "currency": "USD",
            "tenants": [e2e::instore::TENANT], "type": "GiftCard",
        });
        let app = &app;
        async move { app.admin_put(&path, body).await }
    };
    assert_eq!(link("crd-u1", SECOND).await.status, 200);
    // `user` with 1.00 USD and an active card `crd-{user}`.
    let carded = |user: &'static str| {
        let app = &app;
        async move {
            app.funded(user, "USD", "1.00").await;
            let card = json!({"user_id": user, "status": "ACTIVE"});
            let r = app.admin_put(&format!("/v1/cards/crd-{user}"), card).await;
            assert!(r.status == 200 || r.status == 201, "{}", r.text());
        }
    };
    carded("u2").await;
    let r = link("crd-u2", NUMBER).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "number_taken");
    assert_eq!(link("crd-u1", NUMBER).await.status, 200);
    // Another card (u3's) links a number while u2's link of it is on its way: u2's finds it
    // taken when it writes, and does not take the row over.
    const THIRD: &str = "6280001234567820";
    carded("u3").await;
    let mut other = DirectConn::open(&app).await;
    let begin = match app.backend {
        Backend::Postgres => "BEGIN",
        Backend::Sqlite => "BEGIN IMMEDIATE",
    };
    other.execute(begin).await;
    other
        .execute(&format!(
            "INSERT INTO instore_cards (number, card_id, user_id, currency, card_type, tenants, \
             linked, pin_tries, created_at_ms, updated_at_ms) \
             VALUES ('{THIRD}', 'crd-u3', 'u3', 'USD', 'GiftCard', 'x', TRUE, 0, 1, 1)"
        ))
        .await;
    let commit_later = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        other.execute("COMMIT").await;
    };
    let (r, ()) = futures_util::future::join(link("crd-u2", THIRD), commit_later).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "number_taken");
    let first = app.admin_get("/v1/stored-value-cards/crd-u3").await;
    assert_eq!(first["numbers"][0]["tenants"], json!(["x"]), "{first}");
}

/// One balance: a processor authorization, a channel hold and a Redeem on the same account
/// each see what the others took.
async fn redeem_and_authorization_share_the_balance(app: TestApp, _rx: CallbackReceiver) {
    app.stored_value_card("u1", "USD", "100.00", NUMBER).await;
    // The processor takes 30.00.
    let auth = Tx::new(&uid("sv"), "PURCHASE", "u1", "30.0", "USD").card("crd-u1");
    let r = app.send(AUTH_DEBIT, &auth).await;
    assert_eq!(r.json()["status"], "APPROVED", "{}", r.text());
    // A channel holds 20.00.
    app.usd_hold("u1", "20.00").await;
    // 50.00 remain: 50.01 is declined, 50.00 approved.
    let declined = redeemed(&app, "req-share-1", 5001).await;
    assert_eq!(declined["error"], "INSUFFICIENT_FUNDS", "{declined}");
    assert_eq!(
        declined["data"]["balance"]["amount"], 5000,
        "posted less held"
    );
    let approved = redeemed(&app, "req-share-2", 5000).await;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(approved["data"]["balance"]["amount"], 0);
    let a = app.account("u1", "USD").await;
    assert_eq!(
        (&a["posted"], &a["held"], &a["available"]),
        (&json!("20.00"), &json!("20.00"), &json!("0.00"))
    );
    // And the processor sees the Redeem: nothing left.
    let late = Tx::new(&uid("sv"), "PURCHASE", "u1", "0.01", "USD").card("crd-u1");
    assert_eq!(
        app.send(AUTH_DEBIT, &late).await.json()["status"],
        "REJECTED"
    );
    assert_eq!(movements(&app, "u1", "USD", "SV_REDEEM").await, 1);
}

/// `user`'s stored-value card [`NUMBER`] with 100.00 USD, and the envelope (body and
/// signature) of a Redeem of `minor` from it.
async fn funded_redeem(
    app: &TestApp,
    user: &str,
    request_id: &str,
    minor: i64,
) -> (Vec<u8>, String) {
    app.stored_value_card(user, "USD", "100.00", NUMBER).await;
    e2e::instore::envelope(
        "storedvaluecard_process",
        &redeem(request_id, NUMBER, minor),
        &format!("https://instore.example/callback/{request_id}"),
    )
}

/// A database that cannot serve in time: a Redeem gets 503 with nothing committed (no
/// movement, no callback), and InStore's resend under the same requestId books it once.
async fn a_blocked_database_answers_503(app: TestApp, _rx: CallbackReceiver) {
    let (body, signature) = funded_redeem(&app, "u-503", "req-503", 2500).await;
    let blocker = block_writes(&app, "u-503").await;
    let r = app
        .instore_post("storedvaluecard_process", &body, Some(&signature))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["requestId"], "req-503", "{}", r.text());
    blocker.release().await;
    assert_eq!(app.available("u-503", "USD").await, "100.00");
    assert!(app.instore_callbacks().await.is_empty(), "no callback row");
    for _ in 0..2 {
        let r = app
            .instore_post("storedvaluecard_process", &body, Some(&signature))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, br#"{"requestId":"req-503"}"#);
    }
    assert_eq!(app.available("u-503", "USD").await, "75.00");
    assert_eq!(movements(&app, "u-503", "USD", "SV_REDEEM").await, 1);
}

/// A short acknowledgement deadline, and a database lock wait well past it.
fn short_ack_deadline(s: &mut authorizer::Settings) {
    s.instore.ack_deadline_ms = 300;
    s.database.lock_wait_ms_max = 10_000;
}

/// A commit that cannot start within `instore.ack_deadline_ms` (the database held by
/// another session for 2 s, its lock wait 10 s): 503 at the deadline, while the database is
/// still held; the request that went on waiting is not committed once the database is free
/// (no movement, no callback), so InStore's resend is booked fresh, once.
async fn past_the_ack_deadline_nothing_commits(app: TestApp, _rx: CallbackReceiver) {
    let (body, signature) = funded_redeem(&app, "u-ack", "req-ack", 2500).await;
    let blocker = block_writes(&app, "u-ack").await;
    let send = async {
        let r = app
            .instore_post("storedvaluecard_process", &body, Some(&signature))
            .await;
        (r, std::time::Instant::now())
    };
    let release = async {
        actix_rt::time::sleep(Duration::from_secs(2)).await;
        let at = std::time::Instant::now();
        blocker.release().await;
        at
    };
    let ((r, answered), released) = tokio::join!(send, release);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["requestId"], "req-ack", "{}", r.text());
    assert!(
        answered < released,
        "answered while the database was still held"
    );
    let replays = || {
        app.metrics.counter(
            "instore_requests_total",
            &[("route", "storedvaluecard_process"), ("outcome", "replay")],
        )
    };
    let before = replays();
    // The resend's batch comes after the abandoned one (its account lock, or the embedded
    // store's one writer): it finds no record of the first and books fresh. Its own 300 ms
    // may pass on a loaded machine too: InStore resends a 503 again, as here.
    let mut r = app
        .instore_post("storedvaluecard_process", &body, Some(&signature))
        .await;
    for _ in 0..5 {
        if r.status != 503 {
            break;
        }
        r = app
            .instore_post("storedvaluecard_process", &body, Some(&signature))
            .await;
    }
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, br#"{"requestId":"req-ack"}"#);
    assert_eq!(
        replays(),
        before,
        "the abandoned request was never committed"
    );
    assert_eq!(app.available("u-ack", "USD").await, "75.00");
    assert_eq!(movements(&app, "u-ack", "USD", "SV_REDEEM").await, 1);
    assert_eq!(app.instore_callbacks().await.len(), 1, "one callback row");
}

/// Room for 50 requests on one account at once on a small machine.
fn crowd(s: &mut authorizer::Settings) {
    crowd_settings(s);
}

/// 50 concurrent copies of one Redeem, each through the writer: one movement, 50 identical
/// acknowledgements.
async fn concurrent_duplicates_book_once(app: TestApp, _rx: CallbackReceiver) {
    let (body, signature) = funded_redeem(&app, "u-dup", "req-dup-1", 1220).await;
    let items_before = app
        .metrics
        .counter("authorizer_commit_batch_items_total", &[]);
    let sends =
        (0..50).map(|_| app.instore_post("storedvaluecard_process", &body, Some(&signature)));
    let answers = futures_util::future::join_all(sends).await;
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, br#"{"requestId":"req-dup-1"}"#);
        assert_eq!(r.header("X-Signature"), answers[0].header("X-Signature"));
    }
    assert_eq!(movements(&app, "u-dup", "USD", "SV_REDEEM").await, 1);
    assert_eq!(app.available("u-dup", "USD").await, "87.80");
    assert_eq!(app.instore_callbacks().await.len(), 1, "one callback row");
    // Every copy went through the one writer.
    let items = app
        .metrics
        .counter("authorizer_commit_batch_items_total", &[])
        - items_before;
    assert!(items >= 50, "{items} requests through the writer");
}

/// Two numbers linked to one account: a split Redeem over both spends the account once.
/// Each number reads the whole account, so the second adds nothing to the first: asked
/// for more than the account holds, it is declined, not refused by the ledger (which would
/// answer 503 and fail the requests sharing its batch).
async fn a_split_over_two_numbers_of_one_account_spends_it_once(
    app: TestApp,
    _rx: CallbackReceiver,
) {
    const SECOND: &str = "6280001234567812";
    app.stored_value_card("u1", "USD", "100.00", NUMBER).await;
    let r = app
        .admin_put(
            "/v1/cards/crd-u1-b",
            json!({"user_id": "u1", "status": "ACTIVE"}),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let r = app
        .admin_put(
            "/v1/stored-value-cards/crd-u1-b",
            json!({
                "number": SECOND, "currency": "USD",
                "tenants": [e2e::instore::TENANT], "type": "GiftCard",
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let split = |request_id: &str, minor: i64| {
        let mut p = redeem(request_id, NUMBER, minor);
        p["accounts"] = json!([{"number": SECOND}]);
        p
    };
    let redeemed = |request_id: &'static str, minor: i64| {
        let (app, payload) = (&app, split(request_id, minor));
        async move {
            let url = "https://instore.example/callback/split";
            app.instore_acknowledged("storedvaluecard_process", &payload, url)
                .await;
            app.instore_callback(request_id).await
        }
    };
    let declined = redeemed("req-split-1", 15_000).await;
    assert_eq!(declined["error"], "INSUFFICIENT_FUNDS", "{declined}");
    assert_eq!(app.available("u1", "USD").await, "100.00");
    let approved = redeemed("req-split-2", 10_000).await;
    assert_eq!(approved["status"], "approved", "{approved}");
    assert_eq!(app.available("u1", "USD").await, "0.00");
    assert_eq!(movements(&app, "u1", "USD", "SV_REDEEM").await, 1);
}

/// A request with a PIN recorded by an earlier version (its hash over the PIN as sent, before
/// the PINs were keyed) and sent again after the upgrade replays, rather than conflicting
/// (409), which a POS could take for a failure and send again under a new id.
async fn a_request_recorded_before_the_keyed_hash_replays(app: TestApp, _rx: CallbackReceiver) {
    app.stored_value_card_with_pin(NUMBER).await;
    let with_pin = |pin: &str| {
        let mut p = redeem("req-up-1", NUMBER, 100);
        p["accounts"] = json!([{"number": NUMBER, "pin": pin}]);
        p
    };
    let to = "https://instore.example/callback/up";
    let first = app
        .instore_acknowledged("storedvaluecard_process", &with_pin("1234"), to)
        .await;
    let payload = ::instore::json::parse(with_pin("1234").to_string().as_bytes()).expect("JSON");
    let unkeyed = ::instore::payload::request_hash_unkeyed(&payload.value).expect("it has a PIN");
    let mut c = DirectConn::open(&app).await;
    c.execute(&format!(
        "UPDATE instore_requests SET request_hash = '{unkeyed}' WHERE request_id = 'req-up-1'"
    ))
    .await;
    let again = app
        .instore_envelope("storedvaluecard_process", &with_pin("1234"), to)
        .await;
    assert_eq!(
        (again.status, &again.body),
        (200, &first.body),
        "{}",
        again.text()
    );
    let other = app
        .instore_envelope("storedvaluecard_process", &with_pin("0000"), to)
        .await;
    assert_eq!(other.status, 409, "{}", other.text());
    assert_eq!(app.available("u1", "USD").await, "99.00");
}

e2e::instore_scenarios!(
    a_request_recorded_before_the_keyed_hash_replays,
    vectors_end_to_end,
    a_wrong_pin_on_redeem_counts_a_try,
    a_number_with_history_stays_its_accounts,
    a_split_over_two_numbers_of_one_account_spends_it_once,
    callback_retries_until_delivered,
    bad_envelopes_change_nothing,
    redeem_and_authorization_share_the_balance,
    a_cancelled_redeem_gives_todays_daily_limit_back,
    a_blocked_database_answers_503,
);
mod crowded {
    use super::*;
    e2e::instore_scenarios!(settings = super::crowd; concurrent_duplicates_book_once);
}
mod ack_deadline {
    use super::*;
    e2e::instore_scenarios!(settings = super::short_ack_deadline; past_the_ack_deadline_nothing_commits);
}
