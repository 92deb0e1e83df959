//! §2.4 end to end over HTTP: every step's answer and the balances after it.

use super::common::*;
use crate::support::admin_money;
use e2e::*;
use serde_json::json;
use std::time::Duration;

async fn worked_example(app: TestApp) {
    // 0. deposit 500.00
    app.funded("u1", "DKK", "500.00").await;
    let b = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(balances(&app, "DKK").await, b("500.00", "0.00", "500.00"));

    // 1. reserve mp-3f2a9c1e 125.50
    let r = reserve_approved(&app, "mp-3f2a9c1e", "125.50", "DKK").await;
    app.assert_channel_signed(&r, RES);
    let v = r.json();
    assert_eq!(v["message"], "Reserved");
    assert_eq!(v["reservation"]["state"], "RESERVED");
    assert_eq!(v["reservation"]["amount"], "125.50");
    assert_eq!(v["reservation"]["captured"], "0.00");
    assert_eq!(v["reservation"]["currency"], "DKK");
    assert_eq!(v["reservation"]["partial_capture_possible"], true);
    assert_eq!(balances(&app, "DKK").await, b("500.00", "125.50", "374.50"));

    // 2. a card authorization of 400.00 on the processor route: the hold counts.
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "400.00", "DKK");
    let r = app.send(AUTH_DEBIT, &tx).await;
    assert_eq!(r.json()["status"], "REJECTED");
    assert_eq!(r.json()["status_detail"], "INSUFFICIENT_FUNDS");
    assert_eq!(balances(&app, "DKK").await, b("500.00", "125.50", "374.50"));
    // ...while 374.50 is exactly what may still be spent (then given back by a refund).
    let fits = Tx::new(&uid("ctx"), "PURCHASE", "u1", "374.50", "DKK");
    let r = app.send(AUTH_DEBIT, &fits).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let back = Tx::new(&uid("ctx"), "REFUND", "u1", "374.50", "DKK").original(&fits.id);
    assert_eq!(app.send(ADJ_CREDIT, &back).await.status, 200);
    // Admin withdrawals use available alone.
    let w = admin_money(&app, "withdrawals", "u1", "DKK", "374.51").await;
    assert_eq!(w.status, 422, "{}", String::from_utf8_lossy(&w.body));

    // 3. capture 100.00: 25.50 released.
    let body = json!({"amount": "100.00"});
    let first = post(&app, &capture_path("mp-3f2a9c1e"), &body).await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    app.assert_channel_signed(&first, &capture_path("mp-3f2a9c1e"));
    let v = first.json();
    assert_eq!(v["status"], "APPROVED");
    assert_eq!(v["reservation"]["state"], "CAPTURED");
    assert_eq!(v["reservation"]["captured"], "100.00");
    assert_eq!(balances(&app, "DKK").await, b("400.00", "0.00", "400.00"));

    // 4. capture 100.00 again (a new key): 200, the identical body.
    let again = post(&app, &capture_path("mp-3f2a9c1e"), &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(balances(&app, "DKK").await, b("400.00", "0.00", "400.00"));

    // 5. capture 90.00
    assert_eq!(
        refused(
            &app,
            &capture_path("mp-3f2a9c1e"),
            &json!({"amount": "90.00"}),
            409
        )
        .await,
        "CAPTURED_WITH_DIFFERENT_AMOUNT"
    );

    // 6. refund r1 30.00
    let r = post(
        &app,
        &refund_path("mp-3f2a9c1e"),
        &json!({"refund_id": "r1", "amount": "30.00", "currency": "DKK"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(r.json()["refund"]["amount"], "30.00");
    assert_eq!(balances(&app, "DKK").await, b("430.00", "0.00", "430.00"));

    // 7. refund r2 80.00: 30 + 80 > 100
    assert_eq!(
        refused(
            &app,
            &refund_path("mp-3f2a9c1e"),
            &refund("r2", "80.00"),
            409
        )
        .await,
        "REFUND_EXCEEDS_CAPTURED"
    );
    assert_eq!(balances(&app, "DKK").await, b("430.00", "0.00", "430.00"));

    // 8. refund r2 70.00
    let r = post(&app, &refund_path("mp-3f2a9c1e"), &refund("r2", "70.00")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(balances(&app, "DKK").await, b("500.00", "0.00", "500.00"));

    // The reservation with its refunds.
    let g = app
        .channel("GET", &get_path("mp-3f2a9c1e"), b"", None)
        .await;
    assert_eq!(g.status, 200);
    app.assert_channel_signed(&g, &get_path("mp-3f2a9c1e"));
    let v = g.json();
    assert_eq!(v["state"], "CAPTURED");
    assert_eq!(v["refunded"], "100.00");
    assert_eq!(v["refunds"][0]["refund_id"], "r1");
    assert_eq!(v["refunds"][1]["amount"], "70.00");

    // 9. reserve mp-2 50.00 for 2 s
    let mut mp2 = reservation("mp-2", "50.00", "DKK");
    mp2["expires_in_secs"] = json!(2);
    reserve(&app, &mp2, "APPROVED", "APPROVED").await;
    assert_eq!(balances(&app, "DKK").await, b("500.00", "50.00", "450.00"));

    // 10. 3 s later: capture finds it expired (lazily: the sweeper runs once a minute).
    actix_rt::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        refused(&app, &capture_path("mp-2"), &json!({}), 409).await,
        "EXPIRED"
    );
    assert_eq!(balances(&app, "DKK").await, b("500.00", "0.00", "500.00"));

    // Money moved only at capture and refund, against PoS clearing.
    assert_eq!(app.movements("u1", "DKK", "HOLD_CAPTURE").await, 1);
    assert_eq!(app.movements("u1", "DKK", "HOLD_REFUND").await, 2);
    // The admin listing.
    let l = app.admin_get("/v1/accounts/u1/DKK/holds?limit=1").await;
    assert_eq!(l["holds"][0]["reservation_id"], "mp-2");
    assert_eq!(l["holds"][0]["state"], "EXPIRED");
    let next = l["next_cursor"].as_str().expect("a second page").to_owned();
    let l = app
        .admin_get(&format!(
            "/v1/accounts/u1/DKK/holds?state=CAPTURED&cursor={next}"
        ))
        .await;
    assert_eq!(l["holds"][0]["reservation_id"], "mp-3f2a9c1e");
    assert_eq!(l["holds"][0]["refunded"], "100.00");
    assert!(l["next_cursor"].is_null());
    let m = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    for event in ["captured", "expired"] {
        let line = format!("authorizer_holds_total{{event=\"{event}\"}} 1");
        assert!(m.contains(&line), "{m}");
    }
}

both_backends!(worked_example);
