//! One authorization through the whole service: a signed purchase sent over HTTP to a
//! running authorizer, verified, parsed, decided and booked in a real database, and the
//! signed answer read back. The authorizer is started in-process exactly as the end-to-end
//! tests start it (`e2e::TestApp`), once on an embedded SQLite file and once on a fresh
//! Postgres database.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use e2e::{AUTH_DEBIT, Backend, TestApp, Tx, uid};

const USER: &str = "usr-bench";
const CURRENCY: &str = "ARS";
/// Funded once, generously: every iteration spends 0.01 of it.
const FUNDING: &str = "1000000000.00";
const AMOUNT: &str = "0.01";
/// Purchases sent before measuring, so that connections and statement caches are warm
/// (quick mode measures from the first iteration on).
const WARM_UP_PURCHASES: usize = 20;

/// A purchase never sent before: new transaction id, new idempotency key.
struct Purchase {
    body: Vec<u8>,
    idempotency_key: String,
}

impl Purchase {
    fn new() -> Purchase {
        Purchase {
            body: Tx::new(&uid("ctx-bench"), "PURCHASE", USER, AMOUNT, CURRENCY).body(),
            idempotency_key: uid("key-bench"),
        }
    }

    async fn send(&self, app: &TestApp) {
        let r = app
            .processor(AUTH_DEBIT, &self.body, &self.idempotency_key)
            .await;
        assert!(
            r.status == 200 && r.json()["status"] == "APPROVED",
            "purchase not approved: HTTP {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
}

fn authorization(c: &mut Criterion) {
    let mut group = c.benchmark_group("http");
    // Milliseconds per iteration: a few flat samples are enough outside quick mode.
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    for (backend, name) in [
        (Backend::Sqlite, "authorization_sqlite"),
        (Backend::Postgres, "authorization_postgres"),
    ] {
        // awc and the server need an actix System; its runtime only runs inside
        // `block_on`, so every request is sent from inside one.
        let sys = actix_rt::System::new();
        let app = sys.block_on(async {
            let app = TestApp::spawn_with(backend, |s| {
                s.database.statement_ms_max = benches::BENCH_TIMEOUT_MS;
                s.database.lock_wait_ms_max = benches::BENCH_TIMEOUT_MS;
                s.database.pool_acquire_ms_max = benches::BENCH_TIMEOUT_MS;
            })
            .await;
            app.funded(USER, CURRENCY, FUNDING).await;
            for _ in 0..WARM_UP_PURCHASES {
                Purchase::new().send(&app).await;
            }
            app
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let purchases: Vec<Purchase> = (0..iters).map(|_| Purchase::new()).collect();
                sys.block_on(async {
                    let start = Instant::now();
                    for p in &purchases {
                        p.send(&app).await;
                    }
                    start.elapsed()
                })
            })
        });
        sys.block_on(async {
            app.stop().await;
            app.store.close().await;
            if let Some(url) = &app.database_url {
                benches::drop_pg_database(url).await;
            }
        });
    }
    group.finish();
}

criterion_group! {
    name = http;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = authorization
}
criterion_main!(http);
