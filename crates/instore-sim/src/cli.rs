//! The command line: `instore-sim demo`, and one subcommand per action.

use crate::config::{self, Overrides};
use crate::sim::{Money, NewCard, Sim};
use crate::story;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "instore-sim",
    version,
    about = "The InStore side of the stored-value extension, scripted: signs envelopes with the tenant's key as InStore does, takes the callbacks on loopback and tells what happened."
)]
pub struct Cli {
    /// The authorizer's configuration directory (its tenants and keys are read from there).
    #[arg(
        long,
        global = true,
        default_value = "config",
        env = "AUTHORIZER_CONFIG_DIR"
    )]
    config_dir: PathBuf,
    /// The authorizer's InStore base URL (default: http://<server.listen><instore.base_path>).
    #[arg(long, global = true)]
    url: Option<String>,
    /// The tenant to act as (default: the only one configured).
    #[arg(long, global = true)]
    tenant: Option<String>,
    /// The tenant's verification key (default: from the configuration).
    #[arg(long, global = true, env = "INSTORE_SIM_KEY", hide_env_values = true)]
    key: Option<String>,
    /// X-API-Key to send (default: the tenant's api_key, if any).
    #[arg(
        long,
        global = true,
        env = "INSTORE_SIM_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Where callbacks are sent and taken (an http loopback URL the tenant allows; default:
    /// the first such prefix of its callback_url_prefixes).
    #[arg(long, global = true)]
    callback_url: Option<String>,
    #[arg(long, global = true, default_value = "SimStore")]
    location: String,
    #[arg(long, global = true, default_value = "POS-01")]
    workstation: String,
    /// Seconds to wait for each callback.
    #[arg(long, global = true, default_value_t = 15)]
    wait_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a gift card, load it, redeem part, cancel the redeem, look it up, show its log
    /// and the callbacks received.
    Demo {
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long, default_value = "50.00")]
        load: String,
        #[arg(long, default_value = "12.20")]
        redeem: String,
    },
    /// Create a card (storedvaluecard); its number is told in the callback.
    Create {
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Opening balance, booked as a Load.
        #[arg(long, default_value = "0")]
        balance: String,
        /// GiftCard, ReturnCard or Promotional.
        #[arg(long = "type", default_value = "GiftCard")]
        card_type: String,
        #[arg(long)]
        inactive: bool,
        /// A CVC every later Redeem must present.
        #[arg(long)]
        cvc: Option<String>,
    },
    /// Credit a card.
    Load {
        number: String,
        amount: String,
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Debit a card (all or nothing).
    Redeem {
        number: String,
        amount: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        cvc: Option<String>,
    },
    /// Reverse a Load or Redeem, named by the ids its callback returned.
    Cancel {
        number: String,
        #[arg(long)]
        transaction: String,
        #[arg(long)]
        payment: String,
    },
    /// A card's status and spendable balance.
    Lookup {
        number: String,
        #[arg(long)]
        pin: Option<String>,
    },
    /// A card's InStore movements, newest first.
    Log {
        number: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// Parses `args`, runs the command, returns the exit code: 0 when every step was approved
/// and every callback verified, 1 otherwise, 2 on a usage or configuration error.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let configured = match config::read(&cli.config_dir, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("instore-sim: {e:#}");
            return 2;
        }
    };
    let overrides = Overrides {
        url: cli.url.clone(),
        tenant_id: cli.tenant.clone(),
        key: cli.key.clone(),
        api_key: cli.api_key.clone(),
        callback_prefix: cli.callback_url.clone(),
    };
    let target = match config::target(&configured, &overrides, &cli.location, &cli.workstation) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("instore-sim: {e:#}");
            return 2;
        }
    };
    let wait = Duration::from_secs(cli.wait_secs);
    let result = actix_rt::System::new().block_on(async move {
        let sim = Sim::start(target, wait)?;
        let r = run(&sim, cli.command).await;
        sim.stop().await;
        r
    });
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("instore-sim: {e:#}");
            1
        }
    }
}

async fn run(sim: &Sim, command: Command) -> anyhow::Result<bool> {
    let one = |what: String, o: crate::sim::Outcome| {
        println!("{what}: {}", story::outcome(&o));
        o.approved() && o.callback_signed
    };
    Ok(match command {
        Command::Demo {
            currency,
            load,
            redeem,
        } => {
            let load = Money::parse(&load, &currency)?;
            let redeem = Money::parse(&redeem, &currency)?;
            story::demo(sim, load, redeem, true).await?.ok
        }
        Command::Create {
            currency,
            balance,
            card_type,
            inactive,
            cvc,
        } => {
            let balance = Money::parse(&balance, &currency)?;
            let card = NewCard {
                card_type: card_type.clone(),
                active: !inactive,
                balance,
                cvc,
            };
            let o = sim.create(&card).await?;
            one(format!("Create a {card_type} with {balance}"), o)
        }
        Command::Load {
            number,
            amount,
            currency,
        } => {
            let amount = Money::parse(&amount, &currency)?;
            let o = sim.process("Load", &number, amount, None).await?;
            one(format!("Load {amount}"), o)
        }
        Command::Redeem {
            number,
            amount,
            currency,
            cvc,
        } => {
            let amount = Money::parse(&amount, &currency)?;
            let o = sim
                .process("Redeem", &number, amount, cvc.as_deref())
                .await?;
            one(format!("Redeem {amount}"), o)
        }
        Command::Cancel {
            number,
            transaction,
            payment,
        } => {
            let o = sim.cancel(&number, &transaction, &payment).await?;
            one(format!("Cancel {payment}"), o)
        }
        Command::Lookup { number, pin } => {
            let o = sim.lookup(&number, pin.as_deref()).await?;
            one("Look the card up".into(), o)
        }
        Command::Log { number, limit } => {
            let l = sim.log(&number, limit).await?;
            for line in story::log(&l) {
                println!("{line}");
            }
            l.status == 200
        }
    })
}
