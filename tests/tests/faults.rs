//! Infrastructure failure: a database that cannot serve in time. Authorizations answer
//! REJECTED/SYSTEM_ERROR inside the deadline with nothing booked; adjustments and
//! notifications answer 503 so the processor resends them, and the resends book once.

use authorizer::Settings;
use e2e::cutter::{CommitCutter, Cut};
use e2e::*;
use std::time::{Duration, Instant};

async fn blocked_database(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let purchase = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "1.00", "ARS");
    let (pk, rk, nk) = (uid("k"), uid("k"), uid("adv"));
    let advice = purchase.approved_advice(&nk);

    // Approved before the outage; the processor will resend it during it.
    let earlier = Tx::new(&uid("ctx"), "PURCHASE", "u1", "5.00", "ARS");
    let ek = uid("k");
    let first = app.processor(AUTH, &earlier.body(), &ek).await;
    assert_eq!(first.json()["status"], "APPROVED");

    let blocker = block_writes(&app, "u1").await;
    // A duplicate of a finished request gets its identical answer, database or not.
    let again = app.processor(AUTH, &earlier.body(), &ek).await;
    assert_eq!(
        again.body, first.body,
        "a resend of an approval is never answered as a decline"
    );

    let started = Instant::now();
    let r = app.processor(AUTH, &purchase.body(), &pk).await;
    let took = started.elapsed();
    app.assert_signed(&r, AUTH);
    assert_eq!(
        r.body,
        br#"{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"System error"}"#
    );
    // Deadline is 800 ms; the slack only absorbs a loaded test machine.
    assert!(
        took < Duration::from_millis(800 + 700),
        "answered after {took:?}"
    );
    let r = app.processor(ADJ_CREDIT, &refund.body(), &rk).await;
    assert_eq!(r.status, 503);
    app.assert_signed(&r, ADJ_CREDIT);
    assert_eq!(app.processor(NOTIFY, &advice, &nk).await.status, 503);
    blocker.release().await;

    assert_eq!(
        app.available("u1", "ARS").await,
        "95.00",
        "nothing booked during the outage"
    );
    assert!(app.metrics.counter("authorizer_store_failures_total", &[]) >= 3);
    // The processor resends the adjustment and the notification: each books once.
    assert_eq!(
        app.processor(ADJ_CREDIT, &refund.body(), &rk).await.status,
        200
    );
    assert_eq!(
        app.processor(ADJ_CREDIT, &refund.body(), &rk).await.status,
        200
    );
    assert_eq!(app.available("u1", "ARS").await, "96.00");
    // The declined authorization was never stored: the processor's approved verdict books it.
    assert_eq!(
        app.processor(NOTIFY, &advice, &nk).await.json()["effect"],
        "FORCED"
    );
    assert_eq!(
        app.processor(NOTIFY, &advice, &nk).await.json()["effect"],
        "FORCED",
        "replayed"
    );
    assert_eq!(app.available("u1", "ARS").await, "86.00");
}

async fn audit_finds_tampering(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    app.send(AUTH, &tx).await;
    app.assert_audit_clean().await;
    // Someone edits a balance by hand: the audit names it.
    DirectConn::open(&app)
        .await
        .execute("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE user_id = 'u1'")
        .await;
    let report = app.store.audit().await.unwrap();
    let invariants: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
    assert!(
        invariants.contains(&"account balance equals the sum of its postings"),
        "{invariants:?}"
    );
}

both_backends!(blocked_database);

/// The writer waits seconds on a lock held elsewhere (on the embedded store, another
/// process writing the file).
fn long_lock_waits(s: &mut Settings) {
    s.database.lock_wait_ms_max = 3_000;
    s.database.statement_ms_max = 3_500;
}

/// The admin API's views answer from what is committed while a write waits on a lock: on
/// the embedded store they do not queue for the writer's one connection (which the waiting
/// write holds for longer than `pool_acquire_ms_max`, and the listing answered 503). The
/// write, once let go, books once.
async fn a_listing_answers_while_a_write_waits(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let blocker = block_writes(&app, "u1").await;
    let key = uid("dep");
    let deposit = app.admin(
        "POST",
        "/v1/accounts/u1/ARS/deposits",
        Some(serde_json::json!({"amount": "10.00"})),
        Some(&key),
    );
    let views = async {
        // The deposit is in the writer, waiting for the lock.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let postings = app
            .admin("GET", "/v1/accounts/u1/ARS/postings", None, None)
            .await;
        let account = app.admin("GET", "/v1/accounts/u1/ARS", None, None).await;
        blocker.release().await;
        (postings, account)
    };
    let (first, (postings, account)) = tokio::join!(deposit, views);
    assert_eq!(postings.status, 200, "{}", postings.text());
    assert_eq!(
        postings.json()["postings"].as_array().map(Vec::len),
        Some(1),
        "the funding only: {}",
        postings.text()
    );
    assert_eq!(account.status, 200, "{}", account.text());
    assert_eq!(account.json()["available"], "100.00");
    // Booked when let go, or refused in time ("try again"): the retry books it once.
    assert!(
        [201, 503].contains(&first.status),
        "{} {}",
        first.status,
        first.text()
    );
    let again = app
        .admin(
            "POST",
            "/v1/accounts/u1/ARS/deposits",
            Some(serde_json::json!({"amount": "10.00"})),
            Some(&key),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(app.available("u1", "ARS").await, "110.00");
}

mod long_waits {
    use super::*;
    both_backends!(settings = long_lock_waits; a_listing_answers_while_a_write_waits);
}

/// Adjustments wait for the database longer than `processor.answer_ms_max` here: its lock
/// waits and statements may take seconds (the deadline moved up to allow them).
fn stalls_outlast_the_answer(s: &mut Settings) {
    s.processor.deadline_ms = 5_000;
    s.database.lock_wait_ms_max = 4_000;
    s.database.statement_ms_max = 4_500;
    s.processor.answer_ms_max = 300;
}

/// A stalled database: an adjustment whose commit has not finished within
/// `processor.answer_ms_max` is answered 503 "not stored yet" in time instead of holding the
/// connection, and its commit goes on: once the database moves, the movement is booked
/// without a resend, and the processor's resend under the same key replays it; a resend while
/// it still waits gets 425.
async fn a_stalled_adjustment_is_answered_in_time_and_booked_once(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let refund = Tx::new(&uid("ctx"), "REFUND", "u1", "4.00", "ARS");
    let key = uid("k");
    let blocker = block_writes(&app, "u1").await;
    let started = Instant::now();
    let r = app.processor(ADJ_CREDIT, &refund.body(), &key).await;
    let took = started.elapsed();
    app.assert_signed(&r, ADJ_CREDIT);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["error"]["message"],
        "Outcome not known yet; send again with the same key"
    );
    assert!(
        took < Duration::from_millis(3_000),
        "answered after {took:?}: it waited for the lock"
    );
    // The first copy still waits in the writer and keeps its in-flight claim: a resend now
    // waits for it (`in_flight_wait_ms_max`) and gets 425, rather than queueing a second copy.
    let early = app.processor(ADJ_CREDIT, &refund.body(), &key).await;
    app.assert_signed(&early, ADJ_CREDIT);
    assert_eq!(
        early.status,
        425,
        "{}",
        String::from_utf8_lossy(&early.body)
    );
    blocker.release().await;
    // The first request's transaction was never abandoned: it commits once the lock is free.
    // Until it has, a read of the account may be answered 503 "try again" (on the embedded
    // store the stalled writer holds the one connection past the read's wait): the loop
    // waits through those, and only those.
    let booked = Instant::now();
    loop {
        let r = app.admin("GET", "/v1/accounts/u1/ARS", None, None).await;
        assert!(matches!(r.status, 200 | 503), "{}: {}", r.status, r.text());
        if r.status == 200 && r.json()["available"] == "104.00" {
            break;
        }
        assert!(
            booked.elapsed() < Duration::from_secs(10),
            "the adjustment was not booked after the database moved: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = app.processor(ADJ_CREDIT, &refund.body(), &key).await;
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    let third = app.processor(ADJ_CREDIT, &refund.body(), &key).await;
    assert_eq!(third.body, again.body, "a replay");
    assert_eq!(app.available("u1", "ARS").await, "104.00", "booked once");
}

mod stalled {
    use super::*;
    both_backends!(settings = stalls_outlast_the_answer; a_stalled_adjustment_is_answered_in_time_and_booked_once);
}

/// The connection lost while an approval's commit is answered: the money is booked, the
/// answer is SYSTEM_ERROR (never APPROVED for money not known to be booked), and the
/// processor's advice for the declined authorization gives it back, once. A network fault,
/// so Postgres only.
#[actix_rt::test]
async fn postgres_an_approval_whose_commit_is_uncertain_is_given_back_by_the_advice() {
    // The batch's write, outside a transaction, is its own commit.
    let url = fresh_pg_database().await;
    let cutter = CommitCutter::start(&url, "WITH lk AS", Cut::Execute).await;
    let app = TestApp::spawn_on(Some(cutter.url.clone()), |_| {}).await;
    app.funded("u1", "ARS", "100.00").await;
    let purchase = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    cutter.arm();
    let r = app.send(AUTH, &purchase).await;
    assert_eq!(cutter.cuts(), 1, "the approval's commit was cut");
    assert_eq!(
        r.body,
        br#"{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"System error"}"#
    );
    assert_eq!(
        app.metrics
            .counter("authorizer_store_failures_total", &[("kind", "uncertain")]),
        1
    );
    // It is booked (the server had the commit before the connection went, and applies it a
    // moment after the answer); the processor, which saw a decline, says so, and the money
    // comes back.
    let booked = Instant::now();
    while app.available("u1", "ARS").await != "90.00" {
        assert!(
            booked.elapsed() < Duration::from_secs(10),
            "the cut commit never landed"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let key = uid("adv");
    let advice = purchase.advice("authorization-advice", "REJECTED", "SYSTEM_ERROR", &key);
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.json()["effect"], "REVERSED", "{}", r.text());
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    app.assert_audit_clean().await;
}

// Not through both_backends!: this scenario breaks the ledger on purpose.
#[actix_rt::test]
async fn postgres_audit_finds_tampering() {
    audit_finds_tampering(TestApp::spawn(Backend::Postgres).await).await;
}

#[actix_rt::test]
async fn sqlite_audit_finds_tampering() {
    audit_finds_tampering(TestApp::spawn(Backend::Sqlite).await).await;
}

/// Grouped commits: a batch stuck on one account's row lock (held elsewhere) does not hold
/// up authorizations of other accounts; after `commit_batch_overlap_ms` the next batch
/// starts beside it and they are answered while the stuck one still waits.
#[actix_rt::test]
async fn postgres_a_locked_account_does_not_hold_up_the_others() {
    let app = TestApp::spawn(Backend::Postgres).await;
    for u in ["u1", "u2", "u3", "u4"] {
        app.funded(u, "ARS", "100.00").await;
    }
    let blocker = block_writes(&app, "u1").await;
    let stuck = Tx::new(&uid("ctx"), "PURCHASE", "u1", "10.00", "ARS");
    let stuck_key = uid("k");
    let others: Vec<(Tx, String)> = ["u2", "u3", "u4"]
        .iter()
        .map(|u| (Tx::new(&uid("ctx"), "PURCHASE", u, "1.00", "ARS"), uid("k")))
        .collect();
    let stuck_answer = async {
        let r = app.processor(AUTH, &stuck.body(), &stuck_key).await;
        (r, Instant::now())
    };
    let others_answers = async {
        // Sent once the stuck authorization's batch is waiting for the lock.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut answers = Vec::new();
        for (tx, key) in &others {
            answers.push(app.processor(AUTH, &tx.body(), key).await);
        }
        (answers, Instant::now())
    };
    let ((stuck_r, stuck_at), (answers, others_at)) = tokio::join!(stuck_answer, others_answers);
    blocker.release().await;
    for r in &answers {
        assert_eq!(r.json()["status"], "APPROVED", "{:?}", r.json());
    }
    assert_eq!(stuck_r.json()["status_detail"], "SYSTEM_ERROR");
    assert!(
        others_at < stuck_at,
        "the other accounts were answered only after the locked one"
    );
    assert!(
        app.metrics
            .counter("authorizer_commit_batch_overlaps_total", &[])
            >= 1
    );
    for u in ["u2", "u3", "u4"] {
        assert_eq!(app.available(u, "ARS").await, "99.00");
    }
    assert_eq!(app.available("u1", "ARS").await, "100.00");
    app.assert_audit_clean().await;
}

/// The embedded store's file held by another process when an instance starts (a backup, an
/// operator's `sqlite3` shell, a disk busy flushing): opening it takes longer than
/// `database.pool_acquire_ms_max`, and the instance waits for it, as it waits for its
/// migrations, rather than failing its start at once.
#[actix_rt::test]
async fn sqlite_an_instance_waits_for_its_store_file_held_by_another() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("authorizer.db").display()
    );
    let mut holder = sqlx::SqliteConnection::connect(&url).await.expect("open");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .expect("lock the file");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        sqlx::query("COMMIT")
            .execute(&mut holder)
            .await
            .expect("unlock");
        let _ = holder.close().await;
    });
    let started = Instant::now();
    let data_dir = dir.path().to_path_buf();
    let app = TestApp::spawn_on(None, move |s| {
        s.database.data_dir = data_dir;
        s.database.pool_acquire_ms_max = 300;
        s.database.lock_wait_ms_max = 400;
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
    release.await.expect("released");
    app.funded("u1", "ARS", "10.00").await;
    assert_eq!(app.available("u1", "ARS").await, "10.00");
}
