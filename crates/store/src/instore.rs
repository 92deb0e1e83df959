//! The InStore stored-value extension: SQL only. Every enveloped request is a request of
//! the one writer ([`crate::Work::Instore`]), written in its batch's transaction beside
//! the other kinds: replay or refuse a known `requestId`, prefetch and lock the cards and
//! accounts it names, hand that snapshot to the request's pure planner, then write what it
//! planned (a created card, the movement legs through `ledger::instore`, PIN counters,
//! the request record and the callback's outbox row). Only after the batch's commit may
//! the route acknowledge.

use crate::outbox::{Delivery, enqueue};
use crate::poa::{PoaCall, PoaSnapshot, PoaWrite};
use crate::processor::{
    Holder, LockedAccount, MovementMeta, Step, account_by_id, book, in_own_tx, lock_account_by_id,
};
use crate::{Store, StoreError, Tx, run, run_pool};
use ledger::instore::{SvAccount, SvKind, plan_stored_value};
use ledger::{Currency, SystemAccount};
use sqlx::Row;
use std::collections::BTreeMap;

/// The outbox event type of an InStore callback.
pub const CALLBACK_EVENT_TYPE: &str = "instore.callback";

/// A stored-value number as the decision sees it: the card, its account (locked for the
/// rest of the transaction) and its secrets' hashes.
#[derive(Debug, Clone)]
pub struct SvCardRow {
    pub number: String,
    pub card_id: String,
    pub user_id: String,
    pub currency: Currency,
    pub card_type: String,
    pub tenants: Vec<String>,
    /// Linked by the admin API to an existing account (its limits apply to Redeem).
    pub linked: bool,
    /// The card's status (`ACTIVE` is InStore's `Active`).
    pub status: String,
    pub pin_hash: Option<Vec<u8>>,
    pub cvc_hash: Option<Vec<u8>>,
    pub pin_tries: i64,
    pub account: LockedAccount,
}

impl SvCardRow {
    pub fn bound_to(&self, tenant_id: &str) -> bool {
        self.tenants.iter().any(|t| t == tenant_id)
    }
}

/// One leg of a booked stored-value operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvMovementRow {
    pub external_transaction_id: String,
    pub external_payment_id: String,
    /// `SV_LOAD`, `SV_REDEEM` or `SV_CANCEL`.
    pub kind: String,
    pub tenant_id: String,
    pub request_id: String,
    pub number: String,
    pub movement_id: i64,
    pub currency: String,
    /// Signed from the card's side.
    pub amount_minor: i64,
    /// posted − held after.
    pub balance_after_minor: i64,
    pub location_id: String,
    pub workstation_id: Option<String>,
    pub session_id: Option<String>,
    pub reference: Option<String>,
    pub flags: String,
    pub created_at_ms: i64,
}

/// An operation named by `external_payment_id`: its legs and its reversal's, if any.
#[derive(Debug, Clone, Default)]
pub struct SvOperationRows {
    pub legs: Vec<SvMovementRow>,
    pub reversal: Vec<SvMovementRow>,
}

/// What one request's decision may read.
#[derive(Debug, Clone, Default)]
pub struct SvSnapshot {
    /// Every number the request or its operation names that we hold.
    pub cards: BTreeMap<String, SvCardRow>,
    /// The operation a Cancel names (`None`: no such id).
    pub operation: Option<SvOperationRows>,
    /// Whether a Load or Redeem with the same card, session, reference, action and amount
    /// was booked before (section 6.2, `POSSIBLE_DUPLICATE`).
    pub possible_duplicate: bool,
    /// What a pay-on-account request names.
    pub poa: PoaSnapshot,
}

/// Transport facts of one enveloped request, owned: the request waits for the writer's
/// batch on another task.
#[derive(Debug, Clone)]
pub struct InstoreCall {
    pub tenant_id: String,
    pub request_id: String,
    /// `Create`, `Lookup`, `Load`, `Redeem` or `Cancel`.
    pub action: &'static str,
    /// SHA-256 of `JS(payload)`, hex (its PINs and CVCs keyed first).
    pub request_hash: String,
    /// The hash of a payload with a PIN or CVC as versions before the keying took it: a
    /// request recorded by one of them and sent again replays rather than conflicts.
    pub request_hash_unkeyed: Option<String>,
    /// Where the callback goes (already within the tenant's allow-list).
    pub callback_url: String,
    pub correlation_id: Option<String>,
    /// Numbers to prefetch and lock.
    pub numbers: Vec<String>,
    /// The operation a Cancel names.
    pub operation: Option<String>,
    /// For `POSSIBLE_DUPLICATE`: (number, session_id, reference, kind, signed amount).
    pub duplicate_probe: Option<(String, String, String, &'static str, i64)>,
    /// Where the request comes from (recorded on a created card).
    pub location_id: String,
    pub workstation_id: Option<String>,
    pub now_ms: i64,
    /// A pay-on-account request: what it names (`None`: stored value).
    pub poa: Option<PoaCall>,
    /// The requester's acknowledgement deadline (`instore.ack_deadline_ms`); `None`: none.
    pub deadline: Option<crate::CommitDeadline>,
}

/// The pure decision of one enveloped request: from the snapshot its call names to every
/// byte it answers and sends and every row to write. The writer may ask it more than once
/// (a batch that lost a race runs again), always with a fresh snapshot.
pub trait SvPlanner: Send + Sync {
    fn plan(&self, snap: &SvSnapshot) -> SvPlan;
}

impl<F> SvPlanner for F
where
    F: Fn(&SvSnapshot) -> SvPlan + Send + Sync,
{
    fn plan(&self, snap: &SvSnapshot) -> SvPlan {
        self(snap)
    }
}

/// One enveloped request as the writer takes it.
#[derive(Clone, Copy)]
pub struct InstoreOp<'a> {
    pub call: &'a InstoreCall,
    pub planner: &'a dyn SvPlanner,
}

/// A card to create with the request (`storedvaluecard`).
#[derive(Debug, Clone)]
pub struct NewSvCard {
    pub number: String,
    pub card_id: String,
    pub currency: Currency,
    pub card_type: String,
    pub active: bool,
    pub cvc_hash: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub customer_id: Option<String>,
}

/// One leg to book.
#[derive(Debug, Clone)]
pub struct SvLegPlan {
    pub number: String,
    /// Signed minor units on the card's account.
    pub delta: i64,
    pub external_transaction_id: String,
    /// posted − held after, as the decision computed it (and told in the callback): the
    /// write refuses to commit when the ledger's plan disagrees.
    pub available_after: i64,
}

/// A movement to book: one leg per card used, under one operation id.
#[derive(Debug, Clone)]
pub struct SvMovementPlan {
    pub kind: SvKind,
    pub currency: Currency,
    pub external_payment_id: String,
    /// A Cancel: the operation it reverses.
    pub reverses_payment_id: Option<String>,
    pub legs: Vec<SvLegPlan>,
    pub location_id: String,
    pub workstation_id: Option<String>,
    pub session_id: Option<String>,
    pub reference: Option<String>,
    pub flags: String,
}

/// A change to a card's PIN counter (and status) decided by a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvPinUpdate {
    pub number: String,
    pub pin_tries: i64,
    pub block: bool,
}

/// What the decision planned for one request: every byte it will answer and send, and
/// every row to write.
#[derive(Debug, Clone)]
pub struct SvPlan {
    pub ack: Vec<u8>,
    pub callback: Vec<u8>,
    /// Fixed headers of every delivery attempt (the signature over `callback`, the
    /// correlation id).
    pub callback_headers: Vec<(String, String)>,
    pub new_card: Option<NewSvCard>,
    pub movement: Option<SvMovementPlan>,
    pub pin_updates: Vec<SvPinUpdate>,
    /// A pay-on-account request's write.
    pub poa: Option<PoaWrite>,
}

/// What one enveloped request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstoreOutcome {
    /// Committed now: acknowledge with these bytes.
    Done { ack: Vec<u8> },
    /// A duplicate of a finished request: the same bytes, its callback queued again.
    Replay { ack: Vec<u8> },
    /// The `requestId` was used with another action or payload.
    Conflict,
}

/// The outbox event id of a request's callback: stable, one per (tenant, requestId).
pub fn callback_event_id(tenant_id: &str, request_id: &str) -> String {
    format!("instore:{tenant_id}:{request_id}")
}

/// A locked account as [`plan_stored_value`] books on it.
pub(crate) fn sv_account(a: &LockedAccount) -> SvAccount {
    SvAccount {
        id: a.id,
        balance: a.balance,
        held: a.held,
        overdraft_limit: a.overdraft_limit,
    }
}

/// The account's daily spending (day, amount) once a debit of `delta` (negative) is booked
/// on `today`: the counter of an earlier day counts as zero ([`LockedAccount::spend_day`]).
pub(crate) fn daily_after(a: &LockedAccount, today: i64, delta: i64) -> (i64, i64) {
    (
        a.spend_day(today),
        a.daily_spent_on(today)
            .saturating_add(delta.saturating_neg()),
    )
}

/// What a Cancel's leg of `credit` on card `number` gives back to the daily spending: the
/// amount of the cancelled operation's Redeem leg on that card, when it was booked on the
/// UTC day of `now_ms` (a later day's counter never counted it).
fn redeemed_today(
    operation: Option<&SvOperationRows>,
    number: &str,
    now_ms: i64,
    credit: i64,
) -> i64 {
    operation
        .into_iter()
        .flat_map(|o| &o.legs)
        .filter(|r| r.number == number && r.kind == SvKind::Redeem.movement_kind())
        .map(|r| {
            let redeemed = r.amount_minor.saturating_neg().clamp(0, credit.max(0));
            ledger::holds::daily_give_back(r.created_at_ms, now_ms, redeemed)
        })
        .sum()
}

const CARD_COLUMNS: &str = "SELECT s.number, s.card_id, s.user_id, s.currency, s.card_type, \
     s.tenants, s.linked, s.pin_hash, s.cvc_hash, s.pin_tries, c.status, a.id \
     FROM instore_cards s JOIN cards c ON c.card_id = s.card_id \
     JOIN accounts a ON a.kind = 'USER' AND a.user_id = s.user_id AND a.currency = s.currency";

const MOVEMENT_COLUMNS: &str = "SELECT external_transaction_id, external_payment_id, kind, \
     tenant_id, request_id, number, movement_id, currency, amount_minor, balance_after_minor, \
     location_id, workstation_id, session_id, reference, flags, created_at_ms \
     FROM instore_movements";

macro_rules! movement_of {
    ($r:expr) => {
        SvMovementRow {
            external_transaction_id: $r.try_get(0)?,
            external_payment_id: $r.try_get(1)?,
            kind: $r.try_get(2)?,
            tenant_id: $r.try_get(3)?,
            request_id: $r.try_get(4)?,
            number: $r.try_get(5)?,
            movement_id: $r.try_get(6)?,
            currency: $r.try_get(7)?,
            amount_minor: $r.try_get(8)?,
            balance_after_minor: $r.try_get(9)?,
            location_id: $r.try_get(10)?,
            workstation_id: $r.try_get(11)?,
            session_id: $r.try_get(12)?,
            reference: $r.try_get(13)?,
            flags: $r.try_get(14)?,
            created_at_ms: $r.try_get(15)?,
        }
    };
}

/// A card row without its account (read unlocked), and its account id.
struct CardHead {
    number: String,
    card_id: String,
    user_id: String,
    currency: Currency,
    card_type: String,
    tenants: Vec<String>,
    linked: bool,
    pin_hash: Option<Vec<u8>>,
    cvc_hash: Option<Vec<u8>>,
    pin_tries: i64,
    status: String,
    account_id: i64,
}

macro_rules! card_head_of {
    ($r:expr) => {{
        let code: String = $r.try_get(3)?;
        CardHead {
            number: $r.try_get(0)?,
            card_id: $r.try_get(1)?,
            user_id: $r.try_get(2)?,
            currency: Currency::parse_any(&code).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            card_type: $r.try_get(4)?,
            tenants: split_tenants(&$r.try_get::<String, _>(5)?),
            linked: $r.try_get(6)?,
            pin_hash: $r.try_get(7)?,
            cvc_hash: $r.try_get(8)?,
            pin_tries: i64::from($r.try_get::<i32, _>(9)?),
            status: $r.try_get(10)?,
            account_id: $r.try_get(11)?,
        }
    }};
}

impl CardHead {
    fn with_account(self, account: LockedAccount) -> SvCardRow {
        SvCardRow {
            number: self.number,
            card_id: self.card_id,
            user_id: self.user_id,
            currency: self.currency,
            card_type: self.card_type,
            tenants: self.tenants,
            linked: self.linked,
            status: self.status,
            pin_hash: self.pin_hash,
            cvc_hash: self.cvc_hash,
            pin_tries: self.pin_tries,
            account,
        }
    }
}

fn split_tenants(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn card_head(tx: &mut Tx, number: &str) -> Result<Option<CardHead>, sqlx::Error> {
    let sql = format!("{CARD_COLUMNS} WHERE s.number = $1");
    run!(tx, c => {
        match sqlx::query(&sql).bind(number).fetch_optional(c).await? {
            Some(r) => Ok(Some(card_head_of!(r))),
            None => Ok(None),
        }
    })
}

async fn operation_rows(
    tx: &mut Tx,
    external_payment_id: &str,
) -> Result<Vec<SvMovementRow>, sqlx::Error> {
    let sql = format!(
        "{MOVEMENT_COLUMNS} WHERE external_payment_id = $1 ORDER BY movement_id, external_transaction_id"
    );
    run!(tx, c => {
        let mut out = Vec::new();
        for r in sqlx::query(&sql).bind(external_payment_id).fetch_all(c).await? {
            out.push(movement_of!(r));
        }
        Ok(out)
    })
}

/// The recorded request under (tenant, requestId): action, hash, ack. A log read's id
/// ([`Store::instore_read_key`]) is there as the action `Log`: the namespace is one (§1.5).
async fn find_request(
    tx: &mut Tx,
    tenant_id: &str,
    request_id: &str,
) -> Result<Option<(String, String, Vec<u8>)>, sqlx::Error> {
    run!(tx, c => {
        sqlx::query_as(
            "SELECT action, request_hash, ack_body FROM instore_requests \
             WHERE tenant_id = $1 AND request_id = $2 \
             UNION ALL SELECT 'Log', '', response_body FROM idempotency_keys \
             WHERE scope = $3 AND key = $2 AND endpoint = 'storedvaluelog'",
        )
        .bind(tenant_id)
        .bind(request_id)
        .bind(read_scope(tenant_id))
        .fetch_optional(c)
        .await
    })
}

/// A duplicate's callback goes out once more, to the duplicate's (allowed) URL: a
/// delivered or dead row is pending again with its attempts reset; a pending one keeps its
/// schedule. The bytes never change. A row being sent to another URL loses its lease: that
/// send's acknowledgement no longer settles it, and it goes to the new URL too.
async fn requeue_callback(
    tx: &mut Tx,
    event_id: &str,
    url: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    run!(tx, c => {
        sqlx::query(
            "UPDATE outbox SET url = $1, \
             attempts = CASE WHEN state = 'PENDING' THEN attempts ELSE 0 END, \
             next_attempt_at_ms = CASE WHEN state = 'PENDING' THEN next_attempt_at_ms ELSE $2 END, \
             pending_since_ms = CASE WHEN state = 'PENDING' THEN pending_since_ms ELSE $2 END, \
             leased_until_ms = CASE WHEN url = $1 THEN leased_until_ms ELSE NULL END, \
             delivered_at_ms = NULL, state = 'PENDING', updated_at_ms = $2 \
             WHERE event_id = $3 AND subscription_id IS NULL",
        )
        .bind(url)
        .bind(now_ms)
        .bind(event_id)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Replay, conflict, or nothing recorded yet.
pub(crate) async fn recorded(
    tx: &mut Tx,
    call: &InstoreCall,
) -> Result<Option<InstoreOutcome>, Step> {
    let Some((action, hash, ack)) = find_request(tx, &call.tenant_id, &call.request_id).await?
    else {
        return Ok(None);
    };
    let same = hash == call.request_hash || call.request_hash_unkeyed.as_ref() == Some(&hash);
    if action != call.action || !same {
        return Ok(Some(InstoreOutcome::Conflict));
    }
    let event_id = callback_event_id(&call.tenant_id, &call.request_id);
    requeue_callback(tx, &event_id, &call.callback_url, call.now_ms).await?;
    Ok(Some(InstoreOutcome::Replay { ack }))
}

/// Reads and locks what `call` names: its operation's legs, then every card of the request
/// and the operation, their accounts locked in id order (no two requests wait on each
/// other in a cycle).
async fn snapshot(tx: &mut Tx, call: &InstoreCall) -> Result<SvSnapshot, Step> {
    let mut snap = SvSnapshot::default();
    let (operation, numbers) = operation_and_numbers(tx, call).await?;
    let mut heads = card_heads(tx, &numbers).await?;
    let mut ids: Vec<i64> = heads.iter().map(|h| h.account_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut accounts = BTreeMap::new();
    for id in ids {
        accounts.insert(id, lock_account_by_id(tx, id).await?);
    }
    snap.operation = operation;
    // On Postgres, read again under the accounts' locks what the decision reads: what
    // another instance committed while this one waited (a Cancel of the same operation, a
    // PIN try counted, a card blocked) is seen, not decided over. A card that moved to an
    // account not locked here (a re-link meanwhile) runs the request again. SQLite has one
    // writer: nothing moved.
    if matches!(tx, Tx::Pg(_)) {
        let (operation, numbers) = operation_and_numbers(tx, call).await?;
        heads = card_heads(tx, &numbers).await?;
        if heads.iter().any(|h| !accounts.contains_key(&h.account_id)) {
            return Err(Step::Retry);
        }
        snap.operation = operation;
    }
    for h in heads {
        let account = accounts
            .get(&h.account_id)
            .cloned()
            .ok_or_else(|| StoreError::Invalid("account vanished".into()))?;
        snap.cards.insert(h.number.clone(), h.with_account(account));
    }
    if let Some((number, session, reference, kind, amount)) = &call.duplicate_probe {
        let n: i64 = run!(tx, c => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM instore_movements WHERE number = $1 AND session_id = $2 \
                 AND reference = $3 AND kind = $4 AND amount_minor = $5",
            )
            .bind(number)
            .bind(session)
            .bind(reference)
            .bind(*kind)
            .bind(*amount)
            .fetch_one(c)
            .await?
        });
        snap.possible_duplicate = n > 0;
    }
    if let Some(poa) = &call.poa {
        snap.poa = crate::poa::prefetch(tx, call, poa).await?;
    }
    Ok(snap)
}

/// The operation `call` names (its legs and its reversal's), and every number the request
/// and the operation name, sorted.
async fn operation_and_numbers(
    tx: &mut Tx,
    call: &InstoreCall,
) -> Result<(Option<SvOperationRows>, Vec<String>), Step> {
    let mut numbers = call.numbers.clone();
    let mut operation = None;
    if let Some(id) = call.operation.as_deref() {
        let rows = operation_rows(tx, id).await?;
        if !rows.is_empty() {
            let (reversal, legs): (Vec<_>, Vec<_>) = rows
                .into_iter()
                .partition(|r| r.kind == ledger::instore::KIND_SV_CANCEL);
            numbers.extend(legs.iter().map(|l| l.number.clone()));
            operation = Some(SvOperationRows { legs, reversal });
        }
    }
    numbers.sort();
    numbers.dedup();
    Ok((operation, numbers))
}

/// The cards of `numbers` that we hold.
async fn card_heads(tx: &mut Tx, numbers: &[String]) -> Result<Vec<CardHead>, Step> {
    let mut heads = Vec::new();
    for n in numbers {
        if let Some(h) = card_head(tx, n).await? {
            heads.push(h);
        }
    }
    Ok(heads)
}

/// Creates the card of `storedvaluecard`: its own cardholder account (user = card id,
/// overdraft 0) and card record, bound to the creating tenant. Returns the account.
async fn create_card(
    tx: &mut Tx,
    card: &NewSvCard,
    call: &InstoreCall,
) -> Result<LockedAccount, Step> {
    let now = call.now_ms;
    let status = if card.active { "ACTIVE" } else { "BLOCKED" };
    let id: i64 = run!(tx, c => {
        sqlx::query(
            "INSERT INTO cards (card_id, user_id, status, created_at_ms, updated_at_ms) \
             VALUES ($1, $1, $2, $3, $3)",
        )
        .bind(&card.card_id)
        .bind(status)
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO instore_cards (number, card_id, user_id, currency, card_type, tenants, \
             linked, pin_hash, cvc_hash, pin_tries, issuer, customer_id, location_id, \
             workstation_id, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $2, $3, $4, $5, FALSE, NULL, $6, 0, $7, $8, $9, $10, $11, $11)",
        )
        .bind(&card.number)
        .bind(&card.card_id)
        .bind(card.currency.code())
        .bind(&card.card_type)
        .bind(&call.tenant_id)
        .bind(card.cvc_hash.as_deref())
        .bind(card.issuer.as_deref())
        .bind(card.customer_id.as_deref())
        .bind(&call.location_id)
        .bind(call.workstation_id.as_deref())
        .bind(now)
        .execute(&mut *c)
        .await?;
        sqlx::query_scalar(
            "INSERT INTO accounts (kind, user_id, currency, created_at_ms, updated_at_ms) \
             VALUES ('USER', $1, $2, $3, $3) RETURNING id",
        )
        .bind(&card.card_id)
        .bind(card.currency.code())
        .bind(now)
        .fetch_one(&mut *c)
        .await?
    });
    Ok(lock_account_by_id(tx, id).await?)
}

/// The record of an enveloped request and its callback's outbox row, written in the
/// transaction of what it booked: a duplicate then replays `answer.ack` and queues the same
/// callback bytes again.
pub(crate) async fn record_request(
    tx: &mut Tx,
    call: &InstoreCall,
    answer: &RequestAnswer<'_>,
    payment_id: Option<&str>,
) -> Result<(), Step> {
    // A bare keyed request (a POA Credit) has no callback: its record names none.
    let bare = call.callback_url.is_empty();
    let event_id = if bare {
        String::new()
    } else {
        callback_event_id(&call.tenant_id, &call.request_id)
    };
    run!(tx, c => {
        sqlx::query(
            "INSERT INTO instore_requests (tenant_id, request_id, action, request_hash, \
             ack_body, callback_body, callback_event_id, external_payment_id, correlation_id, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&call.tenant_id)
        .bind(&call.request_id)
        .bind(call.action)
        .bind(&call.request_hash)
        .bind(answer.ack)
        .bind(answer.callback)
        .bind(&event_id)
        .bind(payment_id)
        .bind(call.correlation_id.as_deref())
        .bind(call.now_ms)
        .execute(&mut *c)
        .await?;
        // The id's claim in the namespace log reads share (§1.5), under the key a log read
        // of it writes: of the two at once, one waits for the other's commit and is refused
        // (the check of either table alone would let both pass on Postgres).
        sqlx::query(
            "INSERT INTO idempotency_keys \
             (scope, key, request_hash, endpoint, response_status, response_body, created_at_ms) \
             VALUES ($1, $2, $3, 'instore_request', 200, $4, $5)",
        )
        .bind(read_scope(&call.tenant_id))
        .bind(&call.request_id)
        .bind(&[0u8; 32][..])
        .bind(&[][..] as &[u8])
        .bind(call.now_ms)
        .execute(c)
        .await?
        .rows_affected()
    });
    if bare {
        return Ok(());
    }
    let headers: Vec<(&str, &str)> = answer
        .callback_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    enqueue(
        tx,
        &Delivery {
            event_id: &event_id,
            event_type: CALLBACK_EVENT_TYPE,
            url: &call.callback_url,
            body: answer.callback,
            headers: &headers,
        },
        call.now_ms,
    )
    .await?;
    Ok(())
}

/// What an enveloped request answers: the acknowledgement and the callback with its fixed
/// headers.
pub(crate) struct RequestAnswer<'a> {
    pub ack: &'a [u8],
    pub callback: &'a [u8],
    pub callback_headers: &'a [(String, String)],
}

impl Store {
    /// One enveloped InStore request in the writer's transaction `tx`, exactly once per
    /// (tenant, `requestId`): replay or refuse a known key; else prefetch and lock what it
    /// names, ask its planner (pure) and write the plan. The caller commits.
    pub(crate) async fn instore_on(
        &self,
        tx: &mut Tx,
        op: &InstoreOp<'_>,
    ) -> Result<InstoreOutcome, Step> {
        let call = op.call;
        // Bare POA requests without a key are idempotent by what they are.
        let keyed = call.poa.as_ref().is_none_or(|p| p.keyed);
        if keyed && let Some(done) = recorded(tx, call).await? {
            return Ok(done);
        }
        let snap = snapshot(tx, call).await?;
        // A duplicate that waited for the accounts' locks finds the first one's record now.
        if keyed && let Some(done) = recorded(tx, call).await? {
            return Ok(done);
        }
        let plan = op.planner.plan(&snap);
        if plan.poa == Some(PoaWrite::Conflict) {
            return Ok(InstoreOutcome::Conflict);
        }
        self.write_plan(tx, call, &snap, &plan, keyed).await?;
        Ok(InstoreOutcome::Done { ack: plan.ack })
    }

    /// One enveloped request in a transaction of its own (the writer's batch of one). A
    /// lost race (a duplicate on another instance committed first, a generated number
    /// taken) runs again: the next try finds the winner's record or draws a new number.
    pub(crate) async fn instore_alone(
        &self,
        op: &InstoreOp<'_>,
    ) -> Result<InstoreOutcome, StoreError> {
        in_own_tx!(self, tx => {
            let outcome = self.instore_on(tx, op).await?;
            if matches!(outcome, InstoreOutcome::Done { .. }) {
                crate::CommitDeadline::check(op.call.deadline.as_ref(), "InStore request")?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn write_plan(
        &self,
        tx: &mut Tx,
        call: &InstoreCall,
        snap: &SvSnapshot,
        plan: &SvPlan,
        keyed: bool,
    ) -> Result<(), Step> {
        let mut accounts: BTreeMap<String, LockedAccount> = snap
            .cards
            .iter()
            .map(|(n, c)| (n.clone(), c.account.clone()))
            .collect();
        if let Some(card) = &plan.new_card {
            let account = create_card(tx, card, call).await?;
            accounts.insert(card.number.clone(), account);
        }
        for u in &plan.pin_updates {
            run!(tx, c => {
                sqlx::query(
                    "UPDATE instore_cards SET pin_tries = $1, updated_at_ms = $2 WHERE number = $3",
                )
                .bind(i32::try_from(u.pin_tries).unwrap_or(i32::MAX))
                .bind(call.now_ms)
                .bind(&u.number)
                .execute(&mut *c)
                .await?;
                if u.block {
                    sqlx::query(
                        "UPDATE cards SET status = 'BLOCKED', updated_at_ms = $1 \
                         WHERE card_id = (SELECT card_id FROM instore_cards WHERE number = $2)",
                    )
                    .bind(call.now_ms)
                    .bind(&u.number)
                    .execute(&mut *c)
                    .await?;
                }
            });
        }
        let mut payment_id = None;
        if let Some(m) = &plan.movement {
            payment_id = Some(m.external_payment_id.as_str());
            let operation = snap.operation.as_ref();
            self.book_movement(tx, call, m, &accounts, operation)
                .await?;
        }
        if let (Some(poa), Some(w)) = (&call.poa, &plan.poa) {
            self.write_poa(tx, call, poa, &snap.poa, w).await?;
        }
        if !keyed {
            return Ok(());
        }
        let answer = RequestAnswer {
            ack: &plan.ack,
            callback: &plan.callback,
            callback_headers: &plan.callback_headers,
        };
        record_request(tx, call, &answer, payment_id).await
    }

    /// Books one leg per card through `ledger::instore`, each a movement of its own
    /// against INSTORE_CLEARING, with its InStore row.
    async fn book_movement(
        &self,
        tx: &mut Tx,
        call: &InstoreCall,
        m: &SvMovementPlan,
        accounts: &BTreeMap<String, LockedAccount>,
        operation: Option<&SvOperationRows>,
    ) -> Result<(), Step> {
        let clearing = self.clearing_in(tx, m.currency).await?;
        let mut legs = Vec::with_capacity(m.legs.len());
        for l in &m.legs {
            let a = accounts
                .get(&l.number)
                .ok_or_else(|| StoreError::Invalid("a planned leg names no card".into()))?;
            if a.currency != m.currency {
                return Err(
                    StoreError::Invalid("a planned leg is in another currency".into()).into(),
                );
            }
            legs.push((sv_account(a), l.delta));
        }
        let bookings = plan_stored_value(m.kind, &legs)
            .map_err(|e| StoreError::Invalid(format!("stored-value legs refused: {e:?}")))?;
        let today = ledger::plan::day_of(call.now_ms);
        // Running state of each account through the legs (one account may back two numbers).
        let mut current: BTreeMap<i64, LockedAccount> = BTreeMap::new();
        for (l, b) in m.legs.iter().zip(&bookings) {
            if b.available_after != l.available_after {
                return Err(StoreError::Invalid(
                    "the decision's balance differs from the ledger's plan".into(),
                )
                .into());
            }
            let a = current
                .entry(b.account_id)
                .or_insert_with(|| accounts[&l.number].clone())
                .clone();
            // A Redeem counts toward the account's daily spending, as a card purchase does;
            // its Cancel on the Redeem's UTC day gives that leg back.
            let daily = match m.kind {
                SvKind::Redeem => Some(daily_after(&a, today, l.delta)),
                SvKind::Cancel => {
                    let back = redeemed_today(operation, &l.number, call.now_ms, l.delta);
                    a.given_back(today, back)
                }
                SvKind::Load => None,
            };
            let meta = MovementMeta {
                kind: m.kind.movement_kind(),
                processor_kind: None,
                transaction_id: None,
                reference: m.reference.as_deref(),
            };
            let (movement_id, _) = book(
                tx,
                Holder::Account(&a),
                clearing,
                b.postings,
                m.currency,
                &meta,
                call.now_ms,
                daily,
            )
            .await?;
            let next = current.get_mut(&b.account_id).expect("inserted above");
            next.balance = b.balance_after;
            next.version += 1;
            if let Some((day, spent)) = daily {
                next.daily_spent_day = day;
                next.daily_spent = spent;
            }
            run!(tx, c => {
                sqlx::query(
                    "INSERT INTO instore_movements (external_transaction_id, external_payment_id, \
                     kind, reverses_payment_id, tenant_id, request_id, number, movement_id, \
                     currency, amount_minor, balance_after_minor, location_id, workstation_id, \
                     session_id, reference, correlation_id, flags, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18)",
                )
                .bind(&l.external_transaction_id)
                .bind(&m.external_payment_id)
                .bind(m.kind.movement_kind())
                .bind(m.reverses_payment_id.as_deref())
                .bind(&call.tenant_id)
                .bind(&call.request_id)
                .bind(&l.number)
                .bind(movement_id)
                .bind(m.currency.code())
                .bind(l.delta)
                .bind(b.available_after)
                .bind(&m.location_id)
                .bind(m.workstation_id.as_deref())
                .bind(m.session_id.as_deref())
                .bind(m.reference.as_deref())
                .bind(call.correlation_id.as_deref())
                .bind(&m.flags)
                .bind(call.now_ms)
                .execute(c)
                .await?
                .rows_affected()
            });
        }
        Ok(())
    }

    /// INSTORE_CLEARING of `currency`, read (or created) on the request's own connection: a
    /// second connection while this transaction holds one could wait for ever on the
    /// embedded store's single connection, or on a Postgres pool whose connections are all
    /// held by requests queued behind this one's locks. Cached once known to be committed.
    pub(crate) async fn clearing_in(&self, tx: &mut Tx, currency: Currency) -> Result<i64, Step> {
        let kind = SystemAccount::InstoreClearing;
        if let Some(id) = self.cached_system_id(kind, currency) {
            return Ok(id);
        }
        let found: Option<i64> = run!(tx, c => {
            sqlx::query_scalar(crate::SYSTEM_ACCOUNT_ID)
                .bind(kind.as_str())
                .bind(currency.code())
                .fetch_optional(c)
                .await?
        });
        if let Some(id) = found {
            self.remember_system_id(kind, currency, id);
            return Ok(id);
        }
        Ok(crate::create_system_account(tx, kind, currency).await?)
    }

    /// A stored-value number bound to `tenant_id`, with its account (unlocked), for the
    /// log. `None`: unknown, or another tenant's.
    pub async fn instore_card(
        &self,
        number: &str,
        tenant_id: &str,
    ) -> Result<Option<SvCardRow>, StoreError> {
        // A view: one snapshot, no lock.
        let mut tx = self.begin_read().await?;
        let head = card_head(&mut tx, number).await?;
        let out = match head {
            Some(h) if h.tenants.iter().any(|t| t == tenant_id) => {
                let account = account_by_id(&mut tx, h.account_id, false).await?;
                Some(h.with_account(account))
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(out)
    }

    /// InStore movements of `number`, newest first, before movement id `before`.
    pub async fn instore_log(
        &self,
        number: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SvMovementRow>, StoreError> {
        self.movement_page(
            "number = $1 AND movement_id < $2 ORDER BY movement_id DESC LIMIT $3",
            number,
            before,
            limit,
        )
        .await
    }

    /// InStore movements matching `filter`, a condition and order over `key` ($1), the
    /// movement id before which to list (`$2`) and the limit (`$3`).
    async fn movement_page(
        &self,
        filter: &str,
        key: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SvMovementRow>, StoreError> {
        let sql = format!("{MOVEMENT_COLUMNS} WHERE {filter}");
        let mut out = Vec::new();
        run_pool!(&self.db, p => {
            for r in sqlx::query(&sql)
                .bind(key)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(p)
                .await?
            {
                out.push(movement_of!(r));
            }
        });
        Ok(out)
    }

    /// Links `number` to the card `card_id` and its holder's account in `currency` (admin):
    /// one balance for card purchases and in-store stored value. `pin_hash`: `None` keeps
    /// the PIN on record.
    pub async fn put_stored_value_card(
        &self,
        link: &SvLink<'_>,
        now_ms: i64,
    ) -> Result<SvLinkOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let owner: Option<String> = run!(&mut tx, c => {
            sqlx::query_scalar("SELECT user_id FROM cards WHERE card_id = $1")
                .bind(link.card_id)
                .fetch_optional(c)
                .await?
        });
        let Some(user_id) = owner else {
            return Ok(SvLinkOutcome::CardNotFound);
        };
        let Some(account) = crate::admin::user_account_in(&mut tx, &user_id, link.currency).await?
        else {
            return Ok(SvLinkOutcome::AccountNotFound);
        };
        // A number whose history moved another account's money stays that account's: a
        // Cancel of an old Redeem, found by its number, must not credit a new holder.
        let history_elsewhere: Option<i64> = run!(&mut tx, c => {
            sqlx::query_scalar(
                "SELECT p.account_id FROM instore_movements m \
                 JOIN postings p ON p.movement_id = m.movement_id \
                 JOIN accounts a ON a.id = p.account_id AND a.kind = 'USER' \
                 WHERE m.number = $1 AND p.account_id <> $2 LIMIT 1",
            )
            .bind(link.number)
            .bind(account)
            .fetch_optional(c)
            .await?
        });
        if history_elsewhere.is_some() {
            return Ok(SvLinkOutcome::NumberTaken);
        }
        let taken: Option<String> = run!(&mut tx, c => {
            sqlx::query_scalar("SELECT card_id FROM instore_cards WHERE number = $1")
                .bind(link.number)
                .fetch_optional(c)
                .await?
        });
        if taken.as_deref().is_some_and(|c| c != link.card_id) {
            return Ok(SvLinkOutcome::NumberTaken);
        }
        let tenants = link.tenants.join(",");
        let result = run!(&mut tx, c => {
            // The card's number in this currency is replaced; its history stays under the
            // old number.
            sqlx::query("DELETE FROM instore_cards WHERE card_id = $1 AND currency = $2 AND number <> $3")
                .bind(link.card_id)
                .bind(link.currency.code())
                .bind(link.number)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO instore_cards (number, card_id, user_id, currency, card_type, \
                 tenants, linked, pin_hash, cvc_hash, pin_tries, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, NULL, 0, $8, $8) \
                 ON CONFLICT (number) DO UPDATE SET currency = excluded.currency, \
                 card_type = excluded.card_type, tenants = excluded.tenants, \
                 pin_hash = COALESCE(excluded.pin_hash, instore_cards.pin_hash), \
                 pin_tries = CASE WHEN excluded.pin_hash IS NULL THEN instore_cards.pin_tries ELSE 0 END, \
                 updated_at_ms = excluded.updated_at_ms \
                 WHERE instore_cards.card_id = excluded.card_id",
            )
            .bind(link.number)
            .bind(link.card_id)
            .bind(&user_id)
            .bind(link.currency.code())
            .bind(link.card_type)
            .bind(&tenants)
            .bind(link.pin_hash)
            .bind(now_ms)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        });
        match result {
            Ok(1) => {}
            // Another card's link of the number committed after the check above read it
            // free: its row stays its own (the update applies to the same card only).
            Ok(_) => return Ok(SvLinkOutcome::NumberTaken),
            Err(e) if crate::is_unique_violation(&e) => return Ok(SvLinkOutcome::NumberTaken),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(SvLinkOutcome::Linked)
    }

    /// The stored-value numbers of a card, with their balances (admin).
    pub async fn stored_value_cards(&self, card_id: &str) -> Result<Vec<SvCardView>, StoreError> {
        let sql = format!("{CARD_COLUMNS} WHERE s.card_id = $1 ORDER BY s.currency");
        let mut heads = Vec::new();
        // A view: one snapshot, no lock (nor, on the embedded store, the write lock).
        let mut tx = self.begin_read().await?;
        run!(&mut tx, c => {
            for r in sqlx::query(&sql).bind(card_id).fetch_all(&mut *c).await? {
                heads.push(card_head_of!(r));
            }
        });
        let mut out = Vec::new();
        for h in heads {
            let a = account_by_id(&mut tx, h.account_id, false).await?;
            out.push(SvCardView {
                number_last4: last_four(&h.number).to_owned(),
                card_id: h.card_id,
                user_id: h.user_id,
                currency: h.currency,
                card_type: h.card_type,
                tenants: h.tenants,
                linked: h.linked,
                status: h.status,
                pin_on_record: h.pin_hash.is_some(),
                cvc_on_record: h.cvc_hash.is_some(),
                posted: a.balance,
                held: a.held,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// InStore movements of every number of `card_id`, newest first (admin).
    pub async fn stored_value_movements(
        &self,
        card_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SvMovementRow>, StoreError> {
        self.movement_page(
            "number IN (SELECT number FROM instore_cards WHERE card_id = $1) \
             AND movement_id < $2 ORDER BY movement_id DESC, external_transaction_id LIMIT $3",
            card_id,
            before,
            limit,
        )
        .await
    }
}

/// The last four characters of a number: the most of it an admin answer or a log shows.
pub fn last_four(number: &str) -> &str {
    let start = number
        .char_indices()
        .rev()
        .nth(3)
        .map(|(i, _)| i)
        .unwrap_or(0);
    &number[start..]
}

/// An admin link of a number to a card.
#[derive(Debug, Clone)]
pub struct SvLink<'a> {
    pub card_id: &'a str,
    pub number: &'a str,
    pub currency: Currency,
    pub card_type: &'a str,
    pub tenants: &'a [String],
    pub pin_hash: Option<&'a [u8]>,
}

/// What [`Store::put_stored_value_card`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvLinkOutcome {
    Linked,
    CardNotFound,
    /// The card's holder has no account in that currency.
    AccountNotFound,
    /// The number belongs to another card.
    NumberTaken,
}

/// A stored-value number as the admin API shows it (never the full number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvCardView {
    pub number_last4: String,
    pub card_id: String,
    pub user_id: String,
    pub currency: Currency,
    pub card_type: String,
    pub tenants: Vec<String>,
    pub linked: bool,
    pub status: String,
    pub pin_on_record: bool,
    pub cvc_on_record: bool,
    pub posted: i64,
    pub held: i64,
}

/// The scope of `idempotency_keys` that holds a tenant's log reads' ids.
fn read_scope(tenant: &str) -> String {
    format!("instore-read:{tenant}")
}

/// What a log read's `requestId` was used for before (instore-extensions §1.3 and §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKey {
    /// First use: recorded.
    Fresh,
    /// The same read again (the same path and parameters).
    Repeat,
    /// Used before by another read, or by an enveloped request: 409.
    Conflict,
}

impl Store {
    /// The check value kept for key `name`: `check` when none was kept yet (it is kept
    /// now), else the one the first instance wrote. A caller whose `check` differs holds
    /// another key than the one the database's hashes were made with.
    pub async fn key_check(
        &self,
        name: &str,
        check: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let mut tx = self.begin().await?;
        let kept: String = run!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO key_checks (name, check_value, created_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(check)
            .bind(now_ms)
            .execute(&mut *c)
            .await?;
            sqlx::query_scalar("SELECT check_value FROM key_checks WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *c)
                .await?
        });
        tx.commit().await?;
        Ok(kept)
    }

    /// The check value kept for key `name`, if any (nothing is written).
    pub async fn key_check_kept(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(run_pool!(&self.db, p => {
            sqlx::query_scalar("SELECT check_value FROM key_checks WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Whether any stored-value card keeps a PIN or CVC hash.
    pub async fn instore_secrets_kept(&self) -> Result<bool, StoreError> {
        let any: Option<String> = run_pool!(&self.db, p => {
            sqlx::query_scalar(
                "SELECT number FROM instore_cards \
                 WHERE pin_hash IS NOT NULL OR cvc_hash IS NOT NULL LIMIT 1",
            )
            .fetch_optional(p)
            .await?
        });
        Ok(any.is_some())
    }
}

impl Store {
    /// Records `request_id` of `tenant` as the id of a log read whose path and parameters
    /// hash to `fingerprint`, or says what it was used for before. A GET's signature may
    /// leave the card number out; this binds it to the one card it read, for the life of
    /// the ledger, like the enveloped requests' ids (whose namespace it shares).
    pub async fn instore_read_key(
        &self,
        tenant: &str,
        request_id: &str,
        fingerprint: &[u8; 32],
        now_ms: i64,
    ) -> Result<ReadKey, StoreError> {
        let mut tx = self.begin().await?;
        let posted: i64 = run!(&mut tx, c => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM instore_requests WHERE tenant_id = $1 AND request_id = $2",
            )
            .bind(tenant)
            .bind(request_id)
            .fetch_one(&mut *c)
            .await?
        });
        if posted > 0 {
            return Ok(ReadKey::Conflict);
        }
        let scope = read_scope(tenant);
        let fresh = run!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO idempotency_keys \
                 (scope, key, request_hash, endpoint, response_status, response_body, created_at_ms) \
                 VALUES ($1, $2, $3, 'storedvaluelog', 200, $4, $5) \
                 ON CONFLICT (scope, key) DO NOTHING",
            )
            .bind(&scope)
            .bind(request_id)
            .bind(&fingerprint[..])
            .bind(&[][..] as &[u8])
            .bind(now_ms)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        let out = if fresh > 0 {
            ReadKey::Fresh
        } else {
            let (first, endpoint): (Vec<u8>, String) = run!(&mut tx, c => {
                sqlx::query_as(
                    "SELECT request_hash, endpoint FROM idempotency_keys WHERE scope = $1 AND key = $2",
                )
                .bind(&scope)
                .bind(request_id)
                .fetch_one(&mut *c)
                .await?
            });
            // `instore_request`: an enveloped request's claim of the id.
            if endpoint == "storedvaluelog" && first[..] == fingerprint[..] {
                ReadKey::Repeat
            } else {
                ReadKey::Conflict
            }
        };
        tx.commit().await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_four_and_tenants() {
        assert_eq!(last_four("6280001234567895"), "7895");
        assert_eq!(last_four("12"), "12");
        assert_eq!(split_tenants("a,b,,c"), ["a", "b", "c"]);
        assert_eq!(callback_event_id("t", "r-1"), "instore:t:r-1");
    }
}
