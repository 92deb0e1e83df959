//! The reconciler's CSV parsing (crates/reconciler/src/parse.rs) on arbitrary files: never a
//! panic; every row is either read or reported malformed; amounts are exact and unsigned
//! before the direction applies.
//!
//! The first byte picks the format (`,` with `.` decimals, or `;` with `,` decimals); the
//! rest is the file.
#![no_main]

use ledger::Currency;
use libfuzzer_sys::fuzz_target;
use reconciler::config::{PresentmentColumns, TransactionColumns};
use reconciler::parse::{self, CsvFormat};

fuzz_target!(|data: &[u8]| {
    let Some((first, file)) = data.split_first() else {
        return;
    };
    let fmt = if first & 1 == 0 {
        CsvFormat {
            delimiter: b',',
            decimal_comma: false,
        }
    } else {
        CsvFormat {
            delimiter: b';',
            decimal_comma: true,
        }
    };
    let tmap = TransactionColumns {
        transaction_id: "transaction_id".into(),
        kind: "kind".into(),
        tx_type: "type".into(),
        status: "status".into(),
        direction: "direction".into(),
        amount: "local_amount".into(),
        currency: "local_currency".into(),
        original_transaction_id: "original_transaction_id".into(),
        card_id: "card_id".into(),
        user_id: "user_id".into(),
        date: "date".into(),
    };
    let mut malformed = parse::MalformedRows::default();
    let mut good = 0u64;
    if let Ok(n) = parse::rows_from(file, "t.csv", &tmap, fmt, &mut malformed, |t| {
        good += 1;
        assert!(!t.transaction_id.is_empty());
    }) {
        assert_eq!(n, good + malformed.len() as u64, "a row was neither read nor reported");
    }
    let pmap = PresentmentColumns {
        transaction_id: "transaction_id".into(),
        direction: "direction".into(),
        amount: "local_amount".into(),
        currency: "local_currency".into(),
        card_id: "card_id".into(),
        date: "date".into(),
    };
    let mut malformed = parse::MalformedRows::default();
    let mut good = 0u64;
    if let Ok(n) = parse::rows_from(file, "p.csv", &pmap, fmt, &mut malformed, |_| {
        good += 1;
    }) {
        assert_eq!(n, good + malformed.len() as u64, "a row was neither read nor reported");
    }
    if let Ok(text) = std::str::from_utf8(file) {
        for code in ["ARS", "CLP", "BHD"] {
            let c = Currency::parse(code).expect("listed");
            let exact = parse::parse_amount(text, fmt, c, parse::Finer::Refused);
            if let Ok(m) = exact {
                assert!(m >= 0, "{text:?} parsed to a negative amount {m}");
            }
            if let Ok(m) = parse::parse_amount(text, fmt, c, parse::Finer::Rounded) {
                assert!(m >= 0, "{text:?} rounded to a negative amount {m}");
                // Rounding only ever changes what is finer than the minor unit.
                if let Ok(e) = exact {
                    assert_eq!(m, e, "{text:?} read exactly and rounded differ");
                }
            } else {
                assert!(exact.is_err(), "{text:?} reads exactly but not rounded");
            }
        }
    }
});
