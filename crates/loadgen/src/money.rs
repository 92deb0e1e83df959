//! Exact money in integer minor units: decimal strings in, decimal strings out, no floats
//! (the rules are [`protocol::minor`]'s).

pub use protocol::minor::format_minor;

/// Parses a plain decimal (`"1234.50"`, `"-3"`, `"0.07"`) into minor units of a currency with
/// `exponent` decimals, exactly as [`protocol::minor::parse_minor`]; the error names the text.
pub fn parse_minor(text: &str, exponent: u8) -> anyhow::Result<i64> {
    protocol::minor::parse_minor(text, exponent)
        .ok_or_else(|| anyhow::anyhow!("'{text}' is not an exact amount with {exponent} decimals"))
}

/// `10^exponent`: one major unit in minor units.
pub fn unit(exponent: u8) -> i64 {
    10i64.pow(u32::from(exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_amount_is_named() {
        assert_eq!(parse_minor("1234.5", 2).unwrap(), 123_450);
        let e = parse_minor("1.005", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "'1.005' is not an exact amount with 2 decimals"
        );
        assert_eq!(unit(2), 100);
        assert_eq!(unit(0), 1);
    }
}
