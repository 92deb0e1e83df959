//! `instore-sim` against a real authorizer on both stores: the demo's walk through a gift
//! card's life (every callback arrives signed with the tenant's key), single actions with
//! their declines, a refused key, and the command line itself.

use e2e::instore::{KEY, TENANT, tenant_settings};
use e2e::*;
use instore_sim::story;
use instore_sim::{Money, NewCard, Sim, Target};
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

/// Runs `scenario` with a server whose tenant allows the simulator's callbacks.
async fn with_sim<F, Fut>(backend: Backend, key: &str, scenario: F)
where
    F: FnOnce(TestApp, Sim) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sim = sim(key);
    let prefix = sim.target.callback_prefix.clone();
    run_scenario(
        backend,
        false,
        move |s| tenant_settings(s, prefix.trim_end_matches('/')),
        move |app| async move {
            sim.target.url = format!("{}/instore", app.base);
            scenario(app, sim).await;
        },
    )
    .await;
}

async fn demo(backend: Backend) {
    with_sim(backend, KEY, |_app, sim| async move {
        let d = story::demo(&sim, usd("50.00"), usd("12.20"), false)
            .await
            .expect("demo runs");
        assert!(d.ok, "{:#?}", d.lines);
        let actions: Vec<&str> = d.outcomes.iter().map(|o| o.action).collect();
        assert_eq!(
            actions,
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
    with_sim(backend, KEY, |_app, sim| async move {
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
        |_app, sim| async move {
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let prefix = format!("http://127.0.0.1:{port}/cli");
    let allowed = prefix.clone();
    run_scenario(
        backend,
        false,
        move |s| tenant_settings(s, &allowed),
        move |app| async move {
            let config_dir = tempfile::tempdir().expect("temp dir");
            let run = |args: Vec<String>| {
                let mut argv = vec![
                    "instore-sim".to_owned(),
                    "--config-dir".to_owned(),
                    config_dir.path().display().to_string(),
                    "--url".to_owned(),
                    format!("{}/instore", app.base),
                    "--tenant".to_owned(),
                    TENANT.to_owned(),
                    "--key".to_owned(),
                    KEY.to_owned(),
                    "--callback-url".to_owned(),
                    format!("{prefix}/"),
                ];
                argv.extend(args);
                std::thread::spawn(move || {
                    instore_sim::cli::main_with_args(argv.into_iter().map(Into::into))
                })
            };
            let wait = |h: std::thread::JoinHandle<i32>| async move {
                while !h.is_finished() {
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                }
                h.join().expect("no panic")
            };
            assert_eq!(wait(run(vec!["demo".into()])).await, 0);
            assert_eq!(
                wait(run(vec![
                    "redeem".into(),
                    "6280009999999999".into(),
                    "1.00".into()
                ]))
                .await,
                1
            );
            assert_eq!(wait(run(vec!["bogus".into()])).await, 2);
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

on_both!(demo, single_actions, wrong_key, command_line, summary);
