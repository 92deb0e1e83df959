//! The simulator's configuration (point-integration §2.2), its sites and devices.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Mercado Pago's sites the simulator knows (§1.3, §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Site {
    #[serde(rename = "MLA")]
    Mla,
    #[serde(rename = "MLB")]
    Mlb,
    #[serde(rename = "MLM")]
    Mlm,
}

impl Site {
    pub fn currency(self) -> &'static str {
        match self {
            Site::Mla => "ARS",
            Site::Mlb => "BRL",
            Site::Mlm => "MXN",
        }
    }
    pub fn country(self) -> &'static str {
        match self {
            Site::Mla => "ARG",
            Site::Mlb => "BRA",
            Site::Mlm => "MEX",
        }
    }
    /// Device-local UTC offset in hours.
    pub fn utc_offset_hours(self) -> i8 {
        match self {
            Site::Mla | Site::Mlb => -3,
            Site::Mlm => -6,
        }
    }
    /// Inclusive amount limits, in the API's integer (two decimals included).
    pub fn amount_limits(self) -> (i64, i64) {
        match self {
            Site::Mla => (500, 400_000_000),
            Site::Mlb => (100, 7_000_000),
            Site::Mlm => (500, 35_000_000),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Mla => "MLA",
            Site::Mlb => "MLB",
            Site::Mlm => "MLM",
        }
    }
}

/// `PDV` (integrated: takes intents) or `STANDALONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum OperatingMode {
    #[serde(rename = "PDV")]
    Pdv,
    #[serde(rename = "STANDALONE")]
    Standalone,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    pub id: String,
    pub mcc: String,
    pub name: String,
    pub city: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: String,
    pub site: Site,
    #[serde(default = "d_mode")]
    pub operating_mode: OperatingMode,
    #[serde(default)]
    pub pos_id: u64,
    #[serde(default)]
    pub store_id: String,
    #[serde(default)]
    pub external_pos_id: String,
    pub merchant: MerchantConfig,
}

impl DeviceConfig {
    /// The part of the device id after `__` (the whole id when there is none).
    pub fn terminal_id(&self) -> &str {
        self.id.split_once("__").map(|(_, t)| t).unwrap_or(&self.id)
    }
}

/// A card the virtual reader (instore-extensions §5) knows by its `testCard` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualCard {
    pub key: String,
    pub card_id: String,
    pub user_id: String,
    #[serde(default = "d_product")]
    pub product_type: String,
    #[serde(default = "d_provider")]
    pub provider: String,
    pub last_four: String,
    pub currency: String,
}

/// The virtual reader's settings: which PED registration codes connect, and on which
/// device's merchant the reader's sales are made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    #[serde(default)]
    pub peds: Vec<String>,
    /// A configured device id whose merchant and site the reader uses.
    #[serde(default)]
    pub device: String,
}

/// When notifications are sent (§2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    All,
    Final,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "d_listen")]
    pub listen: String,
    #[serde(default = "d_authorizer")]
    pub authorizer_url: String,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub processor_api_key: Option<String>,
    #[serde(default)]
    pub processor_api_secret: Option<String>,
    #[serde(default = "d_tokens")]
    pub access_tokens: Vec<String>,
    #[serde(default = "d_integrator")]
    pub integrator_token: String,
    #[serde(default = "d_auth_timeout")]
    pub authorization_timeout_ms: u64,
    #[serde(default = "d_abandon")]
    pub abandon_after_secs: u64,
    #[serde(default = "d_true")]
    pub magic_amounts: bool,
    #[serde(default = "d_notify")]
    pub notify: Notify,
    #[serde(default = "d_webhook_timeout")]
    pub webhook_timeout_ms: u64,
    #[serde(default = "d_attempts")]
    pub webhook_attempts_max: u32,
    /// First webhook retry delay; it doubles up to 60 s (§2.6 says 1 s; tests shorten it).
    #[serde(default = "d_backoff")]
    pub webhook_backoff_ms: u64,
    /// Challenge call timeout (§2.6: 5 s).
    #[serde(default = "d_challenge_timeout")]
    pub challenge_timeout_ms: u64,
    /// How long a present call waits for its follow-ups (advice, reversal, refund) to be
    /// delivered before answering; they keep being retried in the background afterwards.
    #[serde(default = "d_followup_wait")]
    pub followup_wait_ms: u64,
    #[serde(default)]
    pub transactions_csv: String,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    #[serde(default)]
    pub virtual_cards: Vec<VirtualCard>,
    #[serde(default)]
    pub reader: Option<ReaderConfig>,
}

fn d_mode() -> OperatingMode {
    OperatingMode::Pdv
}
pub(crate) fn d_product() -> String {
    "PREPAID".into()
}
pub(crate) fn d_provider() -> String {
    "MASTERCARD".into()
}
fn d_listen() -> String {
    "127.0.0.1:0".into()
}
fn d_authorizer() -> String {
    "http://127.0.0.1:8080".into()
}
fn d_tokens() -> Vec<String> {
    vec!["TEST-point-sim".into()]
}
fn d_integrator() -> String {
    "0230abf9-79e9-493b-b288-32d123456789".into()
}
fn d_auth_timeout() -> u64 {
    2000
}
fn d_abandon() -> u64 {
    900
}
fn d_true() -> bool {
    true
}
fn d_notify() -> Notify {
    Notify::All
}
fn d_webhook_timeout() -> u64 {
    5000
}
fn d_attempts() -> u32 {
    8
}
fn d_backoff() -> u64 {
    1000
}
fn d_challenge_timeout() -> u64 {
    5000
}
fn d_followup_wait() -> u64 {
    10_000
}

/// The demo device of §2.2.
pub fn demo_device() -> DeviceConfig {
    DeviceConfig {
        id: "INGENICO_MOVE2500__ING-ARG-14886780".into(),
        site: Site::Mla,
        operating_mode: OperatingMode::Pdv,
        pos_id: 47792476,
        store_id: "47792478".into(),
        external_pos_id: "SUC0101POS".into(),
        merchant: MerchantConfig {
            id: "111111111111111".into(),
            mcc: "5411".into(),
            name: "Almacen Demo".into(),
            city: "CABA".into(),
        },
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// The processor key pair the simulator signs with.
#[derive(Clone)]
pub struct Credentials {
    pub api_key: String,
    pub secret: protocol::ApiSecret,
}

/// The admin token an authorizer generated in its data directory.
pub fn read_admin_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("admin-token");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        Ok(settings::from_toml(text, "point-sim configuration")?)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_toml(&text).with_context(|| path.display().to_string())
    }

    /// The key pair: explicit settings win, else `data_dir`.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let (key, secret) = match (&self.processor_api_key, &self.processor_api_secret) {
            (Some(k), Some(s)) if !k.is_empty() && !s.is_empty() => (k.clone(), s.clone()),
            _ => match &self.data_dir {
                Some(d) => settings::read_key_file(d)?,
                None => bail!(
                    "no processor key pair: set processor_api_key and processor_api_secret, or data_dir"
                ),
            },
        };
        let secret = protocol::ApiSecret::from_base64(&secret)
            .map_err(|_| anyhow::anyhow!("the processor api secret is not valid base64"))?;
        Ok(Credentials {
            api_key: key,
            secret,
        })
    }

    /// Checks what a running simulator relies on; returns the loopback listen address.
    pub fn validate(&self) -> anyhow::Result<SocketAddr> {
        let addr = loopback_listen(&self.listen)?;
        if self.access_tokens.iter().all(|t| t.is_empty()) {
            bail!("access_tokens must hold at least one non-empty token");
        }
        if self.integrator_token.is_empty() {
            bail!("integrator_token must not be empty");
        }
        if self.webhook_attempts_max == 0 {
            bail!("webhook_attempts_max must be at least 1");
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.devices {
            if d.id.is_empty() || !seen.insert(d.id.as_str()) {
                bail!("device ids must be non-empty and unique: {:?}", d.id);
            }
        }
        let mut keys = std::collections::HashSet::new();
        for c in &self.virtual_cards {
            if !keys.insert(c.key.as_str()) {
                bail!("virtual card keys must be unique: {:?}", c.key);
            }
        }
        if let Some(r) = &self.reader
            && !r.device.is_empty()
            && !self.devices.iter().any(|d| d.id == r.device)
        {
            bail!("reader.device {:?} is not a configured device", r.device);
        }
        if !self.authorizer_url.starts_with("http://") {
            bail!(
                "authorizer_url must be an http:// URL (the simulator speaks plain HTTP on loopback)"
            );
        }
        Ok(addr)
    }
}

/// Parses `listen` and refuses anything but a loopback address.
pub fn loopback_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("listen {listen:?} is not an IP address and port"))?;
    if !addr.ip().is_loopback() {
        bail!("listen {listen:?} is not a loopback address: point-sim listens on loopback only");
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(loopback_listen("127.0.0.1:0").is_ok());
        assert!(loopback_listen("[::1]:8081").is_ok());
        assert!(loopback_listen("0.0.0.0:8081").is_err());
        assert!(loopback_listen("10.0.0.1:8081").is_err());
        assert!(loopback_listen("[::]:8081").is_err());
        assert!(loopback_listen("localhost:8081").is_err());
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::from_toml(
            r#"
listen = "127.0.0.1:0"
authorizer_url = "http://127.0.0.1:8080"
data_dir = "data"
access_tokens = ["TEST-point-sim"]
integrator_token = "0230abf9-79e9-493b-b288-32d123456789"
authorization_timeout_ms = 2000
abandon_after_secs = 900
magic_amounts = true
notify = "all"
webhook_timeout_ms = 5000
webhook_attempts_max = 8
transactions_csv = ""

[[devices]]
id = "INGENICO_MOVE2500__ING-ARG-14886780"
site = "MLA"
operating_mode = "PDV"
pos_id = 47792476
store_id = "47792478"
external_pos_id = "SUC0101POS"
merchant = { id = "111111111111111", mcc = "5411", name = "Almacen Demo", city = "CABA" }
"#,
        )
        .unwrap();
        assert_eq!(c.devices[0].terminal_id(), "ING-ARG-14886780");
        assert_eq!(c.devices[0].site.country(), "ARG");
        assert_eq!(Site::Mlm.country(), "MEX");
        assert_eq!(c.notify, Notify::All);
        assert!(c.validate().is_ok());
        let d = Config::default();
        assert_eq!(d.authorization_timeout_ms, 2000);
        assert_eq!(d.access_tokens, vec!["TEST-point-sim".to_owned()]);
    }
}
