//! Bodies and calls the scenarios share.

use e2e::*;
use serde_json::{Value, json};

pub const RES: &str = "/channels/v1/reservations";

pub fn capture_path(id: &str) -> String {
    format!("{RES}/{id}/capture")
}
pub fn cancel_path(id: &str) -> String {
    format!("{RES}/{id}/cancel")
}
pub fn refund_path(id: &str) -> String {
    format!("{RES}/{id}/refunds")
}
pub fn get_path(id: &str) -> String {
    format!("{RES}/{id}")
}

/// A reservation body for u1.
pub fn reservation(id: &str, amount: &str, currency: &str) -> Value {
    json!({
        "reservation_id": id,
        "user_id": "u1",
        "amount": amount,
        "currency": currency,
        "merchant": {"id": "bio-1001", "name": "Cinema Aarhus", "mcc": "7832"},
        "reference": format!("order-{id}"),
    })
}

pub fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// POSTs `body` to a channel route under a fresh idempotency key.
pub async fn post(app: &TestApp, path: &str, body: &Value) -> Resp {
    app.channel("POST", path, &bytes(body), Some(&uid("ck")))
        .await
}

/// Reserves and asserts the status and detail.
pub async fn reserve(app: &TestApp, body: &Value, status: &str, detail: &str) -> Resp {
    let r = post(app, RES, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], status, "{v}");
    assert_eq!(v["status_detail"], detail, "{v}");
    r
}

/// The error envelope's code, asserting the HTTP status.
pub fn error_code(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    r.json()["error"]["code"]
        .as_str()
        .expect("error envelope")
        .to_owned()
}

/// (posted, held, available) of u1's account.
pub async fn balances(app: &TestApp, currency: &str) -> (String, String, String) {
    let a = app.account("u1", currency).await;
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    (s("posted"), s("held"), s("available"))
}

/// Movements of a kind on u1's account, from the postings list.
pub async fn movements_of(app: &TestApp, currency: &str, kind: &str) -> usize {
    let p = app
        .admin(
            "GET",
            &format!("/v1/accounts/u1/{currency}/postings?limit=500"),
            None,
            None,
        )
        .await
        .json();
    p["postings"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["kind"] == kind).count())
        .unwrap_or(0)
}
