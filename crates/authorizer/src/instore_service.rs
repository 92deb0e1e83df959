//! The stored-value decisions of one InStore request, from the store's snapshot to the
//! exact bytes of its acknowledgement and callback and the rows to write. Pure apart from
//! drawing random ids: the request goes to the batcher, the one writer, whose batch calls
//! [`plan`] (through a [`Planner`]) inside its transaction, after locking what the request
//! names, and writes the result in the same commit.
//!
//! route (signature, parse, idempotency key) -> instore_service -> batcher -> store

use crate::app::AppState;
use crate::batcher::{InstoreJob, Job};
use instore::body::{
    self, CallbackAction, CancelData, CreateData, LegData, LookupCard, MovementData,
};
use instore::decision::{
    self, CancelDecision, CardRequest, Funds, LookupDecision, Operation, OperationKind,
    OperationLeg, ReversalRecord, SvCard,
};
use instore::payload::{
    CardNumber, CardSet, CardType, MoneyAction, StoredValueCreate, StoredValueLookup,
    StoredValueProcess,
};
use instore::signature::{Mac, secret_hash, sign};
use instore::{Amount, Outcome, Reason, Tenant};
use ledger::instore::{KIND_SV_REDEEM, SvKind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::{
    InstoreCall, InstoreOutcome, NewSvCard, StoreError, SvCardRow, SvLegPlan, SvMovementPlan,
    SvPinUpdate, SvPlan, SvPlanner, SvSnapshot,
};

/// A typed stored-value request, read and bound by the route.
#[derive(Debug, Clone)]
pub enum SvRequest {
    Create(StoredValueCreate),
    Lookup {
        lookup: StoredValueLookup,
        cards: CardSet,
    },
    Process {
        process: StoredValueProcess,
        /// Load and Redeem only.
        cards: Option<CardSet>,
    },
}

impl SvRequest {
    /// The idempotency record's action, and the callback's.
    pub fn action(&self) -> CallbackAction {
        match self {
            SvRequest::Create(_) => CallbackAction::Create,
            SvRequest::Lookup { .. } => CallbackAction::Lookup,
            SvRequest::Process {
                process:
                    StoredValueProcess::Move {
                        action: MoneyAction::Load,
                        ..
                    },
                ..
            } => CallbackAction::Load,
            SvRequest::Process {
                process:
                    StoredValueProcess::Move {
                        action: MoneyAction::Redeem,
                        ..
                    },
                ..
            } => CallbackAction::Redeem,
            SvRequest::Process { .. } => CallbackAction::Cancel,
        }
    }

    /// The numbers whose cards (and accounts) the decision reads.
    pub fn numbers(&self) -> Vec<String> {
        let set = match self {
            SvRequest::Create(_) => return Vec::new(),
            SvRequest::Lookup { cards, .. } => cards,
            SvRequest::Process {
                cards: Some(cards), ..
            } => cards,
            SvRequest::Process {
                process: StoredValueProcess::Cancel { number, .. },
                ..
            } => return vec![number.as_str().to_owned()],
            SvRequest::Process { .. } => return Vec::new(),
        };
        set.cards
            .iter()
            .map(|c| c.number.as_str().to_owned())
            .collect()
    }

    /// The operation a Cancel names.
    pub fn operation(&self) -> Option<&str> {
        match self {
            SvRequest::Process {
                process:
                    StoredValueProcess::Cancel {
                        external_payment_id,
                        ..
                    },
                ..
            } => Some(external_payment_id),
            _ => None,
        }
    }

    /// `locationId` and `workstationId` of the request.
    pub fn location(&self) -> (&str, Option<&str>) {
        let c = match self {
            SvRequest::Create(c) => &c.context,
            SvRequest::Lookup { lookup, .. } => &lookup.context,
            SvRequest::Process { process, .. } => process.context(),
        };
        (&c.location_id, c.workstation_id.as_deref())
    }

    /// The acknowledgement: `{"requestId"}`, or `{"results":[..]}` for a Load or Redeem with
    /// pre-loaded accounts (section 2.6).
    pub fn ack(&self, request_id: &str) -> String {
        match self {
            SvRequest::Process {
                process: StoredValueProcess::Move { accounts, .. },
                cards: Some(cards),
            } if !accounts.is_empty() => {
                body::ack_results(request_id, cards.payment_processor_id.as_deref())
            }
            _ => body::ack(request_id),
        }
    }
}

/// What the plan needs besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    pub tenant: &'a Tenant,
    pub request_id: &'a str,
    pub correlation_id: Option<&'a str>,
    pub secret_hash_key: &'a [u8],
    pub pin_tries_max: u32,
    pub card_number_prefix: &'a str,
    pub now_ms: i64,
}

/// Facts of a plan that only metrics need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanNotes {
    /// Injected balances that differ from the ledger's.
    pub injected_mismatches: u64,
    /// The movement repeats an earlier one's card, session, reference, action and amount.
    pub possible_duplicate: bool,
    /// The business outcome (`None`: approved).
    pub declined: Option<Reason>,
}

/// One request's [`plan`] with everything it needs, owned: the writer plans it on its own
/// task, and again should its batch lose a race and run each request alone.
pub struct Planner {
    request: SvRequest,
    tenant: Tenant,
    request_id: String,
    correlation_id: Option<String>,
    secret_hash_key: Vec<u8>,
    pin_tries_max: u32,
    card_number_prefix: String,
    now_ms: i64,
    /// The notes of the latest plan: the one written when the batch commits.
    notes: Mutex<PlanNotes>,
}

impl Planner {
    pub fn new(request: SvRequest, ctx: &PlanContext<'_>) -> Planner {
        Planner {
            request,
            tenant: ctx.tenant.clone(),
            request_id: ctx.request_id.to_owned(),
            correlation_id: ctx.correlation_id.map(str::to_owned),
            secret_hash_key: ctx.secret_hash_key.to_vec(),
            pin_tries_max: ctx.pin_tries_max,
            card_number_prefix: ctx.card_number_prefix.to_owned(),
            now_ms: ctx.now_ms,
            notes: Mutex::new(PlanNotes::default()),
        }
    }

    /// What the latest plan noted for the metrics.
    pub fn notes(&self) -> PlanNotes {
        *self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SvPlanner for Planner {
    fn plan(&self, snap: &SvSnapshot) -> SvPlan {
        let ctx = PlanContext {
            tenant: &self.tenant,
            request_id: &self.request_id,
            correlation_id: self.correlation_id.as_deref(),
            secret_hash_key: &self.secret_hash_key,
            pin_tries_max: self.pin_tries_max,
            card_number_prefix: &self.card_number_prefix,
            now_ms: self.now_ms,
        };
        let (plan, notes) = plan(&self.request, snap, &ctx);
        *self.notes.lock().unwrap_or_else(PoisonError::into_inner) = notes;
        plan
    }
}

/// Hands one enveloped request to the batcher, the one writer, and waits for what its
/// batch committed, at most `instore.ack_deadline_ms`: a commit not started by then never
/// happens. `Err`: nothing was committed (the caller answers 503 and InStore resends).
pub async fn execute(
    state: &AppState,
    call: InstoreCall,
    planner: Arc<dyn SvPlanner>,
) -> Result<InstoreOutcome, StoreError> {
    let deadline = Duration::from_millis(state.settings.instore.ack_deadline_ms);
    crate::service::within_deadline(state, deadline, "InStore request", |d, reply| {
        let call = InstoreCall {
            deadline: Some(d),
            ..call
        };
        instore_job(call, planner, reply)
    })
    .await
}

/// [`execute`] for a change the admin API asks for: it waits for its commit, with no
/// acknowledgement deadline.
pub async fn execute_admin(
    state: &AppState,
    call: InstoreCall,
    planner: Arc<dyn SvPlanner>,
) -> Result<InstoreOutcome, StoreError> {
    crate::service::through_writer(state, |reply| instore_job(call, planner, reply)).await
}

fn instore_job(
    call: InstoreCall,
    planner: Arc<dyn SvPlanner>,
    reply: crate::batcher::Reply<InstoreOutcome>,
) -> Job {
    Job::Instore(InstoreJob {
        call,
        planner,
        reply: Some(reply),
    })
}

/// Decides `request` against `snap` and writes every byte and row it commits.
pub fn plan(request: &SvRequest, snap: &SvSnapshot, ctx: &PlanContext<'_>) -> (SvPlan, PlanNotes) {
    let mut notes = PlanNotes::default();
    let mut out = SvPlan {
        ack: request.ack(ctx.request_id).into_bytes(),
        callback: Vec::new(),
        callback_headers: Vec::new(),
        new_card: None,
        movement: None,
        pin_updates: Vec::new(),
        poa: None,
    };
    let (outcome, data) = match request {
        SvRequest::Create(c) => plan_create(c, ctx, &mut out),
        SvRequest::Lookup { lookup, cards } => {
            plan_lookup(lookup, cards, snap, ctx, &mut out, &mut notes)
        }
        SvRequest::Process {
            process:
                StoredValueProcess::Move {
                    action,
                    context,
                    number,
                    amount,
                    session_id,
                    reference,
                    cvc,
                    accounts,
                },
            cards: Some(cards),
        } => {
            let m = MoveRequest {
                action: *action,
                location: (&context.location_id, context.workstation_id.as_deref()),
                number,
                wire: amount,
                session_id,
                reference,
                cvc: cvc.as_ref().map(|c| c.expose()),
                with_accounts: !accounts.is_empty(),
                cards,
            };
            plan_move(&m, snap, ctx, &mut out, &mut notes)
        }
        SvRequest::Process {
            process:
                StoredValueProcess::Cancel {
                    context,
                    number,
                    external_transaction_id,
                    external_payment_id,
                },
            ..
        } => plan_cancel(
            (&context.location_id, context.workstation_id.as_deref()),
            number,
            external_transaction_id,
            external_payment_id,
            snap,
            ctx,
            &mut out,
        ),
        SvRequest::Process { .. } => unreachable!("a Load or Redeem always has its card set"),
    };
    notes.declined = outcome.0;
    let callback = body::callback(ctx.request_id, request.action(), outcome, data);
    out.callback_headers = callback_headers(
        ctx.tenant.verification_key(),
        ctx.correlation_id,
        callback.as_bytes(),
    );
    out.callback = callback.into_bytes();
    (out, notes)
}

/// The fixed headers of every attempt: the body's type, our signature over its exact
/// bytes (with the tenant's `key`), and the request's correlation id.
pub fn callback_headers(
    key: &[u8],
    correlation_id: Option<&str>,
    callback: &[u8],
) -> Vec<(String, String)> {
    let mut h = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("X-Signature".to_owned(), sign(key, callback)),
    ];
    if let Some(c) = correlation_id {
        h.push(("x-correlation-id".to_owned(), c.to_owned()));
    }
    h
}

fn card_type_of(stored: &str) -> CardType {
    match stored {
        "ReturnCard" => CardType::ReturnCard,
        "Promotional" => CardType::Promotional,
        _ => CardType::GiftCard,
    }
}

fn mac_of(stored: Option<&Vec<u8>>) -> Option<Mac> {
    stored.and_then(|b| Mac::try_from(b.as_slice()).ok())
}

/// A card row as the wire crate's decisions read it.
fn sv_card(row: &SvCardRow, tenant: &Tenant, now_ms: i64) -> SvCard {
    SvCard {
        number: row.number.clone(),
        tenant_matches: row.bound_to(&tenant.tenant_id),
        active: row.status == "ACTIVE",
        cvc_hash: mac_of(row.cvc_hash.as_ref()),
        pin_hash: mac_of(row.pin_hash.as_ref()),
        pin_tries: u32::try_from(row.pin_tries).unwrap_or(u32::MAX),
        linked: row.linked,
        funds: funds_of(&row.account, now_ms),
        account_id: Some(row.account.id),
    }
}

/// An account's spending state as the debit decisions read it, its daily counter as of
/// `now_ms`'s day.
pub fn funds_of(a: &ledger::plan::Account, now_ms: i64) -> Funds {
    let today = ledger::plan::day_of(now_ms);
    Funds {
        currency: a.currency,
        posted: a.balance,
        held: a.held,
        overdraft_limit: a.overdraft_limit,
        per_transaction_limit: a.per_transaction_limit,
        daily_limit: a.daily_limit,
        daily_spent: a.daily_spent_on(today),
    }
}

/// `svt-`, `svp-` or `svc-` and 20 lowercase hex digits from the OS random source.
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 10];
    getrandom::getrandom(&mut b).expect("the OS random source");
    let mut s = String::with_capacity(prefix.len() + 20);
    s.push_str(prefix);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A 16-digit number: `prefix`, random digits, then the Luhn check digit.
pub fn card_number(prefix: &str) -> String {
    let random = random_digits(15usize.saturating_sub(prefix.len()));
    let digits: Vec<u8> = prefix
        .bytes()
        .chain(random.bytes())
        .map(|b| b - b'0')
        .collect();
    let check = luhn_check_digit(&digits);
    format!("{prefix}{random}{check}")
}

/// `n` decimal digits from the OS random source.
pub fn random_digits(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut random = [0u8; 32];
    while out.len() < n {
        getrandom::getrandom(&mut random).expect("the OS random source");
        // 250 is the largest multiple of 10 below 256: no digit is likelier than another.
        for b in random.iter().filter(|b| **b < 250).take(n - out.len()) {
            out.push(char::from(b'0' + b % 10));
        }
    }
    out
}

/// The digit that makes `digits` followed by it pass the Luhn check.
fn luhn_check_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    u8::try_from((10 - sum % 10) % 10).unwrap_or(0)
}

/// The legs of an approved movement to book, each with a fresh transaction id.
fn leg_plans(movement: &decision::Movement) -> Vec<SvLegPlan> {
    movement
        .legs
        .iter()
        .map(|l| SvLegPlan {
            number: l.number.clone(),
            delta: l.delta,
            external_transaction_id: random_id("svt-"),
            available_after: l.balance_after,
        })
        .collect()
}

fn plan_create(
    c: &StoredValueCreate,
    ctx: &PlanContext<'_>,
    out: &mut SvPlan,
) -> (Outcome, instore::Value) {
    let declined = |reason| {
        let data = CreateData {
            number: None,
            card_type: c.card_type,
            active: c.active,
            balance: None,
            issuer: c.issuer.as_deref(),
            customer_id: c.customer_id.as_deref(),
            external_transaction_id: None,
            external_payment_id: None,
        };
        (Outcome::declined(reason), data.to_value())
    };
    let (currency, opening) =
        match decision::decide_create(ctx.tenant.stored_value_create_enabled, &c.balance) {
            Ok(x) => x,
            Err(reason) => return declined(reason),
        };
    let number = card_number(ctx.card_number_prefix);
    let Ok(card_number) = CardNumber::parse(&number, "number") else {
        return declined(Reason::SystemError);
    };
    out.new_card = Some(NewSvCard {
        number: number.clone(),
        card_id: random_id("svc-"),
        currency,
        card_type: c.card_type.as_str().to_owned(),
        active: c.active,
        cvc_hash: c
            .cvc
            .as_ref()
            .map(|v| secret_hash(ctx.secret_hash_key, v.expose()).to_vec()),
        issuer: c.issuer.clone(),
        customer_id: c.customer_id.clone(),
    });
    let (tx_id, pay_id) = if opening > 0 {
        let tx_id = random_id("svt-");
        let pay_id = random_id("svp-");
        out.movement = Some(SvMovementPlan {
            kind: SvKind::Load,
            currency,
            external_payment_id: pay_id.clone(),
            reverses_payment_id: None,
            legs: vec![SvLegPlan {
                number: number.clone(),
                delta: opening,
                external_transaction_id: tx_id.clone(),
                available_after: opening,
            }],
            location_id: c.context.location_id.clone(),
            workstation_id: c.context.workstation_id.clone(),
            session_id: None,
            reference: None,
            flags: String::new(),
        });
        (Some(tx_id), Some(pay_id))
    } else {
        (None, None)
    };
    let data = CreateData {
        number: Some(&card_number),
        card_type: c.card_type,
        active: c.active,
        balance: Some(Amount::new(opening, currency)),
        issuer: c.issuer.as_deref(),
        customer_id: c.customer_id.as_deref(),
        external_transaction_id: tx_id.as_deref(),
        external_payment_id: pay_id.as_deref(),
    };
    (Outcome::APPROVED, data.to_value())
}

/// A found card as a lookup tells it, or the reason it was not.
fn lookup_card<'a>(
    entry: &'a instore::payload::CardSetEntry,
    row: Option<&SvCardRow>,
    d: &LookupDecision,
) -> Result<LookupCard<'a>, Reason> {
    match d {
        LookupDecision::Found {
            active,
            balance,
            currency,
            ..
        } => Ok(LookupCard {
            number: &entry.number,
            card_type: row.map_or(CardType::GiftCard, |r| card_type_of(&r.card_type)),
            active: *active,
            balance: Amount::new(*balance, *currency),
        }),
        LookupDecision::Declined { reason, .. } => Err(*reason),
    }
}

fn plan_lookup(
    lookup: &StoredValueLookup,
    cards: &CardSet,
    snap: &SvSnapshot,
    ctx: &PlanContext<'_>,
    out: &mut SvPlan,
    notes: &mut PlanNotes,
) -> (Outcome, instore::Value) {
    // One decision per card of the set; the first is the request's own number.
    let mut results = Vec::with_capacity(cards.cards.len());
    for entry in &cards.cards {
        let row = snap.cards.get(entry.number.as_str());
        let card = row.map(|r| sv_card(r, ctx.tenant, ctx.now_ms));
        let decided = decision::decide_lookup(
            card.as_ref(),
            entry.pin.as_ref().map(|p| p.expose()),
            ctx.secret_hash_key,
            ctx.pin_tries_max,
        );
        match &decided {
            LookupDecision::Declined {
                pin_failure: Some(f),
                ..
            } => out.pin_updates.push(SvPinUpdate {
                number: entry.number.as_str().to_owned(),
                pin_tries: i64::from(f.tries_after),
                block: f.block,
            }),
            LookupDecision::Found {
                reset_pin_tries: true,
                ..
            } => out.pin_updates.push(SvPinUpdate {
                number: entry.number.as_str().to_owned(),
                pin_tries: 0,
                block: false,
            }),
            _ => {}
        }
        if let (
            LookupDecision::Found {
                balance, currency, ..
            },
            Some(injected),
        ) = (
            &decided,
            entry.injected.as_ref().and_then(|i| i.balance.as_ref()),
        ) && decision::injected_balance_differs(injected, *balance, *currency)
        {
            notes.injected_mismatches += 1;
        }
        results.push((entry, row, decided));
    }
    let accounts = (!lookup.accounts.is_empty()).then(|| {
        results
            .iter()
            .map(|(e, row, d)| match lookup_card(e, *row, d) {
                Ok(c) => c.to_value(),
                Err(reason) => body::lookup_account_failure(&e.number, Outcome::declined(reason)),
            })
            .collect::<Vec<_>>()
    });
    let (entry, row, first) = &results[0];
    match lookup_card(entry, *row, first) {
        Ok(card) => (
            Outcome::APPROVED,
            body::lookup_data(&lookup.number, Some(&card), &lookup.cart_key, accounts),
        ),
        Err(reason) => (
            Outcome::declined(reason),
            body::lookup_data(&lookup.number, None, &lookup.cart_key, accounts),
        ),
    }
}

/// A Load or Redeem as [`plan_move`] reads it.
struct MoveRequest<'a> {
    action: MoneyAction,
    location: (&'a str, Option<&'a str>),
    number: &'a CardNumber,
    wire: &'a instore::WireAmount,
    session_id: &'a str,
    reference: &'a str,
    cvc: Option<&'a str>,
    with_accounts: bool,
    cards: &'a CardSet,
}

fn plan_move(
    m: &MoveRequest<'_>,
    snap: &SvSnapshot,
    ctx: &PlanContext<'_>,
    out: &mut SvPlan,
    notes: &mut PlanNotes,
) -> (Outcome, instore::Value) {
    let decided_cards: Vec<Option<SvCard>> = m
        .cards
        .cards
        .iter()
        .map(|e| {
            snap.cards
                .get(e.number.as_str())
                .map(|r| sv_card(r, ctx.tenant, ctx.now_ms))
        })
        .collect();
    let requests: Vec<CardRequest<'_>> = m
        .cards
        .cards
        .iter()
        .zip(&decided_cards)
        .enumerate()
        .map(|(i, (e, card))| CardRequest {
            number: e.number.as_str(),
            card: card.as_ref(),
            // The payload's CVC is the request's own card's.
            cvc: if i == 0 { m.cvc } else { None },
            pin: e.pin.as_ref().map(|p| p.expose()),
        })
        .collect();
    for (e, card) in m.cards.cards.iter().zip(&decided_cards) {
        if let (Some(injected), Some(card)) =
            (e.injected.as_ref().and_then(|i| i.balance.as_ref()), card)
            && card.tenant_matches
            && decision::injected_balance_differs(
                injected,
                card.funds.available(),
                card.funds.currency,
            )
        {
            notes.injected_mismatches += 1;
        }
    }
    let decided = match m.action {
        MoneyAction::Load => decision::decide_load(m.wire, &requests),
        MoneyAction::Redeem => {
            let key = ctx.secret_hash_key;
            let decided = decision::decide_redeem(m.wire, &requests, key);
            // A Redeem's PIN counts tries as a lookup's does: a wrong one (blocking the card
            // at `instore.pin_tries_max`), a right one after wrong ones on approval.
            let updates = match decided {
                Err(decision::Reason::InvalidPin) => {
                    decision::redeem_pin_failure(&requests, key, ctx.pin_tries_max)
                        .map(|(number, f)| (number, i64::from(f.tries_after), f.block))
                        .into_iter()
                        .collect()
                }
                Ok(_) => decision::redeem_pin_resets(&requests, key)
                    .into_iter()
                    .map(|number| (number, 0, false))
                    .collect(),
                Err(_) => Vec::new(),
            };
            for (number, pin_tries, block) in updates {
                out.pin_updates.push(SvPinUpdate {
                    number: number.to_owned(),
                    pin_tries,
                    block,
                });
            }
            decided
        }
    };
    let own = decided_cards[0].as_ref().filter(|c| c.tenant_matches);
    let movement = match decided {
        Ok(mv) => mv,
        Err(reason) => {
            let data = MovementData {
                number: m.number,
                amount: m.wire.resolve().ok().map(|(c, a)| Amount::new(a, c)),
                // A card with a PIN or CVC on record tells its balance to a lookup with
                // the PIN only: no decline of it tells it (a Redeem without the secret, or
                // for more than it holds, would read it).
                balance: own
                    .filter(|c| {
                        !reason.withholds_balance() && c.pin_hash.is_none() && c.cvc_hash.is_none()
                    })
                    .map(|c| Amount::new(c.funds.available(), c.funds.currency)),
                external_transaction_id: None,
                external_payment_id: None,
                session_id: m.session_id,
                reference: m.reference,
                accounts: m.with_accounts.then(Vec::new),
            };
            return (Outcome::declined(reason), data.to_value());
        }
    };
    let kind = match m.action {
        MoneyAction::Load => SvKind::Load,
        MoneyAction::Redeem => SvKind::Redeem,
    };
    notes.possible_duplicate = snap.possible_duplicate;
    let pay_id = random_id("svp-");
    let legs = leg_plans(&movement);
    let currency = movement.currency;
    let own_leg = legs.iter().find(|l| l.number == m.number.as_str());
    let balance = own_leg
        .map(|l| l.available_after)
        .or_else(|| own.map(|c| c.funds.available()));
    let data_tx_id = own_leg
        .or(legs.first())
        .map(|l| l.external_transaction_id.clone());
    let legs_data: Option<Vec<LegData<'_>>> = m.with_accounts.then(|| {
        legs.iter()
            .map(|l| LegData {
                number: &l.number,
                amount: Amount::new(l.delta.saturating_abs(), currency),
                balance: Amount::new(l.available_after, currency),
                external_transaction_id: &l.external_transaction_id,
            })
            .collect()
    });
    let data = MovementData {
        number: m.number,
        amount: Some(Amount::new(movement.amount, currency)),
        balance: balance.map(|b| Amount::new(b, currency)),
        external_transaction_id: data_tx_id.as_deref(),
        external_payment_id: Some(&pay_id),
        session_id: m.session_id,
        reference: m.reference,
        accounts: legs_data,
    }
    .to_value();
    out.movement = Some(SvMovementPlan {
        kind,
        currency,
        external_payment_id: pay_id.clone(),
        reverses_payment_id: None,
        legs,
        location_id: m.location.0.to_owned(),
        workstation_id: m.location.1.map(str::to_owned),
        session_id: Some(m.session_id.to_owned()),
        reference: Some(m.reference.to_owned()),
        flags: if snap.possible_duplicate {
            "POSSIBLE_DUPLICATE".to_owned()
        } else {
            String::new()
        },
    });
    (Outcome::APPROVED, data)
}

/// The operation a Cancel names, as the decision reads it. `None`: unknown, or one of its
/// cards is no longer ours.
fn operation_of(snap: &SvSnapshot, ctx: &PlanContext<'_>, number: &str) -> Option<Operation> {
    let rows = snap.operation.as_ref()?;
    let first = rows.legs.first()?;
    let kind = if first.kind == KIND_SV_REDEEM {
        OperationKind::Redeem
    } else {
        OperationKind::Load
    };
    let mut legs = Vec::with_capacity(rows.legs.len());
    let mut currency = None;
    for l in &rows.legs {
        let card = snap.cards.get(&l.number)?;
        let c = sv_card(card, ctx.tenant, ctx.now_ms);
        currency = Some(c.funds.currency);
        legs.push(OperationLeg {
            number: l.number.clone(),
            external_transaction_id: l.external_transaction_id.clone(),
            amount: l.amount_minor.saturating_abs(),
            funds_now: c.funds,
        });
    }
    let reversal = rows
        .reversal
        .iter()
        .find(|r| r.number == number)
        .or(rows.reversal.first())
        .map(|r| ReversalRecord {
            external_transaction_id: r.external_transaction_id.clone(),
            balance_after: r.balance_after_minor,
        });
    Some(Operation {
        kind,
        tenant_matches: first.tenant_id == ctx.tenant.tenant_id,
        currency: currency?,
        legs,
        reversal,
    })
}

fn plan_cancel(
    location: (&str, Option<&str>),
    number: &CardNumber,
    external_transaction_id: &str,
    external_payment_id: &str,
    snap: &SvSnapshot,
    ctx: &PlanContext<'_>,
    out: &mut SvPlan,
) -> (Outcome, instore::Value) {
    let op = operation_of(snap, ctx, number.as_str());
    let decided = decision::decide_cancel(op.as_ref(), number.as_str(), external_transaction_id);
    let data =
        |amount: Option<Amount>, balance: Option<Amount>, tx_id: Option<&str>, already: bool| {
            CancelData {
                number,
                amount,
                balance,
                external_transaction_id: tx_id,
                external_payment_id,
                original_external_transaction_id: external_transaction_id,
                already_cancelled: already,
            }
            .to_value()
        };
    match (decided, op) {
        (CancelDecision::Reverse(mv), Some(op)) => {
            let legs = leg_plans(&mv);
            let own = legs
                .iter()
                .find(|l| l.number == number.as_str())
                .or(legs.first());
            let value = data(
                Some(Amount::new(mv.amount, op.currency)),
                own.map(|l| Amount::new(l.available_after, op.currency)),
                own.map(|l| l.external_transaction_id.as_str()),
                false,
            );
            out.movement = Some(SvMovementPlan {
                kind: SvKind::Cancel,
                currency: op.currency,
                external_payment_id: external_payment_id.to_owned(),
                reverses_payment_id: Some(external_payment_id.to_owned()),
                legs,
                location_id: location.0.to_owned(),
                workstation_id: location.1.map(str::to_owned),
                session_id: None,
                reference: None,
                flags: String::new(),
            });
            (Outcome::APPROVED, value)
        }
        (CancelDecision::AlreadyCancelled(r), Some(op)) => {
            let total = op.legs.iter().map(|l| l.amount).sum();
            (
                Outcome::APPROVED,
                data(
                    Some(Amount::new(total, op.currency)),
                    Some(Amount::new(r.balance_after, op.currency)),
                    Some(&r.external_transaction_id),
                    true,
                ),
            )
        }
        (CancelDecision::Declined(reason), _) => {
            (Outcome::declined(reason), data(None, None, None, false))
        }
        (_, None) => (
            Outcome::declined(Reason::NotFound),
            data(None, None, None, false),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_numbers_pass_luhn_and_keep_the_prefix() {
        assert_eq!(
            luhn_check_digit(&[6, 2, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            5
        );
        for _ in 0..50 {
            let n = card_number("628000");
            assert_eq!(n.len(), 16);
            assert!(n.starts_with("628000"));
            let digits: Vec<u8> = n.bytes().map(|b| b - b'0').collect();
            assert_eq!(luhn_check_digit(&digits[..15]), digits[15]);
        }
        let id = random_id("svt-");
        assert_eq!(id.len(), 24);
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(random_id("svp-"), random_id("svp-"));
    }
}
