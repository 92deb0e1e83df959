//! Grouped commits: many authorizations in one Postgres transaction, with a handful of
//! set-based statements per batch instead of several statements per authorization, and
//! one WAL flush for all of them.
//!
//! Each authorization keeps its exact per-request meaning: decisions are taken in arrival
//! order against the balances the earlier ones in the batch left; a duplicate inside the
//! batch replays the first answer; cardholder accounts are locked in id order, so
//! concurrent batches (and other instances) cannot deadlock. If the batch loses a race on
//! a unique key to another instance, it rolls back and every item runs alone through the
//! single-request path, which replays the winner: one request never fails its neighbours.

use crate::processor::{
    AuthorizationResult, CardTransaction, KIND_AUTHORIZATION, LockedAccount, Outcome,
    ProcessorCall, SCOPE_AUTHORIZATION, direction_str, locked_account_from_row, status_of,
};
use crate::{Db, Store, StoreError, StoredResponse, day_of, is_unique_violation};
use ledger::{
    AuthorizationInput, CardState, CardStatus, Currency, Decision, MccSet, RequestKind,
    SystemAccount, decide, to_minor,
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

impl Store {
    /// Decides and books `items` together. On SQLite (one writer, one connection) and for a
    /// single item this is the single-request path, item by item. Each item's
    /// `call.commit_started` gate is taken just before COMMIT is sent.
    pub async fn authorize_batch<R>(
        &self,
        items: &[BatchItem<'_>],
        render: R,
    ) -> Vec<Result<Outcome<AuthorizationResult>, StoreError>>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let mut out: Vec<_> = items.iter().map(|_| None).collect();
        self.authorize_batch_each(items, render, |i, r| out[i] = Some(r))
            .await;
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Timeout("no result".into()))))
            .collect()
    }

    /// [`Store::authorize_batch`], handing each item's result to `done(index, result)` as
    /// soon as it is known. When the batch falls back to one transaction per item, an item
    /// committed early must not wait for the others (whose locks may take long) before its
    /// requester hears of it: it is past its commit point and waits for exactly this.
    pub async fn authorize_batch_each<R>(
        &self,
        items: &[BatchItem<'_>],
        render: R,
        mut done: impl FnMut(usize, Result<Outcome<AuthorizationResult>, StoreError>),
    ) where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        // Items the batch decided; the others (None) go one transaction each.
        let mut batched: Vec<Option<Outcome<AuthorizationResult>>> =
            items.iter().map(|_| None).collect();
        if self.is_postgres() && items.len() > 1 {
            match self.try_batch(items, &render).await {
                Ok(Attempt::Done(v)) => batched = v,
                Ok(Attempt::Fallback) => {}
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
                .authorize(&item.call, &item.tx, item.kind, &render)
                .await;
            done(i, r);
        }
    }

    async fn try_batch<R>(&self, items: &[BatchItem<'_>], render: &R) -> Result<Attempt, StoreError>
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
        let mut tx = pool.begin().await?;
        let step = self.batch_in(&mut tx, items, render, &clearing).await;
        match step {
            Ok(Some(results)) => {
                if items
                    .iter()
                    .filter_map(|i| i.call.commit_by)
                    .min()
                    .is_some_and(|d| Instant::now() >= d)
                {
                    return Err(StoreError::Timeout("authorization deadline passed".into()));
                }
                // Every requester still waiting, or none: one that gave up at its deadline
                // was answered "nothing booked", so the batch rolls back (those already
                // claimed wait for this failure and answer the same).
                let mut all = true;
                for gate in items.iter().filter_map(|i| i.call.commit_started) {
                    all &= gate.start_commit();
                }
                if !all {
                    return Err(StoreError::Timeout(
                        "an authorization of the batch was abandoned at its deadline".into(),
                    ));
                }
                tx.commit().await.map_err(StoreError::from_commit)?;
                Ok(Attempt::Done(results))
            }
            Ok(None) => Ok(Attempt::Fallback),
            Err(e) if is_unique_violation(&e) => Ok(Attempt::Fallback),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads, decides and writes the batch inside `tx`; `None` means: fall back.
    async fn batch_in<R>(
        &self,
        tx: &mut sqlx::PgConnection,
        items: &[BatchItem<'_>],
        render: &R,
        clearing: &HashMap<Currency, i64>,
    ) -> Result<Option<Vec<Option<Outcome<AuthorizationResult>>>>, sqlx::Error>
    where
        R: Fn(&AuthorizationResult) -> Vec<u8>,
    {
        let keys: Vec<&str> = items.iter().map(|i| i.call.idempotency_key).collect();
        let tx_ids: Vec<&str> = items.iter().map(|i| i.tx.transaction_id).collect();

        // Finished requests under these keys.
        let mut by_key: HashMap<String, (Vec<u8>, StoredResponse)> = HashMap::new();
        for r in sqlx::query(
            "SELECT key, request_hash, response_status, response_body FROM idempotency_keys \
             WHERE scope = $1 AND key = ANY($2)",
        )
        .bind(SCOPE_AUTHORIZATION)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?
        {
            let status: i32 = r.try_get(2)?;
            by_key.insert(
                r.try_get(0)?,
                (
                    r.try_get(1)?,
                    StoredResponse {
                        status: u16::try_from(status).unwrap_or(500),
                        body: r.try_get(3)?,
                    },
                ),
            );
        }
        // Transactions already recorded (answered, or first seen through a verdict).
        let mut by_tx: HashMap<String, Option<StoredResponse>> = HashMap::new();
        for r in sqlx::query(
            "SELECT transaction_id, response_status, response_body FROM processor_transactions \
             WHERE kind = $1 AND transaction_id = ANY($2) FOR UPDATE",
        )
        .bind(KIND_AUTHORIZATION)
        .bind(&tx_ids)
        .fetch_all(&mut *tx)
        .await?
        {
            let status: Option<i32> = r.try_get(1)?;
            let body: Option<Vec<u8>> = r.try_get(2)?;
            let response = status.zip(body).map(|(s, b)| StoredResponse {
                status: u16::try_from(s).unwrap_or(500),
                body: b,
            });
            by_tx.insert(r.try_get(0)?, response);
        }
        // Cardholder accounts, locked in id order.
        let (mut users, mut codes) = (Vec::new(), Vec::new());
        for i in items {
            if let (Some(u), Ok(c)) = (i.tx.user_id, Currency::parse(i.tx.currency)) {
                users.push(u);
                codes.push(c.code().to_owned());
            }
        }
        let mut accounts: HashMap<(String, Currency), LockedAccount> = HashMap::new();
        let mut touched: Vec<(String, Currency)> = Vec::new();
        for r in sqlx::query(
            "SELECT id, user_id, currency, balance_minor, version, overdraft_limit_minor, \
             per_transaction_limit_minor, daily_limit_minor, daily_spent_day, daily_spent_minor, \
             blocked_mccs, created_at_ms, updated_at_ms FROM accounts WHERE kind = 'USER' AND \
             (user_id, currency) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) ORDER BY id FOR UPDATE",
        )
        .bind(&users)
        .bind(&codes)
        .fetch_all(&mut *tx)
        .await?
        {
            let user: String = r.try_get("user_id")?;
            let a = locked_account_from_row!(r);
            accounts.insert((user, a.currency), a);
        }
        let card_ids: Vec<&str> = items.iter().filter_map(|i| i.tx.card_id).collect();
        let mut cards: HashMap<String, (String, String, String)> = HashMap::new();
        for r in sqlx::query(
            "SELECT card_id, user_id, status, blocked_mccs FROM cards WHERE card_id = ANY($1)",
        )
        .bind(&card_ids)
        .fetch_all(&mut *tx)
        .await?
        {
            cards.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
        }

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
        let mut deferred_tx: Vec<&str> = Vec::new();
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
            if deferred_tx.contains(&t.transaction_id) {
                results.push(None);
                continue;
            }
            match by_tx.get(t.transaction_id) {
                Some(Some(resp)) => {
                    // The same transaction under a new key: its first answer, recorded under this key too.
                    let resp = resp.clone();
                    by_key.insert(
                        call.idempotency_key.to_owned(),
                        (call.request_hash.to_vec(), resp.clone()),
                    );
                    new_keys.push((idx, resp.clone()));
                    results.push(Some(Outcome::Replay(resp)));
                    continue;
                }
                Some(None) => {
                    // First seen through a verdict: the single-request path knows that case.
                    deferred_tx.push(t.transaction_id);
                    results.push(None);
                    continue;
                }
                None => {}
            }
            let currency = Currency::parse(t.currency).ok();
            let account_key = t.user_id.zip(currency).map(|(u, c)| (u.to_owned(), c));
            let today = day_of(call.now_ms);
            let card = t
                .card_id
                .and_then(|id| cards.get(id))
                .map(|(owner, status, blocked)| CardState {
                    status: CardStatus::parse(status).unwrap_or(CardStatus::Blocked),
                    belongs_to_user: t.user_id == Some(owner.as_str()),
                    blocked_mccs: MccSet::from_stored(blocked).unwrap_or_default(),
                });
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
                    return Ok(None);
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
            by_tx.insert(t.transaction_id.to_owned(), Some(response.clone()));
            records.push((idx, response.clone()));
            new_keys.push((idx, response.clone()));
            results.push(Some(Outcome::Fresh { response, result }));
        }

        let now = items
            .iter()
            .map(|i| i.call.now_ms)
            .max()
            .unwrap_or_else(crate::now_ms);
        // Ids are taken up front so postings of one account are numbered in the order of
        // their balance-after chain.
        let ids = |seq: &'static str, n: usize| {
            sqlx::query_scalar::<_, i64>(
                "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2)",
            )
            .bind(seq)
            .bind(n as i64)
        };
        if !movements.is_empty() {
            let mut movement_ids = ids("movements", movements.len())
                .fetch_all(&mut *tx)
                .await?;
            movement_ids.sort_unstable();
            let mut posting_ids = ids("postings", postings.len()).fetch_all(&mut *tx).await?;
            posting_ids.sort_unstable();
            sqlx::query(
                "INSERT INTO movements (id, kind, currency, processor_kind, transaction_id, reference, created_at_ms) \
                 SELECT id, 'AUTHORIZATION', cur, 'AUTHORIZATION', tid, NULL, $4 \
                 FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, cur, tid)",
            )
            .bind(&movement_ids)
            .bind(movements.iter().map(|(_, c)| c.code()).collect::<Vec<_>>())
            .bind(movements.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO postings (id, movement_id, account_id, amount_minor, balance_after_minor, account_version, created_at_ms) \
                 SELECT id, mid, aid, amt, bal, ver, $7 \
                 FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) AS u(id, mid, aid, amt, bal, ver)",
            )
            .bind(&posting_ids)
            .bind(postings.iter().map(|p| movement_ids[p.movement]).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.account_id).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.amount).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.balance_after).collect::<Vec<_>>())
            .bind(postings.iter().map(|p| p.version).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let finals: Vec<&LockedAccount> =
                touched.iter().filter_map(|k| accounts.get(k)).collect();
            sqlx::query(
                "UPDATE accounts a SET balance_minor = u.b, version = u.v, daily_spent_day = u.d, \
                 daily_spent_minor = u.s, updated_at_ms = $6 \
                 FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) AS u(id, b, v, d, s) \
                 WHERE a.id = u.id",
            )
            .bind(finals.iter().map(|a| a.id).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.balance).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.version).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.daily_spent_day).collect::<Vec<_>>())
            .bind(finals.iter().map(|a| a.daily_spent).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (idx, m) in result_movement.iter().enumerate() {
                if let (Some(m), Some(Some(Outcome::Fresh { result, .. }))) =
                    (m, results.get_mut(idx))
                {
                    result.movement_id = Some(movement_ids[*m]);
                }
            }
        }
        if !records.is_empty() {
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
            sqlx::query(
                "INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, user_id, \
                 card_id, currency, amount_text, amount_minor, status, status_detail, flags, original_transaction_id, \
                 idempotency_key, movement_id, request_body, response_status, response_body, created_at_ms, updated_at_ms) \
                 SELECT 'AUTHORIZATION', tid, ep, dir, typ, uid, cid, cur, atext, amin, st, sd, '', orig, ik, mid, rb, rs, resp, $18, $18 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                 $9::int8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int8[], $15::bytea[], $16::int4[], $17::bytea[]) \
                 AS u(tid, ep, dir, typ, uid, cid, cur, atext, amin, st, sd, orig, ik, mid, rb, rs, resp)",
            )
            .bind(r(&|i| Some(i.tx.transaction_id.to_owned())))
            .bind(r(&|i| Some(i.call.endpoint.to_owned())))
            .bind(r(&|i| direction_str(i.kind).map(str::to_owned)))
            .bind(r(&|i| Some(i.tx.tx_type.to_owned())))
            .bind(r(&|i| i.tx.user_id.map(str::to_owned)))
            .bind(r(&|i| i.tx.card_id.map(str::to_owned)))
            .bind(r(&|i| Some(i.tx.currency.to_owned())))
            .bind(r(&|i| Some(i.tx.amount_text.to_owned())))
            .bind(records.iter().map(|(i, _)| amount_of(*i)).collect::<Vec<_>>())
            .bind(records.iter().map(|(i, _)| status_of_idx(*i).0).collect::<Vec<_>>())
            .bind(records.iter().map(|(i, _)| status_of_idx(*i).1).collect::<Vec<_>>())
            .bind(r(&|i| i.tx.original_transaction_id.map(str::to_owned)))
            .bind(r(&|i| Some(i.call.idempotency_key.to_owned())))
            .bind(records.iter().map(|(i, _)| movement_of(*i)).collect::<Vec<_>>())
            .bind(records.iter().map(|(i, _)| items[*i].call.raw_body.to_vec()).collect::<Vec<_>>())
            .bind(records.iter().map(|(_, resp)| i32::from(resp.status)).collect::<Vec<_>>())
            .bind(records.iter().map(|(_, resp)| resp.body.clone()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !new_keys.is_empty() {
            sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, request_hash, endpoint, response_status, response_body, created_at_ms) \
                 SELECT $1, k, h, ep, rs, body, $7 FROM UNNEST($2::text[], $3::bytea[], $4::text[], $5::int4[], $6::bytea[]) \
                 AS u(k, h, ep, rs, body)",
            )
            .bind(SCOPE_AUTHORIZATION)
            .bind(new_keys.iter().map(|(i, _)| items[*i].call.idempotency_key).collect::<Vec<_>>())
            .bind(new_keys.iter().map(|(i, _)| items[*i].call.request_hash.to_vec()).collect::<Vec<_>>())
            .bind(new_keys.iter().map(|(i, _)| items[*i].call.endpoint).collect::<Vec<_>>())
            .bind(new_keys.iter().map(|(_, resp)| i32::from(resp.status)).collect::<Vec<_>>())
            .bind(new_keys.iter().map(|(_, resp)| resp.body.clone()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Ok(Some(results))
    }
}
