//! The embedded (SQLite) ledger that the reconciler's memory and partition tests seed and
//! reconcile, under `dir/db`.

#![allow(dead_code)]

use reconciler::config::Settings;
use sqlx::Connection;
use std::path::Path;

/// Default settings whose database is the embedded ledger in `dir`.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
    s.database.url =
        settings::Secret::new(format!("sqlite:{}", dir.join("db/authorizer.db").display()));
    s
}

/// Creates the ledger in `dir` (migrated, empty) and connects to it.
pub async fn empty_ledger(dir: &Path) -> sqlx::SqliteConnection {
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let s = settings(dir);
    let store = store::Store::connect(&s.store_config()).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    sqlx::SqliteConnection::connect(s.database.url.expose())
        .await
        .unwrap()
}
