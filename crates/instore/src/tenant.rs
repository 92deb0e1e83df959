//! The InStore tenants that may call us (section 1.1) and their startup validation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ledger::Currency;
use serde::Deserialize;

/// Shortest verification key admitted: a shorter shared string is guessable, and the key,
/// not `tenant_id`, proves who sent a request.
pub const VERIFICATION_KEY_BYTES_MIN: usize = 16;

/// A secret string from configuration; `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> SecretString {
        SecretString(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

fn default_true() -> bool {
    true
}

/// One `[[instore.tenants]]` entry as written in configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub tenant_id: String,
    /// The PaymentProcessor `apiKey` of the seed: the HMAC key, the UTF-8 bytes as written.
    pub verification_key: SecretString,
    /// When set, `X-API-Key` must equal it.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    pub callback_url_prefixes: Vec<String>,
    #[serde(default)]
    pub merchant_id: String,
    #[serde(default)]
    pub terminal_id: String,
    /// The store's merchant category code (four digits) and country (ISO 3166-1): what the
    /// spending controls of an account and card read for its wallet payments.
    pub mcc: Option<String>,
    pub country: Option<String>,
    #[serde(default)]
    pub poa_create_enabled: bool,
    /// Ceiling of a POA `Create`'s `credit_limit` per currency, as a decimal in major units.
    #[serde(default)]
    pub poa_credit_limit_max: BTreeMap<String, String>,
    #[serde(default = "default_true")]
    pub stored_value_create_enabled: bool,
}

/// A validated tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub tenant_id: String,
    verification_key: SecretString,
    api_key: Option<SecretString>,
    pub callback_url_prefixes: Vec<String>,
    pub merchant_id: String,
    pub terminal_id: String,
    /// The store as the spending controls see it.
    pub store: StoreFacts,
    pub poa_create_enabled: bool,
    /// In minor units of each currency. A currency not listed has no ceiling configured,
    /// so `Create` in it is refused (`CREDIT_LIMIT_TOO_HIGH` for any limit above zero).
    pub poa_credit_limit_max: BTreeMap<Currency, i64>,
    pub stored_value_create_enabled: bool,
}

impl Tenant {
    /// The HMAC key bytes.
    pub fn verification_key(&self) -> &[u8] {
        self.verification_key.expose().as_bytes()
    }

    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_ref().map(SecretString::expose)
    }

    /// Whether `url` is inside this tenant's callback allow-list.
    pub fn callback_allowed(&self, url: &str) -> bool {
        // Each prefix ends its authority with '/', checked at startup, so a prefix match
        // fixes the scheme, host and port: "https://a.example/" never admits
        // "https://a.example.evil/".
        self.callback_url_prefixes
            .iter()
            .any(|p| url.starts_with(p.as_str()))
    }
}

/// Why the tenant configuration cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantConfigError {
    #[error("instore.tenants: a tenant_id is empty")]
    EmptyTenantId,
    #[error("instore.tenants: tenant_id {0} is configured twice")]
    DuplicateTenantId(String),
    #[error(
        "instore.tenants[{0}]: verification_key is shorter than {VERIFICATION_KEY_BYTES_MIN} bytes"
    )]
    KeyTooShort(String),
    #[error(
        "instore.tenants[{0}] and instore.tenants[{1}] share one verification_key; keys must be unique"
    )]
    SharedKey(String, String),
    #[error("instore.tenants[{0}]: api_key is empty")]
    EmptyApiKey(String),
    #[error("instore.tenants[{0}]: callback_url_prefixes is empty")]
    NoCallbackPrefix(String),
    #[error("instore.tenants[{0}]: callback prefix {1:?}: {2}")]
    BadCallbackPrefix(String, String, &'static str),
    #[error("instore.tenants[{0}]: poa_credit_limit_max {1} = {2:?}: {3}")]
    BadCreditLimit(String, String, String, &'static str),
    #[error("instore.tenants[{0}]: mcc {1:?} is not a four-digit merchant category code")]
    BadMcc(String, String),
    #[error("instore.tenants[{0}]: country {1:?} is not an ISO 3166-1 country code")]
    BadCountry(String, String),
}

/// The configured tenants, validated.
#[derive(Debug, Clone)]
pub struct Tenants {
    tenants: Vec<Tenant>,
}

impl Tenants {
    /// Validates the configuration: unique ids, unique keys of at least 16 bytes, absolute
    /// callback prefixes (https unless the host is loopback), parseable credit ceilings.
    pub fn new(configs: Vec<TenantConfig>) -> Result<Tenants, TenantConfigError> {
        let mut tenants: Vec<Tenant> = Vec::with_capacity(configs.len());
        for c in configs {
            let id = c.tenant_id.clone();
            if id.is_empty() {
                return Err(TenantConfigError::EmptyTenantId);
            }
            if tenants.iter().any(|t| t.tenant_id == id) {
                return Err(TenantConfigError::DuplicateTenantId(id));
            }
            if c.verification_key.expose().len() < VERIFICATION_KEY_BYTES_MIN {
                return Err(TenantConfigError::KeyTooShort(id));
            }
            if let Some(other) = tenants
                .iter()
                .find(|t| t.verification_key == c.verification_key)
            {
                return Err(TenantConfigError::SharedKey(other.tenant_id.clone(), id));
            }
            if c.api_key.as_ref().is_some_and(|k| k.expose().is_empty()) {
                return Err(TenantConfigError::EmptyApiKey(id));
            }
            if c.callback_url_prefixes.is_empty() {
                return Err(TenantConfigError::NoCallbackPrefix(id));
            }
            for p in &c.callback_url_prefixes {
                check_callback_prefix(p).map_err(|why| {
                    // A prefix refused for its user information is shown without its password.
                    TenantConfigError::BadCallbackPrefix(id.clone(), settings::redact_url(p), why)
                })?;
            }
            let mut limits = BTreeMap::new();
            for (code, text) in &c.poa_credit_limit_max {
                let bad = |why| {
                    TenantConfigError::BadCreditLimit(id.clone(), code.clone(), text.clone(), why)
                };
                let currency =
                    Currency::parse(code).map_err(|_| bad("not a listed ISO 4217 currency"))?;
                let minor = parse_major_decimal(text, currency.exponent()).ok_or_else(|| {
                    bad("not a non-negative decimal with at most the currency's decimals")
                })?;
                limits.insert(currency, minor);
            }
            if let Some(m) = c.mcc.as_ref().filter(|m| ledger::Mcc::parse(m).is_err()) {
                return Err(TenantConfigError::BadMcc(id, m.clone()));
            }
            let country = match &c.country {
                Some(text) => Some(
                    ledger::controls::Country::parse(text)
                        .ok_or_else(|| TenantConfigError::BadCountry(id.clone(), text.clone()))?
                        .alpha2()
                        .to_owned(),
                ),
                None => None,
            };
            tenants.push(Tenant {
                tenant_id: id,
                verification_key: c.verification_key,
                api_key: c.api_key,
                callback_url_prefixes: c.callback_url_prefixes,
                merchant_id: c.merchant_id,
                terminal_id: c.terminal_id,
                store: StoreFacts {
                    mcc: c.mcc,
                    country,
                },
                poa_create_enabled: c.poa_create_enabled,
                poa_credit_limit_max: limits,
                stored_value_create_enabled: c.stored_value_create_enabled,
            });
        }
        Ok(Tenants { tenants })
    }

    pub fn get(&self, tenant_id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.tenant_id == tenant_id)
    }

    /// The tenant when exactly one is configured (the bare-body fallback of step 4).
    pub fn only(&self) -> Option<&Tenant> {
        match self.tenants.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// A callback prefix is `scheme://host[:port]/[path]`: absolute, with the authority closed by
/// '/', no user info, no query or fragment; `https`, or `http` to a loopback host.
fn check_callback_prefix(p: &str) -> Result<(), &'static str> {
    let lower = p.to_ascii_lowercase();
    let (https, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("must be an absolute http(s) URL");
    };
    let slash = rest
        .find('/')
        .ok_or("must end its host with '/' so that a prefix match pins the host")?;
    let authority = &rest[..slash];
    if authority.is_empty() || authority.contains('@') {
        return Err("must name a host and no user info");
    }
    if p.contains(['?', '#']) || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not hold a query, a fragment or whitespace");
    }
    if !https && !is_loopback_authority(authority) {
        return Err("must use https unless the host is a loopback address");
    }
    Ok(())
}

fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// "5000.00" in a currency of exponent 2 is 500000 minor units. At most `exponent` decimals,
/// no sign, no exponent: configuration is exact like the wire.
pub(crate) fn parse_major_decimal(text: &str, exponent: u8) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > usize::from(exponent)
        || (text.contains('.') && frac.is_empty())
    {
        return None;
    }
    let mut minor: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        minor = minor.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    for _ in frac.len()..usize::from(exponent) {
        minor = minor.checked_mul(10)?;
    }
    (minor <= crate::json::SAFE_INTEGER_MAX).then_some(minor)
}

/// A tenant's store as the spending controls read it for its wallet payments: its merchant
/// category code and its country (alpha-2), when configured.
#[derive(Debug, Clone, Default)]
pub struct StoreFacts {
    pub mcc: Option<String>,
    pub country: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(id: &str, key: &str) -> TenantConfig {
        TenantConfig {
            tenant_id: id.into(),
            verification_key: SecretString::new(key),
            api_key: None,
            callback_url_prefixes: vec!["https://instore.example/".into()],
            merchant_id: "634100700040000".into(),
            terminal_id: "00000011".into(),
            mcc: None,
            country: None,
            poa_create_enabled: false,
            poa_credit_limit_max: BTreeMap::new(),
            stored_value_create_enabled: true,
        }
    }

    #[test]
    fn validation() {
        let ok = Tenants::new(vec![
            config("a", "0123456789abcdef"),
            config("b", "0123456789abcdeg"),
        ])
        .unwrap();
        assert_eq!(ok.get("b").unwrap().tenant_id, "b");
        assert!(ok.only().is_none());

        assert_eq!(
            Tenants::new(vec![config("a", "0123456789abcde")]).unwrap_err(),
            TenantConfigError::KeyTooShort("a".into())
        );
        assert_eq!(
            Tenants::new(vec![
                config("a", "0123456789abcdef"),
                config("b", "0123456789abcdef")
            ])
            .unwrap_err(),
            TenantConfigError::SharedKey("a".into(), "b".into())
        );
        assert_eq!(
            Tenants::new(vec![
                config("a", "0123456789abcdef"),
                config("a", "0123456789abcdeX")
            ])
            .unwrap_err(),
            TenantConfigError::DuplicateTenantId("a".into())
        );
        let mut no_prefix = config("a", "0123456789abcdef");
        no_prefix.callback_url_prefixes.clear();
        assert!(Tenants::new(vec![no_prefix]).is_err());
    }

    #[test]
    fn callback_prefixes() {
        for good in [
            "https://instore.example/",
            "https://api.instore.europe-west1.gcp.commercetools.com/cb/",
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://[::1]:9000/x",
            "HTTPS://Instore.Example/",
        ] {
            assert_eq!(check_callback_prefix(good), Ok(()), "{good}");
        }
        for bad in [
            "instore.example/",
            "/callback/",
            "https://instore.example",
            "http://instore.example/",
            "http://10.0.0.1/",
            "https://user@instore.example/",
            "https:///",
            "https://instore.example/?a=1",
            "ftp://instore.example/",
        ] {
            assert!(check_callback_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_prefix_with_a_password_is_not_shown_with_it() {
        let mut c = config("a", "0123456789abcdef");
        c.callback_url_prefixes = vec!["https://cb:s3cret@instore.example/".into()];
        let Err(e) = Tenants::new(vec![c]) else {
            panic!("a prefix with a user and password is refused")
        };
        let e = e.to_string();
        assert!(
            e.contains("https://cb:***@instore.example/") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn allow_list_pins_the_host() {
        let t = Tenants::new(vec![config("a", "0123456789abcdef")]).unwrap();
        let t = t.only().unwrap();
        assert!(t.callback_allowed("https://instore.example/callback/req-1"));
        assert!(!t.callback_allowed("https://instore.example.evil/x"));
        assert!(!t.callback_allowed("https://evil.example/x"));
        assert!(!t.callback_allowed("http://instore.example/x"));
    }

    #[test]
    fn credit_ceilings() {
        assert_eq!(parse_major_decimal("5000.00", 2), Some(500_000));
        assert_eq!(parse_major_decimal("5000", 2), Some(500_000));
        assert_eq!(parse_major_decimal("5000.5", 2), Some(500_050));
        assert_eq!(parse_major_decimal("12", 0), Some(12));
        for bad in [
            "",
            ".5",
            "5.",
            "5.001",
            "-1",
            "1e3",
            " 1",
            "99999999999999999999",
        ] {
            assert_eq!(parse_major_decimal(bad, 2), None, "{bad}");
        }
        let mut c = config("a", "0123456789abcdef");
        c.poa_credit_limit_max
            .insert("USD".into(), "5000.00".into());
        let t = Tenants::new(vec![c.clone()]).unwrap();
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(t.only().unwrap().poa_credit_limit_max[&usd], 500_000);
        c.poa_credit_limit_max.insert("XXY".into(), "1".into());
        assert!(Tenants::new(vec![c]).is_err());
    }

    #[test]
    fn configuration_shape() {
        let c: TenantConfig = serde_json::from_str(
            r#"{"tenant_id":"b312-c121-3f45-ab34","verification_key":"instore-demo-verification-key-01","callback_url_prefixes":["https://instore.example/"],"poa_credit_limit_max":{"USD":"5000.00"}}"#,
        )
        .unwrap();
        assert!(c.api_key.is_none());
        assert!(c.stored_value_create_enabled && !c.poa_create_enabled);
        assert_eq!(c.merchant_id, "");
        let t = Tenants::new(vec![c]).unwrap();
        assert_eq!(
            t.only().unwrap().verification_key(),
            b"instore-demo-verification-key-01"
        );
        let unknown = serde_json::from_str::<TenantConfig>(
            r#"{"tenant_id":"a","verification_key":"0123456789abcdef","callback_url_prefixes":[],"apiKey":"x"}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn keys_are_masked() {
        let t = Tenants::new(vec![config("a", "0123456789abcdef")]).unwrap();
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
    }
}
