//! An authorizer as a real process (the command line, `serve`), for the tests that kill,
//! signal or restart it: its bound address read from its log, the log kept for assertions.

use crate::{
    ADMIN_TOKEN, API_KEY, API_SECRET, CHANNEL_KEY, CHANNEL_NAME, CHANNEL_SECRET, INSTORE_HASH_KEY,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a [`Node`] starts; the defaults: a fresh data directory, a free loopback port, no
/// configuration file.
#[derive(Default)]
pub struct NodeOptions<'a> {
    /// The data directory (`None`: a temporary one, removed with the node).
    pub data_dir: Option<&'a Path>,
    /// `server.listen` (`None`: `127.0.0.1:0`).
    pub listen: Option<&'a str>,
    /// The test channel's key pair in the node's `config/default.toml`.
    pub channel_key: bool,
    /// More environment, e.g. `AUTHORIZER__...` settings or `REDIS_URL`.
    pub env: &'a [(&'a str, &'a str)],
    /// More of the node's `config/default.toml` (tables the environment cannot express,
    /// such as `[[instore.tenants]]`).
    pub config: &'a str,
}

/// A running authorizer process; killed when dropped.
pub struct Node {
    pub child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
    _data: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts `bin` (a test's `env!("CARGO_BIN_EXE_authorizer-node")`) on the database
    /// `db`, with the demo processor key pair and the test admin token, and waits until it
    /// listens.
    pub fn start(bin: &str, db: &str, o: NodeOptions<'_>) -> Node {
        let temp = match o.data_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("dir")),
        };
        let data: PathBuf = o
            .data_dir
            .map(Path::to_path_buf)
            .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
            .expect("a data directory");
        let config = data.join("config");
        if o.channel_key || !o.config.is_empty() {
            let keys = if o.channel_key {
                format!(
                    "[[channels.keys]]\nname = \"{CHANNEL_NAME}\"\napi_key = \"{CHANNEL_KEY}\"\napi_secret = \"{CHANNEL_SECRET}\"\n"
                )
            } else {
                String::new()
            };
            std::fs::create_dir_all(&config).expect("config dir");
            std::fs::write(config.join("default.toml"), format!("{keys}{}", o.config))
                .expect("config file");
        }
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHORIZER_CONFIG_DIR", &config)
            .env(
                "AUTHORIZER__SERVER__LISTEN",
                o.listen.unwrap_or("127.0.0.1:0"),
            )
            .env("AUTHORIZER__SERVER__WORKERS", "2")
            .env("AUTHORIZER__DATABASE__DATA_DIR", &data)
            .env("AUTHORIZER__PROCESSOR__API_KEY", API_KEY)
            .env("AUTHORIZER__PROCESSOR__API_SECRET", API_SECRET)
            .env("AUTHORIZER__ADMIN__TOKEN", ADMIN_TOKEN)
            .env("AUTHORIZER__INSTORE__SECRET_HASH_KEY", INSTORE_HASH_KEY)
            .env("AUTHORIZER__LOG__FILTER", "info")
            .env("DATABASE_URL", db)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in o.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("authorizer-node starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("listening on http://")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_owned());
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("node did not start: {:?}", log.lock().map(|l| l.clone())));
        Node {
            child,
            base: format!("http://{addr}"),
            log,
            _data: temp,
        }
    }

    /// One process of a kill-and-restart test: on `db` and the data directory `data`, both
    /// shared by the killed process and its survivor, listening on `listen` (a survivor
    /// may take its victim's address), with the test channel's key pair and `env`.
    pub fn sharing(bin: &str, db: &str, data: &Path, listen: &str, env: &[(&str, &str)]) -> Node {
        let options = NodeOptions {
            data_dir: Some(data),
            listen: Some(listen),
            channel_key: true,
            env,
            ..NodeOptions::default()
        };
        Node::start(bin, db, options)
    }

    /// Sends `sig` (`-TERM`, `-KILL`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// `kill -9`, and waits until the process is gone.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Waits up to `within` for the process to exit (after a signal); its exit status, or
    /// `None` while it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The count `sql` (one `COUNT(*)`) reads in the Postgres database `db`, or (`db` empty)
/// in the SQLite file `sqlite`, opened read-only beside a node that may be running; 0
/// before the file exists.
pub async fn count_in(db: &str, sqlite: &Path, sql: &str) -> i64 {
    use sqlx::Connection;
    if db.is_empty() {
        let url = format!("sqlite://{}?mode=ro", sqlite.display());
        let Ok(mut c) = sqlx::SqliteConnection::connect(&url).await else {
            return 0;
        };
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap_or(0)
    } else {
        let mut c = sqlx::PgConnection::connect(db).await.expect("connect");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    }
}

/// Waits (30 s at most) until `committed` (a `COUNT(*)`, see [`count_in`]) finds a row in the
/// database `db` or `sqlite` of `victim`, then `kill -9`s it and asserts that `pending`, the
/// request whose answer it was holding back, got none (status 0). `what` names the request.
pub async fn kill9_once_committed(
    victim: &mut Node,
    db: &str,
    sqlite: &Path,
    committed: &str,
    what: &str,
    pending: actix_rt::task::JoinHandle<(u16, Vec<u8>)>,
) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while count_in(db, sqlite, committed).await == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the {what} never committed"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill9();
    let (status, _) = pending.await.expect("request task");
    assert_eq!(status, 0, "the killed process never answered");
}
