//! HTTP to the authorizer through the shared signed client (`processor-client`): processor
//! calls signed with the protocol crate (answers verified over their exact bytes) under the
//! run's timeout, and admin calls with the bearer token. One [`Http`] per thread: awc
//! clients are not `Send`.

use processor_client::Client;
use protocol::ApiSecret;
use serde_json::Value;
use std::time::Duration;

pub use processor_client::{Answer, Failure, unix_now};

/// Shortest patience for an admin call, whatever `--timeout` says.
const ADMIN_TIMEOUT_MIN: Duration = Duration::from_secs(30);

/// Largest answer body read.
const BODY_LIMIT: usize = 1 << 20;

/// The shared client (processor calls: `processor`, `processor_at`, `processor_raw`) with
/// the run's deadlines, and admin calls answering status and JSON.
pub struct Http {
    client: Client,
}

impl std::ops::Deref for Http {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Http {
    /// A client with at most `connections` open connections (more requests wait for one).
    /// A processor call's answer (head and body) must be complete within `timeout`; admin
    /// calls are not measured and get more room on a loaded server.
    pub fn new(
        base: &str,
        api_key: &str,
        secret: &ApiSecret,
        admin_token: &str,
        connections: usize,
        timeout: Duration,
    ) -> Http {
        let connector = awc::Connector::new()
            .rustls_0_23(processor_client::tls_from_env())
            .limit(connections)
            .timeout(timeout);
        let admin_timeout = (timeout * 5).max(ADMIN_TIMEOUT_MIN);
        let http = awc::Client::builder()
            .connector(connector)
            // Each call enforces its own deadline around the whole exchange.
            .timeout(admin_timeout + Duration::from_secs(1))
            .finish();
        let client = Client::new(http, base, api_key, secret.clone(), admin_token)
            .with_body_limit(BODY_LIMIT)
            .with_deadlines(timeout, admin_timeout);
        Http { client }
    }

    /// A GET whose answer is text (`/metrics`): status and body.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let a = self
            .client
            .get(path)
            .await
            .map_err(|f| self.failed(path, f))?;
        Ok((a.status, String::from_utf8_lossy(&a.body).into_owned()))
    }

    /// An admin API call: status and JSON body (`Null` when the body is not JSON).
    pub async fn admin(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let a = self
            .client
            .admin(method, path, body.as_ref(), idempotency_key)
            .await
            .map_err(|f| self.failed(path, f))?;
        Ok((a.status, a.json()))
    }

    fn failed(&self, path: &str, f: Failure) -> anyhow::Error {
        anyhow::anyhow!("{path} at {}: {f}", self.client.base())
    }
}
