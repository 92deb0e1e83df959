//! The embedded store's batch of authorizations: one read and one write per batch.
//!
//! On SQLite every statement is a hop to the connection's own thread and back (two context
//! switches, and a wake-up per row), so the batch's cost follows the number of statements it
//! sends, not the rows it touches. Here the reads of a batch (finished keys, recorded
//! transactions, accounts, cards, control counters, the last ids used) go as one
//! multi-statement query, and the plan's rows (movements, postings, account states,
//! transaction records, control counters, idempotency records) as another: with the
//! transaction's `BEGIN` and `COMMIT`, four hops per batch whatever its size. Parameters are
//! anonymous (`?`), bound in order across the statements: SQLite looks a numbered parameter's
//! name up by walking a list, once per parameter.
//!
//! The rows read and written are exactly those of the general path in [`crate::authorize`];
//! the plan is the same ([`ledger::plan::plan_authorizations`]).

use crate::Flags;
use crate::authorize::{cards_to_read, counter_from_row, counters_to_read, distinct, moving};
use crate::batch::{BatchItem, snapshot_row};
use crate::processor::{
    Asked, KIND_AUTHORIZATION, LockedAccount, SCOPE_AUTHORIZATION, account_columns,
};
use crate::rules::CardRecord;
use ledger::Currency;
use ledger::controls::{Counter, TimeZone};
use ledger::plan::{RecordWrite, Snapshot, Writes, direction_str, owner_kind};
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Encode, Row, Sqlite, SqliteConnection, Type};
use std::collections::HashMap;

/// Statements to send as one query, and their parameters in order.
#[derive(Default)]
struct Statements<'q> {
    sql: String,
    args: SqliteArguments<'q>,
}

impl<'q> Statements<'q> {
    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn bind<T: 'q + Encode<'q, Sqlite> + Type<Sqlite>>(
        &mut self,
        value: T,
    ) -> Result<&mut Self, sqlx::Error> {
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        Ok(self)
    }

    /// `(?, ?, ...)` with one placeholder per value, each bound.
    fn list<T: 'q + Encode<'q, Sqlite> + Type<Sqlite> + Copy>(
        &mut self,
        values: &[T],
    ) -> Result<&mut Self, sqlx::Error> {
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            self.push(if i == 0 { "?" } else { ", ?" }).bind(*v)?;
        }
        Ok(self.push(")"))
    }

    /// `VALUES (?, ...), (?, ...)`: `rows` rows of `cols` placeholders (bound by the caller).
    fn values(&mut self, rows: usize, cols: usize) -> &mut Self {
        let row = format!("({})", vec!["?"; cols].join(", "));
        self.push(" VALUES ");
        self.push(&vec![row; rows].join(", "))
    }
}

/// Reads what `items` name in one query: the embedded store's [`crate::authorize`] prefetch.
/// The transaction already holds the database's one write lock (`BEGIN IMMEDIATE`), so
/// nothing read can change before the commit, and the ids after the highest ever used are
/// free until then.
pub(crate) async fn prefetch<'i>(
    c: &mut SqliteConnection,
    items: &[BatchItem<'i>],
    clearing: &HashMap<Currency, i64>,
    tz: &TimeZone,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
) -> Result<Snapshot, sqlx::Error> {
    let mut s = Snapshot {
        clearing: clearing.clone(),
        time_zone: Some(tz.clone()),
        ..Snapshot::default()
    };
    let keys = distinct(items.iter().map(|i| i.call.idempotency_key));
    let tids = distinct(items.iter().map(|i| i.tx.transaction_id));
    let owners = distinct(
        items
            .iter()
            .filter_map(|i| i.tx.user_id.zip(Currency::parse(i.tx.currency).ok())),
    );
    let card_ids = cards_to_read(items);
    let (kinds, ids, windows) = counters_to_read(items, tz);
    let n = moving(items) as i64;

    let mut q = Statements::default();
    q.push(
        "SELECT 1 AS tag, key AS k, request_hash AS h, response_status AS st, response_body AS body \
         FROM idempotency_keys WHERE scope = ? AND key IN ",
    )
    .bind(SCOPE_AUTHORIZATION)?
    .list(&keys)?;
    q.push(
        ";\nSELECT 2 AS tag, transaction_id AS k, amount_minor, response_status AS st, \
         response_body AS body, verdict, endpoint, direction, tx_type, user_id, card_id, currency, amount_text \
         FROM processor_transactions WHERE kind = ? AND transaction_id IN ",
    )
    .bind(KIND_AUTHORIZATION)?
    .list(&tids)?;
    if !owners.is_empty() {
        q.push(";\n")
            .push(&account_columns!().replacen("SELECT ", "SELECT 3 AS tag, user_id, ", 1))
            .push(" WHERE kind = 'USER' AND (user_id, currency) IN (")
            .values(owners.len(), 2)
            .push(") ORDER BY id");
        for (user, currency) in &owners {
            q.bind(*user)?.bind(currency.code())?;
        }
    }
    if !card_ids.is_empty() {
        q.push(
            ";\nSELECT 4 AS tag, card_id AS k, user_id, status, blocked_mccs, controls FROM cards \
             WHERE card_id IN ",
        )
        .list(&card_ids)?;
    }
    if !kinds.is_empty() && !windows.is_empty() {
        q.push(
            ";\nSELECT 7 AS tag, owner_kind, owner_id, window_key, categories, amount_minor, count \
             FROM control_counters WHERE (owner_kind, owner_id) IN (",
        )
        .values(kinds.len(), 2)
        .push(") AND window_key IN ");
        for (k, id) in kinds.iter().zip(&ids) {
            q.bind(*k)?.bind(id.as_str())?;
        }
        let windows: Vec<&str> = windows.iter().map(String::as_str).collect();
        q.list(&windows)?;
    }
    if n > 0 {
        q.push(
            ";\nSELECT 5 AS tag, MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'movements'), 0), \
             COALESCE((SELECT MAX(id) FROM movements), 0)) AS id;\n\
             SELECT 6 AS tag, MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'postings'), 0), \
             COALESCE((SELECT MAX(id) FROM postings), 0)) AS id",
        );
    }

    let (mut last_movement, mut last_posting) = (0, 0);
    for r in sqlx::query_with(&q.sql, q.args).fetch_all(c).await? {
        match snapshot_row!(s, r, i64) {
            None => {}
            Some(7) => counter_from_row(
                &mut s,
                r.try_get("owner_kind")?,
                r.try_get("owner_id")?,
                r.try_get("window_key")?,
                r.try_get("categories")?,
                Counter {
                    amount: r.try_get("amount_minor")?,
                    count: r.try_get("count")?,
                },
            ),
            Some(5) => last_movement = r.try_get("id")?,
            _ => last_posting = r.try_get("id")?,
        }
    }
    cards_read.extend(card_ids.iter().map(|id| (*id, s.cards.get(*id).cloned())));
    if n > 0 {
        s.movement_ids = (last_movement + 1..=last_movement + n).collect();
        s.posting_ids = (last_posting + 1..=last_posting + 2 * n).collect();
    }
    Ok(s)
}

/// Writes a plan's rows in one query: the embedded store's [`crate::authorize`] write.
pub(crate) async fn write(
    c: &mut SqliteConnection,
    items: &[BatchItem<'_>],
    w: &Writes,
) -> Result<(), sqlx::Error> {
    let now = items.iter().map(|i| i.call.now_ms).max().unwrap_or(0);
    let mut q = Statements::default();
    if !w.movements.is_empty() {
        q.push(
            "INSERT INTO movements (id, kind, currency, processor_kind, transaction_id, created_at_ms)",
        )
        .values(w.movements.len(), 6)
        .push(";\n");
        for m in &w.movements {
            let item = &items[m.request];
            q.bind(m.id)?
                .bind(KIND_AUTHORIZATION)?
                .bind(m.currency.code())?
                .bind(KIND_AUTHORIZATION)?
                .bind(item.tx.transaction_id)?
                .bind(item.call.now_ms)?;
        }
    }
    if !w.postings.is_empty() {
        q.push(
            "INSERT INTO postings (id, movement_id, account_id, amount_minor, balance_after_minor, \
             account_version, created_at_ms)",
        )
        .values(w.postings.len(), 7)
        .push(";\n");
        for p in &w.postings {
            q.bind(p.id)?
                .bind(p.movement_id)?
                .bind(p.account_id)?
                .bind(p.amount)?
                .bind(p.balance_after)?
                .bind(p.version)?
                .bind(now)?;
        }
    }
    if !w.accounts.is_empty() {
        // VALUES columns are column1, column2, ...
        q.push(
            "UPDATE accounts SET balance_minor = v.column2, version = v.column3, \
             daily_spent_day = v.column4, daily_spent_minor = v.column5, updated_at_ms = v.column6, \
             counters = v.column7 FROM (",
        )
        .values(w.accounts.len(), 7)
        .push(") AS v WHERE accounts.id = v.column1;\n");
        for a in &w.accounts {
            q.bind(a.id)?
                .bind(a.balance)?
                .bind(a.version)?
                .bind(a.daily_spent_day)?
                .bind(a.daily_spent)?
                .bind(now)?
                .bind(a.counters.as_str())?;
        }
    }
    let new: Vec<_> = w
        .records
        .iter()
        .filter(|r| r.write == RecordWrite::Insert)
        .collect();
    if !new.is_empty() {
        q.push(
            "INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, \
             user_id, card_id, currency, amount_text, amount_minor, status, status_detail, flags, \
             original_transaction_id, idempotency_key, movement_id, request_body, response_status, \
             response_body, created_at_ms, updated_at_ms, explanation, controls_counted)",
        )
        .values(new.len(), 23)
        .push(";\n");
        let flags = Flags::default().stored();
        for r in &new {
            let (call, t) = (&items[r.request].call, &items[r.request].tx);
            q.bind(KIND_AUTHORIZATION)?
                .bind(t.transaction_id)?
                .bind(call.endpoint)?
                .bind(direction_str(items[r.request].kind))?
                .bind(t.tx_type)?
                .bind(t.user_id)?
                .bind(t.card_id)?
                .bind(t.currency)?
                .bind(t.amount_text)?
                .bind(r.amount_minor)?
                .bind(r.status)?
                .bind(r.status_detail)?
                .bind(flags.clone())?
                .bind(t.original_transaction_id)?
                .bind(call.idempotency_key)?
                .bind(r.movement_id)?
                .bind(call.raw_body)?
                .bind(i32::from(r.response.status))?
                .bind(&r.response.body[..])?
                .bind(call.now_ms)?
                .bind(call.now_ms)?
                .bind(r.explanation.as_deref())?
                .bind(r.counted.as_deref())?;
        }
    }
    for r in w.records.iter().filter(|r| r.write == RecordWrite::Answer) {
        let item = &items[r.request];
        let (call, t) = (&item.call, &item.tx);
        // The record now holds what the authorization asked, not what the verdict's detail
        // carried: a resend of this authorization is compared with it.
        q.push(
            "UPDATE processor_transactions SET endpoint = ?, idempotency_key = ?, request_body = ?, \
             response_status = ?, response_body = ?, status = ?, status_detail = ?, updated_at_ms = ?, \
             direction = ?, tx_type = ?, user_id = ?, card_id = ?, currency = ?, amount_text = ? \
             WHERE kind = ? AND transaction_id = ?;\n",
        )
        .bind(call.endpoint)?
        .bind(call.idempotency_key)?
        .bind(call.raw_body)?
        .bind(i32::from(r.response.status))?
        .bind(&r.response.body[..])?
        .bind(r.status)?
        .bind(r.status_detail)?
        .bind(call.now_ms)?
        .bind(direction_str(item.kind))?
        .bind(t.tx_type)?
        .bind(t.user_id)?
        .bind(t.card_id)?
        .bind(t.currency)?
        .bind(t.amount_text)?
        .bind(KIND_AUTHORIZATION)?
        .bind(t.transaction_id)?;
    }
    if !w.counters.is_empty() {
        q.push(
            "INSERT INTO control_counters AS c (owner_kind, owner_id, window_key, categories, \
             amount_minor, count, updated_at_ms)",
        )
        .values(w.counters.len(), 7)
        .push(
            " ON CONFLICT (owner_kind, owner_id, window_key, categories) DO UPDATE \
             SET amount_minor = MAX(0, c.amount_minor + excluded.amount_minor), \
             count = MAX(0, c.count + excluded.count), updated_at_ms = excluded.updated_at_ms;\n",
        );
        for cw in &w.counters {
            let (window, categories) = cw.columns();
            q.bind(owner_kind(cw.owner))?
                .bind(cw.owner_id.as_str())?
                .bind(window)?
                .bind(categories)?
                .bind(cw.amount.max(0))?
                .bind(cw.count.max(0))?
                .bind(now)?;
        }
    }
    if !w.keys.is_empty() {
        q.push(
            "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, \
             response_body, created_at_ms)",
        )
        .values(w.keys.len(), 7)
        .push(";\n");
        for k in &w.keys {
            let call = &items[k.request].call;
            q.bind(SCOPE_AUTHORIZATION)?
                .bind(call.idempotency_key)?
                .bind(&call.request_hash[..])?
                .bind(call.endpoint)?
                .bind(i32::from(k.response.status))?
                .bind(&k.response.body[..])?
                .bind(call.now_ms)?;
        }
    }
    if !q.sql.is_empty() {
        sqlx::query_with(&q.sql, q.args).execute(c).await?;
    }
    Ok(())
}
