//! Helpers the scenario files share beside the harness.

use e2e::{Resp, TestApp, uid};
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
