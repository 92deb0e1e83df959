//! A fault a real Postgres cannot produce on demand: the connection lost while a commit's
//! answer is on its way. A TCP proxy in front of the test Postgres forwards everything;
//! once armed, the first connection that sends a statement containing a given text has its
//! commit forwarded to the server and is then cut on the client's side: its transaction's
//! `COMMIT` ([`Cut::Commit`]), or the execution of that very statement when it is its own
//! commit (a statement outside a transaction: [`Cut::Execute`]). The server commits; the
//! client hears nothing back (an uncertain commit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The simple-protocol `COMMIT` message: `Q`, its length (4 + 7), the text and its NUL.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
/// An extended-protocol `Execute` of the unnamed portal, all rows: `E`, length 9, an empty
/// name, 0.
const EXECUTE: &[u8] = b"E\0\0\0\x09\0\0\0\0\0";
/// `Sync`, which commits the implicit transaction of the statements before it.
const SYNC: &[u8] = b"S\0\0\0\x04";

/// Where the connection is cut, once the marked statement was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// After the transaction's `COMMIT` reaches the server.
    Commit,
    /// After the marked statement's execution, and the `Sync` that commits it, reach the
    /// server (a statement outside a transaction is its own commit).
    Execute,
}

pub struct CommitCutter {
    /// The database's URL through the proxy.
    pub url: String,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl CommitCutter {
    /// A proxy to the database of `url` (`postgres://[user[:password]@]host:port/name`),
    /// cutting at `cut` after a statement with `marker` once armed.
    pub async fn start(url: &str, marker: &'static str, cut: Cut) -> CommitCutter {
        let (head, rest) = url.split_once("://").expect("a URL");
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (format!("{a}@"), r),
            None => (String::new(), rest),
        };
        let (upstream, name) = rest.split_once('/').expect("host and database");
        let upstream = upstream.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, n) = (armed.clone(), cuts.clone());
        actix_rt::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let marked = (marker, cut);
                actix_rt::spawn(relay(client, server, marked, a.clone(), n.clone()));
            }
        });
        CommitCutter {
            url: format!("{head}://{auth}127.0.0.1:{port}/{name}"),
            armed,
            cuts,
        }
    }

    /// Cuts the next connection that commits a transaction with the marker.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    (marker, at): (&'static str, Cut),
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = actix_rt::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let (mut marked, mut executed) = (false, false);
    while let Ok(n) = client_read.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        marked |= armed.load(Ordering::SeqCst) && contains(chunk, marker.as_bytes());
        executed |= marked && at == Cut::Execute && contains(chunk, EXECUTE);
        let due = match at {
            Cut::Commit => marked && contains(chunk, COMMIT),
            Cut::Execute => executed && contains(chunk, SYNC),
        };
        let cut = due && armed.swap(false, Ordering::SeqCst);
        if cut {
            // Nothing of the server's goes back from here: the client never hears of the
            // commit. The server's side stays open a moment, so that it does not see the
            // client go before it commits.
            back.abort();
            cuts.fetch_add(1, Ordering::SeqCst);
        }
        if server_write.write_all(chunk).await.is_err() {
            break;
        }
        if cut {
            actix_rt::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    }
    back.abort();
}
