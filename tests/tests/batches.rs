//! One batch of authorizations through the store's batch API, on every store: each request
//! is applied against what the earlier ones of its batch left, duplicates inside the batch
//! replay the first answer, and a verdict that came first is the answer.

use e2e::*;
use ledger::{Decision, Decline};
use rust_decimal::Decimal;
use std::str::FromStr;
use store::{
    AuthorizationResult, BatchItem, CardLookup, CardTransaction, Outcome, ProcessorCall,
    StoredResponse,
};

fn render(r: &AuthorizationResult) -> Vec<u8> {
    format!("{:?}", r.decision).into_bytes()
}

struct Asked {
    key: String,
    hash: u8,
    tid: String,
    amount: &'static str,
}

fn items<'a>(user: &'a str, asked: &'a [Asked], now_ms: i64) -> Vec<BatchItem<'a>> {
    asked
        .iter()
        .map(|a| BatchItem {
            call: ProcessorCall {
                idempotency_key: &a.key,
                request_hash: [a.hash; 32],
                endpoint: AUTH_DEBIT,
                raw_body: b"{}",
                now_ms,
                commit_by: None,
                commit_started: None,
            },
            tx: CardTransaction {
                transaction_id: &a.tid,
                tx_type: "PURCHASE",
                user_id: Some(user),
                card_id: None,
                currency: "ARS",
                amount_text: a.amount,
                amount: Decimal::from_str(a.amount).ok(),
                mcc: Some("5045"),
                original_transaction_id: None,
                ..CardTransaction::default()
            },
            kind: Some(ledger::RequestKind::Debit),
            card: CardLookup::Absent,
        })
        .collect()
}

fn answer(o: &Outcome<AuthorizationResult>) -> (&'static str, Vec<u8>) {
    match o {
        Outcome::Fresh { response, .. } => ("fresh", response.body.clone()),
        Outcome::Replay(StoredResponse { body, .. }) => ("replay", body.clone()),
        Outcome::KeyConflict => ("key conflict", Vec::new()),
        Outcome::TransactionConflict => ("transaction conflict", Vec::new()),
    }
}

async fn a_batch_sees_what_its_earlier_requests_left(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "10.00").await;
    // The processor's verdict on a purchase we never saw: booked on its word (7.00 left).
    let early = Tx::new(&uid("early"), "PURCHASE", &user, "3.00", "ARS");
    let nk = uid("adv");
    let r = app
        .processor(NOTIFY, &early.approved_advice(&nk), &nk)
        .await;
    assert_eq!(r.status, 200, "advice stored: {:?}", r.json());
    assert_eq!(app.available(&user, "ARS").await, "7.00");

    let (t1, t2) = (uid("t"), uid("t"));
    let asked = [
        Asked {
            key: uid("k"),
            hash: 1,
            tid: t1.clone(),
            amount: "6.00",
        },
        // The same transaction under another key, the same money written otherwise.
        Asked {
            key: uid("k"),
            hash: 2,
            tid: t1.clone(),
            amount: "6.0",
        },
        // The same transaction asking for other money.
        Asked {
            key: uid("k"),
            hash: 3,
            tid: t1.clone(),
            amount: "6.01",
        },
        // Only 1.00 is left after the first.
        Asked {
            key: uid("k"),
            hash: 4,
            tid: t2.clone(),
            amount: "6.00",
        },
        Asked {
            key: uid("k"),
            hash: 5,
            tid: early.id.clone(),
            amount: "3.00",
        },
    ];
    let mut asked = asked.into_iter().collect::<Vec<_>>();
    // The first key again with another body.
    asked.push(Asked {
        key: asked[0].key.clone(),
        hash: 9,
        tid: t1.clone(),
        amount: "6.00",
    });
    let batch = items(&user, &asked, store::now_ms());
    let out = app.store.authorize_batch(&batch, render).await;
    let out: Vec<_> = out
        .iter()
        .map(|o| answer(o.as_ref().expect("batch answers")))
        .collect();
    // The day's spending holds the 3.00 the processor booked on its word, and the 6.00.
    let approved = format!(
        "{:?}",
        Decision::Approved {
            amount: -600,
            balance_after: 100,
            daily_spent_after: 900
        }
    )
    .into_bytes();
    assert_eq!(out[0], ("fresh", approved.clone()));
    assert_eq!(out[1], ("replay", approved.clone()));
    assert_eq!(out[2].0, "transaction conflict");
    assert_eq!(
        out[3],
        (
            "fresh",
            format!("{:?}", Decision::Declined(Decline::InsufficientFunds)).into_bytes()
        )
    );
    // The verdict stands: approved for what it booked, nothing booked again.
    assert_eq!(out[4].0, "fresh");
    assert!(
        out[4].1.starts_with(b"Approved { amount: -300"),
        "{:?}",
        out[4]
    );
    assert_eq!(out[5].0, "key conflict");
    assert_eq!(
        app.available(&user, "ARS").await,
        "1.00",
        "6.00 booked once"
    );

    // The same batch again: every answer replayed byte for byte, nothing moves.
    let again = app.store.authorize_batch(&batch, render).await;
    let again: Vec<_> = again
        .iter()
        .map(|o| answer(o.as_ref().expect("batch answers")))
        .collect();
    for (i, (first, second)) in out.iter().zip(&again).enumerate() {
        match first.0 {
            "fresh" | "replay" => assert_eq!(second, &("replay", first.1.clone()), "item {i}"),
            conflict => assert_eq!(second.0, conflict, "item {i}"),
        }
    }
    assert_eq!(app.available(&user, "ARS").await, "1.00");
}

/// `n` purchases of `amount`, each its own transaction under its own key.
fn purchases(n: u8, amount: &'static str) -> Vec<Asked> {
    (0..n)
        .map(|i| Asked {
            key: uid("k"),
            hash: i,
            tid: uid("t"),
            amount,
        })
        .collect()
}

async fn two_accounts_in_one_batch_move_independently(app: TestApp) {
    let (a, b) = (uid("u"), uid("u"));
    app.funded(&a, "ARS", "5.00").await;
    app.funded(&b, "ARS", "5.00").await;
    let asked_a = purchases(3, "2.00");
    let asked_b = purchases(2, "2.50");
    let now = store::now_ms();
    let mut batch = items(&a, &asked_a, now);
    // Interleaved: a, b, a, b, a.
    for (i, item) in items(&b, &asked_b, now).into_iter().enumerate() {
        batch.insert(2 * i + 1, item);
    }
    let out = app.store.authorize_batch(&batch, render).await;
    let approved: Vec<bool> = out
        .iter()
        .map(|o| match o.as_ref().expect("batch answers") {
            Outcome::Fresh { result, .. } => result.decision.is_approved(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(approved, vec![true, true, true, true, false]);
    assert_eq!(app.available(&a, "ARS").await, "1.00");
    assert_eq!(app.available(&b, "ARS").await, "0.00");
}

/// A request alone (what the items of a batch that lost a race on a unique key do): the
/// transactional path with its reads locked.
async fn a_request_alone_books_once_and_replays(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "5.00").await;
    let tid = uid("t");
    let asked = [
        Asked {
            key: uid("k"),
            hash: 1,
            tid: tid.clone(),
            amount: "4.00",
        },
        Asked {
            key: uid("k"),
            hash: 2,
            tid: tid.clone(),
            amount: "4",
        },
        Asked {
            key: uid("k"),
            hash: 3,
            tid: uid("t"),
            amount: "4.00",
        },
    ];
    let batch = items(&user, &asked, store::now_ms());
    let mut out = Vec::new();
    for item in batch.iter().chain(&batch[..1]) {
        let o = app
            .store
            .authorize(&item.call, &item.tx, item.kind, render)
            .await
            .expect("answered");
        out.push(answer(&o));
    }
    assert_eq!(out[0].0, "fresh");
    assert!(
        out[0].1.starts_with(b"Approved { amount: -400"),
        "{:?}",
        out[0]
    );
    assert_eq!(
        out[1],
        ("replay", out[0].1.clone()),
        "same transaction, new key"
    );
    assert_eq!(
        out[2],
        (
            "fresh",
            format!("{:?}", Decision::Declined(Decline::InsufficientFunds)).into_bytes()
        )
    );
    assert_eq!(out[3], ("replay", out[0].1.clone()), "same key");
    assert_eq!(app.available(&user, "ARS").await, "1.00");
}

/// One item past its deadline cannot commit, and the batch rolls back: that item is
/// answered "nothing booked" and the others go again as one, booked. (They all failed with
/// it before.)
async fn a_late_item_fails_alone(app: TestApp) {
    let user = uid("u");
    app.funded(&user, "ARS", "10.00").await;
    let asked: Vec<Asked> = (1..=3)
        .map(|h| Asked {
            key: uid("k"),
            hash: h,
            tid: uid("t"),
            amount: "1.00",
        })
        .collect();
    let mut batch = items(&user, &asked, store::now_ms());
    let past = std::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs(1))
        .expect("a second ago");
    batch[1].call.commit_by = Some(past);
    let out = app.store.authorize_batch(&batch, render).await;
    assert!(
        matches!(&out[1], Err(store::StoreError::Timeout(m)) if m.contains("deadline")),
        "{:?}",
        out[1]
    );
    for i in [0, 2] {
        let (kind, body) = answer(out[i].as_ref().expect("booked"));
        assert_eq!(kind, "fresh");
        assert!(String::from_utf8_lossy(&body).starts_with("Approved"));
    }
    assert_eq!(app.available(&user, "ARS").await, "8.00");
}

both_backends!(
    a_late_item_fails_alone,
    a_batch_sees_what_its_earlier_requests_left,
    two_accounts_in_one_batch_move_independently,
    a_request_alone_books_once_and_replays
);
