//! `instore-sim` against a real authorizer on both stores: the demo's walk through a gift
//! card's life (every callback arrives signed with the tenant's key), single actions with
//! their declines, a refused key, and the command line itself; the same for pay on account
//! (a credit line charged, its limit, the log) and the wallet (barcodes, payments, refunds,
//! reversals), with what they booked on the ledger.

use e2e::instore::{KEY, TENANT, tenant_settings};
use e2e::*;
use instore_sim::sim::Admin;
use instore_sim::story;
use instore_sim::wallet::Payment;
use instore_sim::{Money, NewCard, Sim, Target, poa, wallet};
use std::time::Duration;

fn usd(amount: &str) -> Money {
    Money::parse(amount, "USD").expect("amount")
}

fn card(card_type: &str, active: bool, balance: &str) -> NewCard {
    NewCard {
        card_type: card_type.into(),
        active,
        balance: usd(balance),
        cvc: None,
    }
}

/// A simulator for the page's tenant, its receiver on a free loopback port.
fn sim(key: &str) -> Sim {
    Sim::start(
        Target {
            url: String::new(),
            tenant_id: TENANT.into(),
            key: key.as_bytes().to_vec(),
            api_key: None,
            callback_prefix: "http://127.0.0.1:0/callbacks/".into(),
            location_id: "SimStore".into(),
            workstation_id: "POS-01".into(),
        },
        Duration::from_secs(15),
    )
    .expect("simulator starts")
}

/// Runs `scenario` with a server whose tenant allows the simulator's callbacks. The
/// scenario keeps the server (`TestApp`) to its end: its data directory goes with it.
async fn with_sim<F, Fut>(backend: Backend, key: &str, scenario: F)
where
    F: FnOnce(TestApp, Sim) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    with_sim_tweaked(backend, key, |_| {}, scenario).await;
}

/// As [`with_sim`], the settings changed by `tweak` after the tenant is added, and the
/// simulator given the admin API.
async fn with_sim_tweaked<F, Fut>(
    backend: Backend,
    key: &str,
    tweak: impl FnOnce(&mut authorizer::Settings),
    scenario: F,
) where
    F: FnOnce(TestApp, Sim) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sim = sim(key);
    let prefix = sim.target.callback_prefix.clone();
    run_scenario(
        backend,
        false,
        move |s| {
            tenant_settings(s, prefix.trim_end_matches('/'));
            tweak(s);
        },
        move |app| async move {
            sim.target.url = format!("{}/instore", app.base);
            sim.admin = Some(Admin {
                url: app.base.clone(),
                token: ADMIN_TOKEN.into(),
            });
            scenario(app, sim).await;
        },
    )
    .await;
}

/// The tenant may open pay-on-account lines up to 5000.00 USD.
fn poa_enabled(s: &mut authorizer::Settings) {
    let t = &mut s.instore.tenants[0];
    t.poa_create_enabled = true;
    t.poa_credit_limit_max
        .insert("USD".to_owned(), "5000.00".to_owned());
}

/// A demo's actions, once it told every step went as expected.
fn actions(d: &story::Demo) -> Vec<&'static str> {
    assert!(d.ok, "{:#?}", d.lines);
    d.outcomes.iter().map(|o| o.action).collect()
}

/// Where the command line takes its callbacks: a free loopback port.
fn cli_callback_prefix() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("http://127.0.0.1:{port}/cli")
}

/// The command line's arguments for the tenant at `app`, with an empty configuration
/// directory, then `args`.
fn cli_args(
    config_dir: &std::path::Path,
    app: &TestApp,
    prefix: &str,
    args: &[&str],
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "instore-sim".into(),
        "--config-dir".into(),
        config_dir.display().to_string(),
        "--url".into(),
        format!("{}/instore", app.base),
        "--tenant".into(),
        TENANT.into(),
        "--key".into(),
        KEY.into(),
        "--callback-url".into(),
        format!("{prefix}/"),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// Runs the binary's entry point on `argv`; it runs its own runtime, so on a thread. Its
/// exit code.
async fn run_cli(argv: Vec<String>) -> i32 {
    let h = std::thread::spawn(move || {
        instore_sim::cli::main_with_args(argv.into_iter().map(Into::into))
    });
    while !h.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    h.join().expect("no panic")
}

fn has_line(lines: &[String], line: &str) {
    assert!(lines.iter().any(|l| l == line), "{line:?} in {lines:#?}");
}

async fn demo(backend: Backend) {
    with_sim(backend, KEY, |app, sim| async move {
        let _app = app;
        let d = story::demo(&sim, usd("50.00"), usd("12.20"), false)
            .await
            .expect("demo runs");
        assert_eq!(
            actions(&d),
            ["Create", "Load", "Redeem", "Cancel", "Lookup"],
            "{:#?}",
            d.lines
        );
        let balances: Vec<String> = d
            .outcomes
            .iter()
            .map(|o| story::amount(&o.result()["data"]["balance"]))
            .collect();
        assert_eq!(
            balances,
            [
                "0.00 USD",
                "50.00 USD",
                "37.80 USD",
                "50.00 USD",
                "50.00 USD"
            ]
        );
        // The log, newest first: the cancel's +12.20, the redeem's -12.20, the load.
        let log = d.log.expect("log");
        let entries: Vec<(String, String)> = log.body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or("?").to_owned(),
                    story::amount(&e["amount"]),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Cancel".to_owned(), "12.20 USD".to_owned()),
                ("Redeem".to_owned(), "-12.20 USD".to_owned()),
                ("Load".to_owned(), "50.00 USD".to_owned()),
            ]
        );
        // One callback per request, each signed, the words say so.
        let callbacks = sim.callbacks();
        assert_eq!(callbacks.len(), 5);
        assert!(callbacks.iter().all(|c| sim.signed(c)));
        assert!(
            d.lines
                .iter()
                .any(|l| l == "7. Callbacks received: 5, 5 with a valid signature"),
            "{:#?}",
            d.lines
        );
        assert!(
            d.lines
                .iter()
                .any(|l| l.starts_with("4. Cancel that redeem: approved: 12.20 USD reversed")),
            "{:#?}",
            d.lines
        );
        sim.stop().await;
    })
    .await;
}

/// Single actions: a redeem over the balance is declined and moves nothing, a cancel is
/// applied once and told as such the second time, an inactive card cannot be loaded, an
/// unknown number is not found.
async fn single_actions(backend: Backend) {
    with_sim(backend, KEY, |app, sim| async move {
        let _app = app;
        let created = sim
            .create(&card("ReturnCard", true, "10.00"))
            .await
            .expect("create");
        assert!(created.approved(), "{}", story::outcome(&created));
        let number = created.result()["data"]["number"]
            .as_str()
            .expect("number")
            .to_owned();
        let over = sim
            .process("Redeem", &number, usd("10.01"), None)
            .await
            .expect("redeem");
        assert_eq!(
            story::outcome(&over),
            "declined: INSUFFICIENT_FUNDS (code 51); callback signature ok"
        );
        let all = sim
            .process("Redeem", &number, usd("10.00"), None)
            .await
            .expect("redeem");
        assert!(all.approved(), "{}", story::outcome(&all));
        let (tx, payment) = story::ids(&all).expect("ids");
        let cancel = sim.cancel(&number, &tx, &payment).await.expect("cancel");
        assert!(cancel.approved());
        let again = sim.cancel(&number, &tx, &payment).await.expect("cancel");
        assert_eq!(
            story::outcome(&again),
            "already cancelled earlier: nothing moved, balance 10.00 USD; callback signature ok"
        );
        let inactive = sim
            .create(&card("GiftCard", false, "0"))
            .await
            .expect("create");
        let other = inactive.result()["data"]["number"]
            .as_str()
            .expect("number")
            .to_owned();
        let load = sim
            .process("Load", &other, usd("5.00"), None)
            .await
            .expect("load");
        assert_eq!(
            story::outcome(&load),
            "declined: CARD_INACTIVE (code 62); callback signature ok"
        );
        let unknown = sim.lookup("6280009999999999", None).await.expect("lookup");
        assert_eq!(
            story::outcome(&unknown),
            "declined: CARD_NOT_FOUND (code 14); callback signature ok"
        );
        let log = sim.log(&number, 10).await.expect("log");
        assert_eq!(log.status, 200);
        assert_eq!(story::amount(&log.body["balance"]), "10.00 USD");
        // Opening load, redeem, its cancel: the declined redeem and the repeated cancel
        // booked nothing.
        assert_eq!(log.body["entries"].as_array().map(Vec::len), Some(3));
        sim.stop().await;
    })
    .await;
}

/// A simulator with another key is refused before anything is stored, and says so.
async fn wrong_key(backend: Backend) {
    with_sim(
        backend,
        "another-key-of-the-same-length!!",
        |app, sim| async move {
            let _app = app;
            let o = sim
                .create(&card("GiftCard", true, "1.00"))
                .await
                .expect("create");
            assert_eq!(o.status, 401);
            assert!(
                story::outcome(&o).starts_with("refused by the authorizer: HTTP 401"),
                "{}",
                story::outcome(&o)
            );
            let log = sim.log("6280001234567895", 10).await.expect("log");
            assert_eq!(log.status, 401);
            assert!(sim.callbacks().is_empty());
            sim.stop().await;
        },
    )
    .await;
}

/// The binary's entry point with flags only (an empty configuration directory): the demo
/// exits 0; a redeem on an unknown card exits 1. It runs its own runtime, so on a thread.
async fn command_line(backend: Backend) {
    // The command line opens its own receiver: a fixed free port, allowed by the tenant.
    let prefix = cli_callback_prefix();
    let allowed = prefix.clone();
    run_scenario(
        backend,
        false,
        move |s| tenant_settings(s, &allowed),
        move |app| async move {
            let config_dir = tempfile::tempdir().expect("temp dir");
            let run = |args: &[&str]| run_cli(cli_args(config_dir.path(), &app, &prefix, args));
            assert_eq!(run(&["demo"]).await, 0);
            assert_eq!(run(&["redeem", "6280009999999999", "1.00"]).await, 1);
            assert_eq!(run(&["bogus"]).await, 2);
        },
    )
    .await;
}

/// The day's summary for the retailer's settlement: totals per action and currency (a
/// Cancel under the kind it reverses), operations and legs, the net; a declined request
/// counts nothing, another day and another tenant are empty; the CLI's CSV of it.
async fn summary(backend: Backend) {
    with_sim(backend, KEY, |app, sim| async move {
        let new_card = |balance: &str| card("GiftCard", true, balance);
        let number = |o: &instore_sim::Outcome| {
            o.result()["data"]["number"]
                .as_str()
                .expect("number")
                .to_owned()
        };
        let a = number(&sim.create(&new_card("20.00")).await.expect("create"));
        assert!(
            sim.process("Load", &a, usd("30.00"), None)
                .await
                .expect("load")
                .approved()
        );
        assert!(
            sim.process("Redeem", &a, usd("12.20"), None)
                .await
                .expect("redeem")
                .approved()
        );
        let five = sim
            .process("Redeem", &a, usd("5.00"), None)
            .await
            .expect("redeem");
        let (tx, payment) = story::ids(&five).expect("ids");
        assert!(
            sim.cancel(&a, &tx, &payment)
                .await
                .expect("cancel")
                .approved()
        );
        let declined = sim
            .process("Redeem", &a, usd("99.00"), None)
            .await
            .expect("redeem");
        assert!(!declined.approved());
        let b = number(&sim.create(&new_card("0")).await.expect("create"));
        let ten = sim
            .process("Load", &b, usd("10.00"), None)
            .await
            .expect("load");
        let (tx, payment) = story::ids(&ten).expect("ids");
        assert!(
            sim.cancel(&b, &tx, &payment)
                .await
                .expect("cancel")
                .approved()
        );

        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let path =
            |tenant: &str, day: &str| format!("/v1/instore/tenants/{tenant}/summary?day={day}");
        let r = app
            .admin("GET", &path(TENANT, &today.to_string()), None, None)
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        let v = r.json();
        let totals: Vec<(String, i64, i64, String)> = v["totals"]
            .as_array()
            .expect("totals")
            .iter()
            .map(|t| {
                (
                    t["action"].as_str().unwrap_or("?").to_owned(),
                    t["operations"].as_i64().unwrap_or(-1),
                    t["movements"].as_i64().unwrap_or(-1),
                    t["amount"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        let row = |a: &str, o: i64, m: i64, amount: &str| (a.to_owned(), o, m, amount.to_owned());
        assert_eq!(
            totals,
            [
                row("Cancel of Load", 1, 1, "-10.00"),
                row("Cancel of Redeem", 1, 1, "5.00"),
                row("Load", 3, 3, "60.00"),
                row("Redeem", 2, 2, "-17.20"),
            ],
            "{v}"
        );
        assert_eq!(v["net"][0]["currency"], "USD");
        assert_eq!(v["net"][0]["operations"], 7);
        assert_eq!(v["net"][0]["amount"], "37.80");
        assert_eq!(v["net"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["time_zone"], "UTC");
        assert_eq!(
            v["to_ms"].as_i64().unwrap() - v["from_ms"].as_i64().unwrap(),
            86_400_000
        );

        assert_eq!(
            authorizer::cli::summary_csv(&v),
            format!(
                "day,tenant_id,currency,action,operations,movements,amount\n\
                 {today},{TENANT},USD,Cancel of Load,1,1,-10.00\n\
                 {today},{TENANT},USD,Cancel of Redeem,1,1,5.00\n\
                 {today},{TENANT},USD,Load,3,3,60.00\n\
                 {today},{TENANT},USD,Redeem,2,2,-17.20\n\
                 {today},{TENANT},USD,NET,7,,37.80\n"
            )
        );

        let yesterday = today.yesterday().expect("yesterday").to_string();
        for empty in [
            path(TENANT, &yesterday),
            path("another-tenant", &today.to_string()),
        ] {
            let r = app.admin("GET", &empty, None, None).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["totals"], serde_json::json!([]));
            assert_eq!(r.json()["net"], serde_json::json!([]));
        }
        for bad in ["2026-13-01", "yesterday", ""] {
            let r = app.admin("GET", &path(TENANT, bad), None, None).await;
            assert_eq!(r.status, 400, "{bad}: {:?}", r.json());
        }
        sim.stop().await;
    })
    .await;
}

/// The pay-on-account demo: the account opened, charged, refused beyond its line, renamed,
/// asked, its sale recorded and listed; the issuer's view of what it owes.
async fn poa_demo(backend: Backend) {
    with_sim_tweaked(backend, KEY, poa_enabled, |app, sim| async move {
        let _app = app;
        let d = poa::demo(&sim, usd("500.00"), usd("120.00"), false)
            .await
            .expect("demo runs");
        assert_eq!(
            actions(&d),
            [
                poa::CREATE,
                poa::CREDIT,
                poa::CREDIT,
                poa::UPDATE,
                poa::INQUIRY,
                poa::LOG
            ]
        );
        let account = d.number.clone().expect("account");
        let tail = story::masked(&account);
        has_line(
            &d.lines,
            &format!(
                "1. Open account {tail} with a 500.00 USD credit line: approved: account {tail} \
                 of Acme Supplies, users clerk-1, 0.00 USD owed, credit limit 500.00 USD; \
                 callback signature ok"
            ),
        );
        has_line(
            &d.lines,
            "2. Charge 120.00 USD as clerk-1: approved: charged by clerk-1, 120.00 USD owed; \
             callback signature ok",
        );
        has_line(
            &d.lines,
            "3. Charge 380.01 USD, more than is left: declined: CREDIT_LIMIT_EXCEEDED (code 51); \
             callback signature ok",
        );
        has_line(
            &d.lines,
            &format!(
                "5. Ask what is owed: approved: account {tail} of Acme Supplies Ltd, users \
                 clerk-1, 120.00 USD owed, credit limit 500.00 USD; callback signature ok"
            ),
        );
        has_line(
            &d.lines,
            "8. Callbacks received: 6, 6 with a valid signature",
        );
        let log = d.log.expect("log");
        let records = log.body["logs"].as_array().expect("logs");
        assert_eq!(records.len(), 1, "{}", log.body);
        assert_eq!(story::amount(&records[0]["amount"]), "120.00 USD");
        // The ledger: 120.00 owed, the declined charge booked nothing.
        let issuer = sim.poa_settings(&account, None, None).await.expect("admin");
        assert_eq!(issuer.status, 200, "{}", issuer.body);
        assert_eq!(
            (&issuer.body["owed"], &issuer.body["available"]),
            (&serde_json::json!("120.00"), &serde_json::json!("380.00"))
        );
        sim.stop().await;
    })
    .await;
}

/// Pay on account one request at a time: an unknown account, a user not authorized, the
/// issuer's higher limit letting a refused charge through, a block, the issuer's reversal
/// of a charge (once).
async fn poa_single_actions(backend: Backend) {
    with_sim_tweaked(backend, KEY, poa_enabled, |app, sim| async move {
        let _app = app;
        let account = "7700112233";
        let unknown = sim.poa_inquiry(account).await.expect("inquiry");
        assert_eq!(
            story::outcome(&unknown),
            "declined: ACCOUNT_NOT_FOUND (code 14); callback signature ok"
        );
        let company = poa::Company {
            name: Some("Bolt & Nut".into()),
            users: Some(vec!["u1".into(), "u2".into()]),
        };
        let opened = sim
            .poa_create(account, &company, usd("100.00"))
            .await
            .expect("create");
        assert!(opened.approved(), "{}", story::outcome(&opened));
        let stranger = sim
            .poa_credit(account, usd("1.00"), Some("u3"))
            .await
            .expect("credit");
        assert_eq!(
            story::outcome(&stranger),
            "declined: USER_NOT_AUTHORIZED (code 57); callback signature ok"
        );
        let charged = sim
            .poa_credit(account, usd("60.00"), Some("u2"))
            .await
            .expect("credit");
        assert_eq!(
            story::outcome(&charged),
            "approved: charged by u2, 60.00 USD owed; callback signature ok"
        );
        let over = sim
            .poa_credit(account, usd("40.01"), Some("u1"))
            .await
            .expect("credit");
        assert!(!over.approved());
        let raised = sim
            .poa_settings(account, Some(usd("200.00")), None)
            .await
            .expect("limit");
        assert_eq!(
            poa::settings_words(&raised),
            format!(
                "account ****2233 (ledger user {}): credit limit 200.00 USD, owed 60.00 USD, \
                 available 140.00 USD",
                raised.body["user_id"].as_str().expect("user_id")
            )
        );
        let through = sim
            .poa_credit(account, usd("40.01"), Some("u1"))
            .await
            .expect("credit");
        assert!(through.approved(), "{}", story::outcome(&through));
        let blocked = sim
            .poa_settings(account, None, Some(true))
            .await
            .expect("block");
        assert!(poa::settings_words(&blocked).ends_with(", blocked"));
        let refused = sim
            .poa_credit(account, usd("1.00"), Some("u1"))
            .await
            .expect("credit");
        assert_eq!(
            story::outcome(&refused),
            "declined: ACCOUNT_BLOCKED (code 62); callback signature ok"
        );
        let asked = sim.poa_inquiry(account).await.expect("inquiry");
        assert_eq!(
            story::amount(&asked.result()["balance"]),
            "100.01 USD",
            "only the approved charges are owed"
        );
        // The issuer reverses the 60.00 charge, once.
        let user = raised.body["user_id"].as_str().expect("user_id");
        let (view, postings) = sim.poa_charges(account).await.expect("charges");
        let postings = postings.expect("postings");
        let charge = postings.body["postings"]
            .as_array()
            .expect("postings")
            .iter()
            .find(|p| p["kind"] == "POA_CHARGE" && p["amount"] == "-60.00")
            .expect("the charge")["movement_id"]
            .as_i64()
            .expect("movement id");
        let words = poa::charges_words(&view, Some(&postings));
        assert_eq!(words.len(), 3, "two charges under the account: {words:#?}");
        assert!(
            words
                .iter()
                .any(|l| l.contains(&format!("movement {charge:>6}  POA_CHARGE"))
                    && l.ends_with("-60.00 USD  owed after      60.00 USD")),
            "{words:#?}"
        );
        let reversed = sim.poa_reverse(account, charge).await.expect("reverse");
        assert_eq!(
            poa::settings_words(&reversed),
            format!(
                "movement {charge} reversed; account ****2233 (ledger user {user}): credit \
                 limit 200.00 USD, owed 40.01 USD, available 159.99 USD, blocked"
            )
        );
        let again = sim.poa_reverse(account, charge).await.expect("reverse");
        assert_eq!(again.status, 409);
        assert!(
            poa::settings_words(&again)
                .starts_with("refused by the admin API: HTTP 409 already_reversed")
        );
        sim.stop().await;
    })
    .await;
}

/// The wallet demo: funded, paid, refunded, paid again and the lost answer's cancel
/// logged (reversed); the account ends where it began, one movement each.
async fn wallet_demo(backend: Backend) {
    with_sim_tweaked(backend, KEY, |_| {}, |app, sim| async move {
        let d = wallet::demo(&sim, usd("100.00"), usd("25.00"), usd("3.00"), false)
            .await
            .expect("demo runs");
        assert_eq!(
            actions(&d),
            [
                "initialize_wallet",
                "pay_wallet",
                "available_wallet_refund",
                "refund_wallet_payment",
                "pay_wallet",
                "log_cancel_wallet"
            ]
        );
        let lines = d.lines.join("\n");
        for expected in [
            "Pay 25.00 USD (tip 3.00 USD included): approved: 25.00 paid (tip 3.00, subtotal 22.00), transaction wtx-",
            "Ask what is refundable: 25.00 refundable; callback signature ok",
            "The POS timed out: log the cancel: approved: the payment is reversed; callback signature ok",
            "The account: 100.00 USD available",
            "Callbacks received: 6, 6 with a valid signature",
        ] {
            assert!(lines.contains(expected), "{expected:?} in {lines}");
        }
        // The barcodes are told masked.
        assert!(
            !d.lines.iter().any(|l| l.split(' ').any(|w| w.len() >= 24
                && w.bytes().all(|b| b.is_ascii_digit()))),
            "{lines}"
        );
        let user = d.number.expect("user");
        assert_eq!(app.available(&user, "USD").await, "100.00");
        for (kind, n) in [
            ("WALLET_PAYMENT", 2),
            ("WALLET_REFUND", 1),
            ("WALLET_REVERSAL", 1),
        ] {
            assert_eq!(app.movements(&user, "USD", kind).await, n, "{kind}");
        }
        sim.stop().await;
    })
    .await;
}

/// A barcode for `user`'s USD account, told in full.
async fn issue(sim: &Sim, user: &str) -> String {
    let l = sim.barcode(user, "USD", None, None).await.expect("barcode");
    assert!(
        wallet::barcode_words(&l, true).starts_with("barcode "),
        "{}",
        l.body
    );
    l.body["barcode"].as_str().expect("barcode").to_owned()
}

/// Wallet requests one at a time: a payment beyond the balance is declined and moves
/// nothing, a used barcode is refused for another amount, a cancel reverses a payment
/// once, an unknown transaction is not found.
async fn wallet_single_actions(backend: Backend) {
    with_sim_tweaked(backend, KEY, |_| {}, |app, sim| async move {
        app.funded("w-single", "USD", "30.00").await;
        let pay = |total: &str| Payment {
            total: usd(total),
            tip: usd("0"),
            note: None,
        };
        let b1 = issue(&sim, "w-single").await;
        let over = sim.wallet_pay(&b1, &pay("30.01")).await.expect("pay");
        assert_eq!(
            story::outcome(&over),
            "declined: INSUFFICIENT_FUNDS (code 51); callback signature ok"
        );
        assert_eq!(app.available("w-single", "USD").await, "30.00");
        let b2 = issue(&sim, "w-single").await;
        let paid = sim.wallet_pay(&b2, &pay("12.50")).await.expect("pay");
        assert!(paid.approved(), "{}", story::outcome(&paid));
        let tx = paid.result()["transaction_id"].as_str().expect("tx").to_owned();
        let reused = sim.wallet_pay(&b2, &pay("1.00")).await.expect("pay");
        assert_eq!(
            story::outcome(&reused),
            "declined: BARCODE_USED (code 94); callback signature ok"
        );
        assert_eq!(app.available("w-single", "USD").await, "17.50");
        let cancelled = sim.wallet_cancel(Some(&tx), None).await.expect("cancel");
        assert_eq!(
            story::outcome(&cancelled),
            "approved: the payment is reversed; callback signature ok"
        );
        assert_eq!(app.available("w-single", "USD").await, "30.00");
        let left = sim.wallet_refundable(&tx).await.expect("refundable");
        assert_eq!(
            story::outcome(&left),
            "0.00 refundable; callback signature ok"
        );
        let unknown = sim
            .wallet_refund("wtx-00000000000000000000", None)
            .await
            .expect("refund");
        assert_eq!(
            story::outcome(&unknown),
            "declined: NOT_FOUND (code 25); callback signature ok"
        );
        let nobody = sim.barcode("nobody", "USD", None, None).await.expect("barcode");
        assert_eq!(
            wallet::barcode_words(&nobody, true),
            "refused by the admin API: HTTP 422 account_not_found (the user has no account in that currency)"
        );
        assert_eq!(app.movements("w-single", "USD", "WALLET_REVERSAL").await, 1);
        sim.stop().await;
    })
    .await;
}

/// The pay-on-account and wallet subcommands through the binary's entry point: the demos
/// exit 0, a charge beyond the line and a payment with an unknown barcode exit 1, the
/// wallet demo without an admin token exits 1; the ledger shows what was charged.
async fn command_line_poa_and_wallet(backend: Backend) {
    let prefix = cli_callback_prefix();
    let allowed = prefix.clone();
    run_scenario(
        backend,
        false,
        move |s| {
            tenant_settings(s, &allowed);
            poa_enabled(s);
        },
        move |app| async move {
            let config_dir = tempfile::tempdir().expect("temp dir");
            let admin_url = app.base.clone();
            let run = |args: &[&str], admin: bool| {
                let mut argv = cli_args(config_dir.path(), &app, &prefix, &[]);
                if admin {
                    argv.extend(["--admin-url".into(), admin_url.clone()]);
                    argv.extend(["--admin-token".into(), ADMIN_TOKEN.into()]);
                }
                argv.extend(args.iter().map(|a| (*a).to_owned()));
                run_cli(argv)
            };
            assert_eq!(run(&["poa-demo"], false).await, 0);
            assert_eq!(run(&["wallet-demo"], true).await, 0);
            assert_eq!(run(&["wallet-demo"], false).await, 1, "no admin token");
            let acct = "5500990011";
            let create = [
                "poa",
                "create",
                acct,
                "--credit-limit",
                "50.00",
                "--user",
                "ann",
            ];
            assert_eq!(run(&create, false).await, 0);
            assert_eq!(
                run(&["poa", "credit", acct, "30.00", "--user", "ann"], false).await,
                0
            );
            assert_eq!(
                run(&["poa", "charge", acct, "20.01", "--user", "ann"], false).await,
                1
            );
            assert_eq!(run(&["poa", "inquiry", acct], false).await, 0);
            assert_eq!(
                run(&["poa", "update", acct, "--company", "Ann's"], false).await,
                0
            );
            assert_eq!(
                run(&["poa", "log", acct, "30.00", "--user", "ann"], false).await,
                0
            );
            assert_eq!(run(&["poa", "logs", acct], false).await, 0);
            assert_eq!(
                run(&["poa", "limit", acct, "--credit-limit", "60.00"], true).await,
                0
            );
            assert_eq!(run(&["poa", "inquiry", "0000000000"], false).await, 1);
            let r = app
                .admin_put(
                    &format!("/v1/instore/poa/{TENANT}/{acct}"),
                    serde_json::json!({}),
                )
                .await;
            assert_eq!(
                (
                    &r.json()["owed"],
                    &r.json()["credit_limit"],
                    &r.json()["company_name"]
                ),
                (
                    &serde_json::json!("30.00"),
                    &serde_json::json!("60.00"),
                    &serde_json::json!("Ann's")
                ),
            );
            assert_eq!(run(&["wallet", "init"], false).await, 0);
            app.funded("w-cli", "USD", "5.00").await;
            assert_eq!(run(&["wallet", "barcode", "w-cli"], true).await, 0);
            assert_eq!(run(&["wallet", "barcode", "w-cli"], false).await, 1);
            assert_eq!(
                run(
                    &["wallet", "pay", "000000000000000000000000", "1.00"],
                    false
                )
                .await,
                1
            );
            assert_eq!(
                run(&["wallet", "refundable", "wtx-00000000000000000000"], false).await,
                1
            );
            assert_eq!(
                run(&["wallet", "cancel"], false).await,
                0,
                "nothing to reverse"
            );
            assert_eq!(
                run(&["poa", "credit", acct, "1.005"], false).await,
                1,
                "not a USD amount"
            );
            assert_eq!(app.available("w-cli", "USD").await, "5.00");
        },
    )
    .await;
}

macro_rules! on_both {
    ($($name:ident),*) => {
        mod postgres {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(e2e::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(e2e::Backend::Sqlite).await;
                }
            )*
        }
    };
}

on_both!(
    demo,
    single_actions,
    wrong_key,
    command_line,
    summary,
    poa_demo,
    poa_single_actions,
    wallet_demo,
    wallet_single_actions,
    command_line_poa_and_wallet
);
