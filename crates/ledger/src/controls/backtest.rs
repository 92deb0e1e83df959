//! Replaying stored authorizations against another set of controls, without booking
//! anything: what `authorizer backtest` reports.
//!
//! Each stored authorization is decided again by the live path's own functions
//! ([`decide_with`] and [`evaluate`]) from what its explanation kept: the account and the
//! card as they were read, and what the other owner's controls decided. Only the controls
//! of the owner under test change; the counters those controls read start empty at the
//! beginning of the replay and grow with the approvals of the replay, in order.

use std::collections::HashMap;
use std::str::FromStr;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::Value;

use super::{
    Channels, ControlDecline, ControlRequest, Controls, CounterSnapshot, Evaluation, Owner,
    TimeZone, evaluate,
};
use crate::decision::{
    AccountState, AuthorizationInput, CardState, CardStatus, Decision, DeclineClass, RequestKind,
    decide_with,
};
use crate::money::to_minor;
use crate::{Currency, MccSet};

/// One authorization as it was stored: the request's facts and the explanation the plan
/// kept with it.
#[derive(Debug, Clone)]
pub struct StoredAuthorization<'a> {
    pub kind: Option<RequestKind>,
    pub currency: Option<Currency>,
    pub amount: Option<Decimal>,
    pub mcc: Option<&'a str>,
    pub country: Option<&'a str>,
    pub channels: Channels,
    /// When it was decided: the instant whose windows it counts in.
    pub at_ms: i64,
    /// Whose controls the replay replaces: the account's `user/currency` or the card's id.
    pub owner_id: &'a str,
    /// The explanation kept with the transaction (`processor_transactions.explanation`).
    pub explanation: &'a Value,
}

/// An answer as the processor reads it, and the control behind a decline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `APPROVED` or `REJECTED`.
    pub status: String,
    pub status_detail: String,
    pub message: String,
    /// The control that declined, in words without the request's particulars
    /// ("monthly spending limit of 500.00 ARS reached on the account", "blocked
    /// categories on the card: gambling"); for a decline by another rule its message.
    pub reason: Option<String>,
}

impl Answer {
    pub fn approved(&self) -> bool {
        self.status == "APPROVED"
    }
}

/// One authorization decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// What was answered.
    pub before: Answer,
    /// What the controls under test would have answered.
    pub after: Answer,
    /// The amount asked, in minor units (`None`: not representable).
    pub amount: Option<i64>,
}

impl Replayed {
    /// Approved where it was declined, declined where it was approved, or declined for
    /// another reason.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// The replay's counters, one set per owner, growing with the approvals replayed.
#[derive(Debug, Default)]
pub struct Replay {
    counters: HashMap<String, CounterSnapshot>,
}

impl Replay {
    /// Decides `a` again with `controls` as the controls of `owner` (the account's or the
    /// card's), in place of the ones it met; `None` when its explanation cannot be read.
    /// An approval adds to the replay's counters, so later authorizations see it.
    pub fn replay(
        &mut self,
        owner: Owner,
        controls: &Controls,
        a: &StoredAuthorization<'_>,
        tz: &TimeZone,
    ) -> Option<Replayed> {
        let e = a.explanation;
        let before = stored_answer(e)?;
        let account = account_state(&e["account"], a.currency);
        let card = card_state(&e["card"]);
        // What the other owner's controls decided stands: the replay changes one owner's.
        let declined = &e["controls"]["declined"];
        let other = (declined["owner"].as_str() != Some(owner_word(owner)))
            .then(|| class_of(declined["status_detail"].as_str()?))
            .flatten();
        let input = AuthorizationInput {
            kind: a.kind,
            currency: a.currency,
            amount: a.amount,
            mcc: a.mcc,
        };
        let counters = self.counters.entry(a.owner_id.to_owned()).or_default();
        let mut evaluation: Option<Evaluation> = None;
        let decision = decide_with(&input, account.as_ref(), card.as_ref(), |kind, minor| {
            let request = ControlRequest {
                kind,
                currency: a.currency?,
                amount: minor,
                mcc: a.mcc,
                country: a.country,
                channels: a.channels,
                at: Timestamp::from_millisecond(a.at_ms).unwrap_or(Timestamp::UNIX_EPOCH),
            };
            let ev = evaluate(&[(owner, controls)], &request, &*counters, tz);
            let class = ev.declined.as_ref().map(ControlDecline::class).or(other);
            evaluation = Some(ev);
            class
        });
        let after = match (&decision, evaluation) {
            (Decision::Approved { .. }, ev) => {
                if let Some(ev) = ev {
                    counters.apply(&ev.counted);
                }
                answer("APPROVED", "APPROVED", "Approved", None)
            }
            (Decision::Balance { .. }, _) => answer("APPROVED", "APPROVED", "Balance", None),
            (
                Decision::Declined(_),
                Some(Evaluation {
                    declined: Some(d),
                    checks,
                    ..
                }),
            ) => {
                let failed = checks.last().and_then(|c| serde_json::to_value(c).ok());
                let reason = failed.as_ref().and_then(|c| reason_of(c, &d.message));
                answer("REJECTED", d.status_detail, &d.message, reason)
            }
            // Declined by the other owner's controls, as it was.
            (Decision::Declined(crate::Decline::Control(_)), _) => before.clone(),
            (Decision::Declined(d), _) => answer("REJECTED", d.class().as_str(), d.message(), None),
        };
        let amount = a
            .currency
            .zip(a.amount)
            .and_then(|(c, m)| to_minor(m, c).ok());
        Some(Replayed {
            before,
            after,
            amount,
        })
    }
}

fn answer(status: &str, detail: &str, message: &str, reason: Option<String>) -> Answer {
    let reason = match status {
        "APPROVED" => None,
        _ => reason.or_else(|| Some(message.to_owned())),
    };
    Answer {
        status: status.to_owned(),
        status_detail: detail.to_owned(),
        message: message.to_owned(),
        reason,
    }
}

fn owner_word(owner: Owner) -> &'static str {
    match owner {
        Owner::Account => "account",
        Owner::Card => "card",
    }
}

fn class_of(detail: &str) -> Option<DeclineClass> {
    [
        DeclineClass::Other,
        DeclineClass::InvalidMerchant,
        DeclineClass::InvalidAmount,
        DeclineClass::InsufficientFunds,
    ]
    .into_iter()
    .find(|c| c.as_str() == detail)
}

/// The answer an explanation records, with the control that declined.
fn stored_answer(e: &Value) -> Option<Answer> {
    let message = e["message"].as_str()?;
    let declined = &e["controls"]["declined"];
    let reason = declined["message"].as_str().and_then(|m| {
        let failed = e["controls"]["checks"].as_array()?.last()?;
        reason_of(failed, m)
    });
    Some(answer(
        e["status"].as_str()?,
        e["status_detail"].as_str()?,
        message,
        reason,
    ))
}

/// A failed check in words without the request's particulars: a limit's own message
/// (which names only the limit), a list's rule, owner and entries.
fn reason_of(check: &Value, message: &str) -> Option<String> {
    let kind = check["check"].as_str()?;
    if kind == "spending_limit" || kind == "velocity_limit" {
        return Some(message.to_owned());
    }
    let list: Vec<&str> = check["list"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    Some(format!(
        "{} {} on the {}: {}",
        check["rule"].as_str()?,
        kind,
        check["owner"].as_str()?,
        list.join(", ")
    ))
}

/// Minor units of a decimal string of the explanation.
fn minor_of(v: &Value, currency: Currency) -> Option<i64> {
    to_minor(Decimal::from_str(v.as_str()?).ok()?, currency).ok()
}

fn mccs_of(v: &Value) -> MccSet {
    let list: Vec<&str> = v
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    MccSet::from_list(&list).unwrap_or_default()
}

/// The account as the explanation recorded it when it was read.
fn account_state(v: &Value, currency: Option<Currency>) -> Option<AccountState> {
    let currency = currency?;
    let minor = |k: &str| minor_of(&v[k], currency);
    Some(AccountState {
        currency,
        balance: minor("balance")?,
        held: minor("held")?,
        overdraft_limit: minor("overdraft_limit")?,
        per_transaction_limit: minor("per_transaction_limit"),
        daily_limit: minor("daily_limit"),
        daily_spent: minor("daily_spent").unwrap_or(0),
        blocked_mccs: mccs_of(&v["blocked_mccs"]),
    })
}

/// The card as the explanation recorded it.
fn card_state(v: &Value) -> Option<CardState> {
    Some(CardState {
        status: CardStatus::parse(v["status"].as_str()?)?,
        belongs_to_user: v["belongs_to_user"].as_bool()?,
        blocked_mccs: mccs_of(&v["blocked_mccs"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn explanation(status: &str, detail: &str, message: &str, declined: Value) -> Value {
        json!({
            "status": status,
            "status_detail": detail,
            "message": message,
            "account": {
                "currency": "ARS", "balance": "1000.00", "held": "0.00",
                "overdraft_limit": "0.00", "available": "1000.00",
                "per_transaction_limit": null, "daily_limit": null, "daily_spent": "0.00",
                "blocked_mccs": [],
            },
            "card": {"status": "ACTIVE", "belongs_to_user": true, "blocked_mccs": []},
            "controls": {"declined": declined, "checks": [
                {"check": "categories", "owner": declined["owner"], "rule": "blocked",
                 "mcc": "5812", "list": ["5812"], "matched": "5812", "passed": false},
            ]},
        })
    }

    fn stored<'a>(amount: &str, mcc: &'a str, explanation: &'a Value) -> StoredAuthorization<'a> {
        StoredAuthorization {
            kind: Some(RequestKind::Debit),
            currency: Currency::parse("ARS").ok(),
            amount: Decimal::from_str(amount).ok(),
            mcc: Some(mcc),
            country: Some("AR"),
            channels: Channels::default(),
            // 2026-11-10T12:00:00Z
            at_ms: 1_794_312_000_000,
            owner_id: "u1/ARS",
            explanation,
        }
    }

    /// The counters grow with the replay's approvals; a decline by the controls replaced
    /// falls to the balance as it was read; one by the other owner's controls stands.
    #[test]
    fn replays_in_order_against_the_new_controls() {
        let ars = Currency::parse("ARS").ok();
        let controls = Controls::from_json(
            r#"{"spending_limits": [{"amount": "150.00", "interval": "monthly"}]}"#,
            ars,
        )
        .unwrap();
        let approved = explanation("APPROVED", "APPROVED", "Approved", Value::Null);
        let blocked_on = |owner: &str| {
            let message = format!("merchant category 5812 blocked on the {owner}");
            let declined = json!({"owner": owner, "control": "blocked_categories",
                                  "status_detail": "INVALID_MERCHANT", "message": message});
            explanation("REJECTED", "INVALID_MERCHANT", &message, declined)
        };
        let by_account = blocked_on("account");
        let by_card = blocked_on("card");
        let tz = TimeZone::UTC;
        let mut replay = Replay::default();
        let mut run = |a: StoredAuthorization<'_>| {
            replay
                .replay(Owner::Account, &controls, &a, &tz)
                .expect("a readable explanation")
        };
        let first = run(stored("100.00", "5411", &approved));
        assert!(!first.changed());
        assert_eq!(first.amount, Some(10_000));
        let second = run(stored("60.00", "5411", &approved));
        assert!(second.changed());
        assert_eq!(second.after.status_detail, "INVALID_AMOUNT");
        assert_eq!(
            second.after.reason.as_deref(),
            Some("monthly spending limit of 150.00 ARS reached on the account")
        );
        // Exactly the room left: the second's decline counted nothing.
        let third = run(stored("50.00", "5812", &by_account));
        assert!(third.changed());
        assert!(third.after.approved());
        assert_eq!(
            third.before.reason.as_deref(),
            Some("blocked categories on the account: 5812")
        );
        // Declined by the card's controls, which the replay does not change.
        let fourth = run(stored("0.00", "5812", &by_card));
        assert!(!fourth.changed(), "{fourth:?}");
        // Above what the account had: insufficient funds, as the balance was read.
        let mut poor = by_account.clone();
        poor["account"]["balance"] = json!("10.00");
        let mut fresh = Replay::default();
        let r = fresh
            .replay(
                Owner::Account,
                &Controls::default(),
                &stored("50.00", "5812", &poor),
                &tz,
            )
            .unwrap();
        assert_eq!(r.after.status_detail, "INSUFFICIENT_FUNDS");
        assert_eq!(r.after.reason.as_deref(), Some("Insufficient funds"));
    }
}
