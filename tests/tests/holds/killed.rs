//! `kill -9` of a real authorizer process between a reservation's commit and its answer:
//! the channel's retry (same key, same body) replays it, and there is one hold.

use super::common::*;
use e2e::*;
use protocol::ApiSecret;
use protocol::signature::{self, headers};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An authorizer process (the real command line) on `db`, with the test channel's key in
/// its configuration directory.
struct Node {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Node {
    fn start(db: &str, extra: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("dir");
        let config = data.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(
            config.join("default.toml"),
            format!(
                "[[channels.keys]]\nname = \"{CHANNEL_NAME}\"\napi_key = \"{CHANNEL_KEY}\"\napi_secret = \"{CHANNEL_SECRET}\"\n"
            ),
        )
        .expect("config file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authorizer-node"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHORIZER_CONFIG_DIR", &config)
            .env("AUTHORIZER__SERVER__LISTEN", "127.0.0.1:0")
            .env("AUTHORIZER__SERVER__WORKERS", "2")
            .env("AUTHORIZER__DATABASE__DATA_DIR", data.path())
            .env("AUTHORIZER__PROCESSOR__API_KEY", API_KEY)
            .env("AUTHORIZER__PROCESSOR__API_SECRET", API_SECRET)
            .env("AUTHORIZER__ADMIN__TOKEN", ADMIN_TOKEN)
            .env("AUTHORIZER__LOG__FILTER", "info")
            .env("DATABASE_URL", db)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("authorizer-node starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("listening on http://")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node did not start");
        Node {
            child,
            base: format!("http://{addr}"),
            _data: data,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed channel request to `base`; status 0 when the connection failed.
async fn reserve_at(base: &str, body: &[u8], key: &str) -> (u16, Vec<u8>) {
    let secret = ApiSecret::from_base64(CHANNEL_SECRET).expect("secret");
    let ts = crate_now().to_string();
    let sig = signature::sign(&secret, &ts, RES, body);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let res = client
        .post(format!("{base}{RES}"))
        .insert_header((headers::API_KEY, CHANNEL_KEY))
        .insert_header((headers::TIMESTAMP, ts))
        .insert_header((headers::ENDPOINT, RES))
        .insert_header((headers::SIGNATURE, sig))
        .insert_header((headers::IDEMPOTENCY_KEY, key))
        .insert_header(("content-type", "application/json"))
        .send_body(body.to_vec())
        .await;
    match res {
        Ok(mut r) => {
            let status = r.status().as_u16();
            (
                status,
                r.body().await.map(|b| b.to_vec()).unwrap_or_default(),
            )
        }
        Err(_) => (0, vec![]),
    }
}

async fn holds_in(db: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(db).await.expect("connect");
    sqlx::query_scalar("SELECT COUNT(*) FROM holds")
        .fetch_one(&mut c)
        .await
        .expect("count")
}

#[actix_rt::test]
async fn a_reservation_committed_by_a_killed_process_replays() {
    let db = fresh_pg_database().await;
    let victim = Node::start(
        &db,
        &[("AUTHORIZER_FAULT_RESERVATION_ANSWER_DELAY_MS", "60000")],
    );
    let admin = Remote::new(&victim.base);
    assert_eq!(
        admin
            .admin("PUT", "/v1/accounts/u1/DKK", None, None)
            .await
            .status,
        201
    );
    let r = admin
        .admin(
            "POST",
            "/v1/accounts/u1/DKK/deposits",
            Some(serde_json::json!({"amount": "100.00"})),
            Some("fund-1"),
        )
        .await;
    assert_eq!(r.status, 201);
    let body = bytes(&reservation("mp-killed", "40.00", "DKK"));
    let key = "k-killed";
    let base = victim.base.clone();
    let (b2, k2) = (body.clone(), key.to_owned());
    let pending = actix_rt::spawn(async move { reserve_at(&base, &b2, &k2).await });
    // The reservation is committed (its hold is in the database) and its answer held back.
    let until = Instant::now() + Duration::from_secs(30);
    while holds_in(&db).await == 0 {
        assert!(Instant::now() < until, "the reservation never committed");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let mut victim = victim;
    let ok = Command::new("kill")
        .args(["-KILL", &victim.child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok);
    let _ = victim.child.wait();
    let (status, _) = pending.await.expect("request task");
    assert_eq!(status, 0, "the killed process never answered");

    // The channel retries on another instance: the committed answer, and still one hold.
    let survivor = Node::start(&db, &[]);
    let (status, answer) = reserve_at(&survivor.base, &body, key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(v["status"], "APPROVED");
    assert_eq!(v["reservation"]["reservation_id"], "mp-killed");
    let (again_status, again) = reserve_at(&survivor.base, &body, "k-other").await;
    assert_eq!((again_status, &again), (200, &answer));
    assert_eq!(holds_in(&db).await, 1);
    let acct = Remote::new(&survivor.base)
        .admin("GET", "/v1/accounts/u1/DKK", None, None)
        .await;
    let a: serde_json::Value = serde_json::from_slice(&acct.body).expect("JSON");
    assert_eq!(a["held"], "40.00");
    assert_eq!(a["available"], "60.00");
    let store = store::Store::connect(&store::StoreConfig {
        url: Some(db.clone()),
        sqlite_path: std::path::PathBuf::new(),
        pool_connections_max: 2,
        pool_acquire_ms_max: 5000,
        statement_ms_max: 5000,
        lock_wait_ms_max: 5000,
        index_probes_only: false,
    })
    .await
    .expect("store");
    assert_clean(&store).await;
}
