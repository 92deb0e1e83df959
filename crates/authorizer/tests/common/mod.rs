//! What the binary's tests share: the binary with a clean environment and no config
//! directory, a free port, and the wait for a started server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `authorizer` binary with nothing from the caller's environment but PATH, so that only
/// the test's own settings apply.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_authorizer"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c.arg("--config-dir").arg("/nonexistent-config");
    c
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Waits until the server `child` listens on the loopback `port`. Fails the test at once when
/// the server exits, and after `within` when it still does not listen, either way with the
/// tail of its `log` when it writes one. A start is a test's precondition, not a measurement:
/// `within` is generous, since a machine that has just built the workspace may still be
/// flushing it to disk, and an embedded store's first migrations wait on that disk.
pub fn wait_listening(
    child: &mut Child,
    port: u16,
    within: Duration,
    log: Option<&std::path::Path>,
) {
    let deadline = Instant::now() + within;
    let tail = || {
        let text = log
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited before listening ({status}):\n{}", tail());
        }
        assert!(
            Instant::now() < deadline,
            "server did not listen within {within:?}:\n{}",
            tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cmd serve` on the loopback `port` with its output in `dir/serve.log` (a pipe read
/// only at the end would fill at debug level, and the server would wait on its next line),
/// and waits until it listens. The log's path comes back with the server.
pub fn serve_logged(mut cmd: Command, port: u16, dir: &Path) -> (Child, PathBuf) {
    let log_path = dir.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = cmd
        .env("AUTHORIZER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    wait_listening(&mut child, port, Duration::from_secs(90), Some(&log_path));
    (child, log_path)
}

/// Asks the server `child` to stop (SIGINT, as Ctrl-C) and waits for it, killing it after
/// `within`.
pub fn stop(child: &mut Child, within: Duration) {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let stop_by = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > stop_by {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
