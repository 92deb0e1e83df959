//! `authorizer backtest`: the stored authorizations of a period decided again with another
//! controls document, in order, without booking anything (`ledger::controls::backtest`
//! decides with the live path's own functions), and what would have been decided
//! differently, by control, with the amounts.

use crate::service::card_transaction;
use jiff::Timestamp;
use jiff::civil::Date;
use ledger::controls::backtest::{Answer, Replay, StoredAuthorization};
use ledger::controls::{Controls, ControlsError, Owner, TimeZone};
use ledger::decision::RequestKind;
use ledger::{Currency, format_minor};
use protocol::wire::TransactionRequest;
use std::collections::HashMap;
use std::fmt::Write as _;
use store::Store;
use store::controls::BacktestScope;

/// Whose controls the document replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One account (`usr-1/ARS`).
    Account { user_id: String, currency: Currency },
    /// One card.
    Card(String),
    /// Every account (those in the document's currency when it names one).
    All,
}

impl Target {
    /// `--account usr-1/ARS`.
    pub fn account(s: &str) -> anyhow::Result<Target> {
        let (user, cur) = s
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("--account takes USER/CURRENCY, e.g. usr-1/ARS"))?;
        let currency = Currency::parse(cur)
            .map_err(|_| anyhow::anyhow!("--account {s}: {cur} is not a listed currency"))?;
        Ok(Target::Account {
            user_id: user.to_owned(),
            currency,
        })
    }

    fn owner(&self) -> Owner {
        match self {
            Target::Card(_) => Owner::Card,
            _ => Owner::Account,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Account { user_id, currency } => format!("account {user_id}/{currency}"),
            Target::Card(id) => format!("card {id}"),
            Target::All => "every account".to_owned(),
        }
    }
}

/// Why a backtest did not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The document is refused as `PUT .../controls` refuses it (the field, what is wrong).
    #[error("invalid controls: {0}")]
    Controls(#[from] ControlsError),
    #[error("{0}")]
    Period(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// One decision the document would have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub transaction_id: String,
    pub decided_at_ms: i64,
    pub user_id: Option<String>,
    pub card_id: Option<String>,
    pub currency: Option<Currency>,
    /// Minor units asked.
    pub amount: Option<i64>,
    pub before: Answer,
    pub after: Answer,
}

impl Change {
    /// `approved, now declined`, `declined, now approved` or `declined for another reason`.
    pub fn direction(&self) -> &'static str {
        match (self.before.approved(), self.after.approved()) {
            (true, _) => "approved, now declined",
            (false, true) => "declined, now approved",
            (false, false) => "declined for another reason",
        }
    }

    /// The control behind the change: what declines it now, or what declined it then.
    pub fn reason(&self) -> String {
        let a = if self.after.approved() {
            &self.before
        } else {
            &self.after
        };
        let r = a.reason.clone().unwrap_or_else(|| a.message.clone());
        if self.after.approved() {
            format!("was: {r}")
        } else {
            r
        }
    }

    fn amount_text(&self) -> String {
        match (self.amount, self.currency) {
            (Some(m), Some(c)) => format_minor(m, c.exponent()),
            _ => String::new(),
        }
    }
}

/// What a backtest found.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: Target,
    pub from: Date,
    pub to: Date,
    /// Authorizations decided again.
    pub replayed: usize,
    pub changes: Vec<Change>,
}

/// Counts and sums per direction and control, in order of first appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub direction: &'static str,
    /// `None`: the direction's total.
    pub reason: Option<String>,
    pub count: usize,
    /// Minor units per currency.
    pub amounts: Vec<(Currency, i64)>,
}

impl Report {
    /// The direction totals, each followed by its controls.
    pub fn groups(&self) -> Vec<Group> {
        let mut out: Vec<Group> = Vec::new();
        for direction in [
            "approved, now declined",
            "declined, now approved",
            "declined for another reason",
        ] {
            let changes: Vec<&Change> = self
                .changes
                .iter()
                .filter(|c| c.direction() == direction)
                .collect();
            if changes.is_empty() {
                continue;
            }
            let mut groups = vec![Group {
                direction,
                reason: None,
                count: 0,
                amounts: Vec::new(),
            }];
            for c in changes {
                let reason = Some(c.reason());
                let at = match groups.iter().position(|g| g.reason == reason) {
                    Some(at) => at,
                    None => {
                        groups.push(Group {
                            direction,
                            reason,
                            count: 0,
                            amounts: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                for i in [0, at] {
                    add(&mut groups[i], c);
                }
            }
            out.extend(groups);
        }
        out
    }

    /// The report for a person.
    pub fn text(&self) -> String {
        let mut s = format!(
            "backtest of {} from {} to {}: {} authorizations replayed, {} decided differently\n",
            self.target.describe(),
            self.from,
            self.to,
            self.replayed,
            self.changes.len()
        );
        for g in self.groups() {
            let amounts = g
                .amounts
                .iter()
                .map(|(c, m)| format!("{} {c}", format_minor(*m, c.exponent())))
                .collect::<Vec<_>>()
                .join(" + ");
            let amounts = if amounts.is_empty() {
                String::new()
            } else {
                format!(", {amounts}")
            };
            let _ = match &g.reason {
                None => writeln!(s, "  {}: {}{amounts}", g.direction, g.count),
                Some(r) => writeln!(s, "    {r}: {}{amounts}", g.count),
            };
        }
        s
    }

    /// One line per changed decision, with a header.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "transaction_id,decided_at,user_id,card_id,currency,amount,\
             status_before,status_detail_before,message_before,\
             status_after,status_detail_after,message_after\n",
        );
        for c in &self.changes {
            let decided_at = Timestamp::from_millisecond(c.decided_at_ms)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let fields = [
                c.transaction_id.as_str(),
                &decided_at,
                c.user_id.as_deref().unwrap_or(""),
                c.card_id.as_deref().unwrap_or(""),
                c.currency.as_ref().map_or("", |c| c.code()),
                &c.amount_text(),
                &c.before.status,
                &c.before.status_detail,
                &c.before.message,
                &c.after.status,
                &c.after.status_detail,
                &c.after.message,
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            s.push_str(&line.join(","));
            s.push('\n');
        }
        s
    }
}

fn add(g: &mut Group, c: &Change) {
    g.count += 1;
    let (Some(cur), Some(m)) = (c.currency, c.amount) else {
        return;
    };
    match g.amounts.iter_mut().find(|(k, _)| *k == cur) {
        Some((_, sum)) => *sum = sum.saturating_add(m),
        None => g.amounts.push((cur, m)),
    }
}

/// A CSV field, quoted where it must be (RFC 4180).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_owned()
    }
}

/// The controls `document` amounts to for accounts in `currency` (`None`: a card's), each
/// parsed once.
struct Documents<'a> {
    document: &'a serde_json::Value,
    parsed: HashMap<Option<Currency>, Controls>,
}

impl Documents<'_> {
    fn for_currency(&mut self, currency: Option<Currency>) -> Result<&Controls, ControlsError> {
        if !self.parsed.contains_key(&currency) {
            let c = Controls::from_value(self.document, currency)?;
            self.parsed.insert(currency, c);
        }
        Ok(&self.parsed[&currency])
    }
}

/// The first instant of `day` in `tz`, in milliseconds.
fn start_ms(day: Date, tz: &TimeZone) -> Result<i64, BacktestError> {
    day.to_zoned(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| BacktestError::Period(format!("{day}: {e}")))
}

/// Replays the authorizations `target` saw from `from` to `to` (calendar days in `tz`, both
/// included) with `document` as its controls.
pub async fn backtest(
    store: &Store,
    document: &str,
    target: Target,
    (from, to): (Date, Date),
    tz: &TimeZone,
) -> Result<Report, BacktestError> {
    let value: serde_json::Value = serde_json::from_str(document).map_err(|e| ControlsError {
        field: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    // As the admin API reads it: a member named twice is refused (serde_json keeps the last,
    // and which one counts is not for us to guess).
    if let Err(instore::JsonError::DuplicateMember(name)) = instore::parse(document.as_bytes()) {
        return Err(ControlsError {
            field: name.clone(),
            message: format!("duplicate field `{name}`"),
        }
        .into());
    }
    let mut docs = Documents {
        document: &value,
        parsed: HashMap::new(),
    };
    // Validated before anything is read, as the admin API would.
    let scope = match &target {
        Target::Account { user_id, currency } => {
            docs.for_currency(Some(*currency))?;
            BacktestScope::Account {
                user_id,
                currency: *currency,
            }
        }
        Target::Card(id) => {
            docs.for_currency(None)?;
            BacktestScope::Card(id)
        }
        Target::All => {
            let named =
                match value.get("currency").filter(|v| !v.is_null()) {
                    Some(v) => Some(Currency::parse(v.as_str().unwrap_or("")).map_err(|_| {
                        ControlsError {
                            field: "currency".into(),
                            message: "not a listed currency".into(),
                        }
                    })?),
                    None => None,
                };
            docs.for_currency(named)?;
            BacktestScope::All { currency: named }
        }
    };
    if to < from {
        return Err(BacktestError::Period(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let end = to
        .tomorrow()
        .map_err(|e| BacktestError::Period(format!("{to}: {e}")))?;
    let rows = store
        .authorizations_between(scope, start_ms(from, tz)?, start_ms(end, tz)?)
        .await?;
    let owner = target.owner();
    let mut replay = Replay::default();
    let mut report = Report {
        target: target.clone(),
        from,
        to,
        replayed: 0,
        changes: Vec::new(),
    };
    for row in &rows {
        let Ok(request) = TransactionRequest::from_slice(&row.request_body) else {
            continue;
        };
        let Some(explanation) = ledger::plan::render_explanation(&row.explanation) else {
            continue;
        };
        let t = card_transaction(&request);
        let currency = Currency::parse(t.currency).ok();
        let owner_id = match &target {
            Target::Card(id) => id.clone(),
            _ => format!("{}/{}", t.user_id.unwrap_or(""), t.currency),
        };
        let controls = docs.for_currency(match owner {
            Owner::Card => None,
            Owner::Account => currency,
        })?;
        let stored = StoredAuthorization {
            kind: kind_of(row.direction.as_deref(), row.tx_type.as_deref()),
            currency,
            amount: t.amount,
            mcc: t.mcc,
            country: t.country,
            channels: t.channels,
            at_ms: row.created_at_ms,
            owner_id: &owner_id,
            explanation: &explanation,
        };
        let Some(r) = replay.replay(owner, controls, &stored, tz) else {
            continue;
        };
        report.replayed += 1;
        if r.changed() {
            report.changes.push(Change {
                transaction_id: row.transaction_id.clone(),
                decided_at_ms: row.created_at_ms,
                user_id: row.user_id.clone(),
                card_id: row.card_id.clone(),
                currency,
                amount: r.amount,
                before: r.before,
                after: r.after,
            });
        }
    }
    Ok(report)
}

/// The direction a record kept: `DEBIT`, `CREDIT`, or none (a balance inquiry when its type
/// says so).
fn kind_of(direction: Option<&str>, tx_type: Option<&str>) -> Option<RequestKind> {
    match (direction, tx_type) {
        (Some("DEBIT"), _) => Some(RequestKind::Debit),
        (Some("CREDIT"), _) => Some(RequestKind::Credit),
        (None, Some("BALANCE_INQUIRY")) => Some(RequestKind::BalanceInquiry),
        _ => None,
    }
}
