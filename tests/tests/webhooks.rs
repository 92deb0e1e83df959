//! Our own event webhooks (point-integration §3): a subscription receives nothing until its
//! URL answers the challenge; hold, account and reconciliation events come from the outbox
//! written in the commit they report, signed, retried with the identical bytes, given up
//! (DEAD) after the configured age and sent again on request; a `kill -9` loses none.
//! Real receivers on loopback, both stores.

use crate::holds::common::*;
use authorizer::Settings;
use e2e::receiver::{Challenge, Receiver, TestCert};
use e2e::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn quick(s: &mut Settings) {
    s.webhooks.poll_interval_ms = 20;
    s.webhooks.challenge_timeout_ms = 300;
    s.holds.sweep_interval_ms = 100;
}

fn quick_give_up(s: &mut Settings) {
    quick(s);
    s.webhooks.give_up_secs = 1;
}

both_backends!(
    settings = quick;
    challenge_guards_the_url,
    hold_events_reach_the_subscriber,
    a_row_goes_to_the_url_of_now,
    a_row_of_a_deleted_subscription_dies,
    an_outcome_counts_only_under_its_lease
);

/// An attempt's outcome is recorded only while its row is still under the claim's lease: a
/// holder whose lease ran out (another instance took the row over) neither clears the new
/// holder's lease with its failure (a third would send it too) nor settles the row with its
/// acknowledgement. The row is due ten days ahead, so the app's own dispatcher never takes
/// it.
async fn an_outcome_counts_only_under_its_lease(app: TestApp) {
    let at = store::now_ms() + 10 * 86_400_000;
    let delivery = store::outbox::Delivery {
        event_id: "evt-lease-1",
        event_type: "test.lease",
        url: "http://127.0.0.1:9/hook",
        body: b"{}",
        headers: &[],
    };
    let store = &app.store;
    store
        .enqueue_delivery(&delivery, at)
        .await
        .expect("enqueue");
    let claim = |now: i64| async move {
        let rows = store.claim_deliveries(now, 1_000, 10).await.expect("claim");
        rows.iter()
            .filter(|c| c.event_id == "evt-lease-1")
            .map(|c| (c.id, c.leased_until_ms))
            .collect::<Vec<_>>()
    };
    let first = claim(at).await;
    assert_eq!(first.len(), 1, "claimed");
    assert!(claim(at + 500).await.is_empty(), "leased");
    // The first holder's lease runs out: another takes the row.
    let second = claim(at + 2_000).await;
    assert_eq!(second.len(), 1, "taken over");
    let state = || async {
        let d = store
            .delivery(first[0].0)
            .await
            .expect("read")
            .expect("row");
        (d.state, d.attempts)
    };
    store
        .mark_failed(first[0], "late", at + 2_100, at + 2_100)
        .await
        .expect("mark");
    assert!(claim(at + 2_500).await.is_empty(), "the new lease stands");
    store
        .mark_delivered(&first, at + 2_600)
        .await
        .expect("mark");
    assert_eq!(
        state().await,
        ("PENDING".to_owned(), 0),
        "the late ack settles nothing"
    );
    store
        .mark_delivered(&second, at + 2_700)
        .await
        .expect("mark");
    assert_eq!(state().await, ("DELIVERED".to_owned(), 1));
    // The row reports no ledger row (the audit of the scenario's end would flag it).
    let mut c = DirectConn::open(&app).await;
    c.execute("DELETE FROM outbox WHERE event_id = 'evt-lease-1'")
        .await;
}

mod https {
    use super::*;

    /// [`quick`], trusting the test process's certificate for https receivers.
    fn quick_trusting(s: &mut Settings) {
        quick(s);
        s.webhooks.ca_file = TestCert::shared().pem_path.clone();
    }

    both_backends!(
        settings = quick_trusting;
        an_https_receiver_is_challenged_and_delivered_to
    );

    /// An https subscriber whose certificate `webhooks.ca_file` trusts passes the challenge and
    /// gets its events over TLS; one whose certificate nothing trusts fails the challenge, and
    /// stays PENDING_VALIDATION with nothing sent to it.
    async fn an_https_receiver_is_challenged_and_delivered_to(app: TestApp) {
        let rx = Receiver::start_tls(TestCert::shared());
        assert!(rx.base.starts_with("https://"), "{}", rx.base);
        active(&app, &rx, "/hook", json!(["account.funded"])).await;
        let stranger = Receiver::start_tls(&TestCert::new());
        let id = subscribe(&app, &stranger, "/hook", json!(["account.funded"])).await;
        let r = check(&app, id).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(
            r.json()["error"]["code"],
            "webhook_validation_failed",
            "{}",
            r.text()
        );
        app.funded("u1", "DKK", "10.00").await;
        let rows = outbox(&app, None).await;
        assert_eq!(
            rows.len(),
            1,
            "only the active subscription is owed: {rows:?}"
        );
        rx.wait_for(&ids(&rows), Duration::from_secs(10)).await;
        assert_identical_and_signed(&rx);
        assert!(stranger.posts().is_empty());
        rx.stop().await;
        stranger.stop().await;
    }
}

/// A row naming a subscription that no longer exists (on Postgres, an event written while
/// its subscription was being deleted) is not left PENDING for the give-up age: the sender's
/// pass, once a second, makes it DEAD, "subscription deleted".
async fn a_row_of_a_deleted_subscription_dies(app: TestApp) {
    let rx = Receiver::start();
    let id = active(&app, &rx, "/a", json!(["account.funded"])).await;
    rx.fail_first(1000);
    app.funded("u1", "DKK", "10.00").await;
    // The subscription goes as the race leaves it: its row still PENDING.
    let gone = format!("DELETE FROM webhook_subscriptions WHERE id = {id}");
    DirectConn::open(&app).await.execute(&gone).await;
    wait_until("DEAD", Duration::from_secs(5), || async {
        let dead = outbox(&app, Some("DEAD")).await;
        dead.len() == 1 && dead[0]["last_error"] == "subscription deleted"
    })
    .await;
    rx.stop().await;
}

/// Creates a subscription of `rx` at `path` for `types` and tells `rx` its secret.
pub(crate) async fn subscribe(app: &TestApp, rx: &Receiver, path: &str, types: Value) -> i64 {
    let r = app
        .admin(
            "POST",
            "/v1/webhooks/subscriptions",
            Some(json!({"url": rx.url(path), "event_types": types})),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["state"], "PENDING_VALIDATION");
    let secret = v["secret"].as_str().expect("secret shown at creation");
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 64,
        "{secret}"
    );
    rx.set_secret(secret);
    v["id"].as_i64().expect("id")
}

/// Changes subscription `id`'s URL to `url` (validation starts over).
async fn move_to(app: &TestApp, id: i64, url: &str) -> Resp {
    app.admin(
        "PATCH",
        &format!("/v1/webhooks/subscriptions/{id}"),
        Some(json!({"url": url})),
        None,
    )
    .await
}

async fn subscription(app: &TestApp, id: i64) -> Resp {
    app.admin(
        "GET",
        &format!("/v1/webhooks/subscriptions/{id}"),
        None,
        None,
    )
    .await
}

pub(crate) async fn check(app: &TestApp, id: i64) -> Resp {
    app.admin_post(&format!("/v1/webhooks/subscriptions/{id}/check"))
        .await
}

pub(crate) async fn active(app: &TestApp, rx: &Receiver, path: &str, types: Value) -> i64 {
    let id = subscribe(app, rx, path, types).await;
    let r = check(app, id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "ACTIVE");
    id
}

pub(crate) async fn outbox(app: &TestApp, state: Option<&str>) -> Vec<Value> {
    let q = state.map(|s| format!("&state={s}")).unwrap_or_default();
    let r = app
        .admin("GET", &format!("/v1/outbox?limit=1000{q}"), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn ids(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .map(|d| d["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < until, "{what} not within {within:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every post of each event carried the same bytes, a valid signature, and the event's id.
pub(crate) fn assert_identical_and_signed(
    rx: &Receiver,
) -> BTreeMap<String, Vec<e2e::receiver::Post>> {
    let mut by_event: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for p in rx.posts() {
        by_event.entry(p.event_id.clone()).or_default().push(p);
    }
    for (id, posts) in &by_event {
        assert!(posts.iter().all(|p| p.signature_ok), "{id}: bad signature");
        assert!(
            posts.iter().all(|p| p.body == posts[0].body),
            "{id}: bytes changed"
        );
        let v: Value = serde_json::from_slice(&posts[0].body).expect("JSON body");
        assert_eq!(v["id"], id.as_str());
    }
    by_event
}

async fn challenge_guards_the_url(app: TestApp) {
    let rx = Receiver::start();
    let id = subscribe(&app, &rx, "/hook", json!([])).await;
    // The secret is never shown again.
    let got = subscription(&app, id).await.json();
    assert!(got.get("secret").is_none(), "{got}");
    let list = app
        .admin("GET", "/v1/webhooks/subscriptions", None, None)
        .await;
    assert!(!String::from_utf8_lossy(&list.body).contains("whsec_"));
    for failing in [
        Challenge::WrongHmac,
        Challenge::Status(500),
        Challenge::Status(404),
        Challenge::Redirect,
        Challenge::Late(Duration::from_millis(1500)),
    ] {
        rx.set_challenge(failing);
        let r = check(&app, id).await;
        assert_eq!(r.status, 400, "{failing:?}");
        assert_eq!(r.json()["error"]["code"], "webhook_validation_failed");
        let s = subscription(&app, id).await.json();
        assert_eq!(s["state"], "PENDING_VALIDATION", "{failing:?}");
    }
    // Not validated: an event is not even queued for it.
    app.funded("u1", "DKK", "100.00").await;
    assert!(outbox(&app, None).await.is_empty());

    rx.set_challenge(Challenge::Right);
    let r = check(&app, id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "ACTIVE");
    assert!(r.json()["active_since_ms"].is_i64());
    app.funded("u1", "DKK", "1.00").await;
    let first = ids(&outbox(&app, None).await);
    assert_eq!(first.len(), 1);
    rx.wait_for(&first, Duration::from_secs(10)).await;

    // A failing event, then a new URL: validation starts over, and the event waits for it.
    rx.fail_first(1000);
    app.funded("u1", "DKK", "2.00").await;
    wait_until("a failed attempt", Duration::from_secs(10), || async {
        rx.posts().iter().any(|p| p.status == 500)
    })
    .await;
    let r = move_to(&app, id, &rx.url("/moved")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "PENDING_VALIDATION");
    // Owed its events since it was first active, those of the validation too.
    assert!(r.json()["active_since_ms"].is_i64());
    rx.fail_first(0);
    let sent = rx.posts().len();
    // Committed while the new URL is not validated: written, and waiting for it (an
    // authorization's too, which is otherwise handed straight to the sends).
    app.funded("u1", "DKK", "3.00").await;
    let p = Tx::new(&uid("wh"), "PURCHASE", "u1", "4.00", "DKK");
    assert_eq!(app.send(AUTH_DEBIT, &p).await.json()["status"], "APPROVED");
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rx.posts().len(), sent, "nothing goes to an unvalidated URL");
    let r = check(&app, id).await;
    assert_eq!(r.status, 200);
    let all = ids(&outbox(&app, None).await);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&format!("evt-auth-{}", p.id)), "{all:?}");
    rx.wait_for(&all, Duration::from_secs(10)).await;
    let by_event = assert_identical_and_signed(&rx);
    let moved: Vec<_> = rx
        .posts()
        .into_iter()
        .filter(|p| p.path == "/moved")
        .collect();
    assert_eq!(moved.len(), 3, "the waiting events went to the new URL");
    let retried = moved
        .iter()
        .filter(|m| by_event[&m.event_id].len() == 2)
        .count();
    assert_eq!(retried, 1, "the failed one, sent again");

    // Bad input.
    for (body, code) in [
        (json!({"url": "ftp://x/"}), "invalid_url"),
        (json!({"url": "/relative"}), "invalid_url"),
        (
            json!({"url": rx.url("/x"), "event_types": ["hold.nope"]}),
            "unknown_event_type",
        ),
    ] {
        let r = app
            .admin("POST", "/v1/webhooks/subscriptions", Some(body), None)
            .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["code"], code);
    }
    let r = app
        .admin(
            "DELETE",
            &format!("/v1/webhooks/subscriptions/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = subscription(&app, id).await;
    assert_eq!(r.status, 404);
    app.funded("u1", "DKK", "3.00").await;
    assert_eq!(outbox(&app, None).await.len(), 4, "no subscriber, no row");
    rx.stop().await;
}

async fn hold_events_reach_the_subscriber(app: TestApp) {
    let rx = Receiver::start();
    // Every event fails three times, then is acknowledged.
    rx.fail_first(3);
    active(&app, &rx, "/hook", json!([])).await;
    app.funded("u1", "DKK", "100.00").await;
    // One reservation captured, one cancelled.
    for (id, amount, path) in [
        ("a1", "30.00", capture_path("a1")),
        ("a2", "10.00", cancel_path("a2")),
    ] {
        let approved = "APPROVED";
        reserve(&app, &reservation(id, amount, "DKK"), approved, approved).await;
        let r = post(&app, &path, &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut due = reservation("a3", "5.00", "DKK");
    due["expires_in_secs"] = json!(1);
    reserve(&app, &due, "APPROVED", "APPROVED").await;
    let r = post(
        &app,
        &refund_path("a1"),
        &json!({"refund_id": "r1", "amount": "10.00"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let w = app
        .admin(
            "POST",
            "/v1/accounts/u1/DKK/withdrawals",
            Some(json!({"amount": "1.00"})),
            Some(&uid("w")),
        )
        .await;
    assert_eq!(w.status, 201);
    // The sweeper expires a3.
    wait_until("the expiry event", Duration::from_secs(10), || async {
        outbox(&app, None)
            .await
            .iter()
            .any(|d| d["event_type"] == "hold.expired")
    })
    .await;
    let rows = outbox(&app, None).await;
    let mut types: Vec<&str> = rows
        .iter()
        .filter_map(|d| d["event_type"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "account.funded",
            "account.withdrawn",
            "hold.captured",
            "hold.expired",
            "hold.refunded",
            "hold.released",
            "hold.reserved",
            "hold.reserved",
            "hold.reserved"
        ]
    );
    let wanted = ids(&rows);
    assert_eq!(wanted.len(), 9, "one stable id per event");
    // Three failures wait 1 + 2 + 4 s (±20 %) before the fourth attempt.
    rx.wait_for(&wanted, Duration::from_secs(30)).await;
    let by_event = assert_identical_and_signed(&rx);
    for (id, posts) in &by_event {
        let statuses: Vec<u16> = posts.iter().map(|p| p.status).collect();
        assert_eq!(statuses, [500, 500, 500, 200], "{id}");
    }
    let captured = rows
        .iter()
        .find(|d| d["event_type"] == "hold.captured")
        .expect("captured");
    let posted: Value =
        serde_json::from_slice(&by_event[captured["event_id"].as_str().unwrap()][3].body).unwrap();
    assert_eq!(posted["data"]["reservation_id"], "a1");
    assert_eq!(posted["data"]["amount"], "30.00");
    assert_eq!(posted["data"]["hold"]["state"], "CAPTURED");
    assert_eq!(posted, captured["body"]);
    wait_until("every row DELIVERED", Duration::from_secs(5), || async {
        outbox(&app, Some("DELIVERED")).await.len() == 9
    })
    .await;
    assert!(
        outbox(&app, Some("DELIVERED"))
            .await
            .iter()
            .all(|d| d["attempts"] == 4)
    );
    let m = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
    assert!(
        m.contains("authorizer_webhook_deliveries_total{outcome=\"delivered\"} 9"),
        "{m}"
    );
    assert!(
        m.contains("authorizer_webhook_deliveries_total{outcome=\"failed\"} 27"),
        "{m}"
    );
    assert!(
        m.contains("authorizer_webhook_delivery_delay_seconds_count 9"),
        "{m}"
    );
    rx.stop().await;
}

/// A row goes to its subscription's URL of when it is sent, once that URL answered the
/// challenge: a delivery sent again after the URL changed (or a row written from a cache
/// that had not seen the change yet) is not stranded at the old URL.
async fn a_row_goes_to_the_url_of_now(app: TestApp) {
    let rx = Receiver::start();
    let id = active(&app, &rx, "/a", json!(["account.funded"])).await;
    app.funded("u1", "DKK", "10.00").await;
    wait_until("delivered at /a", Duration::from_secs(10), || async {
        outbox(&app, Some("DELIVERED")).await.len() == 1
    })
    .await;
    let row = outbox(&app, None).await.remove(0);
    assert!(row["url"].as_str().unwrap().ends_with("/a"), "{row}");
    let r = move_to(&app, id, &rx.url("/b")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Not validated yet: nothing goes to /b.
    let row_id = row["id"].as_i64().expect("id");
    let r = app
        .admin_post(&format!("/v1/outbox/{row_id}/redeliver"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let to = |path: &str| rx.posts().iter().filter(|p| p.path == path).count();
    assert_eq!(
        to("/b"),
        0,
        "sent before the new URL answered the challenge"
    );
    assert_eq!(check(&app, id).await.json()["state"], "ACTIVE");
    wait_until("delivered at /b", Duration::from_secs(10), || async {
        to("/b") == 1
    })
    .await;
    wait_until("DELIVERED again", Duration::from_secs(5), || async {
        outbox(&app, Some("DELIVERED")).await.len() == 1
    })
    .await;
    let row = outbox(&app, None).await.remove(0);
    assert!(row["url"].as_str().unwrap().ends_with("/b"), "{row}");
    assert_eq!(to("/a"), 1, "/a had it once");
    rx.stop().await;
}

/// A short give-up age of its own.
mod give_up {
    use super::*;

    both_backends!(settings = super::quick_give_up; dead_after_the_give_up_age_then_redelivered);

    async fn dead_after_the_give_up_age_then_redelivered(app: TestApp) {
        let rx = Receiver::start();
        rx.fail_first(1000);
        active(&app, &rx, "/hook", json!(["account.funded"])).await;
        app.funded("u1", "DKK", "100.00").await;
        // Not subscribed to hold events: no row for them.
        reserve(
            &app,
            &reservation("d1", "1.00", "DKK"),
            "APPROVED",
            "APPROVED",
        )
        .await;
        wait_until("DEAD", Duration::from_secs(15), || async {
            outbox(&app, Some("DEAD")).await.len() == 1
        })
        .await;
        let all = outbox(&app, None).await;
        assert_eq!(all.len(), 1);
        let dead = &all[0];
        assert_eq!(dead["event_type"], "account.funded");
        assert_eq!(dead["last_error"], "answered 500");
        let m = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
        assert!(
            m.contains("authorizer_webhook_deliveries_total{outcome=\"dead\"} 1"),
            "{m}"
        );
        let failed = rx.posts().len();
        assert!(failed >= 1);

        rx.fail_first(0);
        let id = dead["id"].as_i64().unwrap();
        let r = app.admin_post(&format!("/v1/outbox/{id}/redeliver")).await;
        assert_eq!(r.status, 202, "{}", r.text());
        rx.wait_for(&ids(&all), Duration::from_secs(10)).await;
        let by_event = assert_identical_and_signed(&rx);
        assert_eq!(by_event.len(), 1);
        wait_until("DELIVERED", Duration::from_secs(5), || async {
            outbox(&app, Some("DELIVERED")).await.len() == 1
        })
        .await;
        let r = app.admin_post("/v1/outbox/999999/redeliver").await;
        assert_eq!(r.status, 404);
        let r = app.admin("GET", "/v1/outbox?state=LOST", None, None).await;
        assert_eq!(r.status, 400);
        rx.stop().await;
    }
}

/// Rows of `sql` (one text column) on the Postgres database `db`.
pub(crate) async fn texts(db: &str, sql: &str) -> BTreeSet<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(db).await.expect("connect");
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(&mut c)
        .await
        .expect("query")
        .into_iter()
        .collect()
}

/// Creates the subscription `body` on the authorizer process behind `api`, tells `rx` its
/// secret and passes the challenge.
pub(crate) async fn active_on(api: &Remote, rx: &Receiver, body: Value) -> i64 {
    let r = api
        .admin("POST", "/v1/webhooks/subscriptions", Some(body), None)
        .await;
    assert_eq!(r.status, 201);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    rx.set_secret(v["secret"].as_str().unwrap());
    let id = v["id"].as_i64().unwrap();
    let r = api
        .admin_post(&format!("/v1/webhooks/subscriptions/{id}/check"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    id
}

/// `kill -9` of an authorizer holding undelivered events (its receiver failing them):
/// another instance on the database delivers every one, none missing, each repeat with
/// the identical bytes.
#[actix_rt::test]
async fn a_killed_dispatcher_loses_no_event() {
    let db = fresh_pg_database().await;
    let rx = Receiver::start();
    rx.fail_first(usize::MAX);
    let env = [
        ("AUTHORIZER__WEBHOOKS__POLL_INTERVAL_MS", "20"),
        // A lease of 1 s: the killed instance's claims run out quickly.
        ("AUTHORIZER__WEBHOOKS__CALLBACK_TIMEOUT_MS", "500"),
    ];
    let options = || NodeOptions {
        channel_key: true,
        env: &env,
        ..NodeOptions::default()
    };
    let mut victim = Node::start(env!("CARGO_BIN_EXE_authorizer-node"), &db, options());
    let api = Remote::new(&victim.base);
    active_on(&api, &rx, json!({"url": rx.url("/hook")})).await;
    api.funded("u1", "DKK", "1000.00").await;
    for i in 0..20 {
        let res = format!("k{i}");
        let body = bytes(&reservation(&res, "3.00", "DKK"));
        let r = api.channel("POST", RES, &body, Some(&uid("ck"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if i % 2 == 0 {
            let r = api
                .channel("POST", &capture_path(&res), b"{}", Some(&uid("ck")))
                .await;
            assert_eq!(r.status, 200);
        }
    }
    // Attempts are failing and leases are held when the process dies.
    wait_until("failed attempts", Duration::from_secs(10), || async {
        rx.posts().len() >= 10
    })
    .await;
    victim.kill9();
    let expected = texts(
        &db,
        "SELECT 'evt-hold-' || CAST(id AS TEXT) FROM hold_events \
         UNION SELECT 'evt-deposit-' || CAST(id AS TEXT) FROM movements WHERE kind = 'DEPOSIT'",
    )
    .await;
    assert_eq!(expected.len(), 20 + 10 + 1);
    assert_eq!(texts(&db, "SELECT event_id FROM outbox").await, expected);
    assert!(
        !texts(&db, "SELECT event_id FROM outbox WHERE state = 'PENDING'")
            .await
            .is_empty()
    );

    rx.fail_first(0);
    let survivor = Node::start(env!("CARGO_BIN_EXE_authorizer-node"), &db, options());
    rx.wait_for(&expected, Duration::from_secs(60)).await;
    assert_identical_and_signed(&rx);
    wait_until("every row DELIVERED", Duration::from_secs(10), || async {
        texts(&db, "SELECT event_id FROM outbox WHERE state = 'DELIVERED'").await == expected
    })
    .await;
    let repeats = rx.posts().len() - expected.len();
    assert!(repeats >= 10, "the failed attempts before the kill");
    assert_database_clean(Some(db.clone()), std::path::PathBuf::new()).await;
    drop(survivor);
    rx.stop().await;
}

/// The retention (`webhooks.retention_days`): subscribers' rows settled and older than it
/// are deleted, in id order; a row still PENDING holds the walk until it settles; InStore
/// callbacks and young rows stay. The audit checks each event owed from the newest row
/// deleted on, and still finds a younger event's missing row.
mod retention {
    use super::*;
    use e2e::instore::{CallbackReceiver, redeem};

    const DAY_MS: i64 = 86_400_000;
    const NUMBER: &str = "6280001234567895";

    fn one_day(s: &mut Settings) {
        super::quick(s);
        s.webhooks.retention_days = 1;
        // Shorter than the retention, as the configuration requires.
        s.webhooks.give_up_secs = 3600;
    }

    e2e::instore_scenarios!(settings = one_day; settled_rows_older_than_the_retention_go);

    /// Waits until a statement starting with `what` waits on a row lock (Postgres).
    async fn waits_on_a_row(url: &str, what: &str) {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .expect("connect");
        let q = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '{}%'",
            what.replace('\'', "''")
        );
        let until = Instant::now() + Duration::from_secs(10);
        while sqlx::query_scalar::<_, i64>(&q)
            .fetch_one(&mut c)
            .await
            .expect("pg_stat_activity")
            == 0
        {
            assert!(Instant::now() < until, "nothing waits on a row: {what}");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Only on Postgres: there a redelivery and a pass can interleave (row locks). The
    /// embedded store's one connection runs them one after the other, and a redelivery
    /// before the pass leaves a PENDING row, which holds the walk (the test above).
    #[actix_rt::test]
    async fn a_redelivery_during_a_pass_is_neither_lost_nor_kept_for_good() {
        // No passes of the dispatcher's own: the test runs them.
        let app = TestApp::spawn_with(Backend::Postgres, |s| {
            super::quick(s);
            s.webhooks.retention_days = 0;
        })
        .await;
        let url = app.database_url.clone().expect("Postgres");
        let rx = Receiver::start();
        active(&app, &rx, "/hook", json!(["account.funded"])).await;
        let delivered = |n: usize| {
            let app = &app;
            move || async move {
                let rows = subscriber_rows(app).await;
                rows.len() == n && rows.values().all(|(_, s)| s == "DELIVERED")
            }
        };
        for u in ["u1", "u2", "u3"] {
            app.funded(u, "DKK", "10.00").await;
        }
        wait_until(
            "three rows delivered",
            Duration::from_secs(15),
            delivered(3),
        )
        .await;
        let ids: Vec<i64> = subscriber_rows(&app).await.into_keys().collect();
        let a_day_on = || store::now_ms() + DAY_MS;
        let pass = || async {
            app.store
                .prune_deliveries(a_day_on(), 1000)
                .await
                .expect("a pass")
        };

        // The middle row is redelivered (not due yet) by a transaction that commits while
        // the pass waits on its row: the pass deletes the other two, and the next pass
        // starts at it.
        let mut db = DirectConn::open(&app).await;
        db.execute("BEGIN").await;
        db.execute(&format!(
            "UPDATE outbox SET state = 'PENDING', next_attempt_at_ms = {} WHERE id = {}",
            a_day_on(),
            ids[1]
        ))
        .await;
        let (first, ()) = futures_util::future::join(pass(), async {
            waits_on_a_row(&url, "DELETE FROM outbox").await;
            db.execute("COMMIT").await;
        })
        .await;
        assert_eq!((first.deleted, first.more), (2, false));
        let left: Vec<i64> = subscriber_rows(&app).await.into_keys().collect();
        assert_eq!(left, vec![ids[1]]);
        assert_eq!(pass().await.deleted, 0, "the PENDING row holds the walk");
        // Once it settles, it goes.
        db.execute(&format!(
            "UPDATE outbox SET state = 'DELIVERED' WHERE id = {}",
            ids[1]
        ))
        .await;
        assert_eq!(pass().await.deleted, 1);
        assert!(subscriber_rows(&app).await.is_empty());

        // A redelivery of a row that a pass is deleting waits for it, then finds nothing
        // (it used to say it had queued the row again).
        app.funded("u4", "DKK", "10.00").await;
        wait_until("the row delivered", Duration::from_secs(15), delivered(1)).await;
        let id = *subscriber_rows(&app).await.keys().next().expect("a row");
        db.execute("BEGIN").await;
        db.execute(&format!("DELETE FROM outbox WHERE id = {id}"))
            .await;
        let (r, ()) = futures_util::future::join(app.store.redeliver(id, store::now_ms()), async {
            waits_on_a_row(&url, "UPDATE outbox SET state = 'PENDING'").await;
            db.execute("COMMIT").await;
        })
        .await;
        let r = r.expect("a redelivery");
        assert!(matches!(r, store::Redeliver::NotFound), "{r:?}");
        let r = app.admin_post(&format!("/v1/outbox/{id}/redeliver")).await;
        assert_eq!(r.status, 404, "{}", r.text());
        rx.stop().await;
        assert_clean(&app.store).await;
    }

    /// The subscribers' rows of the outbox listing, by id: (event id, state).
    async fn subscriber_rows(app: &TestApp) -> BTreeMap<i64, (String, String)> {
        outbox(app, None)
            .await
            .iter()
            .filter(|d| d["subscription_id"].is_i64())
            .map(|d| {
                let id = d["id"].as_i64().expect("id");
                let event = d["event_id"].as_str().expect("event id").to_owned();
                (id, (event, d["state"].as_str().expect("state").to_owned()))
            })
            .collect()
    }

    /// A purchase, a refund of part of it, and a hold `hold`: the events of the last two
    /// are written in their commits. Their event ids (the hold's by its type).
    async fn refund_and_hold(app: &TestApp, hold: &str) -> Vec<String> {
        let p = Tx::new(&uid("rt"), "PURCHASE", "u1", "1.00", "DKK");
        assert_eq!(app.send(AUTH_DEBIT, &p).await.json()["status"], "APPROVED");
        let refund = Tx::new(&uid("rt"), "REFUND", "u1", "0.50", "DKK").original(&p.id);
        assert_eq!(app.send(ADJ_CREDIT, &refund).await.status, 200);
        reserve(
            app,
            &reservation(hold, "1.00", "DKK"),
            "APPROVED",
            "APPROVED",
        )
        .await;
        vec![
            format!("evt-auth-{}", p.id),
            format!("evt-adj-{}", refund.id),
        ]
    }

    /// Waits until each of `events` has a row and, when `settled`, every row is DELIVERED
    /// (the young deposit's row to `down` goes through on a retry).
    async fn rows_of(app: &TestApp, events: &[String], settled: bool) {
        wait_until("the rows", Duration::from_secs(15), || async {
            let rows = subscriber_rows(app).await;
            let have: BTreeSet<&str> = rows.values().map(|(e, _)| e.as_str()).collect();
            events.iter().all(|e| have.contains(e.as_str()))
                && (!settled || rows.values().all(|(_, s)| s == "DELIVERED"))
        })
        .await;
    }

    async fn settled_rows_older_than_the_retention_go(app: TestApp, cb: CallbackReceiver) {
        let rx = Receiver::start();
        active(&app, &rx, "/hook", json!(["account.funded"])).await;

        // What happened two days ago (its rows' instants are moved back below; the ledger's
        // rows cannot be changed, and deposits are not among the events the audit counts
        // owed): deposits, and an InStore Redeem with its callback...
        app.funded("u1", "DKK", "100.00").await;
        app.stored_value_card("u-sv", "USD", "50.00", NUMBER).await;
        app.instore_acknowledged(
            "storedvaluecard_process",
            &redeem(NUMBER, "rt-redeem", 100),
            &cb.url("/cb"),
        )
        .await;
        // ...then a subscriber that is down, and one more deposit, owed to both.
        let down = Receiver::start();
        down.fail_first(usize::MAX);
        active(&app, &down, "/down", json!(["account.funded"])).await;
        actix_rt::time::sleep(Duration::from_millis(2100)).await;
        app.funded("u2", "DKK", "10.00").await;
        wait_until("the old events sent", Duration::from_secs(15), || async {
            let rows = subscriber_rows(&app).await;
            rows.len() >= 3
                && rows.values().filter(|(_, s)| s == "PENDING").count() == 1
                && rows
                    .values()
                    .all(|(_, s)| s == "DELIVERED" || s == "PENDING")
        })
        .await;
        cb.wait_for("/cb", 1, Duration::from_secs(10)).await;
        let old = subscriber_rows(&app).await;
        let (pending, (second, _)) = old
            .iter()
            .find(|(_, (_, s))| s == "PENDING")
            .expect("the down subscriber's row");
        let pending = *pending;
        let mut db = DirectConn::open(&app).await;
        db.execute(&format!(
            "UPDATE outbox SET created_at_ms = created_at_ms - {}",
            2 * DAY_MS
        ))
        .await;

        // Now: a deposit, young.
        app.funded("u3", "DKK", "10.00").await;
        // The rows before the PENDING one go; it holds the rest back.
        wait_until(
            "the rows before the pending one",
            Duration::from_secs(10),
            || async {
                subscriber_rows(&app)
                    .await
                    .keys()
                    .all(|id| *id >= pending || !old.contains_key(id))
            },
        )
        .await;
        let rows = subscriber_rows(&app).await;
        assert!(rows.contains_key(&pending), "a PENDING row stays: {rows:?}");

        // The subscriber is back: its row is delivered, then it goes with the rest.
        down.fail_first(0);
        wait_until("every old row gone", Duration::from_secs(30), || async {
            subscriber_rows(&app)
                .await
                .keys()
                .all(|id| !old.contains_key(id))
        })
        .await;
        assert!(
            down.acknowledged().contains(second),
            "delivered before it went"
        );
        // The young rows stay, and so does the callback (a duplicate sends it again).
        let young: Vec<_> = subscriber_rows(&app).await.into_values().collect();
        assert_eq!(young.len(), 2, "the young deposit's, to each: {young:?}");
        let r = app
            .admin("GET", "/v1/instore/callbacks?state=DELIVERED", None, None)
            .await;
        let kept = r.json()["callbacks"].clone();
        assert!(
            items(&kept).any(|c| c["requestId"] == "rt-redeem"),
            "the callback stays: {kept}"
        );
        let m = String::from_utf8_lossy(&app.get("/metrics").await.body).into_owned();
        assert!(
            m.contains(&format!("authorizer_webhook_pruned_total {}", old.len())),
            "{} rows deleted: {m}",
            old.len()
        );
        let gone = old.keys().next().expect("an old row");
        let r = app
            .admin_post(&format!("/v1/outbox/{gone}/redeliver"))
            .await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert_clean(&app.store).await;

        // The audit's horizon, with a pass as it will run a day from now. Before it: a
        // refund (its row written in its commit) and a hold, whose rows go; the audit leaves
        // them out. After it: the same again, and each row deleted by hand is found missing.
        active(&app, &rx, "/hook", json!([])).await;
        actix_rt::time::sleep(Duration::from_millis(2100)).await;
        let events_before = refund_and_hold(&app, "rt-h1").await;
        rows_of(&app, &events_before, true).await;
        let settled = subscriber_rows(&app).await.len();
        let pass = app
            .store
            .prune_deliveries(store::now_ms() + DAY_MS, 1000)
            .await
            .expect("a pass");
        assert_eq!(pass.deleted, u64::try_from(settled).unwrap());
        assert!(subscriber_rows(&app).await.is_empty());
        let report = assert_clean(&app.store).await;
        assert!(report.deliveries_pruned_before_ms > store::now_ms() - 60_000);
        actix_rt::time::sleep(Duration::from_millis(1500)).await;
        let events_after = refund_and_hold(&app, "rt-h2").await;
        rows_of(&app, &events_after, false).await;
        assert_clean(&app.store).await;
        // Their rows set aside, the audit finds them missing; put back, it is clean again.
        let younger = "FROM outbox WHERE event_type IN ('adjustment.booked', 'hold.reserved')";
        db.execute(&format!("CREATE TABLE outbox_aside AS SELECT * {younger}"))
            .await;
        db.execute(&format!("DELETE {younger}")).await;
        let report = app.store.audit().await.expect("audit");
        let broken: BTreeSet<&str> = report.violations.iter().map(|v| v.invariant).collect();
        assert_eq!(
            broken,
            BTreeSet::from([
                "every processor movement since a subscription became active has its event row",
                "every hold event since a subscription became active has its delivery row",
            ]),
            "{:?}",
            report.violations
        );
        db.execute("INSERT INTO outbox SELECT * FROM outbox_aside")
            .await;
        db.execute("DROP TABLE outbox_aside").await;
        assert_clean(&app.store).await;
        rx.stop().await;
        down.stop().await;
    }
}
