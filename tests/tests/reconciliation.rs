//! The nightly reconciliation against a ledger built through the processor's endpoints.

use e2e::*;
use reconciler::run::{Outcome, RunOptions, run};
use reconciler::sftp::BusinessDate;
use std::collections::BTreeMap;

const TX_HEADER: &str = "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date";

fn tx_row(
    id: &str,
    kind: &str,
    status: &str,
    dir: &str,
    amount: &str,
    cur: &str,
    original: &str,
) -> String {
    format!("{id},{kind},PURCHASE,{status},{dir},{amount},{cur},{original},crd-u1,u1,2024-01-01")
}

/// Writes the presentments file of day `d` (YYYYMMDD): a debit of each (id, ARS amount),
/// or a credit where the amount starts with `+` (a refund's own presentment).
fn write_presentments(dir: &std::path::Path, d: &str, rows: &[(String, &str)]) {
    let lines = std::iter::once(
        "transaction_id,direction,local_amount,local_currency,card_id,date".to_owned(),
    )
    .chain(rows.iter().map(|(id, amount)| {
        let (dir, amount) = match amount.strip_prefix('+') {
            Some(credit) => ("CREDIT", credit),
            None => ("DEBIT", *amount),
        };
        format!("{id},{dir},{amount},ARS,crd-u1,2024-01-01")
    }));
    let text = lines.collect::<Vec<_>>().join("\n");
    std::fs::write(dir.join(format!("presentments_{d}.csv")), text).unwrap();
}

async fn approve(app: &TestApp, id: &str, amount: &str) {
    let r = app
        .processor(
            AUTH_DEBIT,
            &Tx::new(id, "PURCHASE", "u1", amount, "ARS").body(),
            &uid("k"),
        )
        .await;
    assert_eq!(r.json()["status"], "APPROVED", "{id}");
}

async fn every_break_class(app: TestApp) {
    app.funded("u1", "ARS", "10000.00").await;
    let p = uid("r");
    let id = |s: &str| format!("{p}-{s}");
    for (name, amount) in [
        ("a", "100.00"),
        ("b", "200.00"),
        ("c", "50.00"),
        ("d", "30.00"),
        ("f", "10.00"),
        ("h", "60.00"),
        ("i", "70.00"),
        ("j", "5.00"),
    ] {
        approve(&app, &id(name), amount).await;
    }
    let refund = Tx::new(&id("g"), "REFUND", "u1", "20.00", "ARS").original(&id("h"));
    assert_eq!(app.send(ADJ_CREDIT, &refund).await.status, 200);
    // An adjustment finer than the cent: booked at 7.00 (half to even, flagged), and its row
    // in the processor's file, which says 7.005, reads as the ledger booked it.
    let finer = Tx::new(&id("l"), "PAYMENT", "u1", "7.005", "ARS");
    assert_eq!(app.send(ADJ_CREDIT, &finer).await.status, 200);
    // A card check for nothing, approved with no movement, then rejected by the processor:
    // no money stands for it, as the file's REJECTED row says.
    let check = Tx::new(&id("m"), "PURCHASE", "u1", "0.00", "ARS");
    assert_eq!(
        app.send(AUTH_DEBIT, &check).await.json()["status"],
        "APPROVED"
    );
    let key = uid("adv");
    let advice = check.advice("authorization-advice", "REJECTED", "CLIENT_TIMEOUT", &key);
    let r = app.processor(NOTIFY, &advice, &key).await;
    assert_eq!(r.json()["effect"], "NOOP", "{}", r.text());
    let declined = Tx::new(&id("k"), "PURCHASE", "u1", "99999.00", "ARS");
    assert_eq!(
        app.send(AUTH_DEBIT, &declined).await.json()["status"],
        "REJECTED"
    );

    let date = recon::today();
    let files = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let d = date.format("%Y%m%d");
    // id, kind, status, direction, amount, currency, original: ids under this test's prefix.
    let rows = "\
a,AUTHORIZATION,APPROVED,DEBIT,100.00,ARS,
b,AUTHORIZATION,APPROVED,DEBIT,210.00,ARS,
c,AUTHORIZATION,REJECTED,DEBIT,50.00,ARS,
e,AUTHORIZATION,APPROVED,DEBIT,40.00,ARS,
f,AUTHORIZATION,APPROVED,DEBIT,10.00,ARS,
f,AUTHORIZATION,APPROVED,DEBIT,10.00,ARS,
g,ADJUSTMENT,APPROVED,CREDIT,20.00,ARS,h
h,AUTHORIZATION,APPROVED,DEBIT,60.00,ARS,
i,AUTHORIZATION,APPROVED,DEBIT,70.00,ARS,
j,AUTHORIZATION,APPROVED,DEBIT,5.00,USD,
k,AUTHORIZATION,REJECTED,DEBIT,99999.00,ARS,
x,AUTHORIZATION,APPROVED,DEBIT,12.3.4,ARS,
y,REFUND,APPROVED,CREDIT,1.00,ARS,";
    // The adjustment finer than the cent, and the card check the processor rejected.
    let finer = tx_row(
        &id("l"),
        "ADJUSTMENT",
        "APPROVED",
        "CREDIT",
        "7.005",
        "ARS",
        "",
    );
    let check = tx_row(
        &id("m"),
        "AUTHORIZATION",
        "REJECTED",
        "DEBIT",
        "0.00",
        "ARS",
        "",
    );
    let transactions = std::iter::once(TX_HEADER.to_owned())
        .chain(rows.lines().map(|row| {
            let f: Vec<&str> = row.split(',').collect();
            let original = if f[6].is_empty() {
                String::new()
            } else {
                id(f[6])
            };
            tx_row(&id(f[0]), f[1], f[2], f[3], f[4], f[5], &original)
        }))
        .chain([finer, check])
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        files.path().join(format!("transactions_{d}.csv")),
        &transactions,
    )
    .unwrap();
    write_presentments(
        files.path(),
        &d,
        &[
            (id("a"), "100.00"),
            // In full, its refund `g` presented on its own (a merchant's return clears as
            // a credit of its own).
            (id("h"), "60.00"),
            (id("g"), "+20.00"),
            (id("i"), "75.00"),
            (id("z"), "15.00"),
        ],
    );
    // Another day's file in the same folder is left alone.
    std::fs::write(files.path().join("transactions_19990101.csv"), TX_HEADER).unwrap();

    let s = recon::settings(&app, reports.path());
    let opts = recon::from_dir(&date, files.path());
    let outcome = run(&s, &app.store, &opts)
        .await
        .expect("reconciliation runs");
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                breaks: 8,
                above_threshold: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 1);

    let ds = date.to_string();
    let breaks = app.store.run_breaks(&ds, None, 100, 0).await.unwrap();
    let by_class: BTreeMap<&str, Vec<&str>> = breaks.iter().fold(BTreeMap::new(), |mut m, b| {
        m.entry(b.class.as_str())
            .or_default()
            .push(b.transaction_id.as_str());
        m
    });
    let ids = |names: &[&str]| names.iter().map(|n| id(n)).collect::<Vec<_>>();
    let got = |class: &str| {
        by_class
            .get(class)
            .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(got("amount_mismatch"), ids(&["b"]));
    assert_eq!(got("status_mismatch"), ids(&["c"]));
    assert_eq!(got("missing_in_file"), ids(&["d"]));
    assert_eq!(got("missing_in_ledger"), ids(&["e"]));
    assert_eq!(got("duplicate_in_file"), ids(&["f"]));
    assert_eq!(got("currency_mismatch"), ids(&["j"]));
    assert_eq!(got("presentment_amount_differs"), ids(&["i"]));
    assert_eq!(got("presentment_without_authorization"), ids(&["z"]));
    let b = breaks
        .iter()
        .find(|b| b.class == "amount_mismatch")
        .unwrap();
    assert_eq!(
        (
            b.ledger_amount_minor,
            b.file_amount_minor,
            b.difference_minor
        ),
        (Some(-20_000), Some(-21_000), Some(-1_000))
    );
    assert_eq!((b.file.as_deref(), b.line), (Some("transactions"), Some(3)));
    let run_rec = app.store.run(&ds).await.unwrap().unwrap();
    assert_eq!(run_rec.malformed_rows, 2, "{}", run_rec.summary);
    assert_eq!(run_rec.presentments_matched, 3, "{}", run_rec.summary);
    assert!(
        run_rec.summary.contains("\"line\":13") && run_rec.summary.contains("12.3.4"),
        "{}",
        run_rec.summary
    );

    // Files for people.
    let dir = reports.path().join(&ds);
    let csv = std::fs::read_to_string(dir.join("breaks.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8);
    assert!(
        csv.contains(&format!(
            "amount_mismatch,{},AUTHORIZATION,ARS,-200.00,-210.00,-10.00,transactions,3",
            id("b")
        )),
        "{csv}"
    );
    let text = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(
        text.contains("BREAKS FOUND") && text.contains("Largest breaks"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["breaks_by_class"]["duplicate_in_file"], 1);

    // The admin API shows the run and its breaks.
    let runs = app
        .admin("GET", "/v1/reconciliation/runs", None, None)
        .await;
    assert_eq!(runs.status, 200, "{}", String::from_utf8_lossy(&runs.body));
    let runs = runs.json();
    assert_eq!(runs["runs"][0]["business_date"], ds.as_str());
    assert_eq!(runs["runs"][0]["breaks"], 8);
    // The dashboard's gauge shows the latest run's breaks.
    let m = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert!(m.contains("\nauthorizer_reconciliation_breaks 8\n"), "{m}");
    let stored = app.store.run(&ds).await.unwrap().unwrap();
    let finished = format!(
        "\nauthorizer_reconciliation_finished_timestamp_seconds {}\n",
        stored.finished_at_ms / 1000
    );
    assert!(m.contains(&finished), "{finished} in {m}");
    let page = app
        .admin_get(&format!(
            "/v1/reconciliation/runs/{ds}/breaks?class=amount_mismatch"
        ))
        .await;
    assert_eq!(page["breaks"][0]["difference"], "-10.00");
    assert_eq!(page["breaks"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.admin(
            "GET",
            "/v1/reconciliation/runs/1999-01-01/breaks",
            None,
            None
        )
        .await
        .status,
        404
    );
    // Not a calendar date (nor anything a store could read: U+0000): 400, never a 503.
    for bad in ["abc", "2024-02-30", "%00", "2024-1-01", "20240101"] {
        let r = app
            .admin(
                "GET",
                &format!("/v1/reconciliation/runs/{bad}/breaks"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_date", "{bad}");
    }

    // The same files again: nothing changes.
    let again = run(&s, &app.store, &opts).await.unwrap();
    assert_eq!(again, Outcome::Unchanged);
    // A corrected file is a new version: the date's run is replaced.
    let fixed = transactions.replace(
        &format!("{},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,210.00", id("b")),
        &format!("{},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,200.00", id("b")),
    );
    std::fs::write(files.path().join(format!("transactions_{d}.csv")), fixed).unwrap();
    let third = run(&s, &app.store, &opts).await.unwrap();
    assert!(
        matches!(third, Outcome::Done { breaks: 7, .. }),
        "{third:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&app.store.run(&ds).await.unwrap().unwrap().summary).unwrap();
    let tx_file = items(&summary["files"])
        .find(|f| f["role"] == "transactions")
        .unwrap();
    assert_eq!(tx_file["import"]["status"], "new_version");
    assert_eq!(tx_file["import"]["version"], 2);
    assert_eq!(
        app.store
            .run_breaks(&ds, Some("amount_mismatch"), 10, 0)
            .await
            .unwrap()
            .len(),
        0
    );
}

async fn a_clean_day_and_the_single_instance_lock(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let id = uid("clean");
    approve(&app, &id, "10.00").await;
    let date = recon::today();
    let files = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let rows = [
        TX_HEADER.to_owned(),
        tx_row(
            &id,
            "AUTHORIZATION",
            "APPROVED",
            "DEBIT",
            "10.00",
            "ARS",
            "",
        ),
    ]
    .join("\n");
    recon::write_transactions(files.path(), &date, &rows);
    // A day without clearing yet: its presentments file holds the header alone.
    write_presentments_text(
        files.path(),
        &date,
        "transaction_id,direction,local_amount,local_currency,card_id,date\n",
    );
    let s = recon::settings(&app, reports.path());
    let opts = recon::from_dir(&date, files.path());
    // While another instance holds the lock, a run refuses to start.
    let held = app
        .store
        .try_lock_reconciler()
        .await
        .unwrap()
        .expect("lock free");
    let err = run(&s, &app.store, &opts).await.unwrap_err().to_string();
    assert!(err.contains("another reconciliation is running"), "{err}");
    held.release().await;
    let outcome = run(&s, &app.store, &opts).await.unwrap();
    recon::assert_clean(&outcome);
    assert_eq!(outcome.exit_code(), 0);
    let ds = date.to_string();
    assert_eq!(app.store.run(&ds).await.unwrap().unwrap().status, "clean");
    let incomplete = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("authorizer_reconciliation_incomplete "))
            .map(str::to_owned)
    };
    let m = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert_eq!(incomplete(&m).as_deref(), Some("0"), "{m}");
    // A row that cannot be read was not checked: the day is not clean, and it counts
    // against the threshold like a break.
    let unreadable = tx_row(
        &uid("x"),
        "ADJUSTMENT",
        "APPROVED",
        "CREDIT",
        "1O.00",
        "ARS",
        "",
    );
    recon::write_transactions(files.path(), &date, &format!("{rows}\n{unreadable}"));
    let outcome = run(&s, &app.store, &opts).await.unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                breaks: 0,
                above_threshold: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 1);
    let rec = app.store.run(&ds).await.unwrap().unwrap();
    assert_eq!((rec.status.as_str(), rec.malformed_rows), ("incomplete", 1));
    let m = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert_eq!(incomplete(&m).as_deref(), Some("1"), "{m}");
    let text = std::fs::read_to_string(reports.path().join(&ds).join("summary.txt")).unwrap();
    assert!(
        text.starts_with(&format!("Reconciliation of {ds} - INCOMPLETE")),
        "{text}"
    );
    // No file for a date: could not run.
    let missing = RunOptions {
        date: BusinessDate::parse("1999-01-02").unwrap(),
        force: false,
        source: opts.source.clone(),
    };
    assert!(
        run(&s, &app.store, &missing)
            .await
            .unwrap_err()
            .to_string()
            .contains("no transactions file")
    );
}

/// Moves the processor transactions whose ids start with `prefix` to `minutes` before
/// today's (UTC) midnight.
async fn booked_yesterday(app: &TestApp, prefix: &str, minutes: i64) {
    let mut db = DirectConn::open(app).await;
    db.execute(&format!(
        "UPDATE processor_transactions \
         SET created_at_ms = (created_at_ms / 86400000) * 86400000 - {minutes} * 60000 \
         WHERE transaction_id LIKE '{prefix}-%'"
    ))
    .await;
}

/// u1 funded; purchases `{prefix}-{name}` of each ARS amount approved and a refund
/// `{prefix}-r` of 10.00 naming `{prefix}-{refunded}`, all moved to `minutes` before today's
/// midnight.
async fn approved_yesterday(
    app: &TestApp,
    prefix: &str,
    approved: &[(&str, &str)],
    refunded: &str,
    minutes: i64,
) {
    app.funded("u1", "ARS", "1000.00").await;
    let id = |s: &str| format!("{prefix}-{s}");
    for (name, amount) in approved {
        approve(app, &id(name), amount).await;
    }
    let refund = Tx::new(&id("r"), "REFUND", "u1", "10.00", "ARS").original(&id(refunded));
    assert_eq!(app.send(ADJ_CREDIT, &refund).await.status, 200);
    booked_yesterday(app, prefix, minutes).await;
}

/// One break as a test expects it: class, transaction id, ledger and file amounts.
type Expected = (&'static str, String, Option<i64>, Option<i64>);

/// Reconciles `date` from the files in `files`, asserts its breaks (in the order stored)
/// and returns the run.
async fn run_of(
    app: &TestApp,
    (date, grace_minutes): (&BusinessDate, i64),
    files: &std::path::Path,
    expected: &[Expected],
) -> store::RunRecord {
    let reports = tempfile::tempdir().unwrap();
    let mut s = recon::settings(app, reports.path());
    s.matching.grace_minutes = grace_minutes;
    let outcome = run(&s, &app.store, &recon::from_dir(date, files))
        .await
        .expect("reconciliation runs");
    let n = expected.len() as u64;
    assert!(
        matches!(outcome, Outcome::Done { breaks, .. } if breaks == n),
        "{outcome:?}"
    );
    let ds = date.to_string();
    let breaks = app.store.run_breaks(&ds, None, 100, 0).await.unwrap();
    let got: Vec<Expected> = breaks
        .iter()
        .zip(expected)
        .map(|(b, e)| {
            let amounts = (b.ledger_amount_minor, b.file_amount_minor);
            (e.0, b.transaction_id.clone(), amounts.0, amounts.1)
        })
        .collect();
    let classes: Vec<&str> = breaks.iter().map(|b| b.class.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|e| e.0).collect();
    assert_eq!(classes, want);
    assert_eq!(got, expected);
    app.store.run(&ds).await.unwrap().unwrap()
}

/// Clearing comes over days: the day's presentments name authorizations booked the day
/// before, which that day's transactions file and ledger window do not hold. They are
/// matched against the ledger whenever booked (with the adjustments that name them), not
/// reported as presentments without an authorization; a refund's presentment of its own
/// (a credit, under the refund's id) against the refund, its purchase presented in full.
/// One presented on an earlier date already is a second clearing: `presented_again`,
/// whatever its amount; a refund presented on its own whose purchase was presented net of
/// it on an earlier date is the merchant's return cleared twice.
async fn presentments_of_earlier_days(app: TestApp) {
    let approved = [
        ("a", "100.00"),
        ("b", "50.00"),
        ("d", "30.00"),
        ("f", "9.00"),
    ];
    let p = uid("e");
    let id = |s: &str| format!("{p}-{s}");
    // `a` is refunded 10.00 too (`s`).
    let refund = Tx::new(&id("s"), "REFUND", "u1", "10.00", "ARS").original(&id("a"));
    assert_eq!(app.send(ADJ_CREDIT, &refund).await.status, 200);
    approved_yesterday(&app, &p, &approved, "b", 12 * 60).await;
    // Yesterday: its file as booked, `f` presented already and `a` net of its refund.
    let before = recon::days_ago(1);
    let before_files = tempfile::tempdir().unwrap();
    let files = before_files.path();
    let mut rows: Vec<String> = approved.iter().map(|(n, a)| debit_row(&id(n), a)).collect();
    rows.push(refund_row(&id("r"), &id("b")));
    rows.push(refund_row(&id("s"), &id("a")));
    write_rows(files, &before, &rows);
    let presented = [(id("f"), "9.00"), (id("a"), "90.00")];
    write_presentments(files, &before.format("%Y%m%d"), &presented);
    let run_rec = run_of(&app, (&before, 0), files, &[]).await;
    assert_eq!(run_rec.presentments_matched, 2, "{}", run_rec.summary);

    let date = recon::today();
    let d = date.format("%Y%m%d");
    let files = tempfile::tempdir().unwrap();
    recon::write_transactions(files.path(), &date, TX_HEADER);
    // As authorized, its refund `r` presented on its own; more than authorized; unknown;
    // as authorized, again; `a`'s refund on its own, netted off yesterday already.
    let rows = [
        ("b", "50.00"),
        ("r", "+10.00"),
        ("d", "35.00"),
        ("z", "15.00"),
        ("f", "9.00"),
        ("s", "+10.00"),
        ("r", "+10.00"),
    ];
    let rows: Vec<(String, &str)> = rows.iter().map(|(n, a)| (id(n), *a)).collect();
    write_presentments(files.path(), &d, &rows);
    let expected = [
        ("duplicate_in_file", id("r"), None, Some(1_000)),
        (
            "presentment_without_authorization",
            id("z"),
            None,
            Some(-1_500),
        ),
        (
            "presentment_amount_differs",
            id("d"),
            Some(-3_000),
            Some(-3_500),
        ),
        // Nothing was due for it: netted off yesterday.
        ("presentment_amount_differs", id("s"), Some(0), Some(1_000)),
        ("presented_again", id("f"), None, Some(-900)),
    ];
    let run_rec = run_of(&app, (&date, 0), files.path(), &expected).await;
    assert_eq!(run_rec.presentments_matched, 2, "{}", run_rec.summary);
    let twice = app
        .store
        .run_breaks(&date.to_string(), Some("presentment_amount_differs"), 10, 0)
        .await
        .unwrap();
    let netted = format!("netted off the presentment of {} on {before}", id("a"));
    assert!(twice[1].detail.contains(&netted), "{}", twice[1].detail);
    // The refund's second row is a refund's (an adjustment's), booked on another day.
    let dup = app
        .store
        .run_breaks(&date.to_string(), Some("duplicate_in_file"), 10, 0)
        .await
        .unwrap();
    assert_eq!(dup[0].kind.as_deref(), Some("ADJUSTMENT"), "{dup:?}");
    let again = app
        .store
        .run_breaks(&date.to_string(), Some("presented_again"), 10, 0)
        .await
        .unwrap();
    let first = format!("also presented on {before}");
    assert!(again[0].detail.ends_with(&first), "{}", again[0].detail);
    // Yesterday reconciled again, after today (out of order): its presentment of `f` meets
    // today's too.
    let reports = tempfile::tempdir().unwrap();
    let s = recon::settings(&app, reports.path());
    let opts = RunOptions {
        force: true,
        ..recon::from_dir(&before, before_files.path())
    };
    run(&s, &app.store, &opts).await.expect("runs again");
    let again = app
        .store
        .run_breaks(&before.to_string(), Some("presented_again"), 10, 0)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    let other = format!("also presented on {date}");
    assert!(again[0].detail.ends_with(&other), "{}", again[0].detail);
}

/// An entry booked in the last minutes of a day (`grace_minutes`: pending then) is in the
/// next day's transactions file: today's rows of yesterday's pending entries are matched
/// against them, not reported as missing in the ledger; an amount that differs is still a
/// break, and a pending entry today's file does not hold either is missing in the file
/// (one yesterday's file held in time is not). A row of an entry yesterday's file held
/// (reported again) stays missing in today's ledger, and a row of no entry at all too.
async fn transactions_of_earlier_days(app: TestApp) {
    let p = uid("t");
    let id = |s: &str| format!("{p}-{s}");
    let approved = [
        ("a", "100.00"),
        ("b", "50.00"),
        ("q", "3.00"),
        ("w", "4.00"),
        ("x", "6.00"),
    ];
    approved_yesterday(&app, &p, &approved, "a", 1).await;
    let earlier = uid("y");
    let y = format!("{earlier}-y");
    approve(&app, &y, "7.00").await;
    booked_yesterday(&app, &earlier, 12 * 60).await;
    // Yesterday's file held `w` (in time) and `y`: a, r, b, q and x were pending.
    let before = recon::days_ago(1);
    let files = tempfile::tempdir().unwrap();
    let rows = [debit_row(&id("w"), "4.00"), debit_row(&y, "7.00")];
    write_rows(files.path(), &before, &rows);
    let run_rec = run_of(&app, (&before, 30), files.path(), &[]).await;
    assert_eq!(
        (run_rec.matched, run_rec.pending),
        (2, 5),
        "{}",
        run_rec.summary
    );
    let summary: serde_json::Value = serde_json::from_str(&run_rec.summary).unwrap();
    assert!(
        summary["owed_by_day_before"].is_null(),
        "no run of its day before"
    );
    assert_eq!(summary["presentments_delivered"], false, "{summary}");
    // Without breaks, but its clearing not checked: not clean.
    assert_eq!(run_rec.status, "incomplete");
    // Booked today, in today's file.
    approve(&app, &id("c"), "20.00").await;

    let date = recon::today();
    let files = tempfile::tempdir().unwrap();
    let refund = refund_row(&id("r"), &id("a"));
    let rows = [
        debit_row(&id("a"), "100.00"),
        refund,
        debit_row(&id("b"), "55.00"),
        debit_row(&id("c"), "20.00"),
        debit_row(&id("z"), "5.00"),
        debit_row(&y, "7.00"),
        tx_row(
            &id("x"),
            "AUTHORIZATION",
            "REJECTED",
            "DEBIT",
            "6.00",
            "ARS",
            "",
        ),
    ];
    write_rows(files.path(), &date, &rows);
    // A day without clearing, delivered as an empty file (not even a header).
    write_presentments_text(files.path(), &date, "");
    let expected = [
        ("amount_mismatch", id("b"), Some(-5_000), Some(-5_500)),
        ("status_mismatch", id("x"), Some(-600), Some(-600)),
        ("missing_in_ledger", id("z"), None, Some(-500)),
        ("missing_in_ledger", y, None, Some(-700)),
        ("missing_in_file", id("q"), Some(-300), None),
    ];
    let run_rec = run_of(&app, (&date, 30), files.path(), &expected).await;
    let matched = (run_rec.matched, run_rec.presentments_matched);
    assert_eq!(matched, (3, 0), "{}", run_rec.summary);
    let summary: serde_json::Value = serde_json::from_str(&run_rec.summary).unwrap();
    assert_eq!(summary["owed_by_day_before"], 5);
    assert_eq!(summary["presentments_delivered"], true, "{summary}");
}

/// Writes the presentments file of `date` as `text`.
fn write_presentments_text(dir: &std::path::Path, date: &BusinessDate, text: &str) {
    let name = format!("presentments_{}.csv", date.format("%Y%m%d"));
    std::fs::write(dir.join(name), text).unwrap();
}

/// The row of the 10.00 ARS refund `approved_yesterday` books.
fn refund_row(id: &str, original: &str) -> String {
    tx_row(
        id,
        "ADJUSTMENT",
        "APPROVED",
        "CREDIT",
        "10.00",
        "ARS",
        original,
    )
}

/// An approved purchase's row (ARS).
fn debit_row(id: &str, amount: &str) -> String {
    tx_row(id, "AUTHORIZATION", "APPROVED", "DEBIT", amount, "ARS", "")
}

/// Writes the transactions file of `date` into `dir`: the header, then `rows`.
fn write_rows(dir: &std::path::Path, date: &BusinessDate, rows: &[String]) {
    recon::write_transactions(dir, date, &format!("{TX_HEADER}\n{}", rows.join("\n")));
}

/// A run that failed after its files were recorded leaves the date's last run standing,
/// but not as the answer to those files: the next run with them runs again. And the files
/// of an older run, delivered again, make that run again.
async fn a_failed_run_is_run_again(app: TestApp) {
    app.funded("u1", "ARS", "100.00").await;
    let id = uid("again");
    approve(&app, &id, "10.00").await;
    let date = recon::today();
    let (files, reports) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = |amount: &str| {
        let row = tx_row(&id, "AUTHORIZATION", "APPROVED", "DEBIT", amount, "ARS", "");
        recon::write_transactions(files.path(), &date, &format!("{TX_HEADER}\n{row}"));
    };
    let s = recon::settings(&app, reports.path());
    let opts = recon::from_dir(&date, files.path());
    let breaks = |o: &Outcome| match o {
        Outcome::Done { breaks, .. } => Some(*breaks),
        _ => None,
    };
    file("10.00");
    assert_eq!(breaks(&run(&s, &app.store, &opts).await.unwrap()), Some(0));
    // The same file again under another name is one file: no row is its own duplicate.
    let copy = files
        .path()
        .join(format!("transactions_{}_r1.csv", date.format("%Y%m%d")));
    let original = files
        .path()
        .join(format!("transactions_{}.csv", date.format("%Y%m%d")));
    std::fs::copy(&original, &copy).unwrap();
    let forced = RunOptions {
        force: true,
        ..recon::from_dir(&date, files.path())
    };
    assert_eq!(
        breaks(&run(&s, &app.store, &forced).await.unwrap()),
        Some(0)
    );
    std::fs::remove_file(&copy).unwrap();
    // A corrected file, and a presentments file the mapping cannot read: the run fails
    // after recording both.
    file("11.00");
    let presentments = files
        .path()
        .join(format!("presentments_{}.csv", date.format("%Y%m%d")));
    std::fs::write(&presentments, "no,such,columns\n1,2,3").unwrap();
    assert!(run(&s, &app.store, &opts).await.is_err());
    std::fs::remove_file(&presentments).unwrap();
    // The same transactions file again: its run is made, not the old one kept.
    assert_eq!(breaks(&run(&s, &app.store, &opts).await.unwrap()), Some(1));
    assert!(matches!(
        run(&s, &app.store, &opts).await.unwrap(),
        Outcome::Unchanged
    ));
    // The first file delivered again: its run again.
    file("10.00");
    assert_eq!(breaks(&run(&s, &app.store, &opts).await.unwrap()), Some(0));
    // Report files that cannot be written fail the run before it is stored: the date keeps
    // its run, and the next run writes both.
    let ds = date.to_string();
    let dir = reports.path().join(&ds);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "in the way").unwrap();
    file("11.00");
    assert!(run(&s, &app.store, &opts).await.is_err());
    assert_eq!(app.store.run(&ds).await.unwrap().unwrap().break_count, 0);
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(breaks(&run(&s, &app.store, &opts).await.unwrap()), Some(1));
    let text = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(text.contains("BREAKS FOUND"), "{text}");
    // Files that are not the stored run's (written by a run whose store then failed) are
    // written again from it by the next run, which changes nothing else.
    std::fs::write(dir.join("summary.json"), "{}").unwrap();
    std::fs::remove_file(dir.join("breaks.csv")).unwrap();
    assert!(matches!(
        run(&s, &app.store, &opts).await.unwrap(),
        Outcome::Unchanged
    ));
    let csv = std::fs::read_to_string(dir.join("breaks.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let stored = app.store.run(&ds).await.unwrap().unwrap().summary;
    let json = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(parse(&json), parse(&stored));
}

/// The other way round: the processor's clock put a purchase before midnight, ours after
/// it. Yesterday's file holds its row and the ledger booked it in today's first minutes
/// (within `grace_minutes`): yesterday's run matches the row against that entry and claims
/// it, and today's run, whose file does not hold it, does not report it missing. An
/// approved row of one we declined there is a status mismatch, not a row of no entry.
async fn rows_booked_in_the_next_days_first_minutes(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let (early, p) = (uid("n"), uid("n"));
    let (a, c, d) = (
        format!("{early}-a"),
        format!("{early}-c"),
        format!("{early}-d"),
    );
    let b = format!("{p}-b");
    approve(&app, &a, "25.00").await;
    approve(&app, &c, "7.00").await;
    // `d` declined by us (more than the balance), approved in the processor's file.
    let declined = Tx::new(&d, "PURCHASE", "u1", "5000.00", "ARS");
    assert_eq!(
        app.send(AUTH_DEBIT, &declined).await.json()["status"],
        "REJECTED"
    );
    booked_yesterday(&app, &early, -1).await;
    approve(&app, &b, "5.00").await;
    let before = recon::days_ago(1);
    let files = tempfile::tempdir().unwrap();
    // `c` rejected in the processor's file: we booked it, so not a decline both sides
    // agree on.
    let rejected = tx_row(&c, "AUTHORIZATION", "REJECTED", "DEBIT", "7.00", "ARS", "");
    let rows = [debit_row(&a, "25.00"), rejected, debit_row(&d, "5000.00")];
    write_rows(files.path(), &before, &rows);
    let expected = [
        ("status_mismatch", c.clone(), Some(-700), Some(-700)),
        ("status_mismatch", d.clone(), Some(-500_000), Some(-500_000)),
    ];
    let run_rec = run_of(&app, (&before, 30), files.path(), &expected).await;
    assert_eq!(run_rec.matched, 1, "{}", run_rec.summary);
    let summary: serde_json::Value = serde_json::from_str(&run_rec.summary).unwrap();
    let mut claimed: Vec<&str> = items(&summary["claimed_entries"])
        .filter_map(|e| e[1].as_str())
        .collect();
    claimed.sort();
    assert_eq!(claimed, [a.as_str(), c.as_str(), d.as_str()], "{summary}");

    let date = recon::today();
    let files = tempfile::tempdir().unwrap();
    write_rows(files.path(), &date, &[debit_row(&b, "5.00")]);
    let run_rec = run_of(&app, (&date, 30), files.path(), &[]).await;
    let summary: serde_json::Value = serde_json::from_str(&run_rec.summary).unwrap();
    assert_eq!(summary["claimed_by_day_before"], 2, "{summary}");
    // Today's file holding it too is the processor reporting it twice.
    write_rows(
        files.path(),
        &date,
        &[debit_row(&b, "5.00"), debit_row(&a, "25.00")],
    );
    let expected = [("duplicate_in_file", a.clone(), None, Some(-2_500))];
    let run_rec = run_of(&app, (&date, 30), files.path(), &expected).await;
    let summary: serde_json::Value = serde_json::from_str(&run_rec.summary).unwrap();
    assert_eq!(summary["claimed_by_day_before"], 1, "{summary}");
}

/// A day's presentments may come in several files (`presentments_{date}_1.csv`, `_2.csv`),
/// each numbering its lines from 2: a row is matched as its own whatever its line, and a
/// break names the file it stands in. (A purchase presented net of its refund on the second
/// file's line 2 once took the first file's line 2 for its own and dropped its break.)
async fn presentments_in_several_files(app: TestApp) {
    let p = uid("m");
    let id = |s: &str| format!("{p}-{s}");
    // `y` is refunded 10.00 (`r`), not presented on its own: `y` is due net of it.
    approved_yesterday(&app, &p, &[("x", "90.00"), ("y", "50.00")], "y", 12 * 60).await;
    let date = recon::today();
    let d = date.format("%Y%m%d").to_string();
    let files = tempfile::tempdir().unwrap();
    recon::write_transactions(files.path(), &date, TX_HEADER);
    write_presentments(files.path(), &format!("{d}_1"), &[(id("x"), "120.00")]);
    write_presentments(files.path(), &format!("{d}_2"), &[(id("y"), "40.00")]);
    let expected = [(
        "presentment_amount_differs",
        id("x"),
        Some(-9_000),
        Some(-12_000),
    )];
    let run_rec = run_of(&app, (&date, 0), files.path(), &expected).await;
    assert_eq!(run_rec.presentments_matched, 1, "{}", run_rec.summary);
    let b = app.store.run_breaks(&date.to_string(), None, 10, 0).await;
    let b = b.unwrap();
    let first_file = format!("presentments_{d}_1.csv");
    assert_eq!(
        (b[0].file.as_deref(), b[0].line),
        (Some(&*first_file), Some(2))
    );
}

/// A day's presentment of an authorization of another day is held against that
/// authorization with the adjustments naming it booked by the end of the day (and its grace
/// minutes): a reversal booked afterwards does not make it differ, and the day reconciled
/// again later finds what it found. An authorization booked after the day (forced in late)
/// is found by its id all the same.
async fn adjustments_after_the_day_do_not_change_its_presentments(app: TestApp) {
    app.funded("u1", "ARS", "1000.00").await;
    let p = uid("q");
    let id = |s: &str| format!("{p}-{s}");
    approve(&app, &id("a"), "100.00").await;
    // Booked the day before yesterday, at noon.
    booked_yesterday(&app, &p, 36 * 60).await;
    // Booked only now, after the day (as a verdict the processor forced in late is): found
    // by its id all the same.
    approve(&app, &id("f"), "5.00").await;
    let date = recon::days_ago(1);
    let files = tempfile::tempdir().unwrap();
    recon::write_transactions(files.path(), &date, TX_HEADER);
    let presented = [(id("a"), "100.00"), (id("f"), "5.00")];
    write_presentments(files.path(), &date.format("%Y%m%d"), &presented);
    let first = run_of(&app, (&date, 0), files.path(), &[]).await;
    assert_eq!(first.presentments_matched, 2, "{}", first.summary);
    // Today, after yesterday ended: 30.00 of it reversed.
    let reversal = Tx::new(&id("v"), "REVERSAL_PURCHASE", "u1", "30.00", "ARS").original(&id("a"));
    assert_eq!(app.send(ADJ_CREDIT, &reversal).await.status, 200);
    assert_eq!(app.available("u1", "ARS").await, "925.00");
    let reports = tempfile::tempdir().unwrap();
    let s = recon::settings(&app, reports.path());
    let opts = RunOptions {
        force: true,
        ..recon::from_dir(&date, files.path())
    };
    let outcome = run(&s, &app.store, &opts).await.expect("runs again");
    assert!(
        matches!(outcome, Outcome::Done { breaks: 0, .. }),
        "{outcome:?}: {:?}",
        app.store.run_breaks(&date.to_string(), None, 10, 0).await
    );
    let again = app.store.run(&date.to_string()).await.unwrap().unwrap();
    assert_eq!(again.presentments_matched, 2, "{}", again.summary);
}

both_backends!(
    every_break_class,
    presentments_in_several_files,
    a_clean_day_and_the_single_instance_lock,
    presentments_of_earlier_days,
    transactions_of_earlier_days,
    rows_booked_in_the_next_days_first_minutes,
    a_failed_run_is_run_again,
    adjustments_after_the_day_do_not_change_its_presentments
);
