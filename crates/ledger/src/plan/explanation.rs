//! The explanation kept with each decided authorization: stored compactly, rendered in full
//! on read.
//!
//! Every fresh decision writes one, so its size is paid in every batch's write (and its WAL).
//! The stored form is a JSON array of the same facts without their field names, amounts in
//! minor units, and nothing that can be computed again (the status from its detail, what
//! was available from the balance, the hold and the overdraft, a control's reason family
//! from its kind):
//!
//! ```text
//! [1, status_detail, message | null ("Approved"),
//!  account: null | [currency, balance, held, overdraft_limit, per_transaction_limit | null,
//!                   daily_limit | null, daily_spent, blocked_mccs],
//!  card: null | [status, belongs_to_user, blocked_mccs],
//!  controls: null | [declined: null | [owner, control, message], [check, ...]]]
//! ```
//!
//! with `owner` 0 (account) or 1 (card), `control` the index in [`CONTROL_KINDS`], each
//! check an array starting with its index in [`CHECKS`] and whose `rule` is 0 (allowed) or
//! 1 (blocked). [`render`] turns it into the full object that `GET /v1/transactions/{id}`,
//! `authorizer explain` and the backtest read; rows written before this form hold that
//! object itself, and [`render`] returns it as it is.

use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::Currency;
use crate::controls::{Check, ControlKind, Evaluation, Interval, ListRule, Owner};
use crate::decision::{AccountState, CardState, Decision};
use crate::money::format_minor;

/// The version tag of the stored form.
const VERSION: u64 = 1;

/// The kinds of control that decline, by their stored index.
const CONTROL_KINDS: [(ControlKind, &str); 8] = [
    (ControlKind::AllowedCategories, "allowed_categories"),
    (ControlKind::BlockedCategories, "blocked_categories"),
    (ControlKind::AllowedCountries, "allowed_countries"),
    (ControlKind::BlockedCountries, "blocked_countries"),
    (ControlKind::AllowedChannels, "allowed_channels"),
    (ControlKind::BlockedChannels, "blocked_channels"),
    (ControlKind::SpendingLimit, "spending_limit"),
    (ControlKind::VelocityLimit, "velocity_limit"),
];

/// The checks, by their stored index, with the fields they store in order: `owner`, `rule`,
/// `interval` and `passed` are stored as codes and rendered by name, the others as stored.
const CHECKS: [(&str, &str); 5] = [
    ("categories", "owner rule mcc list matched passed"),
    ("countries", "owner rule country list passed"),
    ("channels", "owner rule channels list passed"),
    (
        "spending_limit",
        "owner interval categories window currency limit spent amount passed",
    ),
    (
        "velocity_limit",
        "owner interval categories window limit counted passed",
    ),
];

/// The stored explanation of a decision: the checks run in order, with their inputs. The
/// balance checks are the decision's (the account as read, what a debit may spend); the
/// controls' are the evaluation's.
pub(crate) fn encode(
    decision: &Decision,
    account: Option<&AccountState>,
    card: Option<&CardState>,
    evaluation: Option<&Evaluation>,
) -> String {
    let (_, status_detail) = super::status_of(decision);
    let message = match (decision, evaluation.and_then(|e| e.declined.as_ref())) {
        (Decision::Declined(_), Some(c)) => Some(c.message.as_str()),
        (Decision::Declined(d), None) => Some(d.message()),
        (Decision::Balance { .. }, _) => Some("Balance"),
        (Decision::Approved { .. }, _) => None,
    };
    let account = account.map(|a| {
        (
            a.currency.code(),
            a.balance,
            a.held,
            a.overdraft_limit,
            a.per_transaction_limit,
            a.daily_limit,
            a.daily_spent,
            a.blocked_mccs.to_list(),
        )
    });
    let card = card.map(|c| {
        (
            c.status.as_str(),
            c.belongs_to_user,
            c.blocked_mccs.to_list(),
        )
    });
    let controls = evaluation.map(|e| {
        let declined = e.declined.as_ref().map(|d| {
            (
                owner_index(d.owner),
                kind_index(d.control),
                d.message.as_str(),
            )
        });
        (declined, e.checks.iter().map(Stored).collect::<Vec<_>>())
    });
    serde_json::to_string(&(VERSION, status_detail, message, account, card, controls))
        .unwrap_or_default()
}

fn owner_index(o: Owner) -> u8 {
    match o {
        Owner::Account => 0,
        Owner::Card => 1,
    }
}

fn rule_index(r: ListRule) -> u8 {
    match r {
        ListRule::Allowed => 0,
        ListRule::Blocked => 1,
    }
}

fn kind_index(k: ControlKind) -> usize {
    CONTROL_KINDS.iter().position(|(c, _)| *c == k).unwrap_or(0)
}

/// One check in its stored form.
struct Stored<'a>(&'a Check);

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Check::Categories {
                owner,
                rule,
                mcc,
                list,
                matched,
                passed,
            } => (
                0u8,
                owner_index(*owner),
                rule_index(*rule),
                mcc,
                list,
                matched,
                u8::from(*passed),
            )
                .serialize(s),
            Check::Countries {
                owner,
                rule,
                country,
                list,
                passed,
            } => (
                1u8,
                owner_index(*owner),
                rule_index(*rule),
                country,
                list,
                u8::from(*passed),
            )
                .serialize(s),
            Check::Channels {
                owner,
                rule,
                channels,
                list,
                passed,
            } => (
                2u8,
                owner_index(*owner),
                rule_index(*rule),
                channels,
                list,
                u8::from(*passed),
            )
                .serialize(s),
            Check::SpendingLimit {
                owner,
                interval,
                categories,
                window,
                currency,
                limit,
                spent,
                amount,
                passed,
            } => (
                3u8,
                owner_index(*owner),
                interval.name(),
                categories,
                window,
                currency,
                limit,
                spent,
                amount,
                u8::from(*passed),
            )
                .serialize(s),
            Check::VelocityLimit {
                owner,
                interval,
                categories,
                window,
                limit,
                counted,
                passed,
            } => (
                4u8,
                owner_index(*owner),
                interval.name(),
                categories,
                window,
                limit,
                counted,
                u8::from(*passed),
            )
                .serialize(s),
        }
    }
}

/// The full explanation of a stored one, in either form; `None` when it cannot be read.
pub fn render(stored: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(stored).ok()? {
        full @ Value::Object(_) => Some(full),
        Value::Array(v) => render_compact(&v),
        _ => None,
    }
}

fn render_compact(v: &[Value]) -> Option<Value> {
    let [version, status_detail, message, account, card, controls] = v else {
        return None;
    };
    if version.as_u64()? != VERSION {
        return None;
    }
    let status_detail = status_detail.as_str()?;
    let status = if status_detail == "APPROVED" {
        "APPROVED"
    } else {
        "REJECTED"
    };
    let message = match message {
        Value::Null => "Approved",
        m => m.as_str()?,
    };
    let account = match account {
        Value::Null => Value::Null,
        a => render_account(a.as_array()?)?,
    };
    let card = match card {
        Value::Null => Value::Null,
        c => {
            let [st, belongs, mccs] = c.as_array()?.as_slice() else {
                return None;
            };
            json!({
                "status": st.as_str()?,
                "belongs_to_user": belongs.as_bool()?,
                "blocked_mccs": mccs,
            })
        }
    };
    let controls = match controls {
        Value::Null => Value::Null,
        c => render_controls(c.as_array()?)?,
    };
    Some(json!({
        "status": status,
        "status_detail": status_detail,
        "message": message,
        "account": account,
        "card": card,
        "controls": controls,
    }))
}

fn render_account(a: &[Value]) -> Option<Value> {
    let [cur, balance, held, overdraft, per_tx, daily, spent, mccs] = a else {
        return None;
    };
    let code = cur.as_str()?;
    let exp = Currency::parse(code).ok()?.exponent();
    let money = |m: i64| format_minor(m, exp);
    let minor = |v: &Value| v.as_i64();
    let optional = |v: &Value| match v {
        Value::Null => Some(Value::Null),
        v => Some(Value::String(money(v.as_i64()?))),
    };
    let (balance, held, overdraft) = (minor(balance)?, minor(held)?, minor(overdraft)?);
    let available = balance.saturating_sub(held).saturating_add(overdraft);
    Some(json!({
        "currency": code,
        "balance": money(balance),
        "held": money(held),
        "overdraft_limit": money(overdraft),
        "available": money(available),
        "per_transaction_limit": optional(per_tx)?,
        "daily_limit": optional(daily)?,
        "daily_spent": money(minor(spent)?),
        "blocked_mccs": mccs,
    }))
}

fn owner_name(v: &Value) -> Option<&'static str> {
    match v.as_u64()? {
        0 => Some("account"),
        1 => Some("card"),
        _ => None,
    }
}

fn rule_name(v: &Value) -> Option<&'static str> {
    match v.as_u64()? {
        0 => Some("allowed"),
        1 => Some("blocked"),
        _ => None,
    }
}

fn interval_name(v: &Value) -> Option<&'static str> {
    Interval::parse(v.as_str()?).map(|i| i.name())
}

fn passed(v: &Value) -> Option<bool> {
    Some(v.as_u64()? != 0)
}

fn render_controls(c: &[Value]) -> Option<Value> {
    let [declined, checks] = c else {
        return None;
    };
    let declined = match declined {
        Value::Null => Value::Null,
        d => {
            let [owner, kind, message] = d.as_array()?.as_slice() else {
                return None;
            };
            let (kind, name) = CONTROL_KINDS.get(usize::try_from(kind.as_u64()?).ok()?)?;
            json!({
                "owner": owner_name(owner)?,
                "control": name,
                "status_detail": kind.class().as_str(),
                "message": message.as_str()?,
            })
        }
    };
    let checks = checks
        .as_array()?
        .iter()
        .map(|c| render_check(c.as_array()?))
        .collect::<Option<Vec<_>>>()?;
    Some(json!({"declined": declined, "checks": checks}))
}

fn render_check(c: &[Value]) -> Option<Value> {
    let (tag, rest) = c.split_first()?;
    let (name, fields) = *CHECKS.get(usize::try_from(tag.as_u64()?).ok()?)?;
    if fields.split(' ').count() != rest.len() {
        return None;
    }
    let mut m = Map::new();
    m.insert("check".into(), name.into());
    for (field, v) in fields.split(' ').zip(rest) {
        let shown = match field {
            "owner" => owner_name(v)?.into(),
            "rule" => rule_name(v)?.into(),
            "interval" => interval_name(v)?.into(),
            "passed" => passed(v)?.into(),
            _ => v.clone(),
        };
        m.insert(field.into(), shown);
    }
    Some(Value::Object(m))
}

/// The full explanation as it was stored before the compact form, built straight from the
/// decision: what [`render`] of [`encode`] must give back, field for field.
#[cfg(test)]
fn reference(
    decision: &Decision,
    currency: Option<Currency>,
    account: Option<&AccountState>,
    card: Option<&CardState>,
    evaluation: Option<&Evaluation>,
) -> Value {
    let (status, status_detail) = super::status_of(decision);
    let exp = currency.map_or(2, |c| c.exponent());
    let money = |m: i64| format_minor(m, exp);
    let message = match (decision, evaluation.and_then(|e| e.declined.as_ref())) {
        (Decision::Declined(_), Some(c)) => c.message.clone(),
        (Decision::Declined(d), None) => d.message().to_owned(),
        (Decision::Balance { .. }, _) => "Balance".to_owned(),
        (Decision::Approved { .. }, _) => "Approved".to_owned(),
    };
    let account = account.map(|a| {
        let available = a
            .balance
            .saturating_sub(a.held)
            .saturating_add(a.overdraft_limit);
        json!({
            "currency": a.currency.code(),
            "balance": money(a.balance),
            "held": money(a.held),
            "overdraft_limit": money(a.overdraft_limit),
            "available": money(available),
            "per_transaction_limit": a.per_transaction_limit.map(money),
            "daily_limit": a.daily_limit.map(money),
            "daily_spent": money(a.daily_spent),
            "blocked_mccs": a.blocked_mccs.to_list(),
        })
    });
    let card = card.map(|c| {
        json!({
            "status": c.status.as_str(),
            "belongs_to_user": c.belongs_to_user,
            "blocked_mccs": c.blocked_mccs.to_list(),
        })
    });
    json!({
        "status": status,
        "status_detail": status_detail,
        "message": message,
        "account": account,
        "card": card,
        "controls": evaluation,
    })
}

/// Asserts that `evaluation`, with a spread of decisions, accounts and cards around it,
/// renders from its stored form exactly as [`reference`] builds it, and that the stored
/// form is at most three fifths the size of the full one (about half, as measured).
#[cfg(test)]
pub(crate) fn assert_round_trips(evaluation: Option<&Evaluation>, case: &str) {
    use crate::MccSet;
    use crate::decision::{CardStatus, Decline, DeclineClass};
    let ars = Currency::parse("ARS").unwrap();
    let jpy = Currency::parse("JPY").unwrap();
    let accounts = [
        None,
        Some(AccountState {
            currency: ars,
            balance: 1_234_567,
            held: 1_000,
            overdraft_limit: 50_000,
            per_transaction_limit: Some(100_000),
            daily_limit: None,
            daily_spent: 4_200,
            blocked_mccs: MccSet::from_list(&["7995", "5411"]).unwrap(),
        }),
        Some(AccountState {
            currency: jpy,
            balance: -300,
            held: 0,
            overdraft_limit: 0,
            per_transaction_limit: None,
            daily_limit: Some(i64::MAX),
            daily_spent: 0,
            blocked_mccs: MccSet::default(),
        }),
    ];
    let cards = [
        None,
        Some(CardState {
            status: CardStatus::Active,
            belongs_to_user: true,
            blocked_mccs: MccSet::default(),
        }),
        Some(CardState {
            status: CardStatus::Lost,
            belongs_to_user: false,
            blocked_mccs: MccSet::from_list(&["6011"]).unwrap(),
        }),
    ];
    let decisions = [
        Decision::Approved {
            amount: -500,
            balance_after: 10,
            daily_spent_after: 500,
        },
        Decision::Balance { balance: 7 },
        Decision::Declined(Decline::InsufficientFunds),
        Decision::Declined(Decline::CardNotActive(CardStatus::Stolen)),
        Decision::Declined(Decline::Control(DeclineClass::InvalidAmount)),
    ];
    for decision in &decisions {
        for account in &accounts {
            for card in &cards {
                let currency = account.as_ref().map_or(Some(ars), |a| Some(a.currency));
                let want = reference(
                    decision,
                    currency,
                    account.as_ref(),
                    card.as_ref(),
                    evaluation,
                );
                let stored = encode(decision, account.as_ref(), card.as_ref(), evaluation);
                assert_eq!(
                    render(&stored),
                    Some(want.clone()),
                    "case: {case}: {stored}"
                );
                let full = want.to_string();
                assert!(
                    stored.len() * 5 <= full.len() * 3,
                    "case: {case}: {} of {} bytes",
                    stored.len(),
                    full.len()
                );
                // A row written in the full form reads as it was.
                assert_eq!(render(&full), Some(want), "case: {case}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_without_controls_and_refuses_what_it_cannot_read() {
        assert_round_trips(None, "no controls");
        assert_eq!(render("not json"), None);
        assert_eq!(render("[2,\"APPROVED\",null,null,null,null]"), None);
        assert_eq!(render("[1,\"APPROVED\",null,null,null]"), None);
        assert_eq!(
            render("[1,\"APPROVED\",null,null,null,[null,[[9,0]]]]"),
            None
        );
        assert_eq!(render("42"), None);
    }
}
