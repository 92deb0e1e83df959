//! HMAC-SHA256 as InStore uses it: decoding the signature a caller sent, computing ours, and
//! the keyed hashes under which PINs and CVCs are kept.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 value.
pub type Mac = [u8; 32];

const PADDING_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDING_OPTIONAL);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_OPTIONAL);

/// Decodes a signature value (section 1.3 step 2): an optional `sha256=` or `hmac-sha256 `
/// prefix in any case, then 64 hex digits in either case, or base64 in the standard or
/// URL-safe alphabet with optional padding that decodes to exactly 32 bytes. Anything else
/// is `None`.
pub fn decode_signature(value: &str) -> Option<Mac> {
    let v = value.trim();
    let v = strip_prefix_ignore_case(v, "sha256=")
        .or_else(|| strip_prefix_ignore_case(v, "hmac-sha256 "))
        .unwrap_or(v);
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut out = [0u8; 32];
        for (i, pair) in v.as_bytes().chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        return Some(out);
    }
    // 32 bytes are 43 base64 characters, 44 with the one '=' of padding. The engines reject
    // non-zero trailing bits, so each MAC has one spelling per alphabet.
    if !(43..=44).contains(&v.len()) {
        return None;
    }
    [BASE64_STANDARD, BASE64_URL_SAFE]
        .iter()
        .find_map(|engine| {
            let bytes = engine.decode(v).ok()?;
            Mac::try_from(bytes.as_slice()).ok()
        })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// HMAC-SHA256(key, message).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Mac {
    // HMAC takes keys of any length, so construction cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Whether HMAC-SHA256(key, message) equals `expected`, compared in constant time.
pub fn mac_matches(key: &[u8], message: &[u8], expected: &Mac) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.verify_slice(expected).is_ok()
}

/// Lower-case hex, the form of every `X-Signature` we send.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The `X-Signature` value of a body we send: lower-case hex HMAC-SHA256 of its exact bytes.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    to_hex(&hmac_sha256(key, body))
}

/// Constant-time equality of two byte strings (false when the lengths differ).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// SHA-256 as lower-case hex (the request hash of section 1.5 is this over `JS(payload)`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// The keyed hash under which a PIN or CVC is stored: HMAC-SHA256 with the server-side
/// `instore.secret_hash_key`, so a copy of the database alone cannot test guesses.
pub fn secret_hash(server_key: &[u8], secret: &str) -> Mac {
    hmac_sha256(server_key, secret.as_bytes())
}

/// Whether `presented` is the secret stored as `stored`, in constant time.
pub fn secret_matches(server_key: &[u8], stored: &Mac, presented: &str) -> bool {
    mac_matches(server_key, presented.as_bytes(), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9671dfb99c81025be5f2797c2fb0fa207bb84e469063f964cbc5f2a160bfa90d";

    #[test]
    fn decodes_every_admitted_spelling() {
        let expected = decode_signature(HEX).unwrap();
        assert_eq!(to_hex(&expected), HEX);
        for spelling in [
            HEX.to_uppercase(),
            format!("sha256={HEX}"),
            format!("SHA256={HEX}"),
            format!("hmac-sha256 {HEX}"),
            format!("HMAC-SHA256 {}", HEX.to_uppercase()),
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC/qQ0=".into(),
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC/qQ0".into(),
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY_lky8XyoWC_qQ0".into(),
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY_lky8XyoWC_qQ0=".into(),
            "sha256=lnHfuZyBAlvl8nl8L7D6IHu4TkaQY_lky8XyoWC_qQ0".into(),
        ] {
            assert_eq!(decode_signature(&spelling), Some(expected), "{spelling}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "asdibasdy7128e71",
            &HEX[..62],
            &format!("{HEX}00"),
            &format!("{}g", &HEX[..63]),
            "sha256=",
            "sha1=9671dfb99c81025be5f2797c2fb0fa207bb84e469063f964cbc5f2a160bfa90d",
            // Mixed alphabets.
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC_qQ0",
            // Non-zero trailing bits: another spelling of the same bytes.
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC/qQ1",
            // Base64 of 31 and 33 bytes.
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "lnHfuZyBAlvl8nl8L7D6IHu4TkaQY/lky8XyoWC/qQ0==",
        ] {
            assert_eq!(decode_signature(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_are_keyed() {
        let stored = secret_hash(b"server-key-0123456789", "1234");
        assert!(secret_matches(b"server-key-0123456789", &stored, "1234"));
        assert!(!secret_matches(b"server-key-0123456789", &stored, "1235"));
        assert!(!secret_matches(b"another-key-0123456789", &stored, "1234"));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
