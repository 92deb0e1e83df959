//! The processes the faults act on: the authorizer (started, killed with SIGKILL, restarted),
//! the private Postgres cluster (stopped and started with its own pg_ctl), and a second
//! database session that holds row locks.

use anyhow::{Context, bail};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The real `authorizer` binary, run as `authorizer --config-dir DIR serve`.
pub struct Authorizer {
    pub bin: PathBuf,
    pub config_dir: PathBuf,
    /// Environment of every start (database, listen address, keys, token).
    pub env: Vec<(String, String)>,
    /// Its stdout and stderr, appended across restarts.
    pub log: PathBuf,
    child: Option<Child>,
    pub starts: u64,
    pub kills: u64,
}

impl Authorizer {
    pub fn new(
        bin: PathBuf,
        config_dir: PathBuf,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        Authorizer {
            bin,
            config_dir,
            env,
            log,
            child: None,
            starts: 0,
            kills: 0,
        }
    }

    /// Starts it with `overrides` on top of the base environment.
    pub fn spawn(&mut self, overrides: &[(&str, &str)]) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the authorizer is already running");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config-dir")
            .arg(&self.config_dir)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(overrides.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Whether the process is still running (false once it has exited by itself).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL: no shutdown, no flush, connections cut mid-request.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }

    /// SIGTERM and wait (SIGKILL after 10 s), blocking this thread: for when no traffic is
    /// under way (the end of the run, a drop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&c);
            for _ in 0..STOP_POLLS {
                if !matches!(c.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(STOP_POLL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The graceful stop used between phases to change settings, while traffic that lives
    /// across phases (the wallet's, InStore's) goes on: SIGTERM, then waiting without
    /// blocking this client's event loop, so that the answers it gets meanwhile are read and
    /// timed as they come (a blocked loop would see them late, as hangs).
    pub async fn stop_gracefully(auth: &std::cell::RefCell<Authorizer>) {
        let Some(mut c) = auth.borrow_mut().child.take() else {
            return;
        };
        terminate(&c);
        for _ in 0..STOP_POLLS {
            if !matches!(c.try_wait(), Ok(None)) {
                return;
            }
            actix_rt::time::sleep(STOP_POLL).await;
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Transaction ids of the authorizations it logged with a commit of unknown outcome.
    pub fn uncertain_commits(&self) -> std::collections::HashSet<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("commit outcome unknown"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                // Flattened (as configured) or under "fields".
                v.get("transaction_id")
                    .or_else(|| v.get("fields")?.get("transaction_id"))?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Runs `authorizer audit` against the same database; its exit code and output.
    pub fn audit(&self) -> (Option<i32>, String) {
        let out = Command::new(&self.bin)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("audit")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => (
                o.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (None, format!("could not run the audit: {e}")),
        }
    }
}

/// How often, and how many times, a graceful stop looks whether the process has exited.
const STOP_POLL: Duration = Duration::from_millis(50);
const STOP_POLLS: u32 = 200;

/// SIGTERM to `child`.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

impl Drop for Authorizer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `sh -c CMD`, failing with its output when it exits non-zero.
pub fn shell(cmd: &str) -> anyhow::Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("`{cmd}` failed ({}): {}", out.status, text.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The private cluster's pg_ctl: `PREFIX -w -m fast stop`, `PREFIX -w start`.
pub struct Postgres {
    /// e.g. `runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/x/data -l /tmp/x/log`
    pub pg_ctl: String,
    /// The cluster's data directory (its postmaster.pid names the server process).
    pub data_dir: PathBuf,
    /// Superuser URL of the database the authorizer uses (for psql).
    pub url: String,
}

impl Postgres {
    pub fn stop(&self, mode: &str) -> anyhow::Result<()> {
        shell(&format!("{} -w -t 60 -m {mode} stop", self.pg_ctl)).map(|_| ())
    }

    pub fn start(&self) -> anyhow::Result<()> {
        shell(&format!("{} -w -t 60 start", self.pg_ctl)).map(|_| ())
    }

    /// The server's processes: the postmaster (from postmaster.pid) and its children.
    pub fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let pidfile = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("cannot read {}", pidfile.display()))?;
        let main: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("{} names no process", pidfile.display()))?;
        let children = Command::new("pgrep")
            .arg("-P")
            .arg(main.to_string())
            .output()
            .context("cannot run pgrep")?;
        let mut pids = vec![main];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok()),
        );
        Ok(pids)
    }

    /// Runs one SQL text with psql; its output, unaligned, without headers.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&self.url)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Sends `SIG<name>` to each of `pids` (processes this run started).
pub fn signal(name: &str, pids: &[u32]) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{name} failed for some of {pids:?}");
    }
    Ok(())
}

/// Another database session that keeps taking `SELECT ... FOR UPDATE` row locks on some
/// cardholder accounts and holding them in an open transaction, like a long report or a
/// stuck batch job would.
pub struct LockHolder {
    stop: Arc<AtomicBool>,
    holds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LockHolder {
    /// Locks the accounts of `users` for a random time in `hold_ms`, pauses up to
    /// `gap_ms_max`, again, until stopped.
    pub fn start(
        url: String,
        users: Vec<String>,
        hold_ms: (u64, u64),
        gap_ms_max: u64,
        seed: u64,
    ) -> LockHolder {
        let stop = Arc::new(AtomicBool::new(false));
        let holds = Arc::new(AtomicU64::new(0));
        let (s, h) = (stop.clone(), holds.clone());
        let list = users
            .iter()
            .map(|u| format!("'{}'", u.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",");
        let thread = std::thread::spawn(move || {
            let mut rng = loadgen::rng::Rng::new(seed);
            while !s.load(Ordering::SeqCst) {
                let hold = rng.range(hold_ms.0 as i64, hold_ms.1 as i64);
                let sql = format!(
                    "BEGIN; SELECT count(*) FROM (SELECT id FROM accounts WHERE kind = 'USER' \
                     AND user_id IN ({list}) ORDER BY id FOR UPDATE) locked; \
                     SELECT pg_sleep({}); COMMIT;",
                    hold as f64 / 1000.0
                );
                let ok = Command::new("psql")
                    .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
                    .arg(&url)
                    .arg("-c")
                    .arg(&sql)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success());
                if ok {
                    h.fetch_add(1, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let gap = rng.range(0, gap_ms_max as i64);
                std::thread::sleep(Duration::from_millis(gap as u64));
            }
        });
        LockHolder {
            stop,
            holds,
            thread: Some(thread),
        }
    }

    /// Stops after the current hold; returns how many holds completed.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.holds.load(Ordering::SeqCst)
    }
}
