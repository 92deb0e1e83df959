//! After the faults: settle every request whose answer was lost, as the processor does,
//! then check the ledger against every answer the client saw.

use crate::control::{Authorizer, Postgres};
use crate::engine::{Engine, Expect};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use loadgen::money::{format_minor, parse_minor};
use loadgen::traffic::NOTIFY;
use protocol::{Notification, TransactionRequest};
use serde::Serialize;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// What the checks found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Checks {
    /// Debit authorizations with no answer the client could use (dropped connection, refused
    /// connection, timeout, 425), never answered later.
    pub lost_answers: u64,
    /// Of those, booked once before the advice (the rest: not at all).
    pub lost_booked: u64,
    pub lost_not_booked: u64,
    /// REJECTED advices sent for lost answers, and what they reported.
    pub advices_sent: u64,
    pub advices_reversed: u64,
    /// Authorizations answered only SYSTEM_ERROR (nothing may be booked for them).
    pub system_error_only: u64,
    /// Of those, booked without the authorizer reporting the commit's outcome as unknown
    /// (must be 0).
    pub system_error_booked: u64,
    /// SYSTEM_ERROR answers the authorizer logged as "commit outcome unknown" (the connection
    /// failed after COMMIT was sent).
    pub uncertain_commits_reported: u64,
    /// Of those, committed after all: reversed by the processor's advice, sent like the
    /// advices for lost answers.
    pub uncertain_commits_booked: u64,
    /// Adjustments and notifications without a stored answer (503, lost, 425) sent again
    /// with the same key and body until stored.
    pub resent_until_stored: u64,
    /// Requests signed outside the clock window (refused with 401) that left a trace.
    pub refused_but_recorded: u64,
    /// Stored answers the ledger does not hold: approved authorizations or booked adjustments
    /// with no movement.
    pub lost: u64,
    /// Movements booked more than once for one processor transaction and kind.
    pub double_booked: u64,
    /// Answers other than APPROVED that have an authorization movement.
    pub declined_but_booked: u64,
    pub accounts_checked: u64,
    /// Accounts whose posted balance is not exactly the funding plus what the answers said,
    /// or whose held amount is not the holds the wallet saw approved and not ended.
    pub balance_mismatches: u64,
    pub mismatch_examples: Vec<String>,
    pub audit_exit_code: Option<i32>,
    pub audit_output: String,
    /// The channel's reservations, captures, cancels and refunds against the holds.
    pub channel: crate::channels::ChannelChecks,
    /// The InStore requests against their callbacks and movements.
    pub instore: crate::instore::InstoreChecks,
    /// The events delivered to the subscriber against what the ledger owes it.
    pub webhooks: crate::webhooks::WebhookChecks,
}

/// Movements per (kind, processor transaction id). Read as one JSON document: transaction
/// ids come from mutated bodies too and may hold any separator.
fn movement_counts(pg: &Postgres) -> anyhow::Result<HashMap<(String, String), u64>> {
    let text = pg.query(
        "SELECT coalesce(json_agg(json_build_array(kind, transaction_id, n)), '[]') FROM \
         (SELECT kind, transaction_id, count(*) AS n FROM movements \
          WHERE transaction_id IS NOT NULL GROUP BY 1, 2) t",
    )?;
    let list: Vec<(String, String, u64)> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("movement counts are not JSON: {e}"))?;
    Ok(list
        .into_iter()
        .map(|(kind, tx, n)| ((kind, tx), n))
        .collect())
}

fn count(m: &HashMap<(String, String), u64>, kind: &str, tx: &str) -> u64 {
    m.get(&(kind.to_owned(), tx.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// The REJECTED advice the processor sends for an authorization it timed out on.
fn advice(body: &[u8], key: &str) -> Option<Bytes> {
    let req = TransactionRequest::from_slice(body).ok()?;
    let n = Notification::advice(req, false, "CLIENT_TIMEOUT", key.to_owned());
    serde_json::to_vec(&n).ok().map(Bytes::from)
}

pub async fn run(
    engine: &Rc<Engine>,
    auth: &std::cell::RefCell<Authorizer>,
    pg: &Postgres,
    subscriber: Option<&crate::webhooks::Subscriber>,
) -> anyhow::Result<Checks> {
    engine.begin_phase("resolution");
    let mut c = Checks::default();
    crate::channels::resolve(engine).await;
    crate::instore::resolve(engine).await;

    // 1. Adjustments and notifications must be stored: the processor resends them until a
    // 2xx, with the same key and body.
    let unsent: Vec<usize> = {
        let reqs = engine.reqs.borrow();
        (0..reqs.len())
            .filter(|&i| {
                let l = &reqs[i];
                l.expect == Expect::Normal
                    && l.settled.is_none()
                    && !l.is_authorization()
                    && l.moves_money()
            })
            .collect()
    };
    c.resent_until_stored = unsent.len() as u64;
    for attempt in 0..10u64 {
        let left: Vec<usize> = unsent
            .iter()
            .copied()
            .filter(|&i| engine.reqs.borrow()[i].settled.is_none())
            .collect();
        if left.is_empty() {
            break;
        }
        if attempt > 0 {
            actix_rt::time::sleep(Duration::from_millis(300 * attempt)).await;
        }
        stream::iter(left)
            .for_each_concurrent(16, |i| async move { engine.send(i, None).await })
            .await;
    }
    for &i in &unsent {
        let reqs = engine.reqs.borrow();
        if reqs[i].settled.is_none() {
            let msg = format!(
                "{} {}: never stored after 10 resends",
                reqs[i].planned.path, reqs[i].planned.key
            );
            drop(reqs);
            engine.violation(msg);
        }
    }

    // 2. What the ledger holds before the advices.
    let before = movement_counts(pg)?;
    let uncertain = auth.borrow().uncertain_commits();
    c.uncertain_commits_reported = uncertain.len() as u64;
    let mut lost_idx = Vec::new();
    {
        let reqs = engine.reqs.borrow();
        for (i, l) in reqs.iter().enumerate() {
            let auth_n = count(&before, "AUTHORIZATION", &l.tx_id);
            if l.expect == Expect::Refused {
                let any = ["AUTHORIZATION", "ADJUSTMENT"]
                    .iter()
                    .any(|k| count(&before, k, &l.tx_id) > 0);
                if any {
                    c.refused_but_recorded += 1;
                    engine.violation(format!(
                        "{} {}: refused with 401 but booked",
                        l.planned.path, l.planned.key
                    ));
                }
                continue;
            }
            if l.is_authorization() && l.moves_money() {
                match &l.settled {
                    Some(_) if l.approved_debit => {
                        if auth_n == 0 {
                            c.lost += 1;
                            engine.violation(format!(
                                "{}: answered APPROVED but not booked",
                                l.tx_id
                            ));
                        }
                    }
                    Some(body) => {
                        if auth_n > 0 {
                            c.declined_but_booked += 1;
                            engine.violation(format!(
                                "{}: answered {} but booked",
                                l.tx_id,
                                String::from_utf8_lossy(body)
                            ));
                        }
                    }
                    None if l.had_lost_attempt() => {
                        c.lost_answers += 1;
                        if auth_n > 0 {
                            c.lost_booked += 1;
                        } else {
                            c.lost_not_booked += 1;
                        }
                        lost_idx.push((i, auth_n));
                    }
                    None => {
                        c.system_error_only += 1;
                        if auth_n > 0 && uncertain.contains(&l.tx_id) {
                            // The connection failed during COMMIT and the authorizer said
                            // so: the processor's advice for the decline reverses it.
                            c.uncertain_commits_booked += 1;
                            lost_idx.push((i, auth_n));
                        } else if auth_n > 0 {
                            c.system_error_booked += 1;
                            engine.violation(format!(
                                "{}: answered SYSTEM_ERROR but booked, not reported uncertain",
                                l.tx_id
                            ));
                        }
                    }
                }
            } else if l.booked_adjustment && count(&before, "ADJUSTMENT", &l.tx_id) == 0 {
                c.lost += 1;
                engine.violation(format!(
                    "{}: adjustment answered booked but not booked",
                    l.tx_id
                ));
            }
        }
    }

    // 3. As the processor does for an authorization it got no answer to (and for one it
    // declined): a REJECTED advice. It reverses what was booked; for what was not, it is
    // remembered so the authorization can never book later.
    let advices: Vec<(Bytes, String, u64)> = {
        let reqs = engine.reqs.borrow();
        lost_idx
            .iter()
            .filter_map(|&(i, booked)| {
                let l = &reqs[i];
                let key = format!("adv-{}", l.planned.key);
                advice(&l.planned.body, &key).map(|b| (b, key, booked))
            })
            .collect()
    };
    c.advices_sent = advices.len() as u64;
    let results: Vec<Result<String, String>> = stream::iter(advices)
        .map(|(body, key, booked)| async move {
            for attempt in 0..10u64 {
                match engine.http.processor(NOTIFY, &key, body.clone()).await {
                    Ok(a) if a.status == 200 && a.signature_ok => {
                        let effect = serde_json::from_slice::<serde_json::Value>(&a.body)
                            .ok()
                            .and_then(|v| v.get("effect")?.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let want = if booked > 0 { "REVERSED" } else { "NOOP" };
                        return if effect == want {
                            Ok(effect)
                        } else {
                            Err(format!("advice {key}: effect {effect}, expected {want}"))
                        };
                    }
                    _ => actix_rt::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
                }
            }
            Err(format!("advice {key}: never stored"))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        match r {
            Ok(e) if e == "REVERSED" => c.advices_reversed += 1,
            Ok(_) => {}
            Err(v) => engine.violation(v),
        }
    }

    // 4. Nothing booked twice, of any kind.
    let after = movement_counts(pg)?;
    for ((kind, tx), n) in &after {
        if *n > 1 && kind != "DEPOSIT" && kind != "WITHDRAWAL" {
            c.double_booked += 1;
            engine.violation(format!("{kind} {tx}: booked {n} times"));
        }
    }

    // 5. The channel's holds against what the wallet saw (and every short hold expired).
    c.channel = crate::channels::check(engine, pg).await?;

    // 5b. Every acknowledged InStore request: its callback, identical in every copy, and its
    // movement (none for a decline).
    c.instore = crate::instore::check(engine, pg).await?;

    // 5c. Every event owed to the subscriber (every answered authorization's, every outbox
    // row's), delivered and identical in every copy.
    c.webhooks = crate::webhooks::check(engine, pg, subscriber).await?;

    // 6. Every balance, to the minor unit: posted is the funding plus exactly what the
    // answers said (the processor's, the channel's captures and refunds, the InStore
    // callbacks' Loads, Redeems and Cancels); held is exactly
    // the holds the wallet saw approved and not ended.
    let currency = engine.traffic.all.currency.clone();
    let accounts: Vec<u32> = (0..engine.accounts).collect();
    let found: Vec<Option<String>> = stream::iter(accounts)
        .map(|i| {
            let currency = &currency;
            async move {
                let user = engine.traffic.all.user(i);
                let posted = engine.book.expected(i)
                    + engine.channels.posted_delta.borrow()[i as usize]
                    + engine.instore.posted_delta.borrow()[i as usize];
                let held = engine.channels.expected_held(i);
                let r = engine
                    .http
                    .admin(
                        awc::http::Method::GET,
                        &format!("/v1/accounts/{user}/{currency}"),
                        None,
                        None,
                    )
                    .await;
                let read = |v: &serde_json::Value, k: &str| {
                    v.get(k)
                        .and_then(|a| a.as_str())
                        .and_then(|a| parse_minor(a, engine.exponent).ok())
                };
                let actual = match r {
                    Ok((200, v)) => {
                        match (read(&v, "posted"), read(&v, "held"), read(&v, "available")) {
                            (Some(p), Some(h), Some(a)) => Some((p, h, a)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let m = |x: i64| format_minor(x, engine.exponent);
                match actual {
                    Some((p, h, a)) if p == posted && h == held && a == p - h => None,
                    Some((p, h, a)) => Some(format!(
                        "{user}: expected posted {} held {}, ledger posted {} held {} available {}",
                        m(posted),
                        m(held),
                        m(p),
                        m(h),
                        m(a)
                    )),
                    None => Some(format!("{user}: unreadable account")),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    c.accounts_checked = u64::from(engine.accounts);
    for m in found.into_iter().flatten() {
        c.balance_mismatches += 1;
        if c.mismatch_examples.len() < 20 {
            c.mismatch_examples.push(m.clone());
        }
        engine.violation(format!("balance: {m}"));
    }

    // 7. The ledger's own invariants (the holds' included).
    let (code, output) = auth.borrow().audit();
    c.audit_exit_code = code;
    c.audit_output = output.trim().to_owned();
    if code != Some(0) {
        engine.violation(format!("authorizer audit failed: {}", c.audit_output));
    }
    engine.end_phase();
    Ok(c)
}
