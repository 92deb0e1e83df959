use super::*;
use crate::{Decision, Decline, RequestKind};
use std::str::FromStr;

const DAY: i64 = 86_400_000;
const NOW: i64 = 20_000 * DAY + 5_000;
const CLEARING: i64 = 1;
const ACCOUNT: i64 = 10;

fn ars() -> Currency {
    Currency::parse("ARS").unwrap()
}

fn account(balance: i64) -> Account {
    Account {
        id: ACCOUNT,
        currency: ars(),
        balance,
        held: 0,
        version: 7,
        overdraft_limit: 0,
        per_transaction_limit: None,
        daily_limit: None,
        daily_spent_day: 0,
        daily_spent: 0,
        blocked_mccs: MccSet::default(),
        controls: None,
        counters: String::new(),
    }
}

fn snapshot(balance: i64) -> Snapshot {
    let mut s = Snapshot::default();
    s.accounts.insert(("u1".into(), ars()), account(balance));
    s.clearing.insert(ars(), CLEARING);
    s.movement_ids = (100..110).collect();
    s.posting_ids = (200..220).collect();
    s
}

fn tx<'a>(id: &'a str, amount: &'a str) -> CardTransaction<'a> {
    CardTransaction {
        transaction_id: id,
        tx_type: "PURCHASE",
        user_id: Some("u1"),
        card_id: None,
        currency: "ARS",
        amount_text: amount,
        amount: Decimal::from_str(amount).ok(),
        mcc: Some("5411"),
        original_transaction_id: None,
        ..CardTransaction::default()
    }
}

fn req<'a>(key: &'a str, hash: &'a [u8], t: CardTransaction<'a>) -> AuthorizationRequest<'a> {
    AuthorizationRequest {
        idempotency_key: key,
        request_hash: hash,
        endpoint: "/transactions/authorizations/debit",
        now_ms: NOW,
        tx: t,
        kind: Some(RequestKind::Debit),
        card: CardLookup::InTransaction,
    }
}

/// The answer names the decision and the balance, so tests can tell answers apart.
fn render(r: &AuthorizationResult) -> Vec<u8> {
    format!("{:?}", r.decision).into_bytes()
}

fn run(s: Snapshot, requests: &[AuthorizationRequest<'_>]) -> Plan<AuthorizationResult> {
    plan_authorizations(s, requests, render).unwrap()
}

fn fresh(o: &Outcome<AuthorizationResult>) -> &AuthorizationResult {
    match o {
        Outcome::Fresh { result, .. } => result,
        other => panic!("expected a fresh decision, got {other:?}"),
    }
}

fn answer(d: &Decision) -> StoredResponse {
    StoredResponse {
        status: 200,
        body: format!("{d:?}").into_bytes(),
    }
}

#[test]
fn an_approved_debit_moves_money_against_clearing_with_balance_and_version() {
    let p = run(snapshot(10_000), &[req("k1", b"h1", tx("t1", "12.34"))]);
    let r = fresh(&p.outcomes[0]);
    assert_eq!(
        r.decision,
        Decision::Approved {
            amount: -1234,
            balance_after: 8_766,
            daily_spent_after: 1234
        }
    );
    assert_eq!(r.movement_id, Some(100));
    let w = &p.writes;
    assert_eq!(
        w.movements,
        vec![MovementRow {
            id: 100,
            request: 0,
            currency: ars()
        }]
    );
    assert_eq!(
        w.postings,
        vec![
            PostingRow {
                id: 200,
                movement_id: 100,
                account_id: ACCOUNT,
                amount: -1234,
                balance_after: Some(8_766),
                version: Some(8)
            },
            PostingRow {
                id: 201,
                movement_id: 100,
                account_id: CLEARING,
                amount: 1234,
                balance_after: None,
                version: None
            },
        ]
    );
    assert_eq!(
        w.accounts,
        vec![AccountWrite {
            id: ACCOUNT,
            balance: 8_766,
            version: 8,
            daily_spent_day: day_of(NOW),
            daily_spent: 1234,
            read_version: 7,
            read_balance: 10_000,
            read_held: 0,
            read_daily_day: 0,
            read_daily_spent: 0,
            counters: String::new(),
            read_counters: String::new(),
        }]
    );
    let rec = &w.records[0];
    assert_eq!(
        (rec.write, rec.status, rec.status_detail),
        (RecordWrite::Insert, "APPROVED", "APPROVED")
    );
    assert_eq!(
        (rec.amount_minor, rec.movement_id),
        (Some(-1234), Some(100))
    );
    assert_eq!(rec.response, answer(&r.decision));
    assert_eq!(
        w.keys,
        vec![KeyRow {
            request: 0,
            response: rec.response.clone()
        }]
    );
    assert!(w.decides());
}

#[test]
fn a_decline_records_the_amount_asked_and_moves_nothing() {
    let p = run(snapshot(100), &[req("k1", b"h1", tx("t1", "12.34"))]);
    let r = fresh(&p.outcomes[0]);
    assert_eq!(r.decision, Decision::Declined(Decline::InsufficientFunds));
    assert_eq!(r.movement_id, None);
    let w = &p.writes;
    assert!(w.movements.is_empty() && w.postings.is_empty() && w.accounts.is_empty());
    assert_eq!(w.records[0].amount_minor, Some(-1234));
    assert_eq!(
        (w.records[0].status, w.records[0].status_detail),
        ("REJECTED", "INSUFFICIENT_FUNDS")
    );
    assert_eq!(w.keys.len(), 1);
}

#[test]
fn balance_inquiries_and_zero_amounts_approve_without_a_movement() {
    let mut inquiry = req("k1", b"h1", tx("t1", "0"));
    inquiry.kind = Some(RequestKind::BalanceInquiry);
    let zero = req("k2", b"h2", tx("t2", "0.00"));
    let p = run(snapshot(500), &[inquiry, zero]);
    assert_eq!(
        fresh(&p.outcomes[0]).decision,
        Decision::Balance { balance: 500 }
    );
    assert!(fresh(&p.outcomes[1]).decision.is_approved());
    assert_eq!(p.writes.records[0].amount_minor, Some(0));
    assert!(p.writes.movements.is_empty() && p.writes.accounts.is_empty());
    assert_eq!(p.writes.records.len(), 2);
}

#[test]
fn a_finished_key_replays_its_answer_and_another_body_conflicts() {
    let stored = StoredResponse {
        status: 200,
        body: b"first".to_vec(),
    };
    let mut s = snapshot(10_000);
    s.keys.insert(
        "k1".into(),
        KeyRecord {
            request_hash: b"h1".to_vec(),
            endpoint: None,
            response: stored.clone(),
        },
    );
    let p = run(
        s,
        &[
            req("k1", b"h1", tx("t1", "1")),
            req("k1", b"other", tx("t1", "2")),
        ],
    );
    assert!(matches!(&p.outcomes[0], Outcome::Replay(r) if *r == stored));
    assert!(matches!(p.outcomes[1], Outcome::KeyConflict));
    assert_eq!(p.writes, Writes::default());
    assert!(p.writes.is_empty());
}

fn answered(asked_amount: &str) -> RecordedTransaction {
    RecordedTransaction {
        amount_minor: Some(-100),
        response: Some(StoredResponse {
            status: 200,
            body: b"earlier".to_vec(),
        }),
        verdict: None,
        asked: Asked::of(
            "/transactions/authorizations/debit",
            Some(RequestKind::Debit),
            &tx("t1", asked_amount),
        ),
    }
}

#[test]
fn a_transaction_answered_under_another_key_replays_for_the_same_money_only() {
    for (resent, replays) in [
        ("1.00", true),
        ("1", true),
        ("1.0E0", true),
        ("1.01", false),
    ] {
        let mut s = snapshot(10_000);
        s.transactions.insert("t1".into(), answered("1.00"));
        let p = run(s, &[req("k2", b"h2", tx("t1", resent))]);
        if replays {
            assert!(
                matches!(&p.outcomes[0], Outcome::Replay(r) if r.body == b"earlier"),
                "{resent}"
            );
            // The new key records the same answer; nothing else is written.
            assert_eq!(p.writes.keys.len(), 1);
            assert_eq!(p.writes.keys[0].response.body, b"earlier");
            assert!(p.writes.records.is_empty() && !p.writes.decides());
        } else {
            assert!(
                matches!(p.outcomes[0], Outcome::TransactionConflict),
                "{resent}"
            );
            assert!(p.writes.is_empty());
        }
    }
}

#[test]
fn another_route_user_or_card_for_an_answered_transaction_is_a_conflict() {
    let mut credit = req("k2", b"h2", tx("t1", "1.00"));
    credit.endpoint = "/transactions/authorizations/credit";
    credit.kind = Some(RequestKind::Credit);
    let mut other_user = req("k3", b"h3", tx("t1", "1.00"));
    other_user.tx.user_id = Some("u2");
    let mut with_card = req("k4", b"h4", tx("t1", "1.00"));
    with_card.tx.card_id = Some("c1");
    let mut s = snapshot(10_000);
    s.transactions.insert("t1".into(), answered("1.00"));
    let p = run(s, &[credit, other_user, with_card]);
    assert!(
        p.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::TransactionConflict))
    );
    assert!(p.writes.is_empty());
}

#[test]
fn a_verdict_that_came_first_stands_and_moves_nothing() {
    for (verdict, expected) in [
        (
            "APPROVED",
            Decision::Approved {
                amount: -500,
                balance_after: 0,
                daily_spent_after: 0,
            },
        ),
        ("REJECTED", Decision::Declined(Decline::RejectedByProcessor)),
    ] {
        let mut s = snapshot(10_000);
        s.transactions.insert(
            "t1".into(),
            RecordedTransaction {
                amount_minor: Some(-500),
                response: None,
                verdict: Some(verdict.into()),
                asked: Asked::default(),
            },
        );
        // The resend of the same authorization under another key replays the verdict's answer.
        let p = run(
            s,
            &[
                req("k1", b"h1", tx("t1", "5")),
                req("k2", b"h2", tx("t1", "5.00")),
            ],
        );
        let r = fresh(&p.outcomes[0]);
        assert_eq!(r.decision, expected);
        assert_eq!(r.movement_id, None);
        let w = &p.writes;
        assert!(w.movements.is_empty() && w.accounts.is_empty());
        assert_eq!(w.records.len(), 1);
        assert_eq!(w.records[0].write, RecordWrite::Answer);
        assert!(
            !w.decides(),
            "a verdict's answer is a record, not a decision"
        );
        assert!(matches!(&p.outcomes[1], Outcome::Replay(a) if *a == w.records[0].response));
        assert_eq!(w.keys.len(), 2);
    }
}

/// Purchases of 6, `second` and 4 on one account: the first approved, the second declined
/// for `why`.
fn three_purchases(s: Snapshot, second: &str, why: Decline) -> Plan<AuthorizationResult> {
    let p = run(
        s,
        &[
            req("k1", b"h1", tx("t1", "6")),
            req("k2", b"h2", tx("t2", second)),
            req("k3", b"h3", tx("t3", "4")),
        ],
    );
    assert!(fresh(&p.outcomes[0]).decision.is_approved());
    assert_eq!(fresh(&p.outcomes[1]).decision, Decision::Declined(why));
    p
}

#[test]
fn requests_on_one_account_see_the_balance_the_earlier_ones_left() {
    let p = three_purchases(snapshot(1_000), "6", Decline::InsufficientFunds);
    assert_eq!(
        fresh(&p.outcomes[2]).decision,
        Decision::Approved {
            amount: -400,
            balance_after: 0,
            daily_spent_after: 1_000
        }
    );
    let w = &p.writes;
    // One write per account: its final state, guarded by the state read.
    assert_eq!(w.accounts.len(), 1);
    assert_eq!(
        (
            w.accounts[0].balance,
            w.accounts[0].version,
            w.accounts[0].read_version,
            w.accounts[0].read_balance
        ),
        (0, 9, 7, 1_000)
    );
    // The balance-after chain of the account's postings, in id order.
    let chain: Vec<_> = w
        .postings
        .iter()
        .filter(|p| p.account_id == ACCOUNT)
        .map(|p| (p.id, p.balance_after, p.version))
        .collect();
    assert_eq!(
        chain,
        vec![(200, Some(400), Some(8)), (202, Some(0), Some(9))]
    );
    assert_eq!(
        w.records.iter().map(|r| r.movement_id).collect::<Vec<_>>(),
        vec![Some(100), None, Some(101)]
    );
}

#[test]
fn duplicates_inside_a_batch_replay_the_first_answer() {
    let p = run(
        snapshot(10_000),
        &[
            req("k1", b"h1", tx("t1", "1")),
            req("k1", b"h1", tx("t1", "1")),
            req("k1", b"changed", tx("t1", "1")),
            req("k9", b"h9", tx("t1", "1.00")),
            req("k8", b"h8", tx("t1", "2")),
        ],
    );
    let first = match &p.outcomes[0] {
        Outcome::Fresh { response, .. } => response.clone(),
        o => panic!("{o:?}"),
    };
    assert!(matches!(&p.outcomes[1], Outcome::Replay(r) if *r == first));
    assert!(matches!(p.outcomes[2], Outcome::KeyConflict));
    assert!(matches!(&p.outcomes[3], Outcome::Replay(r) if *r == first));
    assert!(matches!(p.outcomes[4], Outcome::TransactionConflict));
    let w = &p.writes;
    assert_eq!(w.movements.len(), 1, "money moves once");
    assert_eq!(w.records.len(), 1);
    assert_eq!(
        w.keys.iter().map(|k| k.request).collect::<Vec<_>>(),
        vec![0, 3]
    );
}

#[test]
fn the_daily_counter_restarts_each_day_and_counts_within_the_batch() {
    let mut s = snapshot(100_000);
    let a = s.accounts.get_mut(&("u1".into(), ars())).unwrap();
    a.daily_limit = Some(1_000);
    // Spent yesterday: does not count today.
    a.daily_spent_day = day_of(NOW) - 1;
    a.daily_spent = 1_000;
    let p = three_purchases(s, "5", Decline::AboveDailyLimit);
    assert!(fresh(&p.outcomes[2]).decision.is_approved());
    let w = &p.writes.accounts[0];
    assert_eq!((w.daily_spent_day, w.daily_spent), (day_of(NOW), 1_000));
}

#[test]
fn a_request_stamped_before_midnight_counts_in_the_day_the_counter_has_reached() {
    let mut s = snapshot(100_000);
    let a = s.accounts.get_mut(&("u1".into(), ars())).unwrap();
    a.daily_limit = Some(1_000);
    // Another request already counted 0.50 in tomorrow (this one waited past midnight).
    a.daily_spent_day = day_of(NOW) + 1;
    a.daily_spent = 50;
    let p = three_purchases(s, "5", Decline::AboveDailyLimit);
    let third = fresh(&p.outcomes[2]).decision.clone();
    assert_eq!(
        third,
        Decision::Declined(Decline::AboveDailyLimit),
        "6.50 + 4.00"
    );
    let w = &p.writes.accounts[0];
    assert_eq!((w.daily_spent_day, w.daily_spent), (day_of(NOW) + 1, 650));
}

#[test]
fn account_counters_are_written_with_the_account_and_card_counters_as_rows() {
    use crate::controls::decode_counters;
    let key = |at: i64, interval: Interval| {
        window_keys(at, &TimeZone::UTC)
            .find(|k| k.interval() == interval)
            .unwrap()
    };
    // NOW is just past midnight: yesterday is kept for the hour of grace, the day before
    // is over.
    let (today, yesterday, month) = (
        key(NOW, Interval::Daily),
        key(NOW - 2 * DAY, Interval::Daily),
        key(NOW, Interval::Monthly),
    );
    let mut s = snapshot(100_000);
    let a = s.accounts.get_mut(&("u1".into(), ars())).unwrap();
    a.controls = Some(Arc::new(
        Controls::from_json(
            r#"{"spending_limits":[{"amount":"10.00","interval":"daily"}],
                "velocity_limits":[{"count":5,"interval":"monthly"}]}"#,
            Some(ars()),
        )
        .unwrap(),
    ));
    // Counted before: 6.00 today, a window that is over, two this month.
    a.counters = format!("{today} 600 1\n{yesterday} 900 3\n{month} 600 2");
    let read = a.counters.clone();
    s.cards.insert(
        "c1".into(),
        card_with(
            "u1",
            r#"{"velocity_limits":[{"count":9,"interval":"daily"}]}"#,
        ),
    );
    let on_card = |key: &'static str, amount: &'static str| {
        let mut r = req(key, key.as_bytes(), tx(key, amount));
        r.tx.card_id = Some("c1");
        r
    };
    let p = run(
        s,
        &[on_card("k1", "3"), on_card("k2", "2"), on_card("k3", "1")],
    );
    assert!(fresh(&p.outcomes[0]).decision.is_approved());
    assert!(
        !fresh(&p.outcomes[1]).decision.is_approved(),
        "over 10.00 today"
    );
    assert!(
        fresh(&p.outcomes[2]).decision.is_approved(),
        "10.00 exactly"
    );
    let w = &p.writes;
    assert_eq!(w.accounts.len(), 1);
    assert_eq!(w.accounts[0].read_counters, read);
    let written: HashMap<_, _> = decode_counters(&w.accounts[0].counters).collect();
    let at = |k: WindowKey| {
        written
            .iter()
            .find(|(key, _)| key.window == k && key.categories.is_none())
            .map(|(_, c)| *c)
    };
    assert_eq!(at(today).map(|c| c.amount), Some(1_000));
    assert_eq!(at(month).map(|c| c.count), Some(4));
    assert_eq!(at(yesterday), None, "a window that is over is dropped");
    // The card's counters are rows of their own; none is the account's.
    assert!(!w.counters.is_empty());
    assert!(
        w.counters
            .iter()
            .all(|c| c.owner == Owner::Card && c.owner_id == "c1")
    );
    assert_eq!(w.counters.iter().map(|c| c.count).max(), Some(2));
}

#[test]
fn counters_read_back_as_written() {
    use crate::controls::{decode_counters, encode_counters};
    let text = "daily:2026-12-03 1500 3\nmonthly:2026-12|5811-5814,gambling 700 1\nall_time 0 9";
    let read: Vec<_> = decode_counters(text).collect();
    assert_eq!(read.len(), 3);
    assert_eq!(encode_counters(read.iter().map(|(k, c)| (k, c))), text);
    // Nothing counted is not kept; an unreadable line is skipped.
    assert_eq!(
        decode_counters("daily:2026-12-03 x 1\nnot a key 1 1\nyearly:2026 5 0").count(),
        1
    );
    assert_eq!(
        encode_counters(
            decode_counters("yearly:2026 0 0")
                .collect::<Vec<_>>()
                .iter()
                .map(|(k, c)| (k, c))
        ),
        ""
    );
}

#[test]
fn a_give_back_on_the_row_never_goes_below_zero() {
    use crate::controls::decode_counters;
    let stored = "daily:2026-12-03 1500 3\nmonthly:2026-12 700 1";
    let back = |window: &str, amount, count| {
        let key = decode_counters(&format!("{window} 1 1")).next().unwrap().0;
        let w = CounterWrite {
            owner: Owner::Account,
            owner_id: "u1/ARS".into(),
            key,
            amount,
            count,
        };
        give_back_on_row(stored, &w)
    };
    assert_eq!(
        back("daily:2026-12-03", -500, -1),
        "daily:2026-12-03 1000 2\nmonthly:2026-12 700 1"
    );
    // More than was counted leaves zero, and a counter at zero is not kept.
    assert_eq!(back("monthly:2026-12", -900, -2), "daily:2026-12-03 1500 3");
    // A window no longer on the row (over) has nothing to give back.
    assert_eq!(back("daily:2026-12-02", -500, -1), stored);
}

#[test]
fn cards_come_from_the_snapshot_or_from_what_the_caller_knew() {
    let blocked = CardRecord {
        user_id: "u1".into(),
        status: CardStatus::Blocked,
        blocked_mccs: MccSet::default(),
        controls: None,
    };
    let active = CardRecord {
        user_id: "u1".into(),
        status: CardStatus::Active,
        blocked_mccs: MccSet::from_list(&["5411"]).unwrap(),
        controls: None,
    };
    let foreign = CardRecord {
        user_id: "u2".into(),
        status: CardStatus::Active,
        blocked_mccs: MccSet::default(),
        controls: None,
    };
    let mut s = snapshot(10_000);
    s.cards.insert("blocked".into(), blocked);
    s.cards.insert("foreign".into(), foreign);
    let with = |key: &'static str, card: &'static str, lookup| {
        let mut r = req(key, b"h", tx(key, "1"));
        r.tx.card_id = Some(card);
        r.card = lookup;
        r
    };
    let p = run(
        s,
        &[
            with("a", "blocked", CardLookup::InTransaction),
            with("b", "foreign", CardLookup::InTransaction),
            // Not read and not known: we hold no record of it, the account decides.
            with("c", "unknown", CardLookup::InTransaction),
            // Known beforehand wins over the snapshot.
            with("d", "blocked", CardLookup::Absent),
            with("e", "blocked", CardLookup::Known(&active)),
        ],
    );
    let d: Vec<_> = p
        .outcomes
        .iter()
        .map(|o| fresh(o).decision.clone())
        .collect();
    assert_eq!(
        d[0],
        Decision::Declined(Decline::CardNotActive(CardStatus::Blocked))
    );
    assert_eq!(d[1], Decision::Declined(Decline::CardOfAnotherUser));
    assert!(d[2].is_approved() && d[3].is_approved());
    assert_eq!(d[4], Decision::Declined(Decline::MerchantBlocked));
}

#[test]
fn requests_without_an_account_or_currency_are_declined_and_recorded() {
    let mut nobody = req("k1", b"h1", tx("t1", "1"));
    nobody.tx.user_id = Some("u9");
    let mut odd = req("k2", b"h2", tx("t2", "1"));
    odd.tx.currency = "XXQ";
    let mut bare = req("k3", b"h3", tx("t3", "1"));
    bare.kind = None;
    let p = run(snapshot(10_000), &[nobody, odd, bare]);
    assert_eq!(
        fresh(&p.outcomes[0]).decision,
        Decision::Declined(Decline::AccountNotFound)
    );
    assert_eq!(
        fresh(&p.outcomes[1]).decision,
        Decision::Declined(Decline::UnknownCurrency)
    );
    assert_eq!(
        fresh(&p.outcomes[2]).decision,
        Decision::Declined(Decline::UnknownTransactionType)
    );
    assert_eq!(p.writes.records.len(), 3);
    // An unknown currency has no minor units to record; an unknown direction is unsigned.
    assert_eq!(p.writes.records[1].amount_minor, None);
    assert_eq!(p.writes.records[2].amount_minor, Some(100));
}

#[test]
fn a_snapshot_without_clearing_or_ids_cannot_carry_a_movement() {
    let mut s = snapshot(10_000);
    s.clearing.clear();
    let err = plan_authorizations(s, &[req("k1", b"h1", tx("t1", "1"))], render).unwrap_err();
    assert_eq!(err, PlanError::NoClearingAccount(ars()));
    let mut s = snapshot(10_000);
    s.posting_ids.truncate(1);
    let err = plan_authorizations(s, &[req("k1", b"h1", tx("t1", "1"))], render).unwrap_err();
    assert_eq!(err, PlanError::NotEnoughIds);
    // A decline needs neither.
    let mut s = snapshot(0);
    s.clearing.clear();
    s.movement_ids.clear();
    assert!(plan_authorizations(s, &[req("k1", b"h1", tx("t1", "1"))], render).is_ok());
}

#[test]
fn a_credit_raises_the_balance_and_leaves_the_daily_counter() {
    let mut credit = req("k1", b"h1", tx("t1", "2.50"));
    credit.kind = Some(RequestKind::Credit);
    credit.endpoint = "/transactions/authorizations/credit";
    let p = run(snapshot(0), &[credit]);
    assert_eq!(
        fresh(&p.outcomes[0]).decision,
        Decision::Approved {
            amount: 250,
            balance_after: 250,
            daily_spent_after: 0
        }
    );
    assert_eq!(p.writes.postings[0].amount, 250);
    assert_eq!(p.writes.postings[1].amount, -250);
}

#[test]
fn a_batch_across_a_half_hour_zones_midnight_reads_both_days() {
    let india = crate::controls::time_zone("IST-5:30", None).expect("a POSIX rule");
    // 2026-12-03 18:29:59Z is 23:59:59 in India; two seconds later it is the 4th there,
    // in the same UTC hour.
    let before = 1_796_322_599_000;
    let daily = |times: &[i64]| {
        let mut d: Vec<String> = windows_of(times.iter().copied(), &india)
            .iter()
            .filter(|k| k.interval() == Interval::Daily)
            .map(ToString::to_string)
            .collect();
        d.sort();
        d
    };
    assert_eq!(
        daily(&[before, before + 2_000]),
        ["daily:2026-12-03", "daily:2026-12-04"]
    );
    assert_eq!(daily(&[before + 2_000]), ["daily:2026-12-04"]);
    // A zone 20 minutes ahead: 23:35Z is 23:55 of the 3rd there, 23:42Z 00:02 of the 4th,
    // in the same quarter hour of UTC.
    let twenty = crate::controls::time_zone("<+0020>-0:20", None).expect("a POSIX rule");
    let at_2335 = 1_796_340_900_000;
    let mut d: Vec<String> = windows_of([at_2335, at_2335 + 420_000], &twenty)
        .iter()
        .filter(|k| k.interval() == Interval::Daily)
        .map(ToString::to_string)
        .collect();
    d.sort();
    assert_eq!(d, ["daily:2026-12-03", "daily:2026-12-04"]);
}

#[test]
fn a_forced_debit_counts_what_an_approval_would_without_deciding() {
    use crate::controls::decode_counters;
    let today = window_keys(NOW, &TimeZone::UTC)
        .find(|k| k.interval() == Interval::Daily)
        .unwrap();
    let mut a = account(0);
    let limit = r#"{"spending_limits":[{"amount":"10.00","interval":"daily"}]}"#;
    a.controls = Some(Arc::new(Controls::from_json(limit, Some(ars())).unwrap()));
    a.counters = format!("{today} 900 1");
    let card = |user: &str| {
        card_with(
            user,
            r#"{"velocity_limits":[{"count":1,"interval":"daily"}]}"#,
        )
    };
    let t = CardTransaction {
        card_id: Some("c1"),
        ..tx("t1", "5.00")
    };
    // Over the account's limit and the card's count, and counted all the same.
    let own = card("u1");
    let c = count_forced(&t, 500, NOW, &a, Some(("c1", &own)), &TimeZone::UTC).unwrap();
    let written: HashMap<_, _> = decode_counters(c.account.as_deref().unwrap()).collect();
    let daily = written.iter().find(|(k, _)| k.window == today).unwrap().1;
    assert_eq!((daily.amount, daily.count), (1_400, 2));
    assert_eq!(c.card.len(), 1);
    assert_eq!((c.card[0].owner_id.as_str(), c.card[0].count), ("c1", 1));
    assert!(c.kept.contains("c1"), "{}", c.kept);
    // Another user's card is not this cardholder's: only the account counts.
    let other = card("u2");
    let c = count_forced(&t, 500, NOW, &a, Some(("c1", &other)), &TimeZone::UTC).unwrap();
    assert!(c.card.is_empty());
    // Nothing set, nothing counted.
    assert!(count_forced(&t, 500, NOW, &account(0), None, &TimeZone::UTC).is_none());
}

/// An active card of `user` under the card controls `controls`.
fn card_with(user: &str, controls: &str) -> CardRecord {
    CardRecord {
        user_id: user.into(),
        status: CardStatus::Active,
        blocked_mccs: MccSet::default(),
        controls: Some(Arc::new(Controls::from_json(controls, None).unwrap())),
    }
}

#[test]
fn a_writer_stamped_before_midnight_keeps_the_new_days_windows() {
    let keys = |at: i64| window_keys(at, &TimeZone::UTC).collect::<Vec<_>>();
    let current = windows_of([NOW], &TimeZone::UTC);
    for k in keys(NOW - DAY)
        .iter()
        .filter(|k| k.interval() == Interval::Daily)
    {
        assert!(!window_kept(&current, k), "yesterday is over");
    }
    for k in keys(NOW).iter().chain(&keys(NOW + DAY)) {
        assert!(window_kept(&current, k), "{k} is not over");
    }
    // Five seconds past midnight, a row still keeps yesterday for the hour of grace, and
    // no longer once that hour is past.
    let yesterday = keys(NOW - DAY)
        .into_iter()
        .find(|k| k.interval() == Interval::Daily)
        .unwrap();
    assert!(window_kept(
        &windows_kept_at([NOW], &TimeZone::UTC),
        &yesterday
    ));
    let later = windows_kept_at([NOW + WINDOW_GRACE_MS], &TimeZone::UTC);
    assert!(!window_kept(&later, &yesterday));
}
