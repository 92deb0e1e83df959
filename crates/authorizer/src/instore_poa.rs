//! The pay-on-account decisions of one request (instore-extensions.md section 3): from the
//! store's snapshot of the account to the exact bytes of the answer (and, enveloped, the
//! callback) and the row to write. Like the stored-value requests, every POA request, the
//! admin API's limit, block and reversal included, is a job of the one writer, planned
//! inside its batch's transaction after the account is locked.
//!
//! route (signature, parse, idempotency key) -> instore_poa -> batcher -> store

use crate::instore_service::{callback_headers, random_id};
use instore::body::{self, PoaResponse};
use instore::decision::{
    self, Funds, PoaAccount, PoaCreateDecision, PoaCreateRequest, decide_poa_create,
};
use instore::payload::{PoaAction, PoaLogRecord, PoaProcess, PoaStatus};
use instore::signature::sha256_hex;
use instore::{Amount, Outcome, Reason, Tenant};
use std::sync::{Mutex, PoisonError};
use store::{InstoreCall, PoaCall, PoaSnapshot, PoaWrite, SvPlan, SvPlanner, SvSnapshot};

/// The flag of a logged approved `Credit` that matches no charge (section 3.2).
pub const LOG_WITHOUT_CHARGE: &str = "LOG_WITHOUT_CHARGE";

/// An issuer's change to a POA account (section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoaAdmin {
    Settings {
        credit_limit: Option<i64>,
        blocked: Option<bool>,
    },
    Reverse {
        movement_id: i64,
    },
}

/// A typed POA request.
#[derive(Debug, Clone)]
pub enum PoaRequest {
    Process(PoaProcess),
    Log(PoaLogRecord),
    Admin {
        tenant_id: String,
        account_number: String,
        change: PoaAdmin,
    },
}

/// What an admin change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminResult {
    Done,
    AccountNotFound,
    ChargeNotFound,
    AlreadyReversed,
}

/// Facts of the latest plan that the route and the metrics need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoaNotes {
    pub declined: Option<Reason>,
    /// A log flagged `LOG_WITHOUT_CHARGE` now.
    pub unmatched_log: bool,
    pub admin: Option<AdminResult>,
}

/// One POA request's plan with everything it needs, owned (the writer plans it on its own
/// task, and again should its batch run each request alone).
pub struct PoaPlanner {
    request: PoaRequest,
    tenant: Option<Tenant>,
    /// The envelope's `requestId`: the answer is an ack and the result a callback.
    envelope_request_id: Option<String>,
    correlation_id: Option<String>,
    now_ms: i64,
    notes: Mutex<PoaNotes>,
}

impl PoaPlanner {
    pub fn new(
        request: PoaRequest,
        tenant: Option<&Tenant>,
        envelope_request_id: Option<&str>,
        correlation_id: Option<&str>,
        now_ms: i64,
    ) -> PoaPlanner {
        PoaPlanner {
            request,
            tenant: tenant.cloned(),
            envelope_request_id: envelope_request_id.map(str::to_owned),
            correlation_id: correlation_id.map(str::to_owned),
            now_ms,
            notes: Mutex::new(PoaNotes::default()),
        }
    }

    pub fn notes(&self) -> PoaNotes {
        *self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer's call for this request: keyed by `key` (the envelope's `requestId`, or a
    /// bare Credit's) or by nothing.
    /// `request_hash`: SHA-256 of `JS(payload)` (empty for the admin API's changes).
    pub fn call(
        &self,
        tenant_id: &str,
        key: Option<String>,
        callback_url: &str,
        request_hash: String,
    ) -> InstoreCall {
        let (account_number, action, charge, log_key, probe) = match &self.request {
            PoaRequest::Process(p) => (
                p.account_number.as_str().to_owned(),
                match p.action {
                    PoaAction::Create => "PoaCreate",
                    PoaAction::Credit => "PoaCredit",
                    PoaAction::Inquiry => "PoaInquiry",
                    PoaAction::Update => "PoaUpdate",
                },
                None,
                None,
                None,
            ),
            PoaRequest::Log(r) => (
                r.account_number.as_str().to_owned(),
                "PoaLog",
                None,
                Some((
                    r.session_id.clone().unwrap_or_default(),
                    r.order_id.clone().unwrap_or_default(),
                    r.action.as_str().to_owned(),
                )),
                logged_charge(r),
            ),
            PoaRequest::Admin {
                account_number,
                change,
                ..
            } => (
                account_number.clone(),
                "PoaAdmin",
                match change {
                    PoaAdmin::Reverse { movement_id } => Some(*movement_id),
                    PoaAdmin::Settings { .. } => None,
                },
                None,
                None,
            ),
        };
        InstoreCall {
            tenant_id: tenant_id.to_owned(),
            request_id: key.clone().unwrap_or_default(),
            action,
            request_hash,
            request_hash_unkeyed: None,
            callback_url: callback_url.to_owned(),
            correlation_id: self.correlation_id.clone(),
            numbers: Vec::new(),
            operation: None,
            duplicate_probe: None,
            location_id: String::new(),
            workstation_id: None,
            now_ms: self.now_ms,
            poa: Some(PoaCall {
                account_number,
                keyed: key.is_some(),
                charge_movement_id: charge,
                log_key,
                log_charge_probe: probe,
            }),
            deadline: None,
        }
    }
}

/// A logged approved `Credit`'s amount, to look for its charge.
fn logged_charge(r: &PoaLogRecord) -> Option<(ledger::Currency, i64)> {
    if r.action != PoaAction::Credit || r.status != PoaStatus::Approved {
        return None;
    }
    r.amount.as_ref().and_then(|a| a.resolve().ok())
}

fn log_hash(r: &PoaLogRecord) -> String {
    sha256_hex(body::poa_log_echo(None, r).as_bytes())
}

impl SvPlanner for PoaPlanner {
    fn plan(&self, snap: &SvSnapshot) -> SvPlan {
        let request_id = self.envelope_request_id.as_deref();
        let mut notes = PoaNotes::default();
        let (result, write) = match &self.request {
            PoaRequest::Process(p) => {
                let tenant = self
                    .tenant
                    .as_ref()
                    .expect("a process request has a tenant");
                plan_process(p, tenant, &snap.poa, request_id, &mut notes)
            }
            PoaRequest::Log(r) => plan_log(r, &snap.poa, request_id, &mut notes),
            PoaRequest::Admin {
                tenant_id,
                account_number,
                change,
            } => {
                let (done, write) = plan_admin(*change, (tenant_id, account_number), &snap.poa);
                notes.admin = Some(done);
                (String::new(), write)
            }
        };
        *self.notes.lock().unwrap_or_else(PoisonError::into_inner) = notes;
        let (ack, callback, headers) = match (request_id, &self.tenant) {
            (Some(id), Some(tenant)) => {
                let headers = callback_headers(
                    tenant.verification_key(),
                    self.correlation_id.as_deref(),
                    result.as_bytes(),
                );
                (body::ack(id), result, headers)
            }
            _ => (result, String::new(), Vec::new()),
        };
        SvPlan {
            ack: ack.into_bytes(),
            callback: callback.into_bytes(),
            callback_headers: headers,
            new_card: None,
            movement: None,
            pin_updates: Vec::new(),
            poa: write,
        }
    }
}

/// The account as the wire crate's decisions read it.
fn poa_account(snap: &PoaSnapshot) -> Option<PoaAccount> {
    snap.account.as_ref().map(|r| PoaAccount {
        tenant_matches: true,
        company_name: r.company_name.clone(),
        authorized_user_ids: r.authorized_user_ids.clone(),
        blocked: r.blocked,
        funds: Funds {
            overdraft_limit: r.account.overdraft_limit,
            held: r.account.held,
            ..Funds::plain(r.currency, r.account.balance)
        },
    })
}

fn plan_process(
    p: &PoaProcess,
    tenant: &Tenant,
    snap: &PoaSnapshot,
    request_id: Option<&str>,
    notes: &mut PoaNotes,
) -> (String, Option<PoaWrite>) {
    let account = poa_account(snap);
    let owed = |a: &PoaAccount| Amount::new(a.owed(), a.funds.currency);
    let limit = |a: &PoaAccount| Amount::new(a.credit_limit(), a.funds.currency);
    // Declines echo what the request said, and what we hold of the account.
    let declined = |reason: Reason| PoaResponse {
        request_id,
        action: p.action,
        account_number: &p.account_number,
        company_name: p.company_name.as_deref(),
        authorized_user_ids: p.authorized_user_ids.as_deref(),
        authorized_user_id: p.authorized_user_id.as_deref(),
        balance: account.as_ref().map(owed),
        credit_limit: None,
        outcome: Outcome::declined(reason),
    };
    let (response, write) = match p.action {
        PoaAction::Create => {
            let ids = p.authorized_user_ids.clone().unwrap_or_default();
            let req = PoaCreateRequest {
                company_name: p.company_name.as_deref(),
                authorized_user_ids: &ids,
                credit_limit: p.credit_limit.as_ref().expect("read requires it"),
                balance: p.balance.as_ref(),
            };
            let decided = decide_poa_create(
                tenant.poa_create_enabled,
                |c| tenant.poa_credit_limit_max.get(&c).copied(),
                account.as_ref(),
                &req,
            );
            let (currency, credit_limit, write) = match decided {
                PoaCreateDecision::Declined(r) => return finish(declined(r), None, notes),
                PoaCreateDecision::Replay => {
                    let a = account.as_ref().expect("a replay has its account");
                    (a.funds.currency, a.credit_limit(), None)
                }
                PoaCreateDecision::Open {
                    currency,
                    credit_limit,
                } => (
                    currency,
                    credit_limit,
                    Some(PoaWrite::Open {
                        user_id: random_id("poa-"),
                        currency,
                        credit_limit,
                        company_name: p.company_name.clone(),
                        authorized_user_ids: ids.clone(),
                    }),
                ),
            };
            let owed = account.as_ref().map_or(0, PoaAccount::owed);
            let r = PoaResponse {
                request_id,
                action: p.action,
                account_number: &p.account_number,
                company_name: p.company_name.as_deref(),
                authorized_user_ids: Some(ids.as_slice()),
                authorized_user_id: None,
                balance: Some(Amount::new(owed, currency)),
                credit_limit: Some(Amount::new(credit_limit, currency)),
                outcome: Outcome::APPROVED,
            };
            return finish(r, write, notes);
        }
        PoaAction::Credit => {
            let ids = p.authorized_user_ids.clone().unwrap_or_default();
            let decided = decision::decide_poa_credit(
                account.as_ref(),
                p.balance.as_ref().expect("read requires it"),
                p.authorized_user_id.as_deref(),
                &ids,
            );
            match (decided, &account) {
                (Ok(charge), Some(a)) => {
                    let user = charge.performing_user.clone();
                    let r = PoaResponse {
                        request_id,
                        action: p.action,
                        account_number: &p.account_number,
                        company_name: a.company_name.as_deref(),
                        authorized_user_ids: None,
                        authorized_user_id: user.as_deref(),
                        balance: Some(Amount::new(charge.owed_after, charge.currency)),
                        credit_limit: None,
                        outcome: Outcome::APPROVED,
                    };
                    let write = PoaWrite::Charge {
                        amount: charge.amount,
                        available_after: a.funds.available() - charge.amount,
                        performing_user: charge.performing_user.clone(),
                    };
                    return finish(r, Some(write), notes);
                }
                (Err(r), _) => (declined(r), None),
                (Ok(_), None) => (declined(Reason::AccountNotFound), None),
            }
        }
        PoaAction::Inquiry => match &account {
            None => (declined(Reason::AccountNotFound), None),
            Some(a) => (
                PoaResponse {
                    request_id,
                    action: p.action,
                    account_number: &p.account_number,
                    company_name: a.company_name.as_deref(),
                    authorized_user_ids: Some(a.authorized_user_ids.as_slice()),
                    authorized_user_id: None,
                    balance: Some(owed(a)),
                    credit_limit: Some(limit(a)),
                    outcome: Outcome::APPROVED,
                },
                None,
            ),
        },
        PoaAction::Update => {
            let decided = decision::decide_poa_update(
                account.as_ref(),
                p.credit_limit.as_ref(),
                p.balance.as_ref(),
            );
            match (decided, &account) {
                (Ok(()), Some(a)) => {
                    let name = p.company_name.as_deref().or(a.company_name.as_deref());
                    let ids = p
                        .authorized_user_ids
                        .as_deref()
                        .unwrap_or(a.authorized_user_ids.as_slice());
                    let r = PoaResponse {
                        request_id,
                        action: p.action,
                        account_number: &p.account_number,
                        company_name: name,
                        authorized_user_ids: Some(ids),
                        authorized_user_id: None,
                        balance: Some(owed(a)),
                        credit_limit: Some(limit(a)),
                        outcome: Outcome::APPROVED,
                    };
                    let write = PoaWrite::Update {
                        company_name: p.company_name.clone(),
                        authorized_user_ids: p.authorized_user_ids.clone(),
                    };
                    return finish(r, Some(write), notes);
                }
                (Err(r), _) => (declined(r), None),
                (Ok(()), None) => (declined(Reason::AccountNotFound), None),
            }
        }
    };
    finish(response, write, notes)
}

fn finish(
    r: PoaResponse<'_>,
    write: Option<PoaWrite>,
    notes: &mut PoaNotes,
) -> (String, Option<PoaWrite>) {
    notes.declined = r.outcome.0;
    (r.to_js(), write)
}

fn plan_log(
    r: &PoaLogRecord,
    snap: &PoaSnapshot,
    request_id: Option<&str>,
    notes: &mut PoaNotes,
) -> (String, Option<PoaWrite>) {
    let echo = body::poa_log_echo(request_id, r);
    let hash = log_hash(r);
    match &snap.log {
        Some(stored) if stored.request_hash == hash => (echo, None),
        Some(_) => (echo, Some(PoaWrite::Conflict)),
        None => {
            // An amount that does not read as money matches no charge either.
            let approved_credit = r.action == PoaAction::Credit && r.status == PoaStatus::Approved;
            let unmatched = approved_credit && !snap.log_has_charge;
            notes.unmatched_log = unmatched;
            let write = PoaWrite::Log {
                request_hash: hash,
                record: body::poa_log_echo(None, r),
                flags: if unmatched {
                    LOG_WITHOUT_CHARGE.to_owned()
                } else {
                    String::new()
                },
            };
            (echo, Some(write))
        }
    }
}

fn plan_admin(
    change: PoaAdmin,
    (tenant_id, number): (&str, &str),
    snap: &PoaSnapshot,
) -> (AdminResult, Option<PoaWrite>) {
    if snap.account.is_none() {
        return (AdminResult::AccountNotFound, None);
    }
    match change {
        PoaAdmin::Settings {
            credit_limit,
            blocked,
        } => (
            AdminResult::Done,
            Some(PoaWrite::Settings {
                credit_limit,
                blocked,
            }),
        ),
        PoaAdmin::Reverse { movement_id } => match &snap.charge {
            // The charge must be this account's (the prefetch read it by id alone).
            Some(c) if c.tenant_id == tenant_id && c.account_number == number => {
                if c.reversed {
                    (AdminResult::AlreadyReversed, None)
                } else {
                    (
                        AdminResult::Done,
                        Some(PoaWrite::Reverse {
                            charge_movement_id: movement_id,
                            amount: c.amount_minor,
                        }),
                    )
                }
            }
            _ => (AdminResult::ChargeNotFound, None),
        },
    }
}
