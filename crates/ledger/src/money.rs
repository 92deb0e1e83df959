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
pub fn to_minor(amount: Decimal, currency: Currency) -> Result<i64, AmountError> {
    let scaled = amount
        .checked_mul(Decimal::from(10i64.pow(u32::from(currency.exponent()))))
        .ok_or(AmountError::OutOfRange)?;
    if !scaled.fract().is_zero() {
        return Err(AmountError::ExcessPrecision);
    }
    i64::try_from(scaled.trunc()).map_err(|_| AmountError::OutOfRange)
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

    #[test]
    fn converts_exactly() {
        assert_eq!(to_minor(dec("990.0"), cur("ARS")), Ok(99000));
        assert_eq!(to_minor(dec("1060.74"), cur("ARS")), Ok(106074));
        assert_eq!(to_minor(dec("0.00"), cur("USD")), Ok(0));
        assert_eq!(to_minor(dec("1500"), cur("CLP")), Ok(1500));
        assert_eq!(to_minor(dec("1.234"), cur("KWD")), Ok(1234));
        assert_eq!(to_minor(dec("-5.10"), cur("USD")), Ok(-510));
        assert_eq!(to_minor(dec("0.10000"), cur("USD")), Ok(10));
    }

    #[test]
    fn refuses_what_would_need_rounding() {
        assert_eq!(
            to_minor(dec("10.005"), cur("ARS")),
            Err(AmountError::ExcessPrecision)
        );
        assert_eq!(
            to_minor(dec("1.5"), cur("CLP")),
            Err(AmountError::ExcessPrecision)
        );
        assert_eq!(to_minor_rounded(dec("10.005"), cur("ARS")), Ok(1000));
        assert_eq!(to_minor_rounded(dec("10.015"), cur("ARS")), Ok(1002));
    }

    #[test]
    fn huge_amounts_do_not_overflow() {
        assert_eq!(
            to_minor(dec("92233720368547758.08"), cur("USD")),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(
            to_minor(Decimal::MAX, cur("USD")),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(
            to_minor(Decimal::MIN, cur("KWD")),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(
            to_minor(dec("92233720368547758.07"), cur("USD")),
            Ok(i64::MAX)
        );
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
