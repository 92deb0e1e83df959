//! SFTP fetch against a real OpenSSH sshd on loopback (started per test), plus the
//! pure helpers (patterns, dates, fingerprints, config validation).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{PasswordUser, Proxy, Sshd, SshdOptions, dir_names, free_port, hang_up_listener};
use reconciler::sftp::{
    BusinessDate, FetchError, SftpAuth, SftpConfig, fetch, fingerprint, pattern_matches,
};
use sha2::{Digest, Sha256};

const DATE: &str = "2024-03-15";

fn date() -> BusinessDate {
    BusinessDate::parse(DATE).unwrap()
}

fn config(sshd: &Sshd) -> SftpConfig {
    SftpConfig {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: sshd.user.clone(),
        auth: SftpAuth::Key {
            private_key: sshd.client_key.clone(),
            passphrase: None,
        },
        host_key_sha256: sshd.fingerprint.clone(),
        remote_dir: sshd.serve.display().to_string(),
        patterns: vec![
            "transactions_{date}*.csv".into(),
            "settlement_{date}.csv".into(),
        ],
        date_format: "%Y%m%d".into(),
        connect_timeout_ms: 10_000,
        attempts: 3,
        backoff_ms: 100,
        min_file_age_secs: 0,
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn start_sshd() -> Sshd {
    Sshd::start(SshdOptions {
        password_auth: false,
    })
}

/// A fetch that must fail: its error (printed) and how long it took.
fn fetch_fails(cfg: &SftpConfig, staging: &Path) -> (FetchError, Duration) {
    let started = Instant::now();
    let err = fetch(cfg, &date(), staging).unwrap_err();
    eprintln!("expected error: {err}");
    (err, started.elapsed())
}

/// An sshd serving one file of the day, and a fresh key pair `name` in its directory that it
/// does not know.
fn sshd_and_a_key_it_does_not_know(name: &str) -> (Sshd, PathBuf) {
    let sshd = start_sshd();
    sshd.serve_file("transactions_20240315.csv", b"data");
    let key = sshd.dir.path().join(name);
    common::keygen(&key);
    (sshd, key)
}

// ------------------------------------------------------------- against sshd --

#[test]
fn happy_path_downloads_matching_files_for_the_date_only() {
    let sshd = start_sshd();
    let tx1 = common::pseudo_random(10_000, 1);
    let tx2 = common::pseudo_random(150_000, 2); // several 64 KiB buffers
    let settle = common::pseudo_random(300_001, 3);
    sshd.serve_file("transactions_20240315.csv", &tx1);
    sshd.serve_file("transactions_20240315_part2.csv", &tx2);
    sshd.serve_file("transactions_20240315_empty.csv", b"");
    sshd.serve_file("settlement_20240315.csv", &settle);
    // Other dates, other extensions, unrelated files, a matching directory.
    sshd.serve_file("transactions_20240314.csv", b"yesterday");
    sshd.serve_file("transactions_20240316.csv", b"tomorrow");
    sshd.serve_file("settlement_20240314.csv", b"yesterday");
    sshd.serve_file("settlement_20240315.csv.bak", b"backup");
    sshd.serve_file("transactions_20240315.txt", b"wrong extension");
    sshd.serve_file("readme.txt", b"hello");
    fs::create_dir(sshd.serve.join("transactions_20240315_dir.csv")).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging/nested"); // created by fetch
    let got = fetch(&config(&sshd), &date(), &staging).expect("fetch");

    let expected: Vec<(&str, &[u8])> = vec![
        ("settlement_20240315.csv", &settle),
        ("transactions_20240315.csv", &tx1),
        ("transactions_20240315_empty.csv", b""),
        ("transactions_20240315_part2.csv", &tx2),
    ];
    let names: Vec<&str> = got.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        expected.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "sorted by name"
    );
    for (f, (name, data)) in got.iter().zip(&expected) {
        assert_eq!(f.path, staging.join(name));
        assert_eq!(f.size, data.len() as u64, "{name}");
        assert_eq!(f.sha256, sha256(data), "{name}");
        assert_eq!(f.sha256_hex().len(), 64);
        assert_eq!(&fs::read(&f.path).unwrap()[..], *data, "{name} content");
    }
    // Exactly the final files: no temp files, nothing else.
    assert_eq!(
        dir_names(&staging),
        expected
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
    );

    // A second run replaces the files in place and still leaves no temp files.
    let again = fetch(&config(&sshd), &date(), &staging).expect("second fetch");
    assert_eq!(again, got);
    assert_eq!(dir_names(&staging).len(), expected.len());
}

#[test]
fn key_auth_with_hyphenated_date_format() {
    let sshd = start_sshd();
    let data = common::pseudo_random(70_000, 9);
    sshd.serve_file("recon-2024-03-15.csv", &data);
    sshd.serve_file("recon-2024-03-14.csv", b"old");
    let mut cfg = config(&sshd);
    cfg.patterns = vec!["recon-{date}.csv".into()];
    cfg.date_format = "%Y-%m-%d".into();
    let staging = tempfile::tempdir().unwrap();
    let got = fetch(&cfg, &date(), staging.path()).expect("fetch");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "recon-2024-03-15.csv");
    assert_eq!(got[0].sha256, sha256(&data));
    assert!(sshd.log_text().contains("Accepted publickey"));
}

#[test]
fn password_auth() {
    let Some(user) = PasswordUser::create() else {
        eprintln!(
            "SKIPPED password_auth: needs root to create the throwaway user {} with a known \
             password (run the tests as root, as CI does)",
            common::PASSWORD_USER
        );
        return;
    };
    let sshd = Sshd::start(SshdOptions {
        password_auth: true,
    });
    let data = common::pseudo_random(5_000, 4);
    sshd.serve_file("transactions_20240315.csv", &data);
    let mut cfg = config(&sshd);
    cfg.user = user.name.clone();
    cfg.auth = SftpAuth::Password(user.password.clone());
    let staging = tempfile::tempdir().unwrap();
    let got = fetch(&cfg, &date(), staging.path()).expect("fetch with password");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sha256, sha256(&data));
    assert!(
        sshd.log_text().contains("Accepted password"),
        "{}",
        sshd.log_text()
    );

    // A wrong password is an Auth error, not retried.
    cfg.auth = SftpAuth::Password("not-the-password".into());
    cfg.backoff_ms = 5_000;
    let staging2 = tempfile::tempdir().unwrap();
    let (err, took) = fetch_fails(&cfg, staging2.path());
    assert!(matches!(err, FetchError::Auth(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(took < Duration::from_millis(5_000), "retried?");
    assert!(dir_names(staging2.path()).is_empty());
}

#[test]
fn wrong_key_is_an_auth_error_and_not_retried() {
    let (sshd, other_key) = sshd_and_a_key_it_does_not_know("other_key");
    // Through a counting proxy: the number of TCP connections = attempts made.
    let proxy = Proxy::start(sshd.port, None);
    let mut cfg = config(&sshd);
    cfg.port = proxy.port;
    cfg.auth = SftpAuth::Key {
        private_key: other_key,
        passphrase: None,
    };
    cfg.attempts = 3;
    cfg.backoff_ms = 3_000;
    let staging = tempfile::tempdir().unwrap();
    let (err, took) = fetch_fails(&cfg, staging.path());
    assert!(matches!(err, FetchError::Auth(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        took < Duration::from_millis(3_000),
        "took {took:?}: backoff happened"
    );
    assert_eq!(proxy.connections(), 1, "auth failures must not be retried");
    assert!(dir_names(staging.path()).is_empty());
}

#[test]
fn host_key_mismatch_aborts_before_auth_and_fetches_nothing() {
    let (sshd, _) = sshd_and_a_key_it_does_not_know("other_host_key");
    let pinned = common::keygen_fingerprint(&sshd.dir.path().join("other_host_key.pub"));
    assert_ne!(pinned, sshd.fingerprint);

    let proxy = Proxy::start(sshd.port, None);
    let mut cfg = config(&sshd); // the key itself would be accepted
    cfg.port = proxy.port;
    cfg.host_key_sha256 = pinned.clone();
    cfg.backoff_ms = 3_000;
    let staging = tempfile::tempdir().unwrap();
    let (err, took) = fetch_fails(&cfg, staging.path());
    match &err {
        FetchError::HostKeyMismatch { expected, actual } => {
            assert_eq!(expected, &pinned);
            assert_eq!(actual, &sshd.fingerprint);
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&pinned) && msg.contains(&sshd.fingerprint),
        "{msg}"
    );
    assert!(!err.is_retryable());
    assert!(took < Duration::from_millis(3_000));
    assert_eq!(proxy.connections(), 1);
    assert!(dir_names(staging.path()).is_empty());
    // Give sshd a moment to log, then check we never authenticated.
    std::thread::sleep(Duration::from_millis(100));
    let log = sshd.log_text();
    assert!(
        !log.contains("Accepted"),
        "authenticated despite mismatch:\n{log}"
    );
}

#[test]
fn missing_remote_dir_is_a_config_error_not_retried() {
    let sshd = start_sshd();
    let mut cfg = config(&sshd);
    cfg.remote_dir = sshd.serve.join("does-not-exist").display().to_string();
    cfg.backoff_ms = 3_000;
    let staging = tempfile::tempdir().unwrap();
    let (err, took) = fetch_fails(&cfg, staging.path());
    assert!(matches!(err, FetchError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
    assert!(took < Duration::from_millis(3_000));
}

/// A file modified within `min_file_age_secs` is taken for one still being written: the
/// fetch fails, retryably, and fetches nothing; once it is older, it is fetched.
#[test]
fn a_file_still_being_written_is_not_fetched() {
    let sshd = start_sshd();
    let path = sshd.serve_file("transactions_20240315.csv", b"id\n");
    let mut cfg = config(&sshd);
    (cfg.min_file_age_secs, cfg.attempts) = (120, 1);
    let staging = tempfile::tempdir().unwrap();
    let (err, _) = fetch_fails(&cfg, staging.path());
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("still being written"), "{err}");
    assert_eq!(dir_names(staging.path()), Vec::<String>::new());
    let old = std::time::SystemTime::now() - Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let got = fetch(&cfg, &date(), staging.path()).expect("an older file is fetched");
    assert_eq!(got.len(), 1);
}

#[test]
fn connection_drop_mid_transfer_leaves_no_file() {
    let sshd = start_sshd();
    let big = common::pseudo_random(2 * 1024 * 1024, 5);
    sshd.serve_file("transactions_20240315.csv", &big);

    // Control: directly, the file downloads fine.
    let ok_staging = tempfile::tempdir().unwrap();
    let got = fetch(&config(&sshd), &date(), ok_staging.path()).expect("direct fetch");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sha256, sha256(&big));

    // Through a proxy that closes both sides after 200 KiB from the server.
    let proxy = Proxy::start(sshd.port, Some(200 * 1024));
    let mut cfg = config(&sshd);
    cfg.port = proxy.port;
    cfg.attempts = 2;
    cfg.backoff_ms = 50;
    let staging = tempfile::tempdir().unwrap();
    let (err, _) = fetch_fails(&cfg, staging.path());
    assert!(matches!(err, FetchError::Transfer(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("2 attempts"), "{err}");
    assert_eq!(proxy.connections(), 2, "transfer failures are retried");
    assert_eq!(
        dir_names(staging.path()),
        Vec::<String>::new(),
        "no final or temp file"
    );
}

// ------------------------------------------------------- without any sshd --

/// A password login to loopback `port` that never gets as far as the password: three
/// attempts, `backoff_ms` apart at first.
fn nobody_at(port: u16, backoff_ms: u64) -> SftpConfig {
    SftpConfig {
        host: "127.0.0.1".into(),
        port,
        user: "nobody".into(),
        auth: SftpAuth::Password("x".into()),
        host_key_sha256: fingerprint(b"whatever"),
        remote_dir: "/".into(),
        patterns: vec!["*".into()],
        date_format: "%Y%m%d".into(),
        connect_timeout_ms: 2_000,
        attempts: 3,
        backoff_ms,
        min_file_age_secs: 0,
    }
}

#[test]
fn connection_refused_retries_with_backoff_then_connect_error() {
    let port = free_port(); // nothing listens there any more
    let cfg = nobody_at(port, 150);
    let staging = tempfile::tempdir().unwrap();
    let (err, took) = fetch_fails(&cfg, staging.path());
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("3 attempts"), "{err}");
    // Sleeps of 150 ms and 300 ms between the three attempts.
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(dir_names(staging.path()).is_empty());
}

#[test]
fn handshake_failure_is_retried_attempts_times() {
    let (port, accepted) = hang_up_listener();
    let cfg = nobody_at(port, 20);
    let staging = tempfile::tempdir().unwrap();
    let (err, _) = fetch_fails(&cfg, staging.path());
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert!(err.to_string().contains("handshake"), "{err}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn fingerprint_matches_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    for (i, kind) in ["ed25519", "rsa", "ecdsa"].iter().enumerate() {
        let key = dir.path().join(format!("k{i}"));
        let st = common::ssh_keygen()
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        let pub_path = key.with_extension("pub");
        let line = fs::read_to_string(&pub_path).unwrap();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(line.split_whitespace().nth(1).unwrap())
            .unwrap();
        assert_eq!(
            fingerprint(&blob),
            common::keygen_fingerprint(&pub_path),
            "{kind}"
        );
    }
}

// ------------------------------------------------------------------- pure --

#[test]
fn pattern_matching() {
    assert!(pattern_matches("a.csv", "a.csv"));
    assert!(!pattern_matches("a.csv", "a.csvx"));
    assert!(!pattern_matches("a.csv", "xa.csv"));
    assert!(!pattern_matches("a.csv", "A.csv"), "case-sensitive");
    assert!(pattern_matches(
        "transactions_20240315*.csv",
        "transactions_20240315.csv"
    ));
    assert!(pattern_matches(
        "transactions_20240315*.csv",
        "transactions_20240315_2.csv"
    ));
    assert!(!pattern_matches(
        "transactions_20240315*.csv",
        "transactions_20240314.csv"
    ));
    assert!(!pattern_matches(
        "transactions_20240315*.csv",
        "transactions_20240315.csv.bak"
    ));
    assert!(pattern_matches("*", ""));
    assert!(pattern_matches("*", "anything"));
    assert!(pattern_matches("**", "x"));
    assert!(!pattern_matches("", "x"));
    assert!(pattern_matches("", ""));
    assert!(pattern_matches("*.csv", ".csv"));
    assert!(pattern_matches("a*b*c", "abc"));
    assert!(pattern_matches("a*b*c", "aXbYbZc"));
    assert!(!pattern_matches("a*b*c", "aXbYcZ"));
    assert!(pattern_matches("*a*a*a", "aaaa"));
    assert!(!pattern_matches("*a*a*a*a*a", "aaaa"));
    // `?`, `[` and `.` are literal.
    assert!(!pattern_matches("a?c", "abc"));
    assert!(pattern_matches("a?c", "a?c"));
    assert!(!pattern_matches("[ab].csv", "a.csv"));
    assert!(!pattern_matches("a.csv", "aXcsv"));
    // Multi-byte characters.
    assert!(pattern_matches("é*ü", "éxyzü"));
    assert!(!pattern_matches("é*ü", "éxyzu"));
    // Pathological backtracking stays fast.
    let name = "a".repeat(2_000);
    let started = Instant::now();
    assert!(!pattern_matches(&format!("{}b", "*a".repeat(20)), &name));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn business_date_parse_format_display() {
    let d = BusinessDate::parse("2024-03-05").unwrap();
    assert_eq!(
        d,
        BusinessDate {
            year: 2024,
            month: 3,
            day: 5
        }
    );
    assert_eq!(d.to_string(), "2024-03-05");
    assert_eq!(d.format("%Y%m%d"), "20240305");
    assert_eq!(d.format("%Y-%m-%d"), "2024-03-05");
    assert_eq!(d.format("%d.%m.%Y"), "05.03.2024");
    assert_eq!(d.format("x%%y"), "x%y");
    assert_eq!(d.format("no directives"), "no directives");
    assert_eq!("2024-03-05".parse::<BusinessDate>().unwrap(), d);
    assert_eq!(
        BusinessDate::parse("0001-01-01").unwrap().to_string(),
        "0001-01-01"
    );
    assert_eq!(
        BusinessDate::parse("0999-12-31").unwrap().format("%Y%m%d"),
        "09991231"
    );

    // Leap years.
    assert!(BusinessDate::parse("2024-02-29").is_ok());
    assert!(BusinessDate::parse("2000-02-29").is_ok());
    assert!(BusinessDate::parse("2023-02-29").is_err());
    assert!(BusinessDate::parse("1900-02-29").is_err());

    for bad in [
        "",
        "2024-3-05",
        "2024-03-5",
        "20240305",
        "2024/03/05",
        "2024-13-01",
        "2024-00-10",
        "2024-04-31",
        "2024-01-00",
        "0000-01-01",
        "+024-01-01",
        "2024-01-0a",
        " 2024-01-01",
        "2024-01-01 ",
        "２０２４-01-01",
    ] {
        let err = BusinessDate::parse(bad).unwrap_err();
        assert!(err.to_string().contains("YYYY-MM-DD"), "{bad:?}: {err}");
    }
}

#[test]
fn fingerprint_format() {
    // Known value: SHA-256 of the empty input, base64 without padding.
    assert_eq!(
        fingerprint(b""),
        "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
    );
    let fp = fingerprint(b"some blob");
    assert!(fp.starts_with("SHA256:"));
    assert_eq!(fp.len(), "SHA256:".len() + 43);
    assert!(!fp.ends_with('='));
}

fn valid_config(dir: &Path) -> SftpConfig {
    let key = dir.join("key");
    fs::write(&key, "not really a key").unwrap();
    SftpConfig {
        host: "sftp.example.com".into(),
        port: 22,
        user: "recon".into(),
        auth: SftpAuth::Key {
            private_key: key,
            passphrase: Some("hunter2-passphrase".into()),
        },
        host_key_sha256: fingerprint(b"host"),
        remote_dir: "/outgoing".into(),
        patterns: vec!["tx_{date}.csv".into()],
        date_format: "%Y%m%d".into(),
        connect_timeout_ms: 1_000,
        attempts: 3,
        backoff_ms: 10,
        min_file_age_secs: 0,
    }
}

#[test]
fn config_validation() {
    let dir = tempfile::tempdir().unwrap();
    let ok = valid_config(dir.path());
    ok.validate().expect("valid");
    // Padding is tolerated in the pinned fingerprint.
    let mut c = ok.clone();
    c.host_key_sha256 = format!("{}=", ok.host_key_sha256);
    c.validate().expect("padded fingerprint");

    type Edit = fn(&mut SftpConfig);
    let cases: Vec<(&str, Edit)> = vec![
        ("no prefix", |c| {
            c.host_key_sha256 = c.host_key_sha256.replace("SHA256:", "")
        }),
        ("md5", |c| {
            c.host_key_sha256 = "MD5:12:34".into();
        }),
        ("short", |c| {
            c.host_key_sha256 = "SHA256:AAAA".into();
        }),
        ("not base64", |c| {
            c.host_key_sha256 = "SHA256:!!!!".into();
        }),
        ("empty patterns", |c| c.patterns.clear()),
        ("slash in pattern", |c| {
            c.patterns = vec!["../x".into()];
        }),
        ("bad date format", |c| c.date_format = "%Y%j".into()),
        ("lone %", |c| c.date_format = "%Y%".into()),
        ("zero attempts", |c| c.attempts = 0),
        ("zero timeout", |c| c.connect_timeout_ms = 0),
        ("empty host", |c| c.host.clear()),
        ("port 0", |c| c.port = 0),
        ("missing key", |c| {
            c.auth = SftpAuth::Key {
                private_key: "/nonexistent/key".into(),
                passphrase: None,
            }
        }),
    ];
    for (what, edit) in cases {
        let mut c = ok.clone();
        edit(&mut c);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, FetchError::Config(_)), "{what}: {err:?}");
        assert!(!err.is_retryable(), "{what}");
        // fetch refuses it up front, without touching the network or staging.
        let staging = dir.path().join("staging");
        let err = fetch(&c, &date(), &staging).unwrap_err();
        assert!(matches!(err, FetchError::Config(_)), "{what}: {err:?}");
        assert!(!staging.exists(), "{what}");
    }
}

#[test]
fn debug_does_not_leak_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = valid_config(dir.path());
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("<redacted>"), "{dbg}");
    c.auth = SftpAuth::Password("s3cret-pw".into());
    let dbg = format!("{c:?} {:#?}", c.auth);
    assert!(!dbg.contains("s3cret"), "{dbg}");
    let none = SftpAuth::Key {
        private_key: "/k".into(),
        passphrase: None,
    };
    assert!(format!("{none:?}").contains("None"));
}

#[test]
fn retryability() {
    assert!(FetchError::Connect("x".into()).is_retryable());
    assert!(FetchError::Transfer("x".into()).is_retryable());
    assert!(!FetchError::Auth("x".into()).is_retryable());
    assert!(!FetchError::Config("x".into()).is_retryable());
    assert!(
        !FetchError::HostKeyMismatch {
            expected: "a".into(),
            actual: "b".into()
        }
        .is_retryable()
    );
}
