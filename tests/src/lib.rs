//! Test harness: a real authorizer on a free port, on a fresh database of either
//! backend, driven over HTTP with requests signed exactly as the processor signs them.

use authorizer::Settings;
use authorizer::app::Application;
use authorizer::config::Secret;
use authorizer::credentials::Credentials;
use processor_client::{Failure, Method, Signed};
use protocol::signature::{self, headers};
use protocol::{ApiSecret, KeyRing};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use store::Store;

pub mod cutter;
pub mod instore;
pub mod node;
pub mod receiver;
pub mod recon;
pub use node::{Node, NodeOptions, count_in, kill9_once_committed};

/// The processor's published demo key pair (protocol page, section 10).
pub const API_KEY: &str = "Lp0g+cwb19eEfTn1YIOydEnqPcZOg8YxHctnMe+1cQA=";
pub const API_SECRET: &str = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The InStore PIN and CVC hash key of every test instance.
pub const INSTORE_HASH_KEY: &str = "test-instore-hash-key-0123456789";
/// The two-phase channel every test app knows (`[[channels.keys]]`).
pub const CHANNEL_NAME: &str = "mobilepay-test";
pub const CHANNEL_KEY: &str = "chan-key-mobilepay-test";
pub const CHANNEL_SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Writes each scenario's test once per backend: `both_backends!(purchase, refund);`
/// expects `async fn purchase(app: TestApp)` in the same module. After every scenario the
/// ledger's invariants are audited on its database.
///
/// `both_backends!(settings = patient; race)` starts each server with the default settings
/// changed by `fn patient(s: &mut Settings)` first (the backend's own setting, batches of
/// one request for `postgres_single`, applies after it).
#[macro_export]
macro_rules! both_backends {
    (settings = $tweak:path; $($name:ident),* $(,)?) => {
        $crate::both_backends!(@module postgres, Postgres, false, $tweak; $($name),*);
        // Postgres with one transaction per request (batches of one).
        $crate::both_backends!(@module postgres_single, Postgres, true, $tweak; $($name),*);
        $crate::both_backends!(@module sqlite, Sqlite, false, $tweak; $($name),*);
    };
    (@module $module:ident, $backend:ident, $single:expr, $tweak:path; $($name:ident),*) => {
        mod $module {
            // The tweak is named where the macro is called.
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_rt::test]
                async fn $name() {
                    $crate::run_scenario($crate::Backend::$backend, $single, $tweak, super::$name)
                        .await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::both_backends!(settings = $crate::default_settings; $($name),*);
    };
}

/// Two tests running `async fn $run(db: String)` against a real authorizer process: on a
/// fresh Postgres database, and on the embedded store (`db` empty: the process opens the
/// SQLite file in its data directory).
#[macro_export]
macro_rules! on_both_stores {
    ($postgres:ident, $sqlite:ident, $run:path $(,)?) => {
        #[actix_rt::test]
        async fn $postgres() {
            $run($crate::fresh_pg_database().await).await;
        }

        #[actix_rt::test]
        async fn $sqlite() {
            $run(String::new()).await;
        }
    };
}

/// Two tests running `async fn $run(backend: Backend)` once on each backend, outside the
/// scenario harness (no audit after it): for the scenarios that start their own servers or
/// break the ledger on purpose.
#[macro_export]
macro_rules! on_each_backend {
    ($postgres:ident, $sqlite:ident, $run:path $(,)?) => {
        #[actix_rt::test]
        async fn $postgres() {
            $run($crate::Backend::Postgres).await;
        }

        #[actix_rt::test]
        async fn $sqlite() {
            $run($crate::Backend::Sqlite).await;
        }
    };
}

/// One test of `both_backends!`: a server on `backend` with the default settings changed by
/// `tweak` (then batches of one request when `single`), the scenario, and the ledger's audit.
pub async fn run_scenario<F: std::future::Future<Output = ()>>(
    backend: Backend,
    single: bool,
    tweak: impl FnOnce(&mut Settings),
    scenario: impl FnOnce(TestApp) -> F,
) {
    let app = TestApp::spawn_with(backend, |s| {
        tweak(s);
        if single {
            // One transaction per request, as many at once as the pool has connections.
            s.processor.commit_batch_size_max = 1;
            s.processor.commit_batch_overlap_ms = 0;
            s.processor.commit_batches_in_flight_max = s.database.pool_connections_max as usize;
        }
    })
    .await;
    let store = app.store.clone();
    scenario(app).await;
    assert_clean(&store).await;
}

/// Room for 200 channel requests at once on a small machine: the deadline is generous, and
/// in-flight markers outlive the slowest answer (the scenarios send an undecided answer again,
/// as a channel would).
pub fn crowd_settings(s: &mut Settings) {
    s.processor.deadline_ms = 10_000;
    s.processor.answer_ms_max = 10_000;
    s.instore.ack_deadline_ms = 10_000;
    s.redis.in_flight_stale_ms = 20_000;
    s.database.pool_acquire_ms_max = 5_000;
    s.database.statement_ms_max = 5_000;
    s.database.lock_wait_ms_max = 5_000;
}

/// Asserts the ledger invariants hold on the database a stopped or killed server left: the
/// Postgres at `url`, else the SQLite file at `sqlite_path`.
pub async fn assert_database_clean(url: Option<String>, sqlite_path: PathBuf) {
    let store = Store::connect(&store::StoreConfig {
        url,
        sqlite_path,
        pool_connections_max: 2,
        pool_acquire_ms_max: 5_000,
        statement_ms_max: 5_000,
        lock_wait_ms_max: 5_000,
        index_probes_only: false,
        controls_time_zone: ledger::controls::TimeZone::UTC,
    })
    .await
    .expect("store");
    assert_clean(&store).await;
}

/// The settings tweak of `both_backends!` without one: the defaults as they are.
pub fn default_settings(_: &mut Settings) {}

/// Asserts the ledger invariants hold on `store`.
pub async fn assert_clean(store: &Store) -> store::AuditReport {
    let report = store.audit().await.expect("audit runs");
    assert!(
        report.violations.is_empty(),
        "audit violations: {:#?}",
        report.violations
    );
    report
}

/// Admin URL of the Postgres that tests create their databases in.
pub fn pg_admin_url() -> String {
    std::env::var("AUTHORIZER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The Redis that fleet tests share (each test uses its own key prefix), from
/// AUTHORIZER_TEST_REDIS_URL (scripts/test sets it).
pub fn redis_url() -> String {
    std::env::var("AUTHORIZER_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh, empty Postgres database; returns its URL.
pub async fn fresh_pg_database() -> String {
    let admin = pg_admin_url();
    let name = format!(
        "authz_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        store::now_ms() % 1_000_000
    );
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test Postgres at {admin} ({e}); run the suite with scripts/test"
            )
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    format!("{base}/{name}")
}

/// The elements of the JSON array `v`; panics, showing `v`, when it is not an array.
pub fn items(v: &Value) -> std::slice::Iter<'_, Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
}

/// An explanation's spending limit check: its (owner, limit, spent, passed).
pub fn spending_limit_check(explanation: &Value) -> [Value; 4] {
    let limit = items(&explanation["controls"]["checks"])
        .find(|c| c["check"] == "spending_limit")
        .cloned()
        .unwrap_or_default();
    ["owner", "limit", "spent", "passed"].map(|k| limit[k].clone())
}

/// A plain HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The body as text (invalid UTF-8 replaced), for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `error.message` of an error answer; panics when there is none.
    pub fn error_message(&self) -> String {
        let v = self.json();
        match v["error"]["message"].as_str() {
            Some(m) => m.to_owned(),
            None => panic!("no error message: {v}"),
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The calls `TestApp` and `Remote` share, over their `api` client; `$finish` turns the
/// exchange's result into a `Resp` (a panic, or status 0, on a failed connection).
macro_rules! calls_over_http {
    ($finish:ident) => {
        pub async fn admin(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
            idem: Option<&str>,
        ) -> Resp {
            $finish(admin(&self.api, method, path, body, idem).await)
        }

        pub async fn get(&self, path: &str) -> Resp {
            $finish(get(&self.api, path).await)
        }

        /// Sends `body` to a channel route signed with the test channel's key, now. `key`:
        /// the x-idempotency-key (none on a GET).
        pub async fn channel(
            &self,
            method: &str,
            path: &str,
            body: &[u8],
            key: Option<&str>,
        ) -> Resp {
            self.channel_signed_for(method, path, path, body, key).await
        }

        /// Full control over the key and time a channel request is signed with.
        #[allow(clippy::too_many_arguments)]
        pub async fn channel_signed(
            &self,
            method: &str,
            path: &str,
            body: &[u8],
            key: Option<&str>,
            api_key: &str,
            secret: &ApiSecret,
            timestamp: i64,
        ) -> Resp {
            self.channel_sent(method, (path, path), body, key, (api_key, secret, timestamp))
                .await
        }

        /// A channel request signed, with the test channel's key now, for `endpoint`, and
        /// sent to `path`.
        pub async fn channel_signed_for(
            &self,
            method: &str,
            path: &str,
            endpoint: &str,
            body: &[u8],
            key: Option<&str>,
        ) -> Resp {
            let secret = ApiSecret::from_base64(CHANNEL_SECRET).expect("channel secret");
            let signer = (CHANNEL_KEY, &secret, crate_now());
            self.channel_sent(method, (path, endpoint), body, key, signer)
                .await
        }

        /// Sends `body` to `path`, signed for `endpoint` by `(api key, secret, timestamp)`.
        async fn channel_sent(
            &self,
            method: &str,
            (path, endpoint): (&str, &str),
            body: &[u8],
            key: Option<&str>,
            (api_key, secret, timestamp): (&str, &ApiSecret, i64),
        ) -> Resp {
            let method = if method == "GET" {
                Method::GET
            } else {
                Method::POST
            };
            let signed = Signed {
                api_key,
                endpoint,
                signature: Some(processor_client::sign(secret, timestamp, endpoint, body)),
                idempotency_key: key,
            };
            let req = self.api.signed_request(method, path, signed);
            $finish(exchange(&self.api, req, body.to_vec()).await)
        }

        /// Sends `body` to `path` signed as the processor signs, now.
        pub async fn processor(&self, path: &str, body: &[u8], idempotency_key: &str) -> Resp {
            self.processor_signed(
                path,
                body,
                idempotency_key,
                crate_now(),
                path,
                API_KEY,
                self.api.secret(),
            )
            .await
        }

        /// Full control over what is signed and sent.
        #[allow(clippy::too_many_arguments)]
        pub async fn processor_signed(
            &self,
            path: &str,
            body: &[u8],
            idempotency_key: &str,
            timestamp: i64,
            signed_endpoint: &str,
            api_key: &str,
            secret: &ApiSecret,
        ) -> Resp {
            let signature = processor_client::sign(secret, timestamp, signed_endpoint, body);
            let req = self.api.processor_request(
                path,
                Signed {
                    api_key,
                    endpoint: signed_endpoint,
                    signature: Some(signature),
                    idempotency_key: Some(idempotency_key),
                },
            );
            $finish(exchange(&self.api, req, body.to_vec()).await)
        }

        /// Asserts a channel answer carries our signature (with the channel's secret).
        pub fn assert_channel_signed(&self, r: &Resp, endpoint: &str) {
            let secret = ApiSecret::from_base64(CHANNEL_SECRET).expect("channel secret");
            let ts = r.header(headers::TIMESTAMP).expect("X-Timestamp");
            let sig = r.header(headers::SIGNATURE).expect("X-Signature");
            assert_eq!(r.header(headers::ENDPOINT), Some(endpoint));
            signature::verify(&secret, ts, endpoint, &r.body, sig).expect("answer signature");
        }

        /// Opens an account and deposits `amount` (a decimal string) into it.
        pub async fn funded(&self, user: &str, currency: &str, amount: &str) {
            let path = format!("/v1/accounts/{user}/{currency}");
            let r = self.admin_until_stored("PUT", &path, None, None).await;
            assert!(
                r.status == 201 || r.status == 200,
                "open account: {} {:?}",
                r.status,
                r.json()
            );
            if amount != "0" {
                let key = format!(
                    "fund-{user}-{currency}-{}",
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                );
                let body = json!({ "amount": amount });
                let r = self
                    .admin_until_stored("POST", &format!("{path}/deposits"), Some(body), Some(&key))
                    .await;
                assert_eq!(r.status, 201, "deposit: {:?}", r.json());
            }
        }

        /// An idempotent admin call of a scenario's set-up (a `PUT`, or a `POST` under its
        /// key), sent again while it answers 503 (for up to 30 s), as an operator's client
        /// does: a server just started on a cold database may take longer than its pool and
        /// statement timeouts for its first statements, and says so with a 503.
        async fn admin_until_stored(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
            idem: Option<&str>,
        ) -> Resp {
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let r = self.admin(method, path, body.clone(), idem).await;
                if r.status != 503 || std::time::Instant::now() >= give_up {
                    return r;
                }
                actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }

        /// Opens `user`'s account in `currency` with `amount`, registers card `crd-{user}` and
        /// links stored-value `number` to it for the section 7 tenant.
        pub async fn stored_value_card(
            &self,
            user: &str,
            currency: &str,
            amount: &str,
            number: &str,
        ) {
            self.funded(user, currency, amount).await;
            let card = format!("crd-{user}");
            let r = self
                .admin(
                    "PUT",
                    &format!("/v1/cards/{card}"),
                    Some(json!({"user_id": user, "status": "ACTIVE"})),
                    None,
                )
                .await;
            assert!(r.status == 200 || r.status == 201, "card: {:?}", r.json());
            let r = self
                .admin(
                    "PUT",
                    &format!("/v1/stored-value-cards/{card}"),
                    Some(json!({
                        "number": number, "currency": currency,
                        "tenants": [crate::instore::TENANT], "type": "GiftCard",
                    })),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "link: {:?}", r.json());
        }

        /// A USD stored-value card `number` of u1 (100.00 on its account) with PIN 1234.
        pub async fn stored_value_card_with_pin(&self, number: &str) {
            self.stored_value_card("u1", "USD", "100.00", number).await;
            let r = self
                .admin_put(
                    "/v1/stored-value-cards/crd-u1",
                    json!({
                        "number": number, "currency": "USD", "pin": "1234",
                        "tenants": [crate::instore::TENANT], "type": "GiftCard",
                    }),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }

        /// An admin POST to `path`, without a body or an idempotency key.
        pub async fn admin_post(&self, path: &str) -> Resp {
            self.admin("POST", path, None, None).await
        }

        /// An admin PUT of `body` to `path`, without an idempotency key.
        pub async fn admin_put(&self, path: &str, body: Value) -> Resp {
            self.admin("PUT", path, Some(body), None).await
        }

        /// An admin GET's JSON answer, whatever its status.
        pub async fn admin_get(&self, path: &str) -> Value {
            self.admin("GET", path, None, None).await.json()
        }

        /// The account as the admin API shows it (posted, held, available...).
        pub async fn account(&self, user: &str, currency: &str) -> Value {
            let r = self
                .admin(
                    "GET",
                    &format!("/v1/accounts/{user}/{currency}"),
                    None,
                    None,
                )
                .await;
            assert_eq!(
                r.status,
                200,
                "account {user}/{currency}: {}",
                r.text()
            );
            r.json()
        }
    };
}

/// A running authorizer and what a test needs to talk to it.
pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub client: awc::Client,
    pub secret: ApiSecret,
    pub store: Store,
    pub database_url: Option<String>,
    pub data_dir: tempfile::TempDir,
    pub metrics: std::sync::Arc<authorizer::metrics::Metrics>,
    /// The shared signed client over `client`, keyed with the demo key pair.
    pub api: processor_client::Client,
    /// Requests share transactions (`commit_batch_size_max` above 1, the default).
    pub grouped_commits: bool,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts an authorizer with the default settings changed by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let database_url = match backend {
            Backend::Postgres => Some(fresh_pg_database().await),
            Backend::Sqlite => None,
        };
        Self::spawn_on(database_url, tweak).await
    }

    /// Starts an authorizer on an existing Postgres database (`None`: a fresh SQLite
    /// file): several instances on one database form a fleet.
    pub async fn spawn_on(
        database_url: Option<String>,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestApp {
        Self::try_spawn_on(database_url, tweak)
            .await
            .expect("authorizer starts")
    }

    /// [`TestApp::spawn_on`], with the reason when the authorizer refuses to start.
    pub async fn try_spawn_on(
        database_url: Option<String>,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<TestApp> {
        let backend = match database_url {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        };
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings =
            Settings::load_from(&PathBuf::from("/nonexistent"), &[]).expect("default settings");
        settings.server.listen = "127.0.0.1:0".into();
        settings.server.workers = 2;
        settings.database.url = Secret::new(database_url.clone().unwrap_or_default());
        settings.database.data_dir = data_dir.path().to_path_buf();
        settings.database.pool_connections_max = 16;
        settings.log.filter = "warn".into();
        // One key for every instance, as a fleet must have.
        settings.instore.secret_hash_key = Secret::new(INSTORE_HASH_KEY);
        settings.channels.keys.push(authorizer::config::ChannelKey {
            name: CHANNEL_NAME.into(),
            api_key: CHANNEL_KEY.into(),
            api_secret: Secret::new(CHANNEL_SECRET),
            country: None,
        });
        tweak(&mut settings);
        let grouped_commits = settings.processor.commit_batch_size_max > 1;
        let mut keys = KeyRing::new();
        let secret = ApiSecret::from_base64(API_SECRET).expect("demo secret");
        keys.insert(API_KEY, secret.clone());
        let creds = Credentials {
            keys,
            admin_token: Secret::new(ADMIN_TOKEN),
            notes: vec![],
            api_key: API_KEY.into(),
            api_secret: secret.clone(),
        };
        let app = Application::build(settings, creds).await?;
        let base = format!("http://{}", app.addr());
        let store = app.store().clone();
        let metrics = app.metrics.clone();
        let handle = app.handle();
        actix_rt::spawn(app.run_until_stopped());
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .finish();
        let api = processor_client::Client::new(
            client.clone(),
            &base,
            API_KEY,
            secret.clone(),
            ADMIN_TOKEN,
        );
        Ok(TestApp {
            backend,
            base,
            client,
            api,
            secret,
            store,
            database_url,
            data_dir,
            metrics,
            grouped_commits,
            handle,
        })
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// Sends `tx` to the processor route `path` under a fresh idempotency key.
    pub async fn send(&self, path: &str, tx: &Tx) -> Resp {
        self.processor(path, &tx.body(), &uid("k")).await
    }

    /// Sends a request built on `client` (or `api`) and reads the whole answer.
    pub async fn send_request(&self, req: awc::ClientRequest, body: Vec<u8>) -> Resp {
        sent(exchange(&self.api, req, body).await)
    }

    /// Asserts the answer has `status` (`what` and the body say which case failed) and
    /// carries our signature for `endpoint`.
    pub fn assert_signed_status(&self, r: &Resp, status: u16, endpoint: &str, what: &str) {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        self.assert_signed(r, endpoint);
    }

    /// Asserts the answer carries our signature over its exact bytes, a fresh timestamp
    /// and the echoed endpoint.
    pub fn assert_signed(&self, r: &Resp, endpoint: &str) {
        let ts = r
            .header(headers::TIMESTAMP)
            .expect("X-Timestamp on the answer");
        let ep = r
            .header(headers::ENDPOINT)
            .expect("X-Endpoint on the answer");
        let sig = r
            .header(headers::SIGNATURE)
            .expect("X-Signature on the answer");
        assert_eq!(ep, endpoint, "endpoint echoed");
        signature::verify(&self.secret, ts, ep, &r.body, sig).expect("answer signature verifies");
        signature::check_timestamp(ts, crate_now(), 5).expect("answer timestamp is ours and fresh");
    }

    calls_over_http!(sent);

    /// The available balance as the admin API shows it.
    pub async fn available(&self, user: &str, currency: &str) -> String {
        self.account(user, currency).await["available"]
            .as_str()
            .expect("available")
            .to_owned()
    }

    /// How many movements of `kind` the user's account shows (its postings list).
    pub async fn movements(&self, user: &str, currency: &str, kind: &str) -> usize {
        let p = self
            .admin(
                "GET",
                &format!("/v1/accounts/{user}/{currency}/postings?limit=500"),
                None,
                None,
            )
            .await
            .json();
        p["postings"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["kind"] == kind).count())
            .unwrap_or(0)
    }

    /// Asserts the ledger invariants hold.
    pub async fn assert_audit_clean(&self) -> store::AuditReport {
        assert_clean(&self.store).await
    }

    /// What the ledger holds (audited first) and `u1`'s ARS balance.
    pub async fn ledger(&self) -> Ledger {
        let r = self.assert_audit_clean().await;
        Ledger {
            movements: r.movements,
            postings: r.postings,
            processor_transactions: r.processor_transactions,
            notifications: r.notifications,
            available: self.available("u1", "ARS").await,
        }
    }

    /// A signed processor request as raw HTTP/1.1 bytes (`Connection: close`), with extra
    /// header lines (each ending in CRLF) after the real ones.
    pub fn signed_raw(&self, path: &str, body: &[u8], key: &str, extra: &str) -> Vec<u8> {
        let (ts, sig) = processor_client::sign(&self.secret, crate_now(), path, body);
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {API_KEY}\r\nX-Timestamp: {ts}\r\nX-Endpoint: {path}\r\nX-Signature: {sig}\r\nx-idempotency-key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    }
}

/// Everything the ledger holds, and the test account's balance: equal before and after a
/// refused request when it changed nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Ledger {
    pub movements: i64,
    pub postings: i64,
    pub processor_transactions: i64,
    pub notifications: i64,
    pub available: String,
}

/// The answer as a test reads it.
fn resp(a: processor_client::Answer) -> Resp {
    Resp {
        status: a.status,
        headers: a
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: a.body.to_vec(),
    }
}

/// `TestApp`'s calls panic when the connection failed or the answer was cut off.
fn sent(r: Result<Resp, Failure>) -> Resp {
    r.unwrap_or_else(|f| panic!("request sent and answered: {f}"))
}

/// Sends a request and reads the whole answer; `Err` when the connection failed or the
/// answer was cut off.
async fn exchange(
    api: &processor_client::Client,
    req: awc::ClientRequest,
    body: Vec<u8>,
) -> Result<Resp, Failure> {
    api.send(req, body.into(), None).await.map(resp)
}

/// An admin API call with the test admin token.
async fn admin(
    api: &processor_client::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
    idem: Option<&str>,
) -> Result<Resp, Failure> {
    let method = match method {
        "GET" => Method::GET,
        "PUT" => Method::PUT,
        "POST" => Method::POST,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        m => panic!("method {m}"),
    };
    api.admin(method, path, body.as_ref(), idem).await.map(resp)
}

async fn get(api: &processor_client::Client, path: &str) -> Result<Resp, Failure> {
    api.get(path).await.map(resp)
}

/// An authorizer reached over HTTP only, in this process or another (a fleet's processes,
/// one that may be killed): `TestApp`'s calls, except that a failed connection is status 0
/// with an empty body instead of a panic, so a test can tell it apart and send again.
#[derive(Clone)]
pub struct Remote {
    pub base: String,
    api: processor_client::Client,
}

/// Status 0 and an empty body for a failed connection.
fn or_status_0(r: Result<Resp, Failure>) -> Resp {
    r.unwrap_or(Resp {
        status: 0,
        headers: vec![],
        body: vec![],
    })
}

impl Remote {
    /// The server at `base`, keyed with the demo key pair and the test admin token.
    pub fn new(base: &str) -> Remote {
        let http = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .finish();
        let secret = ApiSecret::from_base64(API_SECRET).expect("demo secret");
        Remote {
            base: base.to_owned(),
            api: processor_client::Client::new(http, base, API_KEY, secret, ADMIN_TOKEN),
        }
    }

    calls_over_http!(or_status_0);
}

pub fn crate_now() -> i64 {
    authorizer::unix_now()
}

/// Builds a processor request body; `amount` is inserted as raw JSON (`990.0` or `"990.00"`).
#[derive(Clone, Debug)]
pub struct Tx {
    pub id: String,
    pub kind: String,
    pub user: String,
    pub card: String,
    pub amount: String,
    pub currency: String,
    pub mcc: String,
    pub original: Option<String>,
    pub details: Option<String>,
}

impl Tx {
    pub fn new(id: &str, kind: &str, user: &str, amount: &str, currency: &str) -> Tx {
        Tx {
            id: id.into(),
            kind: kind.into(),
            user: user.into(),
            card: format!("crd-{user}"),
            amount: amount.into(),
            currency: currency.into(),
            mcc: "5045".into(),
            original: None,
            details: None,
        }
    }
    pub fn original(mut self, id: &str) -> Tx {
        self.original = Some(id.into());
        self
    }
    pub fn card(mut self, card: &str) -> Tx {
        self.card = card.into();
        self
    }
    pub fn mcc(mut self, mcc: &str) -> Tx {
        self.mcc = mcc.into();
        self
    }
    /// Raw JSON array for `amount.details`.
    pub fn details(mut self, raw: &str) -> Tx {
        self.details = Some(raw.into());
        self
    }

    pub fn body(&self) -> Vec<u8> {
        let original = match &self.original {
            Some(o) => format!("\"{o}\""),
            None => "null".into(),
        };
        let details = self.details.clone().unwrap_or_else(|| {
            format!(
                r#"[{{"type":"BASE","currency":"{}","amount":{},"name":"BASE"}}]"#,
                self.currency, self.amount
            )
        });
        format!(
            r#"{{"transaction":{{"id":"{id}","country_code":"ARG","type":"{kind}","point_type":"POS","entry_mode":"CONTACTLESS","origin":"DOMESTIC","source":"ONLINE","local_date_time":"2024-01-01T10:00:00","original_transaction_id":{original}}},"merchant":{{"id":"111111111111111","mcc":"{mcc}","address":null,"name":"Computer Software","terminal_id":"T1","country":"ARG","city":"CABA"}},"card":{{"id":"{card}","product_type":"PREPAID","provider":"MASTERCARD","last_four":"6708"}},"installments":null,"user":{{"id":"{user}"}},"amount":{{"local":{{"total":{amount},"currency":"{cur}"}},"transaction":{{"total":{amount},"currency":"{cur}"}},"settlement":{{"total":11.0,"currency":"USD"}},"details":{details}}},"extra_data":{{"pin_presence":"ONLINE","cvv_validation":"MATCHING","card_presence":"PRESENT"}}}}"#,
            id = self.id,
            kind = self.kind,
            mcc = self.mcc,
            card = self.card,
            user = self.user,
            amount = self.amount,
            cur = self.currency,
        )
        .into_bytes()
    }

    /// The approved-authorization advice of this transaction.
    pub fn approved_advice(&self, key: &str) -> Vec<u8> {
        self.advice("approved-authorization-advice", "APPROVED", "APPROVED", key)
    }

    /// A notification body carrying this transaction and a verdict.
    pub fn advice(&self, event_id: &str, status: &str, status_detail: &str, key: &str) -> Vec<u8> {
        let inner: Value = serde_json::from_slice(&self.body()).expect("own body is JSON");
        let mut detail = inner.as_object().cloned().unwrap_or_default();
        detail.insert("status".into(), json!(status));
        detail.insert("status_detail".into(), json!(status_detail));
        detail.insert("extra_detail".into(), json!("test"));
        // Amounts keep their raw text: splice the detail object back as text.
        let mut text =
            json!({ "event_id": event_id, "event_detail": "__DETAIL__", "idempotency_key": key })
                .to_string();
        let detail_text = serde_json::to_string(&detail).expect("detail");
        text = text.replace("\"__DETAIL__\"", &detail_text);
        text.into_bytes()
    }
}

pub const AUTH: &str = "/transactions/authorizations";
pub const AUTH_DEBIT: &str = "/transactions/authorizations/debit";
pub const AUTH_CREDIT: &str = "/transactions/authorizations/credit";
pub const ADJ_DEBIT: &str = "/transactions/adjustments/debit";
pub const ADJ_CREDIT: &str = "/transactions/adjustments/credit";
pub const NOTIFY: &str = "/transactions/v1/notifications";

/// A unique id for this test process.
pub fn uid(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A session of its own on a test server's database, beside the server's pool: to hold the
/// write path as a stuck batch job would, or to change rows behind the server's back.
pub enum DirectConn {
    Pg(sqlx::PgConnection),
    Lite(sqlx::SqliteConnection),
}

impl DirectConn {
    pub async fn open(app: &TestApp) -> DirectConn {
        use sqlx::Connection;
        match app.backend {
            Backend::Postgres => {
                let url = app.database_url.as_deref().expect("a Postgres database");
                DirectConn::Pg(sqlx::PgConnection::connect(url).await.expect("connect"))
            }
            Backend::Sqlite => {
                let path = app.data_dir.path().join("authorizer.db");
                let url = format!("sqlite:{}", path.display());
                DirectConn::Lite(
                    sqlx::SqliteConnection::connect(&url)
                        .await
                        .expect("connect"),
                )
            }
        }
    }

    /// Runs one statement; its values are the test's own literals (no binds).
    pub async fn execute(&mut self, sql: &str) {
        match self {
            DirectConn::Pg(c) => sqlx::query(sql).execute(c).await.map(drop),
            DirectConn::Lite(c) => sqlx::query(sql).execute(c).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Ends the blocking transaction of `block_writes`: the writes it held back may go on.
    pub async fn release(mut self) {
        self.execute("ROLLBACK").await;
    }
}

/// Holds the database's write path from another session, as a stuck batch job would: the
/// user's account rows (Postgres) or the file's write lock (SQLite).
pub async fn block_writes(app: &TestApp, user: &str) -> DirectConn {
    let mut c = DirectConn::open(app).await;
    match app.backend {
        Backend::Postgres => {
            c.execute("BEGIN").await;
            c.execute(&format!(
                "SELECT id FROM accounts WHERE user_id = '{user}' FOR UPDATE"
            ))
            .await;
        }
        Backend::Sqlite => c.execute("BEGIN IMMEDIATE").await,
    }
    c
}
