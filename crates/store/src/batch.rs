//! Grouped commits: many authorizations in one Postgres commit, with two statements per
//! batch instead of several statements per authorization, and one WAL flush for all of them.
//!
//! A batch reads everything it needs in one statement (idempotency records, recorded
//! transactions, cardholder accounts, cards, and ids for what it may write), decides in
//! memory, and writes everything in one statement that is its own commit. No lock is held
//! between the two: the write names the version and balance each account had when read, and
//! aborts as a whole if one moved. A batch that lost such a race (hot accounts) runs again in a
//! transaction that locks its accounts in id order, so concurrent batches (and other
//! instances) cannot deadlock.
//!
//! Each authorization keeps its exact per-request meaning: decisions are taken in arrival
//! order against the balances the earlier ones in the batch left; a duplicate inside the
//! batch replays the first answer. If the batch loses a race on a unique key to another
//! request, nothing of it is written and every item runs alone through the single-request
//! path, which replays the winner: one request never fails its neighbours.

use crate::processor::{
    AuthorizationResult, CardTransaction, KIND_AUTHORIZATION, LockedAccount, Outcome,
    ProcessorCall, SCOPE_AUTHORIZATION, Step as ItemStep, authorize_in, direction_str,
    load_card_record, locked_account_from_row, status_of,
};
use crate::rules::{CardLookup, CardRecord};
use crate::{Db, Store, StoreError, StoredResponse, day_of, is_unique_violation};
use ledger::{
    AuthorizationInput, Currency, Decision, RequestKind, SystemAccount, decide, to_minor,
};
use sqlx::Row;
use std::collections::HashMap;
use std::time::Instant;

/// One authorization of a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub call: ProcessorCall<'a>,
    pub tx: CardTransaction<'a>,
    pub kind: Option<RequestKind>,
    /// The card's rules when known beforehand (from a cache); otherwise read in the batch.
    pub card: CardLookup<'a>,
}

/// How a batch attempt ended.
enum Attempt {
    /// Per item: the outcome, or `None` to run it alone afterwards.
    Done(Vec<Option<Outcome<AuthorizationResult>>>),
    /// Lost a race on a unique key: run every item alone.
    Fallback,
}

struct Posting {
    movement: usize,
    account_id: i64,
    amount: i64,
    balance_after: Option<i64>,
    version: Option<i64>,
}

/// The reads of a batch (see `batch_in`); one row shape for all branches, told apart by `tag`.
/// Without locks; `READ_BATCH_LOCKING` is the same with `FOR UPDATE` where `/*LOCK*/` stands.
/// Every lookup is a LATERAL probe of a unique index per wanted key (`LIMIT 1` keeps the
/// planner from flattening it into a hash join), so the plan stays an index probe per key
/// also when Postgres switches to a generic plan built while the table was small.
/// (`kind = $3 AND transaction_id = ANY($4)`, or a join, ended up as an index scan on `kind`
/// alone, a pass over every authorization of the table per batch: batches slowed down as the
/// ledger grew.)
const READ_BATCH: &str = "\
SELECT 1 AS tag, key AS k, request_hash AS h, response_status AS st, response_body AS body, \
       NULL::int8 AS id, NULL::text AS user_id, NULL::text AS currency, NULL::int8 AS balance_minor, \
       NULL::int8 AS version, NULL::int8 AS overdraft_limit_minor, NULL::int8 AS per_transaction_limit_minor, \
       NULL::int8 AS daily_limit_minor, NULL::int8 AS daily_spent_day, NULL::int8 AS daily_spent_minor, \
       NULL::text AS blocked_mccs, NULL::text AS status, NULL::int8 AS held_minor \
  FROM UNNEST($2::text[]) AS x(wanted), \
       LATERAL (SELECT * FROM idempotency_keys WHERE scope = $1 AND key = x.wanted LIMIT 1) i \
UNION ALL \
SELECT 2, transaction_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       NULL, NULL, NULL, NULL, NULL, NULL \
  FROM UNNEST($4::text[]) AS x(tid), \
       LATERAL (SELECT transaction_id FROM processor_transactions \
                 WHERE kind = $3 AND transaction_id = x.tid LIMIT 1 /*LOCK*/) t \
UNION ALL \
SELECT 3, NULL, NULL, NULL, NULL, id, user_id, currency, balance_minor, version, overdraft_limit_minor, \
       per_transaction_limit_minor, daily_limit_minor, daily_spent_day, daily_spent_minor, blocked_mccs, NULL, held_minor \
  FROM (SELECT id, user_id, currency, balance_minor, version, overdraft_limit_minor, \
               per_transaction_limit_minor, daily_limit_minor, daily_spent_day, daily_spent_minor, blocked_mccs, held_minor \
          FROM accounts WHERE kind = 'USER' \
           AND (user_id, currency) IN (SELECT * FROM UNNEST($5::text[], $6::text[])) \
         ORDER BY id /*LOCK*/) a \
UNION ALL \
SELECT 4, card_id, NULL, NULL, NULL, NULL, user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       blocked_mccs, status, NULL \
  FROM UNNEST($7::text[]) AS x(wanted), LATERAL (SELECT * FROM cards WHERE card_id = x.wanted LIMIT 1) c \
UNION ALL \
SELECT 5, NULL, NULL, NULL, NULL, nextval('movements_id_seq'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       NULL, NULL, NULL, NULL, NULL \
  FROM generate_series(1, $8::int8) \
UNION ALL \
SELECT 6, NULL, NULL, NULL, NULL, nextval('postings_id_seq'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       NULL, NULL, NULL, NULL, NULL \
  FROM generate_series(1, 2 * $8::int8)";

/// The same reads, locking the transactions and accounts they read (in id order).
static READ_BATCH_LOCKING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| READ_BATCH.replace("/*LOCK*/", "FOR UPDATE"));

/// The writes of a batch, in one statement: movements, postings, account balances, the
/// processor transactions and the idempotency records. Empty arrays write nothing. Without
/// locks taken earlier this statement is the commit, which the requesters wait for: it must
/// not wait on a row lock, so it first locks its accounts with NOWAIT (`lk`, evaluated once
/// before the update's first row) and fails at once, as a lost race, if one is held.
const WRITE_BATCH: &str = "\
WITH lk AS ( \
  SELECT id FROM accounts WHERE id = ANY($11::int8[]) FOR UPDATE NOWAIT \
), m AS ( \
  INSERT INTO movements (id, kind, currency, processor_kind, transaction_id, reference, created_at_ms) \
  SELECT id, 'AUTHORIZATION', cur, 'AUTHORIZATION', tid, NULL, $4 \
    FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, cur, tid) \
), p AS ( \
  INSERT INTO postings (id, movement_id, account_id, amount_minor, balance_after_minor, account_version, created_at_ms) \
  SELECT id, mid, aid, amt, bal, ver, $4 \
    FROM UNNEST($5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[]) AS u(id, mid, aid, amt, bal, ver) \
), a AS ( \
  UPDATE accounts a SET balance_minor = u.b, version = u.v, daily_spent_day = u.d, \
         daily_spent_minor = u.s, updated_at_ms = $4 \
    FROM UNNEST($11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $39::int8[], $40::int8[], \
                $42::int8[]) AS u(id, b, v, d, s, ov, ob, oh) \
   WHERE a.id = u.id AND a.version = u.ov AND a.balance_minor = u.ob AND a.held_minor = u.oh \
     AND (SELECT count(*) FROM lk) >= 0 \
   RETURNING a.id \
), t AS ( \
  INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, user_id, \
         card_id, currency, amount_text, amount_minor, status, status_detail, flags, original_transaction_id, \
         idempotency_key, movement_id, request_body, response_status, response_body, created_at_ms, updated_at_ms) \
  SELECT 'AUTHORIZATION', tid, ep, dir, typ, uid, cid, cur, atext, amin, st, sd, '', orig, ik, mid, rb, rs, resp, $4, $4 \
    FROM UNNEST($16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], \
                $23::text[], $24::int8[], $25::text[], $26::text[], $27::text[], $28::text[], $29::int8[], \
                $30::bytea[], $31::int4[], $32::bytea[]) \
      AS u(tid, ep, dir, typ, uid, cid, cur, atext, amin, st, sd, orig, ik, mid, rb, rs, resp) \
), k AS ( \
  INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, response_body, created_at_ms) \
  SELECT $33, k, h, ep, rs, body, $4 \
    FROM UNNEST($34::text[], $35::bytea[], $36::text[], $37::int4[], $38::bytea[]) AS u(k, h, ep, rs, body) \
) SELECT ledger_expect_rows($41, (SELECT count(*) FROM a))";

impl Store {
    /// Decides and books `items` together (also a single item: two round trips, a read and
    /// a write that is the commit). On SQLite (one writer, one connection) the items are
    /// decided one after the other in one transaction: one durable commit for the batch.
    /// Each item's `call.commit_started` gate is taken just before the commit is sent.
    pub async fn authorize_batch<R>(
        &self,
        items: &[BatchItem<'_>],
        render: R,
    ) -> Vec<Result<Outcome<AuthorizationResult>, StoreError>>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let mut out: Vec<_> = items.iter().map(|_| None).collect();
        self.authorize_batch_each(items, render, |i, r| out[i] = Some(r), |_, _| {})
            .await;
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Timeout("no result".into()))))
            .collect()
    }

    /// [`Store::authorize_batch`], handing each item's result to `done(index, result)` as
    /// soon as it is known. When the batch falls back to one transaction per item, an item
    /// committed early must not wait for the others (whose locks may take long) before its
    /// requester hears of it: it is past its commit point and waits for exactly this.
    /// Every card the batch read for items whose card was not known beforehand goes to
    /// `card_read(card_id, record)` (`None`: no such card) before any result: what a cache
    /// of card rules may keep.
    pub async fn authorize_batch_each<R>(
        &self,
        items: &[BatchItem<'_>],
        render: R,
        mut done: impl FnMut(usize, Result<Outcome<AuthorizationResult>, StoreError>),
        mut card_read: impl FnMut(&str, Option<CardRecord>),
    ) where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        // Items the batch decided; the others (None) go one transaction each.
        let mut batched: Vec<Option<Outcome<AuthorizationResult>>> =
            items.iter().map(|_| None).collect();
        if !items.is_empty() {
            let attempt = if self.is_postgres() {
                let mut cards = Vec::new();
                let attempt = self.try_batch(items, &render, &mut cards).await;
                for (id, record) in cards {
                    card_read(id, record);
                }
                attempt.map(|a| match a {
                    Attempt::Done(v) => Some(v),
                    Attempt::Fallback => None,
                })
            } else {
                let mut cards = Vec::new();
                let attempt = self.lite_batch(items, &render, &mut cards).await;
                for (id, record) in cards {
                    card_read(id, record);
                }
                attempt.map(|o| o.map(|v| v.into_iter().map(Some).collect()))
            };
            match attempt {
                Ok(Some(v)) => batched = v,
                // A lost race, or an item that failed on its own: every item runs alone,
                // so none fails another.
                Ok(None) => {}
                Err(e) => {
                    let uncertain = matches!(e, StoreError::Uncertain(_));
                    let msg = e.to_string();
                    for i in 0..items.len() {
                        done(
                            i,
                            Err(if uncertain {
                                StoreError::Uncertain(format!("batch: {msg}"))
                            } else {
                                StoreError::Timeout(format!("batch failed: {msg}"))
                            }),
                        );
                    }
                    return;
                }
            }
        }
        let mut single = Vec::new();
        for (i, o) in batched.into_iter().enumerate() {
            match o {
                Some(o) => done(i, Ok(o)),
                None => single.push(i),
            }
        }
        for i in single {
            let item = &items[i];
            let r = self
                .authorize_with(&item.call, &item.tx, item.kind, item.card, &render)
                .await;
            done(i, r);
        }
    }

    /// The embedded store's batch: every item in arrival order in one transaction (each sees
    /// what the ones before it wrote), then one commit. `None` when an item failed: nothing
    /// is written and the caller runs every item alone.
    async fn lite_batch<'i, R>(
        &self,
        items: &[BatchItem<'i>],
        render: &R,
        cards: &mut Vec<(&'i str, Option<CardRecord>)>,
    ) -> Result<Option<Vec<Outcome<AuthorizationResult>>>, StoreError>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        // Before the transaction: it holds the embedded store's one connection.
        let mut clearing: HashMap<Currency, i64> = HashMap::new();
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
        let mut tx = self.begin().await?;
        // The cards the instance's cache did not know, each read once under the write lock:
        // the items decide on them, and the cache may keep them.
        let mut read: HashMap<&'i str, Option<CardRecord>> = HashMap::new();
        for item in items {
            if let (Some(id), CardLookup::InTransaction) = (item.tx.card_id, item.card)
                && !read.contains_key(id)
            {
                let record = load_card_record(&mut tx, id).await?;
                read.insert(id, record);
            }
        }
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let currency = Currency::parse(item.tx.currency).ok();
            let clr = currency.and_then(|c| clearing.get(&c).copied());
            let card = match (item.tx.card_id, item.card) {
                (Some(id), CardLookup::InTransaction) => match read.get(id) {
                    Some(Some(record)) => CardLookup::Known(record),
                    Some(None) => CardLookup::Absent,
                    None => CardLookup::InTransaction,
                },
                (_, known) => known,
            };
            match authorize_in(
                &mut tx, &item.call, &item.tx, item.kind, card, currency, clr, render,
            )
            .await
            {
                Ok((outcome, _)) => outcomes.push(outcome),
                Err(step) => {
                    // Nothing of the batch is written; every item runs alone, where this
                    // one's error reaches its own requester.
                    match &step {
                        ItemStep::Retry => tracing::debug!(
                            "embedded batch: an item lost a race on a unique key; items run alone"
                        ),
                        ItemStep::Fail(e) => tracing::warn!(
                            error = %e,
                            "embedded batch: an item failed; items run alone"
                        ),
                    }
                    return Ok(None);
                }
            }
        }
        cards.extend(read);
        if deadline_passed(items) {
            return Err(StoreError::Timeout("authorization deadline passed".into()));
        }
        if !start_commit(items) {
            return Err(abandoned());
        }
        tx.commit().await?;
        Ok(Some(outcomes))
    }

    async fn try_batch<'i, R>(
        &self,
        items: &[BatchItem<'i>],
        render: &R,
        cards: &mut Vec<(&'i str, Option<CardRecord>)>,
    ) -> Result<Attempt, StoreError>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let Db::Pg(pool) = &self.db else {
            return Ok(Attempt::Fallback);
        };
        let mut clearing: HashMap<Currency, i64> = HashMap::new();
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
        // First without locks: two round trips, the write commits on its own and fails
        // as a whole if an account moved since the read.
        let mut conn = pool.acquire().await?;
        match self
            .batch_in(&mut conn, items, render, &clearing, false, cards)
            .await
        {
            Ok(Step::Done(results)) => return Ok(Attempt::Done(results)),
            Ok(Step::Fallback) => return Ok(Attempt::Fallback),
            Ok(Step::Late) => {
                return Err(StoreError::Timeout("authorization deadline passed".into()));
            }
            Ok(Step::Abandoned) => return Err(abandoned()),
            Ok(Step::Uncertain(e)) => return Err(StoreError::from_commit(e)),
            Err(e) if is_lost_race(&e) => {
                // Nothing was written: the requesters may give up at their deadline again
                // while the batch waits for its locks.
                for gate in items.iter().filter_map(|i| i.call.commit_started) {
                    gate.reopen();
                }
            }
            Err(e) if is_unique_violation(&e) => return Ok(Attempt::Fallback),
            Err(e) => return Err(e.into()),
        }
        drop(conn);
        // Lost a race on an account (hot accounts): again, holding the accounts' locks.
        let mut tx = pool.begin().await?;
        match self
            .batch_in(&mut tx, items, render, &clearing, true, cards)
            .await
        {
            Ok(Step::Done(results)) => {
                if deadline_passed(items) {
                    return Err(StoreError::Timeout("authorization deadline passed".into()));
                }
                if !start_commit(items) {
                    return Err(abandoned());
                }
                tx.commit().await.map_err(StoreError::from_commit)?;
                Ok(Attempt::Done(results))
            }
            Ok(Step::Fallback) => Ok(Attempt::Fallback),
            Ok(Step::Late) => Err(StoreError::Timeout("authorization deadline passed".into())),
            Ok(Step::Abandoned) => Err(abandoned()),
            Ok(Step::Uncertain(e)) => Err(StoreError::from_commit(e)),
            Err(e) if is_unique_violation(&e) => Ok(Attempt::Fallback),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads, decides and writes the batch on `tx`. With `locking`, `tx` is a transaction
    /// the caller commits, and the reads lock what they read; without, `tx` is a plain
    /// connection, and the write is the commit, guarded by the versions read.
    /// The cards read for items whose card was not known go to `cards_read`.
    async fn batch_in<'i, R>(
        &self,
        tx: &mut sqlx::PgConnection,
        items: &[BatchItem<'i>],
        render: &R,
        clearing: &HashMap<Currency, i64>,
        locking: bool,
        cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
    ) -> Result<Step, sqlx::Error>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let keys: Vec<&str> = items.iter().map(|i| i.call.idempotency_key).collect();
        let tx_ids: Vec<&str> = items.iter().map(|i| i.tx.transaction_id).collect();

        // Everything the batch reads, in one round trip: finished requests under these keys;
        // the transactions already recorded (locked); the cardholder accounts (locked in id
        // order); the cards; and enough movement and posting ids for the worst case, taken
        // after the locks so the postings of one account are numbered in the order of their
        // balance-after chain. The branches of a UNION ALL run one after the other.
        let (mut users, mut codes) = (Vec::new(), Vec::new());
        for i in items {
            if let (Some(u), Ok(c)) = (i.tx.user_id, Currency::parse(i.tx.currency)) {
                users.push(u);
                codes.push(c.code().to_owned());
            }
        }
        let card_ids: Vec<&'i str> = items
            .iter()
            .filter(|i| matches!(i.card, CardLookup::InTransaction))
            .filter_map(|i| i.tx.card_id)
            .collect();
        let moving = items
            .iter()
            .filter(|i| matches!(i.kind, Some(RequestKind::Debit | RequestKind::Credit)))
            .count() as i64;
        let mut by_key: HashMap<String, (Vec<u8>, StoredResponse)> = HashMap::new();
        // Transactions recorded before (answered, or first seen through a verdict).
        let mut recorded: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut accounts: HashMap<(String, Currency), LockedAccount> = HashMap::new();
        let mut touched: Vec<(String, Currency)> = Vec::new();
        let mut cards: HashMap<String, CardRecord> = HashMap::new();
        let (mut movement_ids, mut posting_ids) = (Vec::new(), Vec::new());
        let read = if locking {
            READ_BATCH_LOCKING.as_str()
        } else {
            READ_BATCH
        };
        let mut read_state: HashMap<i64, (i64, i64)> = HashMap::new();
        for r in sqlx::query(read)
            .bind(SCOPE_AUTHORIZATION)
            .bind(&keys)
            .bind(KIND_AUTHORIZATION)
            .bind(&tx_ids)
            .bind(&users)
            .bind(&codes)
            .bind(&card_ids)
            .bind(moving)
            .fetch_all(&mut *tx)
            .await?
        {
            let tag: i32 = r.try_get("tag")?;
            match tag {
                1 => {
                    let status: Option<i32> = r.try_get("st")?;
                    let body: Option<Vec<u8>> = r.try_get("body")?;
                    let hash: Option<Vec<u8>> = r.try_get("h")?;
                    by_key.insert(
                        r.try_get("k")?,
                        (
                            hash.unwrap_or_default(),
                            StoredResponse {
                                status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
                                body: body.unwrap_or_default(),
                            },
                        ),
                    );
                }
                2 => {
                    recorded.insert(r.try_get("k")?);
                }
                3 => {
                    let user: String = r.try_get("user_id")?;
                    let a = locked_account_from_row!(r);
                    read_state.insert(a.id, (a.version, a.balance));
                    accounts.insert((user, a.currency), a);
                }
                4 => {
                    let user: Option<String> = r.try_get("user_id")?;
                    let status: Option<String> = r.try_get("status")?;
                    let blocked: Option<String> = r.try_get("blocked_mccs")?;
                    cards.insert(
                        r.try_get("k")?,
                        CardRecord::from_stored(
                            user.unwrap_or_default(),
                            &status.unwrap_or_default(),
                            &blocked.unwrap_or_default(),
                        ),
                    );
                }
                5 => movement_ids.push(r.try_get::<i64, _>("id")?),
                _ => posting_ids.push(r.try_get::<i64, _>("id")?),
            }
        }

        cards_read.clear();
        cards_read.extend(card_ids.iter().map(|id| (*id, cards.get(*id).cloned())));

        // Decide in arrival order.
        let mut results: Vec<Option<Outcome<AuthorizationResult>>> =
            Vec::with_capacity(items.len());
        let mut movements: Vec<(&str, Currency)> = Vec::new();
        let mut result_movement: Vec<Option<usize>> = Vec::with_capacity(items.len());
        let mut postings: Vec<Posting> = Vec::new();
        // Records to write: item index and its response.
        let mut records: Vec<(usize, StoredResponse)> = Vec::new();
        // Idempotency rows to write: item index and its response.
        let mut new_keys: Vec<(usize, StoredResponse)> = Vec::new();
        for (idx, item) in items.iter().enumerate() {
            let call = &item.call;
            let t = &item.tx;
            result_movement.push(None);
            if let Some((hash, resp)) = by_key.get(call.idempotency_key) {
                results.push(Some(if hash[..] == call.request_hash[..] {
                    Outcome::Replay(resp.clone())
                } else {
                    Outcome::KeyConflict
                }));
                continue;
            }
            if recorded.contains(t.transaction_id) {
                // A transaction recorded before under another key (a resend, rare) or first
                // seen through a verdict: the single-request path compares the resend with
                // the record and replays or refuses it, and lets a verdict stand.
                results.push(None);
                continue;
            }
            let currency = Currency::parse(t.currency).ok();
            let account_key = t.user_id.zip(currency).map(|(u, c)| (u.to_owned(), c));
            let today = day_of(call.now_ms);
            let card = match (t.card_id, item.card.known(t.user_id)) {
                (None, _) => None,
                (Some(_), Some(known)) => known,
                (Some(id), None) => cards.get(id).map(|c| c.state_for(t.user_id)),
            };
            let account = account_key.as_ref().and_then(|k| accounts.get_mut(k));
            let input = AuthorizationInput {
                kind: item.kind,
                currency,
                amount: t.amount,
                mcc: t.mcc,
            };
            let decision = decide(
                &input,
                account.as_ref().map(|a| a.state(today)).as_ref(),
                card.as_ref(),
            );
            if let (
                Decision::Approved {
                    amount,
                    balance_after,
                    daily_spent_after,
                },
                Some(acct),
                Some(cur),
            ) = (&decision, account, currency)
                && *amount != 0
            {
                let Some(&clr) = clearing.get(&cur) else {
                    return Ok(Step::Fallback);
                };
                let m = movements.len();
                movements.push((t.transaction_id, cur));
                acct.version += 1;
                acct.balance = *balance_after;
                acct.daily_spent_day = today;
                acct.daily_spent = *daily_spent_after;
                postings.push(Posting {
                    movement: m,
                    account_id: acct.id,
                    amount: *amount,
                    balance_after: Some(acct.balance),
                    version: Some(acct.version),
                });
                postings.push(Posting {
                    movement: m,
                    account_id: clr,
                    amount: -*amount,
                    balance_after: None,
                    version: None,
                });
                if let Some(k) = account_key.clone()
                    && !touched.contains(&k)
                {
                    touched.push(k);
                }
                result_movement[idx] = Some(m);
            }
            let result = AuthorizationResult {
                decision,
                currency,
                movement_id: None,
            };
            let response = StoredResponse {
                status: 200,
                body: render(&result),
            };
            by_key.insert(
                call.idempotency_key.to_owned(),
                (call.request_hash.to_vec(), response.clone()),
            );
            recorded.insert(t.transaction_id.to_owned());
            records.push((idx, response.clone()));
            new_keys.push((idx, response.clone()));
            results.push(Some(Outcome::Fresh { response, result }));
        }

        let now = items
            .iter()
            .map(|i| i.call.now_ms)
            .max()
            .unwrap_or_else(crate::now_ms);
        movement_ids.sort_unstable();
        posting_ids.sort_unstable();
        if movement_ids.len() < movements.len() || posting_ids.len() < postings.len() {
            // Cannot happen (ids are reserved for every moving request); run alone instead.
            return Ok(Step::Fallback);
        }
        for (idx, m) in result_movement.iter().enumerate() {
            if let (Some(m), Some(Some(Outcome::Fresh { result, .. }))) = (m, results.get_mut(idx))
            {
                result.movement_id = Some(movement_ids[*m]);
            }
        }
        let finals: Vec<&LockedAccount> = touched.iter().filter_map(|k| accounts.get(k)).collect();
        let movement_of = |idx: usize| match &results[idx] {
            Some(Outcome::Fresh { result, .. }) => result.movement_id,
            _ => None,
        };
        let amount_of = |idx: usize| {
            let item = &items[idx];
            match &results[idx] {
                Some(Outcome::Fresh { result, .. }) => match &result.decision {
                    Decision::Approved { amount, .. } => Some(*amount),
                    Decision::Balance { .. } => Some(0),
                    Decision::Declined(_) => Currency::parse(item.tx.currency)
                        .ok()
                        .zip(item.tx.amount)
                        .and_then(|(c, a)| to_minor(a, c).ok())
                        .map(|m| {
                            if item.kind == Some(RequestKind::Debit) {
                                -m
                            } else {
                                m
                            }
                        }),
                },
                _ => None,
            }
        };
        let status_of_idx = |idx: usize| match &results[idx] {
            Some(Outcome::Fresh { result, .. }) => status_of(&result.decision),
            _ => ("REJECTED", "OTHER"),
        };
        let r = |f: &dyn Fn(&BatchItem<'_>) -> Option<String>| {
            records
                .iter()
                .map(|(i, _)| f(&items[*i]))
                .collect::<Vec<_>>()
        };
        if !locking {
            // This statement is the commit.
            if deadline_passed(items) {
                return Ok(Step::Late);
            }
            if !start_commit(items) {
                return Ok(Step::Abandoned);
            }
        }
        // Everything the batch writes, in one round trip.
        let written = sqlx::query(WRITE_BATCH)
            .bind(&movement_ids[..movements.len()])
            .bind(movements.iter().map(|(_, c)| c.code()).collect::<Vec<_>>())
            .bind(movements.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            .bind(now)
            .bind(&posting_ids[..postings.len()])
            .bind(
                postings
                    .iter()
                    .map(|p| movement_ids[p.movement])
                    .collect::<Vec<_>>(),
            )
            .bind(postings.iter().map(|p| p.account_id).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.amount).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.balance_after).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.version).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.id).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.balance).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.version).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.daily_spent_day).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.daily_spent).collect::<Vec<_>>())
            .bind(r(&|i| Some(i.tx.transaction_id.to_owned())))
            .bind(r(&|i| Some(i.call.endpoint.to_owned())))
            .bind(r(&|i| direction_str(i.kind).map(str::to_owned)))
            .bind(r(&|i| Some(i.tx.tx_type.to_owned())))
            .bind(r(&|i| i.tx.user_id.map(str::to_owned)))
            .bind(r(&|i| i.tx.card_id.map(str::to_owned)))
            .bind(r(&|i| Some(i.tx.currency.to_owned())))
            .bind(r(&|i| Some(i.tx.amount_text.to_owned())))
            .bind(
                records
                    .iter()
                    .map(|(i, _)| amount_of(*i))
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|(i, _)| status_of_idx(*i).0)
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|(i, _)| status_of_idx(*i).1)
                    .collect::<Vec<_>>(),
            )
            .bind(r(&|i| i.tx.original_transaction_id.map(str::to_owned)))
            .bind(r(&|i| Some(i.call.idempotency_key.to_owned())))
            .bind(
                records
                    .iter()
                    .map(|(i, _)| movement_of(*i))
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|(i, _)| items[*i].call.raw_body)
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|(_, resp)| i32::from(resp.status))
                    .collect::<Vec<_>>(),
            )
            .bind(
                records
                    .iter()
                    .map(|(_, resp)| resp.body.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(SCOPE_AUTHORIZATION)
            .bind(
                new_keys
                    .iter()
                    .map(|(i, _)| items[*i].call.idempotency_key)
                    .collect::<Vec<_>>(),
            )
            .bind(
                new_keys
                    .iter()
                    .map(|(i, _)| items[*i].call.request_hash.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                new_keys
                    .iter()
                    .map(|(i, _)| items[*i].call.endpoint)
                    .collect::<Vec<_>>(),
            )
            .bind(
                new_keys
                    .iter()
                    .map(|(_, resp)| i32::from(resp.status))
                    .collect::<Vec<_>>(),
            )
            .bind(
                new_keys
                    .iter()
                    .map(|(_, resp)| resp.body.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(
                finals
                    .iter()
                    .map(|a| read_state.get(&a.id).map(|s| s.0))
                    .collect::<Vec<_>>(),
            )
            .bind(
                finals
                    .iter()
                    .map(|a| read_state.get(&a.id).map(|s| s.1))
                    .collect::<Vec<_>>(),
            )
            .bind(finals.len() as i64)
            // Holds move no version: a reservation between the read and this write shows
            // in held_minor, and the guard sends the batch round again under locks.
            .bind(finals.iter().map(|a| a.held).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await;
        match written {
            Ok(_) => {}
            // Without locks this statement was the commit: a refusal by the database (a
            // lost race, a unique key) is a definite rollback; a lost connection is not.
            Err(e) if !locking && !matches!(e, sqlx::Error::Database(_)) => {
                return Ok(Step::Uncertain(e));
            }
            Err(e) => return Err(e),
        }
        Ok(Step::Done(results))
    }
}

/// How one pass over a batch ended.
enum Step {
    /// Per item: the outcome, or `None` to run it alone afterwards.
    Done(Vec<Option<Outcome<AuthorizationResult>>>),
    /// Run every item alone.
    Fallback,
    /// The deadline passed before the commit: nothing was written.
    Late,
    /// A requester gave up at its deadline before the commit: nothing was written.
    Abandoned,
    /// The connection failed while the commit was under way: its outcome is unknown.
    Uncertain(sqlx::Error),
}

fn abandoned() -> StoreError {
    StoreError::Timeout("an authorization of the batch was abandoned at its deadline".into())
}

fn deadline_passed(items: &[BatchItem<'_>]) -> bool {
    items
        .iter()
        .filter_map(|i| i.call.commit_by)
        .min()
        .is_some_and(|d| Instant::now() >= d)
}

/// Takes every item's commit gate before the commit: from then on only the commit's outcome
/// tells whether money moved. False when a requester already gave up at its deadline (it was
/// answered "nothing booked"): the batch must not commit (those already claimed wait for
/// this failure and answer the same).
fn start_commit(items: &[BatchItem<'_>]) -> bool {
    let mut all = true;
    for gate in items.iter().filter_map(|i| i.call.commit_started) {
        all &= gate.start_commit();
    }
    all
}

/// The write's guard (`ledger_expect_rows`) found an account changed since the read (40001),
/// or one of its accounts locked by another transaction (55P03, `NOWAIT`).
fn is_lost_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "55P03")))
}
