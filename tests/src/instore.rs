//! A scripted InStore side for the scenarios: the tenant of the page's section 7 (its key,
//! its allow-list plus a loopback receiver), envelopes signed as `JSON.stringify` signs
//! them, and a callback receiver on loopback that fails the first attempts of each request
//! when told to and records every delivery with its headers.

use crate::receiver::{self, Loopback, Shared, header, poll};
use crate::{Backend, Resp, TestApp};
use actix_web::{HttpRequest, HttpResponse, web};
use authorizer::Settings;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The page's tenant and key (section 7).
pub const TENANT: &str = "b312-c121-3f45-ab34";
pub const KEY: &str = "instore-demo-verification-key-01";

/// The tenant of section 7, allowed to call back `https://instore.example/` and
/// `receiver_base` (a loopback receiver).
pub fn tenant_settings(s: &mut Settings, receiver_base: &str) {
    let config: instore::TenantConfig = serde_json::from_value(json!({
        "tenant_id": TENANT,
        "verification_key": KEY,
        "callback_url_prefixes": ["https://instore.example/", format!("{receiver_base}/")],
    }))
    .expect("tenant config");
    s.instore.tenants.push(config);
    // Callbacks that fail are retried after 1, 2, 4 s: a short poll keeps the test close to
    // that schedule.
    s.webhooks.poll_interval_ms = 50;
}

/// HMAC-SHA256 of `bytes` with the tenant's key, lowercase hex.
/// A Redeem of `minor` cents (USD) on card `number`, with its own session.
pub fn redeem(number: &str, request_id: &str, minor: i64) -> Value {
    serde_json::json!({
        "requestId": request_id, "locationId": "LondonStore", "workstationId": "POS-03",
        "action": "Redeem", "number": number,
        "amount": {"amount": minor, "precision": 2, "currency": "USD"},
        "session_id": format!("session-{request_id}"), "reference": "order",
    })
}

pub fn sign(bytes: &[u8]) -> String {
    instore::signature::sign(KEY.as_bytes(), bytes)
}

/// An envelope as InStore builds it with `JSON.stringify`: the payload's compact bytes
/// are signed and appear verbatim in the body.
pub fn envelope(action_path: &str, payload: &Value, callback_url: &str) -> (Vec<u8>, String) {
    let (body, signature) = instore_sim::sim::envelope(
        KEY.as_bytes(),
        TENANT,
        &format!("https://issuer.example/instore/{action_path}"),
        &payload.to_string(),
        payload["requestId"].as_str().expect("requestId"),
        callback_url,
    );
    (body.into_bytes(), signature)
}

impl TestApp {
    /// POSTs `body` to `{base}/instore/{path}` with `X-Signature` (when given) and a
    /// correlation id.
    pub async fn instore_post(&self, path: &str, body: &[u8], signature: Option<&str>) -> Resp {
        self.instore_send(path, body, signature, Some("corr-test"), &[])
            .await
    }

    /// POSTs `body` to `{base}/instore/{path}` with `X-Signature` and the correlation id
    /// when given, and the `extra` headers.
    pub async fn instore_send(
        &self,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
        correlation_id: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .client
            .post(format!("{}/instore/{path}", self.base))
            .insert_header(("content-type", "application/json"));
        for (name, value) in correlation_id
            .map(|c| ("x-correlation-id", c))
            .into_iter()
            .chain(signature.map(|s| ("X-Signature", s)))
            .chain(extra.iter().copied())
        {
            req = req.insert_header((name, value));
        }
        self.send_request(req, body.to_vec()).await
    }

    /// A bare (synchronous) request of the section 7 tenant: `body` compact, signed as
    /// `JSON.stringify` signs it, named by the `tenant_id` header.
    pub async fn instore_bare(
        &self,
        path: &str,
        body: &Value,
        correlation_id: Option<&str>,
    ) -> Resp {
        let bytes = body.to_string().into_bytes();
        let signature = sign(&bytes);
        self.instore_send(
            path,
            &bytes,
            Some(&signature),
            correlation_id,
            &[("tenant_id", TENANT)],
        )
        .await
    }

    /// Signs `payload` as an envelope to `action_path` and sends it.
    pub async fn instore_envelope(
        &self,
        action_path: &str,
        payload: &Value,
        callback_url: &str,
    ) -> Resp {
        let (body, signature) = envelope(action_path, payload, callback_url);
        self.instore_post(action_path, &body, Some(&signature))
            .await
    }

    /// `instore_envelope`, acknowledged: asserts the 200 and gives the answer.
    pub async fn instore_acknowledged(
        &self,
        action_path: &str,
        payload: &Value,
        callback_url: &str,
    ) -> Resp {
        let r = self
            .instore_envelope(action_path, payload, callback_url)
            .await;
        assert_eq!(r.status, 200, "{action_path}: {}", r.text());
        r
    }

    /// A channel reservation of `amount` (decimal) on `user`'s USD account, approved.
    pub async fn usd_hold(&self, user: &str, amount: &str) {
        let hold = json!({
            "reservation_id": crate::uid("res"), "user_id": user, "amount": amount, "currency": "USD",
        });
        let r = self
            .channel(
                "POST",
                "/channels/v1/reservations",
                hold.to_string().as_bytes(),
                Some(&crate::uid("ck")),
            )
            .await;
        assert_eq!(r.json()["status"], "APPROVED", "{}", r.text());
    }

    /// GETs `{base}/instore/{path}?{query}` signed over the raw query.
    pub async fn instore_get(&self, path: &str, query: &str, signature: &str) -> Resp {
        let req = self
            .client
            .get(format!("{}/instore/{path}?{query}", self.base))
            .insert_header(("X-Signature", signature));
        self.send_request(req, Vec::new()).await
    }

    /// The callback bodies the outbox holds for requests of the section 7 tenant, by
    /// `requestId`.
    pub async fn instore_callbacks(&self) -> HashMap<String, Vec<u8>> {
        self.store
            .deliveries(None, None, 1000)
            .await
            .expect("outbox")
            .into_iter()
            .filter(|d| d.event_type == store::instore::CALLBACK_EVENT_TYPE)
            .map(|d| {
                let id = d
                    .event_id
                    .strip_prefix(&format!("instore:{TENANT}:"))
                    .unwrap_or(&d.event_id)
                    .to_owned();
                (id, d.body)
            })
            .collect()
    }

    /// The callback of `request_id`, as JSON.
    pub async fn instore_callback(&self, request_id: &str) -> Value {
        let all = self.instore_callbacks().await;
        let body = all
            .get(request_id)
            .unwrap_or_else(|| panic!("no callback for {request_id}"));
        serde_json::from_slice(body).expect("callback JSON")
    }
}

/// One callback received.
#[derive(Debug, Clone)]
pub struct Callback {
    pub path: String,
    pub body: Vec<u8>,
    pub signature: String,
    pub correlation_id: String,
    pub status: u16,
    pub at: Instant,
}

/// What a [`CallbackReceiver`] is told and was sent.
pub struct ReceiverState {
    fail_first: usize,
    posts: Vec<Callback>,
}

/// A callback receiver on loopback: `base` is `http://127.0.0.1:<port>`.
pub struct CallbackReceiver(Loopback<ReceiverState>);

impl std::ops::Deref for CallbackReceiver {
    type Target = Loopback<ReceiverState>;
    fn deref(&self) -> &Loopback<ReceiverState> {
        &self.0
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: Shared<ReceiverState>) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST {
        return receiver::status(405);
    }
    let mut s = state.lock().expect("lock");
    let path = req.path().to_owned();
    let before = s.posts.iter().filter(|p| p.path == path).count();
    let status = if before < s.fail_first { 500 } else { 200 };
    s.posts.push(Callback {
        path,
        body: body.to_vec(),
        signature: header(&req, "x-signature"),
        correlation_id: header(&req, "x-correlation-id"),
        status,
        at: Instant::now(),
    });
    receiver::status(status)
}

impl CallbackReceiver {
    pub fn start() -> CallbackReceiver {
        let state = ReceiverState {
            fail_first: 0,
            posts: Vec::new(),
        };
        CallbackReceiver(Loopback::start(state, receive))
    }

    /// Answer 500 to the first `n` attempts at each path.
    pub fn fail_first(&self, n: usize) {
        self.state().fail_first = n;
    }

    pub fn posts(&self, path: &str) -> Vec<Callback> {
        self.state()
            .posts
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` received `n` posts (panics after `within`).
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Callback> {
        poll(within, Duration::from_millis(25), || {
            let posts = self.posts(path);
            match posts.len() {
                got if got >= n => Ok(posts),
                got => Err(format!("{path}: {got} of {n} callbacks")),
            }
        })
        .await
    }
}

/// Runs `scenario` on `backend` with a callback receiver and the section 7 tenant (which
/// `tweak` may then change), then audits the ledger (the backend matrix of [`crate::run_scenario`]).
pub async fn run_instore<F, Fut>(backend: Backend, tweak: fn(&mut Settings), scenario: F)
where
    F: FnOnce(TestApp, CallbackReceiver) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let receiver = CallbackReceiver::start();
    let base = receiver.base.clone();
    crate::run_scenario(
        backend,
        false,
        move |s| {
            tenant_settings(s, &base);
            tweak(s);
        },
        move |app| scenario(app, receiver),
    )
    .await;
}

/// `instore_scenarios!(a, b)` runs `async fn a(app: TestApp, rx: CallbackReceiver)` on
/// Postgres and on the embedded store; `instore_scenarios!(settings = f; a)` changes the
/// default settings with `fn f(&mut Settings)` first.
#[macro_export]
macro_rules! instore_scenarios {
    (settings = $tweak:path; $($name:ident),* $(,)?) => {
        $crate::instore_scenarios!(@module postgres, Postgres, $tweak; $($name),*);
        $crate::instore_scenarios!(@module sqlite, Sqlite, $tweak; $($name),*);
    };
    (@module $module:ident, $backend:ident, $tweak:path; $($name:ident),*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_rt::test]
                async fn $name() {
                    $crate::instore::run_instore($crate::Backend::$backend, $tweak, super::$name)
                        .await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::instore_scenarios!(settings = $crate::default_settings; $($name),*);
    };
}
