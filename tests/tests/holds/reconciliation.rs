//! Channel movements are not processor transactions: a day with holds, captures and refunds
//! reconciles clean against a processor file that knows nothing of them.

use super::common::*;
use e2e::*;
use serde_json::json;

async fn a_day_with_holds_reconciles_clean(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    // The processor's own traffic of the day: one purchase.
    let id = uid("ctx");
    let r = app
        .processor(
            AUTH_DEBIT,
            &Tx::new(&id, "PURCHASE", "u1", "10.00", "DKK").body(),
            &uid("k"),
        )
        .await;
    assert_eq!(r.json()["status"], "APPROVED");
    // The channel's: a capture, a refund, a cancel and an open hold.
    reserve_approved(&app, "h1", "100.00", "DKK").await;
    assert_eq!(
        post(&app, &capture_path("h1"), &json!({"amount": "80.00"}))
            .await
            .status,
        200
    );
    let r = post(&app, &refund_path("h1"), &refund("r1", "5.00")).await;
    assert_eq!(r.status, 200);
    reserve_approved(&app, "h2", "20.00", "DKK").await;
    assert_eq!(post(&app, &cancel_path("h2"), &json!({})).await.status, 200);
    reserve_approved(&app, "h3", "30.00", "DKK").await;

    let date = recon::today();
    let files = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let rows = [
        "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date".to_owned(),
        format!("{id},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,10.00,DKK,,crd-u1,u1,2024-01-01"),
    ]
    .join("\n");
    recon::write_transactions(files.path(), &date, &rows);
    recon::run_clean(&app, reports.path(), &date, files.path()).await;
    let (posted, held, available) = balances(&app, "DKK").await;
    assert_eq!(
        (posted.as_str(), held.as_str(), available.as_str()),
        ("415.00", "30.00", "385.00")
    );
}

both_backends!(a_day_with_holds_reconciles_clean);
