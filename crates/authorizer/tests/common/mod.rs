//! What the binary's tests share: the binary with a clean environment and no config
//! directory, a free port, and the wait for a started server.

use std::process::Command;
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

/// Waits until a server listens on the loopback `port`, failing the test after `within`.
pub fn wait_listening(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
