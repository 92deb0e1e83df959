//! Section 7's bodies reproduced byte for byte from typed decisions, with their MACs, and
//! `JS(parse(body)) == body` for every body we emit.

use instore::body::*;
use instore::decision::*;
use instore::json::parse;
use instore::payload::{
    CardNumber, CardType, PoaAction, PoaLogRecord, StoredValueLookup, StoredValueProcess,
};
use instore::signature::{sha256_hex, sign};
use instore::{Amount, Outcome, Reason};
use ledger::Currency;

const KEY: &[u8] = b"instore-demo-verification-key-01";
const SERVER_KEY: &[u8] = b"server-side-secret-hash-key-0001";

fn usd(minor: i64) -> Amount {
    Amount::new(minor, Currency::parse("USD").unwrap())
}

fn payload(text: &str) -> instore::Value {
    parse(text.as_bytes()).unwrap().value
}

fn card(number: &str, posted: i64) -> SvCard {
    SvCard::new(
        number,
        Funds::plain(Currency::parse("USD").unwrap(), posted),
    )
}

const MERCHANT: WalletMerchant<'static> = WalletMerchant {
    merchant_id: "634100700040000",
    terminal_id: "00000011",
    method: "wallet",
};

#[test]
fn acknowledgement_71() {
    let ack = ack("req-9a8b0001");
    assert_eq!(ack, r#"{"requestId":"req-9a8b0001"}"#);
    assert_eq!(
        sign(KEY, ack.as_bytes()),
        "6dc54415947f779295eb5b8bb5fbddc55e79bd6a4d80c8a0f7d824e33c89bf0f"
    );
    assert_eq!(
        ack_results("req-9a8b0001", Some("664f")),
        r#"{"results":[{"requestId":"req-9a8b0001","paymentProcessorId":"664f"}]}"#
    );
    assert_eq!(
        ack_results("req-9a8b0001", None),
        r#"{"results":[{"requestId":"req-9a8b0001"}]}"#
    );
}

/// 7.1: the typed payload, decided against the state before, gives the callback.
#[test]
fn redeem_callback_71() {
    let p = StoredValueProcess::read(&payload(include_str!("vectors/7.1-payload.json"))).unwrap();
    let StoredValueProcess::Move {
        context,
        number,
        amount,
        session_id,
        reference,
        ..
    } = &p
    else {
        panic!("a Redeem");
    };
    let state = card(number.as_str(), 5000);
    let req = [CardRequest {
        number: number.as_str(),
        card: Some(&state),
        cvc: None,
        pin: None,
    }];
    let m = decide_redeem(amount, &req, SERVER_KEY).unwrap();
    let data = MovementData {
        number,
        amount: Some(Amount::new(m.amount, m.currency)),
        balance: Some(Amount::new(m.legs[0].balance_after, m.currency)),
        external_transaction_id: Some("svt-4f1c2a9b7e3d5c6a8b10"),
        external_payment_id: Some("svp-9c8d7e6f5a4b3c2d1e0f"),
        session_id,
        reference,
        accounts: None,
    };
    let body = callback(
        &context.request_id,
        CallbackAction::Redeem,
        Outcome::APPROVED,
        data.to_value(),
    );
    assert_eq!(body, include_str!("vectors/7.1-callback.json"));
    assert_eq!(body.len(), 420);
    assert_eq!(
        sha256_hex(body.as_bytes()),
        "5056a7369a78b8659ac808277580850c32d641a9d7801923a1295c09e18f06ed"
    );
    assert_eq!(
        sign(KEY, body.as_bytes()),
        "b90b802c37d5aca18eb727649484e4551526d111a5e7b217132cc4590119da0f"
    );
    assert!(is_canonical(&body));
}

/// 7.2: the lookup after 7.1.
#[test]
fn lookup_callback_72() {
    let p =
        StoredValueLookup::read(&payload(include_str!("vectors/7.2-signed-payload.json"))).unwrap();
    let state = card(p.number.as_str(), 3780);
    let LookupDecision::Found {
        active,
        balance,
        currency,
        ..
    } = decide_lookup(Some(&state), None, SERVER_KEY, 3)
    else {
        panic!("found");
    };
    let found = LookupCard {
        number: &p.number,
        card_type: CardType::GiftCard,
        active,
        balance: Amount::new(balance, currency),
    };
    let body = callback(
        &p.context.request_id,
        CallbackAction::Lookup,
        Outcome::APPROVED,
        lookup_data(&p.number, Some(&found), &p.cart_key, None),
    );
    assert_eq!(body, include_str!("vectors/7.2-callback.json"));
    assert_eq!(
        sign(KEY, body.as_bytes()),
        "e84351b4111510b296d23cb7bc023f71498d6c16695d5dad2201da2095083077"
    );
}

/// 7.3: Cancel, then the same Cancel under a new requestId.
#[test]
fn cancel_callbacks_73() {
    let text = include_str!("vectors/7.3-payload.json");
    let usd_c = Currency::parse("USD").unwrap();
    let mut op = Operation {
        kind: OperationKind::Redeem,
        tenant_matches: true,
        currency: usd_c,
        legs: vec![OperationLeg {
            number: "6280001234567895".into(),
            external_transaction_id: "svt-4f1c2a9b7e3d5c6a8b10".into(),
            amount: 1220,
            funds_now: Funds::plain(usd_c, 3780),
        }],
        reversal: None,
    };
    let reversal_id = "svt-0a1b2c3d4e5f60718293";
    for (payload_text, expected, mac) in [
        (
            text.to_owned(),
            include_str!("vectors/7.3-callback.json"),
            "9736a6aae446d32e66a151efcbb57adc4af66644a4b0f0a09c15aa84a7d953e3",
        ),
        (
            text.replace("req-9a8b0003", "req-9a8b0004"),
            include_str!("vectors/7.3-callback-again.json"),
            "930e78fdaeffa49faf480ee4ce6c58bb58b35c9757ec660305a33035acd6a381",
        ),
    ] {
        let p = StoredValueProcess::read(&payload(&payload_text)).unwrap();
        let StoredValueProcess::Cancel {
            context,
            number,
            external_transaction_id,
            external_payment_id,
        } = &p
        else {
            panic!("a Cancel");
        };
        let (balance, already) =
            match decide_cancel(Some(&op), number.as_str(), external_transaction_id) {
                CancelDecision::Reverse(m) => {
                    let after = m.legs[0].balance_after;
                    // What the store records once the reversal commits.
                    op.reversal = Some(ReversalRecord {
                        external_transaction_id: reversal_id.into(),
                        balance_after: after,
                    });
                    op.legs[0].funds_now.posted = after;
                    (after, false)
                }
                CancelDecision::AlreadyCancelled(r) => (r.balance_after, true),
                CancelDecision::Declined(r) => panic!("{r:?}"),
            };
        let data = CancelData {
            number,
            amount: Some(usd(1220)),
            balance: Some(usd(balance)),
            external_transaction_id: Some(reversal_id),
            external_payment_id,
            original_external_transaction_id: external_transaction_id,
            already_cancelled: already,
        };
        let body = callback(
            &context.request_id,
            CallbackAction::Cancel,
            Outcome::APPROVED,
            data.to_value(),
        );
        assert_eq!(body, expected);
        assert_eq!(sign(KEY, body.as_bytes()), mac);
    }
}

/// 7.4: the bare POA Credit's response.
#[test]
fn poa_credit_response_74() {
    let req = instore::payload::PoaProcess::read(&payload(
        r#"{"action":"Credit","account_number":"2342342342","authorized_user_ids":["234234"],"balance":{"amount":"1220","precision":"2","currency":"USD"}}"#,
    ))
    .unwrap();
    let mut funds = Funds::plain(Currency::parse("USD").unwrap(), -20_000);
    funds.overdraft_limit = 50_000;
    let account = PoaAccount {
        tenant_matches: true,
        company_name: Some("My Store".into()),
        authorized_user_ids: vec!["234234".into()],
        blocked: false,
        funds,
    };
    let charge = decide_poa_credit(
        Some(&account),
        req.balance.as_ref().unwrap(),
        req.authorized_user_id.as_deref(),
        req.authorized_user_ids.as_deref().unwrap_or(&[]),
    )
    .unwrap();
    let body = PoaResponse {
        request_id: None,
        action: PoaAction::Credit,
        account_number: &req.account_number,
        company_name: account.company_name.as_deref(),
        authorized_user_ids: None,
        authorized_user_id: charge.performing_user.as_deref(),
        balance: Some(Amount::new(charge.owed_after, charge.currency)),
        credit_limit: None,
        outcome: Outcome::APPROVED,
    }
    .to_js();
    assert_eq!(
        body,
        r#"{"action":"Credit","account_number":"2342342342","company_name":"My Store","authorized_user_id":"234234","balance":{"amount":"21220","precision":"2","currency":"USD"},"status":"approved"}"#
    );
    assert_eq!(
        sign(KEY, body.as_bytes()),
        "f6c47b3ab97d91303261465c492ee357a22c6a7683d67004997dc9e4e90ca61e"
    );
}

/// Every body builder, fed strings with every escape class, writes canonical JSON.
#[test]
fn every_emitted_body_is_canonical() {
    let tricky = "a\"b\\c/\u{8}\u{c}\n\r\t\u{1}\u{7f}\u{2028}\u{2029}é😀";
    let n = CardNumber::parse("6280001234567895", "number").unwrap();
    let ids = vec![tricky.to_string(), "2".to_string()];
    let declined = Outcome::declined(Reason::InsufficientFunds);
    let merchant = WalletMerchant {
        terminal_id: tricky,
        ..MERCHANT
    };
    let record = PoaLogRecord::read(&payload(&format!(
        r#"{{"action":"Credit","account_number":"1","company_name":"{}","amount":{{"amount":"1000","precision":"2","currency":"USD"}},"session_id":"s","order_id":"0024242","status":"declined"}}"#,
        "x\\u2028\\\"y"
    )))
    .unwrap();
    let entry = LogEntry {
        created_at: "2025-03-01T10:04:11.532Z",
        action: CallbackAction::Redeem,
        amount: usd(-1220),
        balance: usd(3780),
        external_transaction_id: "svt-4f1c2a9b7e3d5c6a8b10",
        external_payment_id: "svp-9c8d7e6f5a4b3c2d1e0f",
        reference: Some(tricky),
        session_id: None,
        location_id: "LondonStore",
        workstation_id: Some("POS-03"),
    };
    let found = LookupCard {
        number: &n,
        card_type: CardType::Promotional,
        active: false,
        balance: usd(0),
    };
    let bodies = vec![
        ack(tricky),
        ack_results(tricky, Some(tricky)),
        callback(
            tricky,
            CallbackAction::Create,
            Outcome::APPROVED,
            CreateData {
                number: Some(&n),
                card_type: CardType::ReturnCard,
                active: true,
                balance: Some(usd(0)),
                issuer: Some(tricky),
                customer_id: None,
                external_transaction_id: None,
                external_payment_id: None,
            }
            .to_value(),
        ),
        callback(
            "r",
            CallbackAction::Lookup,
            Outcome::declined(Reason::CardNotFound),
            lookup_data(&n, None, tricky, None),
        ),
        callback(
            "r",
            CallbackAction::Lookup,
            Outcome::APPROVED,
            lookup_data(
                &n,
                Some(&found),
                "c",
                Some(vec![
                    found.to_value(),
                    lookup_account_failure(&n, Outcome::declined(Reason::InvalidPin)),
                ]),
            ),
        ),
        callback(
            "r",
            CallbackAction::Redeem,
            declined,
            MovementData {
                number: &n,
                amount: Some(usd(5001)),
                balance: None,
                external_transaction_id: None,
                external_payment_id: None,
                session_id: tricky,
                reference: tricky,
                accounts: Some(vec![LegData {
                    number: "1",
                    amount: usd(1),
                    balance: usd(-5),
                    external_transaction_id: "svt-1",
                }]),
            }
            .to_value(),
        ),
        log_body(tricky, &n, usd(3780), &[entry.clone(), entry], Some(tricky)),
        log_body("r", &n, usd(0), &[], None),
        PoaResponse {
            request_id: Some(tricky),
            action: PoaAction::Create,
            account_number: &n,
            company_name: Some(tricky),
            authorized_user_ids: Some(&ids),
            authorized_user_id: None,
            balance: Some(usd(0)),
            credit_limit: Some(usd(50_000)),
            outcome: Outcome::declined(Reason::AccountExists),
        }
        .to_js(),
        poa_log_echo(None, &record),
        poa_log_echo(Some("r"), &record),
        poa_log_list(&n, &[(record.clone(), "2025-03-01T10:04:11.532Z".into())]),
        wallet_status(None, Outcome::APPROVED, None, None),
        wallet_status(Some(tricky), declined, Some(usd(16_960)), Some(false)),
        seed_payment(merchant, tricky).to_js(),
        RefundWalletResponse {
            request_id: None,
            transaction_id: None,
            pos_local_time: None,
            merchant,
            original_transaction_id: "wtx-1",
            original_reference: Some(tricky),
            outcome: Outcome::declined(Reason::NothingToRefund),
        }
        .to_js(),
        instore::InstoreError::new(instore::ErrorCode::Malformed, tricky)
            .with_request_id(Some(tricky))
            .body(),
    ];
    for body in &bodies {
        assert!(is_canonical(body), "{body}");
    }
}

/// The seed's `pay_wallet` example, approved: 169.60 charged, 3.00 of it tip.
fn seed_payment<'a>(
    merchant: WalletMerchant<'a>,
    pos_local_time: &'a str,
) -> PayWalletResponse<'a> {
    PayWalletResponse {
        request_id: None,
        transaction_id: Some("wtx-0123456789abcdef0123"),
        total: Some(usd(16_960)),
        tip: Some(usd(300)),
        subtotal: Some(usd(16_660)),
        merchant,
        pos_local_time: Some(pos_local_time),
        outcome: Outcome::APPROVED,
    }
}

#[test]
fn wallet_bodies() {
    let body = seed_payment(MERCHANT, "2024-01-24 12:37:54").to_js();
    assert_eq!(
        body,
        r#"{"transaction_id":"wtx-0123456789abcdef0123","total":"16960","tip":"300","subtotal":"16660","merchant_id":"634100700040000","terminal_id":"00000011","method":"wallet","pos_local_time":"2024-01-24 12:37:54","result":"Success","code":"00","error_message":null}"#
    );
    assert_eq!(
        wallet_status(
            Some("req-1"),
            Outcome::declined(Reason::BarcodeUsed),
            None,
            None
        ),
        r#"{"requestId":"req-1","result":"Failure","error":"BARCODE_USED","code":"94"}"#
    );
    let jpy = Amount::new(12, Currency::parse("JPY").unwrap());
    assert_eq!(
        wallet_status(None, Outcome::APPROVED, Some(jpy), Some(true)),
        r#"{"result":"Success","error":null,"code":"00","total":"1200","reversed":true}"#
    );
}
