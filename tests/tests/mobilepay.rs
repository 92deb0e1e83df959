//! `mobilepay-sim` against a real authorizer (spec `mobilepay-pos.md` §2.6): the ten tests
//! that define "works", each on Postgres (grouped commits on and off) and SQLite, both
//! servers on port 0. The matrix audits the ledger after every scenario.

use authorizer::Settings;
use e2e::*;
use mobilepay_sim::{Config, Sim};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIO: &str = "bio-1001";
const TOKEN: &str = "tok-bio-1001";
const RES: &str = "/channels/v1/reservations";

/// A simulator for `app` with `terminals` terminals (`T-1`.. with PoS `pos-1`..), DKK.
fn sim_config(app_base: &str, terminals: usize, tweak: impl FnOnce(&mut Config)) -> Config {
    let list: Vec<String> = (1..=terminals)
        .map(|i| {
            format!(
                r#"{{ terminalId = "T-{i}", storeId = "st-1", currency = "DKK", mcc = "7832", posId = "pos-{i}" }}"#
            )
        })
        .collect();
    let mut cfg = Config::from_toml(&format!(
        r#"
authorizer_url = "{app_base}"
channel_api_key = "{CHANNEL_KEY}"
channel_api_secret = "{CHANNEL_SECRET}"
[[merchants]]
bioCode = "{BIO}"
accessToken = "{TOKEN}"
stores = [{{ storeId = "st-1", name = "Cinema Aarhus" }}]
terminals = [{}]
"#,
        list.join(",\n")
    ))
    .expect("simulator config");
    tweak(&mut cfg);
    cfg
}

/// The simulator and a client of it.
struct Till {
    sim: Sim,
    http: awc::Client,
}

impl Till {
    async fn start(app: &TestApp, terminals: usize, tweak: impl FnOnce(&mut Config)) -> Till {
        Till::start_at(&app.base, terminals, tweak).await
    }

    async fn start_at(base: &str, terminals: usize, tweak: impl FnOnce(&mut Config)) -> Till {
        let sim = Sim::start(sim_config(base, terminals, tweak))
            .await
            .expect("simulator starts");
        let http = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        Till { sim, http }
    }

    async fn get(&self, path: &str, q: &[(&str, &str)]) -> (u16, Value) {
        let mut all: Vec<(&str, &str)> = vec![("bioCode", BIO), ("accessToken", TOKEN)];
        all.extend_from_slice(q);
        let mut res = self
            .http
            .get(format!("{}/api/pos/{path}", self.sim.base))
            .query(&all)
            .expect("query")
            .send()
            .await
            .expect("simulator answers");
        let body = res.body().await.expect("body");
        (
            res.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    async fn customer(&self, path: &str, body: Value) -> (u16, Value) {
        let mut res = self
            .http
            .post(format!("{}/sim/{path}", self.sim.base))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .send_json(&body)
            .await
            .expect("simulator answers");
        let b = res.body().await.expect("body");
        (
            res.status().as_u16(),
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        )
    }

    async fn start_payment(&self, terminal: usize, order: &str, amount: &str) -> (u16, Value) {
        let t = format!("T-{terminal}");
        self.get(
            "payment/start",
            &[
                ("orderId", order),
                ("amount", amount),
                ("terminalId", &t),
                ("currencyCode", "DKK"),
            ],
        )
        .await
    }

    async fn checkin(&self, terminal: usize, user: &str) {
        let (s, v) = self
            .customer(
                "checkin",
                json!({"terminalId": format!("T-{terminal}"), "user_id": user}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    async fn approve(&self, id: &str) -> Value {
        let (s, v) = self
            .customer(&format!("payments/{id}/approve"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// start, check-in, approve on `terminal` for `user`: the payment id, asserted Reserved.
    async fn reserved(&self, terminal: usize, user: &str, order: &str, amount: &str) -> String {
        let (s, v) = self.start_payment(terminal, order, amount).await;
        assert_eq!(s, 200, "{v}");
        let id = v["paymentId"].as_str().expect("paymentId").to_owned();
        self.checkin(terminal, user).await;
        let v = self.approve(&id).await;
        assert_eq!(v["status"], "Reserved", "{v}");
        id
    }

    async fn status(&self, id: &str) -> String {
        let (s, v) = self.get("payment/status", &[("paymentId", id)]).await;
        assert_eq!(s, 200, "{v}");
        v["status"].as_str().expect("status").to_owned()
    }

    async fn capture(&self, id: &str, amount: Option<&str>) -> (u16, Value) {
        let mut q = vec![("paymentId", id)];
        if let Some(a) = amount {
            q.push(("amount", a));
        }
        self.get("payment/capture", &q).await
    }

    /// Waits until every owed call has been answered; asserts there is no break.
    async fn settle(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.sim.shared.stats_json()["pending_deliveries"] != 0 {
            assert!(Instant::now() < until, "deliveries still pending");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn breaks(&self) -> u64 {
        self.sim.shared.breaks_json()["count"].as_u64().unwrap_or(0)
    }
}

/// The v10 code of a failure body.
fn v10(v: &Value) -> String {
    v["errors"][0]
        .as_str()
        .and_then(|e| e.split(':').next())
        .unwrap_or_default()
        .to_owned()
}

/// (posted, held, available).
async fn balances(app: &TestApp, user: &str) -> (String, String, String) {
    let a = app.account(user, "DKK").await;
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    (s("posted"), s("held"), s("available"))
}

fn b(p: &str, h: &str, a: &str) -> (String, String, String) {
    (p.into(), h.into(), a.into())
}

/// The error code of a channel answer.
fn channel_code(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// 1. ---------------------------------------------------------------------------------------

async fn direct_flow(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |_| {}).await;
    let (s, v) = till.start_payment(1, "o-1", "125.50").await;
    assert_eq!(s, 200, "{v}");
    let id = v["paymentId"].as_str().unwrap().to_owned();
    assert_eq!(till.status(&id).await, "Initiated");
    till.checkin(1, "u1").await;
    assert_eq!(till.status(&id).await, "IssuedToUser");
    assert_eq!(balances(&app, "u1").await, b("500.00", "0.00", "500.00"));
    till.approve(&id).await;
    assert_eq!(till.status(&id).await, "Reserved");
    assert_eq!(balances(&app, "u1").await, b("500.00", "125.50", "374.50"));
    let (s, v) = till.capture(&id, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("Captured")));
    till.settle().await;
    assert_eq!(balances(&app, "u1").await, b("374.50", "0.00", "374.50"));
    let g = app
        .channel("GET", &format!("{RES}/{id}"), b"", None)
        .await
        .json();
    assert_eq!(g["state"], "CAPTURED", "{g}");
    assert_eq!(till.breaks(), 0);
}

// 2. ---------------------------------------------------------------------------------------

async fn prepared_flow(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |_| {}).await;
    let (s, v) = till
        .get(
            "payment/prepare",
            &[("orderId", "o-1"), ("terminalId", "T-1")],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["paymentId"].as_str().unwrap().to_owned();
    assert_eq!(till.status(&id).await, "Prepared");
    till.checkin(1, "u1").await;
    assert_eq!(till.status(&id).await, "Paired");
    let (s, v) = till
        .get(
            "payment/ready",
            &[
                ("orderId", "o-1"),
                ("amount", "100.00"),
                ("terminalId", "T-1"),
                ("currencyCode", "DKK"),
                ("paymentId", &id),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(till.status(&id).await, "IssuedToUser");
    till.approve(&id).await;
    assert_eq!(balances(&app, "u1").await, b("500.00", "100.00", "400.00"));
    let (s, _) = till.capture(&id, Some("60.00")).await;
    assert_eq!(s, 200);
    till.settle().await;
    // The remainder (40.00) is released: available went from 400.00 to 440.00.
    assert_eq!(balances(&app, "u1").await, b("440.00", "0.00", "440.00"));
    assert_eq!(till.breaks(), 0);
}

// 3. ---------------------------------------------------------------------------------------

async fn s1_and_c1(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    app.funded("u2", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |_| {}).await;
    let (_, v) = till.start_payment(1, "o-1", "10.00").await;
    let first = v["paymentId"].as_str().unwrap().to_owned();
    till.checkin(1, "u1").await;
    assert_eq!(till.status(&first).await, "IssuedToUser");
    let (s, v) = till.start_payment(1, "o-2", "20.00").await;
    assert_eq!((s, v10(&v)), (409, "1301".into()));
    till.approve(&first).await;
    let (s, v) = till.start_payment(1, "o-2", "20.00").await;
    assert_eq!(s, 200, "a Reserved payment does not block: {v}");
    let second = v["paymentId"].as_str().unwrap().to_owned();
    let (_, list) = till.get("payments", &[]).await;
    let listed: Vec<(String, String)> = items(&list["payments"])
        .map(|p| {
            (
                p["paymentId"].as_str().unwrap().to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(first.clone(), "Reserved".into())),
        "{list}"
    );
    assert!(
        listed.contains(&(second.clone(), "Initiated".into())),
        "{list}"
    );
    // Leave nothing hanging.
    till.get("payment/cancel", &[("paymentId", &first)]).await;
    till.get("payment/cancel", &[("paymentId", &second)]).await;
    till.settle().await;
    assert_eq!(balances(&app, "u1").await, b("500.00", "0.00", "500.00"));
}

// 4. ---------------------------------------------------------------------------------------

async fn cancel_rules(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |_| {}).await;
    let id = till.reserved(1, "u1", "o-1", "50.00").await;
    assert_eq!(balances(&app, "u1").await.1, "50.00");
    let (s, v) = till.get("payment/cancel", &[("paymentId", &id)]).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("CancelledByClient")));
    till.settle().await;
    assert_eq!(balances(&app, "u1").await, b("500.00", "0.00", "500.00"));
    let (s, _) = till.get("payment/cancel", &[("paymentId", &id)]).await;
    assert_eq!(s, 200, "cancel again");
    // After a capture: 1300 at the simulator, ALREADY_CAPTURED at our API.
    let id2 = till.reserved(1, "u1", "o-2", "30.00").await;
    assert_eq!(till.capture(&id2, None).await.0, 200);
    till.settle().await;
    let (s, v) = till.get("payment/cancel", &[("paymentId", &id2)]).await;
    assert_eq!((s, v10(&v)), (409, "1300".into()));
    let r = on_reservation(&app, &id2, "cancel", json!({})).await;
    assert_eq!(channel_code(&r, 409), "ALREADY_CAPTURED");
    assert_eq!(balances(&app, "u1").await, b("470.00", "0.00", "470.00"));
    assert_eq!(till.breaks(), 0);
}

// 5. ---------------------------------------------------------------------------------------

/// Holds expire after 2 s on our side; the sweeper looks for them every `sweep_interval_ms`.
fn expiry_2s(s: &mut Settings, sweep_interval_ms: u64) {
    s.holds.expiry_secs = 2;
    s.holds.sweep_interval_ms = sweep_interval_ms;
}

fn expiry_2s_swept(s: &mut Settings) {
    expiry_2s(s, 100);
}

/// u1 with 500.00 and a reservation of 80.00 (held) through a simulator whose reservations
/// expire after 2 s, then 3 s gone by: the simulator and the reservation's id.
async fn reserved_and_expired(app: &TestApp) -> (Till, String) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(app, 1, |c| c.reservation_expiry_secs = 2).await;
    let id = till.reserved(1, "u1", "o-1", "80.00").await;
    assert_eq!(balances(app, "u1").await.1, "80.00");
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    (till, id)
}

async fn expiry_by_the_sweeper(app: TestApp) {
    let (till, id) = reserved_and_expired(&app).await;
    // The sweeper released it; nobody asked about it.
    assert_eq!(balances(&app, "u1").await, b("500.00", "0.00", "500.00"));
    let l = app
        .admin_get("/v1/accounts/u1/DKK/holds?state=EXPIRED")
        .await;
    assert_eq!(l["holds"][0]["reservation_id"], id.as_str(), "{l}");
    assert_eq!(till.status(&id).await, "ExpiredAndCancelled");
    let (s, v) = till.capture(&id, None).await;
    assert_eq!((s, v10(&v)), (409, "1304".into()));
    till.settle().await;
    let st = till.sim.shared.stats_json();
    assert_eq!(st["captures_delivered"], 0, "no call reached us: {st}");
    assert_eq!(till.breaks(), 0);
    assert_eq!(app.movements("u1", "DKK", "HOLD_CAPTURE").await, 0);
}

fn expiry_2s_unswept(s: &mut Settings) {
    expiry_2s(s, 3_600_000);
}

async fn expiry_lazily(app: TestApp) {
    let (till, id) = reserved_and_expired(&app).await;
    // The sweeper has not run: the capture at our API expires the hold itself.
    let r = on_reservation(&app, &id, "capture", json!({"amount": "80.00"})).await;
    assert_eq!(channel_code(&r, 409), "EXPIRED");
    assert_eq!(balances(&app, "u1").await, b("500.00", "0.00", "500.00"));
    assert_eq!(till.status(&id).await, "ExpiredAndCancelled");
}

// 6. ---------------------------------------------------------------------------------------

/// POSTs `body` to `op` (`capture`, `cancel`, `refunds`) of reservation `id` at our channel
/// API, under a fresh idempotency key.
async fn on_reservation(app: &TestApp, id: &str, op: &str, body: Value) -> Resp {
    let path = format!("{RES}/{id}/{op}");
    let body = body.to_string();
    app.channel("POST", &path, body.as_bytes(), Some(&uid("k")))
        .await
}

impl Till {
    /// A capture of `amount` on `id` refused alike by the simulator (with MobilePay's code)
    /// and by our channel API (409 with ours): `codes` is (MobilePay's, ours).
    async fn capture_refused(&self, app: &TestApp, id: &str, amount: &str, codes: [&str; 2]) {
        let (s, v) = self.capture(id, Some(amount)).await;
        assert_eq!((s, v10(&v)), (409, codes[0].into()), "{amount}");
        let r = on_reservation(app, id, "capture", json!({ "amount": amount })).await;
        assert_eq!(channel_code(&r, 409), codes[1], "{amount}");
    }
}

async fn capture_rules(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |_| {}).await;
    let id = till.reserved(1, "u1", "o-1", "125.50").await;
    // Above the reserved amount: 1305 here, AMOUNT_EXCEEDS_RESERVED at our API.
    till.capture_refused(&app, &id, "125.51", ["1305", "AMOUNT_EXCEEDS_RESERVED"])
        .await;
    // The same amount twice: 200 both times, one movement.
    let (s1, v1) = till.capture(&id, Some("100.00")).await;
    let (s2, v2) = till.capture(&id, Some("100")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(v1, v2);
    till.settle().await;
    assert_eq!(app.movements("u1", "DKK", "HOLD_CAPTURE").await, 1);
    // A different amount: 1307 here, CAPTURED_WITH_DIFFERENT_AMOUNT at our API.
    till.capture_refused(
        &app,
        &id,
        "90.00",
        ["1307", "CAPTURED_WITH_DIFFERENT_AMOUNT"],
    )
    .await;
    assert_eq!(balances(&app, "u1").await, b("400.00", "0.00", "400.00"));
    // Partial capture where it is not possible: 1308.
    let strict = Till::start(&app, 1, |c| c.partial_capture_possible = false).await;
    let id = strict.reserved(1, "u1", "o-2", "50.00").await;
    strict
        .capture_refused(&app, &id, "20.00", ["1308", "PARTIAL_CAPTURE_NOT_POSSIBLE"])
        .await;
    strict.get("payment/cancel", &[("paymentId", &id)]).await;
    strict.settle().await;
    assert_eq!(till.breaks() + strict.breaks(), 0);
    assert_eq!(balances(&app, "u1").await, b("400.00", "0.00", "400.00"));
}

// 7. ---------------------------------------------------------------------------------------

async fn refund(till: &Till, id: &str, order: &str, amount: &str) -> (u16, Value) {
    till.get(
        "refund/create",
        &[
            ("amount", amount),
            ("currencyCode", "DKK"),
            ("paymentId", id),
            ("refundOrderId", order),
        ],
    )
    .await
}

async fn refunds(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |c| c.refund_auto_capture_secs = 1).await;
    // Not captured: 1354.
    let reserved = till.reserved(1, "u1", "o-0", "10.00").await;
    let (s, v) = refund(&till, &reserved, "r-0", "1.00").await;
    assert_eq!((s, v10(&v)), (409, "1354".into()));
    till.get("payment/cancel", &[("paymentId", &reserved)])
        .await;
    let id = till.reserved(1, "u1", "o-1", "100.00").await;
    assert_eq!(till.capture(&id, None).await.0, 200);
    till.settle().await;
    assert_eq!(balances(&app, "u1").await.0, "400.00");
    // Two refunds up to the captured amount; a third fails.
    let (s, v) = refund(&till, &id, "r-1", "30.00").await;
    assert_eq!(s, 200, "{v}");
    let r1 = v["refundId"].as_str().unwrap().to_owned();
    let (s, v) = refund(&till, &id, "r-2", "70.00").await;
    assert_eq!(s, 200, "{v}");
    let r2 = v["refundId"].as_str().unwrap().to_owned();
    let (s, v) = refund(&till, &id, "r-3", "0.01").await;
    assert_eq!((s, v10(&v)), (409, "1367".into()));
    // Nothing moves before a refund is captured.
    assert_eq!(balances(&app, "u1").await.0, "400.00");
    assert_eq!(
        till.get("refund/capture", &[("refundId", &r1)]).await.0,
        200
    );
    till.settle().await;
    assert_eq!(balances(&app, "u1").await.0, "430.00");
    // Cancelled before capture: nothing moves, and the amount is free again.
    assert_eq!(till.get("refund/cancel", &[("refundId", &r2)]).await.0, 200);
    // Our API refuses more than captured on its own.
    let r = on_reservation(
        &app,
        &id,
        "refunds",
        json!({"refund_id": "direct-1", "amount": "70.01", "currency": "DKK"}),
    )
    .await;
    assert_eq!(channel_code(&r, 409), "REFUND_EXCEEDS_CAPTURED");
    // A refund left alone auto-captures after refund_auto_capture_secs = 1.
    let (s, v) = refund(&till, &id, "r-4", "20.00").await;
    assert_eq!(s, 200, "{v}");
    let r4 = v["refundId"].as_str().unwrap().to_owned();
    actix_rt::time::sleep(Duration::from_millis(1_500)).await;
    till.settle().await;
    let (_, d) = till.get("refund/details", &[("refundId", &r4)]).await;
    assert_eq!(d["status"], "ExpiredAndCaptured", "{d}");
    assert_eq!(balances(&app, "u1").await, b("450.00", "0.00", "450.00"));
    assert_eq!(app.movements("u1", "DKK", "HOLD_REFUND").await, 2);
    let (_, d) = till.get("refund/details", &[("refundId", &r2)]).await;
    assert_eq!(d["status"], "CancelledByClient");
    assert_eq!(till.breaks(), 0);
}

// 8. ---------------------------------------------------------------------------------------

async fn holds_and_cards(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    let till = Till::start(&app, 1, |_| {}).await;
    let id = till.reserved(1, "u1", "o-1", "125.50").await;
    assert_eq!(balances(&app, "u1").await, b("500.00", "125.50", "374.50"));
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "400.00", "DKK");
    let r = app.send(AUTH_DEBIT, &tx).await;
    assert_eq!(r.json()["status"], "REJECTED");
    assert_eq!(r.json()["status_detail"], "INSUFFICIENT_FUNDS");
    till.get("payment/cancel", &[("paymentId", &id)]).await;
    till.settle().await;
    let tx = Tx::new(&uid("ctx"), "PURCHASE", "u1", "400.00", "DKK");
    let r = app.send(AUTH_DEBIT, &tx).await;
    assert_eq!(r.json()["status"], "APPROVED", "{:?}", r.json());
    assert_eq!(balances(&app, "u1").await, b("100.00", "0.00", "100.00"));
}

// 9. ---------------------------------------------------------------------------------------

async fn exactly_once(app: TestApp) {
    app.funded("u1", "DKK", "500.00").await;
    // Room for 200 approvals at once on a 2-core machine: a patient simulator.
    let till = Till::start(&app, 200, |c| {
        c.call_timeout_ms = 30_000;
        c.call_retries = 5;
    })
    .await;
    let id = till.reserved(1, "u1", "o-1", "100.00").await;
    let answers =
        futures_util::future::join_all((0..50).map(|_| till.capture(&id, Some("80.00")))).await;
    let first = answers[0].clone();
    assert_eq!(first.0, 200, "{}", first.1);
    assert!(answers.iter().all(|a| *a == first), "identical answers");
    till.settle().await;
    assert_eq!(app.movements("u1", "DKK", "HOLD_CAPTURE").await, 1);
    assert_eq!(balances(&app, "u1").await, b("420.00", "0.00", "420.00"));
    // 200 customers' approvals on an account funded for exactly 73 of them.
    app.funded("u73", "DKK", "73.00").await;
    let mut ids = Vec::new();
    for t in 1..=200 {
        let (s, v) = till.start_payment(t, &format!("c-{t}"), "1.00").await;
        assert_eq!(s, 200, "{v}");
        ids.push(v["paymentId"].as_str().unwrap().to_owned());
        till.checkin(t, "u73").await;
    }
    let results = futures_util::future::join_all(ids.iter().map(|id| till.approve(id))).await;
    let reserved = results.iter().filter(|v| v["status"] == "Reserved").count();
    let rejected = results
        .iter()
        .filter(|v| v["status"] == "CancelledByMobilePay" && v["reason"] == "INSUFFICIENT_FUNDS")
        .count();
    assert_eq!(
        (reserved, rejected),
        (73, 127),
        "{:?}",
        results
            .iter()
            .find(|v| v["status"] != "Reserved" && v["reason"] != "INSUFFICIENT_FUNDS")
    );
    assert_eq!(balances(&app, "u73").await, b("73.00", "73.00", "0.00"));
    till.settle().await;
    assert_eq!(till.breaks(), 0);
}

both_backends!(
    direct_flow,
    prepared_flow,
    s1_and_c1,
    cancel_rules,
    capture_rules,
    refunds,
    holds_and_cards
);

mod crowded {
    use super::*;
    both_backends!(settings = crowd_settings; exactly_once);
}

mod swept {
    use super::*;
    both_backends!(settings = expiry_2s_swept; expiry_by_the_sweeper);
}

mod unswept {
    use super::*;
    both_backends!(settings = expiry_2s_unswept; expiry_lazily);
}

// 10. --------------------------------------------------------------------------------------

mod crash {
    //! `kill -9` of a real authorizer process between a reservation's commit and its answer.
    //! The survivor binds the victim's port, so the simulator's retry reaches it.
    use super::*;

    async fn run(db: String) {
        let data = tempfile::tempdir().expect("dir");
        let bin = env!("CARGO_BIN_EXE_authorizer-node");
        let node =
            |listen: &str, env: &[(&str, &str)]| Node::sharing(bin, &db, data.path(), listen, env);
        let mut victim = node(
            "127.0.0.1:0",
            &[("AUTHORIZER_FAULT_RESERVATION_ANSWER_DELAY_MS", "60000")],
        );
        let admin = Remote::new(&victim.base);
        admin.funded("u1", "DKK", "100.00").await;
        // Patient retries: the survivor takes a moment to start.
        let till = Till::start_at(&victim.base, 1, |c| {
            c.call_retries = 5;
            c.call_timeout_ms = 2_000;
        })
        .await;
        let (_, v) = till.start_payment(1, "o-1", "40.00").await;
        let id = v["paymentId"].as_str().unwrap().to_owned();
        till.checkin(1, "u1").await;
        let approving = {
            let (http, base, id) = (till.http.clone(), till.sim.base.clone(), id.clone());
            actix_rt::spawn(async move {
                let mut res = http
                    .post(format!("{base}/sim/payments/{id}/approve"))
                    .insert_header(("authorization", format!("Bearer {TOKEN}")))
                    .send_json(&json!({}))
                    .await
                    .expect("approve answered");
                serde_json::from_slice::<Value>(&res.body().await.expect("body")).expect("JSON")
            })
        };
        // The reservation is committed (held 40.00) and its answer held back: kill -9.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let a = admin.admin("GET", "/v1/accounts/u1/DKK", None, None).await;
            if a.status == 200 && a.json()["held"] == "40.00" {
                break;
            }
            assert!(Instant::now() < until, "the reservation never committed");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        victim.kill9();
        let listen = victim.base.trim_start_matches("http://").to_owned();
        let survivor = node(&listen, &[]);
        let v = approving.await.expect("approve task");
        assert_eq!(
            v["status"], "Reserved",
            "the retry got the replayed approval: {v}"
        );
        let st = till.sim.shared.stats_json();
        assert!(st["retries"].as_u64().unwrap() >= 1, "{st}");
        let admin = Remote::new(&survivor.base);
        let a = admin.admin_get("/v1/accounts/u1/DKK").await;
        assert_eq!(
            (a["held"].as_str(), a["available"].as_str()),
            (Some("40.00"), Some("60.00"))
        );
        let h = admin.admin_get("/v1/accounts/u1/DKK/holds").await;
        assert_eq!(
            h["holds"].as_array().map(Vec::len),
            Some(1),
            "one hold: {h}"
        );
        // And the payment completes.
        assert_eq!(till.capture(&id, None).await.0, 200);
        till.settle().await;
        let a = admin.admin_get("/v1/accounts/u1/DKK").await;
        assert_eq!(a["posted"], "60.00");
        assert_eq!(till.breaks(), 0);
        till.sim.stop().await;
        drop(survivor);
        assert_database_clean(
            (!db.is_empty()).then(|| db.clone()),
            data.path().join("authorizer.db"),
        )
        .await;
    }

    #[actix_rt::test]
    async fn postgres_kill_9_between_commit_and_answer() {
        run(fresh_pg_database().await).await;
    }

    /// The embedded store: the survivor opens the file the killed process wrote.
    #[actix_rt::test]
    async fn sqlite_kill_9_between_commit_and_answer() {
        run(String::new()).await;
    }
}
