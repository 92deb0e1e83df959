//! The way every authorization takes, between the processor's routes and the one writer:
//! a request goes to the batcher (one writer on either store) and is answered within its
//! deadline; and the exact bytes of every answer to the processor are rendered here, in
//! one place. Routes call this module; the batcher calls only its mapping and rendering.
//!
//! route (signature, parse, idempotency) -> service (deadline) -> batcher -> store

use crate::app::AppState;
use crate::batcher::{
    AdjustmentJob, AuthorizationJob, FundingJob, FundingRender, Job, NotificationJob, Reply,
};
use crate::rules::CachedCard;
use ledger::{Decision, DeclineClass, RequestKind, format_minor};
use protocol::wire::{
    AdjustmentResponse, AuthorizationResponse, Balance, Status, StatusDetail, TransactionRequest,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{
    AdjustmentResult, AuthorizationResult, CardLookup, CardTransaction, CommitDeadline, CommitGate,
    FundingCall, FundingOutcome, NotificationCall, NotificationResult, Outcome, ProcessorCall,
    StoreError,
};

/// One verified, parsed authorization on its way to the writer.
pub struct Authorization<'a> {
    pub body: &'a [u8],
    pub parsed: TransactionRequest,
    pub idempotency_key: &'a str,
    pub request_hash: [u8; 32],
    pub endpoint: &'static str,
    pub kind: Option<RequestKind>,
    /// When the request arrived: the deadline counts from here.
    pub started: Instant,
}

/// Hands the authorization to the batcher and waits for its outcome, or for the deadline
/// if that comes first and no commit has started (then nothing is booked, ever: see
/// [`CommitGate`]).
pub async fn authorize(
    state: &AppState,
    a: Authorization<'_>,
) -> Result<Outcome<AuthorizationResult>, StoreError> {
    let (commit_by, due) = deadline_of(
        a.started,
        Duration::from_millis(state.settings.processor.deadline_ms),
    );
    // Card rules from this instance's cache; a miss costs no read of its own: the batch
    // reads the card and fills the cache (`card_epoch`). The account and its balance are
    // read by the batch.
    let mut card_epoch = None;
    let card = a
        .parsed
        .card
        .as_ref()
        .and_then(|c| match state.rules.probe(&c.id) {
            Ok(known) => known,
            Err(epoch) => {
                card_epoch = Some(epoch);
                None
            }
        });
    // Whichever comes first, the commit or the deadline, decides.
    let committing = Arc::new(CommitGate::new());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job::Authorization(AuthorizationJob {
        body: a.body.to_vec(),
        parsed: a.parsed,
        idempotency_key: a.idempotency_key.to_owned(),
        request_hash: a.request_hash,
        endpoint: a.endpoint,
        now_ms: store::now_ms(),
        commit_by,
        kind: a.kind,
        card,
        card_epoch,
        committing: committing.clone(),
        reply: Some(reply),
    });
    by_deadline(state, job, answer, &committing, due, "authorization").await
}

/// A request that arrived at `started` with `deadline` to be answered: the instant its
/// transaction must commit by, leaving room for the commit itself inside the deadline, and
/// the instant it is answered by (`due`).
pub(crate) fn deadline_of(started: Instant, deadline: Duration) -> (Instant, Instant) {
    let commit_margin = (deadline / 4).min(Duration::from_millis(150));
    (
        started + deadline.saturating_sub(commit_margin),
        started + deadline,
    )
}

/// Queues `job` and waits for its result (`answer`), or for `due` if that comes first and
/// no commit has started: then nothing of `what` is written, ever (see [`CommitGate`]).
pub(crate) async fn by_deadline<T>(
    state: &AppState,
    job: Job,
    mut answer: tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
    committing: &CommitGate,
    due: Instant,
    what: &str,
) -> Result<T, StoreError> {
    queue_by(state, job, due).await?;
    tokio::select! {
        r = &mut answer => r.unwrap_or_else(|_| Err(dropped())),
        _ = tokio::time::sleep_until(due.into()) => {
            if committing.abandon() {
                Err(StoreError::Timeout(format!("{what} deadline reached")))
            } else {
                // The commit is under way: only its result tells whether money moved.
                answer.await.unwrap_or_else(|_| Err(dropped()))
            }
        }
    }
}

/// Queues `job` for the writer by `due`. A full queue (the database stalled for seconds)
/// must not hold the answer past `due` either: a job not queued in time is dropped, never
/// committed.
async fn queue_by(state: &AppState, job: Job, due: Instant) -> Result<(), StoreError> {
    match tokio::time::timeout_at(due.into(), state.batcher.submit(job)).await {
        Err(_) => Err(StoreError::Timeout(
            "commit queue full until the deadline".into(),
        )),
        Ok(Err(_)) => Err(StoreError::Timeout("batching stopped".into())),
        Ok(Ok(())) => Ok(()),
    }
}

/// A job's reply channel closed without a result: its batch was dropped.
fn dropped() -> StoreError {
    StoreError::Timeout("batch dropped".into())
}

/// Hands a job whose call carries its own [`CommitDeadline`] (an InStore or wallet request)
/// to the batcher: answered within `deadline` from now, and if the commit has not started by
/// then, never committed (the caller answers 503 and InStore resends).
pub(crate) async fn within_deadline<T>(
    state: &AppState,
    deadline: Duration,
    what: &str,
    job: impl FnOnce(CommitDeadline, Reply<T>) -> Job,
) -> Result<T, StoreError> {
    let (by, due) = deadline_of(Instant::now(), deadline);
    let gate = Arc::new(CommitGate::new());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = job(
        CommitDeadline {
            by,
            gate: gate.clone(),
        },
        reply,
    );
    by_deadline(state, job, answer, &gate, due, what).await
}

/// Hands a job that has no deadline of its own to the batcher and waits for its result,
/// however long the writer takes (the channels' captures, cancels and refunds, expiries,
/// the admin API's POA changes; the processor's resendable requests go through
/// [`resendable`]).
pub(crate) async fn through_writer<T>(
    state: &AppState,
    job: impl FnOnce(Reply<T>) -> Job,
) -> Result<T, StoreError> {
    state.batcher.run(job).await
}

/// [`through_writer`] for a request its caller sends again under the same key until it has
/// an answer (adjustments, notifications, deposits, withdrawals): answered within
/// `processor.answer_ms_max`. A job still queued or committing then is left to finish, and
/// the caller is answered "outcome unknown" (503): its resend replays the stored answer, or
/// books it once if this one never committed (the database's keys make that exact). A
/// stalled database costs the caller a resend, never a hung connection. `hold` (the
/// request's in-flight claims) comes back with the result; when the wait runs out it is kept
/// until the job ends instead, so that a resend meanwhile waits for it or gets 425 rather
/// than joining the writer's queue a second time.
async fn resendable<T: 'static, H: 'static>(
    state: &AppState,
    hold: H,
    job: impl FnOnce(Reply<T>) -> Job,
) -> Result<(T, H), StoreError> {
    let wait = Duration::from_millis(state.settings.processor.answer_ms_max);
    let due = Instant::now() + wait;
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    queue_by(state, job(reply), due).await?;
    match tokio::time::timeout_at(due.into(), &mut answer).await {
        Ok(r) => r.unwrap_or_else(|_| Err(dropped())).map(|t| (t, hold)),
        Err(_) => {
            actix_rt::spawn(async move {
                let _ = answer.await;
                drop(hold);
            });
            Err(StoreError::Uncertain(format!(
                "not answered within processor.answer_ms_max ({} ms); a resend under the same key replays it once committed",
                wait.as_millis()
            )))
        }
    }
}

/// Books an adjustment through the one writer.
pub async fn adjust<H: 'static>(
    state: &AppState,
    call: &ProcessorCall<'_>,
    parsed: &TransactionRequest,
    unread_fields: bool,
    direction: RequestKind,
    hold: H,
) -> Result<(Outcome<AdjustmentResult>, H), StoreError> {
    resendable(state, hold, |reply| {
        Job::Adjustment(AdjustmentJob {
            body: call.raw_body.to_vec(),
            parsed: parsed.clone(),
            unread_fields,
            idempotency_key: call.idempotency_key.to_owned(),
            request_hash: call.request_hash,
            endpoint: call.endpoint.to_owned(),
            now_ms: call.now_ms,
            direction,
            reply: Some(reply),
        })
    })
    .await
}

/// Stores a notification and applies its verdict through the one writer.
pub async fn notify<H: 'static>(
    state: &AppState,
    n: &NotificationCall<'_>,
    hold: H,
) -> Result<(Outcome<NotificationResult>, H), StoreError> {
    resendable(state, hold, |reply| {
        Job::Notification(NotificationJob {
            key: n.key.to_owned(),
            request_hash: n.request_hash,
            body: n.raw_body.to_vec(),
            now_ms: n.now_ms,
            event_id: n.event_id.to_owned(),
            verdict: n.verdict,
            status_detail: n.status_detail.map(str::to_owned),
            transaction: n.transaction.as_ref().map(OwnedTransaction::of),
            direction: n.direction,
            unparsed: n.unparsed,
            reply: Some(reply),
        })
    })
    .await
}

/// Books a deposit or withdrawal through the one writer; `render` gives its exact answer.
pub async fn fund(
    state: &AppState,
    f: &FundingCall<'_>,
    render: FundingRender,
) -> Result<FundingOutcome, StoreError> {
    resendable(state, (), |reply| {
        Job::Funding(FundingJob {
            user_id: f.user_id.to_owned(),
            currency: f.currency,
            amount: f.amount,
            withdrawal: f.withdrawal,
            reference: f.reference.map(str::to_owned),
            idempotency_key: f.idempotency_key.to_owned(),
            request_hash: f.request_hash,
            endpoint: f.endpoint.to_owned(),
            now_ms: f.now_ms,
            render,
            reply: Some(reply),
        })
    })
    .await
    .map(|(outcome, ())| outcome)
}

/// A card transaction as a notification names it, owned while it waits for its batch.
#[derive(Debug, Clone)]
pub struct OwnedTransaction {
    transaction_id: String,
    tx_type: String,
    user_id: Option<String>,
    card_id: Option<String>,
    currency: String,
    amount_text: String,
    amount: Option<rust_decimal::Decimal>,
    mcc: Option<String>,
    original_transaction_id: Option<String>,
    country: Option<String>,
    channels: ledger::controls::Channels,
    unread_fields: bool,
}

impl OwnedTransaction {
    pub fn of(t: &CardTransaction<'_>) -> OwnedTransaction {
        OwnedTransaction {
            transaction_id: t.transaction_id.to_owned(),
            tx_type: t.tx_type.to_owned(),
            user_id: t.user_id.map(str::to_owned),
            card_id: t.card_id.map(str::to_owned),
            currency: t.currency.to_owned(),
            amount_text: t.amount_text.to_owned(),
            amount: t.amount,
            mcc: t.mcc.map(str::to_owned),
            original_transaction_id: t.original_transaction_id.map(str::to_owned),
            country: t.country.map(str::to_owned),
            channels: t.channels,
            unread_fields: t.unread_fields,
        }
    }

    pub fn view(&self) -> CardTransaction<'_> {
        CardTransaction {
            transaction_id: &self.transaction_id,
            tx_type: &self.tx_type,
            user_id: self.user_id.as_deref(),
            card_id: self.card_id.as_deref(),
            currency: &self.currency,
            amount_text: &self.amount_text,
            amount: self.amount,
            mcc: self.mcc.as_deref(),
            original_transaction_id: self.original_transaction_id.as_deref(),
            country: self.country.as_deref(),
            channels: self.channels,
            unread_fields: self.unread_fields,
        }
    }
}

pub fn card_transaction(r: &TransactionRequest) -> CardTransaction<'_> {
    CardTransaction {
        transaction_id: &r.transaction.id,
        tx_type: r.transaction.kind.as_str(),
        user_id: r.user.as_ref().map(|u| u.id.as_str()),
        card_id: r.card.as_ref().map(|c| c.id.as_str()),
        currency: &r.amount.local.currency,
        amount_text: r.amount.local.total.text(),
        amount: r.amount.local.total.value(),
        mcc: r.merchant.as_ref().and_then(|m| m.mcc.as_deref()),
        original_transaction_id: r.transaction.original_transaction_id.as_deref(),
        country: ledger::controls::ControlRequest::merchant_country(
            r.merchant.as_ref().and_then(|m| m.country.as_deref()),
            r.transaction.country_code.as_deref(),
        ),
        channels: ledger::controls::Channels::from_request(
            Some(r.transaction.kind.as_str()),
            r.transaction.point_type.as_ref().map(|p| p.as_str()),
            r.transaction.entry_mode.as_ref().map(|e| e.as_str()),
            r.transaction.origin.as_ref().map(|o| o.as_str()),
        ),
        unread_fields: false,
    }
}

/// Where the store takes a card's rules from: what the cache said, or its own read.
pub fn card_lookup(cached: Option<&CachedCard>) -> CardLookup<'_> {
    match cached {
        None => CardLookup::InTransaction,
        Some(None) => CardLookup::Absent,
        Some(Some(r)) => CardLookup::Known(r),
    }
}

fn status_detail(class: DeclineClass) -> StatusDetail {
    match class {
        DeclineClass::Other => StatusDetail::Other,
        DeclineClass::InvalidMerchant => StatusDetail::InvalidMerchant,
        DeclineClass::InvalidAmount => StatusDetail::InvalidAmount,
        DeclineClass::InsufficientFunds => StatusDetail::InsufficientFunds,
    }
}

/// The exact body of an authorization answer.
pub fn render_authorization(r: &AuthorizationResult) -> Vec<u8> {
    let resp = match &r.decision {
        Decision::Approved { .. } => AuthorizationResponse {
            status: Status::Approved,
            status_detail: StatusDetail::Approved,
            message: "Approved".into(),
            balance: None,
        },
        Decision::Balance { balance } => AuthorizationResponse {
            status: Status::Approved,
            status_detail: StatusDetail::Approved,
            message: "Balance".into(),
            balance: r.currency.map(|c| Balance {
                total: format_minor(*balance, c.exponent()),
                currency: c.code().to_owned(),
            }),
        },
        Decision::Declined(d) => AuthorizationResponse {
            status: Status::Rejected,
            status_detail: status_detail(d.class()),
            message: r.decline_message().unwrap_or(d.message()).into(),
            balance: None,
        },
    };
    serde_json::to_vec(&resp).unwrap_or_default()
}

pub fn decision_label(r: &AuthorizationResult) -> &'static str {
    match &r.decision {
        Decision::Approved { .. } | Decision::Balance { .. } => "APPROVED",
        Decision::Declined(d) => status_detail(d.class()).as_str(),
    }
}

/// The exact body of an adjustment answer.
pub fn render_adjustment(r: &AdjustmentResult) -> Vec<u8> {
    let (detail, mut message) = if r.status_detail != "INVALID_AMOUNT" {
        (StatusDetail::Approved, String::from("Adjustment booked"))
    } else {
        (
            StatusDetail::InvalidAmount,
            String::from("Adjustment recorded, amount not bookable"),
        )
    };
    if !r.flags.is_empty() {
        message.push_str("; flagged for review: ");
        message.push_str(&r.flags.stored());
    }
    serde_json::to_vec(&AdjustmentResponse {
        status_detail: detail,
        message,
    })
    .unwrap_or_default()
}

/// The exact body of a notification answer.
pub fn render_notification(r: &NotificationResult) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "message": "Notification stored",
        "effect": r.effect.as_str(),
    }))
    .unwrap_or_default()
}

/// The answer to an authorization that could not be served in time: nothing booked.
pub fn render_system_error() -> Vec<u8> {
    serde_json::to_vec(&AuthorizationResponse {
        status: Status::Rejected,
        status_detail: StatusDetail::SystemError,
        message: "System error".into(),
        balance: None,
    })
    .unwrap_or_default()
}
