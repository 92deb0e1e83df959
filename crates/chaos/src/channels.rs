//! Channel traffic beside the processor's: a PoS wallet (signed with its own
//! `[[channels.keys]]` key pair) reserves on the same accounts, then captures (in full or in
//! part), cancels, lets expire, or keeps the hold, and refunds after captures, through every
//! phase and fault of the run.
//!
//! Each reservation lives in a task of its own ([`Engine::channel_life`]): every request of
//! it is one logical channel request (one idempotency key and body) sent again under the same
//! key until it has an answer the wallet can act on (no answer, 425, 503 and the
//! reservation's SYSTEM_ERROR are not), with extra copies during the duplicate storm (a
//! capture, cancel or refund also under a new key: a replay must answer the same bytes).
//! What was answered is kept in a client-side book that the checks hold the ledger to
//! ([`crate::verify`]).

use crate::engine::{Engine, sleep_ms, wait_for_tasks};
use awc::http::Method;
use bytes::Bytes;
use loadgen::http::{Failure, Http};
use loadgen::money::{format_minor, parse_minor};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The channel's name in `[[channels.keys]]`: recorded as the holds' channel.
pub const CHANNEL: &str = "chaos-pos";
/// The channel's key pair (a throwaway authorizer: fixed values).
pub const CHANNEL_KEY: &str = "chaos-pos-1";
pub const CHANNEL_SECRET: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";
pub const RESERVATIONS: &str = "/channels/v1/reservations";

/// The authorizer's configuration layer (`AUTHORIZER_ENV=chaos`): the channel's key ring, a
/// sweeper a few times faster than the shortest holds live.
pub fn config_layer(sweep_interval_ms: u64) -> String {
    format!(
        "[[channels.keys]]\nname = \"{CHANNEL}\"\napi_key = \"{CHANNEL_KEY}\"\napi_secret = \"{CHANNEL_SECRET}\"\n\n\
         [holds]\nsweep_interval_ms = {sweep_interval_ms}\n"
    )
}

/// How a reservation is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Captured (`amount` of the reserved; less is a partial capture), then `refunds` refunds.
    Capture {
        amount: i64,
        refunds: u8,
    },
    Cancel,
    /// A short expiry, left alone: the sweeper (or the final read) expires it.
    ExpireAlone,
    /// A short expiry, then a capture just after it: 409 EXPIRED (lazily, unless the sweeper
    /// was first).
    ExpireThenCapture,
    /// A long expiry, never touched: still RESERVED at the end, counted in `held`.
    Keep,
}

/// What kind of channel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reserve,
    Capture,
    Cancel,
    Refund { amount: i64 },
}

/// One logical channel request: one key and body, however often sent.
pub struct ChOp {
    pub res: usize,
    pub kind: Kind,
    pub path: String,
    pub key: String,
    pub body: Bytes,
    pub attempts: u64,
    /// Attempts with no usable answer (no answer, 425, 5xx, a reservation's SYSTEM_ERROR).
    pub lost_attempts: u64,
    /// The first usable answer: status and body (a 200's bytes; a 409's error code).
    pub settled: Option<(u16, Bytes)>,
}

/// One reservation and what the wallet saw of it.
pub struct Reservation {
    pub id: String,
    pub account: u32,
    pub amount: i64,
    pub fate: Fate,
    pub expires_in_secs: i64,
    pub partial: bool,
    pub ops: Vec<usize>,
    /// The reservation's answer: Some(true) APPROVED, Some(false) REJECTED (not SYSTEM_ERROR).
    pub approved: Option<bool>,
    /// What ended the hold as the wallet saw it: "CAPTURED", "CANCELLED", "EXPIRED".
    pub ended: Option<&'static str>,
    pub captured: i64,
    pub refunded: i64,
}

/// Counters for the summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ChannelCounts {
    pub reservations: u64,
    pub approved: u64,
    pub rejected: u64,
    pub system_error_answers: u64,
    pub captures: u64,
    pub partial_captures: u64,
    pub cancels: u64,
    pub refunds: u64,
    /// Holds left to expire (short expiry) and those captured after expiry (409 EXPIRED).
    pub expired_left_alone: u64,
    pub expired_on_capture: u64,
    /// Of the holds left alone, expired by the sweeper before the final read (the rest lazily
    /// by the read).
    pub expired_by_sweeper: u64,
    pub kept_reserved: u64,
    /// Logical channel requests, and every HTTP attempt at them.
    pub requests: u64,
    pub http_requests: u64,
    pub duplicates: u64,
    pub new_key_duplicates: u64,
    /// Attempts with no usable answer, resent under the same key.
    pub lost_attempts: u64,
    pub too_early_425: u64,
    pub unavailable_503: u64,
    /// 408 from the server's HTTP layer (a request it did not read in time; unsigned).
    pub request_timeout_408: u64,
    pub no_answer: u64,
    /// Requests still without an answer when their reservation's task gave up, settled in the
    /// resolution phase by sending them again.
    pub resolved_at_end: u64,
    /// Slowest reservation answer (less this client's own stalls), and those answered past
    /// the deadline plus the margin as this client measured them (the server's own decision
    /// races the deadline from when it read the request; time before that, on a loaded
    /// machine around a restart, shows here).
    pub worst_reservation_ms: f64,
    pub reservations_over_deadline: u64,
    pub over_deadline_examples: Vec<String>,
    /// Slowest capture, cancel or refund answer, ms.
    pub worst_other_ms: f64,
}

/// The wallet: its signed client, its requests and reservations.
pub struct Channels {
    pub http: Http,
    pub ops: RefCell<Vec<ChOp>>,
    pub res: RefCell<Vec<Reservation>>,
    pub counts: RefCell<ChannelCounts>,
    /// Reservation tasks still running.
    pub live: Cell<u64>,
    /// New reservations per second while load runs (0: none).
    pub rate: f64,
    /// Captured and refunded minor units the wallet saw, per account (posted moves by this).
    pub posted_delta: RefCell<Vec<i64>>,
}

impl Channels {
    pub fn new(http: Http, accounts: u32, rate: f64) -> Channels {
        Channels {
            http,
            ops: RefCell::new(Vec::new()),
            res: RefCell::new(Vec::new()),
            counts: RefCell::new(ChannelCounts::default()),
            live: Cell::new(0),
            rate,
            posted_delta: RefCell::new(vec![0; accounts as usize]),
        }
    }

    fn count(&self, f: impl FnOnce(&mut ChannelCounts)) {
        f(&mut self.counts.borrow_mut());
    }

    /// Held by the wallet's book on `account`: approved, not ended.
    pub fn expected_held(&self, account: u32) -> i64 {
        self.res
            .borrow()
            .iter()
            .filter(|r| r.account == account && r.approved == Some(true) && r.ended.is_none())
            .filter(|r| matches!(r.fate, Fate::Keep | Fate::Capture { .. } | Fate::Cancel))
            .map(|r| r.amount)
            .sum()
    }
}

/// What an attempt's answer means.
enum Verdict {
    Settled,
    Retry,
    Bad(String),
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

fn error_code(body: &[u8]) -> String {
    json(body)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

impl Engine {
    fn ch(&self) -> &Channels {
        &self.channels
    }

    /// Starts one new reservation's life (called by the load at the channel rate).
    pub fn channel_new(self: &Rc<Self>) {
        let hot = self.chance(self.hot_share.get());
        let account = if hot {
            self.range(0, i64::from(self.hot_accounts.max(1)) - 1) as u32
        } else {
            self.range(0, i64::from(self.accounts) - 1) as u32
        };
        // One in fifty is more than any account holds: REJECTED / INSUFFICIENT_FUNDS, and
        // no hold may exist for it.
        let amount = if self.chance(2) {
            5_000_000
        } else {
            self.range(100, 20_000)
        };
        let roll = self.range(0, 99);
        let fate = match roll {
            0..=49 => {
                let partial = self.chance(40);
                let c = if partial {
                    self.range(1, amount - 1)
                } else {
                    amount
                };
                Fate::Capture {
                    amount: c,
                    refunds: if self.chance(50) {
                        self.range(1, 2) as u8
                    } else {
                        0
                    },
                }
            }
            50..=69 => Fate::Cancel,
            70..=81 => Fate::ExpireAlone,
            82..=93 => Fate::ExpireThenCapture,
            _ => Fate::Keep,
        };
        let expires_in_secs = match fate {
            Fate::ExpireAlone | Fate::ExpireThenCapture => self.range(2, 5),
            _ => 3600,
        };
        let seq = self.next_seq();
        let id = format!("{}-r{seq}", self.channel_prefix);
        let user = self.traffic.all.user(account);
        let body = serde_json::json!({
            "reservation_id": id,
            "user_id": user,
            "amount": format_minor(amount, self.exponent),
            "currency": self.traffic.all.currency,
            "merchant": {"id": "chaos-shop", "name": "Chaos Shop", "mcc": "5411"},
            "expires_in_secs": expires_in_secs,
            "partial_capture_possible": true,
            "reference": format!("order-{seq}"),
        });
        let idx = {
            let mut res = self.ch().res.borrow_mut();
            res.push(Reservation {
                id,
                account,
                amount,
                fate,
                expires_in_secs,
                partial: matches!(fate, Fate::Capture { amount: c, .. } if c < amount),
                ops: Vec::new(),
                approved: None,
                ended: None,
                captured: 0,
                refunded: 0,
            });
            res.len() - 1
        };
        self.book.touch(account);
        self.ch().count(|c| c.reservations += 1);
        let op = self.channel_op(
            idx,
            Kind::Reserve,
            RESERVATIONS.to_owned(),
            body.to_string(),
        );
        let e = self.clone();
        self.ch().live.set(self.ch().live.get() + 1);
        actix_rt::spawn(async move {
            e.channel_life(idx, op).await;
            e.ch().live.set(e.ch().live.get() - 1);
        });
    }

    fn channel_op(&self, res: usize, kind: Kind, path: String, body: String) -> usize {
        let key = format!("{}-k{}", self.channel_prefix, self.next_seq());
        let mut ops = self.ch().ops.borrow_mut();
        ops.push(ChOp {
            res,
            kind,
            path,
            key,
            body: Bytes::from(body),
            attempts: 0,
            lost_attempts: 0,
            settled: None,
        });
        self.ch().res.borrow_mut()[res].ops.push(ops.len() - 1);
        self.ch().count(|c| c.requests += 1);
        ops.len() - 1
    }

    /// One reservation from start to end.
    async fn channel_life(self: &Rc<Self>, idx: usize, reserve: usize) {
        if !self.channel_settle(reserve, Duration::from_secs(30)).await {
            return;
        }
        let (approved, id, fate, amount, expires_in) = {
            let r = &self.ch().res.borrow()[idx];
            (
                r.approved,
                r.id.clone(),
                r.fate,
                r.amount,
                r.expires_in_secs,
            )
        };
        if approved != Some(true) {
            return;
        }
        let started = Instant::now();
        let path = |tail: &str| format!("{RESERVATIONS}/{id}/{tail}");
        let money = |m: i64| format_minor(m, self.exponent);
        match fate {
            Fate::Keep | Fate::ExpireAlone => {}
            Fate::Cancel => {
                sleep_ms(self.range(50, 2000)).await;
                let op = self.channel_op(idx, Kind::Cancel, path("cancel"), String::new());
                self.channel_settle(op, Duration::from_secs(30)).await;
            }
            Fate::ExpireThenCapture => {
                let due = Duration::from_secs(expires_in as u64) + Duration::from_millis(50);
                actix_rt::time::sleep(due.saturating_sub(started.elapsed())).await;
                let body = serde_json::json!({ "amount": money(amount) }).to_string();
                let op = self.channel_op(idx, Kind::Capture, path("capture"), body);
                self.channel_settle(op, Duration::from_secs(30)).await;
            }
            Fate::Capture { amount: c, refunds } => {
                sleep_ms(self.range(50, 2000)).await;
                // A full capture names no amount half of the time (the reserved amount).
                let body = if c == amount && self.chance(50) {
                    "{}".to_owned()
                } else {
                    serde_json::json!({ "amount": money(c) }).to_string()
                };
                let op = self.channel_op(idx, Kind::Capture, path("capture"), body);
                if !self.channel_settle(op, Duration::from_secs(30)).await
                    || self.ch().res.borrow()[idx].ended != Some("CAPTURED")
                {
                    return;
                }
                let mut left = c;
                for n in 0..refunds {
                    sleep_ms(self.range(50, 1000)).await;
                    let r = if n + 1 == refunds {
                        self.range(1, left)
                    } else {
                        self.range(1, (left / 2).max(1))
                    };
                    if r <= 0 || left <= 0 {
                        break;
                    }
                    left -= r;
                    let body = serde_json::json!({
                        "refund_id": format!("{id}-f{n}"),
                        "amount": money(r),
                        "currency": self.traffic.all.currency,
                    })
                    .to_string();
                    let op =
                        self.channel_op(idx, Kind::Refund { amount: r }, path("refunds"), body);
                    if !self.channel_settle(op, Duration::from_secs(30)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sends `op` under its key until it has a usable answer or `patience` has passed (the
    /// resolution phase sends what is left). During the storm, extra copies.
    pub async fn channel_settle(self: &Rc<Self>, op: usize, patience: Duration) -> bool {
        let started = Instant::now();
        if self.storm.get() {
            let copies = self.range(1, 4);
            let new_key_ok = self.ch().ops.borrow()[op].kind != Kind::Reserve;
            for _ in 0..copies {
                let delay = match self.range(0, 99) {
                    0..=39 => 0,
                    40..=69 => self.range(1, 100),
                    _ => self.range(200, 2000),
                };
                let new_key = new_key_ok && self.chance(15);
                let e = self.clone();
                self.ch().count(|c| {
                    c.duplicates += 1;
                    if new_key {
                        c.new_key_duplicates += 1;
                    }
                });
                actix_rt::spawn(async move {
                    sleep_ms(delay).await;
                    let key = new_key
                        .then(|| format!("{}-nk{}", e.ch().ops.borrow()[op].key, e.next_seq()));
                    e.channel_send(op, key).await;
                });
            }
        }
        self.resend_until(
            started,
            patience,
            || self.channel_send(op, None),
            || self.ch().ops.borrow()[op].settled.is_some(),
        )
        .await
    }

    /// One HTTP attempt at `op` (under `key` instead of its own when given).
    pub async fn channel_send(&self, op: usize, key: Option<String>) {
        let (path, own_key, body, kind) = {
            let ops = self.ch().ops.borrow();
            let o = &ops[op];
            (o.path.clone(), o.key.clone(), o.body.clone(), o.kind)
        };
        let key = key.unwrap_or(own_key);
        let http = &self.ch().http;
        let signed = http.signed(&path, Some(&key), &body, loadgen::http::unix_now());
        let req = http.signed_request(Method::POST, &path, signed);
        let started = Instant::now();
        let stalled_before = self.stalled_ms.get();
        let result = http.send_processor(req, &path, body).await;
        let stalled = Duration::from_secs_f64((self.stalled_ms.get() - stalled_before) / 1000.0);
        let server = started.elapsed().saturating_sub(stalled);
        let ms = server.as_secs_f64() * 1000.0;
        self.ch().count(|c| c.http_requests += 1);
        self.stats(|p| p.channel_http_requests += 1);
        self.ch().ops.borrow_mut()[op].attempts += 1;
        let verdict = match result {
            Err(f) => {
                self.ch().count(|c| c.no_answer += 1);
                if f == Failure::Timeout && kind == Kind::Reserve {
                    Verdict::Bad(format!("no answer within {ms:.0} ms (a hang)"))
                } else {
                    Verdict::Retry
                }
            }
            Ok(a) => {
                self.ch().count(|c| {
                    if kind == Kind::Reserve {
                        c.worst_reservation_ms = c.worst_reservation_ms.max(ms);
                    } else {
                        c.worst_other_ms = c.worst_other_ms.max(ms);
                    }
                });
                if a.status == 408 {
                    // The HTTP layer's request timeout (the request was not read, nothing
                    // was processed; unsigned): no answer, sent again.
                    self.ch().count(|c| c.request_timeout_408 += 1);
                    Verdict::Retry
                } else if a.status != 401 && !a.signature_ok {
                    Verdict::Bad(format!("HTTP {} answer not signed", a.status))
                } else {
                    if kind == Kind::Reserve && server > self.deadline + self.margin {
                        // Counted and listed, not a violation: see the crate docs.
                        let status = a.status;
                        self.ch().count(|c| {
                            c.reservations_over_deadline += 1;
                            if c.over_deadline_examples.len() < 10 {
                                c.over_deadline_examples
                                    .push(format!("{key}: HTTP {status} in {ms:.0} ms"));
                            }
                        });
                    }
                    self.channel_answer(op, a.status, a.body)
                }
            }
        };
        match verdict {
            Verdict::Settled => {}
            Verdict::Retry => {
                self.ch().count(|c| c.lost_attempts += 1);
                self.ch().ops.borrow_mut()[op].lost_attempts += 1;
            }
            Verdict::Bad(msg) => {
                self.ch().ops.borrow_mut()[op].lost_attempts += 1;
                self.violation(format!("channel {path} {key}: {msg}"));
            }
        }
    }

    /// Judges an answer; the first usable one settles the request and goes into the book.
    fn channel_answer(&self, op: usize, status: u16, body: Bytes) -> Verdict {
        let (kind, res_idx, settled) = {
            let ops = self.ch().ops.borrow();
            (ops[op].kind, ops[op].res, ops[op].settled.clone())
        };
        let v = json(&body);
        match status {
            425 => {
                self.ch().count(|c| c.too_early_425 += 1);
                return Verdict::Retry;
            }
            // A capture, cancel or refund with nothing committed; a reservation whose commit's
            // answer was lost (the same key again hears what was committed).
            503 => {
                self.ch().count(|c| c.unavailable_503 += 1);
                return Verdict::Retry;
            }
            200 if kind == Kind::Reserve && v["status_detail"] == "SYSTEM_ERROR" => {
                self.ch().count(|c| c.system_error_answers += 1);
                return Verdict::Retry;
            }
            _ => {}
        }
        // What counts as this request's answer: a 200's bytes; a 409's code.
        let token = match status {
            200 => body.clone(),
            409 => Bytes::from(error_code(&body)),
            s => {
                return Verdict::Bad(format!(
                    "unexpected HTTP {s}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
            }
        };
        if let Some((s0, t0)) = settled {
            return if s0 == status && t0 == token {
                Verdict::Settled
            } else {
                Verdict::Bad(format!(
                    "a repeat got another answer: HTTP {s0} {} then HTTP {status} {}",
                    String::from_utf8_lossy(&t0),
                    String::from_utf8_lossy(&token)
                ))
            };
        }
        let mut res = self.ch().res.borrow_mut();
        let r = &mut res[res_idx];
        let amount_of = |k: &str| {
            v["reservation"][k]
                .as_str()
                .and_then(|a| parse_minor(a, self.exponent).ok())
        };
        let state = v["reservation"]["state"].as_str().unwrap_or_default();
        let problem = match (kind, status) {
            (Kind::Reserve, 200) if v["status"] == "APPROVED" => {
                r.approved = Some(true);
                self.ch().count(|c| c.approved += 1);
                (state != "RESERVED" || amount_of("amount") != Some(r.amount))
                    .then(|| "an approval that is not the reservation sent".to_owned())
            }
            (Kind::Reserve, 200) if v["status"] == "REJECTED" => {
                r.approved = Some(false);
                self.ch().count(|c| c.rejected += 1);
                None
            }
            (Kind::Capture, 200) if v["status"] == "APPROVED" && state == "CAPTURED" => {
                let c = amount_of("captured").unwrap_or(-1);
                r.ended = Some("CAPTURED");
                r.captured = c;
                self.ch().posted_delta.borrow_mut()[r.account as usize] -= c;
                let want = match r.fate {
                    Fate::Capture { amount, .. } => amount,
                    _ => -1,
                };
                self.ch().count(|n| {
                    n.captures += 1;
                    if c < r.amount {
                        n.partial_captures += 1;
                    }
                });
                (c != want).then(|| format!("captured {c}, asked {want}"))
            }
            (Kind::Capture, 409) if r.fate == Fate::ExpireThenCapture => {
                r.ended = Some("EXPIRED");
                self.ch().count(|c| c.expired_on_capture += 1);
                (token != "EXPIRED").then(|| "a capture after expiry not refused EXPIRED".into())
            }
            (Kind::Cancel, 200) if v["status"] == "APPROVED" && state == "CANCELLED" => {
                r.ended = Some("CANCELLED");
                self.ch().count(|c| c.cancels += 1);
                None
            }
            (Kind::Refund { amount }, 200) if v["status"] == "APPROVED" => {
                let got = v["refund"]["amount"]
                    .as_str()
                    .and_then(|a| parse_minor(a, self.exponent).ok());
                r.refunded += amount;
                self.ch().posted_delta.borrow_mut()[r.account as usize] += amount;
                self.ch().count(|c| c.refunds += 1);
                (got != Some(amount)).then(|| format!("refund of {amount} answered {got:?}"))
            }
            _ => Some("an answer this request cannot have".to_owned()),
        };
        drop(res);
        self.ch().ops.borrow_mut()[op].settled = Some((status, token));
        match problem {
            None => Verdict::Settled,
            Some(p) => Verdict::Bad(format!(
                "{p}: HTTP {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
        }
    }
}

/// A signed read's outcome: status and JSON.
type Read = Result<(u16, serde_json::Value), Failure>;

impl Engine {
    /// Signed GET of a reservation: status and JSON.
    pub async fn channel_get(&self, id: &str) -> Read {
        let http = &self.ch().http;
        let path = format!("{RESERVATIONS}/{id}");
        let signed = http.signed(&path, None, b"", loadgen::http::unix_now());
        let req = http.signed_request(Method::GET, &path, signed);
        let a = http.send_processor(req, &path, Bytes::new()).await?;
        Ok((a.status, json(&a.body)))
    }
}

/// What the channel checks found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ChannelChecks {
    /// Holds the ledger lists for the channel, and of them still RESERVED at the end.
    pub holds_in_ledger: u64,
    pub holds_reserved_at_end: u64,
    /// Reservations answered APPROVED that the ledger does not hold (or not once), captures
    /// and refunds answered that it did not book.
    pub lost: u64,
    /// Two capture movements for one hold, refunds booked beyond what was answered.
    pub double_booked: u64,
    /// Holds the ledger lists that the wallet never saw approved (rejected, or unknown).
    pub unaccounted_holds: u64,
    /// Holds whose state, captured or refunded amount is not what the wallet saw.
    pub state_mismatches: u64,
    /// A capture above the hold, refunds above the capture.
    pub over_captured: u64,
    pub over_refunded: u64,
    /// Requests never answered even after the resolution's resends.
    pub never_answered: u64,
    /// The final signed reads (GET) of every reservation, and those that disagreed.
    pub reads: u64,
    pub read_mismatches: u64,
    /// EXPIRED events of the channel's holds (by the sweeper or lazily, whichever came
    /// first: the ledger does not record which).
    pub expired_events: u64,
}

/// After the faults: waits for the reservations' tasks, then sends every channel request
/// still without an answer again under its key until answered, as a wallet does.
pub async fn resolve(engine: &Rc<Engine>) {
    wait_for_tasks(&engine.channels.live).await;
    let left: Vec<usize> = {
        let ops = engine.channels.ops.borrow();
        (0..ops.len())
            .filter(|&i| ops[i].settled.is_none())
            .collect()
    };
    engine
        .channels
        .count(|c| c.resolved_at_end = left.len() as u64);
    for &op in &left {
        engine.channel_settle(op, Duration::from_secs(20)).await;
    }
    // Every short hold past its expiry, and one sweep more.
    sleep_ms(5_000 + crate::SWEEP_INTERVAL_MS as i64 * 2).await;
}

/// One hold as the ledger lists it, with the movements that name it.
#[derive(Debug, serde::Deserialize)]
struct LedgerHold {
    reservation_id: String,
    state: String,
    amount: i64,
    captured: i64,
    refunded: i64,
    capture_movements: i64,
    capture_posted: i64,
    refund_movements: i64,
    refund_posted: i64,
    refund_events: i64,
}

fn ledger_holds(pg: &crate::control::Postgres) -> anyhow::Result<Vec<LedgerHold>> {
    let sql = format!(
        "SELECT coalesce(json_agg(t), '[]') FROM (SELECT h.reservation_id, h.state, \
         h.amount_minor AS amount, h.captured_minor AS captured, h.refunded_minor AS refunded, \
         (SELECT count(*) FROM movements m WHERE m.kind = 'HOLD_CAPTURE' \
            AND m.reference = h.channel || ':' || h.reservation_id) AS capture_movements, \
         (SELECT coalesce(sum(-p.amount_minor), 0)::bigint FROM movements m \
            JOIN postings p ON p.movement_id = m.id AND p.account_id = h.account_id \
            WHERE m.kind = 'HOLD_CAPTURE' AND m.reference = h.channel || ':' || h.reservation_id) \
            AS capture_posted, \
         (SELECT count(*) FROM movements m WHERE m.kind = 'HOLD_REFUND' \
            AND m.reference = h.channel || ':' || h.reservation_id) AS refund_movements, \
         (SELECT coalesce(sum(p.amount_minor), 0)::bigint FROM movements m \
            JOIN postings p ON p.movement_id = m.id AND p.account_id = h.account_id \
            WHERE m.kind = 'HOLD_REFUND' AND m.reference = h.channel || ':' || h.reservation_id) \
            AS refund_posted, \
         (SELECT count(*) FROM hold_events e WHERE e.hold_id = h.id AND e.kind = 'REFUNDED') \
            AS refund_events \
         FROM holds h WHERE h.channel = '{CHANNEL}') t"
    );
    let text = pg.query(&sql)?;
    serde_json::from_str(text.trim()).map_err(|e| anyhow::anyhow!("holds are not JSON: {e}"))
}

/// Holds the ledger to what the wallet saw: every reservation seen APPROVED exists exactly
/// once and in the state the wallet saw it end in, with at most one capture movement of the
/// captured amount and refunds of exactly what was answered; no other hold exists.
pub async fn check(
    engine: &Rc<Engine>,
    pg: &crate::control::Postgres,
) -> anyhow::Result<ChannelChecks> {
    use futures_util::{StreamExt, stream};
    use std::collections::HashMap;
    let mut c = ChannelChecks::default();
    let ch = &engine.channels;
    c.never_answered = ch
        .ops
        .borrow()
        .iter()
        .filter(|o| o.settled.is_none())
        .count() as u64;
    // Before the reads: which of the holds left alone the sweeper already expired.
    let before: HashMap<String, String> = ledger_holds(pg)?
        .into_iter()
        .map(|h| (h.reservation_id, h.state))
        .collect();
    let alone: Vec<String> = ch
        .res
        .borrow()
        .iter()
        .filter(|r| r.fate == Fate::ExpireAlone && r.approved == Some(true))
        .map(|r| r.id.clone())
        .collect();
    let swept = alone
        .iter()
        .filter(|id| before.get(*id).map(String::as_str) == Some("EXPIRED"))
        .count() as u64;
    ch.count(|n| {
        n.expired_left_alone = alone.len() as u64;
        n.expired_by_sweeper = swept;
        n.kept_reserved = ch
            .res
            .borrow()
            .iter()
            .filter(|r| r.fate == Fate::Keep && r.approved == Some(true))
            .count() as u64;
    });

    // The signed reads: what the channel is told, and the lazy expiry of what is overdue.
    let ids: Vec<(usize, String)> = ch
        .res
        .borrow()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.approved.is_some())
        .map(|(i, r)| (i, r.id.clone()))
        .collect();
    c.reads = ids.len() as u64;
    let reads: Vec<(usize, Read)> = stream::iter(ids)
        .map(|(i, id)| async move {
            let mut r = engine.channel_get(&id).await;
            for _ in 0..5 {
                if matches!(r, Ok((200 | 404, _))) {
                    break;
                }
                sleep_ms(300).await;
                r = engine.channel_get(&id).await;
            }
            (i, r)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut problems = Vec::new();
    for (i, r) in reads {
        let mut res = ch.res.borrow_mut();
        let rv = &mut res[i];
        let want_state = match (rv.approved, rv.ended, rv.fate) {
            (Some(false), _, _) => "NOT_FOUND",
            (_, Some(e), _) => e,
            (_, None, Fate::ExpireAlone | Fate::ExpireThenCapture) => "EXPIRED",
            _ => "RESERVED",
        };
        let got = match &r {
            Ok((200, v)) => v["state"].as_str().unwrap_or("?").to_owned(),
            Ok((404, v)) => v["error"]["code"].as_str().unwrap_or("?").to_owned(),
            Ok((s, v)) => format!("HTTP {s} {v}"),
            Err(f) => format!("no answer ({f})"),
        };
        let amounts_ok = match &r {
            Ok((200, v)) => {
                let m = |k: &str| {
                    v[k].as_str()
                        .and_then(|a| parse_minor(a, engine.exponent).ok())
                };
                m("amount") == Some(rv.amount)
                    && m("captured") == Some(rv.captured)
                    && m("refunded") == Some(rv.refunded)
            }
            _ => true,
        };
        if got != want_state || !amounts_ok {
            c.read_mismatches += 1;
            problems.push(format!(
                "channel reservation {}: the wallet saw {want_state} (captured {}, refunded {}), a read answers {got} {}",
                rv.id,
                rv.captured,
                rv.refunded,
                r.as_ref().map(|(_, v)| v.to_string()).unwrap_or_default()
            ));
        } else if rv.ended.is_none() && want_state == "EXPIRED" {
            rv.ended = Some("EXPIRED");
        }
    }

    c.expired_events = pg
        .query(&format!(
            "SELECT count(*) FROM hold_events e JOIN holds h ON h.id = e.hold_id \
             WHERE h.channel = '{CHANNEL}' AND e.kind = 'EXPIRED'"
        ))?
        .trim()
        .parse()
        .unwrap_or(0);

    // The ledger.
    let holds = ledger_holds(pg)?;
    c.holds_in_ledger = holds.len() as u64;
    c.holds_reserved_at_end = holds.iter().filter(|h| h.state == "RESERVED").count() as u64;
    let mut by_id: HashMap<&str, &LedgerHold> = HashMap::new();
    for h in &holds {
        if by_id.insert(&h.reservation_id, h).is_some() {
            c.double_booked += 1;
            problems.push(format!(
                "channel reservation {}: two holds",
                h.reservation_id
            ));
        }
        if h.captured > h.amount || h.capture_posted > h.amount {
            c.over_captured += 1;
            problems.push(format!(
                "channel reservation {}: captured {} ({} posted) of a hold of {}",
                h.reservation_id, h.captured, h.capture_posted, h.amount
            ));
        }
        if h.refunded > h.captured || h.refund_posted > h.capture_posted {
            c.over_refunded += 1;
            problems.push(format!(
                "channel reservation {}: refunded {} ({} posted) of {} captured",
                h.reservation_id, h.refunded, h.refund_posted, h.captured
            ));
        }
        if h.capture_movements > 1 {
            c.double_booked += 1;
            problems.push(format!(
                "channel reservation {}: {} capture movements",
                h.reservation_id, h.capture_movements
            ));
        }
        if h.refund_movements != h.refund_events {
            c.double_booked += 1;
            problems.push(format!(
                "channel reservation {}: {} refund movements for {} refund events",
                h.reservation_id, h.refund_movements, h.refund_events
            ));
        }
    }
    let res = ch.res.borrow();
    let mut seen = std::collections::HashSet::new();
    for r in res.iter() {
        let h = by_id.get(r.id.as_str());
        match (r.approved, h) {
            (None, Some(_)) | (Some(false), Some(_)) => {
                // Judged below with every hold nobody saw approved.
            }
            (Some(true), None) => {
                c.lost += 1;
                problems.push(format!(
                    "channel reservation {}: answered APPROVED, no hold in the ledger",
                    r.id
                ));
            }
            (Some(true), Some(h)) => {
                seen.insert(r.id.as_str());
                let want_state = r.ended.unwrap_or("RESERVED");
                let (want_cap_mov, want_cap) = if want_state == "CAPTURED" {
                    (1, r.captured)
                } else {
                    (0, 0)
                };
                if h.state != want_state
                    || h.amount != r.amount
                    || h.captured != want_cap
                    || h.capture_posted != want_cap
                    || h.capture_movements != want_cap_mov
                    || h.refunded != r.refunded
                    || h.refund_posted != r.refunded
                {
                    c.state_mismatches += 1;
                    if h.capture_movements < want_cap_mov || h.refund_posted < r.refunded {
                        c.lost += 1;
                    }
                    if h.refund_posted > r.refunded || h.capture_posted > want_cap {
                        c.double_booked += 1;
                    }
                    problems.push(format!(
                        "channel reservation {}: the wallet saw {want_state} of {} (captured {}, refunded {}), the ledger {h:?}",
                        r.id, r.amount, r.captured, r.refunded
                    ));
                }
            }
            (_, None) => {}
        }
    }
    for h in &holds {
        if !seen.contains(h.reservation_id.as_str()) {
            c.unaccounted_holds += 1;
            problems.push(format!(
                "channel reservation {}: a hold ({}) the wallet never saw approved",
                h.reservation_id, h.state
            ));
        }
    }
    drop(res);
    if c.never_answered > 0 {
        problems.push(format!(
            "{} channel requests never answered after the resends",
            c.never_answered
        ));
    }
    for p in problems {
        engine.violation(p);
    }
    Ok(c)
}
