//! The outbox dispatcher: a background task that claims due deliveries, POSTs their exact
//! bytes, and records the outcome. It runs beside the server, never on a request's path:
//! a request's commit only writes what it owes, and never waits for a send.
//!
//! The authorizations' deliveries are not even claimed, nor written by the commits that owe
//! them: each authorization's record names this instance's sender and the subscriptions it
//! owes, and the deliveries are handed over in memory once the commit is done
//! ([`store::Handed`]). The dispatcher sends them, then writes their rows, a round's in one
//! statement off the authorizations' way: DELIVERED, or PENDING after a failed attempt. The
//! sender's mark, kept a few times a second, says up to which instant every record has its
//! rows. The claims take everything else: retries, callbacks, the other events, the rows of
//! an instance that died with their leases, and the rows a takeover of a stopped sender
//! writes for what it owed.
//!
//! It keeps off the authorizations' way: it runs on a thread and event loop of its own (its
//! sends and database sockets never wait for an HTTP worker's loop, nor delay one), on a small
//! pool of its own whose commits do not wait for the disk, and it works in rounds: a round
//! that drained what was due is followed by a pause of `poll_interval_ms`, so that under load
//! it claims and acknowledges many rows a statement rather than a few.

use crate::config::WebhookSettings;
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Claimed, Handed, Store};

const DELIVERIES: &str = "authorizer_webhook_deliveries_total";
const ATTEMPTS: &str = "authorizer_webhook_attempts_total";
const PRUNED: &str = "authorizer_webhook_pruned_total";

/// How many rounds of handed deliveries the dispatcher keeps in memory at most. Past them
/// (a receiver that answers slowly, a burst the sends cannot keep up with) it takes no more
/// from the hand-over: the commits' deliveries then have their rows written PENDING and are
/// claimed from the database, so memory stays bounded whatever the backlog.
const WAITING_ROUNDS_MAX: usize = 64;

/// The running dispatcher. [`Dispatcher::stop`] stops it gracefully; dropping it stops it
/// too, without waiting for the end.
pub struct Dispatcher {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
    /// How long a graceful stop may take: the last sends, then the sender's release.
    within: Duration,
}

impl Dispatcher {
    /// Stops the dispatcher as its instance stops: no more claims; the deliveries handed over
    /// are sent (a round's time at most, `callback_timeout_ms`), and once every delivery its
    /// sender was handed is settled the sender is released, so that no other instance waits
    /// out its life to take it over and sends nothing again. Whatever is left unsettled then
    /// is left to that takeover, as after a crash. Waits at most two rounds' time.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.within, self.done).await.is_err() {
            tracing::warn!("the webhook dispatcher did not stop in time");
        }
    }
}

/// Whether the dispatcher is asked to stop (or its handle is gone).
fn stop_asked(stop: &tokio::sync::watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Starts the dispatcher on a thread of its own, with a pool of its own beside `store` (the
/// embedded store: `store` itself, its one connection). `longest_commit_ms` bounds how long an
/// authorization's commit may end after its writer read the sender
/// (`processor.deadline_ms + database.statement_ms_max`): see [`sender_lease_ms`].
pub fn start(
    store: Store,
    config: store::StoreConfig,
    metrics: Arc<Metrics>,
    settings: WebhookSettings,
    tls: Arc<rustls::ClientConfig>,
    longest_commit_ms: u64,
) -> std::io::Result<Dispatcher> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
    let round = Duration::from_millis(settings.callback_timeout_ms);
    let handed = store.hand_deliveries_over();
    std::thread::Builder::new()
        .name("authorizer-webhooks".into())
        .spawn(move || {
            // On the embedded store the dispatcher shares the one connection with the
            // writer: a dispatcher descheduled while it holds it would hold up every batch
            // (a priority inversion), so only a dispatcher with a pool of its own yields.
            if store.is_postgres() {
                lower_priority(settings.dispatcher_nice);
            }
            actix_rt::System::new().block_on(async move {
                let config = store::StoreConfig {
                    pool_connections_max: 2,
                    ..config
                };
                let store = match store.connect_beside_for_deliveries(&config).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "the webhook dispatcher cannot open the store");
                        return;
                    }
                };
                let keeping = handed.as_ref().map(|h| {
                    actix_rt::spawn(keep_sender(
                        store.clone(),
                        h.tracker.clone(),
                        sender_lease_ms(&settings, longest_commit_ms),
                        stop.clone(),
                    ))
                });
                run(store, handed, metrics, settings, tls, stop).await;
                if let Some(k) = keeping {
                    // It releases the sender once every delivery is settled (bounded too).
                    let _ = tokio::time::timeout(round, k).await;
                }
                let _ = done_tx.send(());
            });
        })?;
    Ok(Dispatcher {
        stop: stop_tx,
        done,
        within: round * 2 + Duration::from_secs(1),
    })
}

/// Gives the calling thread (the dispatcher's, with its event loop: its sends, signatures
/// and reads of the answers) the nice value `nice`, so that on a busy machine the
/// authorizations' threads get the CPU first. Linux keeps a nice value per thread; elsewhere
/// the dispatcher runs at the server's priority.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!(error = %e, nice, "could not lower the webhook dispatcher's priority");
    }
}

/// How long a claimed delivery is this instance's: two attempts' time. A crashed holder's
/// lease runs out and another dispatcher takes the row over.
fn lease_ms(settings: &WebhookSettings) -> i64 {
    i64::try_from(settings.callback_timeout_ms.saturating_mul(2)).unwrap_or(i64::MAX)
}

/// How long this instance's sender lives after each kept mark: a claim's lease, and at least
/// a second longer than `longest_commit_ms`, the most an authorization's commit may end after
/// its writer read the sender. Writers name the sender until half a lease after its last
/// mark, and another instance takes it over a lease and a half after that mark: so every
/// record that names it has committed (or rolled back) before its takeover reads the records,
/// and none is left owing a delivery to a sender already gone, whatever the deadline.
fn sender_lease_ms(settings: &WebhookSettings, longest_commit_ms: u64) -> i64 {
    let commit = i64::try_from(longest_commit_ms.saturating_add(1_000)).unwrap_or(i64::MAX);
    lease_ms(settings).max(commit)
}

async fn run(
    store: Store,
    mut handed: Option<store::HandOver>,
    metrics: Arc<Metrics>,
    settings: WebhookSettings,
    tls: Arc<rustls::ClientConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let timeout = Duration::from_millis(settings.callback_timeout_ms);
    // Redirects are never followed: the URL that passed the challenge is the only target.
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls))
        .disable_redirects()
        .timeout(timeout)
        .finish();
    let lease_ms = lease_ms(&settings);
    let give_up_ms = i64::try_from(settings.give_up_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let idle = Duration::from_millis(settings.poll_interval_ms);
    let batch_max = i64::from(settings.batch_max);
    // The give-up pass reads every pending row: once a second is enough for an age counted
    // in seconds, and keeps a backlog from costing a scan per round.
    let mut gave_up_at: Option<Instant> = None;
    // The retention's passes: once a second, and at once while one leaves more behind.
    let retention_ms = i64::from(settings.retention_days).saturating_mul(86_400_000);
    let mut pruned_at: Option<Instant> = None;
    let mut prune_more = false;
    // The deliveries handed over and not yet sent, oldest first.
    let mut waiting: VecDeque<Handed> = VecDeque::new();
    // When the last claim was made, and whether it left more due.
    let mut claimed_at: Option<Instant> = None;
    let mut more_due = false;
    // Once asked to stop: until when the deliveries handed over are still sent.
    let mut stopping: Option<Instant> = None;
    loop {
        if stopping.is_none() && stop_asked(&stop) {
            stopping = Some(Instant::now() + timeout);
        }
        if stopping.is_none() && gave_up_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            gave_up_at = Some(Instant::now());
            give_up(&store, &metrics, give_up_ms).await;
        }
        if stopping.is_none()
            && retention_ms > 0
            && (prune_more || pruned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)))
        {
            pruned_at = Some(Instant::now());
            prune_more = prune(&store, &metrics, retention_ms).await;
        }
        let round_max = usize::try_from(batch_max).unwrap_or(usize::MAX);
        if let Some(from) = &mut handed {
            receive_handed(
                &mut from.rows,
                &mut waiting,
                round_max.saturating_mul(WAITING_ROUNDS_MAX),
            );
        }
        // Everything else is claimed: once a pause, or at once while a claim leaves more due.
        // A claim that is due gets half the round at least, so that a backlog of handed
        // deliveries never holds up the retries and the other events.
        let claim_due =
            stopping.is_none() && (more_due || claimed_at.is_none_or(|t| t.elapsed() >= idle));
        let handed_max = if claim_due { round_max / 2 } else { round_max };
        let mut round = take_handed(&mut waiting, handed_max);
        metrics.add(ATTEMPTS, &[("source", "handed")], round.len() as u64);
        if claim_due {
            claimed_at = Some(Instant::now());
            let want = batch_max - i64::try_from(round.len()).unwrap_or(0);
            match store
                .claim_deliveries(store::now_ms(), lease_ms, want)
                .await
            {
                Ok(claimed) => {
                    more_due = i64::try_from(claimed.len()).unwrap_or(i64::MAX) >= want;
                    metrics.add(ATTEMPTS, &[("source", "claimed")], claimed.len() as u64);
                    round.extend(claimed);
                }
                Err(e) => {
                    more_due = false;
                    tracing::warn!(error = %e, "outbox claim failed; trying again");
                }
            }
        }
        let drained = round.len() < round_max && waiting.is_empty() && !more_due;
        if !round.is_empty() {
            let sends = round.iter().map(|d| deliver(&store, &metrics, &client, d));
            let mut delivered = Vec::new();
            let mut owed = Vec::new();
            for sent in futures_util::future::join_all(sends).await {
                match sent {
                    Sent::Claimed(row) => delivered.push(row),
                    Sent::Owed(o, settled) => owed.push((o, settled)),
                    Sent::Retried => {}
                }
            }
            record_delivered(&store, &delivered).await;
            if let Some(h) = &handed {
                write_owed(&store, &h.tracker, owed).await;
            }
        }
        if let Some(until) = stopping {
            // Stopping: the rounds go on while deliveries are handed over, or may still be
            // (a writer that read the sender), within a round's time.
            let settled = handed.as_ref().is_none_or(|h| h.tracker.all_settled());
            if (waiting.is_empty() && settled) || Instant::now() >= until {
                give_back(handed, waiting);
                return;
            }
            if round.is_empty() {
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        }
        // A full round leaves more due: the next goes at once. Otherwise what comes due
        // (or is handed over) meanwhile waits for the next round, a pause away.
        if drained {
            if let Ok(n) = store.pending_deliveries().await {
                let sending = handed.as_ref().map_or(0, |h| h.tracker.unsettled());
                let sending = i64::try_from(sending).unwrap_or(i64::MAX);
                metrics.set_gauge("authorizer_webhook_pending", &[], n + sending);
            }
            tokio::select! {
                () = actix_rt::time::sleep(idle) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// The deliveries handed over and not sent as the dispatcher stops, those still on their way
/// too: committed, their rows are written PENDING (by the sender's keeper, or its takeover).
fn give_back(handed: Option<store::HandOver>, mut waiting: VecDeque<Handed>) {
    if let Some(mut from) = handed {
        from.rows.close();
        while let Ok(rows) = from.rows.try_recv() {
            waiting.extend(rows);
        }
    }
    waiting.into_iter().for_each(Handed::unsent);
}

/// Moves what was handed over into `waiting` until it holds `max` (one commit's may pass
/// it): the rest stays in the hand-over, which once full has the rows written PENDING.
fn receive_handed<T>(
    from: &mut tokio::sync::mpsc::Receiver<Vec<T>>,
    waiting: &mut VecDeque<T>,
    max: usize,
) {
    while waiting.len() < max {
        match from.try_recv() {
            Ok(rows) => waiting.extend(rows),
            Err(_) => break,
        }
    }
}

/// Up to `max` of the deliveries handed over, oldest first.
fn take_handed(waiting: &mut VecDeque<Handed>, max: usize) -> Vec<Claimed> {
    let n = max.min(waiting.len());
    waiting.drain(..n).map(Handed::into_claimed).collect()
}

/// Keeps this instance's sender: its mark (up to which instant its records' deliveries have
/// their rows) and its life, four times a lease's half, so that the records go on naming it;
/// writes PENDING the rows of the deliveries not sent from memory; starts another sender when
/// a commit's outcome is unknown (the old one is left to be taken over); and takes over the
/// senders that stopped (on the embedded store, at start too: its one process is this one).
/// Asked to stop, it gives its sender to no more writers and releases it once every delivery
/// it was handed is settled ([`Dispatcher::stop`]).
async fn keep_sender(
    store: Store,
    tracker: Arc<store::Tracker>,
    lease_ms: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_millis(u64::try_from(lease_ms / 8).unwrap_or(250).clamp(10, 250));
    let mut sender: Option<i64> = None;
    let mut took_over_at: Option<Instant> = None;
    if !store.is_postgres() {
        take_over(&store, i64::MAX, 0).await;
    }
    loop {
        let stopping = stop_asked(&stop);
        if stopping {
            store.sending_as(0, 0);
        }
        let now = store::now_ms();
        let dropped: Vec<_> = tracker
            .take_dropped()
            .into_iter()
            .map(|o| (o, store::Settled::Unsent))
            .collect();
        if !dropped.is_empty() {
            // Only for records that committed: a failed commit owes nothing.
            match store.write_owed(&dropped, now, true).await {
                Ok(()) => tracker.settle(dropped.iter().map(|(o, _)| o)),
                Err(e) => {
                    tracing::warn!(deliveries = dropped.len(), error = %e, "could not write unsent deliveries pending; trying again");
                    for (o, _) in dropped {
                        tracker.drop_owed(o);
                    }
                }
            }
        }
        if stopping {
            // No mark, life or takeover any more: the sender is released once settled.
            if release(&store, &tracker, sender).await {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // The mark, read with whether a commit's outcome became unknown (one lock): then the
        // sender's last mark stays below that commit's rows, and its takeover makes them
        // PENDING if they exist.
        let mark = sender.and_then(|_| tracker.mark_unless_retired());
        if let (Some(id), None) = (sender, mark) {
            tracing::warn!(
                sender = id,
                "a commit's outcome is unknown: this instance's webhook sender is left to be taken over; starting another"
            );
            store.sending_as(0, 0);
            sender = None;
        }
        let kept = match (sender, mark) {
            (Some(id), Some(mark)) => store.keep_sender(id, mark, now + lease_ms).await,
            _ => store
                .start_sender(&tracker, now, now + lease_ms)
                .await
                .map(|id| {
                    tracing::debug!(sender = id, "webhook sender started");
                    sender = Some(id);
                    true
                }),
        };
        match (kept, sender) {
            (Ok(true), Some(id)) => store.sending_as(id, now + lease_ms / 2),
            (Ok(_), _) => {
                tracing::warn!(
                    sender = sender.unwrap_or(0),
                    "this instance's webhook sender was taken over; starting another"
                );
                store.sending_as(0, 0);
                sender = None;
            }
            (Err(e), _) => tracing::warn!(error = %e, "could not keep the webhook sender"),
        }
        if took_over_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            took_over_at = Some(Instant::now());
            // Dead for half a lease more than its life: rows are written to a sender only
            // within half a lease of its last kept mark, a lease away from this.
            take_over(&store, now - lease_ms / 2, sender.unwrap_or(0)).await;
        }
        tokio::select! {
            () = actix_rt::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Releases this instance's sender `sender` as it stops, once every delivery it was handed is
/// settled and no writer can hand it another; `true` when that is done (or there is nothing
/// to release).
async fn release(store: &Store, tracker: &store::Tracker, sender: Option<i64>) -> bool {
    let Some(id) = sender else {
        return true;
    };
    if !tracker.all_settled() {
        return false;
    }
    let Some(mark) = tracker.mark_unless_retired() else {
        // A commit's outcome is unknown: its rows may exist unseen, above the sender's last
        // kept mark. The sender stays for the takeover, which makes them PENDING.
        tracing::warn!(
            sender = id,
            "a commit's outcome is unknown: this instance's webhook sender is left to be taken over"
        );
        return true;
    };
    match store.release_sender(id, mark, store::now_ms()).await {
        Ok(n) => {
            tracing::info!(
                sender = id,
                deliveries = n,
                "released this instance's webhook sender: every delivery it was handed is settled"
            );
            true
        }
        Err(e) => {
            tracing::warn!(sender = id, error = %e, "could not release the webhook sender; trying again");
            false
        }
    }
}

/// Takes over the senders not alive since before `dead_before_ms` (but `except`).
async fn take_over(store: &Store, dead_before_ms: i64, except: i64) {
    match store
        .take_over_senders(dead_before_ms, except, store::now_ms())
        .await
    {
        Ok(taken) => {
            for (sender, n) in taken {
                tracing::warn!(
                    sender,
                    deliveries = n,
                    "took over a stopped instance's webhook sender: its unsettled deliveries are pending again"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not take over stopped webhook senders"),
    }
}

/// Runs `write` (a round's record of what it sent, `n` deliveries) until the database takes
/// it: a failure (a timeout on a busy database, the embedded store's one connection held by a
/// long batch) is tried again a few times, over about a second, before it is given up.
async fn recorded<F, Fut>(n: usize, mut write: F) -> Result<(), store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), store::StoreError>>,
{
    let mut wait = Duration::from_millis(50);
    let mut tries = 1;
    loop {
        match write().await {
            Err(e) if tries < RECORD_TRIES => {
                tracing::debug!(deliveries = n, error = %e, tries, "recording deliveries failed; trying again");
                actix_rt::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            done => return done,
        }
    }
}

/// Records a round's acknowledgements. The receiver has them: a failure to record them would
/// send each again once its lease runs out, so it is tried again ([`recorded`]) before the
/// rows are left to their leases: at least once, and seldom twice.
async fn record_delivered(store: &Store, rows: &[(i64, i64)]) {
    let write = || store.mark_delivered(rows, store::now_ms());
    if let Err(e) = recorded(rows.len(), write).await {
        // The leases run out and the rows are sent again: at least once.
        tracing::warn!(deliveries = rows.len(), error = %e, "could not record deliveries");
    }
}

/// Writes the rows of a round's deliveries owed by their records, as they were settled, and
/// settles them with `tracker` (the sender's mark may pass them). Tried again
/// ([`recorded`]); failing that, they are given back to the tracker, which has them written
/// PENDING: sent again, at least once.
async fn write_owed(
    store: &Store,
    tracker: &store::Tracker,
    owed: Vec<(store::Owed, store::Settled)>,
) {
    if owed.is_empty() {
        return;
    }
    match recorded(owed.len(), || {
        store.write_owed(&owed, store::now_ms(), false)
    })
    .await
    {
        Ok(()) => tracker.settle(owed.iter().map(|(o, _)| o)),
        Err(e) => {
            tracing::warn!(deliveries = owed.len(), error = %e, "could not write deliveries; they go out again");
            for (o, _) in owed {
                tracker.drop_owed(o);
            }
        }
    }
}

/// Attempts at recording a round's acknowledgements (waits of 50, 100, 200 and 400 ms).
const RECORD_TRIES: u32 = 5;

/// Marks the rows older than the give-up age DEAD, with a log line and the metric.
async fn give_up(store: &Store, metrics: &Metrics, give_up_ms: i64) {
    match store.give_up_deliveries(store::now_ms(), give_up_ms).await {
        Ok(dead) => {
            for d in &dead {
                tracing::warn!(
                    delivery = d.id,
                    event_id = %d.event_id,
                    url = %processor_client::loggable_url(&d.url),
                    attempts = d.attempts,
                    last_error = d.last_error.as_deref().unwrap_or(""),
                    "webhook delivery given up (DEAD)"
                );
            }
            metrics.add(DELIVERIES, &[("outcome", "dead")], dead.len() as u64);
        }
        Err(e) => tracing::warn!(error = %e, "outbox give-up pass failed"),
    }
}

/// Outbox rows looked at per retention pass (one transaction: on the embedded store it holds
/// the one connection for a few milliseconds).
const PRUNE_BATCH: i64 = 1000;

/// One pass of the retention (`webhooks.retention_days`): deletes the subscribers' rows
/// settled and older than it; whether more may be left at once.
async fn prune(store: &Store, metrics: &Metrics, retention_ms: i64) -> bool {
    let cutoff = store::now_ms().saturating_sub(retention_ms);
    match store.prune_deliveries(cutoff, PRUNE_BATCH).await {
        Ok(p) => {
            if p.deleted > 0 {
                tracing::debug!(
                    rows = p.deleted,
                    "deleted settled delivery rows older than webhooks.retention_days"
                );
            }
            metrics.add(PRUNED, &[], p.deleted);
            p.more
        }
        Err(e) => {
            tracing::warn!(error = %e, "outbox retention pass failed");
            false
        }
    }
}

/// Header value of `name` among a row's fixed headers.
fn header<'a>(d: &'a Claimed, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One attempt: the row's bytes and fixed headers, plus (for a subscription) a fresh
/// `x-signature` over the event id, request id and body with its secret.
async fn attempt(client: &awc::Client, d: &Claimed) -> Result<(), String> {
    let mut req = client.post(&d.url);
    for (k, v) in &d.headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    if let Some(secret) = &d.signing_secret {
        let request_id = header(d, "x-request-id").unwrap_or(&d.event_id);
        let (id, now) = (&d.event_id, store::now_ms());
        let sig = protocol::webhook::x_signature_with_body(secret, id, request_id, now, &d.body);
        req = req.insert_header(("x-signature", sig));
    }
    let mut res = req
        .send_body(d.body.clone())
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    // Read (a bounded part of) the answer so the connection can be reused.
    let _ = res.body().limit(64 * 1024).await;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", res.status().as_u16()))
    }
}

/// What one attempt left to record.
enum Sent {
    /// A claimed row acknowledged (its id and lease): the round records it with the others.
    Claimed((i64, i64)),
    /// A delivery owed by its record, sent or failed: the round writes its row.
    Owed(store::Owed, store::Settled),
    /// A claimed row failed: its next attempt is recorded.
    Retried,
}

/// One attempt on `d`. A claimed row's failure is recorded at once, with its next attempt;
/// its acknowledgement, and the outcome of a delivery owed by its record, are left to the
/// round, which writes them together.
async fn deliver(store: &Store, metrics: &Metrics, client: &awc::Client, d: &Claimed) -> Sent {
    let outcome = attempt(client, d).await;
    let now = store::now_ms();
    match outcome {
        Ok(()) => {
            metrics.inc(DELIVERIES, &[("outcome", "delivered")]);
            let delay = u64::try_from(now.saturating_sub(d.created_at_ms)).unwrap_or(0);
            metrics.observe(
                "authorizer_webhook_delivery_delay_seconds",
                &[],
                Duration::from_millis(delay),
            );
            match &d.handed {
                Some(o) => Sent::Owed(o.clone(), store::Settled::Delivered),
                None => Sent::Claimed((d.id, d.leased_until_ms)),
            }
        }
        Err(e) => {
            metrics.inc(DELIVERIES, &[("outcome", "failed")]);
            tracing::info!(delivery = d.id, event_id = %d.event_id, attempt = d.attempts + 1, error = %e, "webhook delivery failed; will retry");
            let next_attempt_at_ms =
                now + store::outbox::backoff_ms(d.attempts + 1, jitter_permille());
            if let Some(o) = &d.handed {
                return Sent::Owed(
                    o.clone(),
                    store::Settled::Failed {
                        error: e,
                        next_attempt_at_ms,
                    },
                );
            }
            let row = (d.id, d.leased_until_ms);
            if let Err(e) = store.mark_failed(row, &e, next_attempt_at_ms, now).await {
                // The lease runs out and the row is sent again: at least once.
                tracing::warn!(delivery = d.id, error = %e, "could not record a delivery outcome");
            }
            Sent::Retried
        }
    }
}

/// Uniform in −200..=200 (±20 % of the backoff), from the OS random source.
fn jitter_permille() -> i64 {
    let mut b = [0u8; 2];
    if getrandom::getrandom(&mut b).is_err() {
        return 0;
    }
    i64::from(u16::from_le_bytes(b) % 401) - 200
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handed(n: i64) -> Handed {
        Handed {
            owed: store::Owed::new(
                format!("evt-auth-{n}"),
                "authorization.decided",
                n,
                "http://127.0.0.1:9/hook".into(),
                0,
                1,
            ),
            body: Vec::new(),
            secret: "s".into(),
            tracker: None,
        }
    }

    #[test]
    fn a_sender_outlives_the_longest_commit() {
        let defaults =
            crate::config::Settings::load_from(std::path::Path::new("/nonexistent"), &[])
                .expect("the defaults load");
        let commit = defaults.processor.deadline_ms + defaults.database.statement_ms_max;
        // The defaults: two attempts' time (10 s) exceeds an 800 ms deadline and a 500 ms
        // statement.
        assert_eq!(sender_lease_ms(&defaults.webhooks, commit), 10_000);
        let settings = |callback_timeout_ms| WebhookSettings {
            callback_timeout_ms,
            ..defaults.webhooks.clone()
        };
        // A short attempt and a long deadline: the commit's time and a second.
        assert_eq!(sender_lease_ms(&settings(500), 15_000), 16_000);
        assert_eq!(sender_lease_ms(&settings(500), 0), 1_000);
    }

    #[test]
    fn what_is_handed_over_waits_in_memory_up_to_a_bound() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u32>>(8);
        for i in 0..5 {
            tx.try_send(vec![i * 2, i * 2 + 1]).expect("room");
        }
        let mut waiting = VecDeque::new();
        receive_handed(&mut rx, &mut waiting, 3);
        // Two commits' (the second passes the bound); the rest stays handed over.
        assert_eq!(waiting, [0, 1, 2, 3]);
        receive_handed(&mut rx, &mut waiting, 3);
        assert_eq!(waiting.len(), 4, "nothing more while it is over the bound");
        waiting.clear();
        receive_handed(&mut rx, &mut waiting, 100);
        assert_eq!(waiting, [4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn a_round_takes_the_oldest_handed_deliveries() {
        let mut waiting: VecDeque<Handed> = (1..=3).map(handed).collect();
        let subs = |r: Vec<Claimed>| {
            r.into_iter()
                .map(|d| d.handed.map(|o| o.subscription_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(subs(take_handed(&mut waiting, 2)), [Some(1), Some(2)]);
        assert_eq!(subs(take_handed(&mut waiting, 2)), [Some(3)]);
        assert!(take_handed(&mut waiting, 2).is_empty());
    }
}
