//! InStore traffic beside the processor's and the PoS wallet's: a store tenant (configured
//! on this run's authorizer) loads, redeems and cancels on stored-value numbers linked to the
//! run's accounts, and takes wallet payments by barcode from the same accounts, through every
//! phase and fault.
//!
//! Each request is an envelope signed as InStore signs it ([`instore_sim::sim::envelope`]),
//! sent again under the same `requestId` until acknowledged (no answer, 408, 425 and 503 are
//! not acknowledgements), with extra copies during the duplicate storm. A third of the
//! approved Loads and Redeems are cancelled later under a new `requestId`, with the ids their
//! callback returned. A wallet payment (`pay_wallet`) spends a barcode the issuer's admin API
//! issued for the account's card; a third of the approved ones are refunded later
//! (`refund_wallet_payment`) or reversed by the POS's cancel log (`log_cancel_wallet`), each
//! under a new `requestId`. The callbacks go to a receiver in this process
//! ([`instore_sim::Receiver`], loopback) that records every copy.
//!
//! The checks ([`check`]): every acknowledged `requestId` has its callback at least once,
//! every copy byte-identical (body and signature) and signed with the tenant's key; it has
//! exactly one movement when its callback approved it (in `instore_movements` for the stored
//! value, a payment or return row with its posting for the wallet; none for a decline, an
//! already cancelled operation or a cancel log that reversed nothing), of the amount the
//! callback reported; no movement exists for a request never acknowledged; and the
//! callbacks' amounts feed the balance check of [`crate::verify`].

use crate::engine::{Engine, sleep_ms, wait_for_tasks};
use bytes::Bytes;
use instore_sim::wallet::pos_local_time;
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
    /// A wallet payment by a barcode issued for the account.
    Pay,
    /// `refund_wallet_payment` of the payment at this index.
    Refund(usize),
    /// `log_cancel_wallet` of the payment at this index.
    LogCancel(usize),
}

impl Action {
    /// The route the request is posted to, below the InStore base path.
    fn path(self) -> &'static str {
        match self {
            Action::Load | Action::Redeem | Action::Cancel(_) => PROCESS,
            Action::Pay => "pay_wallet",
            Action::Refund(_) => "refund_wallet_payment",
            Action::LogCancel(_) => "log_cancel_wallet",
        }
    }
}

/// One InStore request: one `requestId` and body, however often sent.
pub struct SvOp {
    pub request_id: String,
    pub action: Action,
    pub account: u32,
    /// Minor units asked (a Cancel names none; a wallet return, the payment's).
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
    /// Wallet payments, and the refunds and cancel logs of approved ones.
    pub wallet_payments: u64,
    pub wallet_refunds: u64,
    pub wallet_cancel_logs: u64,
    /// Barcodes the admin API issued, and payments not tried for want of one.
    pub barcodes: u64,
    pub barcodes_refused: u64,
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
                .connector(awc::Connector::new().rustls_0_23(processor_client::tls_from_env()))
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

/// What a callback said: approved, the amount (minor units), whether the operation was
/// already cancelled (or, for a cancel log, reversed nothing), and its data (a wallet
/// answer's data is the answer itself).
struct Told {
    approved: bool,
    amount: i64,
    already_cancelled: bool,
    data: Value,
}

fn told(body: &[u8]) -> Option<Told> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("status").is_some() {
        return Some(Told {
            approved: v["status"] == "approved",
            amount: v["data"]["amount"]["amount"].as_i64().unwrap_or(0),
            already_cancelled: v["data"]["already_cancelled"] == Value::Bool(true),
            data: v["data"].clone(),
        });
    }
    // A wallet answer: amounts are strings of minor units at precision 2 (the run's
    // currency's own).
    Some(Told {
        approved: v["result"] == "Success",
        amount: v["total"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        already_cancelled: v["reversed"] == Value::Bool(false),
        data: v,
    })
}

impl Engine {
    fn sv(&self) -> &Instore {
        &self.instore
    }

    /// Starts one new Load, Redeem or wallet payment (called by the load at the InStore
    /// rate).
    pub fn instore_new(self: &Rc<Self>) {
        let account = self.range(0, i64::from(self.sv().cards.max(1)) - 1) as u32;
        if self.chance(30) {
            // One payment in fifty asks more than any account holds: declined.
            let total = if self.chance(2) {
                100_000_000
            } else {
                self.range(100, 30_000)
            };
            self.book.touch(account);
            let e = self.clone();
            self.sv().live.set(self.sv().live.get() + 1);
            actix_rt::spawn(async move {
                e.wallet_life(account, total).await;
                e.sv().live.set(e.sv().live.get() - 1);
            });
            return;
        }
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
        let op = self.instore_op(
            action,
            account,
            amount,
            self.sv_fields(account, amount, None),
        );
        let e = self.clone();
        self.sv().live.set(self.sv().live.get() + 1);
        actix_rt::spawn(async move {
            e.instore_life(op).await;
            e.sv().live.set(e.sv().live.get() - 1);
        });
    }

    /// A stored-value request's own fields: a Load or Redeem of `amount` on `account`'s
    /// number, or a Cancel naming the ids of `cancel`'s callback.
    fn sv_fields(
        &self,
        account: u32,
        amount: i64,
        cancel: Option<&Value>,
    ) -> serde_json::Map<String, Value> {
        let currency = &self.traffic.all.currency;
        let mut payload = serde_json::Map::new();
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
                let seq = self.next_seq();
                payload.insert("amount".into(), amount_json(amount, currency));
                payload.insert("session_id".into(), format!("s-{seq}").into());
                payload.insert("reference".into(), format!("order-{seq}").into());
            }
        }
        payload
    }

    /// Records a new request of `action` with its own `fields`, as an envelope under a new
    /// `requestId`.
    fn instore_op(
        &self,
        action: Action,
        account: u32,
        amount: i64,
        fields: serde_json::Map<String, Value>,
    ) -> usize {
        let request_id = format!("{}-sv{}", self.channel_prefix, self.next_seq());
        let mut payload = serde_json::Map::new();
        payload.insert("requestId".into(), request_id.clone().into());
        payload.insert("locationId".into(), "ChaosStore".into());
        payload.insert("workstationId".into(), "POS-1".into());
        let name = match action {
            Action::Load => Some("Load"),
            Action::Redeem => Some("Redeem"),
            Action::Cancel(_) => Some("Cancel"),
            Action::Pay | Action::Refund(_) | Action::LogCancel(_) => None,
        };
        if let Some(name) = name {
            payload.insert("action".into(), name.into());
        }
        payload.extend(fields);
        let callback = format!("{}{request_id}", self.sv().receiver.prefix);
        let (body, signature) = instore_sim::sim::envelope(
            KEY.as_bytes(),
            TENANT,
            &format!("{}/{}", self.sv().base, action.path()),
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
                Action::Pay => c.wallet_payments += 1,
                Action::Refund(_) => c.wallet_refunds += 1,
                Action::LogCancel(_) => c.wallet_cancel_logs += 1,
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
        let Some(t) = self.approval_of(op).await else {
            return;
        };
        sleep_ms(self.range(50, 1500)).await;
        let account = self.sv().ops.borrow()[op].account;
        let fields = self.sv_fields(account, 0, Some(&t.data));
        let cancel = self.instore_op(Action::Cancel(op), account, 0, fields);
        self.instore_settle(cancel, Duration::from_secs(30)).await;
    }

    /// What the callback of acknowledged `op` told, once it arrives (20 s at the most), when
    /// it approved.
    async fn approval_of(&self, op: usize) -> Option<Told> {
        let request_id = self.sv().ops.borrow()[op].request_id.clone();
        let path = self.sv().callback_path(&request_id);
        let started = Instant::now();
        let body = loop {
            if let Some(c) = self.sv().receiver.first_at(&path) {
                break c.body;
            }
            if started.elapsed() > Duration::from_secs(20) {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        };
        told(&body).filter(|t| t.approved)
    }

    /// A barcode for `account`'s card, issued by the admin API (asked again while the
    /// authorizer is down, 30 s at the most; an answer lost leaves a barcode nobody uses).
    async fn barcode(&self, account: u32) -> Option<String> {
        let body = serde_json::json!({
            "user_id": self.traffic.all.user(account),
            "currency": self.traffic.all.currency,
            "card_id": format!("{}-svc-{account}", self.channel_prefix),
            "expires_in_secs": 3600,
        });
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let answer = self
                .http
                .admin(
                    awc::http::Method::POST,
                    "/v1/wallet/barcodes",
                    Some(body.clone()),
                    None,
                )
                .await;
            match answer {
                Ok((201, v)) => {
                    self.sv().count(|c| c.barcodes += 1);
                    return v["barcode"].as_str().map(str::to_owned);
                }
                Ok((s, v)) if s < 500 && s != 408 && s != 429 => {
                    self.violation(format!("barcode for account {account}: HTTP {s} {v}"));
                    return None;
                }
                _ => sleep_ms(self.range(100, 500)).await,
            }
        }
        self.sv().count(|c| c.barcodes_refused += 1);
        None
    }

    /// One wallet payment of `total` (minor units, no tip) from `account`, acknowledged, then
    /// perhaps refunded or reversed by a cancel log once its callback told its transaction.
    async fn wallet_life(self: &Rc<Self>, account: u32, total: i64) {
        let Some(barcode) = self.barcode(account).await else {
            return;
        };
        let mut fields = serde_json::Map::new();
        fields.insert("barcode".into(), barcode.clone().into());
        fields.insert("currency".into(), self.traffic.all.currency.clone().into());
        fields.insert("total".into(), total.into());
        fields.insert("pos_local_time".into(), pos_local_time().into());
        fields.insert("tip".into(), 0.into());
        fields.insert("note".into(), "chaos".into());
        let pay = self.instore_op(Action::Pay, account, total, fields);
        if !self.instore_settle(pay, Duration::from_secs(30)).await || !self.chance(33) {
            return;
        }
        let Some(t) = self.approval_of(pay).await else {
            return;
        };
        sleep_ms(self.range(50, 1500)).await;
        let paid = t.data["transaction_id"].clone();
        let mut fields = serde_json::Map::new();
        fields.insert("transaction_id".into(), paid);
        fields.insert("pos_local_time".into(), pos_local_time().into());
        let action = if self.chance(50) {
            fields.insert("note".into(), "chaos refund".into());
            Action::Refund(pay)
        } else {
            fields.insert("barcode".into(), barcode.into());
            fields.insert("total".into(), t.amount.to_string().into());
            fields.insert("tip".into(), 0.into());
            fields.insert("currency".into(), self.traffic.all.currency.clone().into());
            fields.insert("reference".into(), format!("ref-{pay}").into());
            fields.insert("response_code".into(), "00".into());
            fields.insert("error_message".into(), "cancelled at the till".into());
            Action::LogCancel(pay)
        };
        let back = self.instore_op(action, account, t.amount, fields);
        self.instore_settle(back, Duration::from_secs(30)).await;
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
        let action = self.sv().ops.borrow()[op].action;
        let url = format!("{}/{}", self.sv().base, action.path());
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

/// (count, sum of amounts) of the tenant's movements per requestId: its stored-value
/// movements, and its wallet payments and returns (named by the `x-correlation-id` every
/// copy of the request carried), as posted on the cardholder's account.
fn ledger_movements(pg: &crate::control::Postgres) -> anyhow::Result<HashMap<String, (i64, i64)>> {
    let text = pg.query(&format!(
        "SELECT coalesce(json_agg(json_build_array(request_id, n, total)), '[]') FROM \
         (SELECT request_id, count(*) AS n, sum(amount_minor)::bigint AS total \
          FROM instore_movements WHERE tenant_id = '{TENANT}' GROUP BY request_id \
          UNION ALL \
          SELECT substr(w.correlation_id, 6), count(*), sum(p.amount_minor)::bigint \
          FROM wallet_payments w JOIN postings p \
            ON p.movement_id = w.movement_id AND p.account_id = w.account_id \
          WHERE w.tenant_id = '{TENANT}' GROUP BY w.correlation_id \
          UNION ALL \
          SELECT substr(r.correlation_id, 6), count(*), sum(p.amount_minor)::bigint \
          FROM wallet_returns r \
            JOIN wallet_payments w ON w.transaction_id = r.payment_transaction_id \
            JOIN postings p ON p.movement_id = r.movement_id AND p.account_id = w.account_id \
          WHERE r.tenant_id = '{TENANT}' GROUP BY r.correlation_id) t"
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
            Action::Redeem | Action::Pay => -t.amount,
            Action::Cancel(of) => match ops[of].action {
                Action::Load => -t.amount,
                _ => t.amount,
            },
            // A return gives back all that stands of the payment: here, all of it.
            Action::Refund(_) | Action::LogCancel(_) => o.amount,
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
