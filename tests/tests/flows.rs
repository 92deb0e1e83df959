//! End-to-end money flows over HTTP with signed requests, checking balances after each.

use e2e::*;
use serde_json::json;

async fn purchase(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "990.0", "ARS");
    let r = app.send(AUTH, &tx).await;
    assert_eq!(r.status, 200);
    app.assert_signed(&r, AUTH);
    assert_eq!(
        r.body,
        br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Approved"}"#
    );
    assert_eq!(app.available("u1", "ARS").await, "10.00");
    // The posting history explains the balance.
    let p = app.admin_get("/v1/accounts/u1/ARS/postings").await;
    assert_eq!(p["postings"][0]["amount"], "-990.00");
    assert_eq!(p["postings"][0]["balance_after"], "10.00");
    assert_eq!(p["postings"][0]["transaction_id"], tx.id.as_str());
    assert_eq!(p["postings"][1]["kind"], "DEPOSIT");
}

async fn purchase_then_full_refund(app: TestApp) {
    app.funded("u1", "ARS", "500.00").await;
    let p = Tx::new(&uid("ctx"), "PURCHASE", "u1", "\"120.50\"", "ARS");
    assert_eq!(app.send(AUTH_DEBIT, &p).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "379.50");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "120.50", "ARS").original(&p.id);
    let r = app.send(ADJ_CREDIT, &refund).await;
    assert_eq!(r.status, 200);
    app.assert_signed(&r, ADJ_CREDIT);
    assert_eq!(r.json()["status_detail"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "500.00");
    // The refund is linked to the purchase it corrects.
    let h = app.admin_get(&format!("/v1/transactions/{}", p.id)).await;
    assert_eq!(h["adjustments"][0]["transaction_id"], refund.id.as_str());
    assert_eq!(h["records"][0]["status"], "APPROVED");
}

async fn purchase_then_partial_refund(app: TestApp) {
    app.funded("u1", "ARS", "500.00").await;
    let p = Tx::new(&uid("ctx"), "PURCHASE", "u1", "200.00", "ARS");
    assert_eq!(app.send(AUTH_DEBIT, &p).await.json()["status"], "APPROVED");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "75.25", "ARS").original(&p.id);
    assert_eq!(app.send(ADJ_CREDIT, &refund).await.status, 200);
    assert_eq!(app.available("u1", "ARS").await, "375.25");
}

async fn purchase_then_closing_differences(app: TestApp) {
    app.funded("u1", "ARS", "500.00").await;
    let p = Tx::new(&uid("ctx"), "PURCHASE", "u1", "100.00", "ARS");
    assert_eq!(app.send(AUTH_DEBIT, &p).await.json()["status"], "APPROVED");
    // Clearing presented more than was authorized: a debit adjustment for the difference.
    let more = Tx::new(&uid("ctx"), "PURCHASE", "u1", "3.10", "ARS").original(&p.id);
    assert_eq!(app.send(ADJ_DEBIT, &more).await.status, 200);
    assert_eq!(app.available("u1", "ARS").await, "396.90");
    // And another purchase closed for less: a credit adjustment.
    let p2 = Tx::new(&uid("ctx"), "PURCHASE", "u1", "50.00", "ARS");
    assert_eq!(app.send(AUTH_DEBIT, &p2).await.json()["status"], "APPROVED");
    let less = Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", "0.90", "ARS").original(&p2.id);
    assert_eq!(app.send(ADJ_CREDIT, &less).await.status, 200);
    assert_eq!(app.available("u1", "ARS").await, "347.80");
}

async fn payment_credit(app: TestApp) {
    app.funded("u1", "MXN", "0").await;
    let pay = Tx::new(&uid("ctx"), "PAYMENT", "u1", "250.00", "MXN");
    let r = app.send(AUTH_CREDIT, &pay).await;
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "MXN").await, "250.00");
    // A payment through the offline flow arrives as a credit adjustment.
    let pay2 = Tx::new(&uid("ctx"), "PAYMENT", "u1", "49.99", "MXN");
    assert_eq!(app.send(ADJ_CREDIT, &pay2).await.status, 200);
    assert_eq!(app.available("u1", "MXN").await, "299.99");
}

async fn cashback_with_base_and_extracash(app: TestApp) {
    app.funded("u1", "BRL", "300.00").await;
    let tx = Tx::new(&uid("ctx"), "CASHBACK", "u1", "150.00", "BRL").details(
        r#"[{"type":"BASE","currency":"BRL","amount":"100.00","name":"BASE"},{"type":"EXTRACASH","currency":"BRL","amount":"50.00","name":"EXTRACASH"}]"#,
    );
    let r = app.send(AUTH, &tx).await;
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "BRL").await, "150.00");
    // The detail lines are kept as received.
    let h = app.admin_get(&format!("/v1/transactions/{}", tx.id)).await;
    assert_eq!(
        h["records"][0]["request"]["amount"]["details"][1]["type"],
        "EXTRACASH"
    );
}

async fn withdrawal(app: TestApp) {
    app.funded("u1", "CLP", "20000").await;
    let tx = Tx::new(&uid("ctx"), "WITHDRAWAL", "u1", "15000", "CLP");
    assert_eq!(app.send(AUTH, &tx).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "CLP").await, "5000");
    // CLP has no minor unit: a decimal is not representable.
    let bad = Tx::new(&uid("ctx"), "WITHDRAWAL", "u1", "10.5", "CLP");
    let r = app.send(AUTH, &bad).await.json();
    assert_eq!(r["status_detail"], "INVALID_AMOUNT");
    assert_eq!(app.available("u1", "CLP").await, "5000");
}

async fn purchase_with_tax_lines_and_string_amounts(app: TestApp) {
    app.funded("u1", "ARS", "2000.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "\"1060.74\"", "ARS").details(
        r#"[{"type":"BASE","currency":"ARS","amount":"1000.00","name":"BASE"},{"type":"TAX","currency":"ARS","amount":"21.00","name":"IVA"},{"type":"TAX","currency":"ARS","amount":"30.00","name":"PAIS"},{"type":"TAX","currency":"ARS","amount":"5.24","name":"IIBB"},{"type":"TAX","currency":"ARS","amount":"4.50","name":"SELLOS"}]"#,
    );
    let r = app.send(AUTH_DEBIT, &tx).await;
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "939.26");
}

async fn unknown_card_on_known_user(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS").card("crd-never-registered");
    assert_eq!(app.send(AUTH, &tx).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "90.00");
}

async fn insufficient_funds(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "100.01", "ARS");
    let r = app.send(AUTH, &tx).await;
    app.assert_signed(&r, AUTH);
    assert_eq!(r.body, br#"{"status":"REJECTED","status_detail":"INSUFFICIENT_FUNDS","message":"Insufficient funds"}"#);
    assert_eq!(app.available("u1", "ARS").await, "100.00");
}

async fn balance_inquiry(app: TestApp) {
    app.funded("u1", "MXN", "982345.12").await;
    let tx = Tx::new(&uid("ctx"), "BALANCE_INQUIRY", "u1", "0", "MXN");
    let r = app.send(AUTH, &tx).await;
    assert_eq!(
        r.body,
        br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Balance","balance":{"total":"982345.12","currency":"MXN"}}"#
    );
    let p = app.admin_get("/v1/accounts/u1/MXN/postings").await;
    assert_eq!(
        p["postings"].as_array().map(Vec::len),
        Some(1),
        "only the deposit: no movement"
    );
}

async fn rejected_advice_reverses_once(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = app
        .admin_put("/v1/accounts/u1/ARS", json!({"daily_limit": "500.00"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "400.00", "ARS");
    assert_eq!(app.send(AUTH, &tx).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "600.00");
    let key = uid("adv");
    let advice = tx.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.status, 200);
    app.assert_signed(&r, NOTIFY);
    assert_eq!(r.json()["effect"], "REVERSED");
    assert_eq!(app.available("u1", "ARS").await, "1000.00");
    // A second copy (same key) and a copy under another key change nothing.
    assert_eq!(app.processor(NOTIFY, &advice, &key).await.body, r.body);
    let key2 = uid("adv");
    let again = tx.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key2);
    assert_eq!(
        app.processor(NOTIFY, &again, &key2).await.json()["effect"],
        "NOOP"
    );
    assert_eq!(app.available("u1", "ARS").await, "1000.00");
    // Today's daily counter got the 400.00 back with the money, once: the whole daily limit
    // of 500.00 is there again.
    daily_room_is(&app, "500.00").await;
}

/// u1's ARS daily limit has exactly `room` left today: a purchase of it is approved, and
/// then one of 0.01 is over the limit.
async fn daily_room_is(app: &TestApp, room: &str) {
    let whole = Tx::new(&uid("ctx"), "PURCHASE", "u1", room, "ARS");
    assert_eq!(app.send(AUTH, &whole).await.json()["status"], "APPROVED");
    let over = Tx::new(&uid("ctx"), "PURCHASE", "u1", "0.01", "ARS");
    let answer = app.send(AUTH, &over).await.json();
    assert_eq!(answer["message"], "Amount above daily limit", "{answer}");
}

/// A credit adjustment against a purchase booked today gives today's legacy daily counter
/// back what it credits of that purchase, never more than the purchase still holds there.
async fn credits_give_todays_daily_limit_back(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = app
        .admin_put("/v1/accounts/u1/ARS", json!({"daily_limit": "500.00"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spent_today = || async {
        let usage = app.admin_get("/v1/accounts/u1/ARS/controls").await["usage"][0].clone();
        assert_eq!(usage["legacy"], true, "{usage}");
        usage["spent"].as_str().unwrap_or_default().to_owned()
    };
    let bought = Tx::new(&uid("ctx"), "PURCHASE", "u1", "300.00", "ARS");
    let other = Tx::new(&uid("ctx"), "PURCHASE", "u1", "150.00", "ARS");
    for tx in [&bought, &other] {
        assert_eq!(app.send(AUTH, tx).await.json()["status"], "APPROVED");
    }
    assert_eq!(spent_today().await, "450.00");
    let credit = |kind: &str, amount: &str, original: Option<&str>| {
        let tx = Tx::new(&uid("ctx"), kind, "u1", amount, "ARS");
        let tx = match original {
            Some(id) => tx.original(id),
            None => tx,
        };
        let app = &app;
        async move {
            let r = app.send(ADJ_CREDIT, &tx).await;
            assert_eq!(r.json()["status_detail"], "APPROVED", "{}", r.text());
        }
    };
    // Part of the purchase reversed, then refunded for more than is left of it: the counter
    // gets 100.00 and then the 200.00 left, not the 250.00 credited.
    credit("REVERSAL_PURCHASE", "100.00", Some(&bought.id)).await;
    assert_eq!(spent_today().await, "350.00");
    credit("REFUND", "250.00", Some(&bought.id)).await;
    assert_eq!(spent_today().await, "150.00");
    // Nothing is left of it, a credit naming no purchase took nothing from the counter, and
    // one naming a declined purchase neither.
    credit("REVERSAL_PURCHASE", "50.00", Some(&bought.id)).await;
    credit("PAYMENT", "70.00", None).await;
    let declined = Tx::new(&uid("ctx"), "PURCHASE", "u1", "500.00", "ARS");
    let answer = app.send(AUTH, &declined).await.json();
    assert_eq!(answer["message"], "Amount above daily limit", "{answer}");
    credit("REVERSAL_PURCHASE", "500.00", Some(&declined.id)).await;
    assert_eq!(spent_today().await, "150.00");
    // Another purchase stays counted. Part of the other one is reversed; then the processor
    // rejects it, which gives back only what that reversal left (100.00), and a reversal of
    // it afterwards finds nothing left to give.
    let kept = Tx::new(&uid("ctx"), "PURCHASE", "u1", "20.00", "ARS");
    assert_eq!(app.send(AUTH, &kept).await.json()["status"], "APPROVED");
    credit("REVERSAL_PURCHASE", "50.00", Some(&other.id)).await;
    assert_eq!(spent_today().await, "120.00");
    let key = uid("adv");
    let advice = other.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    assert_eq!(
        app.processor(NOTIFY, &advice, &key).await.json()["effect"],
        "REVERSED"
    );
    assert_eq!(spent_today().await, "20.00");
    // The verdict undoes the whole purchase, as the processor's records say, so the 50.00
    // reversed before is given twice: the notification is flagged for a person.
    let h = app
        .admin_get(&format!("/v1/transactions/{}", other.id))
        .await;
    assert_eq!(
        h["notifications"][0]["flags"],
        json!(["ALREADY_CREDITED"]),
        "{h}"
    );
    assert_eq!(app.available("u1", "ARS").await, "1700.00");
    credit("REVERSAL_PURCHASE", "150.00", Some(&other.id)).await;
    assert_eq!(spent_today().await, "20.00");
    // The rest of the daily limit is there again, and not a cent more.
    daily_room_is(&app, "480.00").await;
}

async fn approved_advice_books_a_rejected_purchase(app: TestApp) {
    app.funded("u1", "ARS", "50.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "80.00", "ARS");
    assert_eq!(
        app.send(AUTH, &tx).await.json()["status_detail"],
        "INSUFFICIENT_FUNDS"
    );
    let key = uid("adv");
    let advice = tx.approved_advice(&key);
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.json()["effect"], "FORCED");
    // Effective on the processor's word, even below zero; flagged for review.
    assert_eq!(app.available("u1", "ARS").await, "-30.00");
    let h = app.admin_get(&format!("/v1/transactions/{}", tx.id)).await;
    let flags = h["notifications"][0]["flags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(flags.contains(&json!("FORCED_BY_PROCESSOR")), "{flags:?}");
    assert!(flags.contains(&json!("NEGATIVE_BALANCE")), "{flags:?}");
    // The same verdict again books nothing more.
    let key2 = uid("adv");
    let again = tx.approved_advice(&key2);
    assert_eq!(
        app.processor(NOTIFY, &again, &key2).await.json()["effect"],
        "NOOP"
    );
    assert_eq!(app.available("u1", "ARS").await, "-30.00");
}

/// The processor's approved advice for `tx`, under a fresh key: our answer's JSON.
async fn approved_advice(app: &TestApp, tx: &Tx) -> serde_json::Value {
    let key = uid("adv");
    app.processor(NOTIFY, &tx.approved_advice(&key), &key)
        .await
        .json()
}

/// An approved verdict whose type we do not know tells no direction: it books in the one our
/// authorization was asked for (its route), rather than leaving settled money unbooked.
async fn approved_advice_of_an_unknown_type_books_in_the_asked_direction(app: TestApp) {
    app.funded("u1", "ARS", "50.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE_QR", "u1", "80.00", "ARS");
    let r = app.send(AUTH_DEBIT, &tx).await.json();
    assert_eq!(r["status"], "REJECTED", "{r}");
    let r = approved_advice(&app, &tx).await;
    assert_eq!(r["effect"], "FORCED", "{r}");
    assert_eq!(app.available("u1", "ARS").await, "-30.00");
    // Before any authorization, such a verdict can book nothing (no direction): it waits
    // for a person, and the late authorization is not answered APPROVED for money that
    // was never booked.
    let late = Tx::new(&uid("ctx"), "PURCHASE_QR", "u1", "5.00", "ARS");
    let r = approved_advice(&app, &late).await;
    assert_eq!(r["effect"], "REVIEW", "{r}");
    let r = app.send(AUTH_DEBIT, &late).await.json();
    assert_eq!(r["status"], "REJECTED", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("waits for review"),
        "{r}"
    );
    assert_eq!(app.available("u1", "ARS").await, "-30.00");
}

async fn verdict_before_authorization(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    // The processor timed us out and said so before our late authorization arrived.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let key = uid("adv");
    let advice = tx.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    assert_eq!(
        app.processor(NOTIFY, &advice, &key).await.json()["effect"],
        "NOOP"
    );
    let r = app.send(AUTH, &tx).await.json();
    assert_eq!(r["status"], "REJECTED");
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    // An approved verdict for a transaction never seen books it once; the late
    // authorization then answers approved without booking again.
    let tx2 = Tx::new(&uid("ctx"), "PURCHASE", "u1", "30.00", "ARS");
    let key2 = uid("adv");
    let adv2 = tx2.approved_advice(&key2);
    assert_eq!(
        app.processor(NOTIFY, &adv2, &key2).await.json()["effect"],
        "FORCED"
    );
    assert_eq!(app.available("u1", "ARS").await, "70.00");
    assert_eq!(app.send(AUTH, &tx2).await.json()["status"], "APPROVED");
    assert_eq!(app.available("u1", "ARS").await, "70.00");
    // A verdict may carry less than the authorization (here no card). Once the late
    // authorization is answered, the record holds what it asked: its resend under a new
    // key replays the answer instead of being refused as other money.
    let tx3 = Tx::new(&uid("ctx"), "PURCHASE", "u1", "20.00", "ARS");
    let key3 = uid("adv");
    let mut adv3: serde_json::Value = serde_json::from_slice(&tx3.advice(
        "approved-authorization-advice",
        "APPROVED",
        "APPROVED",
        &key3,
    ))
    .expect("advice is JSON");
    adv3["event_detail"]
        .as_object_mut()
        .expect("detail")
        .remove("card");
    let adv3 = adv3.to_string().into_bytes();
    assert_eq!(
        app.processor(NOTIFY, &adv3, &key3).await.json()["effect"],
        "FORCED"
    );
    assert_eq!(app.available("u1", "ARS").await, "50.00");
    let first = app.send(AUTH, &tx3).await;
    assert_eq!(first.json()["status"], "APPROVED");
    let resent = app.send(AUTH, &tx3).await;
    assert_eq!(resent.status, 200);
    assert_eq!(resent.body, first.body);
    assert_eq!(app.available("u1", "ARS").await, "50.00");
}

async fn card_rules_are_cached(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let card = uid("crd");
    let r = app
        .admin_put(
            &format!("/v1/cards/{card}"),
            json!({"user_id":"u1","status":"ACTIVE","blocked_mccs":["7995"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let hits = || {
        app.metrics
            .counter("authorizer_rules_cache_hits_total", &[("kind", "card")])
    };
    let before = hits();
    // The first read fills the cache, on whichever store; the next ones are hits and still
    // apply the card's rules.
    for (mcc, want) in [
        ("5411", "APPROVED"),
        ("5411", "APPROVED"),
        ("7995", "REJECTED"),
    ] {
        let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS")
            .card(&card)
            .mcc(mcc);
        let r = app.send(AUTH, &tx).await.json();
        assert_eq!(r["status"], want, "mcc {mcc}");
    }
    assert_eq!(
        hits() - before,
        2,
        "the second and third authorizations hit the cache"
    );
    assert_eq!(app.available("u1", "ARS").await, "98.00");
}

async fn card_and_account_rules(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let r = app
        .admin_put(
            "/v1/cards/crd-u1",
            json!({"user_id":"u1","status":"LOST","blocked_mccs":[]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    assert_eq!(app.send(AUTH, &tx).await.json()["status_detail"], "OTHER");
    app.admin_put(
        "/v1/cards/crd-u1",
        json!({"user_id":"u1","status":"ACTIVE","blocked_mccs":["7995"]}),
    )
    .await;
    let casino = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS").mcc("7995");
    assert_eq!(
        app.send(AUTH, &casino).await.json()["status_detail"],
        "INVALID_MERCHANT"
    );
    // Account rules: per-transaction and daily limits, overdraft.
    let r = app
        .admin_put("/v1/accounts/u1/ARS", json!({"overdraft_limit":"100.00","per_transaction_limit":"600.00","daily_limit":"1050.00","blocked_mccs":["5411"]}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let big = Tx::new(&uid("ctx"), "PURCHASE", "u1", "600.01", "ARS");
    assert_eq!(
        app.send(AUTH, &big).await.json()["status_detail"],
        "INVALID_AMOUNT"
    );
    let grocery = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS").mcc("5411");
    assert_eq!(
        app.send(AUTH, &grocery).await.json()["status_detail"],
        "INVALID_MERCHANT"
    );
    let a = Tx::new(&uid("ctx"), "PURCHASE", "u1", "600.00", "ARS");
    assert_eq!(app.send(AUTH, &a).await.json()["status"], "APPROVED");
    let b = Tx::new(&uid("ctx"), "PURCHASE", "u1", "460.00", "ARS");
    assert_eq!(
        app.send(AUTH, &b).await.json()["status_detail"],
        "INVALID_AMOUNT",
        "daily limit"
    );
    let c = Tx::new(&uid("ctx"), "PURCHASE", "u1", "450.00", "ARS");
    assert_eq!(
        app.send(AUTH, &c).await.json()["status"],
        "APPROVED",
        "overdraft covers"
    );
    assert_eq!(app.available("u1", "ARS").await, "-50.00");
    // A card registered to another user is refused.
    app.admin_put("/v1/cards/crd-x", json!({"user_id":"u2","status":"ACTIVE"}))
        .await;
    let other = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "ARS").card("crd-x");
    assert_eq!(
        app.send(AUTH, &other).await.json()["status_detail"],
        "OTHER"
    );
}

async fn unknown_user_or_currency(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let nobody = Tx::new(&uid("ctx"), "PURCHASE", "nobody", "1.00", "ARS");
    assert_eq!(
        app.send(AUTH, &nobody).await.json()["status_detail"],
        "OTHER"
    );
    let wrong_currency = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "USD");
    assert_eq!(
        app.send(AUTH, &wrong_currency).await.json()["status_detail"],
        "OTHER"
    );
    let unknown = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "XYZ");
    assert_eq!(
        app.send(AUTH, &unknown).await.json()["status_detail"],
        "INVALID_AMOUNT"
    );
    // Adjustments cannot be refused: unknown user or currency go to suspense, flagged.
    let adj = Tx::new(&uid("ctx"), "REFUND", "nobody", "5.00", "ARS");
    let r = app.send(ADJ_CREDIT, &adj).await.json();
    assert!(
        r["message"].as_str().unwrap_or("").contains("SUSPENSE"),
        "{r}"
    );
    let adj2 = Tx::new(&uid("ctx"), "REFUND", "u1", "5.00", "XYZ");
    let r = app.send(ADJ_CREDIT, &adj2).await.json();
    let msg = r["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("UNKNOWN_CURRENCY") && msg.contains("SUSPENSE"),
        "{r}"
    );
    let h = app
        .admin_get(&format!("/v1/transactions/{}", adj2.id))
        .await;
    assert_eq!(h["movements"][0]["postings"][0]["account"], "SUSPENSE");
    assert_eq!(h["movements"][0]["postings"][0]["amount"], "5.0000");
    // Not a currency code at all: nothing can be booked, and the answer says so, as the
    // record does (it said "Adjustment booked").
    let adj3 = Tx::new(&uid("ctx"), "REFUND", "u1", "5.00", "ars");
    let r = app.send(ADJ_CREDIT, &adj3).await.json();
    assert_eq!(r["status_detail"], "INVALID_AMOUNT", "{r}");
    assert!(
        r["message"].as_str().unwrap_or("").contains("not bookable"),
        "{r}"
    );
    let h = app
        .admin_get(&format!("/v1/transactions/{}", adj3.id))
        .await;
    assert_eq!(h["records"][0]["status_detail"], "INVALID_AMOUNT", "{h}");
    assert_eq!(h["movements"], json!([]), "{h}");
    assert_eq!(app.available("u1", "ARS").await, "100.00");
}

/// A reversal of a purchase we declined (no money moved for it) is booked, as every
/// adjustment is, and flagged for review: it credits what was never paid.
async fn a_reversal_of_a_declined_purchase_is_flagged(app: TestApp) {
    app.funded("u1", "ARS", "50.00").await;
    let declined = Tx::new(&uid("ctx"), "PURCHASE", "u1", "80.00", "ARS");
    let r = app.send(AUTH, &declined).await.json();
    assert_eq!(r["status_detail"], "INSUFFICIENT_FUNDS", "{r}");
    let reversal =
        Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", "80.00", "ARS").original(&declined.id);
    let r = app.send(ADJ_CREDIT, &reversal).await.json();
    assert_eq!(r["status_detail"], "APPROVED", "{r}");
    let message = r["message"].as_str().unwrap_or("");
    assert!(message.contains("ORIGINAL_NOT_BOOKED"), "{r}");
    assert_eq!(app.available("u1", "ARS").await, "130.00");
    let flagged = &[("flag", "ORIGINAL_NOT_BOOKED")];
    let counter = app
        .metrics
        .counter("authorizer_flagged_bookings_total", flagged);
    assert_eq!(counter, 1);
    // A refund of a purchase we approved is not flagged.
    let approved = Tx::new(&uid("ctx"), "PURCHASE", "u1", "30.00", "ARS");
    assert_eq!(app.send(AUTH, &approved).await.json()["status"], "APPROVED");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "30.00", "ARS").original(&approved.id);
    let r = app.send(ADJ_CREDIT, &refund).await.json();
    assert!(
        !r["message"].as_str().unwrap_or("").contains("ORIGINAL"),
        "{r}"
    );
    // One the processor rejected after our approval gave its money back already: a
    // reversal of it is flagged too.
    let rejected = Tx::new(&uid("ctx"), "PURCHASE", "u1", "20.00", "ARS");
    assert_eq!(app.send(AUTH, &rejected).await.json()["status"], "APPROVED");
    let key = uid("adv");
    let advice = rejected.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    let r = app.processor(NOTIFY, &advice, &key).await.json();
    assert_eq!(r["effect"], "REVERSED", "{r}");
    let twice =
        Tx::new(&uid("ctx"), "REVERSAL_PURCHASE", "u1", "20.00", "ARS").original(&rejected.id);
    let r = app.send(ADJ_CREDIT, &twice).await.json();
    let message = r["message"].as_str().unwrap_or("");
    assert!(message.contains("ORIGINAL_NOT_BOOKED"), "{r}");
    let counter = app
        .metrics
        .counter("authorizer_flagged_bookings_total", flagged);
    assert_eq!(counter, 2);
}

async fn adjustment_may_go_negative(app: TestApp) {
    app.funded("u1", "ARS", "10.00").await;
    let adj = Tx::new(&uid("ctx"), "PURCHASE", "u1", "25.00", "ARS");
    let r = app.send(ADJ_DEBIT, &adj).await.json();
    assert_eq!(r["status_detail"], "APPROVED");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("NEGATIVE_BALANCE"),
        "{r}"
    );
    assert_eq!(app.available("u1", "ARS").await, "-15.00");
    assert_eq!(
        app.metrics
            .counter("authorizer_negative_balances_total", &[]),
        1
    );
    // More decimals than the currency has: booked rounded, the exact text kept, flagged.
    let fine = Tx::new(&uid("ctx"), "REFUND", "u1", "0.005", "ARS");
    let r = app.send(ADJ_CREDIT, &fine).await.json();
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("EXCESS_PRECISION"),
        "{r}"
    );
    let h = app
        .admin_get(&format!("/v1/transactions/{}", fine.id))
        .await;
    assert_eq!(h["records"][0]["amount"], "0.005");
}

async fn admin_api(app: TestApp) {
    // Every admin route wants the bearer token.
    let r = app.get("/v1/accounts/u1/ARS").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    app.funded("u1", "ARS", "0").await;
    let dep = |amt: &str| json!({ "amount": amt, "reference": "top-up" });
    let path = "/v1/accounts/u1/ARS/deposits";
    let a = app
        .admin("POST", path, Some(dep("10.00")), Some("dep-1"))
        .await;
    assert_eq!(a.status, 201);
    let b = app
        .admin("POST", path, Some(dep("10.00")), Some("dep-1"))
        .await;
    assert_eq!(
        (b.status, &b.body),
        (201, &a.body),
        "replayed, not booked twice"
    );
    assert_eq!(
        app.admin("POST", path, Some(dep("11.00")), Some("dep-1"))
            .await
            .status,
        409
    );
    assert_eq!(
        app.admin("POST", path, Some(dep("10.001")), Some("dep-2"))
            .await
            .json()["error"]["code"],
        "invalid_amount"
    );
    assert_eq!(
        app.admin("POST", path, Some(dep("10.00")), None)
            .await
            .status,
        400
    );
    assert_eq!(
        app.admin("POST", path, Some(json!({"amount": 10})), Some("dep-3"))
            .await
            .status,
        400
    );
    assert_eq!(app.available("u1", "ARS").await, "10.00");
    let w = app
        .admin(
            "POST",
            "/v1/accounts/u1/ARS/withdrawals",
            Some(dep("10.01")),
            Some("w-1"),
        )
        .await;
    assert_eq!(
        (w.status, w.json()["error"]["code"].clone()),
        (422, json!("insufficient_funds"))
    );
    let w = app
        .admin(
            "POST",
            "/v1/accounts/u1/ARS/withdrawals",
            Some(dep("4.00")),
            Some("w-2"),
        )
        .await;
    assert_eq!(w.status, 201);
    assert_eq!(app.available("u1", "ARS").await, "6.00");
    assert_eq!(
        app.admin("GET", "/v1/accounts/u1/ZZZ", None, None)
            .await
            .status,
        400
    );
    assert_eq!(
        app.admin("GET", "/v1/accounts/nobody/ARS", None, None)
            .await
            .status,
        404
    );
    // Pagination, newest first.
    for i in 0..5 {
        app.admin("POST", path, Some(dep("1.00")), Some(&format!("p-{i}")))
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .admin_get(&format!(
                "/v1/accounts/u1/ARS/postings?limit=3&cursor={cursor}"
            ))
            .await;
        for p in page["postings"].as_array().unwrap() {
            seen.push(p["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    let scrape = app.get("/metrics").await;
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = String::from_utf8(scrape.body).unwrap();
    assert!(
        m.contains("# TYPE authorizer_admin_requests_total counter\n"),
        "{m}"
    );
    assert!(m.contains("# HELP authorizer_admin_requests_total "), "{m}");
    // Every sample line is a series and a number, under the HELP and TYPE of its family.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        assert!(
            m.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
        assert!(
            m.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE"
        );
    }
}

both_backends!(
    purchase,
    purchase_then_full_refund,
    purchase_then_partial_refund,
    purchase_then_closing_differences,
    payment_credit,
    cashback_with_base_and_extracash,
    withdrawal,
    purchase_with_tax_lines_and_string_amounts,
    unknown_card_on_known_user,
    insufficient_funds,
    balance_inquiry,
    rejected_advice_reverses_once,
    credits_give_todays_daily_limit_back,
    approved_advice_of_an_unknown_type_books_in_the_asked_direction,
    approved_advice_books_a_rejected_purchase,
    verdict_before_authorization,
    card_rules_are_cached,
    card_and_account_rules,
    unknown_user_or_currency,
    adjustment_may_go_negative,
    a_reversal_of_a_declined_purchase_is_flagged,
    admin_api,
);
