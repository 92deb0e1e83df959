//! A day matched in many spilled partitions gives exactly the report of the same day
//! matched at once: every break class, counts, totals per currency, malformed rows, the
//! grace window, duplicates across two transactions files, and presentments of
//! authorizations whose adjustments fall in other partitions. Embedded store, real files.

mod embedded;

use ledger::reconcile::{MatchConfig, Matcher, Report};
use reconciler::parse::{self, CsvFormat, MalformedRows};
use reconciler::run::{Input, Reconciled, Role, reconcile};
use reconciler::sftp::BusinessDate;
use sqlx::Connection;
use std::fmt::Write as _;
use std::path::Path;

const TX_HEADER: &str = "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date\n";

fn amount(minor: i64) -> (&'static str, String) {
    let dir = if minor < 0 { "DEBIT" } else { "CREDIT" };
    let m = minor.unsigned_abs();
    (dir, format!("{}.{:02}", m / 100, m % 100))
}

fn tx(out: &mut String, id: &str, kind: &str, approved: bool, minor: i64, cur: &str) {
    let (dir, amt) = amount(minor);
    let status = if approved { "APPROVED" } else { "REJECTED" };
    let _ = writeln!(
        out,
        "{id},{kind},PURCHASE,{status},{dir},{amt},{cur},,crd,usr,2024-03-01"
    );
}

/// Seeds the ledger and writes the files in `dir`; returns the inputs.
async fn seed(dir: &Path) -> Vec<Input> {
    let mut c = embedded::empty_ledger(dir).await;
    let (from, to) = reconciler::schedule::day_window_ms(2024, 3, 1, 0);
    sqlx::query("INSERT INTO movements (id, kind, currency, created_at_ms) VALUES (1, 'ADJUSTMENT', 'ARS', 0)")
        .execute(&mut c)
        .await
        .unwrap();
    // Seeded, so the day is the same on every run.
    let mut rng = fastrand::Rng::with_seed(19);
    let curs = ["ARS", "USD", "CLP"];
    let (mut tx_a, mut tx_b, mut pres) = (
        String::from(TX_HEADER),
        String::from(TX_HEADER),
        String::from("transaction_id,direction,local_amount,local_currency\n"),
    );
    for i in 0..1_500u64 {
        let cur = curs[(i % 3) as usize];
        let id = format!("ctx-{i}");
        let approved = rng.u64(..10) != 0;
        let minor = if approved {
            -(rng.i64(0..90_000) + 100)
        } else {
            0
        };
        // Most in the day, some in the last 30 minutes (the grace window).
        let at = if rng.u64(..15) == 0 {
            to - 1 - rng.i64(0..20 * 60_000)
        } else {
            from + rng.i64(0..80_000_000)
        };
        let in_ledger = rng.u64(..25) != 0;
        if in_ledger {
            sqlx::query(
                "INSERT INTO processor_transactions (kind, transaction_id, currency, amount_minor, status, flags, \
                 created_at_ms, updated_at_ms) VALUES ('AUTHORIZATION', $1, $2, $3, $4, '', $5, $5)",
            )
            .bind(&id)
            .bind(cur)
            .bind(minor)
            .bind(if approved { "APPROVED" } else { "REJECTED" })
            .bind(at)
            .execute(&mut c)
            .await
            .unwrap();
        }
        let mut adjusted = 0;
        // A refund presented on its own (its purchase then presented in full).
        let mut cleared_alone = None;
        if approved && rng.u64(..5) == 0 {
            let refund = rng.i64(0..5_000) + 1;
            let booked = rng.u64(..8) != 0;
            let tx_type = if rng.bool() { "REFUND" } else { "PAYMENT" };
            if booked {
                adjusted = refund;
                if tx_type == "REFUND" && rng.bool() {
                    cleared_alone = Some(refund);
                }
            }
            sqlx::query(
                "INSERT INTO processor_transactions (kind, transaction_id, currency, amount_minor, status, flags, \
                 original_transaction_id, movement_id, created_at_ms, updated_at_ms, tx_type) \
                 VALUES ('ADJUSTMENT', $1, $2, $3, 'APPROVED', '', $4, $5, $6, $6, $7)",
            )
            .bind(format!("adj-{i}"))
            .bind(cur)
            .bind(refund)
            .bind(&id)
            .bind(booked.then_some(1i64))
            .bind(from + rng.i64(0..80_000_000))
            .bind(tx_type)
            .execute(&mut c)
            .await
            .unwrap();
            if rng.u64(..2) == 0 {
                tx(
                    &mut tx_b,
                    &format!("adj-{i}"),
                    "ADJUSTMENT",
                    true,
                    refund,
                    cur,
                );
            }
        }
        let mut line = String::new();
        let file = &mut line;
        match rng.u64(..14) {
            0 => {}                                                     // missing in file
            1 => tx(file, &id, "AUTHORIZATION", !approved, minor, cur), // status
            2 => tx(
                file,
                &id,
                "AUTHORIZATION",
                approved,
                minor,
                curs[((i + 1) % 3) as usize],
            ), // currency
            3 => tx(file, &id, "AUTHORIZATION", approved, minor - 7, cur), // amount
            4 => {
                // A duplicate, the second in the other file.
                tx(&mut tx_a, &id, "AUTHORIZATION", approved, minor, cur);
                tx(&mut tx_b, &id, "AUTHORIZATION", approved, minor, cur);
            }
            5 => tx(file, &id, "AUTHORIZATION", approved, minor, "XX1"), // malformed
            _ => tx(file, &id, "AUTHORIZATION", approved, minor, cur),
        }
        if rng.u64(..20) == 0 {
            tx(
                file,
                &format!("ghost-{i}"),
                "AUTHORIZATION",
                true,
                -500,
                cur,
            ); // missing in ledger
        }
        if i % 2 == 0 {
            tx_a.push_str(&line);
        } else {
            tx_b.push_str(&line);
        }
        if let Some(refund) = cleared_alone {
            let (dir, amt) = amount(refund - rng.i64(0..3) * 5);
            let _ = writeln!(pres, "adj-{i},{dir},{amt},{cur}");
            adjusted = 0;
        }
        if approved && rng.u64(..3) == 0 {
            let presented = minor + adjusted - rng.i64(0..3) * 5;
            let target = if rng.u64(..30) == 0 {
                format!("adj-{i}")
            } else {
                id.clone()
            };
            let (dir, amt) = amount(presented);
            let pcur = if rng.u64(..40) == 0 {
                curs[((i + 2) % 3) as usize]
            } else {
                cur
            };
            let line = format!("{target},{dir},{amt},{pcur}\n");
            pres.push_str(&line);
            if rng.u64(..15) == 0 {
                pres.push_str(&line);
            }
        }
    }
    c.close().await.unwrap();
    let mut inputs = Vec::new();
    for (name, role, body) in [
        ("transactions_20240301_a.csv", Role::Transactions, tx_a),
        ("transactions_20240301_b.csv", Role::Transactions, tx_b),
        ("presentments_20240301.csv", Role::Presentments, pres),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body.as_bytes()).unwrap();
        inputs.push(Input {
            role,
            name: name.into(),
            size: body.len() as u64,
            path,
            sha256: [0; 32],
            status: None,
        });
    }
    inputs
}

async fn run(dir: &Path, inputs: &[Input], partition_entries: u64) -> Reconciled {
    let mut s = embedded::settings(dir);
    s.matching.utc_offset = "Z".into();
    s.matching.grace_minutes = 30;
    s.matching.presentment_tolerance_minor = 5;
    // CLP has no decimals: 5 pesos are worth less than 0.05 of the others.
    s.matching.presentment_tolerance = vec!["CLP 2".into()];
    s.matching.partition_entries = partition_entries;
    s.source.staging_dir = dir.join("staging");
    let store = store::Store::connect(&s.store_config()).await.unwrap();
    let date = BusinessDate::parse("2024-03-01").unwrap();
    let r = reconcile(&s, &store, &date, inputs).await.unwrap();
    store.close().await;
    r
}

/// The day matched as before partitions existed: the whole ledger in one matcher, the
/// files streamed through it; then its purchases held against their refunds presented on
/// their own (which must change the report: the day has such refunds).
async fn reference(dir: &Path, inputs: &[Input]) -> (Report, MalformedRows) {
    let s = embedded::settings(dir);
    let store = store::Store::connect(&s.store_config()).await.unwrap();
    let (from, to) = reconciler::schedule::day_window_ms(2024, 3, 1, 0);
    let config = MatchConfig {
        presentment_tolerance_minor: 5,
        grace_from_ms: to - 30 * 60_000,
        presentment_tolerance_by_currency: vec![(ledger::Currency::parse("CLP").unwrap(), 2)],
    };
    let mut m = Matcher::new(config.clone());
    store
        .ledger_entries(from, to, |e| m.add_ledger(e))
        .await
        .unwrap();
    let fmt = CsvFormat::from(&s.csv);
    let mut malformed = MalformedRows::default();
    // A kind's files are numbered on from the last line of the one before, as a run does.
    for role in [Role::Transactions, Role::Presentments] {
        let mut top = 0;
        for i in inputs.iter().filter(|i| i.role == role) {
            let base = top;
            let mut seen = |line: &mut u64| {
                *line += base;
                top = top.max(*line);
            };
            let (path, cols) = (&i.path, &s.mapping);
            match role {
                Role::Transactions => {
                    parse::rows(path, &cols.transactions, fmt, &mut malformed, |mut r| {
                        seen(&mut r.line);
                        m.transaction(r)
                    })
                }
                Role::Presentments => {
                    parse::rows(path, &cols.presentments, fmt, &mut malformed, |mut r| {
                        seen(&mut r.line);
                        m.presentment(r)
                    })
                }
            }
            .unwrap();
        }
    }
    let mut report = m.finish();
    let purchases = reconciler::run::refund_purchases(&store, &report, i64::MAX)
        .await
        .unwrap();
    store.close().await;
    let matched = report.presentments_matched;
    let none = ledger::reconcile::PresentedElsewhere::default();
    ledger::reconcile::refunds_cleared_alone(&mut report, &purchases, &none, &config);
    assert!(
        report.presentments_matched > matched,
        "no refund cleared alone"
    );
    (report, malformed)
}

fn assert_same(got: &Reconciled, want: &Report, malformed: &MalformedRows) {
    if let Some(i) = (0..got.report.breaks.len().max(want.breaks.len()))
        .find(|&i| got.report.breaks.get(i) != want.breaks.get(i))
    {
        panic!(
            "{} breaks, {} expected; first difference at {i}: {:#?} instead of {:#?}",
            got.report.breaks.len(),
            want.breaks.len(),
            got.report.breaks.get(i),
            want.breaks.get(i)
        );
    }
    assert_eq!(
        (
            got.report.matched,
            got.report.pending,
            got.report.presentments_matched
        ),
        (want.matched, want.pending, want.presentments_matched)
    );
    assert_eq!(got.report.ledger_totals, want.ledger_totals);
    assert_eq!(got.report.file_totals, want.file_totals);
    assert_eq!(got.report.presentment_totals, want.presentment_totals);
    assert_eq!(
        (
            got.report.transaction_rows,
            got.report.presentment_rows,
            got.report.ledger_entries
        ),
        (
            want.transaction_rows,
            want.presentment_rows,
            want.ledger_entries
        )
    );
    assert_eq!(&got.malformed, malformed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_give_the_report_of_one() {
    let work = tempfile::tempdir().unwrap();
    let inputs = seed(work.path()).await;
    let whole = run(work.path(), &inputs, 1_000_000).await;
    let parts = run(work.path(), &inputs, 7).await;
    assert_eq!(whole.partitions, 1);
    assert!(parts.partitions > 200, "{} partitions", parts.partitions);
    // Every class one day's files can show (`presented_again` needs an earlier date's run).
    for (class, n) in whole.report.counts() {
        let day_alone = class != ledger::reconcile::BreakClass::PresentedAgain;
        assert!(!day_alone || n > 0, "the day has no {class}");
    }
    assert!(whole.report.pending > 0 && whole.report.presentments_matched > 0);
    assert!(!whole.malformed.is_empty());
    let (want, malformed) = reference(work.path(), &inputs).await;
    assert_same(&whole, &want, &malformed);
    assert_same(&parts, &want, &malformed);
    // The spilled partitions are gone.
    let left: Vec<_> = std::fs::read_dir(work.path().join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the staging directory: {left:?}");
}
