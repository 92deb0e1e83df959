//! A webhook subscriber for `scripts/perf`: answers the URL challenge of `docs/webhooks.md`
//! with the HMAC of the subscription's secret (read from SECRET_FILE at each challenge, since
//! the secret exists only once the subscription is created) and acknowledges every delivery
//! with 200 on a kept-open HTTP/1.1 connection. At SIGTERM it writes the number of deliveries
//! and of distinct event ids to COUNT_FILE and exits.
//!
//! It stands for a subscriber's own system, which for the measurement runs on the
//! authorizer's machine: it reads the requests off the socket itself and does nothing else,
//! so that it costs that machine as little as it can.
//!
//! ```text
//! webhook-receiver PORT SECRET_FILE COUNT_FILE
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

/// Deliveries received and the distinct event ids among them.
#[derive(Default)]
struct Counts {
    deliveries: u64,
    events: HashSet<String>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, secret_file, count_file] = args.as_slice() else {
        anyhow::bail!("usage: webhook-receiver PORT SECRET_FILE COUNT_FILE");
    };
    let port: u16 = port.parse()?;
    let counts = Arc::new(Mutex::new(Counts::default()));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, _) = accepted?;
                        let (counts, secret_file) = (counts.clone(), secret_file.clone());
                        tokio::spawn(serve(stream, counts, secret_file));
                    }
                    _ = term.recv() => break,
                }
            }
            anyhow::Ok(())
        })?;
    let c = counts
        .lock()
        .map_err(|_| anyhow::anyhow!("counts poisoned"))?;
    std::fs::write(
        count_file,
        format!(
            "{{\"deliveries\": {}, \"events\": {}}}",
            c.deliveries,
            c.events.len()
        ),
    )?;
    Ok(())
}

/// Answers the requests of one connection until the peer closes it.
async fn serve(mut stream: TcpStream, counts: Arc<Mutex<Counts>>, secret_file: String) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or_default();
            let (mut length, mut event_id) = (0usize, String::new());
            for line in lines {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-event-id") {
                    event_id = value.trim().to_owned();
                }
            }
            if buf.len() < end + 4 + length {
                break;
            }
            buf.drain(..end + 4 + length);
            let mut parts = request_line.split(' ');
            match (parts.next(), parts.next()) {
                (Some("GET"), Some(target)) => out.extend(challenge(target, &secret_file)),
                _ => {
                    if let Ok(mut c) = counts.lock() {
                        c.deliveries += 1;
                        c.events.insert(event_id);
                    }
                    out.extend_from_slice(OK_EMPTY);
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The answer to `GET <target>`: the hex HMAC-SHA256 of its `challengeCode` under the
/// subscription's secret, as `{"encrypted_challenge": ...}`.
fn challenge(target: &str, secret_file: &str) -> Vec<u8> {
    let code = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("challengeCode="))
        .unwrap_or_default();
    let secret = std::fs::read_to_string(secret_file).unwrap_or_default();
    let hex = protocol::webhook::encrypted_challenge(secret.trim(), code);
    let body = format!("{{\"encrypted_challenge\":\"{hex}\"}}");
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Where `needle` first stands in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
