//! Merchant categories as a control names them: single codes, inclusive ranges, and the
//! named groups that ship with the product.

use std::fmt;

use crate::Mcc;

/// A named group of merchant categories. The members are fixed by the product so that the
/// same word means the same merchants on every account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CategoryGroup {
    AtmCash,
    Gambling,
    Airlines,
    DigitalGoods,
    QuasiCash,
}

impl CategoryGroup {
    pub const ALL: [CategoryGroup; 5] = [
        CategoryGroup::AtmCash,
        CategoryGroup::Gambling,
        CategoryGroup::Airlines,
        CategoryGroup::DigitalGoods,
        CategoryGroup::QuasiCash,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            CategoryGroup::AtmCash => "atm_cash",
            CategoryGroup::Gambling => "gambling",
            CategoryGroup::Airlines => "airlines",
            CategoryGroup::DigitalGoods => "digital_goods",
            CategoryGroup::QuasiCash => "quasi_cash",
        }
    }

    pub fn parse(s: &str) -> Option<CategoryGroup> {
        Self::ALL.into_iter().find(|g| g.name() == s)
    }

    /// The inclusive MCC ranges of the group.
    pub fn ranges(&self) -> &'static [(u16, u16)] {
        match self {
            // Manual and automated cash disbursements.
            CategoryGroup::AtmCash => &[(6010, 6011)],
            // Betting, government lotteries and government-licensed casinos.
            CategoryGroup::Gambling => &[(7800, 7802), (7995, 7995), (9406, 9406)],
            // The airline-specific codes and the generic "airlines, air carriers".
            CategoryGroup::Airlines => &[(3000, 3350), (4511, 4511)],
            // Digital books/media, games, applications, large digital goods merchants.
            CategoryGroup::DigitalGoods => &[(5815, 5818)],
            // Wire transfers/money orders, quasi cash at financial institutions and at
            // merchants (e.g. stored value top-ups).
            CategoryGroup::QuasiCash => &[(4829, 4829), (6051, 6051), (6540, 6540)],
        }
    }

    fn contains(&self, mcc: u16) -> bool {
        self.ranges().iter().any(|&(lo, hi)| lo <= mcc && mcc <= hi)
    }
}

/// One entry of `allowed_categories` / `blocked_categories`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CategoryItem {
    Code(u16),
    /// Inclusive, `lo < hi`.
    Range(u16, u16),
    Group(CategoryGroup),
}

/// Why a category entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CategoryError {
    UnknownGroup(String),
    BadCode(String),
    BadRange(String),
}

impl fmt::Display for CategoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CategoryError::UnknownGroup(s) => write!(
                f,
                "unknown category group {s:?} (known: {})",
                CategoryGroup::ALL.map(|g| g.name()).join(", ")
            ),
            CategoryError::BadCode(s) => {
                write!(f, "{s:?} is not a merchant category code (four digits)")
            }
            CategoryError::BadRange(s) => write!(
                f,
                "{s:?} is not a category range (two four-digit codes, low-high, low below high)"
            ),
        }
    }
}

fn code(s: &str) -> Option<u16> {
    Mcc::parse(s).ok().map(|m| mcc_value(&m))
}

/// The numeric value of a parsed MCC (always four ASCII digits).
pub(crate) fn mcc_value(mcc: &Mcc) -> u16 {
    mcc.as_str()
        .bytes()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'))
}

impl CategoryItem {
    /// Reads `"5411"`, `"5811-5814"` or a group name. Codes are exactly four digits here
    /// (unlike a network message, an operator's input is not normalised: a typo must fail).
    pub fn parse(s: &str) -> Result<CategoryItem, CategoryError> {
        if s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) {
            return CategoryGroup::parse(s)
                .map(CategoryItem::Group)
                .ok_or_else(|| CategoryError::UnknownGroup(s.to_owned()));
        }
        if let Some((lo, hi)) = s.split_once('-') {
            return match (code(lo), code(hi)) {
                (Some(lo), Some(hi)) if lo < hi => Ok(CategoryItem::Range(lo, hi)),
                _ => Err(CategoryError::BadRange(s.to_owned())),
            };
        }
        code(s)
            .map(CategoryItem::Code)
            .ok_or_else(|| CategoryError::BadCode(s.to_owned()))
    }

    pub fn contains(&self, mcc: u16) -> bool {
        match *self {
            CategoryItem::Code(c) => c == mcc,
            CategoryItem::Range(lo, hi) => lo <= mcc && mcc <= hi,
            CategoryItem::Group(g) => g.contains(mcc),
        }
    }
}

impl fmt::Display for CategoryItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CategoryItem::Code(c) => write!(f, "{c:04}"),
            CategoryItem::Range(lo, hi) => write!(f, "{lo:04}-{hi:04}"),
            CategoryItem::Group(g) => f.write_str(g.name()),
        }
    }
}

/// A canonical list of category entries: sorted (codes, then ranges, then groups) and
/// without repeats, so two spellings of one list store and compare the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Categories(Vec<CategoryItem>);

impl Categories {
    pub fn new(mut items: Vec<CategoryItem>) -> Categories {
        items.sort_unstable();
        items.dedup();
        Categories(items)
    }

    /// Builds the list from blocked MCCs stored the legacy way.
    pub fn from_mcc_set(set: &crate::MccSet) -> Categories {
        Categories::new(
            set.to_list()
                .iter()
                .filter_map(|s| code(s))
                .map(CategoryItem::Code)
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn items(&self) -> &[CategoryItem] {
        &self.0
    }

    /// The first entry that covers `mcc`, for the explanation.
    pub fn matching(&self, mcc: u16) -> Option<CategoryItem> {
        self.0.iter().copied().find(|i| i.contains(mcc))
    }

    pub fn contains(&self, mcc: u16) -> bool {
        self.matching(mcc).is_some()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for Categories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(s: &str) -> CategoryItem {
        CategoryItem::parse(s).unwrap()
    }

    #[test]
    fn groups_hold_what_the_product_promises() {
        let table: &[(&str, &[u16], &[u16])] = &[
            ("atm_cash", &[6010, 6011], &[6009, 6012]),
            (
                "gambling",
                &[7995, 9406, 7800, 7801, 7802],
                &[7799, 7803, 7994, 9405],
            ),
            (
                "airlines",
                &[3000, 3175, 3350, 4511],
                &[2999, 3351, 4510, 4512],
            ),
            ("digital_goods", &[5815, 5816, 5817, 5818], &[5814, 5819]),
            ("quasi_cash", &[4829, 6051, 6540], &[4828, 6050, 6052, 6539]),
        ];
        for (name, inside, outside) in table {
            let g = item(name);
            for m in *inside {
                assert!(g.contains(*m), "{name} should hold {m}");
            }
            for m in *outside {
                assert!(!g.contains(*m), "{name} should not hold {m}");
            }
            assert_eq!(g.to_string(), *name);
        }
    }

    #[test]
    fn codes_and_ranges() {
        assert_eq!(item("5411"), CategoryItem::Code(5411));
        assert_eq!(item("0742").to_string(), "0742");
        let r = item("5811-5814");
        assert_eq!(r, CategoryItem::Range(5811, 5814));
        assert!(!r.contains(5810));
        assert!(r.contains(5811));
        assert!(r.contains(5814));
        assert!(!r.contains(5815));
        assert_eq!(r.to_string(), "5811-5814");
    }

    #[test]
    fn refuses_bad_entries() {
        for (bad, want) in [
            ("gamblin", CategoryError::UnknownGroup("gamblin".into())),
            ("Gambling", CategoryError::UnknownGroup("Gambling".into())),
            ("541", CategoryError::BadCode("541".into())),
            ("54111", CategoryError::BadCode("54111".into())),
            (" 5411", CategoryError::BadCode(" 5411".into())),
            ("", CategoryError::BadCode("".into())),
            ("5814-5811", CategoryError::BadRange("5814-5811".into())),
            ("5811-5811", CategoryError::BadRange("5811-5811".into())),
            ("5811-", CategoryError::BadRange("5811-".into())),
            ("5811-58a4", CategoryError::BadRange("5811-58a4".into())),
            (
                "5811-5812-5813",
                CategoryError::BadRange("5811-5812-5813".into()),
            ),
        ] {
            assert_eq!(CategoryItem::parse(bad), Err(want), "{bad:?}");
        }
    }

    #[test]
    fn lists_are_canonical() {
        let a = Categories::new(vec![
            item("gambling"),
            item("5811-5814"),
            item("5411"),
            item("5411"),
        ]);
        let b = Categories::new(vec![item("5411"), item("gambling"), item("5811-5814")]);
        assert_eq!(a, b);
        assert_eq!(a.to_strings(), ["5411", "5811-5814", "gambling"]);
        assert_eq!(a.matching(7995), Some(item("gambling")));
        assert_eq!(a.matching(5812), Some(item("5811-5814")));
        assert_eq!(a.matching(5412), None);
        let legacy = Categories::from_mcc_set(&crate::MccSet::from_stored("7995,5045").unwrap());
        assert_eq!(legacy.to_strings(), ["5045", "7995"]);
    }
}
