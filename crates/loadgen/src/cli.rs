//! Command line and the run's resolved configuration.

use crate::mix::{DEFAULT_MIX, Mix};
use crate::rng::Skew;
use crate::schedule::TurnCut;
use anyhow::{Context, bail};
use protocol::ApiSecret;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Signed-traffic load generator for the authorizer.
///
/// Opens and funds its own accounts through the admin API, sends processor traffic signed as the
/// processor signs it (open loop at a fixed rate, or closed loop with N connections), verifies
/// every answer and, at the end, every touched balance to the minor unit. Writes report.json and
/// two SVG plots to --out. Exits non-zero on any error, signature failure or money mismatch.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    /// Base URL of the authorizer.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Processor api key (X-Api-Key).
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Processor api secret (base64), signs requests and verifies answers.
    #[arg(long, env = "LOADGEN_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Admin API bearer token (opens, funds and reads back the accounts).
    #[arg(long, env = "LOADGEN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Read missing credentials from an authorizer data directory (processor-key.toml, admin-token).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Open loop: requests per second, scheduled on a clock whatever the answers do.
    #[arg(long, value_name = "N", conflicts_with = "connections")]
    pub rate: Option<f64>,
    /// Closed loop: N connections, each sending its next request as soon as it has an answer.
    #[arg(long, value_name = "N")]
    pub connections: Option<u32>,
    /// Worker threads (one HTTP client each).
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Open loop: at most this many connections per worker thread (further requests queue, and
    /// the queueing counts in their latency).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub pool: u32,
    /// Measured time, e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic before the measured window (not recorded; its money is still checked).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// A request without an answer after this long counts as a timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Traffic mix: kind=weight, kinds purchase, withdrawal, balance, refund, adjustment,
    /// notification, duplicate.
    #[arg(long, default_value = DEFAULT_MIX)]
    pub mix: Mix,
    /// Number of accounts to open, fund and spread the traffic over.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: u32,
    /// How the traffic is spread over the accounts: uniform or zipf:<exponent>.
    #[arg(long, default_value = "uniform")]
    pub skew: Skew,
    /// Seed of the traffic (kinds, accounts, amounts).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Currency of the accounts.
    #[arg(long, default_value = "ARS")]
    pub currency: String,
    /// Deposit made to every account before the run (decimal).
    #[arg(long, default_value = "100000.00")]
    pub fund: String,
    /// Prefix of the user ids (default: lg- and a random tag, so every run has fresh accounts;
    /// reuse a prefix to run against the same accounts again).
    #[arg(long)]
    pub user_prefix: Option<String>,
    /// A spending controls document (JSON, as `PUT /v1/accounts/{user}/{currency}/controls`
    /// takes it) set on every account after funding it.
    #[arg(long, value_name = "FILE")]
    pub controls: Option<PathBuf>,
    /// Concurrent admin requests while opening, funding and reading back the accounts.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,

    /// Where report.json, latency-over-time.svg and latency-percentiles.svg are written.
    #[arg(long, default_value = "loadgen-report", value_name = "DIR")]
    pub out: PathBuf,
    /// A command run (with sh -c) after the traffic, which must exit 0, e.g.
    /// "target/release/authorizer audit".
    #[arg(long, value_name = "COMMAND")]
    pub audit_cmd: Option<String>,

    /// Cut the measured window into turns this long, each with latency figures of its own
    /// (report.json `turns`): two sides of a comparison alternating within one load, e.g. 10s.
    #[arg(long, value_parser = parse_duration, requires = "turn_cmd")]
    pub turn: Option<Duration>,
    /// Run (with sh -c, the turn's number 0, 1, 2... appended) at the start of each turn: what
    /// changes the side, e.g. attaches or detaches a subscriber. A failure fails the run.
    #[arg(long, value_name = "COMMAND", requires = "turn")]
    pub turn_cmd: Option<String>,
    /// The start of each turn left out of its figures, while the command's change takes hold.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub turn_skip: Duration,
}

/// `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{s}' (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is out of range"))
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Open { rate: f64 },
    Closed { connections: u32 },
}

/// Everything the run needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub api_key: String,
    pub secret: ApiSecret,
    pub admin_token: String,
    pub mode: Mode,
    pub threads: u32,
    pub pool: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub mix: Mix,
    pub accounts: u32,
    pub skew: Skew,
    pub seed: u64,
    pub currency: String,
    pub exponent: u8,
    /// Deposit per account, minor units.
    pub fund: i64,
    pub user_prefix: String,
    pub setup_concurrency: usize,
    /// The controls document set on every account.
    pub controls: Option<serde_json::Value>,
    pub out: PathBuf,
    pub audit_cmd: Option<String>,
    pub turns: Option<Turns>,
}

/// The measured window in turns (`--turn`).
#[derive(Debug, Clone, PartialEq)]
pub struct Turns {
    /// How long a turn lasts, and what its figures leave out of its start.
    pub cut: TurnCut,
    /// Run at the start of each turn, with its number appended.
    pub command: String,
}

/// The processor key pair and admin token an authorizer generated in its data directory.
pub fn read_data_dir(dir: &Path) -> anyhow::Result<(String, String, String)> {
    let (api_key, api_secret) = settings::read_key_file(dir)?;
    let token_path = dir.join("admin-token");
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("cannot read {}", token_path.display()))?;
    Ok((api_key, api_secret, token.trim().to_owned()))
}

fn random_tag() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Cli {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let from_dir = match &self.data_dir {
            Some(d) => Some(read_data_dir(d)?),
            None => None,
        };
        let pick =
            |flag: Option<String>, f: fn(&(String, String, String)) -> &String, what: &str| {
                flag.filter(|v| !v.is_empty())
                    .or_else(|| from_dir.as_ref().map(|d| f(d).clone()))
                    .with_context(|| {
                        format!(
                            "no {what}: pass --{what}, set LOADGEN_{}, or --data-dir",
                            what.replace('-', "_").to_uppercase()
                        )
                    })
            };
        let api_key = pick(self.api_key, |d| &d.0, "api-key")?;
        let secret_text = pick(self.api_secret, |d| &d.1, "api-secret")?;
        let admin_token = pick(self.admin_token, |d| &d.2, "admin-token")?;
        let secret = ApiSecret::from_base64(&secret_text)
            .map_err(|_| anyhow::anyhow!("the api secret is not valid base64"))?;
        let mode = match (self.rate, self.connections) {
            (Some(r), None) if r.is_finite() && r > 0.0 => Mode::Open { rate: r },
            (Some(_), None) => bail!("--rate must be a positive number"),
            (None, Some(c)) if c > 0 => Mode::Closed { connections: c },
            (None, Some(_)) => bail!("--connections must be at least 1"),
            _ => bail!(
                "choose --rate N (open loop, requests per second) or --connections N (closed loop)"
            ),
        };
        if self.threads == 0 || self.pool == 0 || self.setup_concurrency == 0 {
            bail!("--threads, --pool and --setup-concurrency must be at least 1");
        }
        if self.accounts == 0 {
            bail!("--accounts must be at least 1");
        }
        if self.duration.is_zero() || self.timeout.is_zero() {
            bail!("--duration and --timeout must be positive");
        }
        let turns = match (self.turn, self.turn_cmd) {
            (Some(every), Some(command)) => {
                if every <= self.turn_skip {
                    bail!("--turn must be longer than --turn-skip");
                }
                if every > self.duration {
                    bail!("--turn cannot be longer than --duration");
                }
                Some(Turns {
                    cut: TurnCut {
                        every,
                        skip: self.turn_skip,
                    },
                    command,
                })
            }
            _ => None,
        };
        let currency = ledger::Currency::parse(&self.currency)
            .map_err(|e| anyhow::anyhow!("--currency: {e}"))?;
        let exponent = currency.exponent();
        let fund = crate::money::parse_minor(&self.fund, exponent)
            .with_context(|| format!("--fund for {}", self.currency))?;
        if fund < 0 {
            bail!("--fund cannot be negative");
        }
        let controls = match &self.controls {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?,
                )
            }
            None => None,
        };
        Ok(Config {
            url: self.url.trim_end_matches('/').to_owned(),
            api_key,
            secret,
            admin_token,
            mode,
            threads: self.threads,
            pool: self.pool,
            duration: self.duration,
            warmup: self.warmup,
            timeout: self.timeout,
            mix: self.mix,
            accounts: self.accounts,
            skew: self.skew,
            seed: self.seed,
            currency: currency.code().to_owned(),
            exponent,
            fund,
            user_prefix: self
                .user_prefix
                .unwrap_or_else(|| format!("lg-{}", random_tag())),
            setup_concurrency: self.setup_concurrency,
            controls,
            out: self.out,
            audit_cmd: self.audit_cmd.filter(|c| !c.trim().is_empty()),
            turns,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn credentials_come_from_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("processor-key.toml"),
            "# Processor key pair for this data directory.\napi_key = \"k1\"\napi_secret = \"uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("admin-token"), "tok\n").unwrap();
        let cli = Cli::try_parse_from([
            "loadgen",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--rate",
            "100",
            "--api-key",
            "override",
        ])
        .unwrap();
        let c = cli.resolve().unwrap();
        assert_eq!(c.api_key, "override", "a flag wins over the data directory");
        assert_eq!(c.admin_token, "tok");
        assert_eq!(c.mode, Mode::Open { rate: 100.0 });
        assert_eq!((c.exponent, c.fund), (2, 10_000_000));
        assert!(c.user_prefix.starts_with("lg-"));
    }

    /// The program name and credentials, without a mode.
    pub(crate) const CREDENTIALS: [&str; 7] = [
        "loadgen",
        "--api-key",
        "k",
        "--api-secret",
        "c2VjcmV0",
        "--admin-token",
        "t",
    ];

    #[test]
    fn a_mode_is_required_and_exclusive() {
        let base = CREDENTIALS;
        let e = Cli::try_parse_from(base).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("--rate"));
        let both = [&base[..], &["--rate", "1", "--connections", "2"]].concat();
        assert!(Cli::try_parse_from(both).is_err());
        let closed = [&base[..], &["--connections", "16"]].concat();
        let c = Cli::try_parse_from(closed).unwrap().resolve().unwrap();
        assert_eq!(c.mode, Mode::Closed { connections: 16 });
    }

    #[test]
    fn turns_need_their_command_and_a_length_past_the_skip() {
        let open = [&CREDENTIALS[..], &["--rate", "10", "--duration", "1m"]].concat();
        let c = Cli::try_parse_from(&open).unwrap().resolve().unwrap();
        assert_eq!(c.turns, None);
        let alone = [&open[..], &["--turn", "10s"]].concat();
        assert!(
            Cli::try_parse_from(alone).is_err(),
            "--turn without --turn-cmd"
        );
        let cmd_alone = [&open[..], &["--turn-cmd", "true"]].concat();
        assert!(
            Cli::try_parse_from(cmd_alone).is_err(),
            "--turn-cmd without --turn"
        );
        let turns = [&open[..], &["--turn", "10s", "--turn-cmd", "echo"]].concat();
        let c = Cli::try_parse_from(&turns).unwrap().resolve().unwrap();
        assert_eq!(
            c.turns,
            Some(Turns {
                cut: TurnCut {
                    every: Duration::from_secs(10),
                    skip: Duration::from_secs(2),
                },
                command: "echo".into(),
            })
        );
        let short = [&turns[..], &["--turn-skip", "10s"]].concat();
        let e = Cli::try_parse_from(short).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("--turn-skip"), "{e}");
        let long = [&open[..], &["--turn", "2m", "--turn-cmd", "echo"]].concat();
        let e = Cli::try_parse_from(long).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("--duration"), "{e}");
    }
}
