//! The CPU-only steps every authorization goes through: checking the request's signature
//! and signing the answer, parsing the body with exact amounts, the pure decision, and a
//! batch's decisions with their signed answers.

use std::hint::black_box;
use std::str::FromStr;

use authorizer::service::render_authorization;
use benches::{API_SECRET, VECTOR_BODY, VECTOR_ENDPOINT, VECTOR_TIMESTAMP, body_of_len};
use criterion::{Criterion, criterion_group, criterion_main};
use ledger::{AccountState, AuthorizationInput, Currency, Decision, Decline, MccSet, RequestKind};
use protocol::signature::{self, ApiSecret};
use protocol::wire::TransactionRequest;
use rust_decimal::Decimal;

fn signature(c: &mut Criterion) {
    let secret = ApiSecret::from_base64(API_SECRET).expect("demo secret");
    let big = body_of_len(4096);
    assert_eq!(big.len(), 4096);
    TransactionRequest::from_slice(&big).expect("the 4 KiB body is still a request");
    let mut group = c.benchmark_group("signature");
    for (size, body) in [("small", VECTOR_BODY), ("4k", &big[..])] {
        let sig = signature::sign(&secret, VECTOR_TIMESTAMP, VECTOR_ENDPOINT, body);
        signature::verify(&secret, VECTOR_TIMESTAMP, VECTOR_ENDPOINT, body, &sig)
            .expect("own signature verifies");
        group.bench_function(format!("verify_{size}"), |b| {
            b.iter(|| {
                signature::verify(
                    black_box(&secret),
                    black_box(VECTOR_TIMESTAMP),
                    black_box(VECTOR_ENDPOINT),
                    black_box(body),
                    black_box(&sig),
                )
            })
        });
        group.bench_function(format!("sign_{size}"), |b| {
            b.iter(|| {
                signature::sign(
                    black_box(&secret),
                    black_box(VECTOR_TIMESTAMP),
                    black_box(VECTOR_ENDPOINT),
                    black_box(body),
                )
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let parsed = TransactionRequest::from_slice(VECTOR_BODY).expect("vector body parses");
    assert_eq!(
        parsed.amount.local.total.value(),
        Some(Decimal::from_str("990.0").expect("decimal"))
    );
    let mut group = c.benchmark_group("parse");
    group.bench_function("authorization_request", |b| {
        b.iter(|| {
            let req = TransactionRequest::from_slice(black_box(VECTOR_BODY)).expect("parses");
            req.amount.local.total.value()
        })
    });
    group.finish();
}

fn ars() -> Currency {
    Currency::parse("ARS").expect("ARS is listed")
}

fn account(balance: i64) -> AccountState {
    AccountState {
        currency: ars(),
        balance,
        held: 0,
        overdraft_limit: 0,
        per_transaction_limit: None,
        daily_limit: None,
        daily_spent: 0,
        blocked_mccs: MccSet::default(),
    }
}

/// The vector's purchase: 990.0 ARS at MCC 5045.
fn vector_purchase() -> AuthorizationInput<'static> {
    AuthorizationInput {
        kind: Some(RequestKind::Debit),
        currency: Some(ars()),
        amount: Some(Decimal::from_str("990.0").expect("decimal")),
        mcc: Some("5045"),
    }
}

fn decide(c: &mut Criterion) {
    let input = vector_purchase();
    let funded = account(100_000);
    let short = account(1_000);
    assert!(matches!(
        ledger::decide(&input, Some(&funded), None),
        Decision::Approved { .. }
    ));
    assert_eq!(
        ledger::decide(&input, Some(&short), None),
        Decision::Declined(Decline::InsufficientFunds)
    );
    let mut group = c.benchmark_group("decide");
    group.bench_function("approve", |b| {
        b.iter(|| ledger::decide(black_box(&input), black_box(Some(&funded)), None))
    });
    group.bench_function("insufficient_funds", |b| {
        b.iter(|| ledger::decide(black_box(&input), black_box(Some(&short)), None))
    });
    group.finish();
}

/// Authorizations in the batch bench: about what one batch holds at 32 connections.
const BATCH: usize = 32;

/// One batch's CPU work past the database: each purchase decided against the account state
/// the ones before it left (the batch books them in order), and each answer rendered and
/// signed. `scripts/bench-check` budgets it relative to `parse/authorization_request`, so a
/// doubled cost per authorization fails however busy the machine is.
fn decide_and_sign(
    secret: &ApiSecret,
    inputs: &[AuthorizationInput<'_>],
    start: &AccountState,
) -> Vec<String> {
    let mut state = start.clone();
    inputs
        .iter()
        .map(|input| {
            let decision = ledger::decide(input, Some(&state), None);
            if let Decision::Approved {
                balance_after,
                daily_spent_after,
                ..
            } = decision
            {
                state.balance = balance_after;
                state.daily_spent = daily_spent_after;
            }
            let result = store::AuthorizationResult {
                decision,
                currency: Some(ars()),
                movement_id: None,
                control: None,
            };
            let body = render_authorization(&result);
            signature::sign(secret, VECTOR_TIMESTAMP, VECTOR_ENDPOINT, &body)
        })
        .collect()
}

fn batch(c: &mut Criterion) {
    let secret = ApiSecret::from_base64(API_SECRET).expect("demo secret");
    let inputs: Vec<_> = (0..BATCH).map(|_| vector_purchase()).collect();
    // Funded for all but the last two, so the batch approves and declines as it goes.
    let start = account(99_000 * (BATCH as i64 - 2));
    let answers = decide_and_sign(&secret, &inputs, &start);
    // Every approval renders the same body, whatever it moved.
    let approved = decide_and_sign(&secret, &inputs[..1], &start).remove(0);
    assert_eq!(answers.len(), BATCH);
    assert_eq!(
        answers.iter().filter(|a| **a == approved).count(),
        BATCH - 2
    );
    let mut group = c.benchmark_group("batch");
    group.bench_function("decide_and_sign_32", |b| {
        b.iter(|| decide_and_sign(black_box(&secret), black_box(&inputs), black_box(&start)))
    });
    group.finish();
}

criterion_group!(hot_path, signature, parse, decide, batch);
criterion_main!(hot_path);
