//! The traffic mix: which kinds of processor calls to send, by weight.

use crate::rng::Rng;
use anyhow::{Context, bail};
use std::fmt;
use std::str::FromStr;

/// One kind of processor call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Debit authorization (`PURCHASE`, `/transactions/authorizations/debit`).
    Purchase,
    /// Authorization on the bare route, direction from the type (`WITHDRAWAL`, ATM).
    Withdrawal,
    /// `BALANCE_INQUIRY`: moves nothing, answers the balance.
    Balance,
    /// Credit adjustment `REFUND` of an earlier approved purchase.
    Refund,
    /// Clearing difference of an earlier approved purchase: a debit adjustment (closing above the
    /// authorized amount) or a credit `REVERSAL_PURCHASE` (closing below it).
    Adjustment,
    /// Approved or rejected advice for an earlier authorization.
    Notification,
    /// An earlier request sent again with the same idempotency key and body.
    Duplicate,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Purchase,
        Kind::Withdrawal,
        Kind::Balance,
        Kind::Refund,
        Kind::Adjustment,
        Kind::Notification,
        Kind::Duplicate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Purchase => "purchase",
            Kind::Withdrawal => "withdrawal",
            Kind::Balance => "balance",
            Kind::Refund => "refund",
            Kind::Adjustment => "adjustment",
            Kind::Notification => "notification",
            Kind::Duplicate => "duplicate",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                anyhow::anyhow!("unknown kind '{s}' (known: {})", names.join(", "))
            })
    }
}

/// Default `--mix`.
pub const DEFAULT_MIX: &str =
    "purchase=70,withdrawal=5,balance=10,refund=5,adjustment=5,notification=2,duplicate=3";

/// Weights per kind; kinds not named weigh zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 7],
    total: u32,
}

impl Mix {
    pub fn weight(&self, k: Kind) -> u32 {
        self.weights[k.index()]
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Draws a kind with probability weight / total.
    pub fn pick(&self, rng: &mut Rng) -> Kind {
        let mut r = rng.below(u64::from(self.total)) as u32;
        for k in Kind::ALL {
            let w = self.weights[k.index()];
            if r < w {
                return k;
            }
            r -= w;
        }
        // Unreachable while total is the sum of the weights.
        Kind::Purchase
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    /// `purchase=70,withdrawal=5,...`: names from [`Kind`], non-negative integer weights, each
    /// kind at most once, total above zero.
    fn from_str(s: &str) -> anyhow::Result<Mix> {
        let mut weights = [0u32; 7];
        let mut seen = [false; 7];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .with_context(|| format!("mix entry '{part}' is not kind=weight"))?;
            let kind: Kind = name.trim().parse()?;
            let w: u32 = w
                .trim()
                .parse()
                .with_context(|| format!("weight of {kind} ('{w}') is not a whole number"))?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                bail!("{kind} appears twice in the mix");
            }
            weights[kind.index()] = w;
        }
        let total = weights
            .iter()
            .try_fold(0u32, |a, &w| a.checked_add(w))
            .context("mix weights are too large")?;
        if total == 0 {
            bail!("the mix must give a positive weight to at least one kind");
        }
        Ok(Mix { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| self.weight(**k) > 0)
            .map(|k| format!("{}={}", k.name(), self.weight(*k)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mix_parses() {
        let m: Mix = DEFAULT_MIX.parse().unwrap();
        assert_eq!(m.total(), 100);
        assert_eq!(m.weight(Kind::Purchase), 70);
        assert_eq!(m.weight(Kind::Duplicate), 3);
        assert_eq!(m.to_string(), DEFAULT_MIX);
    }

    #[test]
    fn missing_kinds_weigh_zero_and_spaces_are_tolerated() {
        let m: Mix = " purchase = 3 , balance=1 ,".parse().unwrap();
        assert_eq!(m.weight(Kind::Purchase), 3);
        assert_eq!(m.weight(Kind::Balance), 1);
        assert_eq!(m.weight(Kind::Refund), 0);
        assert_eq!(m.total(), 4);
        assert_eq!(m.to_string(), "purchase=3,balance=1");
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (bad, says) in [
            ("purchase", "kind=weight"),
            ("purchse=1", "unknown kind"),
            ("purchase=-1", "whole number"),
            ("purchase=1.5", "whole number"),
            ("purchase=1,purchase=2", "twice"),
            ("purchase=0", "positive weight"),
            ("", "positive weight"),
            ("purchase=4294967295,refund=1", "too large"),
        ] {
            let e = bad.parse::<Mix>().unwrap_err().to_string();
            assert!(e.contains(says), "'{bad}': {e}");
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let m: Mix = "purchase=70,refund=30".parse().unwrap();
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 7];
        for _ in 0..100_000 {
            counts[m.pick(&mut rng).index()] += 1;
        }
        assert_eq!(counts[Kind::Balance.index()], 0);
        let p = counts[Kind::Purchase.index()];
        assert!((69_000..71_000).contains(&p), "purchases: {p}");
        assert_eq!(p + counts[Kind::Refund.index()], 100_000);
    }
}
