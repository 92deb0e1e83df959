//! The faults, each injected under steady load.

use crate::control::{Authorizer, LockHolder, Postgres};
use crate::engine::{Engine, Expect, Got};
use bytes::Bytes;
use loadgen::book::Op;
use loadgen::money::parse_minor;
use loadgen::traffic::{ADJUST_CREDIT, ADJUST_DEBIT, AUTHORIZE_DEBIT, NOTIFY};
use protocol::TransactionRequest;
use protocol::signature;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How big each fault is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rate: f64,
    pub crash_cycles: u32,
    /// Load between two kills, ms.
    pub crash_gap_ms: (i64, i64),
    pub outages: u32,
    /// How long the database stays down, ms.
    pub outage_ms: (i64, i64),
    /// Database freezes (SIGSTOP) and how long each lasts, ms.
    pub freezes: u32,
    pub freeze_ms: i64,
    pub slow_s: f64,
    pub storm_s: f64,
    /// Finished requests sent again after the authorizer lost its memory.
    pub replays_after_restart: usize,
    pub clock_requests: u32,
    pub malformed: u32,
    pub hot_accounts: u32,
    pub authorization_skew_secs: i64,
    pub adjustment_skew_secs: i64,
}

/// What the faults act on: the load, the authorizer under test, its database, the sizes.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub engine: &'a Rc<Engine>,
    pub auth: &'a RefCell<Authorizer>,
    pub pg: &'a Postgres,
    pub plan: &'a Plan,
}

impl Target<'_> {
    /// Reads the server's metrics for the phase (counted from this life of the authorizer).
    pub async fn scrape(&self) {
        let starts = self.auth.borrow().starts;
        self.engine.scrape_server(starts).await;
    }

    /// Another session locking the hot accounts' rows, each lock held for `hold_ms` (a
    /// range) and at most `gap_ms_max` apart, until it is finished.
    fn hold_hot_accounts(&self, hold_ms: (u64, u64), gap_ms_max: u64) -> LockHolder {
        let users = (0..self.plan.hot_accounts)
            .map(|i| self.engine.traffic.all.user(i))
            .collect();
        let seed = self.engine.range(0, i64::MAX) as u64;
        LockHolder::start(self.pg.url.clone(), users, hold_ms, gap_ms_max, seed)
    }

    /// Stops the phase's load, lets it drain, and reads the server's metrics.
    pub async fn stop_load(&self, load: actix_rt::task::JoinHandle<()>) {
        self.engine.stop_load(load).await;
        self.scrape().await;
    }
}

async fn sleep_ms(ms: i64) {
    actix_rt::time::sleep(Duration::from_millis(ms.max(0) as u64)).await;
}

/// Restarts the authorizer with other settings (graceful stop, start, wait until ready).
pub async fn restart(
    engine: &Engine,
    auth: &RefCell<Authorizer>,
    overrides: &[(&str, &str)],
) -> anyhow::Result<()> {
    Authorizer::stop_gracefully(auth).await;
    auth.borrow_mut().spawn(overrides)?;
    ready(engine, auth).await
}

pub async fn ready(engine: &Engine, auth: &RefCell<Authorizer>) -> anyhow::Result<()> {
    match engine.wait_ready(Duration::from_secs(60)).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let mut a = auth.borrow_mut();
            let tail = a.log_tail();
            let state = if a.running() { "running" } else { "exited" };
            Err(e.context(format!("authorizer {state}; its log ends:\n{tail}")))
        }
    }
}

/// Batches of one request (`commit_batch_size_max = 1`: one transaction per request, several
/// at once) when `on` is false; the default batches otherwise.
fn grouped(on: bool) -> [(&'static str, &'static str); 3] {
    if on {
        [
            ("AUTHORIZER__PROCESSOR__COMMIT_BATCH_SIZE_MAX", "64"),
            ("AUTHORIZER__PROCESSOR__COMMIT_BATCH_OVERLAP_MS", "10"),
            ("AUTHORIZER__PROCESSOR__COMMIT_BATCHES_IN_FLIGHT_MAX", "4"),
        ]
    } else {
        [
            ("AUTHORIZER__PROCESSOR__COMMIT_BATCH_SIZE_MAX", "1"),
            ("AUTHORIZER__PROCESSOR__COMMIT_BATCH_OVERLAP_MS", "0"),
            ("AUTHORIZER__PROCESSOR__COMMIT_BATCHES_IN_FLIGHT_MAX", "32"),
        ]
    }
}

/// Crash: SIGKILL at random moments under load, restart, continue. Batches and one
/// transaction per request alternate from one life to the next.
pub async fn crash(t: Target<'_>) -> anyhow::Result<()> {
    t.engine.begin_phase("crash");
    let load = t.engine.start_load(t.plan.rate);
    let mut worst_restart = Duration::ZERO;
    for cycle in 0..t.plan.crash_cycles {
        sleep_ms(t.engine.range(t.plan.crash_gap_ms.0, t.plan.crash_gap_ms.1)).await;
        t.auth.borrow_mut().kill();
        t.engine.stats(|p| p.faults += 1);
        // The port is closed for a moment: the traffic meets refused connections.
        sleep_ms(t.engine.range(0, 300)).await;
        let restarted = Instant::now();
        t.auth.borrow_mut().spawn(&grouped(cycle % 2 == 1))?;
        ready(t.engine, t.auth).await?;
        worst_restart = worst_restart.max(restarted.elapsed());
    }
    sleep_ms(1000).await;
    t.stop_load(load).await;
    eprintln!(
        "chaos: {} kills, slowest restart {} ms",
        t.plan.crash_cycles,
        worst_restart.as_millis()
    );
    // Leave it on batches, the default.
    if t.plan.crash_cycles % 2 == 1 {
        restart(t.engine, t.auth, &[]).await?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("worker thread failed: {e}"))?
}

/// Database outage: the private Postgres is stopped (fast, then immediate: a crash that
/// needs recovery) under load, stays down, and is started again.
pub async fn outage(t: Target<'_>) -> anyhow::Result<()> {
    t.engine.begin_phase("db-outage");
    let load = t.engine.start_load(t.plan.rate);
    sleep_ms(1000).await;
    for i in 0..t.plan.outages {
        let mode = if i % 2 == 0 { "fast" } else { "immediate" };
        let ctl = t.pg.pg_ctl.clone();
        let url = t.pg.url.clone();
        let stopper = Postgres {
            pg_ctl: ctl.clone(),
            data_dir: t.pg.data_dir.clone(),
            url: url.clone(),
        };
        let m = mode.to_owned();
        blocking(move || stopper.stop(&m)).await?;
        t.engine.stats(|p| p.faults += 1);
        eprintln!("chaos: database stopped ({mode})");
        sleep_ms(t.engine.range(t.plan.outage_ms.0, t.plan.outage_ms.1)).await;
        let starter = Postgres {
            pg_ctl: ctl,
            data_dir: t.pg.data_dir.clone(),
            url,
        };
        blocking(move || starter.start()).await?;
        eprintln!("chaos: database started");
        sleep_ms(2000).await;
    }
    t.stop_load(load).await;
    Ok(())
}

/// Database freeze: every process of the private cluster stopped with SIGSTOP (a host that
/// hangs, or a network partition that drops packets without a reset: connections stay open
/// and nothing answers), then SIGCONT. Authorizations must still answer within the deadline;
/// adjustments and notifications must answer (503) rather than hang.
pub async fn freeze(t: Target<'_>) -> anyhow::Result<()> {
    t.engine.begin_phase("db-freeze");
    let load = t.engine.start_load(t.plan.rate);
    sleep_ms(1000).await;
    for _ in 0..t.plan.freezes {
        let pids = t.pg.pids()?;
        crate::control::signal("STOP", &pids)?;
        t.engine.stats(|p| p.faults += 1);
        eprintln!("chaos: database frozen ({} processes)", pids.len());
        sleep_ms(t.plan.freeze_ms).await;
        crate::control::signal("CONT", &pids)?;
        eprintln!("chaos: database thawed");
        sleep_ms(2000).await;
    }
    t.stop_load(load).await;
    Ok(())
}

/// Slow database: another session holds row locks on the hot accounts for longer than the
/// deadline while every request goes to them. `overrides` set the authorizer's lock and
/// statement timeouts for the phase.
pub async fn slow(t: Target<'_>, name: &str, overrides: &[(&str, &str)]) -> anyhow::Result<()> {
    restart(t.engine, t.auth, overrides).await?;
    t.engine.begin_phase(name);
    t.engine.hot_share.set(100);
    let holder = t.hold_hot_accounts((300, 1500), 150);
    let load = t.engine.start_load(t.plan.rate);
    sleep_ms((t.plan.slow_s * 1000.0) as i64).await;
    t.stop_load(load).await;
    let holds = blocking(move || Ok(holder.finish())).await?;
    t.engine.stats(|p| p.faults += holds);
    t.engine.hot_share.set(0);
    restart(t.engine, t.auth, &[]).await
}

/// Duplicate storm: every request sent 2 to 5 times (at once, within 100 ms, within a
/// second, seconds later; some under a new key), while a lock holder keeps some first
/// copies in flight long enough for the copies to get 425. Then the authorizer is killed
/// (its memory of recent answers is gone) and finished requests are sent again: the
/// database must give the identical answers.
pub async fn storm(t: Target<'_>) -> anyhow::Result<()> {
    t.engine.begin_phase("duplicate-storm");
    let first = t.engine.reqs.borrow().len();
    t.engine.storm.set(true);
    t.engine.hot_share.set(30);
    let holder = t.hold_hot_accounts((300, 700), 300);
    let load = t.engine.start_load(t.plan.rate);
    sleep_ms((t.plan.storm_s * 1000.0) as i64).await;
    t.stop_load(load).await;
    t.engine.storm.set(false);
    t.engine.hot_share.set(0);
    let holds = blocking(move || Ok(holder.finish())).await?;
    t.engine.stats(|p| p.faults += holds);

    t.auth.borrow_mut().kill();
    t.auth.borrow_mut().spawn(&[])?;
    ready(t.engine, t.auth).await?;
    let settled: Vec<usize> = {
        let reqs = t.engine.reqs.borrow();
        (first..reqs.len())
            .filter(|&i| reqs[i].settled.is_some())
            .collect()
    };
    let step = (settled.len() / t.plan.replays_after_restart.max(1)).max(1);
    for chunk in settled
        .iter()
        .step_by(step)
        .take(t.plan.replays_after_restart)
        .collect::<Vec<_>>()
        .chunks(16)
    {
        for &&i in chunk {
            t.engine.duplicate_later(i, Duration::ZERO, false);
        }
        t.engine.drain().await;
    }
    Ok(())
}

/// Clock: authorizations and adjustments signed with a clock outside the accepted window
/// must get 401 and book nothing; inside it they are processed.
pub async fn clock(engine: &Rc<Engine>, plan: &Plan) -> anyhow::Result<()> {
    engine.begin_phase("clock-skew");
    let auth_window = plan.authorization_skew_secs;
    let adj_window = plan.adjustment_skew_secs;
    for i in 0..plan.clock_requests {
        let sign = if engine.chance(50) { 1 } else { -1 };
        let idx = match i % 4 {
            // Authorization, outside its window (a little or hours off).
            0 => {
                let off = if engine.chance(50) {
                    engine.range(5, 60)
                } else {
                    engine.range(600, 86_400)
                };
                engine.plan_with(
                    &engine.traffic.purchases,
                    sign * (auth_window + off),
                    Expect::Refused,
                )
            }
            // Authorization, inside it.
            1 => engine.plan_with(
                &engine.traffic.purchases,
                sign * engine.range(0, auth_window - 10),
                Expect::Normal,
            ),
            // Adjustment, outside its (wider) window.
            2 => engine.plan_with(
                &engine.traffic.refunds,
                sign * (adj_window + engine.range(5, 3600)),
                Expect::Refused,
            ),
            // Adjustment, older than an authorization may be but inside its own window.
            _ => engine.plan_with(
                &engine.traffic.refunds,
                sign * engine.range(auth_window + 5, adj_window - 10),
                Expect::Normal,
            ),
        };
        engine.send(idx, None).await;
    }
    Ok(())
}

/// What the malformed-input probe sent and got.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Malformed {
    pub sent: u64,
    /// Per category: HTTP status -> count.
    pub by_category: BTreeMap<String, BTreeMap<u16, u64>>,
}

/// Malformed and unauthenticated input, signed or not: it must be refused with a 4xx (or,
/// for a mutated body that still reads as a request, processed like one), never a 5xx or a
/// hang, and must book nothing it did not answer for.
pub async fn malformed(engine: &Rc<Engine>, plan: &Plan) -> anyhow::Result<Malformed> {
    engine.begin_phase("malformed-input");
    let mut out = Malformed::default();
    let secret = engine.secret.clone();
    let categories = [
        "bad_signature",
        "no_signature",
        "tampered_body",
        "wrong_endpoint",
        "signed_garbage",
        "signed_truncated",
        "signed_wrong_types",
        "no_idempotency_key",
        "oversize",
        "signed_byte_flip",
        "negative_adjustment",
        "resent_other_money",
        "mcc_block_bypass",
        "forged_log_id",
    ];
    // A card of ours that blocks the traffic's MCC: the bypass attempts spell it otherwise.
    let blocked_card = format!("crd-{}-blocked", engine.traffic.all.prefix);
    let blocked_owner = engine.traffic.all.user(0);
    let (status, v) = engine
        .http
        .admin(
            awc::http::Method::PUT,
            &format!("/v1/cards/{blocked_card}"),
            Some(serde_json::json!({
                "user_id": blocked_owner, "status": "ACTIVE", "blocked_mccs": ["5045"]
            })),
            None,
        )
        .await?;
    anyhow::ensure!(
        status == 200 || status == 201,
        "registering the blocking card: HTTP {status} {v}"
    );
    for i in 0..plan.malformed {
        let category = categories[i as usize % categories.len()];
        let account = engine.range(0, i64::from(engine.accounts) - 1) as u32;
        let seq = engine.next_seq();
        // A flipped byte can turn one id into another: the byte-flipped bodies take ids whose
        // tag (`flip-`) differs from the rest's (`bad-`) in four places, so no one flipped byte
        // of theirs can land on another category's
        // (a "bad-1" flipped to "bad-3" would be booked under the id a later zero purchase
        // takes, which then meets a transaction with other terms: 409).
        let tag = if category == "signed_byte_flip" {
            "flip"
        } else {
            "bad"
        };
        let tx_id = format!("ctx-{}-{tag}-{seq}", engine.traffic.all.prefix);
        let req = engine.traffic.all.request(
            &tx_id,
            protocol::wire::TransactionType::Purchase,
            account,
            engine.range(100, 50_000),
            None,
            protocol::wire::PointType::Pos,
        );
        let valid = Bytes::from(serde_json::to_vec(&req)?);
        let key = format!("{}-bad-{seq}", engine.traffic.all.prefix);
        let now = loadgen::http::unix_now().to_string();
        let sign =
            |path: &str, body: &[u8]| (now.clone(), signature::sign(&secret, &now, path, body));
        let mut path = AUTHORIZE_DEBIT;
        let mut key_opt = Some(key.as_str());
        let (body, signed): (Bytes, Option<(String, String)>) = match category {
            "bad_signature" => {
                let mut s = sign(path, &valid);
                s.1 = format!("hmac-sha256 {}", "A".repeat(43) + "=");
                (valid.clone(), Some(s))
            }
            "no_signature" => (valid.clone(), None),
            "tampered_body" => {
                let s = sign(path, &valid);
                let t =
                    String::from_utf8_lossy(&valid).replacen("\"total\":\"", "\"total\":\"9", 1);
                (Bytes::from(t), Some(s))
            }
            "wrong_endpoint" => {
                let s = sign(ADJUST_CREDIT, &valid);
                (valid.clone(), Some(s))
            }
            "signed_garbage" => {
                let n = engine.range(0, 512) as usize;
                let b: Vec<u8> = (0..n).map(|_| engine.range(0, 255) as u8).collect();
                let b = Bytes::from(b);
                if engine.chance(30) {
                    path = NOTIFY;
                }
                (b.clone(), Some(sign(path, &b)))
            }
            "signed_truncated" => {
                let cut = engine.range(0, valid.len() as i64 - 1) as usize;
                let b = valid.slice(..cut);
                (b.clone(), Some(sign(path, &b)))
            }
            "signed_wrong_types" => {
                let mut v: serde_json::Value = serde_json::from_slice(&valid)?;
                match i % 4 {
                    0 => v["amount"]["local"]["total"] = serde_json::json!({"x": 1}),
                    1 => v["amount"]["local"]["total"] = serde_json::json!("1e3"),
                    2 => v["transaction"] = serde_json::json!(null),
                    _ => v["amount"]["local"]["total"] = serde_json::json!(true),
                }
                let b = Bytes::from(serde_json::to_vec(&v)?);
                (b.clone(), Some(sign(path, &b)))
            }
            "no_idempotency_key" => {
                key_opt = None;
                (valid.clone(), Some(sign(path, &valid)))
            }
            "oversize" => {
                let mut v: serde_json::Value = serde_json::from_slice(&valid)?;
                v["padding"] = serde_json::json!("x".repeat(70_000));
                let b = Bytes::from(serde_json::to_vec(&v)?);
                (b.clone(), Some(sign(path, &b)))
            }
            "negative_adjustment" => {
                // Adjustments and advices cannot be refused: answered 200, parked on suspense,
                // never moving the cardholder's money (the money check proves it).
                let mut v: serde_json::Value = serde_json::from_slice(&valid)?;
                v["amount"]["local"]["total"] = serde_json::json!("-12.34");
                let b = if engine.chance(50) {
                    path = ADJUST_DEBIT;
                    Bytes::from(serde_json::to_vec(&v)?)
                } else {
                    path = NOTIFY;
                    let mut detail = v;
                    detail["status"] = serde_json::json!("APPROVED");
                    detail["status_detail"] = serde_json::json!("APPROVED");
                    Bytes::from(serde_json::to_vec(&serde_json::json!({
                        "event_id": "approved-authorization-advice",
                        "event_detail": detail,
                        "idempotency_key": key,
                    }))?)
                };
                (b.clone(), Some(sign(path, &b)))
            }
            "resent_other_money" => {
                // A zero purchase (approved, nothing moves), then its transaction id under a
                // new key asking for money: never a replay of the first answer.
                let mut v: serde_json::Value = serde_json::from_slice(&valid)?;
                v["amount"]["local"]["total"] = serde_json::json!("0.00");
                let first = Bytes::from(serde_json::to_vec(&v)?);
                let first_key = format!("{key}-first");
                let r = engine
                    .http
                    .processor_raw(
                        path,
                        Some(&first_key),
                        first.clone(),
                        Some(sign(path, &first)),
                    )
                    .await;
                match r {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) => engine.violation(format!(
                        "malformed {category}: the zero purchase got HTTP {}",
                        a.status
                    )),
                    Err(f) => engine.violation(format!(
                        "malformed {category}: the zero purchase got no answer ({})",
                        f.kind()
                    )),
                }
                (valid.clone(), Some(sign(path, &valid)))
            }
            "forged_log_id" => {
                // An id that would forge a log line or colour a terminal: refused on intake.
                let mut v: serde_json::Value = serde_json::from_slice(&valid)?;
                v["transaction"]["id"] = serde_json::json!(match i % 3 {
                    0 => format!("{tx_id}\nINFO authorization decision=APPROVED"),
                    1 => format!("{tx_id}\u{1b}[31m"),
                    _ => format!("{tx_id} {}", "x".repeat(300)),
                });
                let b = Bytes::from(serde_json::to_vec(&v)?);
                (b.clone(), Some(sign(path, &b)))
            }
            "mcc_block_bypass" => {
                let mut v: serde_json::Value = serde_json::from_slice(&valid)?;
                v["user"]["id"] = serde_json::json!(blocked_owner);
                v["card"]["id"] = serde_json::json!(blocked_card);
                v["merchant"]["mcc"] = match i % 3 {
                    0 => serde_json::json!(" 5045"),
                    1 => serde_json::json!("05045"),
                    _ => serde_json::Value::Null,
                };
                let b = Bytes::from(serde_json::to_vec(&v)?);
                (b.clone(), Some(sign(path, &b)))
            }
            _ => {
                let mut b = valid.to_vec();
                let at = engine.range(0, b.len() as i64 - 1) as usize;
                b[at] ^= 1 << engine.range(0, 6);
                let b = Bytes::from(b);
                (b.clone(), Some(sign(path, &b)))
            }
        };
        let started = Instant::now();
        let r = engine
            .http
            .processor_raw(path, key_opt, body.clone(), signed)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        out.sent += 1;
        engine.stats(|p| p.http_requests += 1);
        let a = match r {
            Ok(a) => a,
            Err(f) => {
                engine.violation(format!(
                    "malformed {category}: no answer ({}) after {ms:.0} ms",
                    f.kind()
                ));
                continue;
            }
        };
        *out.by_category
            .entry(category.to_owned())
            .or_default()
            .entry(a.status)
            .or_default() += 1;
        engine.stats(|p| {
            *p.status.entry(a.status).or_default() += 1;
            p.worst_authorization_ms = p.worst_authorization_ms.max(ms);
        });
        let expected_ok = match category {
            "bad_signature" | "no_signature" | "tampered_body" | "wrong_endpoint" => {
                a.status == 401
            }
            "oversize" => a.status == 413,
            "signed_byte_flip" => a.status == 200 || (400..500).contains(&a.status),
            "negative_adjustment" => {
                a.status == 200
                    && (path == NOTIFY || String::from_utf8_lossy(&a.body).contains("SUSPENSE"))
            }
            "resent_other_money" => a.status == 409,
            "forged_log_id" => {
                a.status == 400 && String::from_utf8_lossy(&a.body).contains("transaction.id")
            }
            "mcc_block_bypass" => {
                a.status == 200 && String::from_utf8_lossy(&a.body).contains("\"INVALID_MERCHANT\"")
            }
            _ => (400..500).contains(&a.status) && a.status != 401,
        };
        if !expected_ok {
            engine.violation(format!(
                "malformed {category}: HTTP {} {}",
                a.status,
                String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
            ));
        }
        if a.status == 200 && category == "signed_byte_flip" {
            // The mutated body still reads as a request: account for what it did.
            settle_mutated(engine, &body, &a.body, &key);
        }
    }
    Ok(out)
}

/// A byte-flipped body that was answered 200: it is a real request now, on whichever of our
/// accounts and for whatever amount it names; record it so the money check includes it.
fn settle_mutated(engine: &Rc<Engine>, body: &Bytes, answer: &Bytes, key: &str) {
    let Ok(req) = TransactionRequest::from_slice(body) else {
        engine.violation(format!(
            "malformed {key}: HTTP 200 for a body that does not parse"
        ));
        return;
    };
    let prefix = format!("{}-", engine.traffic.all.prefix);
    let account = req
        .user
        .as_ref()
        .and_then(|u| u.id.strip_prefix(&prefix))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|&n| n < engine.accounts);
    let amount = parse_minor(req.amount.local.total.text(), engine.exponent).ok();
    let approved = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v.get("status_detail")?.as_str().map(|s| s == "APPROVED"))
        .unwrap_or(false);
    match (account, amount, req.amount.local.currency.as_str()) {
        (Some(a), Some(m), c) if c == engine.traffic.all.currency && m >= 0 => {
            let planned = loadgen::traffic::Planned {
                kind: loadgen::mix::Kind::Purchase,
                account: a,
                path: AUTHORIZE_DEBIT,
                key: key.to_owned(),
                body: body.clone(),
                op: Some(Op::Debit { amount: m }),
                expected: None,
                earlier: None,
            };
            let idx = engine.register(planned, 0, Expect::Normal);
            engine.reqs.borrow_mut()[idx].attempts.push(Got::Answer {
                status: 200,
                body: answer.clone(),
                signature_ok: true,
            });
            engine.answered(idx, answer);
        }
        _ if approved => engine.violation(format!(
            "malformed {key}: approved for an account or amount that is not ours: {}",
            String::from_utf8_lossy(body)
        )),
        _ => {}
    }
}
