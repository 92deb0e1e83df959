//! The command line: `serve` (the simulator) and `load` (the scripted load mode).

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "mobilepay-sim",
    about = "MobilePay PoS wrapper simulator (loopback only)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Serve the wrapper API with the merchants of a TOML configuration.
    Serve {
        /// The configuration file (spec §2.5).
        #[arg(long)]
        config: PathBuf,
    },
    /// Scripted load: N tills against a simulator started in this process, then a money
    /// check of every account against the ledger.
    Load(crate::script::LoadArgs),
}

/// Parses the command line and runs; the exit code is 0 on success, 1 when a load run failed
/// a check, 2 when it could not run.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli: Cli = match processor_client::support::parse_args(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Serve { config } => match serve(&config) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mobilepay-sim: {e:#}");
                2
            }
        },
        Cmd::Load(args) => match crate::script::run(args) {
            Ok(summary) => {
                print!("{}", summary.table());
                if summary.passed() { 0 } else { 1 }
            }
            Err(e) => {
                eprintln!("mobilepay-sim load: {e:#}");
                2
            }
        },
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let cfg = Config::from_toml(&text)?;
    actix_rt::System::new().block_on(async move {
        let sim = crate::Sim::start(cfg).await?;
        println!("mobilepay-sim listening on {}", sim.base);
        tokio::signal::ctrl_c().await?;
        sim.stop().await;
        Ok(())
    })
}
