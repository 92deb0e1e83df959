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

/// What a [`Receiver`] is told and was sent.
pub struct State {
    secret: String,
    challenge: Challenge,
    /// Attempts of each event answered 500 before the first 200.
    fail_first: usize,
    /// Every n-th delivery (counting all) answered 500; 0: none.
    fail_every: usize,
    posts: Vec<Post>,
}

/// A test server on a free loopback port (one worker) whose every request goes to one
/// handler sharing a state `S`; its base URL is `base` (`http://127.0.0.1:<port>`, or
/// `https://` when started with a certificate).
pub struct Loopback<S> {
    pub base: String,
    state: Arc<Mutex<S>>,
    handle: actix_web::dev::ServerHandle,
}

/// What a [`Loopback`] handler is given: the request, its body and the shared state.
pub type Shared<S> = web::Data<Arc<Mutex<S>>>;

impl<S: Send + 'static> Loopback<S> {
    /// Binds a free loopback port and serves every request with `handler`.
    pub fn start<H>(state: S, handler: H) -> Loopback<S>
    where
        H: actix_web::Handler<(HttpRequest, web::Bytes, Shared<S>), Output = HttpResponse> + Send,
    {
        Loopback::serve(state, handler, None)
    }

    /// [`Loopback::start`] over https with `cert`.
    pub fn start_tls<H>(state: S, handler: H, cert: &TestCert) -> Loopback<S>
    where
        H: actix_web::Handler<(HttpRequest, web::Bytes, Shared<S>), Output = HttpResponse> + Send,
    {
        Loopback::serve(state, handler, Some(cert.server.clone()))
    }

    fn serve<H>(state: S, handler: H, tls: Option<rustls::ServerConfig>) -> Loopback<S>
    where
        H: actix_web::Handler<(HttpRequest, web::Bytes, Shared<S>), Output = HttpResponse> + Send,
    {
        let state = Arc::new(Mutex::new(state));
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::route().to(handler.clone()))
        })
        .workers(1)
        .disable_signals();
        let (server, scheme) = match tls {
            Some(config) => (server.bind_rustls_0_23("127.0.0.1:0", config), "https"),
            None => (server.bind("127.0.0.1:0"), "http"),
        };
        let server = server.expect("bind");
        let base = format!("{scheme}://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Loopback {
            base,
            state,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The shared state, locked.
    pub fn state(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().expect("lock")
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: the server's configuration, the
/// PEM files of the certificate (what `webhooks.ca_file` names to trust it) and of its key,
/// and the certificate itself (what a test client trusts).
pub struct TestCert {
    pub pem_path: String,
    pub key_path: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub server: rustls::ServerConfig,
}

impl TestCert {
    /// A new certificate, its PEM files under the temporary directory.
    pub fn new() -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("certificate");
        let dir = std::env::temp_dir().join(format!("e2e-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let name = crate::uid("cert");
        let pem_path = dir.join(format!("{name}.pem"));
        std::fs::write(&pem_path, ck.cert.pem()).expect("certificate file");
        let key_path = dir.join(format!("{name}.key.pem"));
        std::fs::write(&key_path, ck.key_pair.serialize_pem()).expect("key file");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("server certificate");
        TestCert {
            pem_path: pem_path.display().to_string(),
            key_path: key_path.display().to_string(),
            der: ck.cert.der().clone(),
            server,
        }
    }

    /// One certificate for the whole test process: the one a settings tweak can name.
    pub fn shared() -> &'static TestCert {
        static CERT: std::sync::OnceLock<TestCert> = std::sync::OnceLock::new();
        CERT.get_or_init(TestCert::new)
    }
}

impl Default for TestCert {
    fn default() -> TestCert {
        TestCert::new()
    }
}

/// Header `name` of `req` as text, empty when absent or not text.
pub fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// An empty answer with `status`.
pub fn status(status: u16) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).finish()
}

/// Calls `check` every `every` until it gives `Ok`; panics with its last `Err` after
/// `within`.
pub async fn poll<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let until = Instant::now() + within;
    loop {
        match check() {
            Ok(done) => return done,
            Err(why) => assert!(Instant::now() < until, "{why} within {within:?}"),
        }
        actix_rt::time::sleep(every).await;
    }
}

/// A running receiver; its base URL is `base` (paths are free: `/hook`, `/moved`...).
pub struct Receiver(Loopback<State>);

impl std::ops::Deref for Receiver {
    type Target = Loopback<State>;
    fn deref(&self) -> &Loopback<State> {
        &self.0
    }
}

impl State {
    fn new() -> State {
        State {
            secret: String::new(),
            challenge: Challenge::Right,
            fail_first: 0,
            fail_every: 0,
            posts: Vec::new(),
        }
    }
}

async fn challenge(req: HttpRequest, state: Shared<State>) -> HttpResponse {
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
        Challenge::Status(s) => return status(s),
        Challenge::Redirect => {
            return HttpResponse::Found()
                .insert_header(("location", format!("/elsewhere?{}", req.query_string())))
                .finish();
        }
        Challenge::Late(d) => actix_rt::time::sleep(d).await,
    }
    HttpResponse::Ok().json(serde_json::json!({ "encrypted_challenge": right }))
}

async fn delivery(req: HttpRequest, body: web::Bytes, state: Shared<State>) -> HttpResponse {
    let h = |n: &str| header(&req, n);
    let event_id = h("x-event-id");
    let mut s = state.lock().expect("lock");
    let signature_ok = protocol::webhook::verify_x_signature_with_body(
        &s.secret,
        &h("x-signature"),
        (&event_id, &h("x-request-id")),
        &body,
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
    self::status(status)
}

async fn route(req: HttpRequest, body: web::Bytes, state: Shared<State>) -> HttpResponse {
    if req.method() == actix_web::http::Method::GET {
        challenge(req, state).await
    } else {
        delivery(req, body, state).await
    }
}

impl Receiver {
    /// Starts a receiver that knows no secret yet and answers challenges right.
    pub fn start() -> Receiver {
        Receiver(Loopback::start(State::new(), route))
    }

    /// [`Receiver::start`] over https with `cert`.
    pub fn start_tls(cert: &TestCert) -> Receiver {
        Receiver(Loopback::start_tls(State::new(), route, cert))
    }

    pub fn set_secret(&self, secret: &str) {
        self.state().secret = secret.to_owned();
    }

    pub fn set_challenge(&self, c: Challenge) {
        self.state().challenge = c;
    }

    pub fn fail_first(&self, n: usize) {
        self.state().fail_first = n;
    }

    /// Answers every `n`-th delivery (of all, whatever its event) 500; 0: none.
    pub fn fail_every(&self, n: usize) {
        self.state().fail_every = n;
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state().posts.clone()
    }

    /// Event ids answered 200.
    pub fn acknowledged(&self) -> BTreeSet<String> {
        self.state()
            .posts
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| p.event_id.clone())
            .collect()
    }

    /// Waits until `ids` are all acknowledged (panics after `within`).
    pub async fn wait_for(&self, ids: &BTreeSet<String>, within: Duration) {
        poll(within, Duration::from_millis(50), || {
            let acked = self.acknowledged();
            match ids.difference(&acked).collect::<Vec<_>>() {
                missing if missing.is_empty() => Ok(()),
                missing => Err(format!("not acknowledged: {missing:?}")),
            }
        })
        .await
    }
}
