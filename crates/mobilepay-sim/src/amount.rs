//! Wrapper amounts: DKK and EUR, exponent 2, kept in exact minor units (never `f64`).

/// Currencies the simulator serves; both have two decimals.
pub const CURRENCIES: [&str; 2] = ["DKK", "EUR"];

/// Parses a decimal text (`"125.5"`, `"125.50"`, `"100"`) into minor units: digits, an
/// optional point and at most 2 decimals, greater than 0, no sign, no exponent.
pub fn parse_minor(text: &str) -> Option<i64> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if text.starts_with('-') || int.len() > 15 || frac.len() > 2 {
        return None;
    }
    protocol::minor::parse_minor(text, 2).filter(|minor| *minor > 0)
}

/// `12550` -> `"125.50"`.
pub fn format_minor(minor: i64) -> String {
    protocol::minor::format_minor(minor, 2)
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
