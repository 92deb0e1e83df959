//! Exactly once: duplicates, races and retries never move money twice.

use e2e::*;
use futures_util::future::join_all;

/// Concurrency races: every backend, each server given time (see `patient`).
mod races {
    use super::*;

    /// The races are about correctness, not speed: give the database time.
    fn patient(s: &mut authorizer::Settings) {
        s.processor.deadline_ms = 20_000;
        s.processor.answer_ms_max = 20_000;
        s.processor.in_flight_wait_ms_max = 15_000;
        s.database.pool_acquire_ms_max = 15_000;
        s.database.statement_ms_max = 15_000;
        s.database.lock_wait_ms_max = 15_000;
    }

    async fn same_request_fifty_times_concurrently(app: TestApp) {
        app.funded("u1", "ARS", "1000.00").await;
        let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
        let body = tx.body();
        let key = uid("k");
        let answers = join_all((0..50).map(|_| app.processor(AUTH, &body, &key))).await;
        let first_ok = answers
            .iter()
            .find(|r| r.status == 200)
            .expect("at least one answer");
        for r in &answers {
            assert!(r.status == 200 || r.status == 425, "status {}", r.status);
            if r.status == 200 {
                assert_eq!(r.body, first_ok.body, "every answer identical");
                app.assert_signed(r, AUTH);
            }
        }
        assert_eq!(
            app.available("u1", "ARS").await,
            "990.00",
            "booked exactly once"
        );
        // The same adjustment and the same notification, concurrently, also book once.
        let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "1.00", "ARS").original(&tx.id);
        let (rb, rk) = (refund.body(), uid("k"));
        let answers = join_all((0..20).map(|_| app.processor(ADJ_CREDIT, &rb, &rk))).await;
        assert!(answers.iter().all(|r| r.status == 200 || r.status == 425));
        assert_eq!(app.available("u1", "ARS").await, "991.00");
        let nk = uid("adv");
        let advice = tx.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &nk);
        let answers = join_all((0..20).map(|_| app.processor(NOTIFY, &advice, &nk))).await;
        assert!(answers.iter().all(|r| r.status == 200 || r.status == 425));
        assert_eq!(
            app.available("u1", "ARS").await,
            "1001.00",
            "reversed exactly once"
        );
    }

    async fn two_hundred_purchases_on_seventy_three(app: TestApp) {
        app.funded("u1", "ARS", "730.00").await;
        let bodies: Vec<(Vec<u8>, String)> = (0..200)
            .map(|_| {
                (
                    Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS").body(),
                    uid("k"),
                )
            })
            .collect();
        let answers = join_all(bodies.iter().map(|(b, k)| app.processor(AUTH_DEBIT, b, k))).await;
        let mut approved = 0;
        let mut declined = 0;
        for r in &answers {
            assert_eq!(r.status, 200);
            match r.json()["status_detail"].as_str() {
                Some("APPROVED") => approved += 1,
                Some("INSUFFICIENT_FUNDS") => declined += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert_eq!((approved, declined), (73, 127));
        assert_eq!(app.available("u1", "ARS").await, "0.00");
        let batches = app.metrics.counter("authorizer_commit_batches_total", &[]);
        let items = app
            .metrics
            .counter("authorizer_commit_batch_items_total", &[]);
        if app.grouped_commits {
            // Concurrent arrivals were committed together, several per transaction.
            assert!(
                items >= 200 && batches < items,
                "{batches} batches for {items} authorizations"
            );
        } else {
            assert_eq!(batches, items, "one authorization per batch");
            assert!(items >= 200, "{items} authorizations through the writer");
        }
    }

    both_backends!(
        settings = patient;
        same_request_fifty_times_concurrently,
        two_hundred_purchases_on_seventy_three
    );
}

async fn replay_is_identical_and_resigned(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let key = uid("k");
    let first = app.processor(AUTH, &tx.body(), &key).await;
    // A later second: the replay must carry a fresh timestamp and signature.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = app.processor(AUTH, &tx.body(), &key).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    app.assert_signed(&again, AUTH);
    assert_ne!(again.header("x-timestamp"), first.header("x-timestamp"));
    assert_eq!(app.available("u1", "ARS").await, "90.00");
    assert_eq!(app.metrics.counter("authorizer_replays_total", &[]), 1);
}

async fn same_key_other_body_is_409(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let key = uid("k");
    let a = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    assert_eq!(app.processor(AUTH, &a.body(), &key).await.status, 200);
    let b = Tx::new(&uid("ctx"), "PURCHASE", "u1", "20.00", "ARS");
    let r = app.processor(AUTH, &b.body(), &key).await;
    assert_eq!(r.status, 409);
    app.assert_signed(&r, AUTH);
    assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
    assert_eq!(app.available("u1", "ARS").await, "90.00");
    assert_eq!(
        app.metrics
            .counter("authorizer_idempotency_conflicts_total", &[]),
        1
    );
}

/// A key names one request to one route: the same key and body sent to another route is
/// another request, refused (409), never answered with the first one's replay.
async fn same_key_and_body_to_another_route_is_409(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let purchase = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let auth_key = uid("k");
    let first = app.processor(AUTH_DEBIT, &purchase.body(), &auth_key).await;
    assert_eq!(first.json()["status"], "APPROVED", "{}", first.text());
    let r = app
        .processor(AUTH_CREDIT, &purchase.body(), &auth_key)
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "4.00", "ARS").original(&purchase.id);
    let adj_key = uid("k");
    let r = app.processor(ADJ_CREDIT, &refund.body(), &adj_key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.processor(ADJ_DEBIT, &refund.body(), &adj_key).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
    // The first of each, once: 100.00 - 10.00 + 4.00; and the first is still replayed.
    assert_eq!(app.available("u1", "ARS").await, "94.00");
    let again = app.processor(AUTH_DEBIT, &purchase.body(), &auth_key).await;
    assert_eq!(again.body, first.body);
}

async fn same_transaction_under_a_new_key(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let first = app.send(AUTH, &tx).await;
    let second = app.send(AUTH, &tx).await;
    assert_eq!(second.body, first.body);
    let adj = Tx::new(&uid("ctx"), "REFUND", "u1", "5.00", "ARS");
    app.send(ADJ_CREDIT, &adj).await;
    app.send(ADJ_CREDIT, &adj).await;
    // An authorization and an adjustment may share an id: one booking per kind.
    let same_id = Tx::new(&tx.id, "REFUND", "u1", "1.00", "ARS");
    app.send(ADJ_CREDIT, &same_id).await;
    assert_eq!(app.available("u1", "ARS").await, "96.00");
}

// About what a repeat gets, not about speed: a first answer that a slow machine turned into
// the deadline's decline (nothing booked) would make its replay a first attempt.
both_backends!(
    settings = crowd_settings;
    replay_is_identical_and_resigned,
    same_key_other_body_is_409,
    same_key_and_body_to_another_route_is_409,
    same_transaction_under_a_new_key
);
