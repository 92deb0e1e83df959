//! Layered, typed configuration: built-in defaults -> `config/default.toml` ->
//! `config/<AUTHORIZER_ENV>.toml` -> `AUTHORIZER__SECTION__KEY` environment variables.
//! Unknown keys are errors; every setting is validated before anything starts.

use protocol::{ApiSecret, KeyRing};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use settings::{ConfigError, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub processor: ProcessorSettings,
    pub channels: ChannelSettings,
    pub holds: HoldSettings,
    pub webhooks: WebhookSettings,
    pub instore: InstoreSettings,
    pub admin: AdminSettings,
    pub redis: RedisSettings,
    pub rules: RulesSettings,
    pub controls: ControlsSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub workers: usize,
    pub body_bytes_max: usize,
    pub request_read_ms_max: u64,
    pub drain_ms: u64,
    pub body_read_ms_max: u64,
    pub disconnect_ms_max: u64,
    pub shutdown_ms_max: u64,
    pub tls: TlsSettings,
}

/// HTTPS on the listen address when both paths are set (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_path: String,
    pub key_path: String,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub data_dir: PathBuf,
    pub pool_connections_max: u32,
    pub pool_acquire_ms_max: u64,
    pub statement_ms_max: u64,
    pub lock_wait_ms_max: u64,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub api_key: String,
    pub api_secret: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointCheck {
    Exact,
    Suffix,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSettings {
    pub api_key: String,
    pub api_secret: Secret,
    #[serde(default)]
    pub keys: Vec<KeyPair>,
    pub deadline_ms: u64,
    pub authorization_skew_secs: u64,
    pub adjustment_skew_secs: u64,
    pub endpoint_check: EndpointCheck,
    pub in_flight_wait_ms_max: u64,
    /// Adjustments, notifications, deposits and withdrawals (no deadline of their own) are
    /// answered within this time: 503 if their commit has not finished by then.
    pub answer_ms_max: u64,
    /// Requests per batch of the one writer; 1: one transaction per request.
    pub commit_batch_size_max: usize,
    pub commit_batches_in_flight_max: usize,
    /// A batch still committing after this long lets the next batch start beside it.
    pub commit_batch_overlap_ms: u64,
    /// The embedded store: how long after a batch of more than one request ended the next
    /// one waits for as many requests as it answered; 0: never wait.
    pub commit_batch_linger_us: u64,
    /// CIDR blocks allowed to call the processor routes; empty: any peer.
    pub allowed_networks: Vec<String>,
}

/// A two-phase channel's key pair (a PoS wallet): its name is recorded as the holds'
/// `channel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelKey {
    pub name: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// Where the channel's merchants are (ISO 3166-1 alpha-2 or alpha-3): the merchant
    /// country the spending controls read for a reservation whose merchant names none.
    #[serde(default)]
    pub country: Option<String>,
}

/// The channel reservation API (`/channels/v1/...`): its own key ring, signed as the
/// processor signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// Accepted clock difference of X-Timestamp, in seconds.
    pub skew_secs: u64,
    #[serde(default)]
    pub keys: Vec<ChannelKey>,
}

/// Holds reserved by channels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldSettings {
    /// Lifetime of a reservation that names none.
    pub expiry_secs: u64,
    /// The longest `expires_in_secs` a reservation may ask for.
    pub expiry_secs_max: u64,
    /// How often the sweeper expires due holds.
    pub sweep_interval_ms: u64,
    /// Refunds are refused this many days after the capture.
    pub refund_window_days: u32,
}

/// Event webhooks and the outbox dispatcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Whether this instance runs a dispatcher (events are written either way).
    pub dispatch: bool,
    /// One delivery attempt, connect to last byte.
    pub callback_timeout_ms: u64,
    /// The challenge exchange of a subscription URL.
    pub challenge_timeout_ms: u64,
    /// A delivery still failing this long after its commit (or redelivery) is DEAD.
    pub give_up_secs: u64,
    /// Rows claimed per round.
    pub batch_max: u32,
    /// Pause after a round that drained what was due (fewer than `batch_max` rows).
    pub poll_interval_ms: u64,
    /// The dispatcher thread's nice value (0 to 19; Linux, where it is per thread): above 0
    /// its sends and signatures yield the CPU to the authorizations. Postgres only (on the
    /// embedded store the dispatcher shares the writer's one connection).
    pub dispatcher_nice: i32,
    /// Subscribers' delivery rows settled (DELIVERED or DEAD) and older than this are
    /// deleted; 0 keeps every row. Callbacks are kept.
    pub retention_days: u32,
    /// A PEM file of certificates trusted for https receivers (webhooks, InStore callbacks,
    /// subscription challenges) beside the bundled Mozilla roots: a private CA, or a
    /// receiver's self-signed certificate. Empty: the bundled roots only.
    pub ca_file: String,
}

impl WebhookSettings {
    /// The TLS client configuration of every https call to a receiver: the bundled roots
    /// and `ca_file`'s certificates. A file that cannot be read, or holds no certificate,
    /// is a setting error.
    pub fn tls(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, ConfigError> {
        let file = (!self.ca_file.is_empty()).then(|| std::path::Path::new(&self.ca_file));
        processor_client::tls_config(file)
            .map_err(|e| ConfigError(format!("webhooks.ca_file: {e}")))
    }
}

/// The first path segments of the routes other than InStore's: the processor's, the
/// channels', the admin API and the service's own.
const RESERVED_FIRST_SEGMENTS: [&str; 7] = [
    "transactions",
    "channels",
    "v1",
    "healthz",
    "readyz",
    "metrics",
    "openapi.json",
];

/// The InStore payment extensions (`instore-extensions.md`), served under `base_path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstoreSettings {
    /// Where the routes live; the InStore Center registers `https://<host>{base_path}`.
    pub base_path: String,
    /// Larger bodies get 413 before anything is read.
    pub body_bytes_max: usize,
    /// Key of the hashes under which PINs and CVCs are stored. Empty: a key generated once
    /// and kept in `database.data_dir`.
    pub secret_hash_key: Secret,
    /// Consecutive wrong PINs at lookup that block a card.
    pub pin_tries_max: u32,
    /// First digits of the numbers `storedvaluecard` generates (16 digits, Luhn).
    pub card_number_prefix: String,
    /// The `method` every wallet payment and refund answer carries.
    pub wallet_method: String,
    /// A request whose commit has not started this long after it reached the writer is
    /// answered 503 and never committed (InStore resends it).
    pub ack_deadline_ms: u64,
    /// The tenants that may call; none: every request is refused as from an unknown tenant.
    #[serde(default)]
    pub tenants: Vec<instore::TenantConfig>,
}

impl InstoreSettings {
    /// The configured tenants, validated (unique ids and keys, allowed callback prefixes).
    pub fn tenants(&self) -> Result<instore::Tenants, ConfigError> {
        instore::Tenants::new(self.tenants.clone())
            .map_err(|e| ConfigError(format!("instore.tenants: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub token: Secret,
    pub rate_per_sec: u32,
    pub burst: u32,
    pub auth_failures_per_sec: u32,
    pub auth_failures_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret,
    pub key_prefix: String,
    pub command_ms_max: u64,
    pub retry_ms: u64,
    pub in_flight_ttl_secs: u64,
    pub in_flight_stale_ms: u64,
    pub answers_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    pub cache_ttl_ms: u64,
    pub cache_entries_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlsSettings {
    /// The zone of the spending controls' calendar windows: `UTC`, an IANA name (read
    /// from the system's zoneinfo) or a POSIX TZ rule.
    pub time_zone: String,
}

impl ControlsSettings {
    /// The zone the setting names.
    pub fn resolve(&self) -> Result<ledger::controls::TimeZone, ConfigError> {
        let name = self.time_zone.trim();
        let tzif = settings::system_zoneinfo(name);
        ledger::controls::time_zone(name, tzif.as_deref()).map_err(|e| ConfigError(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

impl Settings {
    /// Loads the layers from `config_dir` and the process environment.
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(config_dir, &env)
    }

    /// Loads with an explicit environment (tests).
    pub fn load_from(config_dir: &Path, env: &[(String, String)]) -> Result<Settings, ConfigError> {
        let settings: Settings = settings::load(&settings::Layers::authorizer(config_dir), env)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        self.controls.resolve()?;
        if self.listen_addr().is_err() {
            return bad(format!(
                "server.listen: '{}' is not an address like 127.0.0.1:8080",
                self.server.listen
            ));
        }
        if self.server.body_bytes_max < 1024 {
            return bad("server.body_bytes_max must be at least 1024".into());
        }
        for (name, v) in [
            (
                "server.request_read_ms_max",
                self.server.request_read_ms_max,
            ),
            ("server.body_read_ms_max", self.server.body_read_ms_max),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        let tls = &self.server.tls;
        if tls.cert_path.is_empty() != tls.key_path.is_empty() {
            return bad("server.tls.cert_path and server.tls.key_path must be set together".into());
        }
        let p = &self.processor;
        if let Err(e) = crate::security::AllowList::parse(&p.allowed_networks) {
            return bad(format!("processor.allowed_networks: {e}"));
        }
        if p.deadline_ms < 50 {
            return bad("processor.deadline_ms must be at least 50".into());
        }
        // A webhook sender's mark stays this far behind the authorizations in flight, whose
        // records' instants are their arrivals: an authorization may not wait longer.
        if i64::try_from(p.deadline_ms).unwrap_or(i64::MAX) >= store::outbox::MARK_SLACK_MS {
            return bad(format!(
                "processor.deadline_ms must be below {} (how far a webhook sender's mark stays behind)",
                store::outbox::MARK_SLACK_MS
            ));
        }
        if p.answer_ms_max == 0 {
            return bad("processor.answer_ms_max must be at least 1".into());
        }
        for (name, v) in [
            (
                "database.pool_acquire_ms_max",
                self.database.pool_acquire_ms_max,
            ),
            ("database.statement_ms_max", self.database.statement_ms_max),
            ("database.lock_wait_ms_max", self.database.lock_wait_ms_max),
        ] {
            if v == 0 || v >= p.deadline_ms {
                return bad(format!(
                    "{name} must be between 1 and processor.deadline_ms ({})",
                    p.deadline_ms
                ));
            }
        }
        if p.commit_batch_linger_us >= p.deadline_ms.saturating_mul(1000) {
            return bad(format!(
                "processor.commit_batch_linger_us must be below processor.deadline_ms ({} ms)",
                p.deadline_ms
            ));
        }
        if p.commit_batch_size_max == 0 || p.commit_batches_in_flight_max == 0 {
            return bad("processor.commit_batch_size_max and commit_batches_in_flight_max must be at least 1".into());
        }
        if self.admin.rate_per_sec == 0 || self.admin.burst == 0 {
            return bad("admin.rate_per_sec and admin.burst must be at least 1".into());
        }
        if self.admin.auth_failures_per_sec == 0 || self.admin.auth_failures_burst == 0 {
            return bad(
                "admin.auth_failures_per_sec and admin.auth_failures_burst must be at least 1"
                    .into(),
            );
        }
        let r = &self.redis;
        let url = r.url.expose();
        if !url.is_empty() && !url.starts_with("redis://") {
            return bad("redis.url must start with redis:// (or be empty)".into());
        }
        if r.command_ms_max == 0 || r.command_ms_max >= p.deadline_ms {
            return bad(format!(
                "redis.command_ms_max must be between 1 and processor.deadline_ms ({})",
                p.deadline_ms
            ));
        }
        if r.in_flight_stale_ms <= p.deadline_ms {
            return bad(format!(
                "redis.in_flight_stale_ms must exceed processor.deadline_ms ({})",
                p.deadline_ms
            ));
        }
        if r.in_flight_ttl_secs * 1000 < r.in_flight_stale_ms || r.answers_ttl_secs == 0 {
            return bad("redis.in_flight_ttl_secs must cover in_flight_stale_ms, and answers_ttl_secs be at least 1".into());
        }
        if self.database.pool_connections_max == 0 {
            return bad("database.pool_connections_max must be at least 1".into());
        }
        if p.api_key.is_empty() != p.api_secret.is_empty() {
            return bad("processor.api_key and processor.api_secret must be set together".into());
        }
        let processor_ring = self.key_ring()?;
        let channels = self.channel_ring()?;
        if let Some(k) = channels
            .keys
            .api_keys()
            .into_iter()
            .find(|k| processor_ring.get(k).is_some())
        {
            return bad(format!(
                "channels.keys: api_key {k} is also a processor key; each caller needs its own"
            ));
        }
        if let Some(k) = self.channels.keys.iter().find(|k| {
            k.country
                .as_deref()
                .is_some_and(|c| ledger::controls::Country::parse(c).is_none())
        }) {
            return bad(format!(
                "channels.keys: country of {} is not an ISO 3166-1 country code",
                k.name
            ));
        }
        let country_of = |k: &ChannelKey| {
            k.country
                .as_deref()
                .and_then(ledger::controls::Country::parse)
        };
        if let Some(k) = self.channels.keys.iter().find(|k| {
            self.channels
                .keys
                .iter()
                .any(|o| o.name == k.name && country_of(o) != country_of(k))
        }) {
            return bad(format!(
                "channels.keys: the keys named {} give different countries; a channel is in one",
                k.name
            ));
        }
        let h = &self.holds;
        if h.expiry_secs == 0 || h.expiry_secs_max == 0 || h.expiry_secs > h.expiry_secs_max {
            return bad("holds.expiry_secs must be between 1 and holds.expiry_secs_max".into());
        }
        if h.sweep_interval_ms == 0 || h.refund_window_days == 0 {
            return bad(
                "holds.sweep_interval_ms and holds.refund_window_days must be at least 1".into(),
            );
        }
        let w = &self.webhooks;
        if w.callback_timeout_ms == 0
            || w.challenge_timeout_ms == 0
            || w.give_up_secs == 0
            || w.batch_max == 0
            || w.poll_interval_ms == 0
        {
            return bad(
                "webhooks.callback_timeout_ms, challenge_timeout_ms, give_up_secs, batch_max \
                 and poll_interval_ms must be at least 1"
                    .into(),
            );
        }
        w.tls()?;
        if !(0..=19).contains(&w.dispatcher_nice) {
            return bad("webhooks.dispatcher_nice must be between 0 and 19".into());
        }
        if w.retention_days != 0 && u64::from(w.retention_days) * 86_400 <= w.give_up_secs {
            return bad(
                "webhooks.retention_days must be 0 (keep every row) or longer than give_up_secs: \
                 a DEAD delivery stays to be sent again on request"
                    .into(),
            );
        }
        let i = &self.instore;
        if !i.base_path.starts_with('/') || i.base_path.len() < 2 || i.base_path.ends_with('/') {
            return bad(format!(
                "instore.base_path: '{}' must start with '/' and not end with one (e.g. /instore)",
                i.base_path
            ));
        }
        // The InStore scope is matched first: under another route's first segment it would
        // take that route's requests (and the admin guard would count them as failed logins).
        let first = i.base_path[1..].split('/').next().unwrap_or("");
        if RESERVED_FIRST_SEGMENTS.contains(&first) {
            return bad(format!(
                "instore.base_path: '{}' is under /{first}, which other routes serve; choose \
                 another first segment (e.g. /instore)",
                i.base_path
            ));
        }
        if !(100..=60_000).contains(&i.ack_deadline_ms) {
            return bad("instore.ack_deadline_ms must be between 100 and 60000".into());
        }
        if i.body_bytes_max < 1024 || i.pin_tries_max == 0 {
            return bad(
                "instore.body_bytes_max must be at least 1024 and instore.pin_tries_max at least 1"
                    .into(),
            );
        }
        if i.card_number_prefix.is_empty()
            || i.card_number_prefix.len() > 10
            || !i.card_number_prefix.bytes().all(|b| b.is_ascii_digit())
        {
            return bad("instore.card_number_prefix must be 1 to 10 digits".into());
        }
        i.tenants()?;
        let token = self.admin.token.expose();
        if !token.is_empty() && token.len() < 16 {
            return bad("admin.token must be at least 16 characters".into());
        }
        if self
            .log
            .filter
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return bad(format!(
                "log.filter: '{}' is not a valid filter",
                self.log.filter
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.server.listen.parse()
    }

    /// Every configured processor key pair (may be empty: then `serve` generates one).
    pub fn key_ring(&self) -> Result<KeyRing, ConfigError> {
        let p = &self.processor;
        let mut ring = KeyRing::new();
        let first = (!p.api_key.is_empty()).then_some((&p.api_key, &p.api_secret));
        for (key, secret) in first
            .into_iter()
            .chain(p.keys.iter().map(|k| (&k.api_key, &k.api_secret)))
        {
            if key.is_empty() {
                return Err(ConfigError(
                    "processor.keys: an entry has an empty api_key".into(),
                ));
            }
            let s = ApiSecret::from_base64(secret.expose().trim()).map_err(|_| {
                ConfigError(format!(
                    "processor api_secret for api_key {key} is not standard base64"
                ))
            })?;
            // The same pair twice is harmless (a key being promoted may stand in both
            // places); one key with two secrets would keep one of them silently, and every
            // request signed with the other would be refused.
            if ring
                .get(key)
                .is_some_and(|known| known.to_base64() != s.to_base64())
            {
                return Err(ConfigError(format!(
                    "processor api_key {key} is configured twice with different secrets"
                )));
            }
            ring.insert(key.clone(), s);
        }
        Ok(ring)
    }

    /// The channels' key ring and each key's channel name.
    pub fn channel_ring(&self) -> Result<ChannelRing, ConfigError> {
        let mut ring = ChannelRing::default();
        for k in &self.channels.keys {
            if k.name.is_empty() || k.name.len() > 64 || !protocol::wire::is_valid_id(&k.name) {
                return Err(ConfigError(format!(
                    "channels.keys: name '{}' must be 1 to 64 visible ASCII characters",
                    k.name
                )));
            }
            if k.api_key.is_empty() || ring.names.contains_key(&k.api_key) {
                return Err(ConfigError(format!(
                    "channels.keys: api_key of {} is empty or used twice",
                    k.name
                )));
            }
            let s = ApiSecret::from_base64(k.api_secret.expose().trim()).map_err(|_| {
                ConfigError(format!(
                    "channels.keys: api_secret of {} is not standard base64",
                    k.name
                ))
            })?;
            ring.keys.insert(k.api_key.clone(), s);
            ring.names.insert(k.api_key.clone(), k.name.clone());
        }
        Ok(ring)
    }

    /// The store settings derived from `[database]`.
    pub fn store_config(&self) -> store::StoreConfig {
        let d = &self.database;
        store::StoreConfig {
            url: (!d.url.is_empty()).then(|| d.url.expose().to_owned()),
            sqlite_path: d.data_dir.join("authorizer.db"),
            pool_connections_max: d.pool_connections_max,
            pool_acquire_ms_max: d.pool_acquire_ms_max,
            statement_ms_max: d.statement_ms_max,
            lock_wait_ms_max: d.lock_wait_ms_max,
            index_probes_only: false,
            // Validated at load.
            controls_time_zone: self
                .controls
                .resolve()
                .unwrap_or(ledger::controls::TimeZone::UTC),
        }
    }
}

/// The channels' keys: the ring that verifies them, and the channel each names.
#[derive(Debug, Clone, Default)]
pub struct ChannelRing {
    pub keys: KeyRing,
    pub names: std::collections::HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn nowhere() -> PathBuf {
        PathBuf::from("/nonexistent-config-dir")
    }

    #[test]
    fn defaults_load_and_env_overrides() {
        let s = Settings::load_from(&nowhere(), &env(&[])).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.processor.deadline_ms, 800);
        assert_eq!(s.webhooks.retention_days, 30);
        assert!(s.database.url.is_empty());
        let s = Settings::load_from(
            &nowhere(),
            &env(&[
                ("AUTHORIZER__SERVER__LISTEN", "0.0.0.0:9000"),
                ("AUTHORIZER__PROCESSOR__DEADLINE_MS", "900"),
                ("DATABASE_URL", "postgres://u:pw@h/db"),
                ("AUTHORIZER__ADMIN__TOKEN", "0123456789abcdef0123"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:9000");
        assert_eq!(s.processor.deadline_ms, 900);
        assert_eq!(s.database.url.expose(), "postgres://u:pw@h/db");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("pw@h"), "{dbg}");
        assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
    }

    #[test]
    fn a_processor_key_with_two_secrets_stops_the_start() {
        let (one, two) = (
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
        let dir = tempfile::tempdir().unwrap();
        let load = |extra: &str| {
            std::fs::write(dir.path().join("default.toml"), extra).unwrap();
            Settings::load_from(
                dir.path(),
                &env(&[
                    ("AUTHORIZER__PROCESSOR__API_KEY", "k1"),
                    ("AUTHORIZER__PROCESSOR__API_SECRET", one),
                ]),
            )
        };
        let entry = |key: &str, secret: &str| {
            format!("[[processor.keys]]\napi_key = \"{key}\"\napi_secret = \"{secret}\"\n")
        };
        // The same pair in both places (a key being promoted): one key.
        let s = load(&entry("k1", one)).unwrap();
        assert_eq!(s.key_ring().unwrap().api_keys(), ["k1"]);
        let err = load(&entry("k1", two)).unwrap_err().to_string();
        assert!(err.contains("k1 is configured twice"), "{err}");
        let err = load(&entry("", two)).unwrap_err().to_string();
        assert!(err.contains("empty api_key"), "{err}");
    }

    #[test]
    fn channel_keys_and_hold_settings() {
        let s = Settings::load_from(&nowhere(), &env(&[])).unwrap();
        assert_eq!(s.channels.skew_secs, 300);
        assert!(s.channels.keys.is_empty());
        assert_eq!(
            (
                s.holds.expiry_secs,
                s.holds.expiry_secs_max,
                s.holds.sweep_interval_ms,
                s.holds.refund_window_days
            ),
            (604_800, 604_800, 60_000, 90)
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let write = |extra: &str| {
            std::fs::write(
                dir.path().join("default.toml"),
                format!(
                    "[[channels.keys]]\nname = \"mp\"\napi_key = \"k1\"\napi_secret = \"{secret}\"\n{extra}"
                ),
            )
            .unwrap();
        };
        write("");
        let s = Settings::load_from(dir.path(), &env(&[])).unwrap();
        let ring = s.channel_ring().unwrap();
        assert!(ring.keys.get("k1").is_some());
        assert_eq!(ring.names.get("k1").map(String::as_str), Some("mp"));
        // A channel's country, for the spending controls: a country code or nothing.
        write("country = \"dnk\"\n");
        let s = Settings::load_from(dir.path(), &env(&[])).unwrap();
        assert_eq!(s.channels.keys[0].country.as_deref(), Some("dnk"));
        write("country = \"XX\"\n");
        let err = Settings::load_from(dir.path(), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("country of mp is not an ISO 3166-1"), "{err}");
        // Two keys of one channel (a rotation) must agree on its country.
        write(&format!(
            "country = \"DK\"\n[[channels.keys]]\nname = \"mp\"\napi_key = \"k2\"\napi_secret = \"{secret}\"\ncountry = \"FI\"\n"
        ));
        let err = Settings::load_from(dir.path(), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the keys named mp give different countries"),
            "{err}"
        );
        // A key of both rings is refused: each caller signs with its own.
        let err = Settings::load_from(
            dir.path(),
            &env(&[
                ("AUTHORIZER__PROCESSOR__API_KEY", "k1"),
                ("AUTHORIZER__PROCESSOR__API_SECRET", secret),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("also a processor key"), "{err}");
        write("[[channels.keys]]\nname = \"mp 2\"\napi_key = \"k2\"\napi_secret = \"x\"\n");
        let err = Settings::load_from(dir.path(), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.keys"), "{err}");
        for (k, v) in [
            ("AUTHORIZER__HOLDS__EXPIRY_SECS", "604801"),
            ("AUTHORIZER__HOLDS__EXPIRY_SECS", "0"),
            ("AUTHORIZER__HOLDS__SWEEP_INTERVAL_MS", "0"),
            ("AUTHORIZER__WEBHOOKS__GIVE_UP_SECS", "0"),
            ("AUTHORIZER__WEBHOOKS__BATCH_MAX", "0"),
        ] {
            let err = Settings::load_from(&nowhere(), &env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            let section = if k.contains("WEBHOOKS") {
                "webhooks."
            } else {
                "holds."
            };
            assert!(err.contains(section), "{k}={v}: {err}");
        }
    }

    #[test]
    fn bad_settings_fail_naming_the_setting() {
        let cases = [
            ("AUTHORIZER__SERVER__LISTEN", "nowhere", "server.listen"),
            (
                "AUTHORIZER__SERVER__LISTEN_ADDR",
                "x",
                "unknown setting 'listen_addr'",
            ),
            ("AUTHORIZER__NOPE__X", "1", "unknown section 'nope'"),
            ("AUTHORIZER__PROCESSOR__DEADLINE_MS", "soon", "deadline_ms"),
            (
                "AUTHORIZER__PROCESSOR__DEADLINE_MS",
                "60000",
                "processor.deadline_ms must be below 60000",
            ),
            (
                "AUTHORIZER__DATABASE__STATEMENT_MS_MAX",
                "5000",
                "database.statement_ms_max",
            ),
            ("AUTHORIZER__ADMIN__TOKEN", "short", "admin.token"),
            (
                "AUTHORIZER__ADMIN__AUTH_FAILURES_BURST",
                "0",
                "admin.auth_failures_per_sec and admin.auth_failures_burst",
            ),
            ("AUTHORIZER__PROCESSOR__API_KEY", "k", "set together"),
            (
                "AUTHORIZER__PROCESSOR__COMMIT_BATCH_LINGER_US",
                "800000",
                "processor.commit_batch_linger_us",
            ),
            (
                "AUTHORIZER__INSTORE__BASE_PATH",
                "/v1/instore",
                "instore.base_path: '/v1/instore' is under /v1",
            ),
            (
                "AUTHORIZER__INSTORE__BASE_PATH",
                "/channels",
                "is under /channels",
            ),
            (
                "AUTHORIZER__WEBHOOKS__CA_FILE",
                "/nonexistent/ca.pem",
                "webhooks.ca_file: /nonexistent/ca.pem",
            ),
            (
                "AUTHORIZER__WEBHOOKS__RETENTION_DAYS",
                "1",
                "webhooks.retention_days must be 0 (keep every row) or longer than give_up_secs",
            ),
        ];
        for (k, v, want) in cases {
            let err = Settings::load_from(&nowhere(), &env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{k}={v}: {err}");
        }
        let err = Settings::load_from(
            &nowhere(),
            &env(&[
                ("AUTHORIZER__PROCESSOR__API_KEY", "k"),
                ("AUTHORIZER__PROCESSOR__API_SECRET", "%%%"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("not standard base64") && !err.contains("%%%"),
            "{err}"
        );
    }

    #[test]
    fn files_layer_in_order() {
        let dir = std::env::temp_dir().join(format!("authz-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("default.toml"), "[server]\nworkers = 3\n").unwrap();
        std::fs::write(
            dir.join("prod.toml"),
            "[server]\nworkers = 5\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let s = Settings::load_from(&dir, &env(&[])).unwrap();
        assert_eq!(s.server.workers, 3);
        let s = Settings::load_from(&dir, &env(&[("AUTHORIZER_ENV", "prod")])).unwrap();
        assert_eq!(s.server.workers, 5);
        assert_eq!(s.log.format, LogFormat::Json);
        assert!(Settings::load_from(&dir, &env(&[("AUTHORIZER_ENV", "nope")])).is_err());
        std::fs::write(dir.join("default.toml"), "[server]\nworkerz = 3\n").unwrap();
        assert!(
            Settings::load_from(&dir, &env(&[]))
                .unwrap_err()
                .to_string()
                .contains("workerz")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
