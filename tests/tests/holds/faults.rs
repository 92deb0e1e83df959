//! A database that cannot serve in time: a reservation answers REJECTED/SYSTEM_ERROR within
//! the deadline with nothing held; a capture answers 503 with nothing committed; the
//! channel's resends then succeed once.

use super::common::*;
use e2e::*;
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};

/// Holds the account row (Postgres) or the write lock (SQLite) from another session.
enum Blocker {
    Pg(sqlx::PgConnection),
    Lite(sqlx::SqliteConnection),
}

async fn block_writes(app: &TestApp) -> Blocker {
    match app.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(app.database_url.as_deref().unwrap())
                .await
                .unwrap();
            sqlx::query("BEGIN").execute(&mut c).await.unwrap();
            sqlx::query("SELECT id FROM accounts WHERE user_id = 'u1' FOR UPDATE")
                .execute(&mut c)
                .await
                .unwrap();
            Blocker::Pg(c)
        }
        Backend::Sqlite => {
            let path = app.data_dir.path().join("authorizer.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            Blocker::Lite(c)
        }
    }
}

async fn release(b: Blocker) {
    match b {
        Blocker::Pg(mut c) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        }
        Blocker::Lite(mut c) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        }
    }
}

async fn a_blocked_database(app: TestApp) {
    app.funded("u1", "DKK", "100.00").await;
    reserve(
        &app,
        &reservation("f1", "10.00", "DKK"),
        "APPROVED",
        "APPROVED",
    )
    .await;
    let body = bytes(&reservation("f2", "20.00", "DKK"));
    let capture = bytes(&json!({"amount": "10.00"}));
    let (rk, ck) = (uid("ck"), uid("ck"));

    let blocker = block_writes(&app).await;
    let started = Instant::now();
    let r = app.channel("POST", RES, &body, Some(&rk)).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    app.assert_channel_signed(&r, RES);
    assert_eq!(
        r.body,
        br#"{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"System error"}"#
    );
    assert!(
        took < Duration::from_millis(1500),
        "answered within the deadline: {took:?}"
    );
    let r = app
        .channel("POST", &capture_path("f1"), &capture, Some(&ck))
        .await;
    assert_eq!(error_code(&r, 503), "unavailable");
    release(blocker).await;

    // Nothing was stored: the resends are decided now, once.
    let (posted, held, _) = balances(&app, "DKK").await;
    assert_eq!((posted.as_str(), held.as_str()), ("100.00", "10.00"));
    let r = app.channel("POST", RES, &body, Some(&rk)).await;
    assert_eq!(r.json()["status"], "APPROVED");
    let r = app
        .channel("POST", &capture_path("f1"), &capture, Some(&ck))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["reservation"]["state"], "CAPTURED");
    let (posted, held, _) = balances(&app, "DKK").await;
    assert_eq!((posted.as_str(), held.as_str()), ("90.00", "20.00"));
    assert_eq!(movements_of(&app, "DKK", "HOLD_CAPTURE").await, 1);
}

both_backends!(a_blocked_database);
