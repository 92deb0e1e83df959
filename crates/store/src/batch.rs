//! Grouped commits: many authorizations in one commit. On Postgres a batch is two statements
//! instead of several per authorization, and one WAL flush for all of them; on the embedded
//! store it is one transaction on the one writer (see [`crate::authorize`]).
//!
//! Both feed one plan ([`ledger::plan::plan_authorizations`]): a Postgres batch reads
//! everything its keys name in one statement (idempotency records, recorded transactions,
//! cardholder accounts, cards, and ids for what it may write), plans in memory, and writes
//! the plan's rows in one statement that is its own commit. No lock is held between the two:
//! the write names the version and balance each account had when read, and aborts as a
//! whole if one moved. A batch that lost such a race (hot accounts) runs again in a
//! transaction that locks its accounts in id order, so concurrent batches (and other
//! instances) cannot deadlock.
//!
//! If the batch loses a race on a unique key to another request, nothing of it is written
//! and every item runs alone (a batch of one), which replays the winner: one request never
//! fails its neighbours.

use crate::authorize::{
    cards_to_read, counter_from_row, counters_to_read, moving, request_of, unread_snapshot,
};
use crate::controls::{controlled_cards, lock_cards, read_card_counters};
use crate::events::{AUTHORIZATION_DECIDED, authorizations};
use crate::outbox::{Handed, OutboxRows, Subscribers};
use crate::processor::{Asked, CommitGate, LockedAccount, direction_str};
use crate::processor::{
    AuthorizationResult, CardTransaction, KIND_AUTHORIZATION, Outcome, ProcessorCall,
    SCOPE_AUTHORIZATION, Step as ItemStep,
};
use crate::rules::{CardLookup, CardRecord};
use crate::{Db, Store, StoreError, is_unique_violation};
use ledger::controls::{Counter, TimeZone};
use ledger::plan::{RecordRow, RecordWrite, Snapshot, Writes, owner_kind, plan_authorizations};
use ledger::{Currency, RequestKind};
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
    /// Per item: the outcome.
    Done(Vec<Outcome<AuthorizationResult>>),
    /// Lost a race on a unique key: run every item alone.
    Fallback,
}
/// An account's rules as one text (branch 3 reads it as `amount_text`): the overdraft, the
/// legacy limits, the blocked MCCs and the controls document. The write's guard compares it
/// with what the batch read, so a rule an admin changed between the two fails the batch
/// (it runs again under locks) instead of committing a decision made on the old rule.
macro_rules! account_rules {
    () => {
        "concat_ws('|', coalesce(a.overdraft_limit_minor::text, ''), \
         coalesce(a.per_transaction_limit_minor::text, ''), coalesce(a.daily_limit_minor::text, ''), \
         coalesce(a.blocked_mccs, ''), coalesce(a.controls, ''))"
    };
}

/// The reads of a batch (see `batch_in`); one row shape for all branches, told apart by `tag`.
/// Without locks; `READ_BATCH_LOCKING` is the same with `FOR UPDATE` where `/*LOCK*/` stands.
/// Every lookup is a LATERAL probe of a unique index per wanted key (`LIMIT 1` keeps the
/// planner from flattening it into a hash join), so the plan stays an index probe per key
/// also when Postgres switches to a generic plan built while the table was small.
/// (`kind = $3 AND transaction_id = ANY($4)`, or a join, ended up as an index scan on `kind`
/// alone, a pass over every authorization of the table per batch: batches slowed down as the
/// ledger grew.) Branch 7, the control counters of the batch's accounts and cards in the
/// windows holding its instants, reuses columns: `k` the window, `user_id` the owner id,
/// `status` the owner kind, `blocked_mccs` the category filter, `amount_minor` and `version`
/// the amount and count.
const READ_BATCH: &str = concat!(
    "\
SELECT 1 AS tag, key AS k, request_hash AS h, response_status AS st, response_body AS body, \
       NULL::int8 AS id, NULL::text AS user_id, NULL::text AS currency, NULL::int8 AS balance_minor, \
       NULL::int8 AS version, NULL::int8 AS overdraft_limit_minor, NULL::int8 AS per_transaction_limit_minor, \
       NULL::int8 AS daily_limit_minor, NULL::int8 AS daily_spent_day, NULL::int8 AS daily_spent_minor, \
       NULL::text AS blocked_mccs, NULL::text AS status, NULL::int8 AS held_minor, \
       NULL::int8 AS amount_minor, NULL::text AS verdict, i.endpoint AS endpoint, NULL::text AS direction, \
       NULL::text AS tx_type, NULL::text AS card_id, NULL::text AS amount_text, NULL::text AS controls, \
       NULL::text AS counters \
  FROM UNNEST($2::text[]) AS x(wanted), \
       LATERAL (SELECT * FROM idempotency_keys WHERE scope = $1 AND key = x.wanted LIMIT 1) i \
UNION ALL \
SELECT 2, t.transaction_id, NULL, t.response_status, t.response_body, NULL, t.user_id, t.currency, \
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t.status, NULL, \
       t.amount_minor, t.verdict, t.endpoint, t.direction, t.tx_type, t.card_id, t.amount_text, NULL, NULL \
  FROM UNNEST($4::text[]) AS x(tid), \
       LATERAL (SELECT * FROM processor_transactions \
                 WHERE kind = $3 AND transaction_id = x.tid LIMIT 1 /*LOCK*/) t \
UNION ALL \
SELECT 3, NULL, NULL, NULL, NULL, id, user_id, currency, balance_minor, version, overdraft_limit_minor, \
       per_transaction_limit_minor, daily_limit_minor, daily_spent_day, daily_spent_minor, blocked_mccs, NULL, held_minor, \
       NULL, NULL, NULL, NULL, NULL, NULL, ",
    account_rules!(),
    ", controls, counters \
  FROM (SELECT id, user_id, currency, balance_minor, version, overdraft_limit_minor, \
               per_transaction_limit_minor, daily_limit_minor, daily_spent_day, daily_spent_minor, blocked_mccs, held_minor, \
               controls, counters \
          FROM accounts WHERE kind = 'USER' \
           AND (user_id, currency) IN (SELECT * FROM UNNEST($5::text[], $6::text[])) \
         ORDER BY id /*LOCK*/) a \
UNION ALL \
SELECT 4, card_id, NULL, NULL, NULL, NULL, user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       blocked_mccs, status, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, controls, NULL \
  FROM UNNEST($7::text[]) AS x(wanted), LATERAL (SELECT * FROM cards WHERE card_id = x.wanted LIMIT 1) c \
UNION ALL \
SELECT 7, c.window_key, NULL, NULL, NULL, NULL, c.owner_id, NULL, NULL, c.count, NULL, NULL, NULL, NULL, NULL, \
       c.categories, c.owner_kind, NULL, c.amount_minor, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
  FROM UNNEST($9::text[], $10::text[]) AS o(kind, id), UNNEST($11::text[]) AS w(wk), \
       LATERAL (SELECT * FROM control_counters \
                 WHERE owner_kind = o.kind AND owner_id = o.id AND window_key = w.wk) c \
UNION ALL \
SELECT 5, NULL, NULL, NULL, NULL, nextval('movements_id_seq'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
  FROM generate_series(1, $8::int8) \
UNION ALL \
SELECT 6, NULL, NULL, NULL, NULL, nextval('postings_id_seq'), NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
  FROM generate_series(1, 2 * $8::int8)"
);

/// The writes with the batch's event rows, in the same statement (the same commit) as the
/// money: one PENDING row per event and subscription, for the events the records do not owe
/// themselves (`OutboxRows::owing`: no dispatcher takes them over, or the ledger cannot
/// rebuild them).
static WRITE_BATCH_EVENTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    WRITE_BATCH.replace(
        ") SELECT ledger_expect_rows(",
        "), o AS ( \
  INSERT INTO outbox (event_id, event_type, subscription_id, url, body, headers, state, attempts, \
         next_attempt_at_ms, pending_since_ms, created_at_ms, updated_at_ms) \
  SELECT e, $73, s, u, b, '', 'PENDING', 0, at, at, at, at \
    FROM UNNEST($74::text[], $75::int8[], $76::text[], $77::bytea[], $78::int8[]) AS x(e, s, u, b, at) \
) SELECT ledger_expect_rows(",
    )
});

/// The same reads, locking the transactions and accounts they read (in id order).
static READ_BATCH_LOCKING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| READ_BATCH.replace("/*LOCK*/", "FOR UPDATE"));

/// The writes of a batch, in one statement: movements, postings, account balances, the
/// processor transactions (new, or answering a verdict that came first), the idempotency
/// records and what approvals add to the control counters. Empty arrays write nothing. Without locks taken earlier this statement is the commit, which the requesters wait for: it must
/// not wait on a row lock, so it first locks its accounts with NOWAIT (`lk`, evaluated once
/// before the update's first row) and fails at once, as a lost race, if one is held.
/// The transactions answered here (`u`, recorded by a verdict that came first) are found as
/// the read finds rows, by a `LIMIT 1` probe per wanted id, and updated by that row's
/// `ctid`: joined on `kind` and `transaction_id`, the generic plan scanned every
/// authorization of the table for rows without an answer, at every batch (also with none
/// to answer), so batches slowed down as the ledger grew. A row changed since the
/// statement's snapshot no longer matches its `ctid`: the count guard fails the batch as a
/// lost race, and it runs again under locks.
const WRITE_BATCH: &str = concat!(
    "\
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
         daily_spent_minor = u.s, counters = u.cw, updated_at_ms = $4 \
    FROM UNNEST($11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $39::int8[], $40::int8[], \
                $42::int8[], $65::text[], $66::text[], $70::int8[], $71::int8[], $72::text[]) \
      AS u(id, b, v, d, s, ov, ob, oh, cw, ocw, od, os, orl) \
   WHERE a.id = u.id AND a.version = u.ov AND a.balance_minor = u.ob AND a.held_minor = u.oh \
     AND a.counters = u.ocw AND a.daily_spent_day = u.od AND a.daily_spent_minor = u.os \
     AND ",
    account_rules!(),
    " = u.orl \
     AND (SELECT count(*) FROM lk) >= 0 \
   RETURNING a.id \
), t AS ( \
  INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, user_id, \
         card_id, currency, amount_text, amount_minor, status, status_detail, flags, original_transaction_id, \
         idempotency_key, movement_id, request_body, response_status, response_body, created_at_ms, updated_at_ms, \
         explanation, controls_counted, webhook_sender, webhook_subscriptions) \
  SELECT 'AUTHORIZATION', tid, ep, dir, typ, uid, cid, cur, atext, amin, st, sd, '', orig, ik, mid, rb, rs, resp, at, at, \
         ex, cc, ws, wt \
    FROM UNNEST($16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], \
                $23::text[], $24::int8[], $25::text[], $26::text[], $27::text[], $28::text[], $29::int8[], \
                $30::bytea[], $31::int4[], $32::bytea[], $57::text[], $58::text[], $67::int8[], $68::int8[], \
                $69::text[]) \
      AS u(tid, ep, dir, typ, uid, cid, cur, atext, amin, st, sd, orig, ik, mid, rb, rs, resp, ex, cc, at, ws, wt) \
), k AS ( \
  INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, response_body, created_at_ms) \
  SELECT $33, k, h, ep, rs, body, $4 \
    FROM UNNEST($34::text[], $35::bytea[], $36::text[], $37::int4[], $38::bytea[]) AS u(k, h, ep, rs, body) \
), u AS ( \
  UPDATE processor_transactions p SET endpoint = u.ep, idempotency_key = u.ik, request_body = u.rb, \
         response_status = u.rs, response_body = u.resp, status = u.st, status_detail = u.sd, \
         updated_at_ms = $4, direction = u.dir, tx_type = u.typ, user_id = u.uid, card_id = u.cid, \
         currency = u.cur, amount_text = u.atext \
    FROM (SELECT x.*, r.row_id \
            FROM UNNEST($43::text[], $44::text[], $45::text[], $46::bytea[], $47::int4[], $48::bytea[], \
                        $49::text[], $50::text[], $51::text[], $52::text[], $53::text[], $54::text[], \
                        $55::text[], $56::text[]) \
              AS x(tid, ep, ik, rb, rs, resp, st, sd, dir, typ, uid, cid, cur, atext), \
                 LATERAL (SELECT ctid AS row_id FROM processor_transactions \
                           WHERE kind = 'AUTHORIZATION' AND transaction_id = x.tid LIMIT 1) r) u \
   WHERE p.ctid = u.row_id AND p.response_status IS NULL \
   RETURNING p.transaction_id \
), c AS ( \
  INSERT INTO control_counters AS c (owner_kind, owner_id, window_key, categories, amount_minor, count, updated_at_ms) \
  SELECT ok, oid, wk, cat, GREATEST(0, amt), GREATEST(0, cnt), $4 \
    FROM UNNEST($59::text[], $60::text[], $61::text[], $62::text[], $63::int8[], $64::int8[]) \
      AS u(ok, oid, wk, cat, amt, cnt) \
  ON CONFLICT (owner_kind, owner_id, window_key, categories) DO UPDATE \
     SET amount_minor = GREATEST(0, c.amount_minor + EXCLUDED.amount_minor), \
         count = GREATEST(0, c.count + EXCLUDED.count), updated_at_ms = $4 \
) SELECT ledger_expect_rows($41, (SELECT count(*) FROM a) + (SELECT count(*) FROM u))"
);

impl Store {
    /// Decides and books `items` together (also a single item). On Postgres: two round
    /// trips, a read and a write that is the commit. On SQLite (one writer, one connection)
    /// one transaction: one durable commit for the batch. Each item's `call.commit_started`
    /// gate is taken just before the commit is sent.
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
    /// `card_read(card_id, record)` (`None`: no such card) before any result of that
    /// attempt: what a cache of card rules may keep.
    pub async fn authorize_batch_each<R>(
        &self,
        items: &[BatchItem<'_>],
        render: R,
        mut done: impl FnMut(usize, Result<Outcome<AuthorizationResult>, StoreError>),
        mut card_read: impl FnMut(&str, Option<CardRecord>),
    ) where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        if items.is_empty() {
            return;
        }
        // The items still to write together: when the batch could not commit because some
        // could no longer (past their deadline, or their requester gave up), those are
        // answered and the rest go again as one, so that one late request never fails its
        // neighbours.
        let mut live: Vec<usize> = (0..items.len()).collect();
        loop {
            let batch: Vec<BatchItem<'_>> = live.iter().map(|&i| items[i]).collect();
            let mut cards = Vec::new();
            let attempt = self.try_batch(&batch, &render, &mut cards).await;
            for (id, record) in cards {
                card_read(id, record);
            }
            match attempt {
                Ok(Attempt::Done(outcomes)) => {
                    for (j, o) in outcomes.into_iter().enumerate() {
                        done(live[j], Ok(o));
                    }
                }
                // A lost race: every item runs alone, so none fails another.
                Ok(Attempt::Fallback) => {
                    for &i in &live {
                        let item = &items[i];
                        let r = self
                            .authorize_with(&item.call, &item.tx, item.kind, item.card, &render)
                            .await;
                        done(i, r);
                    }
                }
                // Nothing was committed (a timeout never commits).
                Err(e @ StoreError::Timeout(_)) => {
                    let (late, rest): (Vec<usize>, Vec<usize>) =
                        live.iter().partition(|&&i| cannot_commit(&items[i]));
                    if late.is_empty() || rest.is_empty() {
                        for &i in &live {
                            done(i, Err(StoreError::Timeout(format!("batch failed: {e}"))));
                        }
                        return;
                    }
                    for i in late {
                        done(i, Err(StoreError::Timeout(format!("batch failed: {e}"))));
                    }
                    live = rest;
                    reopen_gates(&live.iter().map(|&i| items[i]).collect::<Vec<_>>());
                    continue;
                }
                Err(e) => {
                    let uncertain = matches!(e, StoreError::Uncertain(_));
                    let msg = e.to_string();
                    for &i in &live {
                        done(
                            i,
                            Err(if uncertain {
                                StoreError::Uncertain(format!("batch: {msg}"))
                            } else {
                                StoreError::Timeout(format!("batch failed: {msg}"))
                            }),
                        );
                    }
                }
            }
            return;
        }
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
        let clearing = self.clearing_accounts(items).await?;
        let subscribers = self.subscribers(AUTHORIZATION_DECIDED).await?;
        let pool = match &self.db {
            Db::Pg(pool) => pool,
            Db::Lite(_) => {
                return match self.authorize_in_tx(items, &clearing, render, cards).await {
                    Ok(outcomes) => Ok(Attempt::Done(outcomes)),
                    // Cannot happen on the one writer; alone, each item replays the winner.
                    Err(ItemStep::Retry) => Ok(Attempt::Fallback),
                    Err(ItemStep::Fail(e)) => Err(e),
                };
            }
        };
        // First without locks: two round trips, the write commits on its own and fails
        // as a whole if an account moved since the read. Not when a card's controls may
        // count: its counters are decided on under its lock (`controls::lock_cards`).
        if !items.iter().any(known_controlled) {
            let mut conn = pool.acquire().await?;
            match batch_in(
                &mut conn,
                items,
                render,
                &clearing,
                &self.controls_time_zone,
                false,
                cards,
                &subscribers,
            )
            .await
            {
                Ok(Step::Done(results, handed)) => {
                    self.hand_over(handed);
                    return Ok(Attempt::Done(results));
                }
                Ok(Step::Late) => {
                    return Err(StoreError::Timeout("authorization deadline passed".into()));
                }
                Ok(Step::Abandoned) => return Err(abandoned()),
                Ok(Step::Uncertain(e)) => return Err(StoreError::from_commit(e)),
                // Nothing was written; the requesters' gates were not closed.
                Ok(Step::Relock) => {}
                Err(BatchError::Sql(e)) if is_lost_race(&e) => {
                    // Nothing was written: the requesters may give up at their deadline again
                    // while the batch waits for its locks.
                    reopen_gates(items);
                }
                Err(BatchError::Sql(e)) if is_unique_violation(&e) => {
                    // Nothing was written: each item goes alone, and its requester may give up
                    // at its deadline again meanwhile.
                    reopen_gates(items);
                    return Ok(Attempt::Fallback);
                }
                Err(e) => return Err(e.into()),
            }
            drop(conn);
        }
        // Lost a race on an account (hot accounts), or a card's counters to decide on:
        // again, holding the locks.
        cards.clear();
        let mut tx = pool.begin().await?;
        match batch_in(
            &mut tx,
            items,
            render,
            &clearing,
            &self.controls_time_zone,
            true,
            cards,
            &subscribers,
        )
        .await
        {
            Ok(Step::Done(results, handed)) => {
                if deadline_passed(items) {
                    return Err(StoreError::Timeout("authorization deadline passed".into()));
                }
                if !start_commit(items) {
                    return Err(abandoned());
                }
                if let Err(e) = tx.commit().await {
                    self.commit_uncertain(&handed);
                    return Err(StoreError::from_commit(e));
                }
                self.hand_over(handed);
                Ok(Attempt::Done(results))
            }
            Ok(Step::Late) => Err(StoreError::Timeout("authorization deadline passed".into())),
            Ok(Step::Abandoned) => Err(abandoned()),
            Ok(Step::Uncertain(e)) => Err(StoreError::from_commit(e)),
            // Cannot happen under locks; alone, each item takes the locks it needs.
            Ok(Step::Relock) => Ok(Attempt::Fallback),
            // A deadlock rolled the batch back (a writer's mixed batch gives back a card's
            // counters, then locks the card): nothing was written, and alone each item
            // finds the rows free.
            Err(BatchError::Sql(e)) if is_unique_violation(&e) || is_deadlock(&e) => {
                Ok(Attempt::Fallback)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Nothing of the batch was written: its requesters may give up at their deadlines again.
fn reopen_gates(items: &[BatchItem<'_>]) {
    for gate in items.iter().filter_map(|i| i.call.commit_started) {
        gate.reopen();
    }
}

/// Why a Postgres batch pass failed.
enum BatchError {
    Sql(sqlx::Error),
    /// The read cannot carry the plan (cannot happen: ids are reserved for every moving
    /// request, clearing accounts for every currency).
    Plan(ledger::plan::PlanError),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Sql(e)
    }
}

impl From<BatchError> for StoreError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Sql(e) => e.into(),
            BatchError::Plan(e) => StoreError::Invalid(e.to_string()),
        }
    }
}

/// Reads, plans and writes the batch on `tx`. With `locking`, `tx` is a transaction the
/// caller commits, and the reads lock what they read; without, `tx` is a plain connection,
/// and the write is the commit, guarded by the versions read. The cards read for items
/// whose card was not known go to `cards_read`; the events go to `subscribers`.
#[allow(clippy::too_many_arguments)]
async fn batch_in<'i, R>(
    tx: &mut sqlx::PgConnection,
    items: &[BatchItem<'i>],
    render: &R,
    clearing: &HashMap<Currency, i64>,
    tz: &TimeZone,
    locking: bool,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
    subscribers: &Subscribers,
) -> Result<Step, BatchError>
where
    R: Fn(&AuthorizationResult) -> Vec<u8>,
{
    let (mut snapshot, rules) = read_batch(tx, items, clearing, tz, locking, cards_read).await?;
    let controlled = controlled_cards(items, &snapshot);
    if !controlled.is_empty() {
        if !locking {
            return Ok(Step::Relock);
        }
        lock_cards(tx, &controlled).await?;
        let windows = counters_to_read(items, tz).2;
        read_card_counters(tx, &mut snapshot, &controlled, &windows).await?;
    }
    let requests: Vec<_> = items.iter().map(request_of).collect();
    let plan = plan_authorizations(snapshot, &requests, render).map_err(BatchError::Plan)?;
    if !locking && plan.writes.is_empty() {
        // Replays only: nothing to commit.
        return Ok(Step::Done(plan.outcomes, Vec::new()));
    }
    if !locking {
        // The write is the commit.
        if deadline_passed(items) {
            return Ok(Step::Late);
        }
        if !start_commit(items) {
            return Ok(Step::Abandoned);
        }
    }
    let events = subscribers.rows(|| authorizations(items, &plan.writes));
    match write_batch(tx, items, (&plan.writes, &rules), events.as_ref()).await {
        Ok(()) => Ok(Step::Done(
            plan.outcomes,
            events.map(OutboxRows::handed).unwrap_or_default(),
        )),
        // Without locks this statement was the commit: a refusal by the database (a
        // lost race, a unique key) is a definite rollback; a lost connection is not.
        Err(e) if !locking && !matches!(e, sqlx::Error::Database(_)) => {
            if let Some(rows) = events {
                rows.uncertain();
            }
            Ok(Step::Uncertain(e))
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes a row of a batch read into snapshot `s` when its `tag` (of SQL type `$tag`) says
/// it is a finished key (1), a recorded transaction (2), a cardholder account (3) or a
/// card (4); otherwise gives the tag back to the caller. Every prefetch (this one, the
/// embedded store's, and [`crate::authorize`]'s) names these columns alike: `k` the key,
/// transaction or card id, `h` the request hash, `st` and `body` the stored response.
macro_rules! snapshot_row {
    ($s:expr, $r:expr, $tag:ty) => {{
        let (s, r) = (&mut $s, &$r);
        let response = || -> Result<Option<$crate::StoredResponse>, sqlx::Error> {
            let status: Option<i32> = r.try_get("st")?;
            let body: Option<Vec<u8>> = r.try_get("body")?;
            Ok(status.zip(body).map(|(s, body)| $crate::StoredResponse {
                status: u16::try_from(s).unwrap_or(500),
                body,
            }))
        };
        let text = |column: &str| -> Result<String, sqlx::Error> {
            Ok(r.try_get::<Option<String>, _>(column)?.unwrap_or_default())
        };
        match i64::from(r.try_get::<$tag, _>("tag")?) {
            1 => {
                let hash: Option<Vec<u8>> = r.try_get("h")?;
                let response = response()?.unwrap_or($crate::StoredResponse {
                    status: 500,
                    body: Vec::new(),
                });
                s.keys.insert(
                    r.try_get("k")?,
                    ledger::plan::KeyRecord {
                        request_hash: hash.unwrap_or_default(),
                        endpoint: r.try_get("endpoint")?,
                        response,
                    },
                );
                None
            }
            2 => {
                s.transactions.insert(
                    r.try_get("k")?,
                    ledger::plan::RecordedTransaction {
                        amount_minor: r.try_get("amount_minor")?,
                        response: response()?,
                        verdict: r.try_get("verdict")?,
                        asked: $crate::processor::asked_from_row!(r),
                    },
                );
                None
            }
            3 => {
                let user: String = r.try_get("user_id")?;
                let a: $crate::processor::LockedAccount =
                    $crate::processor::locked_account_from_row!(r);
                s.accounts.insert((user, a.currency), a);
                None
            }
            4 => {
                let (status, blocked) = (text("status")?, text("blocked_mccs")?);
                let card = $crate::rules::card_from_stored(
                    text("user_id")?,
                    &status,
                    &blocked,
                    &text("controls")?,
                );
                s.cards.insert(r.try_get("k")?, card);
                None
            }
            tag => Some(tag),
        }
    }};
}
pub(crate) use snapshot_row;

/// Everything the batch reads, in one round trip: finished requests under these keys; the
/// transactions already recorded (locked); the cardholder accounts (locked in id order);
/// the cards; and enough movement and posting ids for the worst case, taken after the
/// locks so the postings of one account are numbered in the order of their balance-after
/// chain. The branches of a UNION ALL run one after the other.
async fn read_batch<'i>(
    tx: &mut sqlx::PgConnection,
    items: &[BatchItem<'i>],
    clearing: &HashMap<Currency, i64>,
    tz: &TimeZone,
    locking: bool,
    cards_read: &mut Vec<(&'i str, Option<CardRecord>)>,
) -> Result<(Snapshot, AccountRules), sqlx::Error> {
    let mut rules = AccountRules::new();
    let keys: Vec<&str> = items.iter().map(|i| i.call.idempotency_key).collect();
    let tx_ids: Vec<&str> = items.iter().map(|i| i.tx.transaction_id).collect();
    let (mut users, mut codes) = (Vec::new(), Vec::new());
    for i in items {
        if let (Some(u), Ok(c)) = (i.tx.user_id, Currency::parse(i.tx.currency)) {
            users.push(u);
            codes.push(c.code().to_owned());
        }
    }
    let card_ids = cards_to_read(items);
    let (owner_kinds, owner_ids, windows) = counters_to_read(items, tz);
    let read = if locking {
        READ_BATCH_LOCKING.as_str()
    } else {
        READ_BATCH
    };
    let mut s = unread_snapshot(clearing, tz);
    for r in sqlx::query(read)
        .bind(SCOPE_AUTHORIZATION)
        .bind(&keys)
        .bind(KIND_AUTHORIZATION)
        .bind(&tx_ids)
        .bind(&users)
        .bind(&codes)
        .bind(&card_ids)
        .bind(moving(items) as i64)
        .bind(&owner_kinds)
        .bind(&owner_ids)
        .bind(&windows)
        .fetch_all(&mut *tx)
        .await?
    {
        if r.try_get::<i32, _>("tag")? == 3 {
            let fingerprint = r.try_get::<Option<String>, _>("amount_text")?;
            rules.insert(r.try_get("id")?, fingerprint.unwrap_or_default());
        }
        match snapshot_row!(s, r, i32) {
            None => {}
            Some(7) => counter_from_row(
                &mut s,
                r.try_get::<Option<String>, _>("status")?
                    .unwrap_or_default(),
                r.try_get::<Option<String>, _>("user_id")?
                    .unwrap_or_default(),
                r.try_get::<Option<String>, _>("k")?.unwrap_or_default(),
                r.try_get::<Option<String>, _>("blocked_mccs")?
                    .unwrap_or_default(),
                Counter {
                    amount: r.try_get::<Option<i64>, _>("amount_minor")?.unwrap_or(0),
                    count: r.try_get::<Option<i64>, _>("version")?.unwrap_or(0),
                },
            ),
            Some(5) => s.movement_ids.push(r.try_get::<i64, _>("id")?),
            _ => s.posting_ids.push(r.try_get::<i64, _>("id")?),
        }
    }
    s.movement_ids.sort_unstable();
    s.posting_ids.sort_unstable();
    cards_read.extend(card_ids.iter().map(|id| (*id, s.cards.get(*id).cloned())));
    Ok((s, rules))
}

/// Each account's rules as the batch read them ([`account_rules!`]), by account id.
type AccountRules = HashMap<i64, String>;

/// One column of `rows`, as an array to bind.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// Everything the plan writes, in one round trip (with `events`, their outbox rows too, and
/// on each new record what it owes).
async fn write_batch(
    tx: &mut sqlx::PgConnection,
    items: &[BatchItem<'_>],
    (w, rules): (&Writes, &AccountRules),
    events: Option<&OutboxRows>,
) -> Result<(), sqlx::Error> {
    let now = items
        .iter()
        .map(|i| i.call.now_ms)
        .max()
        .unwrap_or_else(crate::now_ms);
    let (new, answered): (Vec<_>, Vec<_>) = w
        .records
        .iter()
        .partition(|r| r.write == RecordWrite::Insert);
    let item = |r: &RecordRow| &items[r.request];
    let texts = |rows: &[&RecordRow], f: &dyn Fn(&BatchItem<'_>) -> Option<String>| {
        col(rows, |r| f(item(r)))
    };
    let statuses = |rows: &[&RecordRow]| col(rows, |r| i32::from(r.response.status));
    let bodies = |rows: &[&RecordRow]| col(rows, |r| r.response.body.clone());
    let raw = |rows: &[&RecordRow]| col(rows, |r| item(r).call.raw_body);
    let tid = |i: &BatchItem<'_>| Some(i.tx.transaction_id.to_owned());
    let endpoint = |i: &BatchItem<'_>| Some(i.call.endpoint.to_owned());
    let key = |i: &BatchItem<'_>| Some(i.call.idempotency_key.to_owned());
    let direction = |i: &BatchItem<'_>| direction_str(i.kind).map(str::to_owned);
    let tx_type = |i: &BatchItem<'_>| Some(i.tx.tx_type.to_owned());
    let user = |i: &BatchItem<'_>| i.tx.user_id.map(str::to_owned);
    let card = |i: &BatchItem<'_>| i.tx.card_id.map(str::to_owned);
    let currency = |i: &BatchItem<'_>| Some(i.tx.currency.to_owned());
    let amount_text = |i: &BatchItem<'_>| Some(i.tx.amount_text.to_owned());
    let counters: Vec<_> = w.counters.iter().map(|c| (c, c.columns())).collect();
    let sql = match events {
        Some(e) if !e.event_ids.is_empty() => WRITE_BATCH_EVENTS.as_str(),
        _ => WRITE_BATCH,
    };
    let q = sqlx::query(sql)
        .bind(col(&w.movements, |m| m.id))
        .bind(col(&w.movements, |m| m.currency.code()))
        .bind(col(&w.movements, |m| items[m.request].tx.transaction_id))
        .bind(now)
        .bind(col(&w.postings, |p| p.id))
        .bind(col(&w.postings, |p| p.movement_id))
        .bind(col(&w.postings, |p| p.account_id))
        .bind(col(&w.postings, |p| p.amount))
        .bind(col(&w.postings, |p| p.balance_after))
        .bind(col(&w.postings, |p| p.version))
        .bind(col(&w.accounts, |a| a.id))
        .bind(col(&w.accounts, |a| a.balance))
        .bind(col(&w.accounts, |a| a.version))
        .bind(col(&w.accounts, |a| a.daily_spent_day))
        .bind(col(&w.accounts, |a| a.daily_spent))
        .bind(texts(&new, &tid))
        .bind(texts(&new, &endpoint))
        .bind(texts(&new, &direction))
        .bind(texts(&new, &tx_type))
        .bind(texts(&new, &user))
        .bind(texts(&new, &card))
        .bind(texts(&new, &currency))
        .bind(texts(&new, &amount_text))
        .bind(col(&new, |r| r.amount_minor))
        .bind(col(&new, |r| r.status))
        .bind(col(&new, |r| r.status_detail))
        .bind(texts(&new, &|i| {
            i.tx.original_transaction_id.map(str::to_owned)
        }))
        .bind(texts(&new, &key))
        .bind(col(&new, |r| r.movement_id))
        .bind(raw(&new))
        .bind(statuses(&new))
        .bind(bodies(&new))
        .bind(SCOPE_AUTHORIZATION)
        .bind(col(&w.keys, |k| items[k.request].call.idempotency_key))
        .bind(col(&w.keys, |k| {
            items[k.request].call.request_hash.as_slice()
        }))
        .bind(col(&w.keys, |k| items[k.request].call.endpoint))
        .bind(col(&w.keys, |k| i32::from(k.response.status)))
        .bind(col(&w.keys, |k| k.response.body.as_slice()))
        .bind(col(&w.accounts, |a| a.read_version))
        .bind(col(&w.accounts, |a| a.read_balance))
        .bind((w.accounts.len() + answered.len()) as i64)
        // Holds move no version: a reservation between the read and this write shows
        // in held_minor, and the guard sends the batch round again under locks.
        .bind(col(&w.accounts, |a| a.read_held))
        .bind(texts(&answered, &tid))
        .bind(texts(&answered, &endpoint))
        .bind(texts(&answered, &key))
        .bind(raw(&answered))
        .bind(statuses(&answered))
        .bind(bodies(&answered))
        .bind(col(&answered, |r| r.status))
        .bind(col(&answered, |r| r.status_detail))
        .bind(texts(&answered, &direction))
        .bind(texts(&answered, &tx_type))
        .bind(texts(&answered, &user))
        .bind(texts(&answered, &card))
        .bind(texts(&answered, &currency))
        .bind(texts(&answered, &amount_text))
        .bind(col(&new, |r| r.explanation.as_deref()))
        .bind(col(&new, |r| r.counted.as_deref()))
        .bind(col(&counters, |c| owner_kind(c.0.owner)))
        .bind(col(&counters, |c| c.0.owner_id.as_str()))
        .bind(col(&counters, |c| c.1.0.as_str()))
        .bind(col(&counters, |c| c.1.1.as_str()))
        .bind(col(&counters, |c| c.0.amount))
        .bind(col(&counters, |c| c.0.count))
        .bind(col(&w.accounts, |a| a.counters.as_str()))
        .bind(col(&w.accounts, |a| a.read_counters.as_str()));
    // What each new record owes (`NULL`: nothing), named on the record itself.
    let owed = |r: &RecordRow| {
        let event_id = crate::events::authorization_event_id(item(r).tx.transaction_id);
        match events {
            Some(e) => {
                let (sender, to) = e.owed_by(&event_id);
                (sender, to.map(str::to_owned))
            }
            None => (None, None),
        }
    };
    let owed: Vec<_> = new.iter().map(|r| owed(r)).collect();
    let q = q
        .bind(col(&new, |r| item(r).call.now_ms))
        .bind(owed.iter().map(|o| o.0).collect::<Vec<_>>())
        .bind(owed.into_iter().map(|o| o.1).collect::<Vec<_>>())
        .bind(col(&w.accounts, |a| a.read_daily_day))
        .bind(col(&w.accounts, |a| a.read_daily_spent))
        .bind(col(&w.accounts, |a| {
            rules.get(&a.id).map_or("", String::as_str)
        }));
    let q = match events {
        Some(e) if !e.event_ids.is_empty() => q
            .bind(e.event_type)
            .bind(&e.event_ids)
            .bind(&e.subscription_ids)
            .bind(&e.urls)
            .bind(e.stored_bodies())
            .bind(&e.at_ms),
        _ => q,
    };
    q.execute(&mut *tx).await.map(drop)
}

/// How one pass over a batch ended.
enum Step {
    /// Per item: the outcome; and the deliveries to hand to the dispatcher once committed.
    Done(Vec<Outcome<AuthorizationResult>>, Vec<Handed>),
    /// The deadline passed before the commit: nothing was written.
    Late,
    /// A requester gave up at its deadline before the commit: nothing was written.
    Abandoned,
    /// The connection failed while the commit was under way: its outcome is unknown.
    Uncertain(sqlx::Error),
    /// Without locks, the batch met a card whose controls may count: nothing was written,
    /// and it goes again under locks.
    Relock,
}

/// Whether `item` debits a card known beforehand to carry controls (a batch holding it is
/// decided under locks from the start).
fn known_controlled(item: &BatchItem<'_>) -> bool {
    item.kind == Some(RequestKind::Debit)
        && matches!(item.card, CardLookup::Known(r) if r.controls.is_some())
}

pub(crate) fn abandoned() -> StoreError {
    StoreError::Timeout("an authorization of the batch was abandoned at its deadline".into())
}

/// Whether `item` can no longer commit: past its deadline, or its requester gave up.
fn cannot_commit(item: &BatchItem<'_>) -> bool {
    item.call.commit_by.is_some_and(|d| Instant::now() >= d)
        || item.call.commit_started.is_some_and(CommitGate::abandoned)
}

pub(crate) fn deadline_passed(items: &[BatchItem<'_>]) -> bool {
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
pub(crate) fn start_commit(items: &[BatchItem<'_>]) -> bool {
    let mut all = true;
    for gate in items.iter().filter_map(|i| i.call.commit_started) {
        all &= gate.start_commit();
    }
    all
}

/// Postgres rolled the transaction back to break a deadlock (40P01).
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// The write's guard (`ledger_expect_rows`) found an account changed since the read (40001),
/// or one of its accounts locked by another transaction (55P03, `NOWAIT`).
fn is_lost_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "55P03")))
}
