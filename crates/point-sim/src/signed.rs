//! Signed processor requests and verified answers: the one place that signs and sends
//! (through the `protocol` crate's signing; nothing is re-implemented here). Kept small so it
//! can move onto the shared signed-client crate.

use bytes::Bytes;
use protocol::ApiSecret;
use protocol::signature::{self, headers};
use std::time::Duration;

pub const AUTH_DEBIT: &str = "/transactions/authorizations/debit";
pub const ADJ_CREDIT: &str = "/transactions/adjustments/credit";
pub const NOTIFY: &str = "/transactions/v1/notifications";

/// `X-Signature` for `timestamp ++ endpoint ++ body`.
pub fn signature(secret: &ApiSecret, timestamp: &str, endpoint: &str, body: &[u8]) -> String {
    signature::sign(secret, timestamp, endpoint, body)
}

/// Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An HTTP answer from the authorizer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// X-Signature verifies over X-Timestamp ++ X-Endpoint ++ body, and X-Endpoint echoes
    /// the path signed.
    pub signature_ok: bool,
}

/// No answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect, or the connection broke.
    Unavailable,
    /// No complete answer in time.
    Timeout,
}

/// Who we are to the authorizer: its base URL and the processor key pair.
#[derive(Clone)]
pub struct Signer {
    pub base: String,
    pub api_key: String,
    pub secret: ApiSecret,
}

/// Largest answer read.
const BODY_LIMIT: usize = 1 << 20;

/// A client for processor calls. Each call bounds its own wait; this is only the ceiling.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
}

impl Signer {
    /// Signs `body` for `path` now and sends it once.
    pub async fn post(
        &self,
        client: &awc::Client,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let ts = unix_now().to_string();
        let sig = signature(&self.secret, &ts, path, &body);
        let mut res = client
            .post(format!("{}{path}", self.base))
            .insert_header((headers::API_KEY, self.api_key.as_str()))
            .insert_header((headers::TIMESTAMP, ts))
            .insert_header((headers::ENDPOINT, path))
            .insert_header((headers::SIGNATURE, sig))
            .insert_header((headers::IDEMPOTENCY_KEY, idempotency_key))
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .map_err(|e| match e {
                awc::error::SendRequestError::Timeout => Failure::Timeout,
                _ => Failure::Unavailable,
            })?;
        let body = res
            .body()
            .limit(BODY_LIMIT)
            .await
            .map_err(|_| Failure::Unavailable)?;
        let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok());
        let signature_ok = match (
            header(headers::TIMESTAMP),
            header(headers::ENDPOINT),
            header(headers::SIGNATURE),
        ) {
            (Some(ts), Some(ep), Some(sig)) => {
                ep == path && signature::verify(&self.secret, ts, ep, &body, sig).is_ok()
            }
            _ => false,
        };
        Ok(Answer {
            status: res.status().as_u16(),
            body,
            signature_ok,
        })
    }

    /// Sends a request the network has already made effective (an advice, a reversal, a
    /// refund) until it is taken: the same key and body each time, a fresh timestamp and
    /// signature. A 2xx ends it; so does a 4xx other than 408, 425 and 429 (the authorizer
    /// refuses the request itself: resending it cannot help), reported as `Err(status)`.
    /// Waits 100 ms, doubling up to 5 s, between attempts.
    pub async fn until_taken(
        &self,
        client: &awc::Client,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
        stats: &crate::stats::Stats,
    ) -> Result<Answer, u16> {
        let mut delay = Duration::from_millis(100);
        loop {
            let r = actix_rt::time::timeout(
                Duration::from_secs(10),
                self.post(client, path, idempotency_key, body.clone()),
            )
            .await
            .unwrap_or(Err(Failure::Timeout));
            stats.count_processor(path, &r);
            match r {
                Ok(a) if (200..300).contains(&a.status) => return Ok(a),
                Ok(a) if (400..500).contains(&a.status) && ![408, 425, 429].contains(&a.status) => {
                    return Err(a.status);
                }
                _ => {}
            }
            actix_rt::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
