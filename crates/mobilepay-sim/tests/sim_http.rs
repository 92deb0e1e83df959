//! The simulator over HTTP against a stub of the channel API (spec §2.2) that verifies the
//! simulator's signatures, signs its answers, and misbehaves on request: the wire rules of
//! §2.5 and the reliability rules (retries under one key, no answer, background delivery,
//! breaks). The tests against the real authorizer are in the workspace's `tests/` crate.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mobilepay_sim::{Config, Sim};
use protocol::ApiSecret;
use protocol::signature::{self, headers};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";
const KEY: &str = "mobilepay-sim-key";

#[derive(Default)]
struct Stub {
    /// (path, idempotency key) of every request whose signature verified.
    seen: Vec<(String, String)>,
    /// reservation_id -> (amount, state, captured).
    holds: HashMap<String, (String, String, Option<String>)>,
    refunds: Vec<(String, String)>,
    /// Reserves answered only after this long.
    reserve_delay_ms: u64,
    /// Captures answered 503 this many times first.
    capture_503: u32,
    /// Captures refused 409 EXPIRED.
    capture_409: bool,
    /// Answers go out unsigned.
    unsigned: bool,
    /// Reserve answers REJECTED INSUFFICIENT_FUNDS.
    reject: bool,
    bad_signatures: u32,
}

type StubRef = Arc<Mutex<Stub>>;

async fn stub_route(req: HttpRequest, body: web::Bytes, st: web::Data<StubRef>) -> HttpResponse {
    let secret = ApiSecret::from_base64(SECRET).unwrap();
    let h = |n: &str| processor_client::header_text(req.headers(), n).to_owned();
    let path = req.path().to_owned();
    let ok_sig = h(headers::API_KEY) == KEY
        && h(headers::ENDPOINT) == path
        && signature::verify(
            &secret,
            &h(headers::TIMESTAMP),
            &path,
            &body,
            &h(headers::SIGNATURE),
        )
        .is_ok();
    if !ok_sig {
        st.lock().unwrap().bad_signatures += 1;
        return HttpResponse::Unauthorized().finish();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let delay = {
        let mut s = st.lock().unwrap();
        s.seen.push((path.clone(), h(headers::IDEMPOTENCY_KEY)));
        if path == "/channels/v1/reservations" {
            s.reserve_delay_ms
        } else {
            0
        }
    };
    if delay > 0 {
        actix_rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let (status, answer) = {
        let mut s = st.lock().unwrap();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["channels", "v1", "reservations"] => {
                let id = v["reservation_id"].as_str().unwrap().to_owned();
                if s.reject {
                    (
                        200,
                        json!({"status":"REJECTED","status_detail":"INSUFFICIENT_FUNDS"}),
                    )
                } else {
                    s.holds.entry(id.clone()).or_insert((
                        v["amount"].as_str().unwrap().to_owned(),
                        "RESERVED".into(),
                        None,
                    ));
                    (
                        200,
                        json!({"status":"APPROVED","status_detail":"APPROVED","reservation":{"reservation_id":id,"state":"RESERVED"}}),
                    )
                }
            }
            ["channels", "v1", "reservations", id, "capture"] => {
                if s.capture_503 > 0 {
                    s.capture_503 -= 1;
                    (
                        503,
                        json!({"error":{"code":"UNAVAILABLE","message":"busy"}}),
                    )
                } else if s.capture_409 {
                    (
                        409,
                        json!({"error":{"code":"EXPIRED","message":"the hold expired"}}),
                    )
                } else {
                    let amount = v["amount"].as_str().unwrap().to_owned();
                    let hold = s.holds.get_mut(*id).unwrap();
                    hold.1 = "CAPTURED".into();
                    hold.2 = Some(amount);
                    (200, json!({"status":"APPROVED"}))
                }
            }
            ["channels", "v1", "reservations", id, "cancel"] => match s.holds.get_mut(*id) {
                Some(hold) => {
                    hold.1 = "CANCELLED".into();
                    (200, json!({"status":"APPROVED"}))
                }
                None => (404, json!({"error":{"code":"NOT_FOUND","message":"no"}})),
            },
            ["channels", "v1", "reservations", _, "refunds"] => {
                s.refunds.push((
                    v["refund_id"].as_str().unwrap().to_owned(),
                    v["amount"].as_str().unwrap().to_owned(),
                ));
                (200, json!({"status":"APPROVED"}))
            }
            _ => (404, json!({"error":{"code":"NOT_FOUND","message":"route"}})),
        }
    };
    let bytes = answer.to_string().into_bytes();
    let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if !st.lock().unwrap().unsigned {
        let ts = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs())
        .to_string();
        let sig = signature::sign(&secret, &ts, &path, &bytes);
        res.insert_header((headers::TIMESTAMP, ts))
            .insert_header((headers::ENDPOINT, path))
            .insert_header((headers::SIGNATURE, sig));
    }
    res.content_type("application/json").body(bytes)
}

async fn stub() -> (String, StubRef) {
    let st: StubRef = Arc::new(Mutex::new(Stub::default()));
    let s = st.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(s.clone()))
            .default_service(web::to(stub_route))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    (format!("http://{addr}"), st)
}

fn config(authorizer: &str, token: &str) -> Config {
    Config::from_toml(&format!(
        r#"
authorizer_url = "{authorizer}"
channel_api_key = "{KEY}"
channel_api_secret = "{SECRET}"
call_timeout_ms = 300
reservation_expiry_secs = 60
[[merchants]]
bioCode = "bio-1001"
accessToken = "{token}"
stores = [{{ storeId = "st-1", name = "Cinema Aarhus" }}]
terminals = [
  {{ terminalId = "T-01", storeId = "st-1", currency = "DKK", mcc = "7832" }},
  {{ terminalId = "T-02", storeId = "st-1", currency = "DKK", posId = "pos-2" }},
]
"#
    ))
    .unwrap()
}

/// A request's status and JSON body (`null` when the body is not JSON).
async fn answer(req: awc::SendClientRequest) -> (u16, Value) {
    let mut res = req.await.unwrap();
    let body = res.body().await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

struct Client {
    http: awc::Client,
    base: String,
    token: String,
}

impl Client {
    async fn get(&self, path: &str, q: &[(&str, &str)]) -> (u16, Value) {
        let mut all: Vec<(&str, &str)> =
            vec![("bioCode", "bio-1001"), ("accessToken", &self.token)];
        all.extend_from_slice(q);
        let req = self
            .http
            .get(format!("{}/api/pos/{path}", self.base))
            .query(&all)
            .unwrap();
        answer(req.send()).await
    }

    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.append_header((*k, *v));
        }
        answer(req.send_json(&body)).await
    }

    async fn sim(&self, path: &str, body: Value) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        self.post(&format!("/sim/{path}"), body, &[("authorization", &auth)])
            .await
    }

    /// `GET /sim/{what}`: one of the simulator's own JSON views.
    async fn view(&self, what: &str) -> Value {
        let mut res = self
            .http
            .get(format!("{}/sim/{what}", self.base))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&res.body().await.unwrap()).unwrap()
    }

    async fn pending(&self) -> u64 {
        self.view("stats").await["pending_deliveries"]
            .as_u64()
            .unwrap()
    }

    async fn settle(&self) {
        for _ in 0..200 {
            if self.pending().await == 0 {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("deliveries still pending");
    }

    async fn breaks(&self) -> Value {
        self.view("breaks").await
    }

    /// Start on T-02 (which has a PoS), check in, approve: the approval's answer.
    async fn approved(&self, order: &str, amount: &str) -> (String, Value) {
        let (s, v) = self
            .get(
                "payment/start",
                &[
                    ("orderId", order),
                    ("amount", amount),
                    ("terminalId", "T-02"),
                    ("currencyCode", "DKK"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let id = v["paymentId"].as_str().unwrap().to_owned();
        let (s, v) = self
            .sim(
                "checkin",
                json!({"posId":"pos-2","user_id":"usr-1","card_id":"crd-1"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = self.sim(&format!("payments/{id}/approve"), json!({})).await;
        assert_eq!(s, 200, "{v}");
        (id, v)
    }
}

async fn setup(token: &str) -> (Sim, Client, StubRef) {
    let (auth, st) = stub().await;
    let sim = Sim::start(config(&auth, token)).await.unwrap();
    let client = Client {
        http: awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish(),
        base: sim.base.clone(),
        token: token.to_owned(),
    };
    (sim, client, st)
}

#[actix_rt::test]
async fn a_payment_from_token_to_refund_over_the_wire() {
    let (sim, mut c, st) = setup("").await;
    // S7: the token is created once.
    let (s, v) = c.get("manage/token", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["errors"], json!([]));
    c.token = v["accessToken"].as_str().unwrap().to_owned();
    let (s, v) = c.get("manage/token", &[]).await;
    assert_eq!(
        (s, v["errors"][0].as_str().unwrap()),
        (409, "S7: token exists")
    );
    // 401 for a wrong token, with the failure body.
    let bad = Client {
        http: c.http.clone(),
        base: c.base.clone(),
        token: "nope".into(),
    };
    let (s, v) = bad.get("manage/stores", &[]).await;
    assert_eq!(s, 401);
    assert_eq!(v["success"], false);
    // S8: a PoS for T-01, then its QR code.
    let (s, v) = c.get("manage/create", &[("terminalId", "T-01")]).await;
    assert_eq!(s, 200, "{v}");
    let pos = v["posId"].as_str().unwrap().to_owned();
    let (s, v) = c.get("manage/create", &[("terminalId", "T-01")]).await;
    assert_eq!(
        (s, v["errors"][0].as_str().unwrap()),
        (409, "S8: PoS exists")
    );
    let (_, v) = c.get("terminal/qrcode", &[("terminalId", "T-01")]).await;
    let url = v["qrCodeUrl"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{}/sim/qr/T-01", c.base));
    let mut res = c.http.get(url).send().await.unwrap();
    assert_eq!(
        String::from_utf8(res.body().await.unwrap().to_vec()).unwrap(),
        format!("mobilepay://checkin?posId={pos}")
    );
    // Direct flow by POST.
    let (s, v) = c
        .post(
            "/api/pos/payment/start/byPosId",
            json!({"orderId":"o-1","amount":125.5,"posId":pos,"currencyCode":"DKK","accessToken":c.token,"bioCode":"bio-1001"}),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["paymentId"].as_str().unwrap().to_owned();
    let (_, v) = c.get("payment/status", &[("paymentId", &id)]).await;
    assert_eq!(v["status"], "Initiated");
    let (s, _) = c
        .sim(
            "checkin",
            json!({"terminalId":"T-01","user_id":"usr-1","card_id":"crd-1"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = c
        .get("manage/checkInStatus/byposId", &[("posId", &pos)])
        .await;
    assert_eq!(
        (v["checkedIn"].clone(), v["userId"].clone()),
        (json!(true), json!("usr-1"))
    );
    let (s, v) = c.sim(&format!("payments/{id}/approve"), json!({})).await;
    assert_eq!((s, v["status"].as_str().unwrap()), (200, "Reserved"));
    assert_eq!(st.lock().unwrap().holds[&id].0, "125.50");
    let (s, v) = c
        .get("payment/capture", &[("paymentId", &id), ("amount", "100")])
        .await;
    assert_eq!(s, 200, "{v}");
    c.settle().await;
    assert_eq!(st.lock().unwrap().holds[&id].2.as_deref(), Some("100.00"));
    let (_, v) = c.get("payment/details", &[("paymentId", &id)]).await;
    assert_eq!(v["capturedAmount"], "100.00");
    assert_eq!(v["status"], "Captured");
    let (_, v) = c
        .get(
            "payment/id/retrieve/bystate",
            &[("orderId", "o-1"), ("state", "Captured")],
        )
        .await;
    assert_eq!(v["paymentId"], id.as_str());
    // A refund, by POST, captured.
    let (s, v) = c
        .post(
            "/api/pos/refund/create",
            json!({"paymentId":id,"amount":"30.00","currencyCode":"DKK","refundOrderId":"r-1","accessToken":c.token,"bioCode":"bio-1001"}),
            &[("X-MobilePay-Idempotency-Key", "rk-1")],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let rid = v["refundId"].as_str().unwrap().to_owned();
    let (s, _) = c.get("refund/capture", &[("refundId", &rid)]).await;
    assert_eq!(s, 200);
    c.settle().await;
    assert_eq!(
        st.lock().unwrap().refunds,
        vec![(rid.clone(), "30.00".to_owned())]
    );
    let (_, v) = c.get("refunds", &[("paymentId", &id)]).await;
    assert_eq!(v["refundIds"], json!([rid]));
    // Every call carried its own stable key; nothing was refused.
    {
        let s = st.lock().unwrap();
        assert_eq!(s.bad_signatures, 0);
        let keys: Vec<&str> = s.seen.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                format!("mp-res-{id}"),
                format!("mp-cap-{id}"),
                format!("mp-ref-{rid}")
            ]
        );
    }
    assert_eq!(c.breaks().await["count"], 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn wire_rules_for_bad_input() {
    let (sim, c, _st) = setup("tok").await;
    let start = [
        ("orderId", "o-1"),
        ("terminalId", "T-02"),
        ("currencyCode", "DKK"),
    ];
    let mut q = start.to_vec();
    q.push(("amount", "1.234"));
    let (s, v) = c.get("payment/start", &q).await;
    assert_eq!(
        (s, v["errors"][0].as_str().unwrap().starts_with("1102: ")),
        (400, true)
    );
    // S1: 1301 while Initiated.
    let mut q = start.to_vec();
    q.push(("amount", "10"));
    assert_eq!(c.get("payment/start", &q).await.0, 200);
    let mut q2 = q.clone();
    q2[0] = ("orderId", "o-2");
    let (s, v) = c.get("payment/start", &q2).await;
    assert_eq!((s, &v["errors"][0].as_str().unwrap()[..5]), (409, "1301:"));
    // V15 header: invalid (too long) and duplicated.
    let body = json!({"orderId":"o-3","amount":"1","terminalId":"T-02","currencyCode":"DKK","accessToken":"tok","bioCode":"bio-1001"});
    let long = "x".repeat(37);
    let (s, v) = c
        .post(
            "/api/pos/payment/start",
            body.clone(),
            &[("X-MobilePay-Idempotency-Key", &long)],
        )
        .await;
    assert_eq!((s, &v["errors"][0].as_str().unwrap()[..4]), (400, "1162"));
    let (s, v) = c
        .post(
            "/api/pos/payment/start",
            body.clone(),
            &[
                ("X-MobilePay-Idempotency-Key", "a"),
                ("X-MobilePay-Idempotency-Key", "b"),
            ],
        )
        .await;
    assert_eq!((s, &v["errors"][0].as_str().unwrap()[..4]), (400, "1163"));
    // POST body that is not an object; unknown route; method not served.
    assert_eq!(
        c.post("/api/pos/payment/start", json!([1]), &[]).await.0,
        400
    );
    assert_eq!(c.get("payment/nothing", &[]).await.0, 404);
    assert_eq!(c.post("/api/pos/payment/capture", body, &[]).await.0, 404);
    // /sim needs the merchant's token.
    let (s, _) = c
        .post("/sim/checkin", json!({"posId":"pos-2","user_id":"u"}), &[])
        .await;
    assert_eq!(s, 401);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_non_loopback_address_is_refused() {
    let mut cfg = config("http://127.0.0.1:1", "t");
    cfg.listen = "0.0.0.0:0".into();
    let e = Sim::start(cfg).await.err().unwrap().to_string();
    assert!(e.contains("loopback"), "{e}");
}

#[actix_rt::test]
async fn approve_without_answer_retries_under_one_key_then_cancels() {
    let (sim, c, st) = setup("tok").await;
    st.lock().unwrap().reserve_delay_ms = 1_000;
    let (id, v) = c.approved("o-1", "50").await;
    assert_eq!(v["status"], "CancelledByMobilePay");
    assert!(
        v["reason"].as_str().unwrap().starts_with("no_answer"),
        "{v}"
    );
    st.lock().unwrap().reserve_delay_ms = 0;
    c.settle().await;
    {
        let s = st.lock().unwrap();
        let reserves: Vec<&String> = s
            .seen
            .iter()
            .filter(|(p, _)| p == "/channels/v1/reservations")
            .map(|(_, k)| k)
            .collect();
        assert_eq!(reserves.len(), 3, "the first attempt and 2 retries");
        assert!(reserves.iter().all(|k| **k == format!("mp-res-{id}")));
        // The hold committed unseen is cancelled.
        assert!(s.seen.contains(&(
            format!("/channels/v1/reservations/{id}/cancel"),
            format!("mp-can-{id}")
        )));
    }
    // Let the late reserves land, then check the hold is released (or never left).
    actix_rt::time::sleep(Duration::from_millis(1_200)).await;
    c.settle().await;
    sim.stop().await;
}

#[actix_rt::test]
async fn a_rejection_cancels_by_mobilepay_with_no_cancel_sent() {
    let (sim, c, st) = setup("tok").await;
    st.lock().unwrap().reject = true;
    let (id, v) = c.approved("o-1", "50").await;
    assert_eq!(v["status"], "CancelledByMobilePay");
    assert_eq!(v["reason"], "INSUFFICIENT_FUNDS");
    c.settle().await;
    assert_eq!(st.lock().unwrap().seen.len(), 1);
    let (_, v) = c.get("payment/status", &[("paymentId", &id)]).await;
    assert_eq!(v["status"], "CancelledByMobilePay");
    sim.stop().await;
}

#[actix_rt::test]
async fn unsigned_answers_are_no_answers() {
    let (sim, c, st) = setup("tok").await;
    st.lock().unwrap().unsigned = true;
    let (_, v) = c.approved("o-1", "50").await;
    assert_eq!(v["status"], "CancelledByMobilePay");
    assert!(
        v["reason"].as_str().unwrap().contains("not verified"),
        "{v}"
    );
    st.lock().unwrap().unsigned = false;
    c.settle().await;
    sim.stop().await;
}

#[actix_rt::test]
async fn capture_is_answered_at_once_and_delivered_until_2xx() {
    let (sim, c, st) = setup("tok").await;
    let (id, v) = c.approved("o-1", "80").await;
    assert_eq!(v["status"], "Reserved");
    st.lock().unwrap().capture_503 = 5;
    let (s, v) = c.get("payment/capture", &[("paymentId", &id)]).await;
    assert_eq!((s, v["status"].as_str().unwrap()), (200, "Captured"));
    c.settle().await;
    {
        let s = st.lock().unwrap();
        assert_eq!(s.holds[&id].2.as_deref(), Some("80.00"));
        let captures: Vec<&String> = s
            .seen
            .iter()
            .filter(|(p, _)| p.ends_with("/capture"))
            .map(|(_, k)| k)
            .collect();
        assert_eq!(captures.len(), 6);
        assert!(captures.iter().all(|k| **k == format!("mp-cap-{id}")));
    }
    assert_eq!(c.breaks().await["count"], 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_409_on_capture_is_a_break_listed_and_counted() {
    let (sim, c, st) = setup("tok").await;
    let (id, _) = c.approved("o-1", "80").await;
    st.lock().unwrap().capture_409 = true;
    assert_eq!(c.get("payment/capture", &[("paymentId", &id)]).await.0, 200);
    c.settle().await;
    let b = c.breaks().await;
    assert_eq!(b["count"], 1);
    assert_eq!(b["breaks"][0]["call"], "capture");
    assert_eq!(b["breaks"][0]["payment_id"], id.as_str());
    assert_eq!(b["breaks"][0]["http_status"], 409);
    assert_eq!(b["breaks"][0]["code"], "EXPIRED");
    sim.stop().await;
}

#[actix_rt::test]
async fn cancel_in_reserved_is_sent_and_repeats_send_nothing() {
    let (sim, c, st) = setup("tok").await;
    let (id, _) = c.approved("o-1", "80").await;
    assert_eq!(c.get("payment/cancel", &[("paymentId", &id)]).await.0, 200);
    assert_eq!(c.get("payment/cancel", &[("paymentId", &id)]).await.0, 200);
    c.settle().await;
    {
        let s = st.lock().unwrap();
        assert_eq!(s.holds[&id].1, "CANCELLED");
        assert_eq!(
            s.seen
                .iter()
                .filter(|(p, _)| p.ends_with("/cancel"))
                .count(),
            1
        );
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn a_refund_waits_for_its_payments_capture() {
    let (sim, c, st) = setup("tok").await;
    let (id, _) = c.approved("o-1", "80").await;
    st.lock().unwrap().capture_503 = 3;
    assert_eq!(c.get("payment/capture", &[("paymentId", &id)]).await.0, 200);
    let (s, v) = c
        .get(
            "refund/create",
            &[
                ("paymentId", &id),
                ("amount", "10"),
                ("currencyCode", "DKK"),
                ("refundOrderId", "r-1"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let rid = v["refundId"].as_str().unwrap().to_owned();
    assert_eq!(c.get("refund/capture", &[("refundId", &rid)]).await.0, 200);
    c.settle().await;
    {
        let s = st.lock().unwrap();
        let paths: Vec<&str> = s.seen.iter().map(|(p, _)| p.as_str()).collect();
        let last_capture = paths.iter().rposition(|p| p.ends_with("/capture")).unwrap();
        let refund = paths.iter().position(|p| p.ends_with("/refunds")).unwrap();
        assert!(refund > last_capture, "{paths:?}");
        assert_eq!(s.refunds, vec![(rid.clone(), "10.00".to_owned())]);
    }
    assert_eq!(c.breaks().await["count"], 0);
    sim.stop().await;
}
