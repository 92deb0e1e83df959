//! The in-person terminal simulator (`point-sim`) against a real authorizer on both stores
//! (point-integration §2.8): the challenge, an approved purchase, an underfunded account,
//! each magic amount, a timeout settled by the advice, an unreachable authorizer, the
//! API's rules and the abandonment timer, a refund. Each intent's final state is checked
//! against our ledger (balances, `GET /v1/transactions/{id}`) and against the webhooks a
//! real HTTP receiver got; the ledger is audited after every scenario.

use actix_web::{HttpRequest, HttpResponse, web};
use e2e::receiver::{Loopback, Shared};
use e2e::*;
use point_sim::config::{Config, Site};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TOKEN: &str = "TEST-point-sim";
const INTEGRATOR: &str = "0230abf9-79e9-493b-b288-32d123456789";
const DEV: &str = "INGENICO_MOVE2500__ING-ARG-14886780";
const DEV_MLB: &str = "PAX_A910__SMARTPOS-BRA-1";
const DEV_MLM: &str = "PAX_A910__SMARTPOS-MEX-1";

// --- the integrator's webhook receiver --------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Correct,
    Wrong,
    Upper,
    Redirect,
    Slow,
}

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Post {
    request_id: String,
    /// The x-signature verified (token, id, request id, ts within ±300 s).
    signature_ok: bool,
    body: Value,
    /// What the receiver answered.
    status: u16,
}

struct Recv {
    mode: Mode,
    challenges: u32,
    /// Answer 500 to this many POSTs first.
    fail_next: u32,
    posts: Vec<Post>,
}

fn verify_signature(header: &str, id: &str, request_id: &str) -> bool {
    let Some((ts, _)) = header
        .strip_prefix("ts=")
        .and_then(|r| r.split_once(",v1="))
    else {
        return false;
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return false;
    };
    let now = point_sim::webhook::now_ms();
    (now - ts).abs() <= 300_000
        && point_sim::webhook::x_signature(INTEGRATOR, id, request_id, ts) == header
}

async fn recv_get(req: HttpRequest, st: Shared<Recv>) -> HttpResponse {
    let code =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("challengeCode").cloned())
            .unwrap_or_default();
    let mode = {
        let mut s = st.lock().unwrap();
        s.challenges += 1;
        s.mode
    };
    let right = point_sim::webhook::encrypted_challenge(INTEGRATOR, &code);
    match mode {
        Mode::Correct => HttpResponse::Ok().json(json!({ "encrypted_challenge": right })),
        Mode::Upper => {
            HttpResponse::Ok().json(json!({ "encrypted_challenge": right.to_uppercase() }))
        }
        Mode::Wrong => HttpResponse::Ok().json(json!({
            "encrypted_challenge": point_sim::webhook::encrypted_challenge("not-the-token", &code)
        })),
        Mode::Redirect => HttpResponse::Found()
            .insert_header(("location", format!("/webhook?challengeCode={code}")))
            .finish(),
        Mode::Slow => {
            actix_rt::time::sleep(Duration::from_millis(1500)).await;
            HttpResponse::Ok().json(json!({ "encrypted_challenge": right }))
        }
    }
}

async fn recv_post(req: HttpRequest, body: web::Bytes, st: Shared<Recv>) -> HttpResponse {
    let h = |n: &str| processor_client::header_text(req.headers(), n).to_owned();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let request_id = h("x-request-id");
    let signature_ok = verify_signature(
        &h("x-signature"),
        v["id"].as_str().unwrap_or(""),
        &request_id,
    );
    let mut s = st.lock().unwrap();
    let status = if s.fail_next > 0 {
        s.fail_next -= 1;
        500
    } else {
        200
    };
    s.posts.push(Post {
        request_id,
        signature_ok,
        body: v,
        status,
    });
    if status == 200 {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::InternalServerError().finish()
    }
}

/// The integrator's endpoint: a challenge answered on GET, a notification on POST.
async fn recv_any(req: HttpRequest, body: web::Bytes, st: Shared<Recv>) -> HttpResponse {
    if req.method() == actix_web::http::Method::GET {
        recv_get(req, st).await
    } else {
        recv_post(req, body, st).await
    }
}

/// A receiver on a free loopback port; the integrator's webhook is its `/webhook`.
fn receiver() -> Loopback<Recv> {
    let recv = Recv {
        mode: Mode::Correct,
        challenges: 0,
        fail_next: 0,
        posts: vec![],
    };
    Loopback::start(recv, recv_any)
}

// --- the simulator ----------------------------------------------------------------------

struct Point {
    run: point_sim::Running,
    base: String,
    client: awc::Client,
    recv: Loopback<Recv>,
    recv_url: String,
    csv: std::path::PathBuf,
}

fn device(id: &str, site: Site) -> point_sim::config::DeviceConfig {
    let mut d = point_sim::config::demo_device();
    d.id = id.into();
    d.site = site;
    d
}

/// A simulator with its webhook registered and checked, and a cardholder with 100.00 ARS.
async fn registered(app: &TestApp, tweak: impl FnOnce(&mut Config)) -> (Point, String) {
    let pt = point(app, tweak).await;
    pt.register().await;
    let user = uid("usr");
    app.funded(&user, "ARS", "100.00").await;
    (pt, user)
}

async fn point(app: &TestApp, tweak: impl FnOnce(&mut Config)) -> Point {
    let csv = app.data_dir.path().join(format!("{}.csv", uid("pt")));
    let mut cfg = Config {
        authorizer_url: app.base.clone(),
        processor_api_key: Some(API_KEY.into()),
        processor_api_secret: Some(API_SECRET.into()),
        devices: vec![
            point_sim::config::demo_device(),
            device(DEV_MLB, Site::Mlb),
            device(DEV_MLM, Site::Mlm),
        ],
        webhook_backoff_ms: 50,
        challenge_timeout_ms: 500,
        transactions_csv: csv.display().to_string(),
        ..Config::default()
    };
    tweak(&mut cfg);
    let run = point_sim::start(cfg).await.expect("point-sim starts");
    Point::new(run, csv)
}

impl Point {
    /// The running simulator `run`, driven by a client of its own, beside a new receiver.
    fn new(run: point_sim::Running, csv: std::path::PathBuf) -> Point {
        let recv = receiver();
        Point {
            base: run.url(),
            run,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish(),
            recv_url: recv.url("/webhook"),
            recv,
            csv,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, TOKEN).await
    }

    async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "PATCH" => self.client.patch(url),
            "DELETE" => self.client.delete(url),
            m => panic!("method {m}"),
        }
        .insert_header(("authorization", format!("Bearer {token}")))
        .insert_header(("content-type", "application/json"));
        let mut res = req
            .send_body(body.map(|b| b.to_string()).unwrap_or_default())
            .await
            .expect("point-sim answers");
        let bytes = res.body().limit(1 << 20).await.unwrap();
        (
            res.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn api(path: &str) -> String {
        format!("/point/integration-api{path}")
    }

    /// PATCHes the integrator's webhook to `url`: the status.
    async fn set_webhook(&self, url: &str) -> u16 {
        let body = json!({ "webhook": url });
        let path = Self::api("/integrators");
        self.call("PATCH", &path, Some(body)).await.0
    }

    /// Whether the simulator holds the webhook for validated.
    async fn webhook_valid(&self) -> Value {
        let path = Self::api("/integrators");
        self.call("GET", &path, None).await.1["is_valid_webhook"].clone()
    }

    async fn register(&self) {
        assert_eq!(self.set_webhook(&self.recv_url).await, 204);
        let (s, v) = self
            .call("POST", &Self::api("/integrators/check"), None)
            .await;
        assert_eq!(s, 204, "{v}");
    }

    async fn create(&self, dev: &str, amount: Value) -> (u16, Value) {
        self.call(
            "POST",
            &Self::api(&format!("/devices/{dev}/payment-intents")),
            Some(json!({
                "amount": amount,
                "additional_info": {"external_reference": uid("ref"), "print_on_terminal": true},
            })),
        )
        .await
    }

    /// Creates an intent on the demo device and presents `user`'s card: the final intent.
    async fn sale(&self, amount: i64, user: &str, extra: Value) -> Value {
        let (s, v) = self.create(DEV, json!(amount)).await;
        assert_eq!(s, 200, "{v}");
        self.present(DEV, user, extra).await
    }

    async fn present(&self, dev: &str, user: &str, extra: Value) -> Value {
        let mut card = json!({
            "card_id": format!("crd-{user}"), "user_id": user, "product_type": "PREPAID",
            "provider": "MASTERCARD", "last_four": "6708", "entry_mode": "CHIP", "pin": true
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            card[k.as_str()] = v;
        }
        let (s, v) = self
            .call("POST", &format!("/sim/devices/{dev}/present"), Some(card))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn payment(&self, id: &Value) -> Value {
        let id = id.as_str().map(str::to_owned).unwrap_or(id.to_string());
        let (s, v) = self.call("GET", &format!("/v1/payments/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn stats(&self) -> Value {
        self.call("GET", "/sim/stats", None).await.1
    }

    /// Waits until the receiver accepted (200) a notification in `state` for `id`; returns
    /// every POST for `id` so far.
    async fn wait_for(&self, id: &str, state: &str) -> Vec<Post> {
        let started = Instant::now();
        loop {
            let posts: Vec<Post> = self
                .recv
                .state()
                .posts
                .iter()
                .filter(|p| p.body["id"] == id)
                .cloned()
                .collect();
            if posts
                .iter()
                .any(|p| p.status == 200 && p.body["state"] == state)
            {
                return posts;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {state} notification for {id}: {posts:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn posts(&self) -> usize {
        self.recv.state().posts.len()
    }
}

async fn transaction(app: &TestApp, id: &str) -> (u16, Value) {
    let r = app
        .admin("GET", &format!("/v1/transactions/{id}"), None, None)
        .await;
    let v = if r.status == 200 {
        r.json()
    } else {
        Value::Null
    };
    (r.status, v)
}

fn states(posts: &[Post]) -> Vec<String> {
    posts
        .iter()
        .filter(|p| p.status == 200)
        .map(|p| p.body["state"].as_str().unwrap_or("").to_owned())
        .collect()
}

// --- scenarios --------------------------------------------------------------------------

/// §2.8 test 1: the challenge, its failures, and no notification before it passed.
async fn challenge(app: TestApp) {
    // The vectors of §1.7 (the simulator's code is random, so they are checked directly).
    assert_eq!(
        point_sim::webhook::encrypted_challenge(INTEGRATOR, "YOUR_CHALLENGE_CODE"),
        "cd0a35ec4b2c06bee54b59899037b167b9c9257673c1e290119495936fd1a4cb"
    );
    assert_eq!(
        point_sim::webhook::encrypted_challenge(INTEGRATOR, "8c1f4e2a9b7d6c5e3f2a1b0c9d8e7f6a"),
        "a9f11d720e675b66290f0115477045ffc7556e6107354a8d583b4f7057ef73be"
    );
    let pt = point(&app, |_| {}).await;
    let user = uid("usr");
    app.funded(&user, "ARS", "100.00").await;
    let integrators = Point::api("/integrators");
    let check = Point::api("/integrators/check");
    assert_eq!(pt.call_as("GET", &integrators, None, "nope").await.0, 401);
    let (s, v) = pt.call("GET", &integrators, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"token": INTEGRATOR, "webhook": "", "is_valid_webhook": false})
    );
    // Nothing registered: the check fails.
    let (s, v) = pt.call("POST", &check, None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("webhook_validation_failed"))
    );
    for bad in ["ftp://x/y", "/webhook", "not a url"] {
        assert_eq!(pt.set_webhook(bad).await, 400, "{bad}");
    }
    assert_eq!(pt.set_webhook(&pt.recv_url).await, 204);
    for mode in [Mode::Wrong, Mode::Redirect, Mode::Slow] {
        pt.recv.state().mode = mode;
        let (s, v) = pt.call("POST", &check, None).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("webhook_validation_failed")),
            "{mode:?}"
        );
        assert_eq!(pt.webhook_valid().await, false);
    }
    // A sale before any check passed: nothing is POSTed, the notifications are counted.
    let done = pt.sale(1500, &user, json!({})).await;
    assert_eq!(done["state"], "FINISHED");
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pt.posts(), 0);
    assert!(pt.stats().await["dropped_unvalidated"].as_u64().unwrap() >= 4);
    // Uppercase hex passes.
    pt.recv.state().mode = Mode::Upper;
    assert_eq!(pt.call("POST", &check, None).await.0, 204);
    let (_, v) = pt.call("GET", &integrators, None).await;
    assert_eq!(v["is_valid_webhook"], true);
    assert_eq!(v["webhook"], pt.recv_url.as_str());
    pt.recv.state().mode = Mode::Correct;
    assert_eq!(pt.call("POST", &check, None).await.0, 204);
    let done = pt.sale(1500, &user, json!({})).await;
    let id = done["id"].as_str().unwrap();
    let posts = pt.wait_for(id, "FINISHED").await;
    assert!(posts.iter().all(|p| p.signature_ok));
    // A PATCH invalidates until the next check, even to the same URL.
    assert_eq!(pt.set_webhook(&pt.recv_url).await, 204);
    assert_eq!(pt.webhook_valid().await, false);
    let before = pt.posts();
    let done = pt.sale(1500, &user, json!({})).await;
    assert_eq!(done["state"], "FINISHED");
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pt.posts(),
        before,
        "nothing after the PATCH until the next check"
    );
    assert_eq!(pt.call("POST", &check, None).await.0, 204);
    assert_eq!(app.available(&user, "ARS").await, "55.00");
    pt.run.stop().await;
}

/// §2.8 test 2: an approved purchase, end to end.
async fn approved_purchase(app: TestApp) {
    let pt = point(&app, |_| {}).await;
    pt.register().await;
    // The first delivery attempt fails: the retry carries the same x-request-id.
    pt.recv.state().fail_next = 1;
    let user = uid("usr");
    app.funded(&user, "ARS", "100.00").await;
    let (s, created) = pt.create(DEV, json!(1500)).await;
    assert_eq!(s, 200);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["device_id"], DEV);
    assert_eq!(created["amount"], 1500);
    let (_, open) = pt
        .call("GET", &Point::api(&format!("/payment-intents/{id}")), None)
        .await;
    assert_eq!(open["state"], "OPEN");
    let (s, fetched) = pt
        .call("POST", &format!("/sim/devices/{DEV}/fetch"), None)
        .await;
    assert_eq!((s, fetched["state"].as_str()), (200, Some("ON_TERMINAL")));
    let done = pt.present(DEV, &user, json!({})).await;
    assert_eq!(done["state"], "FINISHED");
    assert_eq!(done["payment"]["state"], "approved");
    assert_eq!(done["payment"]["type"], "prepaid_card");
    // payment.id is a string on the intent.
    let pid = done["payment"]["id"].as_str().unwrap().to_owned();
    assert!(pid.parse::<u64>().unwrap() >= 10_000_000_001);
    let p = pt.payment(&json!(pid)).await;
    assert_eq!(p["status"], "approved");
    assert_eq!(p["currency_id"], "ARS");
    assert_eq!(p["amount"], 1500);
    assert_eq!(p["transaction_amount"], 15);
    assert_eq!(
        p["external_reference"],
        created["additional_info"]["external_reference"]
    );
    // Our ledger.
    assert_eq!(app.available(&user, "ARS").await, "85.00");
    let (s, h) = transaction(&app, &format!("ctx-pt-{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(h["records"][0]["status"], "APPROVED");
    assert_eq!(h["records"][0]["amount_minor"], -1500);
    assert_eq!(
        h["records"][0]["request"]["merchant"]["terminal_id"],
        "ING-ARG-14886780"
    );
    assert_eq!(
        h["records"][0]["request"]["extra_data"]["pin_presence"],
        "ONLINE"
    );
    // Webhooks: every state change, in order, signed; the failed attempt was retried.
    let posts = pt.wait_for(&id, "FINISHED").await;
    assert_eq!(
        states(&posts),
        ["ON_TERMINAL", "PROCESSING", "PROCESSED", "FINISHED"]
    );
    assert!(posts.iter().all(|p| p.signature_ok), "{posts:?}");
    assert_eq!(posts[0].status, 500);
    assert_eq!(posts[0].request_id, posts[1].request_id);
    assert_eq!(posts[0].body, posts[1].body);
    let last = &posts.last().unwrap().body;
    assert_eq!(last["payment"]["id"], json!(pid.parse::<u64>().unwrap()));
    assert_eq!(last["payment"]["state"], "approved");
    assert_eq!(last["payment"]["type"], "prepaid_card");
    assert_eq!(last["amount"], 1500);
    assert_eq!(last["caller_id"], 1);
    assert_eq!(
        last["additional_info"]["external_reference"],
        created["additional_info"]["external_reference"]
    );
    // The intent's last event and the events of the day.
    let (_, ev) = pt
        .call(
            "GET",
            &Point::api(&format!("/payment-intents/{id}/events")),
            None,
        )
        .await;
    assert_eq!(ev["status"], "FINISHED");
    let today = &ev["created_on"].as_str().unwrap()[..10];
    let (s, evs) = pt
        .call(
            "GET",
            &Point::api(&format!(
                "/payment-intents/events?startDate={today}&endDate={today}"
            )),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let mine: Vec<&str> = items(&evs["events"])
        .filter(|e| e["payment_intent_id"] == id.as_str())
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        mine,
        ["OPEN", "ON_TERMINAL", "PROCESSING", "PROCESSED", "FINISHED"]
    );
    // The transactions file, in the reconciler's default layout.
    let csv = std::fs::read_to_string(&pt.csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), point_sim::csv::HEADER.trim_end());
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&format!(
            "ctx-pt-{id},AUTHORIZATION,PURCHASE,APPROVED,DEBIT,15.00,ARS,,crd-{user},{user},"
        )),
        "{row}"
    );
    let st = pt.stats().await;
    assert_eq!(st["authorizations_sent"], 1);
    assert_eq!(st["answers_ok"], 1);
    pt.run.stop().await;
}

/// §2.8 test 3: an underfunded account and the magic amounts.
async fn declines_and_magic_amounts(app: TestApp) {
    let (pt, user) = registered(&app, |_| {}).await;
    let poor = uid("usr");
    app.funded(&poor, "ARS", "1.00").await;

    // Underfunded: our REJECTED, echoed by the advice; nothing moves.
    let done = pt.sale(1500, &poor, json!({})).await;
    let id = done["id"].as_str().unwrap();
    assert_eq!(done["state"], "FINISHED");
    assert_eq!(done["payment"]["state"], "rejected");
    let p = pt.payment(&done["payment"]["id"]).await;
    assert_eq!(p["status"], "rejected");
    assert_eq!(p["status_detail"], "INSUFFICIENT_FUNDS");
    assert_eq!(app.available(&poor, "ARS").await, "1.00");
    let (_, h) = transaction(&app, &format!("ctx-pt-{id}")).await;
    assert_eq!(h["records"][0]["status"], "REJECTED");
    assert_eq!(h["notifications"][0]["status_detail"], "INSUFFICIENT_FUNDS");
    assert_eq!(h["notifications"][0]["effect"], "NOOP");
    let posts = pt.wait_for(id, "FINISHED").await;
    assert_eq!(posts.last().unwrap().body["payment"]["state"], "rejected");

    // 1100: approved, then reversed; the reversal is linked.
    let done = pt.sale(1100, &user, json!({})).await;
    let id = done["id"].as_str().unwrap();
    assert_eq!(done["state"], "FINISHED");
    assert_eq!(done["payment"]["state"], "reversed");
    assert_eq!(
        pt.payment(&done["payment"]["id"]).await["status"],
        "cancelled"
    );
    assert_eq!(app.available(&user, "ARS").await, "100.00");
    let (_, h) = transaction(&app, &format!("ctx-pt-{id}")).await;
    assert_eq!(h["records"][0]["status"], "APPROVED");
    assert_eq!(
        h["adjustments"][0]["transaction_id"],
        format!("ctx-pt-{id}-rev").as_str()
    );
    assert_eq!(h["adjustments"][0]["type"], "REVERSAL_PURCHASE");
    pt.wait_for(id, "FINISHED").await;

    // 1200: a processor-side decline: no authorization, only an advice stored as a no-op.
    let done = pt.sale(1200, &user, json!({})).await;
    let id = done["id"].as_str().unwrap();
    assert_eq!(done["state"], "FINISHED");
    assert_eq!(done["payment"]["state"], "rejected");
    let p = pt.payment(&done["payment"]["id"]).await;
    assert_eq!(
        (p["status"].as_str(), p["status_detail"].as_str()),
        (Some("rejected"), Some("INVALID_PIN"))
    );
    let (s, h) = transaction(&app, &format!("ctx-pt-{id}")).await;
    assert_eq!(s, 200);
    // No authorization reached us: the only record is the verdict the advice left (so a
    // late authorization cannot book), with no request, no answer and no money.
    assert_eq!(h["records"][0]["status"], Value::Null, "{h}");
    assert_eq!(h["records"][0]["request"], Value::Null, "{h}");
    assert_eq!(h["records"][0]["verdict"], "REJECTED");
    assert_eq!(h["movements"], json!([]));
    assert_eq!(h["notifications"][0]["effect"], "NOOP");
    assert_eq!(app.available(&user, "ARS").await, "100.00");

    // 1300: approved, then the INTERNAL_ERROR advice reverses it, once even when a second
    // advice arrives.
    let done = pt.sale(1300, &user, json!({})).await;
    let id = done["id"].as_str().unwrap().to_owned();
    assert_eq!(done["state"], "ERROR");
    assert_eq!(
        pt.payment(&done["payment"]["id"]).await["status"],
        "rejected"
    );
    assert_eq!(app.available(&user, "ARS").await, "100.00");
    let again = Tx::new(
        &format!("ctx-pt-{id}"),
        "PURCHASE",
        &user,
        "\"13.00\"",
        "ARS",
    )
    .card(&format!("crd-{user}"))
    .advice(
        "authorization-advice",
        "REJECTED",
        "INTERNAL_ERROR",
        &uid("adv"),
    );
    assert_eq!(app.processor(NOTIFY, &again, &uid("k")).await.status, 200);
    assert_eq!(app.available(&user, "ARS").await, "100.00");
    let (_, h) = transaction(&app, &format!("ctx-pt-{id}")).await;
    let reversed = items(&h["notifications"])
        .filter(|n| n["effect"] == "REVERSED")
        .count();
    assert_eq!(reversed, 1, "{h}");
    let posts = pt.wait_for(&id, "ERROR").await;
    assert!(posts.last().unwrap().body.get("payment").is_none());

    // Every request the simulator sent got a 2xx with our valid signature.
    let st = pt.stats().await;
    assert_eq!(st["answers_bad_signature"], 0, "{st}");
    assert_eq!(st["answers_not_2xx"], 0, "{st}");
    assert_eq!(st["followups_pending"], 0, "{st}");
    // Without magic amounts, 1200 is an ordinary sale.
    let plain = point(&app, |c| c.magic_amounts = false).await;
    let done = plain.sale(1200, &user, json!({})).await;
    assert_eq!(done["payment"]["state"], "approved");
    assert_eq!(app.available(&user, "ARS").await, "88.00");
    pt.run.stop().await;
    plain.run.stop().await;
}

/// §2.8 test 4: an answer slower than `authorization_timeout_ms` ends
/// `CONFIRMATION_REQUIRED`; the `CLIENT_TIMEOUT` advice undoes our late approval.
async fn timeout_then_advice(app: TestApp) {
    let (pt, user) = registered(&app, |c| c.authorization_timeout_ms = 300).await;
    let done = pt
        .sale(1500, &user, json!({ "answer_delay_ms": 1500 }))
        .await;
    let id = done["id"].as_str().unwrap();
    assert_eq!(done["state"], "CONFIRMATION_REQUIRED");
    let p = pt.payment(&done["payment"]["id"]).await;
    assert_eq!(p["status"], "rejected");
    assert_eq!(p["status_detail"], "CLIENT_TIMEOUT");
    // Usually our authorizer approved and booked in time for itself, and the advice
    // reversed it. On a busy machine the advice may reach us first: the late authorization
    // then meets the processor's verdict and books nothing. Both orders are right; wait for
    // the authorization to be recorded either way.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let h = loop {
        let (_, h) = transaction(&app, &format!("ctx-pt-{id}")).await;
        if !h["records"][0]["status"].is_null() || std::time::Instant::now() > until {
            break h;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(h["notifications"][0]["status_detail"], "CLIENT_TIMEOUT");
    let order = (
        h["records"][0]["status"].as_str(),
        h["notifications"][0]["effect"].as_str(),
    );
    assert!(
        matches!(
            order,
            (Some("APPROVED"), Some("REVERSED")) | (Some("REJECTED"), Some("NOOP"))
        ),
        "{h}"
    );
    assert_eq!(app.available(&user, "ARS").await, "100.00");
    let posts = pt.wait_for(id, "CONFIRMATION_REQUIRED").await;
    assert_eq!(
        states(&posts),
        ["ON_TERMINAL", "PROCESSING", "CONFIRMATION_REQUIRED"]
    );
    let last = &posts.last().unwrap().body;
    assert_eq!(last["payment"]["state"], "");
    assert_eq!(last["payment"]["type"], "");
    // The late answer changes nothing.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.available(&user, "ARS").await, "100.00");
    assert_eq!(
        pt.call("GET", &Point::api(&format!("/payment-intents/{id}")), None)
            .await
            .1["state"],
        "CONFIRMATION_REQUIRED"
    );
    let csv = std::fs::read_to_string(&pt.csv).unwrap();
    assert!(
        csv.contains(&format!("ctx-pt-{id},AUTHORIZATION,PURCHASE,REJECTED,")),
        "{csv}"
    );
    pt.run.stop().await;
}

/// No authorizer at all: `CONFIRMATION_REQUIRED`, the advice waits in the background.
async fn authorizer_unreachable(app: TestApp) {
    let pt = point(&app, |c| {
        c.authorizer_url = "http://127.0.0.1:1".into();
        c.followup_wait_ms = 200;
    })
    .await;
    let user = uid("usr");
    let done = pt.sale(1500, &user, json!({})).await;
    assert_eq!(done["state"], "CONFIRMATION_REQUIRED");
    let p = pt.payment(&done["payment"]["id"]).await;
    assert_eq!(p["status_detail"], "CLIENT_UNAVAILABLE");
    let st = pt.stats().await;
    assert_eq!(st["followups_pending"], 1);
    assert!(st["unavailable"].as_u64().unwrap() >= 1);
    pt.run.stop().await;
}

/// §2.8 test 5: the API's rules, the device's cancel, and abandonment.
async fn api_rules_and_abandonment(app: TestApp) {
    let pt = point(&app, |_| {}).await;
    pt.register().await;
    // Unknown token, unknown device, amount rules per site.
    assert_eq!(
        pt.call_as(
            "POST",
            &Point::api(&format!("/devices/{DEV}/payment-intents")),
            Some(json!({"amount": 1500})),
            "nope"
        )
        .await
        .0,
        401
    );
    let (s, v) = pt.create("NOPE__X", json!(1500)).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("device_not_found")));
    assert_eq!(v["status"], 404);
    assert_eq!(v["cause"], json!([]));
    for (dev, low, high) in [
        (DEV, 499, 400_000_001i64),
        (DEV_MLB, 99, 7_000_001),
        (DEV_MLM, 499, 35_000_001),
    ] {
        for bad in [
            json!(low),
            json!(high),
            json!(12.34),
            json!("1500"),
            Value::Null,
        ] {
            let (s, v) = pt.create(dev, bad.clone()).await;
            assert_eq!(
                (s, v["error"].as_str()),
                (400, Some("invalid_amount")),
                "{dev} {bad}"
            );
        }
    }
    let (s, v) = pt
        .call(
            "POST",
            &Point::api(&format!("/devices/{DEV_MLB}/payment-intents")),
            Some(json!({"amount": 1500, "payment": {"installments": 4, "type": "credit_card"}})),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_payment")));
    // DELETE while OPEN is allowed.
    let (_, i) = pt.create(DEV, json!(1500)).await;
    let id = i["id"].as_str().unwrap().to_owned();
    let (s, _) = pt.create(DEV, json!(1500)).await;
    assert_eq!(s, 409, "device_busy");
    let del = Point::api(&format!("/devices/{DEV}/payment-intents/{id}"));
    let (s, v) = pt.call("DELETE", &del, None).await;
    assert_eq!((s, v), (200, json!({ "id": id })));
    let posts = pt.wait_for(&id, "CANCELED").await;
    assert!(posts.last().unwrap().body.get("payment").is_none());
    // After a fetch: 409; the device cancels.
    let (_, i) = pt.create(DEV, json!(1500)).await;
    let id = i["id"].as_str().unwrap().to_owned();
    pt.call("POST", &format!("/sim/devices/{DEV}/fetch"), None)
        .await;
    let del = Point::api(&format!("/devices/{DEV}/payment-intents/{id}"));
    let (s, v) = pt.call("DELETE", &del, None).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("intent_not_cancelable"))
    );
    let (s, v) = pt
        .call("POST", &format!("/sim/devices/{DEV}/cancel"), None)
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("CANCELED")));
    // STANDALONE takes no intents.
    let (s, _) = pt
        .call(
            "PATCH",
            &Point::api(&format!("/devices/{DEV_MLM}")),
            Some(json!({"operating_mode": "STANDALONE"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = pt.create(DEV_MLM, json!(1500)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("device_not_in_pdv_mode"))
    );
    let (_, devices) = pt.call("GET", &Point::api("/devices?limit=2"), None).await;
    assert_eq!(devices["paging"]["total"], 3);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);
    // Nothing to present to.
    let (s, _) = pt
        .call(
            "POST",
            &format!("/sim/devices/{DEV}/present"),
            Some(json!({"card_id": "c", "user_id": "u"})),
        )
        .await;
    assert_eq!(s, 404);
    pt.run.stop().await;

    // Abandonment: no traffic at all.
    let pt = point(&app, |c| c.abandon_after_secs = 1).await;
    pt.register().await;
    let (_, a) = pt.create(DEV, json!(1500)).await;
    let (_, b) = pt.create(DEV_MLB, json!(1500)).await;
    pt.call("POST", &format!("/sim/devices/{DEV_MLB}/fetch"), None)
        .await;
    for i in [&a, &b] {
        let id = i["id"].as_str().unwrap();
        pt.wait_for(id, "ABANDONED").await;
        assert_eq!(transaction(&app, &format!("ctx-pt-{id}")).await.0, 404);
    }
    assert_eq!(pt.stats().await["authorizations_sent"], 0);
    pt.run.stop().await;
}

/// §2.8 test 6: a refund after an approval, the wrong card, and a second refund.
async fn refund(app: TestApp) {
    let (pt, user) = registered(&app, |_| {}).await;
    let done = pt.sale(1500, &user, json!({})).await;
    let pay_id = done["id"].as_str().unwrap().to_owned();
    let pid = done["payment"]["id"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(app.available(&user, "ARS").await, "85.00");
    let refund_path = Point::api(&format!("/devices/{DEV}/refund"));
    // Another device cannot refund it.
    let (s, v) = pt
        .call(
            "POST",
            &Point::api(&format!("/devices/{DEV_MLB}/refund")),
            Some(json!({"payment_id": pid})),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("refund_not_allowed")));
    // The wrong card: ERROR, nothing moves, the payment can still be refunded.
    let (s, r) = pt
        .call(
            "POST",
            &refund_path,
            Some(json!({"payment_id": pid.to_string()})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let wrong = pt.present(DEV, &uid("usr"), json!({})).await;
    assert_eq!(wrong["state"], "ERROR");
    assert_eq!(app.available(&user, "ARS").await, "85.00");
    // A refund intent cancelled while OPEN, then a refund that works.
    let (_, r) = pt
        .call("POST", &refund_path, Some(json!({"payment_id": pid, "additional_info": {"print_on_terminal": ["SELLER_TICKET"]}})))
        .await;
    let rid = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["payment_id"], pid);
    assert_eq!(r["device_id"], DEV);
    let (s, _) = pt
        .call(
            "DELETE",
            &Point::api(&format!("/devices/{DEV}/refund/{rid}")),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = pt
        .call(
            "DELETE",
            &Point::api(&format!("/devices/{DEV}/refund/{rid}")),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("refund_not_cancelable"))
    );
    let (_, r) = pt
        .call("POST", &refund_path, Some(json!({"payment_id": pid})))
        .await;
    let rid = r["id"].as_str().unwrap().to_owned();
    let done = pt.present(DEV, &user, json!({})).await;
    assert_eq!(done["state"], "FINISHED");
    let (_, got) = pt
        .call("GET", &Point::api(&format!("/refund/{rid}")), None)
        .await;
    assert_eq!(got["state"], "FINISHED");
    assert_eq!(got["payment_id"], pid);
    assert_eq!(app.available(&user, "ARS").await, "100.00");
    assert_eq!(pt.payment(&json!(pid)).await["status"], "refunded");
    let (_, h) = transaction(&app, &format!("ctx-pt-{pay_id}")).await;
    assert_eq!(
        h["adjustments"][0]["transaction_id"],
        format!("ctx-ptr-{rid}").as_str()
    );
    assert_eq!(h["adjustments"][0]["type"], "REFUND");
    let posts = pt.wait_for(&rid, "FINISHED").await;
    assert_eq!(states(&posts), ["ON_TERMINAL", "PROCESSING", "FINISHED"]);
    assert_eq!(posts.last().unwrap().body["payment"]["state"], "refunded");
    // A second refund: 409.
    let (s, v) = pt
        .call("POST", &refund_path, Some(json!({"payment_id": pid})))
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("refund_not_allowed")));
    let csv = std::fs::read_to_string(&pt.csv).unwrap();
    assert!(
        csv.contains(&format!(
            "ctx-ptr-{rid},ADJUSTMENT,REFUND,APPROVED,CREDIT,15.00,ARS,ctx-pt-{pay_id},"
        )),
        "{csv}"
    );
    pt.run.stop().await;
}

/// instore-extensions §5: the virtual card reader, through the same signed traffic.
async fn virtual_reader(app: TestApp) {
    let user = uid("usr");
    app.funded(&user, "ARS", "100.00").await;
    let card = user.clone();
    let pt = point(&app, |c| {
        c.reader = Some(point_sim::config::ReaderConfig {
            peds: vec!["PED-1".into()],
            device: String::new(),
        });
        c.virtual_cards = vec![point_sim::config::VirtualCard {
            key: "visa-1".into(),
            card_id: format!("crd-{card}"),
            user_id: card.clone(),
            product_type: "CREDIT".into(),
            provider: "VISA".into(),
            last_four: "4242".into(),
            currency: "ARS".into(),
        }];
    })
    .await;
    let ped = json!({"registration_code": "PED-1", "name": "Verifone P400", "type": "PED"});
    let (_, v) = pt
        .call(
            "POST",
            "/instore/initialize_credit_processor",
            Some(json!({"processor": "Custom"})),
        )
        .await;
    assert_eq!(
        v["data"],
        json!({"captureEnabled": false, "simulated": true})
    );
    let (_, v) = pt
        .call(
            "POST",
            "/instore/connect_card_reader",
            Some(json!({"ped": {"registration_code": "nope"}})),
        )
        .await;
    assert_eq!(
        (v["result"].as_str(), v["error"].as_str()),
        (Some("Failure"), Some("Device Offline"))
    );
    let (_, v) = pt
        .call(
            "POST",
            "/instore/connect_card_reader",
            Some(json!({ "ped": ped })),
        )
        .await;
    assert_eq!(v["result"], "Success");
    let collect = |cart: &str, reference: &str, amount: i64| {
        json!({"saleId": "s1", "testCard": "visa-1", "reference": reference, "cartKey": cart,
               "amount": {"amount": amount, "precision": 2, "currency": "ARS"}, "ped": ped})
    };
    // Approved: the authorization is ours, signed like the network's.
    let (_, v) = pt
        .call(
            "POST",
            "/instore/collect_credit_payment",
            Some(collect("cart-1", "ref-1", 2000)),
        )
        .await;
    assert_eq!(v["result"], "Success", "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["data"]["authorization_response_code"], "3030");
    assert_eq!(v["data"]["last4"], "4242");
    let pid = v["data"]["processor_id"].as_str().unwrap().to_owned();
    assert_eq!(app.available(&user, "ARS").await, "80.00");
    let (_, h) = transaction(&app, &pid).await;
    assert_eq!(h["records"][0]["status"], "APPROVED");
    let (_, cap) = pt
        .call(
            "POST",
            "/instore/capture_payment",
            Some(json!({"cartKey": "cart-1"})),
        )
        .await;
    assert_eq!(cap["data"]["processor_id"], pid.as_str());
    // A partial refund, then what is left.
    let (_, v) = pt
        .call("POST", "/instore/create_credit_refund", Some(json!({"saleId": "s1", "last4": "4242", "reference": "ref-1", "amount": "5.00", "currency": "ARS"})))
        .await;
    assert_eq!(v["status"], "approved", "{v}");
    assert_eq!(app.available(&user, "ARS").await, "85.00");
    let (_, v) = pt
        .call(
            "GET",
            &format!("/instore/credit_available_refund/{pid}"),
            None,
        )
        .await;
    assert_eq!(v["data"]["amount"], "15.00");
    let (_, v) = pt
        .call(
            "POST",
            "/instore/create_credit_refund",
            Some(json!({"reference": "ref-1", "amount": "15.01", "currency": "ARS"})),
        )
        .await;
    assert_eq!(v["result"], "Failure");
    // A refunded payment is not cancelled; another one is, once.
    let (_, v) = pt
        .call(
            "POST",
            "/instore/cancel_credit_payment",
            Some(json!({"processor_id": pid})),
        )
        .await;
    assert_eq!(v["result"], "Failure");
    let (_, v) = pt
        .call(
            "POST",
            "/instore/collect_credit_payment",
            Some(collect("cart-2", "ref-2", 3000)),
        )
        .await;
    let pid2 = v["data"]["processor_id"].as_str().unwrap().to_owned();
    assert_eq!(app.available(&user, "ARS").await, "55.00");
    for _ in 0..2 {
        let (_, v) = pt
            .call(
                "POST",
                "/instore/cancel_credit_payment",
                Some(json!({"processor_id": pid2, "last4": "4242"})),
            )
            .await;
        assert_eq!(v["status"], "approved", "{v}");
    }
    assert_eq!(app.available(&user, "ARS").await, "85.00");
    let (_, h) = transaction(&app, &pid2).await;
    assert_eq!(h["adjustments"].as_array().unwrap().len(), 1, "{h}");
    // Declined: more than the balance.
    let (_, v) = pt
        .call(
            "POST",
            "/instore/collect_credit_payment",
            Some(collect("cart-3", "ref-3", 900_000)),
        )
        .await;
    assert_eq!(
        (v["result"].as_str(), v["error"].as_str()),
        (Some("Failure"), Some("INSUFFICIENT_FUNDS"))
    );
    assert_eq!(app.available(&user, "ARS").await, "85.00");
    pt.run.stop().await;
}

/// §2.8 test 7: a day of terminal traffic, written by the simulator as the processor's
/// transactions file, reconciled against our ledger.
async fn reconciled_day(app: TestApp) {
    use reconciler::run::run;
    // The sales that must reach their answer get 2 s, which a busy machine still meets; the
    // timeout sale's answer comes later than that.
    let pt = point(&app, |c| c.authorization_timeout_ms = 2_000).await;
    let user = uid("usr");
    app.funded(&user, "ARS", "100.00").await;
    let poor = uid("usr");
    app.funded(&poor, "ARS", "1.00").await;
    let mut ids = BTreeMap::new();
    for (name, amount, who, extra) in [
        ("approved", 1500, &user, json!({})),
        ("declined", 1500, &poor, json!({})),
        ("reversed", 1100, &user, json!({})),
        ("rejected", 1200, &user, json!({})),
        ("error", 1300, &user, json!({})),
        ("timeout", 1400, &user, json!({ "answer_delay_ms": 2_600 })),
    ] {
        let done = pt.sale(amount, who, extra).await;
        ids.insert(name, done["id"].as_str().unwrap().to_owned());
    }
    let pid = pt.payment(&json!(10_000_000_001u64)).await["id"].clone();
    let (s, r) = pt
        .call(
            "POST",
            &Point::api(&format!("/devices/{DEV}/refund")),
            Some(json!({ "payment_id": pid })),
        )
        .await;
    assert_eq!(s, 200, "the refund of the approved sale: {r}");
    assert_eq!(
        pt.present(DEV, &user, json!({})).await["state"],
        "FINISHED",
        "{r}"
    );
    // The timeout sale's late approval and the advice that undoes it may still be on their way.
    let until = Instant::now() + Duration::from_secs(10);
    while app.available(&user, "ARS").await != "100.00" && Instant::now() < until {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.available(&user, "ARS").await, "100.00");

    let date = recon::today();
    let files = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let d = date.format("%Y%m%d");
    std::fs::copy(&pt.csv, files.path().join(format!("transactions_{d}.csv"))).unwrap();
    std::fs::write(
        files.path().join(format!("presentments_{d}.csv")),
        "transaction_id,direction,local_amount,local_currency,card_id,date\n",
    )
    .unwrap();
    let s = recon::settings(&app, reports.path());
    let opts = recon::from_dir(&date, files.path());
    let outcome = run(&s, &app.store, &opts)
        .await
        .expect("reconciliation runs");
    let breaks = app
        .store
        .run_breaks(&date.to_string(), None, 100, 0)
        .await
        .unwrap();
    let got: Vec<(String, String)> = breaks
        .iter()
        .map(|b| (b.class.clone(), b.transaction_id.clone()))
        .collect();
    let rec = app.store.run(&date.to_string()).await.unwrap().unwrap();
    assert_eq!(rec.malformed_rows, 0, "{}", rec.summary);
    // Every row of the file was matched: 5 authorizations (of 6 sales: 1200 never reached
    // us), the reversal of 1100 and the refund. The expected breaks of this day: none.
    assert_eq!(rec.matched, 7, "{} {outcome:?} {got:?}", rec.summary);
    assert_eq!(
        got,
        Vec::<(String, String)>::new(),
        "no break expected: {}",
        rec.summary
    );
    pt.run.stop().await;
}

both_backends!(
    challenge,
    approved_purchase,
    declines_and_magic_amounts,
    timeout_then_advice,
    authorizer_unreachable,
    api_rules_and_abandonment,
    refund,
    virtual_reader,
    reconciled_day,
);

/// A stand-in authorizer whose answers the simulator must not trust: a 200 whose signature
/// does not verify, or a 503. It records the advices it gets.
/// With `signs`, it signs its answers as the authorizer does, and answers credit
/// adjustments with `adjustment_status` (a refusal of a reversal).
#[derive(Default)]
struct Fake {
    status: u16,
    advices: Vec<Value>,
    signs: bool,
    adjustment_status: u16,
}

async fn fake_any(req: HttpRequest, body: web::Bytes, st: Shared<Fake>) -> HttpResponse {
    if req.path() == NOTIFY {
        st.lock()
            .unwrap()
            .advices
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        return HttpResponse::Ok().finish();
    }
    let (status, signs) = {
        let s = st.lock().unwrap();
        match req.path() {
            ADJ_CREDIT => (s.adjustment_status, s.signs),
            _ => (s.status, s.signs),
        }
    };
    let answer = r#"{"status":"APPROVED","status_detail":"APPROVED","message":"Approved"}"#;
    let (ts, signature) = if signs {
        let secret = protocol::ApiSecret::from_base64(API_SECRET).unwrap();
        processor_client::sign(&secret, crate_now(), req.path(), answer.as_bytes())
    } else {
        let bad = "hmac-sha256 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        (crate_now().to_string(), bad.to_owned())
    };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("x-timestamp", ts))
        .insert_header(("x-endpoint", req.path().to_owned()))
        .insert_header(("x-signature", signature))
        .body(answer)
}

/// point-sim on `fake`, with the demo device and `csv` as its transactions file.
async fn on_fake(fake: &Loopback<Fake>, csv: std::path::PathBuf) -> Point {
    let run = point_sim::start(Config {
        authorizer_url: fake.base.clone(),
        processor_api_key: Some(API_KEY.into()),
        processor_api_secret: Some(API_SECRET.into()),
        devices: vec![point_sim::config::demo_device()],
        transactions_csv: csv.display().to_string(),
        ..Config::default()
    })
    .await
    .unwrap();
    Point::new(run, csv)
}

/// §2.5: the reversal of an 1100 approval refused for good (a 4xx) leaves the payment
/// approved, and the transactions file says the processor rejected the reversal: the money
/// stayed taken.
#[actix_rt::test]
async fn a_refused_reversal_leaves_the_payment_approved() {
    let fake = Loopback::start(
        Fake {
            status: 200,
            signs: true,
            adjustment_status: 400,
            ..Fake::default()
        },
        fake_any,
    );
    let dir = tempfile::tempdir().unwrap();
    let pt = on_fake(&fake, dir.path().join("tx.csv")).await;
    let done = pt.sale(1100, "usr-x", json!({})).await;
    assert_eq!(done["payment"]["state"], "approved", "{done}");
    assert_eq!(
        pt.payment(&done["payment"]["id"]).await["status"],
        "approved"
    );
    let csv = std::fs::read_to_string(dir.path().join("tx.csv")).unwrap();
    let reversal = csv.lines().find(|l| l.contains("REVERSAL_PURCHASE"));
    assert!(reversal.is_some_and(|l| l.contains(",REJECTED,")), "{csv}");
    pt.run.stop().await;
    fake.stop().await;
}

/// §2.5: an answer whose signature does not verify is a rejection (advice
/// `CLIENT_SIGNATURE_ERROR`); a 5xx is `CONFIRMATION_REQUIRED` (advice `CLIENT_UNAVAILABLE`).
#[actix_rt::test]
async fn untrusted_answers() {
    let fake = Loopback::start(
        Fake {
            status: 200,
            ..Fake::default()
        },
        fake_any,
    );
    let pt = on_fake(&fake, std::path::PathBuf::new()).await;
    let done = pt.sale(1500, "usr-x", json!({})).await;
    assert_eq!(done["state"], "FINISHED");
    assert_eq!(done["payment"]["state"], "rejected");
    let p = pt.payment(&done["payment"]["id"]).await;
    assert_eq!(p["status_detail"], "CLIENT_SIGNATURE_ERROR");
    fake.state().status = 503;
    let done = pt.sale(1500, "usr-x", json!({})).await;
    assert_eq!(done["state"], "CONFIRMATION_REQUIRED");
    assert_eq!(
        pt.payment(&done["payment"]["id"]).await["status_detail"],
        "CLIENT_UNAVAILABLE"
    );
    let advices: Vec<String> = fake
        .state()
        .advices
        .iter()
        .map(|a| {
            a["event_detail"]["status_detail"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(advices, ["CLIENT_SIGNATURE_ERROR", "CLIENT_UNAVAILABLE"]);
    let st = pt.stats().await;
    // The authorization's answer and the two advices' (the stand-in signs nothing valid).
    assert_eq!(st["answers_bad_signature"], 3, "{st}");
    assert_eq!(st["answers_not_2xx"], 1, "{st}");
    pt.run.stop().await;
    fake.stop().await;
}
