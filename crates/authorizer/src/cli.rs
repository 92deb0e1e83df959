//! The `authorizer` command line.

use crate::app::Application;
use crate::config::Settings;
use crate::{credentials, telemetry};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Check the ledger's invariants; exits 1 on any violation, printing each.
    Audit,
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let settings = match Settings::load(&cli.config_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("authorizer: {e}");
            return 2;
        }
    };
    telemetry::init(&settings.log);
    let result = match cli.command {
        Command::Serve { no_migrate } => serve(settings, no_migrate).await,
        Command::Migrate => migrate(settings).await,
        Command::Audit => audit(settings).await,
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
        "authorizer listening on http://{} (store: {}{})",
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
    println!(
        "{}: {} migration(s) applied",
        store.describe(),
        applied.len()
    );
    for m in applied {
        println!("  {m}");
    }
    Ok(0)
}

async fn audit(settings: Settings) -> anyhow::Result<i32> {
    let store = store::Store::connect(&settings.store_config()).await?;
    let r = store.audit().await?;
    println!(
        "audit of {}: {} accounts, {} movements, {} postings, {} processor transactions, {} notifications",
        store.describe(),
        r.accounts,
        r.movements,
        r.postings,
        r.processor_transactions,
        r.notifications
    );
    for v in &r.violations {
        println!("VIOLATION [{}] {}", v.invariant, v.detail);
    }
    if r.is_clean() {
        println!("clean: every invariant holds");
        Ok(0)
    } else {
        println!("{} violation(s)", r.violations.len());
        Ok(1)
    }
}
