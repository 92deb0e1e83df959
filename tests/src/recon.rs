//! The nightly reconciliation run in the test's process against a test server's database.

use crate::TestApp;
use reconciler::config::{Settings, Source};
use reconciler::run::{Outcome, RunOptions, run};
use reconciler::sftp::BusinessDate;
use std::path::Path;

/// The reconciler's defaults on `app`'s database, times in UTC without grace, reports to
/// `reports`.
pub fn settings(app: &TestApp, reports: &Path) -> Settings {
    let mut s = Settings::load_from(Path::new("/nonexistent"), &[]).expect("defaults");
    s.database.url = authorizer::config::Secret::new(app.database_url.clone().unwrap_or_default());
    s.database.data_dir = app.data_dir.path().to_path_buf();
    s.matching.utc_offset = "Z".into();
    s.matching.grace_minutes = 0;
    s.report.dir = reports.to_path_buf();
    s
}

/// The run of `date` on the processor's files in `files`.
pub fn from_dir(date: &BusinessDate, files: &Path) -> RunOptions {
    RunOptions {
        date: date.clone(),
        force: false,
        source: Some(Source::Dir(files.to_path_buf())),
    }
}

/// Runs the reconciliation of `date` from `files` and asserts it found no break.
pub async fn run_clean(
    app: &TestApp,
    reports: &Path,
    date: &BusinessDate,
    files: &Path,
) -> Outcome {
    let outcome = run(&settings(app, reports), &app.store, &from_dir(date, files))
        .await
        .expect("reconciliation runs");
    assert_clean(&outcome);
    outcome
}

/// Asserts a run finished without a break.
pub fn assert_clean(outcome: &Outcome) {
    assert!(
        matches!(
            outcome,
            Outcome::Done {
                breaks: 0,
                above_threshold: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

/// Today in UTC, as the reconciliation names a business day.
pub fn today() -> BusinessDate {
    days_ago(0)
}

/// `n` days before today in UTC.
pub fn days_ago(n: i64) -> BusinessDate {
    let days = store::now_ms().div_euclid(86_400_000) - n;
    let (year, month, day) = reconciler::schedule::civil_from_days(days);
    BusinessDate { year, month, day }
}

/// Writes the processor's transactions file of `date` (`rows`, its header first) into `files`.
pub fn write_transactions(files: &Path, date: &BusinessDate, rows: &str) {
    let name = format!("transactions_{}.csv", date.format("%Y%m%d"));
    std::fs::write(files.join(name), rows).expect("write the transactions file");
}
