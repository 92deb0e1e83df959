//! Spending controls on an account (user + currency) and on a card: which merchant
//! categories, countries and channels may be used, and how much and how often may be spent
//! in calendar windows. Pure: the store prefetches the controls and the counters of the
//! windows a request touches, [`evaluate`] decides, and the plan writes the counter deltas
//! with the rest of the batch.
//!
//! The model, its JSON and the decisions the specification leaves open are described in
//! `docs/controls.md`.

pub mod backtest;
mod category;
mod channel;
mod counters;
mod country;
mod evaluate;
mod iso3166;
mod legacy;
mod usage;
mod window;

pub use category::{Categories, CategoryError, CategoryGroup, CategoryItem};
pub use channel::{Channel, Channels};
pub use counters::{
    Counter, CounterDelta, CounterKey, CounterSnapshot, Release, Released, decode_counters,
    encode_counters, release, release_of,
};
pub use country::Country;
pub use evaluate::{
    Check, ControlDecline, ControlKind, ControlRequest, Evaluation, ListRule, Owner,
    approval_deltas, evaluate, touched_keys,
};
pub use usage::{LimitUsage, WindowView, legacy_usage, usage};
pub use window::{Interval, TimeZoneError, Window, WindowKey, local_day, time_zone};

/// The zone of the calendar windows, as [`time_zone`] resolves the setting.
pub use jiff::tz::TimeZone;

use std::collections::BTreeSet;
use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::Currency;
use crate::money::{AmountError, format_minor, to_minor};

/// A cap on the money debited in a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpendingLimit {
    pub interval: Interval,
    /// `None`: every category counts.
    pub categories: Option<Categories>,
    /// Minor units of the controls' currency, > 0.
    pub amount: i64,
}

/// A cap on the number of approved debits in a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VelocityLimit {
    pub interval: Interval,
    pub categories: Option<Categories>,
    /// > 0.
    pub count: u32,
}

/// The controls of one account or one card. The default holds no control at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// The currency of the spending limits' amounts: the account's currency, or the one a
    /// card's controls name. `None` only when there is no spending limit.
    pub currency: Option<Currency>,
    /// Empty: every category is allowed.
    pub allowed_categories: Categories,
    pub blocked_categories: Categories,
    /// Empty: every country is allowed.
    pub allowed_countries: BTreeSet<Country>,
    pub blocked_countries: BTreeSet<Country>,
    /// Empty: every channel is allowed. Otherwise every channel a request shows must be
    /// listed (a plain domestic card-present purchase shows none and passes).
    pub allowed_channels: Channels,
    pub blocked_channels: Channels,
    /// Sorted (per authorization first, then by window length), without repeats.
    pub spending_limits: Vec<SpendingLimit>,
    pub velocity_limits: Vec<VelocityLimit>,
}

/// Why a controls document was refused: the JSON path of the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ControlsError {
    /// `spending_limits[1].amount`, `blocked_categories[0]`; empty for the document itself.
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ControlsError {
    ControlsError {
        field: field.into(),
        message: message.into(),
    }
}

const FIELDS: &[&str] = &[
    "currency",
    "allowed_categories",
    "blocked_categories",
    "allowed_countries",
    "blocked_countries",
    "allowed_channels",
    "blocked_channels",
    "spending_limits",
    "velocity_limits",
];

impl Controls {
    /// These controls for a merchant whose category (`category_known` false) or country
    /// (`country_known` false) is not known but is not in doubt either (a store the issuer
    /// configured without them): the lists that read the unknown fact (allowed and blocked
    /// categories or countries) are left out. Limits stand, those of some categories only
    /// included: an unknown category counts against them, as always (they never fail open).
    pub fn for_merchant_facts(&self, category_known: bool, country_known: bool) -> Controls {
        let mut c = self.clone();
        if !category_known {
            c.allowed_categories = Categories::default();
            c.blocked_categories = Categories::default();
        }
        if !country_known {
            c.allowed_countries.clear();
            c.blocked_countries.clear();
        }
        c
    }

    /// Parses the admin JSON. `account_currency` is the account's currency for an
    /// account's controls (the document may repeat it, and must agree), `None` for a
    /// card's (which must then name the currency of its spending limits) and for the
    /// stored form.
    pub fn from_json(
        body: &str,
        account_currency: Option<Currency>,
    ) -> Result<Controls, ControlsError> {
        let value: Value =
            serde_json::from_str(body).map_err(|e| err("", format!("not valid JSON: {e}")))?;
        Controls::from_value(&value, account_currency)
    }

    pub fn from_value(
        value: &Value,
        account_currency: Option<Currency>,
    ) -> Result<Controls, ControlsError> {
        let obj = value
            .as_object()
            .ok_or_else(|| err("", "must be a JSON object"))?;
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(err(
                unknown.as_str(),
                format!("unknown field (known: {})", FIELDS.join(", ")),
            ));
        }
        let named = match obj.get("currency") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                Currency::parse(s)
                    .map_err(|_| err("currency", format!("{s:?} is not an ISO 4217 currency")))?,
            ),
            Some(_) => return Err(err("currency", "must be a string")),
        };
        let currency = match (account_currency, named) {
            (Some(a), Some(n)) if a != n => {
                return Err(err(
                    "currency",
                    format!("the account's currency is {a}, not {n}"),
                ));
            }
            (a, n) => a.or(n),
        };
        let mut controls = Controls {
            currency,
            allowed_categories: categories(obj, "allowed_categories", "")?.unwrap_or_default(),
            blocked_categories: categories(obj, "blocked_categories", "")?.unwrap_or_default(),
            allowed_countries: countries(obj, "allowed_countries")?,
            blocked_countries: countries(obj, "blocked_countries")?,
            allowed_channels: channels(obj, "allowed_channels")?,
            blocked_channels: channels(obj, "blocked_channels")?,
            spending_limits: Vec::new(),
            velocity_limits: Vec::new(),
        };
        for (i, item) in list(obj, "spending_limits")?.iter().enumerate() {
            let at = format!("spending_limits[{i}]");
            let o = limit_object(item, &at, &["amount", "interval", "categories"])?;
            let Some(cur) = currency else {
                return Err(err(
                    "currency",
                    "required when there are spending limits (the currency of their amounts)",
                ));
            };
            controls.spending_limits.push(SpendingLimit {
                interval: interval(o, &at)?,
                categories: categories(o, "categories", &format!("{at}."))?,
                amount: amount(o.get("amount"), &format!("{at}.amount"), cur)?,
            });
        }
        for (i, item) in list(obj, "velocity_limits")?.iter().enumerate() {
            let at = format!("velocity_limits[{i}]");
            let o = limit_object(item, &at, &["count", "interval", "categories"])?;
            let interval = interval(o, &at)?;
            if interval == Interval::PerAuthorization {
                return Err(err(
                    format!("{at}.interval"),
                    "per_authorization counts one authorization: use a window",
                ));
            }
            controls.velocity_limits.push(VelocityLimit {
                interval,
                categories: categories(o, "categories", &format!("{at}."))?,
                count: count(o.get("count"), &format!("{at}.count"))?,
            });
        }
        controls.spending_limits.sort_unstable();
        controls.spending_limits.dedup();
        controls.velocity_limits.sort_unstable();
        controls.velocity_limits.dedup();
        if controls.spending_limits.is_empty() && account_currency.is_none() {
            // A card's currency only says what its limits' amounts are in.
            controls.currency = None;
        }
        Ok(controls)
    }

    /// The canonical JSON form (for storage and for `GET`): fields in a fixed order, empty
    /// lists left out, lists sorted and without repeats, amounts as decimal strings with
    /// the currency's places. Parsing it back with the same `account_currency` gives `self`.
    pub fn to_canonical_json(&self) -> String {
        // A derived `Serialize` writes fields in declaration order whatever features
        // serde_json is built with (a `Map` sorts keys unless `preserve_order` is on).
        serde_json::to_string(&self.document()).unwrap_or_default()
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self.document()).unwrap_or(Value::Null)
    }

    fn document(&self) -> Document {
        let exponent = self.currency.map_or(0, |c| c.exponent());
        let countries = |s: &BTreeSet<Country>| s.iter().map(|c| c.alpha2().to_owned()).collect();
        Document {
            currency: self
                .currency
                .filter(|_| !self.spending_limits.is_empty())
                .map(|c| c.to_string()),
            allowed_categories: self.allowed_categories.to_strings(),
            blocked_categories: self.blocked_categories.to_strings(),
            allowed_countries: countries(&self.allowed_countries),
            blocked_countries: countries(&self.blocked_countries),
            allowed_channels: self.allowed_channels.to_strings(),
            blocked_channels: self.blocked_channels.to_strings(),
            spending_limits: self
                .spending_limits
                .iter()
                .map(|l| SpendingDocument {
                    amount: format_minor(l.amount, exponent),
                    interval: l.interval,
                    categories: l.categories.as_ref().map(Categories::to_strings),
                })
                .collect(),
            velocity_limits: self
                .velocity_limits
                .iter()
                .map(|l| VelocityDocument {
                    count: l.count,
                    interval: l.interval,
                    categories: l.categories.as_ref().map(Categories::to_strings),
                })
                .collect(),
        }
    }

    /// Whether no control is set (nothing to check, no counter to keep).
    pub fn is_empty(&self) -> bool {
        *self
            == Controls {
                currency: self.currency,
                ..Controls::default()
            }
    }

    /// The amount of a spending limit as a person reads it ("500.00 ARS").
    pub fn format_amount(&self, minor: i64) -> String {
        match self.currency {
            Some(c) => format!("{} {c}", format_minor(minor, c.exponent())),
            None => minor.to_string(),
        }
    }
}

/// The stored and served shape of [`Controls`], in [`FIELDS`] order.
#[derive(Serialize)]
struct Document {
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_categories: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_categories: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_countries: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_countries: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_channels: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_channels: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spending_limits: Vec<SpendingDocument>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    velocity_limits: Vec<VelocityDocument>,
}

#[derive(Serialize)]
struct SpendingDocument {
    amount: String,
    interval: Interval,
    #[serde(skip_serializing_if = "Option::is_none")]
    categories: Option<Vec<String>>,
}

#[derive(Serialize)]
struct VelocityDocument {
    count: u32,
    interval: Interval,
    #[serde(skip_serializing_if = "Option::is_none")]
    categories: Option<Vec<String>>,
}

fn list<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a [Value], ControlsError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(err(field, "must be a list")),
    }
}

/// The strings of the list `obj[key]`, each with its path (`{prefix}{key}[i]`); `None`
/// when the field is absent or null.
fn strings<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Result<Option<Vec<(String, &'a str)>>, ControlsError> {
    if matches!(obj.get(key), None | Some(Value::Null)) {
        return Ok(None);
    }
    list(obj, key)
        .map_err(|e| err(format!("{prefix}{key}"), e.message))?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{prefix}{key}[{i}]");
            v.as_str()
                .map(|s| (at.clone(), s))
                .ok_or_else(|| err(at, "must be a string"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A category list: the controls' own (`prefix` empty) or a limit's (`prefix` names the
/// limit), which may be left out but not empty.
fn categories(
    obj: &Map<String, Value>,
    key: &str,
    prefix: &str,
) -> Result<Option<Categories>, ControlsError> {
    let Some(items) = strings(obj, key, prefix)? else {
        return Ok(None);
    };
    if !prefix.is_empty() && items.is_empty() {
        return Err(err(
            format!("{prefix}{key}"),
            "must name at least one category (leave it out to count every category)",
        ));
    }
    items
        .into_iter()
        .map(|(at, s)| CategoryItem::parse(s).map_err(|e| err(at, e.to_string())))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| Some(Categories::new(v)))
}

/// The entries of a list of names, each read by `parse`; `refusal` says why a name is not
/// one.
fn named<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
    refusal: impl Fn(&str) -> String,
) -> Result<Vec<T>, ControlsError> {
    strings(obj, field, "")?
        .unwrap_or_default()
        .into_iter()
        .map(|(at, s)| parse(s).ok_or_else(|| err(at, refusal(s))))
        .collect()
}

fn countries(obj: &Map<String, Value>, field: &str) -> Result<BTreeSet<Country>, ControlsError> {
    named(obj, field, Country::parse, |s| {
        format!("{s:?} is not an ISO 3166-1 alpha-2 or alpha-3 country code")
    })
    .map(BTreeSet::from_iter)
}

fn channels(obj: &Map<String, Value>, field: &str) -> Result<Channels, ControlsError> {
    let list = named(obj, field, Channel::parse, |s| {
        format!(
            "unknown channel {s:?} (known: {})",
            Channel::ALL.map(|c| c.name()).join(", ")
        )
    })?;
    Ok(Channels::from_list(&list))
}

fn limit_object<'a>(
    item: &'a Value,
    at: &str,
    fields: &[&str],
) -> Result<&'a Map<String, Value>, ControlsError> {
    let o = item
        .as_object()
        .ok_or_else(|| err(at, "must be an object"))?;
    if let Some(unknown) = o.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(err(
            format!("{at}.{unknown}"),
            format!("unknown field (known: {})", fields.join(", ")),
        ));
    }
    Ok(o)
}

fn interval(o: &Map<String, Value>, at: &str) -> Result<Interval, ControlsError> {
    let field = format!("{at}.interval");
    let s = o
        .get("interval")
        .ok_or_else(|| err(&field, "required"))?
        .as_str()
        .ok_or_else(|| err(&field, "must be a string"))?;
    Interval::parse(s).ok_or_else(|| {
        err(
            &field,
            format!(
                "unknown interval {s:?} (known: {})",
                Interval::ALL.map(|i| i.name()).join(", ")
            ),
        )
    })
}

/// Reads a limit's amount: a plain decimal string (digits, optionally a point and more
/// digits), never a JSON number, so it cannot have passed through binary floating point.
fn amount(v: Option<&Value>, field: &str, currency: Currency) -> Result<i64, ControlsError> {
    let s = match v {
        None => return Err(err(field, "required")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(err(field, "must be a decimal string, e.g. \"500.00\"")),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(err(field, format!("{s:?} is not a decimal amount")));
    }
    // Exact: `from_str` rounds past 28 decimal places, which would pass "5.000...01" as 5.
    let d = Decimal::from_str_exact(s).map_err(|_| err(field, format!("{s:?} is out of range")))?;
    let minor = to_minor(d, currency).map_err(|e| match e {
        AmountError::ExcessPrecision => err(
            field,
            format!(
                "{s:?} has more decimal places than {currency} has ({})",
                currency.exponent()
            ),
        ),
        AmountError::OutOfRange => err(field, format!("{s:?} is out of range")),
    })?;
    if minor <= 0 {
        return Err(err(field, "must be greater than zero"));
    }
    Ok(minor)
}

fn count(v: Option<&Value>, field: &str) -> Result<u32, ControlsError> {
    let v = v.ok_or_else(|| err(field, "required"))?;
    match v.as_u64() {
        Some(0) => Err(err(field, "must be greater than zero")),
        Some(n) => u32::try_from(n).map_err(|_| err(field, "too large")),
        None if v.as_i64().is_some() => Err(err(field, "must be greater than zero")),
        None => Err(err(field, "must be a whole number")),
    }
}

impl fmt::Display for Controls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_json())
    }
}

#[cfg(test)]
mod tests;
