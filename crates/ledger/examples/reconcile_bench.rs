//! Throughput of the nightly reconciliation matcher on synthetic data.
//!
//! `cargo run --release -p ledger --example reconcile_bench [N]` (N defaults to
//! 1,000,000) generates N ledger entries (1 in 25 an adjustment refunding part of the
//! authorization before it, 2% of authorizations declined), streams about N
//! transactions-file rows (1% amount mismatches, 0.5% missing, 0.5% rows the ledger does
//! not have, 0.1% duplicated) and N presentments (one per authorization, 0.2% off by
//! more than the tolerance; the adjustment slots present unknown ids), then prints the
//! elapsed time per phase and the breaks per class.
//!
//! File rows are generated on the fly and handed over one by one, as the CSV parser
//! would; a first pass that only generates them measures the generation cost, so the
//! matcher's own time can be told apart.

use ledger::Currency;
use ledger::reconcile::{
    BreakClass, EntryKind, FileTransaction, LedgerEntry, MatchConfig, Matcher, Presentment,
};
use std::time::{Duration, Instant};

const BASE_MS: i64 = 1_750_000_000_000;
const TOLERANCE: i64 = 50;

/// splitmix64: a deterministic hash of the row number and a salt.
fn h(i: u64, salt: u64) -> u64 {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn small(x: u64) -> i64 {
    i64::try_from(x % 1_000_000_000).unwrap_or(0)
}

struct Gen {
    currencies: [Currency; 3],
}

impl Gen {
    fn is_adjustment(&self, i: u64) -> bool {
        i % 25 == 24
    }
    fn declined(&self, i: u64) -> bool {
        !self.is_adjustment(i) && i % 25 != 23 && h(i, 1).is_multiple_of(50)
    }
    fn currency(&self, i: u64) -> Currency {
        self.currencies[((i / 25) % 3) as usize]
    }
    fn id(&self, i: u64) -> String {
        format!("txn_{i:016x}")
    }
    fn amount(&self, i: u64) -> i64 {
        if self.is_adjustment(i) {
            let parent = self.amount(i - 1).unsigned_abs() / 2;
            small(h(i, 2) % parent.max(1)) + 1
        } else if self.declined(i) {
            0
        } else {
            -(small(h(i, 2) % 1_000_000) + 100)
        }
    }
    fn ledger(&self, i: u64) -> LedgerEntry {
        let adjustment = self.is_adjustment(i);
        LedgerEntry {
            transaction_id: self.id(i).into_boxed_str(),
            kind: if adjustment {
                EntryKind::Adjustment
            } else {
                EntryKind::Authorization
            },
            effective: !self.declined(i),
            currency: self.currency(i),
            amount_minor: self.amount(i),
            original_transaction_id: adjustment.then(|| self.id(i - 1).into_boxed_str()),
            booked_at_ms: BASE_MS + i as i64 * 10,
            refund: adjustment,
        }
    }

    /// The transactions-file rows for ledger entry `i` (0, 1, 2 or 3 of them).
    fn file_rows(&self, i: u64, line: &mut u64, mut emit: impl FnMut(FileTransaction)) {
        let roll = h(i, 3) % 1000;
        let mut next_line = || {
            *line += 1;
            *line
        };
        if roll >= 5 {
            let e = self.ledger(i);
            let mut amount = e.amount_minor;
            if (5..15).contains(&roll) {
                amount -= 1 + small(h(i, 4) % 100);
            }
            let mut row = FileTransaction {
                line: next_line(),
                transaction_id: e.transaction_id.into(),
                kind: e.kind,
                approved: e.effective,
                currency: e.currency,
                amount_minor: amount,
                original_transaction_id: e.original_transaction_id.map(String::from),
            };
            if roll == 15 {
                emit(row.clone());
                row.line = next_line();
            }
            emit(row);
        }
        if i % 200 == 199 {
            emit(FileTransaction {
                line: next_line(),
                transaction_id: format!("unk_{i:016x}"),
                kind: EntryKind::Authorization,
                approved: true,
                currency: self.currency(i),
                amount_minor: -12_345,
                original_transaction_id: None,
            });
        }
    }

    fn presentment(&self, i: u64) -> Presentment {
        let line = i + 2;
        if self.is_adjustment(i) {
            return Presentment {
                line,
                transaction_id: format!("pre_{i:016x}"),
                currency: self.currency(i),
                amount_minor: -777,
            };
        }
        let mut amount = self.amount(i);
        if self.is_adjustment(i + 1) {
            amount += self.amount(i + 1);
        }
        if h(i, 5) % 1000 < 2 {
            amount -= 10_000;
        } else {
            amount -= small(h(i, 6) % (TOLERANCE as u64 + 1));
        }
        Presentment {
            line,
            transaction_id: self.id(i),
            currency: self.currency(i),
            amount_minor: amount,
        }
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse().expect("N must be a number"))
        .unwrap_or(1_000_000);
    let g = Gen {
        currencies: [
            Currency::parse("ARS").unwrap(),
            Currency::parse("USD").unwrap(),
            Currency::parse("BRL").unwrap(),
        ],
    };

    // Generation alone, to tell the matcher's share apart.
    let t = Instant::now();
    let mut sink = 0u64;
    for i in 0..n {
        sink = sink.wrapping_add(g.ledger(i).amount_minor as u64);
    }
    let gen_ledger = t.elapsed();
    let t = Instant::now();
    let mut line = 1;
    for i in 0..n {
        g.file_rows(i, &mut line, |r| sink = sink.wrapping_add(r.line));
    }
    for i in 0..n {
        sink = sink.wrapping_add(g.presentment(i).line);
    }
    let gen_files = t.elapsed();
    std::hint::black_box(sink);
    let rss_before = peak_rss_kib();

    let config = MatchConfig {
        presentment_tolerance_minor: TOLERANCE,
        grace_from_ms: BASE_MS + (n - n / 1000) as i64 * 10,
        ..MatchConfig::default()
    };
    let total = Instant::now();
    let t = Instant::now();
    let mut m = Matcher::with_capacity(config, n as usize);
    for i in 0..n {
        m.add_ledger(g.ledger(i));
    }
    let load = t.elapsed();
    let t = Instant::now();
    let mut line = 1;
    let mut rows = 0u64;
    for i in 0..n {
        g.file_rows(i, &mut line, |r| {
            rows += 1;
            m.transaction(r);
        });
    }
    let stream_tx = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        m.presentment(g.presentment(i));
    }
    let stream_pr = t.elapsed();
    let t = Instant::now();
    let report = m.finish();
    let finish = t.elapsed();
    let total = total.elapsed();

    println!("N = {n}: {n} ledger entries, {rows} transactions rows, {n} presentments");
    println!(
        "load ledger   {} (of which generation ~{})",
        secs(load),
        secs(gen_ledger)
    );
    println!(
        "stream files  {} transactions + {} presentments (generation of both ~{})",
        secs(stream_tx),
        secs(stream_pr),
        secs(gen_files)
    );
    println!("finish        {}", secs(finish));
    println!(
        "total         {}  (minus generation ~{})",
        secs(total),
        secs(total.saturating_sub(gen_ledger + gen_files))
    );
    if let (Some(before), Some(after)) = (rss_before, peak_rss_kib()) {
        println!(
            "peak RSS      {:.1} MiB (generation-only passes peaked at {:.1} MiB)",
            after as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }
    println!(
        "matched {}  pending {}  presentments_matched {}  breaks {}",
        report.matched,
        report.pending,
        report.presentments_matched,
        report.breaks.len()
    );
    for (class, count) in report.counts() {
        println!("  {:<36} {count}", class.as_str());
    }
    assert_eq!(report.count(BreakClass::CurrencyMismatch), 0);
}
