//! Hardening: money never moves the wrong way, twice, or past a block.

use crate::support::{admin_money, assert_booked_flagged};
use e2e::*;
use serde_json::{Value, json};

both_backends!(
    negative_advice_never_credits_the_cardholder,
    negative_adjustments_never_move_against_their_route,
    adjustments_with_malformed_optional_fields_are_booked_and_flagged,
    resent_transaction_id_asking_other_money_is_refused,
    resent_adjustment_id_asking_other_money_is_refused,
    deposit_beyond_the_ledger_range_is_a_clear_422,
    mcc_in_another_spelling_or_missing_does_not_pass_a_block,
);

/// What `GET /v1/transactions/{id}` shows.
async fn history(app: &TestApp, id: &str) -> Value {
    let r = app
        .admin("GET", &format!("/v1/transactions/{id}"), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn flags(v: &Value) -> Vec<String> {
    v["flags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of one counter line of `/metrics`, 0 when absent.
async fn counter(app: &TestApp, line_start: &str) -> u64 {
    let r = app.get("/metrics").await;
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn negative_advice_never_credits_the_cardholder(app: TestApp) {
    let user = uid("neg-adv");
    app.funded(&user, "ARS", "100.00").await;
    let before = counter(
        &app,
        "authorizer_flagged_bookings_total{flag=\"NEGATIVE_AMOUNT\"}",
    )
    .await;
    // The processor's final word on a purchase we never saw, with a negative amount.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, "-50.00", "ARS");
    let key = uid("adv");
    let r = app.processor(NOTIFY, &tx.approved_advice(&key), &key).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app.assert_signed(&r, NOTIFY);
    assert_eq!(app.available(&user, "ARS").await, "100.00");

    // Booked on suspense, flagged, and visible.
    let h = history(&app, &tx.id).await;
    let record = &h["records"][0];
    let f = flags(record);
    for want in ["NEGATIVE_AMOUNT", "SUSPENSE", "FORCED_BY_PROCESSOR"] {
        assert!(f.iter().any(|x| x == want), "{want} in {f:?}");
    }
    let postings = h["movements"][0]["postings"]
        .as_array()
        .expect("postings of the parked movement");
    assert!(
        postings.iter().all(|p| p["account"] != "CARDHOLDER"),
        "no cardholder posting: {postings:?}"
    );
    assert!(postings.iter().any(|p| p["account"] == "SUSPENSE"));
    assert_eq!(
        counter(
            &app,
            "authorizer_flagged_bookings_total{flag=\"NEGATIVE_AMOUNT\"}"
        )
        .await,
        before + 1
    );

    // The cardholder cannot spend money that was never theirs.
    let buy = Tx::new(&uid("ctx"), "PURCHASE", &user, "140.00", "ARS");
    let r = app.send(AUTH, &buy).await;
    assert_eq!(r.json()["status_detail"], "INSUFFICIENT_FUNDS");
    assert_eq!(app.available(&user, "ARS").await, "100.00");
}

async fn negative_adjustments_never_move_against_their_route(app: TestApp) {
    let user = uid("neg-adj");
    app.funded(&user, "ARS", "100.00").await;
    for (route, amount) in [(ADJ_DEBIT, "-30.00"), (ADJ_CREDIT, "\"-30.00\"")] {
        let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, amount, "ARS");
        let r = app.processor(route, &tx.body(), &uid("adj")).await;
        // Adjustments cannot be refused: booked, answered, flagged.
        assert_booked_flagged(&app, &r, route, &["NEGATIVE_AMOUNT", "SUSPENSE"]);
        assert_eq!(app.available(&user, "ARS").await, "100.00", "{route}");
        let h = history(&app, &tx.id).await;
        let f = flags(&h["records"][0]);
        assert!(f.iter().any(|x| x == "NEGATIVE_AMOUNT"), "{f:?}");
        assert_eq!(h["movements"][0]["postings"][0]["account"], "SUSPENSE");
    }
    // A positive adjustment still moves the cardholder's money.
    let tx = Tx::new(&uid("ctx"), "REFUND", &user, "30.00", "ARS");
    let r = app.processor(ADJ_CREDIT, &tx.body(), &uid("adj")).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.available(&user, "ARS").await, "130.00");
}

/// `tx`'s body with `from` (found exactly once) replaced by `to`.
fn edited(tx: &Tx, from: &str, to: &str) -> Vec<u8> {
    let body = String::from_utf8(tx.body()).expect("a test body is text");
    assert_eq!(body.matches(from).count(), 1, "{from} in {body}");
    body.replacen(from, to, 1).into_bytes()
}

async fn adjustments_with_malformed_optional_fields_are_booked_and_flagged(app: TestApp) {
    let user = uid("unread");
    app.funded(&user, "ARS", "100.00").await;
    let unread = |field: &str| {
        format!("authorizer_unread_fields_total{{route=\"{ADJ_DEBIT}\",field=\"{field}\"}}")
    };
    let before = (
        counter(&app, &unread("merchant.mcc")).await,
        counter(&app, &unread("amount.settlement")).await,
    );

    // A debit adjustment with a numeric MCC and a null settlement total: the network made it
    // effective, so it is booked on the cardholder, flagged, and answered APPROVED.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, "\"30.00\"", "ARS");
    let body = edited(&tx, r#""mcc":"5045""#, r#""mcc":5045"#);
    let body = String::from_utf8(body).unwrap().replacen(
        r#""settlement":{"total":11.0"#,
        r#""settlement":{"total":null"#,
        1,
    );
    let key = uid("adj");
    let r = app.processor(ADJ_DEBIT, body.as_bytes(), &key).await;
    assert_booked_flagged(&app, &r, ADJ_DEBIT, &["UNREAD_FIELDS"]);
    assert_eq!(r.json()["status_detail"], "APPROVED");
    assert_eq!(app.available(&user, "ARS").await, "70.00");
    let h = history(&app, &tx.id).await;
    assert!(flags(&h["records"][0]).iter().any(|f| f == "UNREAD_FIELDS"));
    assert_eq!(counter(&app, &unread("merchant.mcc")).await, before.0 + 1);
    assert_eq!(
        counter(&app, &unread("amount.settlement")).await,
        before.1 + 1
    );
    // The processor's resends replay it, under its key or a new one; nothing moves or
    // counts twice.
    for k in [key.clone(), uid("adj")] {
        let again = app.processor(ADJ_DEBIT, body.as_bytes(), &k).await;
        assert_eq!((again.status, again.json()), (200, r.json()));
    }
    assert_eq!(app.available(&user, "ARS").await, "70.00");
    assert_eq!(counter(&app, &unread("merchant.mcc")).await, before.0 + 1);

    // A user id that cannot be read: no cardholder is credited, the money waits on suspense.
    let tx = Tx::new(&uid("ctx"), "REFUND", &user, "\"5.00\"", "ARS");
    let body = edited(
        &tx,
        &format!(r#""user":{{"id":"{user}"}}"#),
        r#""user":{"id":12}"#,
    );
    let r = app.processor(ADJ_CREDIT, &body, &uid("adj")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let f = flags(&history(&app, &tx.id).await["records"][0]);
    for want in ["UNREAD_FIELDS", "SUSPENSE"] {
        assert!(f.iter().any(|x| x == want), "{want} in {f:?}");
    }
    assert_eq!(app.available(&user, "ARS").await, "70.00");

    // What the money needs is never guessed: refused as before, nothing stored.
    let tx = Tx::new(&uid("ctx"), "REFUND", &user, "null", "ARS");
    let r = app.processor(ADJ_CREDIT, &tx.body(), &uid("adj")).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = app
        .admin("GET", &format!("/v1/transactions/{}", tx.id), None, None)
        .await;
    assert_eq!(r.status, 404);
    // And an authorization, which may be refused, is refused.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, "\"1.00\"", "ARS");
    let r = app
        .processor(
            AUTH_DEBIT,
            &edited(&tx, r#""mcc":"5045""#, r#""mcc":5045"#),
            &uid("auth"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(app.available(&user, "ARS").await, "70.00");
}

async fn resent_transaction_id_asking_other_money_is_refused(app: TestApp) {
    let user = uid("resend");
    let other = uid("resend-other");
    app.funded(&user, "ARS", "100.00").await;
    app.funded(&other, "ARS", "100.00").await;
    let first = Tx::new(&uid("ctx"), "PURCHASE", &user, "1.00", "ARS");
    let r1 = app.send(AUTH_DEBIT, &first).await;
    assert_eq!(r1.json()["status"], "APPROVED");
    let conflicts = counter(
        &app,
        "authorizer_transaction_conflicts_total{route=\"/transactions/authorizations/debit\"}",
    )
    .await;

    // What moves money differs: refused, signed, nothing booked.
    let mut bigger = first.clone();
    bigger.amount = "50.00".into();
    let mut dollars = first.clone();
    dollars.currency = "USD".into();
    let mut someone_else = first.clone();
    someone_else.user = other.clone();
    let mut other_card = first.clone();
    other_card.card = "crd-another".into();
    let mut withdrawal = first.clone();
    withdrawal.kind = "WITHDRAWAL".into();
    for (what, path, tx) in [
        ("amount", AUTH_DEBIT, &bigger),
        ("currency", AUTH_DEBIT, &dollars),
        ("user", AUTH_DEBIT, &someone_else),
        ("card", AUTH_DEBIT, &other_card),
        ("type", AUTH_DEBIT, &withdrawal),
        ("route", AUTH_CREDIT, &first),
        ("route", AUTH, &first),
    ] {
        let r = app.processor(path, &tx.body(), &uid("k")).await;
        app.assert_signed_status(&r, 409, path, what);
        assert_eq!(r.json()["error"]["code"], "transaction_id_reused", "{what}");
    }
    assert_eq!(app.available(&user, "ARS").await, "99.00");
    assert_eq!(app.available(&other, "ARS").await, "100.00");
    assert_eq!(
        counter(
            &app,
            "authorizer_transaction_conflicts_total{route=\"/transactions/authorizations/debit\"}"
        )
        .await,
        conflicts + 5
    );

    // A retry that differs only in formatting (and in its timestamp and key) replays.
    let mut reformatted = first.clone();
    reformatted.amount = "\"1.0\"".into();
    let r = app.send(AUTH_DEBIT, &reformatted).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r1.body, "the first answer, byte for byte");
    app.assert_signed(&r, AUTH_DEBIT);
    assert_eq!(app.available(&user, "ARS").await, "99.00");
}

async fn resent_adjustment_id_asking_other_money_is_refused(app: TestApp) {
    let user = uid("resend-adj");
    app.funded(&user, "ARS", "100.00").await;
    let first = Tx::new(&uid("ctx"), "REFUND", &user, "10.00", "ARS");
    let r1 = app.send(ADJ_CREDIT, &first).await;
    assert_eq!(r1.status, 200);
    assert_eq!(app.available(&user, "ARS").await, "110.00");
    let mut bigger = first.clone();
    bigger.amount = "90.00".into();
    for (path, tx) in [(ADJ_CREDIT, &bigger), (ADJ_DEBIT, &first)] {
        let r = app.processor(path, &tx.body(), &uid("k")).await;
        app.assert_signed_status(&r, 409, path, path);
        assert_eq!(r.json()["error"]["code"], "transaction_id_reused");
    }
    let r = app.send(ADJ_CREDIT, &first).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r1.body);
    assert_eq!(app.available(&user, "ARS").await, "110.00");
}

async fn deposit_beyond_the_ledger_range_is_a_clear_422(app: TestApp) {
    let user = uid("huge");
    // Close to the largest balance the ledger holds (i64 minor units).
    app.funded(&user, "ARS", "92233720368547758.00").await;
    let r = admin_money(&app, "deposits", &user, "ARS", "1.00").await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "balance_out_of_range");
    assert_eq!(app.available(&user, "ARS").await, "92233720368547758.00");

    // An adjustment the balance cannot hold is parked, never a 503 the processor would
    // resend forever.
    let tx = Tx::new(&uid("ctx"), "REFUND", &user, "1.00", "ARS");
    let r = app.processor(ADJ_CREDIT, &tx.body(), &uid("adj")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("SUSPENSE")
    );
    assert_eq!(app.available(&user, "ARS").await, "92233720368547758.00");
}

async fn mcc_in_another_spelling_or_missing_does_not_pass_a_block(app: TestApp) {
    let user = uid("mcc");
    app.funded(&user, "ARS", "100.00").await;
    let card = format!("crd-{user}");
    let r = app
        .admin(
            "PUT",
            &format!("/v1/cards/{card}"),
            Some(json!({ "user_id": user, "status": "ACTIVE", "blocked_mccs": ["5045"] })),
            None,
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.json());
    let spellings: [(&str, Option<&str>, &str); 5] = [
        ("spaces", Some(" 5045"), "Merchant blocked"),
        ("leading zero", Some("05045"), "Merchant blocked"),
        ("null", None, "unreadable"),
        ("letters", Some("50A5"), "unreadable"),
        ("empty", Some(""), "unreadable"),
    ];
    for (what, mcc, message) in spellings {
        let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, "1.00", "ARS");
        let body = String::from_utf8(tx.body()).expect("utf-8");
        let body = match mcc {
            Some(m) => body.replace("\"mcc\":\"5045\"", &format!("\"mcc\":\"{m}\"")),
            None => body.replace("\"mcc\":\"5045\"", "\"mcc\":null"),
        };
        let r = app.processor(AUTH, body.as_bytes(), &uid("k")).await;
        let v = r.json();
        assert_eq!(v["status"], "REJECTED", "{what}: {v}");
        assert_eq!(v["status_detail"], "INVALID_MERCHANT", "{what}: {v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(message),
            "{what}: {v}"
        );
    }
    // Another category passes; without a block an unreadable MCC blocks nothing.
    let ok = Tx::new(&uid("ctx"), "PURCHASE", &user, "1.00", "ARS").mcc("5411");
    let r = app.send(AUTH, &ok).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let free = uid("mcc-free");
    app.funded(&free, "ARS", "10.00").await;
    let odd = Tx::new(&uid("ctx"), "PURCHASE", &free, "1.00", "ARS").mcc("50A5");
    let r = app.send(AUTH, &odd).await;
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(app.available(&user, "ARS").await, "99.00");
}
