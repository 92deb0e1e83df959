//! Webhooks to the integrator (point-integration §1.7, §1.8, §2.6): the HMAC challenge that
//! validates a URL, the signed notifications, and their ordered, retried delivery.

use crate::sim::Sim;
use crate::stats::inc;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

pub use processor_client::support::{now_ms, random_bytes, uuid_v4};
pub use protocol::webhook::{challenge_matches, encrypted_challenge, hex, x_signature};

pub use processor_client::valid_webhook_url as valid_url;

/// Calls `GET <url>?challengeCode=<code>` with a fresh code (no redirects followed) and
/// checks the answer.
pub async fn run_challenge(url: &str, token: &str, timeout: Duration) -> bool {
    let code = hex(&random_bytes::<16>());
    let tls = processor_client::tls_from_env();
    processor_client::webhook_challenge(url, token, &code, timeout, tls)
        .await
        .is_ok()
}

/// The integrator's webhook: its URL and whether it passed the challenge. `generation`
/// changes with every `PATCH`, so a notification queued for an earlier URL is never sent to
/// a later one.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub url: String,
    pub valid: bool,
    pub generation: u64,
}

/// A notification waiting for delivery.
#[derive(Debug, Clone)]
pub struct Pending {
    pub intent_id: String,
    pub body: Bytes,
    pub request_id: String,
    pub url: String,
    pub generation: u64,
}

/// Queues a notification for `intent_id` when a validated webhook exists (else counts it
/// as dropped), and starts the intent's delivery worker if none runs: the notifications of
/// one intent are delivered in order.
pub fn enqueue(sim: &Arc<Sim>, intent_id: &str, body: Vec<u8>) {
    let reg = sim.registration.lock().expect("lock").clone();
    if !reg.valid {
        inc(&sim.stats.dropped_unvalidated);
        return;
    }
    let p = Pending {
        intent_id: intent_id.to_owned(),
        body: Bytes::from(body),
        request_id: uuid_v4(),
        url: reg.url,
        generation: reg.generation,
    };
    let mut queues = sim.queues.lock().expect("lock");
    match queues.get_mut(intent_id) {
        Some(q) => q.push_back(p),
        None => {
            queues.insert(intent_id.to_owned(), VecDeque::from([p]));
            let sim = sim.clone();
            let id = intent_id.to_owned();
            actix_rt::spawn(async move { drain(sim, id).await });
        }
    }
}

async fn drain(sim: Arc<Sim>, intent_id: String) {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(processor_client::tls_from_env()))
        .disable_redirects()
        .timeout(Duration::from_millis(sim.cfg.webhook_timeout_ms))
        .finish();
    loop {
        let next = {
            let mut queues = sim.queues.lock().expect("lock");
            match queues.get(&intent_id).and_then(|q| q.front().cloned()) {
                Some(p) => p,
                None => {
                    queues.remove(&intent_id);
                    return;
                }
            }
        };
        deliver(&sim, &client, &next).await;
        if let Some(q) = sim.queues.lock().expect("lock").get_mut(&intent_id) {
            q.pop_front();
        }
    }
}

fn still_valid(sim: &Sim, p: &Pending) -> bool {
    let reg = sim.registration.lock().expect("lock");
    reg.valid && reg.generation == p.generation
}

/// Up to `webhook_attempts_max` attempts, 1, 2, 4 … s apart (at most 60 s); the same body
/// and `x-request-id`, a fresh `ts` and signature each time.
async fn deliver(sim: &Sim, client: &awc::Client, p: &Pending) {
    let mut delay = Duration::from_millis(sim.cfg.webhook_backoff_ms);
    for attempt in 1..=sim.cfg.webhook_attempts_max {
        if !still_valid(sim, p) {
            inc(&sim.stats.dropped_unvalidated);
            return;
        }
        let ts = now_ms();
        let sig = x_signature(&sim.cfg.integrator_token, &p.intent_id, &p.request_id, ts);
        let sent = actix_rt::time::timeout(
            Duration::from_millis(sim.cfg.webhook_timeout_ms),
            client
                .post(&p.url)
                .insert_header(("content-type", "application/json"))
                .insert_header(("x-request-id", p.request_id.as_str()))
                .insert_header(("x-signature", sig))
                .send_body(p.body.clone()),
        )
        .await;
        if let Ok(Ok(mut res)) = sent {
            let _ = res.body().limit(64 * 1024).await;
            if res.status().is_success() {
                inc(&sim.stats.webhooks_delivered);
                return;
            }
        }
        inc(&sim.stats.webhook_attempts_failed);
        if attempt < sim.cfg.webhook_attempts_max {
            actix_rt::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
    inc(&sim.stats.webhooks_given_up);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_urls() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), u);
        assert!(valid_url("http://127.0.0.1:9/webhook"));
    }
}
