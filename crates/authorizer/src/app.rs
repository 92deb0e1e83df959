//! Startup: connect, migrate, bind, serve; graceful shutdown on SIGTERM. Tests bind
//! port 0 and read the port back.

use crate::config::Settings;
use crate::credentials::Credentials;
use crate::fleet::Fleet;
use crate::inflight::InFlight;
use crate::metrics::Metrics;
use crate::ratelimit::{Failure, FailureLimiter, Limiter};
use crate::routes::{BodyReadTimeout, admin, channels, error_body, processor};
use crate::rules::RulesCache;
use crate::security::{AllowList, TokenDigest};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use protocol::KeyRing;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use store::Store;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub store: Store,
    pub keys: KeyRing,
    /// The two-phase channels' key ring and names (`[[channels.keys]]`).
    pub channels: crate::config::ChannelRing,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<InFlight>,
    /// The channels' reservations whose reserve this instance is deciding.
    pub reserving: Arc<crate::channel_service::Reserving>,
    /// The admin bearer token's digest (the token itself is not kept).
    pub admin_token: TokenDigest,
    /// Peers allowed on the processor routes (empty: all).
    pub processor_peers: AllowList,
    /// False while draining: `/readyz` answers 503 so a load balancer stops sending.
    pub ready: Arc<AtomicBool>,
    /// Grouped commits, when enabled and the store is Postgres.
    /// The one writer of authorizations.
    pub batcher: crate::batcher::Batcher,
    /// The fleet's shared state in Redis (inert without `redis.url`).
    pub fleet: Fleet,
    /// Card rules cached in this instance.
    pub rules: Arc<RulesCache>,
    /// Admin API request rate, per token.
    pub limiter: Limiter,
    /// Failed admin authentications, per client address.
    pub auth_failures: FailureLimiter,
    /// The admin token's bucket id (a digest, never the token).
    pub admin_token_id: String,
    /// The InStore tenants and the key of the PIN and CVC hashes.
    pub instore: crate::routes::instore::InstoreState,
    /// TLS of the https calls to receivers (`webhooks.ca_file` beside the bundled roots).
    pub outbound_tls: Arc<rustls::ClientConfig>,
}

/// A bound, not yet running, authorizer.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    store: Store,
    pub metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    fleet: Fleet,
    drain: Duration,
    shutdown_max: Duration,
    /// Requests being served now, across workers.
    in_flight: Arc<AtomicUsize>,
    tls: bool,
    /// The hold sweeper, stopped with the server.
    sweeper: tokio::task::JoinHandle<()>,
    /// The outbox dispatcher (when `webhooks.dispatch`), stopped after the server.
    dispatcher: Option<crate::outbox::Dispatcher>,
}

/// Counts a request in flight for as long as it is alive.
struct InFlightGuard(Arc<AtomicUsize>);

impl InFlightGuard {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlightGuard {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(counter.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a starting instance retries its migrations while the database is unreachable or
/// too slow to hand it a connection.
const MIGRATE_PATIENCE: Duration = Duration::from_secs(30);

/// A step of the start (opening the store, its migrations), retried for up to
/// [`MIGRATE_PATIENCE`] while the database is unreachable or too slow (an instance restarted
/// after a crash may meet a database still busy with the dead process's sessions, or one
/// that is itself starting; the embedded store's file may sit on a disk busy flushing, so
/// that opening it takes longer than `database.pool_acquire_ms_max`). A failing migration
/// or a bad setting fails at once.
async fn patiently<T, F, Fut>(what: &str, mut step: F) -> Result<T, store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, store::StoreError>>,
{
    let give_up = std::time::Instant::now() + MIGRATE_PATIENCE;
    let mut wait = Duration::from_millis(200);
    loop {
        match step().await {
            Err(e @ (store::StoreError::Unavailable(_) | store::StoreError::Timeout(_)))
                if std::time::Instant::now() + wait < give_up =>
            {
                tracing::warn!(
                    error = %e,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "{what} yet; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            r => return r,
        }
    }
}

impl Application {
    /// Connects to the store (migrating unless disabled) and binds the listen address.
    pub async fn build(
        settings: Settings,
        credentials: Credentials,
    ) -> anyhow::Result<Application> {
        let config = settings.store_config();
        let store = patiently("cannot open the ledger store", || Store::connect(&config))
            .await
            .context("cannot open the ledger store")?;
        if settings.database.migrate_on_start {
            let applied = patiently("cannot apply migrations", || store.migrate())
                .await
                .context("cannot apply migrations")?;
            for m in applied {
                tracing::info!(migration = %m, "migration applied");
            }
        }
        crate::credentials::check_instore_secret_hash_key(&store, &settings).await?;
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
        let rules = Arc::new(RulesCache::new(
            Duration::from_millis(settings.rules.cache_ttl_ms),
            settings.rules.cache_entries_max,
            metrics.clone(),
        ));
        let p = &settings.processor;
        // Every money-moving request goes through the batcher, the one writer.
        let batcher = crate::batcher::Batcher::start(
            settings.store_config(),
            store.clone(),
            metrics.clone(),
            rules.clone(),
            crate::batcher::Sizing {
                size_max: p.commit_batch_size_max,
                // The embedded store has one writer: one batch at a time, never beside it.
                in_flight_max: if store.is_postgres() {
                    p.commit_batches_in_flight_max
                } else {
                    1
                },
                overlap: std::time::Duration::from_millis(p.commit_batch_overlap_ms),
                // Postgres overlaps batches instead (commit_batch_overlap_ms).
                linger: if store.is_postgres() {
                    std::time::Duration::ZERO
                } else {
                    std::time::Duration::from_micros(p.commit_batch_linger_us)
                },
            },
        )?;
        tracing::info!(
            commit_batch_size_max = p.commit_batch_size_max,
            "money-moving requests commit through one writer, {}",
            if p.commit_batch_size_max > 1 {
                "in batches"
            } else {
                "one transaction per request"
            }
        );
        let fleet = Fleet::start(&settings.redis, metrics.clone(), rules.clone())?;
        tracing::info!(
            redis = fleet.is_configured(),
            "idempotency, rule invalidation and admin rate limits {}",
            if fleet.is_configured() {
                "shared through Redis, falling back to this instance and Postgres"
            } else {
                "kept in this instance (no redis.url)"
            }
        );
        if settings.processor.endpoint_check == crate::config::EndpointCheck::Off {
            tracing::warn!(
                "processor.endpoint_check = off: X-Endpoint is not compared with the processor \
                 route served, so a request signed for one route is accepted on another within \
                 its skew (the channel routes still compare it)"
            );
        }
        let channels = settings.channel_ring()?;
        if let Some(k) = channels
            .keys
            .api_keys()
            .into_iter()
            .find(|k| credentials.keys.get(k).is_some())
        {
            anyhow::bail!("channels.keys: api_key {k} is also a processor key");
        }
        let instore = crate::routes::instore::InstoreState {
            tenants: settings.instore.tenants()?,
            secret_hash_key: crate::credentials::instore_secret_hash_key(&settings)?,
        };
        if instore.tenants.is_empty() {
            tracing::info!(
                "no InStore tenants configured: the InStore routes refuse every request"
            );
        }
        for t in instore.tenants.iter() {
            let store = &t.store;
            if store.mcc.is_none() || store.country.is_none() {
                tracing::warn!(
                    tenant = %t.tenant_id,
                    mcc = store.mcc.as_deref().unwrap_or("none"),
                    country = store.country.as_deref().unwrap_or("none"),
                    "InStore tenant without mcc or country: its wallet payments skip the spending \
                     controls' rules of the category or country it does not name"
                );
            }
        }
        let sweeper = tokio::spawn(sweep_holds(
            batcher.clone(),
            store.clone(),
            metrics.clone(),
            Duration::from_millis(settings.holds.sweep_interval_ms),
        ));
        let outbound_tls = settings.webhooks.tls()?;
        let dispatcher = if settings.webhooks.dispatch {
            Some(crate::outbox::start(
                store.clone(),
                settings.store_config(),
                metrics.clone(),
                settings.webhooks.clone(),
                outbound_tls.clone(),
                settings
                    .processor
                    .deadline_ms
                    .saturating_add(settings.database.statement_ms_max),
            )?)
        } else {
            None
        };
        let ready = Arc::new(AtomicBool::new(true));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight_outer = in_flight.clone();
        metrics.set_gauge("authorizer_ready", &[], 1);
        let state = web::Data::new(AppState {
            batcher,
            store: store.clone(),
            keys: credentials.keys,
            channels,
            metrics: metrics.clone(),
            inflight: Arc::new(InFlight::default()),
            reserving: Arc::default(),
            admin_token_id: crate::ratelimit::token_id(credentials.admin_token.expose()),
            admin_token: TokenDigest::of(credentials.admin_token.expose()),
            processor_peers,
            ready: ready.clone(),
            settings: Arc::new(settings.clone()),
            fleet: fleet.clone(),
            rules,
            limiter: Limiter::new(settings.admin.rate_per_sec, settings.admin.burst),
            auth_failures: FailureLimiter::new(
                settings.admin.auth_failures_per_sec,
                settings.admin.auth_failures_burst,
            ),
            instore,
            outbound_tls,
        });
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let body_timeout = BodyReadTimeout(Duration::from_millis(settings.server.body_read_ms_max));
        let server = HttpServer::new(move || {
            let counter = in_flight.clone();
            let mut app = App::new()
                .app_data(state.clone())
                .app_data(body_timeout)
                // Extractor failures answer in the one JSON error envelope too.
                .app_data(crate::routes::path_config())
                .app_data(crate::routes::query_config())
                .wrap(actix_web::middleware::from_fn(admin_guard))
                .wrap_fn(move |req, srv| {
                    use actix_web::dev::Service;
                    let guard = InFlightGuard::enter(&counter);
                    let fut = srv.call(req);
                    async move {
                        let r = fut.await;
                        drop(guard);
                        r
                    }
                });
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
            for (path, route) in channels::ChannelRoute::ALL {
                let handler =
                    move |req: HttpRequest, payload: web::Payload, s: web::Data<AppState>| {
                        crate::signed::handle(req, payload, s, route)
                    };
                app = app.route(
                    path,
                    if route.is_post() {
                        web::post().to(handler)
                    } else {
                        web::get().to(handler)
                    },
                );
            }
            let instore_base = state.settings.instore.base_path.clone();
            app.service(
                web::scope(&instore_base).default_service(web::to(crate::routes::instore::handle)),
            )
            .configure(admin::configure)
            .default_service(web::to(|| async {
                HttpResponse::NotFound()
                    .content_type("application/json")
                    .body(error_body("not_found", "No such route"))
            }))
        })
        .workers(workers)
        // SIGTERM/SIGINT are handled in `run_until_stopped`: readiness goes first.
        .disable_signals()
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
            ready,
            fleet,
            drain: Duration::from_millis(settings.server.drain_ms),
            shutdown_max: Duration::from_millis(settings.server.shutdown_ms_max),
            in_flight: in_flight_outer,
            tls,
            sweeper,
            dispatcher,
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

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: `/readyz` answers 503
    /// at once (a load balancer drains this instance), requests are still served for
    /// `server.drain_ms` (not after SIGINT), then no new connection is accepted and requests
    /// in flight get `server.shutdown_ms_max` to finish; a request cut off after that drops
    /// its transaction, which rolls back. A second signal stops at once.
    ///
    /// The workers are stopped only once nothing is in flight: a worker's event loop also
    /// drives the pooled database connections it opened, which other workers' requests
    /// may be using, so stopping an idle worker early would break their transactions.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let (ready, metrics, drain) = (self.ready.clone(), self.metrics.clone(), self.drain);
        let (in_flight, shutdown_max) = (self.in_flight.clone(), self.shutdown_max);
        let signals = actix_rt::spawn(async move {
            let why = shutdown_signal().await;
            ready.store(false, Ordering::SeqCst);
            metrics.set_gauge("authorizer_ready", &[], 0);
            // SIGINT is a person at a terminal: no load balancer to wait for.
            let drain = if why == "SIGTERM" {
                drain
            } else {
                Duration::ZERO
            };
            tracing::info!(
                signal = why,
                drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
                "shutting down: not ready any more, draining"
            );
            // A second signal stops at once.
            let force = handle.clone();
            actix_rt::spawn(async move {
                let again = shutdown_signal().await;
                tracing::warn!(signal = again, "second signal: stopping now");
                force.stop(false).await;
            });
            tokio::time::sleep(drain).await;
            handle.pause().await;
            tracing::info!(
                in_flight = in_flight.load(Ordering::SeqCst),
                "no longer accepting connections; finishing requests in flight"
            );
            let until = tokio::time::Instant::now() + shutdown_max;
            while in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let left = in_flight.load(Ordering::SeqCst);
            if left > 0 {
                tracing::warn!(
                    in_flight = left,
                    "shutdown bound reached: cutting off requests still in flight (their transactions roll back)"
                );
            }
            // Graceful when nothing is in flight (idle keep-alive connections close);
            // otherwise the bound is spent: cut off what is left.
            handle.stop(left == 0).await;
        });
        let result = self.server.await;
        signals.abort();
        self.sweeper.abort();
        // The last handed deliveries go out and the webhook sender is released (bounded).
        if let Some(d) = self.dispatcher {
            d.stop().await;
        }
        self.fleet.stop();
        self.store.close().await;
        result
    }
}

/// Holds a sweep expires per transaction.
const SWEEP_BATCH_MAX: i64 = 500;

/// Expires due holds every `interval`, and keeps the gauge of RESERVED holds. Each batch
/// of at most [`SWEEP_BATCH_MAX`] expiries is a job of the one writer (committed with the
/// other work of its batch); batches follow one another until none is due (catching up
/// after downtime). Each instance runs one sweeper; they share the work (see
/// [`store::ExpiryScope::Due`]).
async fn sweep_holds(
    batcher: crate::batcher::Batcher,
    store: Store,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    use crate::batcher::{ExpiryJob, ExpiryOf, Job};
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let now_ms = store::now_ms();
        let mut total = 0;
        loop {
            let swept = batcher
                .run(|reply| {
                    Job::Expiry(ExpiryJob {
                        scope: ExpiryOf::Due(SWEEP_BATCH_MAX),
                        now_ms,
                        reply: Some(reply),
                    })
                })
                .await;
            match swept {
                Ok(e) => {
                    total += e.expired;
                    if !e.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "hold sweep failed; trying again next interval");
                    break;
                }
            }
        }
        if total > 0 {
            metrics.add("authorizer_holds_total", &[("event", "expired")], total);
            tracing::info!(expired = total, "hold sweep");
        }
        metrics.observe(
            "authorizer_hold_sweep_duration_seconds",
            &[],
            started.elapsed(),
        );
        if let Ok(n) = store.reserved_holds().await {
            metrics.set_gauge("authorizer_holds_reserved", &[], n);
        }
    }
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// In front of every admin route (they all start with `/v1/`, the only routes that read
/// `Authorization`):
///
/// - `Authorization` sent more than once is 400 `duplicate_header`: which one counts must not
///   depend on who reads it (a proxy may take the last, actix the first).
/// - The valid admin token takes one request from its own bucket (`admin.rate_per_sec`,
///   `admin.burst`), or is answered 429 with Retry-After.
/// - Anything else (a wrong, missing or unreadable token) is a failed authentication, charged
///   to the client address (the TCP peer, never a forwarding header). Within the address's
///   budget it goes on to the route, which answers 401; over it, 429 with Retry-After before
///   the route is reached.
///
/// The token is compared (a SHA-256 and a constant-time comparison, cheap) before the
/// address's budget is consulted, so the valid token is served even from an address that is
/// over its budget: an attacker behind the same proxy or NAT as the issuer cannot lock the
/// issuer out. The price is that a locked-out address still learns whether a guess is right
/// (200 rather than 429); what protects the token is its length (at least 16 characters, 43
/// when generated), and the budget keeps failed attempts out of the routes and in a metric.
async fn admin_guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    // The path as the router matches it (percent-decoded): `/%761/...` reaches the admin
    // routes too, and must not pass by the guard.
    let admin_route = req.match_info().as_str().starts_with("/v1/");
    let Some(state) = state.filter(|_| admin_route) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let metrics = &state.metrics;
    if req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION)
        .nth(1)
        .is_some()
    {
        metrics.inc(
            "authorizer_admin_auth_failures_total",
            &[("reason", "duplicate_header")],
        );
        metrics.inc("authorizer_admin_requests_total", &[("class", "4xx")]);
        let resp = HttpResponse::BadRequest()
            .content_type("application/json")
            .body(error_body(
                "duplicate_header",
                "The Authorization header must appear once",
            ));
        return Ok(req.into_response(resp));
    }
    if admin::token_matches(req.request(), &state) {
        if let Err(wait) = state
            .limiter
            .admit(&state.fleet, &state.admin_token_id)
            .await
        {
            metrics.inc("authorizer_admin_rate_limited_total", &[]);
            return too_many(
                req,
                &state,
                wait,
                "Too many admin requests; retry after the time in Retry-After",
            );
        }
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    metrics.inc(
        "authorizer_admin_auth_failures_total",
        &[("reason", "invalid_token")],
    );
    let peer = req.peer_addr().map(|a| a.ip());
    match state.auth_failures.fail(peer) {
        Failure::Counted => Ok(next.call(req).await?.map_into_boxed_body()),
        Failure::Refused { wait, first } => {
            metrics.inc("authorizer_admin_auth_lockouts_total", &[]);
            if first {
                tracing::warn!(
                    peer = %peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
                    "admin API: too many failed authentications from this address; refusing its requests without the valid token with 429"
                );
            }
            too_many(
                req,
                &state,
                wait,
                "Too many failed authentications from this address; retry after the time in Retry-After",
            )
        }
    }
}

/// 429 in the JSON envelope with Retry-After in whole seconds (at least 1).
fn too_many(
    req: ServiceRequest,
    state: &AppState,
    wait: Duration,
    message: &str,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    state
        .metrics
        .inc("authorizer_admin_requests_total", &[("class", "4xx")]);
    let secs = wait.as_millis().div_ceil(1000).max(1);
    let resp = HttpResponse::TooManyRequests()
        .insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()))
        .content_type("application/json")
        .body(error_body("rate_limited", message));
    Ok(req.into_response(resp))
}
