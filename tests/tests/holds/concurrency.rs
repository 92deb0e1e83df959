//! Races: identical captures book once; concurrent reservations never hold more than there is.

use super::common::*;
use e2e::*;
use futures_util::future::join_all;
use serde_json::json;

/// 50 identical captures at once (each under its own key): one movement, one answer.
async fn identical_captures_book_once(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    reserve_approved(&app, "cc", "100.00", "DKK").await;
    same_post_at_once(&app, &capture_path("cc"), &json!({"amount": "60.00"}), 50).await;
    assert_eq!(app.movements("u1", "DKK", "HOLD_CAPTURE").await, 1);
    assert_posted_held(&app, "DKK", "440.00", "0.00").await;
}

/// The same refund (refund id and body) sent at once under 20 keys, for more than half the
/// capture: one refund is booked and every copy gets its answer, never
/// REFUND_EXCEEDS_CAPTURED (the refund id is looked up under the hold's lock).
async fn one_refund_under_many_keys_books_once(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    reserve_approved(&app, "rr", "100.00", "DKK").await;
    let r = post(&app, &capture_path("rr"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    same_post_at_once(&app, &refund_path("rr"), &refund("rf-1", "70.00"), 20).await;
    assert_eq!(app.movements("u1", "DKK", "HOLD_REFUND").await, 1);
    assert_posted_held(&app, "DKK", "470.00", "0.00").await;
}

/// A reservation of 1.00 DKK, sent again under its key (as a channel would) until it is
/// decided: its answer.
async fn reserve_one_until_decided(app: &TestApp, id: &str) -> serde_json::Value {
    let body = bytes(&reservation(id, "1.00", "DKK"));
    let key = uid("ck");
    loop {
        let r = app.channel("POST", RES, &body, Some(&key)).await;
        if r.status == 200 && r.json()["status_detail"] != "SYSTEM_ERROR" {
            return r.json();
        }
        assert!(r.status == 200 || r.status == 425, "{}", r.status);
    }
}

/// 200 reservations of 1.00 at once on exactly 73.00: exactly 73 are approved.
async fn reservations_never_hold_more_than_there_is(app: TestApp) {
    app.funded("u1", "DKK", "73.00").await;
    let app = &app;
    let answers = join_all((0..200).map(|i| async move {
        let r = reserve_one_until_decided(app, &format!("r{i}")).await;
        r["status_detail"].as_str().unwrap_or("").to_owned()
    }))
    .await;
    let approved = answers.iter().filter(|d| *d == "APPROVED").count();
    let declined = answers
        .iter()
        .filter(|d| *d == "INSUFFICIENT_FUNDS")
        .count();
    assert_eq!((approved, declined), (73, 127));
    let (posted, held, available) = balances(app, "DKK").await;
    assert_eq!(
        (posted.as_str(), held.as_str(), available.as_str()),
        ("73.00", "73.00", "0.00")
    );
}

/// Reservations and card authorizations racing on one account (the grouped batch decides
/// without locks and must see every hold): together they never spend more than there is.
async fn holds_and_authorizations_share_one_balance(app: TestApp) {
    app.funded("u1", "DKK", "50.00").await;
    let app = &app;
    let reservations = join_all((0..60).map(|i| async move {
        reserve_one_until_decided(app, &format!("m{i}")).await["status"] == "APPROVED"
    }));
    let purchases = join_all((0..60).map(|_| {
        let app = &app;
        async move {
            let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "1.00", "DKK");
            let (body, key) = (tx.body(), uid("k"));
            loop {
                let r = app.processor(AUTH_DEBIT, &body, &key).await;
                if r.status == 200 && r.json()["status_detail"] != "SYSTEM_ERROR" {
                    return r.json()["status"] == "APPROVED";
                }
            }
        }
    }));
    let (held, spent) = tokio::join!(reservations, purchases);
    let held = held.iter().filter(|a| **a).count();
    let spent = spent.iter().filter(|a| **a).count();
    assert_eq!(held + spent, 50, "{held} holds and {spent} purchases");
    let (posted, held_text, available) = balances(app, "DKK").await;
    assert_eq!(posted, format!("{}.00", 50 - spent));
    assert_eq!(held_text, format!("{held}.00"));
    assert_eq!(available, "0.00");
}

both_backends!(settings = crowd_settings; identical_captures_book_once, one_refund_under_many_keys_books_once, reservations_never_hold_more_than_there_is, holds_and_authorizations_share_one_balance);
