//! The one client of a running authorizer, used by the CLI, the load generator, the chaos
//! run and the tests: processor calls signed exactly as the processor signs them (the
//! protocol crate's HMAC), each answer's signature checked over its exact bytes, and admin
//! calls with the bearer token. awc clients are not `Send`: one [`Client`] per thread.

use bytes::Bytes;
use protocol::ApiSecret;
use protocol::signature::{self, headers};
use serde_json::Value;
use std::time::Duration;

pub mod support;
mod tls;

pub use tls::{tls_config, tls_from_env};

pub use awc::http::Method;
pub use awc::http::header::HeaderMap;

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// For a processor call: whether X-Signature verifies over X-Timestamp ++ X-Endpoint ++
    /// body with our secret, X-Endpoint echoes the path we signed, and X-Timestamp is within
    /// [`ANSWER_SKEW_SECS`] of now (an answer recorded earlier and played back is refused).
    /// False otherwise.
    pub signature_ok: bool,
}

impl Answer {
    /// One header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the deadline (or awc's own timeout).
    Timeout,
    /// Could not connect.
    Connect,
    /// The connection broke while sending or reading, or the answer was over the size limit.
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

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Timeout => "no complete answer in time",
            Failure::Connect => "cannot connect",
            Failure::Transport => "the connection broke (or the answer was too large)",
        })
    }
}

impl std::error::Error for Failure {}

/// The headers of a processor request; the tests vary each of them.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    /// X-Api-Key.
    pub api_key: &'a str,
    /// X-Endpoint, the path the signature covers.
    pub endpoint: &'a str,
    /// X-Timestamp and X-Signature; `None` sends neither.
    pub signature: Option<(String, String)>,
    /// Idempotency-Key, if any.
    pub idempotency_key: Option<&'a str>,
}

/// X-Timestamp and X-Signature for `body` sent to `endpoint` at unix time `timestamp`.
pub fn sign(secret: &ApiSecret, timestamp: i64, endpoint: &str, body: &[u8]) -> (String, String) {
    let ts = timestamp.to_string();
    let sig = signature::sign(secret, &ts, endpoint, body);
    (ts, sig)
}

/// One header's value as text; empty when it is absent or not text.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// How far an answer's X-Timestamp may be from our clock, either way: the skew the
/// authorizer allows a request.
pub const ANSWER_SKEW_SECS: i64 = 300;

/// Whether `headers` carry our signature over `body` for `path`, stamped now (see
/// [`Answer::signature_ok`]).
pub fn verify(secret: &ApiSecret, path: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    verify_at(secret, path, headers, body, unix_now())
}

/// [`verify`] with `now` (unix seconds) as our clock.
pub fn verify_at(
    secret: &ApiSecret,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> bool {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    match (
        header(headers::TIMESTAMP),
        header(headers::ENDPOINT),
        header(headers::SIGNATURE),
    ) {
        (Some(ts), Some(ep), Some(sig)) => {
            let fresh = ts
                .parse::<i64>()
                .is_ok_and(|t| t.abs_diff(now) <= ANSWER_SKEW_SECS.unsigned_abs());
            fresh && ep == path && signature::verify(secret, ts, ep, body, sig).is_ok()
        }
        _ => false,
    }
}

/// Unix time in seconds, for X-Timestamp.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One authorizer, as the processor and as the issuer's back office.
#[derive(Clone)]
pub struct Client {
    http: awc::Client,
    base: String,
    api_key: String,
    secret: ApiSecret,
    admin_auth: String,
    body_limit: usize,
    processor_deadline: Option<Duration>,
    admin_deadline: Option<Duration>,
}

impl Client {
    /// Talks to `base` (`http://host:port`) through `http`, keyed with `api_key` and
    /// `secret` and the admin bearer token. Answers up to 16 MiB are read; no deadline
    /// beyond `http`'s own timeout.
    pub fn new(
        http: awc::Client,
        base: &str,
        api_key: &str,
        secret: ApiSecret,
        admin_token: &str,
    ) -> Client {
        Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            secret,
            admin_auth: format!("Bearer {admin_token}"),
            body_limit: 16 << 20,
            processor_deadline: None,
            admin_deadline: None,
        }
    }

    /// The largest answer body read; a larger one is [`Failure::Transport`].
    pub fn with_body_limit(mut self, bytes: usize) -> Client {
        self.body_limit = bytes;
        self
    }

    /// Deadlines around a whole exchange (sent, answered and read): processor calls, and
    /// admin calls and GETs.
    pub fn with_deadlines(mut self, processor: Duration, admin: Duration) -> Client {
        self.processor_deadline = Some(processor);
        self.admin_deadline = Some(admin);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &awc::Client {
        &self.http
    }

    pub fn secret(&self) -> &ApiSecret {
        &self.secret
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Our headers for `body` sent to `path`, signed as of unix time `timestamp`.
    pub fn signed<'a>(
        &'a self,
        path: &'a str,
        idempotency_key: Option<&'a str>,
        body: &[u8],
        timestamp: i64,
    ) -> Signed<'a> {
        Signed {
            api_key: &self.api_key,
            endpoint: path,
            signature: Some(sign(&self.secret, timestamp, path, body)),
            idempotency_key,
        }
    }

    /// A POST to `path` with the processor's headers as `signed` says.
    pub fn processor_request(&self, path: &str, signed: Signed<'_>) -> awc::ClientRequest {
        self.signed_request(Method::POST, path, signed)
    }

    /// A request to `path` with the signed headers as `signed` says: the processor's
    /// routes, and the channels' (whose GETs are signed over the empty body).
    pub fn signed_request(
        &self,
        method: Method,
        path: &str,
        signed: Signed<'_>,
    ) -> awc::ClientRequest {
        let mut req = self
            .http
            .request(method, self.url(path))
            .insert_header((headers::API_KEY, signed.api_key))
            .insert_header((headers::ENDPOINT, signed.endpoint))
            .insert_header(("content-type", "application/json"));
        if let Some((ts, sig)) = signed.signature {
            req = req
                .insert_header((headers::TIMESTAMP, ts))
                .insert_header((headers::SIGNATURE, sig));
        }
        if let Some(k) = signed.idempotency_key {
            req = req.insert_header((headers::IDEMPOTENCY_KEY, k));
        }
        req
    }

    /// Signs `body` for `path` now and sends it; the answer's signature is checked.
    pub async fn processor(
        &self,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        self.processor_at(path, idempotency_key, body, unix_now())
            .await
    }

    /// Like [`Client::processor`], but signed as of unix time `timestamp` (a skewed clock).
    pub async fn processor_at(
        &self,
        path: &str,
        idempotency_key: &str,
        body: Bytes,
        timestamp: i64,
    ) -> Result<Answer, Failure> {
        let signed = self.signed(path, Some(idempotency_key), &body, timestamp);
        let req = self.processor_request(path, signed);
        self.send_processor(req, path, body).await
    }

    /// Sends `body` to `path` with the given X-Timestamp and X-Signature values (`None`: no
    /// signature headers at all) and optional idempotency key; the answer is checked as for
    /// [`Client::processor`]. For refused-input tests: bad signatures, missing headers.
    pub async fn processor_raw(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        body: Bytes,
        signature: Option<(String, String)>,
    ) -> Result<Answer, Failure> {
        let req = self.processor_request(
            path,
            Signed {
                api_key: &self.api_key,
                endpoint: path,
                signature,
                idempotency_key,
            },
        );
        self.send_processor(req, path, body).await
    }

    /// Sends a processor request built with [`Client::processor_request`]; the answer's
    /// signature is checked against `path`.
    pub async fn send_processor(
        &self,
        req: awc::ClientRequest,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let mut answer = self.send(req, body, self.processor_deadline).await?;
        answer.signature_ok = verify(&self.secret, path, &answer.headers, &answer.body);
        Ok(answer)
    }

    /// An admin API request: the bearer token, JSON, an optional idempotency key.
    pub fn admin_request(
        &self,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
    ) -> awc::ClientRequest {
        bearer_request(
            &self.http,
            method,
            self.url(path),
            &self.admin_auth,
            idempotency_key,
        )
    }

    /// An admin API call with an optional JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Failure> {
        let req = self.admin_request(method, path, idempotency_key);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(req, body, self.admin_deadline).await
    }

    /// A plain GET (no credentials): the operations endpoints.
    pub async fn get(&self, path: &str) -> Result<Answer, Failure> {
        let req = self.http.get(self.url(path));
        self.send(req, Bytes::new(), self.admin_deadline).await
    }

    /// Sends `req` with `body` and reads the whole answer within `deadline`, if any.
    pub async fn send(
        &self,
        req: awc::ClientRequest,
        body: Bytes,
        deadline: Option<Duration>,
    ) -> Result<Answer, Failure> {
        exchange(req, body, self.body_limit, deadline).await
    }
}

/// A request to `url` with a bearer `authorization` (`Bearer <token>`), JSON, and an
/// optional idempotency key.
fn bearer_request(
    http: &awc::Client,
    method: Method,
    url: String,
    authorization: &str,
    idempotency_key: Option<&str>,
) -> awc::ClientRequest {
    let mut req = http
        .request(method, url)
        .insert_header(("authorization", authorization))
        .insert_header(("content-type", "application/json"));
    if let Some(k) = idempotency_key {
        req = req.insert_header(("idempotency-key", k));
    }
    req
}

/// Sends `req` with `body` and reads the whole answer, up to `body_limit` bytes, within
/// `deadline`, if any.
async fn exchange(
    req: awc::ClientRequest,
    body: Bytes,
    body_limit: usize,
    deadline: Option<Duration>,
) -> Result<Answer, Failure> {
    let exchange = async {
        let res = req.send_body(body).await.map_err(|e| match e {
            awc::error::SendRequestError::Timeout => Failure::Timeout,
            awc::error::SendRequestError::Connect(_) => Failure::Connect,
            _ => Failure::Transport,
        })?;
        let status = res.status().as_u16();
        // The headers move out of the response head: nothing is copied.
        let mut headers = HeaderMap::new();
        let mut res = res.map_body(|head, payload| {
            std::mem::swap(&mut headers, &mut head.headers);
            payload
        });
        let body = res.body().limit(body_limit).await.map_err(|e| match e {
            awc::error::PayloadError::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Failure::Timeout
            }
            _ => Failure::Transport,
        })?;
        Ok(Answer {
            status,
            headers,
            body,
            signature_ok: false,
        })
    };
    match deadline {
        Some(d) => actix_rt::time::timeout(d, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout)),
        None => exchange.await,
    }
}

/// A JSON API behind a bearer token: the admin API of an authorizer, or a simulator's API,
/// for the drivers that hold no processor key.
#[derive(Clone)]
pub struct Bearer {
    http: awc::Client,
    base: String,
    authorization: String,
}

impl Bearer {
    /// Talks to `base` (`http://host:port`) through `http` with `token`.
    pub fn new(http: awc::Client, base: &str, token: &str) -> Bearer {
        Bearer {
            http,
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {token}"),
        }
    }

    /// One call with an optional JSON body: the status and the JSON answer (`Null` when the
    /// answer is not JSON). Answers up to 16 MiB are read.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), Failure> {
        let req = bearer_request(
            &self.http,
            method,
            format!("{}{path}", self.base),
            &self.authorization,
            idempotency_key,
        );
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let answer = exchange(req, body, 16 << 20, None).await?;
        Ok((answer.status, answer.json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awc::http::header::{HeaderName, HeaderValue};

    fn secret() -> ApiSecret {
        ApiSecret::from_base64("uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=").unwrap()
    }

    #[test]
    fn a_loggable_url_has_no_password_nor_token() {
        assert_eq!(
            loggable_url("https://hooks:s3cret@hooks.example:8443/in/x?token=t0k#f"),
            "https://hooks.example:8443/in/x?..."
        );
        assert_eq!(
            loggable_url("http://127.0.0.1/hook"),
            "http://127.0.0.1/hook"
        );
        assert_eq!(loggable_url("not a url"), "(not a URL)");
    }

    #[test]
    fn verifies_only_our_signature_for_our_path() {
        let s = secret();
        let body = br#"{"status":"APPROVED"}"#;
        let (ts, sig) = sign(&s, 1_700_000_000, "/transactions/authorizations", body);
        let mut h = HeaderMap::new();
        for (n, v) in [
            (headers::TIMESTAMP, ts.as_str()),
            (headers::ENDPOINT, "/transactions/authorizations"),
            (headers::SIGNATURE, sig.as_str()),
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let at = |path, body: &[u8], now| verify_at(&s, path, &h, body, now);
        let now = 1_700_000_000;
        assert!(at("/transactions/authorizations", body, now));
        assert!(!at("/transactions/authorizations/debit", body, now));
        assert!(!at("/transactions/authorizations", b"{}", now));
        // Stamped at most ANSWER_SKEW_SECS away from our clock, either way.
        assert!(at("/transactions/authorizations", body, now + 300));
        assert!(at("/transactions/authorizations", body, now - 300));
        assert!(!at("/transactions/authorizations", body, now + 301));
        assert!(!at("/transactions/authorizations", body, now - 301));
        // An answer stamped long ago, played back now.
        assert!(!verify(&s, "/transactions/authorizations", &h, body));
        h.remove(headers::SIGNATURE);
        assert!(!verify_at(
            &s,
            "/transactions/authorizations",
            &h,
            body,
            now
        ));
    }
}

/// Whether `url` is an absolute http or https URL with a host.
pub fn valid_webhook_url(url: &str) -> bool {
    match url.parse::<awc::http::Uri>() {
        Ok(u) => {
            matches!(u.scheme_str(), Some("http") | Some("https"))
                && u.host().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}

/// `url` as a log line may show it: scheme, host, port and path. A receiver's URL may carry
/// a password (user info) or a token (the query): those are left out.
pub fn loggable_url(url: &str) -> String {
    match url.parse::<awc::http::Uri>() {
        Ok(u) => {
            let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            let query = if u.query().is_some() { "?..." } else { "" };
            format!(
                "{}://{}{port}{}{query}",
                u.scheme_str().unwrap_or(""),
                u.host().unwrap_or(""),
                u.path()
            )
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// `url` with `name=value` appended to its query.
pub fn with_query(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

/// Calls `GET <url>?challengeCode=<code>` (no redirects followed, `timeout` for the whole
/// exchange, https trusting `tls`) and checks the answer: 200 JSON whose
/// `encrypted_challenge` is HMAC-SHA256(`secret`, `code`) in hex (point-integration §1.7).
/// `Err` says why not.
pub async fn webhook_challenge(
    url: &str,
    secret: &str,
    code: &str,
    timeout: Duration,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls))
        .disable_redirects()
        .timeout(timeout)
        .finish();
    let exchange = async {
        let mut res = client
            .get(with_query(url, "challengeCode", code))
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if res.status().as_u16() != 200 {
            return Err(format!("answered {}", res.status().as_u16()));
        }
        let body = res
            .body()
            .limit(64 * 1024)
            .await
            .map_err(|e| format!("body unreadable: {e}"))?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|_| "answer is not JSON".to_owned())?;
        let answer = v
            .get("encrypted_challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| "no string encrypted_challenge".to_owned())?;
        if protocol::webhook::challenge_matches(secret, code, answer) {
            Ok(())
        } else {
            Err("encrypted_challenge does not match".to_owned())
        }
    };
    actix_rt::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
}

#[cfg(test)]
mod webhook_tests {
    use super::*;

    #[test]
    fn urls_and_queries() {
        assert!(valid_webhook_url("http://127.0.0.1:9/webhook"));
        assert!(valid_webhook_url("https://example.com/x?y=1"));
        assert!(!valid_webhook_url("ftp://example.com/"));
        assert!(!valid_webhook_url("/webhook"));
        assert!(!valid_webhook_url("example.com/webhook"));
        assert!(!valid_webhook_url(""));
        assert_eq!(with_query("http://h/w", "a", "b"), "http://h/w?a=b");
        assert_eq!(with_query("http://h/w?x=1", "a", "b"), "http://h/w?x=1&a=b");
    }
}
