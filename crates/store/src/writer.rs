//! The one writer's batches: every money-moving request of a batch, of whatever kind,
//! planned in order and written in one transaction with one commit.
//!
//! A batch of authorizations alone takes the authorizations' own path ([`crate::batch`]:
//! two statements on Postgres, one transaction on the embedded store). A batch that mixes
//! kinds (authorizations, adjustments, notifications, deposits and withdrawals, the
//! channels' reservations, captures, cancels and refunds, the expiry of overdue holds,
//! the sweeper's or a read's, and the InStore extension's enveloped requests) runs each
//! request's read, plan and write in one transaction, in arrival order, so each sees what
//! the earlier ones wrote, and commits once. Should that transaction pass an authorization's
//! or a reservation's deadline, or meet a requester that gave up, nothing of it is
//! committed: the requests that can no longer commit leave the batch, the rest go again as
//! one transaction, and the late ones run alone (a batch of one) last, so one late request
//! never fails its neighbours nor makes each of them wait for a transaction of its own.
//! Should it lose a race on a unique key or a deadlock with nobody late, every request runs
//! again alone. So it does when one request's own data fails the transaction (a value the
//! schema refuses, a plan the ledger refuses): that request fails alone, its neighbours
//! commit.

use crate::admin::{FundingCall, FundingOutcome};
use crate::authorize::{Written, authorize_on};
use crate::batch::{BatchItem, deadline_passed, start_commit};
use crate::holds::{
    ChannelAnswer, ChannelCall, ChannelOutcome, Expired, ExpiryCall, HoldOp, HoldTerms,
    reservation_may_commit,
};
use crate::instore::{InstoreOp, InstoreOutcome};
use crate::processor::{
    AdjustmentResult, AuthorizationResult, CardTransaction, CommitDeadline, CommitGate,
    NotificationCall, NotificationResult, Outcome, ProcessorCall, Step, adjust_on, notify_on,
};
use crate::rules::CardRecord;
use crate::wallet::WalletOp;
use crate::{Store, StoreError, StoredResponse};
use ledger::verdicts::{AdjustmentTerms, SystemIds};
use ledger::{Currency, RequestKind, SystemAccount};
use std::collections::HashMap;
use std::time::Instant;

/// Why a batch's transaction committed nothing and goes again.
enum Again {
    /// A deadline or a gate refused the commit.
    Late,
    /// A request's own data may have failed it: every request runs alone.
    Alone,
}

/// One money-moving request of a batch.
#[derive(Clone, Copy)]
pub enum Work<'a> {
    Authorization(BatchItem<'a>),
    Adjustment {
        call: ProcessorCall<'a>,
        tx: CardTransaction<'a>,
        direction: RequestKind,
    },
    Notification(NotificationCall<'a>),
    Funding {
        call: FundingCall<'a>,
        /// (movement id, available after) to the exact answer stored for replays.
        render: &'a (dyn Fn(i64, i64) -> StoredResponse + Send + Sync),
    },
    Hold(HoldOp<'a>),
    /// Overdue holds expired: the sweeper's batch, or one hold a read found overdue.
    Expiry(ExpiryCall<'a>),
    /// An enveloped InStore request (create, lookup, Load, Redeem, Cancel).
    Instore(InstoreOp<'a>),
    /// An InStore wallet request (pay, refund, cancel, log, available refund).
    Wallet(WalletOp<'a>),
}

/// What one request of a batch came to.
#[derive(Debug)]
pub enum Done {
    Authorization(Result<Outcome<AuthorizationResult>, StoreError>),
    Adjustment(Result<Outcome<AdjustmentResult>, StoreError>),
    Notification(Result<Outcome<NotificationResult>, StoreError>),
    Funding(Result<FundingOutcome, StoreError>),
    Hold(Result<ChannelOutcome, StoreError>),
    Expiry(Result<Expired, StoreError>),
    Instore(Result<InstoreOutcome, StoreError>),
    Wallet(Result<InstoreOutcome, StoreError>),
}

/// How each kind's answer is rendered into the exact bytes stored for replays.
pub struct Renders<'r> {
    pub authorization: &'r (dyn Fn(&AuthorizationResult) -> Vec<u8> + Sync),
    pub adjustment: &'r (dyn Fn(&AdjustmentResult) -> Vec<u8> + Sync),
    pub notification: &'r (dyn Fn(&NotificationResult) -> Vec<u8> + Sync),
    pub channel: &'r (dyn Fn(&ChannelAnswer<'_>) -> Vec<u8> + Sync),
}

/// The system accounts each request uses, read before the transaction opens: creating one
/// commits on its own (and the embedded store's one connection is the transaction's).
#[derive(Default)]
struct Systems {
    clearing: HashMap<Currency, i64>,
    processor: Vec<Option<SystemIds>>,
    funding: Vec<i64>,
    /// Per hold operation: what it read first, or its answer without a transaction.
    holds: Vec<Option<Result<HoldTerms, ChannelOutcome>>>,
}

impl Store {
    /// Plans and writes `work` as one batch, handing each request's result to
    /// `done(index, result)` as soon as it is known; every card read for authorizations
    /// whose card was not known beforehand goes to `card_read` first (see
    /// [`Store::authorize_batch_each`]).
    pub async fn write_batch_each(
        &self,
        work: &[Work<'_>],
        renders: &Renders<'_>,
        mut done: impl FnMut(usize, Done),
        mut card_read: impl FnMut(&str, Option<CardRecord>),
    ) {
        let authorizations = authorizations_of(work);
        if authorizations.len() == work.len() {
            self.authorize_batch_each(
                &authorizations,
                renders.authorization,
                |i, r| done(i, Done::Authorization(r)),
                card_read,
            )
            .await;
            return;
        }
        // Requests of `work` still to write together, and those to run alone at the end.
        let mut together: Vec<usize> = (0..work.len()).collect();
        let mut alone: Vec<usize> = Vec::new();
        loop {
            let batch: Vec<Work<'_>> = together.iter().map(|&i| work[i]).collect();
            match self.attempt(&batch, renders, &mut card_read).await {
                Ok(results) => {
                    for (j, d) in results.into_iter().enumerate() {
                        done(together[j], d);
                    }
                    break;
                }
                Err(Again::Alone) => {
                    // Nothing was committed; a request's own data failed the transaction.
                    alone.append(&mut together);
                    break;
                }
                Err(Again::Late) => {
                    // Nothing was committed. The requests that can no longer commit (past
                    // their deadline, or their requester gave up) leave the batch; the rest
                    // go again as one, so that a late authorization costs its neighbours one
                    // more transaction, not one each.
                    let (late, rest): (Vec<usize>, Vec<usize>) =
                        together.iter().partition(|&&i| past_deadline(&work[i]));
                    if late.is_empty() {
                        alone.append(&mut together);
                        break;
                    }
                    alone.extend(late);
                    together = rest;
                    if together.is_empty() {
                        break;
                    }
                }
            }
        }
        alone.sort_unstable();
        for i in alone {
            let w = &work[i];
            done(
                i,
                if abandoned(w) {
                    // Its requester was answered "nothing booked" and waits for nothing.
                    failed(w, StoreError::Timeout("abandoned at its deadline".into()))
                } else {
                    self.alone(w, renders).await
                },
            );
        }
    }

    /// `work` in one transaction: each request's result, in order; `Err(Again::Late)`:
    /// nothing was committed, and a request's deadline or gate refused the commit (their
    /// gates are open again); `Err(Again::Alone)`: nothing was committed, and the failure
    /// may be one request's own (each goes again alone).
    async fn attempt<'i>(
        &self,
        work: &[Work<'i>],
        renders: &Renders<'_>,
        card_read: &mut impl FnMut(&'i str, Option<CardRecord>),
    ) -> Result<Vec<Done>, Again> {
        let authorizations = authorizations_of(work);
        let mut systems = match self.systems(work, &authorizations).await {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                return Ok(work
                    .iter()
                    .map(|w| failed(w, StoreError::Timeout(msg.clone())))
                    .collect());
            }
        };
        let mut cards = Vec::new();
        let attempt = self.mixed(work, &systems, renders, &mut cards).await;
        for (id, record) in cards {
            card_read(id, record);
        }
        match attempt {
            Ok(outcomes) => Ok(outcomes
                .into_iter()
                .enumerate()
                .map(|(i, o)| {
                    // A hold operation answered before the transaction has no outcome in it.
                    let answered = || match systems.holds[i].take() {
                        Some(Err(answer)) => Done::Hold(Ok(answer)),
                        _ => Done::Hold(Err(StoreError::Invalid("no outcome planned".into()))),
                    };
                    o.unwrap_or_else(answered)
                })
                .collect()),
            Err(Step::Retry) => {
                reopen_gates(work);
                Err(Again::Late)
            }
            Err(Step::Fail(e)) if work.len() > 1 && e.is_request_specific() => {
                tracing::warn!(
                    requests = work.len(),
                    error = %e,
                    "a batch failed on a request's own data: each of its requests goes again alone"
                );
                reopen_gates(work);
                Err(Again::Alone)
            }
            Err(Step::Fail(e)) => {
                let uncertain = matches!(e, StoreError::Uncertain(_));
                let msg = e.to_string();
                Ok(work
                    .iter()
                    .map(|w| {
                        let e = if uncertain {
                            StoreError::Uncertain(format!("batch: {msg}"))
                        } else {
                            StoreError::Timeout(format!("batch failed: {msg}"))
                        };
                        failed(w, e)
                    })
                    .collect())
            }
        }
    }

    async fn systems(
        &self,
        work: &[Work<'_>],
        authorizations: &[BatchItem<'_>],
    ) -> Result<Systems, StoreError> {
        let mut s = Systems {
            clearing: self.clearing_accounts(authorizations).await?,
            ..Systems::default()
        };
        for w in work {
            let (processor, funding) = match w {
                Work::Authorization(_) => (None, 0),
                Work::Adjustment { tx, direction, .. } => {
                    let terms = AdjustmentTerms::new(tx, *direction);
                    (self.system_ids(terms.currency).await?, 0)
                }
                Work::Notification(n) => (self.system_ids(n.ask().currency()).await?, 0),
                Work::Funding { call, .. } => (
                    None,
                    self.system_account(SystemAccount::Funding, call.currency)
                        .await?,
                ),
                Work::Hold(_) | Work::Expiry(_) | Work::Instore(_) | Work::Wallet(_) => (None, 0),
            };
            s.holds.push(match w {
                Work::Hold(op) => Some(self.hold_terms(op).await?),
                _ => None,
            });
            s.processor.push(processor);
            s.funding.push(funding);
        }
        Ok(s)
    }

    /// Every request in order on one transaction, one commit. `Err(Step::Retry)`: nothing
    /// was committed and each request is to run alone.
    async fn mixed<'i>(
        &self,
        work: &[Work<'i>],
        systems: &Systems,
        renders: &Renders<'_>,
        cards: &mut Vec<(&'i str, Option<CardRecord>)>,
    ) -> Result<Vec<Option<Done>>, Step> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(work.len());
        // The authorizations whose decisions this transaction writes, and their deliveries.
        let mut deciding: Vec<BatchItem<'i>> = Vec::new();
        let mut handed = Vec::new();
        // The reservations it decides.
        let mut reserving: Vec<ChannelCall<'i>> = Vec::new();
        // The deadlines of the InStore and wallet requests it writes (a replay writes
        // nothing: its answer stands whenever it is given).
        let mut writing: Vec<&CommitDeadline> = Vec::new();
        let mut i = 0;
        while i < work.len() {
            let system = systems.processor[i];
            match &work[i] {
                Work::Authorization(_) => {
                    // A run of authorizations is planned together, as a batch of them is.
                    let run: Vec<BatchItem<'i>> = work[i..]
                        .iter()
                        .map_while(|w| match w {
                            Work::Authorization(item) => Some(*item),
                            _ => None,
                        })
                        .collect();
                    let (outcomes, written, run_handed) = authorize_on(
                        self,
                        &mut tx,
                        &run,
                        &systems.clearing,
                        &renders.authorization,
                        cards,
                    )
                    .await?;
                    if written == Written::Decisions {
                        deciding.extend_from_slice(&run);
                    }
                    handed.extend(run_handed);
                    i += run.len();
                    out.extend(
                        outcomes
                            .into_iter()
                            .map(|o| Some(Done::Authorization(Ok(o)))),
                    );
                    continue;
                }
                Work::Adjustment {
                    call,
                    tx: t,
                    direction,
                } => {
                    let terms = AdjustmentTerms::new(t, *direction);
                    let o = adjust_on(
                        self,
                        &mut tx,
                        call,
                        t,
                        *direction,
                        &terms,
                        system,
                        &renders.adjustment,
                    )
                    .await?;
                    out.push(Some(Done::Adjustment(Ok(o))));
                }
                Work::Notification(n) => {
                    let ask = n.ask();
                    let o =
                        notify_on(self, &mut tx, n, &ask, system, &renders.notification).await?;
                    out.push(Some(Done::Notification(Ok(o))));
                }
                Work::Funding { call, render } => {
                    let o = self
                        .fund_on(&mut tx, call, systems.funding[i], render)
                        .await?;
                    out.push(Some(Done::Funding(Ok(o))));
                }
                Work::Hold(op) => match &systems.holds[i] {
                    Some(Ok(terms)) => {
                        let o = self.hold_on(&mut tx, op, terms, &renders.channel).await?;
                        if let (HoldOp::Reserve { call, .. }, ChannelOutcome::Fresh { .. }) =
                            (op, &o)
                        {
                            reserving.push(*call);
                        }
                        out.push(Some(Done::Hold(Ok(o))));
                    }
                    // Answered without a transaction (no such reservation).
                    _ => out.push(None),
                },
                Work::Expiry(call) => {
                    let o = self.expire_on(&mut tx, call).await?;
                    out.push(Some(Done::Expiry(Ok(o))));
                }
                Work::Instore(op) => {
                    let o = self.instore_on(&mut tx, op).await?;
                    if matches!(o, InstoreOutcome::Done { .. }) {
                        writing.extend(op.call.deadline.as_ref());
                    }
                    out.push(Some(Done::Instore(Ok(o))));
                }
                Work::Wallet(op) => {
                    let o = self.wallet_on(&mut tx, op).await?;
                    if matches!(o, InstoreOutcome::Done { .. }) {
                        writing.extend(op.call.deadline.as_ref());
                    }
                    out.push(Some(Done::Wallet(Ok(o))));
                }
            }
            i += 1;
        }
        // Late or abandoned authorizations: run alone, each meets its own deadline and gate
        // while the rest still commit.
        if deadline_passed(&deciding)
            || !start_commit(&deciding)
            || reserving.iter().any(|c| reservation_may_commit(c).is_err())
            || writing
                .iter()
                .any(|d| CommitDeadline::check(Some(d), "request").is_err())
        {
            return Err(Step::Retry);
        }
        if let Err(e) = tx.commit().await {
            self.commit_uncertain(&handed);
            return Err(Step::Fail(e));
        }
        self.hand_over(handed);
        Ok(out)
    }

    /// A request of a batch in a transaction of its own (a batch of one).
    async fn alone(&self, w: &Work<'_>, renders: &Renders<'_>) -> Done {
        match w {
            Work::Authorization(item) => Done::Authorization(
                self.authorize_with(
                    &item.call,
                    &item.tx,
                    item.kind,
                    item.card,
                    renders.authorization,
                )
                .await,
            ),
            Work::Adjustment {
                call,
                tx: t,
                direction,
            } => Done::Adjustment(self.adjust(call, t, *direction, &renders.adjustment).await),
            Work::Notification(n) => {
                Done::Notification(self.notify(n, &renders.notification).await)
            }
            Work::Funding { call, render } => Done::Funding(self.fund(call, render).await),
            Work::Hold(op) => Done::Hold(self.hold_alone(op, &renders.channel).await),
            Work::Expiry(call) => Done::Expiry(self.expire_alone(call).await),
            Work::Instore(op) => Done::Instore(self.instore_alone(op).await),
            Work::Wallet(op) => Done::Wallet(self.wallet_alone(op).await),
        }
    }
}

/// The authorizations of `work`, in order.
fn authorizations_of<'i>(work: &[Work<'i>]) -> Vec<BatchItem<'i>> {
    work.iter()
        .filter_map(|w| match w {
            Work::Authorization(item) => Some(*item),
            _ => None,
        })
        .collect()
}

/// The deadline of a request that carries one of its own (InStore, wallet).
fn deadline_of<'w>(w: &Work<'w>) -> Option<&'w CommitDeadline> {
    match w {
        Work::Instore(op) => op.call.deadline.as_ref(),
        Work::Wallet(op) => op.call.deadline.as_ref(),
        _ => None,
    }
}

/// The commit gate of a request that has one (an authorization, a reservation, an InStore
/// or wallet request).
/// Nothing of `work` was committed: its requesters may give up at their deadline again.
fn reopen_gates(work: &[Work<'_>]) {
    for gate in work.iter().filter_map(gate_of) {
        gate.reopen();
    }
}

fn gate_of<'w>(w: &Work<'w>) -> Option<&'w CommitGate> {
    match w {
        Work::Authorization(item) => item.call.commit_started,
        Work::Hold(HoldOp::Reserve { call, .. }) => call.commit_started,
        _ => deadline_of(w).map(|d| &*d.gate),
    }
}

/// The commit deadline of a request that has one.
fn commit_by(w: &Work<'_>) -> Option<Instant> {
    match w {
        Work::Authorization(item) => item.call.commit_by,
        Work::Hold(HoldOp::Reserve { call, .. }) => call.commit_by,
        _ => deadline_of(w).map(|d| d.by),
    }
}

/// Whether `w` can no longer commit a decision: its commit deadline passed, or its requester
/// gave up.
fn past_deadline(w: &Work<'_>) -> bool {
    commit_by(w).is_some_and(|d| Instant::now() >= d) || abandoned(w)
}

/// Whether `w`'s requester gave up at its deadline.
fn abandoned(w: &Work<'_>) -> bool {
    gate_of(w).is_some_and(CommitGate::abandoned)
}

/// The failure `e` as the result of `w`'s kind.
fn failed(w: &Work<'_>, e: StoreError) -> Done {
    match w {
        Work::Authorization(_) => Done::Authorization(Err(e)),
        Work::Adjustment { .. } => Done::Adjustment(Err(e)),
        Work::Notification(_) => Done::Notification(Err(e)),
        Work::Funding { .. } => Done::Funding(Err(e)),
        Work::Hold(_) => Done::Hold(Err(e)),
        Work::Expiry(_) => Done::Expiry(Err(e)),
        Work::Instore(_) => Done::Instore(Err(e)),
        Work::Wallet(_) => Done::Wallet(Err(e)),
    }
}
