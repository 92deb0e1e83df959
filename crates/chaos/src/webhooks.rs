//! An event subscriber beside the faults: a receiver in this process, subscribed to every
//! event the authorizer publishes before the traffic starts. It answers the URL challenge
//! with the subscription's secret, verifies each delivery's `x-signature` and acknowledges
//! it. After the faults, [`check`] waits for what the ledger owes it and checks that:
//!
//! - every authorization the ledger answered has its `authorization.decided` event;
//! - every outbox row of the subscription (every event type) ends DELIVERED, and its event
//!   arrived;
//! - every copy of an event is byte-identical and signed;
//! - nothing arrived that the outbox does not hold.
//!
//! The faults reach its deliveries in every way they can: a `kill -9` leaves the sender's
//! handed deliveries to the next instance's takeover, a database outage or freeze makes
//! commits' outcomes unknown (their sender retired and taken over) and fails the rounds'
//! writes.

use crate::control::Postgres;
use actix_web::{HttpRequest, HttpResponse, web};
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the deliveries may take to settle once the faults are over: a killed instance's
/// sender is taken over a lease and a half (15 s by default) after its last mark, and a
/// delivery claimed by a killed instance waits out its lease (10 s).
const SETTLE_WITHIN: Duration = Duration::from_secs(120);

/// One delivery received.
struct Post {
    event_id: String,
    body: Vec<u8>,
    signed: bool,
}

#[derive(Default)]
struct State {
    secret: String,
    posts: Vec<Post>,
}

type Shared = web::Data<Arc<Mutex<State>>>;

/// The receiver, listening on a free loopback port.
pub struct Subscriber {
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
    /// The subscription.
    id: i64,
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(req: HttpRequest, body: web::Bytes, state: Shared) -> HttpResponse {
    let mut s = state.lock().expect("subscriber lock");
    if req.method() == actix_web::http::Method::GET {
        let code = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("challengeCode").cloned())
            .unwrap_or_default();
        let answer = protocol::webhook::encrypted_challenge(&s.secret, &code);
        return HttpResponse::Ok().json(serde_json::json!({ "encrypted_challenge": answer }));
    }
    let event_id = header(&req, "x-event-id");
    let signed = protocol::webhook::verify_x_signature_with_body(
        &s.secret,
        &header(&req, "x-signature"),
        (&event_id, &header(&req, "x-request-id")),
        &body,
        processor_client::support::now_ms(),
        300_000,
    );
    s.posts.push(Post {
        event_id,
        body: body.to_vec(),
        signed,
    });
    HttpResponse::Ok().finish()
}

impl Subscriber {
    /// Listens on a free loopback port, subscribes it to every event type and passes the
    /// URL challenge.
    pub async fn start(engine: &crate::engine::Engine) -> anyhow::Result<Subscriber> {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr, handle) = instore_sim::sim::serve_every_request(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            state.clone(),
            receive,
        )
        .context("cannot listen for events")?;
        let url = format!("http://{addr}/events");
        let (s, v) = crate::admin_until_stored(
            engine,
            awc::http::Method::POST,
            "/v1/webhooks/subscriptions",
            Some(serde_json::json!({ "url": url })),
            None,
        )
        .await?;
        anyhow::ensure!(s == 201, "subscribing: HTTP {s} {v}");
        let id = v["id"].as_i64().context("subscribing: no id")?;
        state.lock().expect("subscriber lock").secret = v["secret"]
            .as_str()
            .context("subscribing: no secret")?
            .to_owned();
        let check = format!("/v1/webhooks/subscriptions/{id}/check");
        let (s, v) =
            crate::admin_until_stored(engine, awc::http::Method::POST, &check, None, None).await?;
        anyhow::ensure!(s == 200, "the subscription's challenge: HTTP {s} {v}");
        Ok(Subscriber { state, handle, id })
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// What the subscriber received against what the ledger owes it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WebhookChecks {
    /// Whether the run subscribed (not with `--no-subscriber`).
    pub subscribed: bool,
    /// Authorizations the ledger answered: each owes its `authorization.decided`.
    pub authorizations: u64,
    /// Outbox rows of the subscription, every event type.
    pub rows: u64,
    /// Distinct events received, and every delivery (repeats included).
    pub events_received: u64,
    pub deliveries: u64,
    /// Answered authorizations whose event never arrived.
    pub missing_authorization_events: u64,
    /// Rows not DELIVERED in the end, or DELIVERED with no copy received.
    pub undelivered_rows: u64,
    /// Events whose copies differ in their bytes.
    pub differing_copies: u64,
    /// Deliveries whose `x-signature` did not verify.
    pub unsigned: u64,
    /// Events received with no outbox row.
    pub unknown_events: u64,
    /// How long after the faults every delivery owed had arrived, s.
    pub settled_after_s: f64,
}

/// One JSON document from psql (ids may hold any character).
fn json_of<T: serde::de::DeserializeOwned>(pg: &Postgres, sql: &str) -> anyhow::Result<T> {
    let text = pg.query(sql)?;
    serde_json::from_str(text.trim()).with_context(|| format!("reading {sql}"))
}

/// The answered authorizations' event ids, and the subscription's rows with their states.
fn owed(
    pg: &Postgres,
    subscription: i64,
) -> anyhow::Result<(BTreeSet<String>, BTreeMap<String, String>)> {
    let auths: Vec<String> = json_of(
        pg,
        "SELECT coalesce(json_agg('evt-auth-' || transaction_id), '[]') FROM processor_transactions \
         WHERE kind = 'AUTHORIZATION' AND response_status IS NOT NULL",
    )?;
    let rows: Vec<(String, String)> = json_of(
        pg,
        &format!(
            "SELECT coalesce(json_agg(json_build_array(event_id, state)), '[]') FROM outbox \
             WHERE subscription_id = {subscription}"
        ),
    )?;
    Ok((auths.into_iter().collect(), rows.into_iter().collect()))
}

/// Waits (at most [`SETTLE_WITHIN`]) until every delivery owed has arrived and every row is
/// DELIVERED, then checks what arrived; a violation for each kind of shortfall.
pub async fn check(
    engine: &crate::engine::Engine,
    pg: &Postgres,
    sub: Option<&Subscriber>,
) -> anyhow::Result<WebhookChecks> {
    let Some(sub) = sub else {
        // Not subscribed (`--no-subscriber`): nothing is owed.
        return Ok(WebhookChecks::default());
    };
    let started = Instant::now();
    let received = || -> BTreeSet<String> {
        let s = sub.state.lock().expect("subscriber lock");
        s.posts.iter().map(|p| p.event_id.clone()).collect()
    };
    let (auths, rows) = loop {
        let (auths, rows) = owed(pg, sub.id)?;
        let got = received();
        let settled = auths
            .iter()
            .all(|e| got.contains(e) && rows.contains_key(e))
            && rows
                .iter()
                .all(|(e, st)| st == "DELIVERED" && got.contains(e));
        if settled || started.elapsed() >= SETTLE_WITHIN {
            break (auths, rows);
        }
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    };
    let mut c = WebhookChecks {
        subscribed: true,
        authorizations: auths.len() as u64,
        rows: rows.len() as u64,
        settled_after_s: started.elapsed().as_secs_f64(),
        ..WebhookChecks::default()
    };
    let state = sub.state.lock().expect("subscriber lock");
    let mut copies: BTreeMap<&str, Vec<&Post>> = BTreeMap::new();
    for p in &state.posts {
        copies.entry(&p.event_id).or_default().push(p);
    }
    c.deliveries = state.posts.len() as u64;
    c.events_received = copies.len() as u64;
    // Each kind of shortfall is one violation, with a few of its events.
    let mut found: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut note =
        |what: &'static str, id: &str| found.entry(what).or_default().push(id.to_owned());
    for e in auths.iter().filter(|e| !copies.contains_key(e.as_str())) {
        c.missing_authorization_events += 1;
        note("answered authorizations whose event never arrived", e);
    }
    for (e, st) in &rows {
        if st != "DELIVERED" || !copies.contains_key(e.as_str()) {
            c.undelivered_rows += 1;
            note(
                "outbox rows not DELIVERED, or with no copy received",
                &format!("{e} {st}"),
            );
        }
    }
    for (e, posts) in &copies {
        if posts.iter().any(|p| p.body != posts[0].body) {
            c.differing_copies += 1;
            note("events whose copies differ", e);
        }
        if posts.iter().any(|p| !p.signed) {
            note("events with a copy whose signature did not verify", e);
        }
        c.unsigned += posts.iter().filter(|p| !p.signed).count() as u64;
        if !rows.contains_key(*e) {
            c.unknown_events += 1;
            note("events received with no outbox row", e);
        }
    }
    for (what, ids) in found {
        let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
        engine.violation(format!(
            "webhooks: {} {what} (e.g. {})",
            ids.len(),
            shown.join(", ")
        ));
    }
    Ok(c)
}
