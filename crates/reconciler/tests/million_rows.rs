//! A 1,000,000-row transactions file streams through the parser in bounded memory: the
//! process's peak resident size grows by far less than the file's size. (Its own test
//! binary, so no other test shares the process whose peak is measured.)

use reconciler::config::Settings;
use reconciler::parse::{self, CsvFormat};
use std::io::Write;
use std::path::Path;

#[test]
fn a_million_rows_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transactions_20240301.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(w, "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date").unwrap();
        for i in 0..1_000_000u64 {
            if i % 100_000 == 7 {
                writeln!(w, "ctx-{i},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,not-a-number,ARS,,crd,usr,2024-03-01").unwrap();
            } else {
                writeln!(w, "ctx-{i:012},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,{}.{:02},ARS,,crd-{i},usr-{},2024-03-01", i % 5000, i % 100, i % 997).unwrap();
            }
        }
    }
    let size_kib = std::fs::metadata(&path).unwrap().len() / 1024;
    let before = reconciler::run::peak_rss_kib();
    let s = Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
    let mut malformed = reconciler::parse::MalformedRows::default();
    let mut rows = 0u64;
    let mut debits: i128 = 0;
    let read = parse::rows(
        &path,
        &s.mapping.transactions,
        CsvFormat::from(&s.csv),
        &mut malformed,
        |t| {
            rows += 1;
            debits += i128::from(t.amount_minor);
        },
    )
    .unwrap();
    let grew = match (before, reconciler::run::peak_rss_kib()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    match grew {
        Some(g) => eprintln!(
            "1,000,000 rows, file {} MiB, peak RSS grew {g} KiB while parsing",
            size_kib / 1024
        ),
        None => eprintln!(
            "SKIPPED the memory assertion of a_million_rows_in_bounded_memory: \
             /proc/self/status has no VmHWM here, so the peak cannot be read"
        ),
    }
    assert_eq!(read, 1_000_000);
    assert_eq!(rows, 999_990);
    assert_eq!(malformed.len(), 10);
    assert_eq!(
        malformed.iter().next().unwrap().line,
        9,
        "header is line 1, row 7 is line 9"
    );
    assert!(debits < 0);
    assert!(
        size_kib > 60 * 1024,
        "the file is big enough to matter: {size_kib} KiB"
    );
    if let Some(grew) = grew {
        assert!(
            grew < 16 * 1024,
            "parsing grew the peak by {grew} KiB for a {size_kib} KiB file"
        );
    }
}
