//! Forward-only migrations, embedded in the binary. Each backend has its own SQL
//! dialect in `migrations/<backend>/`; versions must match between them.

use crate::{Db, StoreError, now_ms};
use sqlx::Connection;

struct Migration {
    version: i64,
    name: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

/// Migration `$version`, from `migrations/{postgres,sqlite}/$name.sql` (a macro:
/// `include_str!` takes a literal path).
macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            postgres: include_str!(concat!("../../../migrations/postgres/", $name, ".sql")),
            sqlite: include_str!(concat!("../../../migrations/sqlite/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_ledger"),
    migration!(2, "0002_reconciliation"),
    migration!(3, "0003_grouped_commits"),
    migration!(4, "0004_holds"),
    migration!(5, "0005_outbox"),
    migration!(6, "0006_controls"),
    migration!(7, "0007_instore"),
    migration!(8, "0008_poa"),
    migration!(9, "0009_wallet"),
    migration!(10, "0010_account_counters"),
    migration!(11, "0011_outbox_writes"),
    migration!(12, "0012_outbox_senders"),
    migration!(13, "0013_owed_deliveries"),
    migration!(14, "0014_callback_lookup"),
    migration!(15, "0015_outbox_retention"),
    migration!(16, "0016_debit_controls"),
    migration!(17, "0017_reservation_explanations"),
    migration!(18, "0018_wallet_decisions"),
    migration!(19, "0019_recon_presentments"),
    migration!(20, "0020_recon_presentment_amounts"),
    migration!(21, "0021_hold_counted_day"),
    migration!(22, "0022_key_checks"),
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)";

/// Arbitrary constant shared by every instance: only one of them migrates at a time.
const PG_MIGRATION_LOCK: i64 = 0x0061_7574_686d_6967;

/// Applies every migration not yet recorded, each in its own transaction.
macro_rules! apply_pending {
    ($conn:expr, $dialect:ident, $applied:expr) => {{
        sqlx::query(CREATE_TABLE).execute(&mut *$conn).await?;
        for m in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *$conn)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = $conn.begin().await?;
            if stringify!($dialect) == "postgres" {
                // A migration that rewrites rows of a grown ledger takes as long as it takes:
                // the request path's statement timeout is not for it.
                sqlx::query("SET LOCAL statement_timeout = 0")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::raw_sql(m.$dialect).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            $applied.push(m.name.to_owned());
        }
        Ok::<_, sqlx::Error>(())
    }};
}

pub(crate) async fn run(db: &Db) -> Result<Vec<String>, StoreError> {
    let mut applied = Vec::new();
    match db {
        Db::Pg(pool) => {
            let mut conn = pool.acquire().await?;
            // Another instance may be migrating: wait for it as long as it takes (the
            // connection's own timeout comes back with the RESET below).
            sqlx::query("SET statement_timeout = 0")
                .execute(&mut *conn)
                .await?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
            let result = async { apply_pending!(conn, postgres, applied) }.await;
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *conn)
                .await;
            let _ = sqlx::query("RESET statement_timeout")
                .execute(&mut *conn)
                .await;
            result?;
        }
        Db::Lite(pool) => {
            let mut conn = pool.acquire().await?;
            apply_pending!(conn, sqlite, applied)?;
        }
    }
    Ok(applied)
}
