//! Deciding a request against the controls of its account and card, with the explanation
//! of every check run.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::category::mcc_value;
use super::counters::{CounterDelta, CounterKey, CounterSource};
use super::window::local_day;
use super::{Categories, Channels, Controls, Country, Interval};
use crate::decision::{DeclineClass, RequestKind};
use crate::money::format_minor;
use crate::{Currency, Mcc};

/// Whose controls: the account's (user + currency) or the card's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Account,
    Card,
}

impl Owner {
    fn words(&self) -> &'static str {
        match self {
            Owner::Account => "the account",
            Owner::Card => "the card",
        }
    }
}

/// The request as the controls see it.
#[derive(Debug, Clone)]
pub struct ControlRequest<'a> {
    pub kind: RequestKind,
    pub currency: Currency,
    /// Minor units, ≥ 0 (the decision refuses the rest before controls run).
    pub amount: i64,
    /// `merchant.mcc` as received.
    pub mcc: Option<&'a str>,
    /// `merchant.country`, or `transaction.country_code` when the merchant's is absent.
    pub country: Option<&'a str>,
    pub channels: Channels,
    /// When the authorization is decided: the instant whose windows it counts in.
    pub at: Timestamp,
}

impl<'a> ControlRequest<'a> {
    /// The country the country controls read: the merchant's, or where the processor
    /// leaves it out, the transaction's (both ISO 3166, alpha-2 or alpha-3).
    pub fn merchant_country(
        merchant_country: Option<&'a str>,
        transaction_country: Option<&'a str>,
    ) -> Option<&'a str> {
        merchant_country
            .filter(|c| !c.trim().is_empty())
            .or(transaction_country)
    }
}

/// Which list a membership check read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListRule {
    Allowed,
    Blocked,
}

/// The kind of control that declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    AllowedCategories,
    BlockedCategories,
    AllowedCountries,
    BlockedCountries,
    AllowedChannels,
    BlockedChannels,
    SpendingLimit,
    VelocityLimit,
}

impl ControlKind {
    /// The processor's reason family: merchant controls are an invalid merchant, limits an
    /// invalid amount.
    pub fn class(&self) -> DeclineClass {
        match self {
            ControlKind::SpendingLimit | ControlKind::VelocityLimit => DeclineClass::InvalidAmount,
            _ => DeclineClass::InvalidMerchant,
        }
    }
}

/// The control that declined, and the words the response carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlDecline {
    pub owner: Owner,
    pub control: ControlKind,
    /// `INVALID_MERCHANT` or `INVALID_AMOUNT`.
    pub status_detail: &'static str,
    pub message: String,
}

impl ControlDecline {
    pub fn class(&self) -> DeclineClass {
        self.control.class()
    }
}

/// One check run, with what it read. Amounts are decimal strings in the limit's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    Categories {
        owner: Owner,
        rule: ListRule,
        /// The request's MCC as read; `None` when missing or unreadable.
        mcc: Option<String>,
        list: Vec<String>,
        /// The entry that covers the MCC.
        matched: Option<String>,
        passed: bool,
    },
    Countries {
        owner: Owner,
        rule: ListRule,
        /// The merchant's country (alpha-2) as read; `None` when missing or unknown.
        country: Option<String>,
        list: Vec<String>,
        passed: bool,
    },
    Channels {
        owner: Owner,
        rule: ListRule,
        /// The request's channels.
        channels: Vec<String>,
        list: Vec<String>,
        passed: bool,
    },
    SpendingLimit {
        owner: Owner,
        interval: Interval,
        categories: Option<Vec<String>>,
        /// The window's key; `None` per authorization.
        window: Option<String>,
        currency: String,
        limit: String,
        /// Spent in the window before this request.
        spent: String,
        amount: String,
        passed: bool,
    },
    VelocityLimit {
        owner: Owner,
        interval: Interval,
        categories: Option<Vec<String>>,
        window: String,
        limit: u32,
        /// Approved in the window before this request.
        counted: i64,
        passed: bool,
    },
}

impl Check {
    pub fn passed(&self) -> bool {
        match self {
            Check::Categories { passed, .. }
            | Check::Countries { passed, .. }
            | Check::Channels { passed, .. }
            | Check::SpendingLimit { passed, .. }
            | Check::VelocityLimit { passed, .. } => *passed,
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// `None`: every control passed.
    pub declined: Option<ControlDecline>,
    /// The checks run, in order; the last one declined when `declined` is set.
    pub checks: Vec<Check>,
    /// What an approval adds to the counters (empty when declined): the plan writes these
    /// with the batch and keeps them with the authorization for [`super::release`].
    #[serde(skip)]
    pub counted: Vec<CounterDelta>,
}

impl Evaluation {
    pub fn approved(&self) -> bool {
        self.declined.is_none()
    }
}

/// The request's merchant facts, read once.
struct Facts {
    mcc: Option<u16>,
    country: Option<Country>,
    debit: bool,
}

/// Decides `request` against `layers`, in order, stopping at the first control that
/// declines. Every layer must pass (account and card, and within each the controls set
/// through the admin API and those converted from the legacy fields): the most
/// restrictive wins. Merchant controls (categories, countries, channels) of every layer
/// run before the limits of any, so a blocked merchant is reported as such rather than as
/// a limit. Limits apply to debits only.
pub fn evaluate(
    layers: &[(Owner, &Controls)],
    request: &ControlRequest<'_>,
    counters: &impl CounterSource,
    tz: &TimeZone,
) -> Evaluation {
    let facts = Facts {
        mcc: read_mcc(request),
        country: request.country.and_then(Country::parse),
        debit: request.kind == RequestKind::Debit,
    };
    let mut ev = Evaluation {
        declined: None,
        checks: Vec::new(),
        counted: Vec::new(),
    };
    for (owner, c) in layers {
        if merchant_checks(&mut ev, *owner, c, request, &facts).is_err() {
            return ev;
        }
    }
    let limited = |c: &&Controls| !c.spending_limits.is_empty() || !c.velocity_limits.is_empty();
    if !facts.debit || !layers.iter().map(|(_, c)| c).any(limited) {
        return ev;
    }
    // Every window key of the request comes from its local day, converted once.
    let day = local_day(request.at, tz);
    for (owner, c) in layers {
        if limit_checks(&mut ev, *owner, c, request, &facts, counters, day).is_err() {
            return ev;
        }
    }
    ev.counted = deltas_on(layers, request, day);
    ev
}

/// The request's MCC as the controls compare it, read like the legacy blocks.
fn read_mcc(request: &ControlRequest<'_>) -> Option<u16> {
    request
        .mcc
        .and_then(|m| Mcc::normalize(m).ok())
        .map(|m| mcc_value(&m))
}

/// What an approval of `request` adds to the counters: its amount and one, once per
/// counter of the windowed limits that apply to it, however many limits read that
/// counter; no money where the layer's limits are in another currency. [`evaluate`]
/// returns these with an approval; the plan also books them, without deciding, for money
/// the network made effective on its own (an approved advice for a transaction we did not
/// approve). Sorted by owner and key.
pub fn approval_deltas(
    layers: &[(Owner, &Controls)],
    request: &ControlRequest<'_>,
    tz: &TimeZone,
) -> Vec<CounterDelta> {
    if request.kind != RequestKind::Debit {
        return Vec::new();
    }
    deltas_on(layers, request, local_day(request.at, tz))
}

fn deltas_on(
    layers: &[(Owner, &Controls)],
    request: &ControlRequest<'_>,
    day: Date,
) -> Vec<CounterDelta> {
    let mcc = read_mcc(request);
    let mut deltas: Vec<CounterDelta> = Vec::new();
    for (owner, c) in layers {
        let amount = if c.currency == Some(request.currency) {
            request.amount
        } else {
            0
        };
        for (interval, cats) in windowed_limits(c, request.currency, mcc) {
            let Some(key) = key(interval, cats, day) else {
                continue;
            };
            match deltas
                .iter_mut()
                .find(|d| d.owner == *owner && d.key == key)
            {
                Some(d) => d.amount = d.amount.max(amount),
                None => deltas.push(CounterDelta {
                    owner: *owner,
                    key,
                    amount,
                    count: 1,
                }),
            }
        }
    }
    deltas.sort_unstable_by(|a, b| (a.owner, &a.key).cmp(&(b.owner, &b.key)));
    deltas
}

/// The counters `request` reads and, if approved, writes: what the store prefetches.
pub fn touched_keys(
    layers: &[(Owner, &Controls)],
    request: &ControlRequest<'_>,
    tz: &TimeZone,
) -> Vec<(Owner, CounterKey)> {
    approval_deltas(layers, request, tz)
        .into_iter()
        .map(|d| (d.owner, d.key))
        .collect()
}

/// The windows of the limits of `c` that apply to a request in `currency` with `mcc`.
fn windowed_limits<'a>(
    c: &'a Controls,
    currency: Currency,
    mcc: Option<u16>,
) -> impl Iterator<Item = (Interval, Option<&'a Categories>)> + 'a {
    let money = c.currency == Some(currency);
    c.spending_limits
        .iter()
        .filter(move |_| money)
        .map(|l| (l.interval, l.categories.as_ref()))
        .chain(
            c.velocity_limits
                .iter()
                .map(|l| (l.interval, l.categories.as_ref())),
        )
        .filter(move |(i, cats)| *i != Interval::PerAuthorization && covers(*cats, mcc))
}

/// Whether a limit restricted to `cats` counts a request with `mcc`. A debit whose MCC
/// cannot be read counts against every category limit: a limit must not fail open.
fn covers(cats: Option<&Categories>, mcc: Option<u16>) -> bool {
    match (cats, mcc) {
        (None, _) | (Some(_), None) => true,
        (Some(c), Some(m)) => c.contains(m),
    }
}

fn key(interval: Interval, cats: Option<&Categories>, day: Date) -> Option<CounterKey> {
    Some(CounterKey {
        window: interval.key_of_day(day)?,
        categories: cats.cloned(),
    })
}

fn decline(
    ev: &mut Evaluation,
    owner: Owner,
    control: ControlKind,
    message: String,
) -> Result<(), ()> {
    ev.declined = Some(ControlDecline {
        owner,
        control,
        status_detail: control.class().as_str(),
        message,
    });
    Err(())
}

fn merchant_checks(
    ev: &mut Evaluation,
    owner: Owner,
    c: &Controls,
    request: &ControlRequest<'_>,
    f: &Facts,
) -> Result<(), ()> {
    let mcc_text = f.mcc.map(|m| format!("{m:04}"));
    let who = owner.words();
    for (rule, list) in [
        (ListRule::Allowed, &c.allowed_categories),
        (ListRule::Blocked, &c.blocked_categories),
    ] {
        if list.is_empty() {
            continue;
        }
        let matched = f.mcc.and_then(|m| list.matching(m));
        let passed = match (f.mcc, rule) {
            (None, _) => !f.debit,
            (Some(_), ListRule::Allowed) => matched.is_some(),
            (Some(_), ListRule::Blocked) => matched.is_none(),
        };
        ev.checks.push(Check::Categories {
            owner,
            rule,
            mcc: mcc_text.clone(),
            list: list.to_strings(),
            matched: matched.map(|m| m.to_string()),
            passed,
        });
        if !passed {
            let (control, message) = match (&mcc_text, rule, matched) {
                (None, ListRule::Allowed, _) => (
                    ControlKind::AllowedCategories,
                    format!(
                        "merchant category missing or unreadable where {who} allows only some categories"
                    ),
                ),
                (None, ListRule::Blocked, _) => (
                    ControlKind::BlockedCategories,
                    format!(
                        "merchant category missing or unreadable where {who} blocks categories"
                    ),
                ),
                (Some(m), ListRule::Allowed, _) => (
                    ControlKind::AllowedCategories,
                    format!("merchant category {m} not among the categories allowed on {who}"),
                ),
                (Some(m), ListRule::Blocked, Some(item)) if item.to_string() != *m => (
                    ControlKind::BlockedCategories,
                    format!("merchant category {m} ({item}) blocked on {who}"),
                ),
                (Some(m), ListRule::Blocked, _) => (
                    ControlKind::BlockedCategories,
                    format!("merchant category {m} blocked on {who}"),
                ),
            };
            return decline(ev, owner, control, message);
        }
    }
    for (rule, list) in [
        (ListRule::Allowed, &c.allowed_countries),
        (ListRule::Blocked, &c.blocked_countries),
    ] {
        if list.is_empty() {
            continue;
        }
        let passed = match (f.country, rule) {
            (None, _) => !f.debit,
            (Some(k), ListRule::Allowed) => list.contains(&k),
            (Some(k), ListRule::Blocked) => !list.contains(&k),
        };
        ev.checks.push(Check::Countries {
            owner,
            rule,
            country: f.country.map(|k| k.alpha2().to_owned()),
            list: list.iter().map(|k| k.alpha2().to_owned()).collect(),
            passed,
        });
        if !passed {
            let control = match rule {
                ListRule::Allowed => ControlKind::AllowedCountries,
                ListRule::Blocked => ControlKind::BlockedCountries,
            };
            let message = match (f.country, rule) {
                (None, _) => {
                    format!("merchant country missing or unknown where {who} restricts countries")
                }
                (Some(k), ListRule::Allowed) => format!(
                    "merchant country {} ({}) not among the countries allowed on {who}",
                    k.alpha2(),
                    k.name()
                ),
                (Some(k), ListRule::Blocked) => {
                    format!(
                        "merchant country {} ({}) blocked on {who}",
                        k.alpha2(),
                        k.name()
                    )
                }
            };
            return decline(ev, owner, control, message);
        }
    }
    for (rule, list) in [
        (ListRule::Allowed, c.allowed_channels),
        (ListRule::Blocked, c.blocked_channels),
    ] {
        if list.is_empty() {
            continue;
        }
        let offending = request.channels.iter().find(|ch| match rule {
            ListRule::Allowed => !list.contains(*ch),
            ListRule::Blocked => list.contains(*ch),
        });
        ev.checks.push(Check::Channels {
            owner,
            rule,
            channels: request.channels.to_strings(),
            list: list.to_strings(),
            passed: offending.is_none(),
        });
        if let Some(ch) = offending {
            let (control, message) = match rule {
                ListRule::Allowed => (
                    ControlKind::AllowedChannels,
                    format!("{ch} not among the channels allowed on {who}"),
                ),
                ListRule::Blocked => (
                    ControlKind::BlockedChannels,
                    format!("{ch} blocked on {who}"),
                ),
            };
            return decline(ev, owner, control, message);
        }
    }
    Ok(())
}

fn limit_checks(
    ev: &mut Evaluation,
    owner: Owner,
    c: &Controls,
    request: &ControlRequest<'_>,
    f: &Facts,
    counters: &impl CounterSource,
    day: Date,
) -> Result<(), ()> {
    let who = owner.words();
    let for_categories =
        |cats: Option<&Categories>| cats.map_or(String::new(), |c| format!(" for {c}"));
    // Limits in another currency (a card's limits, used with another account) do not apply.
    let money = c.currency.filter(|cur| *cur == request.currency);
    for l in &c.spending_limits {
        let Some(currency) = money else { break };
        let cats = l.categories.as_ref();
        if !covers(cats, f.mcc) {
            continue;
        }
        let key = key(l.interval, cats, day);
        let spent = key
            .as_ref()
            .map_or(0, |k| counters.counter(owner, k).amount);
        let passed = spent
            .checked_add(request.amount)
            .is_some_and(|total| total <= l.amount);
        let places = currency.exponent();
        ev.checks.push(Check::SpendingLimit {
            owner,
            interval: l.interval,
            categories: cats.map(Categories::to_strings),
            window: key.as_ref().map(|k| k.window.to_string()),
            currency: currency.to_string(),
            limit: format_minor(l.amount, places),
            spent: format_minor(spent, places),
            amount: format_minor(request.amount, places),
            passed,
        });
        if !passed {
            let verb = if l.interval == Interval::PerAuthorization {
                "exceeded"
            } else {
                "reached"
            };
            let message = format!(
                "{} spending limit of {}{} {verb} on {who}",
                l.interval.words(),
                c.format_amount(l.amount),
                for_categories(cats),
            );
            return decline(ev, owner, ControlKind::SpendingLimit, message);
        }
    }
    for l in &c.velocity_limits {
        let cats = l.categories.as_ref();
        if !covers(cats, f.mcc) {
            continue;
        }
        let Some(k) = key(l.interval, cats, day) else {
            continue;
        };
        let counted = counters.counter(owner, &k).count;
        let passed = counted < i64::from(l.count);
        ev.checks.push(Check::VelocityLimit {
            owner,
            interval: l.interval,
            categories: cats.map(Categories::to_strings),
            window: k.window.to_string(),
            limit: l.count,
            counted,
            passed,
        });
        if !passed {
            let noun = if l.count == 1 {
                "authorization"
            } else {
                "authorizations"
            };
            let message = format!(
                "{} limit of {} {noun}{} reached on {who}",
                l.interval.words(),
                l.count,
                for_categories(cats),
            );
            return decline(ev, owner, ControlKind::VelocityLimit, message);
        }
    }
    Ok(())
}
