//! Exact conversion between decimal amounts at the edges and integer minor units inside.

use crate::Currency;
use rust_decimal::Decimal;

/// Why a decimal amount cannot be held as minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount has more decimal places than the currency's minor unit")]
    ExcessPrecision,
    #[error("amount is out of the ledger's range")]
    OutOfRange,
}

/// Converts an exact decimal to minor units of `currency`, refusing anything that
/// would need rounding. `990.0 ARS` -> `99000`; `10.005 ARS` -> `ExcessPrecision`.
/// The range is symmetric, `-i64::MAX..=i64::MAX`: every amount read may be negated (a
/// debit records what it asked as a negative amount, a reversal undoes a movement).
pub fn to_minor(amount: Decimal, currency: Currency) -> Result<i64, AmountError> {
    let scaled = amount
        .checked_mul(Decimal::from(10i64.pow(u32::from(currency.exponent()))))
        .ok_or(AmountError::OutOfRange)?;
    if !scaled.fract().is_zero() {
        return Err(AmountError::ExcessPrecision);
    }
    i64::try_from(scaled.trunc())
        .ok()
        .filter(|&m| m != i64::MIN)
        .ok_or(AmountError::OutOfRange)
}

/// Like [`to_minor`] but rounds half to even when the amount is finer than the minor
/// unit. Only for movements that must be booked whatever they say (adjustments); the
/// caller records the exact text and flags the difference.
pub fn to_minor_rounded(amount: Decimal, currency: Currency) -> Result<i64, AmountError> {
    let rounded = amount.round_dp_with_strategy(
        u32::from(currency.exponent()),
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    );
    to_minor(rounded, currency)
}

/// Formats minor units as a plain decimal string with exactly the currency's places:
/// `98234512, 2` -> `"982345.12"`, `-5, 2` -> `"-0.05"`, `1500, 0` -> `"1500"`.
pub fn format_minor(minor: i64, exponent: u8) -> String {
    let mut d = Decimal::from(minor);
    // Scale is at most 4 for every currency we know, well inside Decimal's 28.
    let _ = d.set_scale(u32::from(exponent));
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }
    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Each case is (amount, currency, what `to_minor` gives).
    fn to_minor_gives(cases: &[(&str, &str, Result<i64, AmountError>)]) {
        for (amount, currency, want) in cases {
            assert_eq!(
                to_minor(dec(amount), cur(currency)),
                *want,
                "{amount} {currency}"
            );
        }
    }

    #[test]
    fn converts_exactly() {
        to_minor_gives(&[
            ("990.0", "ARS", Ok(99000)),
            ("1060.74", "ARS", Ok(106074)),
            ("0.00", "USD", Ok(0)),
            ("1500", "CLP", Ok(1500)),
            ("1.234", "KWD", Ok(1234)),
            ("-5.10", "USD", Ok(-510)),
            ("0.10000", "USD", Ok(10)),
        ]);
    }

    #[test]
    fn refuses_what_would_need_rounding() {
        to_minor_gives(&[
            ("10.005", "ARS", Err(AmountError::ExcessPrecision)),
            ("1.5", "CLP", Err(AmountError::ExcessPrecision)),
        ]);
        assert_eq!(to_minor_rounded(dec("10.005"), cur("ARS")), Ok(1000));
        assert_eq!(to_minor_rounded(dec("10.015"), cur("ARS")), Ok(1002));
    }

    #[test]
    fn huge_amounts_do_not_overflow() {
        let (max, min) = (Decimal::MAX.to_string(), Decimal::MIN.to_string());
        to_minor_gives(&[
            ("92233720368547758.08", "USD", Err(AmountError::OutOfRange)),
            (&max, "USD", Err(AmountError::OutOfRange)),
            (&min, "KWD", Err(AmountError::OutOfRange)),
            ("92233720368547758.07", "USD", Ok(i64::MAX)),
            // i64::MIN has no negation in i64.
            ("-92233720368547758.08", "USD", Err(AmountError::OutOfRange)),
            ("-92233720368547758.07", "USD", Ok(-i64::MAX)),
        ]);
    }

    #[test]
    fn formats_with_the_currency_places() {
        assert_eq!(format_minor(98234512, 2), "982345.12");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(1500, 0), "1500");
        assert_eq!(format_minor(1234, 3), "1.234");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
    }
}
