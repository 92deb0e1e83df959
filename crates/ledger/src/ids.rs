//! Identifiers that can only hold valid values.

use std::collections::BTreeSet;
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("merchant category code must be four digits")]
    BadMcc,
}

/// A merchant category code: exactly four ASCII digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mcc([u8; 4]);

impl Mcc {
    pub fn parse(s: &str) -> Result<Mcc, IdError> {
        let b = s.as_bytes();
        if b.len() == 4 && b.iter().all(u8::is_ascii_digit) {
            Ok(Mcc([b[0], b[1], b[2], b[3]]))
        } else {
            Err(IdError::BadMcc)
        }
    }

    /// Reads an MCC as a network message may carry it: surrounding spaces are dropped and
    /// the digits are read as a number of at most four digits (`" 5045"`, `"05045"` and
    /// `"742"` are 5045, 5045 and 0742). Anything else is refused, so that a category a
    /// block names cannot pass it in another spelling.
    pub fn normalize(s: &str) -> Result<Mcc, IdError> {
        let digits = s.trim_matches(|c: char| c.is_ascii_whitespace());
        if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::BadMcc);
        }
        let value: u32 = digits.parse().map_err(|_| IdError::BadMcc)?;
        if value > 9999 {
            return Err(IdError::BadMcc);
        }
        Mcc::parse(&format!("{value:04}"))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0000")
    }
}

impl fmt::Display for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of blocked merchant category codes, stored as a comma-separated list.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct MccSet(BTreeSet<Mcc>);

impl MccSet {
    /// Parses the stored form (`"5045,7995"`, empty for none).
    pub fn from_stored(s: &str) -> Result<MccSet, IdError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Mcc::parse)
            .collect::<Result<_, _>>()
            .map(MccSet)
    }

    pub fn from_list<S: AsRef<str>>(items: &[S]) -> Result<MccSet, IdError> {
        items
            .iter()
            .map(|s| Mcc::parse(s.as_ref()))
            .collect::<Result<_, _>>()
            .map(MccSet)
    }

    pub fn to_stored(&self) -> String {
        self.0.iter().map(Mcc::as_str).collect::<Vec<_>>().join(",")
    }

    pub fn to_list(&self) -> Vec<String> {
        self.0.iter().map(|m| m.as_str().to_owned()).collect()
    }

    pub fn contains(&self, mcc: &Mcc) -> bool {
        self.0.contains(mcc)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcc_is_four_digits() {
        assert_eq!(Mcc::parse("5045").unwrap().as_str(), "5045");
        for bad in ["504", "50455", "50a5", "", " 504", "５０４５"] {
            assert_eq!(Mcc::parse(bad), Err(IdError::BadMcc), "{bad:?}");
        }
    }

    #[test]
    fn mcc_normalizes_spellings_of_one_category() {
        for same in ["5045", " 5045", "5045 ", "05045", "0005045", "\t5045\n"] {
            assert_eq!(Mcc::normalize(same).unwrap().as_str(), "5045", "{same:?}");
        }
        assert_eq!(Mcc::normalize("742").unwrap().as_str(), "0742");
        assert_eq!(Mcc::normalize("0").unwrap().as_str(), "0000");
        for bad in [
            "",
            " ",
            "50a5",
            "10000",
            "-504",
            "+504",
            "5 045",
            "５０４５",
            "000000000",
        ] {
            assert_eq!(Mcc::normalize(bad), Err(IdError::BadMcc), "{bad:?}");
        }
    }

    #[test]
    fn mcc_set_round_trips_sorted_and_deduplicated() {
        let s = MccSet::from_stored("7995, 5045,,7995").unwrap();
        assert_eq!(s.to_stored(), "5045,7995");
        assert!(s.contains(&Mcc::parse("5045").unwrap()));
        assert!(!s.contains(&Mcc::parse("5411").unwrap()));
        assert!(MccSet::from_stored("").unwrap().is_empty());
        assert!(MccSet::from_stored("12").is_err());
    }
}
