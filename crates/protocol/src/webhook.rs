//! Webhooks to URLs chosen by someone else (point-integration §1.7, §2.6, §3): the HMAC
//! challenge that proves a URL belongs to its subscriber, and the `x-signature` every
//! delivery carries. The terminal simulator and the authorizer's event webhooks share it;
//! the authorizer's add `v2`, which signs the body too.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &str, msg: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    m.update(msg);
    m
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// HMAC-SHA256(key = UTF-8 of `token`, message = UTF-8 of `code`), 64 lowercase hex digits.
pub fn encrypted_challenge(token: &str, code: &str) -> String {
    hex(&mac(token, code.as_bytes()).finalize().into_bytes())
}

/// Whether `answer` (64 hex digits, either case) is the challenge's HMAC, compared in
/// constant time after decoding.
pub fn challenge_matches(token: &str, code: &str, answer: &str) -> bool {
    if answer.len() != 64 {
        return false;
    }
    match unhex(answer) {
        Some(tag) => mac(token, code.as_bytes()).verify_slice(&tag).is_ok(),
        None => false,
    }
}

/// What a signature's HMAC covers: `id:..;request-id:..;ts:..;`, then for `v2`
/// `sha256:<hex SHA-256 of the body>;`.
fn manifest(id: &str, request_id: &str, ts_ms: i64, body: Option<&[u8]>) -> String {
    let mut m = format!("id:{id};request-id:{request_id};ts:{ts_ms};");
    if let Some(b) = body {
        m.push_str(&format!("sha256:{};", hex(&Sha256::digest(b))));
    }
    m
}

fn signed(token: &str, manifest: &str) -> String {
    hex(&mac(token, manifest.as_bytes()).finalize().into_bytes())
}

/// `x-signature` of a delivery: `ts=<ms>,v1=<hex HMAC(token, "id:..;request-id:..;ts:..;")>`.
pub fn x_signature(token: &str, id: &str, request_id: &str, ts_ms: i64) -> String {
    let v1 = signed(token, &manifest(id, request_id, ts_ms, None));
    format!("ts={ts_ms},v1={v1}")
}

/// `x-signature` of an event webhook: [`x_signature`], then
/// `,v2=<hex HMAC(token, "id:..;request-id:..;ts:..;sha256:<hex SHA-256 of the body>;")>`,
/// so that a changed body does not verify (`v1`, the scheme of point-integration §2.6,
/// signs the ids and the time only). A receiver that reads `ts` and `v1` alone still
/// verifies it.
pub fn x_signature_with_body(
    token: &str,
    id: &str,
    request_id: &str,
    ts_ms: i64,
    body: &[u8],
) -> String {
    let v2 = signed(token, &manifest(id, request_id, ts_ms, Some(body)));
    format!("{},v2={v2}", x_signature(token, id, request_id, ts_ms))
}

/// The value of `name=` among the comma-separated parts of a signature header.
fn part<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(',')
        .find_map(|p| p.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Whether `header`'s `ts` is within `tolerance_ms` of `now_ms` and its part `version`
/// (64 lowercase hex digits) is the HMAC of the manifest of `id`, `request_id` and `body`
/// at that `ts`, compared in constant time after decoding.
fn verify(
    token: &str,
    header: &str,
    (version, id, request_id): (&str, &str, &str),
    body: Option<&[u8]>,
    (now_ms, tolerance_ms): (i64, i64),
) -> bool {
    let Some(ts) = part(header, "ts").and_then(|t| t.parse::<i64>().ok()) else {
        return false;
    };
    if now_ms.abs_diff(ts) > tolerance_ms.unsigned_abs() {
        return false;
    }
    part(header, version)
        .filter(|h| h.len() == 64 && !h.bytes().any(|b| b.is_ascii_uppercase()))
        .and_then(unhex)
        .is_some_and(|tag| {
            let m = manifest(id, request_id, ts, body);
            mac(token, m.as_bytes()).verify_slice(&tag).is_ok()
        })
}

/// Whether `header` (`ts=…,v1=…`, other parts ignored) signs `id` and `request_id` with
/// `token`, its `ts` within `tolerance_ms` of `now_ms`.
pub fn verify_x_signature(
    token: &str,
    header: &str,
    id: &str,
    request_id: &str,
    now_ms: i64,
    tolerance_ms: i64,
) -> bool {
    let window = (now_ms, tolerance_ms);
    verify(token, header, ("v1", id, request_id), None, window)
}

/// Whether `header` carries a `v2` ([`x_signature_with_body`]) that signs `id`,
/// `request_id` and `body` with `token`, its `ts` within `tolerance_ms` of `now_ms`.
pub fn verify_x_signature_with_body(
    token: &str,
    header: &str,
    (id, request_id): (&str, &str),
    body: &[u8],
    now_ms: i64,
    tolerance_ms: i64,
) -> bool {
    let window = (now_ms, tolerance_ms);
    verify(token, header, ("v2", id, request_id), Some(body), window)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0230abf9-79e9-493b-b288-32d123456789";

    #[test]
    fn challenge_vectors() {
        assert_eq!(
            encrypted_challenge(TOKEN, "YOUR_CHALLENGE_CODE"),
            "cd0a35ec4b2c06bee54b59899037b167b9c9257673c1e290119495936fd1a4cb"
        );
        assert_eq!(
            encrypted_challenge(TOKEN, "8c1f4e2a9b7d6c5e3f2a1b0c9d8e7f6a"),
            "a9f11d720e675b66290f0115477045ffc7556e6107354a8d583b4f7057ef73be"
        );
        let good = "a9f11d720e675b66290f0115477045ffc7556e6107354a8d583b4f7057ef73be";
        let code = "8c1f4e2a9b7d6c5e3f2a1b0c9d8e7f6a";
        assert!(challenge_matches(TOKEN, code, good));
        assert!(challenge_matches(TOKEN, code, &good.to_uppercase()));
        assert!(!challenge_matches(TOKEN, code, &good[..62]));
        assert!(!challenge_matches(TOKEN, code, &format!("{good}00")));
        assert!(!challenge_matches(TOKEN, "other", good));
        assert!(!challenge_matches("other", code, good));
        let mut flipped = good.to_owned();
        flipped.replace_range(0..1, "b");
        assert!(!challenge_matches(TOKEN, code, &flipped));
        assert!(!challenge_matches(TOKEN, code, &"z".repeat(64)));
    }

    #[test]
    fn webhook_signature_vector() {
        let sig = x_signature(
            TOKEN,
            "7d8c70b6-2ac8-4c57-a441-c319088ca3ca",
            "0b9e5a5e-1c5e-4b0e-9d1a-6c1f3f7b2a10",
            1_700_000_000_000,
        );
        assert_eq!(
            sig,
            "ts=1700000000000,v1=33a913d048f74ab36760ee1c8b308a8ddcad0b8116ba8b2b784afd11736bebf8"
        );
        let (id, rid) = (
            "7d8c70b6-2ac8-4c57-a441-c319088ca3ca",
            "0b9e5a5e-1c5e-4b0e-9d1a-6c1f3f7b2a10",
        );
        let now = 1_700_000_000_000;
        assert!(verify_x_signature(
            TOKEN,
            &sig,
            id,
            rid,
            now + 300_000,
            300_000
        ));
        assert!(!verify_x_signature(
            TOKEN,
            &sig,
            id,
            rid,
            now + 300_001,
            300_000
        ));
        assert!(!verify_x_signature("other", &sig, id, rid, now, 300_000));
        assert!(!verify_x_signature(TOKEN, &sig, "x", rid, now, 300_000));
        assert!(!verify_x_signature(TOKEN, "v1=00", id, rid, now, 300_000));
        assert!(!verify_x_signature(
            TOKEN,
            "ts=1700000000000",
            id,
            rid,
            now,
            300_000
        ));
    }

    #[test]
    fn the_body_signature_covers_the_body() {
        let (id, rid, ts) = ("evt-1", "evt-1", 1_700_000_000_000);
        let body = br#"{"amount":"10.00"}"#;
        let sig = x_signature_with_body(TOKEN, id, rid, ts, body);
        // v1 is the plain signature, so a receiver of the plain scheme still verifies it.
        assert!(sig.starts_with(&format!("{},v2=", x_signature(TOKEN, id, rid, ts))));
        assert!(verify_x_signature(TOKEN, &sig, id, rid, ts, 300_000));
        let ok = |h: &str, b: &[u8], now: i64| {
            verify_x_signature_with_body(TOKEN, h, (id, rid), b, now, 300_000)
        };
        assert!(ok(&sig, body, ts + 300_000));
        assert!(!ok(&sig, br#"{"amount":"99.00"}"#, ts));
        assert!(!ok(&sig, body, ts + 300_001));
        assert!(!ok(&x_signature(TOKEN, id, rid, ts), body, ts));
        let other_key = x_signature_with_body("other", id, rid, ts, body);
        assert!(!ok(&other_key, body, ts));
        // Another id, or a v2 moved to another time, does not verify either.
        assert!(!verify_x_signature_with_body(
            TOKEN,
            &sig,
            ("evt-2", rid),
            body,
            ts,
            300_000
        ));
        let v2 = part(&sig, "v2").unwrap();
        assert!(!ok(&format!("ts={},v2={v2}", ts + 1), body, ts));
    }
}
