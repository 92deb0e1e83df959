//! What a run leaves for people: breaks as CSV, a JSON summary, a one-page text summary.

use crate::parse::Malformed;
use crate::run::{Input, Reconciled};
use anyhow::Context;
use ledger::reconcile::{BreakClass, EntryKind, Totals};
use ledger::{Currency, format_minor};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;
use store::{BreakRecord, FileStatus, RunRecord};

pub fn kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Authorization => "AUTHORIZATION",
        EntryKind::Adjustment => "ADJUSTMENT",
    }
}

/// Minor units as a decimal string of the currency (codes we cannot read keep 2 places).
fn money(minor: i128, currency: &str) -> String {
    let exp = Currency::parse_any(currency)
        .map(|c| c.exponent())
        .unwrap_or(2);
    match i64::try_from(minor) {
        Ok(m) => format_minor(m, exp),
        Err(_) => format!("{minor}e-{exp}"),
    }
}

fn totals_json(t: &BTreeMap<Currency, Totals>) -> Value {
    t.iter()
        .map(|(c, v)| {
            (
                c.code().to_owned(),
                json!({
                    "count": v.count,
                    "debits": money(v.debits_minor, c.code()),
                    "credits": money(v.credits_minor, c.code()),
                    "net": money(v.net_minor(), c.code()),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn file_status(s: Option<FileStatus>) -> Value {
    match s {
        Some(FileStatus::New { version }) => json!({ "status": "new", "version": version }),
        Some(FileStatus::NewVersion { version }) => {
            json!({ "status": "new_version", "version": version })
        }
        Some(FileStatus::AlreadyImported { version }) => {
            json!({ "status": "already_imported", "version": version })
        }
        None => Value::Null,
    }
}

/// The run's summary document (stored with the run and written as summary.json).
pub fn summary_json(date: &str, r: &Reconciled, inputs: &[Input], elapsed: Duration) -> Value {
    let counts: serde_json::Map<String, Value> = r
        .report
        .counts()
        .iter()
        .map(|(c, n)| (c.as_str().to_owned(), json!(n)))
        .collect();
    let malformed: Vec<&Malformed> = r.malformed.iter().take(1000).collect();
    json!({
        "business_date": date,
        "matched": r.report.matched,
        "pending": r.report.pending,
        // Owed to the next day's transactions file, which its run checks.
        "pending_entries": r.report.pending_entries.iter()
            .map(|(kind, id)| json!([kind_str(*kind), id]))
            .collect::<Vec<_>>(),
        // How many of the day before's pending entries this day's file owed; null when the
        // day before was not reconciled (none could be looked for).
        "owed_by_day_before": r.owed_by_day_before,
        // Entries booked in the next day's first minutes whose rows this day's file held
        // (the processor's clock put them before midnight): the next day's run does not
        // report them missing from its file. And how many the day before claimed so.
        "claimed_entries": r.claimed_entries.iter()
            .map(|(kind, id)| json!([kind_str(*kind), id]))
            .collect::<Vec<_>>(),
        "claimed_by_day_before": r.claimed_by_day_before,
        // False: no presentments file for the date, so none of its clearing was checked.
        "presentments_delivered": inputs.iter().any(|i| i.role == crate::run::Role::Presentments),
        "presentments_matched": r.report.presentments_matched,
        "breaks": r.report.breaks.len(),
        "breaks_by_class": counts,
        "ledger_entries": r.ledger_entries,
        "file_rows": r.rows,
        "totals": {
            "ledger": totals_json(&r.report.ledger_totals),
            "transactions_file": totals_json(&r.report.file_totals),
            "presentments_file": totals_json(&r.report.presentment_totals),
        },
        "files": inputs.iter().map(|i| json!({
            "name": i.name,
            "role": i.role.as_str(),
            "size_bytes": i.size,
            "sha256": crate::sftp::hex(&i.sha256),
            "import": file_status(i.status),
        })).collect::<Vec<_>>(),
        "malformed_rows": r.malformed.len(),
        "malformed": malformed,
        "elapsed_ms": elapsed.as_millis() as u64,
        "performance": {
            "partitions": r.partitions,
            "match_ms": r.elapsed.as_millis() as u64,
            // Ledger entries and file rows, both read and matched.
            "rows_per_second": ((r.ledger_entries + r.rows) as f64 / r.elapsed.as_secs_f64().max(0.001)).round() as u64,
            "peak_rss_kib": r.peak_rss_kib,
        },
    })
}

/// The one-page human summary.
pub fn summary_text(
    run: &RunRecord,
    breaks: &[BreakRecord],
    summary: &Value,
    largest: usize,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Reconciliation of {} - {}",
        run.business_date,
        match (run.break_count, run.malformed_rows, run.status.as_str()) {
            (0, 0, "incomplete") => "INCOMPLETE: no presentments file",
            (0, 0, _) => "CLEAN",
            (0, _, _) => "INCOMPLETE: rows not read",
            _ => "BREAKS FOUND",
        }
    );
    let _ = writeln!(s, "{}", "=".repeat(60));
    let _ = writeln!(
        s,
        "matched {}  pending (grace) {}  presentments matched {}  breaks {}  malformed rows {}",
        run.matched, run.pending, run.presentments_matched, run.break_count, run.malformed_rows
    );
    // Runs recorded before this count was kept have no such field: nothing to say.
    match summary.get("owed_by_day_before") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
        Some(Value::Number(n)) => {
            let _ = writeln!(s, "owed by the day before (booked late, checked here) {n}");
        }
        Some(_) => {
            let _ = writeln!(
                s,
                "the day before was not reconciled: entries it left pending were not looked for"
            );
        }
    }
    if let Some(n) = summary["claimed_by_day_before"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(
            s,
            "claimed by the day before (booked in this day's first minutes, in its file) {n}"
        );
    }
    if summary.get("presentments_delivered") == Some(&Value::Bool(false)) {
        let _ = writeln!(
            s,
            "no presentments file was delivered: the day's clearing was not checked"
        );
    }
    let _ = writeln!(s, "\nFiles");
    for f in summary["files"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "  {:<13} {}  {} bytes  {} (v{})",
            f["role"].as_str().unwrap_or(""),
            f["name"].as_str().unwrap_or(""),
            f["size_bytes"],
            f["import"]["status"].as_str().unwrap_or("?"),
            f["import"]["version"]
        );
    }
    let _ = writeln!(s, "\nTotals per currency (debits / credits)");
    let t = &summary["totals"];
    let mut currencies: Vec<&String> = Vec::new();
    for side in ["ledger", "transactions_file", "presentments_file"] {
        if let Some(m) = t[side].as_object() {
            currencies.extend(m.keys());
        }
    }
    currencies.sort();
    currencies.dedup();
    for c in currencies {
        let cell = |side: &str| {
            let v = &t[side][c.as_str()];
            if v.is_null() {
                "-".to_owned()
            } else {
                format!(
                    "{} / {}",
                    v["debits"].as_str().unwrap_or(""),
                    v["credits"].as_str().unwrap_or("")
                )
            }
        };
        let _ = writeln!(
            s,
            "  {c}  ledger {}  file {}  presentments {}",
            cell("ledger"),
            cell("transactions_file"),
            cell("presentments_file")
        );
    }
    let _ = writeln!(s, "\nBreaks by class");
    for class in BreakClass::ALL {
        let n = summary["breaks_by_class"][class.as_str()]
            .as_u64()
            .unwrap_or(0);
        if n > 0 {
            let _ = writeln!(s, "  {:<36} {n}", class.as_str());
        }
    }
    let mut top: Vec<&BreakRecord> = breaks.iter().collect();
    top.sort_by_key(|b| {
        std::cmp::Reverse(
            b.difference_minor
                .or(b.file_amount_minor)
                .or(b.ledger_amount_minor)
                .map(|v| v.unsigned_abs())
                .unwrap_or(0),
        )
    });
    if !top.is_empty() {
        let _ = writeln!(s, "\nLargest breaks");
        for b in top.into_iter().take(largest) {
            let cur = b.currency.as_deref().unwrap_or("");
            let amt = |v: Option<i64>| {
                v.map(|m| money(i128::from(m), cur))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                s,
                "  {:<34} {:<28} {cur} ledger {} file {} diff {}  {}",
                b.class,
                b.transaction_id,
                amt(b.ledger_amount_minor),
                amt(b.file_amount_minor),
                amt(b.difference_minor),
                b.detail
            );
        }
    }
    if run.malformed_rows > 0 {
        let _ = writeln!(s, "\nMalformed rows (first 10)");
        for m in summary["malformed"]
            .as_array()
            .into_iter()
            .flatten()
            .take(10)
        {
            let _ = writeln!(
                s,
                "  {}:{} {}",
                m["file"].as_str().unwrap_or(""),
                m["line"],
                m["reason"].as_str().unwrap_or("")
            );
        }
    }
    s
}

/// Writes breaks.csv, summary.json and summary.txt into `dir` (replacing earlier ones).
pub fn write_files(
    dir: &Path,
    run: &RunRecord,
    breaks: &[BreakRecord],
    summary: &Value,
    largest: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str,
                 f: &dyn Fn(&mut dyn std::io::Write) -> anyhow::Result<()>|
     -> anyhow::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f(&mut file)?;
        file.into_inner()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(())
    };
    write("breaks.csv", &|w| {
        let mut c = csv::Writer::from_writer(w);
        c.write_record([
            "seq",
            "class",
            "transaction_id",
            "kind",
            "currency",
            "ledger_amount",
            "file_amount",
            "difference",
            "file",
            "line",
            "detail",
        ])?;
        for b in breaks {
            let cur = b.currency.as_deref().unwrap_or("");
            let amt = |v: Option<i64>| v.map(|m| money(i128::from(m), cur)).unwrap_or_default();
            c.write_record([
                b.seq.to_string(),
                b.class.clone(),
                b.transaction_id.clone(),
                b.kind.clone().unwrap_or_default(),
                cur.to_owned(),
                amt(b.ledger_amount_minor),
                amt(b.file_amount_minor),
                amt(b.difference_minor),
                b.file.clone().unwrap_or_default(),
                b.line.map(|l| l.to_string()).unwrap_or_default(),
                b.detail.clone(),
            ])?;
        }
        c.flush()?;
        Ok(())
    })?;
    write("summary.json", &|w| {
        Ok(serde_json::to_writer_pretty(w, summary)?)
    })?;
    let text = summary_text(run, breaks, summary, largest);
    write("summary.txt", &|w| Ok(w.write_all(text.as_bytes())?))?;
    Ok(())
}
