//! Amount parsing (wire text -> exact decimal) and ledger money (decimal -> minor units and
//! back): never a panic, never an inexact conversion.
#![no_main]

use ledger::{Currency, format_minor, to_minor, to_minor_rounded};
use libfuzzer_sys::fuzz_target;
use protocol::WireAmount;
use rust_decimal::Decimal;
use std::str::FromStr;

/// Exponents 0, 2 and 3, and the largest listed.
const CURRENCIES: [&str; 4] = ["CLP", "ARS", "BHD", "CLF"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [WireAmount::parse(text), WireAmount::parse_json_number(text)] {
        let Ok(a) = parsed else { continue };
        assert_eq!(a.text(), text, "the original text is kept");
        let Some(v) = a.value() else { continue };
        // The exact value, rendered plainly, parses back to itself.
        let plain = WireAmount::parse(&v.to_string()).expect("a decimal's rendering parses");
        assert_eq!(plain.value(), Some(v));
        for code in CURRENCIES {
            let Ok(c) = Currency::parse(code) else { continue };
            let e = c.exponent();
            if let Ok(m) = to_minor(v, c) {
                // Exact: back to the same amount, to the last digit.
                let back = Decimal::from_str(&format_minor(m, e)).expect("formatted minor parses");
                assert_eq!(back, v, "{text} in {code}: {m} minor units");
            }
            if let Ok(m) = to_minor_rounded(v, c) {
                // Rounded by at most half a minor unit.
                let back = Decimal::from_str(&format_minor(m, e)).expect("formatted minor parses");
                let half = Decimal::new(5, u32::from(e) + 1);
                if let Some(diff) = back.checked_sub(v) {
                    assert!(diff.abs() <= half, "{text} in {code} rounded to {m}");
                }
            }
        }
    }
});
