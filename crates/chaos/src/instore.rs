//! InStore traffic beside the processor's and the wallet's: a store tenant (configured on
//! this run's authorizer) loads, redeems and cancels on stored-value numbers linked to the
//! run's accounts, through every phase and fault.
//!
//! Each request is an envelope signed as InStore signs it ([`instore_sim::sim::envelope`]),
//! sent again under the same `requestId` until acknowledged (no answer, 408, 425 and 503 are
//! not acknowledgements), with extra copies during the duplicate storm. A third of the
//! approved Loads and Redeems are cancelled later under a new `requestId`, with the ids their
//! callback returned. The callbacks go to a receiver in this process
//! ([`instore_sim::Receiver`], loopback) that records every copy.
//!
//! The checks ([`check`]): every acknowledged `requestId` has its callback at least once,
//! every copy byte-identical (body and signature) and signed with the tenant's key; it has
//! exactly one movement in `instore_movements` when its callback approved it (none for a
//! decline or an already cancelled operation), of the amount the callback reported; no
//! movement exists for a request never acknowledged; and the callbacks' amounts feed the
//! balance check of [`crate::verify`].

use crate::engine::{Engine, sleep_ms, wait_for_tasks};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The store tenant and its verification key (a throwaway authorizer: fixed values).
pub const TENANT: &str = "chaos-store";
pub const KEY: &str = "chaos-instore-verification-key-01";
/// The routes' base path on the authorizer (its default).
const BASE_PATH: &str = "/instore";
const PROCESS: &str = "storedvaluecard_process";
/// The ledger's currency exponent of the run's accounts (ARS).
const PRECISION: u8 = 2;

/// The authorizer's configuration layer: the tenant, calling back to `callback_prefix`.
pub fn config_layer(callback_prefix: &str) -> String {
    format!(
        "[[instore.tenants]]\ntenant_id = \"{TENANT}\"\nverification_key = \"{KEY}\"\n\
         callback_url_prefixes = [\"{callback_prefix}\"]\n"
    )
}

/// The stored-value number linked to account `i`.
fn number(i: u32) -> String {
    format!("62809900{i:08}")
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Load,
    Redeem,
    /// Cancel of the request at this index.
    Cancel(usize),
}

/// One InStore request: one `requestId` and body, however often sent.
pub struct SvOp {
    pub request_id: String,
    pub action: Action,
    pub account: u32,
    /// Minor units asked (a Cancel names none).
    pub amount: i64,
    pub body: Bytes,
    pub signature: String,
    pub attempts: u64,
    /// The first acknowledgement's bytes.
    pub acked: Option<Bytes>,
}

/// Counters for the summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InstoreCounts {
    /// Numbers linked to the run's accounts.
    pub cards: u64,
    pub requests: u64,
    pub loads: u64,
    pub redeems: u64,
    pub cancels: u64,
    pub http_requests: u64,
    pub duplicates: u64,
    pub acknowledged: u64,
    /// Attempts without an acknowledgement, sent again under the same requestId.
    pub lost_attempts: u64,
    pub too_early_425: u64,
    pub unavailable_503: u64,
    pub no_answer: u64,
    /// Requests still unacknowledged when their task gave up, sent again at the end.
    pub resolved_at_end: u64,
    /// Outcomes as the callbacks told them.
    pub approved: u64,
    pub declined: u64,
    pub already_cancelled: u64,
    /// Callback copies received in all, and requests whose callback came more than once.
    pub callbacks_received: u64,
    pub callbacks_repeated: u64,
}

/// What the InStore checks found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InstoreChecks {
    pub acknowledged: u64,
    /// Requests never acknowledged, even after the resends.
    pub never_acknowledged: u64,
    /// Acknowledged requests whose callback never arrived.
    pub callbacks_missing: u64,
    /// Requests whose callback copies differ (body or signature), or are not signed with the
    /// tenant's key, or are not this request's result.
    pub callbacks_bad: u64,
    /// Approved requests without their movement, and requests with more than theirs.
    pub lost: u64,
    pub double_booked: u64,
    /// Movements whose amount is not what the callback said.
    pub amount_mismatches: u64,
    /// Movements of the tenant that no acknowledged request explains.
    pub unaccounted_movements: u64,
    pub movements_in_ledger: u64,
}

/// The store: its client, its receiver, its requests.
pub struct Instore {
    client: awc::Client,
    base: String,
    pub receiver: instore_sim::Receiver,
    pub ops: RefCell<Vec<SvOp>>,
    pub counts: RefCell<InstoreCounts>,
    /// Request tasks still running.
    pub live: Cell<u64>,
    /// New requests per second while load runs (0: none).
    pub rate: f64,
    /// Accounts 0..cards have a linked number.
    pub cards: u32,
    /// Posted moves the callbacks reported, per account, signed (filled by [`check`]).
    pub posted_delta: RefCell<Vec<i64>>,
}

impl Instore {
    pub fn new(
        authorizer_url: &str,
        receiver: instore_sim::Receiver,
        timeout: Duration,
        accounts: u32,
        rate: f64,
    ) -> Instore {
        Instore {
            client: awc::Client::builder()
                .disable_redirects()
                .timeout(timeout)
                .finish(),
            base: format!("{authorizer_url}{BASE_PATH}"),
            receiver,
            ops: RefCell::new(Vec::new()),
            counts: RefCell::new(InstoreCounts::default()),
            live: Cell::new(0),
            rate,
            cards: accounts.min(40),
            posted_delta: RefCell::new(vec![0; accounts as usize]),
        }
    }

    fn count(&self, f: impl FnOnce(&mut InstoreCounts)) {
        f(&mut self.counts.borrow_mut());
    }

    /// The path the callbacks of `request_id` arrive at.
    fn callback_path(&self, request_id: &str) -> String {
        let url = format!("{}{request_id}", self.receiver.prefix);
        url.strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))
            .unwrap_or(url)
    }
}

/// Links a number to each of the first accounts (a card of the account's holder, then the
/// number, for the tenant) through the admin API.
pub async fn link_cards(engine: &Rc<Engine>) -> anyhow::Result<()> {
    use awc::http::Method;
    use futures_util::{StreamExt, stream};
    let results: Vec<anyhow::Result<()>> = stream::iter(0..engine.instore.cards)
        .map(|i| async move {
            let user = engine.traffic.all.user(i);
            let card = format!("{}-svc-{i}", engine.channel_prefix);
            let (s, v) = engine
                .http
                .admin(
                    Method::PUT,
                    &format!("/v1/cards/{card}"),
                    Some(serde_json::json!({"user_id": user, "status": "ACTIVE"})),
                    None,
                )
                .await?;
            anyhow::ensure!(s == 200 || s == 201, "card {card}: HTTP {s} {v}");
            crate::counting_controls(engine, &format!("/v1/cards/{card}")).await?;
            let (s, v) = engine
                .http
                .admin(
                    Method::PUT,
                    &format!("/v1/stored-value-cards/{card}"),
                    Some(serde_json::json!({
                        "number": number(i), "currency": engine.traffic.all.currency,
                        "tenants": [TENANT], "type": "GiftCard",
                    })),
                    None,
                )
                .await?;
            anyhow::ensure!(s == 200, "stored-value number of {card}: HTTP {s} {v}");
            Ok(())
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    engine
        .instore
        .count(|c| c.cards = u64::from(engine.instore.cards));
    Ok(())
}

fn amount_json(minor: i64, currency: &str) -> Value {
    serde_json::json!({"amount": minor, "precision": PRECISION, "currency": currency})
}

/// What a callback said: approved, the amount (minor units) and whether the operation was
/// already cancelled.
struct Told {
    approved: bool,
    amount: i64,
    already_cancelled: bool,
    data: Value,
}

fn told(body: &[u8]) -> Option<Told> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(Told {
        approved: v["status"] == "approved",
        amount: v["data"]["amount"]["amount"].as_i64().unwrap_or(0),
        already_cancelled: v["data"]["already_cancelled"] == Value::Bool(true),
        data: v["data"].clone(),
    })
}

impl Engine {
    fn sv(&self) -> &Instore {
        &self.instore
    }

    /// Starts one new Load or Redeem (called by the load at the InStore rate).
    pub fn instore_new(self: &Rc<Self>) {
        let account = self.range(0, i64::from(self.sv().cards.max(1)) - 1) as u32;
        let action = if self.chance(40) {
            Action::Load
        } else {
            Action::Redeem
        };
        // One Redeem in fifty asks more than any account holds: declined, nothing moves.
        let amount = if action == Action::Redeem && self.chance(2) {
            100_000_000
        } else {
            self.range(100, 30_000)
        };
        self.book.touch(account);
        let op = self.instore_op(action, account, amount, None);
        let e = self.clone();
        self.sv().live.set(self.sv().live.get() + 1);
        actix_rt::spawn(async move {
            e.instore_life(op).await;
            e.sv().live.set(e.sv().live.get() - 1);
        });
    }

    /// Records a new request (a Cancel names the ids of `cancel`'s callback).
    fn instore_op(
        &self,
        action: Action,
        account: u32,
        amount: i64,
        cancel: Option<&Value>,
    ) -> usize {
        let request_id = format!("{}-sv{}", self.channel_prefix, self.next_seq());
        let currency = &self.traffic.all.currency;
        let mut payload = serde_json::Map::new();
        payload.insert("requestId".into(), request_id.clone().into());
        payload.insert("locationId".into(), "ChaosStore".into());
        payload.insert("workstationId".into(), "POS-1".into());
        let name = match action {
            Action::Load => "Load",
            Action::Redeem => "Redeem",
            Action::Cancel(_) => "Cancel",
        };
        payload.insert("action".into(), name.into());
        payload.insert("number".into(), number(account).into());
        match cancel {
            Some(data) => {
                payload.insert(
                    "external_transaction_id".into(),
                    data["external_transaction_id"].clone(),
                );
                payload.insert(
                    "external_payment_id".into(),
                    data["external_payment_id"].clone(),
                );
            }
            None => {
                payload.insert("amount".into(), amount_json(amount, currency));
                payload.insert("session_id".into(), format!("s-{request_id}").into());
                payload.insert("reference".into(), format!("order-{request_id}").into());
            }
        }
        let callback = format!("{}{request_id}", self.sv().receiver.prefix);
        let (body, signature) = instore_sim::sim::envelope(
            KEY.as_bytes(),
            TENANT,
            &format!("{}/{PROCESS}", self.sv().base),
            &Value::Object(payload).to_string(),
            &request_id,
            &callback,
        );
        let mut ops = self.sv().ops.borrow_mut();
        ops.push(SvOp {
            request_id,
            action,
            account,
            amount,
            body: Bytes::from(body),
            signature,
            attempts: 0,
            acked: None,
        });
        self.sv().count(|c| {
            c.requests += 1;
            match action {
                Action::Load => c.loads += 1,
                Action::Redeem => c.redeems += 1,
                Action::Cancel(_) => c.cancels += 1,
            }
        });
        ops.len() - 1
    }

    /// One Load or Redeem, acknowledged, then perhaps cancelled once its callback told the
    /// ids.
    async fn instore_life(self: &Rc<Self>, op: usize) {
        if !self.instore_settle(op, Duration::from_secs(30)).await || !self.chance(33) {
            return;
        }
        let (request_id, account) = {
            let o = &self.sv().ops.borrow()[op];
            (o.request_id.clone(), o.account)
        };
        let path = self.sv().callback_path(&request_id);
        let started = Instant::now();
        let body = loop {
            if let Some(c) = self.sv().receiver.first_at(&path) {
                break c.body;
            }
            if started.elapsed() > Duration::from_secs(20) {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(t) = told(&body) else { return };
        if !t.approved {
            return;
        }
        sleep_ms(self.range(50, 1500)).await;
        let cancel = self.instore_op(Action::Cancel(op), account, 0, Some(&t.data));
        self.instore_settle(cancel, Duration::from_secs(30)).await;
    }

    /// Sends `op` under its requestId until acknowledged or `patience` has passed (the
    /// resolution phase sends what is left). During the storm, extra copies.
    pub async fn instore_settle(self: &Rc<Self>, op: usize, patience: Duration) -> bool {
        let started = Instant::now();
        if self.storm.get() {
            for _ in 0..self.range(1, 3) {
                let delay = self.range(0, 1500);
                let e = self.clone();
                self.sv().count(|c| c.duplicates += 1);
                actix_rt::spawn(async move {
                    sleep_ms(delay).await;
                    e.instore_send(op).await;
                });
            }
        }
        self.resend_until(
            started,
            patience,
            || self.instore_send(op),
            || self.sv().ops.borrow()[op].acked.is_some(),
        )
        .await
    }

    /// One HTTP attempt at `op`.
    async fn instore_send(&self, op: usize) {
        let (body, signature, request_id) = {
            let o = &self.sv().ops.borrow()[op];
            (o.body.clone(), o.signature.clone(), o.request_id.clone())
        };
        let url = format!("{}/{PROCESS}", self.sv().base);
        self.sv().count(|c| c.http_requests += 1);
        self.sv().ops.borrow_mut()[op].attempts += 1;
        let sent = self
            .sv()
            .client
            .post(&url)
            .insert_header(("content-type", "application/json"))
            .insert_header(("X-Signature", signature))
            .insert_header(("x-correlation-id", format!("corr-{request_id}")))
            .send_body(body)
            .await;
        let answer = match sent {
            Ok(mut r) => {
                let sig = r
                    .headers()
                    .get("x-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                match r.body().limit(1 << 20).await {
                    Ok(b) => Some((r.status().as_u16(), b, sig)),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let retry = |c: &mut InstoreCounts| c.lost_attempts += 1;
        match answer {
            None => self.sv().count(|c| {
                c.no_answer += 1;
                retry(c);
            }),
            Some((425, _, _)) => self.sv().count(|c| {
                c.too_early_425 += 1;
                retry(c);
            }),
            Some((503, _, _)) => self.sv().count(|c| {
                c.unavailable_503 += 1;
                retry(c);
            }),
            Some((408, _, _)) => self.sv().count(retry),
            Some((200, b, sig)) => {
                let want = format!(r#"{{"requestId":"{request_id}"}}"#);
                let problem = if b != want.as_bytes() {
                    Some("an acknowledgement that is not this request's")
                } else if sig != instore::signature::sign(KEY.as_bytes(), &b) {
                    Some("an acknowledgement not signed with the tenant's key")
                } else {
                    None
                };
                if let Some(p) = problem {
                    self.violation(format!(
                        "instore {request_id}: {p}: {}",
                        String::from_utf8_lossy(&b)
                    ));
                    return;
                }
                let mut ops = self.sv().ops.borrow_mut();
                if ops[op].acked.is_none() {
                    ops[op].acked = Some(b);
                    drop(ops);
                    self.sv().count(|c| c.acknowledged += 1);
                }
            }
            Some((s, b, _)) => self.violation(format!(
                "instore {request_id}: unexpected HTTP {s}: {}",
                String::from_utf8_lossy(&b[..b.len().min(300)])
            )),
        }
    }
}

/// After the faults: waits for the request tasks, then sends every request still without an
/// acknowledgement again until acknowledged, as InStore does.
pub async fn resolve(engine: &Rc<Engine>) {
    wait_for_tasks(&engine.instore.live).await;
    let left: Vec<usize> = {
        let ops = engine.instore.ops.borrow();
        (0..ops.len()).filter(|&i| ops[i].acked.is_none()).collect()
    };
    engine
        .instore
        .count(|c| c.resolved_at_end = left.len() as u64);
    for &op in &left {
        engine.instore_settle(op, Duration::from_secs(20)).await;
    }
}

/// (count, sum of amounts) of the tenant's movements per requestId.
fn ledger_movements(pg: &crate::control::Postgres) -> anyhow::Result<HashMap<String, (i64, i64)>> {
    let text = pg.query(&format!(
        "SELECT coalesce(json_agg(json_build_array(request_id, n, total)), '[]') FROM \
         (SELECT request_id, count(*) AS n, sum(amount_minor)::bigint AS total \
          FROM instore_movements WHERE tenant_id = '{TENANT}' GROUP BY request_id) t"
    ))?;
    let list: Vec<(String, i64, i64)> = serde_json::from_str(text.trim())
        .map_err(|e| anyhow::anyhow!("InStore movements are not JSON: {e}"))?;
    Ok(list.into_iter().map(|(r, n, t)| (r, (n, t))).collect())
}

/// Holds the callbacks and the ledger to what the store was told (see the module docs), and
/// fills [`Instore::posted_delta`] for the balance check.
pub async fn check(
    engine: &Rc<Engine>,
    pg: &crate::control::Postgres,
) -> anyhow::Result<InstoreChecks> {
    let sv = &engine.instore;
    let mut c = InstoreChecks::default();
    let mut problems = Vec::new();
    let acked: Vec<usize> = {
        let ops = sv.ops.borrow();
        (0..ops.len()).filter(|&i| ops[i].acked.is_some()).collect()
    };
    c.acknowledged = acked.len() as u64;
    c.never_acknowledged = sv.ops.borrow().len() as u64 - c.acknowledged;
    if c.never_acknowledged > 0 {
        problems.push(format!(
            "{} InStore requests never acknowledged after the resends",
            c.never_acknowledged
        ));
    }
    // Every acknowledged request's callback, at least once (a crash may have cut a round
    // short: its leases run out and the rows go out again).
    let path_of: Vec<(usize, String)> = acked
        .iter()
        .map(|&i| (i, sv.callback_path(&sv.ops.borrow()[i].request_id)))
        .collect();
    let started = Instant::now();
    let by_path = loop {
        let mut by_path: HashMap<String, Vec<instore_sim::sim::Callback>> = HashMap::new();
        for cb in sv.receiver.callbacks() {
            by_path.entry(cb.path.clone()).or_default().push(cb);
        }
        let missing = path_of
            .iter()
            .filter(|(_, p)| !by_path.contains_key(p))
            .count();
        if missing == 0 || started.elapsed() > Duration::from_secs(90) {
            break by_path;
        }
        sleep_ms(250).await;
    };
    let mut effect: HashMap<String, (i64, i64)> = HashMap::new();
    let mut delta = vec![0i64; sv.posted_delta.borrow().len()];
    for (i, path) in &path_of {
        let ops = sv.ops.borrow();
        let o = &ops[*i];
        let Some(copies) = by_path.get(path) else {
            c.callbacks_missing += 1;
            problems.push(format!(
                "instore {}: acknowledged, no callback",
                o.request_id
            ));
            continue;
        };
        let first = &copies[0];
        let signed = first.signature == instore::signature::sign(KEY.as_bytes(), &first.body);
        let same = copies
            .iter()
            .all(|x| x.body == first.body && x.signature == first.signature);
        let v: Value = serde_json::from_slice(&first.body).unwrap_or(Value::Null);
        let ours = v["requestId"] == o.request_id.as_str();
        if !(signed && same && ours) {
            c.callbacks_bad += 1;
            problems.push(format!(
                "instore {}: {} callback copies, identical {same}, signed {signed}, its own {ours}",
                o.request_id,
                copies.len()
            ));
            continue;
        }
        sv.count(|n| {
            n.callbacks_received += copies.len() as u64;
            if copies.len() > 1 {
                n.callbacks_repeated += 1;
            }
        });
        let Some(t) = told(&first.body) else { continue };
        // The movement the callback reports, signed from the card's side.
        let signed_amount = match o.action {
            Action::Load => t.amount,
            Action::Redeem => -t.amount,
            Action::Cancel(of) => match ops[of].action {
                Action::Load => -t.amount,
                _ => t.amount,
            },
        };
        let books = t.approved && !t.already_cancelled;
        sv.count(|n| {
            if t.already_cancelled {
                n.already_cancelled += 1;
            } else if t.approved {
                n.approved += 1;
            } else {
                n.declined += 1;
            }
        });
        if books {
            delta[o.account as usize] += signed_amount;
        }
        effect.insert(
            o.request_id.clone(),
            if books { (1, signed_amount) } else { (0, 0) },
        );
    }
    *sv.posted_delta.borrow_mut() = delta;

    let ledger = ledger_movements(pg)?;
    c.movements_in_ledger = ledger.values().map(|(n, _)| *n as u64).sum();
    for (request_id, &(want_n, want_total)) in &effect {
        let (n, total) = ledger.get(request_id).copied().unwrap_or((0, 0));
        if n < want_n {
            c.lost += 1;
        } else if n > want_n {
            c.double_booked += 1;
        } else if total != want_total {
            c.amount_mismatches += 1;
        } else {
            continue;
        }
        problems.push(format!(
            "instore {request_id}: the callback says {want_n} movement(s) of {want_total}, the ledger has {n} of {total}"
        ));
    }
    for (request_id, (n, total)) in &ledger {
        if !effect.contains_key(request_id) {
            c.unaccounted_movements += 1;
            problems.push(format!(
                "instore {request_id}: {n} movement(s) of {total} that no acknowledged request explains"
            ));
        }
    }
    for p in problems {
        engine.violation(p);
    }
    Ok(c)
}
