//! HTTP to the authorizer: processor calls signed with the protocol crate (answers verified
//! over their exact bytes) and admin calls with the bearer token. One [`Http`] per thread:
//! awc clients are not `Send`.

use bytes::Bytes;
use protocol::ApiSecret;
use protocol::signature::{self, headers};
use serde_json::Value;
use std::time::Duration;

/// An HTTP answer to a processor call.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// Whether X-Signature verifies over X-Timestamp ++ X-Endpoint ++ body with our secret,
    /// and X-Endpoint echoes the path we signed.
    pub signature_ok: bool,
}

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the timeout.
    Timeout,
    /// Could not connect.
    Connect,
    /// The connection broke while sending or reading.
    Transport,
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Transport => "transport",
        }
    }
}

/// Shortest patience for an admin call, whatever `--timeout` says.
const ADMIN_TIMEOUT_MIN: Duration = Duration::from_secs(30);

/// Largest answer body read.
const BODY_LIMIT: usize = 1 << 20;

pub struct Http {
    client: awc::Client,
    base: String,
    api_key: String,
    secret: ApiSecret,
    admin_auth: String,
    timeout: Duration,
}

impl Http {
    /// A client with at most `connections` open connections (more requests wait for one).
    pub fn new(
        base: &str,
        api_key: &str,
        secret: &ApiSecret,
        admin_token: &str,
        connections: usize,
        timeout: Duration,
    ) -> Http {
        let connector = awc::Connector::new().limit(connections).timeout(timeout);
        let client = awc::Client::builder()
            .connector(connector)
            // Each call enforces its own deadline around the whole exchange.
            .timeout((timeout * 5).max(ADMIN_TIMEOUT_MIN) + Duration::from_secs(1))
            .finish();
        Http {
            client,
            base: base.to_owned(),
            api_key: api_key.to_owned(),
            secret: secret.clone(),
            admin_auth: format!("Bearer {admin_token}"),
            timeout,
        }
    }

    /// Signs `body` for `path` now and sends it; the answer (head and body) must be complete
    /// within the timeout.
    pub async fn processor(
        &self,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        self.processor_at(path, idempotency_key, body, unix_now())
            .await
    }

    /// Like [`Http::processor`], but signed as of unix time `timestamp` (a skewed clock).
    pub async fn processor_at(
        &self,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
        timestamp: i64,
    ) -> Result<Answer, Failure> {
        let ts = timestamp.to_string();
        let sig = signature::sign(&self.secret, &ts, path, &body);
        self.processor_raw(path, Some(idempotency_key), body, Some((ts, sig)))
            .await
    }

    /// Sends `body` to `path` with the given timestamp and signature header values (`None`:
    /// no signature headers at all) and optional idempotency key; the answer is verified as
    /// for [`Http::processor`]. For refused-input tests: bad signatures, missing headers.
    pub async fn processor_raw(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        body: Bytes,
        signed: Option<(String, String)>,
    ) -> Result<Answer, Failure> {
        let exchange = async {
            let mut req = self
                .client
                .post(format!("{}{path}", self.base))
                .insert_header((headers::API_KEY, self.api_key.as_str()))
                .insert_header((headers::ENDPOINT, path))
                .insert_header(("content-type", "application/json"));
            if let Some((ts, sig)) = signed {
                req = req
                    .insert_header((headers::TIMESTAMP, ts))
                    .insert_header((headers::SIGNATURE, sig));
            }
            if let Some(k) = idempotency_key {
                req = req.insert_header((headers::IDEMPOTENCY_KEY, k));
            }
            let mut res = req.send_body(body).await.map_err(|e| match e {
                awc::error::SendRequestError::Timeout => Failure::Timeout,
                awc::error::SendRequestError::Connect(_) => Failure::Connect,
                _ => Failure::Transport,
            })?;
            let body = res.body().limit(BODY_LIMIT).await.map_err(|e| match e {
                awc::error::PayloadError::Io(ref io)
                    if io.kind() == std::io::ErrorKind::TimedOut =>
                {
                    Failure::Timeout
                }
                _ => Failure::Transport,
            })?;
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
        };
        match actix_rt::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// A GET on the admin side whose answer is text (`/metrics`): status and body.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let exchange = async {
            let mut res = self
                .client
                .get(format!("{}{path}", self.base))
                .insert_header(("authorization", self.admin_auth.as_str()))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot reach the authorizer at {}: {e}", self.base)
                })?;
            let bytes = res
                .body()
                .limit(BODY_LIMIT)
                .await
                .map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
            Ok::<_, anyhow::Error>((
                res.status().as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        };
        actix_rt::time::timeout(ADMIN_TIMEOUT_MIN, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("GET {path} timed out"))?
    }

    /// An admin API call: status and JSON body (`Null` when the body is not JSON).
    pub async fn admin(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("authorization", self.admin_auth.as_str()))
            .insert_header(("content-type", "application/json"));
        if let Some(k) = idempotency_key {
            req = req.insert_header(("idempotency-key", k));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let exchange = async {
            let mut res = req.send_body(body).await.map_err(|e| {
                anyhow::anyhow!("cannot reach the authorizer at {}: {e}", self.base)
            })?;
            let bytes = res
                .body()
                .limit(BODY_LIMIT)
                .await
                .map_err(|e| anyhow::anyhow!("reading an admin answer: {e}"))?;
            let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok::<_, anyhow::Error>((res.status().as_u16(), v))
        };
        // Admin calls are not measured; give them room on a loaded server.
        actix_rt::time::timeout((self.timeout * 5).max(ADMIN_TIMEOUT_MIN), exchange)
            .await
            .map_err(|_| anyhow::anyhow!("admin call {path} timed out"))?
    }
}

/// Unix time in seconds, for X-Timestamp.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
