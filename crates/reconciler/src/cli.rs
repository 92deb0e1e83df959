//! `reconciler run | daemon | report`.

use crate::config::{Settings, Source};
use crate::report;
use crate::run::{Outcome, RunOptions, run};
use crate::schedule::{Cron, Zone, civil_from_days};
use crate::sftp::BusinessDate;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use store::Store;

/// `println!` for a command's output ([`settings::print`]: a reader that went away ends the
/// output, not the command).
macro_rules! say {
    ($($arg:tt)*) => { settings::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for a command's output ([`settings::print`]).
macro_rules! put {
    ($($arg:tt)*) => { settings::print(format_args!($($arg)*)) };
}

#[derive(Parser, Debug)]
#[command(
    name = "reconciler",
    version,
    about = "Reconciles the processor's daily CSV files against the issuer's ledger."
)]
pub struct Cli {
    /// Directory holding reconciler.toml and reconciler.<RECONCILER_ENV>.toml.
    #[arg(
        long,
        global = true,
        default_value = "config",
        env = "RECONCILER_CONFIG_DIR"
    )]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reconcile one business date once. Exit 0 clean, 1 breaks (and unreadable rows) above the threshold, 2 could not run, 3 no presentments file (the clearing was not checked).
    Run {
        /// `YYYY-MM-DD`, or `yesterday`: the business date before today's, in
        /// matching.time_zone or at matching.utc_offset.
        #[arg(long)]
        date: String,
        /// "sftp" or "dir:/path" (default: source.kind).
        #[arg(long)]
        source: Option<String>,
        /// Reconcile even when every file was already imported.
        #[arg(long)]
        force: bool,
    },
    /// Reconcile yesterday on the schedule of schedule.cron; one instance at a time.
    Daemon,
    /// Print the stored run of a business date.
    Report {
        #[arg(long)]
        date: String,
    },
}

fn init_logs(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&s.log.filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if s.log.format == "json" {
        b.json().flatten_event(true).try_init()
    } else {
        b.with_target(false).try_init()
    };
}

/// Runs a command; returns the exit code (2: could not run).
pub async fn main(cli: Cli) -> i32 {
    let s = match Settings::load(&cli.config_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reconciler: {e}");
            return 2;
        }
    };
    init_logs(&s);
    let result = async {
        let store = Store::connect(&s.store_config()).await?;
        store.migrate().await?;
        match cli.command {
            Command::Run {
                date,
                source,
                force,
            } => {
                let date = if date == "yesterday" {
                    let zone = s.matching.zone()?;
                    days_before(store::now_ms(), &zone, 1).to_string()
                } else {
                    date
                };
                let opts = RunOptions {
                    date: BusinessDate::parse(&date)
                        .map_err(|e| anyhow::anyhow!("--date {date}: {e}"))?,
                    force,
                    source: source.as_deref().map(Source::parse).transpose()?,
                };
                let outcome = run(&s, &store, &opts).await?;
                print_outcome(&store, &date, &outcome, s.report.largest).await?;
                if outcome == Outcome::Unchanged {
                    // Nothing new: the date's standing result decides the exit code.
                    let standing = store.run(&date).await?;
                    let Some(r) = standing else { return Ok(0) };
                    let counted = (r.break_count + r.malformed_rows) as u64;
                    return Ok(crate::run::exit_code(
                        counted > s.report.break_threshold,
                        without_presentments(&r.summary),
                    ));
                }
                Ok(outcome.exit_code())
            }
            Command::Report { date } => {
                BusinessDate::parse(&date).map_err(|e| anyhow::anyhow!("--date {date}: {e}"))?;
                match print_run(&store, &date, s.report.largest).await? {
                    true => Ok(0),
                    false => anyhow::bail!("no reconciliation run for {date}"),
                }
            }
            Command::Daemon => daemon(&s, &store).await,
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reconciler: {e:#}");
            2
        }
    }
}

async fn print_run(store: &Store, date: &str, largest: usize) -> anyhow::Result<bool> {
    let Some(run) = store.run(date).await? else {
        return Ok(false);
    };
    let breaks = store.run_breaks(date, None, 1_000_000, 0).await?;
    let summary: serde_json::Value = serde_json::from_str(&run.summary)?;
    put!("{}", report::summary_text(&run, &breaks, &summary, largest));
    Ok(true)
}

async fn print_outcome(
    store: &Store,
    date: &str,
    outcome: &Outcome,
    largest: usize,
) -> anyhow::Result<()> {
    match outcome {
        Outcome::Unchanged => {
            say!(
                "{date}: every file was already imported and reconciled; nothing changed (use --force to re-run)"
            );
            print_run(store, date, largest).await?;
        }
        Outcome::Done { report_dir, .. } => {
            print_run(store, date, largest).await?;
            say!("\nreports: {}", report_dir.display());
        }
    }
    Ok(())
}

/// The business date `n` days before the local day of `at_ms`.
fn days_before(at_ms: i64, zone: &Zone, n: i64) -> BusinessDate {
    let day = zone.day_of(at_ms) - n;
    let (year, month, day) = civil_from_days(day);
    BusinessDate { year, month, day }
}

/// Whether a run's summary says it had no presentments file.
fn without_presentments(summary: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(summary)
        .is_ok_and(|s| s["presentments_delivered"] == serde_json::Value::Bool(false))
}

/// What a fire at `at_ms` looks at: the `catch_up_days` business dates ending with
/// yesterday, oldest first (a day's run reads the run of the day before).
fn dates_of_fire(at_ms: i64, zone: &Zone, catch_up_days: u32) -> Vec<BusinessDate> {
    (1..=i64::from(catch_up_days.max(1)))
        .rev()
        .map(|n| days_before(at_ms, zone, n))
        .collect()
}

async fn daemon(s: &Settings, store: &Store) -> anyhow::Result<i32> {
    let cron = Cron::parse(&s.schedule.cron)?;
    let zone = s.matching.zone()?;
    // SIGTERM (a container or service manager stopping us) and SIGINT both stop the daemon
    // between runs; one that arrives during a run lets the run finish first.
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stop = std::pin::pin!(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    });
    loop {
        let now = store::now_ms();
        let next = cron
            .next_in(now, &zone)
            .ok_or_else(|| anyhow::anyhow!("schedule.cron never fires"))?;
        tracing::info!(
            in_secs = (next - now) / 1000,
            "next reconciliation scheduled"
        );
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis((next - now).max(0) as u64)) => {}
            _ = &mut stop => {
                tracing::info!("stopping");
                return Ok(0);
            }
        }
        let dates = dates_of_fire(next, &zone, s.schedule.catch_up_days);
        let last = dates.len() - 1;
        // A date reconciled anew changes what the next date's run reads of its day before
        // (the entries it left pending or claimed): a next date with a run runs again.
        let mut day_before_changed = false;
        for (i, date) in dates.into_iter().enumerate() {
            // An earlier date is caught up when it has no run yet (its files were late, or its
            // run failed) or its run had no presentments file (which may have come since);
            // yesterday's run changes nothing when its files did not.
            if i < last && !day_before_changed {
                match store.run(&date.to_string()).await {
                    Ok(Some(r)) if !without_presentments(&r.summary) => continue,
                    Ok(_) => tracing::info!(business_date = %date, "catching up a date"),
                    Err(e) => {
                        tracing::error!(business_date = %date, error = %e, "cannot read the date's run");
                        continue;
                    }
                }
            }
            let opts = RunOptions {
                date: date.clone(),
                force: day_before_changed,
                source: None,
            };
            match run(s, store, &opts).await {
                Ok(outcome) => {
                    day_before_changed = matches!(outcome, Outcome::Done { .. });
                    // What exits 1 in a cron job is a warning here: a caught-up date's breaks
                    // are not the latest run's, which the metrics show.
                    if outcome.exit_code() == 0 {
                        tracing::info!(business_date = %date, ?outcome, "scheduled reconciliation done")
                    } else {
                        tracing::warn!(business_date = %date, ?outcome, "scheduled reconciliation found breaks above report.break_threshold, or had no presentments file")
                    }
                }
                // Another instance holds the lock, or the files are not there yet: log; the
                // next fires catch the date up (schedule.catch_up_days), and `reconciler run`
                // can redo a date by hand.
                Err(e) => {
                    day_before_changed = false;
                    tracing::error!(business_date = %date, error = %format!("{e:#}"), "scheduled reconciliation failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_is_in_the_business_timezone() {
        // 2024-01-02T02:00Z is still Jan 1 in Buenos Aires: yesterday is Dec 31.
        let t = crate::schedule::days_from_civil(2024, 1, 2) * 86_400_000 + 2 * 3_600_000;
        assert_eq!(
            days_before(t, &Zone::Fixed(-180), 1).to_string(),
            "2023-12-31"
        );
        assert_eq!(days_before(t, &Zone::Fixed(0), 1).to_string(), "2024-01-01");
        // 2024-07-16T03:30Z is 23:30 of the 15th in Santiago (-04:00 in winter), 00:30 of
        // the 16th at a fixed -03:00.
        let santiago = Zone::parse("Z", "America/Santiago").unwrap();
        let winter = crate::schedule::days_from_civil(2024, 7, 16) * 86_400_000 + 210 * 60_000;
        assert_eq!(days_before(winter, &santiago, 1).to_string(), "2024-07-14");
        let fixed = days_before(winter, &Zone::Fixed(-180), 1);
        assert_eq!(fixed.to_string(), "2024-07-15");
    }

    #[test]
    fn a_run_without_a_presentments_file_is_caught_up() {
        assert!(without_presentments(r#"{"presentments_delivered":false}"#));
        assert!(!without_presentments(r#"{"presentments_delivered":true}"#));
        // Runs recorded before the field was kept: as delivered.
        assert!(!without_presentments(r#"{"matched":3}"#));
        assert!(!without_presentments("not json"));
    }

    #[test]
    fn a_fire_looks_at_the_dates_up_to_yesterday_oldest_first() {
        let t = crate::schedule::days_from_civil(2024, 3, 1) * 86_400_000 + 6 * 3_600_000;
        let dates: Vec<String> = dates_of_fire(t, &Zone::Fixed(0), 3)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(dates, ["2024-02-27", "2024-02-28", "2024-02-29"]);
        let one: Vec<String> = dates_of_fire(t, &Zone::Fixed(0), 1)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(one, ["2024-02-29"]);
    }
}
