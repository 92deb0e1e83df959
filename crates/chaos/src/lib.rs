//! Chaos run: the real `authorizer` binary on a private Postgres cluster, under steady
//! signed traffic, while faults are injected one after another:
//!
//! 1. **crash**: SIGKILL at random moments, restart, continue;
//! 2. **db-outage**: the database stopped (fast, then immediate) and started again;
//!    **db-freeze**: every server process stopped with SIGSTOP past the client's patience;
//! 3. **slow-db**: another session holds row locks past the 800 ms deadline, with the default
//!    lock timeout and with lock and statement timeouts just under the deadline;
//! 4. **duplicate-storm**: every request sent 2 to 5 times, at once and later, some under a
//!    new key, then replayed again after a crash wiped the in-memory answers;
//! 5. **clock-skew**: signatures outside and inside the accepted window;
//! 6. **malformed-input**: bad signatures and bodies.
//!
//! Beside the processor's traffic, through every phase, a PoS wallet (its own
//! `[[channels.keys]]` key pair) reserves on the same accounts and captures (in full or in
//! part), cancels, lets expire (by the sweeper and lazily) or keeps each hold, and refunds
//! captures, resending under the same key until answered (see [`channels`]). And an InStore
//! store (a tenant configured on this run's authorizer, calling back to a receiver in this
//! process) loads, redeems and cancels on stored-value numbers linked to the first accounts,
//! and takes wallet payments by barcode from them, refunding or reversing some,
//! its envelopes signed as InStore signs them and resent under the same `requestId` until
//! acknowledged (see [`instore`]). A subscriber in this process takes every event the
//! authorizer publishes (see [`webhooks`]).
//!
//! Then, acting as the processor, it resends what was not stored and sends a REJECTED advice
//! for every authorization whose answer was lost, and checks: nothing the client saw is
//! missing from the ledger, nothing is booked twice, no SYSTEM_ERROR or refused request is
//! booked, every posted balance is exactly the funding plus the answers (the wallet's captures
//! and refunds included), every held amount exactly the holds the wallet saw approved and not
//! ended, every hold in the ledger one the wallet saw approved, in the state it saw, with one
//! capture movement at most and refunds never above it, every acknowledged InStore request's
//! callback received at least once with every copy byte-identical (body and signature) and
//! exactly one movement for it (none for a decline) of the amount its
//! callback told (those amounts are in the posted balances above), every event owed to the
//! subscriber delivered, byte-identical and signed in every copy (every answered
//! authorization's among them), and `authorizer audit`
//! (with its hold and InStore checks) is clean. A JSON summary is printed and written; the exit code is 1 on any violation.
//!
//! `scripts/chaos` starts the private cluster and runs this; see its header.

pub mod channels;
pub mod control;
pub mod engine;
pub mod faults;
pub mod instore;
pub mod verify;
pub mod webhooks;

use anyhow::Context;
use control::{Authorizer, Postgres};
use engine::{Engine, PhaseStats, Traffics};
use faults::Plan;
use loadgen::http::Http;
use loadgen::rng::{AccountSampler, Skew};
use loadgen::traffic::Traffic;
use serde::Serialize;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The processor's published demo key pair: this run's authorizer is private and throwaway.
const API_KEY: &str = "Lp0g+cwb19eEfTn1YIOydEnqPcZOg8YxHctnMe+1cQA=";
const API_SECRET: &str = "uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=";

/// The hold sweeper's interval on this run's authorizer: short, so that holds expire during
/// the run both by the sweeper and lazily (a capture just after the expiry).
pub(crate) const SWEEP_INTERVAL_MS: u64 = 1500;

/// Fault injection against a real authorizer and a private Postgres.
#[derive(Debug, clap::Parser)]
#[command(name = "chaos", version)]
pub struct Cli {
    /// The authorizer binary to run.
    #[arg(long)]
    pub authorizer: PathBuf,
    /// Its configuration directory.
    #[arg(long, default_value = "config")]
    pub config_dir: PathBuf,
    /// Postgres URL of the (private, throwaway) database the authorizer uses; a superuser,
    /// as the lock holder and the checks connect with it too.
    #[arg(long)]
    pub database_url: String,
    /// pg_ctl of the private cluster as a command prefix; the run appends `-w -m fast stop`
    /// and `-w start`.
    #[arg(long)]
    pub pg_ctl: String,
    /// Directory for the authorizer's data dir, its log and the summary.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// Port of the authorizer.
    #[arg(long, default_value_t = 18480)]
    pub port: u16,
    /// The short variant (CI): fewer cycles, shorter phases.
    #[arg(long)]
    pub quick: bool,
    /// Kill -9 cycles (default 60, quick 5).
    #[arg(long)]
    pub crash_cycles: Option<u32>,
    /// Database stops (default 4, quick 1).
    #[arg(long)]
    pub outages: Option<u32>,
    /// Database freezes, SIGSTOP of every server process (default 2, quick 1).
    #[arg(long)]
    pub freezes: Option<u32>,
    /// The private cluster's data directory (for the server's process ids).
    #[arg(long)]
    pub pg_data: PathBuf,
    /// New requests per second during the faults.
    #[arg(long)]
    pub rate: Option<f64>,
    /// New channel reservations per second beside them (default 12, quick 8; 0: none).
    #[arg(long)]
    pub channel_rate: Option<f64>,
    /// New InStore Loads and Redeems per second beside them (default 6, quick 4; 0: none).
    #[arg(long)]
    pub instore_rate: Option<f64>,
    /// Run without the webhook subscriber: no event is owed, and none is checked.
    #[arg(long)]
    pub no_subscriber: bool,
    /// Loopback port of the InStore callback receiver (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub callback_port: u16,
    #[arg(long, default_value_t = 200)]
    pub accounts: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The authorizer's processor.deadline_ms (set on it, and held against every answer).
    #[arg(long, default_value_t = 800)]
    pub deadline_ms: u64,
    /// How far past the deadline an authorization's answer may arrive (the commit already
    /// started then, and its outcome is awaited).
    #[arg(long, default_value_t = 200)]
    pub margin_ms: u64,
    /// The client gives up on an answer after this long: a hang.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Where the JSON summary goes (default WORK_DIR/summary.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub passed: bool,
    pub mode: &'static str,
    pub seed: u64,
    pub duration_s: f64,
    /// Logical requests (one idempotency key and body each).
    pub requests_sent: u64,
    /// Every HTTP request, duplicates and resends included.
    pub http_requests: u64,
    pub crashes_injected: u64,
    pub db_outages: u64,
    pub lock_holds: u64,
    pub duplicates_sent: u64,
    pub new_key_duplicates: u64,
    pub too_early_425: u64,
    pub unavailable_503: u64,
    pub system_error_answers: u64,
    pub lost_answers: u64,
    pub malformed_inputs: u64,
    pub skewed_refused: u64,
    /// Stored answers missing from the ledger.
    pub lost: u64,
    pub double_booked: u64,
    /// Slowest authorization answer during the fault phases, ms.
    pub worst_authorization_ms_during_faults: f64,
    /// The same as measured by the client, its own stalls included.
    pub worst_authorization_raw_ms_during_faults: f64,
    /// How long this client's event loop was stalled in all (a loaded machine).
    pub client_stalled_ms: f64,
    /// Slowest adjustment or notification answer during the fault phases, ms.
    pub worst_other_ms_during_faults: f64,
    pub deadline_ms: u64,
    /// The channel's traffic (reservations, captures, cancels, refunds, expiries).
    pub channels: channels::ChannelCounts,
    /// The InStore store's traffic (Loads, Redeems, Cancels, callbacks).
    pub instore: instore::InstoreCounts,
    pub checks: verify::Checks,
    pub malformed: faults::Malformed,
    pub phases: Vec<PhaseStats>,
    pub violations: Vec<String>,
}

/// Parses the command line and runs; 0 passed, 1 a violation, 2 could not run.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli: Cli = match processor_client::support::parse_args(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let system = actix_rt::System::new();
    match system.block_on(run(cli)) {
        Ok(s) => {
            if s.passed {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("chaos: could not run: {e:#}");
            2
        }
    }
}

fn traffic(prefix: &str, accounts: u32, mix: &str) -> anyhow::Result<Traffic> {
    Ok(Traffic {
        prefix: prefix.to_owned(),
        currency: "ARS".into(),
        exponent: 2,
        sampler: AccountSampler::new(accounts, Skew::Uniform),
        mix: mix.parse()?,
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let quick = cli.quick;
    let plan = Plan {
        rate: cli.rate.unwrap_or(if quick { 80.0 } else { 150.0 }),
        crash_cycles: cli.crash_cycles.unwrap_or(if quick { 5 } else { 60 }),
        crash_gap_ms: if quick { (300, 1200) } else { (300, 2500) },
        outages: cli.outages.unwrap_or(if quick { 1 } else { 4 }),
        outage_ms: if quick { (1500, 1500) } else { (1500, 4000) },
        freezes: cli.freezes.unwrap_or(if quick { 1 } else { 2 }),
        // Longer than the client's patience: a request that waits for the database hangs.
        freeze_ms: cli.timeout_ms as i64 + 1500,
        slow_s: if quick { 3.0 } else { 10.0 },
        storm_s: if quick { 4.0 } else { 15.0 },
        replays_after_restart: if quick { 100 } else { 500 },
        clock_requests: if quick { 40 } else { 200 },
        malformed: if quick { 200 } else { 2000 },
        hot_accounts: 6.min(cli.accounts),
        authorization_skew_secs: 60,
        adjustment_skew_secs: 300,
    };
    std::fs::create_dir_all(&cli.work_dir)
        .with_context(|| format!("cannot create {}", cli.work_dir.display()))?;
    let data_dir = cli.work_dir.join("data");
    // The configuration: the given directory's files, plus a layer (AUTHORIZER_ENV=chaos)
    // with the wallet's key ring and a fast hold sweeper.
    let config_dir = cli.work_dir.join("config");
    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("cannot create {}", config_dir.display()))?;
    for f in std::fs::read_dir(&cli.config_dir)
        .with_context(|| format!("cannot read {}", cli.config_dir.display()))?
    {
        let f = f?;
        if f.file_type()?.is_file() {
            std::fs::copy(f.path(), config_dir.join(f.file_name()))?;
        }
    }
    // The InStore tenant calls back to a receiver in this process.
    let receiver =
        instore_sim::Receiver::start(&format!("http://127.0.0.1:{}/cb/", cli.callback_port))?;
    std::fs::write(
        config_dir.join("chaos.toml"),
        format!(
            "{}\n{}",
            channels::config_layer(SWEEP_INTERVAL_MS),
            instore::config_layer(&receiver.prefix)
        ),
    )?;
    let token = format!("chaos-admin-{}-{}", std::process::id(), cli.seed);
    let url = format!("http://127.0.0.1:{}", cli.port);
    let env = vec![
        ("DATABASE_URL".to_owned(), cli.database_url.clone()),
        (
            "AUTHORIZER__SERVER__LISTEN".to_owned(),
            format!("127.0.0.1:{}", cli.port),
        ),
        (
            "AUTHORIZER__DATABASE__DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        ),
        ("AUTHORIZER__PROCESSOR__API_KEY".to_owned(), API_KEY.into()),
        (
            "AUTHORIZER__PROCESSOR__API_SECRET".to_owned(),
            API_SECRET.into(),
        ),
        (
            "AUTHORIZER__PROCESSOR__DEADLINE_MS".to_owned(),
            cli.deadline_ms.to_string(),
        ),
        ("AUTHORIZER__ADMIN__TOKEN".to_owned(), token.clone()),
        ("AUTHORIZER_ENV".to_owned(), "chaos".to_owned()),
        ("AUTHORIZER__LOG__FILTER".to_owned(), "warn".into()),
        // One JSON object a line: the checks read which commits it reported uncertain.
        ("AUTHORIZER__LOG__FORMAT".to_owned(), "json".into()),
    ];
    let auth = RefCell::new(Authorizer::new(
        cli.authorizer.clone(),
        config_dir,
        env,
        cli.work_dir.join("authorizer.log"),
    ));
    let pg = Postgres {
        pg_ctl: cli.pg_ctl.clone(),
        data_dir: cli.pg_data.clone(),
        url: cli.database_url.clone(),
    };
    let secret = protocol::ApiSecret::from_base64(API_SECRET)
        .map_err(|_| anyhow::anyhow!("bad built-in secret"))?;
    let http = Http::new(
        &url,
        API_KEY,
        &secret,
        &token,
        512,
        Duration::from_millis(cli.timeout_ms),
    );
    let channel_secret = protocol::ApiSecret::from_base64(channels::CHANNEL_SECRET)
        .map_err(|_| anyhow::anyhow!("bad built-in channel secret"))?;
    let wallet = channels::Channels::new(
        Http::new(
            &url,
            channels::CHANNEL_KEY,
            &channel_secret,
            &token,
            256,
            Duration::from_millis(cli.timeout_ms),
        ),
        cli.accounts,
        cli.channel_rate.unwrap_or(if quick { 8.0 } else { 12.0 }),
    );
    let store = instore::Instore::new(
        &url,
        receiver,
        Duration::from_millis(cli.timeout_ms),
        cli.accounts,
        cli.instore_rate.unwrap_or(if quick { 4.0 } else { 6.0 }),
    );
    let prefix = format!("cx{}", cli.seed);
    let mix = "purchase=70,withdrawal=5,balance=5,refund=8,adjustment=7,notification=5";
    let traffics = Traffics {
        all: traffic(&prefix, cli.accounts, mix)?,
        hot: traffic(&prefix, plan.hot_accounts, mix)?,
        purchases: traffic(&prefix, cli.accounts, "purchase=1")?,
        refunds: traffic(&prefix, cli.accounts, "refund=1")?,
    };
    let engine = Rc::new(Engine::new(
        http,
        secret,
        traffics,
        cli.accounts,
        cli.seed,
        Duration::from_millis(cli.deadline_ms),
        Duration::from_millis(cli.margin_ms),
        2,
        wallet,
        plan.hot_accounts,
        store,
    ));

    engine.watch_stalls();
    auth.borrow_mut().spawn(&[])?;
    faults::ready(&engine, &auth).await?;
    let subscriber = if cli.no_subscriber {
        None
    } else {
        Some(webhooks::Subscriber::start(&engine).await?)
    };
    open_accounts(&engine).await?;
    instore::link_cards(&engine).await?;

    let target = faults::Target {
        engine: &engine,
        auth: &auth,
        pg: &pg,
        plan: &plan,
    };
    engine.begin_phase("steady");
    let load = engine.start_load(plan.rate);
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    target.stop_load(load).await;

    faults::crash(target).await?;
    faults::outage(target).await?;
    faults::freeze(target).await?;
    faults::slow(target, "slow-db", &[]).await?;
    let near = [
        ("AUTHORIZER__DATABASE__LOCK_WAIT_MS_MAX", "700"),
        ("AUTHORIZER__DATABASE__STATEMENT_MS_MAX", "750"),
    ];
    faults::slow(target, "slow-db-near-deadline", &near).await?;
    faults::storm(target).await?;
    faults::clock(&engine, &plan).await?;
    let malformed = faults::malformed(&engine, &plan).await?;
    target.scrape().await;
    engine.end_phase();

    let checks = verify::run(&engine, &auth, &pg, subscriber.as_ref()).await?;
    auth.borrow_mut().stop();
    if let Some(s) = &subscriber {
        s.stop().await;
    }

    let phases = engine.phases.borrow().clone();
    let sum = |f: fn(&PhaseStats) -> u64| phases.iter().map(f).sum::<u64>();
    let faults_in = |phase: fn(&str) -> bool| {
        phases
            .iter()
            .filter(|p| phase(&p.name))
            .map(|p| p.faults)
            .sum::<u64>()
    };
    let worst_during_faults = |f: fn(&PhaseStats) -> f64| {
        phases
            .iter()
            .filter(|p| p.name != "steady" && p.name != "resolution")
            .map(f)
            .fold(0.0, f64::max)
    };
    let reqs = engine.reqs.borrow();
    let violations = engine.violations.borrow().clone();
    let summary = Summary {
        passed: violations.is_empty(),
        mode: if quick { "quick" } else { "full" },
        seed: cli.seed,
        duration_s: started.elapsed().as_secs_f64(),
        requests_sent: reqs.len() as u64,
        http_requests: sum(|p| p.http_requests),
        crashes_injected: auth.borrow().kills,
        db_outages: faults_in(|name| name == "db-outage" || name == "db-freeze"),
        lock_holds: faults_in(|name| name.starts_with("slow") || name == "duplicate-storm"),
        duplicates_sent: sum(|p| p.duplicates),
        new_key_duplicates: sum(|p| p.new_key_duplicates),
        too_early_425: sum(|p| p.too_early_425),
        unavailable_503: sum(|p| p.unavailable_503),
        system_error_answers: sum(|p| p.system_errors),
        lost_answers: checks.lost_answers,
        malformed_inputs: malformed.sent,
        skewed_refused: reqs
            .iter()
            .filter(|l| l.expect == engine::Expect::Refused)
            .count() as u64,
        lost: checks.lost + checks.channel.lost + checks.instore.lost,
        double_booked: checks.double_booked
            + checks.channel.double_booked
            + checks.instore.double_booked,
        worst_authorization_ms_during_faults: worst_during_faults(|p| p.worst_authorization_ms),
        worst_authorization_raw_ms_during_faults: worst_during_faults(|p| {
            p.worst_authorization_raw_ms
        }),
        client_stalled_ms: engine.stalled_ms.get(),
        worst_other_ms_during_faults: worst_during_faults(|p| p.worst_other_ms),
        deadline_ms: cli.deadline_ms,
        channels: engine.channels.counts.borrow().clone(),
        instore: engine.instore.counts.borrow().clone(),
        checks,
        malformed,
        phases,
        violations,
    };
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| cli.work_dir.join("summary.json"));
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&out, &json).with_context(|| format!("cannot write {}", out.display()))?;
    print_table(&summary);
    println!("summary written to {}", out.display());
    Ok(summary)
}

/// Opens and funds every account through the admin API (idempotent: sent again on a 503).
async fn open_accounts(engine: &Rc<Engine>) -> anyhow::Result<()> {
    use futures_util::{StreamExt, stream};
    let fund = "20000.00";
    let results: Vec<anyhow::Result<()>> = stream::iter(0..engine.accounts)
        .map(|i| async move {
            let user = engine.traffic.all.user(i);
            let path = format!("/v1/accounts/{user}/ARS");
            let (s, v) =
                admin_until_stored(engine, awc::http::Method::PUT, &path, None, None).await?;
            anyhow::ensure!(s == 200 || s == 201, "opening {user}: HTTP {s} {v}");
            let (s, v) = admin_until_stored(
                engine,
                awc::http::Method::POST,
                &format!("{path}/deposits"),
                Some(serde_json::json!({ "amount": fund, "reference": "chaos funding" })),
                Some(&format!("{user}-fund")),
            )
            .await?;
            anyhow::ensure!(s == 200 || s == 201, "funding {user}: HTTP {s} {v}");
            let minor = v
                .get("available")
                .and_then(|a| a.as_str())
                .and_then(|a| loadgen::money::parse_minor(a, 2).ok())
                .with_context(|| format!("funding {user}: no available balance in {v}"))?;
            engine.book.set_baseline(i, minor);
            counting_controls(engine, &path).await
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Sets spending controls that count and never decline on the account or card at `owner`
/// (its admin path): a monthly spending limit and a daily velocity limit far above anything
/// the run sends. Every approval then counts and every release gives back, under the
/// faults, and the audit holds the counters to their records at the end.
pub(crate) async fn counting_controls(engine: &Engine, owner: &str) -> anyhow::Result<()> {
    let controls = serde_json::json!({
        "currency": "ARS",
        "spending_limits": [{"amount": "1000000000.00", "interval": "monthly"}],
        "velocity_limits": [{"count": 1_000_000_000, "interval": "daily"}],
    });
    let path = format!("{owner}/controls");
    let put = awc::http::Method::PUT;
    let (s, v) = admin_until_stored(engine, put, &path, Some(controls), None).await?;
    anyhow::ensure!(s == 200, "controls of {owner}: HTTP {s} {v}");
    Ok(())
}

/// How long the set-up sends an admin call again while the store answers 503.
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// An idempotent admin call (a `PUT`, or a `POST` under its idempotency key), sent again while
/// it answers 503: a starting instance on a database that is itself just started can take
/// longer than its pool and statement timeouts for its first statements, and says so with a
/// 503. Any other answer, or a 503 after [`SETUP_PATIENCE`], is the result.
pub(crate) async fn admin_until_stored(
    engine: &Engine,
    method: awc::http::Method,
    path: &str,
    body: Option<serde_json::Value>,
    key: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let give_up = Instant::now() + SETUP_PATIENCE;
    loop {
        let (s, v) = engine
            .http
            .admin(method.clone(), path, body.clone(), key)
            .await?;
        if s != 503 || Instant::now() >= give_up {
            return Ok((s, v));
        }
        eprintln!("chaos: {path} answered 503 during set-up; sending it again");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_table(s: &Summary) {
    println!();
    println!(
        "{:<24} {:>8} {:>8} {:>7} {:>6} {:>5} {:>5} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "phase",
        "requests",
        "http",
        "faults",
        "dups",
        "425",
        "503",
        "sys_err",
        "worst_ms",
        "raw_ms",
        "other_ms",
        "srv>1s"
    );
    for p in &s.phases {
        println!(
            "{:<24} {:>8} {:>8} {:>7} {:>6} {:>5} {:>5} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>6}",
            p.name,
            p.requests,
            p.http_requests,
            p.faults,
            p.duplicates,
            p.too_early_425,
            p.unavailable_503,
            p.system_errors,
            p.worst_authorization_ms,
            p.worst_authorization_raw_ms,
            p.worst_other_ms,
            p.server_authorizations_over_1s
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    println!();
    println!(
        "requests {} (http {}), crashes {}, outages {}, lock holds {}, duplicates {} ({} new-key), 425s {}, 503s {}",
        s.requests_sent,
        s.http_requests,
        s.crashes_injected,
        s.db_outages,
        s.lock_holds,
        s.duplicates_sent,
        s.new_key_duplicates,
        s.too_early_425,
        s.unavailable_503
    );
    println!(
        "lost answers {} (booked {}, not booked {}; {} advices, {} reversed), SYSTEM_ERROR answers {} (booked unreported {}; commits reported uncertain {}, of which booked {}), malformed {}, skewed refused {}",
        s.lost_answers,
        s.checks.lost_booked,
        s.checks.lost_not_booked,
        s.checks.advices_sent,
        s.checks.advices_reversed,
        s.system_error_answers,
        s.checks.system_error_booked,
        s.checks.uncertain_commits_reported,
        s.checks.uncertain_commits_booked,
        s.malformed_inputs,
        s.skewed_refused
    );
    println!(
        "lost = {}, double-booked = {}, balance mismatches = {} of {}, audit exit {:?}; worst authorization answer during faults {:.1} ms ({:.1} ms as measured; this client stalled {:.0} ms in all; deadline {} ms), worst adjustment/notification {:.1} ms",
        s.lost,
        s.double_booked,
        s.checks.balance_mismatches,
        s.checks.accounts_checked,
        s.checks.audit_exit_code,
        s.worst_authorization_ms_during_faults,
        s.worst_authorization_raw_ms_during_faults,
        s.client_stalled_ms,
        s.deadline_ms,
        s.worst_other_ms_during_faults
    );
    let w = &s.checks.webhooks;
    if !w.subscribed {
        println!("webhooks: no subscriber (--no-subscriber)");
    } else {
        println!(
            "webhooks: {} answered authorizations and {} outbox rows owed, {} events received in {} deliveries, settled {:.1} s after the faults; missing authorization events {}, undelivered rows {}, differing copies {}, unsigned {}, unknown {}",
            w.authorizations,
            w.rows,
            w.events_received,
            w.deliveries,
            w.settled_after_s,
            w.missing_authorization_events,
            w.undelivered_rows,
            w.differing_copies,
            w.unsigned,
            w.unknown_events
        );
    }
    let ch = &s.channels;
    let cc = &s.checks.channel;
    println!(
        "channel: reservations {} (approved {}, rejected {}, SYSTEM_ERROR answers {}), captures {} ({} partial), cancels {}, refunds {}, expired {} left alone ({} by the sweeper) + {} refused EXPIRED on capture, kept reserved {}; http {}, duplicates {} ({} new-key), attempts without answer {} (425s {}, 503s {}, 408s {}, none {}), resolved at the end {}",
        ch.reservations,
        ch.approved,
        ch.rejected,
        ch.system_error_answers,
        ch.captures,
        ch.partial_captures,
        ch.cancels,
        ch.refunds,
        ch.expired_left_alone,
        ch.expired_by_sweeper,
        ch.expired_on_capture,
        ch.kept_reserved,
        ch.http_requests,
        ch.duplicates,
        ch.new_key_duplicates,
        ch.lost_attempts,
        ch.too_early_425,
        ch.unavailable_503,
        ch.request_timeout_408,
        ch.no_answer,
        ch.resolved_at_end
    );
    println!(
        "channel checks: holds in the ledger {} ({} reserved at the end), lost {}, double-booked {}, unaccounted holds {}, state mismatches {}, over-captured {}, over-refunded {}, never answered {}, reads {} ({} disagreeing); EXPIRED events {}; reservations answered past the deadline as measured here {} (slowest {:.0} ms)",
        cc.holds_in_ledger,
        cc.holds_reserved_at_end,
        cc.lost,
        cc.double_booked,
        cc.unaccounted_holds,
        cc.state_mismatches,
        cc.over_captured,
        cc.over_refunded,
        cc.never_answered,
        cc.reads,
        cc.read_mismatches,
        cc.expired_events,
        ch.reservations_over_deadline,
        ch.worst_reservation_ms
    );
    let sv = &s.instore;
    let sc = &s.checks.instore;
    println!(
        "instore: requests {} (loads {}, redeems {}, cancels {}, wallet payments {}, wallet refunds {}, wallet cancel logs {}; barcodes issued {}, not issued {}) on {} numbers, acknowledged {}, approved {}, declined {}, already cancelled or nothing to reverse {}; http {}, duplicates {}, attempts without acknowledgement {} (425s {}, 503s {}, none {}), resolved at the end {}; callbacks received {} ({} requests more than once)",
        sv.requests,
        sv.loads,
        sv.redeems,
        sv.cancels,
        sv.wallet_payments,
        sv.wallet_refunds,
        sv.wallet_cancel_logs,
        sv.barcodes,
        sv.barcodes_refused,
        sv.cards,
        sv.acknowledged,
        sv.approved,
        sv.declined,
        sv.already_cancelled,
        sv.http_requests,
        sv.duplicates,
        sv.lost_attempts,
        sv.too_early_425,
        sv.unavailable_503,
        sv.no_answer,
        sv.resolved_at_end,
        sv.callbacks_received,
        sv.callbacks_repeated
    );
    println!(
        "instore checks: movements in the ledger {}, never acknowledged {}, callbacks missing {}, callbacks differing or unsigned {}, lost {}, double-booked {}, amount mismatches {}, unaccounted movements {}",
        sc.movements_in_ledger,
        sc.never_acknowledged,
        sc.callbacks_missing,
        sc.callbacks_bad,
        sc.lost,
        sc.double_booked,
        sc.amount_mismatches,
        sc.unaccounted_movements
    );
    if s.passed {
        println!("PASSED: no violation");
    } else {
        println!("FAILED: {} violation(s)", s.violations.len());
        for v in s.violations.iter().take(30) {
            println!("  {v}");
        }
    }
}
