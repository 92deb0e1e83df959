//! The simulator's configuration (spec §2.5), read from TOML.

use serde::{Deserialize, Serialize};

/// Everything the simulator is started with; every setting has a default (see
/// [`Config::default`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the wrapper API listens: a loopback address only (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// The authorizer whose channel API the simulator calls.
    pub authorizer_url: String,
    /// A `[[channels.keys]]` pair of the authorizer.
    pub channel_api_key: String,
    /// Base64 of the secret, as in the authorizer's key ring.
    pub channel_api_secret: String,
    /// V1: reservation lifetime; sent as `expires_in_secs`.
    pub reservation_expiry_secs: u64,
    /// §1.6: a refund reservation auto-captures after this.
    pub refund_auto_capture_secs: u64,
    /// V11.
    pub refund_window_days: u64,
    /// MobilePay cancels Initiated/Prepared/Paired/IssuedToUser after this long without activity.
    pub inactivity_cancel_secs: u64,
    /// V7: whether a payment may be captured in part (card scheme rules).
    pub partial_capture_possible: bool,
    /// Per-attempt timeout of a call to the authorizer (V16: 2 s).
    pub call_timeout_ms: u64,
    /// Retries after the first attempt, same idempotency key (V16: 2).
    pub call_retries: u32,
    /// HTTP workers of the wrapper API.
    pub workers: usize,
    /// The merchants, their stores and terminals.
    pub merchants: Vec<MerchantConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    #[serde(rename = "bioCode")]
    pub bio_code: String,
    /// Empty: created by `api/pos/manage/token` (S7).
    #[serde(rename = "accessToken", default)]
    pub access_token: String,
    /// Shown as the merchant name in reservations.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
    #[serde(default)]
    pub terminals: Vec<TerminalConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(rename = "storeId")]
    pub store_id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    #[serde(rename = "terminalId")]
    pub terminal_id: String,
    #[serde(rename = "storeId")]
    pub store_id: String,
    pub currency: String,
    #[serde(default = "default_mcc")]
    pub mcc: String,
    /// Empty until `api/pos/manage/create` (S8); a value here starts the terminal with a PoS.
    #[serde(rename = "posId", default)]
    pub pos_id: String,
}

fn default_mcc() -> String {
    "5999".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".into(),
            authorizer_url: "http://127.0.0.1:8080".into(),
            channel_api_key: String::new(),
            channel_api_secret: String::new(),
            reservation_expiry_secs: 604_800,
            refund_auto_capture_secs: 86_400,
            refund_window_days: 90,
            inactivity_cancel_secs: 300,
            partial_capture_possible: true,
            call_timeout_ms: 2_000,
            call_retries: 2,
            workers: 2,
            merchants: Vec::new(),
        }
    }
}

impl Config {
    /// Reads and checks a TOML file's text.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = settings::from_toml(text, "mobilepay-sim configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks a start needs: a loopback listen address, known currencies, terminals in
    /// their merchant's stores, unique ids.
    pub fn validate(&self) -> anyhow::Result<()> {
        let addr = self.listen_addr()?;
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "listen = {:?}: the simulator listens on loopback only (127.0.0.1 or ::1)",
                self.listen
            );
        }
        if self.reservation_expiry_secs == 0 || self.inactivity_cancel_secs == 0 {
            anyhow::bail!("reservation_expiry_secs and inactivity_cancel_secs must be at least 1");
        }
        let mut bios = std::collections::HashSet::new();
        let mut terminals = std::collections::HashSet::new();
        let mut poses = std::collections::HashSet::new();
        for m in &self.merchants {
            if m.bio_code.is_empty() || !bios.insert(m.bio_code.clone()) {
                anyhow::bail!("bioCode {:?} is empty or repeated", m.bio_code);
            }
            for t in &m.terminals {
                if !m.stores.iter().any(|s| s.store_id == t.store_id) {
                    anyhow::bail!(
                        "terminal {} names store {}, which merchant {} does not have",
                        t.terminal_id,
                        t.store_id,
                        m.bio_code
                    );
                }
                if !crate::amount::CURRENCIES.contains(&t.currency.as_str()) {
                    anyhow::bail!(
                        "terminal {}: currency {} (DKK or EUR)",
                        t.terminal_id,
                        t.currency
                    );
                }
                if t.terminal_id.is_empty() || !terminals.insert(t.terminal_id.clone()) {
                    anyhow::bail!("terminalId {:?} is empty or repeated", t.terminal_id);
                }
                if !t.pos_id.is_empty() && !poses.insert(t.pos_id.clone()) {
                    anyhow::bail!("posId {:?} is repeated", t.pos_id);
                }
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.listen
            .parse()
            .map_err(|_| anyhow::anyhow!("listen = {:?} is not an address", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
listen = "127.0.0.1:0"
authorizer_url = "http://127.0.0.1:8080"
channel_api_key = "k"
channel_api_secret = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E="
reservation_expiry_secs = 604800
refund_auto_capture_secs = 86400
refund_window_days = 90
inactivity_cancel_secs = 300
partial_capture_possible = true
[[merchants]]
bioCode = "bio-1001"
accessToken = ""
stores = [{ storeId = "st-1", name = "Cinema Aarhus" }]
terminals = [{ terminalId = "T-01", storeId = "st-1", currency = "DKK", mcc = "7832" }]
"#;

    #[test]
    fn reads_the_spec_example() {
        let c = Config::from_toml(SPEC).unwrap();
        assert_eq!(c.merchants[0].terminals[0].mcc, "7832");
        assert_eq!(c.call_retries, 2);
        assert_eq!(c.call_timeout_ms, 2000);
    }

    #[test]
    fn refuses_a_non_loopback_listen_address() {
        for addr in ["0.0.0.0:0", "192.168.1.4:80", "[::]:0"] {
            let text = SPEC.replace("127.0.0.1:0", addr);
            let e = Config::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains("loopback"), "{addr}: {e}");
        }
        assert!(Config::from_toml(&SPEC.replace("127.0.0.1:0", "[::1]:0")).is_ok());
    }

    #[test]
    fn refuses_a_terminal_outside_its_stores_or_currency() {
        assert!(
            Config::from_toml(&SPEC.replace(
                "storeId = \"st-1\", currency",
                "storeId = \"st-9\", currency"
            ))
            .is_err()
        );
        assert!(Config::from_toml(&SPEC.replace("\"DKK\"", "\"USD\"")).is_err());
    }
}
