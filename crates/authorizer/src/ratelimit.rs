//! Request-rate limit of the admin API, per admin token: a token bucket (`admin.rate_per_sec`
//! sustained, `admin.burst` at once). With Redis the bucket is shared by the fleet (a Lua
//! script on Redis' clock); without it, or while Redis is unreachable, each instance keeps
//! its own. Buckets are keyed by a digest of the token, never the token itself.
//!
//! Failed admin authentications have their own budget per client address
//! ([`FailureLimiter`], `admin.auth_failures_per_sec` and `admin.auth_failures_burst`), kept
//! in each instance: a fleet of n instances lets an address guess n times as fast, which
//! changes nothing for a token of at least 16 characters, and keeps Redis off the path of
//! unauthenticated traffic.

use crate::fleet::Fleet;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The per-token limit. Its local buckets are governor's GCRA, which admits exactly what a
/// token bucket of the same rate and burst admits; `C` is a clock tests can move.
pub struct Limiter<C: Clock = DefaultClock> {
    rate_per_sec: u32,
    burst: u32,
    local: RateLimiter<String, HashMapStateStore<String>, C, NoOpMiddleware<C::Instant>>,
}

/// The bucket id of an admin token: 16 hex digits of its SHA-256.
pub fn token_id(token: &str) -> String {
    Sha256::digest(token.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Limiter {
    pub fn new(rate_per_sec: u32, burst: u32) -> Limiter {
        Limiter::with_clock(rate_per_sec, burst, DefaultClock::default())
    }
}

impl<C: Clock> Limiter<C> {
    fn with_clock(rate_per_sec: u32, burst: u32, clock: C) -> Limiter<C> {
        let rate_per_sec = rate_per_sec.max(1);
        let burst = burst.max(1);
        let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(nonzero(rate_per_sec)).allow_burst(nonzero(burst));
        Limiter {
            rate_per_sec,
            burst,
            local: RateLimiter::hashmap_with_clock(quota, clock),
        }
    }

    /// Takes one request from `id`'s bucket: `Err(wait)` when it is empty.
    pub async fn admit(&self, fleet: &Fleet, id: &str) -> Result<(), Duration> {
        if let Some(r) = fleet.take_token(id, self.rate_per_sec, self.burst).await {
            return r.map_err(Duration::from_millis);
        }
        self.admit_local(id)
    }

    fn admit_local(&self, id: &str) -> Result<(), Duration> {
        self.local
            .check_key(&id.to_owned())
            .map_err(|refused| refused.wait_time_from(self.local.clock().now()))
    }
}

/// Addresses tracked at once. Past it, buckets that have refilled are dropped; if every one
/// is still in use (a flood from very many addresses), newcomers share one bucket (that of
/// peers without an address), so memory stays bounded and the flood is still braked.
const ADDRESSES_MAX: usize = 65_536;

/// What [`FailureLimiter::fail`] decided about one failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Within the address's budget: answer as usual (401).
    Counted,
    /// Over it: refuse with 429 and wait this long. `first` is the first refusal since the
    /// address was last within its budget (worth one log line; the rest are not).
    Refused { wait: Duration, first: bool },
}

/// The budget of failed admin authentications per client address: a token bucket per
/// address (`burst` failures at once, then `rate_per_sec`). The address is the TCP peer,
/// never a forwarding header; IPv6 peers are grouped by /64, the smallest block a single
/// host is usually given, so that one host cannot spread its guesses over its addresses.
///
/// Kept by hand rather than on governor's keyed limiter: governor cannot ask whether an
/// address is already tracked without adding it, so at the cap it could not keep tracked
/// addresses on their own buckets while sending only newcomers to the shared one, and it
/// keeps no per-address mark for the first refusal.
pub struct FailureLimiter {
    rate_per_sec: u32,
    burst: u32,
    local: Mutex<Addresses>,
}

#[derive(Default)]
struct Addresses {
    buckets: HashMap<Option<IpAddr>, FailureBucket>,
    /// When full buckets were last dropped: at most once a second, so that a flood does
    /// not make every request scan the whole map.
    pruned_at: Option<Instant>,
}

struct FailureBucket {
    tokens: f64,
    at: Instant,
    refused: bool,
}

/// The key of a client address: IPv4 (an IPv4-mapped IPv6 peer counts as IPv4) as is,
/// IPv6 by its /64. No address (a Unix socket) is one key of its own.
fn address_key(peer: Option<IpAddr>) -> Option<IpAddr> {
    peer.map(|ip| match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Net::new_assert(v6, 64).network()),
        },
        v4 => v4,
    })
}

impl FailureLimiter {
    pub fn new(rate_per_sec: u32, burst: u32) -> FailureLimiter {
        FailureLimiter {
            rate_per_sec: rate_per_sec.max(1),
            burst: burst.max(1),
            local: Mutex::new(Addresses::default()),
        }
    }

    /// Records one failed authentication from `peer`.
    pub fn fail(&self, peer: Option<IpAddr>) -> Failure {
        self.fail_at(peer, Instant::now())
    }

    fn fail_at(&self, peer: Option<IpAddr>, now: Instant) -> Failure {
        let Ok(mut guard) = self.local.lock() else {
            return Failure::Counted;
        };
        let a = &mut *guard;
        let rate = f64::from(self.rate_per_sec);
        let burst = f64::from(self.burst);
        let mut key = address_key(peer);
        if !a.buckets.contains_key(&key) && a.buckets.len() >= ADDRESSES_MAX {
            let due = a
                .pruned_at
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                a.pruned_at = Some(now);
                a.buckets.retain(|_, b| {
                    b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
                });
            }
            if a.buckets.len() >= ADDRESSES_MAX {
                key = None;
            }
        }
        let b = a.buckets.entry(key).or_insert(FailureBucket {
            tokens: burst,
            at: now,
            refused: false,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.refused = false;
            Failure::Counted
        } else {
            let first = !b.refused;
            b.refused = true;
            Failure::Refused {
                wait: Duration::from_secs_f64((1.0 - b.tokens) / rate),
                first,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(10, 3, clock.clone());
        for _ in 0..3 {
            assert!(l.admit_local("k").is_ok());
        }
        let wait = l.admit_local("k").unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // Buckets are per key.
        assert!(l.admit_local("other").is_ok());
        // 100 ms at 10/s refills one token.
        clock.advance(Duration::from_millis(100));
        assert!(l.admit_local("k").is_ok());
        assert!(l.admit_local("k").is_err());
        // Never more than the burst.
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.admit_local("k").is_ok());
        }
        assert!(l.admit_local("k").is_err());
    }

    #[test]
    fn the_wait_is_the_time_to_the_next_token() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(4, 1, clock.clone());
        assert!(l.admit_local("k").is_ok());
        assert_eq!(l.admit_local("k"), Err(Duration::from_millis(250)));
        clock.advance(Duration::from_millis(200));
        assert_eq!(l.admit_local("k"), Err(Duration::from_millis(50)));
        clock.advance(Duration::from_millis(50));
        assert!(l.admit_local("k").is_ok());
        // Settings of zero are taken as one, as before.
        let one = Limiter::with_clock(0, 0, clock.clone());
        assert!(one.admit_local("k").is_ok());
        assert_eq!(one.admit_local("k"), Err(Duration::from_secs(1)));
    }

    #[test]
    fn ids_are_digests() {
        let id = token_id("secret-token-0123456789");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("secret"));
        assert_ne!(id, token_id("secret-token-0123456780"));
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn failures_are_budgeted_per_address() {
        let l = FailureLimiter::new(1, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.fail_at(ip("10.0.0.1"), t0), Failure::Counted);
        }
        match l.fail_at(ip("10.0.0.1"), t0) {
            Failure::Refused { wait, first } => {
                assert!(first);
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            l.fail_at(ip("10.0.0.1"), t0),
            Failure::Refused { first: false, .. }
        ));
        // The IPv4-mapped form is the same client.
        assert!(matches!(
            l.fail_at(ip("::ffff:10.0.0.1"), t0),
            Failure::Refused { .. }
        ));
        // Another address has its own budget.
        assert_eq!(l.fail_at(ip("10.0.0.2"), t0), Failure::Counted);
        // One second refills one failure.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.fail_at(ip("10.0.0.1"), t1), Failure::Counted);
        assert!(matches!(
            l.fail_at(ip("10.0.0.1"), t1),
            Failure::Refused { first: true, .. }
        ));
    }

    #[test]
    fn ipv6_hosts_are_grouped_by_their_64() {
        let l = FailureLimiter::new(1, 2);
        let t0 = Instant::now();
        assert_eq!(l.fail_at(ip("2001:db8:1:2::1"), t0), Failure::Counted);
        assert_eq!(l.fail_at(ip("2001:db8:1:2:ffff::9"), t0), Failure::Counted);
        assert!(matches!(
            l.fail_at(ip("2001:db8:1:2:abcd::1"), t0),
            Failure::Refused { .. }
        ));
        assert_eq!(l.fail_at(ip("2001:db8:1:3::1"), t0), Failure::Counted);
    }

    #[test]
    fn a_flood_of_addresses_keeps_memory_bounded() {
        let l = FailureLimiter::new(1, 1);
        let t0 = Instant::now();
        for i in 0..(ADDRESSES_MAX as u32 + 10) {
            let _ = l.fail_at(Some(IpAddr::V4(i.into())), t0);
        }
        assert!(l.local.lock().unwrap().buckets.len() <= ADDRESSES_MAX + 1);
        // Once their buckets refill, the old addresses make room again.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            l.fail_at(ip("203.0.113.7"), later),
            Failure::Counted,
            "a new address gets its own bucket"
        );
        assert!(l.local.lock().unwrap().buckets.len() < 10);
    }
}
