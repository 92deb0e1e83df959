//! Amounts exactly as the processor sent them.
//!
//! The processor sends amounts either as JSON numbers (`990.0`) or as JSON strings (`"1060.74"`).
//! Going through `f64` would silently change money (`0.1 + 0.2`), so the literal text is captured
//! (via [`serde_json::value::RawValue`]) and converted to a [`Decimal`] by a small exact parser.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Largest scale a [`Decimal`] can hold.
const MAX_SCALE: i64 = 28;

/// Largest mantissa a [`Decimal`] can hold (96 bits).
const MAX_MANTISSA: u128 = (1u128 << 96) - 1;

/// An amount as the processor sent it: a JSON number (e.g. `990.0`) or a JSON string
/// (`"1060.74"`).
///
/// Parsed exactly, never through `f64`. Keeps the original text so that what we store and echo is
/// what the processor sent (`990.0` stays `990.0`, not `990`).
///
/// Deserialize with a `serde_json` deserializer reading text (`from_slice`, `from_str`,
/// `from_reader`): the exact literal of a JSON number is only available there. Other
/// deserializers fail. `serde_json::from_value` works but is not exact: a
/// [`serde_json::Value`] has already rounded the number through `f64`, so never parse a request
/// into a `Value` first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WireAmount {
    text: String,
    // Derived from `text` once; `None` when the text is well formed but not representable.
    value: Option<Decimal>,
}

/// Why a text is not an acceptable amount.
///
/// Messages never repeat the offending text: it comes from an untrusted body and ends up in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The text (or the JSON string) is empty.
    #[error("amount is empty")]
    Empty,
    /// The string is not a plain decimal (optional `-`, digits, optional `.` and digits).
    #[error("amount string is not a plain decimal (optional '-', digits, optional '.' and digits)")]
    NotPlainDecimal,
    /// The integer part of a string amount has a leading zero (`"007.00"`; `"0.07"` is fine).
    #[error("amount string has a leading zero in its integer part")]
    LeadingZero,
    /// The JSON number literal is not a valid JSON number.
    #[error("amount is not a valid JSON number")]
    NotJsonNumber,
    /// The JSON value is neither a number nor a string (boolean, null, object, array).
    #[error("amount must be a JSON number or a JSON string")]
    WrongType,
}

impl WireAmount {
    /// Original text without quotes, e.g. `"990.0"` or `"1060.74"`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The exact value, or `None` when the text is well formed but outside what [`Decimal`] can
    /// represent exactly (e.g. `1e400`, a 40-digit integer, more than 28 significant decimals).
    ///
    /// Callers must treat `None` as an invalid amount; it is never rounded to something close.
    pub fn value(&self) -> Option<Decimal> {
        self.value
    }

    /// Parses the content of a JSON string amount: an optional leading `-`, one or more digits,
    /// and optionally `.` followed by one or more digits. Nothing else (no `+`, no spaces, no
    /// exponent, no `,`, no `NaN`/`Infinity`, no hex, no `.5` or `5.`), and no leading zero
    /// in the integer part (`"007.00"`), as in a JSON number: zero-padding is not how the
    /// processor writes money, and what we refuse in a number we refuse in a string.
    pub fn parse(text: &str) -> Result<WireAmount, AmountError> {
        Self::parse_as(
            text,
            false,
            AmountError::NotPlainDecimal,
            AmountError::LeadingZero,
        )
    }

    /// Parses the literal text of a JSON number (RFC 8259 grammar, exponent allowed).
    ///
    /// Used for amounts sent as JSON numbers; exposed so that callers holding a raw literal can
    /// get the same treatment.
    pub fn parse_json_number(text: &str) -> Result<WireAmount, AmountError> {
        // JSON forbids leading zeros ("01"); serde_json already enforces it, this keeps the
        // public function honest when called directly.
        Self::parse_as(
            text,
            true,
            AmountError::NotJsonNumber,
            AmountError::NotJsonNumber,
        )
    }

    /// The grammar both parsers share: not empty, the digits `split` accepts (with an exponent
    /// when `exponent`), no leading zero in the integer part.
    fn parse_as(
        text: &str,
        exponent: bool,
        bad_grammar: AmountError,
        leading_zero: AmountError,
    ) -> Result<WireAmount, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let parts = split(text, exponent).ok_or(bad_grammar)?;
        if parts.int.len() > 1 && parts.int.starts_with('0') {
            return Err(leading_zero);
        }
        Ok(WireAmount {
            text: text.to_owned(),
            value: parts.to_decimal(),
        })
    }

    /// Builds an amount from a decimal, for building requests (simulator, tests).
    ///
    /// The text is the decimal's canonical rendering, which keeps its scale (`990.0`).
    pub fn from_decimal(value: Decimal) -> WireAmount {
        WireAmount {
            text: value.to_string(),
            value: Some(value),
        }
    }
}

impl From<Decimal> for WireAmount {
    fn from(value: Decimal) -> Self {
        WireAmount::from_decimal(value)
    }
}

impl FromStr for WireAmount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WireAmount::parse(s)
    }
}

impl fmt::Display for WireAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for WireAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A RawValue gives the literal exactly as it appeared in the body, before any float
        // conversion could happen.
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let literal = raw.get();
        match literal.as_bytes().first() {
            Some(b'"') => {
                // Decode the JSON string (escapes included) with serde_json itself rather than
                // stripping quotes by hand.
                let inner: String = serde_json::from_str(literal)
                    .map_err(|_| D::Error::custom(AmountError::NotPlainDecimal))?;
                WireAmount::parse(&inner).map_err(D::Error::custom)
            }
            Some(b'-' | b'0'..=b'9') => {
                WireAmount::parse_json_number(literal).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(AmountError::WrongType)),
        }
    }
}

impl Serialize for WireAmount {
    /// Serialized as a JSON string holding [`WireAmount::text`]: a string cannot be reformatted
    /// by any JSON library on the way, so the receiver sees exactly our text.
    ///
    /// Except a JSON number literal with an exponent (`1e3`): an amount string must be a plain
    /// decimal, so `"1e3"` would not read back. It goes out as the number literal it came as
    /// (with serde_json, which is what every caller uses), and reads back identical.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if split(&self.text, false).is_some() {
            return serializer.serialize_str(&self.text);
        }
        use serde::ser::Error as _;
        RawValue::from_string(self.text.clone())
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// The pieces of a syntactically valid amount.
struct Parts<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    exp_negative: bool,
    exp: &'a str,
}

/// Splits `text` into sign, integer digits, fraction digits and (if allowed) exponent.
/// Returns `None` if the text does not match
/// `-? digit+ ( '.' digit+ )? ( [eE] [+-]? digit+ )?` (exponent part only with `allow_exponent`).
fn split(text: &str, allow_exponent: bool) -> Option<Parts<'_>> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, rest) = take_digits(rest);
    if int.is_empty() {
        return None;
    }
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let (frac, rest) = take_digits(after_dot);
            if frac.is_empty() {
                return None;
            }
            (frac, rest)
        }
        None => ("", rest),
    };
    let (exp_negative, exp, rest) = match rest.strip_prefix(['e', 'E']) {
        Some(after_e) if allow_exponent => {
            let (exp_negative, after_sign) = if let Some(r) = after_e.strip_prefix('-') {
                (true, r)
            } else if let Some(r) = after_e.strip_prefix('+') {
                (false, r)
            } else {
                (false, after_e)
            };
            let (exp, rest) = take_digits(after_sign);
            if exp.is_empty() {
                return None;
            }
            (exp_negative, exp, rest)
        }
        Some(_) => return None,
        None => (false, "", rest),
    };
    if !rest.is_empty() {
        return None;
    }
    Some(Parts {
        negative,
        int,
        frac,
        exp_negative,
        exp,
    })
}

/// Splits off the leading ASCII digits.
fn take_digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

impl Parts<'_> {
    /// Exact conversion: the value is `digits(int ++ frac) * 10^(exp - len(frac))`. Returns `None`
    /// when that value has no exact [`Decimal`] representation. Never panics, whatever the
    /// number of digits.
    fn to_decimal(&self) -> Option<Decimal> {
        // Exponents longer than 18 digits are way beyond Decimal's range for a non-zero value;
        // capping them keeps the arithmetic below from overflowing.
        let exp_digits = self.exp.trim_start_matches('0');
        let exp: i64 = if exp_digits.is_empty() {
            0
        } else if exp_digits.len() > 18 {
            i64::MAX / 2
        } else {
            exp_digits.parse().ok()?
        };
        let exp = if self.exp_negative { -exp } else { exp };

        // Significant digits, without leading zeros (they carry no value).
        let mut digits: String = format!("{}{}", self.int, self.frac);
        let Some(first_non_zero) = digits.bytes().position(|b| b != b'0') else {
            // Zero is always representable; keep the written scale where possible ("0.00" has
            // scale 2).
            let frac_len = i64::try_from(self.frac.len()).unwrap_or(i64::MAX);
            let scale = frac_len.saturating_sub(exp).clamp(0, MAX_SCALE);
            return Some(Decimal::new(0, u32::try_from(scale).ok()?));
        };
        digits.drain(..first_non_zero);

        let frac_len = i64::try_from(self.frac.len()).ok()?;
        let mut scale = frac_len.checked_sub(exp)?;

        // Trailing zeros below the decimal point may be dropped only when the scale would not
        // fit otherwise; when it fits, they are kept because they are what was written.
        while scale > MAX_SCALE && digits.ends_with('0') {
            digits.pop();
            scale -= 1;
        }
        if scale > MAX_SCALE {
            return None;
        }
        // Same for an over-long mantissa ending in zeros (`1000...000e-10`): the zeros move into
        // the scale and come back through the multiplication below if the value fits.
        while digits.len() > 29 && digits.ends_with('0') {
            digits.pop();
            scale -= 1;
        }
        // 30 digits always exceed 96 bits; the check after the multiplication is the precise
        // one, this one keeps u128 parsing from overflowing.
        if digits.len() > 29 {
            return None;
        }
        let mut mantissa: u128 = digits.parse().ok()?;
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            if mantissa > MAX_MANTISSA {
                return None;
            }
            scale += 1;
        }
        if mantissa > MAX_MANTISSA {
            return None;
        }
        let signed = i128::try_from(mantissa).ok()?;
        let signed = if self.negative { -signed } else { signed };
        let scale = u32::try_from(scale).ok()?;
        Decimal::try_from_i128_with_scale(signed, scale).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<Decimal> {
        WireAmount::parse_json_number(text).unwrap().value()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn exponent_forms_are_exact() {
        assert_eq!(value("1E2"), Some(dec("100")));
        assert_eq!(value("1.5e-3"), Some(dec("0.0015")));
        assert_eq!(value("1.5E+3"), Some(dec("1500")));
        assert_eq!(value("-2.50e1"), Some(dec("-25.0")));
        assert_eq!(
            value("1000e-30"),
            Some(dec("0.000000000000000000000000001"))
        );
        assert_eq!(value("0e400"), Some(Decimal::ZERO));
    }

    #[test]
    fn scale_is_kept() {
        assert_eq!(value("990.0").unwrap().scale(), 1);
        assert_eq!(
            WireAmount::parse("0.00").unwrap().value().unwrap().scale(),
            2
        );
    }

    #[test]
    fn limits_of_decimal() {
        // 2^96 - 1 fits, 2^96 does not.
        assert_eq!(value("79228162514264337593543950335"), Some(Decimal::MAX));
        assert_eq!(value("79228162514264337593543950336"), None);
        assert_eq!(value("1e28"), Some(dec("10000000000000000000000000000")));
        assert_eq!(value("1e29"), None);
        assert_eq!(value("1e-28"), Some(dec("0.0000000000000000000000000001")));
        assert_eq!(value("1e-29"), None);
        assert_eq!(value("1e-99999999999999999999999"), None);
        assert_eq!(value("1e99999999999999999999999"), None);
        // 28 decimals fit exactly; 29 significant decimals do not and are not rounded.
        assert_eq!(value("0.1234567890123456789012345678").unwrap().scale(), 28);
        assert_eq!(value("0.12345678901234567890123456789"), None);
        // Trailing zeros beyond scale 28 are insignificant and dropped only when needed.
        assert_eq!(value("1.00000000000000000000000000000000"), Some(dec("1")));
        assert_eq!(
            value("100000000000000000000000000000000e-10"),
            Some(dec("10000000000000000000000"))
        );
        assert_eq!(value("1234567890123456789012345678901234567800"), None);
    }

    #[test]
    fn leading_zeros_are_refused_in_strings_and_numbers() {
        for text in ["007.5", "007", "00", "-01", "00.5"] {
            assert_eq!(
                WireAmount::parse(text),
                Err(AmountError::LeadingZero),
                "{text}"
            );
            assert_eq!(
                WireAmount::parse_json_number(text),
                Err(AmountError::NotJsonNumber),
                "{text}"
            );
        }
        for text in ["0", "-0", "0.07", "-0.00", "10", "100.00"] {
            assert!(WireAmount::parse(text).is_ok(), "{text}");
            assert!(WireAmount::parse_json_number(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn from_decimal_round_trips() {
        let a = WireAmount::from_decimal(dec("-12.30"));
        assert_eq!(a.text(), "-12.30");
        assert_eq!(WireAmount::parse(a.text()).unwrap(), a);
    }
}
