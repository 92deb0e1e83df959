//! The one writer: a batch mixing every kind of money-moving request (deposits and
//! withdrawals, authorizations, adjustments, notifications, the channels' hold operations)
//! is planned in arrival order, each
//! request against what the earlier ones left, and written once; the same requests through
//! the server, sent at once, all go through the writer and book exactly once.

use e2e::*;
use futures_util::future::join_all;
use ledger::{Currency, RequestKind};
use rust_decimal::Decimal;
use std::str::FromStr;
use store::{
    AdjustmentResult, AuthorizationResult, BatchItem, CardLookup, CardTransaction, ChannelAnswer,
    ChannelCall, ChannelOutcome, Done, ExpiryCall, ExpiryScope, FundingCall, FundingOutcome,
    HoldOp, InstoreCall, InstoreOp, InstoreOutcome, NotificationCall, NotificationResult, Outcome,
    ProcessorCall, Renders, ReserveRequest, StoredResponse, SvLegPlan, SvMovementPlan, SvPlan,
    SvSnapshot, Verdict, Work,
};

fn card_tx<'a>(tid: &'a str, kind: &'a str, user: &'a str, amount: &'a str) -> CardTransaction<'a> {
    CardTransaction {
        transaction_id: tid,
        tx_type: kind,
        user_id: Some(user),
        card_id: None,
        currency: "ARS",
        amount_text: amount,
        amount: Decimal::from_str(amount).ok(),
        mcc: Some("5045"),
        original_transaction_id: None,
        ..CardTransaction::default()
    }
}

fn call<'a>(key: &'a str, hash: u8, endpoint: &'a str, now_ms: i64) -> ProcessorCall<'a> {
    ProcessorCall {
        idempotency_key: key,
        request_hash: [hash; 32],
        endpoint,
        raw_body: b"{}",
        now_ms,
        commit_by: None,
        commit_started: None,
    }
}

/// A purchase authorization of `amount` by `user`, its card unknown.
fn purchase_work<'a>(
    user: &'a str,
    tid: &'a str,
    key: &'a str,
    hash: u8,
    amount: &'a str,
    now_ms: i64,
) -> Work<'a> {
    Work::Authorization(BatchItem {
        call: call(key, hash, AUTH_DEBIT, now_ms),
        tx: card_tx(tid, "PURCHASE", user, amount),
        kind: Some(RequestKind::Debit),
        card: CardLookup::Absent,
    })
}

fn funding<'a>(user: &'a str, key: &'a str, amount: i64, withdrawal: bool) -> FundingCall<'a> {
    FundingCall {
        user_id: user,
        currency: Currency::parse("ARS").expect("ARS"),
        amount,
        withdrawal,
        reference: None,
        idempotency_key: key,
        request_hash: [7; 32],
        endpoint: "/v1/accounts/deposits",
        now_ms: store::now_ms(),
    }
}

fn render_authorization(r: &AuthorizationResult) -> Vec<u8> {
    format!("{:?}", r.decision).into_bytes()
}

fn render_adjustment(r: &AdjustmentResult) -> Vec<u8> {
    format!("adjusted to {:?}", r.balance_after).into_bytes()
}

fn render_notification(r: &NotificationResult) -> Vec<u8> {
    r.effect.as_str().as_bytes().to_vec()
}

fn render_funding(movement_id: i64, available: i64) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: format!("movement {movement_id}, available {available}").into_bytes(),
    }
}

fn render_channel(a: &ChannelAnswer<'_>) -> Vec<u8> {
    match a {
        ChannelAnswer::Reserved(h) => format!("reserved {}", h.amount),
        ChannelAnswer::Captured(h) => format!("captured {}", h.captured),
        ChannelAnswer::Cancelled(_) => "cancelled".to_owned(),
        ChannelAnswer::Refunded { amount, .. } => format!("refunded {amount}"),
        ChannelAnswer::Declined(d, _) => format!("declined {d:?}"),
        ChannelAnswer::Refused(e) => format!("refused {}", e.code()),
    }
    .into_bytes()
}

static RENDERS: Renders<'static> = Renders {
    authorization: &render_authorization,
    adjustment: &render_adjustment,
    notification: &render_notification,
    channel: &render_channel,
};

/// (fresh / replay / conflict / refusal, the stored body) of each request's result.
fn answer(d: Done) -> (&'static str, String) {
    fn of<T>(o: Outcome<T>) -> (&'static str, String) {
        match o {
            Outcome::Fresh { response, .. } => ("fresh", text(response)),
            Outcome::Replay(r) => ("replay", text(r)),
            Outcome::KeyConflict => ("key conflict", String::new()),
            Outcome::TransactionConflict => ("transaction conflict", String::new()),
        }
    }
    fn text(r: StoredResponse) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }
    match d {
        Done::Authorization(r) => of(r.expect("authorization answered")),
        Done::Adjustment(r) => of(r.expect("adjustment answered")),
        Done::Notification(r) => of(r.expect("notification answered")),
        Done::Funding(r) => match r.expect("funding answered") {
            FundingOutcome::Done { response } => ("fresh", text(response)),
            FundingOutcome::Replay(r) => ("replay", text(r)),
            FundingOutcome::InsufficientFunds => ("insufficient funds", String::new()),
            other => panic!("unexpected funding outcome {other:?}"),
        },
        Done::Hold(r) => match r.expect("hold operation answered") {
            ChannelOutcome::Fresh { response, .. } => ("fresh", text(response)),
            ChannelOutcome::Replay(r) => ("replay", text(r)),
            ChannelOutcome::Refused { error, .. } => ("refused", format!("{error:?}")),
            ChannelOutcome::KeyConflict => ("key conflict", String::new()),
            other => panic!("unexpected hold outcome {other:?}"),
        },
        Done::Expiry(r) => {
            let e = r.expect("expiry done");
            let more = if e.more { "more" } else { "done" };
            ("expired", format!("{} {more}", e.expired))
        }
        Done::Instore(r) | Done::Wallet(r) => match r.expect("InStore request answered") {
            InstoreOutcome::Done { ack } => ("fresh", String::from_utf8_lossy(&ack).into_owned()),
            InstoreOutcome::Replay { ack } => {
                ("replay", String::from_utf8_lossy(&ack).into_owned())
            }
            InstoreOutcome::Conflict => ("key conflict", String::new()),
        },
    }
}

/// Runs `work` as one batch; each request's answer.
/// Asserts `o` is a fresh answer whose text starts with `start` and ends with `end`.
fn assert_fresh(o: &(&str, String), start: &str, end: &str) {
    assert!(
        o.0 == "fresh" && o.1.starts_with(start) && o.1.ends_with(end),
        "{o:?}"
    );
}

async fn batch(app: &TestApp, work: &[Work<'_>]) -> Vec<(&'static str, String)> {
    batch_on(&app.store, work).await
}

/// Runs `work` as one batch on `store`; each request's answer.
async fn batch_on(store: &store::Store, work: &[Work<'_>]) -> Vec<(&'static str, String)> {
    let mut out: Vec<Option<(&'static str, String)>> = vec![None; work.len()];
    store
        .write_batch_each(work, &RENDERS, |i, d| out[i] = Some(answer(d)), |_, _| {})
        .await;
    out.into_iter()
        .map(|o| o.expect("every request answered"))
        .collect()
}

fn channel_call<'a>(key: &'a str, hash: u8, now_ms: i64) -> ChannelCall<'a> {
    ChannelCall {
        channel: CHANNEL_NAME,
        idempotency_key: key,
        request_hash: [hash; 32],
        endpoint: "/channels/v1/reservations",
        now_ms,
        commit_by: None,
        commit_started: None,
    }
}

/// A reservation of `amount` ARS for `user`, expiring at `expires_at_ms`.
fn reserve_work<'a>(
    key: &'a str,
    hash: u8,
    user: &'a str,
    reservation_id: &'a str,
    amount: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Work<'a> {
    Work::Hold(HoldOp::Reserve {
        call: channel_call(key, hash, now_ms),
        req: ReserveRequest {
            reservation_id,
            user_id: user,
            card_id: None,
            currency: Currency::parse("ARS").ok(),
            amount: Decimal::from_str(amount).ok(),
            mcc: Some("5045"),
            country: None,
            merchant: None,
            reference: None,
            expires_at_ms,
            partial_capture_possible: true,
        },
    })
}

/// Reservations, captures and refunds share batches with authorizations and deposits:
/// every debit decision sees the held amount the earlier requests left.
async fn hold_operations_share_the_batch(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "10.00").await;
    let now = store::now_ms();
    let reservation = uid("r");
    let keys: Vec<String> = (0..8).map(|_| uid("k")).collect();
    let (t1, t2, t3) = (uid("t"), uid("t"), uid("t"));
    let purchase = |tid, key, hash, amount| purchase_work(&user, tid, key, hash, amount, now);
    let render: &(dyn Fn(i64, i64) -> StoredResponse + Send + Sync) = &render_funding;
    let first = [
        // 6.00 held: 4.00 available.
        reserve_work(&keys[0], 1, &user, &reservation, "6.00", now, now + 600_000),
        purchase(&t1, &keys[1], 2, "5.00"),
        Work::Funding {
            call: funding(&user, &keys[2], 100, false),
            render,
        },
        purchase(&t2, &keys[3], 3, "5.00"),
    ];
    let out = batch(&app, &first).await;
    assert_eq!(out[0], ("fresh", "reserved 600".to_owned()));
    assert_eq!(out[1], ("fresh", "Declined(InsufficientFunds)".to_owned()));
    assert_fresh(&out[2], "", "available 500");
    assert_fresh(&out[3], "Approved { amount: -500", "");
    assert_eq!(app.available(&user, "ARS").await, "0.00");

    let second = [
        // 2.00 of the 6.00 captured, the rest released: 4.00 available.
        Work::Hold(HoldOp::Capture {
            call: channel_call(&keys[4], 4, now),
            reservation_id: &reservation,
            amount: Decimal::from_str("2.00").ok(),
        }),
        purchase(&t3, &keys[5], 5, "4.00"),
        Work::Hold(HoldOp::Refund {
            call: channel_call(&keys[6], 6, now),
            reservation_id: &reservation,
            refund_id: "rf-1",
            amount: Decimal::from_str("1.00").ok(),
            currency: Some("ARS"),
            window_days: 30,
        }),
        Work::Hold(HoldOp::Cancel {
            call: channel_call(&keys[7], 7, now),
            reservation_id: &reservation,
        }),
    ];
    let out = batch(&app, &second).await;
    assert_eq!(out[0], ("fresh", "captured 200".to_owned()));
    assert_fresh(&out[1], "Approved { amount: -400", "");
    assert_eq!(out[2], ("fresh", "refunded 100".to_owned()));
    assert_eq!(out[3], ("refused", "AlreadyCaptured".to_owned()));
    assert_eq!(app.available(&user, "ARS").await, "1.00");

    // Both batches again: replayed (the refusal too: its key names it), nothing moves.
    let again = batch(&app, &first).await;
    assert!(again.iter().all(|a| a.0 == "replay"), "{again:?}");
    let again = batch(&app, &second).await;
    assert_eq!(
        again[..3].iter().filter(|a| a.0 == "replay").count(),
        3,
        "{again:?}"
    );
    assert_eq!(again[3], ("replay", "refused ALREADY_CAPTURED".to_owned()));
    // Another request under the refusal's key is a conflict.
    let other = [Work::Hold(HoldOp::Cancel {
        call: channel_call(&keys[7], 8, now),
        reservation_id: &reservation,
    })];
    assert_eq!(
        batch(&app, &other).await[0],
        ("key conflict", String::new())
    );
    assert_eq!(app.available(&user, "ARS").await, "1.00");
}

/// The expiry of overdue holds (the sweeper's batches, a read's one hold) is a request of
/// the writer like any other: the requests after it in its batch see the amount it
/// released, and a batch of expiries takes at most `batch_max` holds and says when more
/// may be due (the sweeper then sends another).
async fn expiries_share_the_batch(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "10.00").await;
    let now = store::now_ms();
    let keys: Vec<String> = (0..5).map(|_| uid("k")).collect();
    let ids: Vec<String> = (0..5).map(|_| uid("r")).collect();
    // Three holds of 3.00, due in a second: 1.00 available.
    let first: Vec<Work<'_>> = (0..3)
        .map(|i| {
            reserve_work(
                &keys[i],
                i as u8 + 1,
                &user,
                &ids[i],
                "3.00",
                now,
                now + 1_000,
            )
        })
        .collect();
    let out = batch(&app, &first).await;
    assert!(
        out.iter()
            .all(|o| *o == ("fresh", "reserved 300".to_owned())),
        "{out:?}"
    );
    let later = now + 2_000;
    let sweep = |batch_max| {
        Work::Expiry(ExpiryCall {
            scope: ExpiryScope::Due { batch_max },
            now_ms: later,
        })
    };
    let second = [
        reserve_work(&keys[3], 4, &user, &ids[3], "5.00", later, later + 600_000),
        // Two of the three: 7.00 available.
        sweep(2),
        reserve_work(&keys[4], 5, &user, &ids[4], "5.00", later, later + 600_000),
        // The third: 5.00 available.
        sweep(2),
    ];
    let out = batch(&app, &second).await;
    assert_eq!(
        out,
        [
            ("fresh", "declined InsufficientFunds".to_owned()),
            ("expired", "2 more".to_owned()),
            ("fresh", "reserved 500".to_owned()),
            ("expired", "1 done".to_owned()),
        ]
    );
    assert_eq!(app.available(&user, "ARS").await, "5.00");
    // Nothing is due any more: neither a sweep nor a read's expiry of an expired hold
    // changes anything.
    let third = [
        sweep(2),
        Work::Expiry(ExpiryCall {
            scope: ExpiryScope::Hold {
                channel: CHANNEL_NAME,
                reservation_id: &ids[0],
            },
            now_ms: later,
        }),
    ];
    let out = batch(&app, &third).await;
    assert!(out.iter().all(|o| o.1 == "0 done"), "{out:?}");
    assert_eq!(app.available(&user, "ARS").await, "5.00");
    let expired = app
        .admin_get(&format!("/v1/accounts/{user}/ARS/holds?state=EXPIRED"))
        .await;
    assert_eq!(expired["holds"].as_array().map(Vec::len), Some(3));
}

/// Several instances sweep one Postgres: an account that another transaction holds (a
/// request of another instance, or its sweeper) is skipped, not waited for, and its holds
/// are expired by a later batch once it is free.
#[actix_rt::test]
async fn a_sweep_skips_an_account_locked_elsewhere() {
    use sqlx::Connection;
    let app = TestApp::spawn(Backend::Postgres).await;
    let (busy, free) = (uid("u"), uid("u"));
    app.funded(&busy, "ARS", "10.00").await;
    app.funded(&free, "ARS", "10.00").await;
    let now = store::now_ms();
    let (k1, k2, r1, r2) = (uid("k"), uid("k"), uid("r"), uid("r"));
    let reserved = [
        reserve_work(&k1, 1, &busy, &r1, "4.00", now, now + 1_000),
        reserve_work(&k2, 2, &free, &r2, "4.00", now, now + 1_000),
    ];
    batch(&app, &reserved).await;
    let url = app.database_url.clone().expect("a Postgres database");
    let mut other = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut elsewhere = other.begin().await.expect("begin");
    sqlx::query("SELECT id FROM accounts WHERE user_id = $1 FOR UPDATE")
        .bind(&busy)
        .fetch_all(&mut *elsewhere)
        .await
        .expect("lock");
    // Waiting for the lock would end in the lock timeout, an error, not this answer.
    let sweep = [Work::Expiry(ExpiryCall {
        scope: ExpiryScope::Due { batch_max: 10 },
        now_ms: now + 2_000,
    })];
    assert_eq!(
        batch(&app, &sweep).await,
        [("expired", "1 done".to_owned())]
    );
    assert_eq!(app.available(&free, "ARS").await, "10.00");
    assert_eq!(app.available(&busy, "ARS").await, "6.00");
    elsewhere.rollback().await.expect("rollback");
    assert_eq!(
        batch(&app, &sweep).await,
        [("expired", "1 done".to_owned())]
    );
    assert_eq!(app.available(&busy, "ARS").await, "10.00");
    assert_clean(&app.store).await;
}

async fn a_mixed_batch_is_planned_in_order(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "10.00").await;
    let now = store::now_ms();
    let (deposit_key, withdrawal_key) = (uid("dep"), uid("wd"));
    let (t1, t2, t3, t4) = (uid("t"), uid("t"), uid("t"), uid("t"));
    let (k1, k2, k3, k4) = (uid("k"), uid("k"), uid("k"), uid("adv"));
    let purchase = |tid, key, hash, amount| purchase_work(&user, tid, key, hash, amount, now);
    let refund = Work::Adjustment {
        call: call(&k2, 2, ADJ_CREDIT, now),
        tx: card_tx(&t2, "REFUND", &user, "1.00"),
        direction: RequestKind::Credit,
    };
    let render: &(dyn Fn(i64, i64) -> StoredResponse + Send + Sync) = &render_funding;
    let work = [
        // 10.00 + 5.00: the purchase after it fits only because the deposit came first.
        Work::Funding {
            call: funding(&user, &deposit_key, 500, false),
            render,
        },
        purchase(&t1, &k1, 1, "12.00"),
        // 3.00 + 1.00.
        refund,
        // The processor's word on a purchase we never saw: 4.00 - 2.00.
        Work::Notification(NotificationCall {
            key: &k4,
            request_hash: [4; 32],
            raw_body: b"{}",
            now_ms: now,
            event_id: "approved-authorization-advice",
            verdict: Some(Verdict::Approved),
            status_detail: Some("APPROVED"),
            transaction: Some(card_tx(&t4, "PURCHASE", &user, "2.00")),
            direction: Some(RequestKind::Debit),
            unparsed: false,
        }),
        // 2.00 left: declined.
        purchase(&t3, &k3, 3, "3.00"),
        // The rest withdrawn.
        Work::Funding {
            call: funding(&user, &withdrawal_key, 200, true),
            render,
        },
        // The refund again under its key: replayed, nothing booked twice.
        refund,
    ];
    let out = batch(&app, &work).await;
    assert_fresh(&out[0], "", "available 1500");
    assert_fresh(&out[1], "Approved { amount: -1200", "");
    assert_eq!(out[2], ("fresh", "adjusted to Some(400)".to_owned()));
    assert_eq!(out[3], ("fresh", "FORCED".to_owned()));
    assert_eq!(out[4], ("fresh", "Declined(InsufficientFunds)".to_owned()));
    assert_fresh(&out[5], "", "available 0");
    assert_eq!(out[6], ("replay", out[2].1.clone()));
    assert_eq!(app.available(&user, "ARS").await, "0.00");

    // The same batch again: every answer replayed byte for byte, nothing moves.
    let again = batch(&app, &work).await;
    for (i, (first, second)) in out.iter().zip(again).enumerate() {
        assert_eq!(second, ("replay", first.1.clone()), "request {i}");
    }
    assert_eq!(app.available(&user, "ARS").await, "0.00");
}

const SV_NUMBER: &str = "6280001234567895";

/// The transport facts of a Redeem of stored-value [`SV_NUMBER`].
fn redeem_call(request_id: &str) -> InstoreCall {
    InstoreCall {
        tenant_id: e2e::instore::TENANT.to_owned(),
        request_id: request_id.to_owned(),
        action: "Redeem",
        request_hash: format!("hash-{request_id}"),
        request_hash_unkeyed: None,
        callback_url: "https://instore.example/callback".to_owned(),
        correlation_id: None,
        numbers: vec![SV_NUMBER.to_owned()],
        operation: None,
        duplicate_probe: None,
        location_id: "LondonStore".to_owned(),
        workstation_id: None,
        now_ms: store::now_ms(),
        poa: None,
        deadline: None,
    }
}

/// A Redeem of `minor` from the card the snapshot shows, against what the requests before
/// it in the batch left: approved with one leg, or declined with nothing to book.
fn plan_redeem(minor: i64) -> impl Fn(&SvSnapshot) -> SvPlan + Send + Sync {
    move |snap| {
        let card = &snap.cards[SV_NUMBER];
        let available = card.account.balance - card.account.held;
        let approved = available >= minor;
        let verdict = if approved { "approved" } else { "declined" };
        SvPlan {
            ack: format!("{verdict} {}", available - if approved { minor } else { 0 }).into_bytes(),
            callback: verdict.as_bytes().to_vec(),
            callback_headers: Vec::new(),
            new_card: None,
            movement: approved.then(|| SvMovementPlan {
                kind: ledger::instore::SvKind::Redeem,
                currency: card.currency,
                external_payment_id: uid("svp-"),
                reverses_payment_id: None,
                legs: vec![SvLegPlan {
                    number: SV_NUMBER.to_owned(),
                    delta: -minor,
                    external_transaction_id: uid("svt-"),
                    available_after: available - minor,
                }],
                location_id: "LondonStore".to_owned(),
                workstation_id: None,
                session_id: None,
                reference: None,
                flags: String::new(),
            }),
            pin_updates: Vec::new(),
            poa: None,
        }
    }
}

/// A purchase authorization of `amount` USD by `user`, its card unknown.
fn usd_purchase<'a>(
    user: &'a str,
    tid: &'a str,
    key: &'a str,
    hash: u8,
    amount: &'a str,
) -> Work<'a> {
    let Work::Authorization(mut item) =
        purchase_work(user, tid, key, hash, amount, store::now_ms())
    else {
        unreachable!("a purchase is an authorization");
    };
    item.tx.currency = "USD";
    Work::Authorization(item)
}

/// A stored-value Redeem shares a batch with authorizations on the same account: each sees
/// what the ones before it took, in arrival order, and a duplicate in the same batch
/// replays the first.
async fn a_redeem_shares_the_batch(app: TestApp) {
    let user = uid("u");
    app.stored_value_card(&user, "USD", "100.00", SV_NUMBER)
        .await;
    let (t1, t2, k1, k2) = (uid("t"), uid("t"), uid("k"), uid("k"));
    let redeem = redeem_call(&uid("req"));
    let planner = plan_redeem(8000);
    let op = Work::Instore(InstoreOp {
        call: &redeem,
        planner: &planner,
    });
    let work = [
        // 100.00 - 80.00.
        op,
        // 30.00 is more than the Redeem left.
        usd_purchase(&user, &t1, &k1, 1, "30.00"),
        // 20.00 fits exactly.
        usd_purchase(&user, &t2, &k2, 2, "20.00"),
        // The same requestId again: its first answer, nothing booked twice.
        op,
    ];
    let out = batch(&app, &work).await;
    assert_eq!(out[0], ("fresh", "approved 2000".to_owned()));
    assert_eq!(out[1], ("fresh", "Declined(InsufficientFunds)".to_owned()));
    assert_fresh(&out[2], "Approved { amount: -2000", "");
    assert_eq!(out[3], ("replay", "approved 2000".to_owned()));
    assert_eq!(app.available(&user, "USD").await, "0.00");
    assert_eq!(app.movements(&user, "USD", "SV_REDEEM").await, 1);

    // The other way round: the authorization first, and the Redeem declined for what it spent.
    app.funded(&user, "USD", "50.00").await;
    let (t3, k3) = (uid("t"), uid("k"));
    let second = redeem_call(&uid("req"));
    let planner = plan_redeem(3000);
    let work = [
        usd_purchase(&user, &t3, &k3, 3, "25.00"),
        Work::Instore(InstoreOp {
            call: &second,
            planner: &planner,
        }),
    ];
    let out = batch(&app, &work).await;
    assert_fresh(&out[0], "Approved { amount: -2500", "");
    assert_eq!(out[1], ("fresh", "declined 2500".to_owned()));
    assert_eq!(app.available(&user, "USD").await, "25.00");
    assert_eq!(app.movements(&user, "USD", "SV_REDEEM").await, 1);
}

/// Deposits, purchases, refunds (adjustments) and advices (notifications) sent at once: each
/// goes through the writer (counted in its batches) and books exactly once.
async fn every_kind_goes_through_the_writer(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "100.00").await;
    let items_before = app
        .metrics
        .counter("authorizer_commit_batch_items_total", &[]);
    let purchases: Vec<(Vec<u8>, String)> = (0..10)
        .map(|_| {
            let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, "3.00", "ARS");
            (tx.body(), uid("k"))
        })
        .collect();
    let refunds: Vec<(Vec<u8>, String)> = (0..10)
        .map(|_| {
            let tx = Tx::new(&uid("ctx"), "REFUND", &user, "1.00", "ARS");
            (tx.body(), uid("k"))
        })
        .collect();
    let advices: Vec<(Vec<u8>, String)> = (0..10)
        .map(|_| {
            let key = uid("adv");
            let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, "2.00", "ARS");
            (tx.approved_advice(&key), key)
        })
        .collect();
    let deposits: Vec<String> = (0..10).map(|_| uid("dep")).collect();
    let deposits_path = format!("/v1/accounts/{user}/ARS/deposits");
    let sent = async {
        let p = join_all(
            purchases
                .iter()
                .map(|(tx, k)| app.processor(AUTH_DEBIT, tx, k)),
        );
        let r = join_all(
            refunds
                .iter()
                .map(|(tx, k)| app.processor(ADJ_CREDIT, tx, k)),
        );
        let n = join_all(advices.iter().map(|(b, k)| app.processor(NOTIFY, b, k)));
        let d = join_all(deposits.iter().map(|k| {
            app.admin(
                "POST",
                &deposits_path,
                Some(serde_json::json!({ "amount": "0.50" })),
                Some(k),
            )
        }));
        tokio::join!(p, r, n, d)
    };
    let (p, r, n, d) = sent.await;
    for a in &p {
        assert_eq!(a.json()["status"], "APPROVED", "{:?}", a.json());
    }
    for a in r.iter().chain(&n) {
        assert_eq!(a.status, 200, "{:?}", a.json());
    }
    for a in &d {
        assert_eq!(a.status, 201, "{:?}", a.json());
    }
    // 100 - 10 x 3.00 + 10 x 1.00 - 10 x 2.00 + 10 x 0.50.
    assert_eq!(app.available(&user, "ARS").await, "65.00");
    let items = app
        .metrics
        .counter("authorizer_commit_batch_items_total", &[])
        - items_before;
    assert!(items >= 40, "{items} requests through the writer");
    // Sent again: replayed, nothing moves.
    for (tx, k) in &refunds {
        assert_eq!(app.processor(ADJ_CREDIT, tx, k).await.status, 200);
    }
    for (b, k) in &advices {
        assert_eq!(app.processor(NOTIFY, b, k).await.status, 200);
    }
    assert_eq!(app.available(&user, "ARS").await, "65.00");
}

/// The embedded store's sizing by time (`commit_batch_linger_us`, here far longer than a
/// request takes): a request on an idle service is not held back for it and commits alone;
/// one right after a burst waits at most that long for company, and commits alone too when
/// none comes.
async fn a_lone_request_is_not_held_back(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "100.00").await;
    let purchase = |amount: &str| {
        let tx = Tx::new(&uid("ctx"), "PURCHASE", &user, amount, "ARS");
        (tx.body(), uid("k"))
    };
    let counters = || {
        (
            app.metrics.counter("authorizer_commit_batches_total", &[]),
            app.metrics
                .counter("authorizer_commit_batch_items_total", &[]),
        )
    };
    let (batches, items) = counters();
    let (body, key) = purchase("1.00");
    let started = std::time::Instant::now();
    let r = app.processor(AUTH_DEBIT, &body, &key).await;
    assert_eq!(r.json()["status"], "APPROVED", "{:?}", r.json());
    assert!(
        started.elapsed() < LINGER,
        "an idle service held a lone request back for {:?}",
        started.elapsed()
    );
    assert_eq!(counters(), (batches + 1, items + 1), "a batch of one");
    // A burst, then one more at once: it goes alone once the wait is over.
    let burst: Vec<_> = (0..12).map(|_| purchase("2.00")).collect();
    for r in join_all(burst.iter().map(|(b, k)| app.processor(AUTH_DEBIT, b, k))).await {
        assert_eq!(r.json()["status"], "APPROVED", "{:?}", r.json());
    }
    let (batches, items) = counters();
    let (body, key) = purchase("3.00");
    let r = app.processor(AUTH_DEBIT, &body, &key).await;
    assert_eq!(r.json()["status"], "APPROVED", "{:?}", r.json());
    assert_eq!(counters(), (batches + 1, items + 1), "a batch of one");
    // 100 - 1.00 - 12 x 2.00 - 3.00.
    assert_eq!(app.available(&user, "ARS").await, "72.00");
}

/// A request whose data the database refuses fails alone: its neighbours in the batch
/// commit, each in a transaction of its own, and it can be sent again. (A trigger refuses
/// one reservation's reference here, as a column refuses a value it cannot hold.)
async fn a_request_the_database_refuses_fails_alone(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "10.00").await;
    let mut db = DirectConn::open(&app).await;
    let refuse = match app.backend {
        Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.reference = 'poison' THEN \
                 RAISE EXCEPTION 'poison' USING ERRCODE = 'check_violation'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON holds FOR EACH ROW \
             EXECUTE FUNCTION refuse_poison()"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON holds \
             WHEN NEW.reference = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END"
        }
    };
    db.execute(refuse).await;
    let now = store::now_ms();
    let (tid, reservation) = (uid("t"), uid("r"));
    let keys: Vec<String> = (0..3).map(|_| uid("k")).collect();
    let poisoned = || {
        let Work::Hold(HoldOp::Reserve { call, mut req }) =
            reserve_work(&keys[1], 2, &user, &reservation, "1.00", now, now + 600_000)
        else {
            unreachable!("a reservation")
        };
        req.reference = Some("poison");
        Work::Hold(HoldOp::Reserve { call, req })
    };
    let render: &(dyn Fn(i64, i64) -> StoredResponse + Send + Sync) = &render_funding;
    let work = [
        purchase_work(&user, &tid, &keys[0], 1, "5.00", now),
        poisoned(),
        Work::Funding {
            call: funding(&user, &keys[2], 100, false),
            render,
        },
    ];
    let mut out: Vec<Option<Done>> = (0..work.len()).map(|_| None).collect();
    app.store
        .write_batch_each(&work, &RENDERS, |i, d| out[i] = Some(d), |_, _| {})
        .await;
    let mut out = out.into_iter().map(|d| d.expect("every request answered"));
    let purchase = answer(out.next().expect("the purchase"));
    assert_fresh(&purchase, "", "");
    let refused = out.next().expect("the reservation");
    assert!(
        matches!(&refused, Done::Hold(Err(e)) if e.to_string().contains("poison")),
        "{refused:?}"
    );
    assert_fresh(&answer(out.next().expect("the deposit")), "movement", "");
    // 10.00 - 5.00 + 1.00, nothing held.
    assert_eq!(app.available(&user, "ARS").await, "6.00");
    let account = app.account(&user, "ARS").await;
    assert_eq!(account["held"], "0.00", "{account}");

    // Nothing of it was kept: sent again once the database takes it, it is reserved.
    db.execute(match app.backend {
        Backend::Postgres => "DROP TRIGGER refuse_poison ON holds",
        Backend::Sqlite => "DROP TRIGGER refuse_poison",
    })
    .await;
    let again = batch(&app, &[poisoned()]).await.remove(0);
    assert_fresh(&again, "reserved", "");
    assert_eq!(app.available(&user, "ARS").await, "5.00");
}

const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

fn lingering(s: &mut authorizer::Settings) {
    crowd_settings(s);
    s.processor.commit_batch_linger_us = LINGER.as_micros() as u64;
}

mod linger {
    use super::*;
    both_backends!(settings = lingering; a_lone_request_is_not_held_back);
}

both_backends!(
    a_mixed_batch_is_planned_in_order,
    a_request_the_database_refuses_fails_alone,
    hold_operations_share_the_batch,
    expiries_share_the_batch
);

/// The InStore tenant of the page's section 7 (its callbacks are never sent here).
fn instore_tenant(s: &mut authorizer::Settings) {
    e2e::instore::tenant_settings(s, "https://instore.example/callback");
}

mod instore {
    use super::*;
    both_backends!(settings = instore_tenant; a_redeem_shares_the_batch);
}

mod at_once {
    use super::*;
    // Forty requests on one account at once: with batches of one they queue on its row.
    both_backends!(settings = crowd_settings; every_kind_goes_through_the_writer);
}

/// Per table of the database at `url`: its sequential scans and the index entries read,
/// once every client session but this one has ended (a session's counts reach the
/// statistics when it ends).
async fn table_reads(url: &str) -> std::collections::BTreeMap<String, (i64, i64)> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    for _ in 0..200 {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .expect("pg_stat_activity");
        if others == 0 {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT t.relname::text, t.seq_scan, \
                 COALESCE((SELECT SUM(i.idx_tup_read) FROM pg_stat_user_indexes i \
                           WHERE i.relid = t.relid), 0)::int8 \
                 FROM pg_stat_user_tables t",
            )
            .fetch_all(&mut c)
            .await
            .expect("pg_stat_user_tables");
            return rows.into_iter().map(|(t, s, i)| (t, (s, i))).collect();
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the database's other sessions did not end");
}

/// A new instance's writer (its own pool: no sequential scans, generic plans) finds what its
/// batches need by index probes: deposits, authorizations (the card read in the batch),
/// adjustments, advices, a wallet's reservation, capture and refund, the sweep of expired
/// holds, an InStore Redeem and its duplicate in a later batch, a batch of authorizations
/// alone: no table is scanned, no index read whole. On a ledger of many
/// cardholders, reading every account for the system accounts' ids (once per connection of
/// each new instance) made its first requests miss their deadline; a duplicate's callback
/// looked up by reading the whole outbox.
#[actix_rt::test]
async fn postgres_a_new_writer_scans_no_ledger_table() {
    let url = fresh_pg_database().await;
    let mut settings =
        authorizer::Settings::load_from(&std::path::PathBuf::from("/nonexistent"), &[])
            .expect("default settings");
    settings.database.url = authorizer::config::Secret::new(url.clone());
    let config = settings.store_config();
    let setup = store::Store::connect(&config).await.expect("connect");
    setup.migrate().await.expect("migrate");
    let user = uid("u");
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        for sql in [
            "INSERT INTO accounts (kind, user_id, currency, created_at_ms, updated_at_ms) \
             SELECT 'USER', 'crowd-' || g, 'ARS', 0, 0 FROM generate_series(1, 20000) g",
            "ANALYZE",
        ] {
            sqlx::query(sql).execute(&mut c).await.expect(sql);
        }
    }
    // The user's account, a card, and a stored-value number on it for the InStore tenant.
    let ars = Currency::parse("ARS").expect("ARS");
    let card = format!("crd-{user}");
    setup.open_account(&user, ars, None, 0).await.expect("open");
    setup
        .put_card(
            &card,
            &user,
            ledger::CardStatus::Active,
            &ledger::MccSet::default(),
            0,
        )
        .await
        .expect("card");
    let linked = setup
        .put_stored_value_card(
            &store::SvLink {
                card_id: &card,
                number: SV_NUMBER,
                currency: ars,
                card_type: "GiftCard",
                tenants: &[e2e::instore::TENANT.to_owned()],
                pin_hash: None,
            },
            0,
        )
        .await
        .expect("link");
    assert_eq!(linked, store::SvLinkOutcome::Linked);
    setup.close().await;
    let before = table_reads(&url).await;

    let writer = store::Store::connect(&store::StoreConfig {
        index_probes_only: true,
        ..config
    })
    .await
    .expect("connect the writer");
    let now = store::now_ms();
    let (k4, r4) = (uid("k"), uid("r"));
    let redeem_request = redeem_call(&uid("req"));
    let planner = plan_redeem(100);
    let redeem = Work::Instore(InstoreOp {
        call: &redeem_request,
        planner: &planner,
    });
    let (deposit_key, t1, k1, t2, k2, k3) = (
        uid("dep"),
        uid("t"),
        uid("k"),
        uid("t"),
        uid("k"),
        uid("adv"),
    );
    let render: &(dyn Fn(i64, i64) -> StoredResponse + Send + Sync) = &render_funding;
    let work = [
        Work::Funding {
            call: funding(&user, &deposit_key, 500, false),
            render,
        },
        purchase_work(&user, &t1, &k1, 1, "2.00", now),
        Work::Adjustment {
            call: call(&k2, 2, ADJ_CREDIT, now),
            tx: card_tx(&t2, "REFUND", &user, "1.00"),
            direction: RequestKind::Credit,
        },
        Work::Notification(NotificationCall {
            key: &k3,
            request_hash: [3; 32],
            raw_body: b"{}",
            now_ms: now,
            event_id: "approved-authorization-advice",
            verdict: Some(Verdict::Approved),
            status_detail: Some("APPROVED"),
            transaction: Some(card_tx(&t1, "PURCHASE", &user, "2.00")),
            direction: Some(RequestKind::Debit),
            unparsed: false,
        }),
        // A wallet's reservation, and the sweep of holds past their expiry.
        reserve_work(&k4, 4, &user, &r4, "1.00", now, now + 60_000),
        Work::Expiry(ExpiryCall {
            scope: ExpiryScope::Due { batch_max: 10 },
            now_ms: now,
        }),
        // An InStore Redeem, its callback owed.
        redeem,
    ];
    let out = batch_on(&writer, &work).await;
    assert_fresh(&out[0], "", "available 500");
    assert_fresh(&out[1], "Approved { amount: -200", "");
    assert_eq!(out[4], ("fresh", "reserved 100".to_owned()));
    let redeemed = out[6].clone();
    assert!(
        redeemed.0 == "fresh" && redeemed.1.starts_with("approved"),
        "{redeemed:?}"
    );
    // In a later batch: the Redeem again (its first answer, its callback owed again), the
    // reservation captured in part and refunded in part, and a purchase by a card the
    // instance has not cached (read in the batch).
    let (k5, k6, t7, k7) = (uid("k"), uid("k"), uid("t"), uid("k"));
    let Work::Authorization(mut by_card) = purchase_work(&user, &t7, &k7, 7, "1.00", now) else {
        unreachable!("a purchase is an authorization");
    };
    by_card.tx.card_id = Some(&card);
    by_card.card = CardLookup::InTransaction;
    let later = [
        redeem,
        Work::Hold(HoldOp::Capture {
            call: channel_call(&k5, 5, now),
            reservation_id: &r4,
            amount: Decimal::from_str("0.50").ok(),
        }),
        Work::Hold(HoldOp::Refund {
            call: channel_call(&k6, 6, now),
            reservation_id: &r4,
            refund_id: "rf-1",
            amount: Decimal::from_str("0.20").ok(),
            currency: Some("ARS"),
            window_days: 30,
        }),
        Work::Authorization(by_card),
    ];
    let again = batch_on(&writer, &later).await;
    assert_eq!(again[0], ("replay", redeemed.1));
    assert_eq!(again[1], ("fresh", "captured 50".to_owned()));
    assert_eq!(again[2], ("fresh", "refunded 20".to_owned()));
    assert_fresh(&again[3], "Approved { amount: -100", "");
    // A batch of authorizations alone (read in one statement).
    let (t8, k8, t9, k9) = (uid("t"), uid("t"), uid("k"), uid("k"));
    let alone = [
        purchase_work(&user, &t8, &k8, 8, "0.10", now),
        purchase_work(&user, &t9, &k9, 9, "0.10", now),
    ];
    for answer in batch_on(&writer, &alone).await {
        assert_fresh(&answer, "Approved { amount: -10", "");
    }
    writer.close().await;
    let after = table_reads(&url).await;
    let mut scanned = Vec::new();
    for (table, (scans, entries)) in &after {
        let (scans_before, entries_before) = before.get(table).copied().unwrap_or_default();
        if *scans > scans_before {
            scanned.push(format!("{table}: {} scans", scans - scans_before));
        }
        // A probe per key reads a few entries each; the ledger has 20,001 accounts.
        if *entries - entries_before > 1_000 {
            scanned.push(format!(
                "{table}: {} index entries",
                entries - entries_before
            ));
        }
    }
    assert!(scanned.is_empty(), "the writer scanned {scanned:?}");
}
