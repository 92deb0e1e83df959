//! Test harness: a throwaway OpenSSH `sshd` on loopback serving files over SFTP
//! (internal-sftp), plus small TCP helpers (a forwarding proxy that can cut the
//! connection, a listener that hangs up at once).

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// System user created (when running as root) for the password test.
pub const PASSWORD_USER: &str = "authz-sftp-test";

pub fn sshd_binary() -> PathBuf {
    let p = std::env::var_os("AUTHORIZER_TEST_SSHD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/sshd"));
    assert!(
        p.is_absolute() && p.exists(),
        "OpenSSH sshd not found at {} (sshd must be run by absolute path). Install it with \
         `bash -c '. scripts/lib/services.sh && ensure_sshd_available'` or \
         `apt-get install openssh-server`, or point AUTHORIZER_TEST_SSHD at it.",
        p.display()
    );
    p
}

/// `ssh-keygen` (from AUTHORIZER_TEST_SSH_KEYGEN, else PATH).
pub fn ssh_keygen() -> Command {
    Command::new(
        std::env::var_os("AUTHORIZER_TEST_SSH_KEYGEN").unwrap_or_else(|| "ssh-keygen".into()),
    )
}

pub fn is_root() -> bool {
    run_stdout(Command::new("id").arg("-u")).trim() == "0"
}

fn current_user() -> String {
    run_stdout(Command::new("id").arg("-un")).trim().to_owned()
}

fn run_stdout(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Generates an ed25519 key pair without passphrase at `path` / `path.pub`.
pub fn keygen(path: &Path) {
    run_stdout(
        ssh_keygen()
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "authz-sftp-test",
                "-f",
            ])
            .arg(path),
    );
}

/// The `SHA256:...` fingerprint `ssh-keygen -lf` prints for a public key file.
pub fn keygen_fingerprint(pub_path: &Path) -> String {
    let out = run_stdout(ssh_keygen().arg("-lf").arg(pub_path));
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected ssh-keygen -lf output: {out:?}"))
        .to_owned()
}

pub struct SshdOptions {
    pub password_auth: bool,
}

/// A running sshd; killed on drop.
pub struct Sshd {
    pub dir: TempDir,
    pub port: u16,
    /// Directory whose files the tests serve (world-readable).
    pub serve: PathBuf,
    /// Private key whose public half is in authorized_keys.
    pub client_key: PathBuf,
    pub host_key_pub: PathBuf,
    /// Host key fingerprint as printed by `ssh-keygen -lf`.
    pub fingerprint: String,
    /// The user the key logs in as (the current user).
    pub user: String,
    pub log: PathBuf,
    child: Child,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Sshd {
    pub fn start(opts: SshdOptions) -> Sshd {
        let sshd = sshd_binary();
        let privsep = Path::new("/run/sshd");
        if !privsep.is_dir() {
            fs::create_dir_all(privsep).unwrap_or_else(|e| {
                panic!("sshd needs its privilege separation dir /run/sshd (create it as root): {e}")
            });
            fs::set_permissions(privsep, fs::Permissions::from_mode(0o755)).unwrap();
        }

        let dir = tempfile::Builder::new()
            .prefix("authz-sftp-")
            .tempdir()
            .unwrap();
        // The password user must reach the served files.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let serve = dir.path().join("serve");
        fs::create_dir(&serve).unwrap();
        fs::set_permissions(&serve, fs::Permissions::from_mode(0o755)).unwrap();

        let host_key = dir.path().join("host_key");
        keygen(&host_key);
        let host_key_pub = dir.path().join("host_key.pub");
        let fingerprint = keygen_fingerprint(&host_key_pub);
        let client_key = dir.path().join("client_key");
        keygen(&client_key);
        fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();

        let d = dir.path().display();
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {d}/host_key\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication {}\n\
             KbdInteractiveAuthentication no\n\
             UseDNS no\n\
             PrintMotd no\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            if opts.password_auth { "yes" } else { "no" }
        );
        let config_path = dir.path().join("sshd_config");
        fs::write(&config_path, config).unwrap();
        let log = dir.path().join("sshd.log");

        // A port picked by free_port() can be taken before sshd binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .arg("-p")
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", sshd.display()));
            match wait_listening(&mut child, &log) {
                Ok(()) => {
                    return Sshd {
                        dir,
                        port,
                        serve,
                        client_key,
                        host_key_pub,
                        fingerprint,
                        user: current_user(),
                        log,
                        child,
                    };
                }
                Err(text) if text.contains("Address already in use") => last = text,
                Err(text) => panic!("sshd did not start:\n{text}"),
            }
        }
        panic!("sshd could not bind a free port after 5 tries:\n{last}");
    }

    /// The sshd log so far (for diagnostics and assertions).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes a world-readable file into the served directory.
    pub fn serve_file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.serve.join(name);
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until sshd logs that it listens. On failure the child is reaped and its
/// log returned.
fn wait_listening(child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains("Server listening on") {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(sshd exited with {status})\n{text}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("(sshd not listening after 15 s)\n{text}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A system user with a fresh random password, for password authentication.
/// Only possible as root (`None` otherwise). The password is locked again on drop.
pub struct PasswordUser {
    pub name: String,
    pub password: String,
}

impl PasswordUser {
    pub fn create() -> Option<PasswordUser> {
        if !is_root() {
            return None;
        }
        let exists = Command::new("id")
            .args(["-u", PASSWORD_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            let out = Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", PASSWORD_USER])
                .output()
                .expect("run useradd");
            // 9 = already exists (a concurrent run created it meanwhile).
            assert!(
                out.status.success() || out.status.code() == Some(9),
                "useradd {PASSWORD_USER} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut random = [0u8; 16];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .expect("read /dev/urandom");
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("run chpasswd");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD_USER}:{password}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd failed");
        Some(PasswordUser {
            name: PASSWORD_USER.to_owned(),
            password,
        })
    }
}

impl Drop for PasswordUser {
    fn drop(&mut self) {
        // Leave no usable password behind.
        let _ = Command::new("usermod")
            .args(["-L", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A TCP forwarder on loopback to `127.0.0.1:target`, counting connections. With
/// `cut_after = Some(n)` every connection is closed (both sides) once `n` bytes
/// have flowed from the server to the client.
pub struct Proxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16, cut_after: Option<u64>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, stopping) = (connections.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                forward(client, server, cut_after);
            }
        });
        Proxy {
            port,
            connections,
            stop,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn forward(client: TcpStream, server: TcpStream, cut_after: Option<u64>) {
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let (mut s_read, mut c_write) = (server, client);
        let mut buf = [0u8; 16 * 1024];
        let mut sent: u64 = 0;
        loop {
            let n = match s_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(limit) = cut_after
                && sent + n as u64 >= limit
            {
                let keep = (limit - sent) as usize;
                let _ = c_write.write_all(&buf[..keep]);
                let _ = c_write.shutdown(Shutdown::Both);
                let _ = s_read.shutdown(Shutdown::Both);
                return;
            }
            if c_write.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        let _ = c_write.shutdown(Shutdown::Write);
    });
}

/// A listener that accepts connections and closes them at once (the SSH handshake
/// fails); returns its port and the number of connections accepted so far.
pub fn hang_up_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, count)
}

/// Deterministic pseudo-random bytes (incompressible enough for transfer tests).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Names of all entries in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    v.sort();
    v
}
