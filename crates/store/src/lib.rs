//! Ledger persistence behind one port, on Postgres (production) or SQLite (embedded
//! default). All SQL lives in this crate.
//!
//! Each operation is written once. The [`run!`] macro expands a query expression for
//! each backend, so every expansion is type-checked against its own driver while the
//! logic (and the order of its statements) stays a single piece of code.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod admin;
pub mod audit;
mod authorize;
pub mod batch;
pub mod controls;
mod embedded;
pub mod events;
pub mod holds;
pub mod instore;
pub mod instore_report;
mod migrate;
pub mod outbox;
pub mod poa;
pub mod processor;
pub mod recon;
pub mod rules;
pub mod wallet;
pub mod writer;

pub use admin::*;
pub use audit::{AuditReport, Violation};
pub use batch::BatchItem;
pub use controls::StoredControls;
pub use holds::{
    ChannelAnswer, ChannelCall, ChannelOutcome, Expired, ExpiryCall, ExpiryScope, HoldOp, HoldView,
    RefundView, ReservationDecision, ReserveRequest,
};
pub use instore::{
    InstoreCall, InstoreOp, InstoreOutcome, NewSvCard, ReadKey, SvCardRow, SvCardView, SvLegPlan,
    SvLink, SvLinkOutcome, SvMovementPlan, SvMovementRow, SvOperationRows, SvPinUpdate, SvPlan,
    SvPlanner, SvSnapshot,
};
pub use instore_report::SvSummaryRow;
pub use ledger::verdicts::Flags;
pub use outbox::{
    Claimed, Delivery, DeliveryView, GivenUp, HandOver, Handed, Owed, Pruned, Redeliver, Settled,
    SubscriptionView, Tracker,
};
pub use poa::{PoaCall, PoaSnapshot, PoaView, PoaWrite};
pub use processor::*;
pub use recon::*;
pub use rules::{CardLookup, CardRecord};
pub use wallet::{WalletCall, WalletOp, WalletPlan, WalletPlanner, WalletSnapshot};
pub use writer::{Done, Renders, Work};

use ledger::{Currency, SystemAccount};

/// Runs `$body` with `$c` bound to the backend's connection inside a transaction.
macro_rules! run {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::Tx::Pg(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::Tx::Lite(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use run;

/// Runs `$body` with `$p` bound to the backend's pool (autocommit statements).
macro_rules! run_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::Db::Pg($p) => $body,
            $crate::Db::Lite($p) => $body,
        }
    };
}
pub(crate) use run_pool;

/// Picks the statement text for the backend: Postgres locks rows it reads for update;
/// SQLite has a single writer and no `FOR UPDATE`. With `if $lock`, only when `$lock`.
macro_rules! for_update {
    ($tx:expr, $sql:expr) => {
        match $tx {
            $crate::Tx::Pg(_) => concat!($sql, " FOR UPDATE"),
            $crate::Tx::Lite(_) => $sql,
        }
    };
    ($tx:expr, $sql:expr, if $lock:expr) => {
        if $lock { for_update!($tx, $sql) } else { $sql }
    };
}
pub(crate) use for_update;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the caller answers SYSTEM_ERROR / 503.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A lock or statement timed out, or the commit deadline passed; nothing was committed.
    #[error("database too slow: {0}")]
    Timeout(String),
    /// A bad setting or a value the schema cannot hold.
    #[error("{0}")]
    Invalid(String),
    /// COMMIT was sent and the connection failed before its reply (the server shut down,
    /// the connection was cut): the transaction may or may not be committed. Nobody can
    /// tell until the database is reachable again.
    #[error("commit outcome unknown: {0}")]
    Uncertain(String),
}

impl StoreError {
    /// The failure may be one request's own rather than the database's: a plan the ledger
    /// refused, or a value the schema refused (Postgres' data exceptions and integrity
    /// violations, SQLSTATE classes 22 and 23; SQLite's constraint, type and size errors).
    /// (Unique violations are lost races and are tried again before they get here; one
    /// that does counts too, and its batch runs alone as a lost race would.) A batch that
    /// failed so runs again, each request alone, so that one request's data never fails its
    /// neighbours.
    pub(crate) fn is_request_specific(&self) -> bool {
        match self {
            StoreError::Invalid(_) => true,
            StoreError::Unavailable(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    code.starts_with("22") || code.starts_with("23")
                } else {
                    // SQLite's extended result code, whose low byte is the primary code:
                    // TOOBIG, CONSTRAINT, MISMATCH, RANGE.
                    code.parse::<i64>()
                        .is_ok_and(|n| matches!(n & 0xff, 18 | 19 | 20 | 25))
                }
            }
            _ => false,
        }
    }

    /// The error of a failed COMMIT: the database refusing the transaction is a definite
    /// rollback; losing the connection while waiting for the reply is [`StoreError::Uncertain`].
    pub(crate) fn from_commit(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut => e.into(),
            other => StoreError::Uncertain(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // lock_not_available, query_canceled (statement_timeout)
            if matches!(db.code().as_deref(), Some("55P03") | Some("57014")) {
                return StoreError::Timeout(db.message().to_owned());
            }
        }
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return StoreError::Timeout("no database connection free in time".into());
        }
        StoreError::Unavailable(e)
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The embedded store's read-only connections (for [`Store::reader`]).
const READ_CONNECTIONS: u32 = 2;

/// Whether the embedded store at `path` lives in memory (`sqlite::memory:`,
/// `sqlite:file:x?mode=memory`): each connection to it opens a database of its own.
fn in_memory(path: &std::path::Path) -> bool {
    let p = path.to_string_lossy();
    p.starts_with(":memory:") || p.contains("mode=memory")
}

/// Where and how to keep the ledger.
#[derive(Clone)]
pub struct StoreConfig {
    /// `postgres://...` for Postgres, `sqlite:PATH` or `None` for the embedded file.
    pub url: Option<String>,
    /// The embedded database file when no URL is given.
    pub sqlite_path: PathBuf,
    pub pool_connections_max: u32,
    pub pool_acquire_ms_max: u64,
    pub statement_ms_max: u64,
    pub lock_wait_ms_max: u64,
    /// Postgres: plan every statement once, as index probes (`enable_seqscan = off`,
    /// `plan_cache_mode = force_generic_plan`). For the pool of grouped commits, whose
    /// statements look rows up by key: a cached generic plan built while a table was still
    /// small must not scan the whole table per key once it grew.
    pub index_probes_only: bool,
    /// The zone of the spending controls' calendar windows (`controls.time_zone`).
    pub controls_time_zone: ledger::controls::TimeZone,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("sqlite_path", &self.sqlite_path)
            .field("pool_connections_max", &self.pool_connections_max)
            .finish_non_exhaustive()
    }
}

pub use settings::redact_url;

#[derive(Clone)]
pub(crate) enum Db {
    Pg(PgPool),
    Lite(SqlitePool),
}

pub(crate) enum Tx {
    Pg(sqlx::Transaction<'static, Postgres>),
    Lite(sqlx::Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Pg(t) => t.commit().await.map_err(StoreError::from_commit),
            Tx::Lite(t) => t.commit().await.map_err(StoreError::from_commit),
        }
    }
}

/// The ledger store: cheap to clone, shared by all workers.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// Where [`Store::reader`] reads: the same pool on Postgres; on the embedded store, its
    /// own read-only connections, which WAL lets read beside the one writer.
    reads: Db,
    description: Arc<str>,
    /// The embedded database file, when that is the backend.
    sqlite_path: Option<PathBuf>,
    /// System account ids by (kind, currency). They never change once created.
    system_ids: Arc<Mutex<HashMap<(SystemAccount, Currency), i64>>>,
    /// The active webhook subscriptions, as this instance last read them.
    subscriptions: Arc<outbox::SubscriptionCache>,
    /// Where the authorizations' deliveries go once committed: this instance's dispatcher.
    handoff: Arc<outbox::Handoff>,
    /// The zone of the spending controls' calendar windows (`controls.time_zone`).
    pub(crate) controls_time_zone: ledger::controls::TimeZone,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed). Does not migrate.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        Self::connect_with(cfg, false).await
    }

    /// [`Store::connect`]; `async_commit`: Postgres sessions whose commits do not wait for
    /// the WAL to reach the disk (a crash of the database may lose their last commits).
    async fn connect_with(cfg: &StoreConfig, async_commit: bool) -> Result<Store, StoreError> {
        let sqlite_path = match cfg.url.as_deref() {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => None,
            Some(u) => match u
                .strip_prefix("sqlite://")
                .or_else(|| u.strip_prefix("sqlite:"))
            {
                Some(p) => Some(PathBuf::from(p)),
                None => {
                    return Err(StoreError::Invalid(format!(
                        "database url must start with postgres:// or sqlite: (got {})",
                        redact_url(u)
                    )));
                }
            },
            None => Some(cfg.sqlite_path.clone()),
        };
        let (db, reads, description) = match sqlite_path.clone() {
            None => {
                let url = cfg.url.as_deref().unwrap_or_default();
                let opts = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Invalid(format!("bad database url: {e}")))?
                    .application_name("authorizer")
                    .options([
                        ("statement_timeout", format!("{}ms", cfg.statement_ms_max)),
                        ("lock_timeout", format!("{}ms", cfg.lock_wait_ms_max)),
                        // An idle transaction left by a killed client must not hold locks.
                        ("idle_in_transaction_session_timeout", "60000ms".to_owned()),
                    ]);
                let opts = if async_commit {
                    opts.options([("synchronous_commit", "off")])
                } else {
                    opts
                };
                let opts = if cfg.index_probes_only {
                    // ...and planned once per connection: a custom plan per execution costs
                    // more than the small batches of a quiet service take to run.
                    // No JIT: a plan that must scan after all costs over 10^10 with
                    // sequential scans off, and would be compiled for tens of milliseconds
                    // on every connection that runs it.
                    opts.options([
                        ("enable_seqscan", "off"),
                        ("plan_cache_mode", "force_generic_plan"),
                        ("jit", "off"),
                    ])
                } else {
                    opts
                };
                let description = format!(
                    "postgres {}:{}/{}",
                    opts.get_host(),
                    opts.get_port(),
                    opts.get_database().unwrap_or("")
                );
                let pool = PgPoolOptions::new()
                    .max_connections(cfg.pool_connections_max)
                    .acquire_timeout(Duration::from_millis(cfg.pool_acquire_ms_max))
                    .connect_lazy_with(opts);
                (Db::Pg(pool.clone()), Db::Pg(pool), description)
            }
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Invalid(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let read_opts = SqliteConnectOptions::new()
                    .filename(&path)
                    .pragma("query_only", "ON")
                    .busy_timeout(Duration::from_millis(cfg.lock_wait_ms_max));
                let opts = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: an APPROVED answer means the movement is on disk.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    // The commit that takes the log past this many pages copies them back into
                    // the database file (a checkpoint) before its requesters hear of it.
                    // SQLite's 1,000 pages made that several times a second under load; at
                    // 10,000 (40 MiB) a checkpoint comes about ten times less often and copies
                    // each page once however often it changed in between.
                    .pragma("wal_autocheckpoint", "10000")
                    .busy_timeout(Duration::from_millis(cfg.lock_wait_ms_max));
                // One connection: SQLite has a single writer, and one connection makes
                // every transaction serial without SQLITE_BUSY retries.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    // A file opened by this process does not go away: no ping (a hop to the
                    // connection's thread) before every use.
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_millis(cfg.pool_acquire_ms_max))
                    .connect_with(opts)
                    .await?;
                // The admin API's listings read on connections of their own, opened when
                // first needed: a page of postings never waits for the writer's batch (and
                // its flush to disk) to end, nor holds up the next one. A database in
                // memory is the connection's own: there they read on the writer's.
                let reads = if in_memory(&path) {
                    pool.clone()
                } else {
                    SqlitePoolOptions::new()
                        .max_connections(READ_CONNECTIONS)
                        .test_before_acquire(false)
                        .acquire_timeout(Duration::from_millis(cfg.pool_acquire_ms_max))
                        .connect_lazy_with(read_opts)
                };
                (
                    Db::Lite(pool),
                    Db::Lite(reads),
                    format!("sqlite {}", path.display()),
                )
            }
        };
        Ok(Store {
            db,
            reads,
            description: description.into(),
            sqlite_path,
            system_ids: Arc::new(Mutex::new(HashMap::new())),
            subscriptions: Arc::default(),
            handoff: Arc::default(),
            controls_time_zone: cfg.controls_time_zone.clone(),
        })
    }

    /// A second pool on the same database that shares this store's caches (system account
    /// ids, the active webhook subscriptions: a change made through one is seen by the
    /// other at once). The embedded store writes on one connection: the same store again.
    pub async fn connect_beside(&self, cfg: &StoreConfig) -> Result<Store, StoreError> {
        self.beside(cfg, false).await
    }

    async fn beside(&self, cfg: &StoreConfig, async_commit: bool) -> Result<Store, StoreError> {
        if !self.is_postgres() {
            return Ok(self.clone());
        }
        let other = Store::connect_with(cfg, async_commit).await?;
        Ok(Store {
            system_ids: self.system_ids.clone(),
            subscriptions: self.subscriptions.clone(),
            handoff: self.handoff.clone(),
            ..other
        })
    }

    /// [`Store::connect_beside`] for the outbox dispatcher's bookkeeping (claims, outcomes):
    /// its commits do not wait for the disk, so they never queue behind, or add a flush to,
    /// the money's commits. A database crash can lose the last of them: a lost lease or
    /// acknowledgement only sends a delivery again (at least once, deduped on the event id),
    /// a lost failure retries it sooner.
    pub async fn connect_beside_for_deliveries(
        &self,
        cfg: &StoreConfig,
    ) -> Result<Store, StoreError> {
        self.beside(cfg, true).await
    }

    /// This store, reading where reads need not queue behind writes: for the views of the
    /// admin API (a read-only connection on the embedded store; anything written through
    /// it fails). Postgres: the same store.
    pub fn reader(&self) -> Store {
        Store {
            db: self.reads.clone(),
            ..self.clone()
        }
    }

    /// Which store is in use and where, for the startup line.
    pub fn describe(&self) -> &str {
        &self.description
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Pg(_))
    }

    /// Applies pending migrations; returns the names applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        migrate::run(&self.db).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        run_pool!(&self.db, p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn close(&self) {
        run_pool!(&self.db, p => p.close().await);
        run_pool!(&self.reads, p => p.close().await)
    }

    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.db {
            Db::Pg(p) => Tx::Pg(p.begin().await?),
            // IMMEDIATE takes the write lock up front, so a transaction that reads
            // and then writes never fails half-way on a lock upgrade.
            Db::Lite(p) => Tx::Lite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// A transaction that only reads, from one snapshot: on Postgres `REPEATABLE READ READ
    /// ONLY` (each statement of a READ COMMITTED transaction sees its own); on SQLite a
    /// deferred transaction, which takes no write lock (every transaction there is one
    /// snapshot).
    pub(crate) async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(match &self.db {
            Db::Pg(p) => Tx::Pg(
                p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
            Db::Lite(p) => Tx::Lite(p.begin().await?),
        })
    }

    /// A system account's id, when this instance already knows it.
    pub(crate) fn cached_system_id(&self, kind: SystemAccount, currency: Currency) -> Option<i64> {
        self.system_ids
            .lock()
            .ok()
            .and_then(|m| m.get(&(kind, currency)).copied())
    }

    /// Remembers a committed system account's id.
    pub(crate) fn remember_system_id(&self, kind: SystemAccount, currency: Currency, id: i64) {
        if let Ok(mut m) = self.system_ids.lock() {
            m.insert((kind, currency), id);
        }
    }

    /// The id of a system account, creating it on first use (outside any transaction,
    /// so the cached id always refers to a committed row).
    pub(crate) async fn system_account(
        &self,
        kind: SystemAccount,
        currency: Currency,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.cached_system_id(kind, currency) {
            return Ok(id);
        }
        let mut tx = self.begin().await?;
        let id = create_system_account(&mut tx, kind, currency).await?;
        tx.commit().await?;
        self.remember_system_id(kind, currency, id);
        Ok(id)
    }
}

/// The id of system account `kind` in `currency`, created on `tx` unless it exists.
pub(crate) async fn create_system_account(
    tx: &mut Tx,
    kind: SystemAccount,
    currency: Currency,
) -> Result<i64, sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO accounts (kind, user_id, currency, created_at_ms, updated_at_ms) \
             VALUES ($1, NULL, $2, $3, $3) \
             ON CONFLICT (kind, currency) WHERE kind <> 'USER' DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(currency.code())
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
        sqlx::query_scalar(SYSTEM_ACCOUNT_ID)
            .bind(kind.as_str())
            .bind(currency.code())
            .fetch_one(&mut *c)
            .await
    })
}

/// The id of the system account of a kind (`$1`) and currency (`$2`). `kind <> 'USER'`
/// names the partial index's own condition: a generic plan cannot know that `$1` is a
/// system kind, and without it the writer's pool (no sequential scans) read every
/// cardholder's account, once per connection of each new instance.
pub(crate) const SYSTEM_ACCOUNT_ID: &str =
    "SELECT id FROM accounts WHERE kind = $1 AND currency = $2 AND kind <> 'USER'";

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub use ledger::plan::{StoredResponse, day_of};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_commit_and_deadline_wins() {
        // The commit first: the deadline must wait for its outcome.
        let g = CommitGate::new();
        assert!(g.start_commit());
        assert!(!g.abandon(), "a started commit cannot be abandoned");
        assert!(g.committing());
        assert!(g.start_commit(), "a batch may claim it again");
        // The deadline first: the commit must not happen.
        let g = CommitGate::new();
        assert!(g.abandon());
        assert!(!g.start_commit(), "an abandoned request is never committed");
        assert!(g.abandon() && !g.committing());
    }

    /// A database in memory is its connection's own: the views read it on the writer's
    /// connection (a reader of their own would open another, empty database).
    #[tokio::test]
    async fn the_views_of_a_store_in_memory_read_its_database() {
        let store = Store::connect(&StoreConfig {
            url: Some("sqlite::memory:".into()),
            sqlite_path: PathBuf::new(),
            pool_connections_max: 1,
            pool_acquire_ms_max: 1_000,
            statement_ms_max: 1_000,
            lock_wait_ms_max: 1_000,
            index_probes_only: false,
            controls_time_zone: ledger::controls::TimeZone::UTC,
        })
        .await
        .expect("connect");
        store.migrate().await.expect("migrate");
        let ars = Currency::parse_any("ARS").expect("ARS");
        assert!(
            store
                .reader()
                .account("nobody", ars)
                .await
                .expect("read")
                .is_none(),
            "the reader sees the migrated tables"
        );
        assert!(in_memory(std::path::Path::new(":memory:")));
        assert!(in_memory(std::path::Path::new(
            "file:x?mode=memory&cache=shared"
        )));
        assert!(!in_memory(std::path::Path::new("data/authorizer.db")));
    }

    #[test]
    fn days_are_utc_and_floor_negative_times() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(86_399_999), 0);
        assert_eq!(day_of(86_400_000), 1);
        assert_eq!(day_of(-1), -1);
    }
}
