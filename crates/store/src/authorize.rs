//! Authorizations in one transaction, on either backend: prefetch what the requests' keys
//! name (locking it), plan them with [`ledger::plan::plan_authorizations`], write the plan's
//! rows, commit once. The embedded store runs every batch this way (its one connection is
//! the one writer: one durable commit per batch), and so does a request alone (the items of
//! a Postgres batch that lost a race on a unique key, each a batch of one). Postgres batches
//! take the two statement path of [`crate::batch`], which feeds the same plan.
//!
//! Nothing here decides: the rules are the plan's; this module only reads rows into a
//! snapshot and turns rows to write into statements.

use crate::batch::{BatchItem, abandoned, deadline_passed, snapshot_row, start_commit};
use crate::embedded;
use crate::events::{AUTHORIZATION_DECIDED, authorizations};
use crate::outbox::Handed;
use crate::processor::{
    Asked, KIND_AUTHORIZATION, LockedAccount, ProcessorCall, SCOPE_AUTHORIZATION, Step,
    TransactionRecord, account_columns, insert_transaction_record, load_card_record, retry_races,
};
use crate::rules::{CardLookup, CardRecord};
use crate::{Flags, Store, StoreError, Tx, run};
use ledger::controls::{Counter, CounterKey, Owner, TimeZone};
use ledger::plan::{
    AuthorizationRequest, AuthorizationResult, CardTransaction, Outcome, RecordWrite, Snapshot,
    Writes, direction_str, owner_kind, plan_authorizations,
};
use ledger::{Currency, RequestKind, SystemAccount};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// The request a batch item asks the plan for.
pub(crate) fn request_of<'a>(item: &'a BatchItem<'a>) -> AuthorizationRequest<'a> {
    AuthorizationRequest {
        idempotency_key: item.call.idempotency_key,
        request_hash: &item.call.request_hash,
        endpoint: item.call.endpoint,
        now_ms: item.call.now_ms,
        tx: item.tx,
        kind: item.kind,
        card: item.card,
    }
}

/// How many of `items` may move money: each needs a movement id and two posting ids.
pub(crate) fn moving(items: &[BatchItem<'_>]) -> usize {
    items
        .iter()
        .filter(|i| matches!(i.kind, Some(RequestKind::Debit | RequestKind::Credit)))
        .count()
}

/// The cards `items` did not know beforehand, each once.
pub(crate) fn cards_to_read<'i>(items: &[BatchItem<'i>]) -> Vec<&'i str> {
    let mut seen = HashSet::new();
    items
        .iter()
        .filter(|i| matches!(i.card, CardLookup::InTransaction))
        .filter_map(|i| i.tx.card_id)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// The cardholder accounts `items` name, (user, currency), each once.
pub(crate) fn accounts_to_read<'i>(items: &[BatchItem<'i>]) -> Vec<(&'i str, Currency)> {
    distinct(
        items
            .iter()
            .filter_map(|i| i.tx.user_id.zip(Currency::parse(i.tx.currency).ok())),
    )
}

/// A batch's snapshot before anything is read: the clearing accounts (known beforehand)
/// and the controls' time zone.
pub(crate) fn unread_snapshot(clearing: &HashMap<Currency, i64>, tz: &TimeZone) -> Snapshot {
    Snapshot {
        clearing: clearing.clone(),
        time_zone: Some(tz.clone()),
        ..Snapshot::default()
    }
}

/// The control counters `items` may read: the owners (kinds and ids, pairwise: every
/// card) and the windows holding their instants. An account's counters are read with the
/// account (its `counters` column).
pub(crate) fn counters_to_read(
    items: &[BatchItem<'_>],
    tz: &TimeZone,
) -> (Vec<&'static str>, Vec<String>, Vec<String>) {
    let mut owners: Vec<(&'static str, String)> = Vec::new();
    for i in items {
        if let Some(card) = i.tx.card_id {
            owners.push((owner_kind(Owner::Card), card.to_owned()));
        }
    }
    owners.sort_unstable();
    owners.dedup();
    let mut windows: Vec<String> =
        ledger::plan::windows_of(items.iter().map(|i| i.call.now_ms), tz)
            .iter()
            .map(ToString::to_string)
            .collect();
    windows.sort_unstable();
    let (kinds, ids) = owners.into_iter().unzip();
    (kinds, ids, windows)
}

/// Adds a stored counter row to the snapshot.
pub(crate) fn counter_from_row(
    s: &mut Snapshot,
    kind: String,
    owner_id: String,
    window: String,
    categories: String,
    counter: Counter,
) {
    let owner = if kind == owner_kind(Owner::Card) {
        Owner::Card
    } else {
        Owner::Account
    };
    if let Some(key) = CounterKey::from_columns(&window, &categories) {
        s.counters
            .entry((owner, owner_id))
            .or_default()
            .insert(key, counter);
    }
}

/// Adds a stored counter row (`owner_kind, owner_id, window_key, categories, amount_minor,
/// count`) to the snapshot `s`, on any row with sqlx's `try_get`.
macro_rules! counter_row {
    ($s:expr, $r:expr) => {{
        let r = &$r;
        $crate::authorize::counter_from_row(
            &mut $s,
            r.try_get("owner_kind")?,
            r.try_get("owner_id")?,
            r.try_get("window_key")?,
            r.try_get("categories")?,
            ledger::controls::Counter {
                amount: r.try_get("amount_minor")?,
                count: r.try_get("count")?,
            },
        )
    }};
}
pub(crate) use counter_row;

impl Store {
    /// Decides and books an authorization exactly once. `render` turns the decision into
    /// the exact response body, which is stored with the movement.
    pub async fn authorize<R>(
        &self,
        call: &ProcessorCall<'_>,
        t: &CardTransaction<'_>,
        kind: Option<RequestKind>,
        render: R,
    ) -> Result<Outcome<AuthorizationResult>, StoreError>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        self.authorize_with(call, t, kind, CardLookup::InTransaction, render)
            .await
    }

    /// [`Store::authorize`] with the card's rules known beforehand (from a cache): the
    /// card is then not read. The account, its balance and its rules are still read under
    /// the row lock. A batch of one through the same path as every embedded batch.
    pub async fn authorize_with<R>(
        &self,
        call: &ProcessorCall<'_>,
        t: &CardTransaction<'_>,
        kind: Option<RequestKind>,
        card: CardLookup<'_>,
        render: R,
    ) -> Result<Outcome<AuthorizationResult>, StoreError>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let items = [BatchItem {
            call: *call,
            tx: *t,
            kind,
            card,
        }];
        let clearing = self.clearing_accounts(&items).await?;
        // Two duplicates racing past the prefetch meet at the unique keys of the records
        // they insert; the loser rolls back, and its next try replays the winner.
        retry_races(|| async {
            let mut cards = Vec::new();
            let outcomes = self
                .authorize_in_tx(&items, &clearing, &render, &mut cards)
                .await?;
            outcomes
                .into_iter()
                .next()
                .ok_or_else(|| Step::Fail(StoreError::Invalid("no outcome planned".into())))
        })
        .await
    }

    /// The processor clearing account of every currency `items` name (cached ids: no round
    /// trip once known).
    pub(crate) async fn clearing_accounts(
        &self,
        items: &[BatchItem<'_>],
    ) -> Result<HashMap<Currency, i64>, StoreError> {
        let mut clearing = HashMap::new();
        for item in items {
            if let Ok(c) = Currency::parse(item.tx.currency)
                && !clearing.contains_key(&c)
            {
                clearing.insert(
                    c,
                    self.system_account(SystemAccount::ProcessorClearing, c)
                        .await?,
                );
            }
        }
        Ok(clearing)
    }

    /// Prefetch, plan, write and commit `items` in one transaction. A plan that decides
    /// commits only within every requester's deadline and once every commit gate is taken;
    /// one that only records (replays under new keys, a verdict's answer) commits anyway;
    /// one that writes nothing rolls back. The cards read go to `cards_read`.
    pub(crate) async fn authorize_in_tx<'i, R>(
        &self,
        items: &[BatchItem<'i>],
        clearing: &HashMap<Currency, i64>,
        render: &R,
        cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
    ) -> Result<Vec<Outcome<AuthorizationResult>>, Step>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let mut tx = self.begin().await?;
        let (outcomes, written, handed) =
            authorize_on(self, &mut tx, items, clearing, render, cards_read).await?;
        if written == Written::Nothing {
            // Dropping the transaction rolls it back: it holds only reads.
            return Ok(outcomes);
        }
        if written == Written::Decisions {
            if deadline_passed(items) {
                // Dropping the transaction rolls it back: nothing is booked.
                return Err(Step::Fail(StoreError::Timeout(
                    "authorization deadline passed".into(),
                )));
            }
            if !start_commit(items) {
                return Err(Step::Fail(abandoned()));
            }
        }
        if let Err(e) = tx.commit().await {
            self.commit_uncertain(&handed);
            return Err(e.into());
        }
        self.hand_over(handed);
        Ok(outcomes)
    }
}

/// What [`authorize_on`] wrote into its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Only reads: nothing to commit.
    Nothing,
    /// Records only (replays under new keys, a verdict's answer): commit whenever.
    Records,
    /// Decisions: commit only within every requester's deadline, every gate taken.
    Decisions,
}

/// Prefetch, plan and write `items` on `tx`, which the caller commits (or drops), then
/// hands the deliveries returned to the dispatcher ([`Store::hand_over`]). Inside a
/// transaction that already wrote, the prefetch sees those rows: the plan starts from the
/// state the earlier requests of the batch left.
pub(crate) async fn authorize_on<'i, R>(
    store: &Store,
    tx: &mut Tx,
    items: &[BatchItem<'i>],
    clearing: &HashMap<Currency, i64>,
    render: &R,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
) -> Result<(Vec<Outcome<AuthorizationResult>>, Written, Vec<Handed>), Step>
where
    R: Fn(&AuthorizationResult) -> Vec<u8>,
{
    let tz = &store.controls_time_zone;
    let requests: Vec<_> = items.iter().map(request_of).collect();
    let planned = |snapshot| {
        plan_authorizations(snapshot, &requests, render)
            .map_err(|e| Step::Fail(StoreError::Invalid(e.to_string())))
    };
    let plan = match tx {
        // The embedded store reads, plans and writes on its connection's handle, lent by
        // sqlx's thread for the batch: no hop per statement.
        Tx::Lite(t) => {
            let mut lent = t.lock_handle().await?;
            embedded::on_lent(&mut lent, |c| {
                let plan = planned(embedded::prefetch(c, items, clearing, tz, cards_read)?)?;
                embedded::write(c, items, &plan.writes)?;
                Ok(plan)
            })?
        }
        Tx::Pg(_) => {
            let plan = planned(prefetch(tx, items, clearing, tz, cards_read).await?)?;
            if !plan.writes.is_empty() {
                write(tx, items, &plan.writes).await?;
            }
            plan
        }
    };
    if plan.writes.is_empty() {
        return Ok((plan.outcomes, Written::Nothing, Vec::new()));
    }
    let handed = store
        .publish_handed(tx, AUTHORIZATION_DECIDED, || {
            authorizations(items, &plan.writes)
        })
        .await?;
    let written = if plan.writes.decides() {
        Written::Decisions
    } else {
        Written::Records
    };
    Ok((plan.outcomes, written, handed))
}

/// Reads what `items` name on `tx`: finished keys, recorded transactions and cardholder
/// accounts (locked for the rest of the transaction, accounts in id order), the cards not
/// known beforehand, the counters of the cards (the rows of those with controls locked
/// first, `controls::lock_cards`), and ids for what the plan may write (reserved after the account locks,
/// so one account's postings are numbered in the order of its balance-after chain). One
/// statement per kind of row, whatever the batch's size. Postgres only: the embedded store
/// reads (and writes) a batch on its lent handle (`embedded.rs`).
async fn prefetch<'i>(
    tx: &mut Tx,
    items: &[BatchItem<'i>],
    clearing: &HashMap<Currency, i64>,
    tz: &TimeZone,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
) -> Result<Snapshot, sqlx::Error> {
    let mut s = unread_snapshot(clearing, tz);
    let keys = distinct(items.iter().map(|i| i.call.idempotency_key));
    let sql = format!(
        "SELECT 1 AS tag, key AS k, request_hash AS h, response_status AS st, \
         response_body AS body, endpoint FROM idempotency_keys WHERE scope = $1 AND key IN {}",
        placeholders(1, keys.len(), 2)
    );
    read_into(tx, &mut s, &sql, SCOPE_AUTHORIZATION, &keys).await?;
    if items
        .iter()
        .all(|i| s.keys.contains_key(i.call.idempotency_key))
    {
        // Replays only: nothing else is needed, and nothing is locked.
        return Ok(s);
    }
    let tids = distinct(items.iter().map(|i| i.tx.transaction_id));
    let sql = format!(
        "SELECT 2 AS tag, transaction_id AS k, amount_minor, response_status AS st, \
         response_body AS body, verdict, endpoint, direction, tx_type, user_id, card_id, currency, \
         amount_text FROM processor_transactions WHERE kind = $1 AND transaction_id IN {} FOR UPDATE",
        placeholders(1, tids.len(), 2)
    );
    read_into(tx, &mut s, &sql, KIND_AUTHORIZATION, &tids).await?;
    let owners = accounts_to_read(items);
    if !owners.is_empty() {
        let sql = format!(
            "{} WHERE kind = 'USER' AND (user_id, currency) IN (VALUES {}) ORDER BY id FOR UPDATE",
            account_columns!().replacen("SELECT ", "SELECT 3 AS tag, user_id, ", 1),
            placeholders(owners.len(), 2, 1)
        );
        run!(tx, c => {
            let mut q = sqlx::query(&sql);
            for (user, currency) in &owners {
                q = q.bind(*user).bind(currency.code());
            }
            for r in q.fetch_all(c).await? {
                snapshot_row!(s, r, i32);
            }
        });
    }
    for id in cards_to_read(items) {
        let record = load_card_record(tx, id).await?;
        if let Some(r) = &record {
            s.cards.insert(id.to_owned(), r.clone());
        }
        cards_read.push((id, record));
    }
    crate::controls::lock_cards_in(tx, &crate::controls::controlled_cards(items, &s)).await?;
    let (kinds, ids, windows) = counters_to_read(items, tz);
    if !kinds.is_empty() && !windows.is_empty() {
        let sql = format!(
            "SELECT owner_kind, owner_id, window_key, categories, amount_minor, count \
             FROM control_counters WHERE (owner_kind, owner_id) IN (VALUES {}) \
             AND window_key IN {}",
            placeholders(kinds.len(), 2, 1),
            placeholders(1, windows.len(), 2 * kinds.len() + 1)
        );
        run!(tx, c => {
            let mut q = sqlx::query(&sql);
            for (k, id) in kinds.iter().zip(&ids) {
                q = q.bind(*k).bind(id.as_str());
            }
            for w in &windows {
                q = q.bind(w.as_str());
            }
            for r in q.fetch_all(c).await? {
                counter_row!(s, r);
            }
        });
    }
    let n = moving(items) as i64;
    if n > 0 {
        s.movement_ids = reserve_ids(tx, "movements", n).await?;
        s.posting_ids = reserve_ids(tx, "postings", 2 * n).await?;
    }
    Ok(s)
}

/// Reads the rows `sql` selects (`$1` bound to `first`, then one parameter per id) into
/// `s` (see [`snapshot_row`]).
async fn read_into(
    tx: &mut Tx,
    s: &mut Snapshot,
    sql: &str,
    first: &str,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        let mut q = sqlx::query(sql).bind(first);
        for id in ids {
            q = q.bind(*id);
        }
        for r in q.fetch_all(c).await? {
            snapshot_row!(*s, r, i32);
        }
    });
    Ok(())
}

/// The distinct values of `values`, in first-seen order.
pub(crate) fn distinct<T: Eq + std::hash::Hash + Copy>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}

/// Numbered placeholders for `rows` rows of `cols` values from `$first` on:
/// `($1, $2), ($3, $4)`; one row of one column per value when `cols` is 1 and `rows` 1 is
/// asked for a list: `placeholders(1, n, k)` is `($k, ..., $k+n-1)`.
pub(crate) fn placeholders(rows: usize, cols: usize, first: usize) -> String {
    let row = |r: usize| {
        let cells: Vec<String> = (0..cols)
            .map(|c| format!("${}", first + r * cols + c))
            .collect();
        format!("({})", cells.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// `n` ids for new rows of `table`, ascending, from its Postgres sequence.
async fn reserve_ids(tx: &mut Tx, table: &'static str, n: i64) -> Result<Vec<i64>, sqlx::Error> {
    let Tx::Pg(t) = tx else {
        return Err(sqlx::Error::Protocol(
            "ids are reserved from Postgres sequences only".into(),
        ));
    };
    let sql = match table {
        "movements" => {
            "SELECT nextval('movements_id_seq') FROM generate_series(1, $1::int8) ORDER BY 1"
        }
        _ => "SELECT nextval('postings_id_seq') FROM generate_series(1, $1::int8) ORDER BY 1",
    };
    sqlx::query_scalar(sql).bind(n).fetch_all(&mut **t).await
}

/// Inserts `rows` (each `cols` values, bound by `|q, row| ...`) with one statement.
macro_rules! insert_rows {
    ($tx:expr, $head:expr, $rows:expr, $cols:expr, |$q:ident, $row:ident| $bind:expr) => {
        if !$rows.is_empty() {
            let sql = format!("{} VALUES {}", $head, placeholders($rows.len(), $cols, 1));
            run!($tx, c => {
                let mut $q = sqlx::query(&sql);
                for $row in $rows.iter() {
                    $q = $bind;
                }
                $q.execute(c).await?.rows_affected()
            });
        }
    };
}

/// Writes a plan's rows on `tx`: one statement per table (a request's record row alone is
/// one statement each). Postgres's path: the embedded store writes with `embedded::write`.
async fn write(tx: &mut Tx, items: &[BatchItem<'_>], w: &Writes) -> Result<(), sqlx::Error> {
    let now = items.iter().map(|i| i.call.now_ms).max().unwrap_or(0);
    insert_rows!(
        tx,
        "INSERT INTO movements (id, kind, currency, processor_kind, transaction_id, created_at_ms)",
        w.movements,
        6,
        |q, m| q
            .bind(m.id)
            .bind(KIND_AUTHORIZATION)
            .bind(m.currency.code())
            .bind(KIND_AUTHORIZATION)
            .bind(items[m.request].tx.transaction_id)
            .bind(items[m.request].call.now_ms)
    );
    insert_rows!(
        tx,
        "INSERT INTO postings (id, movement_id, account_id, amount_minor, balance_after_minor, \
         account_version, created_at_ms)",
        w.postings,
        7,
        |q, p| q
            .bind(p.id)
            .bind(p.movement_id)
            .bind(p.account_id)
            .bind(p.amount)
            .bind(p.balance_after)
            .bind(p.version)
            .bind(now)
    );
    if !w.accounts.is_empty() {
        // VALUES columns are column1, column2, ... on both backends.
        let sql = format!(
            "UPDATE accounts SET balance_minor = v.column2, version = v.column3, \
             daily_spent_day = v.column4, daily_spent_minor = v.column5, counters = v.column6, \
             updated_at_ms = $1 FROM (VALUES {}) AS v WHERE accounts.id = v.column1",
            placeholders(w.accounts.len(), 6, 2)
        );
        run!(tx, c => {
            let mut q = sqlx::query(&sql).bind(now);
            for a in &w.accounts {
                q = q
                    .bind(a.id)
                    .bind(a.balance)
                    .bind(a.version)
                    .bind(a.daily_spent_day)
                    .bind(a.daily_spent)
                    .bind(a.counters.as_str());
            }
            q.execute(c).await?.rows_affected()
        });
    }
    for r in &w.records {
        let item = &items[r.request];
        match r.write {
            RecordWrite::Insert => {
                insert_transaction_record(
                    tx,
                    &TransactionRecord {
                        kind: KIND_AUTHORIZATION,
                        call: Some(&item.call),
                        tx: &item.tx,
                        direction: item.kind,
                        amount_minor: r.amount_minor,
                        status: Some(r.status),
                        status_detail: Some(r.status_detail),
                        flags: &Flags::default(),
                        movement_id: r.movement_id,
                        response: Some(&r.response),
                        verdict: None,
                        now_ms: item.call.now_ms,
                    },
                )
                .await?
            }
            RecordWrite::Answer => {
                let (call, t) = (&item.call, &item.tx);
                run!(tx, c => {
                    // The record now holds what the authorization asked, not what the
                    // verdict's detail carried: a resend of this authorization is compared
                    // with it.
                    sqlx::query(
                        "UPDATE processor_transactions SET endpoint = $1, idempotency_key = $2, \
                         request_body = $3, response_status = $4, response_body = $5, status = $6, \
                         status_detail = $7, updated_at_ms = $8, direction = $11, tx_type = $12, \
                         user_id = $13, card_id = $14, currency = $15, amount_text = $16 \
                         WHERE kind = $9 AND transaction_id = $10",
                    )
                    .bind(call.endpoint)
                    .bind(call.idempotency_key)
                    .bind(call.raw_body)
                    .bind(i32::from(r.response.status))
                    .bind(&r.response.body[..])
                    .bind(r.status)
                    .bind(r.status_detail)
                    .bind(call.now_ms)
                    .bind(KIND_AUTHORIZATION)
                    .bind(t.transaction_id)
                    .bind(direction_str(item.kind))
                    .bind(t.tx_type)
                    .bind(t.user_id)
                    .bind(t.card_id)
                    .bind(t.currency)
                    .bind(t.amount_text)
                    .execute(c)
                    .await?
                    .rows_affected()
                });
            }
        }
    }
    let explained: Vec<_> = w
        .records
        .iter()
        .filter(|r| r.write == RecordWrite::Insert && r.explanation.is_some())
        .collect();
    if !explained.is_empty() {
        let sql = format!(
            "UPDATE processor_transactions SET explanation = v.column2, controls_counted = v.column3 \
             FROM (VALUES {}) AS v WHERE kind = $1 AND transaction_id = v.column1",
            placeholders(explained.len(), 3, 2)
        );
        run!(tx, c => {
            let mut q = sqlx::query(&sql).bind(KIND_AUTHORIZATION);
            for r in &explained {
                q = q
                    .bind(items[r.request].tx.transaction_id)
                    .bind(r.explanation.as_deref())
                    .bind(r.counted.as_deref());
            }
            q.execute(c).await?.rows_affected()
        });
    }
    crate::controls::add_counters(tx, &w.counters, now).await?;
    insert_rows!(
        tx,
        "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, \
         response_body, created_at_ms)",
        w.keys,
        7,
        |q, k| q
            .bind(SCOPE_AUTHORIZATION)
            .bind(items[k.request].call.idempotency_key)
            .bind(&items[k.request].call.request_hash[..])
            .bind(items[k.request].call.endpoint)
            .bind(i32::from(k.response.status))
            .bind(&k.response.body[..])
            .bind(items[k.request].call.now_ms)
    );
    Ok(())
}
