//! `kill -9` of a real authorizer process between a reservation's commit and its answer:
//! the channel's retry (same key, same body) replays it, and there is one hold. On both
//! stores: Postgres, and the embedded SQLite file the next process opens again.

use super::common::*;
use e2e::*;

/// A signed channel request to `base`; status 0 when the connection failed.
async fn reserve_at(base: &str, body: &[u8], key: &str) -> (u16, Vec<u8>) {
    let r = Remote::new(base)
        .channel("POST", RES, body, Some(key))
        .await;
    (r.status, r.body)
}

const HOLDS: &str = "SELECT COUNT(*) FROM holds";

async fn a_reservation_committed_by_a_killed_process_replays(db: String) {
    let data = tempfile::tempdir().expect("dir");
    let sqlite = data.path().join("authorizer.db");
    let node = |env: &[(&str, &str)]| {
        let bin = env!("CARGO_BIN_EXE_authorizer-node");
        Node::sharing(bin, &db, data.path(), "127.0.0.1:0", env)
    };
    let mut victim = node(&[("AUTHORIZER_FAULT_RESERVATION_ANSWER_DELAY_MS", "60000")]);
    let admin = Remote::new(&victim.base);
    admin.funded("u1", "DKK", "100.00").await;
    let body = bytes(&reservation("mp-killed", "40.00", "DKK"));
    let key = "k-killed";
    let base = victim.base.clone();
    let (b2, k2) = (body.clone(), key.to_owned());
    let pending = actix_rt::spawn(async move { reserve_at(&base, &b2, &k2).await });
    // Killed once the reservation is committed (its hold is in the database), its answer
    // held back.
    kill9_once_committed(&mut victim, &db, &sqlite, HOLDS, "reservation", pending).await;

    // The channel retries on another instance: the committed answer, and still one hold.
    let survivor = node(&[]);
    let (status, answer) = reserve_at(&survivor.base, &body, key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(v["status"], "APPROVED");
    assert_eq!(v["reservation"]["reservation_id"], "mp-killed");
    let (again_status, again) = reserve_at(&survivor.base, &body, "k-other").await;
    assert_eq!((again_status, &again), (200, &answer));
    assert_eq!(count_in(&db, &sqlite, HOLDS).await, 1);
    let acct = Remote::new(&survivor.base)
        .admin("GET", "/v1/accounts/u1/DKK", None, None)
        .await;
    let a: serde_json::Value = serde_json::from_slice(&acct.body).expect("JSON");
    assert_eq!(a["held"], "40.00");
    assert_eq!(a["available"], "60.00");
    drop(survivor);
    assert_database_clean((!db.is_empty()).then(|| db.clone()), sqlite).await;
}

on_both_stores!(
    postgres_a_reservation_committed_by_a_killed_process_replays,
    sqlite_a_reservation_committed_by_a_killed_process_replays,
    a_reservation_committed_by_a_killed_process_replays
);
