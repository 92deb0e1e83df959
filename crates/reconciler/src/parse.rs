//! Streaming CSV parsing of the processor's files, driven by the column mapping. Memory is
//! bounded whatever the file size: one record buffer is reused for every row. A row that
//! cannot be read is collected with its file, line and reason; it never stops the run.

use crate::config::{CsvSettings, PresentmentColumns, TransactionColumns};
use anyhow::{Context, bail};
use ledger::reconcile::{EntryKind, FileTransaction, Presentment};
use ledger::{AmountError, Currency, to_minor, to_minor_rounded};
use rust_decimal::Decimal;
use std::path::Path;

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Malformed {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// How amounts are written.
#[derive(Debug, Clone, Copy)]
pub struct CsvFormat {
    pub delimiter: u8,
    pub decimal_comma: bool,
}

impl From<&CsvSettings> for CsvFormat {
    fn from(c: &CsvSettings) -> Self {
        CsvFormat {
            delimiter: c.delimiter.as_bytes()[0],
            decimal_comma: c.decimal_separator == ",",
        }
    }
}

/// Positions of the mapped columns, found by header name (trimmed, case-insensitive).
struct Columns(Vec<Option<usize>>);

fn resolve(
    headers: &csv::ByteRecord,
    wanted: &[(&str, &str, bool)],
    file: &str,
) -> anyhow::Result<Columns> {
    let names: Vec<String> = headers
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_lowercase()
        })
        .collect();
    let mut out = Vec::with_capacity(wanted.len());
    for (field, header, required) in wanted {
        let header = header.trim().to_lowercase();
        let pos = if header.is_empty() {
            None
        } else {
            names.iter().position(|n| *n == header)
        };
        if pos.is_none() && *required {
            bail!(
                "{file}: no column '{header}' for {field} (headers: {})",
                names.join(", ")
            );
        }
        out.push(pos);
    }
    Ok(Columns(out))
}

fn get(rec: &csv::ByteRecord, col: Option<usize>) -> Result<&str, String> {
    match col {
        None => Ok(""),
        Some(i) => {
            let raw = rec.get(i).ok_or_else(|| {
                format!("row has {} fields, expected at least {}", rec.len(), i + 1)
            })?;
            std::str::from_utf8(raw)
                .map(str::trim)
                .map_err(|_| "not UTF-8".to_owned())
        }
    }
}

/// How an amount finer than its currency's minor unit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finer {
    /// Malformed: a presentment is cleared in the currency's minor units.
    Refused,
    /// Rounded half to even, as the ledger books (and flags `EXCESS_PRECISION`) an
    /// adjustment or forced advice that said it; an authorization that said it was declined.
    Rounded,
}

/// Parses an unsigned decimal amount exactly, in the file's decimal style.
pub fn parse_amount(
    text: &str,
    fmt: CsvFormat,
    currency: Currency,
    finer: Finer,
) -> Result<i64, String> {
    if text.is_empty() {
        return Err("empty amount".into());
    }
    let normalized;
    let t = if fmt.decimal_comma {
        if text.contains('.') {
            return Err(format!(
                "amount '{text}' has a '.' but decimals are written with ','"
            ));
        }
        normalized = text.replace(',', ".");
        normalized.as_str()
    } else {
        if text.contains(',') {
            return Err(format!(
                "amount '{text}' has a ',' but decimals are written with '.'"
            ));
        }
        text
    };
    if !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') || t.starts_with('.') || t.ends_with('.')
    {
        return Err(format!("amount '{text}' is not an unsigned decimal"));
    }
    // Exact: `from_str` rounds past 28 decimal places.
    let d = Decimal::from_str_exact(t)
        .map_err(|_| format!("amount '{text}' is not a decimal this ledger can hold"))?;
    match to_minor(d, currency) {
        Err(AmountError::ExcessPrecision) if finer == Finer::Rounded => {
            to_minor_rounded(d, currency)
        }
        minor => minor,
    }
    .map_err(|e| format!("amount '{text}' in {currency}: {e}"))
}

fn signed(direction: &str, minor: i64) -> Result<i64, String> {
    match direction.to_ascii_uppercase().as_str() {
        "DEBIT" => Ok(-minor),
        "CREDIT" => Ok(minor),
        other => Err(format!("direction '{other}' is neither DEBIT nor CREDIT")),
    }
}

fn currency(code: &str) -> Result<Currency, String> {
    Currency::parse_any(&code.to_ascii_uppercase())
        .map_err(|_| format!("currency '{code}' is not a currency code"))
}

/// The file name reported with malformed rows.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// Streams `input` (named `name` in reports) row by row: `parse` turns a record into a
/// value or a reason.
fn stream<T>(
    input: impl std::io::Read,
    name: &str,
    fmt: CsvFormat,
    wanted: &[(&str, &str, bool)],
    malformed: &mut Vec<Malformed>,
    mut parse: impl FnMut(&csv::ByteRecord, &[Option<usize>], u64) -> Result<T, String>,
    mut row: impl FnMut(T),
) -> anyhow::Result<u64> {
    let name = name.to_owned();
    let mut r = csv::ReaderBuilder::new()
        .delimiter(fmt.delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(input);
    // An empty file (not even a header) is a day without rows, not a file without columns.
    if r.byte_headers()?.is_empty() {
        return Ok(0);
    }
    let cols = resolve(r.byte_headers()?, wanted, &name)?;
    let mut rec = csv::ByteRecord::new();
    let mut n = 0u64;
    loop {
        let line = r.position().line() + 1;
        match r.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                n += 1;
                malformed.push(Malformed {
                    file: name.clone(),
                    line,
                    reason: format!("unreadable row: {e}"),
                });
                continue;
            }
        }
        n += 1;
        let line = rec.position().map(|p| p.line()).unwrap_or(line);
        match parse(&rec, &cols.0, line) {
            Ok(t) => row(t),
            Err(reason) => malformed.push(Malformed {
                file: name.clone(),
                line,
                reason,
            }),
        }
    }
    Ok(n)
}

fn transaction_id(rec: &csv::ByteRecord, col: Option<usize>) -> Result<String, String> {
    let id = get(rec, col)?;
    if id.is_empty() {
        return Err("empty transaction id".into());
    }
    Ok(id.to_owned())
}

/// A file's column mapping: the columns a row needs, and how a row of them reads.
pub trait FileColumns {
    /// What a good row is.
    type Row;

    /// (column's name in the mapping, header it is mapped to, required).
    fn wanted(&self) -> Vec<(&'static str, &str, bool)>;

    /// One row, `c` the indexes of [`FileColumns::wanted`]'s columns in the file.
    fn row(
        rec: &csv::ByteRecord,
        c: &[Option<usize>],
        line: u64,
        fmt: CsvFormat,
    ) -> Result<Self::Row, String>;
}

impl FileColumns for TransactionColumns {
    type Row = FileTransaction;

    fn wanted(&self) -> Vec<(&'static str, &str, bool)> {
        vec![
            ("transaction_id", self.transaction_id.as_str(), true),
            ("kind", self.kind.as_str(), true),
            ("status", self.status.as_str(), true),
            ("direction", self.direction.as_str(), true),
            ("amount", self.amount.as_str(), true),
            ("currency", self.currency.as_str(), true),
            (
                "original_transaction_id",
                self.original_transaction_id.as_str(),
                false,
            ),
        ]
    }

    fn row(
        rec: &csv::ByteRecord,
        c: &[Option<usize>],
        line: u64,
        fmt: CsvFormat,
    ) -> Result<FileTransaction, String> {
        let transaction_id = transaction_id(rec, c[0])?;
        let kind = match get(rec, c[1])?.to_ascii_uppercase().as_str() {
            "AUTHORIZATION" => EntryKind::Authorization,
            "ADJUSTMENT" => EntryKind::Adjustment,
            other => {
                return Err(format!(
                    "kind '{other}' is neither AUTHORIZATION nor ADJUSTMENT"
                ));
            }
        };
        let approved = match get(rec, c[2])?.to_ascii_uppercase().as_str() {
            "APPROVED" => true,
            "REJECTED" => false,
            other => return Err(format!("status '{other}' is neither APPROVED nor REJECTED")),
        };
        let cur = currency(get(rec, c[5])?)?;
        let minor = parse_amount(get(rec, c[4])?, fmt, cur, Finer::Rounded)?;
        let amount_minor = signed(get(rec, c[3])?, minor)?;
        let original = get(rec, c[6])?;
        Ok(FileTransaction {
            line,
            transaction_id,
            kind,
            approved,
            currency: cur,
            amount_minor,
            original_transaction_id: (!original.is_empty()).then(|| original.to_owned()),
        })
    }
}

impl FileColumns for PresentmentColumns {
    type Row = Presentment;

    fn wanted(&self) -> Vec<(&'static str, &str, bool)> {
        vec![
            ("transaction_id", self.transaction_id.as_str(), true),
            ("direction", self.direction.as_str(), true),
            ("amount", self.amount.as_str(), true),
            ("currency", self.currency.as_str(), true),
        ]
    }

    fn row(
        rec: &csv::ByteRecord,
        c: &[Option<usize>],
        line: u64,
        fmt: CsvFormat,
    ) -> Result<Presentment, String> {
        let transaction_id = transaction_id(rec, c[0])?;
        let cur = currency(get(rec, c[3])?)?;
        let minor = parse_amount(get(rec, c[2])?, fmt, cur, Finer::Refused)?;
        let amount_minor = signed(get(rec, c[1])?, minor)?;
        Ok(Presentment {
            line,
            transaction_id,
            currency: cur,
            amount_minor,
        })
    }
}

/// Streams a transactions or presentments file (which one, `map` says), calling `row` for
/// each good row; returns rows read.
pub fn rows<C: FileColumns>(
    path: &Path,
    map: &C,
    fmt: CsvFormat,
    malformed: &mut Vec<Malformed>,
    row: impl FnMut(C::Row),
) -> anyhow::Result<u64> {
    rows_from(open(path)?, &file_name(path), map, fmt, malformed, row)
}

/// [`rows`] from any reader, `name` standing for the file in reports.
pub fn rows_from<C: FileColumns>(
    input: impl std::io::Read,
    name: &str,
    map: &C,
    fmt: CsvFormat,
    malformed: &mut Vec<Malformed>,
    row: impl FnMut(C::Row),
) -> anyhow::Result<u64> {
    stream(
        input,
        name,
        fmt,
        &map.wanted(),
        malformed,
        |rec, c, line| C::row(rec, c, line, fmt),
        row,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOT: CsvFormat = CsvFormat {
        delimiter: b',',
        decimal_comma: false,
    };
    const COMMA: CsvFormat = CsvFormat {
        delimiter: b';',
        decimal_comma: true,
    };

    #[test]
    fn an_empty_file_is_no_rows_and_a_file_without_its_columns_an_error() {
        let s = crate::config::Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
        let map = &s.mapping.transactions;
        let mut malformed = Vec::new();
        let read = |text: &'static str, malformed: &mut Vec<Malformed>| {
            rows_from(text.as_bytes(), "t.csv", map, DOT, malformed, |_| {})
        };
        assert_eq!(read("", &mut malformed).unwrap(), 0);
        assert!(malformed.is_empty());
        let err = read("id,amount\n1,2\n", &mut malformed).unwrap_err();
        assert!(err.to_string().contains("no column"), "{err}");
    }

    #[test]
    fn amounts_are_exact_in_both_styles() {
        let ars = Currency::parse("ARS").unwrap();
        let clp = Currency::parse("CLP").unwrap();
        let exact = Finer::Refused;
        assert_eq!(parse_amount("1060.74", DOT, ars, exact), Ok(106_074));
        assert_eq!(parse_amount("1060,74", COMMA, ars, exact), Ok(106_074));
        assert_eq!(parse_amount("15000", DOT, clp, exact), Ok(15_000));
        for bad in [
            "",
            "-1.00",
            "1,060.74",
            "1.0.0",
            ".5",
            "5.",
            "1e3",
            "10.001",
            "abc",
            // Rounded to 10.00 by a parse that is not exact.
            "10.00000000000000000000000000001",
        ] {
            assert!(parse_amount(bad, DOT, ars, exact).is_err(), "{bad}");
        }
        assert!(parse_amount("1.060,74", COMMA, ars, exact).is_err());
        assert!(
            parse_amount("1,5", COMMA, clp, exact).is_err(),
            "CLP has no decimals"
        );
        // The processor's rows round as the ledger booked them: half to even, and only
        // what is finer than the minor unit.
        let rounded = Finer::Rounded;
        assert_eq!(parse_amount("10.005", DOT, ars, rounded), Ok(1000));
        assert_eq!(parse_amount("10.015", DOT, ars, rounded), Ok(1002));
        assert_eq!(parse_amount("2,5", COMMA, clp, rounded), Ok(2));
        for bad in ["-1.00", "1e3", "10.00000000000000000000000000001"] {
            assert!(parse_amount(bad, DOT, ars, rounded).is_err(), "{bad}");
        }
    }
}
