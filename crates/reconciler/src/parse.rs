//! Streaming CSV parsing of the processor's files, driven by the column mapping. Memory is
//! bounded whatever the file size: one record buffer is reused for every row, and of the
//! rows that cannot be read the first thousand are kept (every one is counted). Such a row
//! is reported with its file, line and reason and never stops the run; a file that cannot
//! be read to its end does (the rest of it would go unchecked).

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

/// The rows that could not be read: every one counted, the first [`MalformedRows::KEPT`]
/// kept with their file, line and reason (what the summary shows), so that a large file of
/// bad rows (a changed layout) costs no more memory than a few.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MalformedRows {
    kept: Vec<Malformed>,
    count: usize,
}

impl MalformedRows {
    pub const KEPT: usize = 1000;

    pub fn push(&mut self, m: Malformed) {
        if self.kept.len() < Self::KEPT {
            self.kept.push(m);
        }
        self.count += 1;
    }

    /// Every row that could not be read, kept or not.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The kept rows, in the order they were read.
    pub fn iter(&self) -> std::slice::Iter<'_, Malformed> {
        self.kept.iter()
    }
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
    malformed: &mut MalformedRows,
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
    let width = r.byte_headers()?.len();
    let mut rec = csv::ByteRecord::new();
    let mut n = 0u64;
    loop {
        let at = r.position().line();
        // A read error is the file's, not a row's: the reader cannot go on past it, and the
        // rest of the file would be taken for its end, unchecked.
        if !r
            .read_byte_record(&mut rec)
            .with_context(|| format!("{name}: cannot be read from line {at} on"))?
        {
            break;
        }
        n += 1;
        let line = rec.position().map(|p| p.line()).unwrap_or(at);
        // Another number of fields than the header's: a delimiter inside an unquoted value
        // (or one missing) moved the columns, and a value read where another should be
        // could pass for it.
        let parsed = if rec.len() == width {
            parse(&rec, &cols.0, line)
        } else {
            Err(format!("{} fields where the header has {width}", rec.len()))
        };
        match parsed {
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
    malformed: &mut MalformedRows,
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
    malformed: &mut MalformedRows,
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
        let mut malformed = MalformedRows::default();
        let read = |text: &'static str, malformed: &mut MalformedRows| {
            rows_from(text.as_bytes(), "t.csv", map, DOT, malformed, |_| {})
        };
        assert_eq!(read("", &mut malformed).unwrap(), 0);
        assert!(malformed.is_empty());
        let err = read("id,amount\n1,2\n", &mut malformed).unwrap_err();
        assert!(err.to_string().contains("no column"), "{err}");
    }

    #[test]
    fn rows_of_another_width_are_malformed_and_only_the_first_are_kept() {
        let s = crate::config::Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
        let map = &s.mapping.transactions;
        let header = "transaction_id,kind,status,direction,local_amount,local_currency,original_transaction_id";
        let good = "ctx-1,AUTHORIZATION,APPROVED,DEBIT,10.00,ARS,";
        // A comma inside an unquoted value moved the amount into the currency's column.
        let wide = "ctx-2,AUTHORIZATION,APPROVED,DEBIT,10,00,ARS,";
        let narrow = "ctx-3,AUTHORIZATION,APPROVED,DEBIT,10.00";
        let text = format!("{header}\n{good}\n{wide}\n{narrow}\n");
        let mut malformed = MalformedRows::default();
        let mut ids = Vec::new();
        let n = rows_from(text.as_bytes(), "t.csv", map, DOT, &mut malformed, |r| {
            ids.push(r.transaction_id)
        })
        .unwrap();
        assert_eq!((n, ids), (3, vec!["ctx-1".to_owned()]));
        let reasons: Vec<_> = malformed
            .iter()
            .map(|m| (m.line, m.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (3, "8 fields where the header has 7"),
                (4, "5 fields where the header has 7")
            ]
        );
        // A file of bad rows: every one counted, a thousand kept.
        let text = format!("{header}\n{}", format!("{wide}\n").repeat(2500));
        let mut malformed = MalformedRows::default();
        rows_from(text.as_bytes(), "t.csv", map, DOT, &mut malformed, |_| {}).unwrap();
        assert_eq!((malformed.len(), malformed.iter().count()), (2500, 1000));
    }

    #[test]
    fn a_file_that_cannot_be_read_to_its_end_stops_the_run() {
        struct Breaks(&'static [u8]);
        impl std::io::Read for Breaks {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("connection reset"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let s = crate::config::Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
        let input = Breaks(
            b"transaction_id,kind,status,direction,local_amount,local_currency,original_transaction_id\n\
              ctx-1,AUTHORIZATION,APPROVED,DEBIT,10.00,ARS,\n",
        );
        let mut malformed = MalformedRows::default();
        let err = rows_from(
            input,
            "t.csv",
            &s.mapping.transactions,
            DOT,
            &mut malformed,
            |_| {},
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("t.csv: cannot be read from line 3 on"),
            "{err:#}"
        );
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
