//! The rules of an authorization, in order:
//! 1. a finished request under the same key replays its answer (another body: key conflict);
//! 2. a transaction id answered before under another key replays that answer when the
//!    request asks for the same money (the new key records it too), else transaction conflict;
//! 3. a transaction id first seen through the processor's verdict takes that verdict as
//!    its answer, moving nothing (the verdict booked what it said);
//! 4. otherwise [`decide`] on the account and card as the earlier requests left them; an
//!    approval of a non-zero amount moves it between the account and processor clearing.

use super::{
    Asked, CardLookup, CardTransaction, KeyRecord, KeyRow, MovementRow, Outcome, Plan, PlanError,
    PostingRow, RecordRow, RecordWrite, RecordedTransaction, Snapshot, StoredResponse, Writes,
    day_of,
};
use crate::decision::{AuthorizationInput, Decision, Decline, RequestKind, decide};
use crate::money::to_minor;
use crate::{Currency, PostingPlan};
use std::collections::HashMap;

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
    } = snapshot;
    let mut movement_ids = movement_ids.into_iter();
    let mut posting_ids = posting_ids.into_iter();
    let mut writes = Writes::default();
    // The account rows as read, for the writers that hold no lock; and where each touched
    // account's write is.
    let mut read: HashMap<i64, (i64, i64, i64)> = HashMap::new();
    let mut touched: HashMap<i64, usize> = HashMap::new();
    for a in accounts.values() {
        read.insert(a.id, (a.version, a.balance, a.held));
    }
    let mut outcomes = Vec::with_capacity(requests.len());
    for (idx, req) in requests.iter().enumerate() {
        let t = &req.tx;
        if let Some(rec) = keys.get(req.idempotency_key) {
            outcomes.push(if rec.request_hash[..] == req.request_hash[..] {
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
                // First seen through the processor's verdict: that verdict stands.
                let decision = if verdict_first.verdict.as_deref() == Some("APPROVED") {
                    Decision::Approved {
                        amount: verdict_first.amount_minor.unwrap_or(0),
                        balance_after: 0,
                        daily_spent_after: 0,
                    }
                } else {
                    Decision::Declined(Decline::RejectedByProcessor)
                };
                let result = AuthorizationResult {
                    decision,
                    currency,
                    movement_id: None,
                };
                let amount_minor = verdict_first.amount_minor;
                record(
                    &mut writes,
                    idx,
                    RecordWrite::Answer,
                    amount_minor,
                    result,
                    &render,
                )
            }
            None => {
                let today = day_of(req.now_ms);
                let account_key = t.user_id.zip(currency).map(|(u, c)| (u.to_owned(), c));
                let account = account_key.as_ref().and_then(|k| accounts.get_mut(k));
                let card = match (t.card_id, req.card.known(t.user_id)) {
                    (None, _) => None,
                    (Some(_), Some(known)) => known,
                    (Some(id), None) => cards.get(id).map(|c| c.state_for(t.user_id)),
                };
                let input = AuthorizationInput {
                    kind: req.kind,
                    currency,
                    amount: t.amount,
                    mcc: t.mcc,
                };
                let decision = decide(
                    &input,
                    account.as_ref().map(|a| a.state(today)).as_ref(),
                    card.as_ref(),
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
                    acct.daily_spent_day = today;
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
                    let (read_version, read_balance, read_held) =
                        read.get(&acct.id).copied().unwrap_or_default();
                    let write = super::AccountWrite {
                        id: acct.id,
                        balance: acct.balance,
                        version: acct.version,
                        daily_spent_day: acct.daily_spent_day,
                        daily_spent: acct.daily_spent,
                        read_version,
                        read_balance,
                        read_held,
                    };
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
                };
                record(
                    &mut writes,
                    idx,
                    RecordWrite::Insert,
                    amount_minor,
                    result,
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
    Ok(Plan { outcomes, writes })
}

/// Renders the answer to request `idx`, records it, and returns it as the request's outcome.
fn record<R>(
    writes: &mut Writes,
    idx: usize,
    write: RecordWrite,
    amount_minor: Option<i64>,
    result: AuthorizationResult,
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
