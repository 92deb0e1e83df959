//! Request and response signatures (protocol sections 2 and 3).
//!
//! `X-Signature = "hmac-sha256 " + base64(HMAC-SHA256(secret, timestamp ++ endpoint ++ body))`,
//! where the secret is the base64-decoded api-secret and `++` is plain concatenation. The same
//! scheme signs requests (processor to us) and responses (us to processor).

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every `X-Signature` value, scheme name and one space.
pub const SCHEME_PREFIX: &str = "hmac-sha256 ";

/// Header names, lower-case (HTTP header names are case-insensitive; lower-case is what HTTP/2
/// puts on the wire and what header maps normalize to).
pub mod headers {
    /// Which key pair signed the request.
    pub const API_KEY: &str = "x-api-key";
    /// `hmac-sha256 ` + base64 of the MAC.
    pub const SIGNATURE: &str = "x-signature";
    /// Unix seconds, decimal.
    pub const TIMESTAMP: &str = "x-timestamp";
    /// The path (and query) that was signed.
    pub const ENDPOINT: &str = "x-endpoint";
    /// Unique per logical request, repeated on retries.
    pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
}

/// Why a signature or timestamp was refused.
///
/// The HTTP layer answers all of these the same way (401, nothing revealed); the variants exist
/// so that refusals can be counted by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `X-Signature` value does not start with `hmac-sha256 `.
    #[error("signature scheme prefix missing")]
    MissingPrefix,
    /// The MAC is not standard padded base64, or does not decode to 32 bytes.
    #[error("signature is not valid base64 of a 32-byte MAC")]
    BadEncoding,
    /// The MAC does not match.
    #[error("signature does not match")]
    Mismatch,
    /// `X-Timestamp` is not 1 to 12 decimal digits.
    #[error("timestamp is malformed")]
    BadTimestamp,
    /// `X-Timestamp` is outside the accepted window (too old or too far in the future).
    #[error("timestamp is outside the accepted window")]
    StaleTimestamp,
    /// An api-secret is not valid base64, or is empty.
    #[error("api secret is not valid non-empty base64")]
    BadSecret,
}

impl SignatureError {
    /// Short snake_case label, stable, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingPrefix => "missing_prefix",
            SignatureError::BadEncoding => "bad_encoding",
            SignatureError::Mismatch => "mismatch",
            SignatureError::BadTimestamp => "bad_timestamp",
            SignatureError::StaleTimestamp => "stale_timestamp",
            SignatureError::BadSecret => "bad_secret",
        }
    }
}

/// A processor api-secret: the raw key bytes (base64-decoded).
///
/// `Debug` never shows the bytes, and there is deliberately no `Display` or `PartialEq` (a
/// comparison would invite non-constant-time checks).
#[derive(Clone)]
pub struct ApiSecret(Vec<u8>);

impl ApiSecret {
    /// Decodes an api-secret as the processor hands it out: standard base64 with padding.
    /// An empty secret is refused: it is always a configuration mistake.
    pub fn from_base64(s: &str) -> Result<ApiSecret, SignatureError> {
        let bytes = STANDARD
            .decode(s.as_bytes())
            .map_err(|_| SignatureError::BadSecret)?;
        if bytes.is_empty() {
            return Err(SignatureError::BadSecret);
        }
        Ok(ApiSecret(bytes))
    }

    /// The secret in the form [`ApiSecret::from_base64`] reads (for writing configuration).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(b: Vec<u8>) -> Self {
        ApiSecret(b)
    }

    fn mac(&self, timestamp: &str, endpoint: &str, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(timestamp.as_bytes());
        mac.update(endpoint.as_bytes());
        mac.update(body);
        mac
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiSecret(***)")
    }
}

/// `X-Signature` value for `timestamp ++ endpoint ++ body` (plain concatenation):
/// `"hmac-sha256 "` + standard base64 with padding.
///
/// An empty body is signed as `timestamp ++ endpoint` only: pass `b""`, never `{}` or `null`.
pub fn sign(secret: &ApiSecret, timestamp: &str, endpoint: &str, body: &[u8]) -> String {
    let tag = secret
        .mac(timestamp, endpoint, body)
        .finalize()
        .into_bytes();
    let mut out = String::with_capacity(SCHEME_PREFIX.len() + 44);
    out.push_str(SCHEME_PREFIX);
    STANDARD.encode_string(tag, &mut out);
    out
}

/// Checks an `X-Signature` header value against `timestamp ++ endpoint ++ body`, in constant
/// time with respect to the expected MAC.
///
/// `body` must be the raw bytes as received, before any parsing.
pub fn verify(
    secret: &ApiSecret,
    timestamp: &str,
    endpoint: &str,
    body: &[u8],
    signature_header: &str,
) -> Result<(), SignatureError> {
    let encoded = signature_header
        .strip_prefix(SCHEME_PREFIX)
        .ok_or(SignatureError::MissingPrefix)?;
    let tag = STANDARD
        .decode(encoded.as_bytes())
        .map_err(|_| SignatureError::BadEncoding)?;
    // The length is public (always 32 for SHA-256), so checking it first leaks nothing and lets
    // a truncated header be counted as an encoding problem rather than a mismatch.
    if tag.len() != 32 {
        return Err(SignatureError::BadEncoding);
    }
    secret
        .mac(timestamp, endpoint, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

/// Parses `X-Timestamp` (decimal unix seconds: digits only, no sign, at most 12 digits) and
/// checks `|now - ts| <= skew_secs`, in both directions (a timestamp from the future is as
/// suspicious as an old one). Returns the parsed timestamp.
pub fn check_timestamp(
    header: &str,
    now_unix_secs: i64,
    skew_secs: u64,
) -> Result<i64, SignatureError> {
    // 12 digits reach year ~33658: plenty, and small enough that parsing cannot overflow.
    if header.is_empty() || header.len() > 12 || !header.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    let ts: i64 = header.parse().map_err(|_| SignatureError::BadTimestamp)?;
    // i128 so that no combination of `now` and `skew` can overflow.
    let diff = (i128::from(now_unix_secs) - i128::from(ts)).unsigned_abs();
    if diff > u128::from(skew_secs) {
        return Err(SignatureError::StaleTimestamp);
    }
    Ok(ts)
}

/// Key ring keyed by `X-Api-Key`: several pairs are active while the processor rotates keys.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: HashMap<String, ApiSecret>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the secret for `api_key`.
    pub fn insert(&mut self, api_key: impl Into<String>, secret: ApiSecret) {
        self.keys.insert(api_key.into(), secret);
    }

    /// The secret for `api_key`, if the key is known.
    pub fn get(&self, api_key: &str) -> Option<&ApiSecret> {
        self.keys.get(api_key)
    }

    /// Number of key pairs.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key pair.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The api keys (identifiers, not secrets), sorted.
    pub fn api_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }
}

impl fmt::Debug for KeyRing {
    /// Lists the api keys only; secrets never appear.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("api_keys", &self.api_keys())
            .finish()
    }
}
