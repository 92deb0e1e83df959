//! Reconciliation records: the processor's files as received, the ledger side of a
//! business date, and one run (with its breaks) per date.

use crate::{Db, Store, StoreError, run_pool};
use futures_util::TryStreamExt;
use ledger::Currency;
use ledger::reconcile::{EntryKind, LedgerEntry};
use sqlx::Row;

/// A file as fetched, before it is recorded.
#[derive(Debug, Clone)]
pub struct FileReceipt {
    pub name: String,
    pub business_date: String,
    pub role: String,
    pub size_bytes: i64,
    pub sha256: [u8; 32],
    pub source: String,
    pub fetched_at_ms: i64,
}

/// What recording a file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// First time this name arrives for the date.
    New { version: i32 },
    /// The same name with other content: kept as a new version and reported.
    NewVersion { version: i32 },
    /// Identical to a version already imported: nothing to do.
    AlreadyImported { version: i32 },
}

/// One reconciliation run (the latest for its business date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub business_date: String,
    pub status: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub matched: i64,
    pub pending: i64,
    pub presentments_matched: i64,
    pub break_count: i64,
    pub malformed_rows: i64,
    /// JSON document: counts per class, totals per currency, files, malformed rows.
    pub summary: String,
}

/// One break of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakRecord {
    pub seq: i64,
    pub class: String,
    pub transaction_id: String,
    pub kind: Option<String>,
    pub currency: Option<String>,
    pub ledger_amount_minor: Option<i64>,
    pub file_amount_minor: Option<i64>,
    pub difference_minor: Option<i64>,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub detail: String,
}

/// Held while a reconciliation runs; dropping it lets another instance run.
pub enum RunLock {
    Pg(sqlx::PgConnection),
    File(std::fs::File),
}

/// Arbitrary constant: the advisory lock of the reconciler.
const PG_RECON_LOCK: i64 = 0x0072_6563_6f6e_6369;

macro_rules! run_from_row {
    ($r:expr) => {{
        let r = &$r;
        RunRecord {
            business_date: r.try_get("business_date")?,
            status: r.try_get("status")?,
            started_at_ms: r.try_get("started_at_ms")?,
            finished_at_ms: r.try_get("finished_at_ms")?,
            matched: r.try_get("matched")?,
            pending: r.try_get("pending")?,
            presentments_matched: r.try_get("presentments_matched")?,
            break_count: r.try_get("break_count")?,
            malformed_rows: r.try_get("malformed_rows")?,
            summary: r.try_get("summary")?,
        }
    }};
}

const RUN_COLUMNS: &str = "SELECT business_date, status, started_at_ms, finished_at_ms, matched, \
    pending, presentments_matched, break_count, malformed_rows, summary FROM recon_runs";

/// Whether a booked processor transaction's money stands, as the ledger sees it now:
/// a forced booking stands, a reversed one does not (nor a rejected approval that booked
/// nothing: a zero amount), an adjustment stands once booked.
macro_rules! ledger_side {
    ($where:literal) => {
        concat!(
            "SELECT kind, transaction_id, currency, amount_minor, original_transaction_id, \
    created_at_ms, CASE \
      WHEN verdict = 'APPROVED' AND verdict_movement_id IS NOT NULL THEN 1 \
      WHEN verdict = 'REJECTED' AND (verdict_movement_id IS NOT NULL OR movement_id IS NULL) THEN 0 \
      WHEN kind = 'ADJUSTMENT' THEN CASE WHEN movement_id IS NOT NULL OR amount_minor = 0 THEN 1 ELSE 0 END \
      WHEN status = 'APPROVED' THEN 1 ELSE 0 END AS effective, tx_type \
    FROM processor_transactions WHERE currency IS NOT NULL AND ",
            $where
        )
    };
}
/// A presentment of another business date: id, date, amount and currency (`None` for a
/// run made before they were kept).
pub type ElsewhereRow = (String, String, Option<i64>, Option<String>);

const LEDGER_SIDE: &str = ledger_side!("created_at_ms >= $1 AND created_at_ms < $2");

/// A row of [`ledger_side!`] in `currency` as the matcher takes it (by position).
macro_rules! ledger_entry {
    ($r:expr, $currency:expr) => {{
        let r = &$r;
        let kind: &str = r.try_get(0)?;
        let effective: i32 = r.try_get(6)?;
        let tx_id: &str = r.try_get(1)?;
        let original: Option<&str> = r.try_get(4)?;
        let tx_type: Option<&str> = r.try_get(7)?;
        LedgerEntry {
            transaction_id: Box::from(tx_id),
            kind: if kind == "ADJUSTMENT" {
                EntryKind::Adjustment
            } else {
                EntryKind::Authorization
            },
            effective: effective == 1,
            currency: $currency,
            amount_minor: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
            original_transaction_id: original.map(Box::from),
            booked_at_ms: r.try_get(5)?,
            refund: kind == "ADJUSTMENT" && tx_type == Some("REFUND"),
        }
    }};
}

impl Store {
    /// Records a fetched file; an identical one already imported is reported as such.
    pub async fn record_file(&self, f: &FileReceipt) -> Result<FileStatus, StoreError> {
        let same: Option<i32> = run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT version FROM recon_files WHERE name = $1 AND business_date = $2 AND sha256 = $3")
                .bind(&f.name)
                .bind(&f.business_date)
                .bind(&f.sha256[..])
                .fetch_optional(p)
                .await?
        });
        if let Some(version) = same {
            return Ok(FileStatus::AlreadyImported { version });
        }
        let last: Option<i32> = run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT MAX(version) FROM recon_files WHERE name = $1 AND business_date = $2")
                .bind(&f.name)
                .bind(&f.business_date)
                .fetch_one(p)
                .await?
        });
        let version = last.unwrap_or(0) + 1;
        run_pool!(&self.db, p => {
            sqlx::query(
                "INSERT INTO recon_files (name, business_date, role, version, size_bytes, sha256, source, fetched_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&f.name)
            .bind(&f.business_date)
            .bind(&f.role)
            .bind(version)
            .bind(f.size_bytes)
            .bind(&f.sha256[..])
            .bind(&f.source)
            .bind(f.fetched_at_ms)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(if version == 1 {
            FileStatus::New { version }
        } else {
            FileStatus::NewVersion { version }
        })
    }

    /// How many processor transactions were booked in `[from_ms, to_ms)` (what
    /// [`Store::ledger_entries`] reads, give or take rows without a currency): sizes the
    /// partitions of a reconciliation before it reads them.
    pub async fn ledger_entry_count(&self, from_ms: i64, to_ms: i64) -> Result<u64, StoreError> {
        let n: i64 = run_pool!(&self.db, p => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM processor_transactions WHERE created_at_ms >= $1 AND created_at_ms < $2",
            )
            .bind(from_ms)
            .bind(to_ms)
            .fetch_one(p)
            .await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Streams every processor transaction booked in `[from_ms, to_ms)` to `each`,
    /// without holding them all in memory here. Returns how many were read.
    pub async fn ledger_entries<F>(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut each: F,
    ) -> Result<u64, StoreError>
    where
        F: FnMut(LedgerEntry),
    {
        let mut n = 0u64;
        run_pool!(&self.db, p => {
            let mut rows = sqlx::query(LEDGER_SIDE).bind(from_ms).bind(to_ms).fetch(p);
            // A day has a handful of currencies: parse each code once, not once a row.
            let mut last: Option<(String, Currency)> = None;
            while let Some(r) = rows.try_next().await? {
                // By position (the order of LEDGER_SIDE): a name lookup per column per
                // row is measurable over millions of rows.
                let code: &str = r.try_get(2)?;
                let currency = match &last {
                    Some((c, cur)) if c == code => *cur,
                    _ => {
                        let Ok(cur) = Currency::parse_any(code) else { continue };
                        last = Some((code.to_owned(), cur));
                        cur
                    }
                };
                each(ledger_entry!(r, currency));
                n += 1;
            }
        });
        Ok(n)
    }

    /// The entries `ids` (authorizations and adjustments), whenever booked, and the
    /// adjustments that name them booked before `booked_before_ms`: what a day's rows of
    /// entries booked on other days are matched against (clearing comes over days; an entry
    /// of a day's last minutes is in the next day's file; one the processor forced in later
    /// is booked when its verdict came). The bound is the end of the day's grace window, so
    /// that a reversal booked after the day does not change what its file is held against.
    pub async fn ledger_entries_of(
        &self,
        ids: &[String],
        booked_before_ms: i64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "{} ((kind IN ('AUTHORIZATION', 'ADJUSTMENT') AND transaction_id IN ({list})) \
                 OR (kind = 'ADJUSTMENT' AND original_transaction_id IN ({list}) \
                     AND created_at_ms < ${}))",
                ledger_side!(""),
                chunk.len() + 1
            );
            run_pool!(&self.db, p => {
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                q = q.bind(booked_before_ms);
                for r in q.fetch_all(p).await? {
                    let code: &str = r.try_get(2)?;
                    let Ok(currency) = Currency::parse_any(code) else { continue };
                    out.push(ledger_entry!(r, currency));
                }
            });
        }
        Ok(out)
    }

    /// Of `ids`, those a run of another business date than `business_date` reconciled a
    /// presentment of (dates may be reconciled out of order), with the first such date and
    /// the amount and currency presented then (`None` for a run made before they were kept).
    pub async fn presented_elsewhere(
        &self,
        business_date: &str,
        ids: &[&str],
    ) -> Result<Vec<ElsewhereRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list = (2..chunk.len() + 2)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT transaction_id, business_date, amount_minor, currency FROM recon_presentments \
                 WHERE business_date <> $1 AND transaction_id IN ({list}) \
                 ORDER BY transaction_id, business_date"
            );
            run_pool!(&self.db, p => {
                let mut q = sqlx::query_as::<_, ElsewhereRow>(&sql).bind(business_date);
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(p).await? {
                    // The first date of each id.
                    if out.last().is_none_or(|last: &ElsewhereRow| last.0 != row.0) {
                        out.push(row);
                    }
                }
            });
        }
        Ok(out)
    }

    /// Replaces the run of `run.business_date`, its breaks and the presentments it
    /// reconciled (`presented`: id, line, amount and currency) in one transaction: a re-run
    /// changes that date and nothing else.
    pub async fn replace_run(
        &self,
        run: &RunRecord,
        breaks: &[BreakRecord],
        presented: &[(&str, u64, i64, Currency)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        crate::run!(&mut tx, c => {
            sqlx::query("DELETE FROM recon_presentments WHERE business_date = $1").bind(&run.business_date).execute(&mut *c).await?;
            sqlx::query("DELETE FROM recon_breaks WHERE business_date = $1").bind(&run.business_date).execute(&mut *c).await?;
            sqlx::query("DELETE FROM recon_runs WHERE business_date = $1").bind(&run.business_date).execute(&mut *c).await?;
            sqlx::query(
                "INSERT INTO recon_runs (business_date, status, started_at_ms, finished_at_ms, matched, pending, \
                 presentments_matched, break_count, malformed_rows, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&run.business_date)
            .bind(&run.status)
            .bind(run.started_at_ms)
            .bind(run.finished_at_ms)
            .bind(run.matched)
            .bind(run.pending)
            .bind(run.presentments_matched)
            .bind(run.break_count)
            .bind(run.malformed_rows)
            .bind(&run.summary)
            .execute(&mut *c)
            .await?;
            for chunk in breaks.chunks(500) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO recon_breaks (business_date, seq, class, transaction_id, kind, currency, \
                     ledger_amount_minor, file_amount_minor, difference_minor, file, line, detail) ",
                );
                qb.push_values(chunk, |mut b, x| {
                    b.push_bind(&run.business_date)
                        .push_bind(x.seq)
                        .push_bind(&x.class)
                        .push_bind(&x.transaction_id)
                        .push_bind(&x.kind)
                        .push_bind(&x.currency)
                        .push_bind(x.ledger_amount_minor)
                        .push_bind(x.file_amount_minor)
                        .push_bind(x.difference_minor)
                        .push_bind(&x.file)
                        .push_bind(x.line)
                        .push_bind(&x.detail);
                });
                qb.build().execute(&mut *c).await?;
            }
            for chunk in presented.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO recon_presentments (business_date, transaction_id, line, amount_minor, currency) ",
                );
                qb.push_values(chunk, |mut b, (id, line, amount, currency)| {
                    b.push_bind(&run.business_date)
                        .push_bind(*id)
                        .push_bind(i64::try_from(*line).unwrap_or(i64::MAX))
                        .push_bind(*amount)
                        .push_bind(currency.to_string());
                });
                qb.build().execute(&mut *c).await?;
            }
        });
        let summary = serde_json::from_str::<serde_json::Value>(&run.summary).ok();
        self.emit(
            &mut tx,
            "reconciliation.finished",
            &format!("evt-recon-{}-{}", run.business_date, run.finished_at_ms),
            run.finished_at_ms,
            || {
                serde_json::json!({
                    "business_date": run.business_date,
                    "status": run.status,
                    "started_at_ms": run.started_at_ms,
                    "finished_at_ms": run.finished_at_ms,
                    "matched": run.matched,
                    "pending": run.pending,
                    "presentments_matched": run.presentments_matched,
                    "break_count": run.break_count,
                    "malformed_rows": run.malformed_rows,
                    "summary": summary,
                })
            },
        )
        .await?;
        tx.commit().await
    }

    /// Runs, newest business date first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!("{RUN_COLUMNS} ORDER BY business_date DESC LIMIT $1");
        let runs = run_pool!(&self.db, p => {
            let mut out = Vec::new();
            for r in sqlx::query(&sql).bind(limit).fetch_all(p).await? {
                out.push(run_from_row!(r));
            }
            out
        });
        Ok(runs)
    }

    pub async fn run(&self, business_date: &str) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("{RUN_COLUMNS} WHERE business_date = $1");
        let run = run_pool!(&self.db, p => {
            match sqlx::query(&sql).bind(business_date).fetch_optional(p).await? {
                Some(r) => Some(run_from_row!(r)),
                None => None,
            }
        });
        Ok(run)
    }

    /// Breaks of a run in order, after sequence number `after`, optionally of one class.
    pub async fn run_breaks(
        &self,
        business_date: &str,
        class: Option<&str>,
        limit: i64,
        after: i64,
    ) -> Result<Vec<BreakRecord>, StoreError> {
        let rows = run_pool!(&self.db, p => {
            let rows = sqlx::query(
                "SELECT seq, class, transaction_id, kind, currency, ledger_amount_minor, file_amount_minor, \
                 difference_minor, file, line, detail FROM recon_breaks WHERE business_date = $1 AND seq > $2 \
                 AND ($3 = '' OR class = $3) ORDER BY seq LIMIT $4",
            )
            .bind(business_date)
            .bind(after)
            .bind(class.unwrap_or(""))
            .bind(limit)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(BreakRecord {
                    seq: r.try_get(0)?,
                    class: r.try_get(1)?,
                    transaction_id: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    currency: r.try_get(4)?,
                    ledger_amount_minor: r.try_get(5)?,
                    file_amount_minor: r.try_get(6)?,
                    difference_minor: r.try_get(7)?,
                    file: r.try_get(8)?,
                    line: r.try_get(9)?,
                    detail: r.try_get(10)?,
                });
            }
            out
        });
        Ok(rows)
    }

    /// Takes the single-instance lock of the reconciler without waiting; `None` when
    /// another instance holds it. Postgres: a session advisory lock; SQLite: a file lock
    /// beside the database.
    pub async fn try_lock_reconciler(&self) -> Result<Option<RunLock>, StoreError> {
        match &self.db {
            Db::Pg(p) => {
                let mut conn = p.acquire().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(PG_RECON_LOCK)
                    .fetch_one(&mut *conn)
                    .await?;
                // The lock lives as long as this session: keep the connection out of the
                // pool, so dropping the guard closes the session and frees the lock.
                Ok(got.then(|| RunLock::Pg(conn.detach())))
            }
            Db::Lite(_) => {
                let path = self
                    .sqlite_path
                    .as_ref()
                    .map(|p| p.with_extension("reconciler.lock"))
                    .ok_or_else(|| StoreError::Invalid("no database path for the lock".into()))?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| {
                        StoreError::Invalid(format!("cannot open {}: {e}", path.display()))
                    })?;
                match f.try_lock() {
                    Ok(()) => Ok(Some(RunLock::File(f))),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Invalid(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    ))),
                }
            }
        }
    }
}

impl RunLock {
    /// Releases the lock now (dropping does too, when the session or file closes).
    pub async fn release(self) {
        match self {
            RunLock::Pg(mut conn) => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(PG_RECON_LOCK)
                    .execute(&mut conn)
                    .await;
            }
            RunLock::File(f) => {
                let _ = f.unlock();
            }
        }
    }
}
