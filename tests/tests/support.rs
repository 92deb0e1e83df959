//! Helpers the scenario files share beside the harness.

use e2e::{Resp, TestApp, Tx, uid};
use serde_json::json;

/// A deposit or a withdrawal (`kind`: `deposits` or `withdrawals`) of `amount` on `user`'s
/// `currency` account through the admin API, under a fresh idempotency key.
pub async fn admin_money(
    app: &TestApp,
    kind: &str,
    user: &str,
    currency: &str,
    amount: &str,
) -> Resp {
    app.admin(
        "POST",
        &format!("/v1/accounts/{user}/{currency}/{kind}"),
        Some(json!({ "amount": amount })),
        Some(&uid(kind)),
    )
    .await
}

/// Asserts an adjustment's answer on `path`: booked (200, signed), its message naming each
/// of `flags`.
pub fn assert_booked_flagged(app: &TestApp, r: &Resp, path: &str, flags: &[&str]) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app.assert_signed(r, path);
    let message = r.json()["message"].as_str().unwrap_or("").to_owned();
    for flag in flags {
        assert!(message.contains(flag), "{flag} on {path}: {message}");
    }
}

/// Purchases on u1's ARS account of each raw JSON `amount`, with one BASE detail line of the
/// raw JSON `detail_amount`, sent to each processor route of `paths` under a fresh key: each
/// is refused before any decision, a signed 400 `malformed_request`.
pub async fn assert_amounts_malformed(
    app: &TestApp,
    amounts: &[&str],
    detail_amount: &str,
    paths: &[&str],
) {
    let details =
        format!(r#"[{{"type":"BASE","currency":"ARS","amount":{detail_amount},"name":"BASE"}}]"#);
    for amount in amounts {
        let t = Tx::new(&uid("ctx"), "PURCHASE", "u1", amount, "ARS").details(&details);
        for &path in paths {
            let r = app.processor(path, &t.body(), &uid("k")).await;
            assert_eq!(r.status, 400, "{amount} on {path}");
            app.assert_signed(&r, path);
            assert_eq!(
                r.json()["error"]["code"],
                "malformed_request",
                "{amount} on {path}"
            );
        }
    }
}
