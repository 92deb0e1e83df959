//! Bodies and calls the scenarios share.

use e2e::*;
use futures_util::future::join_all;
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

/// Reserves `amount` for u1 and asserts it is approved.
pub async fn reserve_approved(app: &TestApp, id: &str, amount: &str, currency: &str) -> Resp {
    reserve(
        app,
        &reservation(id, amount, currency),
        "APPROVED",
        "APPROVED",
    )
    .await
}

/// Reserves `amount` DKK for u1 and asserts it is rejected with `detail`.
pub async fn reserve_rejected(app: &TestApp, id: &str, amount: &str, detail: &str) -> Resp {
    reserve(app, &reservation(id, amount, "DKK"), "REJECTED", detail).await
}

/// A refund body.
pub fn refund(refund_id: &str, amount: &str) -> Value {
    json!({"refund_id": refund_id, "amount": amount})
}

/// POSTs `body` to `path` and returns the error code of the refusal, asserting its status.
pub async fn refused(app: &TestApp, path: &str, body: &Value, status: u16) -> String {
    error_code(&post(app, path, body).await, status)
}

/// POSTs each row's body to its path, in order, and asserts the refusal: the status and
/// the error code.
pub async fn refusals(
    app: &TestApp,
    rows: impl IntoIterator<Item = (String, Value, u16, &'static str)>,
) {
    for (path, body, status, code) in rows {
        assert_eq!(
            refused(app, &path, &body, status).await,
            code,
            "{path} {body}"
        );
    }
}

/// Asserts u1's posted and held balances.
pub async fn assert_posted_held(app: &TestApp, currency: &str, posted: &str, held: &str) {
    let (p, h, _) = balances(app, currency).await;
    assert_eq!((p.as_str(), h.as_str()), (posted, held));
}

/// Sends `body` to `path` `copies` times at once, each under its own key, and sends again an
/// answer that is no decision (503, 425) as a channel would. Asserts every copy got the same
/// 200 answer, and returns it.
pub async fn same_post_at_once(app: &TestApp, path: &str, body: &Value, copies: usize) -> Resp {
    let body = bytes(body);
    let mut answers = join_all((0..copies).map(|_| {
        let body = &body;
        async move {
            loop {
                let r = app.channel("POST", path, body, Some(&uid("ck"))).await;
                if r.status != 503 && r.status != 425 {
                    return r;
                }
            }
        }
    }))
    .await;
    let first = answers.swap_remove(0);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    for a in &answers {
        assert_eq!(
            (a.status, &a.body),
            (200, &first.body),
            "{}",
            String::from_utf8_lossy(&a.body)
        );
    }
    first
}
