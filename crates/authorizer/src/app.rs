//! Startup: connect, migrate, bind, serve. Tests bind port 0 and read the port back.

use crate::config::Settings;
use crate::credentials::Credentials;
use crate::inflight::InFlight;
use crate::metrics::Metrics;
use crate::routes::{BodyReadTimeout, admin, error_body, processor};
use crate::security::{AllowList, TokenDigest};
use actix_web::dev::Server;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use protocol::KeyRing;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use store::Store;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub store: Store,
    pub keys: KeyRing,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<InFlight>,
    /// The admin bearer token's digest (the token itself is not kept).
    pub admin_token: TokenDigest,
    /// Peers allowed on the processor routes (empty: all).
    pub processor_peers: AllowList,
    /// False while draining: `/readyz` answers 503 so a load balancer stops sending.
    pub ready: Arc<AtomicBool>,
    /// Grouped commits, when enabled and the store is Postgres.
    pub batcher: Option<crate::batcher::Batcher>,
}

/// A bound, not yet running, authorizer.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    store: Store,
    pub metrics: Arc<Metrics>,
    tls: bool,
}

impl Application {
    /// Connects to the store (migrating unless disabled) and binds the listen address.
    pub async fn build(
        settings: Settings,
        credentials: Credentials,
    ) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.store_config())
            .await
            .context("cannot open the ledger store")?;
        if settings.database.migrate_on_start {
            let applied = store.migrate().await.context("cannot apply migrations")?;
            for m in applied {
                tracing::info!(migration = %m, "migration applied");
            }
        }
        let listener = TcpListener::bind(settings.listen_addr()?)
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        Self::with_listener(settings, credentials, store, listener)
    }

    pub fn with_listener(
        settings: Settings,
        credentials: Credentials,
        store: Store,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let addr = listener.local_addr()?;
        let processor_peers = AllowList::parse(&settings.processor.allowed_networks)
            .map_err(|e| anyhow::anyhow!("processor.allowed_networks: {e}"))?;
        let tls = &settings.server.tls;
        let tls_config = if tls.enabled() {
            Some(crate::security::tls_config(
                std::path::Path::new(&tls.cert_path),
                std::path::Path::new(&tls.key_path),
            )?)
        } else {
            None
        };
        let metrics = Arc::new(Metrics::new());
        let p = &settings.processor;
        let batcher = if p.grouped_commits && store.is_postgres() {
            Some(crate::batcher::Batcher::start(
                settings.store_config(),
                metrics.clone(),
                p.commit_batch_size_max,
                p.commit_batches_in_flight_max,
            )?)
        } else {
            None
        };
        tracing::info!(
            grouped_commits = batcher.is_some(),
            "authorizations commit {}",
            if batcher.is_some() {
                "in groups"
            } else {
                "one transaction per request"
            }
        );
        let state = web::Data::new(AppState {
            batcher,
            store: store.clone(),
            keys: credentials.keys,
            metrics: metrics.clone(),
            inflight: Arc::new(InFlight::default()),
            admin_token: TokenDigest::of(credentials.admin_token.expose()),
            processor_peers,
            ready: Arc::new(AtomicBool::new(true)),
            settings: Arc::new(settings.clone()),
        });
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let body_timeout = BodyReadTimeout(Duration::from_millis(settings.server.body_read_ms_max));
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(state.clone())
                .app_data(body_timeout)
                // Extractor failures answer in the one JSON error envelope too.
                .app_data(crate::routes::path_config())
                .app_data(crate::routes::query_config());
            for (path, route) in processor::Route::ALL {
                app = app.route(
                    path,
                    web::post().to(
                        move |req: HttpRequest, payload: web::Payload, s: web::Data<AppState>| {
                            crate::routes::guarded(req, payload, s, route)
                        },
                    ),
                );
            }
            app.route("/healthz", web::get().to(admin::healthz))
                .route("/readyz", web::get().to(admin::readyz))
                .route("/metrics", web::get().to(admin::metrics))
                .route("/openapi.json", web::get().to(crate::openapi::serve))
                .route(
                    "/v1/accounts/{user_id}/{currency}",
                    web::put().to(admin::put_account),
                )
                .route(
                    "/v1/accounts/{user_id}/{currency}",
                    web::get().to(admin::get_account),
                )
                .route(
                    "/v1/accounts/{user_id}/{currency}/deposits",
                    web::post().to(admin::deposit),
                )
                .route(
                    "/v1/accounts/{user_id}/{currency}/withdrawals",
                    web::post().to(admin::withdraw),
                )
                .route(
                    "/v1/accounts/{user_id}/{currency}/postings",
                    web::get().to(admin::postings),
                )
                .route("/v1/cards/{card_id}", web::put().to(admin::put_card))
                .route(
                    "/v1/transactions/{transaction_id}",
                    web::get().to(admin::get_transaction),
                )
                .route(
                    "/v1/reconciliation/runs",
                    web::get().to(admin::reconciliation_runs),
                )
                .route(
                    "/v1/reconciliation/runs/{date}/breaks",
                    web::get().to(admin::reconciliation_breaks),
                )
                .default_service(web::to(|| async {
                    HttpResponse::NotFound()
                        .content_type("application/json")
                        .body(error_body("not_found", "No such route"))
                }))
        })
        .workers(workers)
        // Answers go out at once: with Nagle's algorithm a response written in two parts
        // waits for the client's delayed ACK (tens of milliseconds).
        .tcp_nodelay(true)
        .client_request_timeout(Duration::from_millis(settings.server.request_read_ms_max))
        .client_disconnect_timeout(Duration::from_millis(settings.server.disconnect_ms_max))
        .shutdown_timeout(settings.server.shutdown_ms_max.div_ceil(1000));
        let tls = tls_config.is_some();
        let server = match tls_config {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Application {
            addr,
            server,
            store,
            metrics,
            tls,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (graceful: in-flight requests finish).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
