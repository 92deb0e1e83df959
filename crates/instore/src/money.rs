//! Money on the InStore wire (section 1.7): tolerant of type, exact in value.

use ledger::Currency;

use crate::error::InstoreError;
use crate::json::{ObjectBuilder, SAFE_INTEGER_MAX, Value};

/// Largest `precision` admitted.
pub const PRECISION_MAX: u8 = 18;

/// The precision the seed assumes for wallet `total` and `tip`.
pub const WALLET_PRECISION: u8 = 2;

/// A non-negative integer as the wire writes it: a JSON integer or a string of digits.
/// `None` is a digit string too large for 64 bits, which can only be `INVALID_AMOUNT`.
pub type WireUint = Option<u64>;

/// Reads a JSON integer or a digit string `^(0|[1-9][0-9]*)$`. A negative value, a sign, a
/// fraction, an exponent, leading zeros or any other type is a 400.
pub fn read_uint(value: &Value, field: &str) -> Result<WireUint, InstoreError> {
    match value {
        Value::Int(n) if *n >= 0 => Ok(Some(n.unsigned_abs())),
        Value::Int(_) => Err(InstoreError::invalid(field, "must not be negative")),
        Value::String(s) => {
            let canonical = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            if !canonical {
                return Err(InstoreError::invalid(
                    field,
                    "must be an integer or a string of digits without sign or leading zeros",
                ));
            }
            Ok(s.parse::<u64>().ok())
        }
        _ => Err(InstoreError::invalid(
            field,
            "must be an integer or a string of digits",
        )),
    }
}

/// `{amount, precision, currency}` as received. The currency is kept as text: an unknown
/// code is a business outcome (`UNKNOWN_CURRENCY`), not a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAmount {
    pub amount: WireUint,
    pub precision: u8,
    pub currency: String,
}

/// Why an amount cannot be booked: business outcomes, answered in the result body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    UnknownCurrency,
    InvalidAmount,
}

impl WireAmount {
    /// Reads the object at `field`.
    pub fn read(value: &Value, field: &str) -> Result<WireAmount, InstoreError> {
        let Value::Object(_) = value else {
            return Err(InstoreError::invalid(field, "must be an object"));
        };
        let member = |name: &str| {
            value
                .get(name)
                .map(|n| &n.value)
                .ok_or_else(|| InstoreError::missing(&format!("{field}.{name}")))
        };
        let amount = read_uint(member("amount")?, &format!("{field}.amount"))?;
        let precision_field = format!("{field}.precision");
        let precision = read_uint(member("precision")?, &precision_field)?
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| *p <= PRECISION_MAX)
            .ok_or_else(|| InstoreError::invalid(&precision_field, "must be within 0..=18"))?;
        let currency = member("currency")?
            .as_str()
            .ok_or_else(|| InstoreError::invalid(&format!("{field}.currency"), "must be a string"))?
            .to_owned();
        Ok(WireAmount {
            amount,
            precision,
            currency,
        })
    }

    /// The listed currency and the amount in its minor units.
    pub fn resolve(&self) -> Result<(Currency, i64), MoneyError> {
        let currency = listed_currency(&self.currency)?;
        let minor = to_minor(self.amount, self.precision, currency)?;
        Ok((currency, minor))
    }

    /// The POA echo: every member a string, the digits as received.
    pub fn to_poa_value(&self) -> Value {
        ObjectBuilder::new()
            .field(
                "amount",
                self.amount.map_or_else(String::new, |a| a.to_string()),
            )
            .field("precision", self.precision.to_string())
            .field("currency", self.currency.as_str())
            .build()
    }
}

/// A listed ISO 4217 currency, else `UNKNOWN_CURRENCY`.
pub fn listed_currency(code: &str) -> Result<Currency, MoneyError> {
    Currency::parse(code).map_err(|_| MoneyError::UnknownCurrency)
}

/// Converts `amount` at `precision` to minor units of `currency` (exponent e): multiplied
/// by 10^(e - precision) when precision <= e, else divided by 10^(precision - e) when that
/// is exact. Overflow, an inexact division or a result above 2^53 - 1 is `INVALID_AMOUNT`.
pub fn to_minor(amount: WireUint, precision: u8, currency: Currency) -> Result<i64, MoneyError> {
    let amount = amount.ok_or(MoneyError::InvalidAmount)?;
    let e = currency.exponent();
    let minor = if precision <= e {
        10u64
            .checked_pow(u32::from(e - precision))
            .and_then(|f| amount.checked_mul(f))
    } else {
        let f = 10u64
            .checked_pow(u32::from(precision - e))
            .ok_or(MoneyError::InvalidAmount)?;
        (amount % f == 0).then_some(amount / f)
    }
    .ok_or(MoneyError::InvalidAmount)?;
    i64::try_from(minor)
        .ok()
        .filter(|m| *m <= SAFE_INTEGER_MAX)
        .ok_or(MoneyError::InvalidAmount)
}

/// As [`to_minor`], and zero is `INVALID_AMOUNT` (Load, Redeem, Credit, `pay_wallet`).
pub fn to_minor_positive(
    amount: WireUint,
    precision: u8,
    currency: Currency,
) -> Result<i64, MoneyError> {
    to_minor(amount, precision, currency).and_then(|m| {
        if m == 0 {
            Err(MoneyError::InvalidAmount)
        } else {
            Ok(m)
        }
    })
}

/// An amount of the ledger: minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub minor: i64,
    pub currency: Currency,
}

impl Amount {
    pub fn new(minor: i64, currency: Currency) -> Amount {
        Amount { minor, currency }
    }

    /// The callback shape: `{"amount":<minor>,"precision":<exponent>,"currency":"<code>"}`.
    pub fn to_value(self) -> Value {
        ObjectBuilder::new()
            .field("amount", self.minor)
            .field("precision", self.currency.exponent())
            .field("currency", self.currency.code())
            .build()
    }

    /// The POA shape: the same members as strings.
    pub fn to_poa_value(self) -> Value {
        ObjectBuilder::new()
            .field("amount", self.minor.to_string())
            .field("precision", self.currency.exponent().to_string())
            .field("currency", self.currency.code())
            .build()
    }

    /// The amount as a string of units at `precision` (the wallet writes precision 2), when
    /// exact.
    pub fn at_precision(self, precision: u8) -> Option<String> {
        let e = self.currency.exponent();
        let v = if precision >= e {
            self.minor
                .checked_mul(10i64.checked_pow(u32::from(precision - e))?)?
        } else {
            let f = 10i64.checked_pow(u32::from(e - precision))?;
            if self.minor % f != 0 {
                return None;
            }
            self.minor / f
        };
        Some(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }

    /// The table of section 1.7, row by row.
    #[test]
    fn conversion_table() {
        let rows: [(u64, u8, &str, Result<i64, MoneyError>); 7] = [
            (1220, 2, "USD", Ok(1220)),
            (122_000, 4, "USD", Ok(1220)),
            (122, 1, "USD", Ok(1220)),
            (1200, 2, "JPY", Ok(12)),
            (1220, 2, "JPY", Err(MoneyError::InvalidAmount)),
            (1220, 2, "BHD", Ok(12_200)),
            (16_960, WALLET_PRECISION, "USD", Ok(16_960)),
        ];
        for (amount, precision, c, expected) in rows {
            assert_eq!(
                to_minor(Some(amount), precision, cur(c)),
                expected,
                "{amount} {precision} {c}"
            );
        }
    }

    #[test]
    fn limits_are_exact() {
        let usd = cur("USD");
        assert_eq!(to_minor(Some(0), 2, usd), Ok(0));
        assert_eq!(
            to_minor_positive(Some(0), 2, usd),
            Err(MoneyError::InvalidAmount)
        );
        assert_eq!(to_minor(None, 2, usd), Err(MoneyError::InvalidAmount));
        assert_eq!(
            to_minor(Some(9_007_199_254_740_991), 2, usd),
            Ok(9_007_199_254_740_991)
        );
        assert_eq!(
            to_minor(Some(9_007_199_254_740_992), 2, usd),
            Err(MoneyError::InvalidAmount)
        );
        assert_eq!(
            to_minor(Some(u64::MAX), 0, usd),
            Err(MoneyError::InvalidAmount)
        );
        assert_eq!(to_minor(Some(1), 18, usd), Err(MoneyError::InvalidAmount));
        assert_eq!(to_minor(Some(10u64.pow(16)), 18, usd), Ok(1));
        assert_eq!(to_minor(Some(5), 0, usd), Ok(500));
    }

    fn read(text: &str) -> Result<WireAmount, InstoreError> {
        WireAmount::read(&parse(text.as_bytes()).unwrap().value, "amount")
    }

    #[test]
    fn reading_is_tolerant_of_type() {
        let a = read(r#"{"amount":1220,"precision":2,"currency":"USD"}"#).unwrap();
        let b = read(r#"{"amount":"1220","precision":"2","currency":"USD"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.resolve(), Ok((cur("USD"), 1220)));
        let big = read(r#"{"amount":"99999999999999999999999","precision":"2","currency":"USD"}"#)
            .unwrap();
        assert_eq!(big.resolve(), Err(MoneyError::InvalidAmount));
        let unknown = read(r#"{"amount":1,"precision":2,"currency":"XYZ"}"#).unwrap();
        assert_eq!(unknown.resolve(), Err(MoneyError::UnknownCurrency));
        let lower = read(r#"{"amount":1,"precision":2,"currency":"usd"}"#).unwrap();
        assert_eq!(lower.resolve(), Err(MoneyError::UnknownCurrency));
        for bad in [
            r#"{"amount":-1,"precision":2,"currency":"USD"}"#,
            r#"{"amount":"-1","precision":2,"currency":"USD"}"#,
            r#"{"amount":"12.20","precision":2,"currency":"USD"}"#,
            r#"{"amount":"1e3","precision":2,"currency":"USD"}"#,
            r#"{"amount":"012","precision":2,"currency":"USD"}"#,
            r#"{"amount":"","precision":2,"currency":"USD"}"#,
            r#"{"amount":" 1","precision":2,"currency":"USD"}"#,
            r#"{"amount":true,"precision":2,"currency":"USD"}"#,
            r#"{"amount":1,"precision":19,"currency":"USD"}"#,
            r#"{"amount":1,"precision":"-1","currency":"USD"}"#,
            r#"{"amount":1,"precision":2,"currency":840}"#,
            r#"{"amount":1,"precision":2}"#,
            r#"{"precision":2,"currency":"USD"}"#,
            r#""1220""#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_shapes() {
        let a = Amount::new(3780, cur("USD"));
        assert_eq!(
            crate::json::js(&a.to_value()),
            r#"{"amount":3780,"precision":2,"currency":"USD"}"#
        );
        assert_eq!(
            crate::json::js(&Amount::new(21_220, cur("USD")).to_poa_value()),
            r#"{"amount":"21220","precision":"2","currency":"USD"}"#
        );
        assert_eq!(
            Amount::new(12, cur("JPY")).at_precision(2).as_deref(),
            Some("1200")
        );
        assert_eq!(
            Amount::new(12_200, cur("BHD")).at_precision(2).as_deref(),
            Some("1220")
        );
        assert_eq!(Amount::new(12_205, cur("BHD")).at_precision(2), None);
    }
}
