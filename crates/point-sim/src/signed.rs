//! Signed processor requests and verified answers: the one place that sends, through the
//! workspace's signed processor client (`processor-client`).

use bytes::Bytes;
use protocol::ApiSecret;
use protocol::signature;
use std::time::Duration;

pub const AUTH_DEBIT: &str = "/transactions/authorizations/debit";
pub const ADJ_CREDIT: &str = "/transactions/adjustments/credit";
pub const NOTIFY: &str = "/transactions/v1/notifications";

/// `X-Signature` for `timestamp ++ endpoint ++ body`.
pub fn signature(secret: &ApiSecret, timestamp: &str, endpoint: &str, body: &[u8]) -> String {
    signature::sign(secret, timestamp, endpoint, body)
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
        .connector(awc::Connector::new().rustls_0_23(processor_client::tls_from_env()))
        .timeout(Duration::from_secs(60))
        .finish()
}

impl Signer {
    /// Signs `body` for `path` now and sends it once, through the shared signed client
    /// (which also checks the answer's signature).
    pub async fn post(
        &self,
        client: &awc::Client,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        processor_client::Client::new(
            client.clone(),
            &self.base,
            &self.api_key,
            self.secret.clone(),
            "",
        )
        .with_body_limit(BODY_LIMIT)
        .processor(path, idempotency_key, body)
        .await
        .map(|a| Answer {
            status: a.status,
            body: a.body,
            signature_ok: a.signature_ok,
        })
        .map_err(|e| match e {
            processor_client::Failure::Timeout => Failure::Timeout,
            processor_client::Failure::Connect | processor_client::Failure::Transport => {
                Failure::Unavailable
            }
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
