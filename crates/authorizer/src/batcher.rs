//! The one writer: every money-moving request (authorizations, adjustments, notifications,
//! deposits and withdrawals, the channels' operations on holds, the expiry of overdue
//! holds, and the InStore extension's enveloped requests) that arrives while commits are in
//! flight is gathered into one batch, planned in arrival order and committed in one
//! database transaction. An idle service adds no wait: a request that finds no batch
//! committing goes at once, alone.
//! `commit_batch_size_max = 1` makes every batch one request: one transaction per request.
//!
//! One batch commits at a time while batches are quick: everything that arrives meanwhile
//! forms the next one, and the larger the batch, the less each request costs the database
//! (a few statements and one WAL flush per batch). A batch still committing after `overlap`
//! (waiting on a row lock, a stalled disk) lets the next one start beside it, up to
//! `batches_in_flight_max`, so one slow batch never holds up the rest.
//!
//! Sizing by time and count (`linger`, the embedded store's): the requesters of a batch just
//! answered come back within moments under load. When the previous batch held more than one
//! request and ended less than `linger` ago, the next one waits until then for as many more
//! requests as the previous one answered (never past `commit_batch_size_max`), so one batch
//! per commit replaces two half-sized ones that alternate. An idle service adds no wait: a
//! request that arrives after a batch of one, or `linger` after the last batch ended, goes at
//! once.

use crate::channel_service::HoldRequest;
use crate::service::{
    OwnedTransaction, card_lookup, card_transaction, render_adjustment, render_authorization,
    render_notification,
};
use ledger::{Currency, RequestKind};
use protocol::wire::TransactionRequest;
use std::sync::Arc;
use std::time::Instant;
use store::{
    AdjustmentResult, AuthorizationResult, BatchItem, CardTransaction, ChannelOutcome, Done,
    Expired, ExpiryCall, ExpiryScope, FundingCall, FundingOutcome, InstoreCall, InstoreOp,
    InstoreOutcome, NotificationCall, NotificationResult, Outcome, ProcessorCall, Renders, Store,
    StoreError, StoredResponse, Verdict, WalletCall, WalletOp, WalletPlanner, Work,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Where a request's result goes.
pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One money-moving request waiting for its batch.
pub enum Job {
    Authorization(AuthorizationJob),
    Adjustment(AdjustmentJob),
    Notification(NotificationJob),
    Funding(FundingJob),
    Hold(HoldJob),
    Expiry(ExpiryJob),
    Instore(InstoreJob),
    Wallet(WalletJob),
}

/// How often the writer tries to open its first connection before it takes work anyway.
const WARM_UP_ATTEMPTS: u32 = 20;

/// One authorization waiting for its batch.
pub struct AuthorizationJob {
    pub body: Vec<u8>,
    pub parsed: TransactionRequest,
    pub idempotency_key: String,
    pub request_hash: [u8; 32],
    pub endpoint: &'static str,
    pub now_ms: i64,
    pub commit_by: Instant,
    pub kind: Option<ledger::RequestKind>,
    /// The card's rules from the instance's cache (`None`: read them in the batch).
    pub card: Option<crate::rules::CachedCard>,
    /// A cache miss: the cache's epoch before the batch reads the card (see `RulesCache::probe`).
    pub card_epoch: Option<u64>,
    /// Taken just before the batch's COMMIT is sent, unless the requester gave up first.
    pub committing: Arc<store::CommitGate>,
    /// Taken when the batch runs; answered as soon as this job's result is known.
    pub reply: Option<Reply<Outcome<AuthorizationResult>>>,
}

/// One adjustment waiting for its batch.
pub struct AdjustmentJob {
    pub body: Vec<u8>,
    pub parsed: TransactionRequest,
    /// Optional fields of the body were malformed and left out of `parsed`.
    pub unread_fields: bool,
    pub idempotency_key: String,
    pub request_hash: [u8; 32],
    pub endpoint: String,
    pub now_ms: i64,
    pub direction: RequestKind,
    pub reply: Option<Reply<Outcome<AdjustmentResult>>>,
}

/// One notification waiting for its batch (what [`NotificationCall`] names, owned).
pub struct NotificationJob {
    pub key: String,
    pub request_hash: [u8; 32],
    pub body: Vec<u8>,
    pub now_ms: i64,
    pub event_id: String,
    pub verdict: Option<Verdict>,
    pub status_detail: Option<String>,
    pub transaction: Option<OwnedTransaction>,
    pub direction: Option<RequestKind>,
    pub unparsed: bool,
    pub reply: Option<Reply<Outcome<NotificationResult>>>,
}

/// One operation of the channel API on a hold (a reservation, capture, cancel or refund)
/// waiting for its batch.
pub struct HoldJob {
    pub op: HoldRequest,
    pub reply: Option<Reply<ChannelOutcome>>,
}

/// An expiry of overdue holds waiting for its batch: the sweeper's, or the one hold a read
/// found overdue (what [`ExpiryCall`] names, owned).
pub struct ExpiryJob {
    pub scope: ExpiryOf,
    pub now_ms: i64,
    pub reply: Option<Reply<Expired>>,
}

/// One enveloped InStore request waiting for its batch: its transport facts and its pure
/// planner, asked inside the batch's transaction.
pub struct InstoreJob {
    pub call: InstoreCall,
    pub planner: Arc<dyn store::SvPlanner>,
    pub reply: Option<Reply<InstoreOutcome>>,
}

/// One InStore wallet request waiting for its batch: its transport facts and its pure
/// planner, asked inside the batch's transaction.
pub struct WalletJob {
    pub call: WalletCall,
    pub planner: Arc<dyn WalletPlanner>,
    pub reply: Option<Reply<InstoreOutcome>>,
}

/// Which overdue holds an [`ExpiryJob`] expires.
pub enum ExpiryOf {
    /// The sweeper's batch: at most this many of the longest overdue holds.
    Due(i64),
    /// One hold: (channel, reservation id).
    Hold(String, String),
}

/// The exact answer of a deposit or withdrawal, from its movement id and available balance.
pub type FundingRender = Box<dyn Fn(i64, i64) -> StoredResponse + Send + Sync>;

/// One deposit or withdrawal waiting for its batch (what [`FundingCall`] names, owned).
pub struct FundingJob {
    pub user_id: String,
    pub currency: Currency,
    pub amount: i64,
    pub withdrawal: bool,
    pub reference: Option<String>,
    pub idempotency_key: String,
    pub request_hash: [u8; 32],
    pub endpoint: String,
    pub now_ms: i64,
    pub render: FundingRender,
    pub reply: Option<Reply<FundingOutcome>>,
}

/// How the writer's batches form (see the module's documentation).
pub struct Sizing {
    /// Requests per batch at most (`commit_batch_size_max`).
    pub size_max: usize,
    /// Batches committing at once at most.
    pub in_flight_max: usize,
    /// A batch still committing after this long lets the next start beside it.
    pub overlap: std::time::Duration,
    /// After a batch of more than one request, how long from its end the next one waits for
    /// as many requests as it answered; zero: never.
    pub linger: std::time::Duration,
}

/// Hands money-moving requests to the batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the batching task on its own multi-threaded runtime. On Postgres it opens its
    /// own pool beside `shared` (sharing its caches): every database connection of the
    /// batches is then opened and driven by the runtime that uses it, instead of waiting for
    /// an HTTP worker's event loop to notice its socket. The embedded store uses `shared`
    /// itself: SQLite has one writer, and one connection shared by every caller never waits
    /// on a second one holding the file's write lock.
    pub fn start(
        config: store::StoreConfig,
        shared: Store,
        metrics: Arc<crate::metrics::Metrics>,
        rules: Arc<crate::rules::RulesCache>,
        sizing: Sizing,
    ) -> std::io::Result<Batcher> {
        let Sizing {
            size_max: batch_size_max,
            in_flight_max: batches_in_flight_max,
            overlap,
            linger,
        } = sizing;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("authorizer-commits")
            .enable_all()
            .build()?;
        let (tx, mut rx) = mpsc::channel::<Job>(batch_size_max * batches_in_flight_max * 4);
        let slots = Arc::new(Semaphore::new(batches_in_flight_max));
        let config = store::StoreConfig {
            pool_connections_max: u32::try_from(batches_in_flight_max + 2).unwrap_or(8),
            index_probes_only: true,
            ..config
        };
        let handle = runtime.handle().clone();
        handle.spawn(async move {
            let connected = shared.connect_beside(&config).await;
            let store = match connected {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "the writer cannot open the store");
                    return;
                }
            };
            // The writer's pool opens its connections lazily: open the first one before taking
            // work, so that a new instance's first requests do not spend their acquire timeout
            // on a connection's start-up (a loaded database takes longer than the timeout to
            // start a backend). Work that arrives meanwhile waits in the queue.
            for attempt in 1..=WARM_UP_ATTEMPTS {
                match store.ping().await {
                    Ok(()) => break,
                    Err(e) if attempt == WARM_UP_ATTEMPTS => {
                        tracing::warn!(error = %e, "the writer's first connection is not open yet; taking work anyway");
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
            // The size of the last batch and when it ended, when this loop saw it end.
            let mut last: Option<(usize, Instant)> = None;
            while let Some(first) = rx.recv().await {
                // While every commit slot is busy, arrivals queue up: they form the next batch.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = vec![first];
                gather(&mut rx, &mut batch, batch_size_max);
                if let Some((answered, ended)) = last.take().filter(|(n, _)| *n > 1) {
                    // The previous batch's requesters, just answered, join this one.
                    let want = (batch.len() + answered).min(batch_size_max);
                    let until = tokio::time::Instant::from_std(ended + linger);
                    while batch.len() < want {
                        match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(Some(job)) => {
                                batch.push(job);
                                gather(&mut rx, &mut batch, want);
                            }
                            _ => break,
                        }
                    }
                }
                let store = store.clone();
                let rules = rules.clone();
                let size = batch.len();
                metrics.inc("authorizer_commit_batches_total", &[]);
                metrics.add("authorizer_commit_batch_items_total", &[], size as u64);
                let (finished, done) = oneshot::channel::<Instant>();
                tokio::spawn(async move {
                    run_batch(&store, &rules, batch).await;
                    drop(slot);
                    let _ = finished.send(Instant::now());
                });
                // The next batch gathers while this one commits, unless this one is slow.
                if !overlap.is_zero() {
                    match tokio::time::timeout(overlap, done).await {
                        Ok(Ok(ended)) if !linger.is_zero() => last = Some((size, ended)),
                        Ok(_) => {}
                        Err(_) => metrics.inc("authorizer_commit_batch_overlaps_total", &[]),
                    }
                }
            }
        });
        // The runtime lives as long as the process: batches may be committing at any time.
        std::mem::forget(runtime);
        Ok(Batcher { tx })
    }

    /// Queues a job; `Err` gives it back when the batching task is gone.
    pub async fn submit(&self, job: Job) -> Result<(), Job> {
        self.tx.send(job).await.map_err(|e| e.0)
    }

    /// Queues the job that `job` makes of its reply channel and waits for its result.
    pub async fn run<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(job(reply))
            .await
            .map_err(|_| StoreError::Timeout("batching stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Timeout("batch dropped".into())))
    }
}

/// Moves what is already queued into `batch`, up to `max` jobs.
fn gather(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// A job's result channel, taken when its batch runs.
enum Replies {
    Authorization(Option<Reply<Outcome<AuthorizationResult>>>),
    Adjustment(Option<Reply<Outcome<AdjustmentResult>>>),
    Notification(Option<Reply<Outcome<NotificationResult>>>),
    Funding(Option<Reply<FundingOutcome>>),
    Hold(Option<Reply<ChannelOutcome>>),
    Expiry(Option<Reply<Expired>>),
    Instore(Option<Reply<InstoreOutcome>>),
    Wallet(Option<Reply<InstoreOutcome>>),
}

impl Replies {
    /// Hands `done` to the requester; one that gave up (its deadline) dropped its receiver.
    fn send(&mut self, done: Done) {
        match (self, done) {
            (Replies::Authorization(r), Done::Authorization(d)) => send(r, d),
            (Replies::Adjustment(r), Done::Adjustment(d)) => send(r, d),
            (Replies::Notification(r), Done::Notification(d)) => send(r, d),
            (Replies::Funding(r), Done::Funding(d)) => send(r, d),
            (Replies::Hold(r), Done::Hold(d)) => send(r, d),
            (Replies::Expiry(r), Done::Expiry(d)) => send(r, d),
            (Replies::Instore(r), Done::Instore(d)) => send(r, d),
            (Replies::Wallet(r), Done::Wallet(d)) => send(r, d),
            // The store answers each request in its own kind.
            _ => {}
        }
    }
}

fn send<T>(reply: &mut Option<Reply<T>>, result: Result<T, StoreError>) {
    if let Some(reply) = reply.take() {
        let _ = reply.send(result);
    }
}

impl Job {
    fn take_reply(&mut self) -> Replies {
        match self {
            Job::Authorization(j) => Replies::Authorization(j.reply.take()),
            Job::Adjustment(j) => Replies::Adjustment(j.reply.take()),
            Job::Notification(j) => Replies::Notification(j.reply.take()),
            Job::Funding(j) => Replies::Funding(j.reply.take()),
            Job::Hold(j) => Replies::Hold(j.reply.take()),
            Job::Expiry(j) => Replies::Expiry(j.reply.take()),
            Job::Instore(j) => Replies::Instore(j.reply.take()),
            Job::Wallet(j) => Replies::Wallet(j.reply.take()),
        }
    }

    /// The request as the store takes it.
    fn work(&self) -> Work<'_> {
        match self {
            Job::Authorization(j) => Work::Authorization(BatchItem {
                call: ProcessorCall {
                    idempotency_key: &j.idempotency_key,
                    request_hash: j.request_hash,
                    endpoint: j.endpoint,
                    raw_body: &j.body,
                    now_ms: j.now_ms,
                    commit_by: Some(j.commit_by),
                    commit_started: Some(&j.committing),
                },
                tx: card_transaction(&j.parsed),
                kind: j.kind,
                card: card_lookup(j.card.as_ref()),
            }),
            Job::Adjustment(j) => Work::Adjustment {
                call: ProcessorCall {
                    idempotency_key: &j.idempotency_key,
                    request_hash: j.request_hash,
                    endpoint: &j.endpoint,
                    raw_body: &j.body,
                    now_ms: j.now_ms,
                    commit_by: None,
                    commit_started: None,
                },
                tx: CardTransaction {
                    unread_fields: j.unread_fields,
                    ..card_transaction(&j.parsed)
                },
                direction: j.direction,
            },
            Job::Notification(j) => Work::Notification(NotificationCall {
                key: &j.key,
                request_hash: j.request_hash,
                raw_body: &j.body,
                now_ms: j.now_ms,
                event_id: &j.event_id,
                verdict: j.verdict,
                status_detail: j.status_detail.as_deref(),
                transaction: j.transaction.as_ref().map(OwnedTransaction::view),
                direction: j.direction,
                unparsed: j.unparsed,
            }),
            Job::Funding(j) => Work::Funding {
                call: FundingCall {
                    user_id: &j.user_id,
                    currency: j.currency,
                    amount: j.amount,
                    withdrawal: j.withdrawal,
                    reference: j.reference.as_deref(),
                    idempotency_key: &j.idempotency_key,
                    request_hash: j.request_hash,
                    endpoint: &j.endpoint,
                    now_ms: j.now_ms,
                },
                render: &*j.render,
            },
            Job::Hold(j) => Work::Hold(j.op.op()),
            Job::Expiry(j) => Work::Expiry(ExpiryCall {
                scope: match &j.scope {
                    ExpiryOf::Due(batch_max) => ExpiryScope::Due {
                        batch_max: *batch_max,
                    },
                    ExpiryOf::Hold(channel, reservation_id) => ExpiryScope::Hold {
                        channel,
                        reservation_id,
                    },
                },
                now_ms: j.now_ms,
            }),
            Job::Instore(j) => Work::Instore(InstoreOp {
                call: &j.call,
                planner: &*j.planner,
            }),
            Job::Wallet(j) => Work::Wallet(WalletOp {
                call: &j.call,
                planner: &*j.planner,
            }),
        }
    }
}

static RENDERS: Renders<'static> = Renders {
    authorization: &render_authorization,
    adjustment: &render_adjustment,
    notification: &render_notification,
    channel: &crate::channel_service::render,
};

async fn run_batch(store: &Store, rules: &crate::rules::RulesCache, mut jobs: Vec<Job>) {
    let mut replies: Vec<Replies> = jobs.iter_mut().map(Job::take_reply).collect();
    let work: Vec<Work<'_>> = jobs.iter().map(Job::work).collect();
    // The oldest cache epoch of the misses: a card read by this batch is cached only if
    // no invalidation came after the first of them looked.
    let epoch = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Authorization(a) => a.card_epoch,
            _ => None,
        })
        .min();
    // Each requester hears as soon as its own request is done.
    store
        .write_batch_each(
            &work,
            &RENDERS,
            |i, done| {
                if let Some(reply) = replies.get_mut(i) {
                    reply.send(done);
                }
            },
            |card_id, record| {
                if let Some(epoch) = epoch {
                    rules.fill_read(card_id, record, epoch);
                }
            },
        )
        .await;
}
