//! The digital wallet decisions of one InStore request (instore-extensions.md section 4),
//! from the store's snapshot to the exact bytes of its answer and the rows to write. Pure
//! apart from drawing random ids: the request goes to the batcher, the one writer, whose
//! batch calls [`WalletPlanner::plan`] inside its transaction, after locking the account
//! the barcode or the payment names, and writes the result in the same commit.
//!
//! route (signature, parse) -> wallet_service -> batcher -> store

use crate::app::AppState;
use crate::batcher::{Job, WalletJob};
use crate::instore_service::{callback_headers, funds_of, random_digits, random_id};
use instore::body::{self, PayWalletResponse, RefundWalletResponse, WalletMerchant};
use instore::decision::{
    Barcode, WalletPayDecision, WalletPayment, decide_available_refund, decide_pay_wallet,
    decide_wallet_refund, decide_wallet_reversal,
};
use instore::money::{WALLET_PRECISION, listed_currency, to_minor, to_minor_positive};
use instore::payload::{
    AvailableWalletRefund, CancelWalletPayment, InitializeWallet, LogCancelWallet, PayWallet,
    RefundWalletPayment,
};
use instore::{Amount, InstoreError, Outcome, Reason, Tenant, Value, WalletAction};
use ledger::controls::Controls;
use ledger::plan::{Counting, DebitAsk, plan_debit};
use ledger::{AuthorizationInput, Currency, Decision, DeclineClass, MccSet, RequestKind};
use rust_decimal::Decimal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::wallet::{NewWalletPayment, NewWalletReturn, PaymentRow, ReturnKind, WalletDecision};
use store::{InstoreOutcome, StoreError, WalletCall, WalletPlan, WalletPlanner, WalletSnapshot};

/// A typed wallet request, read from the verified payload.
#[derive(Debug, Clone)]
pub enum WalletRequest {
    Initialize(InitializeWallet),
    Pay(PayWallet),
    AvailableRefund(AvailableWalletRefund),
    Cancel(CancelWalletPayment),
    LogCancel(LogCancelWallet),
    Refund(RefundWalletPayment),
}

impl WalletRequest {
    /// Reads `value` as `action`'s request (400 on a missing or mistyped field).
    pub fn read(action: WalletAction, value: &Value) -> Result<WalletRequest, InstoreError> {
        Ok(match action {
            WalletAction::Initialize => WalletRequest::Initialize(InitializeWallet::read(value)?),
            WalletAction::Pay => WalletRequest::Pay(PayWallet::read(value)?),
            WalletAction::AvailableRefund => {
                WalletRequest::AvailableRefund(AvailableWalletRefund::read(value)?)
            }
            WalletAction::CancelPayment => WalletRequest::Cancel(CancelWalletPayment::read(value)?),
            WalletAction::LogCancel => WalletRequest::LogCancel(LogCancelWallet::read(value)?),
            WalletAction::Refund => WalletRequest::Refund(RefundWalletPayment::read(value)?),
        })
    }

    /// The store's call for this request: what to read and lock, and how it is replayed.
    pub fn call(&self, action: WalletAction, tenant_id: &str) -> WalletCall {
        let mut call = WalletCall {
            tenant_id: tenant_id.to_owned(),
            action: action.path(),
            request_hash: String::new(),
            envelope: None,
            barcode: None,
            payment_transaction_id: None,
            payment_barcode: None,
            replay_by_body: false,
            correlation_id: None,
            now_ms: store::now_ms(),
            deadline: None,
        };
        match self {
            WalletRequest::Initialize(_) => {}
            WalletRequest::Pay(p) => call.barcode = Some(p.barcode.clone()),
            WalletRequest::AvailableRefund(r) => {
                call.payment_transaction_id = Some(r.transaction_id.clone());
            }
            WalletRequest::Refund(r) => {
                call.payment_transaction_id = Some(r.transaction_id.clone());
                call.replay_by_body = true;
            }
            WalletRequest::Cancel(c) => {
                call.payment_transaction_id = c.transaction_id.clone();
                call.payment_barcode = c.barcode.clone();
                call.replay_by_body = true;
            }
            WalletRequest::LogCancel(l) => {
                call.payment_transaction_id = l.transaction_id.clone();
                call.payment_barcode = l.barcode.clone();
                call.replay_by_body = true;
            }
        }
        call
    }
}

/// One request's plan with everything it needs, owned: the writer plans it on its own
/// task, and again should its batch lose a race and run each request alone.
pub struct Planner {
    request: WalletRequest,
    tenant: Tenant,
    /// Enveloped: the `requestId` the answer echoes and the callback carries.
    request_id: Option<String>,
    correlation_id: Option<String>,
    request_hash: String,
    method: String,
    now_ms: i64,
    /// The business outcome of the latest plan (`None`: approved), for the log line.
    declined: Mutex<Option<Reason>>,
}

impl Planner {
    pub fn new(
        request: WalletRequest,
        tenant: &Tenant,
        call: &WalletCall,
        method: &str,
    ) -> Planner {
        Planner {
            request,
            tenant: tenant.clone(),
            request_id: call.envelope.as_ref().map(|(id, _)| id.clone()),
            correlation_id: call.correlation_id.clone(),
            request_hash: call.request_hash.clone(),
            method: method.to_owned(),
            now_ms: call.now_ms,
            declined: Mutex::new(None),
        }
    }

    /// The business outcome of the plan that was written.
    pub fn declined(&self) -> Option<Reason> {
        *self.declined.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn merchant(&self) -> WalletMerchant<'_> {
        WalletMerchant {
            merchant_id: &self.tenant.merchant_id,
            terminal_id: &self.tenant.terminal_id,
            method: &self.method,
        }
    }

    /// The payment as the decisions read it: another tenant's reads as unknown.
    fn payment(&self, row: Option<&PaymentRow>) -> Option<WalletPayment> {
        row.map(|p| WalletPayment {
            tenant_matches: p.tenant_id == self.tenant.tenant_id,
            currency: p.currency,
            total: p.total,
            refunded: p.refunded,
            reversed: p.reversed,
        })
    }

    /// The spending controls of the barcode's account and card on a payment of `total` at
    /// this tenant's store (its `mcc` and `country`), decided as a debit authorization is
    /// (docs/controls.md), the legacy blocked MCCs included: what the payment counts, or why
    /// it is declined (a limit: `LIMIT_EXCEEDED`; a category, country or another rule:
    /// `NOT_PERMITTED`).
    ///
    /// With the decision comes its explanation (the checks run, with their inputs, in the
    /// stored form an authorization keeps); `None` without an account to decide on.
    fn spending_controls(
        &self,
        snap: &WalletSnapshot,
        currency: Currency,
        total: i64,
    ) -> (Result<Option<Counting>, Reason>, Option<String>) {
        let Some((b, account)) = snap
            .barcode
            .as_ref()
            .and_then(|b| Some((b, b.account.as_ref()?)))
        else {
            return (Ok(None), None);
        };
        let input = AuthorizationInput {
            kind: Some(RequestKind::Debit),
            currency: Some(currency),
            amount: Some(Decimal::new(total, u32::from(currency.exponent()))),
            mcc: self.tenant.store.mcc.as_deref(),
        };
        let ask = DebitAsk {
            user_id: &b.user_id,
            country: self.tenant.store.country.as_deref(),
            input: &input,
            now_ms: self.now_ms,
        };
        // A fact the tenant's configuration does not give (the store's category or
        // country) is not in doubt, as a network merchant's missing one is: the rules that
        // read it are left out instead of declining (see `Controls::for_merchant_facts`).
        let (category_known, country_known) = (ask.input.mcc.is_some(), ask.country.is_some());
        let judged = |c: &Option<Arc<Controls>>| {
            c.as_ref()
                .map(|c| Arc::new(c.for_merchant_facts(category_known, country_known)))
        };
        let mut account = account.clone();
        account.controls = judged(&account.controls);
        let card = b.card.as_ref().map(|(id, r)| {
            let mut r = r.clone();
            r.controls = judged(&r.controls);
            if !category_known {
                r.blocked_mccs = MccSet::default();
            }
            (id.as_str(), r)
        });
        if !category_known {
            account.blocked_mccs = MccSet::default();
        }
        let card = card.as_ref().map(|(id, r)| (*id, r));
        let counters = b.card_counters.clone();
        let plan = plan_debit(&ask, Some(&account), card, counters, &snap.time_zone);
        let decided = match plan.decision {
            Decision::Declined(d) => Err(match d.class() {
                DeclineClass::InvalidAmount => Reason::LimitExceeded,
                DeclineClass::InsufficientFunds => Reason::InsufficientFunds,
                DeclineClass::InvalidMerchant | DeclineClass::Other => Reason::NotPermitted,
            }),
            Decision::Approved { .. } | Decision::Balance { .. } => Ok(plan.counted),
        };
        (decided, Some(plan.explanation))
    }

    /// The payment's currency and amounts (total, tip) as asked, when they read in the
    /// currency of the barcode's account.
    fn asked(p: &PayWallet, snap: &WalletSnapshot) -> Option<(Currency, i64, i64)> {
        let account = snap.barcode.as_ref()?.account.as_ref()?;
        let c = listed_currency(&p.currency)
            .ok()
            .filter(|c| *c == account.currency)?;
        let total = to_minor_positive(p.total, WALLET_PRECISION, c).ok()?;
        Some((c, total, to_minor(p.tip, WALLET_PRECISION, c).ok()?))
    }

    fn plan_pay(&self, p: &PayWallet, snap: &WalletSnapshot, out: &mut WalletPlan) -> Outcome {
        let barcode = snap.barcode.as_ref().and_then(|b| {
            let a = b.account.as_ref()?;
            Some(Barcode {
                tenant_matches: true,
                expired: b.expires_at_ms <= self.now_ms,
                // A payment of another tenant is never replayed to this one.
                used_by_request_hash: b.used.as_ref().map(|(tenant, hash, _)| {
                    if *tenant == self.tenant.tenant_id {
                        hash.clone()
                    } else {
                        String::new()
                    }
                }),
                card_active: b.card_status.as_deref().is_none_or(|s| s == "ACTIVE"),
                funds: funds_of(a, self.now_ms),
            })
        });
        let decided = decide_pay_wallet(
            barcode.as_ref(),
            &self.request_hash,
            &p.currency,
            p.total,
            p.tip,
        );
        // Approved on the wallet's rules: the spending controls have the last word.
        let mut counted = None;
        let mut explanation = None;
        let asked = Self::asked(p, snap);
        let decided = match decided {
            WalletPayDecision::Approved {
                currency, total, ..
            } => {
                let (judged, why) = self.spending_controls(snap, currency, total);
                explanation = why;
                match judged {
                    Ok(c) => {
                        counted = c;
                        decided
                    }
                    Err(reason) => WalletPayDecision::Declined(reason),
                }
            }
            // The wallet's own limits or funds declined: the same debit as the controls read
            // it explains why (the account as read, its limits and what they had counted),
            // when they decline it for the same reason; else it would explain another answer.
            WalletPayDecision::Declined(
                reason @ (Reason::LimitExceeded | Reason::InsufficientFunds),
            ) => {
                if let Some((currency, total, _)) = asked {
                    let (judged, why) = self.spending_controls(snap, currency, total);
                    explanation = why.filter(|_| judged.err() == Some(reason));
                }
                decided
            }
            other => other,
        };
        let keep = |out: &mut WalletPlan, transaction_id: Option<&str>, outcome: &'static str| {
            out.decision = snap
                .barcode
                .as_ref()
                .and_then(|b| b.account.as_ref())
                .map(|a| WalletDecision {
                    transaction_id: transaction_id.map(str::to_owned),
                    currency: a.currency,
                    total: asked.map(|(_, t, _)| t),
                    tip: asked.map(|(_, _, t)| t),
                    outcome: outcome.to_owned(),
                    explanation: explanation.clone(),
                });
        };
        let mut response = PayWalletResponse {
            request_id: self.request_id.as_deref(),
            transaction_id: None,
            total: None,
            tip: None,
            subtotal: None,
            merchant: self.merchant(),
            pos_local_time: p.pos_local_time.as_deref(),
            outcome: Outcome::APPROVED,
        };
        match decided {
            WalletPayDecision::Replay => {
                let (_, _, bytes) = snap
                    .barcode
                    .as_ref()
                    .and_then(|b| b.used.clone())
                    .expect("a replay has the payment that used the barcode");
                // The payment's answer, written for this request's shape: an envelope's
                // callback starts with its own requestId, a bare answer has none.
                out.response = instore::body::for_request(&bytes, self.request_id.as_deref())
                    .map_or(bytes, String::into_bytes);
                out.replay = true;
                Outcome::APPROVED
            }
            WalletPayDecision::Approved {
                currency,
                total,
                tip,
                subtotal,
            } => {
                let id = random_id("wtx-");
                response.transaction_id = Some(&id);
                response.total = Some(Amount::new(total, currency));
                response.tip = Some(Amount::new(tip, currency));
                response.subtotal = Some(Amount::new(subtotal, currency));
                out.response = response.to_js().into_bytes();
                out.payment = Some(NewWalletPayment {
                    transaction_id: id.clone(),
                    barcode: p.barcode.clone(),
                    currency,
                    total,
                    tip,
                    counted,
                });
                keep(out, Some(&id), "APPROVED");
                Outcome::APPROVED
            }
            WalletPayDecision::Declined(reason) => {
                response.outcome = Outcome::declined(reason);
                out.response = response.to_js().into_bytes();
                keep(out, None, reason.as_str());
                response.outcome
            }
        }
    }

    fn plan_refund(
        &self,
        r: &RefundWalletPayment,
        snap: &WalletSnapshot,
        out: &mut WalletPlan,
    ) -> Outcome {
        let row = snap.payment.as_ref();
        let decided = decide_wallet_refund(self.payment(row).as_ref());
        let mut response = RefundWalletResponse {
            request_id: self.request_id.as_deref(),
            transaction_id: None,
            pos_local_time: r.pos_local_time.as_deref(),
            merchant: self.merchant(),
            original_transaction_id: &r.transaction_id,
            original_reference: None,
            outcome: Outcome::APPROVED,
        };
        let id;
        match (decided, row) {
            (Ok(amount), Some(p)) => {
                id = random_id("wtx-");
                response.transaction_id = Some(&id);
                response.original_reference = p.reference.as_deref();
                out.refund = Some(NewWalletReturn {
                    kind: ReturnKind::Refund,
                    transaction_id: id.clone(),
                    payment_transaction_id: p.transaction_id.clone(),
                    amount,
                });
            }
            (Ok(_), None) => response.outcome = Outcome::declined(Reason::NotFound),
            (Err(reason), _) => response.outcome = Outcome::declined(reason),
        }
        out.response = response.to_js().into_bytes();
        out.record_payment = row.map(|p| p.transaction_id.clone());
        response.outcome
    }

    /// `cancel_wallet_payment` (no log) and `log_cancel_wallet` (`log`: its currency and
    /// total, which must match): the part still standing of the payment named is reversed,
    /// once.
    fn plan_reversal(
        &self,
        names_payment: bool,
        log: Option<Option<(&str, instore::money::WireUint)>>,
        snap: &WalletSnapshot,
        out: &mut WalletPlan,
    ) -> Outcome {
        let row = snap.payment.as_ref();
        let payment = self.payment(row);
        let decided = match log {
            // A log without both its currency and total matches no payment.
            Some(None) => Ok(0),
            Some(Some(logged)) => decide_wallet_reversal(payment.as_ref(), Some(logged)),
            None => decide_wallet_reversal(payment.as_ref(), None),
        };
        let (outcome, reversed) = match (decided, row) {
            (Ok(amount), Some(p)) if amount > 0 => {
                out.refund = Some(NewWalletReturn {
                    kind: ReturnKind::Reversal,
                    transaction_id: random_id("wtx-"),
                    payment_transaction_id: p.transaction_id.clone(),
                    amount,
                });
                (Outcome::APPROVED, true)
            }
            (Ok(_), _) => (Outcome::APPROVED, false),
            // A cancel with no identifier has nothing to reverse; a log is stored whatever
            // it names.
            (Err(_), _) if !names_payment || log.is_some() => (Outcome::APPROVED, false),
            (Err(reason), _) => (Outcome::declined(reason), false),
        };
        out.response =
            body::wallet_status(self.request_id.as_deref(), outcome, None, Some(reversed))
                .into_bytes();
        out.record_payment = row
            .filter(|p| p.tenant_id == self.tenant.tenant_id)
            .map(|p| p.transaction_id.clone());
        if names_payment && out.record_payment.is_none() {
            // No payment of this tenant (yet: it may be committing elsewhere, the cancel
            // having overtaken it): the answer is not kept, so the same request sent again
            // is decided again and reverses the payment that stands by then.
            out.record = false;
        }
        outcome
    }
}

impl WalletPlanner for Planner {
    fn plan(&self, snap: &WalletSnapshot) -> WalletPlan {
        let mut out = WalletPlan::default();
        let outcome = match &self.request {
            WalletRequest::Initialize(_) => {
                out.response =
                    body::wallet_status(self.request_id.as_deref(), Outcome::APPROVED, None, None)
                        .into_bytes();
                Outcome::APPROVED
            }
            WalletRequest::Pay(p) => self.plan_pay(p, snap, &mut out),
            WalletRequest::AvailableRefund(_) => {
                let row = snap.payment.as_ref();
                let (outcome, total) =
                    match (decide_available_refund(self.payment(row).as_ref()), row) {
                        (Ok(n), Some(p)) => (Outcome::APPROVED, Some(Amount::new(n, p.currency))),
                        (Ok(_), None) => (Outcome::declined(Reason::NotFound), None),
                        (Err(reason), _) => (Outcome::declined(reason), None),
                    };
                out.response =
                    body::wallet_status(self.request_id.as_deref(), outcome, total, None)
                        .into_bytes();
                outcome
            }
            WalletRequest::Refund(r) => {
                out.record = true;
                self.plan_refund(r, snap, &mut out)
            }
            WalletRequest::Cancel(c) => {
                out.record = true;
                let names = c.transaction_id.is_some() || c.barcode.is_some();
                self.plan_reversal(names, None, snap, &mut out)
            }
            WalletRequest::LogCancel(l) => {
                out.record = true;
                out.record_reference = l.reference.clone();
                let logged = l.currency.as_deref().zip(l.total);
                self.plan_reversal(true, Some(logged), snap, &mut out)
            }
        };
        *self.declined.lock().unwrap_or_else(PoisonError::into_inner) = outcome.0;
        if let Some(request_id) = &self.request_id {
            out.ack = body::ack(request_id).into_bytes();
            out.callback_headers = callback_headers(
                self.tenant.verification_key(),
                self.correlation_id.as_deref(),
                &out.response,
            );
        }
        out
    }
}

/// Hands one wallet request to the batcher, the one writer, and waits for what its batch
/// committed, at most `instore.ack_deadline_ms`: a commit not started by then never
/// happens. `Err`: nothing was committed (the caller answers 503 and InStore resends).
pub async fn execute(
    state: &AppState,
    call: WalletCall,
    planner: Arc<Planner>,
) -> Result<InstoreOutcome, StoreError> {
    let deadline = Duration::from_millis(state.settings.instore.ack_deadline_ms);
    crate::service::within_deadline(state, deadline, "wallet request", |d, reply| {
        Job::Wallet(WalletJob {
            call: WalletCall {
                deadline: Some(d),
                ..call
            },
            planner,
            reply: Some(reply),
        })
    })
    .await
}

/// 24 decimal digits from the OS random source: a wallet barcode.
pub fn barcode_digits() -> String {
    random_digits(24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barcodes_are_24_digits_and_differ() {
        let a = barcode_digits();
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(a, barcode_digits());
    }
}
