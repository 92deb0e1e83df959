//! Prefetch -> plan -> write: the pure middle step.
//!
//! The store reads everything the keys of a batch name into a [`Snapshot`] (before the plan,
//! in as few round trips as it can), [`plan_authorizations`] applies the requests one after
//! the other against it, and the store writes the rows of the returned [`Writes`] (after the
//! plan, in as few statements as it can). Every rule of what a request does lives here and
//! nowhere else: the store turns a plan into SQL and nothing more, the same way on every
//! backend and for a batch of one as for a batch of many.
//!
//! Each request sees the state the ones before it left: a duplicate inside the batch replays
//! the first answer, and two requests on one account see each other's balance.

mod authorization;
mod debit;
mod explanation;

pub use authorization::{
    AuthorizationRequest, AuthorizationResult, GiveBack, counted_after, give_back_on_row,
    plan_authorizations, release_counted, status_of, still_counted,
};
pub use debit::{Counting, DebitAsk, DebitPlan, count_forced, hold_give_back, plan_debit};
#[cfg(test)]
pub(crate) use explanation::assert_round_trips as assert_explanation_round_trips;
pub use explanation::render as render_explanation;

use crate::controls::{
    Channels, Controls, Counter, CounterKey, Interval, Owner, WindowKey, local_day,
};
use crate::decision::AccountState;
use crate::{CardState, CardStatus, Currency, MccSet, RequestKind};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A response kept for byte-exact replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What a request came to.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Processed now; `response` is committed with the movement.
    Fresh { response: StoredResponse, result: T },
    /// A duplicate: the stored answer, byte for byte.
    Replay(StoredResponse),
    /// The idempotency key was used before with a different body.
    KeyConflict,
    /// The processor transaction id was processed before under another key, asking for
    /// other money (amount, currency, direction, route, type, user or card): not a retry.
    TransactionConflict,
}

/// The card transaction a request describes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CardTransaction<'a> {
    pub transaction_id: &'a str,
    pub tx_type: &'a str,
    pub user_id: Option<&'a str>,
    pub card_id: Option<&'a str>,
    /// `amount.local.currency` as received.
    pub currency: &'a str,
    /// `amount.local.total` exactly as received.
    pub amount_text: &'a str,
    /// `None` when the amount was well-formed but beyond exact decimal range.
    pub amount: Option<Decimal>,
    pub mcc: Option<&'a str>,
    pub original_transaction_id: Option<&'a str>,
    /// The merchant's country as the country controls read it (`merchant.country`, else
    /// `transaction.country_code`).
    pub country: Option<&'a str>,
    /// The channels the request shows (`point_type`, `entry_mode`, `origin`, `type`).
    pub channels: Channels,
    /// Fields of the body that could not be read were left out (an adjustment's optional
    /// fields, which the protocol crate's lenient parse drops); the stored raw request
    /// keeps them.
    pub unread_fields: bool,
}

/// The rules of a card we hold a record for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// The user the card is registered to.
    pub user_id: String,
    pub status: CardStatus,
    pub blocked_mccs: MccSet,
    /// The card's spending controls (`None`: none set).
    pub controls: Option<Arc<Controls>>,
}

impl CardRecord {
    /// The record as the decision sees it for a request naming `user_id`.
    pub fn state_for(&self, user_id: Option<&str>) -> CardState {
        CardState {
            status: self.status,
            belongs_to_user: user_id == Some(self.user_id.as_str()),
            blocked_mccs: self.blocked_mccs.clone(),
        }
    }
}

/// Where an authorization takes the rules of the card it names.
#[derive(Debug, Clone, Copy, Default)]
pub enum CardLookup<'a> {
    /// Read with the rest of the snapshot.
    #[default]
    InTransaction,
    /// Known beforehand: we hold no record for this card.
    Absent,
    /// Known beforehand: this record.
    Known(&'a CardRecord),
}

impl CardLookup<'_> {
    /// The card state when it is known beforehand; `None` when it must be read.
    pub fn known(&self, user_id: Option<&str>) -> Option<Option<CardState>> {
        match self {
            CardLookup::InTransaction => None,
            CardLookup::Absent => Some(None),
            CardLookup::Known(r) => Some(Some(r.state_for(user_id))),
        }
    }
}

/// A finished request under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub request_hash: Vec<u8>,
    /// The route it was sent to (`None`: not read).
    pub endpoint: Option<String>,
    pub response: StoredResponse,
}

impl KeyRecord {
    /// Whether a request of `request_hash` to `endpoint` is the one recorded: a key is one
    /// logical request, so the same body sent to another route under it is another (409).
    pub fn same_request(&self, request_hash: &[u8], endpoint: &str) -> bool {
        self.request_hash[..] == request_hash[..]
            && self.endpoint.as_deref().is_none_or(|e| e == endpoint)
    }
}

/// What a recorded request asked for: the fields a processor's retry of the same
/// transaction never changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    pub endpoint: Option<String>,
    pub direction: Option<String>,
    pub tx_type: Option<String>,
    pub user_id: Option<String>,
    pub card_id: Option<String>,
    pub currency: Option<String>,
    pub amount_text: Option<String>,
}

impl Asked {
    /// Reads a recorded request from its stored columns, each fetched by name (`endpoint`,
    /// `direction`, `tx_type`, `user_id`, `card_id`, `currency`, `amount_text`).
    pub fn read<E>(
        mut column: impl FnMut(&'static str) -> Result<Option<String>, E>,
    ) -> Result<Asked, E> {
        Ok(Asked {
            endpoint: column("endpoint")?,
            direction: column("direction")?,
            tx_type: column("tx_type")?,
            user_id: column("user_id")?,
            card_id: column("card_id")?,
            currency: column("currency")?,
            amount_text: column("amount_text")?,
        })
    }

    /// What `t`, arriving on `endpoint` in `direction`, asks for.
    pub fn of(endpoint: &str, direction: Option<RequestKind>, t: &CardTransaction<'_>) -> Asked {
        Asked {
            endpoint: Some(endpoint.to_owned()),
            direction: direction_str(direction).map(str::to_owned),
            tx_type: Some(t.tx_type.to_owned()),
            user_id: t.user_id.map(str::to_owned),
            card_id: t.card_id.map(str::to_owned),
            currency: Some(t.currency.to_owned()),
            amount_text: Some(t.amount_text.to_owned()),
        }
    }

    /// Whether `t`, arriving on `endpoint` in `direction`, asks for the same money as the
    /// recorded request. Formatting may differ (`10.5` and `"10.50"` are one amount).
    pub fn same_as(
        &self,
        endpoint: &str,
        direction: Option<RequestKind>,
        t: &CardTransaction<'_>,
    ) -> bool {
        let amount_same = match (
            self.amount_text.as_deref().and_then(parse_decimal),
            t.amount,
        ) {
            (Some(a), Some(b)) => a == b,
            _ => self.amount_text.as_deref() == Some(t.amount_text),
        };
        self.endpoint.as_deref() == Some(endpoint)
            && self.direction.as_deref() == direction_str(direction)
            && self.tx_type.as_deref() == Some(t.tx_type)
            && self.user_id.as_deref() == t.user_id
            && self.card_id.as_deref() == t.card_id
            && self
                .currency
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(t.currency))
            && amount_same
    }
}

/// A stored amount text as an exact decimal (plain or exponent notation), as the intake read it.
fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim_matches('"');
    text.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(text).ok())
}

/// The stored word for a direction.
pub fn direction_str(kind: Option<RequestKind>) -> Option<&'static str> {
    match kind {
        Some(RequestKind::Debit) => Some("DEBIT"),
        Some(RequestKind::Credit) => Some("CREDIT"),
        Some(RequestKind::BalanceInquiry) | None => None,
    }
}

/// A processor transaction recorded before (answered, or first seen through a verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTransaction {
    /// The recorded amount in signed minor units (what a verdict-first record booked).
    pub amount_minor: Option<i64>,
    /// The answer given, when an authorization was answered.
    pub response: Option<StoredResponse>,
    /// The processor's verdict (`APPROVED` / `REJECTED`), when one came.
    pub verdict: Option<String>,
    pub asked: Asked,
}

/// A cardholder account as read (and, on the locking paths, locked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub currency: Currency,
    pub balance: i64,
    /// Sum of the account's RESERVED holds.
    pub held: i64,
    pub version: i64,
    pub overdraft_limit: i64,
    pub per_transaction_limit: Option<i64>,
    pub daily_limit: Option<i64>,
    pub daily_spent_day: i64,
    pub daily_spent: i64,
    pub blocked_mccs: MccSet,
    /// The account's spending controls (`None`: none set).
    pub controls: Option<Arc<Controls>>,
    /// The account's control counters as kept on its row ([`crate::controls::encode_counters`]): written
    /// with its balance, so an approval's counting costs no row of its own.
    pub counters: String,
}

impl Account {
    /// What the daily counter holds on `today` (days since the epoch): the counter of an
    /// earlier day counts as zero; a later day's is the one a request of `today` counts in
    /// ([`Account::spend_day`]).
    pub fn daily_spent_on(&self, today: i64) -> i64 {
        if self.daily_spent_day >= today {
            self.daily_spent
        } else {
            0
        }
    }

    /// The day a debit decided on `today` counts in: `today`, or the counter's own day when
    /// it is already a later one (a request stamped just before midnight that waited for
    /// the row after another counted in the new day: it counts there, rather than wiping
    /// the new day's counter with its own). [`Account::daily_spent_on`] reads it so.
    pub fn spend_day(&self, today: i64) -> i64 {
        self.daily_spent_day.max(today)
    }

    /// The daily counter (day, amount) once `back` of `today`'s spending comes back (never
    /// below zero; another day's counter is left alone); `None`: nothing changes.
    pub fn given_back(&self, today: i64, back: i64) -> Option<(i64, i64)> {
        let spent =
            crate::holds::give_back_counter(self.daily_spent_day, self.daily_spent, today, back);
        (spent != self.daily_spent).then_some((self.daily_spent_day, spent))
    }

    /// The account as the decision sees it on `today` (days since the epoch), its daily
    /// counter as [`Account::daily_spent_on`] reads it.
    pub fn state(&self, today: i64) -> AccountState {
        AccountState {
            currency: self.currency,
            balance: self.balance,
            held: self.held,
            overdraft_limit: self.overdraft_limit,
            per_transaction_limit: self.per_transaction_limit,
            daily_limit: self.daily_limit,
            daily_spent: self.daily_spent_on(today),
            blocked_mccs: self.blocked_mccs.clone(),
        }
    }
}

/// Everything the keys of a batch name, as read before planning.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Finished requests by idempotency key (the scope of the requests planned).
    pub keys: HashMap<String, KeyRecord>,
    /// Recorded processor transactions by transaction id.
    pub transactions: HashMap<String, RecordedTransaction>,
    /// Cardholder accounts by (user, currency).
    pub accounts: HashMap<(String, Currency), Account>,
    /// The cards read (those the requests did not know beforehand); a card read and not
    /// here has no record.
    pub cards: HashMap<String, CardRecord>,
    /// The processor clearing account of each currency the requests name.
    pub clearing: HashMap<Currency, i64>,
    /// Ids reserved for new movements and postings, used in ascending order.
    pub movement_ids: Vec<i64>,
    pub posting_ids: Vec<i64>,
    /// The control counters of the batch's cards in the windows holding its instants
    /// ([`counter_windows`]), by owner ([`Owner`] and the card id); a counter not here has
    /// counted nothing. An account's counters come with the account ([`Account::counters`]).
    pub counters: HashMap<(Owner, String), HashMap<CounterKey, Counter>>,
    /// The zone of the controls' calendar windows; `None`: UTC.
    pub time_zone: Option<TimeZone>,
}

/// The id of an account's control counters: `user/currency`.
pub fn account_owner(user_id: &str, currency: Currency) -> String {
    format!("{user_id}/{currency}")
}

/// The stored word for a counter owner.
pub fn owner_kind(owner: Owner) -> &'static str {
    match owner {
        Owner::Account => "ACCOUNT",
        Owner::Card => "CARD",
    }
}

/// The window keys (`daily:2026-12-03`, `weekly:2026-11-30`, `monthly:2026-12`,
/// `yearly:2026`, `all_time`) of the windows holding `now_ms` in `tz`: every counter a
/// request at that instant may read is in one of them, whatever the controls say, so the
/// store reads them with the rest of the snapshot without reading the controls first.
pub fn counter_windows(now_ms: i64, tz: &TimeZone) -> Vec<String> {
    window_keys(now_ms, tz).map(|k| k.to_string()).collect()
}

/// How long an account row keeps a window after it is over: a writer stamped just before
/// midnight that waited for the row (its lock, a retry) still reads and counts in its own
/// day, which a writer stamped after midnight must not have dropped meanwhile.
pub const WINDOW_GRACE_MS: i64 = 3_600_000;

/// The windows an account row keeps when requests at `times` write it: those of each
/// instant and of [`WINDOW_GRACE_MS`] before it, and any later one ([`window_kept`]).
pub fn windows_kept_at(times: impl IntoIterator<Item = i64>, tz: &TimeZone) -> HashSet<WindowKey> {
    windows_of(
        times
            .into_iter()
            .flat_map(|t| [t.saturating_sub(WINDOW_GRACE_MS), t]),
        tz,
    )
}

/// Whether an account row still keeps the counter of window `k` when it is written with
/// the windows `current` ([`windows_kept_at`]): a window is dropped once it is over, i.e.
/// when it starts before the earliest of those windows of its interval. A later window is
/// kept: a writer stamped before midnight must not drop the new day another writer already
/// counted in.
pub fn window_kept(current: &HashSet<WindowKey>, k: &WindowKey) -> bool {
    current
        .iter()
        .any(|c| c.interval() == k.interval() && k >= c)
}

/// The window keys of every instant of `times` in `tz`: each instant's local day, and each
/// day's windows once. (Grouping the instants by the hour, then by the quarter hour, of UTC
/// missed the new day of a request past the midnight of a zone whose offset is no whole
/// number of those: India's half hour, or a POSIX rule such as `<+0020>-0:20`.)
pub fn windows_of(times: impl IntoIterator<Item = i64>, tz: &TimeZone) -> HashSet<WindowKey> {
    let days: HashSet<jiff::civil::Date> = times
        .into_iter()
        .map(|t| {
            local_day(
                Timestamp::from_millisecond(t).unwrap_or(Timestamp::UNIX_EPOCH),
                tz,
            )
        })
        .collect();
    days.into_iter()
        .flat_map(|day| Interval::ALL.iter().filter_map(move |i| i.key_of_day(day)))
        .collect()
}

/// [`counter_windows`], as keys.
pub fn window_keys(now_ms: i64, tz: &TimeZone) -> impl Iterator<Item = WindowKey> {
    let at = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let day = local_day(at, tz);
    Interval::ALL.iter().filter_map(move |i| i.key_of_day(day))
}

/// Days since the unix epoch (UTC) for a millisecond timestamp: the daily-limit window.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// A movement to insert; `request` is the index of the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow {
    pub id: i64,
    pub request: usize,
    pub currency: Currency,
}

/// A posting to insert; balance and version only on cardholder accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingRow {
    pub id: i64,
    pub movement_id: i64,
    pub account_id: i64,
    pub amount: i64,
    pub balance_after: Option<i64>,
    pub version: Option<i64>,
}

/// A cardholder account's state after the batch, and as it was read: a writer that holds
/// no lock writes only if the row still is as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWrite {
    pub id: i64,
    pub balance: i64,
    pub version: i64,
    pub daily_spent_day: i64,
    pub daily_spent: i64,
    pub read_version: i64,
    pub read_balance: i64,
    pub read_held: i64,
    /// The legacy daily counter as read (its day and amount): a hold's reservation or
    /// release changes it without the version.
    pub read_daily_day: i64,
    pub read_daily_spent: i64,
    /// The account's control counters after the batch ([`crate::controls::encode_counters`];
    /// without the windows that are over: [`window_kept`]), and as read.
    pub counters: String,
    pub read_counters: String,
}

/// How a transaction record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWrite {
    /// A new record.
    Insert,
    /// The record a verdict left before the authorization came: it now also holds what
    /// the authorization asked and was answered.
    Answer,
}

/// A processor transaction record to write for `request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub request: usize,
    pub write: RecordWrite,
    pub amount_minor: Option<i64>,
    pub status: &'static str,
    pub status_detail: &'static str,
    pub movement_id: Option<i64>,
    pub response: StoredResponse,
    /// The checks the decision ran, in order, with their inputs, in the stored form that
    /// [`render_explanation`] renders.
    pub explanation: Option<String>,
    /// What an approval added to the control counters (for giving it back), in the
    /// stored form that [`release_counted`] reads.
    pub counted: Option<String>,
}

/// A change to one control counter, added to what the row holds (never below zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterWrite {
    pub owner: Owner,
    /// `user/currency` for an account, the card id for a card.
    pub owner_id: String,
    pub key: CounterKey,
    pub amount: i64,
    pub count: i64,
}

impl CounterWrite {
    /// The stored window key and category filter (`''`: every category).
    pub fn columns(&self) -> (String, String) {
        (
            self.key.window.to_string(),
            self.key
                .categories
                .as_ref()
                .map(|c| c.to_strings().join(","))
                .unwrap_or_default(),
        )
    }
}

/// An idempotency record to insert under `request`'s key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub request: usize,
    pub response: StoredResponse,
}

/// The rows a plan writes, in the order they are to be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    pub movements: Vec<MovementRow>,
    pub postings: Vec<PostingRow>,
    /// One per account touched, in the order first touched.
    pub accounts: Vec<AccountWrite>,
    pub records: Vec<RecordRow>,
    pub keys: Vec<KeyRow>,
    /// One per (card, counter) changed, summed over the batch (an account's counters are
    /// written with the account: [`AccountWrite::counters`]).
    pub counters: Vec<CounterWrite>,
}

impl Writes {
    /// Whether the plan writes nothing (replays and conflicts only).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.keys.is_empty()
    }

    /// Whether the plan decides anything new (not only replays under new keys): such a
    /// plan commits only within its requesters' deadlines.
    pub fn decides(&self) -> bool {
        self.records.iter().any(|r| r.write == RecordWrite::Insert)
    }
}

/// The outcomes, one per request in order, and the rows to write.
#[derive(Debug)]
pub struct Plan<T> {
    pub outcomes: Vec<Outcome<T>>,
    pub writes: Writes,
}

/// A snapshot that cannot carry the plan: the store read too little.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no processor clearing account read for {0}")]
    NoClearingAccount(Currency),
    #[error("fewer ids reserved than movements or postings planned")]
    NotEnoughIds,
    #[error("balance out of range")]
    OutOfRange,
}

#[cfg(test)]
mod tests;
