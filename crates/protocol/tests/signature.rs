//! Section 2, 3 and 10 of the protocol: signing, verification, timestamps, key ring.

use protocol::signature::{
    ApiSecret, KeyRing, SCHEME_PREFIX, SignatureError, check_timestamp, sign, verify,
};

const API_KEY: &str = "Lp0g+cwb19eEfTn1YIOydEnqPcZOg8YxHctnMe+1cQA=";
const API_SECRET: &str = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";
const BODY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/request-body.json"
));

const VECTOR_1: &str = "hmac-sha256 xRggPd72EwhNeH5zB0+m+hlDVbrbQTL9P54J42Fk0MI=";
const VECTOR_2_BODY: &[u8] = br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Ok"}"#;
const VECTOR_2: &str = "hmac-sha256 u9SQX7+Pc1ZEVZUV97hvuysnwDx1gZBVSZ+6EWJKplM=";
const VECTOR_3: &str = "hmac-sha256 uzri1/zB3Dq+YsMTw6m50EFYkGW9Ko6jtLiT5dP45/4=";

fn secret() -> ApiSecret {
    ApiSecret::from_base64(API_SECRET).unwrap()
}

/// [`sign`] with the demo secret.
fn sign_with(timestamp: &str, endpoint: &str, body: &[u8]) -> String {
    sign(&secret(), timestamp, endpoint, body)
}

/// [`verify`] with the demo secret.
fn verify_with(
    timestamp: &str,
    endpoint: &str,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    verify(&secret(), timestamp, endpoint, body, header)
}

#[test]
fn vector_body_is_the_documented_one() {
    assert_eq!(BODY.len(), 669);
    assert_ne!(BODY.last(), Some(&b'\n'));
}

/// Vector 1's signature verifies with `secret`.
fn verifies_vector_1(secret: &ApiSecret) {
    verify(
        secret,
        "1700000000",
        "/transactions/authorizations",
        BODY,
        VECTOR_1,
    )
    .unwrap();
}

#[test]
fn vector_1_request() {
    let s = sign_with("1700000000", "/transactions/authorizations", BODY);
    assert_eq!(s, VECTOR_1);
    verifies_vector_1(&secret());
}

#[test]
fn vector_2_response() {
    let s = sign_with("1700000001", "/transactions/authorizations", VECTOR_2_BODY);
    assert_eq!(s, VECTOR_2);
    verify_with(
        "1700000001",
        "/transactions/authorizations",
        VECTOR_2_BODY,
        VECTOR_2,
    )
    .unwrap();
}

#[test]
fn vector_3_empty_body_signs_timestamp_and_endpoint_only() {
    let s = sign_with("1700000002", "/transactions/adjustments/credit", b"");
    assert_eq!(s, VECTOR_3);
    verify_with(
        "1700000002",
        "/transactions/adjustments/credit",
        b"",
        VECTOR_3,
    )
    .unwrap();
    // Same message split differently: the concatenation has no separators.
    assert_eq!(
        sign_with("1700000002/transactions", "/adjustments/credit", b""),
        VECTOR_3
    );
    // `{}` and `null` are not an empty body.
    assert_ne!(
        sign_with("1700000002", "/transactions/adjustments/credit", b"{}"),
        VECTOR_3
    );
    assert_ne!(
        sign_with("1700000002", "/transactions/adjustments/credit", b"null"),
        VECTOR_3
    );
}

#[test]
fn tampered_body_fails() {
    for i in [0, BODY.len() / 2, BODY.len() - 1] {
        let mut body = BODY.to_vec();
        body[i] ^= 0x01;
        assert_eq!(
            verify_with(
                "1700000000",
                "/transactions/authorizations",
                &body,
                VECTOR_1
            ),
            Err(SignatureError::Mismatch)
        );
    }
    let mut longer = BODY.to_vec();
    longer.push(b'\n');
    assert_eq!(
        verify_with(
            "1700000000",
            "/transactions/authorizations",
            &longer,
            VECTOR_1
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn tampered_timestamp_fails() {
    assert_eq!(
        verify_with("1700000001", "/transactions/authorizations", BODY, VECTOR_1),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn tampered_endpoint_fails() {
    assert_eq!(
        verify_with(
            "1700000000",
            "/transactions/authorizations/debit",
            BODY,
            VECTOR_1
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn wrong_secret_fails() {
    let other = ApiSecret::from_bytes(vec![7; 32]);
    assert_eq!(
        verify(
            &other,
            "1700000000",
            "/transactions/authorizations",
            BODY,
            VECTOR_1
        ),
        Err(SignatureError::Mismatch)
    );
    // The api key is not the secret.
    let key_as_secret = ApiSecret::from_base64(API_KEY).unwrap();
    assert_eq!(
        verify(
            &key_as_secret,
            "1700000000",
            "/transactions/authorizations",
            BODY,
            VECTOR_1
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn missing_or_wrong_prefix_fails() {
    let bare = VECTOR_1.strip_prefix(SCHEME_PREFIX).unwrap();
    for header in [
        bare.to_owned(),
        format!("HMAC-SHA256 {bare}"),
        format!("hmac-sha256{bare}"),
        format!("hmac-sha512 {bare}"),
        String::new(),
    ] {
        assert_eq!(
            verify_with("1700000000", "/transactions/authorizations", BODY, &header),
            Err(SignatureError::MissingPrefix),
            "{header:?}"
        );
    }
}

#[test]
fn bad_base64_or_length_fails() {
    for header in [
        "hmac-sha256 ",
        "hmac-sha256 !!!!",
        "hmac-sha256 xRggPd72EwhNeH5zB0+m+hlDVbrbQTL9P54J42Fk0MI", // padding missing
        "hmac-sha256 xRggPd72EwhNeH5zB0-m-hlDVbrbQTL9P54J42Fk0MI=", // url-safe alphabet
        "hmac-sha256  xRggPd72EwhNeH5zB0+m+hlDVbrbQTL9P54J42Fk0MI=", // two spaces
        "hmac-sha256 xRggPd72EwhNeH5zB0+m+hlDVbrbQTL9P54J42Fk0MI= ", // trailing space
        "hmac-sha256 AAAA",                                        // 3 bytes, not 32
    ] {
        assert_eq!(
            verify_with("1700000000", "/transactions/authorizations", BODY, header),
            Err(SignatureError::BadEncoding),
            "{header:?}"
        );
    }
}

#[test]
fn secret_round_trips_and_bad_secrets_are_refused() {
    assert_eq!(secret().to_base64(), API_SECRET);
    assert_eq!(
        ApiSecret::from_base64("").unwrap_err(),
        SignatureError::BadSecret
    );
    assert_eq!(
        ApiSecret::from_base64("not base64!").unwrap_err(),
        SignatureError::BadSecret
    );
}

#[test]
fn check_timestamp_window() {
    let now = 1_700_000_000;
    let stale = Err(SignatureError::StaleTimestamp);
    for (header, now, skew, want) in [
        ("1700000000", now, 60, Ok(1_700_000_000)),
        ("1699999940", now, 60, Ok(1_699_999_940)),
        ("1700000060", now, 60, Ok(1_700_000_060)),
        ("1699999939", now, 60, stale),
        ("1700000061", now, 60, stale),
        ("0", now, 60, stale),
        ("999999999999", now, 60, stale),
        // Extreme inputs do not overflow.
        ("999999999999", i64::MIN, u64::MAX, Ok(999_999_999_999)),
        ("1", i64::MAX, 0, stale),
    ] {
        assert_eq!(
            check_timestamp(header, now, skew),
            want,
            "{header} at {now} within {skew} s"
        );
    }
}

#[test]
fn check_timestamp_rejects_malformed() {
    let now = 1_700_000_000;
    for header in [
        "",
        "17000000a0",
        "-1700000000",
        "+1700000000",
        " 1700000000",
        "1700000000 ",
        "1700000000.5",
        "1700000000000", // milliseconds: 13 digits
        "12345678901234567890",
        "١٧٠٠٠٠٠٠٠٠", // non-ASCII digits
    ] {
        assert_eq!(
            check_timestamp(header, now, u64::MAX),
            Err(SignatureError::BadTimestamp),
            "{header:?}"
        );
    }
}

#[test]
fn reasons_are_distinct_snake_case() {
    let all = [
        SignatureError::MissingPrefix,
        SignatureError::BadEncoding,
        SignatureError::Mismatch,
        SignatureError::BadTimestamp,
        SignatureError::StaleTimestamp,
        SignatureError::BadSecret,
    ];
    let mut reasons: Vec<&str> = all.iter().map(SignatureError::reason).collect();
    assert!(
        reasons
            .iter()
            .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
}

#[test]
fn key_ring_lookup_during_rotation() {
    let mut ring = KeyRing::new();
    assert!(ring.is_empty());
    ring.insert(API_KEY, secret());
    ring.insert("new-key", ApiSecret::from_bytes(b"rotated secret".to_vec()));
    assert_eq!(ring.len(), 2);
    assert!(!ring.is_empty());
    assert!(ring.get("unknown").is_none());
    let found = ring.get(API_KEY).unwrap();
    verifies_vector_1(found);
}

#[test]
fn debug_never_shows_secrets() {
    let raw_secret = "super-secret-bytes";
    let s = ApiSecret::from_bytes(raw_secret.as_bytes().to_vec());
    let mut ring = KeyRing::new();
    ring.insert("key-a", s.clone());
    ring.insert(API_KEY, secret());

    let debug_secret = format!("{s:?} {:?}", secret());
    assert_eq!(format!("{s:?}"), "ApiSecret(***)");
    let debug_ring = format!("{ring:?} {ring:#?}");
    for shown in [&debug_secret, &debug_ring] {
        assert!(!shown.contains(raw_secret));
        assert!(!shown.contains(API_SECRET));
        assert!(!shown.contains("uC8f"));
        // Not as a byte list either.
        assert!(!shown.contains("115, 117, 112"));
        assert!(!shown.contains("184, 47"));
    }
    assert!(debug_ring.contains("key-a"));
    assert!(debug_ring.contains(API_KEY));
}
