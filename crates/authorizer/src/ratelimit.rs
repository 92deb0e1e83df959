//! Request-rate limit of the admin API, per admin token: a token bucket (`admin.rate_per_sec`
//! sustained, `admin.burst` at once). With Redis the bucket is shared by the fleet (a Lua
//! script on Redis' clock); without it, or while Redis is unreachable, each instance keeps
//! its own. Buckets are keyed by a digest of the token, never the token itself.

use crate::fleet::Fleet;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Limiter {
    rate_per_sec: u32,
    burst: u32,
    local: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
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
        Limiter {
            rate_per_sec: rate_per_sec.max(1),
            burst: burst.max(1),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `id`'s bucket: `Err(wait)` when it is empty.
    pub async fn admit(&self, fleet: &Fleet, id: &str) -> Result<(), Duration> {
        if let Some(r) = fleet.take_token(id, self.rate_per_sec, self.burst).await {
            return r.map_err(Duration::from_millis);
        }
        self.admit_local(id, Instant::now())
    }

    fn admit_local(&self, id: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut m) = self.local.lock() else {
            return Ok(());
        };
        let rate = f64::from(self.rate_per_sec);
        let burst = f64::from(self.burst);
        let b = m.entry(id.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let l = Limiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.admit_local("k", t0).is_ok());
        }
        let wait = l.admit_local("k", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // Buckets are per key.
        assert!(l.admit_local("other", t0).is_ok());
        // 100 ms at 10/s refills one token.
        assert!(l.admit_local("k", t0 + Duration::from_millis(100)).is_ok());
        assert!(l.admit_local("k", t0 + Duration::from_millis(100)).is_err());
        // Never more than the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.admit_local("k", later).is_ok());
        }
        assert!(l.admit_local("k", later).is_err());
    }

    #[test]
    fn ids_are_digests() {
        let id = token_id("secret-token-0123456789");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("secret"));
        assert_ne!(id, token_id("secret-token-0123456780"));
    }
}
