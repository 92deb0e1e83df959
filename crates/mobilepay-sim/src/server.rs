//! The HTTP side: every wrapper route of spec §1.2-§1.4 under `/api/pos/...` (GET with the
//! query string, POST with a JSON object of the same names), the customer actions and read-outs
//! under `/sim/...`, and the timer task. Each route parses its parameters, runs one operation
//! of [`crate::model::World`] under the lock, and hands the calls it owes to
//! [`crate::channel`].

use crate::channel::{Channel, deliver};
use crate::config::Config;
use crate::model::{PosRef, SimError, SimResult, World};
use crate::signing::ChannelKey;
use crate::state::{Shared, now_ms};
use actix_web::http::Method;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The V15 header.
pub const IDEMPOTENCY_HEADER: &str = "x-mobilepay-idempotency-key";

/// A running simulator.
pub struct Sim {
    pub addr: SocketAddr,
    pub base: String,
    pub shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Sim {
    /// Binds `cfg.listen` (loopback only) and serves until [`Sim::stop`]; must run inside an
    /// actix system. The timer task runs on the caller's arbiter.
    pub async fn start(cfg: Config) -> anyhow::Result<Sim> {
        cfg.validate()?;
        let key = ChannelKey::new(&cfg.channel_api_key, &cfg.channel_api_secret)?;
        let shared = Arc::new(Shared::new(World::new(&cfg)));
        let listener = std::net::TcpListener::bind(cfg.listen_addr()?)?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let timeout = Duration::from_millis(cfg.call_timeout_ms);
        let (authorizer, retries) = (cfg.authorizer_url.clone(), cfg.call_retries);
        let (s, k, b, a) = (
            shared.clone(),
            key.clone(),
            base.clone(),
            authorizer.clone(),
        );
        let server = HttpServer::new(move || {
            let ctx = Ctx {
                shared: s.clone(),
                channel: Rc::new(Channel::new(&a, k.clone(), timeout, retries)),
                base: b.clone(),
            };
            App::new()
                .app_data(web::Data::new(ctx))
                .app_data(web::PayloadConfig::new(64 * 1024))
                .default_service(web::to(route))
        })
        .workers(cfg.workers.max(1))
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let channel = Rc::new(Channel::new(&authorizer, key, timeout, retries));
        let ticker = shared.clone();
        actix_rt::spawn(async move {
            let mut every = actix_rt::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let owed = {
                    let mut w = ticker.world();
                    w.tick(now_ms());
                    w.take_owed()
                };
                for call in owed {
                    deliver(ticker.clone(), channel.clone(), call);
                }
            }
        });
        Ok(Sim {
            addr,
            base,
            shared,
            handle,
        })
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

struct Ctx {
    shared: Arc<Shared>,
    channel: Rc<Channel>,
    base: String,
}

impl Ctx {
    /// Runs `op` on the world, then sends what it owes.
    fn run<T>(&self, op: impl FnOnce(&mut World, i64) -> SimResult<T>) -> SimResult<T> {
        let (r, owed) = {
            let mut w = self.shared.world();
            let r = op(&mut w, now_ms());
            (r, w.take_owed())
        };
        for call in owed {
            deliver(self.shared.clone(), self.channel.clone(), call);
        }
        r
    }
}

/// The parameters of a call: the query string (GET, DELETE) or the JSON object (POST).
struct Params(HashMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn params(req: &HttpRequest, body: &[u8]) -> SimResult<Params> {
    if req.method() == Method::POST {
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| SimError::new(400, "400", "the body must be a JSON object"))?;
        let Value::Object(m) = v else {
            return Err(SimError::new(400, "400", "the body must be a JSON object"));
        };
        return Ok(Params(object_params(m)));
    }
    let q = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|_| SimError::new(400, "400", "the query string is malformed"))?;
    let mut out = HashMap::new();
    for (k, v) in q.into_inner() {
        if out.insert(k.clone(), v).is_some() {
            return Err(SimError::new(400, "400", format!("{k} is given twice")));
        }
    }
    Ok(Params(out))
}

fn object_params(m: Map<String, Value>) -> HashMap<String, String> {
    m.into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            // Numbers keep their JSON text: `125.5` stays "125.5" (never through f64 math).
            Value::Number(n) => Some((k, n.to_string())),
            Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect()
}

/// V15: the optional `X-MobilePay-Idempotency-Key`: 1..36 printable ASCII, given once.
fn idempotency_key(req: &HttpRequest) -> SimResult<Option<String>> {
    let mut values = req.headers().get_all(IDEMPOTENCY_HEADER);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(SimError::new(
            400,
            "1163",
            "X-MobilePay-Idempotency-Key is given twice",
        ));
    }
    let v = first
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 36 && v.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            SimError::new(
                400,
                "1162",
                "X-MobilePay-Idempotency-Key is invalid (1..36 printable characters)",
            )
        })?;
    Ok(Some(v.to_owned()))
}

fn ok(payload: Value) -> HttpResponse {
    let mut body = json!({"success": true, "errors": []});
    if let (Some(b), Value::Object(p)) = (body.as_object_mut(), payload) {
        for (k, v) in p {
            b.insert(k, v);
        }
    }
    HttpResponse::Ok().json(body)
}

fn fail(e: &SimError) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(e.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(e.body())
}

async fn route(req: HttpRequest, body: web::Bytes, ctx: web::Data<Ctx>) -> HttpResponse {
    let path = req.path().to_owned();
    let r = if let Some(rest) = path.strip_prefix("/api/pos/") {
        wrapper(&req, &body, &ctx, rest)
    } else if let Some(rest) = path.strip_prefix("/sim/") {
        sim(&req, &body, &ctx, rest).await
    } else {
        Err(SimError::not_found("route"))
    };
    match r {
        Ok(resp) => resp,
        Err(e) => fail(&e),
    }
}

/// Which operation a wrapper path and method name, or `None`.
fn op_of(method: &Method, path: &str) -> Option<&'static str> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    let op = match path.trim_end_matches('/') {
        "terminal/qrcode" if get => "qrcode",
        "payment/start" if get || post => "start",
        "payment/start/byPosId" if get || post => "start_by_pos",
        "payment/prepare" if get || post => "prepare",
        "payment/ready" if get || post => "ready",
        "payment/details" if get => "details",
        "payments" if get => "payments",
        "payment/status" if get => "status",
        "payment/capture" if get => "capture",
        "payment/cancel" if get => "cancel",
        "payment/id/retrieve/bystate" if get => "retrieve_by_state",
        "payment/id/retrieve/byterminal" if get => "retrieve_by_terminal",
        "payment/id/retrieve/byposId" if get => "retrieve_by_pos",
        "refund/create" if get || post => "refund_create",
        "refund/details" if get => "refund_details",
        "refunds" if get => "refunds",
        "refund/capture" if get => "refund_capture",
        "refund/cancel" if get => "refund_cancel",
        "manage/token" if get || post => "token",
        "manage/token/reset" if get => "token_reset",
        "manage/create" if get || post => "pos_create",
        "manage/delete" if get || method == Method::DELETE => "pos_delete",
        "manage/terminal/information" if get => "terminal_information",
        "manage/stores" if get => "stores",
        "manage/store" if get => "store",
        "manage/checkInStatus/byposId" if get => "checkin_by_pos",
        "manage/checkInStatus/byterminalId" if get => "checkin_by_terminal",
        _ => return None,
    };
    Some(op)
}

fn wrapper(req: &HttpRequest, body: &[u8], ctx: &Ctx, path: &str) -> SimResult<HttpResponse> {
    let Some(op) = op_of(req.method(), path) else {
        return Err(SimError::new(
            404,
            "404",
            format!("no route {} /api/pos/{path}", req.method()),
        ));
    };
    let p = params(req, body)?;
    let bio = p.get("bioCode");
    // Management of the token itself is the only thing without an accessToken.
    match op {
        "token" => return ctx.run(|w, _| w.create_token(bio)).map(ok),
        "token_reset" => {
            return ctx
                .run(|w, _| w.reset_token(bio, p.get("previousAccessToken")))
                .map(ok);
        }
        _ => {}
    }
    let bio = {
        let w = ctx.shared.world();
        w.authenticate(bio, p.get("accessToken"))?;
        bio.unwrap_or_default().to_owned()
    };
    let bio = bio.as_str();
    let idem = match op {
        "start" | "start_by_pos" | "prepare" | "refund_create" => idempotency_key(req)?,
        _ => None,
    };
    let idem = idem.as_deref();
    let terminal = || PosRef::Terminal(p.get("terminalId").unwrap_or_default());
    let pos = || PosRef::Pos(p.get("posId").unwrap_or_default());
    // Prepare and ready name a terminal; a POST that names a PoS instead is served too.
    let terminal_or_pos = || match (p.get("terminalId"), p.get("posId")) {
        (None, Some(_)) => pos(),
        _ => terminal(),
    };
    let amount = p.get("amount");
    let currency = p.get("currencyCode");
    let payment = p.get("paymentId");
    let r = ctx.run(|w, now| match op {
        "qrcode" => w.qr_code(bio, p.get("terminalId"), &ctx.base),
        "start" => w.start(
            bio,
            terminal(),
            p.get("orderId"),
            amount,
            currency,
            idem,
            now,
        ),
        "start_by_pos" => w.start(bio, pos(), p.get("orderId"), amount, currency, idem, now),
        "prepare" => w.prepare(bio, terminal_or_pos(), p.get("orderId"), idem, now),
        "ready" => w.ready(
            bio,
            payment,
            p.get("orderId"),
            p.get("terminalId"),
            amount,
            currency,
            now,
        ),
        "details" => w.details(bio, payment, now),
        "payments" => w.payments(
            bio,
            p.get("state"),
            p.get("orderId"),
            p.get("terminalId"),
            now,
        ),
        "status" => w.status(bio, payment, now),
        "capture" => w.capture(bio, payment, amount, now),
        "cancel" => w.cancel(bio, payment, now),
        "retrieve_by_state" => w.retrieve(bio, p.get("orderId"), p.get("state"), None, now),
        "retrieve_by_terminal" => w.retrieve(
            bio,
            p.get("orderId"),
            p.get("paymentState"),
            Some(terminal()),
            now,
        ),
        "retrieve_by_pos" => w.retrieve(
            bio,
            p.get("orderId"),
            p.get("paymentState"),
            Some(pos()),
            now,
        ),
        "refund_create" => w.create_refund(
            bio,
            payment,
            amount,
            currency,
            p.get("refundOrderId"),
            idem,
            now,
        ),
        "refund_details" => w.refund_details(bio, p.get("refundId"), now),
        "refunds" => w.refunds_of(bio, payment, now),
        "refund_capture" => w.capture_refund(bio, p.get("refundId"), now),
        "refund_cancel" => w.cancel_refund(bio, p.get("refundId"), now),
        "pos_create" => w.create_pos(bio, p.get("terminalId")),
        "pos_delete" => w.delete_pos(bio, p.get("terminalId"), now),
        "terminal_information" => w.terminal_information(bio, p.get("terminalId")),
        "stores" => w.stores(bio),
        "store" => w.store(bio, p.get("storeId")),
        "checkin_by_pos" => w.checkin_status(bio, pos()),
        "checkin_by_terminal" => w.checkin_status(bio, terminal()),
        other => Err(SimError::new(404, "404", format!("no operation {other}"))),
    })?;
    Ok(ok(r))
}

/// `/sim/...`: the customer's side (Bearer accessToken) and the read-outs.
async fn sim(req: &HttpRequest, body: &[u8], ctx: &Ctx, path: &str) -> SimResult<HttpResponse> {
    let m = req.method();
    if m == Method::GET {
        if let Some(tid) = path.strip_prefix("qr/") {
            let text = ctx.shared.world().qr_text(tid)?;
            return Ok(HttpResponse::Ok().content_type("text/plain").body(text));
        }
        return match path {
            "breaks" => Ok(HttpResponse::Ok().json(ctx.shared.breaks_json())),
            "stats" => Ok(HttpResponse::Ok().json(ctx.shared.stats_json())),
            _ => Err(SimError::not_found("route")),
        };
    }
    if m != Method::POST {
        return Err(SimError::not_found("route"));
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let bio = if token.is_empty() {
        None
    } else {
        ctx.shared.world().merchant_of_token(token)
    }
    .ok_or_else(SimError::unauthorized)?;
    if path == "checkin" {
        let p = if body.is_empty() {
            Params(HashMap::new())
        } else {
            let v: Value = serde_json::from_slice(body)
                .map_err(|_| SimError::new(400, "400", "the body must be a JSON object"))?;
            match v {
                Value::Object(m) => Params(object_params(m)),
                _ => return Err(SimError::new(400, "400", "the body must be a JSON object")),
            }
        };
        let at = match (p.get("posId"), p.get("terminalId")) {
            (Some(pos), _) => PosRef::Pos(pos),
            (None, Some(t)) => PosRef::Terminal(t),
            (None, None) => return Err(SimError::bad("posId or terminalId")),
        };
        let user = p.get("user_id").unwrap_or_default();
        let r = ctx.run(|w, now| w.checkin(&bio, at, user, p.get("card_id"), now))?;
        return Ok(ok(r));
    }
    let Some((id, action)) = path
        .strip_prefix("payments/")
        .and_then(|r| r.split_once('/'))
    else {
        return Err(SimError::not_found("route"));
    };
    let r = match action {
        "decline" => ctx.run(|w, now| w.decline(&bio, id, now))?,
        "age-reject" => ctx.run(|w, now| w.age_reject(&bio, id, now))?,
        "approve" => {
            let call = ctx.run(|w, now| w.begin_approve(&bio, id, now))?;
            let call = crate::model::Call::Reserve(call);
            let outcome = ctx.channel.reserve(&ctx.shared, &call).await;
            ctx.run(|w, now| Ok(w.finish_approve(id, &outcome, now)))?
        }
        _ => return Err(SimError::not_found("route")),
    };
    Ok(ok(r))
}
