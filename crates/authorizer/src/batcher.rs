//! Grouped commits: authorizations that arrive while commits are in flight are gathered
//! into one batch, committed in one database transaction. An idle service adds no wait: a
//! request that finds no batch committing goes at once, alone.
//!
//! One batch commits at a time while batches are quick: everything that arrives meanwhile
//! forms the next one, and the larger the batch, the less each authorization costs Postgres
//! (two statements and one WAL flush per batch). A batch still committing after `overlap`
//! (waiting on a row lock, a stalled disk) lets the next one start beside it, up to
//! `batches_in_flight_max`, so one slow batch never holds up the rest.

use crate::service::{card_lookup, card_transaction, render_authorization};
use protocol::wire::TransactionRequest;
use std::sync::Arc;
use std::time::Instant;
use store::{AuthorizationResult, BatchItem, Outcome, ProcessorCall, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// One authorization waiting for its batch.
pub struct Job {
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
    pub reply: Option<oneshot::Sender<Result<Outcome<AuthorizationResult>, StoreError>>>,
}

/// Hands authorizations to the batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the batching task on its own multi-threaded runtime. On Postgres it opens its
    /// own pool: every database connection of the batches is then opened and driven by the
    /// runtime that uses it, instead of waiting for an HTTP worker's event loop to notice
    /// its socket. The embedded store passes its `shared` store instead: SQLite has one
    /// writer, and one connection shared by every caller never waits on a second one
    /// holding the file's write lock.
    pub fn start(
        config: store::StoreConfig,
        shared: Option<Store>,
        metrics: Arc<crate::metrics::Metrics>,
        rules: Arc<crate::rules::RulesCache>,
        batch_size_max: usize,
        batches_in_flight_max: usize,
        overlap: std::time::Duration,
    ) -> std::io::Result<Batcher> {
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
            let connected = match shared {
                Some(store) => Ok(store),
                None => Store::connect(&config).await,
            };
            let store = match connected {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "grouped commits: cannot open the store");
                    return;
                }
            };
            while let Some(first) = rx.recv().await {
                // While every commit slot is busy, arrivals queue up: they form the next batch.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < batch_size_max {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let store = store.clone();
                let rules = rules.clone();
                metrics.inc("authorizer_commit_batches_total", &[]);
                metrics.add(
                    "authorizer_commit_batch_items_total",
                    &[],
                    batch.len() as u64,
                );
                let (finished, done) = oneshot::channel::<()>();
                tokio::spawn(async move {
                    run_batch(&store, &rules, batch).await;
                    drop(slot);
                    drop(finished);
                });
                // The next batch gathers while this one commits, unless this one is slow.
                if !overlap.is_zero() && tokio::time::timeout(overlap, done).await.is_err() {
                    metrics.inc("authorizer_commit_batch_overlaps_total", &[]);
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
}

async fn run_batch(store: &Store, rules: &crate::rules::RulesCache, mut jobs: Vec<Job>) {
    let mut replies: Vec<_> = jobs.iter_mut().map(|j| j.reply.take()).collect();
    let txs: Vec<_> = jobs.iter().map(|j| card_transaction(&j.parsed)).collect();
    let items: Vec<BatchItem<'_>> = jobs
        .iter()
        .zip(&txs)
        .map(|(j, t)| BatchItem {
            call: ProcessorCall {
                idempotency_key: &j.idempotency_key,
                request_hash: j.request_hash,
                endpoint: j.endpoint,
                raw_body: &j.body,
                now_ms: j.now_ms,
                commit_by: Some(j.commit_by),
                commit_started: Some(&j.committing),
            },
            tx: *t,
            kind: j.kind,
            card: card_lookup(j.card.as_ref()),
        })
        .collect();
    // The oldest cache epoch of the misses: a card read by this batch is cached only if
    // no invalidation came after the first of them looked.
    let epoch = jobs.iter().filter_map(|j| j.card_epoch).min();
    // Each requester hears as soon as its own item is done.
    store
        .authorize_batch_each(
            &items,
            render_authorization,
            |i, result| {
                if let Some(reply) = replies.get_mut(i).and_then(Option::take) {
                    // A requester that gave up (deadline) has dropped its receiver.
                    let _ = reply.send(result);
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
