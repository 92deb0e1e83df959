//! The `authorizer` command line.

use crate::app::Application;
use crate::client::{
    Client, SimKind, Simulation, account_path, generated_id, simulate, url_path_segment,
};
use crate::config::{Secret, Settings};
use crate::{credentials, telemetry};
use anyhow::bail;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

/// `println!` for a command's output ([`settings::print`]: a reader that went away ends the
/// output, not the command).
macro_rules! say {
    ($($arg:tt)*) => { settings::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for a command's output ([`settings::print`]).
macro_rules! put {
    ($($arg:tt)*) => { settings::print(format_args!($($arg)*)) };
}

#[derive(Parser, Debug)]
#[command(
    name = "authorizer",
    version,
    about = "Card issuer authorization processor: answers the card processor in real time from the issuer's ledger."
)]
pub struct Cli {
    /// Directory holding default.toml and <AUTHORIZER_ENV>.toml.
    #[arg(
        long,
        global = true,
        default_value = "config",
        env = "AUTHORIZER_CONFIG_DIR"
    )]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the processor endpoints and the admin API.
    Serve {
        /// Do not apply pending migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the ledger's invariants; exits 1 on any violation, printing each (2: no ledger
    /// to audit, or the database did not answer).
    Audit,
    /// Send one request to a running authorizer exactly as the processor would, check the
    /// answer's signature and show the balance after. Exits 1 if the signature does not verify.
    Simulate {
        #[command(flatten)]
        sim: Simulation,
        /// The authorizer's base URL (default: from server.listen).
        #[arg(long)]
        url: Option<String>,
        /// Print a JSON report instead of the compact form.
        #[arg(long)]
        json: bool,
    },
    /// Cardholder accounts, through the admin API.
    Accounts {
        #[command(subcommand)]
        action: AccountAction,
        #[arg(long, global = true)]
        url: Option<String>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Cards, through the admin API.
    Cards {
        #[command(subcommand)]
        action: CardAction,
        #[arg(long, global = true)]
        url: Option<String>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// InStore stored value, through the admin API.
    Instore {
        #[command(subcommand)]
        action: InstoreAction,
        #[arg(long, global = true)]
        url: Option<String>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Why an authorization was approved or declined: the checks it ran, in order, with
    /// their inputs, as kept with the transaction (through the admin API).
    Explain {
        /// The processor's transaction id.
        transaction_id: String,
        #[arg(long)]
        url: Option<String>,
        /// Print the stored explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay the stored authorizations of a period against another controls document, in
    /// order, without booking anything: how many would have been approved or declined
    /// differently, by control, with the amounts (reads the database directly).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["account", "card", "all"])))]
    Backtest {
        /// The controls document (JSON, as `PUT .../controls` takes it).
        #[arg(long)]
        controls: PathBuf,
        /// The account whose controls it replaces: USER/CURRENCY.
        #[arg(long)]
        account: Option<String>,
        /// The card whose controls it replaces.
        #[arg(long)]
        card: Option<String>,
        /// Every account's controls (those in the document's currency when it names one).
        #[arg(long)]
        all: bool,
        /// First day (YYYY-MM-DD, in controls.time_zone).
        #[arg(long)]
        from: jiff::civil::Date,
        /// Last day, included.
        #[arg(long)]
        to: jiff::civil::Date,
        /// Write each changed decision to this CSV file.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Print the OpenAPI document of every route (what `GET /openapi.json` serves and
    /// docs/openapi.json holds): `authorizer openapi > docs/openapi.json`.
    Openapi,
    /// Start a throwaway authorizer on a free port and walk through a short story:
    /// deposit, purchase, declined purchase, refund, balance. Leaves nothing behind.
    Demo,
}

#[derive(Subcommand, Debug)]
pub enum AccountAction {
    /// Open an account (idempotent); options set its rules.
    Open {
        user: String,
        currency: String,
        #[arg(long)]
        overdraft_limit: Option<String>,
        #[arg(long)]
        per_transaction_limit: Option<String>,
        #[arg(long)]
        daily_limit: Option<String>,
        /// Merchant category code to refuse (repeatable).
        #[arg(long = "block-mcc")]
        blocked_mccs: Vec<String>,
    },
    /// Add money to an account.
    Deposit(MoneyMove),
    /// Take money out of an account (never overdraws).
    Withdraw(MoneyMove),
    /// Show an account.
    Show { user: String, currency: String },
    /// Posting history, newest first.
    Postings {
        user: String,
        currency: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstoreAction {
    /// One tenant's InStore movements of one day, for the retailer's settlement: totals per
    /// action and currency, counts, and the net.
    Summary {
        #[arg(long)]
        tenant: String,
        /// YYYY-MM-DD in controls.time_zone.
        #[arg(long)]
        day: String,
        /// Print CSV (one line per action and currency, then one NET line per currency).
        #[arg(long)]
        csv: bool,
    },
}

/// A deposit or a withdrawal.
#[derive(clap::Args, Debug)]
pub struct MoneyMove {
    user: String,
    currency: String,
    amount: String,
    #[arg(long)]
    reference: Option<String>,
    /// Retry safely with the same key (default: generated).
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CardAction {
    /// Register or update a card.
    Set {
        card: String,
        #[arg(long)]
        user: String,
        /// ACTIVE, BLOCKED, LOST, STOLEN or CLOSED
        #[arg(long, default_value = "ACTIVE")]
        status: String,
        #[arg(long = "block-mcc")]
        blocked_mccs: Vec<String>,
    },
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    if matches!(cli.command, Command::Openapi) {
        // Needs no configuration: the document depends on the code only.
        put!("{}", crate::openapi::json());
        return 0;
    }
    let settings = match Settings::load(&cli.config_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("authorizer: {e}");
            return 2;
        }
    };
    let mut log = settings.log.clone();
    if !matches!(cli.command, Command::Serve { .. }) && log.filter == "info" {
        // Client-side commands print their own results; only problems belong on stderr.
        log.filter = "warn".into();
    }
    telemetry::init(&log);
    let result = match cli.command {
        Command::Serve { no_migrate } => serve(settings, no_migrate).await,
        Command::Migrate => migrate(settings).await,
        // 1 is for violations: a ledger that could not be audited is 2.
        Command::Audit => audit(settings).await.or_else(|e| {
            eprintln!("authorizer: cannot audit: {e:#}");
            Ok(2)
        }),
        Command::Simulate { sim, url, json } => {
            with_client(&settings, url, |c| async move {
                run_simulation(&c, &sim, json).await
            })
            .await
        }
        Command::Accounts { action, url, json } => {
            with_client(&settings, url, |c| async move {
                accounts(&c, action, json).await
            })
            .await
        }
        Command::Cards { action, url, json } => {
            with_client(
                &settings,
                url,
                |c| async move { cards(&c, action, json).await },
            )
            .await
        }
        Command::Instore { action, url, json } => {
            with_client(&settings, url, |c| async move {
                instore(&c, action, json).await
            })
            .await
        }
        Command::Explain {
            transaction_id,
            url,
            json,
        } => {
            with_client(&settings, url, |c| async move {
                explain(&c, &transaction_id, json).await
            })
            .await
        }
        Command::Backtest {
            controls,
            account,
            card,
            all: _,
            from,
            to,
            csv,
        } => {
            let target = match (account, card) {
                (Some(a), _) => crate::backtest::Target::account(&a),
                (None, Some(c)) => Ok(crate::backtest::Target::Card(c)),
                (None, None) => Ok(crate::backtest::Target::All),
            };
            match target {
                Ok(t) => backtest(settings, &controls, t, (from, to), csv).await,
                Err(e) => Err(e),
            }
        }
        Command::Demo => demo(settings).await,
        Command::Openapi => Ok(0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("authorizer: {e:#}");
            1
        }
    }
}

async fn serve(mut settings: Settings, no_migrate: bool) -> anyhow::Result<i32> {
    if no_migrate {
        settings.database.migrate_on_start = false;
    }
    let creds = credentials::resolve(&settings, true)?;
    for note in &creds.notes {
        tracing::info!("{note}");
    }
    let app = Application::build(settings, creds).await?;
    tracing::info!(
        "authorizer listening on {}://{} (store: {}{})",
        app.scheme(),
        app.addr(),
        app.store().describe(),
        if app.store().is_postgres() {
            ""
        } else {
            "; embedded, for trying out: use Postgres in production"
        }
    );
    app.run_until_stopped().await?;
    tracing::info!("authorizer stopped");
    Ok(0)
}

async fn migrate(settings: Settings) -> anyhow::Result<i32> {
    let store = store::Store::connect(&settings.store_config()).await?;
    let applied = store.migrate().await?;
    say!(
        "{}: {} migration(s) applied",
        store.describe(),
        applied.len()
    );
    for m in applied {
        say!("  {m}");
    }
    Ok(0)
}

async fn audit(settings: Settings) -> anyhow::Result<i32> {
    let config = settings.store_config();
    // Connecting would make an empty embedded file, and the audit would fail on its tables.
    if config.url.is_none() && !config.sqlite_path.exists() {
        anyhow::bail!(
            "no ledger at {} (`authorizer serve` or `authorizer migrate` makes it; \
             DATABASE_URL names a Postgres one)",
            config.sqlite_path.display()
        );
    }
    let store = store::Store::connect(&config).await?;
    let sweep_interval_ms = i64::try_from(settings.holds.sweep_interval_ms).unwrap_or(i64::MAX);
    let r = store.audit_with(sweep_interval_ms).await?;
    say!(
        "audit of {}: {} accounts, {} movements, {} postings, {} processor transactions, {} notifications, {} holds",
        store.describe(),
        r.accounts,
        r.movements,
        r.postings,
        r.processor_transactions,
        r.notifications,
        r.holds
    );
    let owed_none = r.processor_movements - r.processor_movements_owed_events;
    // Nobody subscribes: no event is owed, and nothing to explain.
    if owed_none > 0 && r.active_subscriptions > 0 {
        say!(
            "events: {owed_none} of {} processor money movements were owed no event row (committed \
             before any subscription of their type was active, or within 2 s of its activation)",
            r.processor_movements
        );
    }
    if r.deliveries_pruned_before_ms > 0 {
        let before = jiff::Timestamp::from_millisecond(r.deliveries_pruned_before_ms).map_or_else(
            |_| r.deliveries_pruned_before_ms.to_string(),
            |t| t.to_string(),
        );
        say!(
            "events: settled delivery rows of events before {before} were deleted \
             (webhooks.retention_days); events are checked for their rows from then on"
        );
    }
    for v in &r.violations {
        say!("VIOLATION [{}] {}", v.invariant, v.detail);
    }
    // Not violations: every operation expires an overdue hold before it looks at it, and a
    // stuck delivery is late, not lost.
    for w in &r.warnings {
        say!("WARNING [{}] {}", w.invariant, w.detail);
    }
    if r.is_clean() {
        say!("clean: every invariant holds");
        Ok(0)
    } else {
        say!("{} violation(s)", r.violations.len());
        Ok(1)
    }
}

async fn backtest(
    settings: Settings,
    controls: &std::path::Path,
    target: crate::backtest::Target,
    period: (jiff::civil::Date, jiff::civil::Date),
    csv: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let document = std::fs::read_to_string(controls)
        .map_err(|e| anyhow::anyhow!("{}: {e}", controls.display()))?;
    let tz = settings.controls.resolve()?;
    let store = store::Store::connect(&settings.store_config()).await?;
    let report = match crate::backtest::backtest(&store, &document, target, period, &tz).await {
        Ok(r) => r,
        Err(e @ crate::backtest::BacktestError::Controls(_)) => {
            eprintln!("authorizer: {e}");
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    };
    put!("{}", report.text());
    if let Some(path) = csv {
        std::fs::write(&path, report.csv())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        say!("changed decisions written to {}", path.display());
    }
    Ok(0)
}

async fn with_client<F, Fut>(settings: &Settings, url: Option<String>, f: F) -> anyhow::Result<i32>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i32>>,
{
    f(Client::from_settings(settings, url.as_deref())?).await
}

async fn run_simulation(client: &Client, sim: &Simulation, as_json: bool) -> anyhow::Result<i32> {
    let (report, human, signature_ok) = simulate(client, sim).await?;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say!("{human}");
    }
    Ok(if signature_ok { 0 } else { 1 })
}

/// Prints an admin API answer; non-2xx is an error with the envelope's message.
fn show(
    status: u16,
    v: &Value,
    as_json: bool,
    human: impl FnOnce(&Value) -> String,
) -> anyhow::Result<i32> {
    if !(200..300).contains(&status) {
        let code = v["error"]["code"].as_str().unwrap_or("error");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        bail!("HTTP {status} {code}: {msg}");
    }
    if as_json {
        say!("{}", serde_json::to_string_pretty(v)?);
    } else {
        say!("{}", human(v));
    }
    Ok(0)
}

fn account_line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    format!(
        "{}/{}: available {} (posted {}, held {}, version {}, overdraft {}, per-transaction limit {}, daily limit {}, blocked MCCs {})",
        s("user_id"),
        s("currency"),
        s("available"),
        s("posted"),
        s("held"),
        v["version"],
        s("overdraft_limit"),
        s("per_transaction_limit"),
        s("daily_limit"),
        v["blocked_mccs"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into()),
    )
}

async fn accounts(c: &Client, action: AccountAction, as_json: bool) -> anyhow::Result<i32> {
    match action {
        AccountAction::Open {
            user,
            currency,
            overdraft_limit,
            per_transaction_limit,
            daily_limit,
            blocked_mccs,
        } => {
            let has_rules = overdraft_limit.is_some()
                || per_transaction_limit.is_some()
                || daily_limit.is_some()
                || !blocked_mccs.is_empty();
            let body = has_rules.then(|| {
                json!({
                    "overdraft_limit": overdraft_limit,
                    "per_transaction_limit": per_transaction_limit,
                    "daily_limit": daily_limit,
                    "blocked_mccs": blocked_mccs,
                })
            });
            let (st, v) = c
                .admin("PUT", &account_path(&user, &currency), body, None)
                .await?;
            show(st, &v, as_json, |v| {
                format!(
                    "{} {}",
                    if st == 201 { "opened" } else { "exists" },
                    account_line(v)
                )
            })
        }
        AccountAction::Deposit(m) => fund(c, "deposits", m, as_json).await,
        AccountAction::Withdraw(m) => fund(c, "withdrawals", m, as_json).await,
        AccountAction::Show { user, currency } => {
            let (st, v) = c.account(&user, &currency).await?;
            show(st, &v, as_json, account_line)
        }
        AccountAction::Postings {
            user,
            currency,
            limit,
        } => {
            let (st, v) = c
                .admin(
                    "GET",
                    &format!("{}/postings?limit={limit}", account_path(&user, &currency)),
                    None,
                    None,
                )
                .await?;
            show(st, &v, as_json, |v| {
                let mut out = format!(
                    "{:>6}  {:<13} {:>14} {:>14}  {}",
                    "id", "kind", "amount", "balance after", "transaction"
                );
                for p in v["postings"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:>6}  {:<13} {:>14} {:>14}  {}",
                        p["id"].as_i64().unwrap_or_default(),
                        p["kind"].as_str().unwrap_or(""),
                        p["amount"].as_str().unwrap_or(""),
                        p["balance_after"].as_str().unwrap_or(""),
                        p["transaction_id"]
                            .as_str()
                            .or(p["reference"].as_str())
                            .unwrap_or(""),
                    ));
                }
                out
            })
        }
    }
}

async fn instore(c: &Client, action: InstoreAction, as_json: bool) -> anyhow::Result<i32> {
    let InstoreAction::Summary { tenant, day, csv } = action;
    let path = format!(
        "/v1/instore/tenants/{}/summary?day={}",
        url_path_segment(&tenant),
        url_path_segment(&day)
    );
    let (st, v) = c.admin("GET", &path, None, None).await?;
    if csv && (200..300).contains(&st) {
        put!("{}", summary_csv(&v));
        return Ok(0);
    }
    show(st, &v, as_json, summary_text)
}

/// The summary as CSV: `day,tenant_id,currency,action,operations,movements,amount`, one
/// line per action and currency, then a `NET` line per currency.
pub fn summary_csv(v: &Value) -> String {
    let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
    let field = |f: String| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f
        }
    };
    let mut out = String::from("day,tenant_id,currency,action,operations,movements,amount\n");
    let lines = v["totals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                s(&t["currency"]),
                s(&t["action"]),
                t["operations"].clone(),
                t["movements"].clone(),
                s(&t["amount"]),
            )
        })
        .chain(v["net"].as_array().into_iter().flatten().map(|n| {
            (
                s(&n["currency"]),
                "NET".to_owned(),
                n["operations"].clone(),
                Value::from(""),
                s(&n["amount"]),
            )
        }));
    for (currency, action, operations, movements, amount) in lines {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            field(s(&v["day"])),
            field(s(&v["tenant_id"])),
            field(currency),
            field(action),
            operations,
            movements
                .as_i64()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            amount
        ));
    }
    out
}

fn summary_text(v: &Value) -> String {
    let mut out = format!(
        "InStore summary of tenant {} for {} ({})",
        v["tenant_id"].as_str().unwrap_or(""),
        v["day"].as_str().unwrap_or(""),
        v["time_zone"].as_str().unwrap_or("")
    );
    let totals = v["totals"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if totals.is_empty() {
        out.push_str("\nno InStore movements");
        return out;
    }
    out.push_str(&summary_row([
        &"currency",
        &"action",
        &"operations",
        &"movements",
        &"amount",
    ]));
    for t in totals {
        out.push_str(&summary_row([
            &t["currency"].as_str().unwrap_or(""),
            &t["action"].as_str().unwrap_or(""),
            &t["operations"].as_i64().unwrap_or_default(),
            &t["movements"].as_i64().unwrap_or_default(),
            &t["amount"].as_str().unwrap_or(""),
        ]));
    }
    for n in v["net"].as_array().into_iter().flatten() {
        out.push_str(&summary_row([
            &n["currency"].as_str().unwrap_or(""),
            &"net",
            &n["operations"].as_i64().unwrap_or_default(),
            &"",
            &n["amount"].as_str().unwrap_or(""),
        ]));
    }
    out
}

/// One line of the summary's table: currency, action, operations, movements, amount.
fn summary_row(cells: [&dyn std::fmt::Display; 5]) -> String {
    let [currency, action, operations, movements, amount] = cells;
    format!("\n{currency:<8} {action:<17} {operations:>10} {movements:>9} {amount:>16}")
}

async fn explain(c: &Client, transaction_id: &str, as_json: bool) -> anyhow::Result<i32> {
    let path = format!("/v1/transactions/{}", url_path_segment(transaction_id));
    let (st, v) = c.admin("GET", &path, None, None).await?;
    let Some(record) = v["records"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "AUTHORIZATION")
    else {
        return show(st, &v, false, |_| {
            format!("{transaction_id}: no authorization recorded under this id")
        })
        .map(|_| 1);
    };
    if as_json {
        return show(st, &record["explanation"], true, |_| String::new());
    }
    show(st, record, false, explanation_text)
}

/// An authorization's explanation for a person: the outcome, the account and card as read,
/// then each check with what it read.
pub fn explanation_text(record: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(t) => t.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let list = |v: &Value| {
        let items: Vec<String> = v.as_array().into_iter().flatten().map(&s).collect();
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let e = &record["explanation"];
    let mut out = format!(
        "{} {} {}: {} / {}",
        s(&record["transaction_id"]),
        s(&record["amount"]),
        s(&record["currency"]),
        s(&record["status"]),
        s(&record["status_detail"]),
    );
    if e.is_null() {
        out.push_str(
            "
  no explanation recorded (decided before explanations were kept, or not decided here)",
        );
        return out;
    }
    out.push_str(&format!(
        "
  {}",
        s(&e["message"])
    ));
    let a = &e["account"];
    if a.is_null() {
        out.push_str(
            "
account: none for this user and currency",
        );
    } else {
        out.push_str(&format!(
            "
account {}/{}: available {} (balance {}, held {}, overdraft {}); per-transaction limit {}, daily limit {} (spent today {}), blocked MCCs {}",
            s(&record["user_id"]),
            s(&a["currency"]),
            s(&a["available"]),
            s(&a["balance"]),
            s(&a["held"]),
            s(&a["overdraft_limit"]),
            s(&a["per_transaction_limit"]),
            s(&a["daily_limit"]),
            s(&a["daily_spent"]),
            list(&a["blocked_mccs"]),
        ));
    }
    let c = &e["card"];
    if !c.is_null() {
        out.push_str(&format!(
            "
card {}: {}{}, blocked MCCs {}",
            s(&record["card_id"]),
            s(&c["status"]),
            if c["belongs_to_user"] == false {
                ", registered to another user"
            } else {
                ""
            },
            list(&c["blocked_mccs"]),
        ));
    }
    let checks = e["controls"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if checks.is_empty() {
        out.push_str(
            "
spending controls: none ran",
        );
    } else {
        out.push_str(
            "
spending controls, in order:",
        );
    }
    for (i, k) in checks.iter().enumerate() {
        let verdict = if k["passed"] == true { "pass" } else { "FAIL" };
        let who = s(&k["owner"]);
        let cats = if k["categories"].is_null() {
            String::new()
        } else {
            format!(" for {}", list(&k["categories"]))
        };
        let line = match k["check"].as_str().unwrap_or("") {
            "categories" => format!(
                "{who} {} categories [{}]: merchant category {}{}",
                s(&k["rule"]),
                list(&k["list"]),
                s(&k["mcc"]),
                if k["matched"].is_null() {
                    String::new()
                } else {
                    format!(" (matches {})", s(&k["matched"]))
                },
            ),
            "countries" => format!(
                "{who} {} countries [{}]: merchant country {}",
                s(&k["rule"]),
                list(&k["list"]),
                s(&k["country"]),
            ),
            "channels" => format!(
                "{who} {} channels [{}]: request shows {}",
                s(&k["rule"]),
                list(&k["list"]),
                list(&k["channels"]),
            ),
            "spending_limit" => format!(
                "{who} {} spending limit{cats} {} {}: spent {} in {}, this {}",
                s(&k["interval"]),
                s(&k["limit"]),
                s(&k["currency"]),
                s(&k["spent"]),
                if k["window"].is_null() {
                    "no window".to_owned()
                } else {
                    s(&k["window"])
                },
                s(&k["amount"]),
            ),
            "velocity_limit" => format!(
                "{who} {} limit{cats} of {} authorizations: {} approved in {}",
                s(&k["interval"]),
                s(&k["limit"]),
                s(&k["counted"]),
                s(&k["window"]),
            ),
            other => format!("{who} {other}"),
        };
        out.push_str(&format!(
            "
  {:>2}. {verdict}  {line}",
            i + 1
        ));
    }
    out
}

async fn fund(c: &Client, kind: &str, m: MoneyMove, as_json: bool) -> anyhow::Result<i32> {
    let MoneyMove {
        user,
        currency,
        amount,
        reference,
        idempotency_key,
    } = m;
    let key = idempotency_key.unwrap_or_else(|| generated_id("cli"));
    let (st, v) = c
        .admin(
            "POST",
            &format!("{}/{kind}", account_path(&user, &currency)),
            Some(json!({ "amount": amount, "reference": reference })),
            Some(&key),
        )
        .await?;
    show(st, &v, as_json, |v| {
        format!(
            "{} {} {}: available {} (movement {}, idempotency key {key})",
            v["kind"].as_str().unwrap_or("").to_lowercase(),
            v["amount"].as_str().unwrap_or(""),
            v["currency"].as_str().unwrap_or(""),
            v["available"].as_str().unwrap_or(""),
            v["movement_id"],
        )
    })
}

async fn cards(c: &Client, action: CardAction, as_json: bool) -> anyhow::Result<i32> {
    let CardAction::Set {
        card,
        user,
        status,
        blocked_mccs,
    } = action;
    let (st, v) = c
        .admin(
            "PUT",
            &format!("/v1/cards/{}", url_path_segment(&card)),
            Some(json!({ "user_id": user, "status": status, "blocked_mccs": blocked_mccs })),
            None,
        )
        .await?;
    show(st, &v, as_json, |v| {
        format!(
            "card {} of {}: {}",
            v["card_id"].as_str().unwrap_or(""),
            v["user_id"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or("")
        )
    })
}

async fn demo(mut settings: Settings) -> anyhow::Result<i32> {
    let dir = tempfile_dir()?;
    settings.database.url = Secret::default();
    settings.database.data_dir = dir.clone();
    settings.server.listen = "127.0.0.1:0".into();
    settings.processor.api_key.clear();
    settings.processor.api_secret = Secret::default();
    settings.processor.keys.clear();
    settings.admin.token = Secret::default();
    let creds = credentials::resolve(&settings, true)?;
    let client_creds = (
        creds.api_key.clone(),
        creds.api_secret.clone(),
        creds.admin_token.expose().to_owned(),
    );
    let app = Application::build(settings, creds).await?;
    let base = format!("http://{}", app.addr());
    say!(
        "Demo authorizer on {base}, ledger in {} (removed at the end)\n",
        app.store().describe()
    );
    let store = app.store().clone();
    let handle = app.handle();
    let running = actix_rt::spawn(app.run_until_stopped());
    let c = Client::new(base, client_creds.0, client_creds.1, client_creds.2);
    let result = demo_story(&c, &store).await;
    handle.stop(true).await;
    // The application's own shutdown: the dispatcher releases its webhook sender, then the
    // store closes (closing it here first left the release failing on a closed pool).
    let _ = running.await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo_story(c: &Client, store: &store::Store) -> anyhow::Result<i32> {
    let user = "demo-user";
    let step = |n: u32, text: &str| say!("{n}. {text}");
    step(
        1,
        "The issuer opens an ARS account for demo-user and deposits 1000.00",
    );
    let (st, v) = c
        .admin("PUT", &format!("/v1/accounts/{user}/ARS"), None, None)
        .await?;
    show(st, &v, false, |v| format!("   {}", account_line(v)))?;
    let (st, v) = c
        .admin(
            "POST",
            &format!("/v1/accounts/{user}/ARS/deposits"),
            Some(json!({"amount": "1000.00", "reference": "demo top-up"})),
            Some(&generated_id("demo")),
        )
        .await?;
    show(st, &v, false, |v| {
        format!(
            "   deposited {} ARS, available {}",
            v["amount"].as_str().unwrap_or(""),
            v["available"].as_str().unwrap_or("")
        )
    })?;
    let sim = |kind: SimKind, amount: &str, original: Option<String>| Simulation {
        kind,
        user: user.into(),
        card: None,
        amount: amount.into(),
        currency: "ARS".into(),
        extracash: None,
        original,
        id: None,
        mcc: "5045".into(),
        tx_type: None,
    };
    let mut all_verified = true;
    // The refund corrects the first purchase.
    let mut purchase: Option<String> = None;
    let steps = [
        (
            SimKind::Purchase,
            "250.00",
            "The cardholder buys for 250.00 ARS (the processor asks us; we approve and book)",
        ),
        (
            SimKind::Purchase,
            "900.00",
            "They try 900.00 ARS: more than is left",
        ),
        (
            SimKind::Refund,
            "100.00",
            "The merchant refunds 100.00 ARS of the first purchase (an adjustment: always booked)",
        ),
        (SimKind::Balance, "0", "A balance inquiry at an ATM"),
    ];
    for (n, (kind, amount, text)) in (2..).zip(steps) {
        say!("{n}. {text}");
        let original = if kind == SimKind::Refund {
            purchase.clone()
        } else {
            None
        };
        let (report, human, ok) = simulate(c, &sim(kind, amount, original)).await?;
        say!("   {}", human.replace('\n', "\n   "));
        all_verified &= ok;
        if purchase.is_none() {
            purchase = report["transaction_id"].as_str().map(str::to_owned);
        }
    }
    say!("6. The posting history explains the balance");
    let (st, v) = c
        .admin(
            "GET",
            &format!("/v1/accounts/{user}/ARS/postings"),
            None,
            None,
        )
        .await?;
    show(st, &v, false, |v| {
        v["postings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "   {:<13} {:>9}  -> {:>8}",
                    p["kind"].as_str().unwrap_or(""),
                    p["amount"].as_str().unwrap_or(""),
                    p["balance_after"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let report = store.audit().await?;
    say!(
        "7. Audit: {} movements, {} postings, {}",
        report.movements,
        report.postings,
        if report.is_clean() {
            "every invariant holds".to_owned()
        } else {
            format!("{} VIOLATIONS", report.violations.len())
        }
    );
    say!(
        "\nNext: `authorizer serve` keeps a ledger in ./data; `authorizer simulate purchase --amount 125.50` talks to it."
    );
    Ok(if all_verified && report.is_clean() {
        0
    } else {
        1
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = std::env::temp_dir().join(format!(
        "authorizer-demo-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
