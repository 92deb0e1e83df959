//! The InStore side of a conversation with the authorizer: envelopes signed as InStore
//! signs them (HMAC-SHA256 of `JSON.stringify(payload)`, the payload's bytes verbatim in the
//! body), a callback receiver on loopback that checks every callback's signature, and the
//! signed GET of a card's log.

use crate::config::{Target, loopback_addr};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context as _, bail};
use instore::json::{ObjectBuilder, Value as JsValue};
use ledger::Currency;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An amount in exact minor units of a listed currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// `"12.20"` and `"USD"`: refuses more places than the currency has, negative
    /// amounts and unlisted currencies.
    pub fn parse(amount: &str, currency: &str) -> anyhow::Result<Money> {
        let currency =
            Currency::parse(currency).map_err(|e| anyhow::anyhow!("currency {currency}: {e}"))?;
        let d: rust_decimal::Decimal = amount
            .parse()
            .map_err(|_| anyhow::anyhow!("amount {amount:?} is not a decimal number"))?;
        if d.is_sign_negative() {
            bail!("amount {amount} is negative");
        }
        let minor = ledger::to_minor(d, currency)
            .map_err(|e| anyhow::anyhow!("amount {amount} {}: {e}", currency.code()))?;
        Ok(Money { minor, currency })
    }

    /// The same amount as a decimal string, `"12.20"` (the admin API's shape).
    pub fn decimal(self) -> String {
        ledger::format_minor(self.minor, self.currency.exponent())
    }

    /// Units at precision 2, as the wallet actions carry amounts (`12.00 JPY` is 1200);
    /// refused when a currency with more decimals has a fraction of a cent.
    pub fn cents(self) -> anyhow::Result<i64> {
        let e = u32::from(self.currency.exponent());
        let cents = if e <= 2 {
            self.minor.checked_mul(10_i64.pow(2 - e))
        } else {
            let scale = 10_i64.pow(e - 2);
            (self.minor % scale == 0).then_some(self.minor / scale)
        };
        cents.with_context(|| format!("{self} is not a whole number of hundredths"))
    }

    /// `{"amount":"<minor>","precision":"<exponent>","currency":".."}`: every member a
    /// string, as the pay-on-account actions carry amounts (section 3.1).
    pub fn wire_strings(self) -> JsValue {
        ObjectBuilder::new()
            .field("amount", self.minor.to_string())
            .field("precision", self.currency.exponent().to_string())
            .field("currency", self.currency.code())
            .build()
    }

    /// `{"amount":<minor>,"precision":<exponent>,"currency":".."}` (section 1.7).
    fn wire(self) -> JsValue {
        ObjectBuilder::new()
            .field("amount", self.minor)
            .field("precision", self.currency.exponent())
            .field("currency", self.currency.code())
            .build()
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            ledger::format_minor(self.minor, self.currency.exponent()),
            self.currency.code()
        )
    }
}

/// One callback the receiver was sent.
#[derive(Debug, Clone)]
pub struct Callback {
    pub path: String,
    pub body: Vec<u8>,
    /// The `X-Signature` header as sent.
    pub signature: String,
    pub correlation_id: String,
    pub at: Instant,
}

type Received = Arc<Mutex<Vec<Callback>>>;

/// The loopback HTTP server that takes the callbacks: every POST is recorded and answered
/// 200.
pub struct Receiver {
    /// `http://<addr>/<path prefix>/`: what the callback URLs start with.
    pub prefix: String,
    received: Received,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    received: web::Data<Received>,
) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST {
        return HttpResponse::MethodNotAllowed().finish();
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let callback = Callback {
        path: req.path().to_owned(),
        body: body.to_vec(),
        signature: header("x-signature"),
        correlation_id: header("x-correlation-id"),
        at: Instant::now(),
    };
    received.lock().expect("receiver lock").push(callback);
    HttpResponse::Ok().finish()
}

/// Serves every request to `addr` with `handler` (bodies up to 1 MiB, one worker, `state`
/// given to it as `web::Data`), on the calling thread's event loop; the address bound (port
/// 0 takes a free one) and the server's handle.
pub fn serve_every_request<S, F, Args>(
    addr: SocketAddr,
    state: S,
    handler: F,
) -> anyhow::Result<(SocketAddr, actix_web::dev::ServerHandle)>
where
    S: Send + Sync + 'static,
    F: actix_web::Handler<Args> + Clone + Send + 'static,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .default_service(web::to(handler.clone()))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    let bound: SocketAddr = *server.addrs().first().context("no address bound")?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((bound, handle))
}

impl Receiver {
    /// Listens where `prefix` (an `http` loopback URL) points; port 0 takes a free port and
    /// the prefix then names it.
    pub fn start(prefix: &str) -> anyhow::Result<Receiver> {
        let addr = loopback_addr(prefix)
            .with_context(|| format!("{prefix} is not http on a loopback address"))?;
        let received: Received = Arc::default();
        let (bound, handle) = serve_every_request(addr, received.clone(), receive)
            .with_context(|| format!("cannot listen for callbacks on {addr}"))?;
        let path = prefix
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/");
        let path = if path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        Ok(Receiver {
            prefix: format!("http://{bound}{path}"),
            received,
            handle,
        })
    }

    pub fn callbacks(&self) -> Vec<Callback> {
        self.received.lock().expect("receiver lock").clone()
    }

    /// The first callback received at `path`, if any (without copying the others).
    pub fn first_at(&self, path: &str) -> Option<Callback> {
        self.received
            .lock()
            .expect("receiver lock")
            .iter()
            .find(|c| c.path == path)
            .cloned()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// The answer to one enveloped request and the callback it was followed by.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: &'static str,
    pub request_id: String,
    /// HTTP status of the acknowledgement and its bytes.
    pub status: u16,
    pub ack: Vec<u8>,
    /// The first callback for this request (None: none arrived in time, or the request was
    /// refused).
    pub callback: Option<Callback>,
    /// The callback's `X-Signature` is HMAC-SHA256 of its exact bytes with the tenant's key.
    pub callback_signed: bool,
}

impl Outcome {
    /// The callback as JSON (`Null` when there is none).
    pub fn result(&self) -> Value {
        self.callback
            .as_ref()
            .and_then(|c| serde_json::from_slice(&c.body).ok())
            .unwrap_or(Value::Null)
    }

    /// The callback said `Success` (stored value, wallet) or `approved` (pay on account).
    /// A pay-on-account log record is kept whatever status it tells: its echo is success.
    pub fn approved(&self) -> bool {
        let r = self.result();
        if self.action == crate::poa::LOG {
            return r.is_object();
        }
        r["result"] == "Success" || r["status"] == "approved"
    }

    /// The acknowledgement as JSON (the error body of a refusal).
    pub fn ack_json(&self) -> Value {
        serde_json::from_slice(&self.ack).unwrap_or(Value::Null)
    }
}

/// The answer to a signed GET (a card's or an account's log), or to an admin call.
#[derive(Debug, Clone)]
pub struct Log {
    pub status: u16,
    pub body: Value,
}

/// What `create` sends.
#[derive(Debug, Clone)]
pub struct NewCard {
    pub card_type: String,
    pub active: bool,
    pub balance: Money,
    pub cvc: Option<String>,
}

/// The authorizer's admin API, for what only the issuer does: barcodes, credit limits,
/// accounts to pay from.
#[derive(Clone)]
pub struct Admin {
    /// `http://<server.listen>`.
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The simulator: the tenant it speaks as, its HTTP client and its callback receiver.
pub struct Sim {
    pub target: Target,
    /// The admin API, when a token is known.
    pub admin: Option<Admin>,
    receiver: Receiver,
    http: awc::Client,
    run: String,
    seq: AtomicU64,
    /// How long a request waits for its callback.
    pub wait: Duration,
}

impl Sim {
    /// Starts the callback receiver where the target's prefix points.
    pub fn start(mut target: Target, wait: Duration) -> anyhow::Result<Sim> {
        let receiver = Receiver::start(&target.callback_prefix)?;
        target.callback_prefix = receiver.prefix.clone();
        let mut run = [0u8; 4];
        getrandom::getrandom(&mut run).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Sim {
            target,
            admin: None,
            receiver,
            http: awc::Client::builder()
                .connector(awc::Connector::new().rustls_0_23(processor_client::tls_from_env()))
                .timeout(Duration::from_secs(10))
                .finish(),
            run: run.iter().map(|b| format!("{b:02x}")).collect(),
            seq: AtomicU64::new(0),
            wait,
        })
    }

    pub async fn stop(&self) {
        self.receiver.stop().await;
    }

    /// Every callback received so far.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.receiver.callbacks()
    }

    /// Whether `c` carries the tenant's signature over its exact bytes.
    pub fn signed(&self, c: &Callback) -> bool {
        instore::signature::decode_signature(&c.signature)
            .is_some_and(|mac| instore::signature::mac_matches(&self.target.key, &c.body, &mac))
    }

    /// What this run's ids start from (`sim-<run>-0001`): 8 random hex digits.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    fn request_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("sim-{}-{n:04}", self.run)
    }

    fn context(&self, request_id: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .field("requestId", request_id)
            .field("locationId", self.target.location_id.as_str())
            .field("workstationId", self.target.workstation_id.as_str())
    }

    /// `storedvaluecard`: a new card; its number is told in the callback.
    pub async fn create(&self, card: &NewCard) -> anyhow::Result<Outcome> {
        let id = self.request_id();
        let payload = self
            .context(&id)
            .field("type", card.card_type.as_str())
            .field("status", if card.active { "Active" } else { "Inactive" })
            .field("balance", card.balance.wire())
            .field("issuer", "instore-sim")
            .field_opt("cvc", card.cvc.as_deref());
        self.send("Create", "storedvaluecard", &id, payload).await
    }

    /// `storedvaluecard/:number`.
    pub async fn lookup(&self, number: &str, pin: Option<&str>) -> anyhow::Result<Outcome> {
        let id = self.request_id();
        let payload = self
            .context(&id)
            .field("number", number)
            .field("cartKey", format!("cart-{id}"))
            .field_opt("pin", pin);
        self.send("Lookup", &format!("storedvaluecard/{number}"), &id, payload)
            .await
    }

    /// `storedvaluecard_process` with `Load` or `Redeem`.
    pub async fn process(
        &self,
        action: &'static str,
        number: &str,
        amount: Money,
        cvc: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let id = self.request_id();
        let payload = self
            .context(&id)
            .field("action", action)
            .field("number", number)
            .field("amount", amount.wire())
            .field("session_id", format!("session-{}", self.run))
            .field("reference", format!("ref-{id}"))
            .field_opt("cvc", cvc);
        self.send(action, "storedvaluecard_process", &id, payload)
            .await
    }

    /// `storedvaluecard_process` with `Cancel` of the operation the ids name.
    pub async fn cancel(
        &self,
        number: &str,
        external_transaction_id: &str,
        external_payment_id: &str,
    ) -> anyhow::Result<Outcome> {
        let id = self.request_id();
        let payload = self
            .context(&id)
            .field("action", "Cancel")
            .field("number", number)
            .field("external_transaction_id", external_transaction_id)
            .field("external_payment_id", external_payment_id);
        self.send("Cancel", "storedvaluecard_process", &id, payload)
            .await
    }

    /// `GET storedvaluelog/:number`, signed over the raw query string.
    pub async fn log(&self, number: &str, limit: u32) -> anyhow::Result<Log> {
        self.signed_get(
            &format!("storedvaluelog/{number}"),
            &format!("&limit={limit}"),
        )
        .await
    }

    /// `GET {url}/{path}?requestId=..&locationId=..&workstationId=..{more}`, signed over the
    /// raw query string.
    pub(crate) async fn signed_get(&self, path: &str, more: &str) -> anyhow::Result<Log> {
        let id = self.request_id();
        let query = format!(
            "requestId={}&locationId={}&workstationId={}{more}",
            query_value(&id),
            query_value(&self.target.location_id),
            query_value(&self.target.workstation_id),
        );
        let signature = instore::signature::sign(&self.target.key, query.as_bytes());
        let url = format!("{}/{path}?{query}", self.target.url);
        let mut req = self
            .http
            .get(&url)
            .insert_header(("X-Signature", signature))
            .insert_header(("x-correlation-id", format!("corr-{id}")));
        if let Some(k) = &self.target.api_key {
            req = req.insert_header(("X-API-Key", k.as_str()));
        }
        answer(req.send(), &url).await
    }

    /// An admin API call (`Authorization: Bearer`); `idempotency_key` for deposits.
    pub async fn admin_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Log> {
        let admin = self.admin.as_ref().context(
            "no admin token: start `authorizer serve` once (it writes data/admin-token), \
             or give --admin-token",
        )?;
        let method = actix_web::http::Method::from_bytes(method.as_bytes())?;
        let api = processor_client::Bearer::new(self.http.clone(), &admin.url, &admin.token);
        let (status, body) = api
            .call(method, path, body, idempotency_key)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the authorizer at {}: {e}", admin.url))?;
        Ok(Log { status, body })
    }

    /// Sends the payload `fields` writes after the request's context (`requestId`,
    /// `locationId`, `workstationId`) as an envelope to `{url}/{path}`, and waits for its
    /// callback.
    pub(crate) async fn enveloped(
        &self,
        action: &'static str,
        path: &str,
        fields: impl FnOnce(ObjectBuilder) -> ObjectBuilder,
    ) -> anyhow::Result<Outcome> {
        let id = self.request_id();
        let payload = fields(self.context(&id));
        self.send(action, path, &id, payload).await
    }

    /// Sends `payload` as an envelope to `{url}/{path}` and waits for its callback.
    async fn send(
        &self,
        action: &'static str,
        path: &str,
        request_id: &str,
        payload: ObjectBuilder,
    ) -> anyhow::Result<Outcome> {
        let url = format!("{}/{path}", self.target.url);
        let callback_path = format!("{}{request_id}", self.target.callback_prefix);
        let (body, signature) = envelope(
            &self.target.key,
            &self.target.tenant_id,
            &url,
            &payload.to_js(),
            request_id,
            &callback_path,
        );
        let mut req = self
            .http
            .post(&url)
            .insert_header(("content-type", "application/json"))
            .insert_header(("X-Signature", signature))
            .insert_header(("x-correlation-id", format!("corr-{request_id}")));
        if let Some(k) = &self.target.api_key {
            req = req.insert_header(("X-API-Key", k.as_str()));
        }
        let mut resp = req
            .send_body(body)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the authorizer at {}: {e}", origin(&url)))?;
        let ack = resp.body().limit(1 << 20).await?.to_vec();
        let status = resp.status().as_u16();
        let callback = if status == 200 {
            self.wait_for(&callback_path).await
        } else {
            None
        };
        let callback_signed = callback.as_ref().is_some_and(|c| self.signed(c));
        Ok(Outcome {
            action,
            request_id: request_id.to_owned(),
            status,
            ack,
            callback,
            callback_signed,
        })
    }

    /// The first callback at `url`'s path, waiting up to `self.wait`.
    async fn wait_for(&self, url: &str) -> Option<Callback> {
        let path = url
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))?;
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(c) = self.receiver.first_at(&path) {
                return Some(c);
            }
            if Instant::now() >= deadline {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The scheme, host and port of `url`: its path may hold a card number, which the
/// simulator's output never shows whole.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..].find('/').map_or(url, |i| &url[..start + i])
}

/// The status and JSON body (`Null` when not JSON) of an answer.
async fn answer(sending: awc::SendClientRequest, url: &str) -> anyhow::Result<Log> {
    let mut resp = sending
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the authorizer at {}: {e}", origin(url)))?;
    let body = resp.body().limit(8 << 20).await?;
    Ok(Log {
        status: resp.status().as_u16(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// An envelope as InStore builds it (section 1.2): `JSON.stringify(payload)` signed with
/// the tenant's `key` (HMAC-SHA256, lowercase hex), then `JSON.stringify(envelope)`, in
/// which the payload's bytes (`payload_text`, compact) appear unchanged. Returns the body
/// and the signature (also the `X-Signature` header's value).
pub fn envelope(
    key: &[u8],
    tenant_id: &str,
    payload_url: &str,
    payload_text: &str,
    request_id: &str,
    callback_url: &str,
) -> (String, String) {
    let signature = instore::signature::sign(key, payload_text.as_bytes());
    let head = ObjectBuilder::new()
        .field("payload_url", payload_url)
        .to_js();
    let tail = ObjectBuilder::new()
        .field("verification_signature", signature.as_str())
        .field("tenant_id", tenant_id)
        .field("requestId", request_id)
        .field("callbackUrl", callback_url)
        .to_js();
    let body = format!(
        "{},\"payload\":{payload_text},{}",
        head.trim_end_matches('}'),
        tail.trim_start_matches('{')
    );
    (body, signature)
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_authorizer_is_named_without_the_path() {
        let url = "http://127.0.0.1:8080/instore/storedvaluelog/6280001234567895?requestId=r";
        assert_eq!(origin(url), "http://127.0.0.1:8080");
        assert_eq!(origin("http://h"), "http://h");
    }

    #[test]
    fn money_is_exact() {
        let m = Money::parse("12.20", "USD").unwrap();
        assert_eq!(m.minor, 1220);
        assert_eq!(m.to_string(), "12.20 USD");
        assert_eq!(Money::parse("1200", "JPY").unwrap().minor, 1200);
        assert_eq!(Money::parse("1.234", "BHD").unwrap().minor, 1234);
        assert!(Money::parse("12.205", "USD").is_err());
        assert!(Money::parse("-1", "USD").is_err());
        assert!(Money::parse("1", "XYZ").is_err());
        assert!(Money::parse("ten", "USD").is_err());
        assert_eq!(
            instore::js(&Money::parse("12.20", "USD").unwrap().wire()),
            r#"{"amount":1220,"precision":2,"currency":"USD"}"#
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("Málaga 01"), "M%C3%A1laga%2001");
        assert_eq!(query_value("POS-03_x.~"), "POS-03_x.~");
    }
}
