//! Reconciliation of the processor's files against the ledger.
//!
//! Every night the processor delivers two CSV files for a business date: a
//! TRANSACTIONS file (authorizations and adjustments as the processor recorded them)
//! and a PRESENTMENTS file (clearing presented by acquirers, each settling one
//! authorization, or crediting one refund). The reconciler crate parses the rows and
//! loads our side from the database; this module only classifies.
//!
//! # Memory and speed
//!
//! The ledger side is loaded first with [`Matcher::add_ledger`] and held in two
//! `FxHashMap<Box<str>, _>` (authorizations and adjustments), about 40 bytes each
//! per entry plus the id. The file side is streamed: [`Matcher::transaction`] and
//! [`Matcher::presentment`] look a row up by `&str` (no allocation), flip a flag on the
//! ledger entry and drop the row. Only rows that produce a [`Break`] are kept, plus the
//! id of each file row that has no ledger entry (needed to recognise its duplicates).
//!
//! A day too large for one matcher is split by transaction id into partitions, each
//! matched by its own `Matcher` (the reconciler does this): everything a ledger entry
//! is compared with shares its id, except the adjustments summed into an authorization,
//! which [`Matcher::add_adjustment_link`] brings to the authorization's partition.
//! [`Report::merge`] adds the partitions' reports up.
//!
//! # Rules
//!
//! Transactions file row against the ledger entry with the same `(kind, transaction_id)`:
//!
//! * A second (third, ...) row for the same `(kind, id)` is [`BreakClass::DuplicateInFile`]
//!   (file `"transactions"`, the duplicate's line). Only the first row is classified and
//!   counted in the totals.
//! * No ledger entry: an approved row is [`BreakClass::MissingInLedger`]; a rejected row
//!   is matched (a decline we have no trace of moves no money).
//! * The currencies differ: [`BreakClass::CurrencyMismatch`] (nothing else is compared;
//!   `difference_minor` is `None` because the amounts are in different units).
//! * The processor approved it and the ledger entry is not effective, or the processor
//!   rejected it and the ledger entry is effective: [`BreakClass::StatusMismatch`], with
//!   detail `"processor approved, ledger not booked"` or `"ledger booked, processor
//!   rejected"`.
//! * Both sides effective with different amounts: [`BreakClass::AmountMismatch`].
//! * Otherwise (same amount, or a decline both sides agree on) the row is matched.
//!
//! Ledger entries no transactions row mentioned, at [`Matcher::finish`]: an effective
//! one booked at or after [`MatchConfig::grace_from_ms`] is `pending` (late delivery);
//! an earlier one is [`BreakClass::MissingInFile`]. Non-effective entries (declines)
//! missing from the file are neither breaks nor counted.
//!
//! Presentments (file `"presentments"`):
//!
//! * A second presentment for the same id is [`BreakClass::DuplicateInFile`]. The ids
//!   of first presentments are kept in [`Report::presented`]: one presented on another
//!   business date too is a second clearing the day's file alone cannot show, which the
//!   reconciler reports as [`BreakClass::PresentedAgain`] ([`presented_again`]).
//! * The id must be a ledger authorization or a refund, else
//!   [`BreakClass::PresentmentWithoutAuthorization`] (also when the id is a ledger
//!   adjustment of another type). A refund (an adjustment of type `REFUND`) is a
//!   merchant's return: networks clear it as a credit presentment of its own, under its
//!   own id, which is matched against what the refund booked (a refund not effective
//!   is `"presented but not booked"`, another amount a
//!   [`BreakClass::PresentmentAmountDiffers`]).
//! * A currency other than the authorization's is [`BreakClass::CurrencyMismatch`].
//! * A presentment of a non-effective authorization is matched against the effective
//!   adjustments naming it (the processor may book a declined or rejected one by an
//!   adjustment); without any, or when they differ from it, it is
//!   [`BreakClass::PresentmentAmountDiffers`] with their sum (0 without any) as the ledger
//!   amount and detail `"presented but not booked"`.
//! * Otherwise the presented amount is compared with the expected amount: the
//!   authorization's amount plus the amounts of the effective ledger adjustments in the
//!   same currency whose `original_transaction_id` is that authorization (a partial
//!   reversal or a refund reduces what the acquirer should present). A difference
//!   above the currency's tolerance ([`MatchConfig::tolerance`]) is
//!   [`BreakClass::PresentmentAmountDiffers`] (ledger amount = expected, detail
//!   `"adjustment expected: ..."`); otherwise `presentments_matched` grows. A refund
//!   presented on its own is not netted off its purchase's presentment too: the
//!   reconciler holds the two against each other afterwards ([`refunds_cleared_alone`],
//!   over dates), with the ids the matcher lists ([`Report::refunds_presented`],
//!   [`Report::presented_with_refunds`]).
//! * Authorizations without a presentment are not breaks: clearing arrives over days.
//!
//! Totals per currency: `ledger_totals` over effective ledger entries, `file_totals`
//! over approved first-occurrence transactions rows, `presentment_totals` over
//! first-occurrence presentments. Debits are negative amounts, reported as a positive
//! magnitude; zero amounts count but add to neither side.
//!
//! `difference_minor` is always `file - ledger`; it is `None` when either side is
//! unknown, when the currencies differ, or when the difference does not fit an `i64`
//! (all arithmetic is done in `i128`, never overflowing). A ledger entry loaded twice
//! with the same `(kind, id)` keeps the first and counts in
//! [`Report::ledger_duplicates`].

use crate::Currency;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

/// `Break::file` for rows of the transactions file.
pub const TRANSACTIONS_FILE: &str = "transactions";
/// `Break::file` for rows of the presentments file.
pub const PRESENTMENTS_FILE: &str = "presentments";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    Authorization,
    Adjustment,
}

impl EntryKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::Authorization => "authorization",
            EntryKind::Adjustment => "adjustment",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A processor transaction as our ledger booked it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub transaction_id: Box<str>,
    pub kind: EntryKind,
    /// Whether the money movement stands: approved and booked and not reversed
    /// (adjustments: true when booked). A declined authorization, or one reversed by a
    /// REJECTED verdict, is false.
    pub effective: bool,
    pub currency: Currency,
    /// Signed from the cardholder's side in minor units (debit negative, credit
    /// positive); 0 for declined.
    pub amount_minor: i64,
    pub original_transaction_id: Option<Box<str>>,
    /// When we booked it (unix ms).
    pub booked_at_ms: i64,
    /// A refund: an adjustment of type `REFUND`, which the network may clear on its own.
    pub refund: bool,
}

/// One row of the processor's transactions file, already parsed.
#[derive(Debug, Clone)]
pub struct FileTransaction {
    pub line: u64,
    pub transaction_id: String,
    pub kind: EntryKind,
    /// The processor's status for it: true = APPROVED.
    pub approved: bool,
    pub currency: Currency,
    /// Signed from the cardholder's side, minor units.
    pub amount_minor: i64,
    pub original_transaction_id: Option<String>,
}

/// One row of the presentments file: the clearing of an authorization.
#[derive(Debug, Clone)]
pub struct Presentment {
    pub line: u64,
    /// The authorization it clears, or the refund (a credit presentment of its own).
    pub transaction_id: String,
    pub currency: Currency,
    /// Signed from the cardholder's side, minor units (a purchase presentment is
    /// negative).
    pub amount_minor: i64,
}

#[derive(Debug, Clone, Default)]
pub struct MatchConfig {
    /// Presentment vs authorized (+ linked adjustments) difference tolerated, in minor
    /// units (absolute; a negative value is treated as 0), for the currencies that
    /// `presentment_tolerance_by_currency` does not name.
    pub presentment_tolerance_minor: i64,
    /// The tolerance of each currency named, in its own minor units (whose worth differs
    /// from one currency to the next: 1 CLP, 0.01 ARS, 0.001 KWD).
    pub presentment_tolerance_by_currency: Vec<(Currency, i64)>,
    /// Ledger entries booked at or after this instant (unix ms) that are missing from
    /// the file are reported as `Pending` (late delivery) instead of `MissingInFile`.
    pub grace_from_ms: i64,
}

impl MatchConfig {
    /// The presentment tolerance of `currency`, in its minor units.
    pub fn tolerance(&self, currency: Currency) -> i128 {
        let t = self
            .presentment_tolerance_by_currency
            .iter()
            .find(|(c, _)| *c == currency)
            .map_or(self.presentment_tolerance_minor, |(_, t)| *t);
        i128::from(t.max(0))
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum BreakClass {
    AmountMismatch,
    StatusMismatch,
    MissingInLedger,
    MissingInFile,
    DuplicateInFile,
    PresentmentWithoutAuthorization,
    PresentmentAmountDiffers,
    CurrencyMismatch,
    PresentedAgain,
}

impl BreakClass {
    pub const ALL: [BreakClass; 9] = [
        BreakClass::AmountMismatch,
        BreakClass::StatusMismatch,
        BreakClass::MissingInLedger,
        BreakClass::MissingInFile,
        BreakClass::DuplicateInFile,
        BreakClass::PresentmentWithoutAuthorization,
        BreakClass::PresentmentAmountDiffers,
        BreakClass::CurrencyMismatch,
        BreakClass::PresentedAgain,
    ];

    /// The snake_case name reports and the store use.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<BreakClass> {
        s.parse().ok()
    }
}

/// One disagreement between the ledger and the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub class: BreakClass,
    pub transaction_id: String,
    pub kind: Option<EntryKind>,
    pub currency: Option<Currency>,
    pub ledger_amount_minor: Option<i64>,
    pub file_amount_minor: Option<i64>,
    /// file - ledger, when both are known (and in the same currency).
    pub difference_minor: Option<i64>,
    /// "transactions" or "presentments", with the 1-based data line (header is line 1,
    /// first data row line 2) when the break comes from a row.
    pub file: Option<&'static str>,
    pub line: Option<u64>,
    pub detail: String,
}

/// Per-currency totals on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub count: u64,
    /// Sum of the negative amounts, as a positive magnitude.
    pub debits_minor: i128,
    pub credits_minor: i128,
}

impl Totals {
    fn add(&mut self, amount_minor: i64) {
        self.count += 1;
        if amount_minor < 0 {
            self.debits_minor += i128::from(amount_minor).abs();
        } else {
            self.credits_minor += i128::from(amount_minor);
        }
    }

    /// Credits minus debits.
    pub fn net_minor(&self) -> i128 {
        self.credits_minor - self.debits_minor
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// First-occurrence transactions rows that agree with the ledger (including
    /// declines both sides agree on and rejected rows we have no entry for).
    pub matched: u64,
    /// Missing from the file but inside the grace window: not a break yet.
    pub pending: u64,
    /// Those entries (kind and id): owed to the next day's file.
    pub pending_entries: Vec<(EntryKind, Box<str>)>,
    pub presentments_matched: u64,
    /// Sorted by (class, transaction_id) at finish.
    pub breaks: Vec<Break>,
    /// Effective ledger entries.
    pub ledger_totals: BTreeMap<Currency, Totals>,
    /// Transactions file rows with approved=true (first occurrences).
    pub file_totals: BTreeMap<Currency, Totals>,
    /// First-occurrence presentments.
    pub presentment_totals: BTreeMap<Currency, Totals>,
    /// Rows fed to [`Matcher::transaction`].
    pub transaction_rows: u64,
    /// Rows fed to [`Matcher::presentment`].
    pub presentment_rows: u64,
    /// Ledger entries passed to [`Matcher::add_ledger`] (including duplicates).
    pub ledger_entries: u64,
    /// Ledger entries ignored because the same `(kind, id)` was already loaded.
    pub ledger_duplicates: u64,
    /// Rejected rows of entries owed by an earlier day ([`Matcher::owing`]) that this
    /// matcher does not hold: neither matched nor a break yet; the caller matches them
    /// against those entries.
    pub owed_rejected: Vec<FileTransaction>,
    /// Each first-occurrence presentment (duplicates in the file are breaks already): what
    /// the other days' presentments are held against.
    pub presented: Vec<Presentment>,
    /// Of those, the refunds presented on their own.
    pub refunds_presented: Vec<Box<str>>,
    /// Of those, the authorizations with refunds linked.
    pub presented_with_refunds: Vec<Box<str>>,
    /// Entries the day before's file held ([`Matcher::claimed_before`]) that this day's
    /// file does not: not missing.
    pub claimed_by_day_before: u64,
}

impl Report {
    /// Number of breaks of one class.
    pub fn count(&self, c: BreakClass) -> usize {
        self.breaks.iter().filter(|b| b.class == c).count()
    }

    /// Number of breaks per class; every class is present, with 0 when it has none.
    pub fn counts(&self) -> BTreeMap<BreakClass, usize> {
        let mut m: BTreeMap<BreakClass, usize> = BreakClass::ALL.iter().map(|c| (*c, 0)).collect();
        for b in &self.breaks {
            *m.entry(b.class).or_insert(0) += 1;
        }
        m
    }

    /// Whether nothing disagrees.
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty()
    }

    /// The first presentments as a run keeps them: id, line, amount and currency.
    pub fn presented_rows(&self) -> Vec<(&str, u64, i64, Currency)> {
        self.presented
            .iter()
            .map(|p| {
                (
                    p.transaction_id.as_str(),
                    p.line,
                    p.amount_minor,
                    p.currency,
                )
            })
            .collect()
    }
}

impl Report {
    /// Adds the report of another partition of the same day (disjoint ids); the breaks
    /// are sorted again, as [`Matcher::finish`] leaves them.
    pub fn merge(&mut self, other: Report) {
        self.matched += other.matched;
        self.pending += other.pending;
        self.pending_entries.extend(other.pending_entries);
        self.presentments_matched += other.presentments_matched;
        self.breaks.extend(other.breaks);
        sort_breaks(&mut self.breaks);
        for (mine, theirs) in [
            (&mut self.ledger_totals, other.ledger_totals),
            (&mut self.file_totals, other.file_totals),
            (&mut self.presentment_totals, other.presentment_totals),
        ] {
            for (c, t) in theirs {
                let m = mine.entry(c).or_default();
                m.count += t.count;
                m.debits_minor += t.debits_minor;
                m.credits_minor += t.credits_minor;
            }
        }
        self.transaction_rows += other.transaction_rows;
        self.presentment_rows += other.presentment_rows;
        self.presented.extend(other.presented);
        self.refunds_presented.extend(other.refunds_presented);
        self.presented_with_refunds
            .extend(other.presented_with_refunds);
        self.claimed_by_day_before += other.claimed_by_day_before;
        self.ledger_entries += other.ledger_entries;
        self.ledger_duplicates += other.ledger_duplicates;
        self.owed_rejected.extend(other.owed_rejected);
    }
}

/// Holds the day's first presentments ([`Report::presented`]) against the other business
/// dates they were presented on (`other`: id, the first such date): each repeat is a
/// [`BreakClass::PresentedAgain`] (a second clearing of one authorization), no longer
/// counted in `presentments_matched` when its amount had matched.
pub fn presented_again(report: &mut Report, other: &FxHashMap<Box<str>, String>) {
    let refunds: FxHashSet<&str> = report.refunds_presented.iter().map(|r| &**r).collect();
    let mut again = Vec::new();
    for p in &report.presented {
        let Some(first) = other.get(p.transaction_id.as_str()) else {
            continue;
        };
        let row_break = |b: &Break| b.file == Some(PRESENTMENTS_FILE) && b.line == Some(p.line);
        if !report.breaks.iter().any(row_break) {
            report.presentments_matched = report.presentments_matched.saturating_sub(1);
        }
        again.push(Break {
            class: BreakClass::PresentedAgain,
            transaction_id: p.transaction_id.clone(),
            kind: Some(if refunds.contains(p.transaction_id.as_str()) {
                EntryKind::Adjustment
            } else {
                EntryKind::Authorization
            }),
            currency: Some(p.currency),
            ledger_amount_minor: None,
            file_amount_minor: Some(p.amount_minor),
            difference_minor: None,
            file: Some(PRESENTMENTS_FILE),
            line: Some(p.line),
            detail: format!(
                "presented again ({}): also presented on {first}",
                money(p.amount_minor.into(), p.currency)
            ),
        });
    }
    report.breaks.extend(again);
    sort_breaks(&mut report.breaks);
}

/// A purchase whose refunds may have cleared on their own, as the ledger holds it now.
#[derive(Debug, Clone)]
pub struct Purchase {
    pub transaction_id: Box<str>,
    pub currency: Currency,
    /// What its presentment is expected to be with every refund netted off: authorized
    /// plus every effective adjustment naming it in its currency.
    pub net_minor: i128,
    /// Its effective refunds in its currency.
    pub refunds: Vec<Refund>,
}

/// A refund's id and amount (minor units, a credit: positive).
pub type Refund = (Box<str>, i64);

/// Where and at what amount an id was presented on another business date (the first).
#[derive(Debug, Clone)]
pub struct PresentedOn {
    pub business_date: String,
    /// The amount and its currency; `None` for a run that did not keep them.
    pub amount: Option<(i64, Currency)>,
}

/// Ids presented on other business dates: where first, and at what amount.
pub type PresentedElsewhere = FxHashMap<Box<str>, PresentedOn>;

/// Holds the purchases' presentments against their refunds' own (a credit under the
/// refund's id), over dates (`other`). A refund presented on its own is not netted off its
/// purchase's presentment too: the purchase is expected net of the other refunds only, and
/// in full of those not presented yet as well (they may still clear on their own). Of
/// `purchases` (those with refunds), one presented on this day is decided here, replacing
/// the matcher's verdict against the net amount: matched, or a
/// [`BreakClass::PresentmentAmountDiffers`] that names the refunds presented on their own.
/// One presented on another date for less than that expectation, by a refund presented
/// on its own this day (netted off there already: the merchant's return cleared twice),
/// gives that refund's presentment a [`BreakClass::PresentmentAmountDiffers`]: nothing
/// was due for it. `presentments_matched` follows; a row with a break of another class
/// keeps it (another currency: not decided here).
pub fn refunds_cleared_alone(
    report: &mut Report,
    purchases: &[Purchase],
    other: &PresentedElsewhere,
    config: &MatchConfig,
) {
    let today: FxHashMap<&str, (u64, i64, Currency)> = report
        .presented
        .iter()
        .map(|p| {
            (
                p.transaction_id.as_str(),
                (p.line, p.amount_minor, p.currency),
            )
        })
        .collect();
    let mut by_line: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
    for (i, b) in report.breaks.iter().enumerate() {
        if b.file == Some(PRESENTMENTS_FILE)
            && let Some(line) = b.line
        {
            by_line.entry(line).or_default().push(i);
        }
    }
    let mut removed = vec![false; report.breaks.len()];
    let mut replaced = Vec::new();
    let mut added = Vec::new();
    let mut matched = i128::from(report.presentments_matched);
    for a in purchases {
        let (cur, tolerance) = (a.currency, config.tolerance(a.currency));
        let (alone, pending): (Vec<&Refund>, Vec<&Refund>) = a
            .refunds
            .iter()
            .partition(|(id, _)| today.contains_key(&**id) || other.contains_key(id));
        let sum = |rs: &[&Refund]| rs.iter().map(|(_, m)| i128::from(*m)).sum::<i128>();
        let (own, unpresented) = (sum(&alone), sum(&pending));
        let expected = a.net_minor - own;
        let names = alone
            .iter()
            .map(|(id, m)| format!("{id} {}", money((*m).into(), cur)))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(&(line, presented, pcur)) = today.get(&*a.transaction_id) {
            let row = by_line.get(&line).map_or(&[][..], Vec::as_slice);
            let class = |i: &usize| report.breaks[*i].class;
            if pcur != cur || row.iter().any(|i| class(i) == BreakClass::CurrencyMismatch) {
                continue;
            }
            let amount_break = row
                .iter()
                .copied()
                .find(|i| class(i) == BreakClass::PresentmentAmountDiffers);
            // Counted in `presentments_matched` only when nothing else broke on the row.
            let counted = row
                .iter()
                .all(|i| class(i) == BreakClass::PresentmentAmountDiffers);
            let diff = i128::from(presented) - expected;
            let ok = diff.abs() <= tolerance
                || (unpresented != 0 && (diff + unpresented).abs() <= tolerance);
            match (amount_break, ok) {
                (Some(i), true) => {
                    removed[i] = true;
                    matched += i128::from(counted);
                }
                (Some(i), false) if own != 0 => {
                    let b = refund_break(a, line, presented, expected, diff, &names, tolerance);
                    replaced.push((i, b));
                }
                (None, false) => {
                    matched -= i128::from(counted);
                    added.push(refund_break(
                        a, line, presented, expected, diff, &names, tolerance,
                    ));
                }
                _ => {}
            }
            continue;
        }
        // Presented on another date: the refunds presented on their own this day are news.
        let Some(PresentedOn {
            business_date,
            amount: Some((presented, pcur)),
        }) = other.get(&a.transaction_id)
        else {
            continue;
        };
        let mut fresh: Vec<&Refund> = alone
            .iter()
            .copied()
            .filter(|(id, _)| today.contains_key(&**id))
            .collect();
        // What that presentment netted off of the refunds presented on their own.
        let netted = i128::from(*presented) - expected;
        if *pcur != cur || fresh.is_empty() || netted <= tolerance {
            continue;
        }
        // The refunds of this day that it netted off: the one of that amount, else the
        // largest first while some is left.
        let exact = fresh
            .iter()
            .position(|(_, m)| (i128::from(*m) - netted).abs() <= tolerance);
        let twice: Vec<&Refund> = match exact {
            Some(k) => vec![fresh[k]],
            None => {
                fresh.sort_by_key(|(_, m)| std::cmp::Reverse(*m));
                let mut left = netted;
                fresh
                    .into_iter()
                    .filter(|(_, m)| {
                        let take = i128::from(*m) <= left + tolerance;
                        if take {
                            left -= i128::from(*m);
                        }
                        take
                    })
                    .collect()
            }
        };
        for (id, _) in twice {
            let (line, file_amount, _) = today[&**id];
            if by_line.contains_key(&line) {
                continue;
            }
            matched -= 1;
            added.push(Break {
                class: BreakClass::PresentmentAmountDiffers,
                transaction_id: id.to_string(),
                kind: Some(EntryKind::Adjustment),
                currency: Some(cur),
                ledger_amount_minor: Some(0),
                file_amount_minor: Some(file_amount),
                difference_minor: Some(file_amount),
                file: Some(PRESENTMENTS_FILE),
                line: Some(line),
                detail: format!(
                    "refund cleared twice: presented on its own ({}), and netted off the presentment of {} on {business_date} ({}, where {} is expected with the refunds presented on their own: {names})",
                    money(file_amount.into(), cur),
                    a.transaction_id,
                    money((*presented).into(), cur),
                    money(expected, cur),
                ),
            });
        }
    }
    for (i, b) in replaced {
        report.breaks[i] = b;
    }
    let mut i = 0;
    report.breaks.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
    report.breaks.extend(added);
    report.presentments_matched = u64::try_from(matched.max(0)).unwrap_or(u64::MAX);
    sort_breaks(&mut report.breaks);
}

/// A purchase's presentment held against its amount less the refunds presented on their own.
fn refund_break(
    a: &Purchase,
    line: u64,
    presented: i64,
    expected: i128,
    diff: i128,
    names: &str,
    tolerance: i128,
) -> Break {
    let cur = a.currency;
    Break {
        class: BreakClass::PresentmentAmountDiffers,
        transaction_id: a.transaction_id.to_string(),
        kind: Some(EntryKind::Authorization),
        currency: Some(cur),
        ledger_amount_minor: i64::try_from(expected).ok(),
        file_amount_minor: Some(presented),
        difference_minor: i64::try_from(diff).ok(),
        file: Some(PRESENTMENTS_FILE),
        line: Some(line),
        detail: format!(
            "adjustment expected: presented {}, expected {} (net {} plus the refunds presented on their own: {names}), difference {} (tolerance {})",
            money(presented.into(), cur),
            money(expected, cur),
            money(a.net_minor, cur),
            money(diff, cur),
            money(tolerance, cur)
        ),
    }
}

/// The order of [`Report::breaks`]: class, then transaction id, kind, file, line.
pub fn sort_breaks(breaks: &mut [Break]) {
    breaks.sort_unstable_by(|a, b| {
        (a.class, &a.transaction_id, a.kind, a.file, a.line).cmp(&(
            b.class,
            &b.transaction_id,
            b.kind,
            b.file,
            b.line,
        ))
    });
}

// Slot flags.
const EFFECTIVE: u8 = 1;
/// A transactions-file row mentioned it.
const SEEN: u8 = 2;
/// A presentment mentioned it (authorizations and refunds).
const PRESENTED: u8 = 4;
/// The linked adjustments do not sum inside an i64 (authorizations only).
const ADJ_OVERFLOW: u8 = 8;
/// A refund, which may be presented on its own (adjustments only).
const REFUND: u8 = 16;
/// Refunds are among its linked adjustments (authorizations only).
const HAS_REFUND: u8 = 32;

/// What both kinds keep about a ledger entry (24 bytes).
#[derive(Debug, Clone, Copy)]
struct Core {
    amount: i64,
    booked_at_ms: i64,
    currency: Currency,
    flags: u8,
}

impl Core {
    fn effective(&self) -> bool {
        self.flags & EFFECTIVE != 0
    }
}

/// 32 bytes.
#[derive(Debug)]
struct AuthSlot {
    core: Core,
    /// Sum of the effective same-currency adjustments linked to it.
    adjusted: i64,
}

/// 40 bytes.
#[derive(Debug)]
struct AdjSlot {
    core: Core,
    original: Option<Box<str>>,
}

/// Entries of earlier days a day's file owes, by kind and transaction id.
pub type Owed = std::sync::Arc<std::collections::HashSet<(EntryKind, Box<str>)>>;

/// Streams the files against the loaded ledger; see the module documentation.
pub struct Matcher {
    config: MatchConfig,
    auths: FxHashMap<Box<str>, AuthSlot>,
    adjs: FxHashMap<Box<str>, AdjSlot>,
    /// Ids of transactions rows with no ledger entry, per kind (index by `kind_index`).
    unknown_rows: [FxHashSet<Box<str>>; 2],
    /// Ids of presentments with no ledger authorization.
    unknown_presented: FxHashSet<Box<str>>,
    /// Whether the adjustments have been summed into their authorizations.
    linked: bool,
    /// Entries of earlier days the file owes ([`Matcher::owing`]).
    owed: Owed,
    /// Entries of this day the day before's file held ([`Matcher::claimed_before`]).
    claimed: Owed,
    report: Report,
}

fn kind_index(k: EntryKind) -> usize {
    match k {
        EntryKind::Authorization => 0,
        EntryKind::Adjustment => 1,
    }
}

/// `file - ledger` if it fits an i64.
fn difference(file: i64, ledger: i64) -> Option<i64> {
    i64::try_from(i128::from(file) - i128::from(ledger)).ok()
}

/// Minor units as a decimal with the currency's places and its code: `-12.50 ARS`.
fn money(minor: i128, c: Currency) -> String {
    let exp = u32::from(c.exponent());
    let mag = minor.unsigned_abs();
    let sign = if minor < 0 { "-" } else { "" };
    let mut s = String::with_capacity(24);
    if exp == 0 {
        let _ = write!(s, "{sign}{mag} {c}");
    } else {
        let p = 10u128.pow(exp);
        let _ = write!(
            s,
            "{sign}{}.{:0width$} {c}",
            mag / p,
            mag % p,
            width = exp as usize
        );
    }
    s
}

/// Adds an effective adjustment to its authorization, if that is loaded and in the same
/// currency (a refund marks it [`HAS_REFUND`]).
fn link(
    auths: &mut FxHashMap<Box<str>, AuthSlot>,
    original: &str,
    currency: Currency,
    amount: i64,
    refund: bool,
) {
    if let Some(a) = auths.get_mut(original) {
        if a.core.currency != currency {
            return;
        }
        if refund {
            a.core.flags |= HAS_REFUND;
        }
        match a.adjusted.checked_add(amount) {
            Some(v) => a.adjusted = v,
            None => a.core.flags |= ADJ_OVERFLOW,
        }
    }
}

/// Counts `amount_minor` into the `currency` line of `totals`.
fn add_to(totals: &mut BTreeMap<Currency, Totals>, currency: Currency, amount_minor: i64) {
    totals.entry(currency).or_default().add(amount_minor);
}

/// A row of either file, as its breaks name it.
trait FileRow {
    /// The file's name in a break.
    const FILE: &'static str;
    fn kind(&self) -> EntryKind;
    fn line(&self) -> u64;
    fn currency(&self) -> Currency;
    fn amount_minor(&self) -> i64;
    fn into_transaction_id(self) -> String;
}

/// [`FileRow`] for a row type with `transaction_id`, `line`, `currency` and `amount_minor`
/// fields, read from `$file`; `|$r| $kind` gives a row's kind.
macro_rules! file_row {
    ($row:ty, $file:expr, |$r:ident| $kind:expr) => {
        impl FileRow for $row {
            const FILE: &'static str = $file;
            fn kind(&self) -> EntryKind {
                let $r = self;
                $kind
            }
            fn line(&self) -> u64 {
                self.line
            }
            fn currency(&self) -> Currency {
                self.currency
            }
            fn amount_minor(&self) -> i64 {
                self.amount_minor
            }
            fn into_transaction_id(self) -> String {
                self.transaction_id
            }
        }
    };
}

file_row!(FileTransaction, TRANSACTIONS_FILE, |row| row.kind);
// A presentment clears an authorization (a refund's sets its break's kind itself).
file_row!(Presentment, PRESENTMENTS_FILE, |_row| {
    EntryKind::Authorization
});

impl Break {
    /// An effective ledger entry the transactions file does not hold; `why` ends the detail.
    pub fn missing_in_file(e: &LedgerEntry, why: &str) -> Break {
        let detail = format!(
            "ledger booked {} {} at {} ms, absent from the transactions file{why}",
            e.kind,
            money(e.amount_minor.into(), e.currency),
            e.booked_at_ms
        );
        Break {
            class: BreakClass::MissingInFile,
            transaction_id: String::from(&*e.transaction_id),
            kind: Some(e.kind),
            currency: Some(e.currency),
            ledger_amount_minor: Some(e.amount_minor),
            file_amount_minor: None,
            difference_minor: None,
            file: None,
            line: None,
            detail,
        }
    }
}

/// A break of `class` for `row` against `ledger_amount` (`None`: no ledger amount, and so
/// no difference).
fn file_break<R: FileRow>(
    class: BreakClass,
    row: R,
    ledger_amount: Option<i64>,
    detail: String,
) -> Break {
    let file_amount = row.amount_minor();
    Break {
        class,
        kind: Some(row.kind()),
        currency: Some(row.currency()),
        ledger_amount_minor: ledger_amount,
        file_amount_minor: Some(file_amount),
        difference_minor: ledger_amount.and_then(|l| difference(file_amount, l)),
        file: Some(R::FILE),
        line: Some(row.line()),
        detail,
        transaction_id: row.into_transaction_id(),
    }
}

impl Matcher {
    pub fn new(config: MatchConfig) -> Matcher {
        Matcher {
            config,
            auths: FxHashMap::default(),
            adjs: FxHashMap::default(),
            unknown_rows: [FxHashSet::default(), FxHashSet::default()],
            unknown_presented: FxHashSet::default(),
            linked: false,
            owed: Default::default(),
            claimed: Default::default(),
            report: Report::default(),
        }
    }

    /// Entries of this day the day before's file held and its run matched (booked in this
    /// day's first minutes; the processor's clock put them before midnight): not missing
    /// from this day's file (counted in [`Report::claimed_by_day_before`]), and a row of one
    /// here is the processor's second report of it, a [`BreakClass::DuplicateInFile`].
    pub fn claimed_before(mut self, claimed: Owed) -> Matcher {
        self.claimed = claimed;
        self
    }

    /// Entries booked on another day that this file may hold rows of (booked late, pending
    /// in their own day's run; or booked in the next day's first minutes): a rejected row of
    /// one of them, which this matcher holds no entry for, is not a decline both sides agree
    /// on but goes to [`Report::owed_rejected`].
    pub fn owing(mut self, owed: Owed) -> Matcher {
        self.owed = owed;
        self
    }

    /// Pre-sizes for `ledger_entries` authorizations (adjustments grow as needed, from
    /// an eighth of that).
    pub fn with_capacity(config: MatchConfig, ledger_entries: usize) -> Matcher {
        let mut m = Matcher::new(config);
        m.auths.reserve(ledger_entries);
        m.adjs.reserve(ledger_entries / 8);
        m
    }

    /// Load the ledger side (call for every entry before any file row). An entry loaded
    /// after the first file row is still matched, but only links to an authorization
    /// that is already loaded.
    pub fn add_ledger(&mut self, e: LedgerEntry) {
        self.report.ledger_entries += 1;
        let core = Core {
            amount: e.amount_minor,
            booked_at_ms: e.booked_at_ms,
            currency: e.currency,
            flags: if e.effective { EFFECTIVE } else { 0 }
                | if e.refund && e.kind == EntryKind::Adjustment {
                    REFUND
                } else {
                    0
                },
        };
        let inserted = match e.kind {
            EntryKind::Authorization => match self.auths.entry(e.transaction_id) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(AuthSlot { core, adjusted: 0 });
                    true
                }
            },
            EntryKind::Adjustment => match self.adjs.entry(e.transaction_id) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    if self.linked
                        && e.effective
                        && let Some(orig) = e.original_transaction_id.as_deref()
                    {
                        link(&mut self.auths, orig, e.currency, e.amount_minor, e.refund);
                    }
                    v.insert(AdjSlot {
                        core,
                        original: e.original_transaction_id,
                    });
                    true
                }
            },
        };
        if !inserted {
            self.report.ledger_duplicates += 1;
            return;
        }
        if e.effective {
            add_to(&mut self.report.ledger_totals, e.currency, e.amount_minor);
        }
    }

    /// Adds an effective adjustment's amount to authorization `original`, for callers
    /// that partition the ledger by id: the adjustment itself is then loaded (in the
    /// partition of its own id) without `original_transaction_id`, and this call goes
    /// to the partition of `original`, after that partition's entries are loaded. Same
    /// rule as the link made from a loaded adjustment: only an authorization loaded
    /// here and in the same currency is adjusted. `refund`: the adjustment is a refund.
    pub fn add_adjustment_link(
        &mut self,
        original: &str,
        currency: Currency,
        amount_minor: i64,
        refund: bool,
    ) {
        link(&mut self.auths, original, currency, amount_minor, refund);
    }

    /// Sums every effective adjustment into its authorization, once, before the first
    /// file row.
    fn link_adjustments(&mut self) {
        if self.linked {
            return;
        }
        self.linked = true;
        for adj in self.adjs.values() {
            if !adj.core.effective() {
                continue;
            }
            if let Some(orig) = adj.original.as_deref() {
                let refund = adj.core.flags & REFUND != 0;
                link(
                    &mut self.auths,
                    orig,
                    adj.core.currency,
                    adj.core.amount,
                    refund,
                );
            }
        }
    }

    /// Classifies one transactions-file row.
    pub fn transaction(&mut self, row: FileTransaction) {
        self.link_adjustments();
        self.report.transaction_rows += 1;
        let id: &str = &row.transaction_id;
        let slot = match row.kind {
            EntryKind::Authorization => self.auths.get_mut(id).map(|s| &mut s.core),
            EntryKind::Adjustment => self.adjs.get_mut(id).map(|s| &mut s.core),
        };
        let ledger = match slot {
            Some(core) => {
                if core.flags & SEEN != 0 {
                    self.duplicate_row(row);
                    return;
                }
                core.flags |= SEEN;
                if !self.claimed.is_empty() && self.claimed.contains(&(row.kind, Box::from(id))) {
                    let detail = format!(
                        "{} {} is in the day before's file too, matched there (booked in this day's first minutes)",
                        row.kind, row.transaction_id
                    );
                    self.push_break(BreakClass::DuplicateInFile, row, None, detail);
                    return;
                }
                *core
            }
            None => {
                let seen = &mut self.unknown_rows[kind_index(row.kind)];
                if seen.contains(id) {
                    self.duplicate_row(row);
                    return;
                }
                seen.insert(Box::from(id));
                if row.approved {
                    add_to(&mut self.report.file_totals, row.currency, row.amount_minor);
                    let detail = format!(
                        "processor approved {} {}; no ledger entry",
                        row.kind,
                        money(row.amount_minor.into(), row.currency)
                    );
                    self.push_break(BreakClass::MissingInLedger, row, None, detail);
                } else if !self.owed.is_empty() && self.owed.contains(&(row.kind, Box::from(id))) {
                    self.report.owed_rejected.push(row);
                } else {
                    self.report.matched += 1;
                }
                return;
            }
        };
        if row.approved {
            add_to(&mut self.report.file_totals, row.currency, row.amount_minor);
        }
        if ledger.currency != row.currency {
            let detail = format!(
                "ledger booked {}, processor recorded {}",
                money(ledger.amount.into(), ledger.currency),
                money(row.amount_minor.into(), row.currency)
            );
            self.push_currency_mismatch(row, ledger, detail);
            return;
        }
        match (row.approved, ledger.effective()) {
            (true, false) => {
                let detail = format!(
                    "processor approved, ledger not booked: processor {}",
                    money(row.amount_minor.into(), row.currency)
                );
                self.push_break(BreakClass::StatusMismatch, row, Some(ledger.amount), detail);
            }
            (false, true) => {
                let detail = format!(
                    "ledger booked, processor rejected: ledger {}",
                    money(ledger.amount.into(), ledger.currency)
                );
                self.push_break(BreakClass::StatusMismatch, row, Some(ledger.amount), detail);
            }
            (true, true) if ledger.amount != row.amount_minor => {
                let diff = i128::from(row.amount_minor) - i128::from(ledger.amount);
                let detail = format!(
                    "ledger {}, processor {}, difference {}",
                    money(ledger.amount.into(), ledger.currency),
                    money(row.amount_minor.into(), row.currency),
                    money(diff, row.currency)
                );
                self.push_break(BreakClass::AmountMismatch, row, Some(ledger.amount), detail);
            }
            _ => self.report.matched += 1,
        }
    }

    /// Classifies one presentments-file row.
    pub fn presentment(&mut self, row: Presentment) {
        self.link_adjustments();
        self.report.presentment_rows += 1;
        let id: &str = &row.transaction_id;
        let (core, adjusted) = match self.auths.get_mut(id) {
            Some(slot) => {
                if slot.core.flags & PRESENTED != 0 {
                    self.duplicate_presentment(row);
                    return;
                }
                slot.core.flags |= PRESENTED;
                self.report.presented.push(row.clone());
                if slot.core.flags & HAS_REFUND != 0 {
                    self.report.presented_with_refunds.push(Box::from(id));
                }
                (slot.core, slot.adjusted)
            }
            None => {
                if let Some(refund) = self.adjs.get_mut(id)
                    && refund.core.flags & REFUND != 0
                {
                    if refund.core.flags & PRESENTED != 0 {
                        self.duplicate_presentment(row);
                        if let Some(b) = self.report.breaks.last_mut() {
                            b.kind = Some(EntryKind::Adjustment);
                        }
                        return;
                    }
                    refund.core.flags |= PRESENTED;
                    let core = refund.core;
                    self.report.refunds_presented.push(Box::from(id));
                    self.report.presented.push(row.clone());
                    self.refund_presentment(row, core);
                    return;
                }
                if self.unknown_presented.contains(id) {
                    self.duplicate_presentment(row);
                    return;
                }
                self.unknown_presented.insert(Box::from(id));
                self.report.presented.push(row.clone());
                add_to(
                    &mut self.report.presentment_totals,
                    row.currency,
                    row.amount_minor,
                );
                let detail = if self.adjs.contains_key(id) {
                    format!("{id} is a ledger adjustment, not an authorization nor a refund")
                } else {
                    format!(
                        "presented {} for an authorization the ledger does not have",
                        money(row.amount_minor.into(), row.currency)
                    )
                };
                self.push_break(
                    BreakClass::PresentmentWithoutAuthorization,
                    row,
                    None,
                    detail,
                );
                return;
            }
        };
        add_to(
            &mut self.report.presentment_totals,
            row.currency,
            row.amount_minor,
        );
        if core.currency != row.currency {
            let detail = format!(
                "authorized {}, presented {}",
                money(core.amount.into(), core.currency),
                money(row.amount_minor.into(), row.currency)
            );
            self.push_currency_mismatch(row, core, detail);
            return;
        }
        if core.flags & ADJ_OVERFLOW != 0 {
            let detail = format!(
                "adjustment expected: linked adjustments of {id} overflow the ledger's range; presented {}",
                money(row.amount_minor.into(), row.currency)
            );
            self.push_break(BreakClass::PresentmentAmountDiffers, row, None, detail);
            return;
        }
        let presented = i128::from(row.amount_minor);
        let tolerance = self.config.tolerance(row.currency);
        if !core.effective() {
            // Declined, or rejected after our approval; the processor may still have made
            // it effective by an adjustment naming it (a debit adjustment after a
            // CLIENT_TIMEOUT): then what stands is what the adjustments booked.
            if adjusted != 0 && (presented - i128::from(adjusted)).abs() <= tolerance {
                self.report.presentments_matched += 1;
                return;
            }
            let mut detail = format!(
                "presented but not booked: presented {}, authorization not effective in the ledger",
                money(presented, row.currency)
            );
            if adjusted != 0 {
                let _ = write!(
                    detail,
                    ", adjustments naming it {}",
                    money(adjusted.into(), row.currency)
                );
            }
            self.push_break(
                BreakClass::PresentmentAmountDiffers,
                row,
                Some(adjusted),
                detail,
            );
            return;
        }
        let expected = i128::from(core.amount) + i128::from(adjusted);
        let diff = presented - expected;
        if diff.abs() <= tolerance {
            self.report.presentments_matched += 1;
            return;
        }
        let cur = row.currency;
        let detail = format!(
            "adjustment expected: presented {}, authorized {} + adjustments {} = {}, difference {} (tolerance {})",
            money(presented, cur),
            money(core.amount.into(), cur),
            money(adjusted.into(), cur),
            money(expected, cur),
            money(diff, cur),
            money(tolerance, cur)
        );
        let ledger_amount = i64::try_from(expected).ok();
        let mut b = file_break(
            BreakClass::PresentmentAmountDiffers,
            row,
            ledger_amount,
            detail,
        );
        b.difference_minor = i64::try_from(diff).ok();
        self.report.breaks.push(b);
    }

    /// A refund's own presentment (a credit), against what the refund booked: `core`.
    fn refund_presentment(&mut self, row: Presentment, core: Core) {
        add_to(
            &mut self.report.presentment_totals,
            row.currency,
            row.amount_minor,
        );
        let presented = row.amount_minor;
        let (class, ledger, detail) = if core.currency != row.currency {
            let detail = format!(
                "refunded {}, presented {}",
                money(core.amount.into(), core.currency),
                money(presented.into(), row.currency)
            );
            (BreakClass::CurrencyMismatch, core.amount, detail)
        } else if !core.effective() {
            let detail = format!(
                "presented but not booked: presented {}, refund not effective in the ledger",
                money(presented.into(), row.currency)
            );
            (BreakClass::PresentmentAmountDiffers, 0, detail)
        } else {
            let tolerance = self.config.tolerance(row.currency);
            let diff = i128::from(presented) - i128::from(core.amount);
            if diff.abs() <= tolerance {
                self.report.presentments_matched += 1;
                return;
            }
            let cur = row.currency;
            let detail = format!(
                "refund presented {}, refunded {}, difference {} (tolerance {})",
                money(presented.into(), cur),
                money(core.amount.into(), cur),
                money(diff, cur),
                money(tolerance, cur)
            );
            (BreakClass::PresentmentAmountDiffers, core.amount, detail)
        };
        let mut b = file_break(class, row, Some(ledger), detail);
        b.kind = Some(EntryKind::Adjustment);
        if class == BreakClass::CurrencyMismatch {
            b.currency = Some(core.currency);
            b.file_amount_minor = None;
            b.difference_minor = None;
        }
        self.report.breaks.push(b);
    }

    /// Reports ledger entries the file never mentioned and sorts the breaks.
    pub fn finish(mut self) -> Report {
        self.link_adjustments();
        let grace = self.config.grace_from_ms;
        let mut report = self.report;
        let auths = self
            .auths
            .into_iter()
            .map(|(id, s)| (id, EntryKind::Authorization, s.core));
        let adjs = self
            .adjs
            .into_iter()
            .map(|(id, s)| (id, EntryKind::Adjustment, s.core));
        for (id, kind, core) in auths.chain(adjs) {
            if !core.effective() || core.flags & SEEN != 0 {
                continue;
            }
            if !self.claimed.is_empty() && self.claimed.contains(&(kind, id.clone())) {
                report.claimed_by_day_before += 1;
                continue;
            }
            if core.booked_at_ms >= grace {
                report.pending += 1;
                report.pending_entries.push((kind, id));
                continue;
            }
            let e = LedgerEntry {
                transaction_id: id,
                kind,
                effective: true,
                currency: core.currency,
                amount_minor: core.amount,
                original_transaction_id: None,
                booked_at_ms: core.booked_at_ms,
                refund: core.flags & REFUND != 0,
            };
            report.breaks.push(Break::missing_in_file(&e, ""));
        }
        sort_breaks(&mut report.breaks);
        report
    }

    /// Reports `row` as a break of `class` against `ledger_amount`.
    fn push_break(
        &mut self,
        class: BreakClass,
        row: impl FileRow,
        ledger_amount: Option<i64>,
        detail: String,
    ) {
        self.report
            .breaks
            .push(file_break(class, row, ledger_amount, detail));
    }

    /// Reports `row` as recorded in another currency than the ledger's `ledger` entry: the
    /// break carries the ledger's currency and amount, and no file amount or difference (the
    /// file's amount is in another currency, which the break's one currency cannot show; the
    /// detail names it).
    fn push_currency_mismatch(&mut self, row: impl FileRow, ledger: Core, detail: String) {
        let mut b = file_break(
            BreakClass::CurrencyMismatch,
            row,
            Some(ledger.amount),
            detail,
        );
        b.currency = Some(ledger.currency);
        b.file_amount_minor = None;
        b.difference_minor = None;
        self.report.breaks.push(b);
    }

    fn duplicate_row(&mut self, row: FileTransaction) {
        let detail = format!(
            "{} {} appears again in the transactions file ({}, {}); only the first row is reconciled",
            row.kind,
            row.transaction_id,
            if row.approved { "APPROVED" } else { "REJECTED" },
            money(row.amount_minor.into(), row.currency)
        );
        self.push_break(BreakClass::DuplicateInFile, row, None, detail);
    }

    fn duplicate_presentment(&mut self, row: Presentment) {
        let detail = format!(
            "{} presented again ({}); only the first presentment is reconciled",
            row.transaction_id,
            money(row.amount_minor.into(), row.currency)
        );
        self.push_break(BreakClass::DuplicateInFile, row, None, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }

    fn cfg() -> MatchConfig {
        MatchConfig {
            presentment_tolerance_minor: 0,
            grace_from_ms: 1_000_000,
            ..MatchConfig::default()
        }
    }

    fn auth(id: &str, effective: bool, amount: i64) -> LedgerEntry {
        LedgerEntry {
            transaction_id: id.into(),
            kind: EntryKind::Authorization,
            effective,
            currency: cur("ARS"),
            amount_minor: amount,
            original_transaction_id: None,
            booked_at_ms: 1_000,
            refund: false,
        }
    }

    fn adj(id: &str, original: &str, amount: i64) -> LedgerEntry {
        LedgerEntry {
            transaction_id: id.into(),
            kind: EntryKind::Adjustment,
            effective: true,
            currency: cur("ARS"),
            amount_minor: amount,
            original_transaction_id: Some(original.into()),
            booked_at_ms: 1_000,
            refund: false,
        }
    }

    /// A refund of `amount` naming `original`.
    fn refund(id: &str, original: &str, amount: i64) -> LedgerEntry {
        LedgerEntry {
            refund: true,
            ..adj(id, original, amount)
        }
    }

    fn row(line: u64, id: &str, approved: bool, amount: i64) -> FileTransaction {
        FileTransaction {
            line,
            transaction_id: id.into(),
            kind: EntryKind::Authorization,
            approved,
            currency: cur("ARS"),
            amount_minor: amount,
            original_transaction_id: None,
        }
    }

    /// The breaks of one class, in order.
    fn of_class(r: &Report, class: BreakClass) -> Vec<&Break> {
        r.breaks.iter().filter(|b| b.class == class).collect()
    }

    fn pres(line: u64, id: &str, amount: i64) -> Presentment {
        Presentment {
            line,
            transaction_id: id.into(),
            currency: cur("ARS"),
            amount_minor: amount,
        }
    }

    fn run(
        config: MatchConfig,
        ledger: Vec<LedgerEntry>,
        rows: Vec<FileTransaction>,
        presentments: Vec<Presentment>,
    ) -> Report {
        let mut m = Matcher::with_capacity(config, ledger.len());
        for e in ledger {
            m.add_ledger(e);
        }
        for r in rows {
            m.transaction(r);
        }
        for p in presentments {
            m.presentment(p);
        }
        m.finish()
    }

    /// The only break of the report.
    fn only(r: &Report) -> &Break {
        assert_eq!(r.breaks.len(), 1, "{:#?}", r.breaks);
        &r.breaks[0]
    }

    #[test]
    fn class_names_are_snake_case_and_round_trip() {
        let names: Vec<&str> = BreakClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "amount_mismatch",
                "status_mismatch",
                "missing_in_ledger",
                "missing_in_file",
                "duplicate_in_file",
                "presentment_without_authorization",
                "presentment_amount_differs",
                "currency_mismatch",
                "presented_again",
            ]
        );
        for c in BreakClass::ALL {
            assert_eq!(BreakClass::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(BreakClass::parse("nope"), None);
    }

    #[test]
    fn exact_row_is_matched() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -5000)],
            vec![row(2, "A1", true, -5000)],
            vec![],
        );
        assert!(r.is_clean(), "{:#?}", r.breaks);
        assert_eq!(r.matched, 1);
        assert_eq!(r.transaction_rows, 1);
    }

    #[test]
    fn approved_row_without_ledger_entry_is_missing_in_ledger() {
        let r = run(cfg(), vec![], vec![row(2, "X9", true, -1234)], vec![]);
        assert_eq!(
            only(&r),
            &Break {
                class: BreakClass::MissingInLedger,
                transaction_id: "X9".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: None,
                file_amount_minor: Some(-1234),
                difference_minor: None,
                file: Some("transactions"),
                line: Some(2),
                detail: "processor approved authorization -12.34 ARS; no ledger entry".into(),
            }
        );
        assert_eq!(r.matched, 0);
    }

    #[test]
    fn rejected_row_without_ledger_entry_is_matched() {
        let r = run(cfg(), vec![], vec![row(2, "X9", false, 0)], vec![]);
        assert!(r.is_clean());
        assert_eq!(r.matched, 1);
        assert!(r.file_totals.is_empty());
    }

    #[test]
    fn kind_is_part_of_the_key() {
        // The ledger has A1 as an authorization; the file says it is an adjustment.
        let mut f = row(3, "A1", true, -5000);
        f.kind = EntryKind::Adjustment;
        let r = run(cfg(), vec![auth("A1", true, -5000)], vec![f], vec![]);
        assert_eq!(r.count(BreakClass::MissingInLedger), 1);
        assert_eq!(r.count(BreakClass::MissingInFile), 1);
        let mil = r
            .breaks
            .iter()
            .find(|b| b.class == BreakClass::MissingInLedger)
            .unwrap();
        assert_eq!(mil.kind, Some(EntryKind::Adjustment));
    }

    #[test]
    fn second_occurrence_is_duplicate_and_first_is_classified() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -5000)],
            vec![
                row(2, "A1", true, -5000),
                row(7, "A1", true, -5000),
                row(9, "A1", false, 0),
            ],
            vec![],
        );
        assert_eq!(r.matched, 1);
        assert_eq!(r.breaks.len(), 2);
        for (b, line) in r.breaks.iter().zip([7, 9]) {
            assert_eq!(b.class, BreakClass::DuplicateInFile);
            assert_eq!(b.transaction_id, "A1");
            assert_eq!(b.file, Some("transactions"));
            assert_eq!(b.line, Some(line));
            assert_eq!(b.ledger_amount_minor, None);
            assert_eq!(b.difference_minor, None);
        }
        assert_eq!(r.breaks[0].file_amount_minor, Some(-5000));
        // Only the first occurrence counts in the file totals.
        assert_eq!(
            r.file_totals[&cur("ARS")],
            Totals {
                count: 1,
                debits_minor: 5000,
                credits_minor: 0
            }
        );
    }

    #[test]
    fn duplicate_of_a_row_missing_in_ledger() {
        let r = run(
            cfg(),
            vec![],
            vec![row(2, "X1", true, -10), row(3, "X1", true, -10)],
            vec![],
        );
        assert_eq!(r.count(BreakClass::MissingInLedger), 1);
        assert_eq!(r.count(BreakClass::DuplicateInFile), 1);
        let d = r
            .breaks
            .iter()
            .find(|b| b.class == BreakClass::DuplicateInFile)
            .unwrap();
        assert_eq!(d.line, Some(3));
        assert_eq!(r.file_totals[&cur("ARS")].count, 1);
    }

    #[test]
    fn currency_differs() {
        let mut f = row(4, "A1", true, -5000);
        f.currency = cur("USD");
        let r = run(cfg(), vec![auth("A1", true, -5000)], vec![f], vec![]);
        assert_eq!(
            only(&r),
            &Break {
                class: BreakClass::CurrencyMismatch,
                transaction_id: "A1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: Some(-5000),
                // USD minor units, which the break's ARS would misread.
                file_amount_minor: None,
                difference_minor: None,
                file: Some("transactions"),
                line: Some(4),
                detail: "ledger booked -50.00 ARS, processor recorded -50.00 USD".into(),
            }
        );
        // The row is still seen: no MissingInFile for A1.
        assert_eq!(r.pending, 0);
    }

    #[test]
    fn status_mismatch_processor_approved_ledger_not_booked() {
        let r = run(
            cfg(),
            vec![auth("A1", false, 0)],
            vec![row(5, "A1", true, -700)],
            vec![],
        );
        let b = only(&r);
        assert_eq!(b.class, BreakClass::StatusMismatch);
        assert_eq!(b.transaction_id, "A1");
        assert_eq!(b.ledger_amount_minor, Some(0));
        assert_eq!(b.file_amount_minor, Some(-700));
        assert_eq!(b.difference_minor, Some(-700));
        assert_eq!(b.line, Some(5));
        assert!(
            b.detail
                .starts_with("processor approved, ledger not booked"),
            "{}",
            b.detail
        );
    }

    #[test]
    fn status_mismatch_ledger_booked_processor_rejected() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -700)],
            vec![row(6, "A1", false, -700)],
            vec![],
        );
        let b = only(&r);
        assert_eq!(b.class, BreakClass::StatusMismatch);
        assert_eq!(b.ledger_amount_minor, Some(-700));
        assert_eq!(b.file_amount_minor, Some(-700));
        assert_eq!(b.difference_minor, Some(0));
        assert_eq!(b.line, Some(6));
        assert!(
            b.detail.starts_with("ledger booked, processor rejected"),
            "{}",
            b.detail
        );
        // Rejected rows are not in the file totals; the ledger side is.
        assert!(r.file_totals.is_empty());
        assert_eq!(r.ledger_totals[&cur("ARS")].debits_minor, 700);
    }

    #[test]
    fn amount_differs() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -10_000)],
            vec![row(2, "A1", true, -10_050)],
            vec![],
        );
        assert_eq!(
            only(&r),
            &Break {
                class: BreakClass::AmountMismatch,
                transaction_id: "A1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: Some(-10_000),
                file_amount_minor: Some(-10_050),
                difference_minor: Some(-50),
                file: Some("transactions"),
                line: Some(2),
                detail: "ledger -100.00 ARS, processor -100.50 ARS, difference -0.50 ARS".into(),
            }
        );
    }

    #[test]
    fn decline_on_both_sides_is_matched() {
        let r = run(
            cfg(),
            vec![auth("A1", false, 0)],
            vec![row(2, "A1", false, -900)],
            vec![],
        );
        assert!(r.is_clean(), "{:#?}", r.breaks);
        assert_eq!(r.matched, 1);
        assert!(r.ledger_totals.is_empty());
        assert!(r.file_totals.is_empty());
    }

    #[test]
    fn a_rejected_row_of_an_owed_entry_is_set_aside_not_matched() {
        let owed: Owed = std::sync::Arc::new([(EntryKind::Authorization, "late".into())].into());
        let mut m = Matcher::new(cfg()).owing(owed);
        m.transaction(row(1, "late", false, -600));
        m.transaction(row(2, "declined", false, -100));
        let r = m.finish();
        assert_eq!(r.matched, 1, "the decline both sides agree on");
        assert!(r.breaks.is_empty());
        let aside: Vec<_> = r.owed_rejected.iter().map(|t| &*t.transaction_id).collect();
        assert_eq!(aside, ["late"]);
    }

    #[test]
    fn effective_entry_absent_from_file_is_missing_in_file() {
        let mut a = auth("A1", true, -300);
        a.booked_at_ms = 999_999;
        let r = run(cfg(), vec![a, auth("D1", false, 0)], vec![], vec![]);
        assert_eq!(
            only(&r),
            &Break {
                class: BreakClass::MissingInFile,
                transaction_id: "A1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: Some(-300),
                file_amount_minor: None,
                difference_minor: None,
                file: None,
                line: None,
                detail: "ledger booked authorization -3.00 ARS at 999999 ms, absent from the transactions file".into(),
            }
        );
        // The absent decline is neither a break nor pending.
        assert_eq!(r.pending, 0);
        assert_eq!(r.matched, 0);
    }

    #[test]
    fn grace_boundary_is_inclusive() {
        let at = |id: &str, ms: i64| {
            let mut a = auth(id, true, -1);
            a.booked_at_ms = ms;
            a
        };
        let mut late_adj = adj("J1", "nobody", 5);
        late_adj.booked_at_ms = 2_000_000;
        let r = run(
            cfg(),
            vec![
                at("BEFORE", 999_999),
                at("AT", 1_000_000),
                at("AFTER", 1_000_001),
                late_adj,
            ],
            vec![],
            vec![],
        );
        assert_eq!(r.pending, 3);
        let b = only(&r);
        assert_eq!(b.class, BreakClass::MissingInFile);
        assert_eq!(b.transaction_id, "BEFORE");
    }

    #[test]
    fn presentment_without_authorization() {
        let r = run(
            cfg(),
            vec![adj("J1", "A0", 100)],
            vec![{
                let mut f = row(2, "J1", true, 100);
                f.kind = EntryKind::Adjustment;
                f
            }],
            vec![pres(2, "NOPE", -100), pres(3, "J1", -100)],
        );
        assert_eq!(r.breaks.len(), 2, "{:#?}", r.breaks);
        assert_eq!(
            r.breaks[0],
            Break {
                class: BreakClass::PresentmentWithoutAuthorization,
                transaction_id: "J1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: None,
                file_amount_minor: Some(-100),
                difference_minor: None,
                file: Some("presentments"),
                line: Some(3),
                detail: "J1 is a ledger adjustment, not an authorization nor a refund".into(),
            }
        );
        assert_eq!(r.breaks[1].transaction_id, "NOPE");
        assert_eq!(r.breaks[1].line, Some(2));
        assert_eq!(r.presentment_totals[&cur("ARS")].count, 2);
        assert_eq!(r.presentments_matched, 0);
    }

    #[test]
    fn a_presentment_of_an_earlier_date_again_is_a_break() {
        let mut r = run(
            cfg(),
            vec![auth("A1", true, -500), auth("B1", true, -300)],
            vec![row(2, "A1", true, -500), row(3, "B1", true, -300)],
            vec![
                pres(2, "A1", -500),
                pres(3, "A1", -500),
                pres(4, "B1", -300),
                pres(5, "Z", -1),
            ],
        );
        // The day alone: A1 and B1 matched, A1's second row and Z breaks.
        assert_eq!(r.presentments_matched, 2);
        let ids: Vec<_> = r
            .presented
            .iter()
            .map(|p| (&*p.transaction_id, p.line))
            .collect();
        assert_eq!(ids, [("A1", 2), ("B1", 4), ("Z", 5)]);
        let breaks_before = r.breaks.len();
        // A1 and Z were presented on another date: two breaks more, and A1 no longer
        // counts as matched (Z never did).
        let earlier: FxHashMap<Box<str>, String> = [("A1", "2026-03-14"), ("Z", "2026-03-13")]
            .into_iter()
            .map(|(id, d)| (Box::from(id), d.to_owned()))
            .collect();
        presented_again(&mut r, &earlier);
        assert_eq!(r.presentments_matched, 1);
        let again: Vec<&Break> = r
            .breaks
            .iter()
            .filter(|b| b.class == BreakClass::PresentedAgain)
            .collect();
        assert_eq!(r.breaks.len(), breaks_before + 2);
        assert_eq!(
            again[0],
            &Break {
                class: BreakClass::PresentedAgain,
                transaction_id: "A1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: None,
                file_amount_minor: Some(-500),
                difference_minor: None,
                file: Some("presentments"),
                line: Some(2),
                detail: "presented again (-5.00 ARS): also presented on 2026-03-14".into(),
            }
        );
        assert_eq!(
            (again[1].transaction_id.as_str(), again[1].line),
            ("Z", Some(5))
        );
    }

    #[test]
    fn duplicate_presentment() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -500)],
            vec![row(2, "A1", true, -500)],
            vec![
                pres(2, "A1", -500),
                pres(3, "A1", -500),
                pres(4, "Z", -1),
                pres(5, "Z", -1),
            ],
        );
        assert_eq!(r.presentments_matched, 1);
        let dups = of_class(&r, BreakClass::DuplicateInFile);
        assert_eq!(dups.len(), 2);
        assert_eq!(
            (dups[0].transaction_id.as_str(), dups[0].line),
            ("A1", Some(3))
        );
        assert_eq!(
            (dups[1].transaction_id.as_str(), dups[1].line),
            ("Z", Some(5))
        );
        assert!(dups.iter().all(|b| b.file == Some("presentments")));
        assert_eq!(r.count(BreakClass::PresentmentWithoutAuthorization), 1);
        assert_eq!(
            r.presentment_totals[&cur("ARS")],
            Totals {
                count: 2,
                debits_minor: 501,
                credits_minor: 0
            }
        );
    }

    #[test]
    fn presentment_amount_differs_beyond_tolerance() {
        let config = MatchConfig {
            presentment_tolerance_minor: 10,
            ..cfg()
        };
        let r = run(
            config,
            vec![
                auth("A1", true, -10_000),
                adj("R1", "A1", 2_000),
                auth("A2", true, -10_000),
            ],
            vec![],
            vec![pres(2, "A1", -10_000), pres(3, "A2", -10_010)],
        );
        // A2 is exactly at the tolerance: matched.
        assert_eq!(r.presentments_matched, 1);
        let b = r
            .breaks
            .iter()
            .find(|b| b.class == BreakClass::PresentmentAmountDiffers)
            .unwrap();
        assert_eq!(
            b,
            &Break {
                class: BreakClass::PresentmentAmountDiffers,
                transaction_id: "A1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: Some(-8_000),
                file_amount_minor: Some(-10_000),
                difference_minor: Some(-2_000),
                file: Some("presentments"),
                line: Some(2),
                detail: "adjustment expected: presented -100.00 ARS, authorized -100.00 ARS + adjustments 20.00 ARS = -80.00 ARS, difference -20.00 ARS (tolerance 0.10 ARS)".into(),
            }
        );
    }

    #[test]
    fn a_currency_named_has_its_own_tolerance() {
        // 10 minor units by default; CLP (no decimals) 50 pesos, ARS none at all.
        let config = MatchConfig {
            presentment_tolerance_minor: 10,
            presentment_tolerance_by_currency: vec![(cur("CLP"), 50), (cur("ARS"), 0)],
            ..cfg()
        };
        let clp = |id: &str, amount: i64| LedgerEntry {
            currency: cur("CLP"),
            ..auth(id, true, amount)
        };
        let usd = |id: &str, amount: i64| LedgerEntry {
            currency: cur("USD"),
            ..auth(id, true, amount)
        };
        let in_cur = |p: Presentment, c: &str| Presentment {
            currency: cur(c),
            ..p
        };
        let r = run(
            config,
            vec![
                clp("C1", -10_000),
                clp("C2", -10_000),
                usd("U1", -10_000),
                usd("U2", -10_000),
                auth("A1", true, -10_000),
            ],
            vec![],
            vec![
                in_cur(pres(2, "C1", -10_050), "CLP"),
                in_cur(pres(3, "C2", -10_051), "CLP"),
                in_cur(pres(4, "U1", -10_010), "USD"),
                in_cur(pres(5, "U2", -10_011), "USD"),
                pres(6, "A1", -10_001),
            ],
        );
        assert_eq!(r.presentments_matched, 2);
        let differs: Vec<&str> = of_class(&r, BreakClass::PresentmentAmountDiffers)
            .iter()
            .map(|b| b.transaction_id.as_str())
            .collect();
        assert_eq!(differs, ["A1", "C2", "U2"]);
        assert!(
            r.breaks
                .iter()
                .any(|b| b.detail.ends_with("(tolerance 50 CLP)"))
        );
    }

    #[test]
    fn linked_partial_refund_makes_presentment_match() {
        // The refund is loaded before its authorization: linking does not depend on order.
        // A booked-but-unlinked and a non-effective adjustment do not count.
        let mut void = adj("R9", "A1", 1_000);
        void.effective = false;
        let mut other_cur = adj("R8", "A1", 77);
        other_cur.currency = cur("USD");
        let r = run(
            cfg(),
            vec![
                adj("R1", "A1", 2_500),
                void,
                other_cur,
                auth("A1", true, -10_000),
                adj("R2", "A1", 500),
            ],
            vec![],
            vec![pres(2, "A1", -7_000)],
        );
        assert_eq!(r.presentments_matched, 1);
        assert_eq!(r.count(BreakClass::PresentmentAmountDiffers), 0);
    }

    #[test]
    fn refunds_presented_on_their_own_are_not_netted_off_too() {
        // A1 presented net of its refund; A2 in full, its refund presented on its own; A3
        // net, its refund presented on its own too (cleared twice); A4 net of one refund,
        // the other presented on its own; A5 presented net on another date, its refund on
        // its own today (cleared twice); A6 in full on another date, its refund today; A9
        // in full, its refund not presented yet; A10 for more than authorized on another
        // date, its refund today (no room was left for it there); A11 net of one of its two
        // refunds on another date, both presented on their own today (one cleared twice).
        let mut ledger = Vec::new();
        let mut purchases = Vec::new();
        for (a, refunds) in [
            ("A1", &[("R1", 3_000)][..]),
            ("A2", &[("R2", 3_000)]),
            ("A3", &[("R3", 3_000)]),
            ("A4", &[("R4a", 1_000), ("R4b", 2_000)]),
            ("A5", &[("R5", 3_000)]),
            ("A6", &[("R6", 3_000)]),
            ("A9", &[("R9", 3_000)]),
            ("A10", &[("R10", 3_000)]),
            ("A11", &[("R11a", 3_000), ("R11b", 2_000)]),
        ] {
            ledger.push(auth(a, true, -10_000));
            ledger.extend(refunds.iter().map(|(r, m)| refund(r, a, *m)));
            purchases.push(Purchase {
                transaction_id: a.into(),
                currency: cur("ARS"),
                net_minor: -10_000 + refunds.iter().map(|(_, m)| i128::from(*m)).sum::<i128>(),
                refunds: refunds.iter().map(|(r, m)| (Box::from(*r), *m)).collect(),
            });
        }
        // A credit of A1 that is no refund: in its net amount.
        ledger.push(adj("C7", "A1", 500));
        purchases[0].net_minor += 500;
        let mut r = run(
            cfg(),
            ledger,
            vec![],
            vec![
                pres(2, "A1", -7_000 + 500),
                pres(3, "A2", -10_000),
                pres(4, "R2", 3_000),
                pres(5, "A3", -7_000),
                pres(6, "R3", 3_000),
                pres(7, "A4", -9_000),
                pres(8, "R4b", 2_000),
                pres(9, "R5", 3_000),
                pres(10, "R6", 3_000),
                pres(11, "C7", 500),
                pres(12, "R6", 3_000),
                pres(13, "A9", -10_000),
                pres(14, "R10", 3_000),
                pres(15, "R11a", 3_000),
                pres(16, "R11b", 2_000),
            ],
        );
        // The matcher alone holds each purchase against its net amount.
        assert_eq!(r.presentments_matched, 10, "{:#?}", r.breaks);
        let refunds = ["R2", "R3", "R4b", "R5", "R6", "R10", "R11a", "R11b"];
        assert_eq!(r.refunds_presented, refunds.map(Box::from));
        let with_refunds = ["A1", "A2", "A3", "A4", "A9"];
        assert_eq!(r.presented_with_refunds, with_refunds.map(Box::from));
        let on = |date: &str, amount: i64| PresentedOn {
            business_date: date.into(),
            amount: Some((amount, cur("ARS"))),
        };
        let other: FxHashMap<Box<str>, PresentedOn> = [
            ("A5", on("2026-03-01", -7_000)),
            ("A6", on("2026-03-02", -10_000)),
            ("A10", on("2026-03-02", -12_000)),
            ("A11", on("2026-03-02", -7_000)),
        ]
        .into_iter()
        .map(|(id, p)| (Box::from(id), p))
        .collect();
        refunds_cleared_alone(&mut r, &purchases, &other, &cfg());
        assert_eq!(r.presentments_matched, 10, "{:#?}", r.breaks);
        // (No transactions rows here: every entry is missing in the file too.)
        let got: Vec<String> = r
            .breaks
            .iter()
            .filter(|b| b.file == Some(PRESENTMENTS_FILE))
            .map(|b| {
                let kind = b.kind.map_or("-", |k| k.as_str());
                let (l, f) = (b.ledger_amount_minor, b.file_amount_minor);
                format!("{} {} {kind} {l:?} {f:?}", b.class, b.transaction_id)
            })
            .collect();
        assert_eq!(
            got,
            [
                "duplicate_in_file R6 adjustment None Some(3000)",
                "presentment_without_authorization C7 authorization None Some(500)",
                "presentment_amount_differs A3 authorization Some(-10000) Some(-7000)",
                "presentment_amount_differs R11a adjustment Some(0) Some(3000)",
                "presentment_amount_differs R5 adjustment Some(0) Some(3000)",
            ]
        );
        let detail = |id: &str| {
            let b = r
                .breaks
                .iter()
                .find(|b| b.transaction_id == id && b.file.is_some());
            b.unwrap().detail.clone()
        };
        assert!(
            detail("A3").contains("expected -100.00 ARS (net -70.00 ARS plus the refunds presented on their own: R3 30.00 ARS)"),
            "{}",
            detail("A3")
        );
        assert!(
            detail("R5").starts_with("refund cleared twice: presented on its own (30.00 ARS), and netted off the presentment of A5 on 2026-03-01 (-70.00 ARS"),
            "{}",
            detail("R5")
        );
        assert!(detail("C7").ends_with("not an authorization nor a refund"));
        // A refund not effective presented on its own moves nothing we booked.
        let mut void = refund("R8", "A8", 2_000);
        void.effective = false;
        let r = run(
            cfg(),
            vec![auth("A8", true, -5_000), void],
            vec![],
            vec![pres(2, "R8", 2_000)],
        );
        let presented: Vec<&Break> = r.breaks.iter().filter(|b| b.file.is_some()).collect();
        assert_eq!(presented.len(), 1, "{:#?}", r.breaks);
        assert_eq!(presented[0].class, BreakClass::PresentmentAmountDiffers);
        assert!(presented[0].detail.starts_with("presented but not booked"));
    }

    #[test]
    fn a_presentment_of_what_an_adjustment_booked_for_a_rejected_authorization_matches() {
        // A1 rejected after our approval, then booked by a debit adjustment naming it; B1
        // declined, and booked by an adjustment for less than presented.
        let r = run(
            cfg(),
            vec![
                auth("A1", false, -900),
                adj("J1", "A1", -900),
                auth("B1", false, -500),
                adj("J2", "B1", -200),
            ],
            vec![],
            vec![pres(2, "A1", -900), pres(3, "B1", -500)],
        );
        assert_eq!(r.presentments_matched, 1);
        // (The adjustments, missing from this day's transactions file, are breaks too.)
        let presented: Vec<&Break> = r
            .breaks
            .iter()
            .filter(|b| b.file == Some(PRESENTMENTS_FILE))
            .collect();
        assert_eq!(presented.len(), 1, "{presented:#?}");
        let b = presented[0];
        assert_eq!(b.transaction_id, "B1");
        assert_eq!(
            (
                b.ledger_amount_minor,
                b.file_amount_minor,
                b.difference_minor
            ),
            (Some(-200), Some(-500), Some(-300))
        );
        assert!(
            b.detail.ends_with("adjustments naming it -2.00 ARS"),
            "{}",
            b.detail
        );
    }

    #[test]
    fn presentment_of_a_non_effective_authorization() {
        let r = run(
            cfg(),
            vec![auth("A1", false, 0)],
            vec![],
            vec![pres(4, "A1", -900)],
        );
        assert_eq!(
            only(&r),
            &Break {
                class: BreakClass::PresentmentAmountDiffers,
                transaction_id: "A1".into(),
                kind: Some(EntryKind::Authorization),
                currency: Some(cur("ARS")),
                ledger_amount_minor: Some(0),
                file_amount_minor: Some(-900),
                difference_minor: Some(-900),
                file: Some("presentments"),
                line: Some(4),
                detail: "presented but not booked: presented -9.00 ARS, authorization not effective in the ledger".into(),
            }
        );
    }

    #[test]
    fn presentment_in_another_currency() {
        let mut p = pres(2, "A1", -500);
        p.currency = cur("USD");
        let r = run(
            cfg(),
            vec![auth("A1", true, -500)],
            vec![row(2, "A1", true, -500)],
            vec![p],
        );
        let b = only(&r);
        assert_eq!(b.class, BreakClass::CurrencyMismatch);
        assert_eq!(b.file, Some("presentments"));
        assert_eq!(b.currency, Some(cur("ARS")));
        assert_eq!((b.file_amount_minor, b.difference_minor), (None, None));
        assert!(b.detail.contains("presented -5.00 USD"), "{}", b.detail);
        assert_eq!(r.presentment_totals[&cur("USD")].count, 1);
    }

    #[test]
    fn authorization_without_presentment_is_not_a_break() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -500)],
            vec![row(2, "A1", true, -500)],
            vec![],
        );
        assert!(r.is_clean());
    }

    #[test]
    fn totals_per_currency() {
        let mut usd = auth("U1", true, 250);
        usd.currency = cur("USD");
        let mut usd_row = row(5, "U1", true, 250);
        usd_row.currency = cur("USD");
        let mut clp_p = pres(3, "C1", -1500);
        clp_p.currency = cur("CLP");
        let r = run(
            cfg(),
            vec![
                auth("A1", true, -10_000),
                auth("A2", true, -2_000),
                auth("D1", false, 0),
                adj("R1", "A1", 3_000),
                usd,
            ],
            vec![
                row(2, "A1", true, -10_000),
                row(3, "A2", true, -2_000),
                row(4, "D1", false, -4_000),
                {
                    let mut f = row(6, "R1", true, 3_000);
                    f.kind = EntryKind::Adjustment;
                    f
                },
                usd_row,
                row(7, "A2", true, -2_000),
            ],
            vec![pres(2, "A1", -7_000), clp_p],
        );
        let ars = cur("ARS");
        let usd = cur("USD");
        assert_eq!(
            r.ledger_totals,
            BTreeMap::from([
                (
                    ars,
                    Totals {
                        count: 3,
                        debits_minor: 12_000,
                        credits_minor: 3_000
                    }
                ),
                (
                    usd,
                    Totals {
                        count: 1,
                        debits_minor: 0,
                        credits_minor: 250
                    }
                ),
            ])
        );
        assert_eq!(r.file_totals, r.ledger_totals);
        assert_eq!(r.ledger_totals[&ars].net_minor(), -9_000);
        assert_eq!(
            r.presentment_totals,
            BTreeMap::from([
                (
                    ars,
                    Totals {
                        count: 1,
                        debits_minor: 7_000,
                        credits_minor: 0
                    }
                ),
                (
                    cur("CLP"),
                    Totals {
                        count: 1,
                        debits_minor: 1_500,
                        credits_minor: 0
                    }
                ),
            ])
        );
        assert_eq!(r.matched, 5);
        assert_eq!(r.presentments_matched, 1);
        assert_eq!(r.count(BreakClass::DuplicateInFile), 1);
        assert_eq!(r.count(BreakClass::PresentmentWithoutAuthorization), 1);
    }

    #[test]
    fn breaks_are_sorted_by_class_then_id() {
        let mut old = auth("M2", true, -1);
        old.booked_at_ms = 0;
        let mut old2 = auth("M1", true, -1);
        old2.booked_at_ms = 0;
        let r = run(
            cfg(),
            vec![
                old,
                old2,
                auth("S1", false, 0),
                auth("B2", true, -5),
                auth("B1", true, -5),
            ],
            vec![
                row(2, "Z", true, -1),
                row(3, "B2", true, -6),
                row(4, "Y", true, -1),
                row(5, "S1", true, -1),
                row(6, "B1", true, -7),
            ],
            vec![],
        );
        let got: Vec<(BreakClass, &str)> = r
            .breaks
            .iter()
            .map(|b| (b.class, b.transaction_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (BreakClass::AmountMismatch, "B1"),
                (BreakClass::AmountMismatch, "B2"),
                (BreakClass::StatusMismatch, "S1"),
                (BreakClass::MissingInLedger, "Y"),
                (BreakClass::MissingInLedger, "Z"),
                (BreakClass::MissingInFile, "M1"),
                (BreakClass::MissingInFile, "M2"),
            ]
        );
        let counts = r.counts();
        assert_eq!(counts.len(), 9);
        assert_eq!(counts[&BreakClass::AmountMismatch], 2);
        assert_eq!(counts[&BreakClass::CurrencyMismatch], 0);
    }

    #[test]
    fn extreme_amounts_do_not_overflow() {
        let config = MatchConfig {
            presentment_tolerance_minor: i64::MAX,
            ..cfg()
        };
        let r = run(
            config,
            vec![
                auth("A1", true, i64::MIN),
                adj("R1", "A1", i64::MIN),
                adj("R2", "A1", i64::MIN),
                auth("A2", true, i64::MAX),
                adj("R3", "A2", i64::MAX),
            ],
            vec![row(2, "A1", true, i64::MAX)],
            vec![pres(2, "A1", 0), pres(3, "A2", i64::MIN)],
        );
        let am = r
            .breaks
            .iter()
            .find(|b| b.class == BreakClass::AmountMismatch)
            .unwrap();
        assert_eq!(am.ledger_amount_minor, Some(i64::MIN));
        assert_eq!(am.file_amount_minor, Some(i64::MAX));
        assert_eq!(am.difference_minor, None);
        assert!(
            am.detail.contains("difference 184467440737095516.15 ARS"),
            "{}",
            am.detail
        );
        let pad: Vec<&Break> = r
            .breaks
            .iter()
            .filter(|b| b.class == BreakClass::PresentmentAmountDiffers)
            .collect();
        assert_eq!(pad.len(), 2, "{:#?}", r.breaks);
        // A1: the adjustments overflow an i64.
        assert_eq!(pad[0].ledger_amount_minor, None);
        assert!(pad[0].detail.contains("overflow"), "{}", pad[0].detail);
        // A2: expected 2 * i64::MAX does not fit; presented i64::MIN is far beyond tolerance.
        assert_eq!(pad[1].ledger_amount_minor, None);
        assert_eq!(pad[1].difference_minor, None);
        assert_eq!(
            r.ledger_totals[&cur("ARS")].debits_minor,
            3 * i128::from(i64::MIN).abs()
        );
    }

    #[test]
    fn ledger_entry_loaded_twice_keeps_the_first() {
        let r = run(
            cfg(),
            vec![auth("A1", true, -100), auth("A1", true, -999)],
            vec![row(2, "A1", true, -100)],
            vec![],
        );
        assert!(r.is_clean(), "{:#?}", r.breaks);
        assert_eq!(r.ledger_duplicates, 1);
        assert_eq!(r.ledger_entries, 2);
        assert_eq!(r.ledger_totals[&cur("ARS")].count, 1);
    }

    #[test]
    fn adjustment_loaded_late_still_links() {
        let mut m = Matcher::new(cfg());
        m.add_ledger(auth("A1", true, -1_000));
        m.transaction(row(2, "A1", true, -1_000));
        m.add_ledger(adj("R1", "A1", 400));
        m.presentment(pres(2, "A1", -600));
        let r = m.finish();
        assert_eq!(r.presentments_matched, 1);
        // R1 was never in the transactions file and is before the grace window.
        assert_eq!(r.count(BreakClass::MissingInFile), 1);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn ledger_slots_stay_small() {
        assert_eq!(std::mem::size_of::<Core>(), 24);
        assert_eq!(std::mem::size_of::<AuthSlot>(), 32);
        assert_eq!(std::mem::size_of::<AdjSlot>(), 40);
    }

    #[test]
    fn ten_thousand_generated_entries_all_match() {
        let n = 10_000usize;
        let mut rng = fastrand::Rng::with_seed(42);
        let currencies = [cur("ARS"), cur("USD"), cur("CLP"), cur("KWD")];
        let mut ledger = Vec::with_capacity(n);
        let mut expected_presentment = Vec::new();
        let mut i = 0;
        while ledger.len() < n {
            let c = currencies[i % currencies.len()];
            let id = format!("T{i:08}");
            let declined = rng.i64(0..50) == 0;
            let amount = if declined {
                0
            } else {
                -(rng.i64(0..1_000_000) + 1)
            };
            ledger.push(LedgerEntry {
                currency: c,
                booked_at_ms: rng.i64(0..2_000_000),
                ..auth(&id, !declined, amount)
            });
            let mut total = amount;
            if !declined && rng.i64(0..10) == 0 && ledger.len() < n {
                let refund = rng.i64(0..-amount) + 1;
                total += refund;
                // A refund or another credit: both are netted off a presentment.
                ledger.push(LedgerEntry {
                    currency: c,
                    booked_at_ms: rng.i64(0..2_000_000),
                    refund: rng.bool(),
                    ..adj(&format!("J{i:08}"), &id, refund)
                });
            }
            if !declined {
                expected_presentment.push((id, c, total));
            }
            i += 1;
        }
        let rows: Vec<FileTransaction> = ledger
            .iter()
            .enumerate()
            .map(|(k, e)| FileTransaction {
                line: k as u64 + 2,
                transaction_id: e.transaction_id.to_string(),
                kind: e.kind,
                approved: e.effective,
                currency: e.currency,
                amount_minor: e.amount_minor,
                original_transaction_id: e.original_transaction_id.as_deref().map(String::from),
            })
            .collect();
        let presentments: Vec<Presentment> = expected_presentment
            .iter()
            .enumerate()
            .map(|(k, (id, c, total))| Presentment {
                line: k as u64 + 2,
                transaction_id: id.clone(),
                currency: *c,
                amount_minor: *total,
            })
            .collect();
        let n_presentments = presentments.len() as u64;
        let r = run(cfg(), ledger, rows, presentments);
        assert!(r.is_clean(), "{:#?}", &r.breaks[..r.breaks.len().min(5)]);
        assert_eq!(r.matched, n as u64);
        assert_eq!(r.presentments_matched, n_presentments);
        assert_eq!(r.pending, 0);
        assert_eq!(r.ledger_totals, r.file_totals);
    }

    /// A day with every break class, matched whole and matched in partitions by id
    /// (adjustments' links sent to their authorization's partition): the same report.
    #[test]
    fn partitioned_matching_gives_the_same_report() {
        let mut rng = fastrand::Rng::with_seed(7);
        let currencies = [cur("ARS"), cur("USD"), cur("CLP")];
        let mut ledger = Vec::new();
        let mut rows = Vec::new();
        let mut presentments = Vec::new();
        for i in 0..3_000usize {
            let c = currencies[i % 3];
            let id = format!("T{i}");
            let effective = rng.i64(0..10) != 0;
            let amount = if effective {
                -(rng.i64(0..100_000) + 1)
            } else {
                0
            };
            let booked_at_ms = rng.i64(0..1_200_000);
            if rng.i64(0..20) != 0 {
                ledger.push(LedgerEntry {
                    currency: c,
                    booked_at_ms,
                    ..auth(&id, effective, amount)
                });
            }
            let mut adjusted = 0;
            if rng.i64(0..6) == 0 {
                let refund = rng.i64(0..500) + 1;
                let adj_currency = if rng.i64(0..10) == 0 {
                    currencies[(i + 1) % 3]
                } else {
                    c
                };
                adjusted = refund;
                ledger.push(LedgerEntry {
                    effective: rng.i64(0..8) != 0,
                    refund: rng.bool(),
                    currency: adj_currency,
                    booked_at_ms: rng.i64(0..1_200_000),
                    ..adj(&format!("J{i}"), &id, refund)
                });
                if rng.i64(0..2) == 0 {
                    let mut r = row(0, &format!("J{i}"), true, refund + rng.i64(0..2));
                    r.kind = EntryKind::Adjustment;
                    r.currency = adj_currency;
                    rows.push(r);
                }
            }
            let roll = rng.i64(0..12);
            if roll != 0 {
                let mut r = row(0, &id, effective == (roll != 1), amount);
                r.currency = if roll == 2 {
                    currencies[(i + 2) % 3]
                } else {
                    c
                };
                if roll == 3 {
                    r.amount_minor -= 7;
                }
                rows.push(r.clone());
                if roll == 4 {
                    rows.push(r);
                }
            }
            if rng.i64(0..3) == 0 {
                let p = Presentment {
                    line: 0,
                    transaction_id: if rng.i64(0..15) == 0 {
                        format!("J{i}")
                    } else {
                        id.clone()
                    },
                    currency: if rng.i64(0..25) == 0 {
                        currencies[(i + 1) % 3]
                    } else {
                        c
                    },
                    amount_minor: amount + adjusted - rng.i64(0..3),
                };
                presentments.push(p.clone());
                if rng.i64(0..10) == 0 {
                    presentments.push(p);
                }
            }
        }
        for (k, r) in rows.iter_mut().enumerate() {
            r.line = k as u64 + 2;
        }
        for (k, p) in presentments.iter_mut().enumerate() {
            p.line = k as u64 + 2;
        }
        let config = MatchConfig {
            presentment_tolerance_minor: 1,
            grace_from_ms: 1_000_000,
            presentment_tolerance_by_currency: vec![(cur("CLP"), 3)],
        };
        let whole = run(
            config.clone(),
            ledger.clone(),
            rows.clone(),
            presentments.clone(),
        );
        // Every class a day's files alone can show (a presentment of an earlier date again
        // is found against the days before: `presented_again`).
        for class in BreakClass::ALL {
            let day_alone = class != BreakClass::PresentedAgain;
            assert!(
                !day_alone || whole.count(class) > 0,
                "the day has no {class}"
            );
        }
        assert!(whole.pending > 0 && whole.presentments_matched > 0);

        let parts = 7;
        let part = |id: &str| id.bytes().map(usize::from).sum::<usize>() % parts;
        let mut merged = Report::default();
        for p in 0..parts {
            let mut m = Matcher::new(config.clone());
            for e in ledger.iter().filter(|e| part(&e.transaction_id) == p) {
                let mut e = e.clone();
                e.original_transaction_id = None;
                m.add_ledger(e);
            }
            for e in &ledger {
                if let Some(orig) = e.original_transaction_id.as_deref()
                    && e.effective
                    && part(orig) == p
                {
                    m.add_adjustment_link(orig, e.currency, e.amount_minor, e.refund);
                }
            }
            for r in rows.iter().filter(|r| part(&r.transaction_id) == p) {
                m.transaction(r.clone());
            }
            for x in presentments.iter().filter(|x| part(&x.transaction_id) == p) {
                m.presentment(x.clone());
            }
            merged.merge(m.finish());
        }
        assert_eq!(merged.breaks, whole.breaks);
        assert_eq!(
            (merged.matched, merged.pending, merged.presentments_matched),
            (whole.matched, whole.pending, whole.presentments_matched)
        );
        assert_eq!(merged.ledger_totals, whole.ledger_totals);
        assert_eq!(merged.file_totals, whole.file_totals);
        assert_eq!(merged.presentment_totals, whole.presentment_totals);
        assert_eq!(
            (
                merged.transaction_rows,
                merged.presentment_rows,
                merged.ledger_entries
            ),
            (
                whole.transaction_rows,
                whole.presentment_rows,
                whole.ledger_entries
            )
        );
    }
}
