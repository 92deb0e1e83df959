//! What committing a batch of authorizations costs the store on Postgres: 32 purchases on
//! 32 different accounts, decided and booked through the store API directly (no HTTP).
//!
//! * `commit/batch_of_32_authorizations`: the 32 as one grouped commit
//!   (`Store::authorize_batch`: one transaction, one WAL flush), what the service's batcher
//!   hands the store when authorizations arrive while commits are in flight.
//! * `commit/32_separate_commits`: the same 32 through `Store::authorize`, all in flight at
//!   once, each in its own transaction: the path with grouped commits off, for comparison.
//! * `commit/batch_of_32_with_card_controls`: a grouped commit of 32 purchases whose cards
//!   carry spending and velocity limits (never reached): the batch is decided under locks
//!   from the start, and each card's row is locked before its counters are read and counted.
//!
//! Setup checks which path ran: the batch's records must share one database transaction,
//! the separate ones must not.

use std::path::Path;
use std::time::{Duration, Instant};

use authorizer::Settings;
use authorizer::config::Secret;
use authorizer::service::render_authorization;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use e2e::{Tx, uid};
use futures_util::future::join_all;
use ledger::controls::LimitUsage;
use ledger::{Currency, Decision, RequestKind};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use store::{
    AuthorizationResult, BatchItem, CardTransaction, FundingCall, FundingOutcome, Outcome,
    ProcessorCall, Store, StoreError,
};

const BATCH: usize = 32;
const CURRENCY: &str = "ARS";
/// Minor units deposited on each account once: 10^9 ARS, spent 0.01 at a time.
const FUNDING_MINOR: i64 = 100_000_000_000;
const AMOUNT: &str = "0.01";
const ENDPOINT: &str = "/transactions/authorizations/debit";
/// Batches committed before measuring: the pool opens its connections and the store caches
/// the clearing account on the first ones.
const WARM_UP_BATCHES: usize = 2;

/// The users of the plain purchases.
const PLAIN: &str = "usr-bench";
/// The users whose cards carry controls.
const CONTROLLED: &str = "usr-bench-ctl";
/// The controls of their cards: limits no bench reaches, so every purchase counts.
const CARD_CONTROLS: &str = r#"{"currency": "ARS",
    "spending_limits": [{"amount": "100000000000.00", "interval": "daily"}],
    "velocity_limits": [{"count": 1000000000, "interval": "daily"}]}"#;

/// [`CARD_CONTROLS`] as stored.
fn card_controls() -> String {
    ledger::controls::Controls::from_json(CARD_CONTROLS, None)
        .expect("card controls")
        .to_canonical_json()
}

fn user(set: &str, i: usize) -> String {
    format!("{set}-{i:02}")
}

/// One purchase of 0.01 on account `i`, with a new transaction id and idempotency key.
/// Body and hash are the processor's and the HTTP layer's work: made before the clock starts.
struct Purchase {
    user: String,
    card: String,
    transaction_id: String,
    idempotency_key: String,
    body: Vec<u8>,
    hash: [u8; 32],
}

impl Purchase {
    fn new(user: String) -> Purchase {
        let transaction_id = uid("ctx-bench");
        let body = Tx::new(&transaction_id, "PURCHASE", &user, AMOUNT, CURRENCY).body();
        Purchase {
            card: format!("crd-{user}"),
            hash: Sha256::digest(&body).into(),
            idempotency_key: uid("key-bench"),
            user,
            transaction_id,
            body,
        }
    }

    fn batch() -> Vec<Purchase> {
        Purchase::batch_of(PLAIN)
    }

    fn batch_of(set: &str) -> Vec<Purchase> {
        (0..BATCH).map(|i| Purchase::new(user(set, i))).collect()
    }

    /// The request as the processor route hands it to the store.
    fn item(&self) -> BatchItem<'_> {
        BatchItem {
            call: ProcessorCall {
                idempotency_key: &self.idempotency_key,
                request_hash: self.hash,
                endpoint: ENDPOINT,
                raw_body: &self.body,
                now_ms: store::now_ms(),
                commit_by: None,
                commit_started: None,
            },
            tx: CardTransaction {
                transaction_id: &self.transaction_id,
                tx_type: "PURCHASE",
                user_id: Some(&self.user),
                card_id: Some(&self.card),
                currency: CURRENCY,
                amount_text: AMOUNT,
                amount: Some(Decimal::new(1, 2)),
                mcc: Some("5045"),
                original_transaction_id: None,
                ..CardTransaction::default()
            },
            kind: Some(RequestKind::Debit),
            card: store::CardLookup::InTransaction,
        }
    }
}

/// Checks every purchase was approved and booked now.
fn check(batch: &[Purchase], outcomes: Vec<Result<Outcome<AuthorizationResult>, StoreError>>) {
    assert_eq!(outcomes.len(), batch.len());
    for (p, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Ok(Outcome::Fresh { result, .. }) => assert!(
                matches!(result.decision, Decision::Approved { .. }),
                "purchase on {} not approved: {:?}",
                p.user,
                result.decision
            ),
            other => panic!("purchase on {} not booked now: {other:?}", p.user),
        }
    }
}

/// The 32 as one grouped commit.
async fn grouped(store: &Store, batch: &[Purchase]) {
    let items: Vec<BatchItem<'_>> = batch.iter().map(Purchase::item).collect();
    check(
        batch,
        store.authorize_batch(&items, render_authorization).await,
    );
}

/// The 32 at once, each in its own transaction.
async fn separate(store: &Store, batch: &[Purchase]) {
    let items: Vec<BatchItem<'_>> = batch.iter().map(Purchase::item).collect();
    let outcomes = join_all(
        items
            .iter()
            .map(|i| store.authorize(&i.call, &i.tx, i.kind, render_authorization)),
    )
    .await;
    check(batch, outcomes);
}

/// How many database transactions wrote the records of `batch`.
async fn transactions_used(url: &str, batch: &[Purchase]) -> i64 {
    let ids: Vec<&str> = batch.iter().map(|p| p.transaction_id.as_str()).collect();
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("bench database");
    let n = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM processor_transactions \
         WHERE transaction_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&mut conn)
    .await
    .expect("records of the batch");
    conn.close().await.expect("close");
    n
}

/// A store on a fresh database with the service's default database settings (its pool of
/// 32 lets every separate commit hold its own connection) planned as the grouped commits'
/// own pool plans (index probes), and two sets of 32 funded accounts, the second with cards
/// under [`CARD_CONTROLS`].
async fn funded_store(url: &str) -> Store {
    let mut settings =
        Settings::load_from(Path::new("/nonexistent"), &[]).expect("default settings");
    settings.database.url = Secret::new(url.to_owned());
    let store = Store::connect(&store::StoreConfig {
        index_probes_only: true,
        statement_ms_max: benches::BENCH_TIMEOUT_MS,
        lock_wait_ms_max: benches::BENCH_TIMEOUT_MS,
        pool_acquire_ms_max: benches::BENCH_TIMEOUT_MS,
        controls_time_zone: ledger::controls::TimeZone::UTC,
        ..settings.store_config()
    })
    .await
    .expect("store connects");
    store.migrate().await.expect("migrations apply");
    let ars = Currency::parse(CURRENCY).expect("ARS is listed");
    let controls = card_controls();
    for user in (0..BATCH).flat_map(|i| [user(PLAIN, i), user(CONTROLLED, i)]) {
        store
            .open_account(&user, ars, None, store::now_ms())
            .await
            .expect("account opens");
        let key = format!("fund-{user}");
        let funding = FundingCall {
            user_id: &user,
            currency: ars,
            amount: FUNDING_MINOR,
            withdrawal: false,
            reference: Some("bench"),
            idempotency_key: &key,
            request_hash: Sha256::digest(key.as_bytes()).into(),
            endpoint: "/v1/accounts/deposits",
            now_ms: store::now_ms(),
        };
        let outcome = store
            .fund(&funding, |_, _| store::StoredResponse {
                status: 201,
                body: Vec::new(),
            })
            .await
            .expect("deposit");
        assert!(
            matches!(outcome, FundingOutcome::Done { .. }),
            "{outcome:?}"
        );
        if user.starts_with(CONTROLLED) {
            let card = format!("crd-{user}");
            let (active, none) = (ledger::CardStatus::Active, ledger::MccSet::default());
            let now = store::now_ms();
            store
                .put_card(&card, &user, active, &none, now)
                .await
                .expect("card registers");
            let set = store.set_card_controls(&card, &controls, now).await;
            assert!(matches!(set, Ok(Some(_))), "{set:?}");
        }
    }
    store
}

fn commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = rt.block_on(benches::fresh_pg_database());
    let store = rt.block_on(async {
        let store = funded_store(&url).await;
        for _ in 0..WARM_UP_BATCHES {
            let batch = Purchase::batch();
            grouped(&store, &batch).await;
            assert_eq!(
                transactions_used(&url, &batch).await,
                1,
                "the batch was not one grouped commit"
            );
            let batch = Purchase::batch();
            separate(&store, &batch).await;
            assert_eq!(transactions_used(&url, &batch).await, BATCH as i64);
            let batch = Purchase::batch_of(CONTROLLED);
            grouped(&store, &batch).await;
            assert_eq!(transactions_used(&url, &batch).await, 1);
        }
        // The controlled purchases counted on their cards.
        let card = format!("crd-{}", user(CONTROLLED, 0));
        let usage = store
            .card_limit_usage(&card, &card_controls(), store::now_ms())
            .await
            .expect("usage");
        let twice = |u: &LimitUsage| matches!(u, LimitUsage::Velocity { counted: 2, .. });
        assert!(usage.iter().any(twice), "{usage:?}");
        store
    });

    let mut group = c.benchmark_group("commit");
    // Milliseconds per iteration: a few flat samples are enough outside quick mode.
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("batch_of_32_authorizations", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch = Purchase::batch();
                    let start = Instant::now();
                    grouped(&store, &batch).await;
                    spent += start.elapsed();
                }
                spent
            })
        })
    });
    group.bench_function("batch_of_32_with_card_controls", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch = Purchase::batch_of(CONTROLLED);
                    let start = Instant::now();
                    grouped(&store, &batch).await;
                    spent += start.elapsed();
                }
                spent
            })
        })
    });
    group.bench_function("32_separate_commits", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch = Purchase::batch();
                    let start = Instant::now();
                    separate(&store, &batch).await;
                    spent += start.elapsed();
                }
                spent
            })
        })
    });
    group.finish();

    rt.block_on(async {
        store.close().await;
        benches::drop_pg_database(&url).await;
    });
}

criterion_group! {
    name = commit_benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = commit
}
criterion_main!(commit_benches);
