//! Section 6.2's decision tables, row by row, over typed prefetched state.

use instore::decision::*;
use instore::signature::secret_hash;
use instore::{Outcome, Reason, WireAmount};
use ledger::Currency;

const SERVER_KEY: &[u8] = b"server-side-secret-hash-key-0001";

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn wire(amount: u64, precision: u8, currency: &str) -> WireAmount {
    WireAmount {
        amount: Some(amount),
        precision,
        currency: currency.into(),
    }
}

fn card(number: &str, currency: &str, posted: i64) -> SvCard {
    SvCard::new(
        number,
        Funds::plain(Currency::parse(currency).unwrap(), posted),
    )
}

fn one(c: &SvCard) -> Vec<CardRequest<'_>> {
    vec![CardRequest {
        number: &c.number,
        card: Some(c),
        cvc: None,
        pin: None,
    }]
}

/// A Redeem of `wire` from the one card `c`, without a CVC.
fn redeem(wire: WireAmount, c: &SvCard) -> Result<Movement, Reason> {
    decide_redeem(&wire, &one(c), SERVER_KEY)
}

/// A Load of `wire` onto the one card `c`.
fn load(wire: WireAmount, c: &SvCard) -> Result<Movement, Reason> {
    decide_load(&wire, &one(c))
}

#[test]
fn redeem_approved_as_in_the_worked_example() {
    let c = card("6280001234567895", "USD", 5000);
    let m = redeem(wire(1220, 2, "USD"), &c).unwrap();
    assert_eq!(m.amount, 1220);
    assert_eq!(
        m.legs,
        vec![Leg {
            number: "6280001234567895".into(),
            delta: -1220,
            balance_after: 3780
        }]
    );
}

#[test]
fn load_and_redeem_table_in_order() {
    let c = card("1", "USD", 5000);
    let unknown = [CardRequest {
        number: "9",
        card: None,
        cvc: None,
        pin: None,
    }];
    // 1: unknown, or another tenant's, even with other failures present.
    assert_eq!(
        decide_redeem(&wire(0, 2, "XXY"), &unknown, SERVER_KEY),
        Err(Reason::CardNotFound)
    );
    let mut foreign = c.clone();
    foreign.tenant_matches = false;
    assert_eq!(load(wire(1, 2, "USD"), &foreign), Err(Reason::CardNotFound));
    // 2, 3, 4.
    assert_eq!(redeem(wire(1, 2, "XYZ"), &c), Err(Reason::UnknownCurrency));
    assert_eq!(redeem(wire(1, 2, "EUR"), &c), Err(Reason::CurrencyMismatch));
    assert_eq!(redeem(wire(0, 2, "USD"), &c), Err(Reason::InvalidAmount));
    assert_eq!(load(wire(0, 2, "USD"), &c), Err(Reason::InvalidAmount));
    assert_eq!(load(wire(1, 3, "USD"), &c), Err(Reason::InvalidAmount));
    // 5.
    let mut inactive = c.clone();
    inactive.active = false;
    assert_eq!(
        redeem(wire(1, 2, "USD"), &inactive),
        Err(Reason::CardInactive)
    );
    assert_eq!(
        load(wire(1, 2, "USD"), &inactive),
        Err(Reason::CardInactive)
    );
    // 6.
    let mut with_cvc = c.clone();
    with_cvc.cvc_hash = Some(secret_hash(SERVER_KEY, "123"));
    assert_eq!(
        redeem(wire(1, 2, "USD"), &with_cvc),
        Err(Reason::InvalidCvc)
    );
    let mut req = one(&with_cvc);
    req[0].cvc = Some("124");
    assert_eq!(
        decide_redeem(&wire(1, 2, "USD"), &req, SERVER_KEY),
        Err(Reason::InvalidCvc)
    );
    req[0].cvc = Some("123");
    assert!(decide_redeem(&wire(1, 2, "USD"), &req, SERVER_KEY).is_ok());
    // A Load needs no CVC.
    assert!(load(wire(1, 2, "USD"), &with_cvc).is_ok());
    // 7: limits of a linked account, before funds.
    let mut linked = c.clone();
    linked.linked = true;
    linked.funds.per_transaction_limit = Some(1000);
    assert_eq!(
        redeem(wire(6000, 2, "USD"), &linked),
        Err(Reason::LimitExceeded)
    );
    linked.funds.per_transaction_limit = None;
    linked.funds.daily_limit = Some(2000);
    linked.funds.daily_spent = 1500;
    assert_eq!(
        redeem(wire(501, 2, "USD"), &linked),
        Err(Reason::LimitExceeded)
    );
    assert!(redeem(wire(500, 2, "USD"), &linked).is_ok());
    // 8: holds reduce what a Redeem can spend; the overdraft extends it.
    let mut held = c.clone();
    held.funds.held = 4000;
    assert_eq!(
        redeem(wire(1001, 2, "USD"), &held),
        Err(Reason::InsufficientFunds)
    );
    let m = redeem(wire(1000, 2, "USD"), &held).unwrap();
    assert_eq!(m.legs[0].balance_after, 0);
    // JPY and BHD.
    let jpy = card("2", "JPY", 100);
    assert_eq!(
        redeem(wire(1220, 2, "JPY"), &jpy),
        Err(Reason::InvalidAmount)
    );
    assert_eq!(redeem(wire(1200, 2, "JPY"), &jpy).unwrap().amount, 12);
    let bhd = card("3", "BHD", 20_000);
    assert_eq!(
        load(wire(1220, 2, "BHD"), &bhd).unwrap().legs[0].balance_after,
        32_200
    );
    // Load over several cards.
    let two = [one(&c)[0], one(&bhd)[0]];
    assert_eq!(
        decide_load(&wire(1, 2, "USD"), &two),
        Err(Reason::InvalidTransaction)
    );
}

/// Each leg as (number, delta, balance after).
fn legs(m: &Movement) -> Vec<(&str, i64, i64)> {
    m.legs
        .iter()
        .map(|l| (l.number.as_str(), l.delta, l.balance_after))
        .collect()
}

#[test]
fn split_redeem_is_all_or_nothing() {
    let a = card("a", "USD", 3000);
    let b = card("b", "USD", 2000);
    let set = [one(&a)[0], one(&b)[0]];
    let m = decide_redeem(&wire(5000, 2, "USD"), &set, SERVER_KEY).unwrap();
    assert_eq!(m.amount, 5000);
    assert_eq!(legs(&m), vec![("a", -3000, 0), ("b", -2000, 0)]);
    assert_eq!(
        decide_redeem(&wire(5001, 2, "USD"), &set, SERVER_KEY),
        Err(Reason::InsufficientFunds)
    );
    // Covered by the first card: the second is not used.
    let m = decide_redeem(&wire(1000, 2, "USD"), &set, SERVER_KEY).unwrap();
    assert_eq!(m.legs.len(), 1);
    // One inactive card fails the whole Redeem, even when the others would cover it.
    let mut off = b.clone();
    off.active = false;
    let set = [one(&a)[0], one(&off)[0]];
    assert_eq!(
        decide_redeem(&wire(1000, 2, "USD"), &set, SERVER_KEY),
        Err(Reason::CardInactive)
    );
    // A wrong injected PIN.
    let mut pinned = b.clone();
    pinned.pin_hash = Some(secret_hash(SERVER_KEY, "1234"));
    let mut set = [one(&a)[0], one(&pinned)[0]];
    set[1].pin = Some("9999");
    assert_eq!(
        decide_redeem(&wire(1000, 2, "USD"), &set, SERVER_KEY),
        Err(Reason::InvalidPin)
    );
    // It counts a try on that card, as a lookup does, and the last try blocks it.
    pinned.pin_tries = 1;
    let set = [
        one(&a)[0],
        CardRequest {
            pin: Some("9999"),
            ..one(&pinned)[0]
        },
    ];
    let failure = redeem_pin_failure(&set, SERVER_KEY, 3);
    let tried = |tries_after, block| Some((set[1].number, PinFailure { tries_after, block }));
    assert_eq!(failure, tried(2, false));
    assert_eq!(redeem_pin_failure(&set, SERVER_KEY, 2), tried(2, true));
    // The right PIN counts none, and after wrong ones goes back to zero on approval.
    let right = [
        one(&a)[0],
        CardRequest {
            pin: Some("1234"),
            ..one(&pinned)[0]
        },
    ];
    assert_eq!(redeem_pin_failure(&right, SERVER_KEY, 3), None);
    assert_eq!(redeem_pin_resets(&right, SERVER_KEY), [right[1].number]);
    assert!(redeem_pin_resets(&set, SERVER_KEY).is_empty());
}

/// Two numbers linked to one account spend its funds once: each reads the whole account,
/// so what the first takes is gone for the second.
#[test]
fn split_redeem_over_one_account_spends_it_once() {
    let mut a = card("a", "USD", 10_000);
    a.account_id = Some(7);
    let mut b = card("b", "USD", 10_000);
    b.account_id = Some(7);
    let set = [one(&a)[0], one(&b)[0]];
    assert_eq!(
        decide_redeem(&wire(15_000, 2, "USD"), &set, SERVER_KEY),
        Err(Reason::InsufficientFunds)
    );
    // Covered by the account through the first number alone.
    let m = decide_redeem(&wire(10_000, 2, "USD"), &set, SERVER_KEY).unwrap();
    assert_eq!(legs(&m), vec![("a", -10_000, 0)]);
    // With a third number on another account: the second number adds nothing, the
    // third pays the rest, and each leg's balance is its account's after it.
    let c = card("c", "USD", 3000);
    let set = [one(&a)[0], one(&b)[0], one(&c)[0]];
    let m = decide_redeem(&wire(12_000, 2, "USD"), &set, SERVER_KEY).unwrap();
    assert_eq!(legs(&m), vec![("a", -10_000, 0), ("c", -2000, 1000)]);
}

#[test]
fn lookup() {
    let mut c = card("1", "USD", 3780);
    c.funds.held = 80;
    assert_eq!(
        decide_lookup(Some(&c), None, SERVER_KEY, 3),
        LookupDecision::Found {
            active: true,
            balance: 3700,
            currency: usd(),
            reset_pin_tries: false
        }
    );
    c.active = false;
    assert!(matches!(
        decide_lookup(Some(&c), None, SERVER_KEY, 3),
        LookupDecision::Found { active: false, .. }
    ));
    assert_eq!(
        decide_lookup(None, None, SERVER_KEY, 3),
        LookupDecision::Declined {
            reason: Reason::CardNotFound,
            pin_failure: None
        }
    );
    c.pin_hash = Some(secret_hash(SERVER_KEY, "1234"));
    c.pin_tries = 2;
    // Not active: the PIN is neither checked nor counted, right or wrong.
    for pin in ["1234", "0000"] {
        assert_eq!(
            decide_lookup(Some(&c), Some(pin), SERVER_KEY, 3),
            LookupDecision::Declined {
                reason: Reason::CardInactive,
                pin_failure: None
            }
        );
    }
    c.active = true;
    assert_eq!(
        decide_lookup(Some(&c), Some("0000"), SERVER_KEY, 3),
        LookupDecision::Declined {
            reason: Reason::InvalidPin,
            pin_failure: Some(PinFailure {
                tries_after: 3,
                block: true
            })
        }
    );
    assert_eq!(
        decide_lookup(Some(&c), None, SERVER_KEY, 3),
        LookupDecision::Declined {
            reason: Reason::InvalidPin,
            pin_failure: None
        }
    );
    assert!(matches!(
        decide_lookup(Some(&c), Some("1234"), SERVER_KEY, 3),
        LookupDecision::Found {
            reset_pin_tries: true,
            ..
        }
    ));
}

fn redeem_op() -> Operation {
    Operation {
        kind: OperationKind::Redeem,
        tenant_matches: true,
        currency: usd(),
        legs: vec![OperationLeg {
            number: "6280001234567895".into(),
            external_transaction_id: "svt-4f1c2a9b7e3d5c6a8b10".into(),
            amount: 1220,
            funds_now: Funds::plain(usd(), 3780),
        }],
        reversal: None,
    }
}

#[test]
fn cancel_table() {
    let n = "6280001234567895";
    let t = "svt-4f1c2a9b7e3d5c6a8b10";
    let op = redeem_op();
    match decide_cancel(Some(&op), n, t) {
        CancelDecision::Reverse(m) => {
            assert_eq!(m.amount, 1220);
            assert_eq!(m.legs[0].delta, 1220);
            assert_eq!(m.legs[0].balance_after, 5000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decide_cancel(None, n, t),
        CancelDecision::Declined(Reason::NotFound)
    );
    assert_eq!(
        decide_cancel(Some(&op), "6280007654321010", t),
        CancelDecision::Declined(Reason::NotFound)
    );
    assert_eq!(
        decide_cancel(Some(&op), n, "svt-other"),
        CancelDecision::Declined(Reason::NotFound)
    );
    let mut foreign = op.clone();
    foreign.tenant_matches = false;
    assert_eq!(
        decide_cancel(Some(&foreign), n, t),
        CancelDecision::Declined(Reason::NotFound)
    );
    // Already cancelled: success with the original reversal.
    let mut done = op.clone();
    let record = ReversalRecord {
        external_transaction_id: "svt-0a1b2c3d4e5f60718293".into(),
        balance_after: 5000,
    };
    done.reversal = Some(record.clone());
    assert_eq!(
        decide_cancel(Some(&done), n, t),
        CancelDecision::AlreadyCancelled(record)
    );
    // Cancel of the Cancel.
    assert_eq!(
        decide_cancel(Some(&done), n, "svt-0a1b2c3d4e5f60718293"),
        CancelDecision::Declined(Reason::NotReversible)
    );
    // Cancel of a Load whose money is spent.
    let mut load = op.clone();
    load.kind = OperationKind::Load;
    load.legs[0].funds_now = Funds::plain(usd(), 1219);
    assert_eq!(
        decide_cancel(Some(&load), n, t),
        CancelDecision::Declined(Reason::InsufficientFunds)
    );
    load.legs[0].funds_now.overdraft_limit = 10_000;
    assert_eq!(
        decide_cancel(Some(&load), n, t),
        CancelDecision::Declined(Reason::InsufficientFunds)
    );
    load.legs[0].funds_now = Funds::plain(usd(), 1220);
    assert!(
        matches!(decide_cancel(Some(&load), n, t), CancelDecision::Reverse(m) if m.legs[0].balance_after == 0)
    );
}

#[test]
fn create() {
    assert_eq!(
        decide_create(false, &wire(0, 2, "USD")),
        Err(Reason::NotPermitted)
    );
    assert_eq!(
        decide_create(true, &wire(0, 2, "XYZ")),
        Err(Reason::UnknownCurrency)
    );
    assert_eq!(
        decide_create(true, &wire(1, 3, "JPY")),
        Err(Reason::InvalidAmount)
    );
    assert_eq!(decide_create(true, &wire(0, 2, "USD")), Ok((usd(), 0)));
    assert_eq!(
        decide_create(true, &wire(2500, 2, "USD")),
        Ok((usd(), 2500))
    );
}

fn poa(owed: i64, limit: i64, users: &[&str]) -> PoaAccount {
    let mut funds = Funds::plain(usd(), -owed);
    funds.overdraft_limit = limit;
    PoaAccount {
        tenant_matches: true,
        company_name: Some("My Store".into()),
        authorized_user_ids: users.iter().map(|u| u.to_string()).collect(),
        blocked: false,
        funds,
    }
}

#[test]
fn poa_credit() {
    let acc = poa(20_000, 50_000, &["234234"]);
    let ids = vec!["234234".to_string()];
    // The worked example: owed 200.00, limit 500.00, charge 12.20.
    let c = decide_poa_credit(Some(&acc), &wire(1220, 2, "USD"), None, &ids).unwrap();
    assert_eq!(
        (c.amount, c.owed_after, c.performing_user.as_deref()),
        (1220, 21_220, Some("234234"))
    );
    // Up to the limit and one minor unit beyond.
    assert!(decide_poa_credit(Some(&acc), &wire(30_000, 2, "USD"), None, &ids).is_ok());
    assert_eq!(
        decide_poa_credit(Some(&acc), &wire(30_001, 2, "USD"), None, &ids),
        Err(Reason::CreditLimitExceeded)
    );
    assert_eq!(
        decide_poa_credit(Some(&acc), &wire(1, 2, "USD"), Some("987786"), &[]),
        Err(Reason::UserNotAuthorized)
    );
    assert_eq!(
        decide_poa_credit(Some(&acc), &wire(1, 2, "USD"), None, &[]),
        Err(Reason::UserNotAuthorized)
    );
    let open = poa(0, 100, &[]);
    assert!(decide_poa_credit(Some(&open), &wire(1, 2, "USD"), None, &[]).is_ok());
    assert_eq!(
        decide_poa_credit(None, &wire(1, 2, "USD"), None, &ids),
        Err(Reason::AccountNotFound)
    );
    let mut blocked = acc.clone();
    blocked.blocked = true;
    assert_eq!(
        decide_poa_credit(Some(&blocked), &wire(1, 2, "USD"), None, &ids),
        Err(Reason::AccountBlocked)
    );
    assert_eq!(
        decide_poa_credit(Some(&acc), &wire(1, 2, "EUR"), None, &ids),
        Err(Reason::CurrencyMismatch)
    );
    assert_eq!(
        decide_poa_credit(Some(&acc), &wire(0, 2, "USD"), None, &ids),
        Err(Reason::InvalidAmount)
    );
}

#[test]
fn poa_create_and_update() {
    let ids = vec!["234234".to_string()];
    let limit = wire(50_000, 2, "USD");
    let req = PoaCreateRequest {
        company_name: Some("My Store"),
        authorized_user_ids: &ids,
        credit_limit: &limit,
        balance: None,
    };
    let ceiling = |c: Currency| (c == usd()).then_some(500_000);
    assert_eq!(
        decide_poa_create(true, ceiling, None, &req),
        PoaCreateDecision::Open {
            currency: usd(),
            credit_limit: 50_000
        }
    );
    assert_eq!(
        decide_poa_create(false, ceiling, None, &req),
        PoaCreateDecision::Declined(Reason::NotPermitted)
    );
    let high = wire(500_001, 2, "USD");
    let eur = wire(1, 2, "EUR");
    let owed = wire(1, 2, "USD");
    for (variant, reason) in [
        (
            PoaCreateRequest {
                credit_limit: &high,
                ..req.clone()
            },
            Reason::CreditLimitTooHigh,
        ),
        // No ceiling configured for EUR: no credit can be granted in it.
        (
            PoaCreateRequest {
                credit_limit: &eur,
                ..req.clone()
            },
            Reason::CreditLimitTooHigh,
        ),
        (
            PoaCreateRequest {
                balance: Some(&owed),
                ..req.clone()
            },
            Reason::InvalidAmount,
        ),
    ] {
        assert_eq!(
            decide_poa_create(true, ceiling, None, &variant),
            PoaCreateDecision::Declined(reason)
        );
    }
    let existing = poa(0, 50_000, &["234234"]);
    assert_eq!(
        decide_poa_create(true, ceiling, Some(&existing), &req),
        PoaCreateDecision::Replay
    );
    let other = poa(0, 40_000, &["234234"]);
    assert_eq!(
        decide_poa_create(true, ceiling, Some(&other), &req),
        PoaCreateDecision::Declined(Reason::AccountExists)
    );
    // Update tolerates an echo of the current values only.
    let acc = poa(20_000, 50_000, &[]);
    assert_eq!(
        decide_poa_update(
            Some(&acc),
            Some(&wire(500_000, 3, "USD")),
            Some(&wire(20_000, 2, "USD"))
        ),
        Ok(())
    );
    assert_eq!(
        decide_poa_update(Some(&acc), Some(&wire(60_000, 2, "USD")), None),
        Err(Reason::FieldNotUpdatable)
    );
    assert_eq!(
        decide_poa_update(Some(&acc), None, Some(&wire(0, 2, "USD"))),
        Err(Reason::FieldNotUpdatable)
    );
    assert_eq!(
        decide_poa_update(None, None, None),
        Err(Reason::AccountNotFound)
    );
}

#[test]
fn wallet() {
    let barcode = Barcode {
        tenant_matches: true,
        expired: false,
        used_by_request_hash: None,
        card_active: true,
        funds: Funds::plain(usd(), 20_000),
    };
    assert_eq!(
        decide_pay_wallet(Some(&barcode), "h1", "USD", Some(16_960), Some(300)),
        WalletPayDecision::Approved {
            currency: usd(),
            total: 16_960,
            tip: 300,
            subtotal: 16_660
        }
    );
    assert_eq!(
        decide_pay_wallet(None, "h1", "USD", Some(1), Some(0)),
        WalletPayDecision::Declined(Reason::BarcodeNotFound)
    );
    let mut used = barcode.clone();
    used.used_by_request_hash = Some("h1".into());
    used.expired = true;
    assert_eq!(
        decide_pay_wallet(Some(&used), "h1", "USD", Some(1), Some(0)),
        WalletPayDecision::Replay
    );
    assert_eq!(
        decide_pay_wallet(Some(&used), "h2", "USD", Some(1), Some(0)),
        WalletPayDecision::Declined(Reason::BarcodeUsed)
    );
    let mut expired = barcode.clone();
    expired.expired = true;
    assert_eq!(
        decide_pay_wallet(Some(&expired), "h1", "USD", Some(1), Some(0)),
        WalletPayDecision::Declined(Reason::BarcodeExpired)
    );
    for (cur, total, tip, reason) in [
        ("EUR", Some(1), Some(0), Reason::CurrencyMismatch),
        ("USD", Some(0), Some(0), Reason::InvalidAmount),
        ("USD", Some(100), Some(101), Reason::InvalidAmount),
        ("USD", Some(20_001), Some(0), Reason::InsufficientFunds),
    ] {
        assert_eq!(
            decide_pay_wallet(Some(&barcode), "h", cur, total, tip),
            WalletPayDecision::Declined(reason)
        );
    }
    let mut off = barcode.clone();
    off.card_active = false;
    assert_eq!(
        decide_pay_wallet(Some(&off), "h", "USD", Some(1), Some(0)),
        WalletPayDecision::Declined(Reason::CardInactive)
    );
    assert_eq!(Reason::BarcodeExpired.code(), "54");
    assert_eq!(Reason::BarcodeUsed.code(), "94");

    let payment = WalletPayment {
        tenant_matches: true,
        currency: usd(),
        total: 16_960,
        refunded: 0,
        reversed: 0,
    };
    assert_eq!(decide_available_refund(Some(&payment)), Ok(16_960));
    assert_eq!(decide_wallet_refund(Some(&payment)), Ok(16_960));
    let refunded = WalletPayment {
        refunded: 16_960,
        ..payment.clone()
    };
    assert_eq!(
        decide_wallet_refund(Some(&refunded)),
        Err(Reason::NothingToRefund)
    );
    assert_eq!(decide_available_refund(None), Err(Reason::NotFound));
    assert_eq!(Reason::NotFound.code(), "25");
    assert_eq!(
        decide_wallet_reversal(Some(&payment), Some(("USD", Some(16_960)))),
        Ok(16_960)
    );
    assert_eq!(
        decide_wallet_reversal(Some(&payment), Some(("USD", Some(16_961)))),
        Ok(0)
    );
    assert_eq!(decide_wallet_reversal(Some(&refunded), None), Ok(0));
}

#[test]
fn outcomes() {
    assert_eq!(
        (
            Outcome::APPROVED.result(),
            Outcome::APPROVED.status(),
            Outcome::APPROVED.code(),
            Outcome::APPROVED.error()
        ),
        ("Success", "approved", "00", None)
    );
    let d = Outcome::declined(Reason::InsufficientFunds);
    assert_eq!(
        (d.result(), d.status(), d.code(), d.error()),
        ("Failure", "declined", "51", Some("INSUFFICIENT_FUNDS"))
    );
    for (r, code) in [
        (Reason::CardNotFound, "14"),
        (Reason::UnknownCurrency, "13"),
        (Reason::CurrencyMismatch, "13"),
        (Reason::InvalidAmount, "13"),
        (Reason::CardInactive, "62"),
        (Reason::InvalidCvc, "82"),
        (Reason::LimitExceeded, "61"),
        (Reason::InsufficientFunds, "51"),
        (Reason::NotReversible, "12"),
        (Reason::InvalidPin, "55"),
        (Reason::NotPermitted, "57"),
        (Reason::AccountNotFound, "14"),
        (Reason::AccountBlocked, "62"),
        (Reason::UserNotAuthorized, "57"),
        (Reason::CreditLimitExceeded, "51"),
        (Reason::CreditLimitTooHigh, "61"),
        (Reason::AccountExists, "12"),
        (Reason::FieldNotUpdatable, "12"),
        (Reason::InvalidTransaction, "12"),
        (Reason::NothingToRefund, "12"),
        (Reason::SystemError, "96"),
    ] {
        assert_eq!(r.code(), code, "{}", r.as_str());
    }
}

#[test]
fn injected_balances_are_compared_not_trusted() {
    assert!(!injected_balance_differs(
        &wire(3780, 2, "USD"),
        3780,
        usd()
    ));
    assert!(!injected_balance_differs(
        &wire(378_000, 4, "USD"),
        3780,
        usd()
    ));
    assert!(injected_balance_differs(&wire(3781, 2, "USD"), 3780, usd()));
    assert!(injected_balance_differs(&wire(3780, 2, "EUR"), 3780, usd()));
    assert!(injected_balance_differs(&wire(1, 3, "USD"), 0, usd()));
}
