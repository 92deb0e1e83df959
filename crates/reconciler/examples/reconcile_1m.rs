//! Benchmark: reconcile N file rows (default 1,000,000) against N booked transactions in a
//! real database; parse + match + store + report, timed, with the peak memory of every
//! process involved.
//!
//!     cargo run --release -p reconciler --example reconcile_1m -- [N] [postgres|sqlite]
//!
//! Postgres (the default) uses AUTHORIZER_TEST_PG_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres) to create a scratch database, which it
//! drops at the end; the peak of the server processes that served the run is read from
//! /proc (their pids from pg_stat_activity). SQLite uses a scratch file in a temporary
//! directory. Seeding is done by the database itself (generate_series, a recursive CTE)
//! and is not part of the measurement. RECONCILER__MATCHING__PARTITION_ENTRIES, when
//! set, overrides the partition size.

use reconciler::config::{Settings, Source};
use reconciler::run::{Input, Role, reconcile};
use reconciler::sftp::BusinessDate;
use sqlx::Connection;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// VmHWM of a process, in MiB (0 when /proc does not tell).
fn peak_rss_mib_of(pid: &str) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A size field of /proc/<pid>/status, in MiB (0 when /proc does not tell).
fn status_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).map(|l| {
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

fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: i64 = args
        .iter()
        .find(|a| a.chars().all(|c| c.is_ascii_digit()))
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let sqlite = args.iter().any(|a| a == "sqlite");
    let admin = std::env::var("AUTHORIZER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("authz_bench_{}", std::process::id());
    let work = tempfile::tempdir()?;
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k == "RECONCILER__MATCHING__PARTITION_ENTRIES")
        .collect();
    let mut s = Settings::load_from(Path::new("/nonexistent"), &env)?;
    let mut admin_conn = None;
    let url = if sqlite {
        s.database.data_dir = work.path().join("db");
        format!(
            "sqlite:{}",
            s.database.data_dir.join("authorizer.db").display()
        )
    } else {
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut c)
            .await?;
        admin_conn = Some(c);
        format!(
            "{}/{db}",
            admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin)
        )
    };
    s.database.url = settings::Secret::new(url.clone());
    s.matching.utc_offset = "Z".into();
    s.report.dir = work.path().join("reports");
    s.source.kind = format!("dir:{}", work.path().display());
    s.source.staging_dir = work.path().join("staging");
    let store = store::Store::connect(&s.store_config()).await?;
    store.migrate().await?;
    let date = BusinessDate::parse("2024-03-01").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (from, _) = reconciler::schedule::day_window_ms(2024, 3, 1, 0);

    // Seed the ledger: N approved authorizations booked during the day.
    let seed = Instant::now();
    if sqlite {
        let mut c = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $2) \
             INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, user_id, \
             currency, amount_text, amount_minor, status, status_detail, flags, created_at_ms, updated_at_ms) \
             SELECT 'AUTHORIZATION', 'ctx-bench-' || i, '/transactions/authorizations', 'DEBIT', 'PURCHASE', \
             'usr-' || (i % 100000), 'ARS', '', -(100 + i % 100000), 'APPROVED', 'APPROVED', '', $1 + i % 86000000, $1 \
             FROM g",
        )
        .bind(from)
        .bind(n)
        .execute(&mut c)
        .await?;
        c.close().await?;
    } else {
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
        sqlx::query("VACUUM ANALYZE processor_transactions")
            .execute(&mut bench)
            .await?;
        bench.close().await?;
    }
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
    let breaks = r.break_records();
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
    let presented = r.presented_rows();
    store.replace_run(&run, &breaks, &presented).await?;
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
        "{}: load + parse + match {:.2} s ({} partition(s)); + store + report files {:.2} s total; \
         peak RSS {:.0} MiB (this process)",
        if sqlite { "sqlite" } else { "postgres" },
        matched_at.as_secs_f64(),
        r.partitions,
        total.as_secs_f64(),
        peak_rss_mib()
    );
    if let Some(mut c) = admin_conn {
        // The server processes that served the run: the pool's connections.
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'authorizer'",
        )
        .bind(&db)
        .fetch_all(&mut c)
        .await?;
        for pid in pids {
            let pid = pid.to_string();
            println!(
                "postgres backend {pid}: peak RSS {:.0} MiB, of which shared buffers it touched \
                 (now) {:.0} MiB; its own memory now {:.0} MiB",
                peak_rss_mib_of(&pid),
                status_mib(&pid, "RssShmem:"),
                status_mib(&pid, "RssAnon:")
            );
        }
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {db}"))
            .execute(&mut c)
            .await?;
    } else {
        store.close().await;
    }
    let _ = Source::Sftp;
    Ok(())
}
