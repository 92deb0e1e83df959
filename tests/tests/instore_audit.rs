//! The InStore invariants of `authorizer audit` (instore-extensions.md section 6.4), each
//! broken behind the server's back on both stores and seen reported, by name, without a
//! card number in the report.

use e2e::instore::{KEY, TENANT, tenant_settings};
use e2e::*;
use instore_sim::{Money, NewCard, Sim, Target, story};
use std::time::Duration;

const BOOKED_ONCE: &str = "each InStore request is booked at most once";
const HAS_REQUEST: &str = "each InStore leg belongs to a processed request";
const IS_MOVEMENT: &str = "each InStore leg is its ledger movement";
const REVERSED_ONCE: &str = "each InStore operation is reversed at most once";
const SAME_AMOUNT: &str = "an InStore reversal's amount equals the original's, leg by leg";
const ONE_CALLBACK: &str = "each processed InStore request has exactly one callback row";

fn usd(amount: &str) -> Money {
    Money::parse(amount, "USD").expect("amount")
}

/// The columns of `instore_movements` with the leg's own id, operation id, request id and
/// number replaced by the given SQL expressions.
fn copy_leg(tx: &str, payment: &str, request: &str, number: &str, of_tx: &str) -> String {
    format!(
        "INSERT INTO instore_movements (external_transaction_id, external_payment_id, kind, \
         reverses_payment_id, tenant_id, request_id, number, movement_id, currency, amount_minor, \
         balance_after_minor, location_id, workstation_id, session_id, reference, correlation_id, \
         flags, created_at_ms) \
         SELECT '{tx}', {payment}, kind, reverses_payment_id, tenant_id, {request}, {number}, \
         movement_id, currency, amount_minor, balance_after_minor, location_id, workstation_id, \
         session_id, reference, correlation_id, flags, created_at_ms \
         FROM instore_movements WHERE external_transaction_id = '{of_tx}'"
    )
}

/// The audit's findings of `invariant`, asserting no finding shows the card number.
async fn findings(app: &TestApp, invariant: &str, number: &str) -> Vec<String> {
    let report = app.store.audit().await.expect("audit runs");
    for v in &report.violations {
        assert!(!v.detail.contains(number), "{v:?}");
    }
    report
        .violations
        .iter()
        .filter(|v| v.invariant == invariant)
        .map(|v| v.detail.clone())
        .collect()
}

async fn broken_and_reported(backend: Backend) {
    let mut sim = Sim::start(
        Target {
            url: String::new(),
            tenant_id: TENANT.into(),
            key: KEY.as_bytes().to_vec(),
            api_key: None,
            callback_prefix: "http://127.0.0.1:0/audit/".into(),
            location_id: "AuditStore".into(),
            workstation_id: "POS-09".into(),
        },
        Duration::from_secs(15),
    )
    .expect("simulator");
    let prefix = sim.target.callback_prefix.trim_end_matches('/').to_owned();
    let app = TestApp::spawn_with(backend, |s| tenant_settings(s, &prefix)).await;
    sim.target.url = format!("{}/instore", app.base);

    let created = sim
        .create(&NewCard {
            card_type: "GiftCard".into(),
            active: true,
            balance: usd("20.00"),
            cvc: None,
        })
        .await
        .expect("create");
    let number = created.result()["data"]["number"]
        .as_str()
        .expect("number")
        .to_owned();
    let (opening_tx, _) = story::ids(&created).expect("opening load");
    let r1 = sim
        .process("Redeem", &number, usd("5.00"), None)
        .await
        .expect("redeem");
    let (r1_tx, r1_payment) = story::ids(&r1).expect("ids");
    let c1 = sim
        .cancel(&number, &r1_tx, &r1_payment)
        .await
        .expect("cancel");
    assert!(c1.approved(), "{}", story::outcome(&c1));
    let r2 = sim
        .process("Redeem", &number, usd("2.00"), None)
        .await
        .expect("redeem");
    let (r2_tx, _) = story::ids(&r2).expect("ids");
    let lookup = sim.lookup(&number, None).await.expect("lookup");
    assert!(lookup.approved());
    sim.stop().await;
    assert_clean(&app.store).await;

    let mut db = DirectConn::open(&app).await;
    db.execute(match backend {
        Backend::Postgres => {
            "ALTER TABLE instore_movements DISABLE TRIGGER instore_movements_immutable"
        }
        Backend::Sqlite => "DROP TRIGGER instore_movements_no_update",
    })
    .await;

    // Each step breaks one invariant, not reported before it.
    let mut step = async |invariant: &str, sql: String, names: &str| {
        assert_eq!(
            findings(&app, invariant, &number).await,
            Vec::<String>::new()
        );
        db.execute(&sql).await;
        let found = findings(&app, invariant, &number).await;
        assert_eq!(found.len(), 1, "{invariant}: {found:#?}");
        assert!(found[0].contains(names), "{invariant}: {found:#?}");
    };
    // The second Redeem booked again under its requestId, as another operation.
    step(
        BOOKED_ONCE,
        copy_leg(
            "svt-forged-a",
            "'svp-forged-a'",
            "request_id",
            "number",
            &r2_tx,
        ),
        &format!("{TENANT}/{}", r2.request_id),
    )
    .await;
    // A leg under a requestId nobody sent.
    step(
        HAS_REQUEST,
        copy_leg(
            "svt-forged-b",
            "external_payment_id",
            "'never-sent'",
            "number",
            &r2_tx,
        ),
        "svt-forged-b",
    )
    .await;
    // The cancelled Redeem gains a leg on another card that the Cancel did not reverse.
    step(
        SAME_AMOUNT,
        copy_leg(
            "svt-forged-c",
            "external_payment_id",
            "request_id",
            "'forged-card'",
            &r1_tx,
        ),
        "svt-forged-c",
    )
    .await;
    // ...then a second request reverses that leg: the operation is reversed twice.
    let c1_tx = c1.result()["data"]["external_transaction_id"]
        .as_str()
        .expect("cancel id")
        .to_owned();
    step(
        REVERSED_ONCE,
        copy_leg(
            "svt-forged-d",
            "external_payment_id",
            &format!("'{}'", lookup.request_id),
            "'forged-card'",
            &c1_tx,
        ),
        &r1_payment,
    )
    .await;
    // The opening Load's leg says one cent more than its posting.
    step(
        IS_MOVEMENT,
        format!(
            "UPDATE instore_movements SET amount_minor = amount_minor + 1 \
             WHERE external_transaction_id = '{opening_tx}'"
        ),
        &opening_tx,
    )
    .await;
    // The lookup's callback row is gone.
    step(
        ONE_CALLBACK,
        format!(
            "DELETE FROM outbox WHERE event_id = (SELECT callback_event_id FROM instore_requests \
             WHERE tenant_id = '{TENANT}' AND request_id = '{}')",
            lookup.request_id
        ),
        &format!("{} has 0 callback rows", lookup.request_id),
    )
    .await;
    app.stop().await;
}

mod postgres {
    #[actix_rt::test]
    async fn broken_and_reported() {
        super::broken_and_reported(e2e::Backend::Postgres).await;
    }
}

mod sqlite {
    #[actix_rt::test]
    async fn broken_and_reported() {
        super::broken_and_reported(e2e::Backend::Sqlite).await;
    }
}
