//! A debit that does not come from the processor (a channel's reservation, an InStore wallet
//! payment), decided as a debit authorization is: the same rules in the same order
//! ([`decide_with`], as `crate::holds::reserve`), the spending controls of the account and
//! of the card included, against the counters as they stand. An approval counts in the
//! controls' windows; the hold or the payment keeps what it counted ([`counted_json`]), so
//! that what later releases it (a cancel, an expiry, the remainder of a partial capture, a
//! refund, a reversal) gives back exactly that ([`super::release_counted`]).

use super::authorization::{GiveBack, Layers, counted_json};
use super::{
    Account, CardRecord, CardTransaction, CounterWrite, account_owner, day_of, window_kept,
    windows_kept_at,
};
use crate::controls::{
    Channels, ControlDecline, ControlRequest, Counter, CounterKey, Owner, Released, TimeZone,
    approval_deltas, decode_counters, encode_counters,
};
use crate::decision::{AuthorizationInput, Decision, Decline, RequestKind, decide_with};
use crate::holds::{Effects, Hold, HoldEventKind};
use jiff::Timestamp;
use std::collections::HashMap;

/// What is asked: a debit of `input`'s amount for `user_id` at a merchant in `country`,
/// decided at `now_ms`.
#[derive(Debug, Clone, Copy)]
pub struct DebitAsk<'a> {
    pub user_id: &'a str,
    pub country: Option<&'a str>,
    pub input: &'a AuthorizationInput<'a>,
    pub now_ms: i64,
}

/// What a debit comes to.
#[derive(Debug, Clone)]
pub struct DebitPlan {
    pub decision: Decision,
    /// The spending control that declined, with its words.
    pub control: Option<ControlDecline>,
    /// What the approval counted (`None`: nothing).
    pub counted: Option<Counting>,
    /// The checks run, in order, with their inputs, in the stored form an authorization
    /// keeps (`render_explanation` renders it).
    pub explanation: String,
}

/// What an approved debit counted, to be written with it.
#[derive(Debug, Clone)]
pub struct Counting {
    /// The account row's counters after the approval counted (`None`: unchanged).
    pub account: Option<String>,
    /// What the approval adds to the card's counters.
    pub card: Vec<CounterWrite>,
    /// What the hold or payment keeps of what it counted.
    pub kept: String,
}

/// Decides a debit against the locked `account` and the card it names with our record
/// of it (`card`), with the card's counters as read for the windows of `ask.now_ms`
/// (`card_counters`). The merchant's country is the one asked (a reservation's merchant's,
/// else its channel's; a wallet payment's store's); without one, a country control declines,
/// as it declines an authorization without a country. These debits show no channel (as a
/// card-present purchase at a domestic terminal shows none), so the channel controls pass
/// them. An approval of nothing is declined (`AmountNotRepresentable`): a hold of nothing
/// holds nothing.
pub fn plan_debit(
    ask: &DebitAsk<'_>,
    account: Option<&Account>,
    card: Option<(&str, &CardRecord)>,
    card_counters: HashMap<CounterKey, Counter>,
    tz: &TimeZone,
) -> DebitPlan {
    // A debit, whatever it was asked as.
    let input = AuthorizationInput {
        kind: Some(RequestKind::Debit),
        ..ask.input.clone()
    };
    let state = account.map(|a| a.state(day_of(ask.now_ms)));
    let card_state = card.map(|(_, c)| c.state_for(Some(ask.user_id)));
    let layers = layers_of(ask.user_id, account, card);
    let mut counters: HashMap<(Owner, String), HashMap<CounterKey, Counter>> = HashMap::new();
    if let (Some(a), Some(owner)) = (account, &layers.account_owner) {
        counters.insert(
            (Owner::Account, owner.clone()),
            decode_counters(&a.counters).collect(),
        );
    }
    if let Some(owner) = &layers.card_owner {
        counters.insert((Owner::Card, owner.clone()), card_counters);
    }
    let mut evaluation = None;
    let mut decision = decide_with(
        &input,
        state.as_ref(),
        card_state.as_ref(),
        |kind, minor| {
            let request = ControlRequest {
                kind,
                currency: input.currency?,
                amount: minor,
                mcc: input.mcc,
                country: ask.country,
                channels: Channels::default(),
                at: Timestamp::from_millisecond(ask.now_ms).unwrap_or(Timestamp::UNIX_EPOCH),
            };
            let ev = layers.evaluate_request(&request, &counters, tz)?;
            let class = ev.declined.as_ref().map(ControlDecline::class);
            evaluation = Some(ev);
            class
        },
    );
    if let Decision::Approved { amount: 0, .. } = decision {
        decision = Decision::Declined(Decline::AmountNotRepresentable);
    }
    let explanation = super::explanation::encode(
        &decision,
        state.as_ref(),
        card_state.as_ref(),
        evaluation.as_ref(),
    );
    let mut plan = DebitPlan {
        control: evaluation.as_ref().and_then(|e| e.declined.clone()),
        decision,
        counted: None,
        explanation,
    };
    let counted = match (&plan.decision, evaluation) {
        (Decision::Approved { .. }, Some(ev)) if !ev.counted.is_empty() => {
            layers.counter_writes(&ev.counted)
        }
        _ => return plan,
    };
    let account_counters = layers
        .account_owner
        .as_ref()
        .and_then(|owner| counters.remove(&(Owner::Account, owner.clone())))
        .unwrap_or_default();
    plan.counted = Some(counting(counted, account_counters, ask.now_ms, tz));
    plan
}

/// What money the network made effective without our approval counts: an approved advice
/// of debit `t`, which we declined or never saw, booked at `now_ms` as `minor` (positive)
/// from its cardholder's `account`. It adds what an approval would have added to the
/// account's and the card's counters (the card's only when it is registered to the
/// cardholder) in the windows of `now_ms`, without deciding: the money is spent whatever
/// the controls say. `None` when no control counts it.
pub fn count_forced(
    t: &CardTransaction<'_>,
    minor: i64,
    now_ms: i64,
    account: &Account,
    card: Option<(&str, &CardRecord)>,
    tz: &TimeZone,
) -> Option<Counting> {
    let user_id = t.user_id?;
    let card = card.filter(|(_, c)| c.user_id == user_id);
    let layers = layers_of(user_id, Some(account), card);
    let request = ControlRequest {
        kind: RequestKind::Debit,
        currency: account.currency,
        amount: minor,
        mcc: t.mcc,
        country: t.country,
        channels: t.channels,
        at: Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH),
    };
    let deltas = approval_deltas(&layers.set(), &request, tz);
    if deltas.is_empty() {
        return None;
    }
    let counted = layers.counter_writes(&deltas);
    Some(counting(
        counted,
        decode_counters(&account.counters).collect(),
        now_ms,
        tz,
    ))
}

/// The controls of `account` and of `card` as the layers of a debit of `user_id`.
fn layers_of(
    user_id: &str,
    account: Option<&Account>,
    card: Option<(&str, &CardRecord)>,
) -> Layers {
    Layers {
        account: account.and_then(|a| a.controls.clone()),
        card: card.and_then(|(_, c)| c.controls.clone()),
        account_owner: account.map(|a| account_owner(user_id, a.currency)),
        card_owner: card.map(|(id, _)| id.to_owned()),
    }
}

/// `counted` as it is written: the account row's counters (`account_counters` as read,
/// with what it counted added; a window that is over at `now_ms` is dropped), the card's
/// counter rows, and what the record keeps.
fn counting(
    counted: Vec<CounterWrite>,
    mut account_counters: HashMap<CounterKey, Counter>,
    now_ms: i64,
    tz: &TimeZone,
) -> Counting {
    let kept = counted_json(&counted, Released::default());
    let (card, of_account): (Vec<_>, Vec<_>) =
        counted.into_iter().partition(|w| w.owner == Owner::Card);
    let mut account = None;
    if !of_account.is_empty() {
        let windows = windows_kept_at([now_ms], tz);
        account_counters.retain(|k, _| window_kept(&windows, &k.window));
        for w in &of_account {
            account_counters
                .entry(w.key.clone())
                .or_default()
                .add(w.amount, w.count);
        }
        account = Some(encode_counters(account_counters.iter()));
    }
    Counting {
        account,
        card,
        kept,
    }
}

/// What a transition of `hold` gives back of the room its reservation took in the
/// controls' counters: all of it when it is cancelled or expires, the released remainder
/// of a partial capture, a refund's amount; `None` when nothing is released (a full
/// capture). The count comes back only with all of it.
pub fn hold_give_back(hold: &Hold, effects: &Effects) -> Option<GiveBack> {
    match effects.event {
        HoldEventKind::Cancelled | HoldEventKind::Expired => Some(GiveBack::Whole),
        HoldEventKind::Captured => {
            let released = hold.amount - effects.captured;
            (released > 0).then_some(GiveBack::Credit {
                amount: released,
                reversal: false,
            })
        }
        HoldEventKind::Refunded => Some(GiveBack::Credit {
            amount: effects.event_amount,
            reversal: false,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holds::tests::{applied, reserved};
    use crate::holds::{self, HoldState};

    #[test]
    fn each_change_gives_back_what_it_releases() {
        let h = reserved(1_000);
        let now = h.reserved_at_ms + 1;
        let cancel = applied(holds::cancel(&h, now));
        assert_eq!(hold_give_back(&h, &cancel), Some(GiveBack::Whole));
        let expired = holds::expire(&h, h.expires_at_ms).expect("due");
        assert_eq!(hold_give_back(&h, &expired), Some(GiveBack::Whole));
        let partial = applied(holds::capture(&h, Some(300), now));
        assert_eq!(
            hold_give_back(&h, &partial),
            Some(GiveBack::Credit {
                amount: 700,
                reversal: false
            })
        );
        let full = applied(holds::capture(&h, None, now));
        assert_eq!(hold_give_back(&h, &full), None);
        let mut captured = h.clone();
        captured.state = HoldState::Captured;
        captured.captured = 300;
        let ask = holds::RefundAsk {
            amount: Some(120),
            currency_matches: true,
            window_days: 90,
        };
        let refund = holds::refund(&captured, &ask, now).expect("refundable");
        assert_eq!(
            hold_give_back(&captured, &refund),
            Some(GiveBack::Credit {
                amount: 120,
                reversal: false
            })
        );
    }
}
