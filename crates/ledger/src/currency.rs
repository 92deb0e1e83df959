//! ISO 4217 currencies and their minor-unit exponents.

use std::fmt;

/// Exponent used for well-formed codes we do not list. Such amounts only ever reach
/// suspense accounts (no cardholder account can be opened in them), and four places
/// keep every realistic amount exact while an operator sorts them out.
pub const UNLISTED_EXPONENT: u8 = 4;

/// Active ISO 4217 codes with their minor-unit exponent.
const TABLE: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// A currency code: three upper-case ASCII letters. `listed` tells whether it is an
/// ISO 4217 code we know; only listed currencies can hold cardholder accounts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
    listed: bool,
}

/// Why a text is not a currency we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("currency must be three upper-case letters")]
    Malformed,
    #[error("currency {0} is not an ISO 4217 currency this ledger knows")]
    Unlisted(String),
}

impl Currency {
    /// A listed ISO 4217 currency, or an error saying why not.
    pub fn parse(code: &str) -> Result<Currency, CurrencyError> {
        let c = Self::parse_any(code)?;
        if c.listed {
            Ok(c)
        } else {
            Err(CurrencyError::Unlisted(code.to_owned()))
        }
    }

    /// Any well-formed code; unlisted ones get [`UNLISTED_EXPONENT`]. Used to keep
    /// adjustments in unknown currencies on suspense rather than lose them.
    pub fn parse_any(code: &str) -> Result<Currency, CurrencyError> {
        let b = code.as_bytes();
        if b.len() != 3 || !b.iter().all(u8::is_ascii_uppercase) {
            return Err(CurrencyError::Malformed);
        }
        let code = [b[0], b[1], b[2]];
        match TABLE.binary_search_by(|(c, _)| c.as_bytes().cmp(&code[..])) {
            Ok(i) => Ok(Currency {
                code,
                exponent: TABLE[i].1,
                listed: true,
            }),
            Err(_) => Ok(Currency {
                code,
                exponent: UNLISTED_EXPONENT,
                listed: false,
            }),
        }
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The constructor admits only ASCII upper-case letters.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Number of decimal places of the minor unit (2 for ARS, 0 for CLP, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Whether this is an ISO 4217 currency we list.
    pub fn is_listed(&self) -> bool {
        self.listed
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_so_binary_search_finds_every_code() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for (code, exp) in TABLE {
            assert_eq!(Currency::parse(code).unwrap().exponent(), *exp);
        }
    }

    #[test]
    fn latin_american_exponents() {
        let cases = [
            ("ARS", 2),
            ("BRL", 2),
            ("CLP", 0),
            ("COP", 2),
            ("MXN", 2),
            ("PEN", 2),
            ("UYU", 2),
            ("USD", 2),
            ("EUR", 2),
            ("KWD", 3),
        ];
        for (code, exp) in cases {
            assert_eq!(Currency::parse(code).unwrap().exponent(), exp, "{code}");
        }
    }

    #[test]
    fn rejects_malformed_and_unlisted() {
        assert_eq!(Currency::parse("ars"), Err(CurrencyError::Malformed));
        assert_eq!(Currency::parse("12"), Err(CurrencyError::Malformed));
        assert_eq!(Currency::parse("ARSS"), Err(CurrencyError::Malformed));
        assert_eq!(Currency::parse(""), Err(CurrencyError::Malformed));
        assert_eq!(Currency::parse("ÁRS"), Err(CurrencyError::Malformed));
        assert_eq!(
            Currency::parse("ZZZ"),
            Err(CurrencyError::Unlisted("ZZZ".into()))
        );
        let z = Currency::parse_any("ZZZ").unwrap();
        assert!(!z.is_listed());
        assert_eq!(z.exponent(), UNLISTED_EXPONENT);
    }
}
