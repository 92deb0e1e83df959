//! `kill -9` of a real authorizer process between a reservation's commit and its answer:
//! the channel's retry (same key, same body) replays it, and there is one hold.

use super::common::*;
use e2e::*;
use std::time::{Duration, Instant};

/// A signed channel request to `base`; status 0 when the connection failed.
async fn reserve_at(base: &str, body: &[u8], key: &str) -> (u16, Vec<u8>) {
    let r = Remote::new(base)
        .channel("POST", RES, body, Some(key))
        .await;
    (r.status, r.body)
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
        env!("CARGO_BIN_EXE_authorizer-node"),
        &db,
        NodeOptions {
            channel_key: true,
            env: &[("AUTHORIZER_FAULT_RESERVATION_ANSWER_DELAY_MS", "60000")],
            ..NodeOptions::default()
        },
    );
    let admin = Remote::new(&victim.base);
    admin.open_and_fund("u1", "DKK", "100.00", "fund-1").await;
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
    victim.kill9();
    let (status, _) = pending.await.expect("request task");
    assert_eq!(status, 0, "the killed process never answered");

    // The channel retries on another instance: the committed answer, and still one hold.
    let survivor = Node::start(
        env!("CARGO_BIN_EXE_authorizer-node"),
        &db,
        NodeOptions {
            channel_key: true,
            ..NodeOptions::default()
        },
    );
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
    let store = pg_store(&db).await;
    assert_clean(&store).await;
}
