//! The reconciler's settings: `config/reconciler.toml` (built in, and read from the config
//! directory), `config/reconciler.<RECONCILER_ENV>.toml`, then `RECONCILER__SECTION__KEY`.

use crate::parse::FileColumns;
use crate::schedule::{Cron, Zone, parse_offset};
use serde::Deserialize;
use settings::{ConfigError, Secret};
use std::path::{Path, PathBuf};

const BUILT_IN: &str = include_str!("../../../config/reconciler.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub source: SourceSettings,
    pub sftp: SftpSettings,
    pub files: FileSettings,
    pub csv: CsvSettings,
    pub mapping: Mapping,
    pub matching: MatchingSettings,
    pub report: ReportSettings,
    pub schedule: ScheduleSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub kind: String,
    pub staging_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub private_key: String,
    pub private_key_passphrase: Secret,
    pub password: Secret,
    pub host_key_sha256: String,
    pub remote_dir: String,
    pub connect_timeout_ms: u64,
    pub attempts: u32,
    pub backoff_ms: u64,
    pub min_file_age_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub transactions: String,
    pub presentments: String,
    pub date_format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettings {
    pub delimiter: String,
    pub decimal_separator: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub transactions: TransactionColumns,
    pub presentments: PresentmentColumns,
}

/// Header names of the transactions file's columns; empty for a column the file lacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionColumns {
    pub transaction_id: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub tx_type: String,
    pub status: String,
    pub direction: String,
    pub amount: String,
    pub currency: String,
    pub original_transaction_id: String,
    pub card_id: String,
    pub user_id: String,
    pub date: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentmentColumns {
    pub transaction_id: String,
    pub direction: String,
    pub amount: String,
    pub currency: String,
    pub card_id: String,
    pub date: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingSettings {
    pub utc_offset: String,
    /// A time zone of the tz database (`America/Santiago`): when set, the business day is
    /// counted in it, daylight saving time and all, instead of at `utc_offset`.
    #[serde(default)]
    pub time_zone: String,
    pub presentment_tolerance_minor: i64,
    /// Per currency, `"<code> <amount>"` in the currency's major units (`"ARS 0.10"`):
    /// replaces `presentment_tolerance_minor` for that currency.
    pub presentment_tolerance: Vec<String>,
    pub grace_minutes: i64,
    /// Ledger entries matched together at most: a larger day is split by transaction id
    /// into partitions of about this many, spilled to the staging directory, so memory
    /// does not grow with the day (about 100 bytes per entry, two partitions at a time).
    pub partition_entries: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    pub dir: PathBuf,
    pub break_threshold: u64,
    pub largest: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    pub cron: String,
    pub catch_up_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub filter: String,
}

/// Where the files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Sftp,
    Dir(PathBuf),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, ConfigError> {
        match s {
            "sftp" => Ok(Source::Sftp),
            _ => match s.strip_prefix("dir:") {
                Some(p) if !p.is_empty() => Ok(Source::Dir(PathBuf::from(p))),
                _ => Err(ConfigError(format!(
                    "source '{s}' must be \"sftp\" or \"dir:/path\""
                ))),
            },
        }
    }
}

impl MatchingSettings {
    /// Where the business day is counted: `time_zone` when set, else `utc_offset`.
    pub fn zone(&self) -> anyhow::Result<Zone> {
        Zone::parse(&self.utc_offset, &self.time_zone)
    }
}

impl Settings {
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(config_dir, &env)
    }

    pub fn load_from(config_dir: &Path, env: &[(String, String)]) -> Result<Settings, ConfigError> {
        let layers = settings::Layers {
            built_in: BUILT_IN,
            config_dir,
            base_file: "reconciler.toml",
            env_name_var: "RECONCILER_ENV",
            env_file_prefix: "reconciler.",
            prefix: "RECONCILER__",
            aliases: &[("DATABASE_URL", &["database", "url"])],
            open_keys: &[],
        };
        let s: Settings = settings::load(&layers, env)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        Source::parse(&self.source.kind)?;
        if let Err(e) = parse_offset(&self.matching.utc_offset) {
            return bad(format!("matching.utc_offset: {e}"));
        }
        if let Err(e) = self.matching.zone() {
            return bad(format!("matching.time_zone: {e:#}"));
        }
        if let Err(e) = Cron::parse(&self.schedule.cron) {
            return bad(format!("schedule.cron: {e}"));
        }
        if !(1..=31).contains(&self.schedule.catch_up_days) {
            return bad("schedule.catch_up_days must be 1 to 31".into());
        }
        if self.csv.delimiter.len() != 1 {
            return bad("csv.delimiter must be one character".into());
        }
        if !matches!(self.csv.decimal_separator.as_str(), "." | ",") {
            return bad("csv.decimal_separator must be \".\" or \",\"".into());
        }
        if self.csv.decimal_separator == self.csv.delimiter {
            return bad("csv.decimal_separator and csv.delimiter must differ".into());
        }
        if self.matching.partition_entries == 0 {
            return bad("matching.partition_entries must be at least 1".into());
        }
        if self.matching.presentment_tolerance_minor < 0 || self.matching.grace_minutes < 0 {
            return bad(
                "matching.presentment_tolerance_minor and grace_minutes cannot be negative".into(),
            );
        }
        self.presentment_tolerances()?;
        // The day's last minutes and the next day's first must not meet.
        if self.matching.grace_minutes >= 720 {
            return bad("matching.grace_minutes must be under 720 (12 hours)".into());
        }
        let m = &self.mapping;
        for (file, wanted) in [
            ("transactions", m.transactions.wanted()),
            ("presentments", m.presentments.wanted()),
        ] {
            if let Some((name, _, _)) = wanted.iter().find(|(_, h, req)| *req && h.is_empty()) {
                return bad(format!("mapping.{file}.{name} is required"));
            }
        }
        Ok(())
    }

    /// `matching.presentment_tolerance` in each currency's minor units: each entry a listed
    /// ISO 4217 code and an amount that is not negative and exact to its minor unit, each
    /// currency once.
    pub fn presentment_tolerances(&self) -> Result<Vec<(ledger::Currency, i64)>, ConfigError> {
        let mut out: Vec<(ledger::Currency, i64)> = Vec::new();
        for entry in &self.matching.presentment_tolerance {
            let bad = |why: String| {
                ConfigError(format!("matching.presentment_tolerance: \"{entry}\" {why}"))
            };
            let mut words = entry.split_whitespace();
            let (Some(code), Some(amount), None) = (words.next(), words.next(), words.next())
            else {
                return Err(bad(
                    "must be a currency code and an amount, e.g. \"ARS 0.10\"".into(),
                ));
            };
            let currency = ledger::Currency::parse(code).map_err(|e| bad(e.to_string()))?;
            let minor = amount
                .parse::<rust_decimal::Decimal>()
                .ok()
                .filter(|d| !d.is_sign_negative())
                .and_then(|d| ledger::money::to_minor(d, currency).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "must hold an amount that is not negative, with at most {} decimals",
                        currency.exponent()
                    ))
                })?;
            if out.iter().any(|(c, _)| *c == currency) {
                return Err(bad(format!("names {currency} a second time")));
            }
            out.push((currency, minor));
        }
        Ok(out)
    }

    /// The store settings: the same database as the authorizer.
    #[cfg(feature = "service")]
    pub fn store_config(&self) -> store::StoreConfig {
        store::StoreConfig {
            url: (!self.database.url.is_empty()).then(|| self.database.url.expose().to_owned()),
            sqlite_path: self.database.data_dir.join("authorizer.db"),
            pool_connections_max: 4,
            pool_acquire_ms_max: 30_000,
            statement_ms_max: 600_000,
            lock_wait_ms_max: 30_000,
            index_probes_only: false,
            controls_time_zone: ledger::controls::TimeZone::UTC,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::load_from(Path::new("/nonexistent"), &env(&[])).unwrap();
        assert_eq!(s.mapping.transactions.amount, "local_amount");
        assert_eq!(Source::parse(&s.source.kind).unwrap(), Source::Sftp);
        assert_eq!(s.matching.partition_entries, 400_000);
        let s = Settings::load_from(
            Path::new("/nonexistent"),
            &env(&[
                ("RECONCILER__SOURCE__KIND", "dir:/in"),
                ("RECONCILER__SFTP__PORT", "2222"),
                ("RECONCILER__SFTP__PASSWORD", "pw-123"),
                ("RECONCILER__MATCHING__PARTITION_ENTRIES", "1000"),
            ]),
        )
        .unwrap();
        assert_eq!(
            Source::parse(&s.source.kind).unwrap(),
            Source::Dir("/in".into())
        );
        assert_eq!(s.sftp.port, 2222);
        assert_eq!(s.matching.partition_entries, 1000);
        assert!(!format!("{s:?}").contains("pw-123"));
    }

    #[test]
    fn presentment_tolerances_per_currency() {
        let var = "RECONCILER__MATCHING__PRESENTMENT_TOLERANCE";
        let s = Settings::load_from(
            Path::new("/nonexistent"),
            &env(&[(var, "ARS 0.10, CLP 10,KWD 0.005")]),
        )
        .unwrap();
        let c = |code: &str| ledger::Currency::parse(code).unwrap();
        assert_eq!(
            s.presentment_tolerances().unwrap(),
            [(c("ARS"), 10), (c("CLP"), 10), (c("KWD"), 5)]
        );
        for (value, want) in [
            ("ARS 0.001", "at most 2 decimals"),
            ("CLP 0.5", "at most 0 decimals"),
            ("USD -1", "not negative"),
            ("USD ten", "not negative"),
            ("XYZ 1", "not an ISO 4217 currency"),
            ("ARS", "a currency code and an amount"),
            ("ARS 1,ARS 2", "names ARS a second time"),
        ] {
            let e =
                Settings::load_from(Path::new("/nonexistent"), &env(&[(var, value)])).unwrap_err();
            assert!(
                e.0.contains("matching.presentment_tolerance") && e.0.contains(want),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn bad_settings_are_named() {
        for (k, v, want) in [
            ("RECONCILER__SCHEDULE__CRON", "every day", "schedule.cron"),
            (
                "RECONCILER__MATCHING__UTC_OFFSET",
                "ART",
                "matching.utc_offset",
            ),
            (
                "RECONCILER__MATCHING__TIME_ZONE",
                "America/Atlantis",
                "matching.time_zone",
            ),
            ("RECONCILER__SOURCE__KIND", "ftp", "source"),
            (
                "RECONCILER__CSV__DECIMAL_SEPARATOR",
                ";",
                "decimal_separator",
            ),
            (
                "RECONCILER__MAPPING__TRANSACTIONS__AMOUNT",
                "",
                "mapping.transactions.amount",
            ),
            ("RECONCILER__SFTP__PORT", "abc", "sftp.port"),
            (
                "RECONCILER__MATCHING__PARTITION_ENTRIES",
                "0",
                "matching.partition_entries",
            ),
        ] {
            let e = Settings::load_from(Path::new("/nonexistent"), &env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
    }
}
