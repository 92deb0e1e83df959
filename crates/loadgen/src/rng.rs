//! A small deterministic PRNG (SplitMix64) and the account samplers (uniform, Zipf).
//!
//! Load generation needs speed and reproducibility from `--seed`, not cryptographic quality.

use anyhow::{Context, bail};
use std::fmt;
use std::str::FromStr;

/// SplitMix64: one `u64` of state, passes BigCrush, a handful of instructions per draw.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent stream for worker `n` of a run seeded with `seed`.
    pub fn stream(seed: u64, n: u64) -> Rng {
        let mut r = Rng::new(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`; `n` must be positive. Multiply-shift, no modulo bias worth noting.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]` (inclusive).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + self.below(span) as i64
    }

    /// `true` with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How requests are spread over the account population.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Skew {
    Uniform,
    /// Zipf with exponent `s`: rank `k` has probability proportional to `1 / k^s`.
    Zipf(f64),
}

impl FromStr for Skew {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Skew> {
        if s == "uniform" {
            return Ok(Skew::Uniform);
        }
        if let Some(exp) = s.strip_prefix("zipf:") {
            let v: f64 = exp
                .parse()
                .with_context(|| format!("zipf exponent '{exp}' is not a number"))?;
            if !(v.is_finite() && v > 0.0) {
                bail!("zipf exponent must be a positive number, not {exp}");
            }
            return Ok(Skew::Zipf(v));
        }
        bail!("skew must be 'uniform' or 'zipf:<exponent>' (e.g. zipf:1.1), not '{s}'")
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::Uniform => f.write_str("uniform"),
            Skew::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// Draws an account index in `[0, n)`. Index 0 is rank 1 (the hottest under Zipf).
#[derive(Debug, Clone)]
pub struct AccountSampler {
    n: u32,
    /// Cumulative probabilities by rank, last entry exactly 1.0; `None` for uniform.
    cdf: Option<Vec<f64>>,
}

impl AccountSampler {
    pub fn new(n: u32, skew: Skew) -> AccountSampler {
        assert!(n > 0, "at least one account");
        let cdf = match skew {
            Skew::Uniform => None,
            Skew::Zipf(s) => {
                let mut acc = 0.0f64;
                let mut cdf: Vec<f64> = (1..=n)
                    .map(|k| {
                        acc += (f64::from(k)).powf(-s);
                        acc
                    })
                    .collect();
                let total = acc;
                for c in &mut cdf {
                    *c /= total;
                }
                if let Some(last) = cdf.last_mut() {
                    *last = 1.0;
                }
                Some(cdf)
            }
        };
        AccountSampler { n, cdf }
    }

    pub fn len(&self) -> u32 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn sample(&self, rng: &mut Rng) -> u32 {
        match &self.cdf {
            None => rng.below(u64::from(self.n)) as u32,
            Some(cdf) => {
                let u = rng.next_f64();
                // First rank whose cumulative probability exceeds u.
                let i = cdf.partition_point(|&c| c <= u);
                i.min(cdf.len() - 1) as u32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(sampler: &AccountSampler, draws: usize) -> Vec<u32> {
        let mut rng = Rng::new(7);
        let mut h = vec![0u32; sampler.len() as usize];
        for _ in 0..draws {
            h[sampler.sample(&mut rng) as usize] += 1;
        }
        h
    }

    #[test]
    fn zipf_is_skewed_towards_low_ranks() {
        let s = AccountSampler::new(10_000, "zipf:1.1".parse().unwrap());
        let h = histogram(&s, 400_000);
        // P(rank 1) / P(rank 1000) = 1000^1.1, about 2000: rank 1 must dominate.
        let r1 = h[0];
        let r1000 = h[999];
        assert!(r1 > 50_000, "rank 1 drawn {r1} times");
        assert!(r1 > 100 * r1000.max(1), "rank 1: {r1}, rank 1000: {r1000}");
        // Monotone in expectation: the first ranks beat later ones.
        assert!(h[0] > h[1] && h[1] > h[9] && h[9] > h[99]);
        // Every draw is in range (the histogram would have panicked otherwise) and the tail is hit.
        assert!(h[5000..].iter().any(|&c| c > 0));
    }

    #[test]
    fn zipf_matches_its_distribution() {
        let s = AccountSampler::new(1000, Skew::Zipf(1.1));
        let h = histogram(&s, 200_000);
        let norm: f64 = (1..=1000).map(|k| f64::from(k).powf(-1.1)).sum();
        let expected_first = 200_000.0 / norm;
        let got = f64::from(h[0]);
        assert!(
            (got - expected_first).abs() / expected_first < 0.03,
            "rank 1: expected about {expected_first:.0}, got {got}"
        );
    }

    #[test]
    fn uniform_is_roughly_flat() {
        let s = AccountSampler::new(100, Skew::Uniform);
        let h = histogram(&s, 200_000);
        // Expected 2000 per account; binomial sd is about 44.
        for (i, &c) in h.iter().enumerate() {
            assert!((1700..=2300).contains(&c), "account {i} drawn {c} times");
        }
    }

    #[test]
    fn skew_parses_and_refuses_nonsense() {
        assert_eq!("uniform".parse::<Skew>().unwrap(), Skew::Uniform);
        assert_eq!("zipf:1.1".parse::<Skew>().unwrap(), Skew::Zipf(1.1));
        assert!("zipf:".parse::<Skew>().is_err());
        assert!("zipf:-1".parse::<Skew>().is_err());
        assert!("zipf:nan".parse::<Skew>().is_err());
        assert!("pareto".parse::<Skew>().is_err());
        assert_eq!(Skew::Zipf(1.1).to_string(), "zipf:1.1");
    }

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::stream(42, 3);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            let v = r.range(5, 9);
            assert!((5..=9).contains(&v));
            assert!(r.below(3) < 3);
        }
        assert_ne!(Rng::stream(1, 0).next_u64(), Rng::stream(1, 1).next_u64());
    }
}
