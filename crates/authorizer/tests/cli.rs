//! The `authorizer` binary as an operator runs it.

mod common;

use common::{bin, free_port, serve_logged, stop, wait_listening};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `authorizer COMMAND` with one setting from the environment, run to its end.
fn run(var: &str, value: impl AsRef<std::ffi::OsStr>, command: &str) -> Output {
    bin().env(var, value).arg(command).output().unwrap()
}

/// `cmd serve` on loopback `port`, its stderr piped, once it listens.
fn serve(mut cmd: Command, port: u16, stdout: Stdio, stderr: Stdio) -> std::process::Child {
    let mut child = cmd
        .env("AUTHORIZER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_listening(&mut child, port, Duration::from_secs(90), None);
    child
}

#[test]
fn a_bad_setting_fails_at_startup_with_one_line_naming_it() {
    let out = run("AUTHORIZER__SERVER__LISTEN", "not-an-address", "serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("server.listen"), "{err}");
    let out = run("AUTHORIZER__PROCESSOR__DEADLINE_MS", "soon", "audit");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deadline_ms"));
}

#[test]
fn migrate_then_audit_an_empty_embedded_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing to audit yet: said so, exit 2 (not 1, which is for violations), and no empty
    // ledger left behind.
    let out = run("AUTHORIZER__DATABASE__DATA_DIR", &data, "audit");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ledger at"), "{err}");
    assert!(!data.join("authorizer.db").exists());
    let out = run("AUTHORIZER__DATABASE__DATA_DIR", &data, "migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every migration of the embedded store's dialect, applied once.
    let dialect = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite");
    let shipped = std::fs::read_dir(dialect).unwrap().count();
    let applied = format!("{shipped} migration(s) applied");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&applied), "{stdout} (expected: {applied})");
    let out = run("AUTHORIZER__DATABASE__DATA_DIR", &data, "audit");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("clean"));
}

/// A reader that goes away (`authorizer openapi | head -1`) ends the output, not the
/// command: it exits 0, not 101 with a panic. A full disk is another matter: exit 2.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let mut child = bin()
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing: the pipe closes while the document (far larger than its buffer) is
    // being written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Output that cannot be written (a full disk) is said, and is no success.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .arg("openapi")
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot write the output").count(), 1, "{err}");
}

/// Sends the raw HTTP/1.1 request `req` to `addr` (closing the connection) and reads
/// the whole answer.
fn exchange(addr: &str, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

#[test]
fn secrets_and_card_data_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";
    let token = "very-secret-admin-token-1234567890";
    let port = free_port();
    let mut cmd = bin();
    cmd.env("AUTHORIZER__DATABASE__DATA_DIR", dir.path())
        .env("AUTHORIZER__PROCESSOR__API_KEY", "key-1")
        .env("AUTHORIZER__PROCESSOR__API_SECRET", secret)
        .env("AUTHORIZER__ADMIN__TOKEN", token)
        .env("AUTHORIZER__LOG__FILTER", "debug")
        .env("AUTHORIZER__LOG__FORMAT", "json");
    let (mut child, log_path) = serve_logged(cmd, port, dir.path());
    let addr = format!("127.0.0.1:{port}");
    // A signed purchase carrying card data, and a bad-signature one.
    let body = r#"{"transaction":{"id":"ctx-log-1","type":"PURCHASE"},"card":{"id":"crd-1","last_four":"6708","pan":"5555444433336708"},"user":{"id":"usr-1"},"amount":{"local":{"total":"1.00","currency":"ARS"}}}"#;
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let sig = protocol::signature::sign(
        &protocol::ApiSecret::from_base64(secret).unwrap(),
        &ts,
        "/transactions/authorizations",
        body.as_bytes(),
    );
    for signature in [sig.as_str(), "hmac-sha256 AAAA"] {
        let req = format!(
            "POST /transactions/authorizations HTTP/1.1\r\nHost: x\r\nX-Api-Key: key-1\r\nX-Timestamp: {ts}\r\nX-Endpoint: /transactions/authorizations\r\nX-Signature: {signature}\r\nx-idempotency-key: k-{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            signature.len(),
            body.len()
        );
        let resp = exchange(&addr, &req);
        assert!(resp.starts_with("HTTP/1.1 "), "{resp}");
    }
    let admin = format!(
        "GET /v1/accounts/usr-1/ARS HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    exchange(&addr, &admin);
    // A subscription whose URL carries a password and a token (logged without them).
    let sub = r#"{"url":"https://hooks:pw-1f2e3d4c@hooks.example/in?token=tk-9a8b7c6d","event_types":["account.funded"]}"#;
    let admin = format!(
        "POST /v1/webhooks/subscriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sub}",
        sub.len()
    );
    let resp = exchange(&addr, &admin);
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    stop(&mut child, Duration::from_secs(30));
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("ctx-log-1"),
        "the request was logged by id: {logs}"
    );
    assert!(
        logs.contains("https://hooks.example/in?..."),
        "the subscription was logged: {logs}"
    );
    for forbidden in [
        secret,
        token,
        "5555444433336708",
        "pw-1f2e3d4c",
        "tk-9a8b7c6d",
    ] {
        assert!(
            !logs.contains(forbidden),
            "{forbidden} leaked into the logs:\n{logs}"
        );
    }
    // The last four on its own, not as digits of a timestamp or a duration.
    let bytes = logs.as_bytes();
    let alone = logs.match_indices("6708").any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + 4).copied();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    });
    assert!(!alone, "6708 leaked into the logs:\n{logs}");
}

#[test]
fn demo_tells_the_whole_story_and_leaves_nothing_behind() {
    let out = bin().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "deposited 1000.00 ARS",
        "APPROVED (Approved)",
        "REJECTED INSUFFICIENT_FUNDS",
        "available after: 850.00 ARS",
        "balance reported: 850.00 ARS",
        "every invariant holds",
    ] {
        assert!(stdout.contains(want), "missing '{want}' in:\n{stdout}");
    }
    assert!(!stdout.contains("DID NOT VERIFY"));
    let dir = stdout
        .split("ledger in sqlite ")
        .nth(1)
        .and_then(|s| s.split(" (removed").next())
        .unwrap();
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}

/// Starts `serve` on a fresh data directory with generated credentials.
struct Served {
    child: std::process::Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_fresh() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = bin();
    cmd.env("AUTHORIZER__DATABASE__DATA_DIR", dir.path());
    let child = serve(cmd, port, Stdio::null(), Stdio::piped());
    Served {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn client(s: &Served, args: &[&str]) -> std::process::Output {
    bin()
        .env("AUTHORIZER__DATABASE__DATA_DIR", s.dir.path())
        .args(args)
        .arg("--url")
        .arg(&s.url)
        .output()
        .unwrap()
}

#[test]
fn first_run_credentials_simulator_and_accounts_cli() {
    let s = serve_fresh();
    // Generated on first start, private to the owner.
    for f in ["processor-key.toml", "admin-token"] {
        let meta = std::fs::metadata(s.dir.path().join(f)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
        let _ = meta;
    }
    let ok = |o: &std::process::Output| {
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(ok(&client(&s, &["accounts", "open", "usr-7", "ARS"])).contains("opened usr-7/ARS"));
    assert!(
        ok(&client(
            &s,
            &["accounts", "deposit", "usr-7", "ARS", "500.00"]
        ))
        .contains("available 500.00")
    );
    let out = ok(&client(
        &s,
        &[
            "simulate",
            "purchase",
            "--user",
            "usr-7",
            "--amount",
            "125.50",
            "--currency",
            "ARS",
        ],
    ));
    assert!(
        out.contains("APPROVED")
            && out.contains("signature verified")
            && out.contains("available after: 374.50 ARS"),
        "{out}"
    );
    let out = ok(&client(
        &s,
        &[
            "simulate",
            "cashback",
            "--user",
            "usr-7",
            "--amount",
            "10.00",
            "--extracash",
            "20.00",
            "--json",
        ],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["signature_verified"], true);
    assert_eq!(report["available_after"], "344.50");
    let tx = report["transaction_id"].as_str().unwrap().to_owned();
    let out = ok(&client(
        &s,
        &[
            "simulate",
            "advice-rejected",
            "--user",
            "usr-7",
            "--amount",
            "30.00",
            "--original",
            &tx,
        ],
    ));
    assert!(
        out.contains("available after: 374.50 ARS"),
        "reversed: {out}"
    );
    assert!(
        ok(&client(
            &s,
            &["accounts", "withdraw", "usr-7", "ARS", "74.50"]
        ))
        .contains("available 300.00")
    );
    let postings = ok(&client(&s, &["accounts", "postings", "usr-7", "ARS"]));
    assert_eq!(postings.lines().count(), 1 + 5, "{postings}");
    assert!(
        ok(&client(
            &s,
            &[
                "cards",
                "set",
                "crd-usr-7",
                "--user",
                "usr-7",
                "--status",
                "BLOCKED"
            ]
        ))
        .contains("BLOCKED")
    );
    let out = ok(&client(
        &s,
        &[
            "simulate", "purchase", "--user", "usr-7", "--amount", "1.00",
        ],
    ));
    assert!(out.contains("REJECTED OTHER (Card not active)"), "{out}");
    // Ids with the punctuation the processor may use reach the admin API as one path
    // segment each.
    let odd = "usr/8?x#1%2";
    assert!(ok(&client(&s, &["accounts", "open", odd, "ARS"])).contains("opened usr/8?x#1%2/ARS"));
    let out = ok(&client(&s, &["accounts", "deposit", odd, "ARS", "5.00"]));
    assert!(out.contains("available 5.00"), "{out}");
    assert!(ok(&client(&s, &["accounts", "show", odd, "ARS"])).contains("available 5.00"));
    let postings = ok(&client(&s, &["accounts", "postings", odd, "ARS"]));
    assert_eq!(postings.lines().count(), 1 + 1, "{postings}");
    let set = [
        "cards", "set", "crd/8?x", "--user", odd, "--status", "ACTIVE",
    ];
    assert!(ok(&client(&s, &set)).contains("ACTIVE"));
    // An admin error is reported, with a non-zero exit.
    let o = client(&s, &["accounts", "show", "nobody", "ARS"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 404 not_found"));
    let audit = run("AUTHORIZER__DATABASE__DATA_DIR", s.dir.path(), "audit");
    assert!(ok(&audit).contains("clean"));
}

#[test]
fn simulate_fails_when_the_answer_is_not_signed_by_our_key() {
    let s = serve_fresh();
    // The simulator uses another key pair than the server: the server refuses (401,
    // unsigned) and the simulator must say so with a non-zero exit.
    let o = bin()
        .env("AUTHORIZER__DATABASE__DATA_DIR", s.dir.path())
        .env("AUTHORIZER__PROCESSOR__API_KEY", "other")
        .env(
            "AUTHORIZER__PROCESSOR__API_SECRET",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .args(["simulate", "balance", "--url", &s.url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DID NOT VERIFY"));
}
