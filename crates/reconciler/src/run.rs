//! One reconciliation of a business date: fetch, record, match, store, report.

use crate::config::{Settings, Source};
use crate::parse::{self, CsvFormat, Malformed};
use crate::report;
use crate::schedule::{day_window_ms, parse_offset};
use crate::sftp::{self, BusinessDate, Fetched, SftpAuth, SftpConfig};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ledger::reconcile::{Break, MatchConfig, Matcher, Report};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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
    /// Reconciled; `breaks` above the threshold makes the exit code 1.
    Done {
        breaks: u64,
        above_threshold: bool,
        report_dir: PathBuf,
    },
    /// Every file was already imported and the date was reconciled: nothing changed.
    Unchanged,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Done {
                above_threshold: true,
                ..
            } => 1,
            _ => 0,
        }
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
        let n = f.read(&mut buf)?;
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
                if entry.file_type()?.is_file() {
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

fn progress(label: &str) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} rows ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(label.to_owned());
        pb
    } else {
        ProgressBar::hidden()
    }
}

/// Everything a run produced, before it is stored.
pub struct Reconciled {
    pub report: Report,
    pub malformed: Vec<Malformed>,
    pub ledger_entries: u64,
    pub rows: u64,
}

/// Loads the ledger side of the day and streams the files through the matcher.
pub async fn reconcile(
    s: &Settings,
    store: &Store,
    date: &BusinessDate,
    inputs: &[Input],
) -> anyhow::Result<Reconciled> {
    let offset = parse_offset(&s.matching.utc_offset)?;
    let (from, to) = day_window_ms(date.year, date.month, date.day, offset);
    let mut matcher = Matcher::new(MatchConfig {
        presentment_tolerance_minor: s.matching.presentment_tolerance_minor,
        grace_from_ms: to - s.matching.grace_minutes * 60_000,
    });
    let pb = progress("ledger");
    let ledger_entries = store
        .ledger_entries(from, to, |e| {
            matcher.add_ledger(e);
            pb.inc(1);
        })
        .await?;
    pb.finish_and_clear();
    let fmt = CsvFormat::from(&s.csv);
    let map = s.mapping.clone();
    let inputs = inputs.to_vec();
    // CSV over big files is blocking work: off the async workers.
    let (matcher, malformed, rows) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut malformed = Vec::new();
        let mut rows = 0;
        for input in inputs.iter().filter(|i| i.role == Role::Transactions) {
            let pb = progress(&input.name);
            rows +=
                parse::transactions(&input.path, &map.transactions, fmt, &mut malformed, |r| {
                    matcher.transaction(r);
                    pb.inc(1);
                })?;
            pb.finish_and_clear();
        }
        for input in inputs.iter().filter(|i| i.role == Role::Presentments) {
            let pb = progress(&input.name);
            rows +=
                parse::presentments(&input.path, &map.presentments, fmt, &mut malformed, |r| {
                    matcher.presentment(r);
                    pb.inc(1);
                })?;
            pb.finish_and_clear();
        }
        Ok((matcher, malformed, rows))
    })
    .await??;
    Ok(Reconciled {
        report: matcher.finish(),
        malformed,
        ledger_entries,
        rows,
    })
}

fn break_record(seq: i64, b: &Break) -> BreakRecord {
    BreakRecord {
        seq,
        class: b.class.as_str().to_owned(),
        transaction_id: b.transaction_id.clone(),
        kind: b.kind.map(|k| report::kind_str(k).to_owned()),
        currency: b.currency.map(|c| c.code().to_owned()),
        ledger_amount_minor: b.ledger_amount_minor,
        file_amount_minor: b.file_amount_minor,
        difference_minor: b.difference_minor,
        file: b.file.map(str::to_owned),
        line: b.line.and_then(|l| i64::try_from(l).ok()),
        detail: b.detail.clone(),
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
        if !changed && !opts.force && store.run(&date_str).await?.is_some() {
            return Ok(Outcome::Unchanged);
        }
        let r = reconcile(s, store, &opts.date, &inputs).await?;
        let breaks: Vec<BreakRecord> = r.report.breaks.iter().enumerate().map(|(i, b)| break_record(i as i64 + 1, b)).collect();
        let summary = report::summary_json(&date_str, &r, &inputs, clock.elapsed());
        let above = breaks.len() as u64 > s.report.break_threshold;
        let run = RunRecord {
            business_date: date_str.clone(),
            status: if breaks.is_empty() { "clean".into() } else { "breaks".into() },
            started_at_ms: started,
            finished_at_ms: store::now_ms(),
            matched: r.report.matched as i64,
            pending: r.report.pending as i64,
            presentments_matched: r.report.presentments_matched as i64,
            break_count: breaks.len() as i64,
            malformed_rows: r.malformed.len() as i64,
            summary: summary.to_string(),
        };
        store.replace_run(&run, &breaks).await?;
        let dir = s.report.dir.join(&date_str);
        report::write_files(&dir, &run, &breaks, &summary, s.report.largest)?;
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
        Ok(Outcome::Done { breaks: breaks.len() as u64, above_threshold: above, report_dir: dir })
    }
    .await;
    lock.release().await;
    result
}
