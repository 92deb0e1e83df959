//! Secrets and card numbers never reach the logs, at the most verbose level, through a full
//! scenario: every processor route (signed, replayed, conflicting, refused, malformed) and
//! every admin route (with the right token and with near misses of it).

mod common;

use authorizer::client::Client;
use common::{bin, free_port, serve_logged, stop};
use protocol::ApiSecret;
use serde_json::json;
use std::time::Duration;

const API_KEY: &str = "key-log-test";
const SECRET: &str = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";
const TOKEN: &str = "tok-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const PANS: [&str; 3] = ["4111111111111111", "5555444433336708", "378282246310005"];

fn body(id: &str, kind: &str, amount: &str, original: Option<&str>) -> Vec<u8> {
    let original = original.map_or("null".to_owned(), |o| format!("\"{o}\""));
    format!(
        r#"{{"transaction":{{"id":"{id}","type":"{kind}","point_type":"POS","entry_mode":"MANUAL","origin":"DOMESTIC","original_transaction_id":{original}}},"merchant":{{"id":"m-1","mcc":"5045","name":"Shop {pan1}","city":"CABA"}},"card":{{"id":"crd-log","product_type":"PREPAID","provider":"VISA","last_four":"1111","pan":"{pan0}","number":"{pan2}","cvv":"123"}},"user":{{"id":"usr-log"}},"amount":{{"local":{{"total":"{amount}","currency":"ARS"}},"details":[{{"type":"BASE","currency":"ARS","amount":"{amount}","name":"card {pan0}"}}]}},"extra_data":{{"track2":"{pan0}=2512101"}}}}"#,
        pan0 = PANS[0],
        pan1 = PANS[1],
        pan2 = PANS[2],
    )
    .into_bytes()
}

async fn scenario(c: &Client, bad_token: &Client, wrong_secret: &Client) {
    // Admin: every route, right token.
    for (method, path, body, key) in [
        (
            "PUT",
            "/v1/accounts/usr-log/ARS",
            json!({"overdraft_limit":"0","daily_limit":null,"per_transaction_limit":"5000.00","blocked_mccs":["7995"]}),
            None,
        ),
        (
            "PUT",
            "/v1/cards/crd-log",
            json!({"user_id":"usr-log","status":"ACTIVE","blocked_mccs":[]}),
            None,
        ),
        (
            "POST",
            "/v1/accounts/usr-log/ARS/deposits",
            json!({"amount":"1000.00","reference":"top-up"}),
            Some("dep-1"),
        ),
        (
            "POST",
            "/v1/accounts/usr-log/ARS/withdrawals",
            json!({"amount":"1.00"}),
            Some("wd-1"),
        ),
    ] {
        let (s, _) = c.admin(method, path, Some(body), key).await.unwrap();
        assert_eq!(s, 201, "{method} {path}");
    }
    // Processor: every route.
    let purchase = async |id: &str, amount: &str, key: &str| {
        c.processor(
            "/transactions/authorizations",
            &body(id, "PURCHASE", amount, None),
            key,
        )
        .await
        .unwrap()
    };
    let r = purchase("ctx-log-1", "10.00", "k-1").await;
    assert_eq!((r.status, r.signature_ok), (200, true), "{:?}", r.json());
    assert_eq!(r.json()["status"], "APPROVED");
    let r = purchase("ctx-log-1", "10.00", "k-1").await;
    assert_eq!(r.status, 200, "replay");
    let r = purchase("ctx-log-9", "11.00", "k-1").await;
    assert_eq!(r.status, 409, "same key, other body");
    for (path, id, kind, original) in [
        (
            "/transactions/authorizations/debit",
            "ctx-log-2",
            "WITHDRAWAL",
            None,
        ),
        (
            "/transactions/authorizations/credit",
            "ctx-log-3",
            "REFUND",
            None,
        ),
        (
            "/transactions/authorizations",
            "ctx-log-4",
            "BALANCE_INQUIRY",
            None,
        ),
        (
            "/transactions/adjustments/debit",
            "ctx-log-5",
            "PURCHASE",
            Some("ctx-log-1"),
        ),
        (
            "/transactions/adjustments/credit",
            "ctx-log-6",
            "REFUND",
            Some("ctx-log-1"),
        ),
    ] {
        let r = c
            .processor(path, &body(id, kind, "2.00", original), &format!("k-{id}"))
            .await
            .unwrap();
        assert_eq!((r.status, r.signature_ok), (200, true), "{path}");
    }
    let too_much = purchase("ctx-log-7", "999999.00", "k-7").await;
    assert_eq!(too_much.json()["status"], "REJECTED");
    let inner: serde_json::Value =
        serde_json::from_slice(&body("ctx-log-2", "WITHDRAWAL", "2.00", None)).unwrap();
    let mut detail = inner.as_object().unwrap().clone();
    detail.insert("status".into(), json!("REJECTED"));
    detail.insert("status_detail".into(), json!("CLIENT_TIMEOUT"));
    let advice = json!({"event_id":"authorization-advice","event_detail":detail,"idempotency_key":"adv-log-1"});
    let r = c
        .processor(
            "/transactions/v1/notifications",
            advice.to_string().as_bytes(),
            "adv-log-1",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Malformed bodies carrying card numbers: 400, and the card number stays out of the logs.
    let wrong_type = format!(
        r#"{{"transaction":{{"id":"ctx-log-8","type":"PURCHASE"}},"user":{{"id":{}}},"amount":{{"local":{{"total":"1.00","currency":"ARS"}}}}}}"#,
        PANS[0]
    );
    let refused = async |path: &str, body: &[u8], key: &str| {
        let r = c.processor(path, body, key).await.unwrap();
        assert_eq!(r.status, 400, "{path}");
    };
    refused("/transactions/authorizations", wrong_type.as_bytes(), "k-8").await;
    let bad_amount = String::from_utf8(body("ctx-log-10", "PURCHASE", "1.00", None))
        .unwrap()
        .replacen(
            "\"total\":\"1.00\"",
            &format!("\"total\":\"{}x\"", PANS[1]),
            1,
        );
    refused(
        "/transactions/adjustments/credit",
        bad_amount.as_bytes(),
        "k-10",
    )
    .await;
    let truncated = format!("{{\"pan\":\"{}\"", PANS[2]);
    refused(
        "/transactions/v1/notifications",
        truncated.as_bytes(),
        "k-11",
    )
    .await;
    // Refused: a wrong secret, and a wrong admin token.
    let r = wrong_secret
        .processor(
            "/transactions/authorizations",
            &body("ctx-log-12", "PURCHASE", "1.00", None),
            "k-12",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let (s, _) = bad_token
        .admin("GET", "/v1/accounts/usr-log/ARS", None, None)
        .await
        .unwrap();
    assert_eq!(s, 401);
    // Reading back.
    for path in [
        "/v1/accounts/usr-log/ARS",
        "/v1/accounts/usr-log/ARS/postings?limit=5",
        "/v1/transactions/ctx-log-1",
        "/v1/reconciliation/runs",
    ] {
        let (s, _) = c.admin("GET", path, None, None).await.unwrap();
        assert_eq!(s, 200, "{path}");
    }
    let (s, _) = c
        .admin(
            "GET",
            "/v1/reconciliation/runs/2024-01-01/breaks",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 404);
}

#[actix_rt::test]
async fn a_full_scenario_at_trace_level_logs_no_secret_and_no_card_number() {
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = bin();
        cmd.env("AUTHORIZER__DATABASE__DATA_DIR", dir.path())
            .env("AUTHORIZER__PROCESSOR__API_KEY", API_KEY)
            .env("AUTHORIZER__PROCESSOR__API_SECRET", SECRET)
            .env("AUTHORIZER__ADMIN__TOKEN", TOKEN)
            .env("AUTHORIZER__LOG__FILTER", "trace")
            .env("AUTHORIZER__LOG__FORMAT", format);
        let (mut child, log_path) = serve_logged(cmd, port, dir.path());
        let addr = format!("127.0.0.1:{port}");
        let secret = ApiSecret::from_base64(SECRET).unwrap();
        let base = format!("http://{addr}");
        let c = Client::new(base.clone(), API_KEY.into(), secret.clone(), TOKEN.into());
        // Near misses of the real token: neither may be logged either.
        let bad_token = Client::new(base.clone(), API_KEY.into(), secret, format!("{TOKEN}x"));
        let wrong_secret = Client::new(
            base,
            API_KEY.into(),
            ApiSecret::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
            TOKEN.into(),
        );
        scenario(&c, &bad_token, &wrong_secret).await;
        stop(&mut child, Duration::from_secs(20));
        let logs = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
        assert!(
            logs.lines().count() > 50,
            "{format}: trace logging is on:\n{logs}"
        );
        // The logs are there and verbose: requests are logged by id.
        for id in ["ctx-log-1", "ctx-log-6", "adv-log-1", "signature refused"] {
            assert!(logs.contains(id), "{format}: '{id}' not logged:\n{logs}");
        }
        let secret_bytes = ApiSecret::from_base64(SECRET).unwrap();
        let mut forbidden: Vec<String> = vec![
            SECRET.to_owned(),
            TOKEN.to_owned(),
            // Parts of the token or secret long enough to identify them.
            TOKEN[4..20].to_owned(),
            SECRET[..16].to_owned(),
            secret_bytes.to_base64().replace('=', ""),
        ];
        forbidden.extend(PANS.iter().map(|p| (*p).to_owned()));
        for f in &forbidden {
            assert!(
                !logs.contains(f.as_str()),
                "{format}: '{f}' leaked into the logs:\n{logs}"
            );
        }
    }
}
