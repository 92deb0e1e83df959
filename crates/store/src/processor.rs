//! The processor's three kinds of call: authorizations (decided), adjustments (always
//! booked) and notifications (the final verdict). Each runs in one database transaction
//! that holds the movement, the transaction record and the idempotency record together.
//!
//! Shape of every call: replay a finished answer if there is one, read and lock what the
//! decision needs, decide, write, commit. Two duplicates racing past the first read meet
//! at the unique keys of the records they insert; the loser rolls back and replays.
//! Adjustments and notifications are decided by `ledger::verdicts`: here they are only
//! read, handed to its plan, and written.

use crate::events::{
    ADJUSTMENT_BOOKED, NOTIFICATION_APPLIED, adjustment_booked, notification_applied,
};
use crate::rules::{CardRecord, fetch_card_record};
use crate::{
    Flags, Store, StoreError, StoredResponse, Tx, day_of, for_update, is_unique_violation, run,
};
use ledger::plan::count_forced;
pub(crate) use ledger::plan::{Asked, direction_str};
pub use ledger::plan::{AuthorizationResult, Outcome};
use ledger::verdicts::{
    AccountView, AdjustmentFacts, AdjustmentTerms, MovementPlan, NotificationAsk,
    NotificationFacts, Original, OriginalMovement, RecordWrite, RecordedAuthorization, Repeat,
    SystemIds, plan_adjustment, plan_notification, repeat_of,
};
use ledger::{Currency, Leg, PostingPlan, RequestKind, SystemAccount, holds};
use sqlx::Row;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

pub use ledger::verdicts::{CardTransaction, NotificationEffect, Verdict};

pub(crate) const KIND_AUTHORIZATION: &str = ledger::verdicts::KIND_AUTHORIZATION;
const KIND_ADJUSTMENT: &str = ledger::verdicts::KIND_ADJUSTMENT;
/// Idempotency keys are scoped per endpoint kind: the processor may reuse a transaction
/// id as the key of both an authorization and the adjustment that corrects it.
pub(crate) const SCOPE_AUTHORIZATION: &str = "authorization";
const SCOPE_ADJUSTMENT: &str = "adjustment";

/// Transport facts of one processor request.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorCall<'a> {
    pub idempotency_key: &'a str,
    /// SHA-256 of the raw body: same key with another body is a conflict.
    pub request_hash: [u8; 32],
    /// The route served (e.g. `/transactions/authorizations/debit`).
    pub endpoint: &'a str,
    pub raw_body: &'a [u8],
    pub now_ms: i64,
    /// Roll back instead of committing once this instant has passed: an answer that
    /// can no longer arrive in time must not leave money moved.
    pub commit_by: Option<Instant>,
    /// Taken just before COMMIT is sent: from then on the outcome is only known when the
    /// commit returns, so the caller must wait for it rather than answer a timeout. A caller
    /// that gave up first (its deadline) makes the store roll back instead.
    pub commit_started: Option<&'a CommitGate>,
}

/// Decides once, between a request's COMMIT and its deadline, which came first. The store
/// calls [`CommitGate::start_commit`] just before COMMIT; the requester calls
/// [`CommitGate::abandon`] at its deadline. Whoever is first wins and the other sees it, so
/// a request answered "nothing booked" can never be committed a moment later, however the
/// threads involved are scheduled.
#[derive(Debug, Default)]
pub struct CommitGate(AtomicU8);

impl CommitGate {
    const OPEN: u8 = 0;
    const COMMITTING: u8 = 1;
    const ABANDONED: u8 = 2;

    pub fn new() -> CommitGate {
        CommitGate::default()
    }

    /// The store, before COMMIT: whether it may commit (false: the requester gave up).
    pub fn start_commit(&self) -> bool {
        match self.0.compare_exchange(
            Self::OPEN,
            Self::COMMITTING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(state) => state == Self::COMMITTING,
        }
    }

    /// The requester, at its deadline: true if it may answer without the outcome (nothing
    /// will be committed); false if a commit is under way and its outcome must be awaited.
    pub fn abandon(&self) -> bool {
        match self.0.compare_exchange(
            Self::OPEN,
            Self::ABANDONED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(state) => state == Self::ABANDONED,
        }
    }

    /// Whether a commit was started.
    pub fn committing(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::COMMITTING
    }

    /// Whether the requester gave up (it was answered "nothing booked").
    pub fn abandoned(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::ABANDONED
    }

    /// The store, after a commit attempt that certainly wrote nothing (refused by the
    /// database): the requester may give up at its deadline again.
    pub fn reopen(&self) {
        let _ = self.0.compare_exchange(
            Self::COMMITTING,
            Self::OPEN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// The deadline of a request that owns its call (an InStore or wallet request): its
/// transaction commits only before `by`, and only if the requester has not given up
/// ([`CommitGate`]); else it rolls back and nothing of it is ever written.
#[derive(Debug, Clone)]
pub struct CommitDeadline {
    pub by: Instant,
    pub gate: std::sync::Arc<CommitGate>,
}

/// Whether a transaction holding a request with deadline `by` and gate `gate` may commit
/// now; takes the gate (from then on only the commit's outcome tells what was written).
/// `what` names the request in the error.
pub(crate) fn may_commit(
    by: Option<Instant>,
    gate: Option<&CommitGate>,
    what: &str,
) -> Result<(), StoreError> {
    if by.is_some_and(|d| Instant::now() >= d) {
        return Err(StoreError::Timeout(format!("{what} deadline passed")));
    }
    if let Some(gate) = gate
        && !gate.start_commit()
    {
        return Err(StoreError::Timeout(format!(
            "{what} abandoned at its deadline"
        )));
    }
    Ok(())
}

impl CommitDeadline {
    /// [`may_commit`] for a call with this deadline, if any.
    pub(crate) fn check(deadline: Option<&CommitDeadline>, what: &str) -> Result<(), StoreError> {
        deadline.map_or(Ok(()), |d| may_commit(Some(d.by), Some(&d.gate), what))
    }
}

/// What an adjustment booked.
#[derive(Debug, Clone)]
pub struct AdjustmentResult {
    pub flags: Flags,
    /// `INVALID_AMOUNT` when nothing could be booked (no amount, none in range, or no
    /// currency at all), else `APPROVED`: the record's and the answer's.
    pub status_detail: &'static str,
    pub movement_id: Option<i64>,
    /// Cardholder balance after, when it went to a cardholder account.
    pub balance_after: Option<i64>,
}

/// A notification as the store needs it.
#[derive(Debug, Clone, Copy)]
pub struct NotificationCall<'a> {
    /// The body's `idempotency_key` (or the header's when the body has none).
    pub key: &'a str,
    pub request_hash: [u8; 32],
    pub raw_body: &'a [u8],
    pub now_ms: i64,
    pub event_id: &'a str,
    pub verdict: Option<Verdict>,
    pub status_detail: Option<&'a str>,
    pub transaction: Option<CardTransaction<'a>>,
    /// Direction implied by the transaction type, when known.
    pub direction: Option<RequestKind>,
    /// The body was JSON but not a notification we could read: keep it for a person.
    pub unparsed: bool,
}

#[derive(Debug, Clone)]
pub struct NotificationResult {
    pub effect: NotificationEffect,
    pub flags: Flags,
    pub movement_id: Option<i64>,
}

/// Internal: a step either fails for real or lost a race and should run again.
pub(crate) enum Step {
    Fail(StoreError),
    Retry,
}

impl From<sqlx::Error> for Step {
    fn from(e: sqlx::Error) -> Self {
        // A deadlock (transactions of several requests locking rows in arrival order) rolled
        // this one back: nothing was written, and the next try finds the rows free.
        let deadlock =
            matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"));
        if is_unique_violation(&e) || deadlock {
            Step::Retry
        } else {
            Step::Fail(e.into())
        }
    }
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Self {
        Step::Fail(e)
    }
}

/// How many times a call that lost a race on a unique key is tried again; the next try
/// finds the winner's record and replays it.
const RACE_RETRIES: usize = 3;

/// Runs `attempt` again while it loses races on unique keys (at most [`RACE_RETRIES`] times).
pub(crate) async fn retry_races<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Step>>,
{
    for _ in 0..RACE_RETRIES {
        match attempt().await {
            Ok(o) => return Ok(o),
            Err(Step::Fail(e)) => return Err(e),
            Err(Step::Retry) => {}
        }
    }
    match attempt().await {
        Ok(o) => Ok(o),
        Err(Step::Fail(e)) => Err(e),
        Err(Step::Retry) => Err(StoreError::Timeout("lost the same race repeatedly".into())),
    }
}

/// The future of `$body` run with `$tx` bound to a transaction of its own (`&mut Tx`),
/// committed once `$body` (a `Result<_, Step>`) gives its value; a try that loses a race on
/// a unique key rolls back and runs again (see [`retry_races`]).
macro_rules! in_own_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        $crate::processor::retry_races(|| async {
            let mut own = $store.begin().await?;
            let done: Result<_, $crate::processor::Step> = {
                let $tx = &mut own;
                $body
            };
            let outcome = done?;
            own.commit().await?;
            Ok(outcome)
        })
    };
}
pub(crate) use in_own_tx;

/// The cardholder account row, locked for the rest of the transaction.
pub(crate) use ledger::plan::Account as LockedAccount;

fn account_view(a: &LockedAccount) -> AccountView {
    AccountView {
        id: a.id,
        balance: a.balance,
    }
}

macro_rules! account_columns {
    () => {
        "SELECT id, currency, balance_minor, held_minor, version, overdraft_limit_minor, \
         per_transaction_limit_minor, daily_limit_minor, daily_spent_day, daily_spent_minor, \
         blocked_mccs, controls, counters, created_at_ms, updated_at_ms FROM accounts"
    };
}
pub(crate) use account_columns;

macro_rules! locked_account_from_row {
    ($r:expr) => {{
        let r = &$r;
        let code: String = r.try_get("currency")?;
        LockedAccount {
            id: r.try_get("id")?,
            currency: Currency::parse_any(&code).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            balance: r.try_get("balance_minor")?,
            held: r.try_get("held_minor")?,
            version: r.try_get("version")?,
            overdraft_limit: r.try_get("overdraft_limit_minor")?,
            per_transaction_limit: r.try_get("per_transaction_limit_minor")?,
            daily_limit: r.try_get("daily_limit_minor")?,
            daily_spent_day: r.try_get("daily_spent_day")?,
            daily_spent: r.try_get("daily_spent_minor")?,
            // Stored sets are validated on write; an unreadable one blocks nothing.
            blocked_mccs: ledger::MccSet::from_stored(&r.try_get::<String, _>("blocked_mccs")?)
                .unwrap_or_default(),
            controls: $crate::rules::stored_controls(
                r.try_get::<Option<String>, _>("controls")?.as_deref(),
                Some(Currency::parse_any(&code).map_err(|e| sqlx::Error::Decode(Box::new(e)))?),
            ),
            counters: r.try_get("counters")?,
        }
    }};
}
pub(crate) use locked_account_from_row;

/// Reads and locks the cardholder account for (user, currency).
pub(crate) async fn lock_user_account(
    tx: &mut Tx,
    user_id: &str,
    currency: Currency,
) -> Result<Option<LockedAccount>, sqlx::Error> {
    let sql = for_update!(
        tx,
        concat!(
            account_columns!(),
            " WHERE kind = 'USER' AND user_id = $1 AND currency = $2"
        )
    );
    run!(tx, c => {
        match sqlx::query(sql).bind(user_id).bind(currency.code()).fetch_optional(c).await? {
            Some(r) => Ok(Some(locked_account_from_row!(r))),
            None => Ok(None),
        }
    })
}

pub(crate) async fn lock_account_by_id(tx: &mut Tx, id: i64) -> Result<LockedAccount, sqlx::Error> {
    account_by_id(tx, id, true).await
}

/// Reads account `id` as `tx` sees it; `lock`: and locks it (Postgres; on SQLite the
/// transaction's write lock covers it).
pub(crate) async fn account_by_id(
    tx: &mut Tx,
    id: i64,
    lock: bool,
) -> Result<LockedAccount, sqlx::Error> {
    let sql = for_update!(tx, concat!(account_columns!(), " WHERE id = $1"), if lock);
    run!(tx, c => {
        let r = sqlx::query(sql).bind(id).fetch_one(c).await?;
        Ok(locked_account_from_row!(r))
    })
}

/// The card's rules as `tx` sees them (`None`: we hold no record of it).
pub(crate) async fn load_card_record(
    tx: &mut Tx,
    card_id: &str,
) -> Result<Option<CardRecord>, sqlx::Error> {
    Ok(run!(tx, c => fetch_card_record!(c, card_id)))
}

/// A finished request under an idempotency key.
pub(crate) struct IdempotentRecord {
    pub request_hash: Vec<u8>,
    /// The route it was sent to.
    pub endpoint: String,
    pub response: StoredResponse,
}

impl IdempotentRecord {
    /// Whether a request of `request_hash` to `endpoint` is the one recorded: the same
    /// body to the same route. (A key is one logical request: the same body sent to another
    /// route under it is another request, 409.)
    pub(crate) fn same_request(&self, request_hash: &[u8], endpoint: &str) -> bool {
        self.request_hash == request_hash && self.endpoint == endpoint
    }
}

pub(crate) async fn find_idempotent(
    tx: &mut Tx,
    scope: &str,
    key: &str,
) -> Result<Option<IdempotentRecord>, sqlx::Error> {
    let row: Option<(Vec<u8>, String, i32, Vec<u8>)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT request_hash, endpoint, response_status, response_body FROM idempotency_keys \
             WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(c)
        .await?
    });
    Ok(
        row.map(|(request_hash, endpoint, status, body)| IdempotentRecord {
            request_hash,
            endpoint,
            response: StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
        }),
    )
}

pub(crate) async fn insert_idempotent(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    request_hash: &[u8],
    endpoint: &str,
    response: &StoredResponse,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO idempotency_keys \
             (scope, key, request_hash, endpoint, response_status, response_body, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(endpoint)
        .bind(i32::from(response.status))
        .bind(&response.body[..])
        .bind(now_ms)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Who receives the holder leg of a movement.
pub(crate) enum Holder<'a> {
    Account(&'a LockedAccount),
    System(i64),
}

/// Descriptive columns of a movement.
pub(crate) struct MovementMeta<'a> {
    pub kind: &'static str,
    pub processor_kind: Option<&'static str>,
    pub transaction_id: Option<&'a str>,
    pub reference: Option<&'a str>,
}

/// Writes one balanced movement and moves the cardholder balance, if any. Returns the
/// movement id and the cardholder balance after.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn book(
    tx: &mut Tx,
    holder: Holder<'_>,
    counterparty_id: i64,
    plan: PostingPlan,
    currency: Currency,
    meta: &MovementMeta<'_>,
    now_ms: i64,
    daily_spent: Option<(i64, i64)>,
) -> Result<(i64, Option<i64>), StoreError> {
    let [(_, holder_amount), (_, counter_amount)] = plan
        .legs()
        .ok_or_else(|| StoreError::Invalid("amount out of range".into()))?;
    let (holder_id, after) = match holder {
        Holder::Account(a) => {
            let balance = a
                .balance
                .checked_add(holder_amount)
                .ok_or_else(|| StoreError::Invalid("balance out of range".into()))?;
            (a.id, Some((balance, a.version + 1)))
        }
        Holder::System(id) => (id, None),
    };
    let movement_id: i64 = run!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO movements (kind, currency, processor_kind, transaction_id, reference, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(meta.kind)
        .bind(currency.code())
        .bind(meta.processor_kind)
        .bind(meta.transaction_id)
        .bind(meta.reference)
        .bind(now_ms)
        .fetch_one(c)
        .await?
    });
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO postings \
             (movement_id, account_id, amount_minor, balance_after_minor, account_version, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6), ($1, $7, $8, NULL, NULL, $6)",
        )
        .bind(movement_id)
        .bind(holder_id)
        .bind(holder_amount)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(now_ms)
        .bind(counterparty_id)
        .bind(counter_amount)
        .execute(c)
        .await?
        .rows_affected()
    });
    if let (Holder::Account(a), Some((balance, version))) = (holder, after) {
        let (day, spent) = daily_spent.unwrap_or((a.daily_spent_day, a.daily_spent));
        run!(tx, c => {
            sqlx::query(
                "UPDATE accounts SET balance_minor = $1, version = $2, daily_spent_day = $3, \
                 daily_spent_minor = $4, updated_at_ms = $5 WHERE id = $6",
            )
            .bind(balance)
            .bind(version)
            .bind(day)
            .bind(spent)
            .bind(now_ms)
            .bind(a.id)
            .execute(c)
            .await?
            .rows_affected()
        });
    }
    Ok((movement_id, after.map(|a| a.0)))
}

/// The columns of a processor transaction record.
pub(crate) struct TransactionRecord<'a> {
    pub kind: &'static str,
    pub call: Option<&'a ProcessorCall<'a>>,
    pub tx: &'a CardTransaction<'a>,
    pub direction: Option<RequestKind>,
    pub amount_minor: Option<i64>,
    pub status: Option<&'a str>,
    pub status_detail: Option<&'a str>,
    pub flags: &'a Flags,
    pub movement_id: Option<i64>,
    pub response: Option<&'a StoredResponse>,
    pub verdict: Option<(Verdict, Option<&'a str>, Option<i64>)>,
    pub now_ms: i64,
}

pub(crate) async fn insert_transaction_record(
    tx: &mut Tx,
    rec: &TransactionRecord<'_>,
) -> Result<(), sqlx::Error> {
    let t = rec.tx;
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO processor_transactions (kind, transaction_id, endpoint, direction, tx_type, \
             user_id, card_id, currency, amount_text, amount_minor, status, status_detail, flags, \
             original_transaction_id, idempotency_key, movement_id, request_body, response_status, \
             response_body, verdict, verdict_detail, verdict_movement_id, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23, $23)",
        )
        .bind(rec.kind)
        .bind(t.transaction_id)
        .bind(rec.call.map(|c| c.endpoint))
        .bind(direction_str(rec.direction))
        .bind(t.tx_type)
        .bind(t.user_id)
        .bind(t.card_id)
        .bind(t.currency)
        .bind(t.amount_text)
        .bind(rec.amount_minor)
        .bind(rec.status)
        .bind(rec.status_detail)
        .bind(rec.flags.stored())
        .bind(t.original_transaction_id)
        .bind(rec.call.map(|c| c.idempotency_key))
        .bind(rec.movement_id)
        .bind(rec.call.map(|c| c.raw_body))
        .bind(rec.response.map(|r| i32::from(r.status)))
        .bind(rec.response.map(|r| &r.body[..]))
        .bind(rec.verdict.map(|v| v.0.as_str()))
        .bind(rec.verdict.and_then(|v| v.1))
        .bind(rec.verdict.and_then(|v| v.2))
        .bind(rec.now_ms)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// A processor transaction record as read back for deciding.
struct ExistingRecord {
    status: Option<String>,
    movement_id: Option<i64>,
    response: Option<StoredResponse>,
    verdict: Option<String>,
    asked: Asked,
}

impl ExistingRecord {
    fn recorded(&self) -> RecordedAuthorization<'_> {
        RecordedAuthorization {
            status: self.status.as_deref(),
            movement_id: self.movement_id,
            verdict: self.verdict.as_deref(),
            direction: match self.asked.direction.as_deref() {
                Some("DEBIT") => Some(RequestKind::Debit),
                Some("CREDIT") => Some(RequestKind::Credit),
                _ => None,
            },
        }
    }
}

/// What a recorded transaction asked for, from a row with its columns.
macro_rules! asked_from_row {
    ($r:expr) => {{
        let r = &$r;
        Asked::read(|column| r.try_get(column))?
    }};
}
pub(crate) use asked_from_row;

async fn find_transaction_record(
    tx: &mut Tx,
    kind: &str,
    transaction_id: &str,
    lock: bool,
) -> Result<Option<ExistingRecord>, sqlx::Error> {
    let sql = for_update!(
        tx,
        "SELECT status, movement_id, response_status, response_body, verdict, \
         endpoint, direction, tx_type, user_id, card_id, currency, amount_text \
         FROM processor_transactions WHERE kind = $1 AND transaction_id = $2",
        if lock
    );
    run!(tx, c => {
        match sqlx::query(sql).bind(kind).bind(transaction_id).fetch_optional(c).await? {
            None => Ok(None),
            Some(r) => {
                let status: Option<i32> = r.try_get("response_status")?;
                let body: Option<Vec<u8>> = r.try_get("response_body")?;
                Ok(Some(ExistingRecord {
                    status: r.try_get("status")?,
                    movement_id: r.try_get("movement_id")?,
                    response: match (status, body) {
                        (Some(s), Some(b)) => Some(StoredResponse {
                            status: u16::try_from(s).unwrap_or(500),
                            body: b,
                        }),
                        _ => None,
                    },
                    verdict: r.try_get("verdict")?,
                    asked: asked_from_row!(r),
                }))
            }
        }
    })
}

/// Records the answer to `call` under its idempotency key, for the caller to commit.
pub(crate) async fn record_answer(
    tx: &mut Tx,
    scope: &str,
    call: &ProcessorCall<'_>,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    insert_idempotent(
        tx,
        scope,
        call.idempotency_key,
        &call.request_hash,
        call.endpoint,
        response,
        call.now_ms,
    )
    .await
}

impl Store {
    /// Books an adjustment exactly once. Adjustments cannot be refused: whatever they
    /// say is recorded, on suspense when no cardholder account fits, and flagged (the
    /// rules: [`ledger::verdicts::plan_adjustment`]).
    pub async fn adjust<R>(
        &self,
        call: &ProcessorCall<'_>,
        t: &CardTransaction<'_>,
        direction: RequestKind,
        render: R,
    ) -> Result<Outcome<AdjustmentResult>, StoreError>
    where
        R: Fn(&AdjustmentResult) -> Vec<u8>,
    {
        let terms = AdjustmentTerms::new(t, direction);
        let system = self.system_ids(terms.currency).await?;
        in_own_tx!(self, tx => {
            adjust_on(self, tx, call, t, direction, &terms, system, &render).await
        })
        .await
    }

    /// Stores a notification once and applies the processor's verdict to the ledger (the
    /// rules: [`ledger::verdicts::plan_notification`]).
    pub async fn notify<R>(
        &self,
        n: &NotificationCall<'_>,
        render: R,
    ) -> Result<Outcome<NotificationResult>, StoreError>
    where
        R: Fn(&NotificationResult) -> Vec<u8>,
    {
        let ask = n.ask();
        let system = self.system_ids(ask.currency()).await?;
        in_own_tx!(self, tx => notify_on(self, tx, n, &ask, system, &render).await).await
    }

    /// The processor clearing and suspense accounts of `currency`, when there is one.
    pub(crate) async fn system_ids(
        &self,
        currency: Option<Currency>,
    ) -> Result<Option<SystemIds>, StoreError> {
        let Some(c) = currency else {
            return Ok(None);
        };
        Ok(Some(SystemIds {
            clearing: self
                .system_account(SystemAccount::ProcessorClearing, c)
                .await?,
            suspense: self.system_account(SystemAccount::Suspense, c).await?,
        }))
    }
}

/// Reads, plans and writes an adjustment on `tx`, which the caller commits: what the
/// transaction already wrote (earlier requests of a batch) is the state it starts from.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn adjust_on<R>(
    store: &Store,
    tx: &mut Tx,
    call: &ProcessorCall<'_>,
    t: &CardTransaction<'_>,
    direction: RequestKind,
    terms: &AdjustmentTerms,
    system: Option<SystemIds>,
    render: &R,
) -> Result<Outcome<AdjustmentResult>, Step>
where
    R: Fn(&AdjustmentResult) -> Vec<u8>,
{
    let scope = SCOPE_ADJUSTMENT;
    if let Some(rec) = find_idempotent(tx, scope, call.idempotency_key).await? {
        return Ok(if rec.same_request(&call.request_hash, call.endpoint) {
            Outcome::Replay(rec.response)
        } else {
            Outcome::KeyConflict
        });
    }
    if let Some(ExistingRecord {
        response: Some(response),
        asked,
        ..
    }) = find_transaction_record(tx, KIND_ADJUSTMENT, t.transaction_id, false).await?
    {
        if !asked.same_as(call.endpoint, Some(direction), t) {
            return Ok(Outcome::TransactionConflict);
        }
        record_answer(tx, scope, call, &response).await?;
        return Ok(Outcome::Replay(response));
    }
    let account = match terms.account(t) {
        Some((user, currency)) => lock_user_account(tx, user, currency).await?,
        None => None,
    };
    // Read after the account's lock: a verdict on the original that another instance
    // committed meanwhile is seen (its review flag depends on it).
    let original = match t.original_transaction_id {
        Some(original) => Some(original_of(tx, original).await?),
        None => None,
    };
    let facts = AdjustmentFacts {
        original,
        account: account.as_ref().map(account_view),
        system,
    };
    let plan = plan_adjustment(terms, &facts, t);
    // Only money that reaches the cardholder's account gives back (not a credit parked on
    // suspense: a negative amount, or an account that cannot take it).
    let credits_account = matches!((&plan.movement, &account), (Some(m), Some(a))
        if m.postings.holder == Leg::User && m.holder_id == a.id && m.postings.holder_amount > 0);
    // A credit against a debit booked today on the account it is booked to comes off
    // today's legacy daily counter, as the controls' counters get it back below.
    let daily = match (&plan.movement, &account, t.original_transaction_id) {
        (Some(m), Some(a), Some(original))
            if direction == RequestKind::Credit && credits_account =>
        {
            let (debited, booked_at, credited) = debit_left(tx, original, a.id).await?;
            let back = holds::credit_give_back(
                debited,
                credited,
                booked_at.unwrap_or(i64::MIN),
                call.now_ms,
                m.postings.holder_amount,
            );
            a.given_back(day_of(call.now_ms), back)
        }
        _ => None,
    };
    let movement_id =
        write_movement(tx, plan.movement, account.as_ref(), call.now_ms, daily).await?;
    // A credit against an authorization of the account it is booked to gives back the
    // room that authorization took in its controls.
    if let (true, RequestKind::Credit, Some(original), Some(amount), Some(booked_to)) = (
        credits_account,
        direction,
        t.original_transaction_id,
        plan.amount_minor,
        terms.account(t),
    ) {
        let give = ledger::plan::GiveBack::Credit {
            amount: amount.abs(),
            reversal: t.tx_type.starts_with("REVERSAL"),
        };
        crate::controls::release_controls(tx, original, give, Some(booked_to), call.now_ms).await?;
    }
    let result = AdjustmentResult {
        flags: plan.flags,
        status_detail: plan.status_detail,
        movement_id,
        balance_after: plan.balance_after,
    };
    let response = StoredResponse {
        status: 200,
        body: render(&result),
    };
    insert_transaction_record(
        tx,
        &TransactionRecord {
            kind: KIND_ADJUSTMENT,
            call: Some(call),
            tx: t,
            direction: Some(direction),
            amount_minor: plan.amount_minor,
            status: Some("APPROVED"),
            status_detail: Some(plan.status_detail),
            flags: &result.flags,
            movement_id,
            response: Some(&response),
            verdict: None,
            now_ms: call.now_ms,
        },
    )
    .await?;
    record_answer(tx, scope, call, &response).await?;
    store
        .publish(tx, ADJUSTMENT_BOOKED, || {
            adjustment_booked(
                call,
                t,
                direction,
                plan.amount_minor,
                plan.status_detail,
                &result,
            )
        })
        .await?;
    Ok(Outcome::Fresh { response, result })
}

/// Reads, plans and writes a notification on `tx`, which the caller commits.
pub(crate) async fn notify_on<R>(
    store: &Store,
    tx: &mut Tx,
    n: &NotificationCall<'_>,
    ask: &NotificationAsk<'_>,
    system: Option<SystemIds>,
    render: &R,
) -> Result<Outcome<NotificationResult>, Step>
where
    R: Fn(&NotificationResult) -> Vec<u8>,
{
    let seen: Option<(Vec<u8>, Vec<u8>)> = run!(tx, c => {
        sqlx::query_as("SELECT request_hash, response_body FROM notifications WHERE idempotency_key = $1")
            .bind(n.key)
            .fetch_optional(c)
            .await?
    });
    if let Some((hash, body)) = seen {
        let response = StoredResponse { status: 200, body };
        return Ok(repeated(&hash, &n.request_hash, response));
    }
    let existing = match ask.record_to_read() {
        Some(id) => find_transaction_record(tx, KIND_AUTHORIZATION, id, true).await?,
        None => None,
    };
    let record = existing.as_ref().map(ExistingRecord::recorded);
    let original = match ask.original_to_read(record.as_ref()) {
        Some(id) => Some(read_original(tx, id).await?),
        None => None,
    };
    let account = match ask.account_to_read(record.as_ref()) {
        Some((user, currency)) => lock_user_account(tx, user, currency).await?,
        None => original.as_ref().and_then(|o| o.account.clone()),
    };
    let facts = NotificationFacts {
        record,
        original: original.as_ref().map(OriginalRow::movement),
        account: account.as_ref().map(account_view),
        system,
    };
    let plan = plan_notification(ask, &facts).map_err(|e| StoreError::Invalid(e.to_string()))?;
    // The processor rejected what we approved: a debit booked today comes off today's
    // legacy daily counter too (a later day's counter never counted it), less what credit
    // adjustments naming it gave back already.
    let daily = match (plan.effect, &original, &account) {
        (NotificationEffect::Reversed, Some(o), Some(a))
            if o.holder == Leg::User && o.holder_id == a.id && o.holder_amount < 0 =>
        {
            let debited = -o.holder_amount;
            let back =
                holds::credit_give_back(debited, o.credited, o.booked_at_ms, n.now_ms, debited);
            a.given_back(day_of(n.now_ms), back)
        }
        _ => None,
    };
    // Money the processor made effective on its own counts as spent: today's legacy daily
    // counter and the spending controls' counters, as our approval would have counted it.
    let forced = match (
        plan.effect,
        &plan.movement,
        &account,
        n.transaction.as_ref(),
    ) {
        (NotificationEffect::Forced, Some(m), Some(a), Some(t))
            if m.postings.holder == Leg::User
                && m.holder_id == a.id
                && m.postings.holder_amount < 0 =>
        {
            Some(forced_counting(store, tx, t, m, a, n.now_ms).await?)
        }
        _ => None,
    };
    let daily = daily.or_else(|| forced.as_ref().map(|f| f.0));
    let movement_id = write_movement(tx, plan.movement, account.as_ref(), n.now_ms, daily).await?;
    // The processor rejected what we approved: the room it took comes back, also when it
    // booked nothing (a card check of 0.00 still counted in the velocity limits). What was
    // given back already is not given again.
    if let (
        Some(Verdict::Rejected),
        NotificationEffect::Reversed | NotificationEffect::NoOp,
        Some(t),
    ) = (n.verdict, plan.effect, n.transaction.as_ref())
    {
        let give = ledger::plan::GiveBack::Whole;
        crate::controls::release_controls(tx, t.transaction_id, give, None, n.now_ms).await?;
    }
    if let (Some(verdict), Some(t)) = (n.verdict, n.transaction.as_ref()) {
        let set_verdict = (verdict, n.status_detail, movement_id);
        match plan.record {
            RecordWrite::None => {}
            RecordWrite::SetVerdict => {
                update_verdict(tx, t.transaction_id, set_verdict, n.now_ms).await?;
            }
            RecordWrite::Insert { amount_minor } => {
                insert_transaction_record(
                    tx,
                    &TransactionRecord {
                        kind: KIND_AUTHORIZATION,
                        call: None,
                        tx: t,
                        direction: n.direction,
                        amount_minor,
                        status: None,
                        status_detail: None,
                        flags: &plan.flags,
                        movement_id: None,
                        response: None,
                        verdict: Some(set_verdict),
                        now_ms: n.now_ms,
                    },
                )
                .await?;
            }
        }
    }
    if let (Some((_, Some(counting))), Some(a), Some(t)) =
        (&forced, &account, n.transaction.as_ref())
    {
        crate::controls::write_counting(tx, a.id, counting, n.now_ms).await?;
        run!(tx, c => {
            sqlx::query(
                "UPDATE processor_transactions SET controls_counted = $2 \
                 WHERE kind = 'AUTHORIZATION' AND transaction_id = $1",
            )
            .bind(t.transaction_id)
            .bind(counting.kept.as_str())
            .execute(c)
            .await?
            .rows_affected()
        });
    }
    let result = NotificationResult {
        effect: plan.effect,
        flags: plan.flags,
        movement_id,
    };
    let body = render(&result);
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO notifications (idempotency_key, event_id, transaction_id, verdict, \
             status_detail, effect, flags, movement_id, request_hash, request_body, response_body, \
             received_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(n.key)
        .bind(n.event_id)
        .bind(n.transaction.map(|t| t.transaction_id))
        .bind(n.verdict.map(|v| v.as_str()))
        .bind(n.status_detail)
        .bind(result.effect.as_str())
        .bind(result.flags.stored())
        .bind(result.movement_id)
        .bind(&n.request_hash[..])
        .bind(n.raw_body)
        .bind(&body[..])
        .bind(n.now_ms)
        .execute(c)
        .await?
        .rows_affected()
    });
    store
        .publish(tx, NOTIFICATION_APPLIED, || {
            notification_applied(n, plan.record, &result)
        })
        .await?;
    Ok(Outcome::Fresh {
        response: StoredResponse { status: 200, body },
        result,
    })
}

/// What a forced debit booking `m` of `t` on the cardholder's locked account `a` counts: the
/// account's daily spending once it is booked, and what it adds to the spending controls'
/// counters in the windows of `now_ms` (`None`: no control counts it).
async fn forced_counting(
    store: &Store,
    tx: &mut Tx,
    t: &CardTransaction<'_>,
    m: &MovementPlan<'_>,
    a: &LockedAccount,
    now_ms: i64,
) -> Result<((i64, i64), Option<ledger::plan::Counting>), StoreError> {
    let daily = crate::instore::daily_after(a, day_of(now_ms), m.postings.holder_amount);
    let card = match t.card_id {
        Some(id) => load_card_record(tx, id).await?.map(|c| (id, c)),
        None => None,
    };
    let card = card.as_ref().map(|(id, c)| (*id, c));
    let minor = m.postings.holder_amount.saturating_neg();
    let tz = &store.controls_time_zone;
    Ok((daily, count_forced(t, minor, now_ms, a, card, tz)))
}

impl NotificationCall<'_> {
    pub(crate) fn ask(&self) -> NotificationAsk<'_> {
        NotificationAsk {
            key: self.key,
            verdict: self.verdict,
            transaction: self.transaction,
            direction: self.direction,
            unparsed: self.unparsed,
        }
    }
}

/// A repeated key: its stored answer for the same body, a conflict for another.
fn repeated<T>(recorded_hash: &[u8], request_hash: &[u8], response: StoredResponse) -> Outcome<T> {
    match repeat_of(recorded_hash, request_hash) {
        Repeat::Replay => Outcome::Replay(response),
        Repeat::KeyConflict => Outcome::KeyConflict,
    }
}

/// What we hold of `transaction_id`: never recorded; recorded with no money standing for it
/// (declined or approved for nothing, or approved and reversed by a REJECTED verdict, and
/// no APPROVED verdict booked it); or recorded with money standing. Money stands as the
/// reconciler reads it (`effective` in `recon.rs`).
async fn original_of(tx: &mut Tx, transaction_id: &str) -> Result<Original, sqlx::Error> {
    let (records, booked): (i64, i64) = run!(tx, c => {
        sqlx::query_as(
            "SELECT COUNT(*), COUNT(CASE \
               WHEN verdict = 'APPROVED' AND verdict_movement_id IS NOT NULL THEN 1 \
               WHEN verdict = 'REJECTED' AND verdict_movement_id IS NOT NULL THEN NULL \
               WHEN movement_id IS NOT NULL THEN 1 END) \
             FROM processor_transactions \
             WHERE kind IN ('AUTHORIZATION', 'ADJUSTMENT') AND transaction_id = $1",
        )
        .bind(transaction_id)
        .fetch_one(c)
        .await?
    });
    Ok(match (records, booked) {
        (0, _) => Original::Unknown,
        (_, 0) => Original::BookedNothing,
        _ => Original::Booked,
    })
}

/// What the debit of authorization `transaction_id` took from `account_id`, net of its
/// verdict's movement (a rejected approval took nothing), when it was booked, and what
/// credit adjustments against it have given the account since.
async fn debit_left(
    tx: &mut Tx,
    transaction_id: &str,
    account_id: i64,
) -> Result<(i64, Option<i64>, i64), sqlx::Error> {
    let (net, booked_at, credited): (i64, Option<i64>, i64) = run!(tx, c => {
        sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(p.amount_minor), 0) AS BIGINT), MIN(p.created_at_ms), \
               (SELECT CAST(COALESCE(SUM(q.amount_minor), 0) AS BIGINT) \
                FROM processor_transactions a JOIN postings q ON q.movement_id = a.movement_id \
                WHERE a.kind = 'ADJUSTMENT' AND a.original_transaction_id = $1 \
                  AND a.direction = 'CREDIT' AND q.account_id = $2) \
             FROM processor_transactions t JOIN postings p \
               ON p.movement_id IN (t.movement_id, t.verdict_movement_id) \
             WHERE t.kind = 'AUTHORIZATION' AND t.transaction_id = $1 AND p.account_id = $2",
        )
        .bind(transaction_id)
        .bind(account_id)
        .fetch_one(c)
        .await?
    });
    Ok((-net, booked_at, credited))
}

/// Writes a planned movement; its cardholder leg goes to `account`, read and locked for it.
async fn write_movement(
    tx: &mut Tx,
    movement: Option<MovementPlan<'_>>,
    account: Option<&LockedAccount>,
    now_ms: i64,
    daily_spent: Option<(i64, i64)>,
) -> Result<Option<i64>, StoreError> {
    let Some(m) = movement else {
        return Ok(None);
    };
    let holder = match (m.postings.holder, account) {
        (Leg::User, Some(a)) if a.id == m.holder_id => Holder::Account(a),
        (Leg::User, _) => {
            return Err(StoreError::Invalid(format!(
                "account {} was not read for its movement",
                m.holder_id
            )));
        }
        (Leg::System(_), _) => Holder::System(m.holder_id),
    };
    let meta = MovementMeta {
        kind: m.kind,
        processor_kind: Some(m.processor_kind),
        transaction_id: m.transaction_id,
        reference: m.reference,
    };
    let (id, _) = book(
        tx,
        holder,
        m.counterparty_id,
        m.postings,
        m.currency,
        &meta,
        now_ms,
        daily_spent,
    )
    .await?;
    Ok(Some(id))
}

async fn update_verdict(
    tx: &mut Tx,
    transaction_id: &str,
    (verdict, detail, movement): (Verdict, Option<&str>, Option<i64>),
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "UPDATE processor_transactions SET verdict = $1, verdict_detail = $2, \
             verdict_movement_id = $3, updated_at_ms = $4 WHERE kind = $5 AND transaction_id = $6",
        )
        .bind(verdict.as_str())
        .bind(detail)
        .bind(movement)
        .bind(now_ms)
        .bind(KIND_AUTHORIZATION)
        .bind(transaction_id)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// A movement as read for undoing it, with its cardholder account locked.
struct OriginalRow {
    currency: Currency,
    transaction_id: Option<String>,
    holder: Leg,
    holder_id: i64,
    holder_amount: i64,
    counterparty: SystemAccount,
    counterparty_id: i64,
    account: Option<LockedAccount>,
    /// When the movement was booked.
    booked_at_ms: i64,
    /// What credit adjustments naming its transaction gave its cardholder account since.
    credited: i64,
}

impl OriginalRow {
    fn movement(&self) -> OriginalMovement<'_> {
        OriginalMovement {
            currency: self.currency,
            transaction_id: self.transaction_id.as_deref(),
            holder: self.holder,
            holder_id: self.holder_id,
            holder_amount: self.holder_amount,
            counterparty: self.counterparty,
            counterparty_id: self.counterparty_id,
            holder_balance: self.account.as_ref().map(|a| a.balance),
            credited: self.credited,
        }
    }
}

/// Reads movement `id`'s two postings and locks its cardholder account, if any.
async fn read_original(tx: &mut Tx, id: i64) -> Result<OriginalRow, Step> {
    let legs: Vec<(i64, i64, String, String, Option<String>, i64)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT p.account_id, p.amount_minor, a.kind, m.currency, m.transaction_id, \
             m.created_at_ms \
             FROM postings p JOIN accounts a ON a.id = p.account_id \
             JOIN movements m ON m.id = p.movement_id WHERE p.movement_id = $1 ORDER BY p.id",
        )
        .bind(id)
        .fetch_all(c)
        .await?
    });
    let [
        (holder_id, holder_amount, holder_kind, code, transaction_id, booked_at_ms),
        (counterparty_id, _, counter_kind, _, _, _),
    ]: [_; 2] = <[_; 2]>::try_from(legs)
        .map_err(|_| StoreError::Invalid(format!("movement {id} is not two postings")))?;
    let currency = Currency::parse_any(&code).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let counterparty = SystemAccount::parse(&counter_kind)
        .ok_or_else(|| StoreError::Invalid(format!("movement {id}: bad counterparty")))?;
    let holder = match SystemAccount::parse(&holder_kind) {
        Some(s) => Leg::System(s),
        None => Leg::User,
    };
    let account = match holder {
        Leg::User => Some(lock_account_by_id(tx, holder_id).await?),
        Leg::System(_) => None,
    };
    // Read after the account's lock: a credit adjustment naming it commits before or after.
    let credited = match (&account, &transaction_id) {
        (Some(a), Some(t)) => debit_left(tx, t, a.id).await?.2,
        _ => 0,
    };
    Ok(OriginalRow {
        currency,
        transaction_id,
        holder,
        holder_id,
        holder_amount,
        counterparty,
        counterparty_id,
        account,
        booked_at_ms,
        credited,
    })
}
