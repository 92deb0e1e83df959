//! Benchmark: reconcile N file rows (default 1,000,000) against N booked transactions in a
//! real Postgres database; parse + match + store + report, timed, with peak memory.
//!
//!     cargo run --release -p reconciler --example reconcile_1m -- [N]
//!
//! Uses AUTHORIZER_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) to
//! create a scratch database, which it drops at the end. Seeding is done by the database
//! itself (generate_series) and is not part of the measurement.

use reconciler::config::{Settings, Source};
use reconciler::run::{Input, Role, reconcile};
use reconciler::sftp::BusinessDate;
use sqlx::Connection;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let admin = std::env::var("AUTHORIZER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("authz_bench_{}", std::process::id());
    let mut c = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut c)
        .await?;
    let url = format!(
        "{}/{db}",
        admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin)
    );
    let work = tempfile::tempdir()?;
    let mut s = Settings::load_from(Path::new("/nonexistent"), &[])?;
    s.database.url = settings::Secret::new(url.clone());
    s.matching.utc_offset = "Z".into();
    s.report.dir = work.path().join("reports");
    s.source.kind = format!("dir:{}", work.path().display());
    let store = store::Store::connect(&s.store_config()).await?;
    store.migrate().await?;
    let date = BusinessDate::parse("2024-03-01").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (from, _) = reconciler::schedule::day_window_ms(2024, 3, 1, 0);

    // Seed the ledger: N approved authorizations booked during the day.
    let seed = Instant::now();
    let mut bench = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(
        "INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, user_id, \
         currency, amount_text, amount_minor, status, status_detail, flags, created_at_ms, updated_at_ms) \
         SELECT 'AUTHORIZATION', 'ctx-bench-' || i, '/transactions/authorizations', 'DEBIT', 'PURCHASE', \
         'usr-' || (i % 100000), 'ARS', '', -(100 + i % 100000), 'APPROVED', 'APPROVED', '', $1 + i % 86000000, $1 \
         FROM generate_series(1, $2) AS i",
    )
    .bind(from)
    .bind(n)
    .execute(&mut bench)
    .await?;
    // The file: every transaction, 1% with another amount, plus 0.1% the ledger never saw.
    let name = "transactions_20240301.csv";
    let path = work.path().join(name);
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(
            w,
            "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date"
        )?;
        for i in 1..=n {
            let minor = 100 + i % 100_000 + if i % 100 == 0 { 1 } else { 0 };
            writeln!(
                w,
                "ctx-bench-{i},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,{}.{:02},ARS,,crd-{i},usr-{},2024-03-01",
                minor / 100,
                minor % 100,
                i % 100_000
            )?;
        }
        for i in 0..n / 1000 {
            writeln!(
                w,
                "ctx-unknown-{i},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,1.00,ARS,,crd-x,usr-x,2024-03-01"
            )?;
        }
    }
    let size = std::fs::metadata(&path)?.len();
    println!(
        "seeded {n} ledger rows and a {:.1} MiB file in {:.1} s; peak RSS so far {:.0} MiB",
        size as f64 / 1048576.0,
        seed.elapsed().as_secs_f64(),
        peak_rss_mib()
    );

    let t = Instant::now();
    let inputs = vec![Input {
        role: Role::Transactions,
        name: name.into(),
        path: path.clone(),
        size,
        sha256: [0; 32],
        status: None,
    }];
    let r = reconcile(&s, &store, &date, &inputs).await?;
    let matched_at = t.elapsed();
    let breaks: Vec<store::BreakRecord> = r
        .report
        .breaks
        .iter()
        .enumerate()
        .map(|(i, b)| store::BreakRecord {
            seq: i as i64 + 1,
            class: b.class.as_str().into(),
            transaction_id: b.transaction_id.clone(),
            kind: None,
            currency: b.currency.map(|c| c.code().to_owned()),
            ledger_amount_minor: b.ledger_amount_minor,
            file_amount_minor: b.file_amount_minor,
            difference_minor: b.difference_minor,
            file: b.file.map(str::to_owned),
            line: b.line.map(|l| l as i64),
            detail: b.detail.clone(),
        })
        .collect();
    let summary = reconciler::report::summary_json("2024-03-01", &r, &inputs, t.elapsed());
    let run = store::RunRecord {
        business_date: "2024-03-01".into(),
        status: "breaks".into(),
        started_at_ms: 0,
        finished_at_ms: 0,
        matched: r.report.matched as i64,
        pending: r.report.pending as i64,
        presentments_matched: 0,
        break_count: breaks.len() as i64,
        malformed_rows: r.malformed.len() as i64,
        summary: summary.to_string(),
    };
    store.replace_run(&run, &breaks).await?;
    reconciler::report::write_files(
        &s.report.dir.join("2024-03-01"),
        &run,
        &breaks,
        &summary,
        10,
    )?;
    let total = t.elapsed();
    println!(
        "reconciled {} file rows against {} ledger entries: matched {}, breaks {} ({:?})",
        r.rows,
        r.ledger_entries,
        r.report.matched,
        breaks.len(),
        r.report
            .counts()
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{}={v}", k.as_str()))
            .collect::<Vec<_>>()
    );
    println!(
        "load + parse + match {:.2} s; + store + report files {:.2} s total; peak RSS {:.0} MiB",
        matched_at.as_secs_f64(),
        total.as_secs_f64(),
        peak_rss_mib()
    );
    drop(bench);
    store.close().await;
    let _ = Source::Sftp;
    sqlx::query(&format!("DROP DATABASE {db}"))
        .execute(&mut c)
        .await?;
    Ok(())
}
