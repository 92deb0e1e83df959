//! Channels: how a card was used, derived from the processor's request fields.

use std::fmt;

/// A way of using the card a control can allow or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Card not present, remote (`point_type` `ECOMMERCE` or `MOTO`).
    Ecommerce,
    /// Cash out of an ATM (`point_type` `ATM` or `type` `WITHDRAWAL`).
    Atm,
    /// Tap (`entry_mode` `CONTACTLESS`).
    Contactless,
    /// Card number keyed in (`entry_mode` `MANUAL`).
    ManualEntry,
    /// Merchant abroad as the network sees it (`origin` `INTERNATIONAL`).
    International,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Ecommerce,
        Channel::Atm,
        Channel::Contactless,
        Channel::ManualEntry,
        Channel::International,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Channel::Ecommerce => "ecommerce",
            Channel::Atm => "atm",
            Channel::Contactless => "contactless",
            Channel::ManualEntry => "manual_entry",
            Channel::International => "international",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of channels (a request may be several at once: a contactless purchase abroad).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Channels(u8);

impl Channels {
    pub const NONE: Channels = Channels(0);

    pub fn from_list(list: &[Channel]) -> Channels {
        Channels(list.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// The channels of a processor request, from its wire strings (any of which may be
    /// absent). Values the processor adds later mean no channel: a control cannot name
    /// what it does not know, and refusing every request with a new `entry_mode` would
    /// stop the card.
    pub fn from_request(
        transaction_type: Option<&str>,
        point_type: Option<&str>,
        entry_mode: Option<&str>,
        origin: Option<&str>,
    ) -> Channels {
        let is =
            |v: Option<&str>, want: &str| v.is_some_and(|v| v.trim().eq_ignore_ascii_case(want));
        let mut set = Channels::NONE;
        if is(point_type, "ECOMMERCE") || is(point_type, "MOTO") {
            set.insert(Channel::Ecommerce);
        }
        if is(point_type, "ATM") || is(transaction_type, "WITHDRAWAL") {
            set.insert(Channel::Atm);
        }
        if is(entry_mode, "CONTACTLESS") {
            set.insert(Channel::Contactless);
        }
        if is(entry_mode, "MANUAL") {
            set.insert(Channel::ManualEntry);
        }
        if is(origin, "INTERNATIONAL") {
            set.insert(Channel::International);
        }
        set
    }

    pub fn insert(&mut self, c: Channel) {
        self.0 |= c.bit();
    }

    pub fn contains(&self, c: Channel) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The members in the fixed order of [`Channel::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = Channel> + '_ {
        Channel::ALL.into_iter().filter(|c| self.contains(*c))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|c| c.name().to_owned()).collect()
    }
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|c| c.name()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Channel::*;

    #[test]
    fn derived_from_the_request_fields() {
        type Row = (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            &'static [Channel],
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (Some("PURCHASE"), Some("POS"), Some("CHIP"), Some("DOMESTIC"), &[]),
            (Some("PURCHASE"), Some("ECOMMERCE"), Some("CREDENTIAL_ON_FILE"), Some("DOMESTIC"), &[Ecommerce]),
            (Some("PURCHASE"), Some("MOTO"), Some("MANUAL"), None, &[Ecommerce, ManualEntry]),
            (Some("WITHDRAWAL"), Some("ATM"), Some("CHIP"), Some("INTERNATIONAL"), &[Atm, International]),
            (Some("WITHDRAWAL"), None, None, None, &[Atm]),
            (Some("BALANCE_INQUIRY"), Some("ATM"), None, None, &[Atm]),
            (Some("PURCHASE"), Some("POS"), Some("CONTACTLESS"), Some("INTERNATIONAL"), &[Contactless, International]),
            (Some("EXTRACASH"), Some("POS"), Some("MAG_STRIPE"), Some("DOMESTIC"), &[]),
            (Some("purchase"), Some("ecommerce"), Some(" contactless "), Some("international"), &[Ecommerce, Contactless, International]),
            (Some("PURCHASE"), Some("KIOSK"), Some("BIOMETRIC"), Some("REGIONAL"), &[]),
            (None, None, None, None, &[]),
        ];
        for (ty, point, entry, origin, want) in rows {
            let got = Channels::from_request(*ty, *point, *entry, *origin);
            assert_eq!(
                got,
                Channels::from_list(want),
                "{ty:?} {point:?} {entry:?} {origin:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.name()), Some(c));
        }
        assert_eq!(Channel::parse("ECOMMERCE"), None);
        assert_eq!(Channel::parse("online"), None);
        let s = Channels::from_list(&[International, Ecommerce]);
        assert_eq!(s.to_strings(), ["ecommerce", "international"]);
    }
}
