//! A webhook subscriber on loopback for the event webhook tests: it answers the URL
//! challenge as told (right, wrong, an error status, a redirect, too late), verifies every
//! delivery's `x-signature` with the subscription's secret, fails the first attempts of
//! each event when told to, and records everything it was sent.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers `GET ?challengeCode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Right,
    /// The HMAC of another code.
    WrongHmac,
    /// This status and no body.
    Status(u16),
    /// A 302 to a URL that would answer correctly.
    Redirect,
    /// The right answer, after this long.
    Late(Duration),
}

/// One POST received.
#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    pub event_id: String,
    pub body: Vec<u8>,
    pub signature_ok: bool,
    /// The status answered.
    pub status: u16,
}

struct State {
    secret: String,
    challenge: Challenge,
    /// Attempts of each event answered 500 before the first 200.
    fail_first: usize,
    /// Every n-th delivery (counting all) answered 500; 0: none.
    fail_every: usize,
    posts: Vec<Post>,
}

/// A running receiver; its base URL is `base` (paths are free: `/hook`, `/moved`...).
pub struct Receiver {
    pub base: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

async fn challenge(req: HttpRequest, state: web::Data<Arc<Mutex<State>>>) -> HttpResponse {
    let code = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("challengeCode").cloned())
        .unwrap_or_default();
    let (secret, mode) = {
        let s = state.lock().expect("lock");
        (s.secret.clone(), s.challenge)
    };
    let right = protocol::webhook::encrypted_challenge(&secret, &code);
    match mode {
        Challenge::Right => {}
        Challenge::WrongHmac => {
            let wrong = protocol::webhook::encrypted_challenge(&secret, "another code");
            return HttpResponse::Ok().json(serde_json::json!({ "encrypted_challenge": wrong }));
        }
        Challenge::Status(s) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"))
                .finish();
        }
        Challenge::Redirect => {
            return HttpResponse::Found()
                .insert_header(("location", format!("/elsewhere?{}", req.query_string())))
                .finish();
        }
        Challenge::Late(d) => actix_rt::time::sleep(d).await,
    }
    HttpResponse::Ok().json(serde_json::json!({ "encrypted_challenge": right }))
}

async fn delivery(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let event_id = h("x-event-id");
    let mut s = state.lock().expect("lock");
    let signature_ok = protocol::webhook::verify_x_signature(
        &s.secret,
        &h("x-signature"),
        &event_id,
        &h("x-request-id"),
        store::now_ms(),
        300_000,
    );
    let before = s.posts.iter().filter(|p| p.event_id == event_id).count();
    let status = if !signature_ok {
        401
    } else if before < s.fail_first
        || (s.fail_every > 0 && (s.posts.len() + 1).is_multiple_of(s.fail_every))
    {
        500
    } else {
        200
    };
    s.posts.push(Post {
        path: req.path().to_owned(),
        event_id,
        body: body.to_vec(),
        signature_ok,
        status,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).finish()
}

impl Receiver {
    /// Starts a receiver that knows no secret yet and answers challenges right.
    pub fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State {
            secret: String::new(),
            challenge: Challenge::Right,
            fail_first: 0,
            fail_every: 0,
            posts: Vec::new(),
        }));
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::route().to(
                |req: HttpRequest, body: web::Bytes, s: web::Data<Arc<Mutex<State>>>| async move {
                    if req.method() == actix_web::http::Method::GET {
                        challenge(req, s).await
                    } else {
                        delivery(req, body, s).await
                    }
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver {
            base,
            state,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set_secret(&self, secret: &str) {
        self.state.lock().expect("lock").secret = secret.to_owned();
    }

    pub fn set_challenge(&self, c: Challenge) {
        self.state.lock().expect("lock").challenge = c;
    }

    pub fn fail_first(&self, n: usize) {
        self.state.lock().expect("lock").fail_first = n;
    }

    /// Answers every `n`-th delivery (of all, whatever its event) 500; 0: none.
    pub fn fail_every(&self, n: usize) {
        self.state.lock().expect("lock").fail_every = n;
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().expect("lock").posts.clone()
    }

    /// Event ids answered 200.
    pub fn acknowledged(&self) -> BTreeSet<String> {
        let s = self.state.lock().expect("lock");
        s.posts
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| p.event_id.clone())
            .collect()
    }

    /// Waits until `ids` are all acknowledged (panics after `within`).
    pub async fn wait_for(&self, ids: &BTreeSet<String>, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let acked = self.acknowledged();
            if ids.is_subset(&acked) {
                return;
            }
            assert!(
                Instant::now() < until,
                "not acknowledged within {within:?}: {:?}",
                ids.difference(&acked).collect::<Vec<_>>()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
