//! The rules of an authorization, in order:
//! 1. a finished request under the same key replays its answer (another body: key conflict);
//! 2. a transaction id answered before under another key replays that answer when the
//!    request asks for the same money (the new key records it too), else transaction conflict;
//! 3. a transaction id first seen through the processor's verdict takes that verdict as
//!    its answer, moving nothing (the verdict booked what it said);
//! 4. otherwise [`decide`] on the account and card as the earlier requests left them, the
//!    spending controls of both evaluated against the counters as the earlier approvals
//!    left them; an approval of a non-zero amount moves it between the account and
//!    processor clearing, and adds to the counters of the windows it counts in.
//!
//! Every fresh decision keeps its explanation (the checks run, with their inputs) with the
//! transaction record.

use super::{
    Asked, CardLookup, CardTransaction, CounterWrite, KeyRecord, KeyRow, MovementRow, Outcome,
    Plan, PlanError, PostingRow, RecordRow, RecordWrite, RecordedTransaction, Snapshot,
    StoredResponse, Writes, account_owner, day_of, explanation, window_kept, windows_kept_at,
};
use crate::controls::{
    ControlDecline, ControlRequest, Controls, Counter, CounterDelta, CounterKey, Evaluation, Owner,
    Release, Released, TimeZone, WindowKey, decode_counters, encode_counters, evaluate, release_of,
};
use crate::decision::{AuthorizationInput, Decision, Decline, RequestKind, decide_with};
use crate::money::to_minor;
use crate::{Currency, PostingPlan};
use jiff::Timestamp;
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// One authorization to plan.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    pub idempotency_key: &'a str,
    /// SHA-256 of the raw body: same key with another body is a conflict.
    pub request_hash: &'a [u8],
    /// The route served (e.g. `/transactions/authorizations/debit`).
    pub endpoint: &'a str,
    pub now_ms: i64,
    pub tx: CardTransaction<'a>,
    pub kind: Option<RequestKind>,
    pub card: CardLookup<'a>,
}

/// The decision on an authorization, for rendering the answer.
#[derive(Debug, Clone)]
pub struct AuthorizationResult {
    pub decision: Decision,
    pub currency: Option<Currency>,
    pub movement_id: Option<i64>,
    /// The spending control that declined, with the words the answer carries.
    pub control: Option<ControlDecline>,
}

impl AuthorizationResult {
    /// The answer's message for a decline: the control's words, or the rule's.
    pub fn decline_message(&self) -> Option<&str> {
        match (&self.decision, &self.control) {
            (Decision::Declined(_), Some(c)) => Some(&c.message),
            (Decision::Declined(d), None) => Some(d.message()),
            _ => None,
        }
    }
}

/// Plans `requests` in order against `snapshot`; `render` turns a decision into the exact
/// answer body that is stored and replayed.
pub fn plan_authorizations<R>(
    snapshot: Snapshot,
    requests: &[AuthorizationRequest<'_>],
    render: R,
) -> Result<Plan<AuthorizationResult>, PlanError>
where
    R: Fn(&AuthorizationResult) -> Vec<u8>,
{
    let Snapshot {
        mut keys,
        mut transactions,
        mut accounts,
        cards,
        clearing,
        movement_ids,
        posting_ids,
        mut counters,
        time_zone,
    } = snapshot;
    let tz = time_zone.unwrap_or(TimeZone::UTC);
    // Each counter's change over the batch (cards' written in lock order at the end).
    let mut counter_writes: Vec<CounterWrite> = Vec::new();
    let mut movement_ids = movement_ids.into_iter();
    let mut posting_ids = posting_ids.into_iter();
    let mut writes = Writes::default();
    // The account rows as read, for the writers that hold no lock; and where each touched
    // account's write is.
    let mut read: AsRead = HashMap::new();
    let mut touched: HashMap<i64, usize> = HashMap::new();
    for ((user, currency), a) in &accounts {
        read.insert(
            a.id,
            (
                a.version,
                a.balance,
                a.held,
                a.daily_spent_day,
                a.daily_spent,
            ),
        );
        // An account's counters come with its row (none: nothing counted, no entry).
        if !a.counters.is_empty() {
            counters
                .entry((Owner::Account, account_owner(user, *currency)))
                .or_default()
                .extend(decode_counters(&a.counters));
        }
    }
    let mut outcomes = Vec::with_capacity(requests.len());
    for (idx, req) in requests.iter().enumerate() {
        let t = &req.tx;
        if let Some(rec) = keys.get(req.idempotency_key) {
            outcomes.push(if rec.same_request(req.request_hash, req.endpoint) {
                Outcome::Replay(rec.response.clone())
            } else {
                Outcome::KeyConflict
            });
            continue;
        }
        let currency = Currency::parse(t.currency).ok();
        let (outcome, response) = match transactions.get(t.transaction_id) {
            Some(RecordedTransaction {
                response: Some(response),
                asked,
                ..
            }) => {
                if !asked.same_as(req.endpoint, req.kind, t) {
                    outcomes.push(Outcome::TransactionConflict);
                    continue;
                }
                (Outcome::Replay(response.clone()), response.clone())
            }
            Some(verdict_first) => {
                // First seen through the processor's verdict: that verdict stands. An approval
                // that booked nothing (it waits for a person) is not answered APPROVED.
                let approved = verdict_first.verdict.as_deref() == Some("APPROVED");
                let decision = match (approved, verdict_first.amount_minor) {
                    (true, Some(amount)) => Decision::Approved {
                        amount,
                        balance_after: 0,
                        daily_spent_after: 0,
                    },
                    (true, None) => Decision::Declined(Decline::VerdictBookedNothing),
                    (false, _) => Decision::Declined(Decline::RejectedByProcessor),
                };
                let result = AuthorizationResult {
                    decision,
                    currency,
                    movement_id: None,
                    control: None,
                };
                let amount_minor = verdict_first.amount_minor;
                record(
                    &mut writes,
                    idx,
                    RecordWrite::Answer,
                    amount_minor,
                    result,
                    (None, None),
                    &render,
                )
            }
            None => {
                let today = day_of(req.now_ms);
                let account_key = t.user_id.zip(currency).map(|(u, c)| (u.to_owned(), c));
                let account = account_key.as_ref().and_then(|k| accounts.get_mut(k));
                let card_record = match (t.card_id, req.card) {
                    (None, _) | (Some(_), CardLookup::Absent) => None,
                    (Some(_), CardLookup::Known(r)) => Some(r),
                    (Some(id), CardLookup::InTransaction) => cards.get(id),
                };
                let card = card_record.map(|c| c.state_for(t.user_id));
                let input = AuthorizationInput {
                    kind: req.kind,
                    currency,
                    amount: t.amount,
                    mcc: t.mcc,
                };
                let state = account.as_ref().map(|a| a.state(today));
                let layers = Layers {
                    account: account.as_ref().and_then(|a| a.controls.clone()),
                    card: card_record.and_then(|c| c.controls.clone()),
                    account_owner: account_key.as_ref().map(|(u, c)| account_owner(u, *c)),
                    card_owner: t.card_id.map(str::to_owned),
                };
                let mut evaluation: Option<Evaluation> = None;
                let decision = decide_with(&input, state.as_ref(), card.as_ref(), |kind, minor| {
                    let ev = layers.evaluate(kind, minor, currency?, req, &counters, &tz)?;
                    let class = ev.declined.as_ref().map(ControlDecline::class);
                    evaluation = Some(ev);
                    class
                });
                let counted = match (&decision, &evaluation) {
                    (Decision::Approved { .. }, Some(ev)) if !ev.counted.is_empty() => {
                        let rows = layers.counter_writes(&ev.counted);
                        for w in &rows {
                            add_counter(&mut counters, &mut counter_writes, w);
                        }
                        Some(counted_json(&rows, Released::default()))
                    }
                    _ => None,
                };
                let explanation = explanation::encode(
                    &decision,
                    state.as_ref(),
                    card.as_ref(),
                    evaluation.as_ref(),
                );
                let mut movement_id = None;
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
                    let clr = *clearing
                        .get(&cur)
                        .ok_or(PlanError::NoClearingAccount(cur))?;
                    let [(_, holder_amount), (_, clearing_amount)] = PostingPlan::card(*amount)
                        .legs()
                        .ok_or(PlanError::OutOfRange)?;
                    let id = movement_ids.next().ok_or(PlanError::NotEnoughIds)?;
                    let (p1, p2) = posting_ids
                        .next()
                        .zip(posting_ids.next())
                        .ok_or(PlanError::NotEnoughIds)?;
                    acct.version += 1;
                    acct.balance = *balance_after;
                    acct.daily_spent_day = acct.spend_day(today);
                    acct.daily_spent = *daily_spent_after;
                    writes.movements.push(MovementRow {
                        id,
                        request: idx,
                        currency: cur,
                    });
                    writes.postings.push(PostingRow {
                        id: p1,
                        movement_id: id,
                        account_id: acct.id,
                        amount: holder_amount,
                        balance_after: Some(acct.balance),
                        version: Some(acct.version),
                    });
                    writes.postings.push(PostingRow {
                        id: p2,
                        movement_id: id,
                        account_id: clr,
                        amount: clearing_amount,
                        balance_after: None,
                        version: None,
                    });
                    let write = account_write(acct, &read);
                    match touched.get(&acct.id) {
                        Some(&at) => writes.accounts[at] = write,
                        None => {
                            touched.insert(acct.id, writes.accounts.len());
                            writes.accounts.push(write);
                        }
                    }
                    movement_id = Some(id);
                }
                let amount_minor = recorded_amount(&decision, req.kind, currency, t);
                let result = AuthorizationResult {
                    decision,
                    currency,
                    movement_id,
                    control: evaluation.and_then(|e| e.declined),
                };
                record(
                    &mut writes,
                    idx,
                    RecordWrite::Insert,
                    amount_minor,
                    result,
                    (Some(explanation), counted),
                    &render,
                )
            }
        };
        // What later requests of the batch see: this key finished, this transaction answered.
        writes.keys.push(KeyRow {
            request: idx,
            response: response.clone(),
        });
        keys.insert(
            req.idempotency_key.to_owned(),
            KeyRecord {
                request_hash: req.request_hash.to_vec(),
                endpoint: Some(req.endpoint.to_owned()),
                response: response.clone(),
            },
        );
        let entry = transactions
            .entry(t.transaction_id.to_owned())
            .or_insert_with(|| RecordedTransaction {
                amount_minor: None,
                response: None,
                verdict: None,
                asked: Asked::default(),
            });
        if entry.response.is_none() {
            entry.response = Some(response);
            entry.asked = Asked::of(req.endpoint, req.kind, t);
        }
        outcomes.push(outcome);
    }
    let (mut cards, of_accounts): (Vec<_>, Vec<_>) = counter_writes
        .into_iter()
        .partition(|w| w.owner == Owner::Card);
    // Written in the order every writer changes counter rows (owner, window, categories):
    // two transactions on one card's rows never wait on each other crosswise.
    cards.sort_by_cached_key(|w| (w.owner_id.clone(), w.columns()));
    writes.counters = cards;
    account_counters(
        &mut writes,
        &accounts,
        &counters,
        &of_accounts,
        (&read, &mut touched),
        requests,
        &tz,
    );
    Ok(Plan { outcomes, writes })
}

/// The cardholder accounts as read (version, balance, held, daily counter's day and
/// amount), by id: what a writer that holds no lock checks the row against.
type AsRead = HashMap<i64, (i64, i64, i64, i64, i64)>;

/// `acct` as the batch leaves it, and as it was read (`read`). Its counters are set once
/// the batch is planned ([`account_counters`]).
fn account_write(acct: &super::Account, read: &AsRead) -> super::AccountWrite {
    let (read_version, read_balance, read_held, read_daily_day, read_daily_spent) =
        read.get(&acct.id).copied().unwrap_or_default();
    super::AccountWrite {
        id: acct.id,
        balance: acct.balance,
        version: acct.version,
        daily_spent_day: acct.daily_spent_day,
        daily_spent: acct.daily_spent,
        read_version,
        read_balance,
        read_held,
        read_daily_day,
        read_daily_spent,
        counters: String::new(),
        read_counters: String::new(),
    }
}

/// Sets each written account's counters, as they are to be kept on its row: those the
/// batch changed, without the windows that are over ([`window_kept`]), or as read. An account whose counters changed but
/// whose balance did not (a counted approval of nothing) is written too.
fn account_counters(
    writes: &mut Writes,
    accounts: &HashMap<(String, Currency), super::Account>,
    counters: &HashMap<(Owner, String), HashMap<CounterKey, Counter>>,
    changed: &[CounterWrite],
    (read, touched): (&AsRead, &mut HashMap<i64, usize>),
    requests: &[AuthorizationRequest<'_>],
    tz: &TimeZone,
) {
    let mut windows: Option<HashSet<WindowKey>> = None;
    let mut by_id: Vec<_> = accounts.iter().collect();
    by_id.sort_unstable_by_key(|(_, a)| a.id);
    for ((user, currency), acct) in by_id {
        // Most batches count nothing: then no account's owner id is built.
        let owner = (!changed.is_empty())
            .then(|| account_owner(user, *currency))
            .filter(|owner| changed.iter().any(|w| w.owner_id == *owner));
        let text = if let Some(owner) = owner {
            let windows = windows
                .get_or_insert_with(|| windows_kept_at(requests.iter().map(|r| r.now_ms), tz));
            let kept = counters
                .get(&(Owner::Account, owner))
                .into_iter()
                .flatten()
                .filter(|(k, _)| window_kept(windows, &k.window));
            encode_counters(kept)
        } else if touched.contains_key(&acct.id) {
            acct.counters.clone()
        } else {
            continue;
        };
        let at = match touched.get(&acct.id) {
            Some(&at) => at,
            None => {
                touched.insert(acct.id, writes.accounts.len());
                writes.accounts.push(account_write(acct, read));
                writes.accounts.len() - 1
            }
        };
        writes.accounts[at].counters = text;
        writes.accounts[at].read_counters = acct.counters.clone();
    }
}

/// The controls of one request's account and card, and whose counters they read.
pub(super) struct Layers {
    pub(super) account: Option<std::sync::Arc<Controls>>,
    pub(super) card: Option<std::sync::Arc<Controls>>,
    /// `user/currency`.
    pub(super) account_owner: Option<String>,
    pub(super) card_owner: Option<String>,
}

impl Layers {
    /// Evaluates the controls (`None` when there are none).
    fn evaluate(
        &self,
        kind: RequestKind,
        minor: i64,
        currency: Currency,
        req: &AuthorizationRequest<'_>,
        counters: &HashMap<(Owner, String), HashMap<CounterKey, Counter>>,
        tz: &TimeZone,
    ) -> Option<Evaluation> {
        let t = &req.tx;
        let request = ControlRequest {
            kind,
            currency,
            amount: minor,
            mcc: t.mcc,
            country: t.country,
            channels: t.channels,
            at: Timestamp::from_millisecond(req.now_ms).unwrap_or(Timestamp::UNIX_EPOCH),
        };
        self.evaluate_request(&request, counters, tz)
    }

    /// Evaluates the controls on `request` (`None` when there are none).
    pub(super) fn evaluate_request(
        &self,
        request: &ControlRequest<'_>,
        counters: &HashMap<(Owner, String), HashMap<CounterKey, Counter>>,
        tz: &TimeZone,
    ) -> Option<Evaluation> {
        let layers = self.set();
        if layers.is_empty() {
            return None;
        }
        let account = self.account_owner.clone().map(|id| (Owner::Account, id));
        let card = self.card_owner.clone().map(|id| (Owner::Card, id));
        let source = |owner: Owner, key: &CounterKey| {
            let of = match owner {
                Owner::Account => account.as_ref(),
                Owner::Card => card.as_ref(),
            };
            of.and_then(|o| counters.get(o))
                .and_then(|m| m.get(key))
                .copied()
                .unwrap_or_default()
        };
        Some(evaluate(&layers, request, &source, tz))
    }

    /// The documents that are set, account first.
    pub(super) fn set(&self) -> Vec<(Owner, &Controls)> {
        let mut layers: Vec<(Owner, &Controls)> = Vec::with_capacity(2);
        if let Some(c) = self.account.as_deref().filter(|c| !c.is_empty()) {
            layers.push((Owner::Account, c));
        }
        if let Some(c) = self.card.as_deref().filter(|c| !c.is_empty()) {
            layers.push((Owner::Card, c));
        }
        layers
    }

    /// An evaluation's counter deltas as rows of their owners.
    pub(super) fn counter_writes(&self, deltas: &[CounterDelta]) -> Vec<CounterWrite> {
        deltas
            .iter()
            .filter_map(|d| {
                let owner_id = match d.owner {
                    Owner::Account => self.account_owner.clone(),
                    Owner::Card => self.card_owner.clone(),
                }?;
                Some(CounterWrite {
                    owner: d.owner,
                    owner_id,
                    key: d.key.clone(),
                    amount: d.amount,
                    count: d.count,
                })
            })
            .collect()
    }
}

/// Applies `w` to the batch's counters (so a later request sees it) and to what the batch
/// writes.
fn add_counter(
    counters: &mut HashMap<(Owner, String), HashMap<CounterKey, Counter>>,
    writes: &mut Vec<CounterWrite>,
    w: &CounterWrite,
) {
    counters
        .entry((w.owner, w.owner_id.clone()))
        .or_default()
        .entry(w.key.clone())
        .or_default()
        .add(w.amount, w.count);
    match writes
        .iter_mut()
        .find(|x| x.owner == w.owner && x.owner_id == w.owner_id && x.key == w.key)
    {
        Some(x) => {
            x.amount = x.amount.saturating_add(w.amount);
            x.count = x.count.saturating_add(w.count);
        }
        None => writes.push(w.clone()),
    }
}

/// What an approval counted, as kept with its record: the counters it added to, so a
/// reversal can give back exactly that. Stored compactly, as a JSON array: what has been
/// given back so far (`released_amount`, `whole` as 0 or 1), then one
/// `[owner, owner_id, key, amount, count]` per counter, `owner` 0 (account) or 1 (card).
/// Records written before this form hold `{"counted": [...], "released": {...}}`;
/// [`release_counted`] reads both.
pub(super) fn counted_json(rows: &[CounterWrite], released: Released) -> String {
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(rows.len() + 2);
    out.push(released.amount.into());
    out.push(u8::from(released.whole).into());
    for w in rows {
        out.push(json!([
            u8::from(w.owner == Owner::Card),
            w.owner_id,
            w.key.to_string(),
            w.amount,
            w.count
        ]));
    }
    serde_json::Value::Array(out).to_string()
}

/// What an approval's record kept ([`counted_json`], in either form): the counters it
/// added to and what has been given back since.
fn read_counted(stored: &str) -> Option<(Vec<CounterWrite>, Released)> {
    let v: serde_json::Value = serde_json::from_str(stored).ok()?;
    let row = |owner: Owner,
               owner_id: &serde_json::Value,
               key: &serde_json::Value,
               amount: &serde_json::Value,
               count: &serde_json::Value| {
        Some(CounterWrite {
            owner,
            owner_id: owner_id.as_str()?.to_owned(),
            key: CounterKey::parse(key.as_str()?)?,
            amount: amount.as_i64()?,
            count: count.as_i64()?,
        })
    };
    if let Some(a) = v.as_array() {
        let [amount, whole, counted @ ..] = a.as_slice() else {
            return None;
        };
        let rows = counted
            .iter()
            .map(|d| {
                let [owner, owner_id, key, amount, count] = d.as_array()?.as_slice() else {
                    return None;
                };
                let owner = if owner.as_u64()? == 1 {
                    Owner::Card
                } else {
                    Owner::Account
                };
                row(owner, owner_id, key, amount, count)
            })
            .collect::<Option<Vec<_>>>()?;
        let released = Released {
            amount: amount.as_i64()?,
            whole: whole.as_u64()? != 0,
        };
        return Some((rows, released));
    }
    let rows = v["counted"]
        .as_array()?
        .iter()
        .map(|d| {
            let owner = match d["owner"].as_str()? {
                "card" => Owner::Card,
                _ => Owner::Account,
            };
            row(owner, &d["owner_id"], &d["key"], &d["amount"], &d["count"])
        })
        .collect::<Option<Vec<_>>>()?;
    let released = Released {
        amount: v["released"]["amount"].as_i64().unwrap_or(0),
        whole: v["released"]["whole"].as_bool().unwrap_or(false),
    };
    Some((rows, released))
}

/// What a record's counting still holds in the counters: each counter it counted in, less
/// what it gave back since (the count stays until it gave back the whole). Empty when
/// `stored` does not read.
pub fn still_counted(stored: &str) -> Vec<CounterWrite> {
    let Some((rows, released)) = read_counted(stored) else {
        return Vec::new();
    };
    rows.into_iter()
        .map(|mut w| {
            if released.whole {
                (w.amount, w.count) = (0, 0);
            } else {
                w.amount = (w.amount - released.amount).max(0);
            }
            w
        })
        .collect()
}

/// How much of an approval's room a later message gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// The processor rejected the transaction after our approval: all of it.
    Whole,
    /// A credit adjustment of `amount` minor units against it; `reversal` for a
    /// `REVERSAL_*` type, which gives back the count too when it reverses all that is left.
    Credit { amount: i64, reversal: bool },
}

/// The counter changes that give back room an approval took, from what its record kept
/// (`counted_json`), and the record's new text; `None` when the text cannot be read. The
/// changes go to the windows the approval counted in, never more money than it took, the
/// count at most once (see [`crate::controls::release`]). `authorized` is the
/// authorization's own amount (minor units), when its record has it.
pub fn release_counted(
    stored: &str,
    give: GiveBack,
    authorized: Option<i64>,
) -> Option<(Vec<CounterWrite>, String)> {
    let (rows, released) = read_counted(stored)?;
    let counted: Vec<CounterDelta> = rows
        .iter()
        .map(|w| CounterDelta {
            owner: w.owner,
            key: w.key.clone(),
            amount: w.amount,
            count: w.count,
        })
        .collect();
    // What the authorization took: its own amount. (Not what its counters took: a card
    // whose controls only count authorizations took no money, and any reversal would
    // then look like one of all that is left.)
    let counted_money = counted.iter().map(|d| d.amount).max().unwrap_or(0);
    let taken = counted_money.max(authorized.map_or(0, i64::abs));
    let what = match give {
        GiveBack::Whole => Release::Whole,
        GiveBack::Credit { amount, reversal } if reversal && amount >= taken - released.amount => {
            Release::Whole
        }
        GiveBack::Credit { amount, .. } => Release::Amount(amount),
    };
    let (deltas, now) = release_of(&counted, released, what, taken);
    let writes = deltas
        .into_iter()
        .filter_map(|d| {
            let w = rows.iter().find(|w| w.owner == d.owner && w.key == d.key)?;
            Some(CounterWrite {
                owner: d.owner,
                owner_id: w.owner_id.clone(),
                key: d.key,
                amount: d.amount,
                count: d.count,
            })
        })
        .collect();
    Some((writes, counted_json(&rows, now)))
}

/// What an approval counted (`stored`, as [`counted_json`] wrote it) with `returned` minor
/// units of it given back since: the text [`release_counted`] reads, for a record that keeps
/// what it counted but not what was given back (an immutable row, whose returns are rows of
/// their own). `None` when the text cannot be read.
pub fn counted_after(stored: &str, returned: i64) -> Option<String> {
    let (rows, _) = read_counted(stored)?;
    let released = Released {
        amount: returned.max(0),
        whole: false,
    };
    Some(counted_json(&rows, released))
}

/// An account's counters as kept on its row ([`encode_counters`]) with `w` given back: a
/// counter that is gone (its window over) has nothing to give back, and none goes below
/// zero.
pub fn give_back_on_row(stored: &str, w: &CounterWrite) -> String {
    let mut rows: Vec<(CounterKey, Counter)> = decode_counters(stored).collect();
    if let Some((_, c)) = rows.iter_mut().find(|(k, _)| *k == w.key) {
        c.add(w.amount, w.count);
    }
    encode_counters(rows.iter().map(|(k, c)| (k, c)))
}

/// Renders the answer to request `idx`, records it, and returns it as the request's outcome.
fn record<R>(
    writes: &mut Writes,
    idx: usize,
    write: RecordWrite,
    amount_minor: Option<i64>,
    result: AuthorizationResult,
    (explanation, counted): (Option<String>, Option<String>),
    render: &R,
) -> (Outcome<AuthorizationResult>, StoredResponse)
where
    R: Fn(&AuthorizationResult) -> Vec<u8>,
{
    let response = StoredResponse {
        status: 200,
        body: render(&result),
    };
    let (status, status_detail) = status_of(&result.decision);
    writes.records.push(RecordRow {
        request: idx,
        write,
        amount_minor,
        status,
        status_detail,
        movement_id: result.movement_id,
        response: response.clone(),
        explanation,
        counted,
    });
    (
        Outcome::Fresh {
            response: response.clone(),
            result,
        },
        response,
    )
}

/// The amount a transaction record keeps: what moved, and for a decline what was asked
/// (a later forced booking and the reconciliation compare against it).
fn recorded_amount(
    decision: &Decision,
    kind: Option<RequestKind>,
    currency: Option<Currency>,
    t: &CardTransaction<'_>,
) -> Option<i64> {
    match decision {
        Decision::Approved { amount, .. } => Some(*amount),
        Decision::Balance { .. } => Some(0),
        Decision::Declined(_) => currency
            .zip(t.amount)
            .and_then(|(c, a)| to_minor(a, c).ok())
            .map(|m| {
                if kind == Some(RequestKind::Debit) {
                    -m
                } else {
                    m
                }
            }),
    }
}

/// The record's status and detail for a decision.
pub fn status_of(decision: &Decision) -> (&'static str, &'static str) {
    match decision {
        Decision::Approved { .. } | Decision::Balance { .. } => ("APPROVED", "APPROVED"),
        Decision::Declined(d) => ("REJECTED", d.class().as_str()),
    }
}
