//! The memory of a reconciliation does not grow with the day: a day four times larger,
//! matched in partitions of the same size, peaks at the same height. Each run is a child
//! process (this test binary again) so that its peak resident size is its own; the
//! parent seeds an embedded store and writes the file, which the peak must not include.
//! A third child matches the larger day in one partition, to show that the measurement
//! does see memory that grows with the day.

mod embedded;

use reconciler::run::{Input, Role, reconcile};
use reconciler::sftp::BusinessDate;
use sqlx::Connection;
use std::io::Write;
use std::path::Path;
use std::process::Command;

const CHILD: &str = "RECONCILER_BOUNDED_MEMORY_CHILD";
const TEST: &str = "a_larger_day_peaks_at_the_same_height";

/// A day of `n` booked authorizations and a file with every one of them (one in a
/// thousand with another amount), in `dir`.
async fn seed(dir: &Path, n: u64) {
    let mut c = embedded::empty_ledger(dir).await;
    let (from, _) = reconciler::schedule::day_window_ms(2024, 3, 1, 0);
    sqlx::query(
        "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $2) \
         INSERT INTO processor_transactions (kind, transaction_id, direction, currency, amount_minor, \
         status, flags, created_at_ms, updated_at_ms) \
         SELECT 'AUTHORIZATION', 'ctx-' || i, 'DEBIT', 'ARS', -(100 + i % 1000), 'APPROVED', '', $1 + i % 80000000, $1 \
         FROM g",
    )
    .bind(from)
    .bind(n as i64)
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(dir.join("transactions.csv")).unwrap());
    writeln!(w, "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date").unwrap();
    for i in 1..=n {
        let minor = 100 + i % 1000 + u64::from(i % 1000 == 0);
        writeln!(
            w,
            "ctx-{i},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,{}.{:02},ARS,,crd,usr,2024-03-01",
            minor / 100,
            minor % 100
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// In the child: reconciles the day seeded in `dir` and prints its peak.
async fn child(dir: &Path, partition_entries: u64, n: u64) {
    let mut s = embedded::settings(dir);
    s.matching.utc_offset = "Z".into();
    s.matching.partition_entries = partition_entries;
    s.source.staging_dir = dir.join("staging");
    let store = store::Store::connect(&s.store_config()).await.unwrap();
    let path = dir.join("transactions.csv");
    let inputs = vec![Input {
        role: Role::Transactions,
        name: "transactions_20240301.csv".into(),
        size: std::fs::metadata(&path).unwrap().len(),
        path,
        sha256: [0; 32],
        status: None,
    }];
    let date = BusinessDate::parse("2024-03-01").unwrap();
    let r = reconcile(&s, &store, &date, &inputs).await.unwrap();
    // The result is right, or the peak means nothing.
    assert_eq!(r.ledger_entries, n);
    assert_eq!(r.report.matched, n - n / 1000);
    assert_eq!(r.report.breaks.len() as u64, n / 1000);
    let expected_parts = n.div_ceil(partition_entries).max(1) as usize;
    assert!(
        r.partitions >= expected_parts,
        "{} partitions",
        r.partitions
    );
    println!("PEAK_KIB={}", reconciler::run::peak_rss_kib().unwrap());
}

fn peak_of(dir: &Path, partition_entries: u64, n: u64) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}|{partition_entries}|{n}", dir.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("PEAK_KIB=").map(|(_, v)| v))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no peak in the child's output: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_day_peaks_at_the_same_height() {
    if let Ok(spec) = std::env::var(CHILD) {
        let mut it = spec.split('|');
        let dir = it.next().unwrap().to_owned();
        let partition_entries = it.next().unwrap().parse().unwrap();
        let n = it.next().unwrap().parse().unwrap();
        child(Path::new(&dir), partition_entries, n).await;
        return;
    }
    if reconciler::run::peak_rss_kib().is_none() {
        eprintln!(
            "SKIPPED a_larger_day_peaks_at_the_same_height: /proc/self/status has no VmHWM \
             here, so a process's peak memory cannot be read"
        );
        return;
    }
    let (small, large, part) = (40_000u64, 160_000u64, 10_000u64);
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("small"), work.path().join("large"));
    seed(&a, small).await;
    seed(&b, large).await;
    let peak_small = peak_of(&a, part, small);
    let peak_large = peak_of(&b, part, large);
    let peak_whole = peak_of(&b, 10 * large, large);
    eprintln!(
        "peak RSS: {small} rows in partitions of {part}: {} KiB; {large} rows: {} KiB; \
         {large} rows in one partition: {} KiB",
        peak_small, peak_large, peak_whole
    );
    assert!(
        peak_whole > peak_large + 12 * 1024,
        "the measurement sees a day held whole: {peak_whole} KiB vs {peak_large} KiB"
    );
    assert!(
        peak_large <= peak_small + 4 * 1024,
        "four times the day, same partitions: peak {peak_large} KiB vs {peak_small} KiB"
    );
}
