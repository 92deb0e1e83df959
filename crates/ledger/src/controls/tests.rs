use super::*;
use crate::MccSet;
use crate::decision::{AccountState, CardState, CardStatus, DeclineClass, RequestKind};
use jiff::Timestamp;
use jiff::tz::TimeZone;

fn ars() -> Currency {
    Currency::parse("ARS").unwrap()
}

fn account(json: &str) -> Controls {
    Controls::from_json(json, Some(ars())).unwrap()
}

fn card(json: &str) -> Controls {
    Controls::from_json(json, None).unwrap()
}

fn refused(json: &str, owner_currency: Option<Currency>) -> (String, String) {
    let e = Controls::from_json(json, owner_currency).unwrap_err();
    (e.field, e.message)
}

#[test]
fn parses_every_control() {
    let c = account(
        r#"{
            "allowed_categories": ["5411", "5811-5814", "digital_goods"],
            "blocked_categories": ["gambling", "atm_cash", "airlines", "quasi_cash", "7995"],
            "allowed_countries": ["ARG", "uy"],
            "blocked_countries": ["BR"],
            "allowed_channels": ["contactless", "ecommerce"],
            "blocked_channels": ["atm", "international", "manual_entry"],
            "spending_limits": [
                {"amount": "500.00", "interval": "monthly"},
                {"amount": "100", "interval": "per_authorization"},
                {"amount": "50.5", "interval": "daily", "categories": ["digital_goods"]},
                {"amount": "1000", "interval": "weekly"},
                {"amount": "5000", "interval": "yearly"},
                {"amount": "9000", "interval": "all_time"}
            ],
            "velocity_limits": [{"count": 5, "interval": "daily", "categories": ["5811-5814"]}]
        }"#,
    );
    assert_eq!(c.currency, Some(ars()));
    assert!(c.allowed_categories.contains(5812));
    assert!(c.allowed_categories.contains(5816));
    assert!(!c.allowed_categories.contains(5412));
    assert!(c.blocked_categories.contains(9406));
    assert_eq!(
        c.allowed_countries
            .iter()
            .map(|k| k.alpha3())
            .collect::<Vec<_>>(),
        ["ARG", "URY"]
    );
    assert!(c.blocked_channels.contains(Channel::Atm));
    assert!(!c.blocked_channels.contains(Channel::Ecommerce));
    let limits: Vec<(Interval, i64)> = c
        .spending_limits
        .iter()
        .map(|l| (l.interval, l.amount))
        .collect();
    assert_eq!(
        limits,
        [
            (Interval::PerAuthorization, 10_000),
            (Interval::Daily, 5_050),
            (Interval::Weekly, 100_000),
            (Interval::Monthly, 50_000),
            (Interval::Yearly, 500_000),
            (Interval::AllTime, 900_000),
        ]
    );
    assert_eq!(c.velocity_limits[0].count, 5);
    assert!(!c.is_empty());
    assert!(account("{}").is_empty());
}

#[test]
fn canonical_form_round_trips_and_is_stable() {
    let a = account(
        r#"{"blocked_countries": ["BRA", "ar", "BR"], "blocked_categories": ["gambling", "5411", "5411"],
            "spending_limits": [{"interval": "monthly", "amount": "500"}, {"amount": "20.5", "interval": "daily"}],
            "velocity_limits": [{"interval": "weekly", "count": 3, "categories": ["gambling", "0742"]}],
            "blocked_channels": ["international", "atm"], "allowed_categories": [], "currency": "ARS"}"#,
    );
    let text = a.to_canonical_json();
    assert_eq!(
        text,
        r#"{"currency":"ARS","blocked_categories":["5411","gambling"],"blocked_countries":["AR","BR"],"blocked_channels":["atm","international"],"spending_limits":[{"amount":"20.50","interval":"daily"},{"amount":"500.00","interval":"monthly"}],"velocity_limits":[{"count":3,"interval":"weekly","categories":["0742","gambling"]}]}"#
    );
    let back = Controls::from_json(&text, None).unwrap();
    assert_eq!(back, a);
    assert_eq!(back.to_canonical_json(), text);
    // An account's stored form reads back under the account too.
    assert_eq!(Controls::from_json(&text, Some(ars())).unwrap(), a);
    assert_eq!(account("{}").to_canonical_json(), "{}");
    // Zeros beyond the currency's places are exact: the same limit as "20.50".
    assert_eq!(
        account(r#"{"spending_limits": [{"amount": "20.5000", "interval": "daily"}]}"#)
            .to_canonical_json(),
        r#"{"currency":"ARS","spending_limits":[{"amount":"20.50","interval":"daily"}]}"#
    );
    // Codes are not merged into ranges: two lists, two counters.
    let codes = account(r#"{"blocked_categories": ["5812", "5811"]}"#);
    assert_eq!(
        codes.to_canonical_json(),
        r#"{"blocked_categories":["5811","5812"]}"#
    );
    // Currencies without minor units and with three.
    let clp = Controls::from_json(
        r#"{"spending_limits":[{"amount":"15000","interval":"daily"}]}"#,
        Currency::parse("CLP").ok(),
    )
    .unwrap();
    assert_eq!(
        clp.to_canonical_json(),
        r#"{"currency":"CLP","spending_limits":[{"amount":"15000","interval":"daily"}]}"#
    );
    let kwd = card(r#"{"currency":"KWD","spending_limits":[{"amount":"1.5","interval":"daily"}]}"#);
    assert_eq!(kwd.spending_limits[0].amount, 1500);
    assert!(kwd.to_canonical_json().contains(r#""amount":"1.500""#));
}

#[test]
fn refusals_name_the_field() {
    let usd = Currency::parse("USD").ok();
    #[rustfmt::skip]
    let cases: &[(&str, Option<Currency>, &str, &str)] = &[
        ("[]", usd, "", "must be a JSON object"),
        ("{", usd, "", "not valid JSON"),
        (r#"{"blocked_mccs": []}"#, usd, "blocked_mccs", "unknown field"),
        (r#"{"blocked_categories": "gambling"}"#, usd, "blocked_categories", "must be a list"),
        (r#"{"blocked_categories": ["5411", "gamble"]}"#, usd, "blocked_categories[1]", "unknown category group \"gamble\""),
        (r#"{"allowed_categories": ["541"]}"#, usd, "allowed_categories[0]", "not a merchant category code"),
        (r#"{"allowed_categories": [5411]}"#, usd, "allowed_categories[0]", "must be a string"),
        (r#"{"blocked_categories": ["5814-5811"]}"#, usd, "blocked_categories[0]", "not a category range"),
        (r#"{"blocked_countries": ["AR", "XYZ"]}"#, usd, "blocked_countries[1]", "\"XYZ\" is not an ISO 3166-1"),
        (r#"{"allowed_countries": ["032"]}"#, usd, "allowed_countries[0]", "not an ISO 3166-1"),
        (r#"{"blocked_channels": ["online"]}"#, usd, "blocked_channels[0]", "unknown channel \"online\""),
        (r#"{"currency": "ARS"}"#, usd, "currency", "the account's currency is USD, not ARS"),
        (r#"{"currency": "XXY"}"#, None, "currency", "not an ISO 4217 currency"),
        (r#"{"spending_limits": [{"amount": "5", "interval": "daily"}]}"#, None, "currency", "required when there are spending limits"),
        (r#"{"spending_limits": {}}"#, usd, "spending_limits", "must be a list"),
        (r#"{"spending_limits": ["5"]}"#, usd, "spending_limits[0]", "must be an object"),
        (r#"{"spending_limits": [{"amount": "5.001", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "more decimal places than USD has (2)"),
        (r#"{"spending_limits": [{"amount": "5.5", "interval": "daily"}]}"#, Currency::parse("CLP").ok(), "spending_limits[0].amount", "more decimal places than CLP has (0)"),
        (r#"{"spending_limits": [{"amount": "500.00000000000000000000000000001", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "out of range"),
        (r#"{"spending_limits": [{"amount": 5, "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "must be a decimal string"),
        (r#"{"spending_limits": [{"amount": "1e3", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "not a decimal amount"),
        (r#"{"spending_limits": [{"amount": "-5", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "not a decimal amount"),
        (r#"{"spending_limits": [{"amount": " 5", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "not a decimal amount"),
        (r#"{"spending_limits": [{"amount": "5.", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "not a decimal amount"),
        (r#"{"spending_limits": [{"amount": "0.00", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "greater than zero"),
        (r#"{"spending_limits": [{"amount": "99999999999999999999", "interval": "daily"}]}"#, usd, "spending_limits[0].amount", "out of range"),
        (r#"{"spending_limits": [{"interval": "daily"}]}"#, usd, "spending_limits[0].amount", "required"),
        (r#"{"spending_limits": [{"amount": "5"}]}"#, usd, "spending_limits[0].interval", "required"),
        (r#"{"spending_limits": [{"amount": "5", "interval": "hourly"}]}"#, usd, "spending_limits[0].interval", "unknown interval \"hourly\""),
        (r#"{"spending_limits": [{"amount": "5", "interval": "daily", "category": ["5411"]}]}"#, usd, "spending_limits[0].category", "unknown field"),
        (r#"{"spending_limits": [{"amount": "5", "interval": "daily", "categories": []}]}"#, usd, "spending_limits[0].categories", "at least one category"),
        (r#"{"spending_limits": [{"amount": "5", "interval": "daily", "categories": ["5411", "casino"]}]}"#, usd, "spending_limits[0].categories[1]", "unknown category group"),
        (r#"{"velocity_limits": [{"count": 0, "interval": "daily"}]}"#, usd, "velocity_limits[0].count", "greater than zero"),
        (r#"{"velocity_limits": [{"count": -1, "interval": "daily"}]}"#, usd, "velocity_limits[0].count", "greater than zero"),
        (r#"{"velocity_limits": [{"count": 1.5, "interval": "daily"}]}"#, usd, "velocity_limits[0].count", "whole number"),
        (r#"{"velocity_limits": [{"count": "3", "interval": "daily"}]}"#, usd, "velocity_limits[0].count", "whole number"),
        (r#"{"velocity_limits": [{"count": 5000000000, "interval": "daily"}]}"#, usd, "velocity_limits[0].count", "too large"),
        (r#"{"velocity_limits": [{"count": 3, "interval": "per_authorization"}]}"#, usd, "velocity_limits[0].interval", "use a window"),
        (r#"{"velocity_limits": [{"count": 3, "interval": "daily"}, {"count": 3, "interval": "yearly", "amount": "5"}]}"#, usd, "velocity_limits[1].amount", "unknown field"),
    ];
    for (json, cur, field, message) in cases {
        let (f, m) = refused(json, *cur);
        assert_eq!(f, *field, "{json}: {m}");
        assert!(m.contains(message), "{json}: {m:?} should say {message:?}");
    }
}

fn counted(amount: i64, count: i64) -> Counter {
    Counter { amount, count }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn debit(amount: i64) -> ControlRequest<'static> {
    ControlRequest {
        kind: RequestKind::Debit,
        currency: ars(),
        amount,
        mcc: Some("5411"),
        country: Some("ARG"),
        channels: Channels::NONE,
        at: at("2026-12-03T15:00:00Z"),
    }
}

fn counters(rows: &[(Owner, &str, i64, i64)]) -> CounterSnapshot {
    let mut s = CounterSnapshot::default();
    for (owner, key, amount, count) in rows {
        s.insert(
            *owner,
            CounterKey::parse(key).unwrap(),
            Counter {
                amount: *amount,
                count: *count,
            },
        );
    }
    s
}

/// (case, account controls, card controls, request, counters, expected decline: None to
/// approve, or the owner, kind and message)
type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    ControlRequest<'static>,
    CounterSnapshot,
    Option<(Owner, ControlKind, &'static str)>,
);

#[test]
fn evaluation_table() {
    use ControlKind::*;
    use Owner::*;
    let none = CounterSnapshot::default;
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("no controls", "{}", None, debit(100), none(), None),
        ("empty card controls", "{}", Some("{}"), debit(100), none(), None),
        // Categories.
        ("allowed category by code", r#"{"allowed_categories":["5411"]}"#, None, debit(1), none(), None),
        ("allowed category by range", r#"{"allowed_categories":["5400-5499"]}"#, None, debit(1), none(), None),
        ("category not allowed", r#"{"allowed_categories":["5811-5814","airlines"]}"#, None, debit(1), none(), Some((Account, AllowedCategories, "merchant category 5411 not among the categories allowed on the account"))),
        ("blocked category by group", "{}", Some(r#"{"blocked_categories":["gambling"]}"#), ControlRequest { mcc: Some("7995"), ..debit(1) }, none(), Some((Card, BlockedCategories, "merchant category 7995 (gambling) blocked on the card"))),
        ("blocked category by code", r#"{"blocked_categories":["5411"]}"#, None, debit(1), none(), Some((Account, BlockedCategories, "merchant category 5411 blocked on the account"))),
        ("blocked category in another spelling", r#"{"blocked_categories":["0742"]}"#, None, ControlRequest { mcc: Some(" 742"), ..debit(1) }, none(), Some((Account, BlockedCategories, "merchant category 0742 blocked on the account"))),
        ("range edge outside", r#"{"blocked_categories":["5811-5814"]}"#, None, ControlRequest { mcc: Some("5815"), ..debit(1) }, none(), None),
        ("range edge inside", r#"{"blocked_categories":["5811-5814"]}"#, None, ControlRequest { mcc: Some("5814"), ..debit(1) }, none(), Some((Account, BlockedCategories, "merchant category 5814 (5811-5814) blocked on the account"))),
        ("allowed on account, blocked on card", r#"{"allowed_categories":["5411"]}"#, Some(r#"{"blocked_categories":["5411"]}"#), debit(1), none(), Some((Card, BlockedCategories, "merchant category 5411 blocked on the card"))),
        ("missing mcc where categories are allowed", r#"{"allowed_categories":["5411"]}"#, None, ControlRequest { mcc: None, ..debit(1) }, none(), Some((Account, AllowedCategories, "merchant category missing or unreadable where the account allows only some categories"))),
        ("unreadable mcc where categories are blocked", "{}", Some(r#"{"blocked_categories":["gambling"]}"#), ControlRequest { mcc: Some("79x5"), ..debit(1) }, none(), Some((Card, BlockedCategories, "merchant category missing or unreadable where the card blocks categories"))),
        ("credit without an mcc passes", r#"{"allowed_categories":["5411"]}"#, None, ControlRequest { mcc: None, kind: RequestKind::Credit, ..debit(1) }, none(), None),
        ("credit at a blocked merchant declines", r#"{"blocked_categories":["5411"]}"#, None, ControlRequest { kind: RequestKind::Credit, ..debit(1) }, none(), Some((Account, BlockedCategories, "merchant category 5411 blocked on the account"))),
        // Countries.
        ("allowed country alpha-3 vs alpha-2", r#"{"allowed_countries":["AR"]}"#, None, debit(1), none(), None),
        ("country not allowed", r#"{"allowed_countries":["UY","CL"]}"#, None, debit(1), none(), Some((Account, AllowedCountries, "merchant country AR (Argentina) not among the countries allowed on the account"))),
        ("blocked country", "{}", Some(r#"{"blocked_countries":["BRA"]}"#), ControlRequest { country: Some("br"), ..debit(1) }, none(), Some((Card, BlockedCountries, "merchant country BR (Brazil) blocked on the card"))),
        ("other country passes a block", r#"{"blocked_countries":["BRA"]}"#, None, debit(1), none(), None),
        ("missing country where countries are restricted", r#"{"blocked_countries":["BRA"]}"#, None, ControlRequest { country: None, ..debit(1) }, none(), Some((Account, BlockedCountries, "merchant country missing or unknown where the account restricts countries"))),
        ("unknown country where countries are allowed", r#"{"allowed_countries":["AR"]}"#, None, ControlRequest { country: Some("XXX"), ..debit(1) }, none(), Some((Account, AllowedCountries, "merchant country missing or unknown where the account restricts countries"))),
        ("balance inquiry without a country passes", r#"{"allowed_countries":["AR"]}"#, None, ControlRequest { country: None, kind: RequestKind::BalanceInquiry, ..debit(0) }, none(), None),
        // Channels.
        ("blocked channel", r#"{"blocked_channels":["ecommerce"]}"#, None, ControlRequest { channels: Channels::from_request(Some("PURCHASE"), Some("ECOMMERCE"), None, None), ..debit(1) }, none(), Some((Account, BlockedChannels, "ecommerce blocked on the account"))),
        ("atm withdrawal blocked on card", "{}", Some(r#"{"blocked_channels":["atm"]}"#), ControlRequest { channels: Channels::from_request(Some("WITHDRAWAL"), Some("ATM"), Some("CHIP"), Some("DOMESTIC")), ..debit(1) }, none(), Some((Card, BlockedChannels, "atm blocked on the card"))),
        ("plain purchase passes blocked channels", r#"{"blocked_channels":["ecommerce","atm","contactless","manual_entry","international"]}"#, None, ControlRequest { channels: Channels::from_request(Some("PURCHASE"), Some("POS"), Some("CHIP"), Some("DOMESTIC")), ..debit(1) }, none(), None),
        ("allowed channels hold every channel shown", r#"{"allowed_channels":["contactless","international"]}"#, None, ControlRequest { channels: Channels::from_list(&[Channel::Contactless, Channel::International]), ..debit(1) }, none(), None),
        ("a channel outside the allowed ones", r#"{"allowed_channels":["contactless"]}"#, None, ControlRequest { channels: Channels::from_list(&[Channel::Contactless, Channel::International]), ..debit(1) }, none(), Some((Account, AllowedChannels, "international not among the channels allowed on the account"))),
        ("merchant controls run before limits", r#"{"spending_limits":[{"amount":"1","interval":"per_authorization"}]}"#, Some(r#"{"blocked_countries":["AR"]}"#), debit(500), none(), Some((Card, BlockedCountries, "merchant country AR (Argentina) blocked on the card"))),
        // Spending limits.
        ("per authorization at the limit", r#"{"spending_limits":[{"amount":"100.00","interval":"per_authorization"}]}"#, None, debit(10_000), none(), None),
        ("per authorization above", r#"{"spending_limits":[{"amount":"100.00","interval":"per_authorization"}]}"#, None, debit(10_001), none(), Some((Account, SpendingLimit, "per-authorization spending limit of 100.00 ARS exceeded on the account"))),
        ("monthly exactly reached", r#"{"spending_limits":[{"amount":"500.00","interval":"monthly"}]}"#, None, debit(5_000), counters(&[(Account, "monthly:2026-12", 45_000, 9)]), None),
        ("monthly over by one", r#"{"spending_limits":[{"amount":"500.00","interval":"monthly"}]}"#, None, debit(5_001), counters(&[(Account, "monthly:2026-12", 45_000, 9)]), Some((Account, SpendingLimit, "monthly spending limit of 500.00 ARS reached on the account"))),
        ("last month's spending does not count", r#"{"spending_limits":[{"amount":"500.00","interval":"monthly"}]}"#, None, debit(5_001), counters(&[(Account, "monthly:2026-11", 50_000, 9)]), None),
        ("the card's spending is its own", r#"{"spending_limits":[{"amount":"500.00","interval":"monthly"}]}"#, None, debit(5_001), counters(&[(Card, "monthly:2026-12", 50_000, 9)]), None),
        ("daily, weekly, yearly, all-time each read their window", r#"{"spending_limits":[{"amount":"10","interval":"daily"},{"amount":"20","interval":"weekly"},{"amount":"30","interval":"yearly"},{"amount":"40","interval":"all_time"}]}"#, None, debit(100), counters(&[ (Account, "daily:2026-12-03", 900, 0), (Account, "weekly:2026-11-30", 1_900, 0), (Account, "yearly:2026", 2_900, 0), (Account, "all_time", 3_800, 0), ]), None),
        ("weekly over", r#"{"spending_limits":[{"amount":"10","interval":"daily"},{"amount":"20","interval":"weekly"}]}"#, None, debit(101), counters(&[(Account, "weekly:2026-11-30", 1_900, 0)]), Some((Account, SpendingLimit, "weekly spending limit of 20.00 ARS reached on the account"))),
        ("all-time over", r#"{"spending_limits":[{"amount":"40","interval":"all_time"}]}"#, None, debit(201), counters(&[(Account, "all_time", 3_800, 0)]), Some((Account, SpendingLimit, "all-time spending limit of 40.00 ARS reached on the account"))),
        ("category limit applies to its categories", r#"{"spending_limits":[{"amount":"50","interval":"daily","categories":["gambling","5811-5814"]}]}"#, None, ControlRequest { mcc: Some("7995"), ..debit(5_001) }, none(), Some((Account, SpendingLimit, "daily spending limit of 50.00 ARS for 5811-5814, gambling reached on the account"))),
        ("category limit ignores other categories", r#"{"spending_limits":[{"amount":"50","interval":"daily","categories":["gambling"]}]}"#, None, debit(5_001), none(), None),
        ("category limit reads its own counter", r#"{"spending_limits":[{"amount":"50","interval":"daily","categories":["gambling"]}]}"#, None, ControlRequest { mcc: Some("7995"), ..debit(100) }, counters(&[ (Account, "daily:2026-12-03", 5_000, 0), (Account, "daily:2026-12-03|gambling", 4_950, 0), ]), Some((Account, SpendingLimit, "daily spending limit of 50.00 ARS for gambling reached on the account"))),
        ("card limit in its own currency", "{}", Some(r#"{"currency":"ARS","spending_limits":[{"amount":"30","interval":"daily"}]}"#), debit(3_001), none(), Some((Card, SpendingLimit, "daily spending limit of 30.00 ARS reached on the card"))),
        ("card limit in another currency does not apply", "{}", Some(r#"{"currency":"USD","spending_limits":[{"amount":"30","interval":"daily"}]}"#), debit(3_001), none(), None),
        ("account passes, card limit declines", r#"{"spending_limits":[{"amount":"100","interval":"daily"}]}"#, Some(r#"{"currency":"ARS","spending_limits":[{"amount":"50","interval":"daily"}]}"#), debit(6_000), none(), Some((Card, SpendingLimit, "daily spending limit of 50.00 ARS reached on the card"))),
        ("limits do not apply to credits", r#"{"spending_limits":[{"amount":"1","interval":"per_authorization"}],"velocity_limits":[{"count":1,"interval":"daily"}]}"#, None, ControlRequest { kind: RequestKind::Credit, ..debit(500) }, counters(&[(Account, "daily:2026-12-03", 0, 1)]), None),
        // Velocity limits.
        ("velocity with room", r#"{"velocity_limits":[{"count":3,"interval":"daily"}]}"#, None, debit(1), counters(&[(Account, "daily:2026-12-03", 0, 2)]), None),
        ("velocity reached", r#"{"velocity_limits":[{"count":3,"interval":"daily"}]}"#, None, debit(1), counters(&[(Account, "daily:2026-12-03", 0, 3)]), Some((Account, VelocityLimit, "daily limit of 3 authorizations reached on the account"))),
        ("velocity of one in a category", "{}", Some(r#"{"velocity_limits":[{"count":1,"interval":"monthly","categories":["atm_cash"]}]}"#), ControlRequest { mcc: Some("6011"), ..debit(1) }, counters(&[(Card, "monthly:2026-12|atm_cash", 100, 1)]), Some((Card, VelocityLimit, "monthly limit of 1 authorization for atm_cash reached on the card"))),
        ("card velocity counts requests in any currency", "{}", Some(r#"{"velocity_limits":[{"count":2,"interval":"weekly"}]}"#), debit(1), counters(&[(Card, "weekly:2026-11-30", 0, 2)]), Some((Card, VelocityLimit, "weekly limit of 2 authorizations reached on the card"))),
        ("unreadable mcc counts against a category limit", r#"{"velocity_limits":[{"count":1,"interval":"yearly","categories":["gambling"]}]}"#, None, ControlRequest { mcc: None, ..debit(1) }, counters(&[(Account, "yearly:2026|gambling", 0, 1)]), Some((Account, VelocityLimit, "yearly limit of 1 authorization for gambling reached on the account"))),
    ];
    for (name, acc, crd, req, snap, want) in rows {
        let acc = account(acc);
        let crd = crd.map(card);
        let mut layers = vec![(Owner::Account, &acc)];
        if let Some(c) = &crd {
            layers.push((Owner::Card, c));
        }
        let ev = evaluate(&layers, &req, &snap, &TimeZone::UTC);
        crate::plan::assert_explanation_round_trips(Some(&ev), name);
        let got = ev
            .declined
            .as_ref()
            .map(|d| (d.owner, d.control, d.message.as_str()));
        assert_eq!(got, want, "case: {name}");
        match &ev.declined {
            Some(d) => {
                assert!(
                    !ev.checks.last().unwrap().passed(),
                    "case: {name}: last check declined"
                );
                assert!(
                    ev.counted.is_empty(),
                    "case: {name}: a decline counts nothing"
                );
                let class = match d.control {
                    SpendingLimit | VelocityLimit => DeclineClass::InvalidAmount,
                    _ => DeclineClass::InvalidMerchant,
                };
                assert_eq!(d.class(), class, "case: {name}");
                assert_eq!(d.status_detail, class.as_str(), "case: {name}");
            }
            None => assert!(ev.checks.iter().all(Check::passed), "case: {name}"),
        }
        // What the evaluation counts is exactly what the store was asked to prefetch.
        let mut counted: Vec<(Owner, CounterKey)> = ev
            .counted
            .iter()
            .map(|d| (d.owner, d.key.clone()))
            .collect();
        counted.sort_unstable();
        if ev.approved() {
            assert_eq!(
                counted,
                touched_keys(&layers, &req, &TimeZone::UTC),
                "case: {name}"
            );
        }
    }
}

#[test]
fn explanation_lists_the_checks_with_their_inputs() {
    let acc = account(
        r#"{"blocked_categories":["gambling"],"spending_limits":[{"amount":"100","interval":"per_authorization"},{"amount":"500.00","interval":"monthly"}]}"#,
    );
    let crd =
        card(r#"{"blocked_countries":["BR"],"velocity_limits":[{"count":10,"interval":"daily"}]}"#);
    let snap = counters(&[
        (Owner::Account, "monthly:2026-12", 45_000, 4),
        (Owner::Card, "daily:2026-12-03", 0, 2),
    ]);
    let ev = evaluate(
        &[(Owner::Account, &acc), (Owner::Card, &crd)],
        &debit(5_001),
        &snap,
        &TimeZone::UTC,
    );
    let json = serde_json::to_value(&ev).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "declined": {
                "owner": "account",
                "control": "spending_limit",
                "status_detail": "INVALID_AMOUNT",
                "message": "monthly spending limit of 500.00 ARS reached on the account"
            },
            "checks": [
                {"check": "categories", "owner": "account", "rule": "blocked", "mcc": "5411",
                 "list": ["gambling"], "matched": null, "passed": true},
                {"check": "countries", "owner": "card", "rule": "blocked", "country": "AR",
                 "list": ["BR"], "passed": true},
                {"check": "spending_limit", "owner": "account", "interval": "per_authorization",
                 "categories": null, "window": null, "currency": "ARS", "limit": "100.00",
                 "spent": "0.00", "amount": "50.01", "passed": true},
                {"check": "spending_limit", "owner": "account", "interval": "monthly",
                 "categories": null, "window": "monthly:2026-12", "currency": "ARS", "limit": "500.00",
                 "spent": "450.00", "amount": "50.01", "passed": false}
            ]
        })
    );
    // Approved: every check, and the counters to add.
    let ev = evaluate(
        &[(Owner::Account, &acc), (Owner::Card, &crd)],
        &debit(4_000),
        &snap,
        &TimeZone::UTC,
    );
    assert!(ev.approved());
    assert_eq!(ev.checks.len(), 5);
    assert!(matches!(
        ev.checks[4],
        Check::VelocityLimit {
            counted: 2,
            limit: 10,
            ..
        }
    ));
    assert_eq!(
        ev.counted,
        vec![
            CounterDelta {
                owner: Owner::Account,
                key: CounterKey::parse("monthly:2026-12").unwrap(),
                amount: 4_000,
                count: 1
            },
            // The card's controls have no currency: its counter counts, it holds no money.
            CounterDelta {
                owner: Owner::Card,
                key: CounterKey::parse("daily:2026-12-03").unwrap(),
                amount: 0,
                count: 1
            },
        ]
    );
}

#[test]
fn a_full_window_stops_at_its_boundary_in_the_configured_zone() {
    let ny = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
    // (interval, last instant of a full window, first instant of the next, its key)
    #[rustfmt::skip]
    let rows = [
        // The night the clocks go forward: the local day ends at 04:00Z, not 05:00Z.
        (Interval::Daily, "2026-03-09T03:59:59Z", "2026-03-09T04:00:00Z", "daily:2026-03-08"),
        (Interval::Daily, "2026-11-02T04:59:59Z", "2026-11-02T05:00:00Z", "daily:2026-11-01"),
        // Sunday night to Monday.
        (Interval::Weekly, "2026-12-07T04:59:59Z", "2026-12-07T05:00:00Z", "weekly:2026-11-30"),
        // The leap day is the last of February.
        (Interval::Monthly, "2028-03-01T04:59:59Z", "2028-03-01T05:00:00Z", "monthly:2028-02"),
        (Interval::Yearly, "2027-01-01T04:59:59Z", "2027-01-01T05:00:00Z", "yearly:2026"),
        (Interval::AllTime, "2027-01-01T04:59:59Z", "2040-01-01T00:00:00Z", "all_time"),
    ];
    for (interval, last, next, key) in rows {
        let acc = account(&format!(
            r#"{{"spending_limits":[{{"amount":"100","interval":"{interval}"}}],"velocity_limits":[{{"count":3,"interval":"{interval}"}}]}}"#
        ));
        let full = counters(&[(Owner::Account, key, 10_000, 1)]);
        let layers = [(Owner::Account, &acc)];
        let before = ControlRequest {
            at: at(last),
            ..debit(1)
        };
        let ev = evaluate(&layers, &before, &full, &ny);
        assert_eq!(
            ev.declined.map(|d| d.message),
            Some(format!(
                "{} spending limit of 100.00 ARS reached on the account",
                interval.words()
            )),
            "{interval} at {last}"
        );
        let after = ControlRequest {
            at: at(next),
            ..debit(1)
        };
        let ev = evaluate(&layers, &after, &full, &ny);
        assert_eq!(
            ev.approved(),
            interval != Interval::AllTime,
            "{interval} at {next}"
        );
        // A count limit reads the same window.
        let counted_out = counters(&[(Owner::Account, key, 0, 3)]);
        assert!(
            !evaluate(&layers, &before, &counted_out, &ny).approved(),
            "{interval} at {last}"
        );
    }
}

#[test]
fn windows_follow_the_configured_zone() {
    // 02:30Z on the 1st is still the last day of November in Buenos Aires (UTC-3).
    let tz = TimeZone::posix("<-03>3").unwrap();
    let acc = account(r#"{"spending_limits":[{"amount":"500.00","interval":"monthly"}]}"#);
    let req = ControlRequest {
        at: at("2026-12-01T02:30:00Z"),
        ..debit(5_001)
    };
    let snap = counters(&[(Owner::Account, "monthly:2026-11", 45_000, 0)]);
    let ev = evaluate(&[(Owner::Account, &acc)], &req, &snap, &tz);
    assert!(!ev.approved());
    let ev = evaluate(&[(Owner::Account, &acc)], &req, &snap, &TimeZone::UTC);
    assert!(ev.approved());
    assert_eq!(ev.counted[0].key.to_string(), "monthly:2026-12");
}

#[test]
fn counters_add_and_give_back() {
    let acc = account(
        r#"{"spending_limits":[{"amount":"100","interval":"daily"},{"amount":"300","interval":"monthly","categories":["5411"]}],
            "velocity_limits":[{"count":2,"interval":"daily"}]}"#,
    );
    let layers = [(Owner::Account, &acc)];
    let mut snap = CounterSnapshot::default();
    // Two approvals in one batch: the second sees the first.
    let first = evaluate(&layers, &debit(6_000), &snap, &TimeZone::UTC);
    assert!(first.approved());
    // The daily spending and velocity limits share one counter.
    assert_eq!(first.counted.len(), 2);
    snap.apply(&first.counted);
    let daily = CounterKey::parse("daily:2026-12-03").unwrap();
    assert_eq!(snap.get(Owner::Account, &daily), counted(6_000, 1));
    let second = evaluate(&layers, &debit(4_001), &snap, &TimeZone::UTC);
    assert_eq!(
        second.declined.map(|d| d.message),
        Some("daily spending limit of 100.00 ARS reached on the account".to_owned())
    );
    let second = evaluate(&layers, &debit(4_000), &snap, &TimeZone::UTC);
    assert!(second.approved());
    snap.apply(&second.counted);
    assert_eq!(snap.get(Owner::Account, &daily), counted(10_000, 2));
    let third = evaluate(&layers, &debit(0), &snap, &TimeZone::UTC);
    assert_eq!(third.declined.unwrap().control, ControlKind::VelocityLimit);

    // A partial refund gives money back, not the count; more than was taken gives back
    // only what was taken; a whole reversal then gives the count; a repeat gives nothing.
    let mut r = Released::default();
    for (what, left, released) in [
        (Release::Amount(1_000), counted(9_000, 2), 1_000),
        (Release::Amount(10_000), counted(4_000, 2), 6_000),
    ] {
        let (back, now) = release(&first.counted, r, what);
        snap.apply(&back);
        assert_eq!(snap.get(Owner::Account, &daily), left);
        assert_eq!(
            now,
            Released {
                amount: released,
                whole: false
            }
        );
        r = now;
    }
    let (back, r) = release(&first.counted, r, Release::Whole);
    snap.apply(&back);
    assert_eq!(snap.get(Owner::Account, &daily), counted(4_000, 1));
    assert!(r.whole);
    let (back, r2) = release(&first.counted, r, Release::Whole);
    assert!(back.is_empty());
    assert_eq!(r2, r);
    // A rejected verdict on the second approval gives back all of it.
    let (back, _) = release(&second.counted, Released::default(), Release::Whole);
    snap.apply(&back);
    assert_eq!(snap.get(Owner::Account, &daily), Counter::default());
    let monthly = CounterKey::parse("monthly:2026-12|5411").unwrap();
    assert_eq!(snap.get(Owner::Account, &monthly), Counter::default());
}

#[test]
fn effective_money_counts_without_a_decision() {
    let acc = account(r#"{"spending_limits":[{"amount":"100","interval":"daily"}]}"#);
    let crd = card(
        r#"{"currency":"USD","spending_limits":[{"amount":"5","interval":"weekly"}],"velocity_limits":[{"count":1,"interval":"weekly"}]}"#,
    );
    let layers = [(Owner::Account, &acc), (Owner::Card, &crd)];
    let full = counters(&[(Owner::Account, "daily:2026-12-03", 10_000, 1)]);
    // Over the limit: declined, counts nothing ...
    let ev = evaluate(&layers, &debit(500), &full, &TimeZone::UTC);
    assert_eq!(ev.declined.unwrap().control, ControlKind::SpendingLimit);
    // ... but when the network approved it anyway the money is gone, and counts.
    let deltas = approval_deltas(&layers, &debit(500), &TimeZone::UTC);
    let rows: Vec<(Owner, String, i64, i64)> = deltas
        .iter()
        .map(|d| (d.owner, d.key.to_string(), d.amount, d.count))
        .collect();
    assert_eq!(
        rows,
        [
            (Owner::Account, "daily:2026-12-03".to_owned(), 500, 1),
            // The card's limits are in USD: the ARS purchase counts once, with no money.
            (Owner::Card, "weekly:2026-11-30".to_owned(), 0, 1),
        ]
    );
    // An approval counts exactly these.
    let ev = evaluate(
        &layers,
        &debit(500),
        &CounterSnapshot::default(),
        &TimeZone::UTC,
    );
    assert_eq!(ev.counted, deltas);
    // Credits and balance inquiries count nothing.
    let credit = ControlRequest {
        kind: RequestKind::Credit,
        ..debit(500)
    };
    assert!(approval_deltas(&layers, &credit, &TimeZone::UTC).is_empty());
}

#[test]
fn a_reversal_gives_back_in_the_original_window() {
    let acc = account(r#"{"spending_limits":[{"amount":"100","interval":"daily"}]}"#);
    let layers = [(Owner::Account, &acc)];
    let mut snap = CounterSnapshot::default();
    let late = ControlRequest {
        at: at("2026-12-03T23:59:59Z"),
        ..debit(10_000)
    };
    let ev = evaluate(&layers, &late, &snap, &TimeZone::UTC);
    snap.apply(&ev.counted);
    // Reversed after midnight: the room comes back to the 3rd, the 4th is untouched.
    let (back, _) = release(&ev.counted, Released::default(), Release::Whole);
    assert_eq!(back[0].key.to_string(), "daily:2026-12-03");
    snap.apply(&back);
    let next = ControlRequest {
        at: at("2026-12-04T00:00:00Z"),
        ..debit(10_000)
    };
    assert!(evaluate(&layers, &next, &snap, &TimeZone::UTC).approved());
    // A give-back never makes a counter negative.
    snap.apply(&back);
    assert_eq!(snap.get(Owner::Account, &back[0].key), Counter::default());
}

#[test]
fn the_merchant_country_comes_first() {
    assert_eq!(
        ControlRequest::merchant_country(Some("URY"), Some("ARG")),
        Some("URY")
    );
    assert_eq!(
        ControlRequest::merchant_country(None, Some("ARG")),
        Some("ARG")
    );
    assert_eq!(
        ControlRequest::merchant_country(Some(" "), Some("ARG")),
        Some("ARG")
    );
    assert_eq!(ControlRequest::merchant_country(None, None), None);
}

#[test]
fn counter_keys_round_trip() {
    for k in [
        "daily:2026-12-03",
        "weekly:2026-11-30|gambling",
        "monthly:2026-12|0742,5811-5814,atm_cash",
        "all_time",
        "yearly:2026|6011",
    ] {
        assert_eq!(CounterKey::parse(k).unwrap().to_string(), k);
    }
    for bad in [
        "daily:2026-12-03|",
        "daily:2026-12-03|casino",
        "|gambling",
        "monthly:2026-12|5411,",
    ] {
        assert_eq!(CounterKey::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn legacy_fields_become_controls() {
    let state = AccountState {
        currency: ars(),
        balance: 0,
        held: 0,
        overdraft_limit: 0,
        per_transaction_limit: Some(10_000),
        daily_limit: Some(25_000),
        daily_spent: 0,
        blocked_mccs: MccSet::from_stored("7995,5045").unwrap(),
    };
    let acc = Controls::from_account_state(&state);
    assert_eq!(
        acc.to_canonical_json(),
        r#"{"currency":"ARS","blocked_categories":["5045","7995"],"spending_limits":[{"amount":"100.00","interval":"per_authorization"},{"amount":"250.00","interval":"daily"}]}"#
    );
    let bare = Controls::from_account_state(&AccountState {
        per_transaction_limit: None,
        daily_limit: None,
        blocked_mccs: MccSet::default(),
        ..state.clone()
    });
    assert!(bare.is_empty());
    let crd = Controls::from_card_state(&CardState {
        status: CardStatus::Active,
        belongs_to_user: true,
        blocked_mccs: MccSet::from_stored("6011").unwrap(),
    });
    assert_eq!(
        crd.to_canonical_json(),
        r#"{"blocked_categories":["6011"]}"#
    );

    // The converted controls decide as the legacy rules did, beside new ones.
    let new = account(r#"{"spending_limits":[{"amount":"1000","interval":"monthly"}]}"#);
    let layers = [
        (Owner::Account, &acc),
        (Owner::Account, &new),
        (Owner::Card, &crd),
    ];
    let none = CounterSnapshot::default();
    let decide = |req: &ControlRequest<'_>, snap: &CounterSnapshot| {
        evaluate(&layers, req, snap, &TimeZone::UTC)
            .declined
            .map(|d| d.message)
    };
    assert_eq!(decide(&debit(10_000), &none), None);
    assert_eq!(
        decide(&debit(10_001), &none).as_deref(),
        Some("per-authorization spending limit of 100.00 ARS exceeded on the account")
    );
    assert_eq!(
        decide(
            &ControlRequest {
                mcc: Some("5045"),
                ..debit(1)
            },
            &none
        )
        .as_deref(),
        Some("merchant category 5045 blocked on the account")
    );
    assert_eq!(
        decide(
            &ControlRequest {
                mcc: Some("6011"),
                ..debit(1)
            },
            &none
        )
        .as_deref(),
        Some("merchant category 6011 blocked on the card")
    );
    let spent = counters(&[(Owner::Account, "daily:2026-12-03", 20_000, 2)]);
    assert_eq!(decide(&debit(5_000), &spent), None);
    assert_eq!(
        decide(&debit(5_001), &spent).as_deref(),
        Some("daily spending limit of 250.00 ARS reached on the account")
    );
    // The legacy daily limit and a new daily limit of the account share its daily counter.
    let ev = evaluate(&layers, &debit(5_000), &spent, &TimeZone::UTC);
    let keys: Vec<String> = ev.counted.iter().map(|d| d.key.to_string()).collect();
    assert_eq!(keys, ["daily:2026-12-03", "monthly:2026-12"]);
}
