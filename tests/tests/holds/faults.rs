//! A database that cannot serve in time: a reservation answers REJECTED/SYSTEM_ERROR within
//! the deadline with nothing held; a capture answers 503 with nothing committed; the
//! channel's resends then succeed once.

use super::common::*;
use e2e::cutter::{CommitCutter, Cut};
use e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

async fn a_blocked_database(app: TestApp) {
    app.funded("u1", "DKK", "100.00").await;
    reserve_approved(&app, "f1", "10.00", "DKK").await;
    let body = bytes(&reservation("f2", "20.00", "DKK"));
    let capture = bytes(&json!({"amount": "10.00"}));
    let (rk, ck) = (uid("ck"), uid("ck"));

    let blocker = block_writes(&app, "u1").await;
    let started = Instant::now();
    let r = app.channel("POST", RES, &body, Some(&rk)).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    app.assert_channel_signed(&r, RES);
    assert_eq!(
        r.body,
        br#"{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"System error"}"#
    );
    assert!(
        took < Duration::from_millis(1500),
        "answered within the deadline: {took:?}"
    );
    let r = app
        .channel("POST", &capture_path("f1"), &capture, Some(&ck))
        .await;
    assert_eq!(error_code(&r, 503), "unavailable");
    blocker.release().await;

    // Nothing was stored: the resends are decided now, once.
    assert_posted_held(&app, "DKK", "100.00", "10.00").await;
    let r = app.channel("POST", RES, &body, Some(&rk)).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let r = app
        .channel("POST", &capture_path("f1"), &capture, Some(&ck))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["reservation"]["state"], "CAPTURED");
    assert_posted_held(&app, "DKK", "90.00", "20.00").await;
    assert_eq!(app.movements("u1", "DKK", "HOLD_CAPTURE").await, 1);
}

both_backends!(a_blocked_database);

/// A Postgres app with u1 funded 100.00 DKK, and a row lock on u1's account that holds its
/// writes back until released; `overlap_ms`: the writer's `commit_batch_overlap_ms` (0: the
/// default).
async fn held_back(overlap_ms: u64) -> (TestApp, DirectConn) {
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        // Room for a held-back reserve to commit once it is let go.
        s.processor.deadline_ms = 9_000;
        if overlap_ms > 0 {
            s.processor.commit_batch_overlap_ms = overlap_ms;
        }
        s.database.statement_ms_max = 6_000;
        s.database.lock_wait_ms_max = 5_000;
    })
    .await;
    app.funded("u1", "DKK", "100.00").await;
    let blocker = block_writes(&app, "u1").await;
    (app, blocker)
}

/// A cancel that finds no hold while its reserve is still being decided (a slow batch still
/// commits it) waits for the reserve and cancels what it holds, instead of answering 404:
/// MobilePay cancels after an approve that timed out and stops at a 404, and the hold would
/// have stood until it expired. The reserve is held back by a row lock, so Postgres only
/// (the embedded store's one connection orders the two).
#[actix_rt::test]
async fn postgres_a_cancel_waits_for_its_reserve_in_flight() {
    let (app, blocker) = held_back(0).await;
    let body = bytes(&reservation("race-1", "20.00", "DKK"));
    let (rk, ck) = (uid("rk"), uid("ck"));
    let reserve = app.channel("POST", RES, &body, Some(&rk));
    let cancel = async {
        // By then the reserve waits on the row lock.
        actix_rt::time::sleep(Duration::from_millis(700)).await;
        app.channel("POST", &cancel_path("race-1"), b"{}", Some(&ck))
            .await
    };
    let release = async move {
        actix_rt::time::sleep(Duration::from_millis(1_500)).await;
        blocker.release().await;
    };
    let (reserved, cancelled, ()) = tokio::join!(reserve, cancel, release);
    assert_eq!(
        reserved.json()["status"],
        "APPROVED",
        "{:?}",
        reserved.json()
    );
    assert_eq!(
        cancelled.status,
        200,
        "{}",
        String::from_utf8_lossy(&cancelled.body)
    );
    assert_eq!(cancelled.json()["reservation"]["state"], "CANCELLED");
    assert_posted_held(&app, "DKK", "100.00", "0.00").await;
    app.assert_audit_clean().await;
}

/// A cancel whose own batch ends after its reserve's (a deposit in it waits on the same
/// account) read nothing while the reserve was still uncommitted, but hears so only once
/// the reserve has ended: it looks again and cancels, rather than answer 404. The batches
/// are formed by a long overlap: the cancel and the deposit queue while the reserve's batch
/// is waited for, and form the next one. Postgres only, as above.
#[actix_rt::test]
async fn postgres_a_cancel_in_a_slower_batch_than_its_reserve_looks_again() {
    let (app, blocker) = held_back(400).await;
    let body = bytes(&reservation("race-2", "20.00", "DKK"));
    let (rk, ck, dk) = (uid("rk"), uid("ck"), uid("dk"));
    let reserve = app.channel("POST", RES, &body, Some(&rk));
    let cancel = async {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        app.channel("POST", &cancel_path("race-2"), b"{}", Some(&ck))
            .await
    };
    let deposit = async {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let amount = json!({"amount": "5.00"});
        app.admin(
            "POST",
            "/v1/accounts/u1/DKK/deposits",
            Some(amount),
            Some(&dk),
        )
        .await
    };
    let release = async move {
        actix_rt::time::sleep(Duration::from_millis(1_500)).await;
        blocker.release().await;
    };
    let (reserved, cancelled, deposited, ()) = tokio::join!(reserve, cancel, deposit, release);
    assert_eq!(reserved.json()["status"], "APPROVED", "{}", reserved.text());
    assert_eq!(deposited.status, 201, "{}", deposited.text());
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["reservation"]["state"], "CANCELLED");
    assert_posted_held(&app, "DKK", "105.00", "0.00").await;
    app.assert_audit_clean().await;
}

/// The connection lost while a reservation's commit is answered (the commit happened): not
/// REJECTED/SYSTEM_ERROR, which tells the channel that nothing is held, but 503, so that it
/// sends the same key again and hears what was committed. A network fault, so Postgres only.
#[actix_rt::test]
async fn postgres_a_reservation_whose_commit_is_uncertain_is_answered_503() {
    let cutter =
        CommitCutter::start(&fresh_pg_database().await, "INSERT INTO holds", Cut::Commit).await;
    let app = TestApp::spawn_on(Some(cutter.url.clone()), |_| {}).await;
    app.funded("u1", "DKK", "100.00").await;
    let body = bytes(&reservation("u1", "20.00", "DKK"));
    let key = uid("ck");
    cutter.arm();
    let r = app.channel("POST", RES, &body, Some(&key)).await;
    assert_eq!(cutter.cuts(), 1, "the reservation's commit was cut");
    assert_eq!(error_code(&r, 503), "unavailable");
    // It was committed (the server had the commit before the connection went, and applies
    // it a moment after the answer): the hold stands, and the same key again hears the
    // approval replayed (no second hold).
    let committed = Instant::now();
    while balances(&app, "DKK").await.1 != "20.00" {
        assert!(
            committed.elapsed() < Duration::from_secs(10),
            "the cut commit never landed"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let replays = || app.metrics.counter("authorizer_replays_total", &[]);
    let before = replays();
    let r = app.channel("POST", RES, &body, Some(&key)).await;
    assert_eq!(r.json()["status"], "APPROVED", "{}", r.text());
    assert_eq!(replays() - before, 1, "a replay of what was committed");
    assert_posted_held(&app, "DKK", "100.00", "20.00").await;
}
