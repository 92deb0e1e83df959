//! Webhooks to the integrator (point-integration §1.7, §1.8, §2.6): the HMAC challenge that
//! validates a URL, the signed notifications, and their ordered, retried delivery.

use crate::sim::Sim;
use crate::stats::inc;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &str, msg: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    m.update(msg);
    m
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// HMAC-SHA256(key = UTF-8 of `token`, message = UTF-8 of `code`), 64 lowercase hex digits.
pub fn encrypted_challenge(token: &str, code: &str) -> String {
    hex(&mac(token, code.as_bytes()).finalize().into_bytes())
}

/// Whether `answer` (64 hex digits, either case) is the challenge's HMAC, compared in
/// constant time after decoding.
pub fn challenge_matches(token: &str, code: &str, answer: &str) -> bool {
    if answer.len() != 64 {
        return false;
    }
    match unhex(answer) {
        Some(tag) => mac(token, code.as_bytes()).verify_slice(&tag).is_ok(),
        None => false,
    }
}

/// `x-signature` of a notification: `ts=<ms>,v1=<hex HMAC(token, "id:..;request-id:..;ts:..;")>`.
pub fn x_signature(token: &str, intent_id: &str, request_id: &str, ts_ms: i64) -> String {
    let manifest = format!("id:{intent_id};request-id:{request_id};ts:{ts_ms};");
    let v1 = hex(&mac(token, manifest.as_bytes()).finalize().into_bytes());
    format!("ts={ts_ms},v1={v1}")
}

/// Random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    b
}

/// A random (version 4) UUID, lowercase.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `url` is an absolute http or https URL with a host.
pub fn valid_url(url: &str) -> bool {
    match url.parse::<awc::http::Uri>() {
        Ok(u) => {
            matches!(u.scheme_str(), Some("http") | Some("https"))
                && u.host().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}

fn with_query(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

/// Calls `GET <url>?challengeCode=<code>` (no redirects followed) and checks the answer.
pub async fn run_challenge(url: &str, token: &str, timeout: Duration) -> bool {
    let code = hex(&random_bytes::<16>());
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(timeout)
        .finish();
    let exchange = async {
        let mut res = client
            .get(with_query(url, "challengeCode", &code))
            .send()
            .await
            .ok()?;
        if res.status().as_u16() != 200 {
            return None;
        }
        let body = res.body().limit(64 * 1024).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let answer = v.get("encrypted_challenge")?.as_str()?.to_owned();
        Some(challenge_matches(token, &code, &answer))
    };
    actix_rt::time::timeout(timeout, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
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

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0230abf9-79e9-493b-b288-32d123456789";

    #[test]
    fn challenge_vectors() {
        assert_eq!(
            encrypted_challenge(TOKEN, "YOUR_CHALLENGE_CODE"),
            "cd0a35ec4b2c06bee54b59899037b167b9c9257673c1e290119495936fd1a4cb"
        );
        assert_eq!(
            encrypted_challenge(TOKEN, "8c1f4e2a9b7d6c5e3f2a1b0c9d8e7f6a"),
            "a9f11d720e675b66290f0115477045ffc7556e6107354a8d583b4f7057ef73be"
        );
        let good = "a9f11d720e675b66290f0115477045ffc7556e6107354a8d583b4f7057ef73be";
        let code = "8c1f4e2a9b7d6c5e3f2a1b0c9d8e7f6a";
        assert!(challenge_matches(TOKEN, code, good));
        assert!(challenge_matches(TOKEN, code, &good.to_uppercase()));
        assert!(!challenge_matches(TOKEN, code, &good[..62]));
        assert!(!challenge_matches(TOKEN, code, &format!("{good}00")));
        assert!(!challenge_matches(TOKEN, "other", good));
        assert!(!challenge_matches("other", code, good));
        let mut flipped = good.to_owned();
        flipped.replace_range(0..1, "b");
        assert!(!challenge_matches(TOKEN, code, &flipped));
        assert!(!challenge_matches(TOKEN, code, &"z".repeat(64)));
    }

    #[test]
    fn webhook_signature_vector() {
        assert_eq!(
            x_signature(
                TOKEN,
                "7d8c70b6-2ac8-4c57-a441-c319088ca3ca",
                "0b9e5a5e-1c5e-4b0e-9d1a-6c1f3f7b2a10",
                1_700_000_000_000
            ),
            "ts=1700000000000,v1=33a913d048f74ab36760ee1c8b308a8ddcad0b8116ba8b2b784afd11736bebf8"
        );
    }

    #[test]
    fn uuids_and_urls() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), u);
        assert!(valid_url("http://127.0.0.1:9/webhook"));
        assert!(valid_url("https://example.com/x?y=1"));
        assert!(!valid_url("ftp://example.com/"));
        assert!(!valid_url("/webhook"));
        assert!(!valid_url("example.com/webhook"));
        assert!(!valid_url(""));
        assert_eq!(with_query("http://h/w", "a", "b"), "http://h/w?a=b");
        assert_eq!(with_query("http://h/w?x=1", "a", "b"), "http://h/w?x=1&a=b");
    }
}
