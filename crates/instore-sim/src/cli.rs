//! The command line: `instore-sim demo`, `poa-demo` and `wallet-demo`, and one subcommand
//! per action (`poa ...` and `wallet ...` for pay on account and the wallet).

use crate::config::{self, Overrides, Target};
use crate::poa::{Company, Record};
use crate::sim::{Admin, Log, Money, NewCard, Outcome, Sim};
use crate::wallet::{CancelLog, Payment};
use crate::{poa, story, wallet};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "instore-sim",
    version,
    about = "The InStore side of the stored-value, pay-on-account and wallet extensions, scripted: signs envelopes with the tenant's key as InStore does, takes the callbacks on loopback and tells what happened."
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
    /// The authorizer's admin API, for barcodes and credit limits (default:
    /// http://<server.listen>).
    #[arg(long, global = true)]
    admin_url: Option<String>,
    /// The admin bearer token (default: admin.token, else the data_dir's admin-token file
    /// `authorizer serve` wrote).
    #[arg(
        long,
        global = true,
        env = "INSTORE_SIM_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
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
    /// Open a company account with a credit line, charge it, go over the limit (declined),
    /// rename the company, ask what is owed, record the sale, read the account's log.
    PoaDemo {
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long, default_value = "500.00")]
        credit_limit: String,
        #[arg(long, default_value = "120.00")]
        charge: String,
    },
    /// Fund an account and issue a barcode (admin API), pay with it, refund it, pay again
    /// and log the cancel of a payment whose answer was lost (reversed).
    WalletDemo {
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long, default_value = "100.00")]
        deposit: String,
        /// Paid with the first barcode, tip included.
        #[arg(long, default_value = "25.00")]
        pay: String,
        #[arg(long, default_value = "3.00")]
        tip: String,
    },
    /// Pay on account: payonaccount/process, payonaccountlog, the issuer's credit limit.
    #[command(subcommand)]
    Poa(PoaCommand),
    /// The digital wallet: a barcode from the issuer, then the six wallet actions.
    #[command(subcommand)]
    Wallet(WalletCommand),
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

#[derive(Subcommand, Debug)]
enum PoaCommand {
    /// Open a company account with a credit line (Create; the tenant needs
    /// poa_create_enabled and a poa_credit_limit_max for the currency).
    Create {
        account: String,
        #[arg(long)]
        credit_limit: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        company: Option<String>,
        /// A user who may charge the account (repeat it; none: anyone at the tenant).
        #[arg(long = "user")]
        users: Vec<String>,
    },
    /// Charge a sale to the account on credit (Credit).
    #[command(alias = "charge")]
    Credit {
        account: String,
        amount: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        /// The performing user.
        #[arg(long)]
        user: Option<String>,
    },
    /// The company, its users, what it owes and its credit limit (Inquiry).
    Inquiry { account: String },
    /// Replace the company name and/or its users (Update).
    Update {
        account: String,
        #[arg(long)]
        company: Option<String>,
        /// The new list of users (repeat it).
        #[arg(long = "user")]
        users: Vec<String>,
    },
    /// Record a Credit sale in the account's log (payonaccountlog; no money moves).
    Log {
        account: String,
        amount: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "order-1")]
        order: String,
        #[arg(long, default_value = "session-1")]
        session: String,
        /// The sale was declined.
        #[arg(long)]
        declined: bool,
    },
    /// The account's log records, newest first (GET payonaccountlog/{account}).
    Logs { account: String },
    /// The issuer's side (admin API): change the credit limit, block or unblock.
    Limit {
        account: String,
        #[arg(long)]
        credit_limit: Option<String>,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long, conflicts_with = "unblock")]
        block: bool,
        #[arg(long)]
        unblock: bool,
    },
    /// The issuer's side (admin API): the account's charges and reversals with their
    /// movement ids.
    Charges { account: String },
    /// The issuer's side (admin API): reverse one charge, named by its movement id (see
    /// `poa charges`).
    Reverse { account: String, movement: i64 },
}

#[derive(Subcommand, Debug)]
enum WalletCommand {
    /// Issue a single-use barcode for a user's account (admin API).
    Barcode {
        user: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        /// One of the user's cards, ACTIVE when the barcode is paid with.
        #[arg(long)]
        card: Option<String>,
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// initialize_wallet at this location.
    Init,
    /// Pay with a barcode (pay_wallet); the total includes the tip.
    Pay {
        barcode: String,
        total: String,
        #[arg(long, default_value = "0")]
        tip: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// What of a payment is still refundable (available_wallet_refund).
    Refundable { transaction: String },
    /// Refund what is left of a payment (refund_wallet_payment).
    Refund {
        transaction: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Reverse the payment a transaction id or barcode names (cancel_wallet_payment).
    Cancel {
        #[arg(long)]
        transaction: Option<String>,
        #[arg(long)]
        barcode: Option<String>,
    },
    /// Log a cancelled payment (log_cancel_wallet); one still standing that matches its
    /// total and currency is reversed.
    LogCancel {
        #[arg(long)]
        barcode: Option<String>,
        #[arg(long)]
        transaction: Option<String>,
        #[arg(long)]
        total: Option<String>,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        reference: Option<String>,
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
    let (admin, target) = match configure(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("instore-sim: {e:#}");
            return 2;
        }
    };
    let wait = Duration::from_secs(cli.wait_secs);
    let result = actix_rt::System::new().block_on(async move {
        let mut sim = Sim::start(target, wait)?;
        sim.admin = admin;
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

/// The admin API and the tenant to act as, from the configuration and the flags over it.
fn configure(cli: &Cli) -> anyhow::Result<(Option<Admin>, Target)> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let configured = config::read(&cli.config_dir, &env)?;
    let overrides = Overrides {
        url: cli.url.clone(),
        tenant_id: cli.tenant.clone(),
        key: cli.key.clone(),
        api_key: cli.api_key.clone(),
        callback_prefix: cli.callback_url.clone(),
        admin_url: cli.admin_url.clone(),
        admin_token: cli.admin_token.clone(),
    };
    let admin = config::admin(&configured, &overrides);
    let target = config::target(&configured, &overrides, &cli.location, &cli.workstation)?;
    Ok((admin, target))
}

/// Tells one enveloped request's outcome: true when approved with a signed callback.
fn one(what: String, o: Outcome) -> bool {
    println!("{what}: {}", story::outcome(&o));
    o.approved() && o.callback_signed
}

/// Tells an answer that is not a callback (a signed GET, an admin call): true when
/// `status` was answered.
fn told(l: &Log, status: u16, lines: Vec<String>) -> bool {
    for line in lines {
        println!("{line}");
    }
    l.status == status
}

fn company(name: Option<String>, users: Vec<String>) -> Company {
    Company {
        name,
        users: (!users.is_empty()).then_some(users),
    }
}

async fn run_poa(sim: &Sim, command: PoaCommand) -> anyhow::Result<bool> {
    Ok(match command {
        PoaCommand::Create {
            account,
            credit_limit,
            currency,
            company: name,
            users,
        } => {
            let limit = Money::parse(&credit_limit, &currency)?;
            let o = sim
                .poa_create(&account, &company(name, users), limit)
                .await?;
            one(
                format!(
                    "Open account {} with a {limit} credit line",
                    story::masked(&account)
                ),
                o,
            )
        }
        PoaCommand::Credit {
            account,
            amount,
            currency,
            user,
        } => {
            let amount = Money::parse(&amount, &currency)?;
            let o = sim.poa_credit(&account, amount, user.as_deref()).await?;
            one(format!("Charge {amount} to {}", story::masked(&account)), o)
        }
        PoaCommand::Inquiry { account } => {
            let o = sim.poa_inquiry(&account).await?;
            one("Ask what is owed".into(), o)
        }
        PoaCommand::Update {
            account,
            company: name,
            users,
        } => {
            let o = sim.poa_update(&account, &company(name, users)).await?;
            one(format!("Update {}", story::masked(&account)), o)
        }
        PoaCommand::Log {
            account,
            amount,
            currency,
            user,
            order,
            session,
            declined,
        } => {
            let record = Record {
                amount: Money::parse(&amount, &currency)?,
                user,
                session_id: session,
                order_id: order,
                approved: !declined,
            };
            let o = sim.poa_record(&account, &record).await?;
            one("Record the sale".into(), o)
        }
        PoaCommand::Logs { account } => {
            let l = sim.poa_logs(&account).await?;
            told(&l, 200, poa::logs_words(&l))
        }
        PoaCommand::Limit {
            account,
            credit_limit,
            currency,
            block,
            unblock,
        } => {
            let limit = credit_limit
                .map(|l| Money::parse(&l, &currency))
                .transpose()?;
            let blocked = (block || unblock).then_some(block);
            let l = sim.poa_settings(&account, limit, blocked).await?;
            told(&l, 200, vec![poa::settings_words(&l)])
        }
        PoaCommand::Charges { account } => {
            let (view, postings) = sim.poa_charges(&account).await?;
            let ok = postings.as_ref().is_some_and(|p| p.status == 200);
            told(&view, 200, poa::charges_words(&view, postings.as_ref())) && ok
        }
        PoaCommand::Reverse { account, movement } => {
            let l = sim.poa_reverse(&account, movement).await?;
            told(&l, 201, vec![poa::settings_words(&l)])
        }
    })
}

async fn run_wallet(sim: &Sim, command: WalletCommand) -> anyhow::Result<bool> {
    Ok(match command {
        WalletCommand::Barcode {
            user,
            currency,
            card,
            expires_in_secs,
        } => {
            let l = sim
                .barcode(&user, &currency, card.as_deref(), expires_in_secs)
                .await?;
            told(&l, 201, vec![wallet::barcode_words(&l, true)])
        }
        WalletCommand::Init => {
            let o = sim.wallet_initialize().await?;
            one("Initialize the wallet".into(), o)
        }
        WalletCommand::Pay {
            barcode,
            total,
            tip,
            currency,
            note,
        } => {
            let payment = Payment {
                total: Money::parse(&total, &currency)?,
                tip: Money::parse(&tip, &currency)?,
                note,
            };
            let o = sim.wallet_pay(&barcode, &payment).await?;
            one(
                format!("Pay {} (tip {} included)", payment.total, payment.tip),
                o,
            )
        }
        WalletCommand::Refundable { transaction } => {
            let o = sim.wallet_refundable(&transaction).await?;
            one(format!("Refundable of {transaction}"), o)
        }
        WalletCommand::Refund { transaction, note } => {
            let o = sim.wallet_refund(&transaction, note.as_deref()).await?;
            one(format!("Refund {transaction}"), o)
        }
        WalletCommand::Cancel {
            transaction,
            barcode,
        } => {
            let o = sim
                .wallet_cancel(transaction.as_deref(), barcode.as_deref())
                .await?;
            one("Cancel the payment".into(), o)
        }
        WalletCommand::LogCancel {
            barcode,
            transaction,
            total,
            currency,
            reference,
        } => {
            let log = CancelLog {
                barcode,
                transaction_id: transaction,
                total: total.map(|t| Money::parse(&t, &currency)).transpose()?,
                reference,
                error_message: None,
            };
            let o = sim.wallet_log_cancel(&log).await?;
            one("Log the cancel".into(), o)
        }
    })
}

/// Each of `texts` read as an amount in `currency`.
fn amounts<const N: usize>(currency: &str, texts: [&str; N]) -> anyhow::Result<[Money; N]> {
    let read = texts
        .iter()
        .map(|t| Money::parse(t, currency))
        .collect::<anyhow::Result<Vec<Money>>>()?;
    read.try_into()
        .map_err(|_| anyhow::anyhow!("{N} amounts expected"))
}

async fn run(sim: &Sim, command: Command) -> anyhow::Result<bool> {
    Ok(match command {
        Command::PoaDemo {
            currency,
            credit_limit,
            charge,
        } => {
            let [limit, charge] = amounts(&currency, [&credit_limit, &charge])?;
            poa::demo(sim, limit, charge, true).await?.ok
        }
        Command::WalletDemo {
            currency,
            deposit,
            pay,
            tip,
        } => {
            let [deposit, pay, tip] = amounts(&currency, [&deposit, &pay, &tip])?;
            wallet::demo(sim, deposit, pay, tip, true).await?.ok
        }
        Command::Poa(c) => run_poa(sim, c).await?,
        Command::Wallet(c) => run_wallet(sim, c).await?,
        Command::Demo {
            currency,
            load,
            redeem,
        } => {
            let [load, redeem] = amounts(&currency, [&load, &redeem])?;
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
            told(&l, 200, story::log(&l))
        }
    })
}
