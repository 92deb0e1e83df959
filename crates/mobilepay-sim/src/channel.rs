//! Calls to the authorizer's channel API (spec §2.5, reliability): a 2 s timeout per attempt,
//! up to 2 retries under the same `x-idempotency-key`, answers accepted only when signed by
//! the channel key pair; captures, cancels and refunds delivered in the background until the
//! authorizer answers, and every refusal of one recorded as a break.
//!
//! One [`Channel`] per thread: awc clients are not `Send`.

use crate::model::{Call, ReserveOutcome};
use crate::signing::ChannelKey;
use crate::state::{Break, Shared, unix_now};
use bytes::Bytes;
use processor_client::Method;
use protocol::signature::headers;
use serde_json::Value;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest answer read.
const BODY_LIMIT: usize = 1 << 20;
/// Background redelivery waits between rounds: doubling from the first, capped.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A verified answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// `error.code` of the house envelope, or `status_detail`.
    pub fn code(&self) -> String {
        let v = self.json();
        v["error"]["code"]
            .as_str()
            .or_else(|| v["status_detail"].as_str())
            .unwrap_or("")
            .to_owned()
    }
    pub fn message(&self) -> String {
        let v = self.json();
        v["error"]["message"]
            .as_str()
            .or_else(|| v["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect()
            })
    }
}

pub struct Channel {
    api: processor_client::Client,
    key: ChannelKey,
    timeout: Duration,
    retries: u32,
}

impl Channel {
    pub fn new(base: &str, key: ChannelKey, timeout: Duration, retries: u32) -> Channel {
        let http = awc::Client::builder()
            .connector(
                awc::Connector::new()
                    .rustls_0_23(processor_client::tls_from_env())
                    .timeout(timeout),
            )
            .timeout(timeout + Duration::from_secs(1))
            .finish();
        let api = processor_client::Client::new(http, base, &key.api_key, key.secret.clone(), "")
            .with_body_limit(BODY_LIMIT);
        Channel {
            api,
            key,
            timeout,
            retries,
        }
    }

    /// Sends a signed request and accepts only a complete answer signed by the channel key
    /// pair, fresh and echoing `path`.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        key: Option<&str>,
    ) -> Result<Answer, String> {
        let signed = self.key.signed(path, &body, key, unix_now());
        let req = self.api.signed_request(method, path, signed);
        let a = self
            .api
            .send(req, body, None)
            .await
            .map_err(|e| format!("send: {e}"))?;
        self.key
            .verify_answer(
                path,
                &a.body,
                a.header(headers::TIMESTAMP),
                a.header(headers::ENDPOINT),
                a.header(headers::SIGNATURE),
                unix_now(),
            )
            .map_err(|why| format!("answer {} not verified: {why}", a.status))?;
        Ok(Answer {
            status: a.status,
            body: a.body,
        })
    }

    /// One attempt: `Err` when there is no complete, verified answer within the timeout.
    pub async fn once(&self, call: &Call) -> Result<Answer, String> {
        let path = call.path();
        let key = call.idempotency_key();
        let exchange = self.exchange(Method::POST, &path, Bytes::from(call.body()), Some(&key));
        match actix_rt::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err("timeout".into()),
        }
    }

    /// `GET /channels/v1/reservations/{id}` (which also expires an overdue hold): the
    /// verified answer.
    pub async fn get_reservation(&self, id: &str) -> Result<Answer, String> {
        let path = format!("/channels/v1/reservations/{id}");
        self.exchange(Method::GET, &path, Bytes::new(), None).await
    }

    /// The first attempt and up to `retries` more, same key, while there is no answer or the
    /// answer says "try again" (5xx, 425). The last answer or failure is returned.
    pub async fn with_retries(&self, shared: &Shared, call: &Call) -> Result<Answer, String> {
        let mut last = Err(String::from("not sent"));
        for attempt in 0..=self.retries {
            if attempt > 0 {
                shared
                    .stats
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                actix_rt::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            last = self.once(call).await;
            match &last {
                // REJECTED / SYSTEM_ERROR: no decision and nothing stored; ask again.
                Ok(a) if a.status == 200 && a.json()["status_detail"] == "SYSTEM_ERROR" => {}
                Ok(a) if a.status < 500 && a.status != 425 => return last,
                _ => {}
            }
        }
        last
    }

    /// The customer's approval: the reserve, and what it came to.
    pub async fn reserve(&self, shared: &Shared, call: &Call) -> ReserveOutcome {
        let started = Instant::now();
        let r = self.with_retries(shared, call).await;
        let outcome = match &r {
            Ok(a) if a.status == 200 => {
                let v = a.json();
                match v["status"].as_str() {
                    // Still no decision after the retries: treated as no answer (a cancel
                    // follows, answered 404 when nothing was held).
                    _ if v["status_detail"] == "SYSTEM_ERROR" => {
                        ReserveOutcome::NoAnswer("SYSTEM_ERROR".into())
                    }
                    Some("APPROVED") => ReserveOutcome::Approved,
                    Some("REJECTED") => ReserveOutcome::Rejected(
                        v["status_detail"].as_str().unwrap_or("REJECTED").to_owned(),
                    ),
                    _ => ReserveOutcome::NoAnswer(format!("200 without a status: {}", a.message())),
                }
            }
            Ok(a) if a.status >= 500 || a.status == 425 => {
                ReserveOutcome::NoAnswer(format!("{} {}", a.status, a.code()))
            }
            Ok(a) => {
                shared.record_break(Break::from_answer(call, a));
                ReserveOutcome::Refused(format!("{} {}", a.status, a.code()))
            }
            Err(e) => ReserveOutcome::NoAnswer(e.clone()),
        };
        if matches!(
            outcome,
            ReserveOutcome::Approved | ReserveOutcome::Rejected(_)
        ) {
            shared.record_reserve_latency(started.elapsed());
        }
        outcome
    }
}

/// Delivers an owed capture, cancel or refund in the background until the authorizer
/// answers it: 2xx is done; a cancel's 404 (nothing was reserved) and 409 `EXPIRED` (our
/// expiry released it) are done; any other refusal is a break, recorded and counted. A
/// refund is sent only once its payment's capture has been answered (they are ordered, as a
/// clearing file orders them).
pub fn deliver(shared: Arc<Shared>, channel: Rc<Channel>, call: Call) {
    shared
        .stats
        .pending
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if let Call::Capture { payment_id, .. } = &call {
        in_flight(&shared).insert(payment_id.clone());
    }
    actix_rt::spawn(async move {
        if let Call::Refund { payment_id, .. } = &call {
            while in_flight(&shared).contains(payment_id) {
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut wait = BACKOFF_FIRST;
        loop {
            match channel.with_retries(&shared, &call).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    shared.count_delivered(&call);
                    break;
                }
                Ok(a) if matches!(call, Call::Cancel { .. }) && a.status == 404 => break,
                Ok(a)
                    if matches!(call, Call::Cancel { .. })
                        && a.status == 409
                        && a.code() == "EXPIRED" =>
                {
                    shared
                        .stats
                        .cancels_found_expired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Ok(a) if a.status < 500 && a.status != 425 && a.status != 408 => {
                    shared.record_break(Break::from_answer(&call, &a));
                    break;
                }
                _ => {
                    shared
                        .stats
                        .redeliveries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    actix_rt::time::sleep(wait).await;
                    wait = (wait * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let Call::Capture { payment_id, .. } = &call {
            in_flight(&shared).remove(payment_id);
        }
        shared
            .stats
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    });
}

/// The payments whose capture is not yet answered.
fn in_flight(shared: &Shared) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
    shared
        .captures_in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}
