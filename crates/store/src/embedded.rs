//! The embedded store's batch of authorizations: its reads, plan and writes in one call on
//! SQLite's own thread of control.
//!
//! sqlx drives a SQLite connection from a thread of its own: every statement is a command
//! sent to that thread and a result (and each row) sent back, two context switches and a
//! wake-up per row, and a statement whose text varies with the batch (a multi-row `VALUES`)
//! is parsed anew each time. Here the batch's transaction (opened with `BEGIN IMMEDIATE`
//! by sqlx) lends its connection's handle to the writer
//! ([`SqliteConnection::lock_handle`](sqlx::sqlite::SqliteConnection::lock_handle)):
//! the reads (finished keys, recorded transactions, accounts, cards, control counters, the
//! last ids used) and the plan's rows (movements, postings, account states, transaction
//! records, control counters, idempotency records) run as fixed one-row statements through
//! `rusqlite` on that handle, each prepared once per batch and run once per row, with no
//! hop between threads. With the transaction's `BEGIN` and `COMMIT`, three hops per batch
//! whatever its size.
//!
//! The rows read and written are exactly those of the general path in [`crate::authorize`];
//! the plan is the same ([`ledger::plan::plan_authorizations`]).

use crate::Flags;
use crate::authorize::{
    accounts_to_read, cards_to_read, counter_row, counters_to_read, distinct, moving,
    unread_snapshot,
};
use crate::batch::{BatchItem, snapshot_row};
use crate::processor::{
    Asked, KIND_AUTHORIZATION, LockedAccount, SCOPE_AUTHORIZATION, Step, account_columns,
};
use crate::rules::CardRecord;
use ledger::Currency;
use ledger::controls::TimeZone;
use ledger::plan::{RecordWrite, Snapshot, Writes, direction_str, owner_kind};
use rusqlite::types::FromSql;
use rusqlite::{Connection, RowIndex, params};
use sqlx::sqlite::LockedSqliteHandle;
use std::collections::HashMap;

impl From<rusqlite::Error> for Step {
    fn from(e: rusqlite::Error) -> Self {
        // A unique key another request took first: nothing is committed, and the batch
        // runs again, each request alone (as sqlx's unique violations do).
        let race = matches!(
            e.sqlite_error(),
            Some(f) if matches!(
                f.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            )
        );
        if race {
            Step::Retry
        } else {
            Step::Fail(failure(e).into())
        }
    }
}

fn failure(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Protocol(format!("sqlite: {e}"))
}

/// sqlx's `try_get` on a `rusqlite` row, so that the row readers shared with the other
/// paths (`snapshot_row!`, `locked_account_from_row!`, `asked_from_row!`) read these too.
trait Columns {
    fn try_get<T: FromSql, I: RowIndex>(&self, column: I) -> Result<T, sqlx::Error>;
}

impl Columns for rusqlite::Row<'_> {
    fn try_get<T: FromSql, I: RowIndex>(&self, column: I) -> Result<T, sqlx::Error> {
        self.get(column).map_err(failure)
    }
}

/// Runs `f` on a `rusqlite` view of the lent connection `h` (sqlx's thread waits while
/// `h` is held). The view finalizes the statements it prepared when `f` returns and never
/// closes the connection.
#[allow(unsafe_code)]
pub(crate) fn on_lent<T>(
    h: &mut LockedSqliteHandle<'_>,
    f: impl FnOnce(&Connection) -> Result<T, Step>,
) -> Result<T, Step> {
    // SAFETY: `h` keeps the handle away from sqlx's thread until it is dropped, and the view
    // is dropped here, before `h` can be.
    let c = unsafe { Connection::from_handle(h.as_raw_handle().as_ptr()) }?;
    c.set_prepared_statement_cache_capacity(32);
    let result = f(&c);
    drop(c);
    result
}

/// Reads what `items` name: the embedded store's [`crate::authorize`] prefetch. The
/// transaction already holds the database's one write lock (`BEGIN IMMEDIATE`), so nothing
/// read can change before the commit, and the ids after the highest ever used are free
/// until then.
pub(crate) fn prefetch<'i>(
    c: &Connection,
    items: &[BatchItem<'i>],
    clearing: &HashMap<Currency, i64>,
    tz: &TimeZone,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
) -> Result<Snapshot, Step> {
    let mut s = unread_snapshot(clearing, tz);
    // Every row carries the `tag` that `snapshot_row!` sorts it by.
    let mut read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<(), Step> {
        let mut st = c.prepare_cached(sql)?;
        let mut rows = st.query(args)?;
        while let Some(r) = rows.next()? {
            snapshot_row!(s, r, i64);
        }
        Ok(())
    };
    for key in distinct(items.iter().map(|i| i.call.idempotency_key)) {
        read(
            "SELECT 1 AS tag, key AS k, request_hash AS h, response_status AS st, response_body AS body, \
             endpoint FROM idempotency_keys WHERE scope = ? AND key = ?",
            params![SCOPE_AUTHORIZATION, key],
        )?;
    }
    for tid in distinct(items.iter().map(|i| i.tx.transaction_id)) {
        read(
            "SELECT 2 AS tag, transaction_id AS k, amount_minor, response_status AS st, \
             response_body AS body, verdict, endpoint, direction, tx_type, user_id, card_id, currency, \
             amount_text FROM processor_transactions WHERE kind = ? AND transaction_id = ?",
            params![KIND_AUTHORIZATION, tid],
        )?;
    }
    let account = account_columns!().replacen("SELECT ", "SELECT 3 AS tag, user_id, ", 1)
        + " WHERE kind = 'USER' AND user_id = ? AND currency = ?";
    for (user, currency) in accounts_to_read(items) {
        read(&account, params![user, currency.code()])?;
    }
    let card_ids = cards_to_read(items);
    for card in &card_ids {
        read(
            "SELECT 4 AS tag, card_id AS k, user_id, status, blocked_mccs, controls FROM cards \
             WHERE card_id = ?",
            params![card],
        )?;
    }
    cards_read.extend(card_ids.iter().map(|id| (*id, s.cards.get(*id).cloned())));
    let (kinds, ids, windows) = counters_to_read(items, tz);
    if !windows.is_empty() {
        let mut st = c.prepare_cached(
            "SELECT owner_kind, owner_id, window_key, categories, amount_minor, count \
             FROM control_counters WHERE owner_kind = ? AND owner_id = ? AND window_key = ?",
        )?;
        for (kind, id) in kinds.iter().zip(&ids) {
            for window in &windows {
                let mut rows = st.query(params![kind, id, window])?;
                while let Some(r) = rows.next()? {
                    counter_row!(s, r);
                }
            }
        }
    }
    let n = moving(items) as i64;
    if n > 0 {
        // The next id of an AUTOINCREMENT table: after the highest ever given out.
        let last = |sql: &str| -> Result<i64, Step> {
            Ok(c.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
        };
        let movement = last(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'movements'), 0), \
             COALESCE((SELECT MAX(id) FROM movements), 0))",
        )?;
        let posting = last(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'postings'), 0), \
             COALESCE((SELECT MAX(id) FROM postings), 0))",
        )?;
        s.movement_ids = (movement + 1..=movement + n).collect();
        s.posting_ids = (posting + 1..=posting + 2 * n).collect();
    }
    Ok(s)
}

/// Writes a plan's rows: the embedded store's [`crate::authorize`] write.
pub(crate) fn write(c: &Connection, items: &[BatchItem<'_>], w: &Writes) -> Result<(), Step> {
    let now = items.iter().map(|i| i.call.now_ms).max().unwrap_or(0);
    if !w.movements.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO movements (id, kind, currency, processor_kind, transaction_id, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )?;
        for m in &w.movements {
            let item = &items[m.request];
            st.execute(params![
                m.id,
                KIND_AUTHORIZATION,
                m.currency.code(),
                KIND_AUTHORIZATION,
                item.tx.transaction_id,
                item.call.now_ms,
            ])?;
        }
    }
    if !w.postings.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO postings (id, movement_id, account_id, amount_minor, balance_after_minor, \
             account_version, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?;
        for p in &w.postings {
            st.execute(params![
                p.id,
                p.movement_id,
                p.account_id,
                p.amount,
                p.balance_after,
                p.version,
                now,
            ])?;
        }
    }
    if !w.accounts.is_empty() {
        let mut st = c.prepare_cached(
            "UPDATE accounts SET balance_minor = ?, version = ?, daily_spent_day = ?, \
             daily_spent_minor = ?, updated_at_ms = ?, counters = ? WHERE id = ?",
        )?;
        for a in &w.accounts {
            st.execute(params![
                a.balance,
                a.version,
                a.daily_spent_day,
                a.daily_spent,
                now,
                a.counters,
                a.id,
            ])?;
        }
    }
    let mut new = w
        .records
        .iter()
        .filter(|r| r.write == RecordWrite::Insert)
        .peekable();
    if new.peek().is_some() {
        let mut st = c.prepare_cached(
            "INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, \
             user_id, card_id, currency, amount_text, amount_minor, status, status_detail, flags, \
             original_transaction_id, idempotency_key, movement_id, request_body, response_status, \
             response_body, created_at_ms, updated_at_ms, explanation, controls_counted) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        let flags = Flags::default().stored();
        for r in new {
            let (call, t) = (&items[r.request].call, &items[r.request].tx);
            st.execute(params![
                KIND_AUTHORIZATION,
                t.transaction_id,
                call.endpoint,
                direction_str(items[r.request].kind),
                t.tx_type,
                t.user_id,
                t.card_id,
                t.currency,
                t.amount_text,
                r.amount_minor,
                r.status,
                r.status_detail,
                flags,
                t.original_transaction_id,
                call.idempotency_key,
                r.movement_id,
                call.raw_body,
                i32::from(r.response.status),
                &r.response.body[..],
                call.now_ms,
                call.now_ms,
                r.explanation.as_deref(),
                r.counted.as_deref(),
            ])?;
        }
    }
    let mut answers = w
        .records
        .iter()
        .filter(|r| r.write == RecordWrite::Answer)
        .peekable();
    if answers.peek().is_some() {
        // The record now holds what the authorization asked, not what the verdict's detail
        // carried: a resend of this authorization is compared with it.
        let mut st = c.prepare_cached(
            "UPDATE processor_transactions SET endpoint = ?, idempotency_key = ?, request_body = ?, \
             response_status = ?, response_body = ?, status = ?, status_detail = ?, updated_at_ms = ?, \
             direction = ?, tx_type = ?, user_id = ?, card_id = ?, currency = ?, amount_text = ? \
             WHERE kind = ? AND transaction_id = ?",
        )?;
        for r in answers {
            let item = &items[r.request];
            let (call, t) = (&item.call, &item.tx);
            st.execute(params![
                call.endpoint,
                call.idempotency_key,
                call.raw_body,
                i32::from(r.response.status),
                &r.response.body[..],
                r.status,
                r.status_detail,
                call.now_ms,
                direction_str(item.kind),
                t.tx_type,
                t.user_id,
                t.card_id,
                t.currency,
                t.amount_text,
                KIND_AUTHORIZATION,
                t.transaction_id,
            ])?;
        }
    }
    if !w.counters.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO control_counters AS c (owner_kind, owner_id, window_key, categories, \
             amount_minor, count, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (owner_kind, owner_id, window_key, categories) DO UPDATE \
             SET amount_minor = MAX(0, c.amount_minor + excluded.amount_minor), \
             count = MAX(0, c.count + excluded.count), updated_at_ms = excluded.updated_at_ms",
        )?;
        for cw in &w.counters {
            let (window, categories) = cw.columns();
            st.execute(params![
                owner_kind(cw.owner),
                cw.owner_id,
                window,
                categories,
                cw.amount.max(0),
                cw.count.max(0),
                now,
            ])?;
        }
    }
    if !w.keys.is_empty() {
        let mut st = c.prepare_cached(
            "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, \
             response_body, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?;
        for k in &w.keys {
            let call = &items[k.request].call;
            st.execute(params![
                SCOPE_AUTHORIZATION,
                call.idempotency_key,
                &call.request_hash[..],
                call.endpoint,
                i32::from(k.response.status),
                &k.response.body[..],
                call.now_ms,
            ])?;
        }
    }
    Ok(())
}
