//! `kill -9` of a real authorizer process between an InStore Redeem's commit and its
//! acknowledgement (instore-extensions.md section 1.6 and 6.5 item 5): InStore's retry under
//! the same `requestId` replays the acknowledgement byte for byte, the ledger holds one
//! movement, and the callback arrives at least once, every copy byte-identical. On both
//! stores: Postgres, and the embedded SQLite file the next process opens again.

use e2e::instore::{CallbackReceiver, KEY, TENANT, envelope};
use e2e::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const NUMBER: &str = "6280001234567895";
const REQUEST_ID: &str = "req-killed-1";
const ACK: &[u8] = br#"{"requestId":"req-killed-1"}"#;

/// The section 7 tenant, calling back to `receiver`, with a short dispatcher poll.
fn tenant_config(receiver: &str) -> String {
    format!(
        "[webhooks]\npoll_interval_ms = 50\n\n[[instore.tenants]]\ntenant_id = \"{TENANT}\"\n\
         verification_key = \"{KEY}\"\ncallback_url_prefixes = [\"{receiver}/\"]\n"
    )
}

fn start(db: &str, data: &Path, config: &str, env: &[(&str, &str)]) -> Node {
    Node::start(
        env!("CARGO_BIN_EXE_authorizer-node"),
        db,
        NodeOptions {
            data_dir: Some(data),
            env,
            config,
            ..NodeOptions::default()
        },
    )
}

/// POSTs a signed envelope to `base`; status 0 when the connection failed.
async fn post_at(base: &str, body: &[u8], signature: &str) -> (u16, Vec<u8>) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(90))
        .finish();
    let sent = client
        .post(format!("{base}/instore/storedvaluecard_process"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("X-Signature", signature))
        .send_body(body.to_vec())
        .await;
    match sent {
        Ok(mut r) => {
            let bytes = r.body().await.map(|b| b.to_vec()).unwrap_or_default();
            (r.status().as_u16(), bytes)
        }
        Err(_) => (0, Vec::new()),
    }
}

async fn a_redeem_committed_by_a_killed_process_replays(db: String) {
    let receiver = CallbackReceiver::start();
    let config = tenant_config(&receiver.base);
    let data = tempfile::tempdir().expect("dir");
    let sqlite = data.path().join("authorizer.db");
    let mut victim = start(
        &db,
        data.path(),
        &config,
        &[("AUTHORIZER_FAULT_INSTORE_ANSWER_DELAY_MS", "60000")],
    );
    Remote::new(&victim.base)
        .stored_value_card("u-killed", "USD", "50.00", NUMBER)
        .await;
    let payload = json!({
        "requestId": REQUEST_ID, "locationId": "LondonStore", "workstationId": "POS-03",
        "action": "Redeem", "number": NUMBER,
        "amount": {"amount": 1220, "precision": 2, "currency": "USD"},
        "session_id": "session-killed", "reference": "order-killed",
    });
    let callback_path = "/callback/killed";
    let callback_url = format!("{}{callback_path}", receiver.base);
    let (body, signature) = envelope("storedvaluecard_process", &payload, &callback_url);
    let base = victim.base.clone();
    let (b2, s2) = (body.clone(), signature.clone());
    let pending = actix_rt::spawn(async move { post_at(&base, &b2, &s2).await });
    // Killed once the Redeem is committed (its record is in the database), its answer held
    // back.
    let requests = "SELECT COUNT(*) FROM instore_requests";
    kill9_once_committed(&mut victim, &db, &sqlite, requests, "Redeem", pending).await;

    // InStore retries on the restarted process: the committed acknowledgement, byte for
    // byte, as often as it asks, and one movement.
    let survivor = start(&db, data.path(), &config, &[]);
    for _ in 0..2 {
        let (status, ack) = post_at(&survivor.base, &body, &signature).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ack));
        assert_eq!(ack, ACK);
    }
    let movements = "SELECT COUNT(*) FROM instore_movements";
    assert_eq!(count_in(&db, &sqlite, movements).await, 1);
    let remote = Remote::new(&survivor.base);
    assert_eq!(
        remote.account("u-killed", "USD").await["available"],
        "37.80"
    );

    // The callback: at least once, every copy the same bytes under the same signature.
    let posts = receiver
        .wait_for(callback_path, 1, Duration::from_secs(30))
        .await;
    let first = &posts[0];
    let cb: serde_json::Value = serde_json::from_slice(&first.body).expect("callback JSON");
    assert_eq!(cb["requestId"], REQUEST_ID);
    assert_eq!(cb["status"], "approved", "{cb}");
    assert_eq!(cb["data"]["balance"]["amount"], 3780);
    for p in &posts {
        assert_eq!(p.body, first.body, "byte-identical callbacks");
        assert_eq!(p.signature, first.signature);
    }
    drop(survivor);
    assert_database_clean((!db.is_empty()).then(|| db.clone()), sqlite).await;
}

on_both_stores!(
    postgres_a_redeem_committed_by_a_killed_process_replays,
    sqlite_a_redeem_committed_by_a_killed_process_replays,
    a_redeem_committed_by_a_killed_process_replays
);
