//! The command line (`point-sim serve`, `point-sim load`) and the load mode: N devices
//! taking intents at a rate, with a mix of outcomes, through the simulator's own public API
//! (as a point of sale would), and a money check against our ledger at the end.

use crate::config::{Config, read_admin_token};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use processor_client::support::XorShift;
use processor_client::{Bearer, Method};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "point-sim",
    about = "In-person terminal simulator (Mercado Pago Point's Integration API) on loopback"
)]
pub struct Cli {
    /// Configuration file (TOML); the built-in defaults without it.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// The authorizer's data directory: the processor key pair (and, for load, the admin token).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The authorizer's base URL (overrides the configuration).
    #[arg(long, global = true)]
    pub authorizer_url: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the Integration API (the default).
    Serve {
        /// Listen address, loopback only (overrides the configuration).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Drive N devices at a rate with a mix of outcomes, then check the money.
    Load(LoadArgs),
    /// A demo integrator webhook: answers the challenge with the integrator token and
    /// prints each notification with its verified signature.
    Receive {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
    },
}

#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Devices (each with its own funded cardholder).
    #[arg(long, default_value_t = 4)]
    pub devices: u32,
    /// Intents per minute, over all devices.
    #[arg(long, default_value_t = 120.0)]
    pub per_minute: f64,
    /// How long to create intents, e.g. 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Outcome weights.
    #[arg(
        long,
        default_value = "approve=70,decline=10,timeout=5,abandon=5,refund=10"
    )]
    pub mix: String,
    /// Deposit per cardholder, ARS.
    #[arg(long, default_value = "100000.00")]
    pub fund: String,
    /// Admin token of the authorizer (else read from --data-dir).
    #[arg(long, env = "POINT_SIM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Abandonment timer in load mode, seconds.
    #[arg(long, default_value_t = 2)]
    pub abandon_after_secs: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 30s or 5m")),
    }
}

/// Parses the command line and runs; the exit code is 0 on success, 1 when the load's
/// money check failed, 2 when it could not run.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli: Cli = match processor_client::support::parse_args(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("point-sim: {e:#}");
            2
        }
    }
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = Some(d.clone());
    }
    if let Some(u) = &cli.authorizer_url {
        cfg.authorizer_url = u.clone();
    }
    if cfg.devices.is_empty() {
        cfg.devices.push(crate::config::demo_device());
    }
    Ok(cfg)
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let mut cfg = config(&cli)?;
    match cli.command {
        None | Some(Command::Serve { .. }) => {
            if let Some(Command::Serve { listen: Some(l) }) = &cli.command {
                cfg.listen = l.clone();
            }
            actix_rt::System::new().block_on(async move {
                let running = crate::start(cfg).await?;
                println!("point-sim listening on {}", running.url());
                let _ = tokio::signal::ctrl_c().await;
                running.stop().await;
                Ok(true)
            })
        }
        Some(Command::Receive { listen }) => {
            let addr = crate::config::loopback_listen(&listen)?;
            actix_rt::System::new().block_on(crate::receiver::serve(addr, cfg.integrator_token))?;
            Ok(true)
        }
        Some(Command::Load(args)) => {
            let token = match (&args.admin_token, &cfg.data_dir) {
                (Some(t), _) => t.clone(),
                (None, Some(d)) => read_admin_token(d)?,
                (None, None) => bail!("load needs --admin-token or --data-dir"),
            };
            actix_rt::System::new().block_on(load(cfg, args, token))
        }
    }
}

/// Outcome weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(Outcome, u32)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Approve,
    Decline,
    Timeout,
    Abandon,
    Refund,
}

impl Mix {
    pub fn parse(s: &str) -> anyhow::Result<Mix> {
        let mut out = vec![];
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?} is not name=weight"))?;
            let o = match k.trim() {
                "approve" => Outcome::Approve,
                "decline" => Outcome::Decline,
                "timeout" => Outcome::Timeout,
                "abandon" => Outcome::Abandon,
                "refund" => Outcome::Refund,
                other => bail!("unknown outcome {other:?} in the mix"),
            };
            out.push((o, v.trim().parse().context("a mix weight is an integer")?));
        }
        if out.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            bail!("the mix has no weight");
        }
        Ok(Mix(out))
    }

    fn pick(&self, r: u64) -> Outcome {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = r % total;
        for (o, w) in &self.0 {
            if x < u64::from(*w) {
                return *o;
            }
            x -= u64::from(*w);
        }
        self.0[0].0
    }
}

/// A client of the simulator's public API and of the authorizer's admin API.
struct Http {
    sim: Bearer,
    admin: Bearer,
}

#[derive(Default)]
struct Book {
    /// Expected change per user, minor units.
    delta: BTreeMap<String, i64>,
    outcomes: BTreeMap<String, u64>,
    busy: HashSet<usize>,
    in_flight: u64,
    errors: Vec<String>,
}

async fn load(mut cfg: Config, args: LoadArgs, admin_token: String) -> anyhow::Result<bool> {
    let mix = Mix::parse(&args.mix)?;
    if args.devices == 0 || args.per_minute.is_nan() || args.per_minute <= 0.0 {
        bail!("--devices and --per-minute must be positive");
    }
    let fund = crate::traffic::decimal(parse_cents(&args.fund)?);
    let template = cfg
        .devices
        .first()
        .cloned()
        .unwrap_or_else(crate::config::demo_device);
    let tag = crate::webhook::hex(&crate::webhook::random_bytes::<3>());
    cfg.devices = (0..args.devices)
        .map(|i| {
            let mut d = template.clone();
            d.id = format!("LOAD_{tag}__DEV-{i:04}");
            d.site = crate::config::Site::Mla;
            d.operating_mode = crate::config::OperatingMode::Pdv;
            d
        })
        .collect();
    cfg.listen = "127.0.0.1:0".into();
    cfg.abandon_after_secs = args.abandon_after_secs;
    cfg.transactions_csv = cfg.transactions_csv.clone();
    let timeout_ms = cfg.authorization_timeout_ms;
    let running = crate::start(cfg.clone()).await?;
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(processor_client::tls_from_env()))
        .timeout(Duration::from_secs(60))
        .finish();
    let http = Rc::new(Http {
        sim: Bearer::new(client.clone(), &running.url(), &cfg.access_tokens[0]),
        admin: Bearer::new(client, &cfg.authorizer_url, &admin_token),
    });
    // Cardholders: one per device, and one with nothing for declines.
    let users: Vec<String> = (0..args.devices)
        .map(|i| format!("ptload-{tag}-{i}"))
        .collect();
    let poor = format!("ptload-{tag}-poor");
    let mut start_balance = BTreeMap::new();
    for u in users.iter().chain([&poor]) {
        let path = format!("/v1/accounts/{u}/ARS");
        let (s, v) = http.admin.call(Method::PUT, &path, None, None).await?;
        if s != 200 && s != 201 {
            bail!("opening {u}: HTTP {s} {v}");
        }
        let v = if *u != poor {
            let (s, v) = http
                .admin
                .call(
                    Method::POST,
                    &format!("{path}/deposits"),
                    Some(&json!({"amount": fund, "reference": "point-sim load"})),
                    Some(&format!("{u}-fund")),
                )
                .await?;
            if s != 200 && s != 201 {
                bail!("funding {u}: HTTP {s} {v}");
            }
            v
        } else {
            v
        };
        start_balance.insert(
            u.clone(),
            parse_cents(v["available"].as_str().unwrap_or("x"))?,
        );
    }
    println!(
        "point-sim load: {} devices, {}/min for {:?}, simulator on {}",
        args.devices,
        args.per_minute,
        args.duration,
        running.url()
    );
    let book = Rc::new(RefCell::new(Book::default()));
    let mut rng = XorShift(u64::from_le_bytes(crate::webhook::random_bytes::<8>()) | 1);
    let interval = Duration::from_secs_f64(60.0 / args.per_minute);
    let started = Instant::now();
    let mut next_device = 0usize;
    let mut tick = actix_rt::time::interval(interval);
    while started.elapsed() < args.duration {
        tick.tick().await;
        let n = args.devices as usize;
        let free = (0..n)
            .map(|k| (next_device + k) % n)
            .find(|d| !book.borrow().busy.contains(d));
        let Some(d) = free else {
            *book
                .borrow_mut()
                .outcomes
                .entry("skipped_all_busy".into())
                .or_default() += 1;
            continue;
        };
        next_device = d + 1;
        let outcome = mix.pick(rng.next_u64());
        // 5.00 to 500.00, never a magic amount.
        let mut amount = 500 + (rng.next_u64() % 49_500) as i64;
        if [1100, 1200, 1300].contains(&amount) {
            amount += 1;
        }
        {
            let mut b = book.borrow_mut();
            b.busy.insert(d);
            b.in_flight += 1;
        }
        let dev = running.sim.cfg.devices[d].id.clone();
        let user = users[d].clone();
        let (http, book, poor) = (http.clone(), book.clone(), poor.clone());
        actix_rt::spawn(async move {
            let r = job(&http, &dev, &user, &poor, outcome, amount, timeout_ms).await;
            let mut b = book.borrow_mut();
            match r {
                Ok((name, deltas)) => {
                    *b.outcomes.entry(name).or_default() += 1;
                    for (u, x) in deltas {
                        *b.delta.entry(u).or_default() += x;
                    }
                }
                Err(e) => b.errors.push(format!("{outcome:?} on {dev}: {e:#}")),
            }
            b.busy.remove(&d);
            b.in_flight -= 1;
        });
    }
    // Let the last jobs and the follow-ups finish.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (book.borrow().in_flight > 0
        || running
            .sim
            .stats
            .followups_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
        && Instant::now() < deadline
    {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    // The money check.
    let mut passed = true;
    let (delta, outcomes, errors) = {
        let b = book.borrow();
        (b.delta.clone(), b.outcomes.clone(), b.errors.clone())
    };
    for (u, start) in &start_balance {
        let (s, v) = http
            .admin
            .call(Method::GET, &format!("/v1/accounts/{u}/ARS"), None, None)
            .await?;
        let got = if s == 200 {
            parse_cents(v["available"].as_str().unwrap_or("x")).ok()
        } else {
            None
        };
        let want = start + delta.get(u).copied().unwrap_or(0);
        if got != Some(want) {
            passed = false;
            println!("MISMATCH {u}: ledger {got:?}, expected {want} (minor units)");
        }
    }
    for e in &errors {
        passed = false;
        println!("ERROR {e}");
    }
    let stats = serde_json::to_value(running.sim.stats.snapshot())?;
    println!("outcomes: {}", serde_json::to_string(&outcomes)?);
    println!("processor traffic: {stats}");
    println!(
        "money check: {} accounts, {}",
        start_balance.len(),
        if passed {
            "every balance matches"
        } else {
            "FAILED"
        }
    );
    running.stop().await;
    Ok(passed)
}

fn parse_cents(s: &str) -> anyhow::Result<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "00"));
    let neg = int.starts_with('-');
    let i: i64 = int
        .trim_start_matches('-')
        .parse()
        .with_context(|| format!("{s:?} is not an amount"))?;
    if frac.len() != 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{s:?} is not an amount with two decimals");
    }
    let c = i * 100 + frac.parse::<i64>()?;
    Ok(if neg { -c } else { c })
}

/// Presents `card` on the device `dev`: the status and the intent as it ends.
async fn present(http: &Http, dev: &str, card: &Value) -> anyhow::Result<(u16, Value)> {
    let path = format!("/sim/devices/{dev}/present");
    Ok(http.sim.call(Method::POST, &path, Some(card), None).await?)
}

/// One intent of the given outcome: its name as observed and the expected balance changes.
async fn job(
    http: &Http,
    dev: &str,
    user: &str,
    poor: &str,
    outcome: Outcome,
    amount: i64,
    timeout_ms: u64,
) -> anyhow::Result<(String, Vec<(String, i64)>)> {
    let (s, v) = http
        .sim.call(Method::POST, &format!("/point/integration-api/devices/{dev}/payment-intents"), Some(&json!({"amount": amount, "additional_info": {"external_reference": format!("load-{amount}")}})), None)
        .await?;
    if s != 200 {
        bail!("create: HTTP {s} {v}");
    }
    if outcome == Outcome::Abandon {
        http.sim
            .call(
                Method::POST,
                &format!("/sim/devices/{dev}/fetch"),
                None,
                None,
            )
            .await?;
        let id = v["id"].as_str().unwrap_or("").to_owned();
        loop {
            actix_rt::time::sleep(Duration::from_millis(250)).await;
            let (_, i) = http
                .sim
                .call(
                    Method::GET,
                    &format!("/point/integration-api/payment-intents/{id}"),
                    None,
                    None,
                )
                .await?;
            if i["state"] == "ABANDONED" {
                return Ok(("abandoned".into(), vec![]));
            }
        }
    }
    let cardholder = if outcome == Outcome::Decline {
        poor
    } else {
        user
    };
    let mut card = json!({"card_id": format!("crd-{cardholder}"), "user_id": cardholder, "product_type": "DEBIT", "last_four": "4242", "entry_mode": "CONTACTLESS"});
    if outcome == Outcome::Timeout {
        card["answer_delay_ms"] = json!(timeout_ms + 500);
    }
    let (s, done) = present(http, dev, &card).await?;
    if s != 200 {
        bail!("present: HTTP {s} {done}");
    }
    let state = done["state"].as_str().unwrap_or("").to_owned();
    let pstate = done["payment"]["state"].as_str().unwrap_or("").to_owned();
    if state != "FINISHED" || pstate != "approved" {
        return Ok((format!("{}/{}", state.to_lowercase(), pstate), vec![]));
    }
    let mut deltas = vec![(cardholder.to_owned(), -amount)];
    if outcome != Outcome::Refund {
        return Ok(("approved".into(), deltas));
    }
    let pid = done["payment"]["id"].as_str().unwrap_or("");
    let (s, r) = http
        .sim
        .call(
            Method::POST,
            &format!("/point/integration-api/devices/{dev}/refund"),
            Some(&json!({"payment_id": pid})),
            None,
        )
        .await?;
    if s != 200 {
        bail!("refund: HTTP {s} {r}");
    }
    let (s, done) = present(http, dev, &card).await?;
    if s != 200 || done["state"] != "FINISHED" {
        bail!("refund present: HTTP {s} {done}");
    }
    deltas.push((cardholder.to_owned(), amount));
    Ok(("approved+refunded".into(), deltas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_and_durations() {
        let m = Mix::parse("approve=3,refund=1").unwrap();
        assert_eq!(m.pick(0), Outcome::Approve);
        assert_eq!(m.pick(2), Outcome::Approve);
        assert_eq!(m.pick(3), Outcome::Refund);
        assert!(Mix::parse("approve=0").is_err());
        assert!(Mix::parse("steal=1").is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 m").is_err());
        assert_eq!(parse_cents("100000.00").unwrap(), 10_000_000);
        assert_eq!(parse_cents("-0.05").unwrap(), -5);
        assert!(parse_cents("1.5").is_err());
    }
}
