//! The InStore digital wallet extension: SQL only. Every wallet action is a request of the
//! one writer ([`crate::Work::Wallet`]), read, planned and written in its batch's
//! transaction: replay a known request (an enveloped `requestId`, or a bare body already
//! answered), prefetch and lock the barcode's or the payment's account, hand that snapshot
//! to the request's pure planner, then write what it planned (a payment, a refund or a
//! reversal as a movement against INSTORE_CLEARING, the answer for replays and, when
//! enveloped, the request record and its callback's outbox row). Barcodes are issued by the
//! admin API ([`Store::issue_wallet_barcode`]).

use crate::controls::{card_counters, give_back_counted, write_counting};
use crate::instore::{
    InstoreCall, InstoreOutcome, RequestAnswer, daily_after, record_request, recorded, sv_account,
};
use crate::processor::{
    Holder, LockedAccount, MovementMeta, Step, book, in_own_tx, load_card_record,
    lock_account_by_id,
};
use crate::rules::CardRecord;
use crate::{Store, StoreError, Tx, run};
use ledger::Currency;
use ledger::controls::{Counter, CounterKey, TimeZone};
use ledger::instore::{SvKind, plan_stored_value};
use ledger::plan::{Counting, GiveBack, counted_after};
use sqlx::Row;
use std::collections::HashMap;

/// Movement kind of an approved `pay_wallet`: a debit of the barcode's account.
pub const KIND_WALLET_PAYMENT: &str = "WALLET_PAYMENT";
/// Movement kind of `refund_wallet_payment`: what still stood of a payment, credited back.
pub const KIND_WALLET_REFUND: &str = "WALLET_REFUND";
/// Movement kind of a payment reversed by `cancel_wallet_payment` or `log_cancel_wallet`.
pub const KIND_WALLET_REVERSAL: &str = "WALLET_REVERSAL";

/// The wallet action that `log_cancel_wallet` is stored under, whose `reference` a refund
/// tells as `original_reference`.
pub const ACTION_LOG_CANCEL: &str = "log_cancel_wallet";
/// The action of a cancel of a wallet payment.
const ACTION_CANCEL: &str = "cancel_wallet_payment";

/// Transport facts of one wallet request, owned: the request waits for the writer's batch
/// on another task.
#[derive(Debug, Clone)]
pub struct WalletCall {
    pub tenant_id: String,
    /// The action path (`pay_wallet`, `refund_wallet_payment`, ..).
    pub action: &'static str,
    /// SHA-256 of `JS(body)` (bare) or `JS(payload)` (enveloped), hex.
    pub request_hash: String,
    /// Enveloped: the request's `requestId` and (allowed) `callbackUrl`.
    pub envelope: Option<(String, String)>,
    /// `pay_wallet`: the barcode to read and lock.
    pub barcode: Option<String>,
    /// The payment the request names: by transaction id, else by its barcode.
    pub payment_transaction_id: Option<String>,
    pub payment_barcode: Option<String>,
    /// Bare requests keyed by their body (refund, cancel, log): an identical body replays
    /// the recorded answer.
    pub replay_by_body: bool,
    pub correlation_id: Option<String>,
    pub now_ms: i64,
    /// The requester's acknowledgement deadline (`instore.ack_deadline_ms`); `None`: none.
    pub deadline: Option<crate::CommitDeadline>,
}

/// A barcode as `pay_wallet` reads it, with its account locked.
#[derive(Debug, Clone)]
pub struct BarcodeRow {
    pub user_id: String,
    pub currency: Currency,
    pub expires_at_ms: i64,
    /// The status of the barcode's card (`None`: issued for the account alone).
    pub card_status: Option<String>,
    /// The account (user, currency); `None`: closed since the barcode was issued.
    pub account: Option<LockedAccount>,
    /// The approved payment that used it: tenant, request hash and its exact answer.
    pub used: Option<(String, String, Vec<u8>)>,
    /// The barcode's card with our record of it, and its control counters in the windows of
    /// the request's instant (the spending controls' input).
    pub card: Option<(String, CardRecord)>,
    pub card_counters: HashMap<CounterKey, Counter>,
}

/// A payment as the refund, cancel and log actions read it, with its account locked.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub transaction_id: String,
    pub tenant_id: String,
    pub currency: Currency,
    pub total: i64,
    pub refunded: i64,
    pub reversed: i64,
    /// The `reference` the first `log_cancel_wallet` that named it recorded.
    pub reference: Option<String>,
    pub account: LockedAccount,
    /// What the payment counted in the spending controls (as approved: what its returns
    /// gave back is `refunded + reversed`).
    pub counted: Option<String>,
    /// When it was booked (a return on that UTC day gives the daily counter back).
    pub paid_at_ms: i64,
}

/// What one wallet request's decision may read.
#[derive(Debug, Clone)]
pub struct WalletSnapshot {
    pub barcode: Option<BarcodeRow>,
    pub payment: Option<PaymentRow>,
    /// The zone of the spending controls' windows (`controls.time_zone`).
    pub time_zone: TimeZone,
}

/// A payment to book (`pay_wallet` approved).
#[derive(Debug, Clone)]
pub struct NewWalletPayment {
    pub transaction_id: String,
    pub barcode: String,
    pub currency: Currency,
    pub total: i64,
    pub tip: i64,
    /// What it counted in the spending controls.
    pub counted: Option<Counting>,
}

/// A fresh `pay_wallet` decision on a barcode that names an account, approved or declined,
/// with why (`GET /v1/accounts/{user_id}/{currency}/wallet-payments`).
#[derive(Debug, Clone)]
pub struct WalletDecision {
    /// The payment, when approved.
    pub transaction_id: Option<String>,
    /// The account's currency.
    pub currency: Currency,
    /// Total and tip as asked; `None` when they do not read in the account's currency.
    pub total: Option<i64>,
    pub tip: Option<i64>,
    /// `APPROVED`, or the wallet's reason (`LIMIT_EXCEEDED`, `BARCODE_USED`, ..).
    pub outcome: String,
    /// The spending controls' explanation, in the stored form an authorization keeps;
    /// `None` when it would not explain the answer (the wallet's own rules decided).
    pub explanation: Option<String>,
}

/// A kept wallet payment decision, as the admin API lists it.
#[derive(Debug, Clone)]
pub struct KeptWalletDecision {
    pub id: i64,
    /// The tenant whose till asked, and the last four digits of the barcode it paid with.
    pub tenant_barcode: (String, String),
    pub decision: WalletDecision,
    pub decided_at_ms: i64,
}

/// Money given back of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnKind {
    Refund,
    Reversal,
}

impl ReturnKind {
    pub fn movement_kind(self) -> &'static str {
        match self {
            ReturnKind::Refund => KIND_WALLET_REFUND,
            ReturnKind::Reversal => KIND_WALLET_REVERSAL,
        }
    }
}

/// A refund or reversal to book: a credit of the payment's account.
#[derive(Debug, Clone)]
pub struct NewWalletReturn {
    pub kind: ReturnKind,
    pub transaction_id: String,
    pub payment_transaction_id: String,
    pub amount: i64,
}

/// What the decision planned for one wallet request.
#[derive(Debug, Clone, Default)]
pub struct WalletPlan {
    /// The answer: the action's response (bare), or the callback body (enveloped).
    pub response: Vec<u8>,
    /// Enveloped: the acknowledgement and the callback's fixed headers.
    pub ack: Vec<u8>,
    pub callback_headers: Vec<(String, String)>,
    pub payment: Option<NewWalletPayment>,
    /// A fresh payment decision to keep with why (its barcode names an account).
    pub decision: Option<WalletDecision>,
    pub refund: Option<NewWalletReturn>,
    /// Keep the answer for an identical body (bare refund, cancel and log), with the
    /// payment it concerned and the reference a log recorded.
    pub record: bool,
    pub record_payment: Option<String>,
    pub record_reference: Option<String>,
    /// A retry answered with the stored bytes: nothing to write.
    pub replay: bool,
}

/// The pure decision of one wallet request. The writer may ask it more than once (a batch
/// that lost a race runs again), always with a fresh snapshot.
pub trait WalletPlanner: Send + Sync {
    fn plan(&self, snap: &WalletSnapshot) -> WalletPlan;
}

impl<F> WalletPlanner for F
where
    F: Fn(&WalletSnapshot) -> WalletPlan + Send + Sync,
{
    fn plan(&self, snap: &WalletSnapshot) -> WalletPlan {
        self(snap)
    }
}

/// One wallet request as the writer takes it.
#[derive(Clone, Copy)]
pub struct WalletOp<'a> {
    pub call: &'a WalletCall,
    pub planner: &'a dyn WalletPlanner,
}

/// The envelope's request as the InStore request records read it.
fn instore_call(call: &WalletCall) -> Option<InstoreCall> {
    let (request_id, callback_url) = call.envelope.clone()?;
    Some(InstoreCall {
        tenant_id: call.tenant_id.clone(),
        request_id,
        action: call.action,
        request_hash: call.request_hash.clone(),
        request_hash_unkeyed: None,
        callback_url,
        correlation_id: call.correlation_id.clone(),
        numbers: Vec::new(),
        operation: None,
        duplicate_probe: None,
        location_id: String::new(),
        workstation_id: None,
        now_ms: call.now_ms,
        poa: None,
        deadline: None,
    })
}

/// The answer recorded for a bare request with this body, if any.
async fn recorded_body(tx: &mut Tx, call: &WalletCall) -> Result<Option<Vec<u8>>, sqlx::Error> {
    run!(tx, c => {
        sqlx::query_scalar(
            "SELECT response_body FROM wallet_requests \
             WHERE tenant_id = $1 AND action = $2 AND request_hash = $3",
        )
        .bind(&call.tenant_id)
        .bind(call.action)
        .bind(&call.request_hash)
        .fetch_optional(c)
        .await
    })
}

/// A replay, a conflict, or nothing recorded yet.
async fn replayed(tx: &mut Tx, call: &WalletCall) -> Result<Option<InstoreOutcome>, Step> {
    if let Some(ic) = instore_call(call) {
        return recorded(tx, &ic).await;
    }
    let names_payment = call.payment_transaction_id.is_some() || call.payment_barcode.is_some();
    if call.replay_by_body
        && names_payment
        && [ACTION_CANCEL, ACTION_LOG_CANCEL].contains(&call.action)
    {
        // An answer kept by an earlier version for a cancel or log that found no payment:
        // decided again, as this version keeps none (the payment may stand by now).
        run!(tx, c => {
            sqlx::query(
                "DELETE FROM wallet_requests WHERE tenant_id = $1 AND action = $2 \
                 AND request_hash = $3 AND payment_transaction_id IS NULL",
            )
            .bind(&call.tenant_id)
            .bind(call.action)
            .bind(&call.request_hash)
            .execute(c)
            .await?
            .rows_affected()
        });
    }
    if call.replay_by_body
        && let Some(body) = recorded_body(tx, call).await?
    {
        return Ok(Some(InstoreOutcome::Replay { ack: body }));
    }
    Ok(None)
}

/// Whether this body is one already verified under another action of `payment`: its
/// `pay_wallet`, or a cancel, log or refund of it. A bare body's signature covers the body
/// only, not the action it was sent to, and the wallet's bodies share their members (a
/// payment's body reads as a `log_cancel_wallet` of itself), so a captured request sent to
/// another action would verify and move money.
async fn signed_for_another_action(
    tx: &mut Tx,
    call: &WalletCall,
    payment: &str,
) -> Result<bool, sqlx::Error> {
    // Enveloped too: an envelope's `requestId` binds only when the signed payload carries
    // it, and a captured bare body can be wrapped in an envelope of the sender's making.
    if !call.replay_by_body {
        return Ok(false);
    }
    let found: Option<i32> = run!(tx, c => {
        sqlx::query_scalar(
            "SELECT 1 FROM wallet_payments WHERE transaction_id = $1 AND request_hash = $2 \
             UNION ALL SELECT 1 FROM wallet_requests WHERE payment_transaction_id = $1 \
             AND request_hash = $2 AND action <> $3 LIMIT 1",
        )
        .bind(payment)
        .bind(&call.request_hash)
        .bind(call.action)
        .fetch_optional(c)
        .await?
    });
    Ok(found.is_some())
}

/// A barcode's row, as read before its account's lock.
type BarcodeHead = (
    String,
    Option<String>,
    String,
    i64,
    Option<String>,
    Option<i64>,
);

async fn read_barcode(
    tx: &mut Tx,
    barcode: &str,
    now_ms: i64,
    tz: &TimeZone,
) -> Result<Option<BarcodeRow>, Step> {
    let head: Option<BarcodeHead> = run!(tx, c => {
        sqlx::query_as(
            "SELECT b.user_id, b.card_id, b.currency, b.expires_at_ms, c.status, a.id \
             FROM wallet_barcodes b \
             LEFT JOIN cards c ON c.card_id = b.card_id \
             LEFT JOIN accounts a ON a.kind = 'USER' AND a.user_id = b.user_id AND a.currency = b.currency \
             WHERE b.barcode = $1",
        )
        .bind(barcode)
        .fetch_optional(c)
        .await?
    });
    let Some((user_id, card_id, code, expires_at_ms, card_status, account_id)) = head else {
        return Ok(None);
    };
    let currency = Currency::parse_any(&code)
        .map_err(|e| StoreError::Invalid(format!("barcode currency: {e}")))?;
    let account = match account_id {
        Some(id) => Some(lock_account_by_id(tx, id).await?),
        None => None,
    };
    // The payment that used it, read after the account's lock: a payment of this barcode
    // that another instance committed while this one waited for the lock is seen (it would
    // otherwise be decided again on the balance it left). A payment is a unique key: two
    // racing for one barcode cannot both commit, and the loser's retry reads the winner here.
    let used: Option<(String, String, Vec<u8>)> = run!(tx, c => {
        sqlx::query_as(
            "SELECT tenant_id, request_hash, response_body FROM wallet_payments WHERE barcode = $1",
        )
        .bind(barcode)
        .fetch_optional(c)
        .await?
    });
    let card = match card_id {
        Some(id) => load_card_record(tx, &id).await?.map(|r| (id, r)),
        None => None,
    };
    let card_counters = match &card {
        Some((id, r)) if r.controls.is_some() => card_counters(tx, id, now_ms, tz).await?,
        _ => HashMap::new(),
    };
    // The card's status as read after the account's lock: a block committed meanwhile is
    // what the payment is decided on.
    let card_status = card
        .as_ref()
        .map(|(_, r)| r.status.as_str().to_owned())
        .or(card_status);
    Ok(Some(BarcodeRow {
        user_id,
        currency,
        expires_at_ms,
        card_status,
        account,
        used,
        card,
        card_counters,
    }))
}

async fn read_payment(tx: &mut Tx, call: &WalletCall) -> Result<Option<PaymentRow>, Step> {
    let (filter, key) = match (&call.payment_transaction_id, &call.payment_barcode) {
        (Some(id), _) => ("transaction_id = $1", id),
        (None, Some(b)) => ("barcode = $1", b),
        (None, None) => return Ok(None),
    };
    if call.payment_transaction_id.is_none() {
        // Named by its barcode: the barcode's account is locked first, so a payment with it
        // that another instance is committing is waited for and seen, as `read_barcode`
        // sees it (a transaction id exists only once its payment committed).
        let account: Option<i64> = run!(tx, c => {
            sqlx::query_scalar(
                "SELECT a.id FROM wallet_barcodes b JOIN accounts a ON a.kind = 'USER' \
                 AND a.user_id = b.user_id AND a.currency = b.currency WHERE b.barcode = $1",
            )
            .bind(key)
            .fetch_optional(c)
            .await?
        });
        if let Some(id) = account {
            lock_account_by_id(tx, id).await?;
        }
    }
    let sql = format!(
        "SELECT transaction_id, tenant_id, currency, total_minor, account_id, controls_counted, \
         created_at_ms FROM wallet_payments WHERE {filter}"
    );
    type Head = (String, String, String, i64, i64, Option<String>, i64);
    let head: Option<Head> = run!(tx, c => {
        sqlx::query_as(&sql).bind(key).fetch_optional(c).await?
    });
    let Some((transaction_id, tenant_id, code, total, account_id, counted, paid_at_ms)) = head
    else {
        return Ok(None);
    };
    let currency = Currency::parse_any(&code)
        .map_err(|e| StoreError::Invalid(format!("payment currency: {e}")))?;
    // What was given back is read under the account's lock: a return committed by another
    // request meanwhile is seen.
    let account = lock_account_by_id(tx, account_id).await?;
    let (refunded, reversed, reference): (i64, i64, Option<String>) = run!(tx, c => {
        sqlx::query_as(&format!(
            "SELECT CAST(COALESCE((SELECT SUM(amount_minor) FROM wallet_returns \
               WHERE payment_transaction_id = $1 AND kind = '{KIND_WALLET_REFUND}'), 0) AS BIGINT), \
             CAST(COALESCE((SELECT SUM(amount_minor) FROM wallet_returns \
               WHERE payment_transaction_id = $1 AND kind = '{KIND_WALLET_REVERSAL}'), 0) AS BIGINT), \
             (SELECT reference FROM wallet_requests WHERE payment_transaction_id = $1 \
               AND action = '{ACTION_LOG_CANCEL}' AND reference IS NOT NULL \
               ORDER BY created_at_ms LIMIT 1)"
        ))
        .bind(&transaction_id)
        .fetch_one(c)
        .await?
    });
    Ok(Some(PaymentRow {
        transaction_id,
        tenant_id,
        currency,
        total,
        refunded,
        reversed,
        reference,
        account,
        counted,
        paid_at_ms,
    }))
}

/// Keeps a request's answer for an identical body (and a log's reference for its payment).
/// A bare request that finds one kept meanwhile lost a race (its retry replays the winner);
/// an enveloped one, keyed by its requestId, leaves the kept one as it is.
async fn record_body(tx: &mut Tx, call: &WalletCall, plan: &WalletPlan) -> Result<(), Step> {
    let sql = format!(
        "INSERT INTO wallet_requests (tenant_id, action, request_hash, response_body, \
         payment_transaction_id, reference, correlation_id, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8){}",
        if call.envelope.is_some() {
            " ON CONFLICT (tenant_id, action, request_hash) DO NOTHING"
        } else {
            ""
        }
    );
    run!(tx, c => {
        sqlx::query(&sql)
        .bind(&call.tenant_id)
        .bind(call.action)
        .bind(&call.request_hash)
        .bind(&plan.response[..])
        .bind(plan.record_payment.as_deref())
        .bind(plan.record_reference.as_deref())
        .bind(call.correlation_id.as_deref())
        .bind(call.now_ms)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Keeps a fresh payment decision on `account_id` with why, beside what it wrote.
async fn record_decision(
    tx: &mut Tx,
    call: &WalletCall,
    account_id: i64,
    barcode: &str,
    d: &WalletDecision,
) -> Result<(), Step> {
    let last4 = barcode.get(barcode.len().saturating_sub(4)..).unwrap_or("");
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO wallet_decisions (account_id, tenant_id, barcode_last4, transaction_id, \
             currency, total_minor, tip_minor, outcome, explanation, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(account_id)
        .bind(&call.tenant_id)
        .bind(last4)
        .bind(d.transaction_id.as_deref())
        .bind(d.currency.code())
        .bind(d.total)
        .bind(d.tip)
        .bind(&d.outcome)
        .bind(d.explanation.as_deref())
        .bind(call.now_ms)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

impl Store {
    /// The wallet payment decisions kept for (user, currency), newest first, below the id
    /// `before`; `None` when there is no such account.
    pub async fn wallet_decisions(
        &self,
        user_id: &str,
        currency: Currency,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Option<Vec<KeptWalletDecision>>, StoreError> {
        let Some(account) = self.user_account_id(user_id, currency).await? else {
            return Ok(None);
        };
        let rows = crate::run_pool!(&self.db, p => {
            sqlx::query(
                "SELECT id, tenant_id, barcode_last4, transaction_id, total_minor, tip_minor, \
                 outcome, explanation, created_at_ms FROM wallet_decisions \
                 WHERE account_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(account)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| {
                Ok(KeptWalletDecision {
                    id: r.try_get(0)?,
                    tenant_barcode: (r.try_get(1)?, r.try_get(2)?),
                    decision: WalletDecision {
                        transaction_id: r.try_get(3)?,
                        currency,
                        total: r.try_get(4)?,
                        tip: r.try_get(5)?,
                        outcome: r.try_get(6)?,
                        explanation: r.try_get(7)?,
                    },
                    decided_at_ms: r.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(Some(rows))
    }

    /// One wallet request in the writer's transaction `tx`: replay a known request; else
    /// read and lock what it names, ask its planner (pure) and write the plan. The caller
    /// commits.
    pub(crate) async fn wallet_on(
        &self,
        tx: &mut Tx,
        op: &WalletOp<'_>,
    ) -> Result<InstoreOutcome, Step> {
        let call = op.call;
        if let Some(done) = replayed(tx, call).await? {
            return Ok(done);
        }
        let tz = &self.controls_time_zone;
        let barcode = match &call.barcode {
            Some(b) => read_barcode(tx, b, call.now_ms, tz).await?,
            None => None,
        };
        let snap = WalletSnapshot {
            barcode,
            payment: read_payment(tx, call).await?,
            time_zone: tz.clone(),
        };
        // A duplicate that waited for the account's lock finds the first one's record now.
        if let Some(done) = replayed(tx, call).await? {
            return Ok(done);
        }
        if let Some(payment) = &snap.payment
            && signed_for_another_action(tx, call, &payment.transaction_id).await?
        {
            return Ok(InstoreOutcome::Conflict);
        }
        let plan = op.planner.plan(&snap);
        self.write_wallet_plan(tx, call, &snap, &plan).await?;
        let answer = if call.envelope.is_some() {
            plan.ack
        } else {
            plan.response
        };
        Ok(if plan.replay && call.envelope.is_none() {
            InstoreOutcome::Replay { ack: answer }
        } else {
            InstoreOutcome::Done { ack: answer }
        })
    }

    /// One wallet request in a transaction of its own (the writer's batch of one). A lost
    /// race (the same barcode or body answered on another instance) runs again and finds
    /// the winner's record.
    pub(crate) async fn wallet_alone(
        &self,
        op: &WalletOp<'_>,
    ) -> Result<InstoreOutcome, StoreError> {
        in_own_tx!(self, tx => {
            let outcome = self.wallet_on(tx, op).await?;
            if matches!(outcome, InstoreOutcome::Done { .. }) {
                crate::CommitDeadline::check(op.call.deadline.as_ref(), "wallet request")?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn write_wallet_plan(
        &self,
        tx: &mut Tx,
        call: &WalletCall,
        snap: &WalletSnapshot,
        plan: &WalletPlan,
    ) -> Result<(), Step> {
        if let Some(p) = &plan.payment {
            let account = snap
                .barcode
                .as_ref()
                .and_then(|b| b.account.as_ref())
                .ok_or_else(|| StoreError::Invalid("a planned payment names no account".into()))?;
            let movement_id = self
                .book_wallet(
                    tx,
                    call,
                    account,
                    (p.currency, -p.total, 0),
                    KIND_WALLET_PAYMENT,
                )
                .await?;
            if let Some(c) = &p.counted {
                write_counting(tx, account.id, c, call.now_ms).await?;
            }
            run!(tx, c => {
                sqlx::query(
                    "INSERT INTO wallet_payments (transaction_id, tenant_id, barcode, account_id, \
                     movement_id, currency, total_minor, tip_minor, request_hash, response_body, \
                     correlation_id, created_at_ms, controls_counted) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&p.transaction_id)
                .bind(&call.tenant_id)
                .bind(&p.barcode)
                .bind(account.id)
                .bind(movement_id)
                .bind(p.currency.code())
                .bind(p.total)
                .bind(p.tip)
                .bind(&call.request_hash)
                .bind(&plan.response[..])
                .bind(call.correlation_id.as_deref())
                .bind(call.now_ms)
                .bind(p.counted.as_ref().map(|c| c.kept.as_str()))
                .execute(c)
                .await?
                .rows_affected()
            });
        }
        if let Some(r) = &plan.refund {
            let payment = snap
                .payment
                .as_ref()
                .filter(|p| p.transaction_id == r.payment_transaction_id)
                .ok_or_else(|| StoreError::Invalid("a planned return names no payment".into()))?;
            // A return on the payment's UTC day gives the daily counter its amount back, as a
            // credit adjustment does a card purchase's (never more than stands of the payment:
            // the decision returns at most that).
            let daily_back =
                ledger::holds::daily_give_back(payment.paid_at_ms, call.now_ms, r.amount);
            let movement_id = self
                .book_wallet(
                    tx,
                    call,
                    &payment.account,
                    (payment.currency, r.amount, daily_back),
                    r.kind.movement_kind(),
                )
                .await?;
            run!(tx, c => {
                sqlx::query(
                    "INSERT INTO wallet_returns (transaction_id, payment_transaction_id, kind, \
                     amount_minor, movement_id, tenant_id, correlation_id, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&r.transaction_id)
                .bind(&r.payment_transaction_id)
                .bind(r.kind.movement_kind())
                .bind(r.amount)
                .bind(movement_id)
                .bind(&call.tenant_id)
                .bind(call.correlation_id.as_deref())
                .bind(call.now_ms)
                .execute(c)
                .await?
                .rows_affected()
            });
            // What the payment counted in the spending controls comes back with the money:
            // a reversal of all that stands gives the count back too. The payment's row is
            // immutable: what earlier returns gave back is their sum.
            let returned = payment.refunded + payment.reversed;
            if let Some(counted) = payment
                .counted
                .as_deref()
                .and_then(|c| counted_after(c, returned))
            {
                let give = GiveBack::Credit {
                    amount: r.amount,
                    reversal: r.kind == ReturnKind::Reversal,
                };
                let total = Some(payment.total);
                give_back_counted(tx, &counted, give, total, call.now_ms).await?;
            }
        }
        if let (Some(d), Some(account), Some(barcode)) = (
            &plan.decision,
            snap.barcode.as_ref().and_then(|b| b.account.as_ref()),
            call.barcode.as_deref(),
        ) {
            record_decision(tx, call, account.id, barcode, d).await?;
        }
        if plan.record && call.envelope.is_none() {
            record_body(tx, call, plan).await?;
        }
        if let Some(ic) = instore_call(call) {
            let answer = RequestAnswer {
                ack: &plan.ack,
                callback: &plan.response,
                callback_headers: &plan.callback_headers,
            };
            record_request(tx, &ic, &answer, None).await?;
            if plan.record && plan.record_reference.is_some() {
                // A log's reference is kept for refunds whatever the request's shape (an
                // identical log under another requestId keeps the first record).
                record_body(tx, call, plan).await?;
            }
        }
        Ok(())
    }

    /// Books `delta` (signed, on the account) against INSTORE_CLEARING as a movement of
    /// `kind`, through the same ledger plan as a Redeem (a debit within posted − held +
    /// overdraft, counted toward the day's spending) or a Cancel (a credit, which gives
    /// `daily_back` back to today's spending).
    async fn book_wallet(
        &self,
        tx: &mut Tx,
        call: &WalletCall,
        account: &LockedAccount,
        (currency, delta, daily_back): (Currency, i64, i64),
        kind: &'static str,
    ) -> Result<i64, Step> {
        if account.currency != currency {
            return Err(StoreError::Invalid("a wallet movement in another currency".into()).into());
        }
        let clearing = self.clearing_in(tx, currency).await?;
        let debit = delta < 0;
        let sv_kind = if debit {
            SvKind::Redeem
        } else {
            SvKind::Cancel
        };
        let booking = plan_stored_value(sv_kind, &[(sv_account(account), delta)])
            .map_err(|e| StoreError::Invalid(format!("wallet movement refused: {e:?}")))?;
        let today = ledger::plan::day_of(call.now_ms);
        let daily = if debit {
            Some(daily_after(account, today, delta))
        } else {
            account.given_back(today, daily_back)
        };
        let meta = MovementMeta {
            kind,
            processor_kind: None,
            transaction_id: None,
            reference: None,
        };
        let (movement_id, _) = book(
            tx,
            Holder::Account(account),
            clearing,
            booking[0].postings,
            currency,
            &meta,
            call.now_ms,
            daily,
        )
        .await?;
        Ok(movement_id)
    }

    /// Issues a barcode for (user, currency) and optionally one of the user's cards, valid
    /// until `expires_at_ms`. The digits come from `draw`; one already taken is drawn again.
    pub async fn issue_wallet_barcode(
        &self,
        user_id: &str,
        currency: Currency,
        card_id: Option<&str>,
        expires_at_ms: i64,
        draw: impl Fn() -> String,
    ) -> Result<BarcodeIssue, StoreError> {
        for _ in 0..4 {
            let mut tx = self.begin().await?;
            let account = crate::admin::user_account_in(&mut tx, user_id, currency).await?;
            if account.is_none() {
                return Ok(BarcodeIssue::AccountNotFound);
            }
            if let Some(card) = card_id {
                let owner: Option<String> = run!(&mut tx, c => {
                    sqlx::query_scalar("SELECT user_id FROM cards WHERE card_id = $1")
                        .bind(card)
                        .fetch_optional(c)
                        .await?
                });
                if owner.as_deref() != Some(user_id) {
                    return Ok(BarcodeIssue::CardNotFound);
                }
            }
            let barcode = draw();
            let inserted = run!(&mut tx, c => {
                sqlx::query(
                    "INSERT INTO wallet_barcodes (barcode, user_id, currency, card_id, \
                     expires_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&barcode)
                .bind(user_id)
                .bind(currency.code())
                .bind(card_id)
                .bind(expires_at_ms)
                .bind(crate::now_ms())
                .execute(c)
                .await
                .map(|r| r.rows_affected())
            });
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(BarcodeIssue::Issued(barcode));
                }
                Err(e) if crate::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Timeout("no free barcode drawn".into()))
    }
}

/// What [`Store::issue_wallet_barcode`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarcodeIssue {
    Issued(String),
    /// The user has no account in that currency.
    AccountNotFound,
    /// No such card, or it is not the user's.
    CardNotFound,
}

/// The wallet's invariants (section 6.4), for the audit: every wallet movement is its
/// wallet row and moves its amount, and for each payment refunded + reversed <= total.
pub const WALLET_CHECKS: &[(&str, &str)] = &[
    (
        "for each wallet payment, refunded + reversed <= total",
        "SELECT 'wallet payment ' || p.transaction_id || ' of ' || CAST(p.total_minor AS TEXT) || \
           ' had ' || CAST(CAST(SUM(r.amount_minor) AS BIGINT) AS TEXT) || ' given back' \
         FROM wallet_payments p JOIN wallet_returns r ON r.payment_transaction_id = p.transaction_id \
         GROUP BY p.transaction_id, p.total_minor HAVING SUM(r.amount_minor) > p.total_minor",
    ),
    (
        "each wallet row is its ledger movement",
        "SELECT 'wallet payment ' || w.transaction_id || ' does not match movement ' || CAST(w.movement_id AS TEXT) \
         FROM wallet_payments w LEFT JOIN movements m ON m.id = w.movement_id \
         WHERE m.id IS NULL OR m.kind <> 'WALLET_PAYMENT' OR m.currency <> w.currency \
            OR NOT EXISTS (SELECT 1 FROM postings p WHERE p.movement_id = w.movement_id \
                           AND p.account_id = w.account_id AND p.amount_minor = -w.total_minor) \
         UNION ALL \
         SELECT 'wallet return ' || r.transaction_id || ' does not match movement ' || CAST(r.movement_id AS TEXT) \
         FROM wallet_returns r JOIN wallet_payments w ON w.transaction_id = r.payment_transaction_id \
         LEFT JOIN movements m ON m.id = r.movement_id \
         WHERE m.id IS NULL OR m.kind <> r.kind OR r.amount_minor <= 0 \
            OR NOT EXISTS (SELECT 1 FROM postings p WHERE p.movement_id = r.movement_id \
                           AND p.account_id = w.account_id AND p.amount_minor = r.amount_minor) \
         UNION ALL \
         SELECT 'movement ' || CAST(m.id AS TEXT) || ' (' || m.kind || ') has no wallet row' FROM movements m \
         WHERE (m.kind = 'WALLET_PAYMENT' AND NOT EXISTS (SELECT 1 FROM wallet_payments w WHERE w.movement_id = m.id)) \
            OR (m.kind IN ('WALLET_REFUND', 'WALLET_REVERSAL') \
                AND NOT EXISTS (SELECT 1 FROM wallet_returns r WHERE r.movement_id = m.id))",
    ),
];
