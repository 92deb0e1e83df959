//! One reconciliation of a business date: fetch, record, match, store, report.

use crate::config::{Settings, Source};
use crate::parse::{self, CsvFormat, MalformedRows};
use crate::partition::{self, LineBases, PartReader, Record, Spill, SpillDir};
use crate::report;
use crate::sftp::{self, BusinessDate, Fetched, SftpAuth, SftpConfig};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ledger::reconcile::{
    Break, BreakClass, EntryKind, FileTransaction, LedgerEntry, MatchConfig, Matcher, Owed,
    PRESENTMENTS_FILE, PresentedElsewhere, PresentedOn, Presentment, Purchase, Report,
    TRANSACTIONS_FILE, sort_breaks,
};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use store::{BreakRecord, FileReceipt, FileStatus, RunRecord, Store};

/// Which of the two daily files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Transactions,
    Presentments,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Transactions => "transactions",
            Role::Presentments => "presentments",
        }
    }
}

/// A file ready to import.
#[derive(Debug, Clone)]
pub struct Input {
    pub role: Role,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    pub status: Option<FileStatus>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reconciled; `breaks` and unreadable rows above the threshold make the exit code 1;
    /// else a date without a presentments file (its clearing was not checked) makes it 3.
    Done {
        breaks: u64,
        above_threshold: bool,
        /// No presentments file was delivered for the date.
        without_presentments: bool,
        report_dir: PathBuf,
    },
    /// Every file was already imported and the date was reconciled: nothing changed.
    Unchanged,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Done {
                above_threshold,
                without_presentments,
                ..
            } => exit_code(*above_threshold, *without_presentments),
            Outcome::Unchanged => 0,
        }
    }
}

/// A run's exit code for cron and schedulers: 3 when the presentments file was not there
/// (a scheduler's retry reconciles it once it comes, and a retry whose files did not change
/// costs nothing), else 1 when the breaks are above the threshold, else 0. A day without its
/// presentments file and with breaks is 3 until the file comes: were it 1, the retry that
/// would check the clearing never runs.
pub fn exit_code(above_threshold: bool, without_presentments: bool) -> i32 {
    if without_presentments {
        3
    } else if above_threshold {
        1
    } else {
        0
    }
}

pub struct RunOptions {
    pub date: BusinessDate,
    /// Reconcile even if no file changed (the ledger may have).
    pub force: bool,
    /// Overrides `source.kind`.
    pub source: Option<Source>,
}

fn sha256_file(path: &Path) -> anyhow::Result<(u64, [u8; 32])> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().into()))
}

fn role_of(s: &Settings, date: &BusinessDate, name: &str) -> Option<Role> {
    let d = date.format(&s.files.date_format);
    if sftp::pattern_matches(&s.files.transactions.replace("{date}", &d), name) {
        Some(Role::Transactions)
    } else if sftp::pattern_matches(&s.files.presentments.replace("{date}", &d), name) {
        Some(Role::Presentments)
    } else {
        None
    }
}

fn sftp_config(s: &Settings) -> SftpConfig {
    let c = &s.sftp;
    SftpConfig {
        host: c.host.clone(),
        port: c.port,
        user: c.user.clone(),
        auth: if c.private_key.is_empty() {
            SftpAuth::Password(c.password.expose().to_owned())
        } else {
            SftpAuth::Key {
                private_key: PathBuf::from(&c.private_key),
                passphrase: (!c.private_key_passphrase.is_empty())
                    .then(|| c.private_key_passphrase.expose().to_owned()),
            }
        },
        host_key_sha256: c.host_key_sha256.clone(),
        remote_dir: c.remote_dir.clone(),
        patterns: vec![s.files.transactions.clone(), s.files.presentments.clone()],
        date_format: s.files.date_format.clone(),
        connect_timeout_ms: c.connect_timeout_ms,
        attempts: c.attempts,
        backoff_ms: c.backoff_ms,
        min_file_age_secs: c.min_file_age_secs,
    }
}

/// Gets the day's files from the configured source.
pub async fn collect(
    s: &Settings,
    source: &Source,
    date: &BusinessDate,
) -> anyhow::Result<Vec<Input>> {
    let found: Vec<(String, PathBuf)> = match source {
        Source::Sftp => {
            if s.sftp.host_key_sha256.is_empty() {
                bail!("sftp.host_key_sha256 is required: the server's host key is always pinned");
            }
            let cfg = sftp_config(s);
            let staging = s.source.staging_dir.join(date.to_string());
            std::fs::create_dir_all(&staging)
                .with_context(|| format!("cannot create {}", staging.display()))?;
            let d = date.clone();
            let fetched: Vec<Fetched> =
                tokio::task::spawn_blocking(move || sftp::fetch(&cfg, &d, &staging))
                    .await
                    .context("fetch task failed")?
                    .map_err(|e| anyhow::anyhow!("sftp fetch failed: {e}"))?;
            fetched.into_iter().map(|f| (f.name, f.path)).collect()
        }
        Source::Dir(dir) => {
            let mut v = Vec::new();
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
            {
                let entry = entry?;
                // Links too: a mounted volume's files (Kubernetes) are links. A link to a
                // directory is skipped as a directory is; one that leads nowhere is kept, and
                // fails when it is read if it is one of the date's files.
                let kind = entry.file_type()?;
                let to_directory =
                    kind.is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
                if (kind.is_file() || kind.is_symlink()) && !to_directory {
                    v.push((
                        entry.file_name().to_string_lossy().into_owned(),
                        entry.path(),
                    ));
                }
            }
            v
        }
    };
    let mut inputs = Vec::new();
    for (name, path) in found {
        let Some(role) = role_of(s, date, &name) else {
            continue;
        };
        let p = path.clone();
        let (size, sha256) = tokio::task::spawn_blocking(move || sha256_file(&p)).await??;
        inputs.push(Input {
            role,
            name,
            path,
            size,
            sha256,
            status: None,
        });
    }
    inputs.sort_by(|a, b| (a.role as u8, &a.name).cmp(&(b.role as u8, &b.name)));
    // The same bytes under another name (`transactions_20260315_r1.csv` beside
    // `transactions_20260315.csv`) are one file delivered twice: read twice, every row
    // would be its own duplicate.
    let mut seen = std::collections::HashSet::new();
    inputs.retain(|i| {
        let first = seen.insert((i.role as u8, i.sha256));
        if !first {
            tracing::warn!(file = %i.name, "the same content as another file of the date: left out");
        }
        first
    });
    Ok(inputs)
}

fn source_label(s: &Settings, source: &Source) -> String {
    match source {
        Source::Sftp => format!(
            "sftp://{}:{}{}",
            s.sftp.host, s.sftp.port, s.sftp.remote_dir
        ),
        Source::Dir(d) => format!("dir:{}", d.display()),
    }
}

/// Counters of a running reconciliation, shown on a terminal while it runs.
#[derive(Default)]
struct Counters {
    ledger: AtomicU64,
    rows: AtomicU64,
    matched: AtomicU64,
}

/// A progress line on stderr when it is a terminal (rows read, matched, elapsed, rate),
/// refreshed by a timer rather than per row; nothing otherwise.
struct ProgressLine {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressLine {
    fn start(counters: Arc<Counters>, parts: usize) -> ProgressLine {
        if !std::io::stderr().is_terminal() {
            return ProgressLine {
                stop: None,
                task: None,
            };
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} reconciling: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            loop {
                let l = counters.ledger.load(Ordering::Relaxed);
                let r = counters.rows.load(Ordering::Relaxed);
                let m = counters.matched.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                pb.set_message(format!(
                    "ledger {l} | file rows {r} | matched {m} | {parts} partition(s) | {secs:.1} s | {:.0} rows/s",
                    (l + r) as f64 / secs.max(0.001)
                ));
                pb.tick();
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
            pb.finish_and_clear();
        });
        ProgressLine {
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The process's peak resident size so far (VmHWM), in KiB; `None` without `/proc`.
pub fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Everything a run produced, before it is stored.
pub struct Reconciled {
    pub report: Report,
    pub malformed: MalformedRows,
    pub ledger_entries: u64,
    pub rows: u64,
    /// Partitions the day was matched in (1: it fit in memory at once).
    pub partitions: usize,
    /// Entries the day before's run left pending and this day's file owed (`None`: the
    /// day before was not reconciled, so none could be looked for).
    pub owed_by_day_before: Option<usize>,
    /// Entries booked in the first `matching.grace_minutes` of the next day whose rows this
    /// day's file held (the processor's clock put them before midnight, ours after): matched
    /// here, and not missing from the next day's file.
    pub claimed_entries: Vec<(EntryKind, String)>,
    /// Entries of this day the day before's run claimed so (`claimed_entries` of its
    /// summary) that this day's file does not hold: not missing (`None`: the day before
    /// was not reconciled, so none could be known).
    pub claimed_by_day_before: Option<u64>,
    /// How long reading and matching took.
    pub elapsed: std::time::Duration,
    /// Peak resident size of the process when matching ended, if the system tells.
    pub peak_rss_kib: Option<u64>,
    /// Where each file's lines start in the report's line numbers.
    pub line_bases: LineBases,
}

impl Reconciled {
    /// The breaks as a run stores and writes them, each row's line as its file has it.
    pub fn break_records(&self) -> Vec<BreakRecord> {
        (self.report.breaks.iter().enumerate())
            .map(|(i, b)| break_record(i as i64 + 1, b, &self.line_bases))
            .collect()
    }

    /// The first presentments as the run keeps them (id, line in its file, amount, currency).
    pub fn presented_rows(&self) -> Vec<(&str, u64, i64, ledger::Currency)> {
        let mut rows = self.report.presented_rows();
        for r in &mut rows {
            r.1 = self.line_bases.locate(PRESENTMENTS_FILE, r.1).1;
        }
        rows
    }
}

/// Matches the day partition by partition (see [`crate::partition`]): both sides are
/// read at once (the ledger from the store, the files on a blocking thread) into
/// partitions by transaction id, then each partition is matched on its own, two at a
/// time, so memory is bounded by the partition size whatever the size of the day.
pub async fn reconcile(
    s: &Settings,
    store: &Store,
    date: &BusinessDate,
    inputs: &[Input],
) -> anyhow::Result<Reconciled> {
    let clock = Instant::now();
    let zone = s.matching.zone()?;
    let (from, to) = zone.day_window_ms(date.year, date.month, date.day);
    let config = MatchConfig {
        presentment_tolerance_minor: s.matching.presentment_tolerance_minor,
        presentment_tolerance_by_currency: s.presentment_tolerances()?,
        grace_from_ms: to - s.matching.grace_minutes * 60_000,
    };
    let file_bytes: u64 = inputs.iter().map(|i| i.size).sum();
    let expected = store.ledger_entry_count(from, to).await?;
    let parts = partition::parts_for(expected, file_bytes, s.matching.partition_entries);
    let spill_dir = if parts > 1 {
        Some(SpillDir::create(&s.source.staging_dir)?)
    } else {
        None
    };
    let dir = spill_dir.as_ref().map(|d| d.path().to_owned());
    let counters = Arc::new(Counters::default());
    let progress = ProgressLine::start(counters.clone(), parts);

    // The files on a blocking thread while this task reads the ledger.
    let fmt = CsvFormat::from(&s.csv);
    let map = s.mapping.clone();
    let files = inputs.to_vec();
    let file_dir = dir.clone();
    let c = counters.clone();
    let file_side = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut spill = Spill::new(parts, file_dir.as_deref(), "file")?;
        let mut side = FileSide {
            fmt,
            malformed: MalformedRows::default(),
            read: &c.rows,
            failed: None,
        };
        let mut rows = 0;
        let mut bases = LineBases::default();
        // Each kind's files in name order, each numbered on from the last line of the one
        // before (see `LineBases`).
        for (role, kind) in [
            (Role::Transactions, TRANSACTIONS_FILE),
            (Role::Presentments, PRESENTMENTS_FILE),
        ] {
            let mut top = 0;
            for input in files.iter().filter(|i| i.role == role) {
                let (base, path) = (top, &input.path);
                bases.start(kind, &input.name, base);
                let mut seen = |line: u64| top = top.max(base + line);
                rows += match role {
                    Role::Transactions => side.spill(path, &map.transactions, |r| {
                        seen(r.line);
                        spill.transaction(r, base)
                    })?,
                    Role::Presentments => side.spill(path, &map.presentments, |r| {
                        seen(r.line);
                        spill.presentment(r, base)
                    })?,
                };
            }
        }
        if let Some(e) = side.failed {
            return Err(e);
        }
        let malformed = side.malformed;
        Ok((spill.finish()?, malformed, rows, bases))
    });
    let mut ledger_spill = Spill::new(parts, dir.as_deref(), "ledger")?;
    let mut failed: Option<anyhow::Error> = None;
    // Partition files are written through small buffers into the page cache: short
    // enough to do on this task, which is waiting on the database most of the time.
    let read = store
        .ledger_entries(from, to, |e| {
            if failed.is_none()
                && let Err(e) = ledger_spill.ledger(&e)
            {
                failed = Some(e);
            }
            counters.ledger.fetch_add(1, Ordering::Relaxed);
        })
        .await;
    let file_side = file_side.await.context("file reading task failed");
    let ledger_entries = read?;
    if let Some(e) = failed {
        return Err(e);
    }
    let (file_written, malformed, rows, line_bases) = file_side??;
    let ledger_written = ledger_spill.finish()?;

    let c = counters.clone();
    let second = config.clone();
    let third = config.clone();
    // The next day's first minutes, whose entries this day's file may hold; nothing booked
    // after them is held against it.
    let next_day = (to, to.saturating_add(s.matching.grace_minutes * 60_000));
    let owed = owed_by_day_before(store, date, next_day.1).await?;
    if owed.is_none() {
        tracing::warn!(
            date = %date,
            "the day before was not reconciled: entries it left pending are not looked for in this day's file"
        );
    }
    let owed_by_day_before = owed.as_ref().map(|o| o.len());
    let owed = owed.unwrap_or_default();
    // A rejected row the matcher holds no entry for is set aside, not taken as a decline
    // both sides agree on, when we booked the entry: owed by the day before, or booked in
    // the next day's first minutes (the processor's clock before midnight, ours after).
    let mut owing: std::collections::HashSet<(EntryKind, Box<str>)> = owed
        .keys()
        .map(|(k, id)| (*k, Box::from(id.as_str())))
        .collect();
    if next_day.1 > next_day.0 {
        store
            .ledger_entries(next_day.0, next_day.1, |e| {
                if e.effective {
                    owing.insert((e.kind, e.transaction_id));
                }
            })
            .await?;
    }
    let owing: Owed = Arc::new(owing);
    let claimed = claimed_by_day_before(store, date).await?;
    let known_claims = claimed.is_some();
    let claimed: Owed = Arc::new(claimed.unwrap_or_default());
    let report = tokio::task::spawn_blocking(move || {
        match_parts(config, (&owing, &claimed), ledger_written, file_written, &c)
    })
    .await
    .context("matching task failed")??;
    let (report, claimed_entries) = earlier_days(store, second, report, owed, next_day).await?;
    let claimed_by_day_before = known_claims.then_some(report.claimed_by_day_before);
    // Presentments held against those of other business dates: the same id again, and
    // purchases and their refunds presented on their own.
    let mut report = report;
    let purchases = refund_purchases(store, &report, next_day.1).await?;
    let other = presented_on_other_dates(store, date, &report, &purchases).await?;
    if !other.is_empty() {
        let again = other
            .iter()
            .map(|(id, p)| (id.clone(), p.business_date.clone()))
            .collect();
        ledger::reconcile::presented_again(&mut report, &again);
    }
    if !purchases.is_empty() {
        ledger::reconcile::refunds_cleared_alone(&mut report, &purchases, &other, &third);
    }
    progress.finish().await;
    drop(spill_dir);
    Ok(Reconciled {
        report,
        malformed,
        ledger_entries,
        rows,
        partitions: parts,
        owed_by_day_before,
        claimed_entries,
        claimed_by_day_before,
        elapsed: clock.elapsed(),
        peak_rss_kib: peak_rss_kib(),
        line_bases,
    })
}

/// Matches every partition, two at a time (the machine's cores, at most two: the
/// memory bound is two partitions), and merges their reports in partition order.
fn match_parts(
    config: MatchConfig,
    (owed, claimed): (&Owed, &Owed),
    ledger: partition::Written,
    file: partition::Written,
    counters: &Counters,
) -> anyhow::Result<Report> {
    let parts = ledger.parts();
    // Opened when their turn comes: a reader's buffer per partition up front would grow
    // with the day.
    let sides = Mutex::new((ledger, file));
    let open = |i: usize| -> anyhow::Result<(usize, PartReader, PartReader)> {
        let mut g = sides
            .lock()
            .map_err(|_| anyhow::anyhow!("a matching thread failed"))?;
        let (l, f) = &mut *g;
        let entries = usize::try_from(l.entries[i]).unwrap_or(0);
        Ok((entries, l.take(i)?, f.take(i)?))
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 2)
        .min(parts);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<anyhow::Result<Report>>>> =
        (0..parts).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= parts {
                        break;
                    }
                    let r = open(i).and_then(|(entries, l, f)| {
                        let m = Matcher::with_capacity(config.clone(), entries)
                            .owing(owed.clone())
                            .claimed_before(claimed.clone());
                        match_part(m, l, f, counters)
                    });
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let mut report = Report::default();
    for slot in results {
        let r = slot
            .into_inner()
            .ok()
            .flatten()
            .context("a partition was not matched")??;
        report.merge(r);
    }
    Ok(report)
}

fn match_part(
    mut m: Matcher,
    mut ledger: PartReader,
    mut file: PartReader,
    counters: &Counters,
) -> anyhow::Result<Report> {
    // Entries first, then the links to them, then the file rows (Matcher's order).
    let mut links = Vec::new();
    while let Some(r) = ledger.next_record()? {
        match r {
            Record::Entry(e) => m.add_ledger(e),
            Record::Link {
                original,
                currency,
                amount_minor,
                refund,
            } => links.push((original, currency, amount_minor, refund)),
            _ => anyhow::bail!("a ledger partition holds a file row"),
        }
    }
    for (original, currency, amount, refund) in links {
        m.add_adjustment_link(&original, currency, amount, refund);
    }
    let mut n = 0u64;
    while let Some(r) = file.next_record()? {
        match r {
            Record::Transaction(t) => m.transaction(t),
            Record::Presentment(p) => m.presentment(p),
            _ => anyhow::bail!("a file partition holds a ledger entry"),
        }
        n += 1;
        if n.is_multiple_of(4096) {
            counters.matched.fetch_add(4096, Ordering::Relaxed);
        }
    }
    counters.matched.fetch_add(n % 4096, Ordering::Relaxed);
    Ok(m.finish())
}

/// The day's presentments of ids a run of another business date reconciled a presentment
/// of (dates may be reconciled out of order: a late file is caught up after the next day),
/// with the first such date and amount: second clearings of one authorization, each
/// `presented_again`. Also of `refund_purchases` and their refunds, for
/// [`ledger::reconcile::refunds_cleared_alone`].
async fn presented_on_other_dates(
    store: &Store,
    date: &BusinessDate,
    report: &Report,
    refund_purchases: &[Purchase],
) -> anyhow::Result<PresentedElsewhere> {
    let ids: Vec<&str> = report
        .presented
        .iter()
        .map(|p| &*p.transaction_id)
        .chain(refund_purchases.iter().map(|p| &*p.transaction_id))
        .chain(
            refund_purchases
                .iter()
                .flat_map(|p| p.refunds.iter().map(|(id, _)| &**id)),
        )
        .collect();
    let other = store.presented_elsewhere(&date.to_string(), &ids).await?;
    Ok(other
        .into_iter()
        .map(|(id, business_date, amount, currency)| {
            let currency = currency.and_then(|c| ledger::Currency::parse_any(&c).ok());
            let on = PresentedOn {
                business_date,
                amount: amount.zip(currency),
            };
            (Box::from(id.as_str()), on)
        })
        .collect())
}

/// The purchases that a refund presentment of this day could concern, as the ledger holds
/// them now: those presented this day with refunds linked, and those whose refund was
/// presented on its own this day.
pub async fn refund_purchases(
    store: &Store,
    report: &Report,
    booked_before_ms: i64,
) -> anyhow::Result<Vec<Purchase>> {
    if report.refunds_presented.is_empty() && report.presented_with_refunds.is_empty() {
        return Ok(Vec::new());
    }
    let refunds: Vec<String> = report
        .refunds_presented
        .iter()
        .map(|r| r.to_string())
        .collect();
    let presented: std::collections::HashSet<&str> = refunds.iter().map(String::as_str).collect();
    let mut ids: std::collections::BTreeSet<String> = report
        .presented_with_refunds
        .iter()
        .map(|a| a.to_string())
        .collect();
    for e in store.ledger_entries_of(&refunds, booked_before_ms).await? {
        if e.refund
            && presented.contains(&*e.transaction_id)
            && let Some(original) = e.original_transaction_id
        {
            ids.insert(original.into());
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let entries = store.ledger_entries_of(&ids, booked_before_ms).await?;
    let mut purchases: std::collections::HashMap<&str, Purchase> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Authorization && e.effective)
        .filter(|e| {
            ids.binary_search_by(|id| (**id).cmp(&*e.transaction_id))
                .is_ok()
        })
        .map(|e| {
            let p = Purchase {
                transaction_id: e.transaction_id.clone(),
                currency: e.currency,
                net_minor: i128::from(e.amount_minor),
                refunds: Vec::new(),
            };
            (&*e.transaction_id, p)
        })
        .collect();
    for e in entries
        .iter()
        .filter(|e| e.kind == EntryKind::Adjustment && e.effective)
    {
        let Some(p) = e
            .original_transaction_id
            .as_deref()
            .and_then(|o| purchases.get_mut(o))
            .filter(|p| p.currency == e.currency)
        else {
            continue;
        };
        p.net_minor += i128::from(e.amount_minor);
        if e.refund {
            p.refunds.push((e.transaction_id.clone(), e.amount_minor));
        }
    }
    let mut purchases: Vec<Purchase> = purchases.into_values().collect();
    purchases.retain(|p| !p.refunds.is_empty());
    Ok(purchases)
}

/// Rows whose ledger entry was booked on another day. Clearing comes over days (a
/// presentment may name an authorization of any earlier day), and an entry booked in the
/// last minutes of the day before (pending then, `matching.grace_minutes`) is in this day's
/// transactions file: the day's ledger does not hold those entries, so the partitions
/// report such presentments as `presentment_without_authorization` and such transactions
/// rows as `missing_in_ledger`. Their ids are looked up in the whole ledger (an entry with
/// the adjustments that name it), and those rows are matched again against what is there:
/// matched, or a break of what they come to (an amount, a status, a currency). Only the
/// entries the day before's run found pending are owed (its summary's `pending_entries`):
/// a transactions row of any other entry stays a break (reported again, or on another day
/// than we booked it). An owed entry that this day's file does not hold either is
/// `missing_in_file` now. Only what the rows come to is kept: the entries themselves, and
/// the totals, were reconciled on their own days. A rejected row of an owed entry is a
/// `status_mismatch` (we booked it, the processor rejected it).
///
/// The other way round, an approved row of an entry booked in the first minutes of the
/// next day (`next_day`: from midnight, `matching.grace_minutes` long; the processor's clock
/// put it before midnight, ours after) is matched against that entry too, and the entry is
/// claimed: the next day's run does not report it missing from its file.
async fn earlier_days(
    store: &Store,
    config: MatchConfig,
    report: Report,
    owed: std::collections::HashMap<(EntryKind, String), LedgerEntry>,
    next_day: (i64, i64),
) -> anyhow::Result<(Report, Vec<(EntryKind, String)>)> {
    let (mut report, rematched, claimed) = rematch(store, config, report, &owed, next_day).await?;
    // An entry pending the day before and absent from this day's file too is missing: no
    // third file owes it.
    for (key, e) in owed {
        if !rematched.contains(&key) {
            let why = " of this day either, pending the day before";
            report.breaks.push(Break::missing_in_file(&e, why));
        }
    }
    sort_breaks(&mut report.breaks);
    Ok((report, claimed))
}

/// The entries a list of the day before's run summary names (`[[kind, id], ...]`: its
/// `pending_entries` or `claimed_entries`). `None` when that day was not reconciled.
async fn day_before_entries(
    store: &Store,
    date: &BusinessDate,
    list: &str,
) -> anyhow::Result<Option<std::collections::HashSet<(EntryKind, String)>>> {
    let Some(before) = jiff::civil::date(date.year as i16, date.month as i8, date.day as i8)
        .yesterday()
        .ok()
    else {
        return Ok(None);
    };
    let Some(run) = store.run(&before.to_string()).await? else {
        return Ok(None);
    };
    let summary: serde_json::Value = serde_json::from_str(&run.summary).unwrap_or_default();
    let entries = summary[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let kind = match e[0].as_str()? {
                "AUTHORIZATION" => EntryKind::Authorization,
                "ADJUSTMENT" => EntryKind::Adjustment,
                _ => return None,
            };
            Some((kind, e[1].as_str()?.to_owned()))
        })
        .collect();
    Ok(Some(entries))
}

/// The entries the day before's run claimed (booked in this day's first minutes, held by
/// its file: `claimed_entries` of its summary). `None` when that day was not reconciled.
async fn claimed_by_day_before(
    store: &Store,
    date: &BusinessDate,
) -> anyhow::Result<Option<std::collections::HashSet<(EntryKind, Box<str>)>>> {
    let claimed = day_before_entries(store, date, "claimed_entries").await?;
    Ok(claimed.map(|c| c.into_iter().map(|(k, id)| (k, Box::from(id))).collect()))
}

/// The entries the day before's run found pending (booked in its grace window, absent from
/// its file: `pending_entries` of its summary), as the ledger holds them now and still
/// effective. `None` when that day was not reconciled: what its file held is not known.
async fn owed_by_day_before(
    store: &Store,
    date: &BusinessDate,
    booked_before_ms: i64,
) -> anyhow::Result<Option<std::collections::HashMap<(EntryKind, String), LedgerEntry>>> {
    let mut owed = std::collections::HashMap::new();
    let Some(keys) = day_before_entries(store, date, "pending_entries").await? else {
        return Ok(None);
    };
    if keys.is_empty() {
        return Ok(Some(owed));
    }
    let ids: Vec<String> = keys.iter().map(|(_, id)| id.clone()).collect();
    for e in store.ledger_entries_of(&ids, booked_before_ms).await? {
        let key = (e.kind, e.transaction_id.to_string());
        if e.effective && keys.contains(&key) {
            owed.insert(key, e);
        }
    }
    Ok(Some(owed))
}

/// The matching of [`earlier_days`]: the rows it matches again, against entries of any day
/// (presentments) or `owed` (transactions rows), and the keys of the rows of `owed` it saw.
#[allow(clippy::type_complexity)]
async fn rematch(
    store: &Store,
    config: MatchConfig,
    mut report: Report,
    owed: &std::collections::HashMap<(EntryKind, String), LedgerEntry>,
    (next_from, next_until): (i64, i64),
) -> anyhow::Result<(
    Report,
    std::collections::HashSet<(EntryKind, String)>,
    Vec<(EntryKind, String)>,
)> {
    let mut rematched = std::collections::HashSet::new();
    let mut claimed = Vec::new();
    let again_class = |b: &Break| {
        matches!(
            (b.class, b.file),
            (BreakClass::PresentmentWithoutAuthorization, _)
                | (BreakClass::MissingInLedger, Some("transactions"))
        )
    };
    let owed_rejected = std::mem::take(&mut report.owed_rejected);
    let unknown: Vec<String> = report
        .breaks
        .iter()
        .filter(|b| again_class(b))
        .map(|b| b.transaction_id.clone())
        .chain(owed_rejected.iter().map(|r| r.transaction_id.to_string()))
        .collect();
    if unknown.is_empty() {
        return Ok((report, rematched, claimed));
    }
    let mut m = Matcher::new(config);
    // Presentments: authorizations and refunds of any day. Transactions rows: entries pending the day
    // before, and entries booked in the next day's first minutes (a row of an entry of any
    // other day stays a break: the processor reported it again, or on another day than we
    // booked it).
    let mut found = std::collections::HashSet::new();
    // Refunds, which may be presented on their own.
    let mut refunds = std::collections::HashSet::new();
    let mut early_next_day = std::collections::HashSet::new();
    for e in store.ledger_entries_of(&unknown, next_until).await? {
        let key = (e.kind, e.transaction_id.to_string());
        if e.refund {
            refunds.insert(key.1.clone());
        }
        // Declined ones too: an approved row of one is a status mismatch, not a row of no
        // entry at all.
        if (next_from..next_until).contains(&e.booked_at_ms) {
            early_next_day.insert(key.clone());
        }
        found.insert(key);
        m.add_ledger(e);
    }
    let (again, kept): (Vec<Break>, Vec<Break>) = std::mem::take(&mut report.breaks)
        .into_iter()
        .partition(|b| {
            let known = match b.class {
                BreakClass::PresentmentWithoutAuthorization => {
                    found.contains(&(EntryKind::Authorization, b.transaction_id.clone()))
                        || refunds.contains(&b.transaction_id)
                }
                _ => b.kind.is_some_and(|k| {
                    let key = (k, b.transaction_id.clone());
                    owed.contains_key(&key) || early_next_day.contains(&key)
                }),
            };
            again_class(b) && known && b.currency.is_some() && b.file_amount_minor.is_some()
        });
    report.breaks = kept;
    // A refund of another day presented twice: its second row is an adjustment's too.
    for b in report.breaks.iter_mut() {
        if b.class == BreakClass::DuplicateInFile
            && b.file == Some(ledger::reconcile::PRESENTMENTS_FILE)
            && refunds.contains(&b.transaction_id)
        {
            b.kind = Some(EntryKind::Adjustment);
        }
    }
    // Rejected rows of owed entries: each is matched against its entry (the matcher only
    // set them aside when the entry is owed, and an owed entry is effective).
    for row in owed_rejected {
        let key = (row.kind, row.transaction_id.to_string());
        if early_next_day.contains(&key) {
            claimed.push(key.clone());
        }
        rematched.insert(key);
        m.transaction(row);
    }
    for b in again {
        let (Some(currency), Some(amount_minor)) = (b.currency, b.file_amount_minor) else {
            continue;
        };
        let line = b.line.unwrap_or(0);
        match (b.class, b.kind) {
            (BreakClass::MissingInLedger, Some(kind)) => {
                let key = (kind, b.transaction_id.clone());
                if early_next_day.contains(&key) {
                    claimed.push(key.clone());
                }
                rematched.insert(key);
                m.transaction(FileTransaction {
                    line,
                    transaction_id: b.transaction_id,
                    kind,
                    // Only an approved row is missing in the ledger (a rejected one is
                    // matched).
                    approved: true,
                    currency,
                    amount_minor,
                    original_transaction_id: None,
                })
            }
            _ => m.presentment(Presentment {
                line,
                transaction_id: b.transaction_id,
                currency,
                amount_minor,
            }),
        }
    }
    let second = m.finish();
    report.matched += second.matched;
    report.presentments_matched += second.presentments_matched;
    report.refunds_presented.extend(second.refunds_presented);
    report
        .presented_with_refunds
        .extend(second.presented_with_refunds);
    report.breaks.extend(
        second
            .breaks
            .into_iter()
            .filter(|b| matches!(b.file, Some("presentments" | "transactions"))),
    );
    Ok((report, rematched, claimed))
}

/// Whether a run's summary names exactly `inputs` (by name and SHA-256).
fn made_from(summary: &str, inputs: &[Input]) -> bool {
    let mut now: Vec<(String, String)> = inputs
        .iter()
        .map(|i| (i.name.clone(), sftp::hex(&i.sha256)))
        .collect();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(summary) else {
        return false;
    };
    let Some(files) = v["files"].as_array() else {
        return false;
    };
    let mut then: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| {
            Some((
                f["name"].as_str()?.to_owned(),
                f["sha256"].as_str()?.to_owned(),
            ))
        })
        .collect();
    now.sort();
    then.sort();
    now == then
}

fn break_record(seq: i64, b: &Break, bases: &LineBases) -> BreakRecord {
    let (file, line) = match (b.file, b.line) {
        (Some(kind), Some(line)) => {
            let (file, line) = bases.locate(kind, line);
            (Some(file), Some(line))
        }
        (file, line) => (file.map(str::to_owned), line),
    };
    BreakRecord {
        seq,
        class: b.class.as_str().to_owned(),
        transaction_id: b.transaction_id.clone(),
        kind: b.kind.map(|k| report::kind_str(k).to_owned()),
        currency: b.currency.map(|c| c.code().to_owned()),
        ledger_amount_minor: b.ledger_amount_minor,
        file_amount_minor: b.file_amount_minor,
        difference_minor: b.difference_minor,
        file,
        line: line.and_then(|l| i64::try_from(l).ok()),
        detail: b.detail.clone(),
    }
}

/// Writes the report files of `stored` again when `summary.json` is not that run's: a run
/// whose files were written but whose store failed left them ahead of the stored run (the
/// files go first, so that a run whose files cannot be written is not stored).
async fn restore_report_files(
    s: &Settings,
    store: &Store,
    stored: &RunRecord,
) -> anyhow::Result<()> {
    let dir = s.report.dir.join(&stored.business_date);
    let summary: serde_json::Value = serde_json::from_str(&stored.summary)?;
    let on_disk = std::fs::read(dir.join("summary.json")).ok();
    if on_disk.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        == Some(summary.clone())
    {
        return Ok(());
    }
    let mut breaks = Vec::new();
    loop {
        let after = breaks.last().map_or(0, |b: &BreakRecord| b.seq);
        let page = store
            .run_breaks(&stored.business_date, None, 1000, after)
            .await?;
        if page.is_empty() {
            break;
        }
        breaks.extend(page);
    }
    tracing::warn!(business_date = %stored.business_date, "the report files were not the stored run's: written again");
    report::write_files(&dir, stored, &breaks, &summary, s.report.largest)
}

/// A run's status: `breaks`; else `incomplete` when rows of its files could not be read,
/// or no presentments file came (what was not read was not checked); else `clean`.
fn run_status(breaks: usize, malformed: usize, presentments_delivered: bool) -> &'static str {
    match (breaks, malformed, presentments_delivered) {
        (0, 0, true) => "clean",
        (0, _, _) => "incomplete",
        _ => "breaks",
    }
}

/// Runs the whole reconciliation of `opts.date`.
pub async fn run(s: &Settings, store: &Store, opts: &RunOptions) -> anyhow::Result<Outcome> {
    let started = store::now_ms();
    let clock = Instant::now();
    let date_str = opts.date.to_string();
    let source = match &opts.source {
        Some(src) => src.clone(),
        None => Source::parse(&s.source.kind)?,
    };
    let lock = store.try_lock_reconciler().await?.ok_or_else(|| {
        anyhow::anyhow!("another reconciliation is running (single-instance lock held)")
    })?;
    let result = async {
        let mut inputs = collect(s, &source, &opts.date).await?;
        if !inputs.iter().any(|i| i.role == Role::Transactions) {
            bail!("no transactions file for {date_str} at {}", source_label(s, &source));
        }
        if !inputs.iter().any(|i| i.role == Role::Presentments) {
            tracing::warn!(
                business_date = %date_str,
                "no presentments file for the date: its clearing is not checked"
            );
        }
        let label = source_label(s, &source);
        let mut changed = false;
        for input in &mut inputs {
            let status = store
                .record_file(&FileReceipt {
                    name: input.name.clone(),
                    business_date: date_str.clone(),
                    role: input.role.as_str().into(),
                    size_bytes: i64::try_from(input.size).unwrap_or(i64::MAX),
                    sha256: input.sha256,
                    source: label.clone(),
                    fetched_at_ms: store::now_ms(),
                })
                .await?;
            match status {
                FileStatus::AlreadyImported { version } => {
                    tracing::info!(file = %input.name, version, "already imported, unchanged")
                }
                FileStatus::New { version } => {
                    changed = true;
                    tracing::info!(file = %input.name, version, "new file")
                }
                FileStatus::NewVersion { version } => {
                    changed = true;
                    tracing::warn!(file = %input.name, version, "file re-delivered with different content: new version")
                }
            }
            input.status = Some(status);
        }
        // Unchanged only when the date's run was made from exactly these files: a run that
        // failed after recording new files, or files of an older run delivered again, run
        // again.
        if !opts.force
            && let Some(last) = store.run(&date_str).await?
            && made_from(&last.summary, &inputs)
        {
            if changed {
                tracing::info!(business_date = %date_str, "the date's run was made from these files");
            }
            restore_report_files(s, store, &last).await?;
            return Ok(Outcome::Unchanged);
        }
        let r = reconcile(s, store, &opts.date, &inputs).await?;
        let breaks = r.break_records();
        let summary = report::summary_json(&date_str, &r, &inputs, clock.elapsed());
        // A row that could not be read was not checked: it counts as a break would.
        let above = (breaks.len() + r.malformed.len()) as u64 > s.report.break_threshold;
        let presentments_delivered = inputs.iter().any(|i| i.role == Role::Presentments);
        let run = RunRecord {
            business_date: date_str.clone(),
            status: run_status(breaks.len(), r.malformed.len(), presentments_delivered).into(),
            started_at_ms: started,
            finished_at_ms: store::now_ms(),
            matched: r.report.matched as i64,
            pending: r.report.pending as i64,
            presentments_matched: r.report.presentments_matched as i64,
            break_count: breaks.len() as i64,
            malformed_rows: r.malformed.len() as i64,
            summary: summary.to_string(),
        };
        // The report files first: a run whose files cannot be written is not stored, so the
        // next run makes it again (stored first, it would be taken as done with the files
        // stale). Files written for a run that then fails to be stored are written again,
        // from the stored run, by the next run (`restore_report_files`).
        let dir = s.report.dir.join(&date_str);
        report::write_files(&dir, &run, &breaks, &summary, s.report.largest)?;
        let presented = r.presented_rows();
        store.replace_run(&run, &breaks, &presented).await?;
        tracing::info!(
            business_date = %date_str,
            matched = r.report.matched,
            breaks = breaks.len(),
            malformed = r.malformed.len(),
            ledger_entries = r.ledger_entries,
            rows = r.rows,
            elapsed_ms = clock.elapsed().as_millis() as u64,
            "reconciliation finished"
        );
        Ok(Outcome::Done {
            breaks: breaks.len() as u64,
            above_threshold: above,
            without_presentments: !presentments_delivered,
            report_dir: dir,
        })
    }
    .await;
    lock.release().await;
    result
}

/// The processor's files being read into the spill: what they hold that is malformed, the
/// rows read (for the progress line), and the first spill error. After that error nothing
/// more is spilled, but every file is still read to its end so that its rows are counted.
struct FileSide<'a> {
    fmt: CsvFormat,
    malformed: MalformedRows,
    read: &'a AtomicU64,
    failed: Option<anyhow::Error>,
}

impl FileSide<'_> {
    /// Reads one file into the spill with `put`; returns its rows.
    fn spill<C: parse::FileColumns>(
        &mut self,
        path: &Path,
        map: &C,
        mut put: impl FnMut(&C::Row) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let failed = &mut self.failed;
        let read = self.read;
        parse::rows(path, map, self.fmt, &mut self.malformed, |r| {
            if failed.is_none()
                && let Err(e) = put(&r)
            {
                *failed = Some(e);
            }
            read.fetch_add(1, Ordering::Relaxed);
        })
    }
}
