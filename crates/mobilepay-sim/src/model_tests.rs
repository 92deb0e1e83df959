//! Every transition of §1.5/§1.6 and every rule S1-S8, V1-V15 (as simulated), C1-C6.

use super::*;
use PaymentStatus as S;

const BIO: &str = "bio-1001";
const T0: i64 = 1_700_000_000_000;

fn config() -> Config {
    Config::from_toml(
        r#"
reservation_expiry_secs = 60
refund_auto_capture_secs = 30
refund_window_days = 90
inactivity_cancel_secs = 10
[[merchants]]
bioCode = "bio-1001"
accessToken = "tok"
stores = [{ storeId = "st-1", name = "Cinema Aarhus" }, { storeId = "st-2", name = "Cinema Odense" }]
terminals = [
  { terminalId = "T-01", storeId = "st-1", currency = "DKK", mcc = "7832", posId = "pos-1" },
  { terminalId = "T-02", storeId = "st-1", currency = "DKK", posId = "pos-2" },
  { terminalId = "T-03", storeId = "st-2", currency = "EUR" },
]
[[merchants]]
bioCode = "bio-2002"
accessToken = "tok2"
stores = [{ storeId = "st-9", name = "Other" }]
terminals = [{ terminalId = "T-99", storeId = "st-9", currency = "DKK", posId = "pos-99" }]
"#,
    )
    .unwrap()
}

fn world() -> World {
    let mut n = 0;
    World::with_ids(
        &config(),
        Box::new(move || {
            n += 1;
            format!("id-{n}")
        }),
    )
}

fn t1() -> PosRef<'static> {
    PosRef::Terminal("T-01")
}

fn start(w: &mut World, order: &str, amount: &str) -> SimResult<String> {
    w.start(BIO, t1(), Some(order), Some(amount), Some("DKK"), None, T0)
        .map(|v| v["paymentId"].as_str().unwrap().to_owned())
}

/// A payment prepared on T-01 for `order` (no amount yet).
fn prepared(w: &mut World, order: &str) -> String {
    w.prepare(BIO, t1(), Some(order), None, T0).unwrap()["paymentId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `payment/ready` of `amount` DKK for `id`, at T0 (no `orderId` or `terminalId` to check).
fn ready(w: &mut World, id: &str, amount: &str) -> SimResult<Value> {
    w.ready(BIO, Some(id), None, None, Some(amount), Some("DKK"), T0)
}

/// A payment waiting on T-01: prepared (Prepared, or Paired once `usr-1` checks in) or
/// started at 10.00 DKK (Initiated, or IssuedToUser).
fn waiting(w: &mut World, prep: bool, check: bool) -> String {
    let id = if prep {
        prepared(w, "o")
    } else {
        start(w, "o", "10").unwrap()
    };
    if check {
        checkin(w, "usr-1");
    }
    id
}

/// `start` of 10.00 DKK on T-01 under the idempotency key `key`, at `now`.
fn keyed(w: &mut World, order: &str, key: Option<&str>, now: i64) -> SimResult<Value> {
    w.start(BIO, t1(), Some(order), Some("10"), Some("DKK"), key, now)
}

fn status(w: &mut World, id: &str, now: i64) -> PaymentStatus {
    let v = w.status(BIO, Some(id), now).unwrap();
    PaymentStatus::parse(v["status"].as_str().unwrap()).unwrap()
}

fn code(r: SimResult<impl std::fmt::Debug>) -> (u16, String) {
    let e = r.unwrap_err();
    (e.status, e.code)
}

/// Asserts that `r` failed with the HTTP `status` and MobilePay's error `code`.
#[track_caller]
fn refused(r: SimResult<impl std::fmt::Debug>, status: u16, error_code: &str) {
    assert_eq!(code(r), (status, error_code.to_owned()));
}

fn checkin(w: &mut World, user: &str) {
    w.checkin(BIO, t1(), user, Some("crd-1"), T0).unwrap();
}

/// A payment of `amount` for `order` on T-01, `usr-1` checked in, whose approval is in
/// flight at T0; with the reserve call it owes.
fn approving(w: &mut World, order: &str, amount: &str) -> (String, ReserveCall) {
    let id = start(w, order, amount).unwrap();
    checkin(w, "usr-1");
    let call = w.begin_approve(BIO, &id, T0).unwrap();
    (id, call)
}

/// A payment of `amount` reserved at T0 on T-01.
fn reserved(w: &mut World, amount: &str) -> String {
    let (id, call) = approving(w, "o-1", amount);
    assert_eq!(call.reservation_id, id);
    w.finish_approve(&id, &ReserveOutcome::Approved, T0);
    assert_eq!(status(w, &id, T0), S::Reserved);
    assert!(w.take_owed().is_empty());
    id
}

fn captured(w: &mut World, amount: &str) -> String {
    let id = reserved(w, amount);
    w.capture(BIO, Some(&id), None, T0).unwrap();
    w.take_owed();
    id
}

// ----- statuses --------------------------------------------------------------------------

#[test]
fn eleven_statuses_and_their_sets() {
    assert_eq!(PaymentStatus::ALL.len(), 11);
    let blocking: Vec<_> = PaymentStatus::ALL
        .into_iter()
        .filter(|s| s.blocks_pos())
        .collect();
    assert_eq!(
        blocking,
        vec![S::Initiated, S::Prepared, S::Paired, S::IssuedToUser]
    );
    assert!(!S::Reserved.blocks_pos() && !S::Reserved.is_final());
    for s in [
        S::Captured,
        S::CancelledByUser,
        S::CancelledByClient,
        S::CancelledByMobilePay,
        S::ExpiredAndCancelled,
        S::RejectedByMobilePayDueToAgeRestrictions,
    ] {
        assert!(s.is_final(), "{s:?}");
    }
    for s in PaymentStatus::ALL {
        assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        assert_eq!(PaymentStatus::parse(&s.as_str().to_lowercase()), Some(s));
    }
}

// ----- §1.5 transitions --------------------------------------------------------------------

#[test]
fn start_without_checkin_is_initiated_and_checkin_issues_it() {
    let mut w = world();
    let id = start(&mut w, "o-1", "125.50").unwrap();
    assert_eq!(status(&mut w, &id, T0), S::Initiated);
    checkin(&mut w, "usr-1");
    assert_eq!(status(&mut w, &id, T0), S::IssuedToUser);
    let d = w.details(BIO, Some(&id), T0).unwrap();
    assert_eq!(d["amount"], "125.50");
    assert_eq!(d["posId"], "pos-1");
    assert_eq!(d["pollDelayInMs"], 1000);
    assert_eq!(w.checkin_status(BIO, t1()).unwrap()["userId"], "usr-1");
}

#[test]
fn start_with_a_customer_checked_in_is_issued_to_user() {
    let mut w = world();
    checkin(&mut w, "usr-1");
    let id = start(&mut w, "o-1", "10").unwrap();
    assert_eq!(status(&mut w, &id, T0), S::IssuedToUser);
}

#[test]
fn prepare_checkin_ready_is_the_prepared_flow() {
    let mut w = world();
    let id = prepared(&mut w, "o-1");
    assert_eq!(status(&mut w, &id, T0), S::Prepared);
    checkin(&mut w, "usr-1");
    assert_eq!(status(&mut w, &id, T0), S::Paired);
    w.ready(
        BIO,
        Some(&id),
        Some("o-1"),
        Some("T-01"),
        Some("80"),
        Some("DKK"),
        T0,
    )
    .unwrap();
    assert_eq!(status(&mut w, &id, T0), S::IssuedToUser);
    // Ready again with the same amount: 200; with another: 1303.
    assert!(ready(&mut w, &id, "80.00").is_ok());
    refused(ready(&mut w, &id, "81"), 409, "1303");
}

#[test]
fn c6_ready_before_checkin_gives_initiated() {
    let mut w = world();
    let id = prepared(&mut w, "o-1");
    ready(&mut w, &id, "80").unwrap();
    assert_eq!(status(&mut w, &id, T0), S::Initiated);
    checkin(&mut w, "usr-1");
    assert_eq!(status(&mut w, &id, T0), S::IssuedToUser);
}

#[test]
fn prepare_with_a_customer_checked_in_is_paired() {
    let mut w = world();
    checkin(&mut w, "usr-1");
    let id = prepared(&mut w, "o-1");
    assert_eq!(status(&mut w, &id, T0), S::Paired);
}

#[test]
fn approve_makes_the_reserve_call_of_the_event_mapping() {
    let mut w = world();
    let (id, call) = approving(&mut w, "order-77", "125.50");
    assert_eq!(
        call,
        ReserveCall {
            reservation_id: id.clone(),
            user_id: "usr-1".into(),
            card_id: Some("crd-1".into()),
            amount_minor: 12550,
            currency: "DKK".into(),
            merchant_id: BIO.into(),
            merchant_name: "Cinema Aarhus".into(),
            mcc: "7832".into(),
            expires_in_secs: 60,
            partial_capture_possible: true,
            reference: "order-77".into(),
        }
    );
    // A second approval while the first is in flight is refused.
    assert_eq!(code(w.begin_approve(BIO, &id, T0)).0, 409);
    let c = Call::Reserve(call);
    assert_eq!(c.path(), "/channels/v1/reservations");
    assert_eq!(c.idempotency_key(), format!("mp-res-{id}"));
    let body: Value = serde_json::from_slice(&c.body()).unwrap();
    assert_eq!(body["amount"], "125.50");
    assert_eq!(body["merchant"]["mcc"], "7832");
    assert_eq!(body["reference"], "order-77");
    w.finish_approve(&id, &ReserveOutcome::Approved, T0);
    assert_eq!(status(&mut w, &id, T0), S::Reserved);
}

#[test]
fn approve_needs_issued_to_user() {
    let mut w = world();
    let id = start(&mut w, "o-1", "10").unwrap();
    assert_eq!(code(w.begin_approve(BIO, &id, T0)).0, 409);
}

#[test]
fn a_rejected_reserve_is_cancelled_by_mobilepay_without_a_cancel() {
    let mut w = world();
    let (id, _) = approving(&mut w, "o-1", "10");
    let v = w.finish_approve(
        &id,
        &ReserveOutcome::Rejected("INSUFFICIENT_FUNDS".into()),
        T0,
    );
    assert_eq!(v["reason"], "INSUFFICIENT_FUNDS");
    assert_eq!(status(&mut w, &id, T0), S::CancelledByMobilePay);
    assert!(w.take_owed().is_empty());
    // The PoS is free and the check-in released.
    assert_eq!(w.checkin_status(BIO, t1()).unwrap()["checkedIn"], false);
    assert!(start(&mut w, "o-2", "10").is_ok());
}

#[test]
fn a_reserve_without_answer_is_cancelled_by_mobilepay_and_cancelled_at_the_authorizer() {
    let mut w = world();
    let (id, _) = approving(&mut w, "o-1", "10");
    w.finish_approve(&id, &ReserveOutcome::NoAnswer("timeout".into()), T0);
    assert_eq!(status(&mut w, &id, T0), S::CancelledByMobilePay);
    assert_eq!(w.take_owed(), vec![Call::Cancel { payment_id: id }]);
}

#[test]
fn a_refused_reserve_owes_nothing() {
    let mut w = world();
    let (id, _) = approving(&mut w, "o-1", "10");
    w.finish_approve(
        &id,
        &ReserveOutcome::Refused("400 INVALID_AMOUNT".into()),
        T0,
    );
    assert_eq!(status(&mut w, &id, T0), S::CancelledByMobilePay);
    assert!(w.take_owed().is_empty());
}

#[test]
fn a_client_cancel_during_the_approval_wins_and_releases_the_hold() {
    let mut w = world();
    let (id, _) = approving(&mut w, "o-1", "10");
    w.cancel(BIO, Some(&id), T0).unwrap();
    assert!(
        w.take_owed().is_empty(),
        "nothing reserved yet as far as we know"
    );
    w.finish_approve(&id, &ReserveOutcome::Approved, T0);
    assert_eq!(status(&mut w, &id, T0), S::CancelledByClient);
    assert_eq!(w.take_owed(), vec![Call::Cancel { payment_id: id }]);
}

#[test]
fn capture_in_full_and_in_part() {
    let mut w = world();
    let id = reserved(&mut w, "125.50");
    let v = w.capture(BIO, Some(&id), Some("100"), T0).unwrap();
    assert_eq!(v["capturedAmount"], "100.00");
    assert_eq!(status(&mut w, &id, T0), S::Captured);
    assert_eq!(
        w.take_owed(),
        vec![Call::Capture {
            payment_id: id.clone(),
            amount_minor: 10000
        }]
    );
    assert_eq!(
        w.details(BIO, Some(&id), T0).unwrap()["capturedAmount"],
        "100.00"
    );
}

#[test]
fn c5_capture_without_amount_is_the_full_amount() {
    let mut w = world();
    let id = reserved(&mut w, "125.50");
    w.capture(BIO, Some(&id), None, T0).unwrap();
    assert_eq!(
        w.take_owed(),
        vec![Call::Capture {
            payment_id: id,
            amount_minor: 12550
        }]
    );
}

#[test]
fn expiry_v1_gives_expired_and_cancelled_with_no_call() {
    let mut w = world();
    let id = reserved(&mut w, "10");
    assert_eq!(status(&mut w, &id, T0 + 59_999), S::Reserved);
    assert_eq!(status(&mut w, &id, T0 + 60_000), S::ExpiredAndCancelled);
    assert!(w.take_owed().is_empty());
    // S3/V4: the capture then gets 1304 and owes nothing.
    refused(w.capture(BIO, Some(&id), None, T0 + 60_000), 409, "1304");
    assert!(w.take_owed().is_empty());
    // V8: nor can it be cancelled.
    refused(w.cancel(BIO, Some(&id), T0 + 60_000), 409, "1300");
}

#[test]
fn expiry_by_the_timer_task() {
    let mut w = world();
    let id = reserved(&mut w, "10");
    w.tick(T0 + 60_000);
    assert_eq!(w.payment(&id).unwrap().status, S::ExpiredAndCancelled);
}

#[test]
fn inactivity_cancels_every_waiting_state() {
    for prep in [false, true] {
        for check in [false, true] {
            let mut w = world();
            let id = waiting(&mut w, prep, check);
            let s = status(&mut w, &id, T0);
            assert!(s.blocks_pos(), "{s:?}");
            assert_eq!(status(&mut w, &id, T0 + 9_999), s);
            assert_eq!(
                status(&mut w, &id, T0 + 10_000),
                S::CancelledByMobilePay,
                "{s:?}"
            );
            assert_eq!(
                w.payment(&id).unwrap().reason.as_deref(),
                Some("inactivity")
            );
            // The PoS is free again.
            assert!(
                w.start(
                    BIO,
                    t1(),
                    Some("o2"),
                    Some("1"),
                    Some("DKK"),
                    None,
                    T0 + 10_000
                )
                .is_ok()
            );
        }
    }
}

#[test]
fn activity_restarts_the_inactivity_clock() {
    let mut w = world();
    let id = start(&mut w, "o", "10").unwrap();
    w.checkin(BIO, t1(), "usr-1", None, T0 + 8_000).unwrap();
    assert_eq!(status(&mut w, &id, T0 + 17_999), S::IssuedToUser);
    assert_eq!(status(&mut w, &id, T0 + 18_000), S::CancelledByMobilePay);
}

#[test]
fn reserved_is_not_cancelled_by_inactivity() {
    let mut w = world();
    let id = reserved(&mut w, "10");
    assert_eq!(status(&mut w, &id, T0 + 30_000), S::Reserved);
}

#[test]
fn the_customer_declines_from_paired_or_issued_to_user() {
    let mut w = world();
    let id = start(&mut w, "o", "10").unwrap();
    assert_eq!(
        code(w.decline(BIO, &id, T0)).0,
        409,
        "Initiated cannot be declined"
    );
    checkin(&mut w, "usr-1");
    w.decline(BIO, &id, T0).unwrap();
    assert_eq!(status(&mut w, &id, T0), S::CancelledByUser);
    let mut w = world();
    checkin(&mut w, "usr-1");
    let id = prepared(&mut w, "o");
    w.decline(BIO, &id, T0).unwrap();
    assert_eq!(status(&mut w, &id, T0), S::CancelledByUser);
    assert!(w.take_owed().is_empty());
}

#[test]
fn age_rejection_from_issued_to_user_only() {
    let mut w = world();
    checkin(&mut w, "usr-1");
    let id = prepared(&mut w, "o");
    assert_eq!(code(w.age_reject(BIO, &id, T0)).0, 409, "Paired");
    ready(&mut w, &id, "5").unwrap();
    w.age_reject(BIO, &id, T0).unwrap();
    assert_eq!(
        status(&mut w, &id, T0),
        S::RejectedByMobilePayDueToAgeRestrictions
    );
    assert!(w.take_owed().is_empty());
}

// ----- cancel: S4, V8, C3, C4 ------------------------------------------------------------

#[test]
fn c4_cancel_from_every_waiting_state_owes_nothing() {
    // Initiated, IssuedToUser, Prepared, Paired.
    for (prep, check) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut w = world();
        let id = waiting(&mut w, prep, check);
        w.cancel(BIO, Some(&id), T0).unwrap();
        assert_eq!(status(&mut w, &id, T0), S::CancelledByClient);
        assert!(w.take_owed().is_empty());
    }
}

#[test]
fn c4_cancel_in_reserved_owes_a_cancel_and_repeats_with_200() {
    let mut w = world();
    let id = reserved(&mut w, "10");
    w.cancel(BIO, Some(&id), T0).unwrap();
    assert_eq!(status(&mut w, &id, T0), S::CancelledByClient);
    assert_eq!(
        w.take_owed(),
        vec![Call::Cancel {
            payment_id: id.clone()
        }]
    );
    w.cancel(BIO, Some(&id), T0).unwrap();
    assert!(w.take_owed().is_empty(), "a repeat sends nothing");
}

#[test]
fn c4_cancel_of_other_final_statuses_is_1300() {
    let mut w = world();
    let id = captured(&mut w, "10");
    refused(w.cancel(BIO, Some(&id), T0), 409, "1300");
    let mut w = world();
    let id = start(&mut w, "o", "1").unwrap();
    checkin(&mut w, "u");
    w.decline(BIO, &id, T0).unwrap();
    refused(w.cancel(BIO, Some(&id), T0), 409, "1300");
}

// ----- S1, S5, V2, C1 --------------------------------------------------------------------

#[test]
fn s1_a_waiting_payment_blocks_the_pos_with_1301() {
    let mut w = world();
    let id = start(&mut w, "o-1", "10").unwrap();
    refused(start(&mut w, "o-2", "10"), 409, "1301");
    refused(w.prepare(BIO, t1(), Some("o-2"), None, T0), 409, "1301");
    // Another PoS is free.
    assert!(
        w.start(
            BIO,
            PosRef::Pos("pos-2"),
            Some("o-2"),
            Some("1"),
            Some("DKK"),
            None,
            T0
        )
        .is_ok()
    );
    // S5: the PoS cancels it, then starts again.
    w.cancel(BIO, Some(&id), T0).unwrap();
    assert!(start(&mut w, "o-2", "10").is_ok());
}

#[test]
fn c1_reserved_does_not_block_but_is_listed_as_active() {
    let mut w = world();
    let first = reserved(&mut w, "10");
    let second = start(&mut w, "o-2", "20").unwrap();
    let list = w.payments(BIO, None, None, None, T0).unwrap();
    let ids: Vec<&str> = list["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["paymentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![first.as_str(), second.as_str()]);
    // Final payments are not listed without a state; with one they are.
    w.capture(BIO, Some(&first), None, T0).unwrap();
    let list = w.payments(BIO, None, None, None, T0).unwrap();
    assert_eq!(list["payments"].as_array().unwrap().len(), 1);
    let cap = w.payments(BIO, Some("Captured"), None, None, T0).unwrap();
    assert_eq!(cap["payments"][0]["paymentId"], first.as_str());
    assert_eq!(cap["payments"][0]["status"], "Captured");
    assert_eq!(
        code(w.payments(BIO, Some("Reversed"), None, None, T0)).0,
        400,
        "C3"
    );
}

#[test]
fn a_retried_start_without_key_returns_the_same_payment() {
    let mut w = world();
    let a = start(&mut w, "o-1", "10").unwrap();
    assert_eq!(start(&mut w, "o-1", "10.00").unwrap(), a);
    refused(start(&mut w, "o-1", "11"), 409, "1301");
    let b = w
        .prepare(BIO, PosRef::Pos("pos-2"), Some("o-9"), None, T0)
        .unwrap();
    assert_eq!(
        w.prepare(BIO, PosRef::Pos("pos-2"), Some("o-9"), None, T0)
            .unwrap(),
        b
    );
}

// ----- S2, V3 ------------------------------------------------------------------------------

#[test]
fn s2_ready_only_on_a_prepared_payment() {
    let mut w = world();
    let id = start(&mut w, "o", "10").unwrap();
    refused(ready(&mut w, &id, "10"), 409, "1303");
    let id = reserved(&mut world(), "10");
    let _ = id;
}

#[test]
fn ready_checks_its_fields() {
    let mut w = world();
    let id = prepared(&mut w, "o");
    refused(ready(&mut w, &id, "0"), 400, "1102");
    assert_eq!(
        code(w.ready(BIO, Some(&id), Some("x"), None, Some("1"), Some("DKK"), T0)).0,
        400
    );
    assert_eq!(
        code(w.ready(
            BIO,
            Some(&id),
            None,
            Some("T-02"),
            Some("1"),
            Some("DKK"),
            T0
        ))
        .0,
        400
    );
    assert_eq!(
        code(w.ready(BIO, Some(&id), None, None, Some("1"), Some("EUR"), T0)).0,
        400
    );
}

// ----- capture: S3, V4-V7 ----------------------------------------------------------------

#[test]
fn s3_capture_only_in_reserved() {
    let mut w = world();
    let id = start(&mut w, "o", "10").unwrap();
    refused(w.capture(BIO, Some(&id), None, T0), 409, "1304");
    checkin(&mut w, "u");
    refused(w.capture(BIO, Some(&id), None, T0), 409, "1304");
    assert!(w.take_owed().is_empty());
}

#[test]
fn v5_capture_above_the_reserved_amount() {
    let mut w = world();
    let id = reserved(&mut w, "10");
    refused(w.capture(BIO, Some(&id), Some("10.01"), T0), 409, "1305");
    assert!(w.take_owed().is_empty());
}

#[test]
fn v6_capture_again_same_amount_200_different_1307() {
    let mut w = world();
    let id = reserved(&mut w, "125.50");
    w.capture(BIO, Some(&id), Some("100"), T0).unwrap();
    assert_eq!(w.take_owed().len(), 1);
    let again = w.capture(BIO, Some(&id), Some("100.00"), T0).unwrap();
    assert_eq!(again["capturedAmount"], "100.00");
    assert!(w.take_owed().is_empty(), "a repeat sends nothing");
    refused(w.capture(BIO, Some(&id), Some("90"), T0), 409, "1307");
    assert_eq!(
        code(w.capture(BIO, Some(&id), None, T0)),
        (409, "1307".into()),
        "full is 125.50"
    );
}

#[test]
fn v7_partial_capture_when_not_possible() {
    let mut cfg = config();
    cfg.partial_capture_possible = false;
    let mut w = World::new(&cfg);
    let id = keyed(&mut w, "o", None, T0).unwrap()["paymentId"]
        .as_str()
        .unwrap()
        .to_owned();
    w.checkin(BIO, t1(), "u", None, T0).unwrap();
    let call = w.begin_approve(BIO, &id, T0).unwrap();
    assert!(!call.partial_capture_possible);
    w.finish_approve(&id, &ReserveOutcome::Approved, T0);
    refused(w.capture(BIO, Some(&id), Some("5"), T0), 409, "1308");
    assert!(w.capture(BIO, Some(&id), Some("10"), T0).is_ok());
}

#[test]
fn bad_amounts_are_1102() {
    let mut w = world();
    for a in ["0", "-1", "1.001", "abc", ""] {
        assert_eq!(code(start(&mut w, "o", a)), (400, "1102".into()), "{a}");
    }
    let id = reserved(&mut w, "10");
    refused(w.capture(BIO, Some(&id), Some("0"), T0), 400, "1102");
}

// ----- S6, retrieval -----------------------------------------------------------------------

#[test]
fn s6_retrieve_by_state_only_with_captured() {
    let mut w = world();
    let id = captured(&mut w, "10");
    let got = w
        .retrieve(BIO, Some("o-1"), Some("Captured"), None, T0)
        .unwrap();
    assert_eq!(got["paymentId"], id.as_str());
    refused(
        w.retrieve(BIO, Some("o-1"), Some("Reserved"), None, T0),
        400,
        "1109",
    );
    refused(w.retrieve(BIO, Some("o-1"), None, None, T0), 400, "1109");
    assert_eq!(
        code(w.retrieve(BIO, Some("o-x"), Some("Captured"), None, T0)).0,
        404
    );
}

#[test]
fn retrieve_by_terminal_or_pos_recovers_a_lost_payment_id() {
    let mut w = world();
    let id = start(&mut w, "o-1", "10").unwrap();
    let by_t = w
        .retrieve(BIO, Some("o-1"), Some("Initiated"), Some(t1()), T0)
        .unwrap();
    assert_eq!(by_t["paymentId"], id.as_str());
    let by_p = w
        .retrieve(BIO, Some("o-1"), None, Some(PosRef::Pos("pos-1")), T0)
        .unwrap();
    assert_eq!(by_p["paymentId"], id.as_str());
    assert_eq!(
        code(w.retrieve(BIO, Some("o-1"), Some("Captured"), Some(t1()), T0)).0,
        404
    );
    assert_eq!(
        code(w.retrieve(BIO, Some("o-1"), None, Some(PosRef::Pos("pos-2")), T0)).0,
        404
    );
}

// ----- S7, S8, management ------------------------------------------------------------------

#[test]
fn s7_token_created_once_and_reset_with_the_previous_one() {
    let mut cfg = config();
    cfg.merchants[0].access_token.clear();
    let mut w = World::new(&cfg);
    assert_eq!(code(w.authenticate(Some(BIO), Some(""))).0, 401);
    let tok = w.create_token(Some(BIO)).unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(w.authenticate(Some(BIO), Some(&tok)).is_ok());
    refused(w.create_token(Some(BIO)), 409, "S7");
    assert_eq!(code(w.create_token(Some("nobody"))).0, 401);
    refused(w.reset_token(Some(BIO), None), 400, "S7");
    assert_eq!(code(w.reset_token(Some(BIO), Some("wrong"))).0, 401);
    let new = w.reset_token(Some(BIO), Some(&tok)).unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, tok);
    assert_eq!(code(w.authenticate(Some(BIO), Some(&tok))).0, 401);
    assert!(w.authenticate(Some(BIO), Some(&new)).is_ok());
    assert_eq!(w.merchant_of_token(&new).as_deref(), Some(BIO));
}

#[test]
fn credentials_are_per_merchant() {
    let w = world();
    assert!(w.authenticate(Some(BIO), Some("tok")).is_ok());
    assert_eq!(code(w.authenticate(Some(BIO), Some("tok2"))).0, 401);
    assert_eq!(code(w.authenticate(None, Some("tok"))).0, 401);
    assert_eq!(code(w.authenticate(Some(BIO), None)).0, 401);
    // Another merchant's terminal and payment are not found.
    let mut w = world();
    assert_eq!(
        code(w.start(
            BIO,
            PosRef::Terminal("T-99"),
            Some("o"),
            Some("1"),
            Some("DKK"),
            None,
            T0
        ))
        .0,
        404
    );
    let id = start(&mut w, "o", "1").unwrap();
    assert_eq!(code(w.status("bio-2002", Some(&id), T0)).0, 404);
}

#[test]
fn s8_pos_created_only_when_absent_update_is_delete_then_create() {
    let mut w = world();
    refused(w.create_pos(BIO, Some("T-01")), 409, "S8");
    // T-03 has no PoS: nothing can start there and no QR code is given.
    assert_eq!(
        code(w.start(
            BIO,
            PosRef::Terminal("T-03"),
            Some("o"),
            Some("1"),
            Some("EUR"),
            None,
            T0
        ))
        .0,
        404
    );
    assert_eq!(code(w.qr_code(BIO, Some("T-03"), "http://x")).0, 404);
    let pos = w.create_pos(BIO, Some("T-03")).unwrap()["posId"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = w.terminal_information(BIO, Some("T-03")).unwrap();
    assert_eq!(info["posId"], pos.as_str());
    assert_eq!(info["storeId"], "st-2");
    assert_eq!(
        w.qr_code(BIO, Some("T-03"), "http://x").unwrap()["qrCodeUrl"],
        "http://x/sim/qr/T-03"
    );
    assert_eq!(
        w.qr_text("T-03").unwrap(),
        format!("mobilepay://checkin?posId={pos}")
    );
    // Delete is refused while a payment waits, then allowed.
    let id = w
        .start(
            BIO,
            PosRef::Pos(&pos),
            Some("o"),
            Some("1"),
            Some("EUR"),
            None,
            T0,
        )
        .unwrap()["paymentId"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(w.delete_pos(BIO, Some("T-03"), T0), 409, "1301");
    w.cancel(BIO, Some(&id), T0).unwrap();
    w.delete_pos(BIO, Some("T-03"), T0).unwrap();
    assert_eq!(
        w.terminal_information(BIO, Some("T-03")).unwrap()["posId"],
        Value::Null
    );
    assert_eq!(code(w.delete_pos(BIO, Some("T-03"), T0)).0, 404);
    let again = w.create_pos(BIO, Some("T-03")).unwrap()["posId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(again, pos);
}

#[test]
fn stores_and_store() {
    let w = world();
    assert_eq!(w.stores(BIO).unwrap()["storeIds"], json!(["st-1", "st-2"]));
    assert_eq!(w.store(BIO, Some("st-2")).unwrap()["name"], "Cinema Odense");
    assert_eq!(code(w.store(BIO, Some("st-9"))).0, 404);
}

#[test]
fn checkin_status_by_pos_and_terminal() {
    let mut w = world();
    assert_eq!(
        w.checkin_status(BIO, PosRef::Pos("pos-1")).unwrap()["checkedIn"],
        false
    );
    checkin(&mut w, "usr-7");
    assert_eq!(
        w.checkin_status(BIO, PosRef::Pos("pos-1")).unwrap()["userId"],
        "usr-7"
    );
    assert_eq!(w.checkin_status(BIO, t1()).unwrap()["checkedIn"], true);
    // Another customer cannot take over a payment that has one.
    start(&mut w, "o", "1").unwrap();
    assert_eq!(code(w.checkin(BIO, t1(), "usr-8", None, T0)).0, 409);
}

#[test]
fn currency_must_be_the_terminals() {
    let mut w = world();
    assert_eq!(
        code(w.start(BIO, t1(), Some("o"), Some("1"), Some("EUR"), None, T0)).0,
        400
    );
    assert_eq!(
        code(w.start(BIO, t1(), Some("o"), Some("1"), None, None, T0)).0,
        400
    );
    assert!(
        w.start(BIO, t1(), Some("o"), Some("1"), Some("dkk"), None, T0)
            .is_ok()
    );
}

// ----- V15 -------------------------------------------------------------------------------

#[test]
fn v15_same_key_same_request_returns_the_same_payment() {
    let mut w = world();
    let k = Some("key-1");
    let a = keyed(&mut w, "o-1", k, T0).unwrap();
    let b = keyed(&mut w, "o-1", k, T0 + 1000).unwrap();
    assert_eq!(a, b);
    // The same key on another request: 1306.
    refused(keyed(&mut w, "o-2", k, T0), 409, "1306");
    // A new key while the payment waits: 1301.
    refused(keyed(&mut w, "o-1", Some("key-2"), T0), 409, "1301");
    // Keys are per merchant.
    assert!(
        w.start(
            "bio-2002",
            PosRef::Terminal("T-99"),
            Some("o-1"),
            Some("10"),
            Some("DKK"),
            k,
            T0
        )
        .is_ok()
    );
}

#[test]
fn v15_keys_are_kept_24_hours() {
    let mut w = world();
    let k = Some("key-1");
    let id = keyed(&mut w, "o-1", k, T0).unwrap()["paymentId"]
        .as_str()
        .unwrap()
        .to_owned();
    w.cancel(BIO, Some(&id), T0).unwrap();
    let day = IDEMPOTENCY_KEEP_MS;
    let again = w
        .start(
            BIO,
            t1(),
            Some("o-1"),
            Some("10"),
            Some("DKK"),
            k,
            T0 + day - 1,
        )
        .unwrap();
    assert_eq!(
        again["paymentId"],
        id.as_str(),
        "replayed even though it is cancelled now"
    );
    w.tick(T0 + day);
    let fresh = keyed(&mut w, "o-1", k, T0 + day).unwrap();
    assert_ne!(fresh["paymentId"], id.as_str());
}

#[test]
fn v15_on_prepare_and_refund_create() {
    let mut w = world();
    let k = Some("p-1");
    let a = w.prepare(BIO, t1(), Some("o"), k, T0).unwrap();
    assert_eq!(w.prepare(BIO, t1(), Some("o"), k, T0).unwrap(), a);
    refused(w.prepare(BIO, t1(), Some("o-2"), k, T0), 409, "1306");
    let mut w = world();
    let id = captured(&mut w, "100");
    let rk = Some("rk");
    let r = keyed_refund(&mut w, &id, "r-1", "10", rk, T0).unwrap();
    assert_eq!(keyed_refund(&mut w, &id, "r-1", "10", rk, T0).unwrap(), r);
    refused(keyed_refund(&mut w, &id, "r-1", "11", rk, T0), 409, "1306");
}

// ----- refunds: §1.6, V9-V12, V14 ------------------------------------------------------------

/// `refund/create` of `amount` DKK on `pid` for `order`, under the idempotency key `key`, at
/// `now`.
fn keyed_refund(
    w: &mut World,
    pid: &str,
    order: &str,
    amount: &str,
    key: Option<&str>,
    now: i64,
) -> SimResult<Value> {
    w.create_refund(
        BIO,
        Some(pid),
        Some(amount),
        Some("DKK"),
        Some(order),
        key,
        now,
    )
}

fn refund(w: &mut World, pid: &str, order: &str, amount: &str) -> SimResult<String> {
    keyed_refund(w, pid, order, amount, None, T0)
        .map(|v| v["refundId"].as_str().unwrap().to_owned())
}

fn refund_status(w: &mut World, rid: &str, now: i64) -> String {
    w.refund_details(BIO, Some(rid), now).unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn refund_is_reserved_at_once_and_capture_owes_the_refund_call() {
    let mut w = world();
    let pid = captured(&mut w, "100");
    let rid = refund(&mut w, &pid, "r-1", "30").unwrap();
    assert_eq!(refund_status(&mut w, &rid, T0), "Reserved");
    assert!(w.take_owed().is_empty(), "creation moves nothing");
    let d = w.refund_details(BIO, Some(&rid), T0).unwrap();
    assert_eq!(d["paymentId"], pid.as_str());
    assert_eq!(d["refundOrderId"], "r-1");
    assert_eq!(d["amount"], "30.00");
    assert_eq!(d["currencyCode"], "DKK");
    w.capture_refund(BIO, Some(&rid), T0).unwrap();
    assert_eq!(refund_status(&mut w, &rid, T0), "Captured");
    let owed = w.take_owed();
    assert_eq!(
        owed,
        vec![Call::Refund {
            payment_id: pid.clone(),
            refund_id: rid.clone(),
            amount_minor: 3000,
            currency: "DKK".into()
        }]
    );
    assert_eq!(
        owed[0].body(),
        format!(r#"{{"amount":"30.00","currency":"DKK","refund_id":"{rid}"}}"#).into_bytes()
    );
    // Naturally idempotent.
    w.capture_refund(BIO, Some(&rid), T0).unwrap();
    assert!(w.take_owed().is_empty());
    assert_eq!(
        w.details(BIO, Some(&pid), T0).unwrap()["refundedAmount"],
        "30.00"
    );
    assert_eq!(
        w.refunds_of(BIO, Some(&pid), T0).unwrap()["refundIds"],
        json!([rid])
    );
    // V14: a captured refund cannot be cancelled.
    refused(w.cancel_refund(BIO, Some(&rid), T0), 409, "1352");
}

#[test]
fn refund_auto_captures_after_its_time() {
    let mut w = world();
    let pid = captured(&mut w, "100");
    let rid = refund(&mut w, &pid, "r-1", "30").unwrap();
    assert_eq!(refund_status(&mut w, &rid, T0 + 29_999), "Reserved");
    assert_eq!(
        refund_status(&mut w, &rid, T0 + 30_000),
        "ExpiredAndCaptured"
    );
    assert_eq!(w.take_owed().len(), 1);
    // By the timer task too.
    let rid2 = refund(&mut w, &pid, "r-2", "30").unwrap();
    w.tick(T0 + 30_000);
    assert_eq!(
        w.refund(&rid2).unwrap().status,
        RefundStatus::ExpiredAndCaptured
    );
    assert_eq!(w.take_owed().len(), 1);
    // Capturing an auto-captured refund is answered 200 and owes nothing more.
    assert!(w.capture_refund(BIO, Some(&rid2), T0 + 30_000).is_ok());
    assert!(w.take_owed().is_empty());
}

#[test]
fn refund_cancel_moves_nothing_and_repeats_with_200() {
    let mut w = world();
    let pid = captured(&mut w, "100");
    let rid = refund(&mut w, &pid, "r-1", "30").unwrap();
    w.cancel_refund(BIO, Some(&rid), T0).unwrap();
    assert_eq!(refund_status(&mut w, &rid, T0), "CancelledByClient");
    w.cancel_refund(BIO, Some(&rid), T0).unwrap();
    assert!(w.take_owed().is_empty());
    refused(w.capture_refund(BIO, Some(&rid), T0), 409, "1351");
    // A cancelled refund no longer counts against the captured amount.
    assert!(refund(&mut w, &pid, "r-2", "100").is_ok());
    // Nor does it auto-capture.
    w.tick(T0 + 1_000_000);
    assert_eq!(refund_status(&mut w, &rid, T0), "CancelledByClient");
}

#[test]
fn v9_refund_only_of_a_captured_payment() {
    let mut w = world();
    let pid = reserved(&mut w, "100");
    refused(refund(&mut w, &pid, "r", "1"), 409, "1354");
}

#[test]
fn v10_refund_currency() {
    let mut w = world();
    let pid = captured(&mut w, "100");
    refused(
        w.create_refund(BIO, Some(&pid), Some("1"), Some("EUR"), Some("r"), None, T0),
        409,
        "1365",
    );
}

#[test]
fn v11_refund_window() {
    let mut w = world();
    let pid = captured(&mut w, "100");
    let window = 90 * 86_400_000;
    // Without inactivity or expiry getting in the way: the payment is final.
    assert!(keyed_refund(&mut w, &pid, "r1", "1", None, T0 + window).is_ok());
    refused(
        keyed_refund(&mut w, &pid, "r2", "1", None, T0 + window + 1),
        409,
        "1366",
    );
}

#[test]
fn v12_refunds_up_to_the_captured_amount_pending_included() {
    let mut w = world();
    let pid = reserved(&mut w, "125.50");
    w.capture(BIO, Some(&pid), Some("100"), T0).unwrap();
    let r1 = refund(&mut w, &pid, "r-1", "30").unwrap();
    refund(&mut w, &pid, "r-2", "70").unwrap();
    refused(refund(&mut w, &pid, "r-3", "0.01"), 409, "1367");
    // A retried create (same refundOrderId and amount) is the same refund; another amount 1306.
    assert_eq!(refund(&mut w, &pid, "r-1", "30").unwrap(), r1);
    refused(refund(&mut w, &pid, "r-1", "31"), 409, "1306");
}

#[test]
fn refunds_are_the_merchants_own() {
    let mut w = world();
    let pid = captured(&mut w, "100");
    let rid = refund(&mut w, &pid, "r-1", "30").unwrap();
    assert_eq!(code(w.refund_details("bio-2002", Some(&rid), T0)).0, 404);
    assert_eq!(code(w.capture_refund("bio-2002", Some(&rid), T0)).0, 404);
}

#[test]
fn call_keys_and_paths_are_stable_per_logical_call() {
    let c = Call::Cancel {
        payment_id: "p".into(),
    };
    assert_eq!(c.idempotency_key(), "mp-can-p");
    assert_eq!(c.path(), "/channels/v1/reservations/p/cancel");
    assert_eq!(c.body(), b"{}");
    let r = Call::Refund {
        payment_id: "p".into(),
        refund_id: "r".into(),
        amount_minor: 1,
        currency: "DKK".into(),
    };
    assert_eq!(r.idempotency_key(), "mp-ref-r");
    assert_eq!(r.path(), "/channels/v1/reservations/p/refunds");
    let long = guid();
    assert_eq!(long.len(), 36);
    assert!(
        Call::Capture {
            payment_id: long,
            amount_minor: 1
        }
        .idempotency_key()
        .len()
            <= 64
    );
}
