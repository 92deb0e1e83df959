//! Expiry by the sweeper (a short interval) and lazily by a read, and the daily counter
//! given back on release.

use super::common::*;
use authorizer::Settings;
use e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn fast_sweep(s: &mut Settings) {
    s.holds.sweep_interval_ms = 100;
}

/// u1 funded with 100.00 DKK, `due` holding 30.00 for a second and `kept` 20.00 for longer.
async fn two_holds(app: &TestApp, due: &str, kept: &str) {
    app.funded("u1", "DKK", "100.00").await;
    let mut body = reservation(due, "30.00", "DKK");
    body["expires_in_secs"] = json!(1);
    reserve(app, &body, "APPROVED", "APPROVED").await;
    reserve_approved(app, kept, "20.00", "DKK").await;
    assert_eq!(balances(app, "DKK").await.1, "50.00");
}

/// Nobody touches the hold: the sweeper expires it, and held goes back to zero.
async fn the_sweeper_expires_due_holds(app: TestApp) {
    two_holds(&app, "s1", "s2").await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let l = app
            .admin_get("/v1/accounts/u1/DKK/holds?state=EXPIRED")
            .await;
        if l["holds"].as_array().is_some_and(|h| h.len() == 1) {
            assert_eq!(l["holds"][0]["reservation_id"], "s1");
            break;
        }
        assert!(Instant::now() < until, "the sweeper never expired s1");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let (posted, held, available) = balances(&app, "DKK").await;
    assert_eq!(
        (posted.as_str(), held.as_str(), available.as_str()),
        ("100.00", "20.00", "80.00")
    );
    let g = app.channel("GET", &get_path("s1"), b"", None).await.json();
    assert_eq!(g["state"], "EXPIRED");
    let m = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    assert!(
        m.contains("authorizer_holds_total{event=\"expired\"} 1"),
        "{m}"
    );
    assert!(m.contains("authorizer_holds_reserved 1"), "{m}");
    assert!(
        m.contains("authorizer_hold_sweep_duration_seconds_count"),
        "{m}"
    );
}

/// The sweeper does not run while the test does (its first pass, at start, finds nothing).
fn no_sweep(s: &mut Settings) {
    s.holds.sweep_interval_ms = 3_600_000;
}

/// A GET of an overdue hold that the sweeper has not reached: the one writer expires it (one
/// request through a batch), the answer says EXPIRED and the held amount is released at once.
async fn a_read_expires_an_overdue_hold(app: TestApp) {
    two_holds(&app, "g1", "g2").await;
    actix_rt::time::sleep(Duration::from_millis(1_500)).await;
    // Overdue, and still held: nothing has expired it yet.
    assert_eq!(balances(&app, "DKK").await.1, "50.00");
    let through_writer = || {
        app.metrics
            .counter("authorizer_commit_batch_items_total", &[])
    };
    let expired = || {
        app.metrics
            .counter("authorizer_holds_total", &[("event", "expired")])
    };
    let before = through_writer();
    let g = app.channel("GET", &get_path("g1"), b"", None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["state"], "EXPIRED", "{}", g.json());
    assert_eq!(through_writer() - before, 1);
    assert_eq!(expired(), 1);
    let (posted, held, available) = balances(&app, "DKK").await;
    assert_eq!(
        (posted.as_str(), held.as_str(), available.as_str()),
        ("100.00", "20.00", "80.00")
    );
    // Read again, and a hold not due: nothing to expire, nothing through the writer.
    let before = through_writer();
    let again = app.channel("GET", &get_path("g1"), b"", None).await;
    assert_eq!(again.body, g.body);
    let other = app.channel("GET", &get_path("g2"), b"", None).await.json();
    assert_eq!(other["state"], "RESERVED");
    assert_eq!((through_writer() - before, expired()), (0, 1));
    let l = app
        .admin_get("/v1/accounts/u1/DKK/holds?state=EXPIRED")
        .await;
    assert_eq!(l["holds"].as_array().map(Vec::len), Some(1), "{l}");
}

/// u1 funded with 1000.00 DKK and a daily limit of 100.00.
async fn daily_limit_of_100(app: &TestApp) {
    app.funded("u1", "DKK", "1000.00").await;
    let r = app
        .admin_put("/v1/accounts/u1/DKK", json!({"daily_limit": "100.00"}))
        .await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
}

/// Releases and refunds under the daily limit of 100.00, each giving back to the counter
/// that took the reservation: a cancel gives back 80; a partial capture of 50 the 30 not
/// captured; a refund of the capture what it credits (20.00 of 50.00), and a second refund
/// only what is left captured.
async fn releases_under_a_daily_limit(app: &TestApp) {
    reserve_approved(app, "d1", "80.00", "DKK").await;
    reserve_rejected(app, "d2", "30.00", "INVALID_AMOUNT").await;
    assert_eq!(post(app, &cancel_path("d1"), &json!({})).await.status, 200);
    reserve_approved(app, "d3", "80.00", "DKK").await;
    let r = post(app, &capture_path("d3"), &json!({"amount": "50.00"})).await;
    assert_eq!(r.status, 200);
    reserve_approved(app, "d4", "50.00", "DKK").await;
    reserve_rejected(app, "d5", "0.01", "INVALID_AMOUNT").await;
    for (refund_id, amount, room) in [("r1", "20.00", "d6"), ("r2", "30.00", "d8")] {
        let r = post(app, &refund_path("d3"), &refund(refund_id, amount)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        reserve_approved(app, room, amount, "DKK").await;
        reserve_rejected(app, &format!("{room}-more"), "0.01", "INVALID_AMOUNT").await;
    }
}

/// A release on the day of the reservation, or a refund of its capture, gives the amount back
/// to the daily counter.
async fn releases_give_back_the_daily_limit(app: TestApp) {
    daily_limit_of_100(&app).await;
    releases_under_a_daily_limit(&app).await;
}

/// A reservation that reaches its account after a request of the next UTC day moved the
/// daily counter on (a reservation stamped just before midnight) counts in that day, and its
/// release or refund gives it back there.
async fn a_reservation_counted_in_the_next_day_is_given_back_there(app: TestApp) {
    daily_limit_of_100(&app).await;
    // The counter is the next day's already, as a request of that day leaves it.
    let tomorrow = store::now_ms().div_euclid(86_400_000) + 1;
    let mut db = DirectConn::open(&app).await;
    db.execute(&format!(
        "UPDATE accounts SET daily_spent_day = {tomorrow}, daily_spent_minor = 0 \
         WHERE user_id = 'u1' AND currency = 'DKK'"
    ))
    .await;
    releases_under_a_daily_limit(&app).await;
}

mod sweeping {
    use super::*;
    both_backends!(settings = fast_sweep; the_sweeper_expires_due_holds);
}

mod reading {
    use super::*;
    both_backends!(settings = no_sweep; a_read_expires_an_overdue_hold);
}

both_backends!(
    releases_give_back_the_daily_limit,
    a_reservation_counted_in_the_next_day_is_given_back_there
);
