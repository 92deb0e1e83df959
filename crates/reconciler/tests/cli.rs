//! The `reconciler` binary as cron runs it: exit 0 clean, 1 breaks, 2 could not run, 3 no
//! presentments file (the clearing was not checked).

use std::path::Path;
use std::process::{Command, Output};

fn reconciler(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RECONCILER__DATABASE__DATA_DIR", data)
        .env("RECONCILER__REPORT__DIR", data.join("reports"))
        .env("RECONCILER__MATCHING__UTC_OFFSET", "Z")
        .args(["--config-dir", "/nonexistent"])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn exit_codes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("in");
    std::fs::create_dir_all(&files).unwrap();
    let source = format!("dir:{}", files.display());
    let header = "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date\n";
    // A day without clearing: a presentments file of its header alone.
    let no_clearing = |day: &str| {
        let name = format!("presentments_{day}.csv");
        let header = "transaction_id,direction,local_amount,local_currency,card_id,date\n";
        std::fs::write(files.join(name), header).unwrap();
    };
    // A day's transactions file of one row, then the run of that day.
    let run_day = |date: &str, row: &str| {
        let day = date.replace('-', "");
        std::fs::write(
            files.join(format!("transactions_{day}.csv")),
            format!("{header}{row}\n"),
        )
        .unwrap();
        no_clearing(&day);
        reconciler(dir.path(), &["run", "--date", date, "--source", &source])
    };
    // A day with only a declined transaction: nothing to book, nothing missing.
    let o = run_day(
        "2024-03-01",
        "ctx-1,AUTHORIZATION,PURCHASE,REJECTED,DEBIT,1.00,ARS,,c,u,2024-03-01",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("CLEAN"));
    // The same day without its presentments file: nothing wrong was found, but the clearing
    // was not checked.
    std::fs::remove_file(files.join("presentments_20240301.csv")).unwrap();
    let o = reconciler(
        dir.path(),
        &["run", "--date", "2024-03-01", "--source", &source],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("INCOMPLETE: no presentments file"),
        "{}",
        text(&o)
    );
    // Run again before the file comes: still 3 (a scheduler's retry), then 0 once it is
    // there.
    let again = ["run", "--date", "2024-03-01", "--source", &source];
    assert_eq!(reconciler(dir.path(), &again).status.code(), Some(3));
    no_clearing("20240301");
    let o = reconciler(dir.path(), &again);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("CLEAN"), "{}", text(&o));
    // A day where the processor approved something the ledger never booked, first without
    // its presentments file: 3 (retried until the clearing is checked), not 1.
    std::fs::write(
        files.join("transactions_20240302.csv"),
        format!("{header}ctx-2,AUTHORIZATION,PURCHASE,APPROVED,DEBIT,12.50,ARS,,c,u,2024-03-02\n"),
    )
    .unwrap();
    let day = ["run", "--date", "2024-03-02", "--source", &source];
    let o = reconciler(dir.path(), &day);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("missing_in_ledger"), "{}", text(&o));
    assert_eq!(
        reconciler(dir.path(), &day).status.code(),
        Some(3),
        "retried"
    );
    // Its presentments file comes as a link (as on a mounted volume): read, and the breaks
    // decide.
    let elsewhere = dir.path().join("presentments_elsewhere.csv");
    std::fs::write(
        &elsewhere,
        "transaction_id,direction,local_amount,local_currency,card_id,date\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&elsewhere, files.join("presentments_20240302.csv")).unwrap();
    let o = reconciler(dir.path(), &day);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("missing_in_ledger"), "{}", text(&o));
    assert!(!text(&o).contains("INCOMPLETE"), "{}", text(&o));
    assert!(dir.path().join("reports/2024-03-02/breaks.csv").exists());
    // The same files again change nothing, and still report the standing result.
    let o = reconciler(
        dir.path(),
        &["run", "--date", "2024-03-02", "--source", &source],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing changed"));
    let o = reconciler(dir.path(), &["report", "--date", "2024-03-02"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("ctx-2"));
    // `yesterday` is the date before today's in the business day's time zone.
    let zone = reconciler::schedule::Zone::parse("Z", "America/Santiago").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let day = zone.day_of(now.as_millis() as i64) - 1;
    let (y, m, d) = reconciler::schedule::civil_from_days(day);
    let yesterday = format!("{y:04}{m:02}{d:02}");
    let row = "ctx-3,AUTHORIZATION,PURCHASE,REJECTED,DEBIT,1.00,ARS,,c,u,2024-03-01";
    let name = format!("transactions_{yesterday}.csv");
    std::fs::write(files.join(name), format!("{header}{row}\n")).unwrap();
    no_clearing(&yesterday);
    let o = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .env_clear()
        .env("RECONCILER__DATABASE__DATA_DIR", dir.path())
        .env("RECONCILER__REPORT__DIR", dir.path().join("reports"))
        .env("RECONCILER__MATCHING__TIME_ZONE", "America/Santiago")
        .args(["--config-dir", "/nonexistent"])
        .args(["run", "--date", "yesterday", "--source", &source])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let iso = format!("{y:04}-{m:02}-{d:02}");
    assert!(
        dir.path().join("reports").join(iso).exists(),
        "{}",
        text(&o)
    );
    // Could not run: no file, no run, bad date, bad setting.
    for args in [
        vec!["run", "--date", "2024-03-03", "--source", source.as_str()],
        vec!["report", "--date", "2024-03-03"],
        vec!["run", "--date", "2024-02-30", "--source", source.as_str()],
    ] {
        let o = reconciler(dir.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .env_clear()
        .env("RECONCILER__SCHEDULE__CRON", "daily")
        .args(["--config-dir", "/nonexistent", "daemon"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("schedule.cron"));
}

/// A container runtime stops the daemon with SIGTERM: it exits 0 between runs.
#[cfg(unix)]
#[test]
fn daemon_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RECONCILER__DATABASE__DATA_DIR", dir.path())
        .env("RECONCILER__REPORT__DIR", dir.path().join("reports"))
        .env("RECONCILER__MATCHING__UTC_OFFSET", "Z")
        .env("RECONCILER__SCHEDULE__CRON", "0 3 * * *")
        .args(["--config-dir", "/nonexistent", "daemon"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has scheduled its first run (its handlers are installed before that).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited before it was signalled"
        );
        if dir.path().join("reconciler.sqlite3").exists()
            || std::fs::read_dir(dir.path()).unwrap().count() > 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopping")
            || String::from_utf8_lossy(&out.stdout).contains("stopping")
    );
}
