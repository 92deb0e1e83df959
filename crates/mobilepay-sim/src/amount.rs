//! Wrapper amounts: DKK and EUR, exponent 2, kept in exact minor units (never `f64`).

/// Currencies the simulator serves; both have two decimals.
pub const CURRENCIES: [&str; 2] = ["DKK", "EUR"];

/// Parses a decimal text (`"125.5"`, `"125.50"`, `"100"`) into minor units: digits, an
/// optional point and at most 2 decimals, greater than 0, no sign, no exponent.
pub fn parse_minor(text: &str) -> Option<i64> {
    let text = text.trim();
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int.is_empty() || int.len() > 15 || frac.len() > 2 {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut minor: i64 = int.parse().ok()?;
    let mut f = frac.to_owned();
    while f.len() < 2 {
        f.push('0');
    }
    minor = minor
        .checked_mul(100)?
        .checked_add(f.parse::<i64>().ok()?)?;
    (minor > 0).then_some(minor)
}

/// `12550` -> `"125.50"`.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_minor_units() {
        assert_eq!(parse_minor("125.50"), Some(12550));
        assert_eq!(parse_minor("125.5"), Some(12550));
        assert_eq!(parse_minor("100"), Some(10000));
        assert_eq!(parse_minor("0.01"), Some(1));
        for bad in [
            "0", "0.00", "-1", "1.234", "1e2", "", ".5", "5.", "1,00", " ", "abc",
        ] {
            assert_eq!(parse_minor(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_two_decimals() {
        assert_eq!(format_minor(12550), "125.50");
        assert_eq!(format_minor(1), "0.01");
        assert_eq!(format_minor(0), "0.00");
    }
}
