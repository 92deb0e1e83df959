//! Requests and what became of them: every logical request the chaos run sends, each HTTP
//! attempt at it (first send, duplicates, resends) and the one stored answer that settles it.
//!
//! Requests are built and judged with the load generator's own pieces (`loadgen::traffic`,
//! `loadgen::book`), so the chaos run and the load runs agree on what an answer means.

use bytes::Bytes;
use loadgen::book::{Book, Op, judge};
use loadgen::http::{Failure, Http};
use loadgen::rng::Rng;
use loadgen::traffic::{AUTHORIZE, AUTHORIZE_DEBIT, Earlier, NOTIFY, Past, Planned, Traffic};
use protocol::{Notification, TransactionRequest};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the client got for one HTTP attempt.
#[derive(Debug, Clone)]
pub enum Got {
    Answer {
        status: u16,
        body: Bytes,
        signature_ok: bool,
    },
    Failed(Failure),
}

/// How a request is expected to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Processed normally.
    Normal,
    /// Refused with 401 (signed with a clock outside the accepted window).
    Refused,
}

/// One logical request: one idempotency key and body, however many times it was sent.
pub struct Logical {
    pub planned: Planned,
    /// The processor transaction id in the body.
    pub tx_id: String,
    /// Seconds added to the clock when signing.
    pub skew: i64,
    pub expect: Expect,
    /// Every attempt's outcome, in the order the answers arrived.
    pub attempts: Vec<Got>,
    /// The first stored answer (any HTTP 200 but an authorization's SYSTEM_ERROR): what the
    /// request did. Every later 200 must be byte-identical.
    pub settled: Option<Bytes>,
    /// Whether the settled answer approved a debit authorization (money taken).
    pub approved_debit: bool,
    /// Whether the settled answer booked an adjustment on the account.
    pub booked_adjustment: bool,
}

impl Logical {
    pub fn is_authorization(&self) -> bool {
        self.planned.path == AUTHORIZE || self.planned.path == AUTHORIZE_DEBIT
    }

    pub fn is_notification(&self) -> bool {
        self.planned.path == NOTIFY
    }

    pub fn moves_money(&self) -> bool {
        self.planned.op.is_some_and(|op| op.moves_money())
    }

    /// Whether some attempt got no answer the request can be judged by (no answer, 425, 5xx).
    pub fn had_lost_attempt(&self) -> bool {
        self.attempts.iter().any(|g| match g {
            Got::Failed(_) => true,
            Got::Answer { status, .. } => *status == 425 || *status >= 500,
        })
    }
}

/// Counters of one phase.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PhaseStats {
    pub name: String,
    /// Logical requests first sent in this phase.
    pub requests: u64,
    /// HTTP attempts made during this phase (first sends, duplicates, resends).
    pub http_requests: u64,
    /// Extra copies of requests already sent (same key, or same transaction under a new key).
    pub duplicates: u64,
    pub new_key_duplicates: u64,
    /// Faults injected (crashes, outages, lock holds), by the phase's own meaning.
    pub faults: u64,
    pub status: BTreeMap<u16, u64>,
    /// Decisions of stored answers (status_detail, or the notification effect).
    pub decisions: BTreeMap<String, u64>,
    pub too_early_425: u64,
    pub unavailable_503: u64,
    pub system_errors: u64,
    pub connect_failures: u64,
    pub transport_failures: u64,
    pub timeouts: u64,
    /// Slowest answer to an authorization (any status), ms, less the time this client's own
    /// event loop was stalled meanwhile.
    pub worst_authorization_ms: f64,
    /// The same as measured, stalls included.
    pub worst_authorization_raw_ms: f64,
    /// Most HTTP requests out at once (the client keeps at most 512 connections).
    pub max_in_flight: u64,
    /// Answers during which this client was stalled for more than 50 ms.
    pub answers_during_client_stalls: u64,
    /// Authorizations the server itself timed at over 1 s (its /metrics histogram, read at
    /// the end of the phase; `None` when the process was killed first).
    pub server_authorizations_over_1s: Option<u64>,
    /// ... and over the deadline (0.8 s bucket).
    pub server_authorizations_over_deadline: Option<u64>,
    /// Slowest answer to an adjustment or notification, ms.
    pub worst_other_ms: f64,
    /// HTTP attempts of the channel (reservations, captures, cancels, refunds) in this phase.
    pub channel_http_requests: u64,
    /// Reservations first sent in this phase.
    pub channel_reservations: u64,
    pub elapsed_s: f64,
}

/// Which request builders the load uses.
pub struct Traffics {
    /// The configured mix over every account.
    pub all: Traffic,
    /// The same mix over the hot accounts (the ones a lock holder locks).
    pub hot: Traffic,
    /// Purchases only (clock and malformed tests).
    pub purchases: Traffic,
    /// Refunds only.
    pub refunds: Traffic,
}

pub struct Engine {
    pub http: Http,
    /// The processor secret the requests are signed with.
    pub secret: protocol::ApiSecret,
    pub traffic: Traffics,
    /// Percent of new requests that go to the hot accounts.
    pub hot_share: Cell<u64>,
    /// Each new request is sent again up to 4 more times, at once and after delays.
    pub storm: Cell<bool>,
    pub past: Mutex<Past>,
    pub book: Book,
    pub rng: RefCell<Rng>,
    seq: Cell<u64>,
    pub reqs: RefCell<Vec<Logical>>,
    pub phases: RefCell<Vec<PhaseStats>>,
    phase_started: Cell<Option<Instant>>,
    pub violations: RefCell<Vec<String>>,
    /// Attempts sent or scheduled and not yet answered.
    pub outstanding: Cell<usize>,
    loading: Cell<bool>,
    pub deadline: Duration,
    pub margin: Duration,
    pub exponent: u8,
    pub accounts: u32,
    /// Milliseconds this client's own event loop was stalled (a 5 ms timer firing late) since
    /// the start: on a loaded machine the client itself can be descheduled, and a stall while
    /// a request is out is not the server's time.
    pub stalled_ms: Cell<f64>,
    /// HTTP requests out right now.
    sending: Cell<u64>,
    /// The last /metrics reading: (authorizer start it belongs to, over 0.8 s, over 1 s).
    last_scrape: Cell<(u64, u64, u64)>,
    /// The PoS wallet beside the processor: reservations, captures, cancels, refunds.
    pub channels: crate::channels::Channels,
    /// Reservation and key prefix of the wallet's requests.
    pub channel_prefix: String,
    /// The hot accounts are the first this many.
    pub hot_accounts: u32,
    /// The InStore store beside them: Loads, Redeems, Cancels and their callbacks.
    pub instore: crate::instore::Instore,
}

/// The kind of request a path carries.
fn is_authorization_path(path: &str) -> bool {
    path == AUTHORIZE || path == AUTHORIZE_DEBIT
}

fn status_detail(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("status_detail")?.as_str().map(str::to_owned)
}

/// The processor transaction id a body names.
pub fn transaction_id(path: &str, body: &[u8]) -> String {
    if path == NOTIFY {
        Notification::from_slice(body)
            .ok()
            .and_then(|n| n.event_detail.transaction.map(|t| t.id))
            .unwrap_or_default()
    } else {
        TransactionRequest::from_slice(body)
            .map(|r| r.transaction.id)
            .unwrap_or_default()
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: Http,
        secret: protocol::ApiSecret,
        traffic: Traffics,
        accounts: u32,
        seed: u64,
        deadline: Duration,
        margin: Duration,
        exponent: u8,
        channels: crate::channels::Channels,
        hot_accounts: u32,
        instore: crate::instore::Instore,
    ) -> Engine {
        Engine {
            http,
            secret,
            traffic,
            hot_share: Cell::new(0),
            storm: Cell::new(false),
            past: Mutex::new(Past::default()),
            book: Book::new(accounts),
            rng: RefCell::new(Rng::new(seed)),
            seq: Cell::new(0),
            reqs: RefCell::new(Vec::new()),
            phases: RefCell::new(Vec::new()),
            phase_started: Cell::new(None),
            violations: RefCell::new(Vec::new()),
            outstanding: Cell::new(0),
            loading: Cell::new(false),
            deadline,
            margin,
            exponent,
            accounts,
            stalled_ms: Cell::new(0.0),
            last_scrape: Cell::new((0, 0, 0)),
            sending: Cell::new(0),
            channels,
            channel_prefix: format!("cx{seed}"),
            hot_accounts,
            instore,
        }
    }

    /// Reads the authorizer's own timing of authorizations (/metrics) into the current phase:
    /// how many it answered in over 0.8 s and over 1 s since the last reading (`start` is its
    /// start count: a new process starts from zero).
    pub async fn scrape_server(&self, start: u64) {
        let Ok((200, text)) = self.http.get_text("/metrics").await else {
            return;
        };
        let (mut total, mut le08, mut le1) = (0u64, 0u64, 0u64);
        for line in text.lines() {
            if !line.starts_with("authorizer_request_duration_seconds_bucket{")
                || !line.contains("route=\"/transactions/authorizations")
            {
                continue;
            }
            let Some(n) = line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if line.contains("le=\"+Inf\"") {
                total += n;
            } else if line.contains("le=\"0.8\"") {
                le08 += n;
            } else if line.contains("le=\"1\"") {
                le1 += n;
            }
        }
        let (over08, over1) = (total - le08.min(total), total - le1.min(total));
        let (last_start, last08, last1) = self.last_scrape.get();
        let (d08, d1) = if last_start == start {
            (over08.saturating_sub(last08), over1.saturating_sub(last1))
        } else {
            (over08, over1)
        };
        self.last_scrape.set((start, over08, over1));
        self.stats(|p| {
            p.server_authorizations_over_deadline =
                Some(p.server_authorizations_over_deadline.unwrap_or(0) + d08);
            p.server_authorizations_over_1s =
                Some(p.server_authorizations_over_1s.unwrap_or(0) + d1);
        });
    }

    /// Watches this thread's event loop: every 5 ms timer that fires more than 5 ms late adds
    /// its lateness to [`Engine::stalled_ms`].
    pub fn watch_stalls(self: &Rc<Self>) {
        let e = self.clone();
        actix_rt::spawn(async move {
            let tick = Duration::from_millis(5);
            loop {
                let t = Instant::now();
                actix_rt::time::sleep(tick).await;
                let late = t.elapsed().saturating_sub(tick);
                if late > tick {
                    e.stalled_ms
                        .set(e.stalled_ms.get() + late.as_secs_f64() * 1000.0);
                }
            }
        });
    }

    pub fn violation(&self, v: String) {
        // Named by the phase it happened in (the fault then under way).
        let v = match self.phases.borrow().last() {
            Some(p) => format!("[{}] {v}", p.name),
            None => v,
        };
        eprintln!("chaos: VIOLATION {v}");
        self.violations.borrow_mut().push(v);
    }

    /// Starts a new phase: from now on attempts count in it.
    pub fn begin_phase(&self, name: &str) {
        self.end_phase();
        eprintln!("chaos: phase {name}");
        self.phases.borrow_mut().push(PhaseStats {
            name: name.to_owned(),
            ..PhaseStats::default()
        });
        self.phase_started.set(Some(Instant::now()));
    }

    pub fn end_phase(&self) {
        if let (Some(t), Some(p)) = (
            self.phase_started.take(),
            self.phases.borrow_mut().last_mut(),
        ) {
            p.elapsed_s = t.elapsed().as_secs_f64();
        }
    }

    pub fn stats(&self, f: impl FnOnce(&mut PhaseStats)) {
        if let Some(p) = self.phases.borrow_mut().last_mut() {
            f(p);
        }
    }

    pub fn chance(&self, percent: u64) -> bool {
        self.rng.borrow_mut().chance(percent)
    }

    pub fn range(&self, lo: i64, hi: i64) -> i64 {
        self.rng.borrow_mut().range(lo, hi)
    }

    pub fn next_seq(&self) -> u64 {
        let s = self.seq.get();
        self.seq.set(s + 1);
        s
    }

    /// Plans a new logical request with `traffic` and registers it; returns its index.
    pub fn plan_with(&self, traffic: &Traffic, skew: i64, expect: Expect) -> usize {
        let seq = self.next_seq();
        let planned = traffic.plan(&mut self.rng.borrow_mut(), seq, &self.past);
        self.register(planned, skew, expect)
    }

    pub fn register(&self, planned: Planned, skew: i64, expect: Expect) -> usize {
        self.book.touch(planned.account);
        let tx_id = transaction_id(planned.path, &planned.body);
        let mut reqs = self.reqs.borrow_mut();
        reqs.push(Logical {
            planned,
            tx_id,
            skew,
            expect,
            attempts: Vec::new(),
            settled: None,
            approved_debit: false,
            booked_adjustment: false,
        });
        self.stats(|p| p.requests += 1);
        reqs.len() - 1
    }

    /// A new request from the configured mix (on the hot accounts `hot_share` percent of
    /// the time).
    pub fn plan_new(&self) -> usize {
        let hot = self.chance(self.hot_share.get());
        let t = if hot {
            &self.traffic.hot
        } else {
            &self.traffic.all
        };
        self.plan_with(t, 0, Expect::Normal)
    }

    /// Sends request `idx` once (under `key` instead of its own when given) and records what
    /// came back.
    pub async fn send(self: &Rc<Self>, idx: usize, key: Option<String>) {
        let (path, own_key, body, skew) = {
            let reqs = self.reqs.borrow();
            let l = &reqs[idx];
            (
                l.planned.path,
                l.planned.key.clone(),
                l.planned.body.clone(),
                l.skew,
            )
        };
        let key = key.unwrap_or(own_key);
        self.outstanding.set(self.outstanding.get() + 1);
        let started = Instant::now();
        let stalled_before = self.stalled_ms.get();
        let ts = loadgen::http::unix_now() + skew;
        self.sending.set(self.sending.get() + 1);
        let now_out = self.sending.get();
        self.stats(|p| p.max_in_flight = p.max_in_flight.max(now_out));
        let result = self.http.processor_at(path, &key, body, ts).await;
        self.sending.set(self.sending.get() - 1);
        let latency = started.elapsed();
        let stalled = Duration::from_secs_f64((self.stalled_ms.get() - stalled_before) / 1000.0);
        self.outstanding.set(self.outstanding.get() - 1);
        let got = match result {
            Ok(a) => Got::Answer {
                status: a.status,
                body: a.body,
                signature_ok: a.signature_ok,
            },
            Err(f) => Got::Failed(f),
        };
        self.record(idx, latency, stalled, got);
    }

    /// Sends request `idx` again after `delay`, as a duplicate.
    pub fn duplicate_later(self: &Rc<Self>, idx: usize, delay: Duration, new_key: bool) {
        let e = self.clone();
        self.outstanding.set(self.outstanding.get() + 1);
        self.stats(|p| {
            p.duplicates += 1;
            if new_key {
                p.new_key_duplicates += 1;
            }
        });
        actix_rt::spawn(async move {
            if !delay.is_zero() {
                actix_rt::time::sleep(delay).await;
            }
            let key =
                new_key.then(|| format!("{}-nk{}", e.reqs.borrow()[idx].planned.key, e.next_seq()));
            e.send(idx, key).await;
            e.outstanding.set(e.outstanding.get() - 1);
        });
    }

    fn record(&self, idx: usize, latency: Duration, stalled: Duration, got: Got) {
        let ms = latency.as_secs_f64() * 1000.0;
        // What the server took, as well as this client can tell: its own stalls removed.
        let server = latency.saturating_sub(stalled);
        let server_ms = server.as_secs_f64() * 1000.0;
        let (path, expect, key) = {
            let reqs = self.reqs.borrow();
            let l = &reqs[idx];
            (l.planned.path, l.expect, l.planned.key.clone())
        };
        let authorization = is_authorization_path(path);
        self.stats(|p| p.http_requests += 1);
        match &got {
            Got::Failed(f) => {
                self.stats(|p| match f {
                    Failure::Connect => p.connect_failures += 1,
                    Failure::Transport => p.transport_failures += 1,
                    Failure::Timeout => p.timeouts += 1,
                });
                if *f == Failure::Timeout {
                    self.violation(format!(
                        "{path} {key}: no answer within {ms:.0} ms (a hang)"
                    ));
                }
            }
            Got::Answer {
                status,
                body,
                signature_ok,
            } => {
                let status = *status;
                self.stats(|p| {
                    *p.status.entry(status).or_default() += 1;
                    if authorization {
                        p.worst_authorization_ms = p.worst_authorization_ms.max(server_ms);
                        p.worst_authorization_raw_ms = p.worst_authorization_raw_ms.max(ms);
                    } else {
                        p.worst_other_ms = p.worst_other_ms.max(server_ms);
                    }
                    if stalled.as_millis() > 50 {
                        p.answers_during_client_stalls += 1;
                    }
                });
                if status != 401 && !signature_ok {
                    self.violation(format!("{path} {key}: HTTP {status} answer not signed"));
                }
                if authorization && server > self.deadline + self.margin {
                    self.violation(format!(
                        "{path} {key}: answered in {server_ms:.0} ms ({ms:.0} ms less {:.0} ms this client was stalled), past the deadline of {} ms plus {} ms",
                        stalled.as_secs_f64() * 1000.0,
                        self.deadline.as_millis(),
                        self.margin.as_millis()
                    ));
                }
                match (expect, status) {
                    (Expect::Refused, 401) => {}
                    (Expect::Refused, s) => self.violation(format!(
                        "{path} {key}: signed outside the clock window but answered HTTP {s}"
                    )),
                    (Expect::Normal, 200) => self.answered(idx, body),
                    (Expect::Normal, 425) => self.stats(|p| p.too_early_425 += 1),
                    (Expect::Normal, 503) if !authorization => {
                        self.stats(|p| p.unavailable_503 += 1)
                    }
                    (Expect::Normal, s) => self.violation(format!(
                        "{path} {key}: unexpected HTTP {s}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )),
                }
            }
        }
        self.reqs.borrow_mut()[idx].attempts.push(got);
    }

    /// An HTTP 200: settles the request the first time, must repeat the same answer after.
    pub fn answered(&self, idx: usize, body: &Bytes) {
        let mut reqs = self.reqs.borrow_mut();
        let l = &mut reqs[idx];
        let authorization = l.is_authorization();
        if authorization && status_detail(body).as_deref() == Some("SYSTEM_ERROR") {
            // Not stored: the next attempt processes the request anew.
            self.stats(|p| p.system_errors += 1);
            return;
        }
        if let Some(first) = &l.settled {
            if first != body {
                let msg = format!(
                    "{} {}: a repeat got another answer: {} then {}",
                    l.planned.path,
                    l.planned.key,
                    String::from_utf8_lossy(first),
                    String::from_utf8_lossy(body)
                );
                drop(reqs);
                self.violation(msg);
            }
            return;
        }
        l.settled = Some(body.clone());
        let Some(op) = l.planned.op else {
            return;
        };
        let j = judge(&op, body, self.exponent);
        self.book.apply(l.planned.account, j.delta);
        l.approved_debit = matches!(op, Op::Debit { .. }) && j.approved;
        l.booked_adjustment = matches!(op, Op::Adjust { .. }) && j.delta != 0;
        let decision = j.decision.clone();
        self.stats(|p| *p.decisions.entry(decision).or_default() += 1);
        if let Some(e) = &l.planned.earlier {
            self.past.lock().expect("past").answered(Earlier {
                approved: j.approved,
                ..e.clone()
            });
        }
        if let Some(problem) = j.problem {
            let msg = format!(
                "{} {}: {problem}: {}",
                l.planned.path,
                l.planned.key,
                String::from_utf8_lossy(body)
            );
            drop(reqs);
            self.violation(msg);
        }
    }

    /// Starts steady traffic at `rate` requests per second until [`Engine::stop_load`].
    pub fn start_load(self: &Rc<Self>, rate: f64) -> actix_rt::task::JoinHandle<()> {
        self.loading.set(true);
        // The wallet's new reservations and the store's Loads and Redeems, beside the
        // processor's traffic; their lives (captures, cancels, refunds, expiries; Cancels)
        // run on across phases and faults.
        self.tick_while_loading(self.channels.rate, |e| {
            e.stats(|p| p.channel_reservations += 1);
            e.channel_new();
        });
        self.tick_while_loading(self.instore.rate, |e| e.instore_new());
        self.tick_while_loading(rate, |e| {
            let idx = e.plan_new();
            if e.storm.get() {
                e.schedule_copies(idx);
            }
            let s = e.clone();
            actix_rt::spawn(async move { s.send(idx, None).await });
        })
    }

    /// Calls `new` `rate` times a second (none at 0) while the load runs; a late moment skips
    /// ahead rather than bursting.
    fn tick_while_loading(
        self: &Rc<Self>,
        rate: f64,
        new: fn(&Rc<Engine>),
    ) -> actix_rt::task::JoinHandle<()> {
        let e = self.clone();
        actix_rt::spawn(async move {
            if rate <= 0.0 {
                return;
            }
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            while e.loading.get() {
                actix_rt::time::sleep_until(next.into()).await;
                next += interval;
                if Instant::now() > next + Duration::from_secs(1) {
                    // Fell behind (a blocked moment): do not burst to catch up.
                    next = Instant::now();
                }
                if e.loading.get() {
                    new(&e);
                }
            }
        })
    }

    /// Up to four more copies of a new request: at once, within 100 ms, within a second, or
    /// seconds later; one in ten of an authorization's or adjustment's under a new key.
    fn schedule_copies(self: &Rc<Self>, idx: usize) {
        let copies = self.range(1, 4);
        let new_key_allowed = !self.reqs.borrow()[idx].is_notification();
        for _ in 0..copies {
            let delay = match self.range(0, 99) {
                0..=34 => 0,
                35..=59 => self.range(1, 100),
                60..=84 => self.range(200, 800),
                _ => self.range(1000, 3000),
            };
            let new_key = new_key_allowed && self.chance(10);
            self.duplicate_later(idx, Duration::from_millis(delay as u64), new_key);
        }
    }

    /// Stops the steady traffic and waits until every attempt is answered or has failed.
    pub async fn stop_load(&self, load: actix_rt::task::JoinHandle<()>) {
        self.loading.set(false);
        let _ = load.await;
        self.drain().await;
    }

    /// Sends with `send` until `settled` says the request has its answer, or `patience` has
    /// passed since `started`; waits a little longer after each attempt. Whether it settled.
    pub(crate) async fn resend_until<F: std::future::Future<Output = ()>>(
        &self,
        started: Instant,
        patience: Duration,
        mut send: impl FnMut() -> F,
        settled: impl Fn() -> bool,
    ) -> bool {
        let mut attempt = 0u64;
        loop {
            send().await;
            if settled() {
                return true;
            }
            if started.elapsed() > patience {
                return false;
            }
            attempt += 1;
            sleep_ms(self.range(100, 300) + 100 * attempt.min(5) as i64).await;
        }
    }

    pub async fn drain(&self) {
        while self.outstanding.get() > 0 {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the authorizer answers /healthz.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = self
                .http
                .admin(awc::http::Method::GET, "/healthz", None, None)
                .await
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                anyhow::bail!("the authorizer did not answer /healthz within {within:?}");
            }
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Sleeps `ms` milliseconds; not at all for none or less.
pub(crate) async fn sleep_ms(ms: i64) {
    if ms > 0 {
        actix_rt::time::sleep(Duration::from_millis(ms as u64)).await;
    }
}

/// Waits, at most two minutes, until no task counted in `live` is running.
pub(crate) async fn wait_for_tasks(live: &Cell<u64>) {
    let started = Instant::now();
    while live.get() > 0 && started.elapsed() < Duration::from_secs(120) {
        sleep_ms(50).await;
    }
}
