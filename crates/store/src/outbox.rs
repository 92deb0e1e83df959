//! The durable outbox and the webhook subscriptions it delivers to: SQL only. A delivery
//! row is written inside the caller's open transaction, so it commits (or rolls back)
//! with the change it reports; the authorizer's dispatcher claims due rows, sends them,
//! and marks the outcome here. An authorization's deliveries are the exception: its record
//! names the sender and the subscriptions it owes, and the dispatcher writes their rows
//! once sent (or a takeover of a stopped sender does).
//!
//! Claiming: on Postgres any number of instances claim with `FOR UPDATE SKIP LOCKED` and
//! a lease (`leased_until_ms`); a row whose lease ran out (its holder died mid-send) is
//! taken over. SQLite has one writer and one dispatcher.

use crate::{Store, StoreError, Tx, for_update, run, run_pool};
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How long an instance trusts its list of active subscriptions. A change made through
/// this instance invalidates it at once; other instances of a fleet see it within this.
pub const SUBSCRIPTIONS_TTL: Duration = Duration::from_secs(1);

/// Every event type we publish.
pub const EVENT_TYPES: &[&str] = &[
    crate::events::AUTHORIZATION_DECIDED,
    crate::events::ADJUSTMENT_BOOKED,
    crate::events::NOTIFICATION_APPLIED,
    "hold.reserved",
    "hold.captured",
    "hold.released",
    "hold.expired",
    "hold.refunded",
    "account.funded",
    "account.withdrawn",
    "reconciliation.finished",
];

/// Delivery states.
pub const PENDING: &str = "PENDING";
pub const DELIVERED: &str = "DELIVERED";
pub const DEAD: &str = "DEAD";

/// Subscription states.
pub const PENDING_VALIDATION: &str = "PENDING_VALIDATION";
pub const ACTIVE: &str = "ACTIVE";

/// The wait after failed attempt `attempts` (1 for the first): `min(1 s × 2^(n-1), 300 s)`,
/// moved by `jitter_permille` (drawn by the caller from −200..=200, ±20 %).
pub fn backoff_ms(attempts: i64, jitter_permille: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let base = (1_000i64 << exp).min(300_000);
    base + base * jitter_permille.clamp(-200, 200) / 1000
}

/// A subscription owed events now (no `Debug`: it holds the secret).
#[derive(Clone)]
struct Active {
    id: i64,
    url: String,
    types: String,
    /// Signs its deliveries: kept for the ones handed straight to the dispatcher (shared by
    /// them, not copied on the writer's path).
    secret: Arc<str>,
    /// Its new URL has not answered the challenge yet: its events are written PENDING (never
    /// handed over), and the claims take them once the URL passed it.
    held: bool,
}

impl Active {
    fn wants(&self, event_type: &str) -> bool {
        self.types == "*" || self.types.split(',').any(|t| t == event_type)
    }
}

/// This instance's view of the active subscriptions: the one check an event costs when
/// nobody subscribes.
#[derive(Default)]
pub(crate) struct SubscriptionCache {
    cached: RwLock<Option<(Instant, Arc<[Active]>)>>,
}

impl SubscriptionCache {
    fn fresh(&self) -> Option<Arc<[Active]>> {
        let g = self.cached.read().ok()?;
        let (at, subs) = g.as_ref()?;
        (at.elapsed() < SUBSCRIPTIONS_TTL).then(|| subs.clone())
    }

    fn invalidate(&self) {
        if let Ok(mut g) = self.cached.write() {
            *g = None;
        }
    }
}

/// Where this instance's dispatcher takes the authorizations' deliveries from the commits
/// that owe them, without a row in those commits. The commit that inserts an authorization's
/// record names on it the sender (a row of `outbox_senders`) and the subscriptions owed its
/// event; the deliveries are handed over in memory once that commit is done. The dispatcher
/// sends them and then writes their rows, a round's in one statement: DELIVERED, or PENDING
/// after a failed attempt (then they are claimed as any other). The sender's mark
/// (`sent_below`, kept by the dispatcher about four times a second) is an instant: every
/// record of the sender created before it has its delivery rows. A hand-over that cannot be
/// made (the dispatcher is behind) has its rows written PENDING, through the [`Tracker`]; the
/// takeover of a sender that stopped keeping its mark (a crash) writes the rows still missing
/// for its records from its mark on, PENDING.
#[derive(Default)]
pub(crate) struct Handoff {
    to: OnceLock<tokio::sync::mpsc::Sender<Vec<Handed>>>,
    tracker: Arc<Tracker>,
    /// The sender the records are handed to (0: none), and until when: half a lease after
    /// its last kept mark, so that no record names a sender that another instance may take
    /// over. One lock: a writer never pairs one sender with another's time.
    sending: Mutex<(i64, i64)>,
}

/// Commits whose deliveries may wait for the dispatcher at once: past it, their rows are
/// written PENDING, for the claims.
const HANDOFF_COMMITS_MAX: usize = 4096;

/// How far a mark stays behind the instant it is kept: more than any authorization waits
/// between its arrival (its record's instant) and its commit, which its deadline bounds to
/// seconds. A takeover reads the records of this last minute again and writes only the rows
/// still missing.
pub const MARK_SLACK_MS: i64 = 60_000;

impl Handoff {
    /// The sender records written now are handed to, when the dispatcher takes them and
    /// keeps its mark.
    fn sender(&self) -> Option<i64> {
        let to = self.to.get()?;
        let (sender, valid_until_ms) = *self
            .sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!to.is_closed() && sender != 0 && crate::now_ms() < valid_until_ms).then_some(sender)
    }

    fn send_as(&self, sender: i64, valid_until_ms: i64) {
        *self
            .sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (sender, valid_until_ms);
    }

    /// Hands `rows`, committed, to the dispatcher.
    pub(crate) fn give(&self, rows: Vec<Handed>) {
        let Some(to) = self.to.get() else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        if let Err(e) = to.try_send(rows) {
            // Full or closed: the tracker has their rows written PENDING.
            let rows = match e {
                tokio::sync::mpsc::error::TrySendError::Full(r)
                | tokio::sync::mpsc::error::TrySendError::Closed(r) => r,
            };
            rows.into_iter().for_each(Handed::unsent);
        }
    }
}

/// The deliveries this instance's writers are owing or have owed and its dispatcher has not
/// settled (their rows written): the sender's mark is the earliest of their instants. A
/// writer about to insert records holds a floor (an instant at or before any record it will
/// write, [`MARK_SLACK_MS`] before its start) until its deliveries are known.
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    next_token: u64,
    floors: BTreeMap<u64, i64>,
    /// By the instant of the record that owes it, and a token of its own.
    unsettled: BTreeSet<(i64, u64)>,
    /// Committed deliveries nobody will send from memory (a hand-over not made, a dispatcher
    /// that stopped, a round whose rows could not be written): their rows are to be written
    /// PENDING.
    dropped: Vec<Owed>,
    /// A commit's outcome is unknown: the sender's mark must not move again (it is left to
    /// be taken over, and a new one started).
    retired: bool,
}

/// A writer's place at or before the records it is about to write; dropped, it lets the
/// mark pass.
struct Floor {
    tracker: Arc<Tracker>,
    token: u64,
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.tracker.with(|t| {
            t.floors.remove(&self.token);
        });
    }
}

impl Tracker {
    fn with<T>(&self, f: impl FnOnce(&mut Tracked) -> T) -> T {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    fn floor(self: &Arc<Self>) -> Floor {
        let token = self.with(|t| {
            let token = t.next_token;
            t.next_token += 1;
            t.floors.insert(token, crate::now_ms() - MARK_SLACK_MS);
            token
        });
        Floor {
            tracker: self.clone(),
            token,
        }
    }

    /// Deliveries owed by records of instants `at_ms` are written (their commit may still
    /// fail): unsettled until their rows are. Returns their tokens. Ends `floor`.
    fn register(&self, floor: Floor, at_ms: &[i64]) -> Vec<u64> {
        let tokens = self.with(|t| {
            at_ms
                .iter()
                .map(|&at| {
                    let token = t.next_token;
                    t.next_token += 1;
                    t.unsettled.insert((at, token));
                    token
                })
                .collect()
        });
        drop(floor);
        tokens
    }

    /// The rows of `owed` are written.
    pub fn settle<'a>(&self, owed: impl IntoIterator<Item = &'a Owed>) {
        self.with(|t| {
            for o in owed {
                t.unsettled.remove(&(o.at_ms, o.token));
            }
        });
    }

    /// `owed` will not be sent from memory: its row is to be written PENDING.
    pub fn drop_owed(&self, owed: Owed) {
        self.with(|t| t.dropped.push(owed));
    }

    /// The deliveries whose rows are to be written PENDING (given back with
    /// [`Tracker::drop_owed`] when that fails).
    pub fn take_dropped(&self) -> Vec<Owed> {
        self.with(|t| std::mem::take(&mut t.dropped))
    }

    /// A commit of owing records may have happened unseen (its deliveries dropped before
    /// they show): the current sender keeps no mark from now on.
    pub fn retire(&self) {
        self.with(|t| t.retired = true);
    }

    /// The current sender's mark, or `None` once it is retired (then the next sender's marks
    /// follow).
    pub fn mark_unless_retired(&self) -> Option<i64> {
        self.with(|t| (!std::mem::take(&mut t.retired)).then(|| t.mark()))
    }

    /// Nothing this instance has owed, or may still owe, is unsettled: no writer holds a
    /// floor, and every delivery handed over has its row. Once its sender is no longer given
    /// to writers ([`Store::sending_as`] 0), this stays true and the sender can be released
    /// ([`Store::release_sender`]).
    pub fn all_settled(&self) -> bool {
        self.with(|t| t.floors.is_empty() && t.unsettled.is_empty() && t.dropped.is_empty())
    }

    /// Deliveries owed and not yet written (being sent).
    pub fn unsettled(&self) -> usize {
        self.with(|t| t.unsettled.len())
    }

    /// Every delivery this instance owes by a record created before this instant has its row.
    pub fn mark(&self) -> i64 {
        self.with(|t| t.mark())
    }
}

impl Tracked {
    fn mark(&self) -> i64 {
        let mut mark = crate::now_ms() - MARK_SLACK_MS;
        if let Some(&(first, _)) = self.unsettled.first() {
            mark = mark.min(first);
        }
        self.floors.values().fold(mark, |m, &f| m.min(f))
    }
}

/// A delivery an authorization's record owes, as its row is written once it is settled.
#[derive(Debug, Clone)]
pub struct Owed {
    pub event_id: String,
    pub event_type: &'static str,
    pub subscription_id: i64,
    pub url: String,
    /// The event's instant: its record's, its row's creation.
    pub at_ms: i64,
    /// The sender its record names.
    pub sender: i64,
    token: u64,
}

impl Owed {
    /// Event `event_id` owed to subscription `subscription_id` at `url` by a record of
    /// instant `at_ms` that names `sender`, not (yet) tracked.
    pub fn new(
        event_id: String,
        event_type: &'static str,
        subscription_id: i64,
        url: String,
        at_ms: i64,
        sender: i64,
    ) -> Owed {
        Owed {
            event_id,
            event_type,
            subscription_id,
            url,
            at_ms,
            sender,
            token: 0,
        }
    }
}

/// A delivery owed as its row is written: with its state, attempts, due time and error.
type OwedRow<'a> = (&'a Owed, &'static str, i32, i64, Option<String>);

/// How a delivery owed was settled: the row to write.
#[derive(Debug, Clone)]
pub enum Settled {
    /// The receiver acknowledged the first attempt.
    Delivered,
    /// The first attempt failed: PENDING, due again at `next_attempt_at_ms`.
    Failed {
        error: String,
        next_attempt_at_ms: i64,
    },
    /// Never sent from memory: PENDING, due now.
    Unsent,
}

/// A delivery handed to the dispatcher by the commit that owes it (no `Debug`: it holds its
/// subscription's secret). The dispatcher makes it the row a claim would return
/// ([`Handed::into_claimed`]), so the writer builds no headers. Committed and not sent from
/// memory (a full hand-over, a dispatcher that stopped), it is given back
/// ([`Handed::unsent`]) and its row written PENDING. Dropped instead, its commit did not
/// happen (nothing is owed), or its outcome is unknown (its sender is retired, and the
/// takeover writes its row if the record exists): the tracker forgets it.
pub struct Handed {
    pub owed: Owed,
    pub body: Vec<u8>,
    pub secret: Arc<str>,
    /// The tracker that follows it (`None`: nobody does).
    pub tracker: Option<Arc<Tracker>>,
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(t) = self.tracker.take() {
            t.settle([&self.owed]);
        }
    }
}

impl Handed {
    /// Committed, it will not be sent from memory: its row is written PENDING.
    pub fn unsent(mut self) {
        if let Some(t) = self.tracker.take() {
            t.drop_owed(self.owed.clone());
        }
    }

    /// The delivery as a claim returns it: its headers derived from its id and type, signed
    /// with its subscription's secret, not attempted yet. The caller settles it
    /// ([`Tracker::settle`]) or drops it ([`Tracker::drop_owed`]).
    pub fn into_claimed(mut self) -> Claimed {
        self.tracker = None;
        Claimed {
            id: 0,
            headers: event_headers(&self.owed.event_id, self.owed.event_type),
            event_id: self.owed.event_id.clone(),
            url: self.owed.url.clone(),
            body: std::mem::take(&mut self.body),
            signing_secret: Some(self.secret.to_string()),
            attempts: 0,
            created_at_ms: self.owed.at_ms,
            leased_until_ms: 0,
            handed: Some(self.owed.clone()),
        }
    }
}

/// What the dispatcher takes over: the deliveries handed to it, and the tracker of those not
/// yet settled.
pub struct HandOver {
    pub rows: tokio::sync::mpsc::Receiver<Vec<Handed>>,
    pub tracker: Arc<Tracker>,
}

/// A subscription as the admin API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: i64,
    pub url: String,
    /// Empty: every event type.
    pub event_types: Vec<String>,
    pub state: String,
    pub active_since_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A delivery as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub subscription_id: Option<i64>,
    pub url: String,
    pub body: Vec<u8>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// A delivery read back from its row, whose body [`Store::with_bodies`] fills in where the
/// row leaves it out.
pub(crate) trait ReadBack {
    /// The event id, the event's instant and the body.
    fn parts(&mut self) -> (&str, i64, &mut Vec<u8>);
}

impl ReadBack for DeliveryView {
    fn parts(&mut self) -> (&str, i64, &mut Vec<u8>) {
        (&self.event_id, self.created_at_ms, &mut self.body)
    }
}

impl ReadBack for Claimed {
    fn parts(&mut self) -> (&str, i64, &mut Vec<u8>) {
        (&self.event_id, self.created_at_ms, &mut self.body)
    }
}

/// A claimed delivery: everything the dispatcher needs to send it.
#[derive(Clone)]
pub struct Claimed {
    pub id: i64,
    pub event_id: String,
    pub url: String,
    pub body: Vec<u8>,
    /// Header name and value pairs fixed at enqueue.
    pub headers: Vec<(String, String)>,
    /// The subscription's secret: sign each attempt with it (`None`: the headers suffice).
    pub signing_secret: Option<String>,
    pub attempts: i64,
    pub created_at_ms: i64,
    /// The claim's lease: the outcome is recorded only while the row still holds it (a
    /// holder whose lease ran out, taken over by another, or a callback re-targeted by a
    /// duplicate meanwhile, records nothing). 0 for one handed over.
    pub leased_until_ms: i64,
    /// Handed over by the commit that owes it (no row yet, `id` 0): its row is written
    /// once it is sent, or its attempt failed.
    pub handed: Option<Owed>,
}

/// Never the secret, and the body by its size only.
impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Claimed {{ id: {}, event_id: {:?}, url: {:?}, body: {} bytes, attempts: {}, .. }}",
            self.id,
            self.event_id,
            self.url,
            self.body.len(),
            self.attempts
        )
    }
}

/// A delivery given up.
#[derive(Debug, Clone)]
pub struct GivenUp {
    pub id: i64,
    pub event_id: String,
    pub url: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// What one pass of [`Store::prune_deliveries`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Subscribers' rows deleted.
    pub deleted: u64,
    /// The pass walked a whole batch of old rows: more may follow at once.
    pub more: bool,
}

/// A row to enqueue with every header it needs (a callback to a configured URL).
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub url: &'a str,
    pub body: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
}

/// `select` with `lock` on Postgres, where other instances take rows too (locked rows
/// skipped); as it is on the embedded store, whose one connection is every caller's.
fn skipping_locked(tx: &Tx, select: &str, lock: &str) -> String {
    match tx {
        Tx::Pg(_) => format!("{select} {lock}"),
        Tx::Lite(_) => select.to_owned(),
    }
}

/// Writes the rows still missing for the deliveries owed by sender `$2`'s records created
/// from `$3` on: PENDING, due at `$1`, at their subscription's URL of now (a subscription
/// deleted meanwhile is owed nothing). The rows its dispatcher wrote stay as they are.
const OWED_FROM_MARK: &str = "INSERT INTO outbox (event_id, event_type, subscription_id, url, body, \
     headers, state, attempts, next_attempt_at_ms, pending_since_ms, created_at_ms, updated_at_ms) \
     SELECT 'evt-auth-' || r.transaction_id, 'authorization.decided', s.id, s.url, $4, '', \
            'PENDING', 0, $1, $1, r.created_at_ms, $1 \
       FROM processor_transactions r JOIN webhook_subscriptions s \
         ON ',' || r.webhook_subscriptions || ',' LIKE '%,' || CAST(s.id AS TEXT) || ',%' \
      WHERE r.created_at_ms >= $3 AND r.webhook_sender = $2 AND r.kind = 'AUTHORIZATION' \
     ON CONFLICT (event_id, subscription_id) WHERE subscription_id IS NOT NULL DO NOTHING";

/// Writes the rows still missing for sender `sender`'s deliveries from `sent_below` on
/// (PENDING, due at `now_ms`) and deletes the sender, in `tx`: a takeover, or a release.
/// Returns the rows written.
async fn end_sender(
    tx: &mut Tx,
    sender: i64,
    sent_below: i64,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    Ok(run!(tx, c => {
        // Planned for its mark (unprepared): a range of the records' instants from there.
        let n = sqlx::query(OWED_FROM_MARK)
            .persistent(false)
            .bind(now_ms)
            .bind(sender)
            .bind(sent_below)
            .bind(&[][..] as &[u8])
            .execute(&mut *c)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM outbox_senders WHERE id = $1")
            .bind(sender)
            .execute(&mut *c)
            .await?;
        n
    }))
}

/// The senders not alive since before `$1`, but `$2`.
const DEAD_SENDERS: &str =
    "SELECT id, sent_below FROM outbox_senders WHERE alive_until_ms < $1 AND id <> $2 ORDER BY id";

/// What [`Store::redeliver`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeliver {
    Queued,
    NotFound,
    /// Still pending: it goes out anyway.
    AlreadyPending,
}

fn headers_json(headers: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The headers of an event to a subscriber, fixed by its id and type (the signature is
/// added per attempt): derived when sent, not stored with the row.
fn event_headers(event_id: &str, event_type: &str) -> Vec<(String, String)> {
    [
        ("content-type", "application/json"),
        ("x-event-id", event_id),
        ("x-event-type", event_type),
        ("x-request-id", event_id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A row's headers: those stored (a delivery to a configured URL), or, where none are
/// stored (an event to a subscriber), the event's.
fn headers_of(text: &str, event_id: &str, event_type: &str) -> Vec<(String, String)> {
    if text.is_empty() {
        return event_headers(event_id, event_type);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Row ids as an SQL list (integers read from our own rows: nothing to escape), so one
/// statement serves a round's rows on both backends.
fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn types_of(stored: &str) -> Vec<String> {
    if stored == "*" {
        Vec::new()
    } else {
        stored.split(',').map(str::to_owned).collect()
    }
}

const SUBSCRIPTION_COLUMNS: &str = "SELECT id, url, event_types, state, active_since_ms, \
     created_at_ms, updated_at_ms FROM webhook_subscriptions";

macro_rules! subscription_of {
    ($r:expr) => {
        SubscriptionView {
            id: $r.try_get(0)?,
            url: $r.try_get(1)?,
            event_types: types_of(&$r.try_get::<String, _>(2)?),
            state: $r.try_get(3)?,
            active_since_ms: $r.try_get(4)?,
            created_at_ms: $r.try_get(5)?,
            updated_at_ms: $r.try_get(6)?,
        }
    };
}

/// The deliveries as shown (`deliveries`, a view of the outbox; an authorization's delivery
/// shows once its row is written: when it was sent, or its first attempt failed).
const DELIVERY_COLUMNS: &str = "SELECT id, event_id, event_type, subscription_id, url, body, \
     state, attempts, next_attempt_at_ms, last_error, created_at_ms, updated_at_ms, \
     delivered_at_ms FROM deliveries";

macro_rules! delivery_of {
    ($r:expr) => {
        DeliveryView {
            id: $r.try_get(0)?,
            event_id: $r.try_get(1)?,
            event_type: $r.try_get(2)?,
            subscription_id: $r.try_get(3)?,
            url: $r.try_get(4)?,
            body: $r.try_get(5)?,
            state: $r.try_get(6)?,
            attempts: i64::from($r.try_get::<i32, _>(7)?),
            next_attempt_at_ms: $r.try_get(8)?,
            last_error: $r.try_get(9)?,
            created_at_ms: $r.try_get(10)?,
            updated_at_ms: $r.try_get(11)?,
            delivered_at_ms: $r.try_get(12)?,
        }
    };
}

/// Inserts one row, due now, PENDING, in `tx`.
#[allow(clippy::too_many_arguments)]
async fn insert_row(
    tx: &mut Tx,
    event_id: &str,
    event_type: &str,
    subscription_id: Option<i64>,
    url: &str,
    body: &[u8],
    headers: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, subscription_id, url, body, headers, state, \
             attempts, next_attempt_at_ms, pending_since_ms, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', 0, $7, $7, $7, $7)",
        )
        .bind(event_id)
        .bind(event_type)
        .bind(subscription_id)
        .bind(url)
        .bind(body)
        .bind(headers)
        .bind(now_ms)
        .execute(c)
        .await
        .map(drop)?
    });
    Ok(())
}

/// Enqueues `d` in the caller's open transaction: it is sent only if that commits.
pub(crate) async fn enqueue(tx: &mut Tx, d: &Delivery<'_>, now_ms: i64) -> Result<(), sqlx::Error> {
    insert_row(
        tx,
        d.event_id,
        d.event_type,
        None,
        d.url,
        d.body,
        &headers_json(d.headers),
        now_ms,
    )
    .await
}

/// The statement that lists the subscriptions owed events: the active ones, and those that
/// were active and wait for a new URL to answer the challenge (a URL change must not lose
/// the events committed meanwhile).
const ACTIVE_SUBSCRIPTIONS: &str = "SELECT id, url, event_types, secret, state FROM webhook_subscriptions \
     WHERE state = 'ACTIVE' OR active_since_ms IS NOT NULL ORDER BY id";

/// A row of [`ACTIVE_SUBSCRIPTIONS`].
type ActiveRow = (i64, String, String, String, String);

/// One event to publish: its stable id (derived from the row it reports), its time and its
/// data. The body is `{"created_at_ms", "data", "id", "type"}`, rendered once and stored
/// (or, for an authorization recorded by its answer, rebuilt from the ledger where the row
/// leaves it out): every attempt sends the same bytes.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: String,
    pub now_ms: i64,
    /// The event's `data`, rendered (an object whose keys are in name order).
    pub data: Box<RawValue>,
    /// The ledger rebuilds the body (`Store::with_bodies`): its rows leave it out, the
    /// commit's largest part otherwise.
    pub rebuilt: bool,
}

impl Event {
    /// The event `id` at `now_ms` with `data`: a `serde_json::Value` (whose objects keep
    /// their keys in name order) or a struct whose fields are declared in name order, so
    /// that every event's body lists its keys alike.
    pub(crate) fn new(id: String, now_ms: i64, data: &impl Serialize) -> Event {
        Event {
            id,
            now_ms,
            // Plain data (strings, numbers, booleans, and objects with string keys) always
            // renders.
            data: serde_json::value::to_raw_value(data).expect("event data renders as JSON"),
            rebuilt: false,
        }
    }

    pub(crate) fn body(&self, event_type: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            created_at_ms: i64,
            data: &'a RawValue,
            id: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
        }
        serde_json::to_vec(&Body {
            created_at_ms: self.now_ms,
            data: &self.data,
            id: &self.id,
            event_type,
        })
        .expect("an event body renders as JSON")
    }
}

/// The active subscriptions that want one event type (empty: nobody; then the events are
/// not even built).
pub(crate) struct Subscribers {
    event_type: &'static str,
    wanted: Vec<Active>,
    /// The sender the rows are handed to (`None`: they are written PENDING).
    handing: Option<Handing>,
}

/// The sender that rows written now are handed to, and the tracker that follows them. It
/// holds a floor from the moment the sender is read, so that no mark passes the rows of a
/// writer that has read it, however long before their ids are drawn (the sender's release
/// waits for every such writer: [`Tracker::all_settled`]).
pub(crate) struct Handing {
    sender: i64,
    tracker: Arc<Tracker>,
    _held: Floor,
}

#[cfg(test)]
impl Handing {
    pub(crate) fn new(sender: i64, tracker: Arc<Tracker>) -> Handing {
        Handing {
            sender,
            _held: tracker.floor(),
            tracker,
        }
    }
}

/// The events of a commit to publish: the outbox rows it writes, as columns, for a statement
/// that inserts them all at once (`INSERT ... SELECT FROM UNNEST`), one row per event and
/// subscription; and the events its records owe instead, handed over once it is done (no
/// `Debug`: those hold their subscription's secret).
#[derive(Default)]
pub(crate) struct OutboxRows {
    pub event_type: &'static str,
    pub event_ids: Vec<String>,
    pub subscription_ids: Vec<i64>,
    pub urls: Vec<String>,
    pub bodies: Vec<Vec<u8>>,
    /// Per row: its body is left out of the table (the ledger rebuilds it).
    pub rebuilt: Vec<bool>,
    /// The event's time: the row's creation and first due time.
    pub at_ms: Vec<i64>,
    /// The sender the owing records name (`None`: every event is written as rows).
    pub sender: Option<i64>,
    /// The events whose records owe their deliveries (rebuilt from the record, handed over).
    pub owing: Vec<String>,
    /// The subscriptions those records owe, as they name them: ids, comma-separated.
    pub owed_to: String,
    /// The deliveries owed, to hand over once committed, with their bodies and secrets.
    owed: Vec<(Owed, Vec<u8>, Arc<str>)>,
    /// Held from before the records are written until their deliveries are tracked.
    floor: Option<Floor>,
}

impl OutboxRows {
    /// The bodies as the table stores them: empty where the ledger rebuilds them.
    pub(crate) fn stored_bodies(&self) -> Vec<&[u8]> {
        self.bodies
            .iter()
            .zip(&self.rebuilt)
            .map(|(b, &rebuilt)| if rebuilt { &[][..] } else { b.as_slice() })
            .collect()
    }

    /// The sender and the subscriptions the record of event `event_id` names: both `None`
    /// when it owes nothing.
    pub(crate) fn owed_by(&self, event_id: &str) -> (Option<i64>, Option<&str>) {
        if self.owing.iter().any(|e| e == event_id) {
            (self.sender, Some(&self.owed_to))
        } else {
            (None, None)
        }
    }

    /// The statement that wrote the records may have committed, unseen: the sender is
    /// retired before its floor goes ([`Tracker::retire`]).
    pub(crate) fn uncertain(mut self) {
        if let Some(floor) = self.floor.take() {
            floor.tracker.retire();
        }
    }

    /// The deliveries the records owe, as handed to the dispatcher once committed (none
    /// when nothing is handed over). Dropped uncommitted, they are forgotten.
    pub(crate) fn handed(mut self) -> Vec<Handed> {
        let Some(floor) = self.floor.take() else {
            return Vec::new();
        };
        let tracker = floor.tracker.clone();
        let at: Vec<i64> = self.owed.iter().map(|(o, _, _)| o.at_ms).collect();
        let tokens = tracker.register(floor, &at);
        self.owed
            .drain(..)
            .zip(tokens)
            .map(|((mut owed, body, secret), token)| {
                owed.token = token;
                Handed {
                    owed,
                    body,
                    secret,
                    tracker: Some(tracker.clone()),
                }
            })
            .collect()
    }
}

impl Subscribers {
    /// The subscriptions of `subs` that want `event_type`; `handing` is asked for the sender
    /// only when there is one (nobody subscribed holds no floor).
    fn of(
        subs: &[Active],
        event_type: &'static str,
        handing: impl FnOnce() -> Option<Handing>,
    ) -> Subscribers {
        let wanted: Vec<Active> = subs
            .iter()
            .filter(|s| s.wants(event_type))
            .cloned()
            .collect();
        Subscribers {
            event_type,
            handing: if wanted.is_empty() { None } else { handing() },
            wanted,
        }
    }

    /// The rows of the events `build` makes (called only when somebody subscribes). Handed
    /// over to a sender, the events the ledger rebuilds are owed by their records instead.
    pub(crate) fn rows(&self, build: impl FnOnce() -> Vec<Event>) -> Option<OutboxRows> {
        if self.wanted.is_empty() {
            return None;
        }
        let mut rows = OutboxRows {
            event_type: self.event_type,
            sender: self.handing.as_ref().map(|h| h.sender),
            floor: self.handing.as_ref().map(|h| h.tracker.floor()),
            ..OutboxRows::default()
        };
        if rows.sender.is_some() {
            rows.owed_to = self
                .wanted
                .iter()
                .filter(|s| !s.held)
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
                .join(",");
        }
        for e in build() {
            let body = e.body(self.event_type);
            let mut owing = false;
            for s in &self.wanted {
                match rows.sender {
                    // A held subscription's rows are written, to wait for its URL.
                    Some(sender) if e.rebuilt && !s.held => {
                        let owed = Owed::new(
                            e.id.clone(),
                            self.event_type,
                            s.id,
                            s.url.clone(),
                            e.now_ms,
                            sender,
                        );
                        rows.owed.push((owed, body.clone(), s.secret.clone()));
                        owing = true;
                    }
                    _ => {
                        rows.event_ids.push(e.id.clone());
                        rows.subscription_ids.push(s.id);
                        rows.urls.push(s.url.clone());
                        rows.bodies.push(body.clone());
                        rows.rebuilt.push(e.rebuilt);
                        rows.at_ms.push(e.now_ms);
                    }
                }
            }
            if owing {
                rows.owing.push(e.id);
            }
        }
        (!rows.event_ids.is_empty() || !rows.owing.is_empty()).then_some(rows)
    }
}

impl Store {
    /// The active subscriptions, from this instance's cache or (stale) read in `tx`: the
    /// caller's own transaction, so the embedded store's single connection is never
    /// waited for twice.
    async fn active_subscriptions(&self, tx: &mut Tx) -> Result<Arc<[Active]>, sqlx::Error> {
        if let Some(subs) = self.subscriptions.fresh() {
            return Ok(subs);
        }
        let rows: Vec<ActiveRow> = run!(tx, c => {
            sqlx::query_as(ACTIVE_SUBSCRIPTIONS).fetch_all(c).await?
        });
        Ok(self.remember_subscriptions(rows))
    }

    fn remember_subscriptions(&self, rows: Vec<ActiveRow>) -> Arc<[Active]> {
        let subs: Arc<[Active]> = rows
            .into_iter()
            .map(|(id, url, types, secret, state)| Active {
                id,
                url,
                types,
                secret: secret.into(),
                held: state != ACTIVE,
            })
            .collect();
        if let Ok(mut g) = self.subscriptions.cached.write() {
            *g = Some((Instant::now(), subs.clone()));
        }
        subs
    }

    /// The subscriptions that want `event_type`, from this instance's cache or (stale) read
    /// on the pool: for a writer that inserts its events with its own statement (the
    /// Postgres batch). Nobody subscribed costs no database work while the cache is fresh.
    pub(crate) async fn subscribers(
        &self,
        event_type: &'static str,
    ) -> Result<Subscribers, sqlx::Error> {
        let subs = match self.subscriptions.fresh() {
            Some(subs) => subs,
            None => {
                let rows: Vec<ActiveRow> = run_pool!(&self.db, p => {
                    sqlx::query_as(ACTIVE_SUBSCRIPTIONS).fetch_all(p).await?
                });
                self.remember_subscriptions(rows)
            }
        };
        Ok(Subscribers::of(&subs, event_type, || self.handing()))
    }

    /// The sender and tracker of rows written now, when they are handed over.
    fn handing(&self) -> Option<Handing> {
        // The floor before the sender: a release that ends the sending and then finds no
        // floor has no writer left that read the sender.
        let held = self.handoff.tracker.floor();
        Some(Handing {
            sender: self.handoff.sender()?,
            tracker: self.handoff.tracker.clone(),
            _held: held,
        })
    }

    /// The authorizations' deliveries are handed to the caller (this instance's dispatcher)
    /// on the channel returned, once their commit is done, while it keeps a sender's mark
    /// ([`Store::sending_as`]); `None` when a dispatcher already takes them. Dropping the
    /// receiver ends the hand-over: rows are then written PENDING, for the claims.
    pub fn hand_deliveries_over(&self) -> Option<HandOver> {
        let (to, from) = tokio::sync::mpsc::channel(HANDOFF_COMMITS_MAX);
        self.handoff.to.set(to).ok()?;
        Some(HandOver {
            rows: from,
            tracker: self.handoff.tracker.clone(),
        })
    }

    /// Records written until `valid_until_ms` name `sender` (its mark just kept).
    pub fn sending_as(&self, sender: i64, valid_until_ms: i64) {
        self.handoff.send_as(sender, valid_until_ms);
    }

    /// A commit that wrote `handed` may or may not have happened (its outcome is unknown):
    /// their rows, if they exist, are left to the takeover of this instance's sender, which
    /// keeps no mark from now on ([`Tracker::retire`]).
    pub(crate) fn commit_uncertain(&self, handed: &[Handed]) {
        if !handed.is_empty() {
            self.handoff.tracker.retire();
            self.handoff.send_as(0, 0);
        }
    }

    /// Hands `rows`, just committed, to this instance's dispatcher.
    pub(crate) fn hand_over(&self, rows: Vec<Handed>) {
        self.handoff.give(rows);
    }

    /// Publishes an event in the caller's open transaction: one outbox row per active
    /// subscription that wants `event_type`. `event_id` must be stable (derived from the
    /// row the event reports); `data` is built only when somebody subscribes.
    pub(crate) async fn emit<F>(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        event_id: &str,
        now_ms: i64,
        data: F,
    ) -> Result<(), sqlx::Error>
    where
        F: FnOnce() -> serde_json::Value,
    {
        self.publish(tx, event_type, || {
            vec![Event::new(event_id.to_owned(), now_ms, &data())]
        })
        .await
    }

    /// [`Store::emit`] for the events `build` makes (built only when somebody subscribes).
    pub(crate) async fn publish(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        build: impl FnOnce() -> Vec<Event>,
    ) -> Result<(), sqlx::Error> {
        self.publish_leased(tx, event_type, false, build)
            .await
            .map(drop)
    }

    /// [`Store::publish`] for the authorizations: their records owe the deliveries to this
    /// instance's dispatcher when one takes them (they name its sender); returns them, to be
    /// handed over once `tx` commits.
    pub(crate) async fn publish_handed(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        build: impl FnOnce() -> Vec<Event>,
    ) -> Result<Vec<Handed>, sqlx::Error> {
        self.publish_leased(tx, event_type, true, build).await
    }

    async fn publish_leased(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        hand: bool,
        build: impl FnOnce() -> Vec<Event>,
    ) -> Result<Vec<Handed>, sqlx::Error> {
        let subs = self.active_subscriptions(tx).await?;
        let handing = || if hand { self.handing() } else { None };
        let Some(rows) = Subscribers::of(&subs, event_type, handing).rows(build) else {
            return Ok(Vec::new());
        };
        for (i, body) in rows.stored_bodies().into_iter().enumerate() {
            insert_row(
                tx,
                &rows.event_ids[i],
                event_type,
                Some(rows.subscription_ids[i]),
                &rows.urls[i],
                body,
                "",
                rows.at_ms[i],
            )
            .await?;
        }
        // The records just written name what they owe: their own page, already written.
        for event_id in &rows.owing {
            let Some(tid) = event_id.strip_prefix("evt-auth-") else {
                continue;
            };
            run!(&mut *tx, c => {
                sqlx::query(
                    "UPDATE processor_transactions SET webhook_sender = $1, \
                     webhook_subscriptions = $2 WHERE kind = 'AUTHORIZATION' AND transaction_id = $3",
                )
                .bind(rows.sender)
                .bind(&rows.owed_to)
                .bind(tid)
                .execute(&mut *c)
                .await
                .map(drop)?
            });
        }
        Ok(rows.handed())
    }

    /// Enqueues a delivery to a configured URL in its own transaction (callers with an
    /// open transaction use [`enqueue`]).
    pub async fn enqueue_delivery(&self, d: &Delivery<'_>, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        enqueue(&mut tx, d, now_ms).await?;
        tx.commit().await
    }

    /// Commits a change of one subscription (`n` rows: whether it existed) and forgets
    /// this instance's list of active ones.
    async fn subscription_changed(&self, tx: Tx, n: u64) -> Result<bool, StoreError> {
        tx.commit().await?;
        self.subscriptions.invalidate();
        Ok(n == 1)
    }

    /// Creates a subscription awaiting its challenge. `event_types` empty: every type.
    pub async fn create_subscription(
        &self,
        url: &str,
        secret: &str,
        event_types: &[String],
        now_ms: i64,
    ) -> Result<SubscriptionView, StoreError> {
        let types = if event_types.is_empty() {
            "*".to_owned()
        } else {
            event_types.join(",")
        };
        let id: i64 = run_pool!(&self.db, p => {
            sqlx::query_scalar(
                "INSERT INTO webhook_subscriptions (url, secret, event_types, state, \
                 created_at_ms, updated_at_ms) VALUES ($1, $2, $3, 'PENDING_VALIDATION', $4, $4) \
                 RETURNING id",
            )
            .bind(url)
            .bind(secret)
            .bind(&types)
            .bind(now_ms)
            .fetch_one(p)
            .await?
        });
        self.subscription(id)
            .await?
            .ok_or_else(|| StoreError::Invalid("subscription vanished".into()))
    }

    pub async fn subscription(&self, id: i64) -> Result<Option<SubscriptionView>, StoreError> {
        let sql = format!("{SUBSCRIPTION_COLUMNS} WHERE id = $1");
        Ok(run_pool!(&self.db, p => {
            match sqlx::query(&sql).bind(id).fetch_optional(p).await? {
                Some(r) => Some(subscription_of!(r)),
                None => None,
            }
        }))
    }

    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionView>, StoreError> {
        let sql = format!("{SUBSCRIPTION_COLUMNS} ORDER BY id");
        let mut out = Vec::new();
        run_pool!(&self.db, p => {
            for r in sqlx::query(&sql).fetch_all(p).await? {
                out.push(subscription_of!(r));
            }
        });
        Ok(out)
    }

    /// The URL and secret to challenge.
    pub async fn subscription_secret(
        &self,
        id: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(run_pool!(&self.db, p => {
            sqlx::query_as("SELECT url, secret FROM webhook_subscriptions WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// A new URL: validation starts over, and the pending deliveries follow the
    /// subscriber to it (sent once it passes the challenge). A subscription that was active
    /// keeps `active_since_ms`: its events go on being written meanwhile, and wait for the
    /// new URL too. `false`: no such subscription.
    pub async fn set_subscription_url(
        &self,
        id: i64,
        url: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n = run!(&mut tx, c => {
            let n = sqlx::query(
                "UPDATE webhook_subscriptions SET url = $1, state = 'PENDING_VALIDATION', \
                 updated_at_ms = $2 WHERE id = $3",
            )
            .bind(url)
            .bind(now_ms)
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE outbox SET url = $1, updated_at_ms = $2 \
                 WHERE subscription_id = $3 AND state = 'PENDING'",
            )
            .bind(url)
            .bind(now_ms)
            .bind(id)
            .execute(&mut *c)
            .await?;
            n
        });
        self.subscription_changed(tx, n).await
    }

    /// Marks the subscription ACTIVE if its URL is still `url` (the one that answered the
    /// challenge: a change in between keeps it pending). Returns whether it is active.
    pub async fn activate_subscription(
        &self,
        id: i64,
        url: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = run_pool!(&self.db, p => {
            sqlx::query(
                "UPDATE webhook_subscriptions SET state = 'ACTIVE', \
                 active_since_ms = COALESCE(active_since_ms, $1), updated_at_ms = $1 \
                 WHERE id = $2 AND url = $3",
            )
            .bind(now_ms)
            .bind(id)
            .bind(url)
            .execute(p)
            .await?
            .rows_affected()
        });
        self.subscriptions.invalidate();
        Ok(n == 1)
    }

    /// Deletes a subscription with its secret; its undelivered rows become DEAD.
    pub async fn delete_subscription(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let n = run!(&mut tx, c => {
            sqlx::query(
                "UPDATE outbox SET state = 'DEAD', last_error = 'subscription deleted', \
                 leased_until_ms = NULL, updated_at_ms = $1 \
                 WHERE subscription_id = $2 AND state = 'PENDING'",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *c)
            .await?;
            sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
                .bind(id)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        self.subscription_changed(tx, n).await
    }

    /// Fills in the bodies that the rows of `authorization.decided` leave out (empty): each
    /// rebuilt from its authorization's record, the bytes its commit rendered and sent first.
    /// The records are read in one statement, whatever the number of rows.
    pub(crate) async fn with_bodies(&self, rows: &mut [impl ReadBack]) -> Result<(), StoreError> {
        // The rows owing a body, by the transaction whose record rebuilds it.
        let mut owing: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, row) in rows.iter_mut().enumerate() {
            let (event_id, _, body) = row.parts();
            if let Some(tid) = event_id.strip_prefix("evt-auth-")
                && body.is_empty()
            {
                owing.entry(tid.to_owned()).or_default().push(i);
            }
        }
        if owing.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT {} FROM processor_transactions r \
             WHERE r.kind = 'AUTHORIZATION' AND r.transaction_id IN {}",
            crate::events::RECORD_COLUMNS,
            crate::authorize::placeholders(1, owing.len(), 1)
        );
        run_pool!(&self.db, p => {
            let mut q = sqlx::query(&sql).persistent(false);
            for tid in owing.keys() {
                q = q.bind(tid.as_str());
            }
            for r in q.fetch_all(p).await? {
                let tid: String = r.try_get("transaction_id")?;
                for i in owing.remove(&tid).unwrap_or_default() {
                    let (_, at_ms, body) = rows[i].parts();
                    let s = crate::events::stored_authorization!(r, at_ms);
                    *body = crate::events::rebuilt_authorization_body(&s);
                }
            }
        });
        for tid in owing.keys() {
            tracing::error!(
                event_id = %format!("evt-auth-{tid}"),
                "an authorization's event has no record to rebuild its body from"
            );
        }
        Ok(())
    }

    /// Claims up to `batch_max` due rows for `lease_ms`. Rows of a subscription are due
    /// only while it is ACTIVE, and go to its URL of now (which answered the challenge):
    /// nothing goes to an unvalidated URL.
    pub async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        batch_max: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        // A subscriber's row goes to its subscription's URL of now, which answered the
        // challenge (ACTIVE): not to the URL it was written with, which a URL change since
        // (a redelivery, a writer's cache a moment behind the change) may have left stale.
        const DUE: &str = "SELECT o.id, o.event_id, COALESCE(s.url, o.url), o.body, o.headers, \
             s.secret, o.attempts, o.created_at_ms, o.subscription_id, o.event_type FROM outbox o \
             LEFT JOIN webhook_subscriptions s ON s.id = o.subscription_id \
             WHERE o.state = 'PENDING' AND o.next_attempt_at_ms <= $1 \
             AND (o.leased_until_ms IS NULL OR o.leased_until_ms <= $1) \
             AND (o.subscription_id IS NULL OR s.state = 'ACTIVE') \
             ORDER BY o.next_attempt_at_ms, o.id LIMIT $2";
        let mut tx = self.begin().await?;
        let sql = skipping_locked(&tx, DUE, "FOR UPDATE OF o SKIP LOCKED");
        let mut claimed = Vec::new();
        run!(&mut tx, c => {
            for r in sqlx::query(&sql).bind(now_ms).bind(batch_max).fetch_all(&mut *c).await? {
                let sub: Option<i64> = r.try_get(8)?;
                let secret: Option<String> = r.try_get(5)?;
                let event_id: String = r.try_get(1)?;
                let headers =
                    headers_of(&r.try_get::<String, _>(4)?, &event_id, &r.try_get::<String, _>(9)?);
                claimed.push(Claimed {
                    id: r.try_get(0)?,
                    event_id,
                    url: r.try_get(2)?,
                    body: r.try_get(3)?,
                    headers,
                    signing_secret: sub.and(secret),
                    attempts: i64::from(r.try_get::<i32, _>(6)?),
                    created_at_ms: r.try_get(7)?,
                    leased_until_ms: now_ms + lease_ms,
                    handed: None,
                });
            }
            if !claimed.is_empty() {
                let ids: Vec<i64> = claimed.iter().map(|d| d.id).collect();
                // The row names the URL it goes to (the listing shows it).
                let sql = format!(
                    "UPDATE outbox SET leased_until_ms = $1, url = COALESCE((SELECT s.url \
                     FROM webhook_subscriptions s WHERE s.id = outbox.subscription_id), url) \
                     WHERE id IN ({})",
                    id_list(&ids)
                );
                sqlx::query(&sql)
                    .persistent(false)
                    .bind(now_ms + lease_ms)
                    .execute(&mut *c)
                    .await?;
            }
        });
        tx.commit().await?;
        self.with_bodies(&mut claimed).await?;
        Ok(claimed)
    }

    /// The receivers acknowledged the claimed rows `(id, lease)`: one statement for a
    /// round's deliveries of one claim. A row no longer under that lease is left as it is.
    pub async fn mark_delivered(&self, rows: &[(i64, i64)], now_ms: i64) -> Result<(), StoreError> {
        let mut leases: Vec<i64> = rows.iter().map(|&(_, l)| l).collect();
        leases.sort_unstable();
        leases.dedup();
        for lease in leases {
            let ids: Vec<i64> = rows.iter().filter(|r| r.1 == lease).map(|r| r.0).collect();
            self.update_rows(
                &format!(
                    "UPDATE outbox SET state = 'DELIVERED', attempts = attempts + 1, \
                     leased_until_ms = NULL, last_error = NULL, delivered_at_ms = $1, \
                     updated_at_ms = $1 WHERE state = 'PENDING' AND leased_until_ms = {lease}"
                ),
                &ids,
                now_ms,
            )
            .await?;
        }
        Ok(())
    }

    /// Runs `update` (whose `$1` is `now_ms`, and whose `WHERE` the rows' ids are added to)
    /// on rows `ids`: one statement for all of them, on both backends.
    async fn update_rows(&self, update: &str, ids: &[i64], now_ms: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!("{update} AND id IN ({})", id_list(ids));
        run_pool!(&self.db, p => {
            sqlx::query(&sql)
                .persistent(false)
                .bind(now_ms)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// An attempt on claimed row `(id, lease)` failed: try again at `next_attempt_at_ms`
    /// (see [`backoff_ms`]). The give-up age is [`Store::give_up_deliveries`]'s. A row no
    /// longer under that lease is left as it is: its new holder's lease stands.
    pub async fn mark_failed(
        &self,
        (id, lease): (i64, i64),
        error: &str,
        next_attempt_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        run_pool!(&self.db, p => {
            sqlx::query(
                "UPDATE outbox SET state = 'PENDING', attempts = attempts + 1, \
                 leased_until_ms = NULL, last_error = $1, next_attempt_at_ms = $2, \
                 updated_at_ms = $3 WHERE id = $4 AND state = 'PENDING' AND leased_until_ms = $5",
            )
            .bind(error)
            .bind(next_attempt_at_ms)
            .bind(now_ms)
            .bind(id)
            .bind(lease)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Writes the rows of the deliveries owed in `settled`, as they were settled: one
    /// statement on Postgres, one transaction on the embedded store. A delivery to retry goes
    /// to its subscription's URL of now (changed meanwhile, it follows), or is DEAD when the
    /// subscription was deleted meanwhile, as the deletion made its pending rows. A row already written (by a takeover
    /// that came first) stays. With `unless_uncommitted`, a row is written only where the
    /// record that owes it exists as it was owed: with its instant, naming its sender and the
    /// subscription.
    pub async fn write_owed(
        &self,
        settled: &[(Owed, Settled)],
        now_ms: i64,
        unless_uncommitted: bool,
    ) -> Result<(), StoreError> {
        if settled.is_empty() {
            return Ok(());
        }
        fn row((o, outcome): &(Owed, Settled), now_ms: i64) -> OwedRow<'_> {
            let (state, attempts, due, error) = match outcome {
                Settled::Delivered => (DELIVERED, 1, now_ms, None),
                Settled::Failed {
                    error,
                    next_attempt_at_ms,
                } => (PENDING, 1, *next_attempt_at_ms, Some(error.clone())),
                Settled::Unsent => (PENDING, 0, now_ms, None),
            };
            (o, state, attempts, due, error)
        }
        match &self.db {
            crate::Db::Pg(p) => {
                let rows: Vec<_> = settled.iter().map(|s| row(s, now_ms)).collect();
                let col =
                    |f: &dyn Fn(&OwedRow<'_>) -> String| rows.iter().map(f).collect::<Vec<_>>();
                sqlx::query(
                    "INSERT INTO outbox (event_id, event_type, subscription_id, url, body, headers, \
                     state, attempts, next_attempt_at_ms, last_error, pending_since_ms, \
                     created_at_ms, updated_at_ms, delivered_at_ms) \
                     SELECT x.e, x.t, x.s, CASE WHEN x.st = 'DELIVERED' OR s.id IS NULL THEN x.u \
                            ELSE s.url END, $1, '', \
                            CASE WHEN x.st = 'PENDING' AND s.id IS NULL THEN 'DEAD' ELSE x.st END, \
                            x.n, x.due, CASE WHEN x.st = 'PENDING' AND s.id IS NULL \
                            THEN 'subscription deleted' ELSE x.err END, x.at, x.at, $2, \
                            CASE WHEN x.st = 'DELIVERED' THEN $2::int8 END \
                       FROM UNNEST($3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], \
                                   $8::int4[], $9::int8[], $10::text[], $11::int8[], $12::int8[]) \
                         AS x(e, t, s, u, st, n, due, err, at, w) \
                       LEFT JOIN webhook_subscriptions s ON s.id = x.s \
                      WHERE NOT $13 OR EXISTS (SELECT 1 FROM processor_transactions r \
                            WHERE r.kind = 'AUTHORIZATION' AND r.transaction_id = SUBSTR(x.e, 10) \
                              AND r.webhook_sender = x.w AND r.created_at_ms = x.at \
                              AND ',' || r.webhook_subscriptions || ',' \
                                  LIKE '%,' || CAST(x.s AS TEXT) || ',%') \
                     ON CONFLICT (event_id, subscription_id) WHERE subscription_id IS NOT NULL \
                     DO NOTHING",
                )
                .bind(&[][..] as &[u8])
                .bind(now_ms)
                .bind(col(&|r| r.0.event_id.clone()))
                .bind(col(&|r| r.0.event_type.to_owned()))
                .bind(rows.iter().map(|r| r.0.subscription_id).collect::<Vec<_>>())
                .bind(col(&|r| r.0.url.clone()))
                .bind(col(&|r| r.1.to_owned()))
                .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.0.at_ms).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.0.sender).collect::<Vec<_>>())
                .bind(unless_uncommitted)
                .execute(p)
                .await?;
            }
            crate::Db::Lite(p) => {
                let mut tx = p.begin().await?;
                for (o, state, attempts, due, error) in settled.iter().map(|s| row(s, now_ms)) {
                    sqlx::query(
                        "INSERT INTO outbox (event_id, event_type, subscription_id, url, body, \
                         headers, state, attempts, next_attempt_at_ms, last_error, pending_since_ms, \
                         created_at_ms, updated_at_ms, delivered_at_ms) \
                         SELECT $1, $2, $3, CASE WHEN $6 = 'DELIVERED' OR s.id IS NULL THEN $4 \
                                ELSE s.url END, $5, '', \
                                CASE WHEN $6 = 'PENDING' AND s.id IS NULL THEN 'DEAD' ELSE $6 END, \
                                $7, $8, CASE WHEN $6 = 'PENDING' AND s.id IS NULL \
                                THEN 'subscription deleted' ELSE $9 END, $10, $10, $11, \
                                CASE WHEN $6 = 'DELIVERED' THEN $11 END \
                           FROM (SELECT 1) one LEFT JOIN webhook_subscriptions s ON s.id = $3 \
                          WHERE NOT $12 OR EXISTS (SELECT 1 FROM processor_transactions r \
                                WHERE r.kind = 'AUTHORIZATION' AND r.transaction_id = SUBSTR($1, 10) \
                                  AND r.webhook_sender = $13 AND r.created_at_ms = $10 \
                                  AND ',' || r.webhook_subscriptions || ',' \
                                      LIKE '%,' || CAST($3 AS TEXT) || ',%') \
                         ON CONFLICT (event_id, subscription_id) WHERE subscription_id IS NOT NULL \
                         DO NOTHING",
                    )
                    .bind(&o.event_id)
                    .bind(o.event_type)
                    .bind(o.subscription_id)
                    .bind(&o.url)
                    .bind(&[][..] as &[u8])
                    .bind(state)
                    .bind(attempts)
                    .bind(due)
                    .bind(error)
                    .bind(o.at_ms)
                    .bind(now_ms)
                    .bind(unless_uncommitted)
                    .bind(o.sender)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Rows pending since before `now_ms - give_up_ms` and not being sent become DEAD, and so
    /// do the pending rows of a subscription that no longer exists ("subscription deleted":
    /// on Postgres an event written while its subscription was being deleted may name it);
    /// returns them (for the log and the metric).
    pub async fn give_up_deliveries(
        &self,
        now_ms: i64,
        give_up_ms: i64,
    ) -> Result<Vec<GivenUp>, StoreError> {
        let cutoff = now_ms.saturating_sub(give_up_ms);
        let rows: Vec<(i64, String, String, i32, Option<String>)> = run_pool!(&self.db, p => {
            sqlx::query_as(
                "UPDATE outbox SET state = 'DEAD', leased_until_ms = NULL, updated_at_ms = $1, \
                 last_error = CASE WHEN pending_since_ms <= $2 THEN last_error \
                                   ELSE 'subscription deleted' END \
                 WHERE state = 'PENDING' AND (leased_until_ms IS NULL OR leased_until_ms <= $1) \
                 AND (pending_since_ms <= $2 OR (subscription_id IS NOT NULL AND NOT EXISTS \
                      (SELECT 1 FROM webhook_subscriptions s WHERE s.id = outbox.subscription_id))) \
                 RETURNING id, event_id, url, attempts, last_error",
            )
            .bind(now_ms)
            .bind(cutoff)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, event_id, url, attempts, last_error)| GivenUp {
                id,
                event_id,
                url,
                attempts: i64::from(attempts),
                last_error,
            })
            .collect())
    }

    /// One pass of the retention: walks the outbox in id order from where the last pass
    /// stopped, over at most `batch` rows, and deletes the subscribers' rows among them
    /// (all settled: DELIVERED or DEAD). The walk stops at the first row created at or
    /// after `cutoff_ms`, or at the first subscriber's row still PENDING (it settles within
    /// the give-up age and goes with a later pass). Callbacks (rows without a subscription)
    /// are passed over and kept: a duplicate InStore request sends its callback again,
    /// however old. One pass at a time across a fleet (the position's row is locked).
    pub async fn prune_deliveries(&self, cutoff_ms: i64, batch: i64) -> Result<Pruned, StoreError> {
        let mut tx = self.begin().await?;
        let position = for_update!(
            &tx,
            "SELECT next_id, pruned_before_ms FROM outbox_retention WHERE id = 1"
        );
        let (next, horizon): (i64, i64) = run!(&mut tx, c => {
            sqlx::query_as(position).fetch_one(&mut *c).await?
        });
        const WALK: &str = "SELECT id, created_at_ms, subscription_id, state FROM outbox \
                            WHERE id >= $1 ORDER BY id LIMIT $2";
        let stops = |(_, at, subscription, state): &(i64, i64, Option<i64>, String)| {
            *at >= cutoff_ms || (subscription.is_some() && state == PENDING)
        };
        // A look at the first row first: an idle or held pass reads one row, not a batch.
        let first: Option<(i64, i64, Option<i64>, String)> = run!(&mut tx, c => {
            sqlx::query_as(WALK).bind(next).bind(1_i64).fetch_optional(&mut *c).await?
        });
        if first.as_ref().is_none_or(stops) {
            return Ok(Pruned::default());
        }
        let rows: Vec<(i64, i64, Option<i64>, String)> = run!(&mut tx, c => {
            sqlx::query_as(WALK).bind(next).bind(batch).fetch_all(&mut *c).await?
        });
        let stop = rows.iter().position(stops);
        let walked = &rows[..stop.unwrap_or(rows.len())];
        let Some(last) = walked.last() else {
            return Ok(Pruned::default());
        };
        let walked_to = stop.map_or(last.0 + 1, |i| rows[i].0);
        let deleted: Vec<(i64, i64)> = run!(&mut tx, c => {
            sqlx::query_as(
                "DELETE FROM outbox WHERE id >= $1 AND id < $2 AND subscription_id IS NOT NULL \
                 AND state IN ('DELIVERED', 'DEAD') AND created_at_ms < $3 \
                 RETURNING id, created_at_ms",
            )
            .bind(next)
            .bind(walked_to)
            .bind(cutoff_ms)
            .fetch_all(&mut *c)
            .await?
        });
        // A subscriber's row walked as settled but not deleted was put back to PENDING
        // meanwhile (a redelivery, committed while the walk read): the next pass starts at
        // it, or it would be passed over and kept for good.
        let gone: std::collections::HashSet<i64> = deleted.iter().map(|(id, _)| *id).collect();
        let kept = walked
            .iter()
            .find(|(id, _, subscription, _)| subscription.is_some() && !gone.contains(id));
        let until = kept.map_or(walked_to, |(id, ..)| *id);
        // The audit's horizon: past the newest row deleted (never moved back).
        let horizon = deleted.iter().map(|(_, at)| at + 1).fold(horizon, i64::max);
        run!(&mut tx, c => {
            sqlx::query("UPDATE outbox_retention SET next_id = $1, pruned_before_ms = $2 WHERE id = 1")
                .bind(until)
                .bind(horizon)
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        Ok(Pruned {
            deleted: deleted.len() as u64,
            more: stop.is_none()
                && kept.is_none()
                && i64::try_from(rows.len()).unwrap_or(i64::MAX) >= batch,
        })
    }

    /// Puts a DEAD or DELIVERED row back to PENDING, due now, its give-up age restarted.
    /// One statement: a row the retention deletes meanwhile is not found, never "queued".
    pub async fn redeliver(&self, id: i64, now_ms: i64) -> Result<Redeliver, StoreError> {
        let queued = run_pool!(&self.db, p => {
            sqlx::query(
                "UPDATE outbox SET state = 'PENDING', attempts = 0, \
                 next_attempt_at_ms = $1, pending_since_ms = $1, leased_until_ms = NULL, \
                 delivered_at_ms = NULL, updated_at_ms = $1 WHERE id = $2 AND state <> 'PENDING'",
            )
            .bind(now_ms)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
        });
        if queued > 0 {
            return Ok(Redeliver::Queued);
        }
        let exists: Option<i64> = run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT id FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        Ok(match exists {
            None => Redeliver::NotFound,
            Some(_) => Redeliver::AlreadyPending,
        })
    }

    /// Deliveries in `state` (all when `None`), newest first, before row `before`.
    pub async fn deliveries(
        &self,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        self.deliveries_of(None, state, before, limit).await
    }

    /// [`Store::deliveries`] of one event type (all when `None`): e.g. the InStore
    /// callbacks ([`crate::instore::CALLBACK_EVENT_TYPE`]).
    pub async fn deliveries_of(
        &self,
        event_type: Option<&str>,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let sql = format!(
            "{DELIVERY_COLUMNS} WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR id < $2) \
             AND ($4 IS NULL OR event_type = $4) ORDER BY id DESC LIMIT $3"
        );
        let mut out = Vec::new();
        run_pool!(&self.db, p => {
            let rows = sqlx::query(&sql)
                .bind(state)
                .bind(before)
                .bind(limit)
                .bind(event_type)
                .fetch_all(p)
                .await?;
            for r in rows {
                out.push(delivery_of!(r));
            }
        });
        self.with_bodies(&mut out).await?;
        Ok(out)
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryView>, StoreError> {
        let sql = format!("{DELIVERY_COLUMNS} WHERE id = $1");
        let mut found = run_pool!(&self.db, p => {
            match sqlx::query(&sql).bind(id).fetch_optional(p).await? {
                Some(r) => Some(delivery_of!(r)),
                None => None,
            }
        });
        self.with_bodies(found.as_mut_slice()).await?;
        Ok(found)
    }

    /// Starts a sender for this instance's dispatcher, alive until `alive_until_ms`; returns
    /// its id. Its mark starts at the tracker's: before any record that will name it.
    pub async fn start_sender(
        &self,
        tracker: &Tracker,
        now_ms: i64,
        alive_until_ms: i64,
    ) -> Result<i64, StoreError> {
        let id: i64 = run_pool!(&self.db, p => {
            sqlx::query_scalar(
                "INSERT INTO outbox_senders (sent_below, alive_until_ms, started_at_ms) \
                 VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(tracker.mark())
            .bind(alive_until_ms)
            .bind(now_ms)
            .fetch_one(p)
            .await?
        });
        Ok(id)
    }

    /// Keeps sender `id`'s mark and life; `false`: it was taken over (it stopped in the eyes
    /// of another instance), and a new one must be started.
    pub async fn keep_sender(
        &self,
        id: i64,
        sent_below: i64,
        alive_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = run_pool!(&self.db, p => {
            sqlx::query(
                "UPDATE outbox_senders SET sent_below = $1, alive_until_ms = $2 WHERE id = $3",
            )
            .bind(sent_below)
            .bind(alive_until_ms)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Takes over the senders (but `except`, this instance's) not alive since before
    /// `dead_before_ms`: the rows still missing for their records from their marks on are
    /// written PENDING, due now, and the senders are gone. Returns each sender taken and the
    /// rows written.
    pub async fn take_over_senders(
        &self,
        dead_before_ms: i64,
        except: i64,
        now_ms: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let mut tx = self.begin().await?;
        let sql = skipping_locked(&tx, DEAD_SENDERS, "FOR UPDATE SKIP LOCKED");
        let dead: Vec<(i64, i64)> = run!(&mut tx, c => {
            sqlx::query_as(&sql)
                .persistent(false)
                .bind(dead_before_ms)
                .bind(except)
                .fetch_all(&mut *c)
                .await?
        });
        let mut taken = Vec::new();
        for (sender, sent_below) in dead {
            taken.push((
                sender,
                end_sender(&mut tx, sender, sent_below, now_ms).await?,
            ));
        }
        tx.commit().await?;
        Ok(taken)
    }

    /// Ends this instance's sender `id` as it stops, its mark at `sent_below`: the rows still
    /// missing for its records from there on (none when every delivery it was handed is
    /// settled) are written PENDING, due now, and the sender is gone, so that no instance
    /// waits out its life to take it over. Returns the rows written.
    pub async fn release_sender(
        &self,
        id: i64,
        sent_below: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = end_sender(&mut tx, id, sent_below, now_ms).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Deliveries still to make (the pending gauge): the PENDING rows (the caller adds the
    /// deliveries being sent from memory, [`Tracker::unsettled`]).
    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        Ok(run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'PENDING'")
                .fetch_one(p)
                .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_within_a_fifth() {
        let plain: Vec<i64> = (1..=11).map(|n| backoff_ms(n, 0)).collect();
        assert_eq!(
            plain,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
        assert_eq!(backoff_ms(1_000, 0), 300_000);
        assert_eq!(backoff_ms(1, 200), 1_200);
        assert_eq!(backoff_ms(1, -200), 800);
        assert_eq!(backoff_ms(3, 999), 4_800, "jitter is bounded to ±20 %");
        assert_eq!(backoff_ms(0, 0), 1_000);
    }

    #[test]
    fn event_types_match_by_name_or_all() {
        let a = Active {
            id: 1,
            url: String::new(),
            types: "hold.captured,account.funded".into(),
            secret: "".into(),
            held: false,
        };
        assert!(a.wants("hold.captured") && a.wants("account.funded"));
        assert!(!a.wants("hold.reserved") && !a.wants("hold"));
        let all = Active {
            types: "*".into(),
            ..a
        };
        assert!(all.wants("reconciliation.finished"));
        assert_eq!(types_of("*"), Vec::<String>::new());
        let h = headers_json(&[("x-a", "1"), ("content-type", "application/json")]);
        let mut back = headers_of(&h, "evt-1", "authorization.decided");
        back.sort();
        assert_eq!(
            back,
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-a".to_owned(), "1".to_owned())
            ]
        );
        // Nothing stored with it (even no content type) only for a "configured URL" row that
        // was given none: `{}`.
        assert_eq!(headers_of("{}", "evt-1", "authorization.decided"), []);
    }

    #[test]
    fn an_event_row_stores_no_headers_and_is_sent_with_its_ids_and_type() {
        let subs = [Active {
            id: 4,
            url: "http://127.0.0.1:9/hook".into(),
            types: "*".into(),
            secret: "s3".into(),
            held: false,
        }];
        let rows = Subscribers::of(&subs, "authorization.decided", || None)
            .rows(|| {
                vec![Event::new(
                    "evt-auth-t1".into(),
                    5,
                    &serde_json::json!({"a": 1}),
                )]
            })
            .expect("one subscriber wants it");
        assert_eq!(rows.event_ids, ["evt-auth-t1"]);
        assert_eq!(rows.subscription_ids, [4]);
        assert_eq!(
            rows.bodies,
            [br#"{"created_at_ms":5,"data":{"a":1},"id":"evt-auth-t1","type":"authorization.decided"}"#.to_vec()]
        );
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            headers_of("", "evt-auth-t1", "authorization.decided"),
            [
                pair("content-type", "application/json"),
                pair("x-event-id", "evt-auth-t1"),
                pair("x-event-type", "authorization.decided"),
                pair("x-request-id", "evt-auth-t1"),
            ]
        );
        assert!(
            rows.owing.is_empty() && rows.handed().is_empty(),
            "left to the claims"
        );
    }

    #[test]
    fn a_claimed_delivery_never_shows_its_secret() {
        let d = Claimed {
            id: 9,
            event_id: "evt-auth-t9".into(),
            url: "http://127.0.0.1:9/hook".into(),
            body: b"{}".to_vec(),
            headers: Vec::new(),
            signing_secret: Some("whsec_0123".into()),
            attempts: 1,
            created_at_ms: 5,
            leased_until_ms: 0,
            handed: None,
        };
        let shown = format!("{d:?}");
        assert!(
            shown.contains("evt-auth-t9") && shown.contains("2 bytes"),
            "{shown}"
        );
        assert!(!shown.contains("whsec_0123"), "{shown}");
    }

    /// An event the ledger rebuilds, at instant 7 (long before any floor).
    fn rebuilt(id: &str) -> Vec<Event> {
        let mut e = Event::new(id.into(), 7, &serde_json::json!({}));
        e.rebuilt = true;
        vec![e]
    }

    #[test]
    fn owed_deliveries_are_given_as_a_claim_returns_them_and_tracked_until_settled() {
        let subs = [
            Active {
                id: 4,
                url: "http://127.0.0.1:9/a".into(),
                types: "*".into(),
                secret: "s4".into(),
                held: false,
            },
            Active {
                id: 5,
                url: "http://127.0.0.1:9/b".into(),
                types: "hold.reserved".into(),
                secret: "s5".into(),
                held: false,
            },
            Active {
                id: 6,
                url: "http://127.0.0.1:9/c".into(),
                types: "authorization.decided".into(),
                secret: "s6".into(),
                held: false,
            },
        ];
        let tracker = Arc::new(Tracker::default());
        let rows_of = |id: &str| {
            Subscribers::of(&subs, "authorization.decided", || {
                Some(Handing::new(7, tracker.clone()))
            })
            .rows(|| rebuilt(id))
            .expect("two subscribers want it")
        };
        // Subscription 6 waits for a new URL to answer the challenge: its row is written
        // with the commit (PENDING, for the claims), never handed over.
        let mut waiting = subs.clone();
        waiting[2].held = true;
        let own = Arc::new(Tracker::default());
        let rows = Subscribers::of(&waiting, "authorization.decided", || {
            Some(Handing::new(7, own.clone()))
        })
        .rows(|| rebuilt("evt-auth-t1"))
        .expect("two subscribers want it");
        assert_eq!(rows.owed_by("evt-auth-t1"), (Some(7), Some("4")));
        assert_eq!(
            (rows.event_ids.as_slice(), rows.subscription_ids.as_slice()),
            (&["evt-auth-t1".to_owned()][..], &[6][..])
        );
        assert_eq!(rows.handed().len(), 1, "subscription 4's only");
        let rows = rows_of("evt-auth-t2");
        assert_eq!(rows.sender, Some(7));
        assert!(rows.event_ids.is_empty(), "no row written with the commit");
        assert_eq!(rows.owing, ["evt-auth-t2"]);
        assert_eq!(rows.owed_by("evt-auth-t2"), (Some(7), Some("4,6")));
        assert_eq!(rows.owed_by("evt-auth-t9"), (None, None));
        // Before its records are written, the writer holds the mark a slack before it began.
        assert!(tracker.mark() <= crate::now_ms() - MARK_SLACK_MS);
        // Other writers' deliveries: dropped uncommitted, forgotten; committed and given back
        // unsent (a full hand-over), to be written PENDING.
        drop(rows_of("evt-auth-t3").handed());
        assert!(tracker.take_dropped().is_empty(), "nothing owed");
        rows_of("evt-auth-t5")
            .handed()
            .into_iter()
            .for_each(Handed::unsent);
        let dropped = tracker.take_dropped();
        let got: Vec<_> = dropped
            .iter()
            .map(|o| (o.event_id.as_str(), o.subscription_id, o.sender, o.at_ms))
            .collect();
        assert_eq!(got, [("evt-auth-t5", 4, 7, 7), ("evt-auth-t5", 6, 7, 7)]);
        tracker.settle(&dropped);
        let handed: Vec<Claimed> = rows
            .handed()
            .into_iter()
            .map(Handed::into_claimed)
            .collect();
        assert_eq!(tracker.mark(), 7, "sent from memory: unsettled");
        assert_eq!(tracker.unsettled(), 2);
        let got: Vec<_> = handed
            .iter()
            .map(|d| {
                (
                    d.id,
                    d.url.as_str(),
                    d.signing_secret.as_deref(),
                    d.attempts,
                    d.created_at_ms,
                    d.handed.as_ref().map(|o| o.subscription_id),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "http://127.0.0.1:9/a", Some("s4"), 0, 7, Some(4)),
                (0, "http://127.0.0.1:9/c", Some("s6"), 0, 7, Some(6))
            ]
        );
        assert_eq!(
            handed[0].headers,
            headers_of("", "evt-auth-t2", "authorization.decided")
        );
        assert_eq!(
            handed[1].body,
            br#"{"created_at_ms":7,"data":{},"id":"evt-auth-t2","type":"authorization.decided"}"#
        );
        assert!(tracker.take_dropped().is_empty(), "taken by the dispatcher");
        // A write whose outcome is unknown retires the sender before its floor goes: the mark
        // is not read for it once, then again for the next sender.
        let unknown = rows_of("evt-auth-t4");
        assert_eq!(tracker.mark_unless_retired(), Some(7));
        unknown.uncertain();
        assert_eq!(tracker.mark_unless_retired(), None);
        assert_eq!(tracker.mark_unless_retired(), Some(7));
        let owed: Vec<Owed> = handed.iter().filter_map(|d| d.handed.clone()).collect();
        tracker.settle(&owed[1..]);
        assert_eq!(tracker.mark(), 7);
        let before = crate::now_ms();
        tracker.settle(&owed[..1]);
        let mark = tracker.mark();
        assert!(
            (before - MARK_SLACK_MS..=crate::now_ms() - MARK_SLACK_MS).contains(&mark),
            "a slack behind now: {mark}"
        );
    }

    #[test]
    fn a_sender_is_settled_once_no_writer_holds_it_and_every_delivery_is_written() {
        let subs = [Active {
            id: 4,
            url: "http://127.0.0.1:9/a".into(),
            types: "*".into(),
            secret: "s4".into(),
            held: false,
        }];
        let tracker = Arc::new(Tracker::default());
        assert!(tracker.all_settled());
        // A writer that has read the sender holds it, before it has any record.
        let subscribers = Subscribers::of(&subs, "authorization.decided", || {
            Some(Handing::new(7, tracker.clone()))
        });
        assert!(!tracker.all_settled(), "a writer that read the sender");
        let rows = subscribers
            .rows(|| rebuilt("evt-auth-t3"))
            .expect("a subscriber wants it");
        drop(subscribers);
        assert!(!tracker.all_settled(), "records not written yet");
        let handed = rows.handed();
        assert!(!tracker.all_settled(), "handed over, not sent");
        let sent: Vec<Claimed> = handed.into_iter().map(Handed::into_claimed).collect();
        assert!(!tracker.all_settled(), "being sent");
        tracker.settle(sent.iter().filter_map(|d| d.handed.as_ref()));
        assert!(tracker.all_settled());
        // A delivery given back unsent is unsettled until its row is written; one dropped
        // uncommitted is settled at once.
        let rows_of = |id: &str| {
            Subscribers::of(&subs, "authorization.decided", || {
                Some(Handing::new(7, tracker.clone()))
            })
            .rows(|| rebuilt(id))
            .expect("a subscriber wants it")
        };
        drop(rows_of("evt-auth-t5").handed());
        assert!(tracker.all_settled(), "rolled back: nothing owed");
        rows_of("evt-auth-t4")
            .handed()
            .into_iter()
            .for_each(Handed::unsent);
        assert!(!tracker.all_settled(), "given back, not yet written");
        let dropped = tracker.take_dropped();
        assert_eq!(dropped.len(), 1);
        assert!(!tracker.all_settled(), "being written");
        tracker.settle(&dropped);
        assert!(tracker.all_settled());
    }
}
