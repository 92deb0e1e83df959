//! Exact money in integer minor units, as the simulators and the load generator write and
//! read it in JSON: decimal strings in, decimal strings out, no floats.

/// Parses a plain decimal (`"1234.50"`, `"-3"`, `"0.07"`) into minor units of a currency with
/// `exponent` decimals: an optional `-`, digits, and a point followed by digits. More
/// decimals than the currency has are refused unless they are zeros (`"1.500"` is 150 in a
/// 2-decimal currency); nothing is ever rounded. `None` for anything else or out of range.
pub fn parse_minor(text: &str, exponent: u8) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && frac.is_empty())
    {
        return None;
    }
    let e = usize::from(exponent);
    let (kept, extra) = frac.split_at(frac.len().min(e));
    if extra.bytes().any(|b| b != b'0') {
        return None;
    }
    let mut minor: i64 = 0;
    for b in int.bytes().chain(kept.bytes()) {
        minor = minor.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    for _ in kept.len()..e {
        minor = minor.checked_mul(10)?;
    }
    Some(if negative { -minor } else { minor })
}

/// Formats minor units with exactly `exponent` decimals: `format_minor(-5, 2) == "-0.05"`.
pub fn format_minor(minor: i64, exponent: u8) -> String {
    let digits = minor.unsigned_abs().to_string();
    let sign = if minor < 0 { "-" } else { "" };
    let e = usize::from(exponent);
    if e == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = e + 1);
    let (int, frac) = padded.split_at(padded.len() - e);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_minor("1234.50", 2).unwrap(), 123_450);
        assert_eq!(parse_minor("1234.5", 2).unwrap(), 123_450);
        assert_eq!(parse_minor("1234", 2).unwrap(), 123_400);
        assert_eq!(parse_minor("0.07", 2).unwrap(), 7);
        assert_eq!(parse_minor("-0.07", 2).unwrap(), -7);
        assert_eq!(parse_minor("-12.30", 2).unwrap(), -1230);
        assert_eq!(parse_minor("100000.00", 2).unwrap(), 10_000_000);
        assert_eq!(parse_minor("1.500", 2).unwrap(), 150);
        assert_eq!(parse_minor("42", 0).unwrap(), 42);
        assert_eq!(parse_minor("1.234", 3).unwrap(), 1234);
        // 0.1 + 0.2 is 0.3 here.
        assert_eq!(
            parse_minor("0.1", 2).unwrap() + parse_minor("0.2", 2).unwrap(),
            parse_minor("0.3", 2).unwrap()
        );
        assert_eq!(parse_minor("92233720368547758.07", 2).unwrap(), i64::MAX);
    }

    #[test]
    fn refuses_what_is_not_exact() {
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1.005",
            "1,00",
            "+1",
            "1e3",
            " 1",
            "1 ",
            "--1",
            "0x10",
            "NaN",
            "92233720368547758.08",
        ] {
            assert!(parse_minor(bad, 2).is_none(), "{bad:?} should be refused");
        }
        assert!(parse_minor("1.5", 0).is_none());
        assert_eq!(parse_minor("1.0", 0).unwrap(), 1);
    }

    #[test]
    fn formats_with_the_currency_decimals() {
        assert_eq!(format_minor(123_450, 2), "1234.50");
        assert_eq!(format_minor(7, 2), "0.07");
        assert_eq!(format_minor(-7, 2), "-0.07");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(-1230, 2), "-12.30");
        assert_eq!(format_minor(42, 0), "42");
        assert_eq!(format_minor(1, 3), "0.001");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn round_trips() {
        for m in [0, 1, -1, 99, 100, 101, -100_001, 10_000_000, i64::MAX] {
            for e in [0u8, 2, 3] {
                assert_eq!(parse_minor(&format_minor(m, e), e).unwrap(), m, "{m} e{e}");
            }
        }
    }
}
