//! Authorizations in one transaction, on either backend: prefetch what the requests' keys
//! name (locking it), plan them with [`ledger::plan::plan_authorizations`], write the plan's
//! rows, commit once. The embedded store runs every batch this way (its one connection is
//! the one writer: one durable commit per batch), and so does a request alone (a Postgres
//! batch that lost a race, or `commit_batch_max = 1`). Postgres batches take the two
//! statement path of [`crate::batch`], which feeds the same plan.
//!
//! Nothing here decides: the rules are the plan's; this module only reads rows into a
//! snapshot and turns rows to write into statements.

use crate::batch::{BatchItem, abandoned, deadline_passed, start_commit};
use crate::processor::{
    KIND_AUTHORIZATION, ProcessorCall, SCOPE_AUTHORIZATION, Step, TransactionRecord,
    find_idempotent, find_transaction_record, insert_idempotent, insert_transaction_record,
    load_card_record, lock_user_account, retry_races,
};
use crate::rules::{CardLookup, CardRecord};
use crate::{Flags, Store, StoreError, Tx, run};
use ledger::plan::{
    AuthorizationRequest, AuthorizationResult, CardTransaction, KeyRecord, Outcome, RecordWrite,
    RecordedTransaction, Snapshot, Writes, direction_str, plan_authorizations,
};
use ledger::{Currency, RequestKind, SystemAccount};
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
        let snapshot = prefetch(&mut tx, items, clearing, cards_read).await?;
        let requests: Vec<_> = items.iter().map(request_of).collect();
        let plan = plan_authorizations(snapshot, &requests, render)
            .map_err(|e| Step::Fail(StoreError::Invalid(e.to_string())))?;
        if plan.writes.is_empty() {
            // Dropping the transaction rolls it back: it holds only reads.
            return Ok(plan.outcomes);
        }
        write(&mut tx, items, &plan.writes).await?;
        if plan.writes.decides() {
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
        tx.commit().await?;
        Ok(plan.outcomes)
    }
}

/// Reads what `items` name on `tx`: finished keys, recorded transactions and cardholder
/// accounts (locked for the rest of the transaction), the cards not known beforehand, and
/// ids for what the plan may write (reserved after the account locks, so one account's
/// postings are numbered in the order of its balance-after chain).
async fn prefetch<'i>(
    tx: &mut Tx,
    items: &[BatchItem<'i>],
    clearing: &HashMap<Currency, i64>,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
) -> Result<Snapshot, sqlx::Error> {
    let mut s = Snapshot {
        clearing: clearing.clone(),
        ..Snapshot::default()
    };
    for item in items {
        let key = item.call.idempotency_key;
        if !s.keys.contains_key(key)
            && let Some(rec) = find_idempotent(tx, SCOPE_AUTHORIZATION, key).await?
        {
            s.keys.insert(
                key.to_owned(),
                KeyRecord {
                    request_hash: rec.request_hash,
                    response: rec.response,
                },
            );
        }
    }
    if items
        .iter()
        .all(|i| s.keys.contains_key(i.call.idempotency_key))
    {
        // Replays only: nothing else is needed, and nothing is locked.
        return Ok(s);
    }
    let mut probed = HashSet::new();
    for item in items {
        let tid = item.tx.transaction_id;
        if probed.insert(tid)
            && let Some(e) = find_transaction_record(tx, KIND_AUTHORIZATION, tid, true).await?
        {
            s.transactions.insert(
                tid.to_owned(),
                RecordedTransaction {
                    amount_minor: e.amount_minor,
                    response: e.response,
                    verdict: e.verdict,
                    asked: e.asked,
                },
            );
        }
    }
    let mut probed = HashSet::new();
    for item in items {
        if let (Some(user), Ok(currency)) = (item.tx.user_id, Currency::parse(item.tx.currency))
            && probed.insert((user, currency))
            && let Some(a) = lock_user_account(tx, user, currency).await?
        {
            s.accounts.insert((user.to_owned(), currency), a);
        }
    }
    for id in cards_to_read(items) {
        let record = load_card_record(tx, id).await?;
        if let Some(r) = &record {
            s.cards.insert(id.to_owned(), r.clone());
        }
        cards_read.push((id, record));
    }
    let n = moving(items) as i64;
    if n > 0 {
        s.movement_ids = reserve_ids(tx, "movements", n).await?;
        s.posting_ids = reserve_ids(tx, "postings", 2 * n).await?;
    }
    Ok(s)
}

/// `n` ids for new rows of `table`, ascending. On SQLite the transaction holds the one
/// write lock, so the ids after the highest ever used are free until it ends.
async fn reserve_ids(tx: &mut Tx, table: &'static str, n: i64) -> Result<Vec<i64>, sqlx::Error> {
    match tx {
        Tx::Pg(t) => {
            let sql = match table {
                "movements" => {
                    "SELECT nextval('movements_id_seq') FROM generate_series(1, $1::int8) ORDER BY 1"
                }
                _ => {
                    "SELECT nextval('postings_id_seq') FROM generate_series(1, $1::int8) ORDER BY 1"
                }
            };
            sqlx::query_scalar(sql).bind(n).fetch_all(&mut **t).await
        }
        Tx::Lite(t) => {
            let sql = match table {
                "movements" => {
                    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'movements'), 0), \
                     COALESCE((SELECT MAX(id) FROM movements), 0))"
                }
                _ => {
                    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'postings'), 0), \
                     COALESCE((SELECT MAX(id) FROM postings), 0))"
                }
            };
            let last: i64 = sqlx::query_scalar(sql).fetch_one(&mut **t).await?;
            Ok((last + 1..=last + n).collect())
        }
    }
}

/// Writes a plan's rows on `tx`, one statement per row (the embedded store runs in process,
/// where a statement costs no round trip).
async fn write(tx: &mut Tx, items: &[BatchItem<'_>], w: &Writes) -> Result<(), sqlx::Error> {
    for m in &w.movements {
        let item = &items[m.request];
        run!(tx, c => {
            sqlx::query(
                "INSERT INTO movements (id, kind, currency, processor_kind, transaction_id, reference, created_at_ms) \
                 VALUES ($1, $2, $3, $2, $4, NULL, $5)",
            )
            .bind(m.id)
            .bind(KIND_AUTHORIZATION)
            .bind(m.currency.code())
            .bind(item.tx.transaction_id)
            .bind(item.call.now_ms)
            .execute(c)
            .await?
            .rows_affected()
        });
    }
    let now = items.iter().map(|i| i.call.now_ms).max().unwrap_or(0);
    for p in &w.postings {
        run!(tx, c => {
            sqlx::query(
                "INSERT INTO postings \
                 (id, movement_id, account_id, amount_minor, balance_after_minor, account_version, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(p.id)
            .bind(p.movement_id)
            .bind(p.account_id)
            .bind(p.amount)
            .bind(p.balance_after)
            .bind(p.version)
            .bind(now)
            .execute(c)
            .await?
            .rows_affected()
        });
    }
    for a in &w.accounts {
        run!(tx, c => {
            sqlx::query(
                "UPDATE accounts SET balance_minor = $1, version = $2, daily_spent_day = $3, \
                 daily_spent_minor = $4, updated_at_ms = $5 WHERE id = $6",
            )
            .bind(a.balance)
            .bind(a.version)
            .bind(a.daily_spent_day)
            .bind(a.daily_spent)
            .bind(now)
            .bind(a.id)
            .execute(c)
            .await?
            .rows_affected()
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
    for k in &w.keys {
        let call = &items[k.request].call;
        insert_idempotent(
            tx,
            SCOPE_AUTHORIZATION,
            call.idempotency_key,
            &call.request_hash,
            call.endpoint,
            &k.response,
            call.now_ms,
        )
        .await?;
    }
    Ok(())
}
