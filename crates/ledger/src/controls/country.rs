//! Merchant countries: ISO 3166-1 alpha-2 and alpha-3 read as one country.

use std::fmt;
use std::sync::LazyLock;

use super::iso3166::COUNTRIES;

/// One ISO 3166-1 country. `"AR"`, `"ar"`, `"ARG"` and `" arg "` are the same value, so a
/// control written with one spelling matches a request carrying the other.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(u16);

/// Alpha-3 codes sorted, each with its row in [`COUNTRIES`]; built once so a request's
/// alpha-3 (the processor's usual spelling) is a binary search, not a scan.
static BY_ALPHA3: LazyLock<Vec<([u8; 3], u16)>> = LazyLock::new(|| {
    let mut v: Vec<([u8; 3], u16)> = COUNTRIES
        .iter()
        .enumerate()
        .map(|(i, (_, a3, _))| {
            let b = a3.as_bytes();
            ([b[0], b[1], b[2]], i as u16)
        })
        .collect();
    v.sort_unstable();
    v
});

impl Country {
    /// Reads an alpha-2 or alpha-3 code, ignoring case and surrounding spaces. Numeric
    /// codes and names are refused: the processor sends letters, and a control must not
    /// silently match nothing.
    pub fn parse(s: &str) -> Option<Country> {
        let b = s.trim_matches(|c: char| c.is_ascii_whitespace()).as_bytes();
        if !(2..=3).contains(&b.len()) || !b.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        // Upper-cased on the stack: this runs for every request a country control reads.
        let mut up = [0u8; 3];
        for (u, c) in up.iter_mut().zip(b) {
            *u = c.to_ascii_uppercase();
        }
        if b.len() == 2 {
            COUNTRIES
                .binary_search_by(|(a2, _, _)| a2.as_bytes().cmp(&up[..2]))
                .ok()
                .map(|i| Country(i as u16))
        } else {
            BY_ALPHA3
                .binary_search_by(|(k, _)| k.cmp(&up))
                .ok()
                .map(|i| Country(BY_ALPHA3[i].1))
        }
    }

    pub fn alpha2(&self) -> &'static str {
        COUNTRIES[usize::from(self.0)].0
    }

    pub fn alpha3(&self) -> &'static str {
        COUNTRIES[usize::from(self.0)].1
    }

    pub fn name(&self) -> &'static str {
        COUNTRIES[usize::from(self.0)].2
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_complete() {
        assert_eq!(COUNTRIES.len(), 249);
        for w in COUNTRIES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for w in BY_ALPHA3.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
        for (i, (a2, a3, _)) in COUNTRIES.iter().enumerate() {
            assert_eq!(Country::parse(a2), Some(Country(i as u16)));
            assert_eq!(Country::parse(a3), Some(Country(i as u16)));
        }
    }

    #[test]
    fn both_alphabets_are_one_country() {
        let ar = Country::parse("AR").unwrap();
        for same in ["ARG", "arg", " ar", "Ar\t", "aRg "] {
            assert_eq!(Country::parse(same), Some(ar), "{same:?}");
        }
        assert_eq!(ar.alpha3(), "ARG");
        assert_eq!(ar.name(), "Argentina");
        assert_eq!(Country::parse("GBR").unwrap().alpha2(), "GB");
        assert_eq!(Country::parse("us"), Country::parse("USA"));
        assert_ne!(Country::parse("AR"), Country::parse("AT"));
    }

    #[test]
    fn refuses_what_is_not_a_code() {
        for bad in [
            "",
            "A",
            "XX",
            "XXX",
            "ARGE",
            "032",
            "A1",
            "UK",
            "Argentina",
            "ÅR",
        ] {
            assert_eq!(Country::parse(bad), None, "{bad:?}");
        }
    }
}
