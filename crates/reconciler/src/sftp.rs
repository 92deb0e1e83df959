//! SFTP fetch of the processor's daily reconciliation files.
//!
//! [`fetch`] connects to the processor's SFTP server, checks the server's host key
//! against the SHA-256 fingerprint pinned in the configuration (before
//! authenticating), lists the configured remote directory and downloads every file
//! whose name matches one of the configured patterns for the business date into a
//! local staging directory.
//!
//! Every download is atomic: the data goes to a hidden temporary file in the staging
//! directory, is fsynced, its size is checked against the size the server reports for
//! the open file, and only then is it renamed to its final name. On any failure the
//! temporary file is removed, so a final file in the staging directory is always
//! complete. The SHA-256 of each file is computed while it streams (64 KiB buffer).
//!
//! Connection-level failures (connect, handshake, transfer) are retried with a
//! doubling backoff; authentication failures, host key mismatches and configuration
//! errors are not. Files completed by an earlier attempt are not downloaded again.
//!
//! The API is blocking: call it from `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};
use ssh2::{ErrorCode, Session, Sftp};
use tracing::{debug, info, warn};

/// Size of the streaming buffer used for downloads (bounded memory per file).
const BUF_SIZE: usize = 64 * 1024;

/// Upper bound for a single backoff sleep, however many attempts are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

// libssh2 session error codes (libssh2.h) that mean "the connection is broken or
// timed out" rather than "the server refused us".
const LIBSSH2_ERROR_SOCKET_NONE: i32 = -1;
const LIBSSH2_ERROR_BANNER_RECV: i32 = -2;
const LIBSSH2_ERROR_BANNER_SEND: i32 = -3;
const LIBSSH2_ERROR_INVALID_MAC: i32 = -4;
const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
const LIBSSH2_ERROR_SOCKET_SEND: i32 = -7;
const LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE: i32 = -8;
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_DECRYPT: i32 = -12;
const LIBSSH2_ERROR_SOCKET_DISCONNECT: i32 = -13;
const LIBSSH2_ERROR_PROTO: i32 = -14;
const LIBSSH2_ERROR_SOCKET_TIMEOUT: i32 = -30;
const LIBSSH2_ERROR_SOCKET_RECV: i32 = -43;
const LIBSSH2_ERROR_ENCRYPT: i32 = -44;
const LIBSSH2_ERROR_BAD_SOCKET: i32 = -45;

// SFTP status codes (LIBSSH2_FX_*) that mean the remote directory is wrong.
const LIBSSH2_FX_NO_SUCH_FILE: i32 = 2;
const LIBSSH2_FX_PERMISSION_DENIED: i32 = 3;
const LIBSSH2_FX_NO_SUCH_PATH: i32 = 10;
const LIBSSH2_FX_NOT_A_DIRECTORY: i32 = 19;

/// How to authenticate to the SFTP server. `Debug` never prints the password or
/// the passphrase.
#[derive(Clone, PartialEq, Eq)]
pub enum SftpAuth {
    Password(String),
    /// A private key file (OpenSSH or PEM format); the public key is derived from it.
    Key {
        private_key: PathBuf,
        passphrase: Option<String>,
    },
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for SftpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SftpAuth::Password(_) => f.debug_tuple("Password").field(&Redacted).finish(),
            SftpAuth::Key {
                private_key,
                passphrase,
            } => f
                .debug_struct("Key")
                .field("private_key", private_key)
                .field("passphrase", &passphrase.as_ref().map(|_| Redacted))
                .finish(),
        }
    }
}

/// Where and what to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SftpAuth,
    /// Pinned host key fingerprint in OpenSSH's format, `SHA256:<base64 without
    /// padding>`, as printed by `ssh-keygen -lf host_key.pub`.
    pub host_key_sha256: String,
    pub remote_dir: String,
    /// File name patterns; `{date}` is replaced by the business date formatted with
    /// `date_format`; `*` matches any run of characters. e.g. "transactions_{date}*.csv"
    pub patterns: Vec<String>,
    /// strftime-like subset: %Y %m %d only (and %% for a literal %), e.g. "%Y%m%d"
    /// or "%Y-%m-%d"
    pub date_format: String,
    /// TCP connect timeout. Also used as libssh2's timeout for every blocking call
    /// (handshake, authentication, each read): a call that takes longer fails with
    /// a retryable error, so a stalled server cannot hang the worker.
    pub connect_timeout_ms: u64,
    /// Total number of attempts (>= 1) for retryable failures.
    pub attempts: u32,
    /// Sleep before the second attempt; doubles for each further attempt (capped
    /// at 10 minutes per sleep).
    pub backoff_ms: u64,
    /// A file modified less than this long ago (by the server's clock against ours) is
    /// taken for one still being written, and the fetch fails, to be retried: for a server
    /// that writes its files in place instead of renaming them into place when done. 0: off.
    pub min_file_age_secs: u64,
}

impl SftpConfig {
    /// Checks the configuration without touching the network. [`fetch`] calls it
    /// first; callers may call it at startup to fail early.
    pub fn validate(&self) -> Result<(), FetchError> {
        let bad = |msg: String| Err(FetchError::Config(msg));
        if self.host.trim().is_empty() {
            return bad("host is empty".into());
        }
        if self.port == 0 {
            return bad("port is 0".into());
        }
        if self.user.is_empty() {
            return bad("user is empty".into());
        }
        parse_fingerprint(&self.host_key_sha256)?;
        if self.remote_dir.is_empty() {
            return bad("remote_dir is empty".into());
        }
        if self.patterns.is_empty() {
            return bad("patterns is empty: nothing would be fetched".into());
        }
        for p in &self.patterns {
            if p.is_empty() || p.contains('/') || p.contains('\\') {
                return bad(format!(
                    "pattern {p:?} must be a non-empty file name without path separators"
                ));
            }
        }
        validate_date_format(&self.date_format)?;
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms must be > 0".into());
        }
        if self.attempts == 0 {
            return bad("attempts must be >= 1".into());
        }
        if let SftpAuth::Key { private_key, .. } = &self.auth
            && let Err(e) = fs::metadata(private_key)
        {
            return bad(format!(
                "private key {} is not readable: {e}",
                private_key.display()
            ));
        }
        Ok(())
    }
}

/// The business date whose files are fetched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusinessDate {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

/// A string that is not a valid `YYYY-MM-DD` date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid business date {input:?}: {reason} (expected YYYY-MM-DD)")]
pub struct InvalidDate {
    input: String,
    reason: &'static str,
}

impl BusinessDate {
    /// Parses a strict `YYYY-MM-DD` calendar date (year 0001-9999).
    pub fn parse(s: &str) -> Result<Self, InvalidDate> {
        let err = |reason| InvalidDate {
            input: s.to_owned(),
            reason,
        };
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err("wrong shape"));
        }
        let digits = |r: std::ops::Range<usize>| -> Result<u32, InvalidDate> {
            let part = &b[r];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(err("not a number"));
            }
            Ok(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
        };
        let year = digits(0..4)?;
        let month = digits(5..7)?;
        let day = digits(8..10)?;
        if year == 0 {
            return Err(err("year 0000"));
        }
        let year = year as i32; // at most 9999
        if !(1..=12).contains(&month) {
            return Err(err("month out of range"));
        }
        if jiff::civil::Date::new(year as i16, month as i8, day as i8).is_err() {
            return Err(err("day out of range"));
        }
        Ok(Self { year, month, day })
    }

    /// Formats with a strftime-like subset: `%Y` (4-digit year), `%m`, `%d`
    /// (2 digits) and `%%`. Anything else is copied literally.
    pub fn format(&self, fmt: &str) -> String {
        let mut out = String::with_capacity(fmt.len() + 8);
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('Y') => out.push_str(&format!("{:04}", self.year)),
                Some('m') => out.push_str(&format!("{:02}", self.month)),
                Some('d') => out.push_str(&format!("{:02}", self.day)),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

impl fmt::Display for BusinessDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for BusinessDate {
    type Err = InvalidDate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn validate_date_format(fmt: &str) -> Result<(), FetchError> {
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd' | '%') => {}
                Some(other) => {
                    return Err(FetchError::Config(format!(
                        "date_format {fmt:?}: unsupported directive %{other} (only %Y %m %d %%)"
                    )));
                }
                None => {
                    return Err(FetchError::Config(format!(
                        "date_format {fmt:?} ends with a lone %"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// One downloaded file, already at its final path in the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Remote (and local) file name.
    pub name: String,
    /// `staging/name`.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl Fetched {
    /// The SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// A digest as lowercase hex.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "SFTP host key mismatch: expected {expected} (pinned in config) but the server presented {actual}; refusing to authenticate or fetch anything"
    )]
    HostKeyMismatch { expected: String, actual: String },
    #[error("SFTP authentication failed: {0}")]
    Auth(String),
    #[error("SFTP connection failed: {0}")]
    Connect(String),
    #[error("SFTP transfer failed: {0}")]
    Transfer(String),
    #[error("invalid SFTP configuration: {0}")]
    Config(String),
}

impl FetchError {
    /// Connection-level failures (connect, handshake, transfer) are worth retrying;
    /// authentication failures, host key mismatches and configuration errors are not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FetchError::Connect(_) | FetchError::Transfer(_))
    }

    fn gave_up_after(self, attempts: u32) -> Self {
        let note = |m: String| {
            let s = if attempts == 1 { "" } else { "s" };
            format!("{m} (gave up after {attempts} attempt{s})")
        };
        match self {
            FetchError::Connect(m) => FetchError::Connect(note(m)),
            FetchError::Transfer(m) => FetchError::Transfer(note(m)),
            other => other,
        }
    }
}

/// Matches `name` against a pattern after `{date}` substitution: `*` matches any
/// run of characters (including none); every other character matches itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Position after the last `*` seen, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            pi += 1;
            star = Some((pi, ni));
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// "SHA256:..." fingerprint of a raw host key blob (as ssh2's Session::host_key
/// returns), identical to what `ssh-keygen -lf key.pub` prints.
pub fn fingerprint(host_key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(host_key_blob))
    )
}

/// Decodes a pinned `SHA256:<base64>` fingerprint (trailing `=` padding tolerated).
fn parse_fingerprint(s: &str) -> Result<[u8; 32], FetchError> {
    let bad = |why: &str| {
        FetchError::Config(format!(
            "host_key_sha256 {s:?} {why}; expected OpenSSH's format SHA256:<base64>, as printed by `ssh-keygen -lf host_key.pub`"
        ))
    };
    let b64 = s
        .trim()
        .strip_prefix("SHA256:")
        .ok_or_else(|| bad("does not start with SHA256:"))?
        .trim_end_matches('=');
    let raw = STANDARD_NO_PAD
        .decode(b64)
        .map_err(|_| bad("is not valid base64"))?;
    raw.try_into().map_err(|_| bad("does not encode 32 bytes"))
}

/// Downloads the files for `date` into `staging` (created if missing) and returns
/// them sorted by name. See the module documentation for the guarantees.
pub fn fetch(
    cfg: &SftpConfig,
    date: &BusinessDate,
    staging: &Path,
) -> Result<Vec<Fetched>, FetchError> {
    cfg.validate()?;
    let pinned = parse_fingerprint(&cfg.host_key_sha256)?;
    let date_str = date.format(&cfg.date_format);
    let patterns: Vec<String> = cfg
        .patterns
        .iter()
        .map(|p| p.replace("{date}", &date_str))
        .collect();
    fs::create_dir_all(staging).map_err(|e| {
        FetchError::Config(format!(
            "cannot create staging directory {}: {e}",
            staging.display()
        ))
    })?;

    let job = Job {
        cfg,
        pinned,
        patterns: &patterns,
        staging,
    };
    let mut done: BTreeMap<String, Fetched> = BTreeMap::new();
    let mut backoff = Duration::from_millis(cfg.backoff_ms).min(MAX_BACKOFF);
    let mut attempt: u32 = 1;
    loop {
        match job.attempt(&mut done) {
            Ok(()) => {
                info!(
                    host = %cfg.host,
                    remote_dir = %cfg.remote_dir,
                    date = %date,
                    files = done.len(),
                    "sftp fetch complete"
                );
                return Ok(done.into_values().collect());
            }
            Err(e) if e.is_retryable() && attempt < cfg.attempts => {
                warn!(
                    host = %cfg.host,
                    attempt,
                    attempts = cfg.attempts,
                    backoff_ms = backoff.as_millis() as u64,
                    error = %e,
                    "sftp fetch attempt failed; retrying"
                );
                std::thread::sleep(backoff);
                backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(e) if e.is_retryable() => return Err(e.gave_up_after(attempt)),
            Err(e) => return Err(e),
        }
    }
}

struct Job<'a> {
    cfg: &'a SftpConfig,
    pinned: [u8; 32],
    patterns: &'a [String],
    staging: &'a Path,
}

fn is_connection_error(e: &ssh2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Session(
            LIBSSH2_ERROR_SOCKET_NONE
                | LIBSSH2_ERROR_BANNER_RECV
                | LIBSSH2_ERROR_BANNER_SEND
                | LIBSSH2_ERROR_INVALID_MAC
                | LIBSSH2_ERROR_KEX_FAILURE
                | LIBSSH2_ERROR_SOCKET_SEND
                | LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE
                | LIBSSH2_ERROR_TIMEOUT
                | LIBSSH2_ERROR_DECRYPT
                | LIBSSH2_ERROR_SOCKET_DISCONNECT
                | LIBSSH2_ERROR_PROTO
                | LIBSSH2_ERROR_SOCKET_TIMEOUT
                | LIBSSH2_ERROR_SOCKET_RECV
                | LIBSSH2_ERROR_ENCRYPT
                | LIBSSH2_ERROR_BAD_SOCKET
        )
    )
}

impl Job<'_> {
    fn target(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    fn connect_tcp(&self) -> Result<TcpStream, FetchError> {
        let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        let addrs: Vec<SocketAddr> = (self.cfg.host.as_str(), self.cfg.port)
            .to_socket_addrs()
            .map_err(|e| FetchError::Connect(format!("cannot resolve {}: {e}", self.target())))?
            .collect();
        let mut last = "the name resolves to no address".to_owned();
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(s) => return Ok(s),
                Err(e) if addrs.len() > 1 => last = format!("{addr}: {e}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(FetchError::Connect(format!(
            "cannot connect to {}: {last}",
            self.target()
        )))
    }

    /// One connection: handshake, host key check, auth, then every missing file.
    fn attempt(&self, done: &mut BTreeMap<String, Fetched>) -> Result<(), FetchError> {
        let tcp = self.connect_tcp()?;
        let mut sess = Session::new()
            .map_err(|e| FetchError::Connect(format!("cannot create SSH session: {e}")))?;
        sess.set_timeout(u32::try_from(self.cfg.connect_timeout_ms).unwrap_or(u32::MAX));
        sess.set_tcp_stream(tcp);
        sess.handshake().map_err(|e| {
            FetchError::Connect(format!("SSH handshake with {} failed: {e}", self.target()))
        })?;
        let result = self.after_handshake(&sess, done);
        // Best effort: the peer may already be gone.
        let _ = sess.disconnect(None, "done", None);
        result
    }

    fn after_handshake(
        &self,
        sess: &Session,
        done: &mut BTreeMap<String, Fetched>,
    ) -> Result<(), FetchError> {
        self.check_host_key(sess)?;
        self.authenticate(sess)?;
        let sftp = sess.sftp().map_err(|e| {
            FetchError::Transfer(format!(
                "cannot start the SFTP subsystem on {}: {e}",
                self.target()
            ))
        })?;
        for (name, listed_size) in self.list(&sftp)? {
            if done.contains_key(&name) {
                continue;
            }
            let remote = Path::new(&self.cfg.remote_dir).join(&name);
            if let Some(f) = self.download(&sftp, &remote, &name, listed_size)? {
                done.insert(name, f);
            }
        }
        Ok(())
    }

    fn check_host_key(&self, sess: &Session) -> Result<(), FetchError> {
        let (blob, _kind) = sess.host_key().ok_or_else(|| {
            FetchError::Connect(format!("{} presented no host key", self.target()))
        })?;
        let actual: [u8; 32] = Sha256::digest(blob).into();
        if actual != self.pinned {
            return Err(FetchError::HostKeyMismatch {
                expected: self.cfg.host_key_sha256.trim().to_owned(),
                actual: fingerprint(blob),
            });
        }
        debug!(host = %self.target(), fingerprint = %fingerprint(blob), "sftp host key verified");
        Ok(())
    }

    fn authenticate(&self, sess: &Session) -> Result<(), FetchError> {
        let user = &self.cfg.user;
        let (method, res) = match &self.cfg.auth {
            SftpAuth::Password(pw) => ("password".to_owned(), sess.userauth_password(user, pw)),
            SftpAuth::Key {
                private_key,
                passphrase,
            } => (
                format!("key {}", private_key.display()),
                sess.userauth_pubkey_file(user, None, private_key, passphrase.as_deref()),
            ),
        };
        match res {
            Ok(()) if sess.authenticated() => Ok(()),
            Ok(()) => Err(FetchError::Auth(format!(
                "{} did not accept user {user:?} with {method}",
                self.target()
            ))),
            Err(e) if is_connection_error(&e) => Err(FetchError::Connect(format!(
                "connection to {} lost during authentication: {e}",
                self.target()
            ))),
            Err(e) => Err(FetchError::Auth(format!(
                "{} rejected user {user:?} with {method}: {e}",
                self.target()
            ))),
        }
    }

    /// Names (sorted) of the remote entries matching a pattern, with the listed size.
    fn list(&self, sftp: &Sftp) -> Result<Vec<(String, Option<u64>)>, FetchError> {
        let dir = &self.cfg.remote_dir;
        let entries = sftp.readdir(Path::new(dir)).map_err(|e| match e.code() {
            ErrorCode::SFTP(
                LIBSSH2_FX_NO_SUCH_FILE
                | LIBSSH2_FX_PERMISSION_DENIED
                | LIBSSH2_FX_NO_SUCH_PATH
                | LIBSSH2_FX_NOT_A_DIRECTORY,
            ) => FetchError::Config(format!(
                "remote_dir {dir:?} cannot be listed on {}: {e}",
                self.target()
            )),
            _ => FetchError::Transfer(format!("listing {dir:?} on {} failed: {e}", self.target())),
        })?;
        let mut out = Vec::new();
        for (path, stat) in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                debug!(path = %path.display(), "sftp: skipping a non-UTF-8 name");
                continue;
            };
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(['/', '\\', '\0'])
                || stat.is_dir()
                || !self.patterns.iter().any(|p| pattern_matches(p, name))
            {
                continue;
            }
            out.push((name.to_owned(), stat.size));
        }
        out.sort();
        debug!(remote_dir = %dir, matched = out.len(), "sftp: listed remote directory");
        Ok(out)
    }

    /// Streams one file into a temp file, verifies it and renames it into place.
    /// `Ok(None)` when the entry turns out not to be a regular file.
    fn download(
        &self,
        sftp: &Sftp,
        remote: &Path,
        name: &str,
        listed_size: Option<u64>,
    ) -> Result<Option<Fetched>, FetchError> {
        let rdisp = remote.display();
        let transfer = |what: &str, e: &dyn fmt::Display| {
            FetchError::Transfer(format!("{what} {rdisp} on {}: {e}", self.target()))
        };
        let mut rfile = sftp.open(remote).map_err(|e| transfer("cannot open", &e))?;
        let stat = rfile.stat().map_err(|e| transfer("cannot stat", &e))?;
        if !stat.is_file() {
            warn!(remote = %rdisp, "sftp: matching entry is not a regular file; skipped");
            return Ok(None);
        }
        let expected = stat.size.or(listed_size).ok_or_else(|| {
            FetchError::Transfer(format!("the server reports no size for {rdisp}"))
        })?;
        if self.cfg.min_file_age_secs > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Without a modification time the age cannot be known: a setting this server
            // cannot serve, not a file to wait for.
            let Some(mtime) = stat.mtime else {
                return Err(FetchError::Config(format!(
                    "{} reports no modification time for {rdisp}: sftp.min_file_age_secs cannot apply (set it to 0)",
                    self.target()
                )));
            };
            let age = now.saturating_sub(mtime);
            if age < self.cfg.min_file_age_secs {
                return Err(FetchError::Transfer(format!(
                    "{rdisp} was modified {age} s ago, under sftp.min_file_age_secs ({} s): taken for a file still being written",
                    self.cfg.min_file_age_secs
                )));
            }
        }

        let final_path = self.staging.join(name);
        let mut part = PartFile::create(self.staging, name)?;
        let part_path = part.path.clone();
        let local = |what: &str, e: io::Error| {
            FetchError::Transfer(format!("{what} {}: {e}", part_path.display()))
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF_SIZE];
        let mut total: u64 = 0;
        loop {
            let n = match rfile.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(transfer("reading", &e)),
            };
            hasher.update(&buf[..n]);
            part.file
                .write_all(&buf[..n])
                .map_err(|e| local("writing", e))?;
            total += n as u64;
            if total > expected {
                return Err(FetchError::Transfer(format!(
                    "{rdisp} grew while downloading: read more than its stat size of {expected} bytes"
                )));
            }
        }
        drop(rfile);
        part.file.sync_all().map_err(|e| local("fsync of", e))?;
        let local_len = part.file.metadata().map_err(|e| local("stat of", e))?.len();
        if total != expected || local_len != expected {
            return Err(FetchError::Transfer(format!(
                "size mismatch for {rdisp}: server reports {expected} bytes, received {total}, wrote {local_len}"
            )));
        }
        part.persist(&final_path)?;
        let fetched = Fetched {
            name: name.to_owned(),
            path: final_path,
            size: total,
            sha256: hasher.finalize().into(),
        };
        info!(
            file = %fetched.name,
            size = fetched.size,
            sha256 = %fetched.sha256_hex(),
            "sftp: downloaded"
        );
        Ok(Some(fetched))
    }
}

/// A hidden temp file in the staging directory, removed on drop unless persisted.
struct PartFile {
    path: PathBuf,
    file: fs::File,
    persisted: bool,
}

impl PartFile {
    fn create(staging: &Path, name: &str) -> Result<Self, FetchError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Keep the temp name within NAME_MAX (255 bytes) for long remote names.
        let mut cut = name.len().min(200);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let path = staging.join(format!(".{}.{}-{n}.part", &name[..cut], std::process::id()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts
            .open(&path)
            .map_err(|e| FetchError::Transfer(format!("cannot create {}: {e}", path.display())))?;
        Ok(Self {
            path,
            file,
            persisted: false,
        })
    }

    fn persist(mut self, final_path: &Path) -> Result<(), FetchError> {
        fs::rename(&self.path, final_path).map_err(|e| {
            FetchError::Transfer(format!(
                "cannot rename {} to {}: {e}",
                self.path.display(),
                final_path.display()
            ))
        })?;
        self.persisted = true;
        // Make the rename itself durable. The file is complete and verified at this
        // point, so a failure here is only worth a warning.
        if let Some(dir) = final_path.parent()
            && let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all())
        {
            warn!(dir = %dir.display(), error = %e, "sftp: fsync of the staging directory failed");
        }
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}
